"""Address rewriting (core/rewrite.py): canonical, masquerading, virtual aliases, qualification."""
from __future__ import annotations

import pytest

from estafeta.config.main_cf import MainConfig
from estafeta.core.resolve import LOCAL, Resolver
from estafeta.core.rewrite import (ENV_RECIPIENT, ENV_SENDER, HDR_RECIPIENT, HDR_SENDER, AliasLimitError,
                                   Rewriter)
from estafeta.tables import TableTempError

BASE = """\
myhostname = mx.example.org
mydomain = example.org
myorigin = example.org
mydestination = $myhostname, localhost, example.org
local_recipient_maps =
"""


def rw(extra: str = "", tmp_path=None, **files: str) -> Rewriter:
    text = BASE + extra
    for name, content in files.items():
        p = tmp_path / name
        p.write_text(content)
        text = text.replace("{" + name + "}", str(p))
    cfg = MainConfig.parse(text, "main.cf")
    res = Resolver(cfg)
    return Rewriter(cfg, lambda d: res.address_class(d) == LOCAL)


def check(got, want):
    assert got == want, f"got {got!r}, want {want!r}"


# --- qualification ----------------------------------------------------------------------
def test_qualify_bare_name_gets_myorigin_and_dotless_domain_stays():
    r = rw()
    check([r.qualify(a) for a in ("bob", "bob@host", "bob@x.example.", "", "bob@[10.0.0.1]")],
          ["bob@example.org", "bob@host", "bob@x.example", "", "bob@[10.0.0.1]"])


def test_append_dot_mydomain_and_append_at_myorigin_off():
    r = rw("append_dot_mydomain = yes\nappend_at_myorigin = no\n")
    check([r.qualify(a) for a in ("bob", "bob@host", "bob@host.x")], ["bob", "bob@host.example.org", "bob@host.x"])


# --- canonical --------------------------------------------------------------------------
CANON = """\
wietse@mx.example.org      Wietse.Venema@example.org
@old.example               @new.example
alice@example.org          alice.smith@example.org
alice.smith@example.org    alice.smith@example.org
loop1@example.org          loop2@example.org
loop2@example.org          loop1@example.org
bare                       bare.user
"""


def test_canonical_address_domain_self_and_recursion(tmp_path):
    r = rw("canonical_maps = texthash:{canon}\n", tmp_path, canon=CANON)
    got = {a: r.canonical(a, ENV_SENDER) for a in
           ("wietse@mx.example.org", "joe@old.example", "alice@example.org", "nobody@x.example", "",
            "bare@example.org", "bare@elsewhere.example")}
    check(got, {"wietse@mx.example.org": "Wietse.Venema@example.org", "joe@old.example": "joe@new.example",
                "alice@example.org": "alice.smith@example.org", "nobody@x.example": "nobody@x.example", "": "",
                # "user" keys apply only to local domains; a bare result gets @$myorigin
                "bare@example.org": "bare.user@example.org", "bare@elsewhere.example": "bare@elsewhere.example"})
    # a loop stops after the recursion limit, with some address of the loop
    assert r.canonical("loop1@example.org", ENV_SENDER) in ("loop1@example.org", "loop2@example.org")


def test_canonical_extension_propagation(tmp_path):
    r = rw("recipient_delimiter = +\ncanonical_maps = texthash:{canon}\n", tmp_path,
           canon="bob@example.org robert@example.org\nbob+exact@example.org exact@example.org\n")
    check([r.canonical(a, ENV_RECIPIENT) for a in ("bob+list@example.org", "bob+exact@example.org")],
          ["robert+list@example.org", "exact@example.org"])
    r2 = rw("recipient_delimiter = +\npropagate_unmatched_extensions =\ncanonical_maps = texthash:{canon}\n",
            tmp_path, canon="bob@example.org robert@example.org\n")
    check(r2.canonical("bob+list@example.org", ENV_RECIPIENT), "robert@example.org")


def test_sender_and_recipient_canonical_and_classes(tmp_path):
    r = rw("sender_canonical_maps = inline:{ a@x.example=s@x.example }\n"
           "recipient_canonical_maps = inline:{ a@x.example=r@x.example }\n"
           "canonical_maps = inline:{ s@x.example=s2@x.example }\n"
           "canonical_classes = envelope_sender\n")
    check([r.canonical("a@x.example", c) for c in (ENV_SENDER, HDR_SENDER, ENV_RECIPIENT, HDR_RECIPIENT)],
          ["s2@x.example", "s@x.example", "r@x.example", "r@x.example"])


def test_canonical_regexp_table(tmp_path):
    r = rw("canonical_maps = regexp:{re}\n", tmp_path, re="/^(.*)@(.*)\\.internal$/ ${1}@${2}.example\n")
    check(r.canonical("joe@dept.internal", ENV_SENDER), "joe@dept.example")


# --- masquerading -----------------------------------------------------------------------
def test_masquerade_domains_exceptions_and_classes():
    r = rw("masquerade_domains = foo.example.com !keep.example.com example.com\n"
           "masquerade_exceptions = root\n")
    got = {a: r.masquerade(a, ENV_SENDER) for a in (
        "u@a.b.foo.example.com", "u@foo.example.com", "u@x.example.com", "u@keep.example.com",
        "u@a.keep.example.com", "u@example.com", "root@x.example.com", "u@other.org", "u@[1.2.3.4]")}
    check(got, {"u@a.b.foo.example.com": "u@foo.example.com", "u@foo.example.com": "u@foo.example.com",
                "u@x.example.com": "u@example.com", "u@keep.example.com": "u@keep.example.com",
                "u@a.keep.example.com": "u@a.keep.example.com", "u@example.com": "u@example.com",
                "root@x.example.com": "root@x.example.com", "u@other.org": "u@other.org",
                "u@[1.2.3.4]": "u@[1.2.3.4]"})
    # envelope recipients are not in the default masquerade_classes
    check(r.masquerade("u@x.example.com", ENV_RECIPIENT), "u@x.example.com")
    check(r.masquerade("u@x.example.com", HDR_RECIPIENT), "u@example.com")


# --- virtual aliases --------------------------------------------------------------------
VIRTUAL = """\
list@v.example      a@x.example, b@x.example c@x.example
nested@v.example    list@v.example, d@x.example
keep@v.example      keep@v.example, copy@x.example
@catch.example      postmaster@x.example
exact@catch.example exact@x.example
loopa@v.example     loopb@v.example
loopb@v.example     loopa@v.example
dup@v.example       a@x.example, A@x.example, list@v.example
"""


def test_virtual_one_to_many_recursion_self_catchall(tmp_path):
    r = rw("virtual_alias_maps = texthash:{virtual}\n", tmp_path, virtual=VIRTUAL)
    got = {a: r.virtual(a) for a in ("list@v.example", "nested@v.example", "keep@v.example",
                                       "anyone@catch.example", "exact@catch.example", "none@v.example",
                                       "dup@v.example")}
    check(got, {"list@v.example": ["a@x.example", "b@x.example", "c@x.example"],
                "nested@v.example": ["a@x.example", "b@x.example", "c@x.example", "d@x.example"],
                "keep@v.example": ["keep@v.example", "copy@x.example"],
                "anyone@catch.example": ["postmaster@x.example"],
                "exact@catch.example": ["exact@x.example"],
                "none@v.example": ["none@v.example"],
                "dup@v.example": ["a@x.example", "b@x.example", "c@x.example"]})
    loop = r.virtual("loopa@v.example")
    assert len(loop) == 1, f"got {loop}, want one address for a loop"


def test_virtual_limits_defer(tmp_path):
    big = "many@v.example " + ", ".join(f"u{i}@x.example" for i in range(20)) + "\n"
    chain = "".join(f"c{i}@v.example c{i + 1}@v.example\n" for i in range(10))
    r = rw("virtual_alias_maps = texthash:{virtual}\nvirtual_alias_expansion_limit = 10\n"
           "virtual_alias_recursion_limit = 5\n", tmp_path, virtual=big + chain)
    with pytest.raises(AliasLimitError):
        r.virtual("many@v.example")
    with pytest.raises(AliasLimitError):
        r.virtual("c0@v.example")
    check(r.virtual("c7@v.example"), ["c10@v.example"])


def test_virtual_table_failure_raises(tmp_path):
    r = rw("virtual_alias_maps = texthash:{virtual}\n", tmp_path, virtual="a@v.example b@x.example\n")
    (tmp_path / "virtual").write_text("  continuation first\n")     # edited into a broken state
    import os
    os.utime(tmp_path / "virtual", (1, 1))
    with pytest.raises(TableTempError):
        r.virtual("a@v.example")


def test_envelope_recipient_pipeline(tmp_path):
    r = rw("recipient_canonical_maps = inline:{ old@example.org=list@v.example }\n"
           "virtual_alias_maps = texthash:{virtual}\n", tmp_path, virtual=VIRTUAL)
    check(r.envelope_recipient("old"), ["a@x.example", "b@x.example", "c@x.example"])


# --- headers ----------------------------------------------------------------------------
def test_header_rewriting_keeps_display_names_and_comments(tmp_path):
    r = rw("canonical_maps = inline:{ joe@mx.example.org=Joe.User@example.org }\n"
           "masquerade_domains = example.com\n")
    check(r.header("From", ' "Joe User" <joe@mx.example.org> (work)', "example.org"),
          ' "Joe User" <Joe.User@example.org> (work)')
    check(r.header("To", " a@x.example.com, Bob <b@example.com>,\n\tcarl", "example.org"),
          " a@example.com, Bob <b@example.com>,\n\tcarl@example.org")
    check(r.header("Subject", " joe@mx.example.org", "example.org"), None)
    check(r.header("Cc", " nobody@else.example", "example.org"), None)
    check(r.header("To", " undisclosed-recipients:;", "example.org"), None)


# --- header(): the fast path for plain qualified addresses ------------------------------
def test_plain_qualified_header_fast_path_agrees_with_the_full_parse():
    """With no canonical/masquerade tables, header() skips the RFC 5322 parse for one
    plain qualified address; whatever it skips must be a header the parse leaves alone,
    and headers that do need qualifying still get it."""
    from hypothesis import given, settings, strategies as st
    from estafeta.core import rewrite as mod

    r = rw("append_dot_mydomain = yes\n")
    assert not r.rewrites_headers
    atoms = st.sampled_from(["joe", "a.b", "x-y", "Joe", "q+tag", "", "a b", '"q"', "(c)", "@", ".", "<", ">",
                             ",", "host", "example.org", "b.example.", "[1.2.3.4]", " ", "\t", ";", ":"])

    @settings(max_examples=400, deadline=None, derandomize=True, database=None)
    @given(st.lists(atoms, max_size=8).map("".join))
    def agree(value):
        fast = mod._PLAIN_QUALIFIED.fullmatch(value) is not None
        saved = mod._PLAIN_QUALIFIED
        try:
            mod._PLAIN_QUALIFIED = type("Never", (), {"fullmatch": staticmethod(lambda v: None)})
            slow = r.header("To", value, "example.org")
        finally:
            mod._PLAIN_QUALIFIED = saved
        if fast:
            assert slow is None, f"fast path skipped {value!r}, full parse rewrites it to {slow!r}"
        assert r.header("To", value, "example.org") == slow

    agree()
    for value in (" joe@host.example.org", " <joe@a.example>", " Joe Bloggs <joe@a.example>\n"):
        assert mod._PLAIN_QUALIFIED.fullmatch(value), value
    # these need work, so the fast path must not take them
    for value, want in ((" joe", " joe@example.org"), (" joe@host", " joe@host.example.org"),
                        (" joe@a.example.", " joe@a.example")):
        assert not mod._PLAIN_QUALIFIED.fullmatch(value), value
        check(r.header("To", value, "example.org"), want)
