"""Mailbox writing for the local agent: mbox files under lock, Maildir message files,
and mailbox_size_limit on both (Postfix local(8) mailbox and /file delivery).

mbox: a "From sender date" line, the message with ">From " lines quoted, one blank
line at the end, appended under a dotlock (PATH.lock) plus an fcntl lock, all or
nothing (a failed write is cut back). Maildir: maildir.deliver_maildir, the writer the
virtual agent uses too. mailbox_size_limit (`limit`, 0: none) bounds the mbox file
after the append, or each Maildir message file alone: too large bounces with 5.2.2
"File too large" and nothing is written, the outcome of Postfix's EFBIG.

Trust boundary: these functions touch files as whoever calls them; delivery/local.py
(`run_as`) decides whose rights that is. Blocking: call from a thread.
Next: delivery/maildir.py, delivery/local.py.
"""
from __future__ import annotations

import errno
import fcntl
import os
import re
import stat
import time
from typing import Protocol

from ..core.errors import TempFail
from . import maildir

LOCK_ATTEMPTS = 20       # Postfix deliver_lock_attempts
LOCK_DELAY = 0.5

_FROM_LINE = re.compile(rb"^From ", re.M)


class Owner(Protocol):
    """Whom a mailbox belongs to (privs.Privs is one)."""
    @property
    def name(self) -> str: ...
    @property
    def uid(self) -> int: ...
    @property
    def gid(self) -> int: ...


# -- mbox -----------------------------------------------------------------------------------

def from_line(sender: str, when: float | None = None) -> bytes:
    return f"From {sender or 'MAILER-DAEMON'}  {time.asctime(time.localtime(when))}\n".encode(
        "utf-8", "surrogateescape")


def mbox_image(sender: str, headers: bytes, message: bytes, when: float | None = None) -> bytes:
    """From_ line, our headers, the message with "From " lines quoted, one blank line."""
    body = _FROM_LINE.sub(b">From ", headers + message)
    if not body.endswith(b"\n"):
        body += b"\n"
    return from_line(sender, when) + body + b"\n"


def dotlock(lock: str, stale: float) -> bool:
    """Create LOCK with O_EXCL, waiting for a holder; a lock older than `stale` is removed.

    Returns False when the directory does not let us create it (file deliveries go on
    with the fcntl lock alone, as Postfix's "dotlock may fail" rule).
    """
    for _ in range(LOCK_ATTEMPTS):
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            os.write(fd, f"{os.getpid()}\n".encode())
            os.close(fd)
            return True
        except FileExistsError:
            try:
                if time.time() - os.lstat(lock).st_mtime > stale:
                    os.unlink(lock)
                    continue
            except FileNotFoundError:
                continue
        except PermissionError:
            return False
        time.sleep(LOCK_DELAY)
    raise TempFail(f"unable to lock {lock}: file exists", "4.2.0")


def append_mbox(path: str, data: bytes, owner: Owner | None, limit: int, stale: float,
                need_dotlock: bool = True, switch_ids: bool = False) -> None:
    """Append one mbox message (`data`, from mbox_image) under dotlock + fcntl lock; all
    or nothing. `limit` (0: none) bounds the file with the message appended.

    owner: when we are root, the mailbox must belong to it (a new one is given to it);
    switch_ids: we hold root only to lock and create; write with owner's effective ids.
    """
    lock = path + ".lock"
    locked = dotlock(lock, stale)
    if need_dotlock and not locked:
        raise TempFail(f"unable to create lock file {lock}: permission denied", "4.2.0")
    try:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise TempFail(f"cannot open mailbox {path}: {e.strerror}", "4.2.0") from e
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
                raise TempFail(f"mailbox {path}: not a regular file with one link", "4.2.0")
            if owner is not None and os.geteuid() == 0 and st.st_uid != owner.uid:
                if st.st_size == 0 and st.st_uid == 0:
                    os.fchown(fd, owner.uid, owner.gid)
                else:
                    raise TempFail(f"mailbox {path}: owned by uid {st.st_uid}, not {owner.name}", "4.2.0")
            for _ in range(LOCK_ATTEMPTS):
                try:
                    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as e:
                    if e.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                    time.sleep(LOCK_DELAY)
            else:
                raise TempFail(f"unable to lock {path}: busy", "4.2.0")
            if switch_ids and owner is not None:
                os.setegid(owner.gid)
                os.seteuid(owner.uid)
            try:
                size = os.fstat(fd).st_size
                maildir.check_size(size + len(data), limit,
                                   f"cannot update mailbox {path} for user {owner.name if owner else ''}.")
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                    os.fsync(fd)
                except OSError as e:
                    os.ftruncate(fd, size)       # never leave half a message
                    raise TempFail(f"cannot update mailbox {path}: {e.strerror}", "4.2.0") from e
            finally:
                if switch_ids and owner is not None:
                    os.seteuid(0)
                    os.setegid(0)
        finally:
            os.close(fd)                         # releases the fcntl lock
    finally:
        if locked:
            try:
                os.unlink(lock)
            except OSError:
                pass


# -- Maildir --------------------------------------------------------------------------------

def write_maildir(path: str, prefix: bytes, message: bytes, sync: bool, limit: int = 0) -> str:
    """One Maildir message file (prefix + message); returns its name in new/.

    mailbox_size_limit applies to that file alone, not to the Maildir, as Postfix's
    limit on any file local writes.
    """
    maildir.check_size(len(prefix) + len(message), limit, "maildir delivery failed:")
    return maildir.deliver_maildir(path, prefix, (message,), sync)
