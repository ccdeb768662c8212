"""estafeta.proto.address: RFC 5321 paths and parameters."""
from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from estafeta.proto import replies as R
from estafeta.proto.address import (
    AddressError, domain_of, parse_mail_from, parse_params, parse_rcpt_to, split_address,
)


@pytest.mark.parametrize("arg, want", [
    ("<>", ""),
    ("<a@example.org>", "a@example.org"),
    (" <a@example.org>", "a@example.org"),
    ("a@example.org", "a@example.org"),
    ('<"a b"@example.org>', '"a b"@example.org'),
    ('<"a\\"b"@example.org>', '"a\\"b"@example.org'),
    ("<u@[127.0.0.1]>", "u@[127.0.0.1]"),
    ("<u@[IPv6:::1]>", "u@[IPv6:::1]"),
    ("<@a.example,@b.example:u@d.example>", "u@d.example"),
    ("<postmaster>", "postmaster"),
    ("<first.last+tag@sub.example.org>", "first.last+tag@sub.example.org"),
])
def test_good_senders(arg, want):
    got, _ = parse_mail_from(arg)
    assert got == want, f"got {got!r}, want {want!r}"


@pytest.mark.parametrize("arg", [
    "", "<", "<a@b", "a@b>", "<a b@c>", "<<a@b>>", "<a@b>x", "<@a:>", "<a@b.>",
    "<a@[1.2.3]>", "<a@[foo]>", "<a@b@c>", '<"a@b>', "<a@b\r\n>", "<a\x00@b>", "<a\t@b>",
])
def test_bad_senders(arg):
    with pytest.raises(AddressError) as e:
        parse_mail_from(arg)
    assert e.value.reply == R.BAD_SENDER_SYNTAX


def test_null_recipient_refused():
    with pytest.raises(AddressError) as e:
        parse_rcpt_to("<>")
    assert e.value.reply == R.BAD_RECIPIENT_SYNTAX


def test_params():
    assert parse_mail_from("<a@b> size=10  BODY=8BITMIME smtputf8") == (
        "a@b", {"SIZE": "10", "BODY": "8BITMIME", "SMTPUTF8": None})


@pytest.mark.parametrize("text", ["=x", "A=", "A=b=c", "SIZE=1 size=2", "A=\x01", "-A"])
def test_bad_params(text):
    with pytest.raises(AddressError) as e:
        parse_params(text)
    assert e.value.reply == R.BAD_PARAM_SYNTAX


def test_smtputf8():
    with pytest.raises(AddressError) as e:
        parse_mail_from("<jösé@example.org>")
    assert e.value.reply == R.NEED_SMTPUTF8
    assert parse_mail_from("<jösé@example.org> SMTPUTF8")[0] == "jösé@example.org"
    assert parse_rcpt_to("<ü@bücher.example>", smtputf8=True)[0] == "ü@bücher.example"
    with pytest.raises(AddressError):
        parse_rcpt_to("<ü@bücher.example>")


@pytest.mark.parametrize("addr, want", [
    ("a@Example.ORG", ("a", "Example.ORG")),
    ('"x@y"@example.org', ('"x@y"', "example.org")),
    ('"x@y"', ('"x@y"', "")),
    ("postmaster", ("postmaster", "")),
])
def test_split_address(addr, want):
    assert split_address(addr) == want


def test_domain_of():
    assert domain_of("a@Example.ORG") == "example.org"


@given(st.text(max_size=80))
def test_fuzz_parse_never_crashes(text):
    for parse in (parse_mail_from, parse_rcpt_to):
        try:
            address, params = parse(text)
        except AddressError as e:
            assert e.reply.code in (501, 553)
        else:
            assert not any(ord(c) < 0x20 or ord(c) == 0x7f for c in address)
