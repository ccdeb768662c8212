"""Bugs the atheris fuzz targets found in the SMTP codecs (tests/fuzz/), one test each."""
from __future__ import annotations

import pytest

from estafeta.proto import replies as R
from estafeta.proto.events import CLOSED, NEED_DATA, BadCommand, Ehlo, Noop
from estafeta.proto.replies import Reply
from estafeta.proto.smtp_client import ClientCodec, ReplyError, parse_extensions
from estafeta.proto.smtp_server import ServerConnection
from estafeta.queue import qfile


def events(*pieces: bytes) -> tuple[list, bool]:
    """Feed the pieces one read each, answer every event; (events, closed)."""
    conn, out = ServerConnection("mx.test"), []
    conn.greeting()
    for p in pieces:
        conn.receive_data(p)
        while (e := conn.next_event()) not in (NEED_DATA, CLOSED):
            out.append(e)
            conn.send(e.reply if isinstance(e, BadCommand) else conn.ehlo_reply() if isinstance(e, Ehlo) else R.OK)
    return out, conn.state.name == "CLOSED"


@pytest.mark.parametrize("cut", [0, 2100, 2999, 3000])
def test_over_long_line_with_bare_lf_closes_however_it_arrives(cut):
    # Read in one piece this was a bare LF (500, close); read in two, the first over
    # max_line, the line was discarded and answered "line too long", session open.
    line = b"x" * 3000 + b"\nNOOP\r\n"
    pieces = (line,) if cut == 0 else (line[:cut], line[cut:])
    got, closed = events(*pieces)
    assert [e.reply for e in got] == [R.BARE_LF_COMMAND] and closed


@pytest.mark.parametrize("cut", [0, 2100, 3000, 3001])
def test_over_long_line_with_crlf_is_too_long_however_it_arrives(cut):
    line = b"x" * 3000 + b"\r\nNOOP\r\n"
    pieces = (line,) if cut == 0 else (line[:cut], line[cut:])
    got, closed = events(*pieces)
    assert got[0] == BadCommand(R.LINE_TOO_LONG) and isinstance(got[1], Noop) and not closed


def test_helo_name_with_tab_can_be_queued():
    # "EHLO a<TAB>b" used to reach the helo_name record as is; encode_value refuses a
    # TAB, so smtpd answered every DATA of the session with 451 queue file write error.
    got, _ = events(b"EHLO client\texample   host\r\n")
    assert got == [Ehlo("client example host")]
    qfile.encode_envelope(1.0, "a@b", [("c@d", {})], {"helo_name": got[0].name})


@pytest.mark.parametrize("line", ["1\u00b23 x", "2\u00b250 x", "2\u0665\u0660 x"])
def test_reply_code_with_non_ascii_digits_is_a_reply_error(line):
    # "²".isdigit() is true and int("1²3") a ValueError, which escaped next_reply();
    # "2٥٠" (Arabic-Indic digits) int() would even read as 250.
    codec = ClientCodec()
    codec.receive_data(line.encode() + b"\r\n")
    with pytest.raises(ReplyError):
        codec.next_reply()


def test_ehlo_size_with_non_ascii_digit_is_no_limit():
    assert parse_extensions(Reply(250, "", "SIZE \u00b2", ("mx.example",))).size == 0
