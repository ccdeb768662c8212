"""Lookup order: canonical/virtual, access, transport keys and first_match."""
from __future__ import annotations

import pytest

from estafeta.tables import TableTempError, open_table
from estafeta.tables.lookup import (access_address_keys, client_keys, first_match, ip_keys, parent_domains,
                                    rewrite_keys, split_extension, transport_keys)


def test_rewrite_keys_virtual_and_canonical() -> None:
    assert rewrite_keys("User+Foo@Example.com", "+", local_domain=True) == [
        "user+foo@example.com", "user@example.com", "user+foo", "user", "@example.com"]
    assert rewrite_keys("user+foo@example.com", "+") == ["user+foo@example.com", "user@example.com", "@example.com"]
    assert rewrite_keys("user@example.com") == ["user@example.com", "@example.com"]


def test_access_address_keys() -> None:
    # access(5) EMAIL ADDRESS EXTENSION: user+foo@domain, user@domain, domain, user+foo@, user@
    assert access_address_keys("user+foo@a.example.com", "+", parent_matches_subdomains=False) == [
        "user+foo@a.example.com", "user@a.example.com", "a.example.com", ".example.com", ".com",
        "user+foo@", "user@"]
    assert access_address_keys("u@a.example.com")[:4] == ["u@a.example.com", "a.example.com", "example.com", "com"]
    assert access_address_keys("") == ["<>"]


def test_delimiters() -> None:
    assert split_extension("a-b+c", "+-") == ("a", "b+c")
    assert split_extension("owner-list", "-") == ("owner-list", None)
    assert split_extension("list-request", "-") == ("list-request", None)
    assert split_extension("+lead", "+") == ("+lead", None)


def test_ip_and_client_keys() -> None:
    assert ip_keys("192.168.119.7") == ["192.168.119.7", "192.168.119", "192.168", "192"]
    assert ip_keys("2001:db8:0:0:1::7") == ["2001:db8::1:0:0:7", "2001:db8::1:0:0", "2001:db8::1:0",
                                             "2001:db8::1", "2001:db8", "2001"]
    assert ip_keys("not-an-ip") == []
    assert client_keys("mail.example.com", "168.0.3.4", True) == [
        "mail.example.com", "example.com", "com", "168.0.3.4", "168.0.3", "168.0", "168"]
    assert parent_domains("A.B.", False) == ["a.b", ".b"]


def test_transport_keys() -> None:
    assert transport_keys("u+x@a.b", "+", parent_matches_subdomains=False) == [
        "u+x@a.b", "u@a.b", "a.b", ".b", "*"]


def test_seed_access_file_decisions(tmp_path) -> None:
    """The seed's /etc/mail/access: RELAY localhost, 127.0.0.1, 192.168.119; REJECT 168.0."""
    p = tmp_path / "access"
    p.write_text("localhost RELAY\n127.0.0.1 RELAY\n192.168.119 RELAY\n168.0 REJECT\n")
    t = open_table(f"texthash:{p}")
    decide = {ip: first_match([t], client_keys(None, ip)) for ip in
              ("127.0.0.1", "192.168.119.20", "168.0.9.9", "192.168.1.1", "168.1.0.1")}
    assert decide == {"127.0.0.1": ("127.0.0.1", "RELAY"), "192.168.119.20": ("192.168.119", "RELAY"),
                      "168.0.9.9": ("168.0", "REJECT"), "192.168.1.1": None, "168.1.0.1": None}
    assert first_match([t], client_keys("localhost", "10.0.0.1")) == ("localhost", "RELAY")


def test_first_match_order_and_pattern_tables() -> None:
    a = open_table("inline:{ @example.com=catchall }")
    b = open_table("inline:{ u@example.com=exact }")
    r = open_table("regexp:{ {/^u\\+.*@/ pattern} }")
    keys = rewrite_keys("u+x@example.com", "+")
    # each key goes to every table before the next key
    assert first_match([a, b], keys) == ("u@example.com", "exact")
    assert first_match([a, r], keys) == ("u+x@example.com", "pattern")
    assert first_match([a], ["nothing"]) is None


class Broken:
    name = "hash:/broken"

    def lookup(self, key: str) -> str | None:
        raise TableTempError("disk on fire")


def test_first_match_never_hides_a_temporary_error() -> None:
    with pytest.raises(TableTempError):
        first_match([open_table("inline:{ a=b }"), Broken()], ["x"])
