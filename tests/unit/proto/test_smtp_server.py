"""estafeta.proto.smtp_server: bytes in, events out, replies in, bytes out."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from estafeta.proto import replies as R
from estafeta.proto.events import (
    CLOSED, NEED_DATA, BadCommand, Data, EndOfData, Helo, Lhlo, MailFrom, MessageData,
)
from estafeta.proto.smtp_server import ServerConnection
from estafeta.testing.dialog import AcceptAllDriver


def drive(conn: ServerConnection, *pieces: bytes) -> tuple[list, bytes]:
    """Feed pieces, answer with AcceptAllDriver; consecutive MessageData merged."""
    driver, events, out = AcceptAllDriver(conn), [], b""
    for piece in pieces:
        conn.receive_data(piece)
        while (ev := conn.next_event()) not in (NEED_DATA, CLOSED):
            if isinstance(ev, MessageData) and events and isinstance(events[-1], MessageData):
                events[-1] = MessageData(events[-1].data + ev.data)
            else:
                events.append(ev)
            reply = driver.handle(ev)
            if reply is not None:
                out += conn.send(reply)
    return events, out


def test_event_then_reply_bytes():
    conn = ServerConnection("mx.test")
    assert conn.greeting() == b"220 mx.test ESMTP\r\n"
    conn.receive_data(b"HELO c\r\nMAIL FROM:<a@b> SIZE=5\r\n")
    assert conn.next_event().name == "c"
    assert conn.send(R.helo_reply("mx.test")) == b"250 mx.test\r\n"
    assert conn.next_event() == MailFrom("a@b", {"SIZE": "5"})
    conn.send(R.SENDER_OK)
    assert conn.next_event() is NEED_DATA


def test_must_answer_before_next_event():
    conn = ServerConnection("mx.test")
    conn.receive_data(b"NOOP\r\nNOOP\r\n")
    conn.next_event()
    with pytest.raises(RuntimeError):
        conn.next_event()


def test_refused_mail_keeps_state():
    conn = ServerConnection("mx.test")
    conn.receive_data(b"HELO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n")
    conn.next_event(); conn.send(R.helo_reply("mx.test"))
    conn.next_event(); conn.send(R.RELAY_DENIED)    # driver refuses the sender
    ev = conn.next_event()
    assert ev == BadCommand(R.NEED_MAIL), f"got {ev}, want need MAIL"


def test_peer_close_gives_closed():
    conn = ServerConnection("mx.test")
    conn.receive_data(b"NOO")
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"")
    assert conn.next_event() is CLOSED


def test_error_count_reset_after_message():
    conn = ServerConnection("mx.test", max_errors=2)
    events, out = drive(conn, b"HELO c\r\nFOO\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n",
                        b"x\r\n.\r\nFOO\r\nNOOP\r\n")
    assert b"421" not in out and out.endswith(b"250 2.0.0 Ok\r\n")


def test_lmtp_one_reply_per_recipient():
    conn = ServerConnection("mx.test", lmtp=True)
    events, _ = drive(conn, b"HELO c\r\nLHLO c\r\nMAIL FROM:<a@b>\r\n"
                      b"RCPT TO:<c@d>\r\nRCPT TO:<e@f>\r\nDATA\r\n")
    assert events[0] == BadCommand(R.UNKNOWN_COMMAND)
    assert isinstance(events[1], Lhlo)
    conn.receive_data(b"x\r\n.\r\nNOOP\r\n")
    assert conn.next_event() == MessageData(b"x\n")
    assert conn.next_event() == EndOfData(None)
    conn.send(R.queued("ID"))           # first recipient: one reply still due
    assert conn.state.name == "IN_DATA"
    with pytest.raises(RuntimeError):
        conn.next_event()
    conn.send(R.queued("ID"))           # second recipient
    assert conn.state.name == "READY"
    assert conn.next_event().__class__.__name__ == "Noop"


def test_lmtp_needs_lhlo():
    conn = ServerConnection("mx.test", lmtp=True)
    conn.receive_data(b"MAIL FROM:<a@b>\r\n")
    assert conn.next_event() == BadCommand(R.SEND_LHLO)


def test_message_chunks_normalised():
    conn = ServerConnection("mx.test")
    events, _ = drive(conn, b"HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<c@d>\r\nDATA\r\n",
                      b"a\r\n..b\r\n", b"c\r\n.\r\n")
    assert MessageData(b"a\n.b\nc\n") in events
    assert events[-1] == EndOfData(None)


def test_data_not_parsed_before_354():
    conn = ServerConnection("mx.test")
    conn.receive_data(b"HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<c@d>\r\nDATA\r\nQUIT\r\n")
    for reply in (R.helo_reply("mx.test"), R.SENDER_OK, R.RECIPIENT_OK):
        conn.next_event(); conn.send(reply)
    assert conn.next_event() == Data()
    conn.send(R.Reply(554, "5.5.1", "Error: no valid recipients"))   # driver refuses DATA
    assert type(conn.next_event()).__name__ == "Quit"      # so QUIT is a command again


SESSION = (b"EHLO client.example\r\nMAIL FROM:<a@example.org> SIZE=20\r\n"
           b"RCPT TO:<b@example.net>\r\nRCPT TO:<\"q q\"@example.net>\r\nDATA\r\n"
           b"Subject: x\r\n\r\n..dot\r\nbody\r\n.\r\nRSET\r\nNOOP\r\nVRFY x\r\nFOO\r\n"
           b"MAIL FROM:<>\r\nRCPT TO:<c@d>\r\nDATA\r\n.\r\nQUIT\r\n")


@settings(max_examples=300)
@given(st.lists(st.integers(0, len(SESSION)), max_size=12))
def test_any_split_same_events(cuts):
    cuts = sorted(set(cuts) - {0, len(SESSION)})
    pieces = [SESSION[a:b] for a, b in zip([0, *cuts], [*cuts, len(SESSION)])]
    whole = drive(ServerConnection("mx.test"), SESSION)
    split = drive(ServerConnection("mx.test"), *pieces)
    assert split == whole
    assert whole[1].endswith(b"221 2.0.0 Bye\r\n") and whole[1].count(b"queued") == 2


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_fuzz_garbage_never_crashes(junk):
    conn = ServerConnection("mx.test", max_line=64)
    events, out = drive(conn, b"HELO c\r\n" + junk, b"")
    assert all(line[:3].isdigit() for line in out.split(b"\r\n") if line)


def test_4xx_replies_count_as_errors():
    # Postfix counts every failed command, temporary or not, toward smtpd_hard_error_limit.
    conn = ServerConnection("mx.test", max_errors=2)
    conn.receive_data(b"HELO c\r\nMAIL FROM:<a@b>\r\nMAIL FROM:<a@b>\r\nNOOP\r\n")
    assert isinstance(conn.next_event(), Helo)
    conn.send(R.Reply(250, "", "mx.test"))
    for _ in range(2):
        assert isinstance(conn.next_event(), MailFrom)
        conn.send(R.Reply(451, "4.3.0", "try later"))
    assert conn.next_event() == BadCommand(R.TOO_MANY_ERRORS)


def test_junk_count_resets_after_a_message():
    conn = ServerConnection("mx.test", max_errors=1, max_junk=2)
    events, out = drive(conn, b"HELO c\r\nNOOP\r\nNOOP\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n",
                        b"x\r\n.\r\nNOOP\r\nNOOP\r\nNOOP\r\n")
    # Two NOOPs before the message cost nothing; the third one after it is an error,
    # and at max_errors the server says 421 without waiting for another command.
    after = out.split(b"queued as TESTID\r\n")[1]
    assert after == b"250 2.0.0 Ok\r\n" * 3 + b"421 4.7.0 Error: too many errors\r\n", out
