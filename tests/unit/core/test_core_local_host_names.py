"""Sendmail's /etc/mail/local-host-names feeding mydestination (seed 5.3.2)."""
from __future__ import annotations

import pytest

from estafeta.config.main_cf import MainConfig
from estafeta.core.errors import ConfigError
from estafeta.core.resolve import DEFAULT, LOCAL, Resolver

# The seed's two local-host-names files, as written (one per chapter).
SEED_SENDMAIL = "monografía.com\n"
SEED_POSTFIX = "Monografia_postfix.com\n"


def resolver(mydestination: str) -> Resolver:
    return Resolver(MainConfig.parse(f"myhostname = mx.example.org\nmydestination = {mydestination}\n"
                                     "local_recipient_maps =\n", "main.cf"))


def test_local_host_names_file_in_mydestination(tmp_path) -> None:
    f = tmp_path / "local-host-names"
    f.write_text("# Sendmail local-host-names\n" + SEED_SENDMAIL + SEED_POSTFIX + "\nother.example\n",
                 encoding="utf-8")
    r = resolver(f"$myhostname, localhost, {f}")
    got = {d: r.address_class(d) for d in ("monografía.com", "MONOGRAFIA_POSTFIX.COM", "monografia_postfix.com",
                                           "other.example", "localhost", "remote.example", "sub.other.example")}
    want = {"monografía.com": LOCAL, "MONOGRAFIA_POSTFIX.COM": LOCAL, "monografia_postfix.com": LOCAL,
            "other.example": LOCAL, "localhost": LOCAL, "remote.example": DEFAULT, "sub.other.example": DEFAULT}
    assert got == want, f"got {got}, want {want}"


def test_missing_file_is_a_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="cannot read domain list file"):
        resolver(f"localhost, {tmp_path}/no-such-local-host-names")
