"""mailbox_size_limit is the file size limit (RLIMIT_FSIZE) of |command deliveries, as
Postfix's local(8) doc says: "including files written by external commands that are
executed by the local(8) delivery agent". Real commands (/bin/sh, head) run through the
agent; as root they run as default_privs (nobody), so their directory is world-writable.
"""
import os
import resource
import signal

import pytest

from estafeta.delivery import base, local
from local_support import deliver_local

ME = os.getuid()
MSG = b"From: a@example.org\nSubject: big\n\nbody\n"
LIMIT = 100000


@pytest.fixture
def shared(local_dir):
    return local_dir


def deliver(d: str, rcpt: str, aliases: str, **params: str) -> base.RecipientResult:
    return deliver_local(d, rcpt, aliases, MSG, **params)


def writer(d: str, size: int) -> str:
    return f'cmd: "|head -c {size} /dev/zero > {d}/out"\n'


def test_command_writing_past_the_limit_bounces_as_postfix(shared) -> None:
    r = deliver(shared, "cmd@localhost", writer(shared, 2 * LIMIT), mailbox_size_limit=str(LIMIT))
    assert (r.status, r.dsn) == ("bounced", "5.3.0"), f"got {r}, want a 5.3.0 bounce"
    # Postfix: the command gets EFBIG (SIGXFSZ is ignored), says so and exits 1.
    want = f'Command died with status 1: "head -c {2 * LIMIT} /dev/zero > {shared}/out". Command output: '
    # The output's newline is a space, as in Postfix's "Command output: ... )".
    assert r.reason.startswith(want) and r.reason.endswith("File too large "), f"got {r.reason!r}"
    assert os.path.getsize(f"{shared}/out") == LIMIT, "the file stops at the limit"


def test_command_under_the_limit_delivers(shared) -> None:
    r = deliver(shared, "cmd@localhost", writer(shared, LIMIT - 1000), mailbox_size_limit=str(LIMIT))
    assert (r.status, r.dsn) == ("sent", "2.0.0"), r
    assert os.path.getsize(f"{shared}/out") == LIMIT - 1000


def test_no_limit_when_zero(shared) -> None:
    r = deliver(shared, "cmd@localhost", writer(shared, 2 * LIMIT), mailbox_size_limit="0")
    assert (r.status, r.dsn) == ("sent", "2.0.0"), r
    assert os.path.getsize(f"{shared}/out") == 2 * LIMIT


def test_command_sees_the_limit_and_sigxfsz_ignored(shared) -> None:
    """What the command inherits, checked by the command itself (dash's ulimit -f counts
    512-byte blocks); a command killed by SIGXFSZ would be a deferral, not Postfix's bounce."""
    cmd = f'cmd: "|ulimit -f > {shared}/ulimit; grep SigIgn /proc/self/status > {shared}/sigign"\n'
    r = deliver(shared, "cmd@localhost", cmd, mailbox_size_limit=str(512 * 300))
    assert r.status == "sent", r
    assert open(f"{shared}/ulimit").read().strip() == "300"
    ignored = int(open(f"{shared}/sigign").read().split()[1], 16)
    assert ignored & (1 << (signal.SIGXFSZ - 1)), "SIGXFSZ is ignored in the command"


def test_the_limit_never_raises_a_lower_hard_limit() -> None:
    """Under a lower hard limit (an admin's ulimit on the service) the command keeps it:
    the child is already the user when it sets the limit and could not raise it."""
    pid = os.fork()
    if pid == 0:                                   # a child, so that ours stays unlimited
        code = 3
        try:
            resource.setrlimit(resource.RLIMIT_FSIZE, (50000, 50000))
            local.command_file_limit(LIMIT)()
            code = 0 if resource.getrlimit(resource.RLIMIT_FSIZE) == (50000, 50000) else 1
            code = code or (2 if signal.getsignal(signal.SIGXFSZ) != signal.SIG_IGN else 0)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, f"got exit {os.waitstatus_to_exitcode(status)}, want 0"
    assert local.command_file_limit(0) is None, "0: no limit, nothing to do in the child"


@pytest.mark.skipif(resource.getrlimit(resource.RLIMIT_FSIZE)[0] != resource.RLIM_INFINITY,
                    reason="the test process itself has a file size limit")
def test_the_agent_process_keeps_no_limit(shared) -> None:
    deliver(shared, "cmd@localhost", writer(shared, 10), mailbox_size_limit=str(LIMIT))
    assert resource.getrlimit(resource.RLIMIT_FSIZE)[0] == resource.RLIM_INFINITY
