"""transport_maps (transport(5)): search order, result forms, precedence over classes."""
from __future__ import annotations

import pytest

from estafeta.config.main_cf import MainConfig
from estafeta.core.resolve import DEFAULT, LOCAL, Resolver, Route, apply_transport
from estafeta.tables import REGISTRY, TableTempError

BASE = """\
myhostname = mx.example.org
mydomain = example.org
mydestination = $myhostname, localhost
local_recipient_maps =
"""


def resolver(extra: str = "", table: str = "") -> Resolver:
    text = BASE + extra + (f"transport_maps = texthash:{table}\n" if table else "")
    return Resolver(MainConfig.parse(text, "main.cf"))


def table(tmp_path, text: str) -> str:
    p = tmp_path / "transport"
    p.write_text(text)
    return str(p)


def check(got, want) -> None:
    assert got == want, f"got {got}, want {want}"


def test_search_order_without_delimiter() -> None:
    r = resolver()
    check(r.transport_keys("User+x@Sub.Example.COM"),
          ["User+x@sub.example.com", "sub.example.com", ".example.com", ".com", "*"])


def test_search_order_with_delimiter_and_parent_domain_matching() -> None:
    r = resolver("recipient_delimiter = +\nparent_domain_matches_subdomains = transport_maps\n")
    check(r.transport_keys("user+x@sub.example.com"),
          ["user+x@sub.example.com", "user@sub.example.com", "sub.example.com", "example.com", "com", "*"])


def test_null_and_unqualified_recipients() -> None:
    r = resolver()
    check(r.transport_keys(""), ["MAILER-DAEMON@mx.example.org", "mx.example.org", ".example.org", ".org", "*"])
    check(r.transport_keys("postmaster")[0], "postmaster@mx.example.org")


@pytest.mark.parametrize("value, want", [
    ("", Route(DEFAULT, "smtp", "ex.com")),                            # no change
    (":", Route(DEFAULT, "smtp", "ex.com")),
    ("uucp:gateway", Route(DEFAULT, "uucp", "gateway")),
    ("slow:", Route(DEFAULT, "slow", "ex.com")),                      # nexthop reset to the domain
    ("slow", Route(DEFAULT, "slow", "ex.com")),
    (":[gw.example]", Route(DEFAULT, "smtp", "[gw.example]")),        # class transport kept
    ("smtp:[host]:2025", Route(DEFAULT, "smtp", "[host]:2025")),
    ("lmtp:unix:/run/dovecot/lmtp", Route(DEFAULT, "lmtp", "unix:/run/dovecot/lmtp")),
    ("error:Mail For X Is Not Accepted", Route(DEFAULT, "error", "Mail For X Is Not Accepted")),
    ("discard:", Route(DEFAULT, "discard", "ex.com")),
])
def test_result_forms(value: str, want: Route) -> None:
    check(apply_transport(Route(DEFAULT, "smtp", "ex.com"), value, "Ex.com"), want)


def test_address_beats_domain_beats_parent_beats_wildcard(tmp_path) -> None:
    t = table(tmp_path, """\
# transport(5) examples
bob@ex.com         pipe:bob
ex.com             smtp:[relay.ex.com]:2525
.ex.com            error:5.1.2 subdomains are gone
*                  :[outbound.example]
""")
    r = resolver(table=t)
    got = {a: r.resolve(a) for a in ("bob@ex.com", "Alice@EX.com", "x@a.b.ex.com", "y@elsewhere.net")}
    want = {"bob@ex.com": Route(DEFAULT, "pipe", "bob"),
            "Alice@EX.com": Route(DEFAULT, "smtp", "[relay.ex.com]:2525"),
            "x@a.b.ex.com": Route(DEFAULT, "error", "5.1.2 subdomains are gone"),
            "y@elsewhere.net": Route(DEFAULT, "smtp", "[outbound.example]")}
    check(got, want)


def test_dot_form_does_not_match_the_domain_itself(tmp_path) -> None:
    r = resolver(table=table(tmp_path, ".ex.com  discard:\n"))
    check(r.resolve("a@ex.com"), Route(DEFAULT, "smtp", "ex.com"))
    check(r.resolve("a@sub.ex.com"), Route(DEFAULT, "discard", "sub.ex.com"))


def test_bare_parent_form_when_parent_domain_matches_subdomains(tmp_path) -> None:
    t = table(tmp_path, "ex.com  discard:\n")
    plain = resolver(table=t)
    check(plain.resolve("a@sub.ex.com"), Route(DEFAULT, "smtp", "sub.ex.com"))
    bare = resolver("parent_domain_matches_subdomains = transport_maps\n", table=t)
    check(bare.resolve("a@sub.ex.com"), Route(DEFAULT, "discard", "sub.ex.com"))


def test_extension_falls_back_to_user(tmp_path) -> None:
    t = table(tmp_path, "bob@ex.com  pipe:\nbob+special@ex.com  error:special\n")
    r = resolver("recipient_delimiter = +\n", table=t)
    got = [r.resolve(a) for a in ("bob+x@ex.com", "bob+special@ex.com", "bob@ex.com")]
    want = [Route(DEFAULT, "pipe", "ex.com"), Route(DEFAULT, "error", "special"), Route(DEFAULT, "pipe", "ex.com")]
    check(got, want)


def test_overrides_local_class_and_keeps_class(tmp_path) -> None:
    t = table(tmp_path, "mx.example.org  mypipe:\nlocalhost  :\n")
    r = resolver(table=t)
    check(r.resolve("bob@mx.example.org"), Route(LOCAL, "mypipe", "mx.example.org"))
    check(r.resolve("bob@localhost"), Route(LOCAL, "local", "mx.example.org"))   # local:$myhostname


def test_inline_table_with_spaces_in_error_text() -> None:
    r = Resolver(MainConfig.parse(BASE + "transport_maps = inline:{ {x.example = error:mail for x is not accepted} }\n",
                                  "main.cf"))
    check(r.resolve("a@x.example"), Route(DEFAULT, "error", "mail for x is not accepted"))


def test_class_transports_still_apply_without_a_match(tmp_path) -> None:
    t = table(tmp_path, "other.example  discard:\n")
    r = resolver("relay_domains = relay.example\nrelay_transport = relay:[hub]\ndefault_transport = smtp:\n", table=t)
    got = [r.resolve(a) for a in ("a@relay.example", "a@far.example", "a@mx.example.org")]
    want = [Route("relay", "relay", "[hub]"), Route(DEFAULT, "smtp", "far.example"),
            Route(LOCAL, "local", "mx.example.org")]
    check(got, want)


class _Down:
    def __init__(self, name: str) -> None:
        self.name = f"down:{name}"

    def lookup(self, key: str) -> str | None:
        raise TableTempError("backend unreachable")


def test_table_failure_routes_to_retry(monkeypatch) -> None:
    monkeypatch.setitem(REGISTRY, "down", _Down)
    r = Resolver(MainConfig.parse(BASE + "transport_maps = down:x\n", "main.cf"))
    got = r.resolve("a@far.example")
    assert got.transport == "retry" and got.nexthop.startswith("4.3.0 "), f"got {got}, want retry:4.3.0 ..."
