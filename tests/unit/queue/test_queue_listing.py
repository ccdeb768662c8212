"""mailq layout (Postfix's, measured against Postfix 3.7's postqueue -p), JSON, selection,
the maildrop submission checks, and the queue run order."""
import json
import os
import random
import time

import pytest

from estafeta.queue import listing, maildrop, qfile, scheduler
from estafeta.queue.listing import QueueEntry, QueueRecipient

T = time.mktime((2026, 11, 28, 6, 5, 55, 0, 0, -1))


def entries():
    return [
        QueueEntry("deferred", "3C9FA2142AD", T, 266, "alice@example.org",
                   [QueueRecipient("bob@remote.example", "mail transport unavailable"),
                    QueueRecipient("carol@remote.example", "mail transport unavailable")]),
        QueueEntry("hold", "405672142AB", T, 255, "", [QueueRecipient("dave@remote.example", "x" * 100)]),
        QueueEntry("active", "6CEF82142F7", T, 1800, "bob@x.test", [QueueRecipient("eve@remote.example")]),
    ]


def test_text_layout_matches_postfix():
    got = listing.format_text(entries()).split("\n")
    want = [
        "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------",
        "3C9FA2142AD     266 Sat Nov 28 06:05:55  alice@example.org",
        "                                                  (mail transport unavailable)",
        "                                         bob@remote.example",
        "                                         carol@remote.example",
        "",
        "405672142AB!     255 Sat Nov 28 06:05:55  MAILER-DAEMON",
        "(" + "x" * 100 + ")",
        "                                         dave@remote.example",
        "",
        "6CEF82142F7*    1800 Sat Nov 28 06:05:55  bob@x.test",
        "                                         eve@remote.example",
        "",
        "-- 2 Kbytes in 3 Requests.",
        "",
    ]
    for i, (g, w) in enumerate(zip(got, want)):
        assert g == w, f"line {i}: got {g!r}, want {w!r}"
    assert len(got) == len(want)


def test_empty_and_singular():
    assert listing.format_text([]) == "Mail queue is empty\n"
    assert listing.format_text(entries()[:1]).endswith("-- 0 Kbytes in 1 Request.\n")


def test_json_lines():
    lines = listing.format_json(entries()).splitlines()
    first = json.loads(lines[0])
    assert first == {"queue_name": "deferred", "queue_id": "3C9FA2142AD", "arrival_time": int(T), "message_size": 266,
                     "forced_expire": False, "sender": "alice@example.org",
                     "recipients": [{"address": "bob@remote.example", "delay_reason": "mail transport unavailable"},
                                    {"address": "carol@remote.example", "delay_reason": "mail transport unavailable"}]}
    assert json.loads(lines[1])["sender"] == "MAILER-DAEMON"
    assert json.loads(lines[2])["recipients"] == [{"address": "eve@remote.example"}]


@pytest.mark.parametrize("kind,sub,want", [
    ("I", "42ad", ["3C9FA2142AD"]), ("R", "CAROL", ["3C9FA2142AD"]), ("R", "remote.example", ["3C9FA2142AD", "405672142AB", "6CEF82142F7"]),
    ("S", "mailer-daemon", ["405672142AB"]), ("S", "@x.test", ["6CEF82142F7"]), ("S", "nobody", [])])
def test_select(kind, sub, want):
    got = [e.queue_id for e in listing.select(entries(), kind, sub)]
    assert got == want, f"got {got}, want {want}"


def test_defer_log():
    assert listing.read_defer_log("a@b\t4.3.0\tno\tway\nbad line\n") == {"a@b": "no\tway"}


# -- maildrop submissions -------------------------------------------------------------

def test_submit_then_load(tmp_path):
    name = maildrop.submit(str(tmp_path), "alice", ["bob@example.org"], {"full_name": "A"}, b"Subject: x\n\nhi\n")
    assert maildrop.is_maildrop_name(name)
    p = tmp_path / name
    assert oct(p.stat().st_mode & 0o777) == oct(0o640)
    sub = maildrop.load(str(p), name, 10240000)
    assert (sub.sender, sub.recipients, sub.message) == ("alice", ["bob@example.org"], b"Subject: x\n\nhi\n")
    assert sub.uid == os.getuid() and sub.attrs == {"full_name": "A"}


def write(tmp_path, data):
    p = tmp_path / ("a" * 32)
    p.write_bytes(data)
    return str(p)


@pytest.mark.parametrize("data", [
    b"garbage\n",
    b"EQF 1\nT 1\nS a\nRD b@c\nM\nx\n",                  # done recipient
    b"EQF 1\nT 1\nS -x\nR- b@c\nM\nx\n",                 # option-like sender
    b"EQF 1\nT 1\nS a\nR- b@c\tx=y\nM\nx\n",             # recipient parameters
    b"EQF 1\nT 1\nS a\nR- b@c\x1b\nM\nx\n",              # control character
    b"EQF 1\nT 1\nS a\nM\nx\n",                          # no recipient
])
def test_bad_submissions(tmp_path, data):
    with pytest.raises(maildrop.BadSubmission):
        maildrop.load(write(tmp_path, data), "a" * 32, 1000)


def test_untrusted_attributes_dropped(tmp_path):
    sub = maildrop.load(write(tmp_path, b"EQF 1\nT 1\nS a\nA uid=0\nA dsn_ret=full\nR- b@c\nM\nx\n"), "a" * 32, 1000)
    assert sub.attrs == {"dsn_ret": "full"}


def test_links_and_size_refused(tmp_path):
    p = write(tmp_path, b"EQF 1\nT 1\nS a\nR- b@c\nM\n" + b"x" * 2000)
    with pytest.raises(maildrop.BadSubmission):
        maildrop.load(p, "a" * 32, 1000)
    os.link(p, str(tmp_path / "other"))
    with pytest.raises(maildrop.BadSubmission):
        maildrop.load(p, "a" * 32, 10000)
    os.symlink(p, str(tmp_path / ("b" * 32)))
    with pytest.raises(OSError):
        maildrop.load(str(tmp_path / ("b" * 32)), "b" * 32, 10000)


# -- queue_sort_order ---------------------------------------------------------------------

ITEMS = [("C", 500, "b.example", 3.0, 10.0), ("A", 900, "a.example", 2.0, 30.0), ("B", 100, "c.example", 1.0, 20.0)]


@pytest.mark.parametrize("order,want", [
    ("priority", ["B", "C", "A"]), ("host", ["A", "C", "B"]), ("filename", ["A", "B", "C"]), ("F", ["A", "B", "C"]),
    ("time", ["B", "A", "C"]), ("modification", ["C", "B", "A"])])
def test_queue_order(order, want):
    assert scheduler.queue_order(ITEMS, order) == want


def test_queue_order_random_is_seeded():
    a = scheduler.queue_order(ITEMS, "random", random.Random(1))
    assert a == scheduler.queue_order(ITEMS, "random", random.Random(1)) and sorted(a) == ["A", "B", "C"]
    with pytest.raises(ValueError):
        scheduler.queue_order(ITEMS, "sideways")
