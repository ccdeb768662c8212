"""The one atomic-write helper: temporary name, fsync, rename, fsync of the directory.

Every file that must never be seen half-written goes through `atomic_write`: queue
files written whole, maildrop submissions, main.cf edits (postconf -e), indexed
tables (postmap, newaliases). Readers see the old file or the new one, never a
mixture; after it returns, the new file survives a crash (when sync is on).
Queue files that are streamed (cleanup) use store.QueueFileWriter, which follows
the same sequence step by step.
"""
from __future__ import annotations

import os
import secrets


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str, data: bytes, *, mode: int = 0o600, owner: tuple[int, int] | None = None,
                 sync: bool = True, tmp_name: str | None = None, dir_sync_optional: bool = False) -> str:
    """Replace `path` with `data`. The mode is set with fchmod, so a umask cannot hide
    the file from its reader. `dir_sync_optional`: a writer that may not read the
    directory (a user submitting into maildrop) relies on the file system for the
    rename's durability, as Postfix's postdrop does."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, tmp_name or f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fchmod(fd, mode)
        if owner is not None:
            os.fchown(fd, *owner)
        if sync:
            os.fsync(fd)
        os.close(fd)
        fd = -1
        os.rename(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if sync:
        try:
            fsync_dir(directory)
        except PermissionError:
            if not dir_sync_optional:
                raise
    return path
