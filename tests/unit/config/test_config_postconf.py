"""estafeta config output, the registry, the default instance, and fuzzing."""
from __future__ import annotations

import os
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from estafeta.config.defaults import default_main_cf, default_master_cf, default_vmailbox
from estafeta.config.main_cf import MainConfig, check
from estafeta.config.master_cf import parse_master_cf
from estafeta.config.params import PARAMS, split_list
from estafeta.config.postconf import UnknownParameter, edit, parameter_reference_markdown, show
from estafeta.core.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def cfg_of(text: str) -> MainConfig:
    return MainConfig.parse(text, "/etc/estafeta/main.cf")


# --- show ----------------------------------------------------------------------
def test_show_all_is_sorted_name_equals_value() -> None:
    out = show(cfg_of("myhostname = mx.example\nmy_own = x\n"))
    lines = out.splitlines()
    names = [ln.split(" =", 1)[0] for ln in lines]
    assert names == sorted(names)
    assert set(names) == set(PARAMS) | {"my_own"}
    assert all(re.fullmatch(r"[A-Za-z0-9_]+ =( .*)?", ln) for ln in lines), lines
    assert "myorigin = $myhostname" in lines  # unexpanded, as postconf prints
    assert "relayhost =" in lines  # no trailing space on empty values


def test_show_names_changed_defaults_expand() -> None:
    cfg = cfg_of("myhostname = mx.example\nsmtpd_timeout = 60s\n")
    assert show(cfg, ["smtpd_timeout", "myorigin"]) == "smtpd_timeout = 60s\nmyorigin = $myhostname\n"
    assert show(cfg, changed_only=True) == "myhostname = mx.example\nsmtpd_timeout = 60s\n"
    assert show(cfg, ["smtpd_timeout"], defaults=True) == "smtpd_timeout = 300s\n"
    assert show(cfg, ["myorigin"], expand=True) == "myorigin = mx.example\n"
    assert show(cfg, ["myorigin"], expand=True, values_only=True) == "mx.example\n"
    assert show(cfg, ["biff"], changed_only=True) == ""


def test_show_unknown_parameter_warns_like_postconf() -> None:
    cfg = cfg_of("")
    with pytest.raises(UnknownParameter) as e:
        show(cfg, ["no_such"])
    assert str(e.value) == "estafeta config: warning: no_such: unknown parameter"
    warnings: list[str] = []
    assert show(cfg, ["no_such", "biff"], warnings=warnings) == "biff = yes\n"
    assert warnings == ["estafeta config: warning: no_such: unknown parameter"]


def test_edit(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "main.cf")
    with open(path, "w") as f:
        f.write("# keep me\nmyhostname = a\n")
    assert edit(path, ["myhostname=b", "relayhost = [mx]:25"]) == ""
    with open(path) as f:
        assert f.read() == "# keep me\nmyhostname = b\nrelayhost = [mx]:25\n"
    with pytest.raises(ConfigError) as e:
        edit(path, ["relayhost"])
    assert str(e.value) == "estafeta config -e: missing '=' after parameter name: 'relayhost'"


# --- registry -----------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(PARAMS))
def test_every_param_has_doc_and_valid_default(name: str) -> None:
    p = PARAMS[name]
    assert p.name == name
    assert p.doc.strip(), f"{name}: empty doc"
    assert p.doc.rstrip().endswith((".", ")")), f"{name}: doc is not a sentence"
    assert p.default_value(lambda n: "host.example.org") is not None
    MainConfig(path="defaults").value(name)  # raises ConfigError if the default fails its type


def test_brief_defaults() -> None:
    cfg = cfg_of("")
    want = {
        "mail_owner": "estafeta", "mydestination": "$myhostname, localhost.$mydomain, localhost",
        "mynetworks": "127.0.0.0/8 [::1]/128", "smtpd_banner": "$myhostname ESMTP",
        "message_size_limit": "10240000", "header_size_limit": "102400",
        "smtpd_relay_restrictions": "permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination",
        "maximal_queue_lifetime": "5d", "smtpd_worker_count": "0", "fsync_queue": "yes",
        "empty_address_recipient": "MAILER-DAEMON", "virtual_mailbox_domains": "$virtual_mailbox_maps",
    }
    for name, value in want.items():
        assert cfg.default(name) == value, f"{name}: got {cfg.default(name)!r}, want {value!r}"


def test_reference_doc_is_generated_and_current() -> None:
    text = parameter_reference_markdown()
    for name in PARAMS:
        assert f"| `{name}` |" in text
    with open(os.path.join(REPO, "docs", "PARAMETERS.md")) as f:
        assert f.read() == text, "docs/PARAMETERS.md is stale: regenerate it"


# --- default instance -----------------------------------------------------------
def test_default_instance_parses_and_checks_clean(tmp_path: object) -> None:
    d = str(tmp_path)
    cfg = MainConfig.parse(default_main_cf(d), "main.cf")
    assert check(cfg) == []
    assert cfg.get("queue_directory") == f"{d}/var/queue"
    assert cfg.get("local_recipient_maps") == f"texthash:{d}/vmailbox"
    assert cfg.get_list("virtual_mailbox_domains") == []
    assert cfg.get("inet_interfaces") == "127.0.0.1"
    services = {(e.name, e.type): e for e in parse_master_cf(default_master_cf())}
    smtpd = services[("127.0.0.1:2525", "inet")]
    assert smtpd.command == "smtpd" and smtpd.endpoint == ("127.0.0.1", "2525")
    assert services[("qmgr", "unix")].maxproc == 1
    assert "demo@localhost" in default_vmailbox()


def test_default_instance_escapes_dollar_and_refuses_spaces() -> None:
    cfg = MainConfig.parse(default_main_cf("/tmp/a$b"), "main.cf")
    assert cfg.get("queue_directory") == "/tmp/a$b/var/queue"
    with pytest.raises(ValueError):
        default_main_cf("/tmp/a b")


# --- fuzzing: parsers fail only with ConfigError ----------------------------------
_cf_text = st.text(alphabet=st.sampled_from(list("ab_=$ {}()?:#\t\n-xyz019")), max_size=80)


@settings(max_examples=300, deadline=None, database=None)
@given(_cf_text)
def test_fuzz_main_cf(text: str) -> None:
    try:
        cfg = MainConfig.parse(text, "f")
        for name in cfg.changed():
            cfg.get(name)
    except ConfigError as e:
        assert str(e).startswith("f")


@settings(max_examples=300, deadline=None, database=None)
@given(_cf_text)
def test_fuzz_master_cf(text: str) -> None:
    try:
        parse_master_cf(text, "f")
    except ConfigError as e:
        assert str(e).startswith("f")


@settings(database=None)
@given(st.lists(st.from_regex(r"[a-z0-9:/.\[\]]{1,8}", fullmatch=True), max_size=6))
def test_split_list_roundtrip(items: list[str]) -> None:
    assert split_list(", ".join(items)) == items
    assert split_list("\n ".join(items)) == items
