"""estafeta.proto.replies: wire form of the catalogue."""
from __future__ import annotations

from estafeta.proto import replies as R


def test_single_line():
    assert R.NEED_MAIL.to_bytes() == b"503 5.5.1 Error: need MAIL command\r\n"
    assert R.greeting("mx.test").to_bytes() == b"220 mx.test ESMTP\r\n"
    assert R.queued("ABC").to_bytes() == b"250 2.0.0 Ok: queued as ABC\r\n"


def test_ehlo_multiline_rfc5321_4_2_1():
    got = R.ehlo_reply("mx.test", 100, ("STARTTLS",)).to_bytes()
    want = (b"250-mx.test\r\n250-PIPELINING\r\n250-SIZE 100\r\n250-STARTTLS\r\n"
            b"250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n")
    assert got == want, f"got {got!r}, want {want!r}"


def test_close_flags():
    for reply in (R.BYE, R.TOO_MANY_ERRORS, R.SHUTDOWN, R.TIMEOUT, R.BARE_LF_COMMAND):
        assert reply.close
    assert not R.OK.close
