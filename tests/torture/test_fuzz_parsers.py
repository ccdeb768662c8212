"""Property-based fuzzing of every sans-IO parser: hostile bytes in, only the
documented error type out (never IndexError, UnicodeDecodeError, RecursionError ...),
and the invariants that keep hostile bytes out of queue files.

Budget: 100 examples per test at TORTURE_SCALE=1 (derandomized: the same inputs on
every CI run), 100 x scale under `make torture`. Each example counts as one fuzz
execution in the torture table.
"""
from __future__ import annotations

import os
import tempfile

import pytest
from hypothesis import given, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from estafeta.config.main_cf import MainConfig, check
from estafeta.config.master_cf import parse_master_cf
from estafeta.core.errors import ConfigError
from estafeta.proto import events as ev
from estafeta.proto import replies as R
from estafeta.proto.address import AddressError, parse_mail_from, parse_rcpt_to
from estafeta.proto.smtp_client import ClientCodec, ReplyError, parse_extensions
from estafeta.proto.smtp_server import ServerConnection
from estafeta.queue import qfile
from estafeta.tables import TableTempError, open_table
from estafeta.tables.aliases import parse_aliases, parse_list

from torture_support import FUZZ, fuzzed

pytestmark = pytest.mark.klass("hostile: parser fuzzing (no undocumented exception)")

CTL = b"\x00\r\n\t\x7f\x1b"
SMTP_WORDS = [b"EHLO x", b"HELO x", b"LHLO x", b"MAIL FROM:<a@b>", b"MAIL FROM:<>", b"RCPT TO:<c@d>",
              b"DATA", b"BDAT 10", b"RSET", b"NOOP", b"QUIT", b"VRFY x", b"HELP", b"STARTTLS",
              b"MAIL FROM:<a@b> SIZE=99999999999999999999", b"MAIL FROM:<a@b> BODY=8BITMIME SMTPUTF8",
              b"RCPT TO:<\"q\\\"x\"@[1.2.3.4]> NOTIFY=SUCCESS ORCPT=rfc822;a+2Bb", b".", b"..", b""]
ENDINGS = [b"\r\n", b"\n", b"\r", b"\r\r\n", b"\n\r", b""]

smtp_line = st.builds(lambda w, junk, end: w + junk + end, st.sampled_from(SMTP_WORDS),
                      st.binary(max_size=20) | st.sampled_from([b"", b" ", b"\x00", b"<>", b"\xff\xfe"]),
                      st.sampled_from(ENDINGS))
chunks = st.lists(smtp_line | st.binary(max_size=300), max_size=30)


def reply_for(e: object) -> R.Reply:
    if isinstance(e, ev.BadCommand):
        return e.reply
    if isinstance(e, ev.Data):
        return R.START_DATA
    if isinstance(e, ev.EndOfData):
        return e.error or R.queued("4ABCDEF")
    if isinstance(e, ev.Quit):
        return R.BYE
    return R.OK


@FUZZ
@given(chunks, st.booleans())
def test_server_codec_any_bytes(parts, lmtp):
    fuzzed(parts)
    conn = ServerConnection("mx.example", lmtp=lmtp)
    conn.greeting()
    for p in parts:
        if conn.next_event() is ev.CLOSED:
            break
        conn.receive_data(p)
        _drain(conn)
    conn.receive_data(b"")
    _drain(conn)


def _drain(conn: ServerConnection) -> None:
    for _ in range(10_000):
        e = conn.next_event()
        if e in (ev.NEED_DATA, ev.CLOSED):
            return
        if isinstance(e, ev.MailFrom | ev.RcptTo):
            for v in (e.address, *map(str, e.params.values()), *e.params):
                assert not any(c in v for c in "\r\n\0"), f"got control character in {e!r}"
        if not isinstance(e, ev.MessageData):
            conn.send(reply_for(e))
    raise AssertionError("next_event() did not ask for data after 10,000 events")


class ServerSession(RuleBasedStateMachine):
    """A client that mixes valid commands, pipelining, DATA and garbage, in pieces."""

    def __init__(self) -> None:
        super().__init__()
        self.conn = ServerConnection("mx.example", max_errors=1000)
        self.conn.greeting()
        self.messages = 0

    def feed(self, data: bytes) -> None:
        fuzzed(data)
        self.conn.receive_data(data)
        for _ in range(10_000):
            e = self.conn.next_event()
            if e in (ev.NEED_DATA, ev.CLOSED):
                return
            if isinstance(e, ev.EndOfData) and e.error is None:
                self.messages += 1
            if not isinstance(e, ev.MessageData):
                self.conn.send(reply_for(e))

    @rule(line=smtp_line)
    def command(self, line):
        self.feed(line)

    @rule(n=st.integers(0, 4))
    def transaction(self, n):
        before = self.messages
        self.feed(b"RSET\r\nEHLO c\r\nMAIL FROM:<a@b>\r\n" + b"RCPT TO:<x@y>\r\n" * (n + 1) + b"DATA\r\n")
        self.feed(b"Subject: t\r\n\r\nbody\r\n.\r\n")
        if self.conn.state.name != "CLOSED":
            assert self.messages == before + 1, f"got {self.messages - before} messages, want 1"

    @rule(junk=st.binary(max_size=200), split=st.integers(0, 200))
    def garbage_in_pieces(self, junk, split):
        self.feed(junk[:split])
        self.feed(junk[split:])

    @invariant()
    def buffer_bounded(self):
        assert len(self.conn._buf) - self.conn._pos <= 70_000, "unconsumed input grows without bound"


ServerSession.TestCase.settings = FUZZ
test_server_session_stateful = pytest.mark.klass("hostile: parser fuzzing (no undocumented exception)")(
    ServerSession.TestCase)


@FUZZ
@given(st.lists(st.binary(max_size=600) | st.builds(lambda c, s, t, e: c + s + t + e,
               st.sampled_from([b"220", b"250", b"354", b"421", b"550", b"999", b"2", b"25x"]),
               st.sampled_from([b" ", b"-", b"", b"\t"]), st.binary(max_size=60), st.sampled_from(ENDINGS)),
               max_size=40))
def test_client_codec_any_bytes(parts):
    fuzzed(parts)
    codec = ClientCodec()
    try:
        for p in [*parts, b""]:
            codec.receive_data(p)
            while (r := codec.next_reply()) is not None:
                assert 200 <= r.code <= 599, f"got reply code {r.code}"
                parse_extensions(r)
                assert len(codec._buf if hasattr(codec, "_buf") else b"") < 10 * 4096 + 700
    except ReplyError:
        pass


@FUZZ
@given(st.text(max_size=120) | st.builds(lambda a, b, c: a + b + c, st.sampled_from(
    ["<a@b>", "<>", "<@x:a@b>", '<"a b"@c>', "<a@[1.2.3.4]>", "<a@[IPv6:::1]>", "a@b", "<a@b"]),
    st.sampled_from(["", " ", " SIZE=1", " BODY=", " =x", " X", " ORCPT=rfc822;x"]), st.text(max_size=20)),
    st.booleans())
def test_address_parser(text, utf8):
    fuzzed(text)
    for f in (parse_mail_from, lambda t: parse_rcpt_to(t, smtputf8=utf8)):
        try:
            addr, params = f(text)
        except AddressError as e:
            assert 400 <= e.args[0].code <= 599 if e.args and isinstance(e.args[0], R.Reply) else True
            continue
        for v in (addr, *params, *(x for x in params.values() if x is not None)):
            assert not any(c in v for c in "\r\n\0"), f"got control character from {text!r}: {addr!r} {params!r}"


VALID = qfile.encode_envelope(1700000000.5, "a@b", [("c@d", {"ORCPT": "rfc822;c@d"}), ("e@f", {})],
                              {"client_address": "127.0.0.1"}) + b"Subject: x\n\nbody\n"


@FUZZ
@given(st.binary(max_size=400) | st.builds(lambda cut, junk, at: VALID[:at] + junk + VALID[at + cut:],
                                            st.integers(0, 20), st.binary(max_size=12), st.integers(0, len(VALID))))
def test_queue_file_parser(data):
    fuzzed(data)
    try:
        env = qfile.parse_envelope("4ABCDEF", data, len(data))
    except qfile.CorruptQueueFile:
        return
    for r in env.recipients:
        assert "\n" not in r.address


@FUZZ
@given(st.text(st.characters(codec="utf-8"), max_size=40), st.lists(st.tuples(
    st.text(max_size=30), st.dictionaries(st.text(max_size=8), st.text(max_size=12), max_size=2)), min_size=1, max_size=3))
def test_queue_file_roundtrip_or_refuse(sender, rcpts):
    """Whatever a session hands cleanup either round-trips exactly or is refused with
    ValueError: a CR/LF/NUL can never become a record of its own."""
    fuzzed((sender, rcpts))
    try:
        data = qfile.encode_envelope(1.0, sender, rcpts, {})
    except ValueError:
        return
    env = qfile.parse_envelope("4ABCDEF", data, len(data))
    assert env.sender == sender and [r.address for r in env.recipients] == [a for a, _ in rcpts]


CONF_WORDS = st.sampled_from(["myhostname", "mydestination", "relayhost", "$myhostname", "${x?y}", "${x:z}",
                              "$(", "${", "=", " = ", "\n", "\n ", "#", "\t", "inet_interfaces", "all",
                              "message_size_limit", "-1", "99999999999999999999", "10s", "yes", ",", "$$"])
conf_text = st.lists(CONF_WORDS | st.text(max_size=10), max_size=40).map("".join)


@FUZZ
@given(conf_text)
def test_main_cf_parser(text):
    fuzzed(text)
    try:
        cfg = MainConfig.parse(text)
        check(cfg)
        for name in ("myhostname", "mydestination", "relayhost", "message_size_limit"):
            cfg.get(name)
    except ConfigError:
        pass


MASTER_WORDS = st.sampled_from(["smtp", "inet", "unix", "fifo", "pass", "n", "y", "-", "0", "100", "60?",
                                "smtpd", "-o", "x=y", "{", "}", "{ -o a = b }", "127.0.0.1:25", "[::1]:25",
                                " ", "  ", "\n", "\n  ", "#"])


@FUZZ
@given(st.lists(MASTER_WORDS | st.text(max_size=6), max_size=50).map("".join))
def test_master_cf_parser(text):
    fuzzed(text)
    try:
        parse_master_cf(text)
    except ConfigError:
        pass


ALIAS_WORDS = st.sampled_from(["root", ":", " ", ",", "\n", "\n\t", "|/bin/cmd", '"|x y"', ":include:/x",
                               "/var/mail/x", "a@b", '"a:b"', '"', "#", "\\", "owner-x"])


@FUZZ
@given(st.lists(ALIAS_WORDS | st.text(max_size=6), max_size=40).map("".join))
def test_aliases_parser(text):
    fuzzed(text)
    try:
        parse_aliases(text, "aliases")
    except ConfigError:
        pass
    try:
        parse_list(text, "aliases", 1)
    except ConfigError:
        pass


TABLE_WORDS = st.sampled_from(["key", " ", "value", "\n", "\n ", "#", "if", "endif", "/a/", "!/b/", "$1", "${2}",
                               "/(x)/ $1", "10.0.0.0/8", "::1/128", "1.2.3.4", "/[/", "{", "}", "=", ","])
table_text = st.lists(TABLE_WORDS | st.text(max_size=6), max_size=30).map("".join)


@FUZZ
@given(st.sampled_from(["texthash", "cidr", "regexp", "pcre", "inline"]), table_text, st.text(max_size=20))
def test_table_parsers(kind, text, key):
    fuzzed((kind, text, key))
    with tempfile.NamedTemporaryFile("w", suffix=".tbl", delete=False) as f:
        f.write(text)
    try:
        spec = f"inline:{{{text}}}" if kind == "inline" else f"{kind}:{f.name}"
        try:
            t = open_table(spec)
            t.lookup(key)
        except (ConfigError, TableTempError):
            pass
        except ValueError as e:         # documented for inline: "bad inline table"
            assert kind in ("inline", "cidr"), f"got ValueError from {kind}: {e}"
    finally:
        os.unlink(f.name)
