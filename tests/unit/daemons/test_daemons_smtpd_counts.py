"""smtpd's disconnect line counters, as Postfix 3.7 logs them (compared with a real
Postfix in tests/interop/test_disconnect_postfix.py), and the codec's attribution of
refused commands to their verb."""
from estafeta.proto.smtp_server import disconnect_counts
from estafeta.proto import replies as R
from estafeta.proto.events import BadCommand
from estafeta.proto.smtp_server import ServerConnection


def test_disconnect_counts_as_postfix():
    cases = [
        ({}, {}, " commands=0/0"),
        ({"quit": 1, "ehlo": 1, "mail": 1}, {}, " ehlo=1 mail=1 quit=1 commands=3"),
        ({"unknown": 3, "ehlo": 2, "rcpt": 2}, {"unknown": 3, "ehlo": 1, "rcpt": 2},
         " ehlo=1/2 rcpt=0/2 unknown=0/3 commands=1/7"),
    ]
    for counts, fails, want in cases:
        got = disconnect_counts(counts, fails)
        assert got == want, f"got {got!r}, want {want!r}"


def test_refused_commands_counted_under_their_verb():
    conn = ServerConnection("mx.test")
    conn.greeting()
    conn.receive_data(b"MAIL FROM:<a@b>\r\nFOO\r\n\r\nSTARTTLS\r\nEHLO\r\n")
    got = []
    for _ in range(5):
        e = conn.next_event()
        assert isinstance(e, BadCommand), f"got {e}, want a BadCommand"
        got.append(e.command)
        conn.send(e.reply)
    assert got == ["mail", "unknown", "", "starttls", "ehlo"], f"got {got}"
    conn.receive_data(b"NOOP\r\n" * 0 + b"X\r\n" * 20)
    while not isinstance(e := conn.next_event(), BadCommand) or e.reply is not R.TOO_MANY_ERRORS:
        conn.send(e.reply)
    assert e.command == "", f"got {e.command!r}, want no counter for the hard error limit"
