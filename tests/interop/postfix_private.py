"""A private Postfix (Debian's) for the interop tests: one temporary directory with
its own main.cf, master.cf, queue and maillog, started and stopped by the test.

Recipe: ../shared/PEERS.md section 7; the master.cf is estafeta.testing.postfix's
MASTER_CF. Each test writes the main.cf it needs (`base_main` has the lines every
one of them shares), then

    with private_postfix("pf-ehlo-") as pf:
        pf.write(main, master)
        pf.start(ports)           # postfix check, postfix start, wait for the ports

`private_postfix` stops that Postfix however the test ends (`postfix stop`, then
its master by pid if it is still there) and removes the directory. Only the
master this instance wrote in its own pid file is ever signalled.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator

import pytest

from estafeta.testing.instance import wait_for

POSTFIX = shutil.which("postfix") or ("/usr/sbin/postfix" if os.path.exists("/usr/sbin/postfix") else None)
POSTMAP = shutil.which("postmap") or "/usr/sbin/postmap"

# pytestmark for every test module that starts one.
REQUIRES = [
    pytest.mark.skipif(not POSTFIX, reason="postfix not installed (Debian package postfix; make test installs it as root: tools/install-peers)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="a private Postfix instance needs root"),
]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


def base_main(d: str) -> str:
    """The main.cf lines every private Postfix has: its own queue, data and log."""
    return f"""compatibility_level = 3.6
queue_directory = {d}/spool
data_directory = {d}/data
maillog_file = {d}/maillog
maillog_file_prefixes = {d}
"""


class PrivatePostfix:
    def __init__(self, prefix: str, dirs: Iterable[str] = ()) -> None:
        self.dir = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
        os.chmod(self.dir, 0o755)
        for d in ("etc", "spool", *dirs):
            os.mkdir(os.path.join(self.dir, d))
        self.etc = os.path.join(self.dir, "etc")

    def path(self, *parts: str) -> str:
        return os.path.join(self.dir, *parts)

    def write(self, main: str, master: str) -> None:
        with open(os.path.join(self.etc, "main.cf"), "w") as f:
            f.write(main)
        with open(os.path.join(self.etc, "master.cf"), "w") as f:
            f.write(master)

    def postmap(self, table: str) -> None:
        """Build a hash: table (Berkeley DB) from etc/<table>."""
        subprocess.run([POSTMAP, "-c", self.etc, f"hash:{self.etc}/{table}"], check=True, timeout=60)

    def maillog(self) -> str:
        try:
            with open(self.path("maillog"), errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def start(self, ports: Iterable[int], what: str = "postfix smtpd") -> None:
        """postfix check (its complaints go to the maillog), postfix start, then wait
        until every port in `ports` accepts connections."""
        subprocess.run([POSTFIX, "-c", self.etc, "check"], capture_output=True, timeout=60)
        r = subprocess.run([POSTFIX, "-c", self.etc, "start"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"postfix start: {r.stderr}{self.maillog()}"
        for port in ports:
            wait_for(lambda: port_open(port), 20, what=f"{what} on port {port}")

    def master_pid(self) -> int | None:
        """The pid in this instance's pid file, if that process is a live Postfix master."""
        try:
            with open(self.path("spool", "pid", "master.pid")) as f:
                pid = int(f.read().split()[0])
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
        except (OSError, ValueError, IndexError):
            return None
        return pid if b"master" in cmd else None

    def stop(self) -> None:
        """postfix stop; if the master is still there after 10 s, SIGKILL it by pid
        (its children exit when it is gone)."""
        pid = self.master_pid()
        if pid is None:
            return
        subprocess.run([POSTFIX, "-c", self.etc, "stop"], capture_output=True, timeout=60)
        deadline = time.monotonic() + 10
        while self.master_pid() == pid and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.master_pid() == pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def cleanup(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def private_postfix(prefix: str, dirs: Iterable[str] = ()) -> Iterator[PrivatePostfix]:
    """A PrivatePostfix stopped and removed on the way out, whatever happened."""
    pf = PrivatePostfix(prefix, dirs)
    try:
        yield pf
    finally:
        pf.cleanup()
