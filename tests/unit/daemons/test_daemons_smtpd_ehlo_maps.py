"""smtpd sessions and smtpd_discard_ehlo_keyword_address_maps (daemons/smtpd.py):
the client's list is chosen at connect and used by EHLO and by the codec (MAIL
parameters); a table that cannot answer turns EHLO into 421 4.3.0, as Postfix's
smtpd does ("don't know what EHLO features to announce"). A real event loop and a
fake transport; the settings come from core/smtpsettings.py as in smtpd."""
from __future__ import annotations

import asyncio

from smtpd_fakes import FakeConfig, FakeTransport

from estafeta.daemons.smtpd import Session
from estafeta.tables import TableTempError


def talk(sc: FakeConfig, addr: str, commands: bytes) -> tuple[list[str], bool]:
    async def run() -> tuple[list[str], bool]:
        t = FakeTransport(addr)
        s = Session(sc)
        s.connection_made(t)
        s.data_received(commands)
        s.timer.cancel()
        return t.out.decode().splitlines(), t.closed
    return asyncio.run(run())


MAPS = "smtpd_discard_ehlo_keywords = pipelining\nsmtpd_discard_ehlo_keyword_address_maps = inline:{192.0.2.1=dsn}\n"


def test_client_list_reaches_ehlo_log_and_codec(logged) -> None:
    sc = FakeConfig(MAPS)
    lines, closed = talk(sc, "192.0.2.1", b"EHLO c.example\r\nMAIL FROM:<a@example.org> RET=FULL\r\n")
    assert "250-PIPELINING" in lines and not {"250-DSN", "250 DSN"} & set(lines), f"got {lines}"
    assert lines[-1] == "501 5.7.1 DSN support is disabled", f"got {lines[-1]!r}"
    assert logged[1:] == ["discarding EHLO keywords: DSN"], f"got log {logged}"
    assert not closed


def test_no_result_keeps_the_global_list(logged) -> None:
    sc = FakeConfig(MAPS)
    lines, _ = talk(sc, "192.0.2.2", b"EHLO c.example\r\nMAIL FROM:<a@example.org> RET=FULL\r\n")
    assert "250-PIPELINING" not in lines and "250-DSN" in lines, f"got {lines}"
    assert lines[-1] == "250 2.1.0 Ok", f"got {lines[-1]!r}"
    assert logged[1:] == ["discarding EHLO keywords: PIPELINING"], f"got log {logged}"


def test_ipv4_mapped_client_is_looked_up_as_ipv4(logged) -> None:
    lines, _ = talk(FakeConfig(MAPS), "::ffff:192.0.2.1", b"EHLO c.example\r\n")
    assert "250-PIPELINING" in lines and not {"250-DSN", "250 DSN"} & set(lines), f"got {lines}"


class Broken:
    name = "pgsql:/etc/estafeta/ehlo.cf"

    def lookup(self, key: str) -> str | None:
        raise TableTempError("connection refused")


def test_lookup_error_answers_ehlo_with_421(logged) -> None:
    sc = FakeConfig("smtpd_discard_ehlo_keywords = pipelining\n"
                    "smtpd_discard_ehlo_keyword_address_maps = pgsql:/etc/estafeta/ehlo.cf\n",
                    opener=lambda spec: Broken())
    lines, closed = talk(sc, "192.0.2.1", b"EHLO c.example\r\nNOOP\r\n")
    want = ["220 mx.example.org ESMTP", "421 4.3.0 mx.example.org Server local data error"]
    assert lines == want and closed, f"got {lines} closed={closed}, want {want}"
    want_log = ['warning: pgsql:/etc/estafeta/ehlo.cf lookup error for "192.0.2.1": connection refused',
                "discarding EHLO keywords: PIPELINING",     # the global list, as Postfix logs it
                "warning: don't know what EHLO features to announce to unknown[192.0.2.1]",
                "NOQUEUE: reject: EHLO from unknown[192.0.2.1]: 421 4.3.0 mx.example.org Server local data error"]
    assert logged[1:] == want_log, f"got log {logged}"


def test_lookup_error_leaves_helo_alone(logged) -> None:
    """Postfix too: HELO and MAIL work; only EHLO needs the list (seen on the wire)."""
    sc = FakeConfig("smtpd_discard_ehlo_keyword_address_maps = pgsql:/x.cf\n", opener=lambda spec: Broken())
    lines, closed = talk(sc, "192.0.2.1", b"HELO c.example\r\nMAIL FROM:<a@example.org>\r\n")
    assert lines[1:] == ["250 mx.example.org", "250 2.1.0 Ok"] and not closed, f"got {lines}"
