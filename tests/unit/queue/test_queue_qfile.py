"""Queue file format: envelope records round trip, in-place done marks, corruption."""
from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from estafeta.queue import qfile
from estafeta.queue.qfile import CorruptQueueFile, encode_envelope, encode_value, parse_envelope

QID = "0123456789ABCDEF00001"
MESSAGE = b"Subject: hi\n\nbody line\n"


def write_queue_file(path, arrival=1764309001.123456, sender="alice@example.org",
                     rcpts=(("bob@example.org", {}),), attrs=None, message=MESSAGE) -> bytes:
    data = encode_envelope(arrival, sender, list(rcpts), attrs or {}) + message
    with open(path, "wb") as f:
        f.write(data)
    return data


# --- round trip ---------------------------------------------------------------
def test_round_trip_basic() -> None:
    head = encode_envelope(1764309001.123456, "alice@example.org",
                           [("bob@example.org", {"o": "Bob@Example.org"}), ("carol@example.org", {})],
                           {"client_address": "127.0.0.1", "helo": "client.example"})
    data = head + MESSAGE
    env = parse_envelope(QID, data, len(data))
    assert env.queue_id == QID
    assert env.arrival == pytest.approx(1764309001.123456, abs=1e-6)
    assert env.sender == "alice@example.org"
    got = [(r.address, r.params, r.done) for r in env.recipients]
    want = [("bob@example.org", {"o": "Bob@Example.org"}, False), ("carol@example.org", {}, False)]
    assert got == want, f"got {got}, want {want}"
    assert env.attrs == {"client_address": "127.0.0.1", "helo": "client.example"}
    assert env.recipients[0].original == "Bob@Example.org"
    assert env.recipients[1].original == "carol@example.org"


def test_null_sender_round_trips_as_empty() -> None:
    data = encode_envelope(1.0, "", [("bob@example.org", {})], {})
    env = parse_envelope(QID, data, len(data))
    assert env.sender == "", f"got {env.sender!r}, want ''"


def test_utf8_addresses_round_trip() -> None:
    sender, rcpt = "jösé@bücher.example", "用户@例子.广告"
    data = encode_envelope(1.0, sender, [(rcpt, {"o": rcpt})], {"helo": "héllo"})
    env = parse_envelope(QID, data, len(data))
    got = (env.sender, env.recipients[0].address, env.recipients[0].original, env.attrs["helo"])
    want = (sender, rcpt, rcpt, "héllo")
    assert got == want, f"got {got}, want {want}"


def test_param_values_may_hold_equals_signs() -> None:
    data = encode_envelope(1.0, "a@b", [("c@d", {"orcpt": "rfc822;x=y@d", "notify": "NEVER"})], {"k": "v=w"})
    env = parse_envelope(QID, data, len(data))
    assert env.recipients[0].params == {"orcpt": "rfc822;x=y@d", "notify": "NEVER"}
    assert env.attrs == {"k": "v=w"}


def test_keys_with_equals_sign_are_refused() -> None:
    # "a=b" as a key would come back as key "a"; the encoder must not write it.
    with pytest.raises(ValueError):
        encode_envelope(1.0, "a@b", [("c@d", {"a=b": "v"})], {})
    with pytest.raises(ValueError):
        encode_envelope(1.0, "a@b", [("c@d", {})], {"a=b": "v"})


_value = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\r\n\0\t"), max_size=30)
_key = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\r\n\0\t="), min_size=1, max_size=10)


@given(arrival=st.floats(min_value=0, max_value=4e9, allow_nan=False),
       sender=_value,
       rcpts=st.lists(st.tuples(_value, st.dictionaries(_key, _value, max_size=3)), min_size=1, max_size=5),
       attrs=st.dictionaries(_key, _value, max_size=4),
       message=st.binary(max_size=200))
def test_round_trip_property(arrival, sender, rcpts, attrs, message) -> None:
    head = encode_envelope(arrival, sender, rcpts, attrs)
    data = head + message
    env = parse_envelope(QID, data, len(data))
    assert env.arrival == pytest.approx(arrival, abs=1e-6)
    assert env.sender == sender
    got = [(r.address, r.params) for r in env.recipients]
    assert got == rcpts, f"got {got}, want {rcpts}"
    assert env.attrs == attrs
    assert env.message_offset == len(head)
    assert data[env.message_offset:] == message
    for r in env.recipients:
        assert data[r.offset:r.offset + 1] == b"-"


# --- offsets, pending, mark_done -------------------------------------------------
def test_message_offset_and_size(tmp_path) -> None:
    path = str(tmp_path / QID)
    data = write_queue_file(path)
    env = qfile.read_envelope(path, QID)
    want_offset = len(data) - len(MESSAGE)
    assert env.message_offset == want_offset, f"got {env.message_offset}, want {want_offset}"
    assert env.file_size == len(data)
    assert env.message_size == len(MESSAGE), f"got {env.message_size}, want {len(MESSAGE)}"
    assert qfile.read_message(path, env.message_offset) == MESSAGE


def test_read_envelope_larger_than_one_read(tmp_path) -> None:
    path = str(tmp_path / QID)
    rcpts = [(f"user{i:05d}@example.org", {"o": f"orig{i}@example.org"}) for i in range(3000)]
    data = write_queue_file(path, rcpts=rcpts)
    assert len(data) > 2 * 65536
    env = qfile.read_envelope(path, QID)
    assert len(env.recipients) == 3000
    assert env.recipients[-1].address == "user02999@example.org"
    assert env.message_size == len(MESSAGE)


def test_mark_done_changes_only_status_bytes(tmp_path) -> None:
    path = str(tmp_path / QID)
    rcpts = [("a@example.org", {}), ("b@example.org", {"o": "B@example.org"}), ("c@example.org", {})]
    before = write_queue_file(path, rcpts=rcpts)
    env = qfile.read_envelope(path, QID)
    assert [r.address for r in env.pending()] == ["a@example.org", "b@example.org", "c@example.org"]

    qfile.mark_done(path, [env.recipients[0].offset, env.recipients[2].offset])
    with open(path, "rb") as f:
        after = f.read()
    assert len(after) == len(before)
    diff = [i for i in range(len(before)) if before[i] != after[i]]
    want = [env.recipients[0].offset, env.recipients[2].offset]
    assert diff == want, f"got changed offsets {diff}, want {want}"
    assert all(after[i:i + 1] == b"D" for i in diff)

    env2 = qfile.read_envelope(path, QID)
    got = [(r.address, r.done) for r in env2.recipients]
    want2 = [("a@example.org", True), ("b@example.org", False), ("c@example.org", True)]
    assert got == want2, f"got {got}, want {want2}"
    assert [r.address for r in env2.pending()] == ["b@example.org"]
    assert env2.message_offset == env.message_offset


def test_mark_done_nothing_is_a_no_op(tmp_path) -> None:
    path = str(tmp_path / QID)
    before = write_queue_file(path)
    qfile.mark_done(path, [], sync=False)
    with open(path, "rb") as f:
        assert f.read() == before


def test_done_recipient_parses_as_done() -> None:
    data = qfile.MAGIC + b"T 1.0\nS a@b\nRD c@d\nR- e@f\nM\n"
    env = parse_envelope(QID, data, len(data))
    assert [r.done for r in env.recipients] == [True, False]
    assert [r.address for r in env.pending()] == ["e@f"]


# --- corruption -----------------------------------------------------------------
GOOD = encode_envelope(1.0, "a@b", [("c@d", {})], {"x": "y"}) + b"msg\n"


@pytest.mark.parametrize("data, why", [
    (b"", "empty"),
    (b"EQF 2\nT 1.0\nS a@b\nR- c@d\nM\n", "unknown version"),
    (b"XXXX\n" + GOOD[len(qfile.MAGIC):], "bad magic"),
    (GOOD[:len(GOOD) // 2], "truncated mid-envelope"),
    (qfile.MAGIC + b"T 1.0\nS a@b\nR- c@d\n", "no M record"),
    (qfile.MAGIC + b"T 1.0\nS a@b\nZ what\nR- c@d\nM\n", "unknown record"),
    (qfile.MAGIC + b"T 1.0\nS a@b\nRX c@d\nM\n", "bad recipient status"),
    (qfile.MAGIC + b"T 1.0\nS a@b\nM\n", "no recipients"),
    (qfile.MAGIC + b"S a@b\nR- c@d\nM\n", "no arrival"),
    (qfile.MAGIC + b"T 1.0\nR- c@d\nM\n", "no sender"),
    (qfile.MAGIC + b"T soon\nS a@b\nR- c@d\nM\n", "unparsable arrival"),
    (qfile.MAGIC + b"T nan\nS a@b\nR- c@d\nM\n", "NaN arrival"),
])
def test_corrupt_files_are_refused(data: bytes, why: str) -> None:
    with pytest.raises(CorruptQueueFile):
        parse_envelope(QID, data, len(data))


def test_corrupt_on_disk(tmp_path) -> None:
    path = tmp_path / QID
    path.write_bytes(GOOD[:10])
    with pytest.raises(CorruptQueueFile, match=QID):
        qfile.read_envelope(str(path), QID)


# --- value encoding ---------------------------------------------------------------
@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\0b", "a\tb", "\n", "x\r\n"])
def test_encode_value_refuses_control_characters(bad: str) -> None:
    with pytest.raises(ValueError):
        encode_value(bad)


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\0b", "a\tb"])
def test_encode_envelope_refuses_control_characters_everywhere(bad: str) -> None:
    for args in [(bad, [("c@d", {})], {}), ("a@b", [(bad, {})], {}), ("a@b", [("c@d", {"o": bad})], {}),
                 ("a@b", [("c@d", {})], {"k": bad}), ("a@b", [("c@d", {})], {bad: "v"})]:
        with pytest.raises(ValueError):
            encode_envelope(1.0, *args)


def test_encode_value_keeps_utf8_and_spaces() -> None:
    got = encode_value("Jösé Ümlaut <x@y>")
    want = "Jösé Ümlaut <x@y>".encode()
    assert got == want, f"got {got!r}, want {want!r}"
