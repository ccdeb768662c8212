"""Declared parameters that estafeta does not act on warn when set (Param.ignored);
mynetworks follows mynetworks_style; config_directory follows the instance."""
from __future__ import annotations

import ipaddress
import os

import pytest

from estafeta.cli.main import main as estafeta_main
from estafeta.config.main_cf import MainConfig, check
from estafeta.config.params import PARAMS, style_networks
from estafeta.config.postconf import parameter_reference_markdown
from estafeta.core.errors import ConfigError


def parse(text: str) -> MainConfig:
    return MainConfig.parse(text, "/etc/estafeta/main.cf")


def test_ignored_parameter_set_warns_with_file_and_line() -> None:
    cfg = parse("myhostname = mx.example.org\n# TLS\nsmtpd_tls_security_level = may\n"
                "smtpd_tls_cert_file = /etc/ssl/mx.pem\n")
    want = ["/etc/estafeta/main.cf, line 3: smtpd_tls_security_level is not implemented yet "
            "(SPEC S1: STARTTLS): ignored",
            "/etc/estafeta/main.cf, line 4: smtpd_tls_cert_file is not implemented yet (SPEC S1: STARTTLS): ignored"]
    got = check(cfg)
    assert got == want, f"got {got}, want {want}"


@pytest.mark.parametrize("text", [
    "smtpd_sasl_auth_enable = no\n",            # the default
    "smtpd_sasl_auth_enable = NO\n",            # the default, as a typed value
    "notify_classes = resource,software\n",     # the default, other separators
    "smtpd_tls_security_level = none\n",        # inert: what estafeta does anyway
    "biff = no\n",                              # Debian's main.cf: what estafeta does anyway
    "syslog_facility = $my_facility\nmy_facility = mail\n",   # expands to the default
])
def test_ignored_parameter_at_default_or_inert_value_is_silent(text: str) -> None:
    got = check(parse(text))
    assert got == [], f"got {got}, want no warnings"


def test_inert_values_are_per_parameter() -> None:
    # "none" is inert for the TLS level, not for the AUTH switch.
    got = check(parse("smtpd_sasl_auth_enable = yes\nsmtpd_tls_security_level = encrypt\n"))
    want = ["/etc/estafeta/main.cf, line 1: smtpd_sasl_auth_enable is not implemented yet (SPEC S1: AUTH): ignored",
            "/etc/estafeta/main.cf, line 2: smtpd_tls_security_level is not implemented yet "
            "(SPEC S1: STARTTLS): ignored"]
    assert got == want, f"got {got}, want {want}"


def test_every_ignored_reason_reads_as_a_sentence_part() -> None:
    for p in PARAMS.values():
        if p.ignored:
            assert not p.ignored.endswith("."), p.name
            # The default itself never warns.
            assert check(parse(f"{p.name} = {p.default}\n")) == [], p.name


def test_reference_shows_the_reason() -> None:
    text = parameter_reference_markdown()
    want = ("| `smtpd_client_connection_rate_limit` | integer | `0` | Most connections from one client per "
            "anvil_rate_time_unit (0: no limit). **Ignored:** not implemented yet (SPEC S6: limits). |")
    assert want in text
    assert "| `always_bcc` | string | (empty) | Address that gets a copy of every message" in text
    assert "always_bcc` | string | (empty) | Address that gets a copy of every message. **Ignored" not in text


def test_check_command_prints_the_warning(tmp_path, capsys) -> None:
    estafeta_main(["-c", str(tmp_path), "init"])
    with open(tmp_path / "main.cf", "a") as f:
        f.write("smtpd_client_connection_rate_limit = 30\n")
    line = len((tmp_path / "main.cf").read_text().splitlines())
    capsys.readouterr()
    assert estafeta_main(["-c", str(tmp_path), "check"]) == 0
    err = capsys.readouterr().err
    want = (f"estafeta: warning: {tmp_path}/main.cf, line {line}: smtpd_client_connection_rate_limit "
            "is not implemented yet (SPEC S6: limits): ignored")
    assert want in err, f"got {err!r}, want {want!r}"


# --- mynetworks_style -----------------------------------------------------------------
IFACES = [ipaddress.ip_interface("127.0.0.1/8"), ipaddress.ip_interface("192.0.2.2/24"),
          ipaddress.ip_interface("172.16.5.4/24"), ipaddress.ip_interface("10.1.2.3/16"),
          ipaddress.ip_interface("::1/128"), ipaddress.ip_interface("fd00::2/64")]


@pytest.mark.parametrize("style, want", [
    ("host", ["127.0.0.0/8", "[::1]/128"]),
    ("subnet", ["127.0.0.0/8", "[::1]/128", "192.0.2.0/24", "172.16.5.0/24", "10.1.0.0/16", "[fd00::]/64"]),
    ("class", ["127.0.0.0/8", "[::1]/128", "192.0.2.0/24", "172.16.0.0/16", "10.0.0.0/8", "[fd00::]/64"]),
])
def test_style_networks(style: str, want: list[str]) -> None:
    got = style_networks(style, IFACES)
    assert got == want, f"got {got}, want {want}"


def test_mynetworks_default_follows_style_and_explicit_setting_wins() -> None:
    assert parse("").get("mynetworks") == "127.0.0.0/8 [::1]/128"
    subnet = parse("mynetworks_style = subnet\n").get_list("mynetworks")
    assert subnet[:2] == ["127.0.0.0/8", "[::1]/128"], subnet
    assert parse("mynetworks_style = subnet\nmynetworks = 192.0.2.0/24\n").get("mynetworks") == "192.0.2.0/24"


def test_unknown_mynetworks_style_is_an_error() -> None:
    with pytest.raises(ConfigError) as e:
        check(parse("myhostname = mx.example.org\nmynetworks_style = galaxy\n"))
    want = "/etc/estafeta/main.cf, line 2: parameter mynetworks_style: unknown value 'galaxy' " \
           "(want host, subnet, class)"
    assert str(e.value) == want, f"got {e.value}, want {want}"


# --- config_directory -------------------------------------------------------------------
def test_config_directory_is_where_main_cf_was_read(tmp_path) -> None:
    d = tmp_path / "inst"
    d.mkdir()
    (d / "main.cf").write_text("alias_maps = hash:$config_directory/aliases\n")
    cfg = MainConfig.load(str(d / "main.cf"))
    assert cfg.get("alias_maps") == f"hash:{d}/aliases"
    assert cfg.default("config_directory") == "/etc/estafeta"      # postconf -d: the built-in default
    assert check(cfg) == []
    (d / "main.cf").write_text(f"config_directory = {d}\n")
    assert check(MainConfig.load(str(d / "main.cf"))) == []
    (d / "main.cf").write_text("config_directory = /etc/elsewhere\n")
    got = check(MainConfig.load(str(d / "main.cf")))
    want = [f"{d}/main.cf, line 1: config_directory is informational only: estafeta reads the directory "
            "given with -c DIR or $ESTAFETA_CONFIG: ignored"]
    assert got == want, f"got {got}, want {want}"
    assert os.path.isabs(MainConfig.load(str(d / "main.cf")).config_dir or "")
