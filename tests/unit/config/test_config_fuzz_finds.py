"""Bugs the atheris fuzz targets found in main.cf and master.cf handling (tests/fuzz/)."""
from __future__ import annotations

import pytest

from estafeta.config.main_cf import MainConfig, edit_main_cf
from estafeta.config.master_cf import parse_master_cf
from estafeta.core.errors import ConfigError


def test_edit_a_setting_whose_value_is_on_a_continuation_line(tmp_path):
    # "name" alone, then " = value" on the next line, is one valid logical line;
    # postconf -e used to refuse the whole file ("missing '=' after parameter name").
    p = tmp_path / "main.cf"
    p.write_text("myhostname\n# a comment\n = old.example\nmydomain = example\n")
    edit_main_cf(str(p), {"myhostname": "new.example", "relayhost": "[mx]"})
    cfg = MainConfig.parse(p.read_text())
    assert cfg.changed() == {"myhostname": "new.example", "mydomain": "example", "relayhost": "[mx]"}
    assert "# a comment" in p.read_text()


def test_deeply_nested_conditionals_are_a_config_error():
    # ${b?${b?...}} nested a few hundred deep was a RecursionError.
    deep = MainConfig.parse("a = " + "${b?" * 600 + "x" + "}" * 600 + "\nb = 1\n")
    with pytest.raises(ConfigError, match="nesting too deep"):
        deep.get("a")
    ok = MainConfig.parse("a = " + "${b?" * 50 + "x" + "}" * 50 + "\nb = 1\n")
    assert ok.get("a") == "x"


@pytest.mark.parametrize("wakeup, maxproc", [("-", "\u00b2"), ("\u00b2", "1"), ("\u00b2?", "1")])
def test_master_cf_unicode_digits_are_a_config_error(wakeup, maxproc):
    # "²".isdigit() is true and int("²") a ValueError.
    with pytest.raises(ConfigError):
        parse_master_cf(f"smtp inet n - n {wakeup} {maxproc} smtpd\n")
