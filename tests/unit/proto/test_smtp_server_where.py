"""The codec's record of where a session is (ServerConnection.where_text, Postfix's
state->where for "lost connection/timeout/too many errors after X") and its
smtpd_recipient_overshoot_limit rule (error_counted). Compared with a real Postfix
in tests/interop/test_disconnect_postfix.py."""
from __future__ import annotations

from estafeta.proto import replies as R
from estafeta.proto.events import CLOSED, NEED_DATA, BadCommand, Data, EndOfData, MessageData
from estafeta.proto.smtp_server import ServerConnection


def answer(conn: ServerConnection, data: bytes, rcpt_reply: R.Reply = R.RECIPIENT_OK) -> None:
    """Feed `data`; answer every command as an accepting server would."""
    conn.receive_data(data)
    while (e := conn.next_event()) not in (NEED_DATA, CLOSED):
        if isinstance(e, MessageData):
            continue
        if isinstance(e, BadCommand):
            conn.send(e.reply)
        elif isinstance(e, Data):
            conn.send(R.START_DATA)
        elif isinstance(e, EndOfData):
            conn.send(R.queued("QID"))
        elif type(e).__name__ == "RcptTo":
            conn.send(rcpt_reply)
        else:
            conn.send(R.OK)


def where_after(*pieces: bytes) -> str:
    conn = ServerConnection("mx.test")
    conn.greeting()
    for p in pieces:
        answer(conn, p)
    return conn.where_text()


def test_where_is_the_last_command_as_postfix_names_it():
    head = b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n"
    cases = {
        (): "CONNECT",
        (b"EHLO c\r\n",): "EHLO",
        (b"ehlo c\r\nrset\r\n",): "RSET",                        # the verb's name, not as written
        (b"EHLO c\r\nFOO\r\n",): "UNKNOWN",
        (b"EHLO c\r\n\r\n",): "EHLO",                           # an empty line changes nothing
        (b"EHLO c\r\n   \r\n",): "EHLO",
        (b"EHLO c\r\nMAIL FROM:<a@b.example> xyz=1\r\n",): "MAIL",    # refused: still MAIL
        (b"MAIL FROM:<a@b.example>\r\n",): "MAIL",              # refused for want of HELO
        (b"EHLO c\r\nSTARTTLS\r\n",): "STARTTLS",
        (head + b"DATA\r\n",): "DATA (0 bytes)",
        (head + b"DATA\r\nSubject: x\r\n\r\nand then",): "DATA (14 bytes)",   # complete lines only
        (head + b"DATA\r\nSubject: x\r\n..dot\r\n",): "DATA (18 bytes)",    # unstuffed
        (head + b"DATA\r\nSubject: x\r\n\r\nhi\r\n.\r\n",): "END-OF-MESSAGE",
        (head + b"DATA\r\n.\r\nNOOP\r\n",): "NOOP",
        (b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nDATA\r\n",): "DATA",      # refused: no message
    }
    for pieces, want in cases.items():
        got = where_after(*pieces)
        assert got == want, f"{pieces!r}: got {got!r}, want {want!r}"


def test_where_in_a_message_survives_the_client_leaving():
    conn = ServerConnection("mx.test")
    answer(conn, b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\nSubject: x\r\n")
    answer(conn, b"")
    assert conn.state.name == "CLOSED"
    assert conn.where_text() == "DATA (12 bytes)", f"got {conn.where_text()!r}"


def test_hard_error_limit_leaves_where_alone():
    conn = ServerConnection("mx.test", max_errors=2)
    conn.receive_data(b"EHLO c\r\nFOO\r\nMAIL FROM:<a@b.example> xyz=1\r\n")
    for _ in range(3):
        e = conn.next_event()
        conn.send(e.reply if isinstance(e, BadCommand) else R.OK)
    e = conn.next_event()
    assert isinstance(e, BadCommand) and e.reply is R.TOO_MANY_ERRORS, f"got {e}"
    assert conn.where_text() == "MAIL", f"got {conn.where_text()!r}"


def test_recipient_overshoot_counts_as_error_past_the_limit():
    # Postfix: 452 past smtpd_recipient_limit is no error for the first
    # smtpd_recipient_overshoot_limit of them in a transaction; later ones are.
    conn = ServerConnection("mx.test", max_overshoot=2)
    answer(conn, b"EHLO c\r\nMAIL FROM:<a@b.example>\r\n")
    counted = []
    conn.receive_data(b"RCPT TO:<c@d.example>\r\n" * 4)
    for _ in range(4):
        e = conn.next_event()
        assert type(e).__name__ == "RcptTo", f"got {e}"
        counted.append(conn.error_counted(R.TOO_MANY_RECIPIENTS))
        conn.send(R.TOO_MANY_RECIPIENTS)
    assert counted == [False, False, True, True], f"got {counted}"
    assert conn.errors == 2, f"got {conn.errors} errors, want 2"
    answer(conn, b"RSET\r\nMAIL FROM:<a@b.example>\r\n")      # a new transaction: overshoot anew
    assert conn.overshoot == 0 and conn.error_counted(R.TOO_MANY_RECIPIENTS) is False
    assert conn.error_counted(R.UNKNOWN_COMMAND) and not conn.error_counted(R.OK)


def test_overshoot_limit_zero_counts_every_refusal():
    conn = ServerConnection("mx.test", max_overshoot=0)
    answer(conn, b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n", R.TOO_MANY_RECIPIENTS)
    assert conn.errors == 1, f"got {conn.errors} errors, want 1"


def test_data_bytes_past_the_size_limit_and_a_bare_lf_as_postfix():
    # Postfix 3.7 (message_size_limit = 5000) logged these N for "lost connection
    # after DATA (N bytes)": past the limit it stays at the last whole line that fit;
    # after a bare LF (a line end to Postfix) it goes on counting. Any split of the input.
    head = b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n"
    cases = {
        b"Subject: big\r\n\r\n" + (b"x" * 78 + b"\r\n") * 100 + b"..dot\r\nabc": 4976,
        b"Subject: x\r\n\r\nab\ncd\r\n" + b"y" * 100 + b"\r\nzz": 124,
        b"Subject: x\r\n\r\nab\rcd\r\n" + b"y" * 100 + b"\r\nzz": 123,
        b"Subject: x\r\n\r\nab\n.cd\r\n..\r\n" + b"y" * 5000 + b"\r\nzz": 25,     # bare LF, then too big
    }
    for body, n in cases.items():
        for size in (len(head + body), 1, 7, 1000):
            conn = ServerConnection("mx.test", message_size_limit=5000)
            conn.greeting()
            data = head + body
            for i in range(0, len(data), size):
                answer(conn, data[i:i + size])
            answer(conn, b"")
            got, want = conn.where_text(), f"DATA ({n} bytes)"
            assert got == want, f"{body[:30]!r}... in pieces of {size}: got {got!r}, want {want!r}"
