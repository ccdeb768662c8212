"""The queue directories and the one atomic-write path into them.

Owns the layout under queue_directory (SPEC S3):

    maildrop/  incoming/  active/  deferred/  hold/  corrupt/   queue files by id
    defer/     per-message deferral reasons (for mailq), written by qmgr
    private/   unix sockets of internal services (qmgr trigger, delivery agents)
    pid/       master.pid

Rules (ARCHITECTURE "contracts"): only cleanup creates queue files, only qmgr moves
them. A queue file appears under its final name only once its content is durable:
it is written to a temporary name beginning with "." in the same directory, fsync'd,
renamed, and the directory fsync'd (`atomic_write`, `QueueFileWriter`). Readers skip
names beginning with ".": those are unfinished writes, removed at recovery.
(QueueFileWriter writes an unnamed O_TMPFILE instead where the file system has it,
and links it under its id: the same guarantee with one directory operation.)

Directory fsyncs are the costly, shareable part of that sequence, so concurrent
writers share them (`DirSyncer`, group commit): one fsync of incoming/ made after a
writer's rename covers that writer, however many renames it covers.
Next: qfile.py (file contents), daemons/cleanup.py (the writer), daemons/qmgr.py.
"""
from __future__ import annotations

import os
import threading

from ..core.atomic import atomic_write as _atomic_write
from ..core import atomic
from ..core.atomic import fsync_dir
from ..core.queueid import is_queue_id
from . import qfile

QUEUES = ("maildrop", "incoming", "active", "deferred", "hold", "corrupt")
AUX = ("defer", "bounce", "private", "pid", "public")
SHARED_MODES = {"maildrop": 0o3733, "public": 0o711}


def atomic_write(directory: str, name: str, data: bytes, mode: int = 0o600, sync: bool = True) -> str:
    """Write `data` as directory/name through the one atomic-write helper."""
    return _atomic_write(os.path.join(directory, name), data, mode=mode, sync=sync)


class DirSyncer:
    """Group commit of directory fsyncs for one directory, among the I/O threads.

    `sync_blocking()` returns once an fsync of the directory that *started after* the
    call has finished, so every rename done before the call is durable. While one
    fsync runs, all callers that arrive queue behind one shared next fsync
    (leader/followers), so a message's whole commit (write, fsync, rename, directory
    fsync) costs one hand-off between the event loop and a thread.
    """

    def __init__(self, path: str, enabled: bool = True) -> None:
        self.path = path
        self.enabled = enabled
        self._cond = threading.Condition()
        self._started = 0          # rounds started
        self._finished = 0         # rounds finished
        self._busy = False
        self._errors: dict[int, OSError] = {}    # failed rounds

    def sync_blocking(self) -> None:
        if not self.enabled:
            return
        with self._cond:
            target = self._started + 1       # the first round that starts after now
            while self._finished < target:
                if self._busy:
                    self._cond.wait()
                    continue
                self._busy = True
                self._started += 1
                mine = self._started
                self._cond.release()
                err: OSError | None = None
                try:
                    fsync_dir(self.path)
                except OSError as e:
                    err = e
                finally:
                    self._cond.acquire()
                    self._busy = False
                    self._finished = mine
                    if err is not None:
                        self._errors[mine] = err
                    self._cond.notify_all()
            err = self._errors.get(target)
            if len(self._errors) > 1024:                # old failed rounds nobody waits for
                for k in [k for k in self._errors if k < self._finished - 512]:
                    del self._errors[k]
        if err is not None:
            raise err


class QueueFileWriter:
    """Streams one new queue file into a queue directory (cleanup's side).

    write() message chunks, then commit() in a thread (open if still needed, write,
    fsync, name), then the caller shares a directory fsync through DirSyncer.
    abort() removes the temporary file. Never visible under its id before commit().

    The file is an unnamed O_TMPFILE in the queue directory, given its name by a
    linkat() at commit: one directory operation per message instead of a create and
    a rename (on a busy queue directory both wait for its lock), and an unfinished
    file needs no clean-up after a crash (the kernel frees it). Where the file
    system has no O_TMPFILE, a named temporary ".ID" is written and renamed, and
    recovery removes leftovers as before.

    The file is opened lazily: a message under SPILL bytes stays in memory until
    commit(), so every disk operation of a typical message happens in the commit
    thread, none on the event loop (an open() in a busy queue directory can take a
    millisecond: it waits for the directory's lock behind renames and fsyncs).
    A bigger message spills to the temporary file as it arrives.
    """

    SPILL = 1 << 20

    def __init__(self, directory: str, queue_id: str, sync: bool = True) -> None:
        self.directory = directory
        self.queue_id = queue_id
        self.sync = sync
        self.tmp = os.path.join(directory, "." + queue_id)
        self.final = os.path.join(directory, queue_id)
        self.fd = -1
        self.opened = False            # a named temporary file exists
        self.anonymous = False         # the file is an O_TMPFILE (no name until commit)
        self.buf = bytearray()
        self.size = 0

    def _open(self) -> None:
        if self.fd >= 0:
            return
        self.fd = atomic.open_unnamed(self.directory)
        if self.fd >= 0:
            self.anonymous = True
            return
        self.fd = os.open(self.tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self.opened = True

    def write(self, data: bytes) -> None:
        self.buf += data
        self.size += len(data)
        if len(self.buf) >= self.SPILL:
            self._open()
            self._flush()

    def _flush(self) -> None:
        view = memoryview(self.buf)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
        view.release()
        self.buf.clear()

    def rewrite(self, offset: int, head: bytes) -> None:
        """Replace everything before `offset` with `head` (a new envelope; rare)."""
        self._open()
        self._flush()
        size = os.fstat(self.fd).st_size
        rest = os.pread(self.fd, size - offset, offset)
        os.ftruncate(self.fd, 0)
        os.lseek(self.fd, 0, os.SEEK_SET)
        self.size = 0
        self.write(head + rest)

    def commit(self) -> None:
        """Make the file durable and give it its final name (blocking: run in a thread)."""
        self._open()
        self._flush()
        if self.sync:
            os.fsync(self.fd)
        if self.anonymous:
            try:
                atomic.link_fd(self.fd, self.final)
            finally:
                os.close(self.fd)
                self.fd = -1
            return
        os.close(self.fd)
        self.fd = -1
        os.rename(self.tmp, self.final)

    def abort(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.buf = bytearray()
        if self.opened:
            try:
                os.unlink(self.tmp)
            except FileNotFoundError:
                pass


class QueueStore:
    """Paths and moves under one queue_directory."""

    def __init__(self, queue_directory: str) -> None:
        self.root = queue_directory
        self._lock = threading.Lock()

    def path(self, queue: str, queue_id: str = "") -> str:
        return os.path.join(self.root, queue, queue_id) if queue_id else os.path.join(self.root, queue)

    def create_dirs(self, owner: tuple[int, int] | None = None) -> None:
        """Make the queue directories, owned by the mail owner (uid, gid) when given.

        All are private to that owner (0700): queue files are nobody else's business
        (maildrop and public/ are the exceptions: SHARED_MODES, queue/maildrop.py).
        """
        os.makedirs(self.root, mode=0o755, exist_ok=True)
        for d in QUEUES + AUX:
            p = self.path(d)
            os.makedirs(p, mode=0o700, exist_ok=True)
            if owner is not None:
                os.chown(p, *owner)
                # Local submission without a set-id program (queue/maildrop.py):
                # anyone may drop files into maildrop but not list it; anyone may
                # reach the sockets in public/ but not list them.
                if d in SHARED_MODES:
                    os.chmod(p, SHARED_MODES[d])

    def list(self, queue: str) -> list[str]:
        """Queue ids in a queue, oldest first; unfinished writes (".name") skipped."""
        try:
            names = os.listdir(self.path(queue))
        except FileNotFoundError:
            return []
        ids = [n for n in names if is_queue_id(n)]
        ids.sort()
        return ids

    def unfinished(self, queue: str) -> list[str]:
        try:
            return [n for n in os.listdir(self.path(queue)) if n.startswith(".")]
        except FileNotFoundError:
            return []

    def move(self, queue_id: str, src: str, dst: str) -> str:
        """Rename between queues (atomic: after a crash the file is in exactly one)."""
        dst_path = self.path(dst, queue_id)
        os.rename(self.path(src, queue_id), dst_path)
        return dst_path

    def find(self, queue_id: str) -> str | None:
        """Which queue holds this id, or None."""
        for q in QUEUES:
            if os.path.exists(self.path(q, queue_id)):
                return q
        return None

    def read_envelope(self, queue: str, queue_id: str) -> qfile.Envelope:
        return qfile.read_envelope(self.path(queue, queue_id), queue_id)

    def remove(self, queue: str, queue_id: str, logs: bool = True) -> None:
        """Remove a queue file, and its defer/ and bounce/ logs unless the caller
        knows there are none (qmgr's fast path for mail delivered at first try)."""
        os.unlink(self.path(queue, queue_id))
        if not logs:
            return
        for aux in ("defer", "bounce"):
            try:
                os.unlink(self.path(aux, queue_id))
            except FileNotFoundError:
                pass
