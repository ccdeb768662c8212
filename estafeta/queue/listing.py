"""What the queue holds, for people and scripts: mailq, postqueue -p / -j, selection.

Owns the listing model (`QueueEntry`), reading it from the queue directories
(`collect`, which needs read access to them: root, the mail owner, or the showq
service that runs as the mail owner), and the pure parts: Postfix's mailq layout
(`format_text`), postqueue -j's JSON lines (`format_json`) and the -qI/-qR/-qS
selection (`select`).

Trust boundary: envelope text comes from queue files, which hold client-supplied
addresses; the layout prints them as they are (the SMTP codec refused control
characters before they were queued) and JSON escapes them.
Next: daemons/showq.py (serves this to unprivileged users), cli/queue_admin.py.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field

# Imported here, not where used: showq drops root before it serves, and may then
# no longer read the Python installation (skeleton.py).
from . import maildrop, qfile
from .store import QueueStore

# The queues mailq shows, in Postfix's order, and the mark after each queue id.
SHOWN_QUEUES = ("incoming", "active", "deferred", "hold", "maildrop")
MARKS = {"active": "*", "hold": "!"}
HEADER = "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------"
EMPTY = "Mail queue is empty"
RCPT_INDENT = 41        # recipients start in the column of the sender heading
REASON_RIGHT = 78       # deferral reasons end in this column (longer ones start at 0)


@dataclass(slots=True)
class QueueRecipient:
    address: str
    delay_reason: str = ""


@dataclass(slots=True)
class QueueEntry:
    queue_name: str
    queue_id: str
    arrival_time: float
    message_size: int
    sender: str
    recipients: list[QueueRecipient] = field(default_factory=list)
    forced_expire: bool = False


def read_defer_log(text: str) -> dict[str, str]:
    """defer/<id> lines "recipient<TAB>dsn<TAB>reason" -> {recipient: reason}."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split("\t", 2)
        if len(parts) == 3:
            out[parts[0]] = parts[2]
    return out


def entry_from_envelope(queue: str, env: qfile.Envelope, reasons: dict[str, str]) -> QueueEntry:
    rcpts = [QueueRecipient(r.address, reasons.get(r.address, "")) for r in env.pending()]
    return QueueEntry(queue, env.queue_id, env.arrival, env.message_size, env.sender, rcpts)


def collect(store: QueueStore, queues: tuple[str, ...] = SHOWN_QUEUES) -> list[QueueEntry]:
    """Read every listed queue; files that vanish or do not parse are skipped."""
    out: list[QueueEntry] = []
    for q in queues:
        if q == "maildrop":
            out.extend(_maildrop_entries(store))
            continue
        for qid in store.list(q):
            try:
                env = store.read_envelope(q, qid)
            except (OSError, qfile.CorruptQueueFile, ValueError):
                continue
            reasons: dict[str, str] = {}
            try:
                with open(store.path("defer", qid), encoding="utf-8", errors="replace") as f:
                    reasons = read_defer_log(f.read())
            except OSError:
                pass
            out.append(entry_from_envelope(q, env, reasons))
    return out


def _maildrop_entries(store: QueueStore) -> list[QueueEntry]:
    """Submissions not yet picked up. Their names are not queue ids: the listing
    shows the file name in place of a queue id."""
    out: list[QueueEntry] = []
    try:
        names = os.listdir(store.path("maildrop"))
    except OSError:
        return out
    for name in sorted(names):
        if not maildrop.is_maildrop_name(name):
            continue
        p = store.path("maildrop", name)
        try:
            env = qfile.read_envelope(p, name)
        except (OSError, qfile.CorruptQueueFile, ValueError):
            continue
        out.append(entry_from_envelope("maildrop", env, {}))
    return out


# -- formatting (pure) ---------------------------------------------------------------

def arrival_text(t: float) -> str:
    """Postfix's "Sat Nov 28 05:50:01": local time, no year."""
    return time.strftime("%a %b %d %H:%M:%S", time.localtime(t))


def format_text(entries: list[QueueEntry]) -> str:
    """The mailq / postqueue -p layout, byte for byte in Postfix's shape."""
    if not entries:
        return EMPTY + "\n"
    lines = [HEADER]
    total = 0
    for e in entries:
        total += e.message_size
        ident = e.queue_id + MARKS.get(e.queue_name, "")
        sender = e.sender or "MAILER-DAEMON"
        lines.append(f"{ident:<11}{e.message_size:>8} {arrival_text(e.arrival_time):<20} {sender}")
        last_reason = None
        for r in e.recipients:
            if r.delay_reason and r.delay_reason != last_reason:
                lines.append(f"({r.delay_reason})".rjust(REASON_RIGHT))
                last_reason = r.delay_reason
            lines.append(" " * RCPT_INDENT + r.address)
        lines.append("")
    n = len(entries)
    lines.append(f"-- {total // 1024} Kbytes in {n} Request{'s' if n != 1 else ''}.")
    return "\n".join(lines) + "\n"


def format_json(entries: list[QueueEntry]) -> str:
    """postqueue -j: one JSON object per message and line."""
    out = []
    for e in entries:
        obj = {"queue_name": e.queue_name, "queue_id": e.queue_id, "arrival_time": int(e.arrival_time),
               "message_size": e.message_size, "forced_expire": e.forced_expire,
               "sender": e.sender or "MAILER-DAEMON",
               "recipients": [({"address": r.address, "delay_reason": r.delay_reason} if r.delay_reason
                               else {"address": r.address}) for r in e.recipients]}
        out.append(json.dumps(obj, ensure_ascii=False) + "\n")
    return "".join(out)


def select(entries: list[QueueEntry], kind: str, substr: str) -> list[QueueEntry]:
    """Sendmail's -qI / -qR / -qS: id / a pending recipient / the sender contains
    `substr` (case-insensitive, as Sendmail compares addresses and ids)."""
    s = substr.lower()
    if kind == "I":
        return [e for e in entries if s in e.queue_id.lower()]
    if kind == "R":
        return [e for e in entries if any(s in r.address.lower() for r in e.recipients)]
    if kind == "S":
        return [e for e in entries if s in (e.sender or "MAILER-DAEMON").lower()]
    raise ValueError(f"unknown selection {kind!r} (want I, R or S)")


# -- selective flush (IO: needs write access to deferred/, i.e. the mail owner or root) --

def make_due(store: QueueStore, entries: list[QueueEntry], now: float | None = None) -> list[str]:
    """Set the next-attempt time (the deferred file's mtime, see scheduler.py) of
    these deferred messages to now; qmgr's next due-scan then takes exactly them.
    The file stays where it is: moving it is qmgr's business."""
    now = time.time() if now is None else now
    done = []
    for e in entries:
        if e.queue_name != "deferred":
            continue
        try:
            os.utime(store.path("deferred", e.queue_id), (now, now))
        except FileNotFoundError:
            continue
        done.append(e.queue_id)
    return done


def flush_selected(store: QueueStore, kind: str, substr: str) -> list[str]:
    """-qI / -qR / -qS: make the matching deferred messages due; the caller then
    sends qmgr the DEFERRED trigger (scan due deferred mail now, no force)."""
    return make_due(store, select(collect(store, ("deferred",)), kind, substr))
