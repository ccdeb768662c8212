"""Address classes and transport:nexthop routing (trivial-rewrite's resolve)."""
from __future__ import annotations

import pytest

from estafeta.config.main_cf import MainConfig
from estafeta.core.resolve import DEFAULT, LOCAL, RELAY, VIRTUAL, DomainList, Resolver, Route

BASE = """\
myhostname = mx.example.org
mydomain = example.org
mydestination = $myhostname, localhost.$mydomain, localhost
local_recipient_maps =
"""


def resolver(extra: str = "") -> Resolver:
    return Resolver(MainConfig.parse(BASE + extra, "main.cf"))


# --- DomainList -----------------------------------------------------------------------
def test_domain_list_names_case_and_trailing_dot() -> None:
    d = DomainList("Example.ORG, other.example  third.example.")
    got = {x: x in d for x in ("example.org", "EXAMPLE.org.", "other.example", "third.example",
                               "sub.example.org", "org", "")}
    want = {"example.org": True, "EXAMPLE.org.": True, "other.example": True, "third.example": True,
            "sub.example.org": False, "org": False, "": False}
    assert got == want, f"got {got}, want {want}"


def test_domain_list_from_file(tmp_path) -> None:
    f = tmp_path / "domains"
    f.write_text("# relayed domains\nA.example, b.example  # trailing comment\n\n  c.example\n")
    d = DomainList(f"{f}, d.example")
    got = sorted(d.names)
    want = ["a.example", "b.example", "c.example", "d.example"]
    assert got == want, f"got {got}, want {want}"
    assert "C.EXAMPLE" in d


def test_domain_list_from_table(tmp_path) -> None:
    f = tmp_path / "vmailbox"
    f.write_text("bob@virt.example  virt.example/bob/\nvirt.example  anything\n")
    d = DomainList(f"texthash:{f}, inline:{{ inl.example=x }}")
    got = {x: x in d for x in ("virt.example", "VIRT.example", "inl.example", "bob@virt.example", "x.example")}
    want = {"virt.example": True, "VIRT.example": True, "inl.example": True,
            "bob@virt.example": True, "x.example": False}
    assert got == want, f"got {got}, want {want}"


def test_domain_list_subdomains_only_when_asked() -> None:
    plain = DomainList("example.com, .example.net")
    sub = DomainList("example.com, .example.net", subdomains=True)
    cases = ["example.com", "a.example.com", "b.a.example.com", "example.net", "a.example.net", "com"]
    got = [(x, x in plain, x in sub) for x in cases]
    want = [("example.com", True, True), ("a.example.com", False, True), ("b.a.example.com", False, True),
            ("example.net", False, False), ("a.example.net", False, True), ("com", False, False)]
    assert got == want, f"got {got}, want {want}"


def test_domain_list_empty() -> None:
    d = DomainList("")
    assert "example.org" not in d


# --- Resolver ---------------------------------------------------------------------------
@pytest.mark.parametrize("address, want", [
    # local: mydestination and $myhostname; nexthop from local_transport = local:$myhostname
    ("bob@mx.example.org", Route(LOCAL, "local", "mx.example.org")),
    ("bob@MX.Example.ORG", Route(LOCAL, "local", "mx.example.org")),
    ("bob@localhost", Route(LOCAL, "local", "mx.example.org")),
    ("bob@localhost.example.org", Route(LOCAL, "local", "mx.example.org")),
    ("bob", Route(LOCAL, "local", "mx.example.org")),
    # default: smtp to the recipient domain
    ("bob@elsewhere.example", Route(DEFAULT, "smtp", "elsewhere.example")),
    ("bob@Elsewhere.Example", Route(DEFAULT, "smtp", "elsewhere.example")),
    ("bob@example.org", Route(DEFAULT, "smtp", "example.org")),
])
def test_resolve_defaults(address: str, want: Route) -> None:
    got = resolver().resolve(address)
    assert got == want, f"got {got}, want {want}"


def test_resolve_all_classes() -> None:
    r = resolver("virtual_mailbox_domains = virt.example\n"
                 "relay_domains = relay.example\n"
                 "virtual_transport = lmtp:unix:private/dovecot-lmtp\n"
                 "relay_transport = relay\n"
                 "default_transport = smtp:[smarthost.example]:587\n")
    cases = {
        "a@virt.example": Route(VIRTUAL, "lmtp", "unix:private/dovecot-lmtp"),
        "a@relay.example": Route(RELAY, "relay", "relay.example"),
        "a@sub.relay.example": Route(RELAY, "relay", "sub.relay.example"),
        "a@sub.virt.example": Route(DEFAULT, "smtp", "[smarthost.example]:587"),
        "a@mx.example.org": Route(LOCAL, "local", "mx.example.org"),
        "a@other.example": Route(DEFAULT, "smtp", "[smarthost.example]:587"),
    }
    got = {a: r.resolve(a) for a in cases}
    assert got == cases, f"got {got}, want {cases}"


def test_relayhost_is_the_nexthop_for_relay_and_default() -> None:
    r = resolver("relay_domains = relay.example\nrelayhost = [Gateway.Example]:2525\n"
                 "virtual_mailbox_domains = virt.example\n")
    cases = {
        "a@relay.example": Route(RELAY, "relay", "[gateway.example]:2525"),
        "a@other.example": Route(DEFAULT, "smtp", "[gateway.example]:2525"),
        "a@virt.example": Route(VIRTUAL, "virtual", "virt.example"),
        "a@localhost": Route(LOCAL, "local", "mx.example.org"),
    }
    got = {a: r.resolve(a) for a in cases}
    assert got == cases, f"got {got}, want {cases}"


def test_transport_without_nexthop_uses_the_domain() -> None:
    r = resolver("local_transport = local\n")
    got = (r.resolve("a@localhost"), r.resolve("a"))
    want = (Route(LOCAL, "local", "localhost"), Route(LOCAL, "local", "mx.example.org"))
    assert got == want, f"got {got}, want {want}"


def test_local_wins_over_other_classes() -> None:
    r = resolver("virtual_mailbox_domains = localhost\nrelay_domains = localhost\n")
    assert r.address_class("localhost") == LOCAL


def test_virtual_wins_over_relay() -> None:
    r = resolver("virtual_mailbox_domains = both.example\nrelay_domains = both.example\n")
    assert r.address_class("both.example") == VIRTUAL


def test_virtual_domains_from_mailbox_maps(tmp_path) -> None:
    f = tmp_path / "vmailbox"
    # As in Postfix, the table matches the domain as a key: it needs a "domain anything" line.
    f.write_text("virt.example  whatever\nbob@virt.example virt.example/bob/\n")
    r = resolver(f"virtual_mailbox_maps = texthash:{f}\nvirtual_mailbox_domains = $virtual_mailbox_maps\n")
    got = r.resolve("carol@virt.example")
    want = Route(VIRTUAL, "virtual", "virt.example")
    assert got == want, f"got {got}, want {want}"
    got = r.resolve("carol@other.example")
    assert got.address_class == DEFAULT, f"got {got}, want class default"


def test_is_known_local(tmp_path) -> None:
    f = tmp_path / "vmailbox"
    f.write_text("bob@virt.example  virt.example/bob/\n@catch.example  catch/\npostmaster  x\n")
    r = resolver(f"local_recipient_maps = texthash:{f}\n")
    got = {a: r.is_known_local(a) for a in
           ("bob@virt.example", "BOB@Virt.Example", "alice@virt.example", "anyone@catch.example",
            "postmaster@anywhere.example", "nobody@else.example")}
    want = {"bob@virt.example": True, "BOB@Virt.Example": True, "alice@virt.example": False,
            "anyone@catch.example": True, "postmaster@anywhere.example": True, "nobody@else.example": False}
    assert got == want, f"got {got}, want {want}"


def test_is_known_local_without_tables_is_unknown() -> None:
    got = resolver().is_known_local("bob@localhost")
    assert got is None, f"got {got}, want None"
