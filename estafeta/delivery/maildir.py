"""Maildir delivery (the Maildir spec: write in tmp/, fsync, link into new/).

A message is durable in the Maildir before the agent says "sent": the file is
fsync'd in tmp/ (unnamed where the file system allows), linked or renamed into
new/, and new/ is fsync'd (one fsync shared by the deliveries into that Maildir
that run at the same time). Names follow the spec's
unique form `<sec>.M<usec>P<pid>Q<n>.<host>`. Blocking: call from a thread.
"""
from __future__ import annotations

import itertools
import os
import socket
import threading
import time

from ..core import atomic
from ..core.errors import PermFail, TempFail
from ..queue.store import DirSyncer

_counter = itertools.count(1)
_host = socket.gethostname().replace("/", "\\057").replace(":", "\\072")


def ensure_maildir(path: str, uid: int = -1, gid: int = -1) -> None:
    for sub in ("", "tmp", "new", "cur"):
        p = os.path.join(path, sub)
        try:
            os.makedirs(p, mode=0o700, exist_ok=True)
        except OSError as e:
            raise TempFail(f"create maildir file {p}: {e}", "4.2.0") from e
        if uid >= 0:
            os.chown(p, uid, gid)


def deliver_maildir(path: str, prefix: bytes, message_chunks, sync: bool = True) -> str:
    """Deliver prefix + message into Maildir `path`; returns the file name in new/.

    The file is an unnamed O_TMPFILE in tmp/, linked into new/ once fsync'd: the
    spec's guarantee (nothing half-written in new/) with one directory operation
    instead of two, and nothing left in tmp/ by a crash. Where the file system has
    no O_TMPFILE: a named file in tmp/, renamed into new/, as the spec describes.
    The directories are made only when the Maildir is not there yet."""
    now = time.time()
    name = f"{int(now)}.M{int((now % 1) * 1e6)}P{os.getpid()}Q{next(_counter)}.{_host}"
    tmpdir = os.path.join(path, "tmp")
    tmp = os.path.join(tmpdir, name)
    final = os.path.join(path, "new", name)
    try:
        try:
            fd = atomic.open_unnamed(tmpdir)
        except FileNotFoundError:
            ensure_maildir(path)
            fd = atomic.open_unnamed(tmpdir)
        named = fd < 0
        if named:
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            except FileNotFoundError:
                ensure_maildir(path)
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise TempFail(f"create maildir file {tmp}: {e}", "4.2.0") from e
    try:
        try:
            for chunk in itertools.chain((prefix,), message_chunks):   # short writes too
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
            if sync:
                os.fsync(fd)
            if not named:
                try:
                    atomic.link_fd(fd, final)
                except FileNotFoundError:          # new/ removed under us: make it again
                    ensure_maildir(path)
                    atomic.link_fd(fd, final)
        finally:
            os.close(fd)
        if named:
            os.rename(tmp, final)
        if sync:
            _sync_new(os.path.join(path, "new"))
    except OSError as e:
        if named:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        # A full disk or quota is temporary: defer, never bounce (RFC 3463 4.2.2/4.3.1).
        raise TempFail(f"maildir delivery failed: {e.strerror}", "4.2.0") from e
    return name


_syncers: dict[str, DirSyncer] = {}
_syncers_lock = threading.Lock()


def _sync_new(newdir: str) -> None:
    """fsync new/ after a link into it, shared among concurrent deliveries into the
    same Maildir (group commit, as incoming/'s in cleanup): returns once an fsync
    that started after the call is done, so this delivery's link is durable."""
    with _syncers_lock:
        syncer = _syncers.get(newdir)
        if syncer is None:
            if len(_syncers) >= 1024:       # many mailboxes: forget them, nothing is lost
                _syncers.clear()
            syncer = _syncers[newdir] = DirSyncer(newdir)
    syncer.sync_blocking()


def check_size(size: int, limit: int, context: str) -> None:
    """A message file of `size` bytes over `limit` (0: none) bounces 5.2.2 before anything
    is written: what Postfix reports when a write hits its file size limit (EFBIG), for
    mailbox_size_limit and virtual_mailbox_limit. `context` ends in ":" or "."."""
    if limit and size > limit:
        raise PermFail(f"{context} error writing message: File too large", "5.2.2")


def check_loop(message_head: bytes, recipient: str) -> None:
    """A Delivered-To: header naming this recipient means a mail loop (5.4.6)."""
    needle = recipient.lower().encode("utf-8", "surrogateescape")
    head = message_head.split(b"\n\n", 1)[0].lower()
    for line in head.split(b"\n"):
        if line.startswith(b"delivered-to:") and line[13:].strip() == needle:
            raise PermFail("mail forwarding loop for " + recipient, "5.4.6")
