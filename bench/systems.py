"""The two systems under measurement, with one interface.

EstafetaSystem: an estafeta instance (estafeta.testing.instance.Instance) relaying
non-local mail to its own smtp-sink and delivering the virtual mailbox domain
vbench.invalid into one Maildir with its virtual delivery agent.

PostfixSystem: a private Postfix from Debian (/usr/lib/postfix/sbin) under a mktemp
directory, durable defaults (queue files fsync'ed before 250), configured the same
way: relayhost to its own smtp-sink, vbench.invalid delivered by virtual(8) into one
Maildir. No chroot, logging to a file via postlogd.

Both listen on loopback only; everything is stopped by pid / "postfix -c DIR stop".
"""
from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from estafeta.testing.instance import Instance, free_port, wait_for  # noqa: E402

VDOMAIN = "vbench.invalid"
RELAY_RCPT = "rcpt@example.invalid"
LOCAL_RCPT = f"user@{VDOMAIN}"
SENDER = "sender@bench.invalid"
POSTFIX_DAEMONS = "/usr/lib/postfix/sbin"


def need_tools() -> None:
    missing = [t for t in ("smtp-source", "smtp-sink") if not shutil.which(t, path=os.environ.get("PATH", "") + ":/usr/sbin")]
    if missing or not os.path.exists(f"{POSTFIX_DAEMONS}/master"):
        raise SystemExit("bench: needs Debian's postfix package (smtp-source, smtp-sink, daemons): "
                         "apt-get install postfix  (then 'postfix stop' if it started a system instance)")
    if os.geteuid() != 0:
        raise SystemExit("bench: the reference Postfix needs root")


def port_listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Sink:
    """smtp-sink on 127.0.0.1:port counting messages (-c); count() = messages so far."""

    def __init__(self, workdir: str) -> None:
        self.port = free_port()
        self.out = os.path.join(workdir, f"sink-{self.port}.out")
        args = ["smtp-sink", "-h", "sink.bench.invalid", "-c", f"127.0.0.1:{self.port}", "1024"]
        if os.geteuid() == 0:
            args[1:1] = ["-u", "nobody"]
        self.proc = subprocess.Popen(args, stdout=open(self.out, "wb"), stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        wait_for(lambda: port_listening(self.port), 10, what=f"smtp-sink on {self.port}")

    def count(self) -> int:
        try:
            with open(self.out, "rb") as f:
                f.seek(max(0, os.path.getsize(self.out) - 200))
                tail = f.read().decode(errors="replace")
        except OSError:
            return 0
        i = tail.rfind("mesg=")
        if i < 0:
            return 0
        digits = ""
        for ch in tail[i + 5:]:
            if not ch.isdigit():
                break
            digits += ch
        return int(digits or 0)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _count_files(d: str) -> int:
    try:
        return sum(1 for e in os.scandir(d) if not e.name.startswith("."))
    except FileNotFoundError:
        return 0


def _clear_dir(d: str) -> None:
    try:
        for e in os.scandir(d):
            try:
                os.unlink(e.path)
            except OSError:
                pass
    except FileNotFoundError:
        pass


class EstafetaSystem:
    name = "estafeta"

    def __init__(self, workdir: str, maxproc: int | None = None, env: dict | None = None,
                 extra_main: dict | None = None) -> None:
        self.sink = Sink(workdir)
        main = {
            "relayhost": f"[127.0.0.1]:{self.sink.port}",
            "mynetworks": "127.0.0.0/8",
            "virtual_mailbox_domains": VDOMAIN,
            "virtual_mailbox_maps": "inline:{ " + LOCAL_RCPT + "=box/ }",
            **(extra_main or {}),
        }
        self.inst = Instance(main=main)
        saved = dict(os.environ)
        try:
            os.environ.update(env or {})
            self.inst.init()
            if maxproc:
                self.inst.set_smtpd_maxproc(maxproc)
            self.inst.start()
        except Exception:
            self.inst.cleanup()
            self.sink.stop()
            raise
        finally:
            os.environ.clear()
            os.environ.update(saved)
        self.port = self.inst.port
        self.env = env

    def roots(self) -> list[int]:
        p = self.inst.master_pid()
        return [p] if p else []

    def maildir_new(self) -> str:
        return self.inst.path("var", "mail", "box", "new")

    def relayed(self) -> int:
        return self.sink.count()

    def mailbox(self) -> int:
        return _count_files(self.maildir_new())

    def clear_mailbox(self) -> None:
        _clear_dir(self.maildir_new())

    def queue_empty(self) -> bool:
        return self.inst.queue_count() == 0

    def stop(self) -> None:
        saved = dict(os.environ)
        try:
            os.environ.update(self.env or {})
            self.inst.cleanup()
        finally:
            os.environ.clear()
            os.environ.update(saved)
            self.sink.stop()


POSTFIX_MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class PostfixSystem:
    name = "postfix"

    def __init__(self, workdir: str) -> None:
        self.sink = Sink(workdir)
        self.port = free_port()
        d = self.dir = tempfile.mkdtemp(prefix="estafeta-bench-postfix-", dir="/tmp")
        os.chmod(d, 0o755)
        for sub in ("etc", "spool", "data", "vmail"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        pf = pwd.getpwnam("postfix")
        nobody = pwd.getpwnam("nobody")
        os.chown(os.path.join(d, "data"), pf.pw_uid, -1)
        os.chown(os.path.join(d, "vmail"), nobody.pw_uid, nobody.pw_gid)
        main_cf = f"""\
# estafeta bench reference instance: loopback only, durable defaults (queue files fsync'ed)
compatibility_level = 3.6
queue_directory = {d}/spool
data_directory = {d}/data
command_directory = /usr/sbin
daemon_directory = {POSTFIX_DAEMONS}
shlib_directory = /usr/lib/postfix
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
maillog_file_prefixes = {d}
maillog_file = {d}/maillog
myhostname = mta.bench.invalid
mydomain = bench.invalid
myorigin = $myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
relayhost = [127.0.0.1]:{self.sink.port}
disable_dns_lookups = yes
smtp_dns_support_level = disabled
smtp_host_lookup = native
alias_maps =
alias_database =
local_recipient_maps =
biff = no
virtual_mailbox_domains = {VDOMAIN}
virtual_mailbox_base = {d}/vmail
virtual_mailbox_maps = static:box/
virtual_uid_maps = static:{nobody.pw_uid}
virtual_gid_maps = static:{nobody.pw_gid}
virtual_minimum_uid = 1
"""
        open(os.path.join(d, "etc", "main.cf"), "w").write(main_cf)
        open(os.path.join(d, "etc", "master.cf"), "w").write(POSTFIX_MASTER_CF.format(port=self.port))
        env = {**os.environ, "PATH": os.environ.get("PATH", "") + ":/usr/sbin:/sbin"}
        self.env = env
        r = subprocess.run(["postfix", "-c", f"{d}/etc", "check"], capture_output=True, text=True, env=env,
                           stdin=subprocess.DEVNULL, timeout=60)
        if r.returncode:
            self.sink.stop()
            raise RuntimeError(f"postfix check failed: {r.stdout}{r.stderr}")
        r = subprocess.run(["postfix", "-c", f"{d}/etc", "start"], capture_output=True, text=True, env=env,
                           stdin=subprocess.DEVNULL, timeout=60)
        try:
            if r.returncode:
                raise RuntimeError(f"postfix start failed: {r.stdout}{r.stderr} (see {d}/maillog)")
            wait_for(lambda: port_listening(self.port), 20, what=f"postfix smtpd on {self.port}")
        except Exception:
            self.stop()
            raise

    def roots(self) -> list[int]:
        try:
            return [int(open(f"{self.dir}/spool/pid/master.pid").read().split()[0])]
        except (OSError, ValueError, IndexError):
            return []

    def maildir_new(self) -> str:
        return os.path.join(self.dir, "vmail", "box", "new")

    def relayed(self) -> int:
        return self.sink.count()

    def mailbox(self) -> int:
        return _count_files(self.maildir_new())

    def clear_mailbox(self) -> None:
        _clear_dir(self.maildir_new())

    def queue_empty(self) -> bool:
        for q in ("incoming", "active", "deferred", "maildrop"):
            for _root, _dirs, files in os.walk(os.path.join(self.dir, "spool", q)):
                if files:
                    return False
        return True

    def stop(self) -> None:
        etc = f"{self.dir}/etc"
        subprocess.run(["postfix", "-c", etc, "stop"], capture_output=True, env=self.env,
                       stdin=subprocess.DEVNULL, timeout=60)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.roots() and os.path.exists(f"/proc/{self.roots()[0]}"):
            time.sleep(0.1)
        if self.roots() and os.path.exists(f"/proc/{self.roots()[0]}"):
            subprocess.run(["postfix", "-c", etc, "abort"], capture_output=True, env=self.env,
                           stdin=subprocess.DEVNULL, timeout=60)
        self.sink.stop()
        if os.environ.get("BENCH_KEEP"):
            print(f"bench: kept {self.dir}", file=sys.stderr)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
