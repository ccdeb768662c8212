"""Shared state and peers of the torture suite (imported by its tests and conftest).

Scale and report: TORTURE_SCALE (default 1) sizes every load, run time and fuzz budget;
tests add their counts with count(), fuzzed() and corpus_units(); conftest prints the table.

Peers and accounting: Postfix's smtp-sink stands in for the remote MX. Every message a torture client sends carries `X-Test-Id: TAG` and ends with the line
`END-OF-TAG`; a copy counts as delivered only when both are in it, so a dump cut short
by a killed agent is not mistaken for a delivery. Peers run under timeout(1), write to
files in the test's directory and are stopped by their own pid.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections import Counter, defaultdict

from hypothesis import HealthCheck, settings

from estafeta.testing.instance import Instance, wait_for

SCALE = max(1, int(os.environ.get("TORTURE_SCALE", "1")))

# Applied per test (not as a global profile: other suites keep their own settings).
# Scale 1 is derandomized so that CI runs the same examples on every change.
FUZZ = settings(max_examples=100 * SCALE, deadline=None, derandomize=SCALE == 1, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])

_lock = threading.Lock()
REPORT: dict[str, int] = defaultdict(int)
CLASSES: dict[str, str] = {}
_inputs: set[int] = set()


def count(key: str, n: int = 1) -> None:
    with _lock:
        REPORT[key] += n


def fuzzed(value: object) -> None:
    """One fuzz execution of `value` (any hypothesis-generated input)."""
    with _lock:
        REPORT["fuzz executions"] += 1
        _inputs.add(hash(repr(value)))


_corpus_units = [0]


def corpus_units(n: int) -> None:
    """`n` more distinct inputs found outside hypothesis: the corpus of a coverage-guided
    fuzzer (atheris), each unit covering something the others do not."""
    with _lock:
        _corpus_units[0] += n


def distinct_inputs() -> int:
    """The table's "distinct inputs": hypothesis inputs plus fuzzer corpus units."""
    with _lock:
        return len(_inputs) + _corpus_units[0]


ROOT = os.geteuid() == 0
SINK = shutil.which("smtp-sink") or ("/usr/sbin/smtp-sink" if os.path.exists("/usr/sbin/smtp-sink") else None)
TAG_RE = re.compile(rb"X-Test-Id: (\S+)")


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class Sink:
    """smtp-sink on 127.0.0.1:port dumping each transaction to a file under `dump`."""

    def __init__(self, workdir: str, port: int, seconds: int, *opts: str) -> None:
        self.dump = os.path.join(workdir, "sink")
        os.makedirs(self.dump, exist_ok=True)
        os.chmod(self.dump, 0o777)
        argv = ["timeout", str(seconds), SINK, *(["-u", "nobody"] if ROOT else []), *opts,
                "-d", f"{self.dump}/%M.", f"127.0.0.1:{port}", "200"]
        self.out = open(os.path.join(workdir, "sink.out"), "wb")
        self.proc = subprocess.Popen(argv, stdout=self.out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_for(lambda: port_open("127.0.0.1", port), 10, what=f"smtp-sink on port {port}")

    def files(self) -> list[str]:
        return [os.path.join(self.dump, n) for n in os.listdir(self.dump)]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)      # timeout(1) passes it on
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.out.close()


def message(tag: str, to: str, size: int = 0) -> bytes:
    filler = "".join(f"line {i} of {tag} .. padding padding padding\r\n" for i in range(size // 50))
    return (f"From: torture@example.org\r\nTo: {to}\r\nSubject: {tag}\r\nX-Test-Id: {tag}\r\n\r\n"
            f"body of {tag}\r\n.leading dot\r\n{filler}END-OF-{tag}\r\n").encode()


def tags_in(paths: list[str]) -> Counter[str]:
    """Complete copies per tag among these files (header and end marker both present)."""
    found: Counter[str] = Counter()
    for p in paths:
        try:
            with open(p, "rb") as f:
                data = f.read()
        except OSError:
            continue
        m = TAG_RE.search(data)
        if m and b"END-OF-" + m.group(1) in data:
            found[m.group(1).decode()] += 1
    return found


def restart_after_master_kill(inst: Instance, timeout: float = 20.0) -> None:
    """The master is gone; its children follow (PR_SET_PDEATHSIG). Wait for them,
    kill any straggler by pid, and start the instance again as an admin would."""
    deadline = time.monotonic() + timeout
    while inst.all_pids() and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in inst.all_pids():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_for(lambda: not inst.all_pids(), 10, what="the old instance's processes to exit")
    inst.running = False
    inst.start()
