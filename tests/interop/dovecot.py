"""A private, real Dovecot from Debian (dovecot-core, dovecot-lmtpd) for interop tests.

Started as root on loopback and a unix socket in its own temporary directory (the
recipe of ../shared/PEERS.md section 5), stopped by its own pid. Users live in a
passwd-file; mail goes to DIR/mail/<domain>/<user>/Maildir, owned by `nobody`
(Dovecot refuses to deliver as root: mail_uid/mail_gid). The directory is 0755 and
the users file world-readable: Dovecot's auth process runs as user `dovecot`.

Use:
    from dovecot import Dovecot, dovecot_server   # (tests/interop on sys.path) a fixture factory
    dove = Dovecot(users=["alice@example.test"]).start()    # or by hand
    dove.lmtp_socket, dove.lmtp_port, dove.messages("alice@example.test")
    dove.stop()
Other protocols (imap, pop3) need their Debian packages (dovecot-imapd, dovecot-pop3d)
and `protocols=` plus ports; `Dovecot.available()` says why it cannot run.
"""
from __future__ import annotations

import os
import pwd
import grp
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

DOVECOT = "/usr/sbin/dovecot"
MAIL_USER, MAIL_GROUP = "nobody", "nogroup"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Dovecot:
    def __init__(self, users: list[str], password: str = "secret", protocols: tuple[str, ...] = ("lmtp",)) -> None:
        self.users = list(users)
        self.password = password
        self.protocols = protocols
        self.dir = ""
        self.proc: subprocess.Popen | None = None
        self.lmtp_port = 0

    @staticmethod
    def available() -> str:
        """"" when a private Dovecot can run here, else why not (a skip reason)."""
        if os.geteuid() != 0:
            return "needs root: Dovecot delivers as mail_uid, which only root can switch to"
        if not os.path.exists(DOVECOT) or not os.path.exists("/usr/lib/dovecot/lmtp"):
            return ("Dovecot is not installed (apt-get install --no-install-recommends "
                    "dovecot-core dovecot-lmtpd)")
        try:
            pwd.getpwnam("dovecot")
            pwd.getpwnam(MAIL_USER)
            grp.getgrnam(MAIL_GROUP)
        except KeyError as e:
            return f"missing account for Dovecot: {e}"
        return ""

    @property
    def conf(self) -> str:
        return os.path.join(self.dir, "dovecot.conf")

    @property
    def lmtp_socket(self) -> str:
        return os.path.join(self.dir, "run", "lmtp")

    @property
    def log(self) -> str:
        try:
            with open(os.path.join(self.dir, "dovecot.log"), errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def maildir(self, user: str) -> str:
        name, _, domain = user.partition("@")
        return os.path.join(self.dir, "mail", domain, name, "Maildir")

    def messages(self, user: str) -> list[bytes]:
        """The user's INBOX messages (new/ and cur/), oldest first."""
        out = []
        for sub in ("new", "cur"):
            d = os.path.join(self.maildir(user), sub)
            try:
                names = os.listdir(d)
            except FileNotFoundError:
                continue
            for n in names:
                with open(os.path.join(d, n), "rb") as f:
                    out.append((os.stat(os.path.join(d, n)).st_mtime, n, f.read()))
        return [m for _, _, m in sorted(out)]

    def start(self, timeout: float = 20.0) -> "Dovecot":
        self.dir = tempfile.mkdtemp(prefix="dovecot-", dir="/tmp")
        os.chmod(self.dir, 0o755)
        mail = os.path.join(self.dir, "mail")
        os.mkdir(mail)
        os.chown(mail, pwd.getpwnam(MAIL_USER).pw_uid, grp.getgrnam(MAIL_GROUP).gr_gid)
        users = os.path.join(self.dir, "users")
        with open(users, "w") as f:
            f.writelines(f"{u}:{{PLAIN}}{self.password}::::::\n" for u in self.users)
        os.chmod(users, 0o644)
        self.lmtp_port = _free_port()
        d = self.dir
        with open(self.conf, "w") as f:
            f.write(f"""\
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = {' '.join(self.protocols)}
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
mail_location = maildir:{d}/mail/%d/%n/Maildir
mail_uid = {MAIL_USER}
mail_gid = {MAIL_GROUP}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {users}
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {users}
  default_fields = home={d}/mail/%d/%n
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {self.lmtp_port}
  }}
}}
""")
        check = subprocess.run(["doveconf", "-c", self.conf, "-n"], capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            raise RuntimeError(f"doveconf rejects the configuration: {check.stderr}")
        out = open(os.path.join(d, "out"), "wb")
        # -F: stay in the foreground, our child, so that its pid is the master's.
        self.proc = subprocess.Popen(["timeout", "900", DOVECOT, "-F", "-c", self.conf],
                                     stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        out.close()
        deadline = time.monotonic() + timeout
        while not (os.path.exists(self.lmtp_socket) and self._listening()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                msg = open(os.path.join(d, "out"), errors="replace").read() + self.log
                self.stop()
                raise RuntimeError(f"Dovecot did not start: {msg}")
            time.sleep(0.05)
        return self

    def _listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.lmtp_port), timeout=1) as s:
                return s.recv(512).startswith(b"220")
        except OSError:
            return False

    def stop(self) -> None:
        """Stop our Dovecot by its pid: SIGTERM to `timeout` passes to dovecot, whose
        master stops its children; SIGKILL if it lingers."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = ""


@pytest.fixture(scope="module")
def dovecot_server():
    """A factory: dovecot_server(users) starts a private Dovecot, stopped at module end."""
    why = Dovecot.available()
    if why:
        pytest.skip(why)
    started: list[Dovecot] = []

    def make(users: list[str], **kw) -> Dovecot:
        d = Dovecot(users, **kw).start()
        started.append(d)
        return d

    yield make
    for d in started:
        d.stop()
