"""estafeta.proto.framing: end of data, dot-unstuffing, bare LF/CR."""
from __future__ import annotations

from hypothesis import given, strategies as st

from estafeta.proto import replies as R
from estafeta.proto.framing import MAX_HELD, DataFramer


def run(*pieces: bytes, limit: int = 0) -> tuple[bytes, bool, bytes, DataFramer]:
    """Feed pieces like the codec does; return (content, done, rest, framer)."""
    f, buf, pos, out, done = DataFramer(limit), b"", 0, [], False
    for piece in pieces:
        buf, pos = buf[pos:] + piece, 0
        if not done:
            pos, chunk, done = f.step(buf, pos)
            out.append(chunk)
    return b"".join(out), done, buf[pos:], f


def test_simple_message():
    data, done, rest, f = run(b"a\r\nb\r\n.\r\nQUIT\r\n")
    assert (data, done, rest, f.error) == (b"a\nb\n", True, b"QUIT\r\n", None)


def test_empty_message():
    assert run(b".\r\n")[:3] == (b"", True, b"")


def test_only_crlf_dot_crlf_ends():
    for fake in (b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n", b"\r\n.\r"):
        data, done, rest, f = run(b"x" + fake + b"y")
        assert not done, f"got done for {fake!r}, want not done"


def test_bare_lf_read_to_real_end_then_error():
    data, done, rest, f = run(b"x\n.\nMAIL FROM:<a@b>\r\n.\r\nNOOP\r\n")
    assert (done, rest, f.error) == (True, b"NOOP\r\n", R.BARE_LF_DATA)
    assert data == b""


def test_bare_cr():
    assert run(b"x\ry\r\n.\r\n")[3].error == R.BARE_LF_DATA


def test_cr_lf_split_between_reads_is_not_bare():
    data, done, _, f = run(b"x\r", b"\ny\r\n.\r\n")
    assert (data, done, f.error) == (b"x\ny\n", True, None)


def test_dot_unstuffing():
    assert run(b"..a\r\n.b\r\n...\r\nc.d\r\n.\r\n")[0] == b".a\nb\n..\nc.d\n"


def test_terminator_split_every_way():
    msg = b"hello\r\n..x\r\n.\r\nREST"
    for i in range(1, len(msg)):
        for j in range(i, len(msg)):
            data, done, rest, f = run(msg[:i], msg[i:j], msg[j:])
            assert (data, done, rest) == (b"hello\n.x\n", True, b"REST"), (i, j)


def test_size_limit_counts_crlf_octets():
    assert run(b"x" * 8 + b"\r\n.\r\n", limit=10)[3].error is None
    data, done, _, f = run(b"x" * 9 + b"\r\n.\r\n", limit=10)
    assert (done, f.error) == (True, R.MESSAGE_TOO_BIG)


def test_long_line_is_streamed_not_held():
    f, line = DataFramer(), b"z" * (MAX_HELD * 3)
    pos, chunk, done = f.step(line, 0)
    assert len(chunk) == len(line) - 1 and not done
    buf = line[pos:] + b".more\r\n.\r\n"        # mid-line: this dot is content
    pos, chunk2, done = f.step(buf, 0)
    assert done and chunk + chunk2 == line + b".more\n"


@given(st.lists(st.binary(max_size=40), max_size=8), st.data())
def test_any_split_same_result(lines, data):
    clean = [l.replace(b"\r", b"").replace(b"\n", b"") for l in lines]
    # dot-stuffed as a client sends it (RFC 5321 4.5.2): a line "." must not end the data
    body = b"".join((b"." + l if l.startswith(b".") else l) + b"\r\n" for l in clean)
    wire = body + b".\r\nTAIL"
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=6)))
    pieces = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)])]
    whole = run(wire)
    split = run(*pieces)
    assert split[:3] == whole[:3]
    assert whole[1] and whole[2] == b"TAIL"


def postfix_act_size(data: bytes, limit: int) -> int:
    """Postfix 3.7's count of the complete lines in `data` (smtpd.c receive_data): a
    line ends at LF, its CR dropped; a first "." dropped; len + 2 each, until the
    first line that does not fit in `limit`."""
    size = 0
    for line in data.split(b"\n")[:-1]:
        line = line[:-1] if line.endswith(b"\r") else line
        line = line[1:] if line.startswith(b".") else line
        if limit and limit - size < len(line) + 2:
            break
        size += len(line) + 2
    return size


@given(st.lists(st.tuples(st.binary(max_size=12), st.sampled_from([b"\r\n", b"\n", b"\r\r\n"])), max_size=10),
       st.binary(max_size=6), st.integers(0, 60), st.data())
def test_size_is_postfix_act_size_however_split(lines, tail, limit, data):
    # Lines with stray CRs and LFs (the message is refused, the count goes on), over
    # the limit or not, a last line without its end; never a "." line (end of data).
    body = b"".join(l.replace(b"\n", b"") + end for l, end in lines if l.replace(b"\n", b"").rstrip(b"\r") != b".")
    wire = body + tail.replace(b"\n", b"")
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=5)))
    pieces = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)])]
    _, done, rest, f = run(*pieces, limit=limit)
    if done:
        return          # "\r\n.\r\n" can still form across lines: end of data
    want = postfix_act_size(wire, limit)
    got = f.size_with(rest)
    assert got == want, f"{wire!r} in {pieces}, limit {limit}: got {got}, want {want}"
