"""estafeta.proto.replies: wire form of the catalogue."""
from __future__ import annotations

from estafeta.proto import replies as R


def test_single_line():
    assert R.NEED_MAIL.to_bytes() == b"503 5.5.1 Error: need MAIL command\r\n"
    assert R.greeting("mx.test").to_bytes() == b"220 mx.test ESMTP\r\n"
    assert R.queued("ABC").to_bytes() == b"250 2.0.0 Ok: queued as ABC\r\n"


def test_ehlo_multiline_rfc5321_4_2_1():
    got = R.ehlo_reply("mx.test", 100, ("STARTTLS",)).to_bytes()
    want = (b"250-mx.test\r\n250-PIPELINING\r\n250-SIZE 100\r\n250-VRFY\r\n250-STARTTLS\r\n"
            b"250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n")
    assert got == want, f"got {got!r}, want {want!r}"


def test_ehlo_keywords_in_postfix_order_whatever_the_extra_order():
    got = R.ehlo_reply("mx.test", 0, ("DSN", "X-OURS", "AUTH PLAIN LOGIN", "AUTH=PLAIN LOGIN", "STARTTLS"),
                       smtputf8=False, vrfy=False)
    want = ["mx.test", "PIPELINING", "SIZE", "STARTTLS", "AUTH PLAIN LOGIN", "AUTH=PLAIN LOGIN", "X-OURS",
            "ENHANCEDSTATUSCODES", "8BITMIME", "DSN"]
    assert [*got.lines, got.text] == want, f"got {[*got.lines, got.text]}"


def test_close_flags():
    for reply in (R.BYE, R.TOO_MANY_ERRORS, R.SHUTDOWN, R.TIMEOUT, R.BARE_LF_COMMAND):
        assert reply.close
    assert not R.OK.close


def test_reply_lines_never_exceed_512_octets():
    # RFC 5321 4.5.3.1.5. A reply quoting a long (SMTPUTF8) address is cut, and not
    # inside a UTF-8 sequence.
    addr = "ü" * 245 + "@example.org"
    r = R.Reply(550, "5.1.1", f"<{addr}>: Recipient address rejected: User unknown", ("first line",))
    wire = r.to_bytes()
    lines = wire.split(b"\r\n")[:-1]
    assert lines[0] == b"550-5.1.1 first line"
    assert len(lines) == 2 and all(len(ln) + 2 <= 512 for ln in lines)
    assert lines[1].startswith(b"550 5.1.1 <\xc3\xbc") and len(lines[1]) >= 505
    lines[1].decode("utf-8")          # whole characters only
    short = R.Reply(250, "2.1.5", "Ok")
    assert short.to_bytes() == b"250 2.1.5 Ok\r\n"
