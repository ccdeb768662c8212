"""The EHLO reply of estafeta's smtpd and of a private Postfix (Debian's) for the same
settings: the same keywords, in the same order, for the extensions both implement.

One Postfix and one estafeta instance each listen on one port per case, every port an
smtpd service with the case's settings as `-o` overrides in master.cf, so each server
starts once. Postfix also announces ETRN and CHUNKING, which estafeta does not
implement and must not offer (nor STARTTLS or AUTH, which this Postfix does not offer
either without certificates or SASL). Recipe for the private Postfix:
../shared/PEERS.md section 7; the unit test that pins the same lists without Postfix is
tests/unit/core/test_core_smtpsettings.py test_ehlo_keywords_as_postfix.
"""
import os
import shutil
import socket
import subprocess
import tempfile

import pytest

from estafeta.testing.instance import Instance, free_port, wait_for
from estafeta.testing.postfix import MASTER_CF

POSTFIX = shutil.which("postfix") or ("/usr/sbin/postfix" if os.path.exists("/usr/sbin/postfix") else None)
pytestmark = [
    pytest.mark.skipif(not POSTFIX, reason="postfix not installed (Debian package postfix; .ci/run installs it)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="a private Postfix instance needs root"),
]

# Keywords Postfix may announce and estafeta's codec does not implement.
NOT_IMPLEMENTED = {"ETRN", "CHUNKING", "STARTTLS", "AUTH", "XCLIENT", "XFORWARD"}
# Keywords estafeta must be seen to announce somewhere among the cases, so that the
# comparison cannot pass by both lists being short.
SHARED = {"PIPELINING", "SIZE", "VRFY", "ENHANCEDSTATUSCODES", "8BITMIME", "DSN", "SMTPUTF8"}

CASES = {
    "defaults": (),
    "vrfy_disabled": ("disable_vrfy_command=yes",),
    "no_smtputf8": ("smtputf8_enable=no",),
    "no_size_limit": ("message_size_limit=0",),
    "all_off": ("disable_vrfy_command=yes", "smtputf8_enable=no", "message_size_limit=5000"),
    # master.cf -o values cannot hold spaces: the list is comma-separated.
    "discard": ("smtpd_discard_ehlo_keywords=pipelining,DSN,8bitmime",),
}


def service_lines(ports: dict[str, int]) -> str:
    """One smtpd service per case; the first case is MASTER_CF's own smtpd line."""
    return "".join(f"127.0.0.1:{ports[name]} inet n - n - - smtpd"
                   + "".join(f" -o {o}" for o in CASES[name]) + "\n"
                   for name in list(CASES)[1:])


def _open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def ehlo_keywords(port: int) -> list[str]:
    """The EHLO reply's lines after the host name, as sent (no code, no separator)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        f = s.makefile("rb")
        assert f.readline().startswith(b"220"), "no greeting"
        s.sendall(b"EHLO client.example\r\n")
        lines = []
        while True:
            line = f.readline().decode("ascii").rstrip("\r\n")
            assert line.startswith("250"), f"got {line!r} in the EHLO reply"
            lines.append(line[4:])
            if line[3:4] != "-":
                break
        s.sendall(b"QUIT\r\n")
        f.readline()
    return lines[1:]


@pytest.fixture
def ports():
    return {name: free_port() for name in CASES}


@pytest.fixture
def postfix(ports):
    T = tempfile.mkdtemp(prefix="pf-ehlo-", dir="/tmp")
    os.chmod(T, 0o755)
    for d in ("etc", "spool"):
        os.mkdir(os.path.join(T, d))
    main = f"""compatibility_level = 3.6
queue_directory = {T}/spool
data_directory = {T}/data
maillog_file = {T}/maillog
maillog_file_prefixes = {T}
myhostname = mx.example.test
mydestination = localhost
inet_interfaces = loopback-only
inet_protocols = ipv4
alias_maps =
default_transport = discard:no outbound delivery in tests
smtpd_peername_lookup = no
"""
    open(f"{T}/etc/main.cf", "w").write(main)
    open(f"{T}/etc/master.cf", "w").write(MASTER_CF.format(port=ports["defaults"]) + service_lines(ports))
    subprocess.run([POSTFIX, "-c", f"{T}/etc", "check"], capture_output=True, timeout=60)
    r = subprocess.run([POSTFIX, "-c", f"{T}/etc", "start"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr + (open(f"{T}/maillog").read() if os.path.exists(f"{T}/maillog") else "")
    try:
        for name, port in ports.items():
            wait_for(lambda: _open(port), 20, what=f"postfix smtpd ({name})")
        yield ports
    finally:
        subprocess.run([POSTFIX, "-c", f"{T}/etc", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(T, ignore_errors=True)


@pytest.fixture
def estafeta():
    mine = {name: free_port() for name in CASES}
    inst = Instance(main={"myhostname": "mx.example.test", "smtpd_worker_count": "1"},
                    port=mine["defaults"], master_extra=service_lines(mine))
    with inst:
        inst.init()
        inst.start()
        for name, port in mine.items():
            wait_for(lambda: _open(port), 20, what=f"estafeta smtpd ({name})")
        yield mine


def keyword_name(line: str) -> str:
    return line.replace("=", " ").split(" ", 1)[0].upper()


def test_same_ehlo_keywords_as_postfix(postfix, estafeta):
    diffs, seen = [], set()
    for name in CASES:
        theirs = ehlo_keywords(postfix[name])
        ours = ehlo_keywords(estafeta[name])
        seen |= {keyword_name(k) for k in ours}
        offered = [k for k in ours if keyword_name(k) in NOT_IMPLEMENTED]
        if offered:
            diffs.append(f"{name}: estafeta offers {offered}, which it does not implement")
        want = [k for k in theirs if keyword_name(k) not in NOT_IMPLEMENTED]
        if ours != want:
            diffs.append(f"{name} {CASES[name]}: got {ours}, want (Postfix {theirs}) {want}")
    assert not diffs, "\n".join(diffs)
    assert seen == SHARED, f"got keywords {sorted(seen)} over all cases, want {sorted(SHARED)}"
