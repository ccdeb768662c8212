"""Acting as another account: the delivery agents' privilege switch.

The local agent (root when the system runs as root) writes mailboxes and runs
commands with the recipient's rights; the pipe agent runs its command as user=.
`Privs` is such an account; `run_as` runs a function in a forked child that has
dropped to it (for file work done as the user); commands switch in their own child
(delivery/command.py run_command). As an ordinary user nothing switches: everything
runs as that user, on the same code paths.
Next: delivery/local.py, delivery/pipe.py, delivery/command.py.
"""
from __future__ import annotations

import os
import pickle
import pwd
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..core.errors import MailError, PermFail, TempFail


@dataclass(frozen=True, slots=True)
class Privs:
    """An account to act as: ids plus what commands see in their environment."""
    name: str
    uid: int
    gid: int
    home: str = "/"
    shell: str = "/bin/sh"

    @classmethod
    def of(cls, pw: pwd.struct_passwd) -> "Privs":
        return cls(pw.pw_name, pw.pw_uid, pw.pw_gid, pw.pw_dir or "/", pw.pw_shell or "/bin/sh")

    def groups(self) -> list[int]:
        try:
            return os.getgrouplist(self.name, self.gid)
        except OSError:
            return [self.gid]


def privileged() -> bool:
    """Are we root, able to act as another account?"""
    return os.geteuid() == 0


def run_as(privs: Privs | None, fn: Callable[..., Any], *args: Any, keep_root: bool = False) -> Any:
    """fn(*args) with privs' rights; MailError and OSError come back as raised.

    As root: in a forked child that drops to privs first (with keep_root only the
    supplementary groups change; fn switches its effective ids itself). Otherwise,
    or without privs: right here, as whoever we are.
    """
    if privs is None or not privileged():
        return fn(*args)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                   # child: no logging, no asyncio, just fn
        code = 0
        try:
            os.close(r)
            os.setgroups(privs.groups())
            if not keep_root:
                os.setgid(privs.gid)
                os.setuid(privs.uid)
                if os.geteuid() == 0 and privs.uid != 0:
                    raise TempFail("could not drop root privileges", "4.3.0")
            out: tuple = ("ok", fn(*args))
        except MailError as e:
            out = ("mail", e.temporary, e.reason, e.dsn)
        except OSError as e:
            out = ("os", e.errno, e.strerror, e.filename)
        except BaseException as e:                 # noqa: BLE001 - reported to the parent
            out = ("err", f"{type(e).__name__}: {e}")
        try:
            data = pickle.dumps(out)
            view = memoryview(data)
            while view:
                view = view[os.write(w, view):]
        except BaseException:                      # noqa: BLE001
            code = 1
        os._exit(code)
    os.close(w)
    chunks = []
    try:
        while True:
            b = os.read(r, 65536)
            if not b:
                break
            chunks.append(b)
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    if not chunks:
        raise TempFail("delivery child process died", "4.3.0")
    out = pickle.loads(b"".join(chunks))
    if out[0] == "ok":
        return out[1]
    if out[0] == "mail":
        raise (TempFail if out[1] else PermFail)(out[2], out[3])
    if out[0] == "os":
        raise OSError(out[1], out[2], out[3])
    raise TempFail(f"delivery child failed: {out[1]}", "4.3.0")
