"""The maildrop directory: local submissions waiting for pickup (SPEC S2).

Owns both sides of the one place where an unprivileged user writes into the queue:
`submit` (run by the sendmail command, as the submitting user) and `load`
(run by pickup, as the mail owner, on files it must not trust).

How it stays safe without a setuid or setgid program (docs/ADMIN.md "Local
submission"): when the system is installed by root, maildrop is owned by
mail_owner, its group is mail_owner's group and its mode is 3733:
- others may create files (w+x) but not list the directory (no r), so names
  cannot be discovered; names are 128 random bits;
- setgid: a new file gets the directory's group, and is created 0640, so pickup
  (running as mail_owner, in that group) can read it and no other user can;
- sticky: a user cannot remove or rename anyone else's file (the directory
  owner, pickup, can).
A maildrop file is a queue file (qfile.py format) whose owner uid is the
submitter: pickup takes the uid from the file (the kernel's word), never from
its content (which records none), checks it against authorized_submit_users
(a user can write a file by hand, without the sendmail command's check), and
accepts only the records and attributes a submitter may set.
Next: daemons/pickup.py (the reader), cli/sendmail.py (the writer).
"""
from __future__ import annotations

import os
import re
import secrets
import stat
import time
from collections.abc import Callable

from . import qfile
from ..core.atomic import atomic_write

_NAME = re.compile(r"[0-9a-f]{32}\Z")
FILE_MODE = 0o640
# Attributes a submitter may set (sendmail -N, -R, -V, -F); pickup drops any other.
USER_ATTRS = frozenset({"dsn_notify", "dsn_ret", "dsn_envid", "full_name"})
MAX_RECIPIENTS = 10000
MAX_ADDRESS = 1000


class BadSubmission(Exception):
    """The file is not a well-formed submission: pickup moves it to corrupt."""


class NotAllowed(Exception):
    """The file's owner may not submit mail (authorized_submit_users): pickup removes it."""

    def __init__(self, uid: int) -> None:
        super().__init__(f"uid {uid} may not submit mail")
        self.uid = uid


def is_maildrop_name(name: str) -> bool:
    return bool(_NAME.match(name))


def submit(maildrop_dir: str, sender: str, recipients: list[str], attrs: dict[str, str],
           message: bytes, sync: bool = True) -> str:
    """Write one submission as the calling user; returns its file name.

    Written under a dot name (pickup skips those), fsync'd, then renamed. The
    directory fsync needs read access to the directory, which only the mail
    owner has: for other users the rename's durability rests on the file system
    (as with Postfix's postdrop).
    """
    name = secrets.token_hex(16)
    envelope = qfile.encode_envelope(time.time(), sender, [(r, {}) for r in recipients], attrs)
    atomic_write(os.path.join(maildrop_dir, name), envelope + message, mode=FILE_MODE, sync=sync,
                 tmp_name="." + name, dir_sync_optional=True)
    return name


class Submission:
    __slots__ = ("name", "uid", "arrival", "sender", "recipients", "attrs", "message")

    def __init__(self, name: str, uid: int, arrival: float, sender: str, recipients: list[str],
                 attrs: dict[str, str], message: bytes) -> None:
        self.name, self.uid, self.arrival = name, uid, arrival
        self.sender, self.recipients, self.attrs, self.message = sender, recipients, attrs, message


def load(path: str, name: str, size_limit: int, may_submit: Callable[[int], bool] | None = None) -> Submission:
    """Open and check one maildrop file (pickup's side). Raises BadSubmission,
    or OSError when the file went away or cannot be opened. `may_submit(uid)` is
    asked about the file's owner before anything is read: False raises NotAllowed
    (and an unauthorized user's junk never reaches corrupt/); its own exceptions
    (a table that cannot answer) pass through."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise BadSubmission("not a regular file")
        if st.st_nlink != 1:
            raise BadSubmission(f"{st.st_nlink} hard links")     # a link to someone else's file
        if may_submit is not None and not may_submit(st.st_uid):
            raise NotAllowed(st.st_uid)
        limit = size_limit + 1024 * 1024 if size_limit > 0 else 1 << 40
        if st.st_size > limit:
            raise BadSubmission(f"file too large ({st.st_size} bytes)")
        chunks = []
        while (b := os.read(fd, 1 << 20)):
            chunks.append(b)
        data = b"".join(chunks)
    finally:
        os.close(fd)
    try:
        env = qfile.parse_envelope(name, data, len(data))
    except (qfile.CorruptQueueFile, ValueError, UnicodeError) as e:
        raise BadSubmission(str(e)) from None
    message = data[env.message_offset:]
    if size_limit > 0 and len(message) > size_limit:
        raise BadSubmission(f"message too large ({len(message)} bytes, message_size_limit {size_limit})")
    if len(env.recipients) > MAX_RECIPIENTS:
        raise BadSubmission("too many recipients")
    rcpts = []
    for r in env.recipients:
        if r.done or r.params:
            raise BadSubmission("recipient record with status or parameters")
        rcpts.append(_check_address(r.address))
    sender = _check_address(env.sender)
    attrs = {k: v for k, v in env.attrs.items() if k in USER_ATTRS}
    for v in attrs.values():
        _check_text(v)
    return Submission(name, st.st_uid, env.arrival, sender, rcpts, attrs, message)


def _check_text(v: str) -> str:
    if any(ord(c) < 32 or ord(c) == 127 for c in v):
        raise BadSubmission("control character in envelope")
    return v


def _check_address(a: str) -> str:
    _check_text(a)
    if len(a) > MAX_ADDRESS:
        raise BadSubmission("address too long")
    if a.startswith("-"):
        raise BadSubmission("address starts with '-'")
    return a
