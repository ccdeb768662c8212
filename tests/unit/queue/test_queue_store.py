"""Queue directories: atomic writes, the queue file writer, listing and moves, DirSyncer."""
from __future__ import annotations

import os
import threading
import time

import pytest

from estafeta.core.queueid import new_queue_id
from estafeta.core import atomic
from estafeta.queue import store
from estafeta.queue.store import QUEUES, DirSyncer, QueueFileWriter, QueueStore, atomic_write

ID1 = "0000000000001000AA000"
ID2 = "0000000000002000AA000"
ID3 = "0000000000003000AA000"


@pytest.fixture
def qs(tmp_path) -> QueueStore:
    s = QueueStore(str(tmp_path / "queue"))
    s.create_dirs()
    return s


# --- atomic_write -----------------------------------------------------------------
def test_atomic_write_content_and_no_temp_left(tmp_path) -> None:
    path = atomic_write(str(tmp_path), "file", b"hello\n" * 1000)
    assert path == str(tmp_path / "file")
    got = (tmp_path / "file").read_bytes()
    assert got == b"hello\n" * 1000
    assert sorted(os.listdir(tmp_path)) == ["file"]
    assert (os.stat(path).st_mode & 0o777) == 0o600


def test_atomic_write_replaces_existing(tmp_path) -> None:
    (tmp_path / "file").write_bytes(b"old")
    atomic_write(str(tmp_path), "file", b"new", sync=False)
    assert (tmp_path / "file").read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["file"]


def test_atomic_write_failed_write_leaves_nothing(tmp_path) -> None:
    with pytest.raises(TypeError):
        atomic_write(str(tmp_path), "file", "not bytes")  # type: ignore[arg-type]
    got = os.listdir(tmp_path)
    assert got == [], f"got {got}, want []"


def test_atomic_write_failed_rename_leaves_no_temp(tmp_path) -> None:
    (tmp_path / "file").mkdir()
    (tmp_path / "file" / "x").write_bytes(b"")     # a non-empty directory in the way
    with pytest.raises(OSError):
        atomic_write(str(tmp_path), "file", b"data")
    got = os.listdir(tmp_path)
    assert got == ["file"], f"got {got}, want ['file']"


def test_atomic_write_missing_directory(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        atomic_write(str(tmp_path / "nope"), "file", b"data")
    assert os.listdir(tmp_path) == []


# --- QueueFileWriter --------------------------------------------------------------
# Two ways to make the file: an unnamed O_TMPFILE linked at commit (the default where
# the file system has it), or a named ".ID" renamed at commit (the fallback). The
# `named_temp` tests force the fallback; the `tmpfile` ones need O_TMPFILE.
@pytest.fixture
def named_temp(monkeypatch) -> None:
    monkeypatch.setattr(atomic, "_TMPFILE", False)


@pytest.fixture
def tmpfile(qs: QueueStore, monkeypatch) -> None:
    monkeypatch.setattr(atomic, "_TMPFILE", hasattr(os, "O_TMPFILE"))
    try:
        os.close(os.open(qs.path("incoming"), os.O_RDWR | os.O_TMPFILE))
    except (AttributeError, OSError) as e:
        pytest.skip(f"no O_TMPFILE on this file system: {e}")


def test_tmpfile_writer_leaves_no_name_until_commit(qs: QueueStore, tmpfile: None) -> None:
    incoming = qs.path("incoming")
    qid = new_queue_id()
    w = QueueFileWriter(incoming, qid, sync=True)
    w.write(b"EQF 1\n")
    w.write(b"x" * (QueueFileWriter.SPILL + 10))     # spills to the unnamed file
    assert w.fd >= 0 and w.anonymous, "a spilled message should be in an O_TMPFILE"
    assert os.listdir(incoming) == [], f"got {os.listdir(incoming)}: an unnamed file has no entry"
    w.commit()
    assert os.listdir(incoming) == [qid]
    with open(qs.path("incoming", qid), "rb") as f:
        assert f.read() == b"EQF 1\n" + b"x" * (QueueFileWriter.SPILL + 10)
    assert w.fd == -1


def test_tmpfile_writer_abort_and_crash_leave_nothing(qs: QueueStore, tmpfile: None) -> None:
    incoming = qs.path("incoming")
    w = QueueFileWriter(incoming, new_queue_id(), sync=False)
    w.write(b"data" * 300_000)
    w.abort()
    assert os.listdir(incoming) == []
    pid = os.fork()
    if pid == 0:                       # a writer killed before commit
        c = QueueFileWriter(incoming, new_queue_id(), sync=False)
        c.write(b"y" * (QueueFileWriter.SPILL + 1))
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.listdir(incoming) == [], f"got {os.listdir(incoming)}: nothing to clean up after a crash"


def test_tmpfile_writer_never_replaces_an_existing_file(qs: QueueStore, tmpfile: None) -> None:
    qid = new_queue_id()
    with open(qs.path("incoming", qid), "wb") as f:
        f.write(b"first")
    w = QueueFileWriter(qs.path("incoming"), qid, sync=False)
    w.write(b"second")
    with pytest.raises(FileExistsError):
        w.commit()
    with open(qs.path("incoming", qid), "rb") as f:
        assert f.read() == b"first"
    assert os.listdir(qs.path("incoming")) == [qid]


@pytest.mark.parametrize("mode", ["named_temp", "tmpfile"])
@pytest.mark.parametrize("body", [b"small body\n", b"z" * (QueueFileWriter.SPILL + 5)])
def test_writer_rewrite_replaces_the_envelope(qs: QueueStore, mode: str, body: bytes, request) -> None:
    request.getfixturevalue(mode)
    qid = new_queue_id()
    w = QueueFileWriter(qs.path("incoming"), qid, sync=False)
    w.write(b"OLD ENVELOPE\n")
    w.write(body)
    w.rewrite(len(b"OLD ENVELOPE\n"), b"NEW, LONGER ENVELOPE\n")
    w.commit()
    with open(qs.path("incoming", qid), "rb") as f:
        assert f.read() == b"NEW, LONGER ENVELOPE\n" + body
    assert w.size == len(b"NEW, LONGER ENVELOPE\n" + body)


def test_writer_is_invisible_until_commit(qs: QueueStore, named_temp: None) -> None:
    incoming = qs.path("incoming")
    qid = new_queue_id()
    w = QueueFileWriter(incoming, qid, sync=False)
    assert os.path.basename(w.tmp).startswith("."), f"got temp name {w.tmp}, want a leading '.'"
    w.write(b"EQF 1\n")
    w.write(b"x" * (QueueFileWriter.SPILL + 10))     # forces a flush to the temp file
    assert os.path.exists(w.tmp)
    assert qs.list("incoming") == [], f"got {qs.list('incoming')}, want []"
    assert qs.unfinished("incoming") == ["." + qid]
    w.commit()
    assert qs.list("incoming") == [qid]
    assert qs.unfinished("incoming") == []
    with open(qs.path("incoming", qid), "rb") as f:
        got = f.read()
    want = b"EQF 1\n" + b"x" * (QueueFileWriter.SPILL + 10)
    assert got == want
    assert w.size == len(want), f"got size {w.size}, want {len(want)}"


def test_writer_commit_with_sync(qs: QueueStore) -> None:
    qid = new_queue_id()
    w = QueueFileWriter(qs.path("incoming"), qid)
    w.write(b"small")
    w.commit()
    assert qs.list("incoming") == [qid]


def test_writer_abort_removes_temp(qs: QueueStore, named_temp: None) -> None:
    incoming = qs.path("incoming")
    w = QueueFileWriter(incoming, new_queue_id(), sync=False)
    w.write(b"data" * 100_000)
    w.abort()
    assert os.listdir(incoming) == []
    w.abort()          # twice is harmless


def test_writer_refuses_existing_temp(qs: QueueStore, named_temp: None) -> None:
    # O_EXCL on the temporary name: a second writer for the same id fails at commit
    # (when it first opens the file), and the first writer's file is left alone.
    qid = new_queue_id()
    first = QueueFileWriter(qs.path("incoming"), qid, sync=False)
    first.write(b"x" * QueueFileWriter.SPILL)       # spills: the temp file exists
    second = QueueFileWriter(qs.path("incoming"), qid, sync=False)
    second.write(b"y")
    with pytest.raises(FileExistsError):
        second.commit()
    second.abort()
    assert os.path.exists(first.tmp), "the failed writer removed another writer's file"


# --- QueueStore -------------------------------------------------------------------
def test_create_dirs_makes_private_dirs(qs: QueueStore) -> None:
    for d in QUEUES + store.AUX:
        p = qs.path(d)
        assert os.path.isdir(p), f"missing {p}"
        assert (os.stat(p).st_mode & 0o777) == 0o700, f"got mode {os.stat(p).st_mode & 0o777:o} for {d}, want 700"


def test_list_sorted_and_skips_non_ids(qs: QueueStore) -> None:
    d = qs.path("deferred")
    for name in (ID3, ID1, "." + ID2, ID2, "README", ID1.lower(), ID1 + "0", ".tmp"):
        open(os.path.join(d, name), "wb").close()
    got = qs.list("deferred")
    want = [ID1, ID2, ID3]
    assert got == want, f"got {got}, want {want}"


def test_list_missing_queue_is_empty(tmp_path) -> None:
    assert QueueStore(str(tmp_path / "none")).list("active") == []


def test_move_and_find(qs: QueueStore) -> None:
    open(qs.path("incoming", ID1), "wb").close()
    assert qs.find(ID1) == "incoming"
    got = qs.move(ID1, "incoming", "active")
    assert got == qs.path("active", ID1)
    assert qs.find(ID1) == "active"
    assert not os.path.exists(qs.path("incoming", ID1))
    qs.move(ID1, "active", "deferred")
    assert qs.find(ID1) == "deferred"
    assert qs.find(ID2) is None


def test_move_missing_raises(qs: QueueStore) -> None:
    with pytest.raises(FileNotFoundError):
        qs.move(ID1, "incoming", "active")


def test_remove_also_removes_defer_and_bounce_logs(qs: QueueStore) -> None:
    for q in ("deferred", "defer", "bounce"):
        open(qs.path(q, ID1), "wb").close()
    open(qs.path("deferred", ID2), "wb").close()
    open(qs.path("defer", ID2), "wb").close()
    qs.remove("deferred", ID1)
    for q in ("deferred", "defer", "bounce"):
        assert not os.path.exists(qs.path(q, ID1)), f"{q}/{ID1} still there"
    assert os.path.exists(qs.path("defer", ID2))
    qs.remove("deferred", ID2)          # no bounce/ID2: fine
    assert qs.find(ID2) is None


def test_read_envelope_through_store(qs: QueueStore) -> None:
    from estafeta.queue.qfile import encode_envelope
    data = encode_envelope(5.0, "a@b", [("c@d", {})], {}) + b"hi\n"
    atomic_write(qs.path("active"), ID1, data, sync=False)
    env = qs.read_envelope("active", ID1)
    assert (env.sender, env.recipients[0].address, env.message_size) == ("a@b", "c@d", 3)


# --- DirSyncer ---------------------------------------------------------------------
class FakeFsync:
    """Records fsync_dir calls; optionally holds each one until released."""

    def __init__(self, gated: bool = False) -> None:
        self.lock = threading.Lock()
        self.started = 0
        self.finished = 0
        self.paths: list[str] = []
        self.gated = gated
        self.entered = threading.Semaphore(0)
        self.release = threading.Semaphore(0)
        self.fail_next: OSError | None = None

    def __call__(self, path: str) -> None:
        with self.lock:
            self.started += 1
            self.paths.append(path)
            fail, self.fail_next = self.fail_next, None
        if self.gated:
            self.entered.release()
            assert self.release.acquire(timeout=10), "fsync never released"
        with self.lock:
            self.finished += 1
        if fail is not None:
            raise fail


@pytest.fixture
def fake(monkeypatch) -> FakeFsync:
    f = FakeFsync()
    monkeypatch.setattr(store, "fsync_dir", f)
    return f


def test_writer_small_message_touches_disk_only_at_commit(qs: QueueStore, named_temp: None) -> None:
    qid = new_queue_id()
    w = QueueFileWriter(qs.path("incoming"), qid, sync=False)
    w.write(b"EQF 1\nsmall")
    assert not os.path.exists(w.tmp), "a small message must not be opened before commit"
    w.abort()
    assert qs.unfinished("incoming") == [] and qs.list("incoming") == []


# --- DirSyncer.sync_blocking: the same promise, for callers in threads --------------
def checked_sync_blocking(syncer: DirSyncer, fake: FakeFsync) -> None:
    started_at_call = fake.started
    syncer.sync_blocking()
    assert fake.finished > started_at_call, (
        f"got {fake.finished} fsyncs finished at return, want more than the {started_at_call} started at call")


def test_blocking_concurrent_syncs_share_fsyncs(tmp_path, monkeypatch) -> None:
    fake = FakeFsync()
    slow = lambda path: (time.sleep(0.02), fake(path))   # noqa: E731 - a disk that takes its time
    monkeypatch.setattr(store, "fsync_dir", slow)
    syncer = DirSyncer(str(tmp_path))
    errors: list[BaseException] = []
    barrier = threading.Barrier(50)

    def one() -> None:
        barrier.wait(10)
        try:
            checked_sync_blocking(syncer, fake)
        except BaseException as e:      # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=one) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not errors, errors
    assert fake.started == fake.finished
    assert 1 <= fake.started <= 10, f"got {fake.started} fsyncs for 50 threads, want them shared"


def test_blocking_sequential_syncs_each_fsync(fake: FakeFsync, tmp_path) -> None:
    syncer = DirSyncer(str(tmp_path))
    for _ in range(4):
        checked_sync_blocking(syncer, fake)
    assert fake.started == 4


def test_blocking_caller_during_running_fsync_waits_for_the_next(tmp_path, monkeypatch) -> None:
    fake = FakeFsync(gated=True)
    monkeypatch.setattr(store, "fsync_dir", fake)
    syncer = DirSyncer(str(tmp_path))
    first = threading.Thread(target=checked_sync_blocking, args=(syncer, fake))
    first.start()
    assert fake.entered.acquire(timeout=10), "first fsync never started"
    late_done = threading.Event()

    def late() -> None:
        checked_sync_blocking(syncer, fake)
        late_done.set()

    late_threads = [threading.Thread(target=late) for _ in range(10)]
    for t in late_threads:
        t.start()
    time.sleep(0.05)
    fake.release.release()                       # finish fsync #1: it does not cover the late ones
    first.join(10)
    assert not late_done.is_set(), "a late caller returned on the fsync that began before it"
    assert fake.entered.acquire(timeout=10), "second fsync never started"
    fake.release.release()
    for t in late_threads:
        t.join(10)
    assert late_done.is_set()
    assert (fake.started, fake.finished) == (2, 2), f"got {(fake.started, fake.finished)}, want (2, 2)"


def test_blocking_fsync_error_reaches_its_callers_only(fake: FakeFsync, tmp_path) -> None:
    syncer = DirSyncer(str(tmp_path))
    fake.fail_next = OSError(5, "Input/output error")
    with pytest.raises(OSError):
        syncer.sync_blocking()
    checked_sync_blocking(syncer, fake)          # the next round works
    assert fake.started == 2


def test_blocking_disabled_never_fsyncs(fake: FakeFsync, tmp_path) -> None:
    DirSyncer(str(tmp_path), enabled=False).sync_blocking()
    assert fake.started == 0
