"""estafeta.proto.smtp_client: reply parsing, EHLO keywords, commands, DATA bytes."""
from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from estafeta.proto import smtp_client as C
from estafeta.proto.framing import DataFramer
from estafeta.proto.replies import Reply


def replies(*chunks: bytes, **kw) -> list[Reply]:
    c = C.ClientCodec(**kw)
    out = []
    for chunk in chunks:
        c.receive_data(chunk)
        while (r := c.next_reply()) is not None:
            out.append(r)
    return out


def test_single_line_with_enhanced_code():
    assert replies(b"250 2.1.5 Ok\r\n") == [Reply(250, "2.1.5", "Ok")]


def test_greeting_without_enhanced_code():
    assert replies(b"220 mx.example.org ESMTP\r\n") == [Reply(220, "", "mx.example.org ESMTP")]


def test_enhanced_code_of_another_class_is_text():
    assert replies(b"550 2.0.0 odd\r\n") == [Reply(550, "", "2.0.0 odd")]


def test_multiline_split_across_chunks():
    got = replies(b"250-mx.exa", b"mple.org\r\n250-PIPE", b"LINING\r\n250 SIZE 1000\r\n")
    assert got == [Reply(250, "", "SIZE 1000", ("mx.example.org", "PIPELINING"))]


def test_multiline_enhanced_codes_stripped_from_every_line():
    got = replies(b"550-5.1.1 first\r\n550-5.1.1 second\r\n550 5.1.1 last\r\n")
    assert got == [Reply(550, "5.1.1", "last", ("first", "second"))]


def test_pipelined_replies_come_one_by_one():
    c = C.ClientCodec()
    c.receive_data(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n")
    assert [c.next_reply(), c.next_reply(), c.next_reply(), c.next_reply()] == [
        Reply(250, "2.1.0", "Ok"), Reply(250, "2.1.5", "Ok"), Reply(354, "", "go"), None]


def test_bare_code_and_lf_only_endings_accepted():
    assert replies(b"250\n") == [Reply(250, "", "")]


@pytest.mark.parametrize("junk", [b"hello\r\n", b"25\r\n", b"2500 x\r\n", b"abc def\r\n", b"650 x\r\n"])
def test_garbage_is_an_error(junk):
    with pytest.raises(C.ReplyError):
        replies(junk)


def test_code_change_inside_multiline_is_an_error():
    with pytest.raises(C.ReplyError, match="code changed"):
        replies(b"250-a\r\n251 b\r\n")


def test_endless_line_is_an_error_not_memory():
    # CVE-2020-8794 class: a server must not make the client buffer without bound.
    c = C.ClientCodec(max_line=1000)
    c.receive_data(b"250 " + b"x" * 2000)
    with pytest.raises(C.ReplyError, match="longer than 1000"):
        c.next_reply()


def test_endless_continuation_lines_are_an_error():
    c = C.ClientCodec(max_lines=100)
    with pytest.raises(C.ReplyError, match="more than 100 lines"):
        for _ in range(1000):
            c.receive_data(b"250-x\r\n")
            assert c.next_reply() is None


def test_ten_megabyte_reply_is_refused_early():
    c = C.ClientCodec()
    c.receive_data(b"250-" + b"y" * 10_000_000 + b"\r\n")
    with pytest.raises(C.ReplyError):
        c.next_reply()


def test_close_mid_reply_is_an_error():
    c = C.ClientCodec()
    c.receive_data(b"250-first\r\n")
    assert c.next_reply() is None
    c.receive_data(b"")
    with pytest.raises(C.ReplyError, match="closed"):
        c.next_reply()


def test_extensions():
    r = replies(b"250-mx.example.org\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-8BITMIME\r\n"
                b"250-SMTPUTF8\r\n250-starttls\r\n250-DSN\r\n250-AUTH PLAIN LOGIN\r\n250 ENHANCEDSTATUSCODES\r\n")[0]
    e = C.parse_extensions(r)
    assert (e.esmtp, e.pipelining, e.size, e.eightbitmime, e.smtputf8, e.starttls, e.dsn,
            e.enhancedstatuscodes, e.chunking) == (True, True, 10240000, True, True, True, True, True, False)
    assert e.keywords["AUTH"] == "PLAIN LOGIN"


def test_extensions_of_single_line_ehlo_and_bad_size():
    assert C.parse_extensions(Reply(250, "", "mx.example.org")) == C.Extensions(esmtp=True)
    r = Reply(250, "", "SIZE", ("mx",))
    assert C.parse_extensions(r).size == 0
    assert C.parse_extensions(Reply(250, "", "SIZE junk", ("mx",))).size == 0
    assert C.parse_extensions(Reply(502, "5.5.2", "no")) == C.Extensions()


def test_commands():
    assert C.ehlo("client.example.org") == b"EHLO client.example.org\r\n"
    assert C.lhlo("c") == b"LHLO c\r\n"
    assert C.mail_from("a@b", size=1234, body="8BITMIME", smtputf8=True) == \
        b"MAIL FROM:<a@b> SIZE=1234 BODY=8BITMIME SMTPUTF8\r\n"
    assert C.mail_from("") == b"MAIL FROM:<>\r\n"
    assert C.rcpt_to("\u00f1@b") == "RCPT TO:<\u00f1@b>\r\n".encode()


@pytest.mark.parametrize("bad", ["a@b>\r\nRSET", "a\n@b", "a\0b"])
def test_command_injection_refused(bad):
    with pytest.raises(ValueError):
        C.rcpt_to(bad)


@pytest.mark.parametrize("stored, wire", [
    (b"", b".\r\n"),
    (b"a\nb\n", b"a\r\nb\r\n.\r\n"),
    (b"a\nb", b"a\r\nb\r\n.\r\n"),
    (b".x\n", b"..x\r\n.\r\n"),
    (b"a\n.\nb\n", b"a\r\n..\r\nb\r\n.\r\n"),
    (b"a\n..\n", b"a\r\n...\r\n.\r\n"),
    (b"a\r\nb\n", b"a\r\nb\r\n.\r\n"),
    (b"x.y\n", b"x.y\r\n.\r\n"),
])
def test_message_wire_bytes(stored, wire):
    assert C.message_wire_bytes(stored) == wire


@given(st.binary(max_size=300).map(lambda b: b.replace(b"\r", b"")))
def test_wire_bytes_roundtrip_through_server_framer(stored):
    wire = C.message_wire_bytes(stored)
    f = DataFramer()
    pos, chunk, done = f.step(wire, 0)
    want = stored if not stored or stored.endswith(b"\n") else stored + b"\n"
    assert (done, pos, f.error, chunk) == (True, len(wire), None, want)


def test_reply_text_and_dsn():
    r = Reply(550, "5.1.1", "last", ("first",))
    assert C.reply_text(r) == "550 5.1.1 first last"
    assert C.reply_dsn(r) == "5.1.1"
    assert C.reply_dsn(Reply(450, "", "x")) == "4.0.0"
    assert C.reply_dsn(Reply(250, "", "x")) == "2.0.0"
