"""Crash torture: kill -9 random services, the master included, under a mixed load.

RFC 5321 6.1: after 250 the server MUST NOT lose the message. Several clients send to
a local mailbox (virtual -> Maildir) and to a remote domain (smtp -> relayhost, which
is Postfix's smtp-sink on loopback), while a driver kill -9s smtpd workers, qmgr, the
virtual and smtp agents and, now and then, the master itself (then `estafeta start`,
as an admin would). Afterwards every (message, destination) that got 250 must be found
complete at least once; copies beyond the first are counted as duplicates (the
at-least-once window: an agent or qmgr killed after delivery, before marking done).

Scale: TORTURE_SCALE=1 runs 10 s of load, N > 1 runs 60*N s; TORTURE_SECONDS overrides.
Debian package: postfix (smtp-sink).
"""
from __future__ import annotations

import random
import signal
import os
import shutil
import smtplib
import tempfile
import threading
import time
from collections import Counter

import pytest

from estafeta.testing.instance import Instance, free_port, wait_for

from torture_support import SCALE, SINK, Sink, count, message, restart_after_master_kill, tags_in

LOAD_SECONDS = int(os.environ.get("TORTURE_SECONDS", str(10 if SCALE == 1 else 60 * SCALE)))
SENDERS = 4
# Senders pause while the queue holds more than this many files: accepting runs faster
# than delivering under a kill storm, and an unbounded backlog would turn a long run
# into a drain race instead of a crash test (the kills must hit delivery too).
QUEUE_CAP = 3000
DRAIN_STALL = 120       # the final wait ends when nothing was delivered for this long
VICTIMS = ("smtpd", "qmgr", "virtual", "smtp", "master")


@pytest.mark.skipif(SINK is None, reason="smtp-sink not installed (Debian package postfix)")
@pytest.mark.timeout(3 * LOAD_SECONDS + 600)
@pytest.mark.klass("crash: kill -9 of every service under load, 0 lost")
def test_kill9_everything_loses_nothing():
    work = tempfile.mkdtemp(prefix="torture-crash-")   # not tmp_path: smtp-sink runs as nobody
    os.chmod(work, 0o755)
    sink_port = free_port()
    sink = Sink(work, sink_port, 3 * LOAD_SECONDS + 600)
    inst = Instance(main={"relayhost": f"[127.0.0.1]:{sink_port}", "smtp_connect_timeout": "2s"}).init()
    try:
        _torture(inst, sink)
    finally:
        inst.cleanup()
        sink.stop()
        shutil.rmtree(work, ignore_errors=True)


def _torture(inst: Instance, sink: Sink) -> None:
    inst.start()
    acked: set[tuple[str, str]] = set()     # (tag, "local" | "remote")
    lock = threading.Lock()
    stop = threading.Event()
    restarting = threading.Lock()           # senders keep going; only the killer restarts
    failures: list[str] = []
    deadline = time.monotonic() + LOAD_SECONDS

    throttle = threading.Event()            # set: the queue is over QUEUE_CAP, senders wait

    def watch_queue() -> None:
        while time.monotonic() < deadline:
            try:
                throttle.set() if inst.queue_count() > QUEUE_CAP else throttle.clear()
            except OSError:
                pass
            time.sleep(1.0)
        throttle.clear()

    def sender(t: int) -> None:
        rng = random.Random(1000 + t)
        i = 0
        while time.monotonic() < deadline:
            if throttle.is_set():
                time.sleep(0.2)
                continue
            # 1-3 messages per session: fresh sessions and reused ones both get killed.
            batch = []
            for _ in range(rng.choice((1, 1, 2, 3))):
                tag = f"s{t}m{i}"
                i += 1
                dests = rng.choice((("local",), ("remote",), ("local", "remote")))
                rcpts = [("demo@localhost" if d == "local" else f"r{t}@remote.example") for d in dests]
                batch.append((tag, dests, rcpts, message(tag, ", ".join(rcpts), rng.choice((0, 0, 2000, 20000)))))
            try:
                with smtplib.SMTP("127.0.0.1", inst.port, timeout=15) as s:
                    for tag, dests, rcpts, body in batch:
                        s.sendmail("torture@example.org", rcpts, body)   # raises unless 250
                        with lock:
                            acked.update((tag, d) for d in dests)
            except (smtplib.SMTPException, OSError) as e:
                failures.append(repr(e)[:120])          # no 250: the client knows
                time.sleep(0.05)

    kills: list[str] = []

    def killer() -> None:
        rng = random.Random(7 * SCALE)
        master_due = deadline - LOAD_SECONDS / 2       # at least one master kill, mid-load
        while time.monotonic() < deadline and not stop.is_set():
            time.sleep(rng.uniform(0.3, 1.0))
            what = rng.choices(VICTIMS, weights=(4, 3, 2, 2, 1))[0]
            if "master" not in kills and time.monotonic() > master_due:
                what = "master"
            if what == "master":
                pid = inst.master_pid()
                if pid is None:
                    continue
                os.kill(pid, signal.SIGKILL)
                kills.append("master")
                with restarting:
                    restart_after_master_kill(inst)
                continue
            pids = inst.service_pids(what)
            if not pids:
                continue
            try:
                os.kill(rng.choice(pids), signal.SIGKILL)
                kills.append(what)
            except ProcessLookupError:
                pass

    threads = [threading.Thread(target=sender, args=(t,)) for t in range(SENDERS)]
    threading.Thread(target=watch_queue, daemon=True).start()
    k = threading.Thread(target=killer)
    k.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(LOAD_SECONDS + 60)
    stop.set()
    k.join(60)
    if inst.master_pid() is None:
        restart_after_master_kill(inst)

    known: dict[str, str] = {}              # file -> its tag, once seen complete (files never change after)

    def tally(paths: list[str]) -> Counter:
        for p in paths:
            if p not in known:
                for tag in tags_in([p]):
                    known[p] = tag
        return Counter(known[p] for p in paths if p in known)

    def found() -> tuple[dict, dict]:
        return tally(inst.delivered()), tally(sink.files())

    def complete() -> bool:
        loc, rem = found()
        return all((loc if d == "local" else rem)[tag] for tag, d in acked) and inst.queue_count() == 0

    # Drain: wait while deliveries keep coming; stop after DRAIN_STALL s without progress.
    last, last_change = -1, time.monotonic()
    while not complete():
        loc, rem = found()
        n = sum(loc.values()) + sum(rem.values())
        if n != last:
            last, last_change = n, time.monotonic()
        elif time.monotonic() - last_change > DRAIN_STALL:
            break                                     # reported below as lost
        time.sleep(1.0)
    loc, rem = found()
    lost = sorted((tag, d) for tag, d in acked if not (loc if d == "local" else rem)[tag])
    delivered = sum(1 for tag, d in acked if (loc if d == "local" else rem)[tag])
    dups = sum(n - 1 for n in loc.values() if n > 1) + sum(n - 1 for n in rem.values() if n > 1)
    count("messages accepted", len(acked))
    count("messages delivered", delivered)
    count("lost", len(lost))
    count("duplicated", dups)
    count("crashes injected", len(kills))
    by_kind = {v: kills.count(v) for v in VICTIMS}
    print(f"\ncrash torture: {LOAD_SECONDS}s, kills {by_kind}, {len(acked)} acked, {delivered} delivered, "
          f"{len(lost)} lost, {dups} duplicates, {len(failures)} client-side failures (no 250), "
          f"{inst.queue_count()} left in queue")
    assert len(kills) >= 5, f"got {len(kills)} kills, want at least 5"
    assert len(acked) >= 20, f"got {len(acked)} acknowledged deliveries, want at least 20; failures: {failures[:5]}"
    assert by_kind["master"] >= 1, f"the master was never killed: {by_kind}"
    assert not lost, (f"lost {len(lost)} acknowledged deliveries: {lost[:10]}; queue: {inst.queue_count()}; "
                      f"log tail: {inst.log()[-3000:]}")
