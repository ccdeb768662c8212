"""The one atomic-write helper: temporary name, fsync, rename, fsync of the directory.

Every file that must never be seen half-written goes through `atomic_write`: queue
files written whole, maildrop submissions, main.cf edits (postconf -e), indexed
tables (postmap, newaliases). Readers see the old file or the new one, never a
mixture; after it returns, the new file survives a crash (when sync is on).
Queue files that are streamed (cleanup) use store.QueueFileWriter, which follows
the same sequence step by step.
"""
from __future__ import annotations

import errno
import os
import secrets

# Tests turn this off to exercise the named-file fallback.
_TMPFILE = hasattr(os, "O_TMPFILE")
_no_tmpfile: set[str] = set()        # directories whose file system has no O_TMPFILE


def open_unnamed(directory: str, mode: int = 0o600) -> int:
    """A new unnamed file (O_TMPFILE, read-write) in `directory`, or -1 where its file
    system has none (the caller then writes a named temporary file).

    Written, fsync'd and then given its name by `link_fd`, such a file takes one
    directory operation instead of two (create, rename), is never seen half-written
    under any name, and needs no clean-up after a crash: the kernel frees it."""
    if not _TMPFILE or directory in _no_tmpfile:
        return -1
    try:
        return os.open(directory, os.O_RDWR | os.O_TMPFILE | os.O_CLOEXEC, mode)
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            _no_tmpfile.add(directory)
            return -1
        raise


def link_fd(fd: int, path: str) -> None:
    """Give an unnamed file its name: linkat("/proc/self/fd/FD", path, AT_SYMLINK_FOLLOW);
    FileExistsError if the name is taken. Plain os.link() would call link(2), which
    links the /proc symlink itself; passing a dir fd makes Python call linkat(2), and
    for an absolute path the kernel ignores that fd (any open descriptor will do)."""
    os.link(f"/proc/self/fd/{fd}", path, src_dir_fd=fd, follow_symlinks=True)


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
