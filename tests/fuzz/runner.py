"""Run the atheris fuzz targets of tests/fuzz/ (docs/RELIABILITY.md, "Coverage-guided fuzzing").

    .venv/bin/python tests/fuzz/runner.py                     # every target, 60 s each
    .venv/bin/python tests/fuzz/runner.py -t 1800 smtp_server # one target, half an hour
    .venv/bin/python tests/fuzz/runner.py -t 600 --merge      # and keep what it found
    .venv/bin/python tests/fuzz/runner.py smtp_server -- -only_ascii=1   # libFuzzer flags after --

Each target runs in its own process (libFuzzer owns it), reads the committed corpus
tests/fuzz/corpus/TARGET/ and writes what it finds to a work directory (--workdir, else
a temporary one, removed unless something failed), never into the repository. --merge
then adds to the corpus, with libFuzzer's -set_cover_merge=1, only the finds that reach
code the corpus does not. A crash stops the target; its input is kept as crash-SHA1 in
the work directory and printed in base64 with the traceback.
test_atheris.py (tests/torture/) runs the same function with a fixed time budget.
"""
from __future__ import annotations

import argparse
import base64
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")
TARGETS = sorted(f[len("fuzz_"):-3] for f in os.listdir(HERE) if f.startswith("fuzz_") and f.endswith(".py"))
# Per-input limits: a unit over TIMEOUT seconds is a hang; over RSS_MB a memory bug.
TIMEOUT, RSS_MB = 10, 2048
SHM = "/dev/shm" if os.path.isdir("/dev/shm") else None


@dataclass
class Result:
    target: str
    seconds: int
    returncode: int = 0
    executions: int = 0
    coverage: int = 0            # libFuzzer "cov": instrumented edges reached
    features: int = 0            # "ft"
    corpus: int = 0              # "corp": units in the corpus at the end (seeds and finds)
    new_units: int = 0
    exec_per_sec: int = 0
    crash: str = ""              # "crash", "timeout", "oom", "leak" ...: the kind of artifact
    artifact: str = ""           # its path
    output: str = ""
    finds: str = ""              # directory with the new units
    extra: dict = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return bool(self.crash) or self.returncode != 0

    def report(self) -> str:
        """What a failing run has to say: the error, the input in base64, how to replay it."""
        start = self.output.find("=== ")
        text = self.output[start:] if start >= 0 else self.output[-4000:]
        text = re.sub(r"\n(0x[0-9a-f]{1,2},)+\n", "\n", text)      # the input as hex; base64 follows
        lines = [f"atheris target {self.target}: {self.crash or 'exit status %d' % self.returncode}", text[:6000]]
        if self.artifact and os.path.exists(self.artifact):
            data = open(self.artifact, "rb").read()
            lines += [f"input ({len(data)} bytes, base64): {base64.b64encode(data).decode()}",
                      f"replay: .venv/bin/python tests/fuzz/fuzz_{self.target}.py {self.artifact}",
                      "(once fixed, copy it to tests/fuzz/corpus/%s/find-NAME as a regression input)" % self.target]
        return "\n".join(lines)


def command(target: str, seconds: int, finds: str, artifacts: str, *, seed: int | None = None,
            extra: tuple[str, ...] = ()) -> list[str]:
    # libFuzzer stops once more than max_total_time whole seconds have passed: N-1 runs N.
    argv = [sys.executable, os.path.join(HERE, f"fuzz_{target}.py"), f"-max_total_time={max(1, seconds - 1)}",
            "-print_final_stats=1", f"-timeout={TIMEOUT}", f"-rss_limit_mb={RSS_MB}",
            f"-artifact_prefix={artifacts.rstrip('/')}/", *extra]
    if seed is not None:
        argv.append(f"-seed={seed}")
    return argv + [finds, os.path.join(CORPUS, target)]


def parse(output: str, r: Result) -> Result:
    for key, attr in (("number_of_executed_units", "executions"), ("average_exec_per_sec", "exec_per_sec"),
                      ("new_units_added", "new_units")):
        m = re.search(rf"stat::{key}:\s+(\d+)", output)
        if m:
            setattr(r, attr, int(m.group(1)))
    status = re.findall(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)/", output, re.M)
    if status:
        last = status[-1]
        r.coverage, r.features, r.corpus = int(last[1]), int(last[2]), int(last[3])
        r.executions = max(r.executions, int(last[0]))
    m = re.search(r"Test unit written to (\S+)", output)
    if m:
        r.artifact = m.group(1)
        r.crash = os.path.basename(r.artifact).split("-", 1)[0]
    elif re.search(r"ERROR: libFuzzer|Uncaught Python exception", output):
        r.crash = "crash"
    return r


def run(target: str, seconds: int, workdir: str, *, seed: int | None = None, extra: tuple[str, ...] = (),
        timeout: float | None = None) -> Result:
    """Fuzz one target for `seconds`; new units go to workdir/TARGET/, artifacts to workdir."""
    finds = os.path.join(workdir, target)
    os.makedirs(finds, exist_ok=True)
    argv = command(target, seconds, finds, workdir, seed=seed, extra=extra)
    scratch = tempfile.mkdtemp(prefix="estafeta-fuzz-", dir=SHM)      # the target's own files
    env = dict(os.environ, PYTHONHASHSEED="0", FUZZ_SCRATCH=scratch)
    try:
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           env=env, timeout=timeout or seconds + 120, cwd=HERE)
        out, rc = p.stdout.decode("utf-8", "replace"), p.returncode
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode("utf-8", "replace") + "\n=== the fuzzer did not stop in time ===\n"
        rc = -1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    r = parse(out, Result(target, seconds, returncode=rc, output=out, finds=finds))
    if rc == -1:
        r.crash = r.crash or "hang"
    return r


def merge(target: str, finds: str) -> int:
    """Add to the committed corpus the units of `finds` that reach code (edges) it does
    not; returns how many. Edges only (-use_counters=0) and a greedy set cover keep the
    corpus small: a few dozen files a target, where hit-count features would keep
    hundreds; the fuzzer finds those again in seconds."""
    corpus = os.path.join(CORPUS, target)
    before = set(os.listdir(corpus))
    with tempfile.TemporaryDirectory(dir=SHM) as tmp:
        subprocess.run([sys.executable, os.path.join(HERE, f"fuzz_{target}.py"), "-set_cover_merge=1",
                        "-use_counters=0", f"-merge_control_file={tmp}/control", f"-timeout={TIMEOUT}",
                        corpus, finds],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=True, cwd=HERE, env=dict(os.environ, FUZZ_SCRATCH=tmp))
    return len(set(os.listdir(corpus)) - before)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("targets", nargs="*", help=f"default: all of {', '.join(TARGETS)}")
    ap.add_argument("-t", "--seconds", type=int, default=60, help="per target (default 60)")
    ap.add_argument("--merge", action="store_true", help="add the new coverage to tests/fuzz/corpus/")
    ap.add_argument("--workdir", help="keep finds and crashes here (default: a temporary directory)")
    ap.add_argument("--seed", type=int, help="libFuzzer -seed (default: random)")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args, extra = ap.parse_args(argv[:cut]), argv[cut + 1:]     # after "--": libFuzzer flags
    bad = [t for t in args.targets if t not in TARGETS]
    if bad:
        ap.error(f"unknown target {bad[0]!r}; targets: {', '.join(TARGETS)}")
    workdir = args.workdir or tempfile.mkdtemp(prefix="estafeta-fuzz-")
    failed = 0
    print(f"{'target':<13}{'executions':>12}{'exec/s':>8}{'cov':>6}{'ft':>7}{'corpus':>8}{'new':>6}{'merged':>8}")
    for t in args.targets or TARGETS:
        r = run(t, args.seconds, workdir, seed=args.seed, extra=tuple(extra))
        merged = merge(t, r.finds) if args.merge and not r.failed else 0
        print(f"{t:<13}{r.executions:>12}{r.exec_per_sec:>8}{r.coverage:>6}{r.features:>7}{r.corpus:>8}"
              f"{r.new_units:>6}{merged:>8}", flush=True)
        if r.failed:
            failed += 1
            print(r.report(), file=sys.stderr)
    if args.workdir or failed:
        print(f"finds and artifacts: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
