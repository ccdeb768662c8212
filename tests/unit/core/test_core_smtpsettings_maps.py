"""smtpd_discard_ehlo_keyword_address_maps (core/smtpsettings.py DiscardMaps): the
per-client EHLO keyword list that replaces smtpd_discard_ehlo_keywords. The same
cases against a real Postfix: tests/interop/test_ehlo_postfix.py (maps_*)."""
from __future__ import annotations

import pytest

from estafeta.config.main_cf import MainConfig
from estafeta.core.smtpsettings import DiscardMaps, lookup_key, smtp_settings
from estafeta.proto import replies as R
from estafeta.tables import TableTempError, open_table


def maps(text: str, *, dsn: bool = True) -> DiscardMaps:
    cfg = MainConfig.parse("myhostname = mx.example.org\n" + text, "main.cf")
    return DiscardMaps(cfg, smtp_settings(cfg, dsn=dsn), open_table, dsn=dsn)


def keywords(reply: R.Reply) -> list[str]:
    return [*reply.lines, reply.text][1:]


ALL = ["PIPELINING", "SIZE 10240000", "VRFY", "ENHANCEDSTATUSCODES", "8BITMIME", "DSN", "SMTPUTF8"]


def test_no_tables_is_the_global_list() -> None:
    m = maps("smtpd_discard_ehlo_keywords = pipelining\n")
    assert not m and m.problems == []
    got = m.settings_for("192.0.2.1")
    assert got is m.base and keywords(got.ehlo) == ALL[1:], f"got {keywords(got.ehlo)}"


def test_result_replaces_the_global_list() -> None:
    m = maps("smtpd_discard_ehlo_keywords = pipelining, dsn\n"
             "smtpd_discard_ehlo_keyword_address_maps = inline:{192.0.2.1=size}\n")
    got = m.settings_for("192.0.2.1")
    want = [k for k in ALL if k != "SIZE 10240000"]
    assert keywords(got.ehlo) == want, f"got {keywords(got.ehlo)}, want {want}"
    assert got.ehlo_log == "discarding EHLO keywords: SIZE", f"got {got.ehlo_log!r}"
    assert got.refused_params == () and "RET" in got.mail_params      # DSN back for this client
    other = m.settings_for("192.0.2.2")                                 # no result: the global list
    assert other is m.base and "DSN" not in keywords(other.ehlo) and "PIPELINING" not in keywords(other.ehlo)


def test_first_table_with_a_result_wins(tmp_path) -> None:
    cidr = tmp_path / "ehlo.cidr"
    cidr.write_text("192.0.2.0/24   dsn\n0.0.0.0/0   vrfy\n")
    m = maps(f"smtpd_discard_ehlo_keyword_address_maps = inline:{{192.0.2.7=8bitmime}}, cidr:{cidr}\n")
    cases = {"192.0.2.7": "8BITMIME", "192.0.2.8": "DSN", "198.51.100.1": "VRFY"}
    for addr, gone in cases.items():
        got = keywords(m.settings_for(addr).ehlo)
        want = [k for k in ALL if k != gone]
        assert got == want, f"{addr}: got {got}, want {want}"
    assert m.settings_for("2001:db8::1") is m.base          # an IPv6 key matches no IPv4 rule


def test_dsn_and_smtputf8_refusals_follow_the_client_list() -> None:
    for dsn in (True, False):      # smtpd, sendmail -bs
        # A { } group keeps the comma inside the value (Postfix's inline: syntax).
        m = maps("smtpd_discard_ehlo_keyword_address_maps = inline:{ {192.0.2.1=DSN,SMTPUTF8} }\n", dsn=dsn)
        s = m.settings_for("192.0.2.1")
        assert dict(s.refused_params) == {p: R.DSN_DISABLED for p in ("RET", "ENVID", "NOTIFY", "ORCPT")}
        assert "SMTPUTF8" not in s.mail_params and s.rcpt_params == frozenset()
        assert "DSN" not in keywords(s.ehlo) and "SMTPUTF8" not in keywords(s.ehlo), f"dsn={dsn}"


@pytest.mark.parametrize("value, log", [
    ("silent-discard, pipelining", ""),
    ("silent-discard", ""),
    ("", ""),                                  # found, empty: nothing discarded
    ("no-such-keyword", ""),
    ("Pipelining\tSIZE", "discarding EHLO keywords: PIPELINING SIZE"),
])
def test_result_words_as_the_global_list(value: str, log: str) -> None:
    cfg = MainConfig.parse("myhostname = mx.example.org\nsmtpd_discard_ehlo_keywords = dsn\n"
                           "smtpd_discard_ehlo_keyword_address_maps = fixed:x\n", "main.cf")
    m = DiscardMaps(cfg, smtp_settings(cfg), lambda spec: _Fixed(spec, value))
    s = m.settings_for("192.0.2.1")
    assert s.ehlo_log == log, f"{value!r}: got {s.ehlo_log!r}, want {log!r}"
    assert "DSN" in keywords(s.ehlo), f"{value!r}: got {keywords(s.ehlo)}, want DSN (the global list is replaced)"


def test_settings_are_built_once_per_result() -> None:
    calls: list[str] = []
    cfg = MainConfig.parse("myhostname = mx.example.org\nsmtpd_discard_ehlo_keyword_address_maps = fixed:x\n",
                           "main.cf")

    def opener(spec: str) -> _Fixed:
        calls.append(spec)
        return _Fixed(spec, "vrfy")
    m = DiscardMaps(cfg, smtp_settings(cfg), opener)
    first = m.settings_for("192.0.2.1")
    assert m.settings_for("192.0.2.2") is first and calls == ["fixed:x"], f"opened {calls}"


def test_lookup_key() -> None:
    assert lookup_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert lookup_key("::FFFF:192.0.2.1") == "192.0.2.1"
    assert lookup_key("2001:db8::1") == "2001:db8::1"
    assert lookup_key("192.0.2.1") == "192.0.2.1"
    seen: list[str] = []
    cfg = MainConfig.parse("myhostname = m.example\nsmtpd_discard_ehlo_keyword_address_maps = fixed:x\n", "main.cf")
    m = DiscardMaps(cfg, smtp_settings(cfg), lambda spec: _Fixed(spec, None, seen))
    m.settings_for("::ffff:192.0.2.1")
    assert seen == ["192.0.2.1"], f"got keys {seen}"


def test_lookup_error_names_table_and_key() -> None:
    cfg = MainConfig.parse("myhostname = m.example\nsmtpd_discard_ehlo_keyword_address_maps = fixed:x\n", "main.cf")
    m = DiscardMaps(cfg, smtp_settings(cfg), lambda spec: _Broken(spec))
    with pytest.raises(TableTempError, match=r'fixed:x lookup error for "192\.0\.2\.1": database down'):
        m.settings_for("192.0.2.1")


def test_table_that_cannot_open_fails_every_lookup(tmp_path) -> None:
    m = maps(f"smtpd_discard_ehlo_keyword_address_maps = hash:{tmp_path}/missing\n")
    assert len(m.problems) == 1 and f"hash:{tmp_path}/missing is unavailable" in m.problems[0], m.problems
    with pytest.raises(TableTempError, match="is unavailable"):
        m.settings_for("192.0.2.1")


class _Fixed:
    def __init__(self, name: str, value: str | None, seen: list[str] | None = None) -> None:
        self.name, self.value, self.seen = name, value, seen

    def lookup(self, key: str) -> str | None:
        if self.seen is not None:
            self.seen.append(key)
        return self.value


class _Broken:
    def __init__(self, name: str) -> None:
        self.name = name

    def lookup(self, key: str) -> str | None:
        raise TableTempError("database down")
