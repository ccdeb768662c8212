"""A real estafeta instance for end-to-end tests: init, start, inspect, stop.

Each Instance lives in its own temporary directory (world-searchable, so that the
mail owner can reach it when the tests run as root) and listens on a free loopback
port. Processes are found and stopped by their own pids, never by name.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout: float = 20.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Instance:
    def __init__(self, main: dict[str, str] | None = None, master_extra: str = "",
                 port: int | None = None, base: str | None = None) -> None:
        self.root = tempfile.mkdtemp(prefix="estafeta-", dir=base or "/tmp")
        os.chmod(self.root, 0o755)
        self.port = port or free_port()
        self.main = main or {}
        self.master_extra = master_extra
        self.running = False

    # -- setup --------------------------------------------------------------------------

    def cli(self, *args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "estafeta.cli.main", "-c", self.root, *args],
                              capture_output=True, text=True, check=check, env=env, timeout=60)

    def init(self) -> "Instance":
        self.cli("init", self.root)
        self.set_master_port(self.port)
        if self.master_extra:
            with open(self.path("master.cf"), "a") as f:
                f.write(self.master_extra)
        # Tests never ask the host's DNS (nor send anything off loopback): a port on
        # loopback where nothing answers makes every lookup fail fast and temporarily.
        settings = {"minimal_backoff_time": "1s", "maximal_backoff_time": "2s", "queue_run_delay": "1s",
                    "dns_nameservers": "127.0.0.1:9", "dns_timeout": "1s", **self.main}
        self.cli("config", "-e", *(f"{k}={v}" for k, v in settings.items()))
        return self

    def set_master_port(self, port: int) -> None:
        p = self.path("master.cf")
        text = open(p).read()
        text = re.sub(r"^127\.0\.0\.1:\d+(\s+inet)", rf"127.0.0.1:{port}\1", text, flags=re.M)
        open(p, "w").write(text)

    def set_smtpd_maxproc(self, n: int) -> None:
        """master.cf: the smtpd line's maxproc column (sessions, shared by the workers)."""
        p = self.path("master.cf")
        lines = open(p).read().splitlines()
        for i, line in enumerate(lines):
            f = line.split()
            if len(f) >= 8 and f[1] == "inet" and f[7] == "smtpd":
                f[6] = str(n)
                lines[i] = " ".join(f)
        open(p, "w").write("\n".join(lines) + "\n")

    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    @property
    def queue_dir(self) -> str:
        return self.path("var", "queue")

    def maildir(self, user: str = "demo") -> str:
        return self.path("var", "mail", user, "Maildir")

    # -- running ------------------------------------------------------------------------

    def start(self) -> "Instance":
        r = self.cli("start", check=False)
        if r.returncode != 0:
            raise RuntimeError(f"start failed: {r.stdout}{r.stderr}\n{self.master_out()}")
        self.running = True
        wait_for(self.accepting, 20, what=f"port {self.port}")
        # Delivery agents start on demand (when qmgr first connects): wait for qmgr only.
        wait_for(lambda: self.service_pids("qmgr"), 20, what="services")
        return self

    def accepting(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                return s.recv(512).startswith(b"220")
        except OSError:
            return False

    def stop(self) -> None:
        if self.running:
            self.cli("stop", check=False)
            self.running = False
            pid = self.master_pid()
            if pid:
                os.kill(pid, signal.SIGKILL)

    def cleanup(self) -> None:
        self.stop()
        for pid in self.all_pids():          # anything of ours still around: by pid
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)

    def master_pid(self) -> int | None:
        try:
            pid = int(open(os.path.join(self.queue_dir, "pid", "master.pid")).read())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    def _procs(self) -> list[tuple[int, list[str]]]:
        out = []
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                argv = open(f"/proc/{d}/cmdline", "rb").read().split(b"\0")
            except OSError:
                continue
            args = [a.decode(errors="replace") for a in argv if a]
            if "-c" in args and self.root in args:
                out.append((int(d), args))
        return out

    def all_pids(self) -> list[int]:
        return [p for p, _ in self._procs()]

    def service_pids(self, command: str) -> list[int]:
        out = []
        master = self.master_pid()
        for p, a in self._procs():
            # argv: ... COMMAND -- ARGS (skeleton.parse_args). Only the master's own
            # children: the local agent forks short-lived helpers with the same argv.
            if "estafeta.daemons.run" in a and "--" in a and a[a.index("--") - 1] == command:
                if master is None or self._ppid(p) == master:
                    out.append(p)
        return out

    @staticmethod
    def _ppid(pid: int) -> int:
        try:
            for line in open(f"/proc/{pid}/status"):
                if line.startswith("PPid:"):
                    return int(line.split()[1])
        except OSError:
            pass
        return -1

    def uid_of(self, pid: int) -> int:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("Uid:"):
                return int(line.split()[1])
        raise LookupError(pid)

    # -- inspection ---------------------------------------------------------------------

    def log(self) -> str:
        try:
            return open(self.path("var", "log", "maillog"), errors="replace").read()
        except FileNotFoundError:
            return ""

    def master_out(self) -> str:
        try:
            return open(self.path("var", "lib", "master.out"), errors="replace").read()
        except FileNotFoundError:
            return ""

    def delivered(self, user: str = "demo") -> list[str]:
        d = os.path.join(self.maildir(user), "new")
        try:
            return sorted(os.path.join(d, n) for n in os.listdir(d))
        except FileNotFoundError:
            return []

    def queue_count(self, *queues: str) -> int:
        n = 0
        for q in queues or ("incoming", "active", "deferred"):
            try:
                n += len([x for x in os.listdir(os.path.join(self.queue_dir, q)) if not x.startswith(".")])
            except FileNotFoundError:
                pass
        return n

    def __enter__(self) -> "Instance":
        return self

    def __exit__(self, *exc) -> None:
        self.cleanup()
