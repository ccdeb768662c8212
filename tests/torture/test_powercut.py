"""Power-cut torture: the whole instance on an ext4 loop device, cut mid-load.

RFC 5321 6.1 again, for the crash that kill -9 cannot show: the machine loses power,
so whatever the kernel held in its page cache and had not yet written to the device
is gone. The model (no device-mapper needed, so no dm-flakey):

  * an ext4 filesystem (mounted with noauto_da_alloc, so ext4's rename heuristic
    hides no missing fsync) on a loop device over a file, holding the whole
    instance: configuration, queue_directory, Maildirs, log;
  * mixed load as in test_crash.py: clients send to a local Maildir and to a remote
    domain relayed to Postfix's smtp-sink on loopback (off the cut filesystem);
  * at a random moment, SIGSTOP every process of the instance (the master first,
    then every pid until no new one appears and all are stopped), then copy the
    loop device's backing file: that is exactly what the filesystem has submitted
    to its device, and nothing of the dirty page cache. Then SIGKILL the stopped
    pids, unmount, attach the copy and mount it at the same place (ext4 replays its
    journal), and `estafeta start` as an admin would after the reboot. The next cut
    starts from that copy, so later cuts also land in the recovery.

Every 250 counts as accepted, also one the client reads after the cut began: smtpd
answers only after its fsyncs returned, and a stopped process writes nothing, so a
250 read at any time was sent before the copy was taken, its message on the device.

A second test freezes the filesystem (fsfreeze) for a few seconds mid-load: nothing
may be acknowledged while no write can reach the disk, mail waits or gets 4xx, and
the server resumes after the thaw. Both end with the accounting of test_crash.py:
every (message, destination) that got 250 found complete at least once. Bar: 0 lost.

Limits: submitted writes survive whole and in any order the device completed them;
torn or reordered device writes (dm-flakey, dm-log-writes) are not modelled.

Scale: TORTURE_SCALE=1 runs 18 s of load-cut-reboot cycles (at least 3 cuts; ~30 s in
all, ~15 s more for the freeze test), N > 1 runs 60*N s and 2*N freezes;
TORTURE_SECONDS overrides. Root only (loop device, mount). Debian packages: postfix
(smtp-sink), e2fsprogs (mkfs.ext4), util-linux (losetup, fsfreeze).
"""
from __future__ import annotations

import os
import random
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
import threading
import time

import pytest

from estafeta.testing.instance import Instance, free_port, wait_for

from torture_support import ROOT, SCALE, SINK, Sink, count, message, tags_in

# Seconds of load-and-cut cycles (each cut also costs a reboot: ~4 s of mount and start).
LOAD_SECONDS = int(os.environ.get("TORTURE_SECONDS", str(18 if SCALE == 1 else 60 * SCALE)))
QUEUE_CAP = 3000        # senders wait while the queue holds more files than this
MIN_CUTS = 3
SENDERS = 4
DISK_MB = 256
# noauto_da_alloc: no implicit flush on rename-over or truncate, so only real fsyncs count.
MOUNT_OPTS = "noauto_da_alloc"
_SBIN = os.pathsep.join((os.environ.get("PATH", ""), "/usr/sbin", "/sbin"))


def _tool(name: str) -> str | None:
    return shutil.which(name, path=_SBIN)


def _missing(*tools: str) -> str | None:
    if not ROOT:
        return "the power-cut model needs root (loop device, mount)"
    if SINK is None:
        return "smtp-sink not installed (Debian package postfix)"
    for t in tools:
        if _tool(t) is None:
            return f"{t} not found (Debian packages util-linux, e2fsprogs)"
    return None


def run(*argv: str, timeout: float = 60) -> str:
    argv = (_tool(argv[0]) or argv[0], *argv[1:])
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {r.returncode}: {r.stderr.strip() or r.stdout.strip()}")
    return r.stdout.strip()


# ---------------------------------------------------------------------------
# The disk and the cut
# ---------------------------------------------------------------------------

class LoopDisk:
    """ext4 on a loop device over a file under `work`, mounted at work/mnt."""

    def __init__(self, work: str, size_mb: int = DISK_MB) -> None:
        self.work = work
        self.mnt = os.path.join(work, "mnt")
        os.mkdir(self.mnt)
        self.image = os.path.join(work, "disk0.img")
        self.generation = 0
        self.dev: str | None = None
        self.mounted = False
        self.frozen = False
        with open(self.image, "wb") as f:
            f.truncate(size_mb << 20)
        # Inode tables and journal written now: no ext4lazyinit writing in the background.
        run("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", self.image)
        try:
            self.attach_and_mount()
        except BaseException:
            self.detach()
            raise

    def attach_and_mount(self) -> None:
        self.dev = run("losetup", "-f", "--show", self.image)
        run("mount", "-t", "ext4", "-o", MOUNT_OPTS, self.dev, self.mnt)
        self.mounted = True
        os.chmod(self.mnt, 0o755)

    def device_copy(self) -> str:
        """What the device holds now. The backing file is read through its own page
        cache, which is exactly what the loop device has been given (writes submitted
        by ext4, completed or in flight); ext4's dirty pages never went there. (A
        direct read of /dev/loopN would first have the kernel write back the block
        device's own dirty buffers: nearly the same, not quite.)"""
        self.generation += 1
        copy = os.path.join(self.work, f"disk{self.generation}.img")
        run("dd", f"if={self.image}", f"of={copy}", "bs=1M", "conv=sparse", "status=none")
        return copy

    def holders(self) -> list[int]:
        """Pids with a file or working directory on this filesystem (only the instance's)."""
        out = []
        prefix = self.mnt + "/"
        for d in os.listdir("/proc"):
            if not d.isdigit() or int(d) == os.getpid():
                continue
            try:
                links = [os.readlink(f"/proc/{d}/cwd")]
                links += [os.readlink(f"/proc/{d}/fd/{fd}") for fd in os.listdir(f"/proc/{d}/fd")]
            except OSError:
                continue
            if any(ln == self.mnt or ln.startswith(prefix) for ln in links):
                out.append(int(d))
        return out

    def unmount(self) -> None:
        if not self.mounted:
            return
        err = ""
        for _ in range(100):
            r = subprocess.run([_tool("umount") or "umount", self.mnt], capture_output=True, text=True, timeout=30)
            if r.returncode == 0:
                self.mounted = False
                return
            err = r.stderr.strip()
            time.sleep(0.1)
        raise RuntimeError(f"umount {self.mnt}: {err}; holders: {self.holders()}")

    def detach(self) -> None:
        if self.dev:
            subprocess.run([_tool("losetup") or "losetup", "-d", self.dev], capture_output=True, timeout=30)
            self.dev = None

    def reboot_on(self, copy: str) -> None:
        """The machine comes back with the device as it was at the cut."""
        self.unmount()
        self.detach()
        os.unlink(self.image)
        self.image = copy
        self.attach_and_mount()

    def freeze(self) -> None:
        self.frozen = True                    # thaw() is tried even if this fails halfway
        run("fsfreeze", "-f", self.mnt)

    def thaw(self) -> None:
        if self.frozen:
            subprocess.run([_tool("fsfreeze") or "fsfreeze", "-u", self.mnt], capture_output=True, timeout=30)
            self.frozen = False

    def close(self) -> None:
        self.thaw()
        try:
            self.unmount()
        except RuntimeError:
            subprocess.run([_tool("umount") or "umount", "-l", self.mnt], capture_output=True, timeout=30)
            self.mounted = False
        self.detach()


def _all_tasks_stopped(pid: int) -> bool:
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return True                                   # gone
    for tid in tids:
        try:
            stat = open(f"/proc/{pid}/task/{tid}/stat").read()
        except OSError:
            continue
        if stat[stat.rindex(")") + 2] not in "TtZX":   # D: still inside a syscall (an fsync...)
            return False
    return True


def stop_everything(inst: Instance, disk: LoopDisk) -> list[int]:
    """SIGSTOP the master (no new children), then every process of the instance and
    anything holding a file on its disk, until no new one shows up and each of their
    threads is stopped (a thread inside fsync finishes that call first)."""
    stopped: list[int] = []

    def stop(pid: int) -> None:
        try:
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)
        except ProcessLookupError:
            pass

    master = inst.master_pid()
    if master:
        stop(master)
    for p in inst.all_pids():                 # at once; the slower scan of open files follows
        if p not in stopped:
            stop(p)
    deadline = time.monotonic() + 10
    while True:
        new = [p for p in {*inst.all_pids(), *disk.holders()} if p not in stopped]
        for p in new:
            stop(p)
        if not new and all(_all_tasks_stopped(p) for p in stopped):
            return stopped
        if time.monotonic() > deadline:
            raise RuntimeError(f"the instance's processes did not all stop: {stopped}")
        time.sleep(0.01)


def kill_stopped(inst: Instance, disk: LoopDisk, pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)          # also ends a stopped process
        except ProcessLookupError:
            pass
    wait_for(lambda: not inst.all_pids() and not disk.holders(), 20, interval=0.05,
             what="the killed instance's processes to exit")
    inst.running = False


# ---------------------------------------------------------------------------
# Load and accounting
# ---------------------------------------------------------------------------

class Load:
    """SENDERS client threads, as in test_crash.py; every 250 goes into `acked` with
    the time the client read it."""

    def __init__(self, inst: Instance, seed: int) -> None:
        self.inst = inst
        self.seed = seed
        self.acked: dict[tuple[str, str], float] = {}     # (tag, "local" | "remote") -> time of the 250
        self.failures: list[str] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.sender, args=(t,), daemon=True) for t in range(SENDERS)]

    def start(self) -> "Load":
        for t in self.threads:
            t.start()
        return self

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)

    def sender(self, t: int) -> None:
        rng = random.Random(self.seed * 100 + t)
        i = 0
        last_check, backlog = 0.0, 0
        while not self.stop.is_set():
            # A bounded backlog: between cuts the senders outpace delivery, and a long
            # run would otherwise fill the 256 MB disk (then the test measures ENOSPC).
            if time.monotonic() - last_check > 1.0:
                last_check = time.monotonic()
                try:
                    backlog = self.inst.queue_count()
                except OSError:
                    backlog = 0
            if backlog > QUEUE_CAP:
                time.sleep(0.2)
                continue
            batch = []
            for _ in range(rng.choice((1, 1, 2, 3))):
                tag = f"p{t}m{i}"
                i += 1
                dests = rng.choice((("local",), ("remote",), ("local", "remote")))
                rcpts = [("demo@localhost" if d == "local" else f"r{t}@remote.example") for d in dests]
                batch.append((tag, dests, rcpts, message(tag, ", ".join(rcpts), rng.choice((0, 0, 2000, 20000)))))
            try:
                with smtplib.SMTP("127.0.0.1", self.inst.port, timeout=15) as s:
                    for tag, dests, rcpts, body in batch:
                        # Raises unless 250; returns the recipients refused at RCPT, if only some were.
                        refused = s.sendmail("torture@example.org", rcpts, body)
                        now = time.monotonic()
                        with self.lock:
                            for d, r in zip(dests, rcpts):
                                if r not in refused:
                                    self.acked[(tag, d)] = now
            except (smtplib.SMTPException, OSError) as e:
                self.failures.append(repr(e)[:120])        # no 250: the client knows
                time.sleep(0.1)

    def snapshot(self) -> dict[tuple[str, str], float]:
        with self.lock:
            return dict(self.acked)


def account(inst: Instance, sink: Sink, acked, wait: float) -> tuple[list, int, int]:
    """Wait (bounded) until every acknowledged delivery is found and the queue is
    empty; returns (lost, delivered, duplicates)."""
    def found():
        return tags_in(inst.delivered()), tags_in(sink.files())

    def complete() -> bool:
        loc, rem = found()
        return all((loc if d == "local" else rem)[tag] for tag, d in acked) and inst.queue_count() == 0

    try:
        wait_for(complete, timeout=wait, interval=0.5, what="every acknowledged message delivered")
    except TimeoutError:
        pass                                              # reported as lost
    loc, rem = found()
    lost = sorted((tag, d) for tag, d in acked if not (loc if d == "local" else rem)[tag])
    delivered = len(acked) - len(lost)
    dups = sum(n - 1 for n in loc.values() if n > 1) + sum(n - 1 for n in rem.values() if n > 1)
    return lost, delivered, dups


def incomplete_mail(inst: Instance) -> list[str]:
    """Maildir files that lack their header or end marker: a message made visible
    before its content was on the disk."""
    return [p for p in inst.delivered() if not tags_in([p])]


def corrupt_files(inst: Instance) -> list[str]:
    try:
        return sorted(os.listdir(os.path.join(inst.queue_dir, "corrupt")))
    except FileNotFoundError:
        return []


@pytest.fixture
def powercut_rig():
    """(disk, instance, sink): the instance lives on the loop disk; torn down by pid
    and device, even on failure."""
    why = _missing("losetup", "mkfs.ext4", "mount", "umount", "dd")
    if why:
        pytest.skip(why)
    work = tempfile.mkdtemp(prefix="torture-powercut-")   # not tmp_path: mail owner and smtp-sink need to reach it
    os.chmod(work, 0o755)
    sink_port = free_port()
    disk = inst = sink = None
    try:
        try:
            disk = LoopDisk(work)
        except RuntimeError as e:
            pytest.skip(f"cannot make an ext4 loop device here: {e}")
        sink = Sink(work, sink_port, 2 * LOAD_SECONDS + 400)
        inst = Instance(main={"relayhost": f"[127.0.0.1]:{sink_port}", "smtp_connect_timeout": "2s"},
                        base=disk.mnt).init()
        run("sync", "-f", inst.root)          # installed long before the power went: on the disk
        yield disk, inst, sink
    finally:
        if disk is not None:
            disk.thaw()                       # a process blocked on a frozen fs cannot even die
        if inst is not None:
            inst.running = False              # no `estafeta stop`: kill by pid only
            for pid in inst.all_pids() + (disk.holders() if disk else []):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                wait_for(lambda: not inst.all_pids() and not disk.holders(), 20, what="instance gone")
            except TimeoutError:
                pass
        if disk is not None:
            disk.close()
        if sink is not None:
            sink.stop()
        shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------------------
# The tests
# ---------------------------------------------------------------------------

@pytest.mark.timeout(LOAD_SECONDS * 4 + 300)
@pytest.mark.klass("fault: power cut (dirty page cache dropped)")
def test_power_cut_loses_nothing(powercut_rig):
    disk, inst, sink = powercut_rig
    seed = int(os.environ.get("TORTURE_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    inst.start()
    load = Load(inst, seed).start()
    cuts: list[dict] = []
    began = time.monotonic()
    try:
        while time.monotonic() - began < LOAD_SECONDS or len(cuts) < MIN_CUTS:
            # Sometimes right after the restart (recovery at work), sometimes later.
            wait = rng.uniform(0.2, 2.5)
            time.sleep(wait)
            t_cut = time.monotonic()
            pids = stop_everything(inst, disk)
            stopping = time.monotonic() - t_cut
            copy = disk.device_copy()
            kill_stopped(inst, disk, pids)
            disk.reboot_on(copy)
            inst.start()                      # the admin, after the reboot
            cuts.append({"after": round(wait, 2), "t": t_cut, "stop": stopping, "queue": inst.queue_count()})
    finally:
        load.finish()
    acked = load.snapshot()
    lost, delivered, dups = account(inst, sink, acked, wait=120 + 60 * SCALE)
    late = sum(1 for t in acked.values() if any(0 <= t - c["t"] < 1.0 for c in cuts))
    corrupt = corrupt_files(inst)
    torn = incomplete_mail(inst)
    epoch = {k: sum(1 for c in cuts if c["t"] < t) for k, t in acked.items()}   # cuts before its 250
    count("messages accepted", len(acked))
    count("messages delivered", delivered)
    count("lost", len(lost))
    count("duplicated", dups)
    count("faults injected", len(cuts))
    count("power cuts injected", len(cuts))
    print(f"\npower-cut torture (seed {seed}): {len(cuts)} cuts after "
          f"{[c['after'] for c in cuts]} s of load (all stopped within {max(c['stop'] for c in cuts):.3f} s), "
          f"queue after each reboot {[c['queue'] for c in cuts]}; "
          f"{len(acked)} acked ({late} read within 1 s after a cut began), {delivered} delivered, "
          f"{len(lost)} lost, {dups} duplicates, {len(load.failures)} client-side failures (no 250), "
          f"{inst.queue_count()} left in queue, {len(corrupt)} in corrupt/, {len(torn)} incomplete in the Maildir")
    assert len(cuts) >= MIN_CUTS
    assert len(acked) >= 20, f"got {len(acked)} acknowledged deliveries, want at least 20; {load.failures[:5]}"
    assert not lost, (f"lost {len(lost)} acknowledged deliveries after power cuts (seed {seed}; (tag, dest, "
                      f"cuts before its 250)): {[(*k, epoch[k]) for k in lost[:10]]}; "
                      f"queue: {inst.queue_count()}; corrupt: {corrupt[:5]}; log tail: {inst.log()[-3000:]}")
    assert not corrupt, f"queue files in corrupt/ after power cuts (seed {seed}): {corrupt[:10]}"
    assert not torn, f"incomplete messages in the Maildir after power cuts (seed {seed}): {torn[:10]}"


FREEZES = 2 * SCALE
FREEZE_SECONDS = 2.5


def _greeting_within(inst: Instance, seconds: float) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", inst.port), timeout=seconds) as s:
            return s.recv(512).startswith(b"220")
    except OSError:
        return False


@pytest.mark.timeout(FREEZES * 10 + 300)
@pytest.mark.klass("fault: queue filesystem frozen (fsfreeze)")
def test_frozen_filesystem_waits_and_resumes(powercut_rig):
    disk, inst, sink = powercut_rig
    if _tool("fsfreeze") is None:
        pytest.skip("fsfreeze not found (Debian package util-linux)")
    inst.start()
    load = Load(inst, 4242).start()
    windows: list[tuple[float, float]] = []
    greeted: list[bool] = []
    try:
        for _ in range(FREEZES):
            time.sleep(1.5)
            disk.freeze()
            frozen_at = time.monotonic()
            count("faults injected")
            greeted.append(_greeting_within(inst, FREEZE_SECONDS - 0.5))   # does a new client hear 220?
            time.sleep(max(0.0, frozen_at + FREEZE_SECONDS - time.monotonic()))
            thaw_at = time.monotonic()
            disk.thaw()
            windows.append((frozen_at, thaw_at))
        time.sleep(1.5)
    finally:
        disk.thaw()
        load.finish()
    acked = load.snapshot()
    # A 250 read well inside a freeze would be an answer given without the disk (a
    # reply sent just before the freeze may be read a little late: 1 s of grace).
    during = sorted(k for k, t in acked.items() if any(a + 1.0 < t < b for a, b in windows))
    after = sum(1 for t in acked.values() if t > windows[-1][1])
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=30) as s:      # resumed: a fresh message goes through
        s.sendmail("torture@example.org", ["demo@localhost"], message("after-thaw", "demo@localhost"))
    acked[("after-thaw", "local")] = time.monotonic()
    lost, delivered, dups = account(inst, sink, acked, wait=90)
    count("messages accepted", len(acked))
    count("messages delivered", delivered)
    count("lost", len(lost))
    count("duplicated", dups)
    codes = sorted({m.group(1) for f in load.failures if (m := re.search(r"\((\d{3}),", f))})
    print(f"\nfsfreeze torture: {len(windows)} freezes of {FREEZE_SECONDS} s, {len(acked)} acked "
          f"({len(during)} while frozen, {after} after the last thaw), {delivered} delivered, {len(lost)} lost, "
          f"{dups} duplicates, {len(load.failures)} client-side failures (no 250; codes {codes}); "
          f"220 greeting while frozen: {greeted}")
    assert not during, f"250 answered while the queue filesystem was frozen: {during[:10]}"
    assert after > 0, "no message acknowledged after the last thaw"
    assert not lost, f"lost {len(lost)} acknowledged deliveries: {lost[:10]}; log tail: {inst.log()[-3000:]}"
