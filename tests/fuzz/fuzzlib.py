"""What every atheris fuzz target in tests/fuzz/ shares (docs/RELIABILITY.md, "Coverage-guided fuzzing").

A target is a script `fuzz_NAME.py` that imports the estafeta modules it tests under
`atheris.instrument_imports(include=["estafeta"])` (so libFuzzer sees their branch
coverage), defines `one_input(data: bytes)` and ends with `main(one_input)`.

`one_input` catches exactly the errors its codec documents (ConfigError, ReplyError,
AddressError, ...): an expected rejection. Anything else escaping it is a bug, and so
is a violated invariant, raised here as `Invariant` (an explicit exception, not
`assert`, so that python -O cannot turn checks off). libFuzzer then stops, prints the
traceback and writes the input to `-artifact_prefix` as crash-SHA1; a unit running
longer than `-timeout` seconds is a hang (timeout-SHA1).

Run one: `python tests/fuzz/fuzz_NAME.py [libFuzzer flags] [CORPUS_DIR...]`, or replay
files: `python tests/fuzz/fuzz_NAME.py crash-...`. tests/fuzz/runner.py adds the
flags, the corpus and the merge step. Nothing here imports estafeta: the target's own
instrumented import must be the first.
"""
from __future__ import annotations

import glob
import os
import random
import shlex
import shutil
import sys
import tempfile
from typing import Callable, Iterator


class Invariant(Exception):
    """A property that must hold for every input was violated: a bug, not a rejection."""


def check(cond: object, message: str) -> None:
    if not cond:
        raise Invariant(message)


def splits(data: bytes, seed: int, *, max_piece: int = 64) -> Iterator[bytes]:
    """`data` cut into pieces of 1..max_piece bytes, the cuts chosen by `seed`
    (deterministic: the same input always gives the same pieces)."""
    rng = random.Random(seed)
    # Big inputs (a padded over-long line) in bigger pieces: the point is the
    # boundaries, and re-buffering 64 KB byte by byte would only slow the fuzzer.
    max_piece = max(max_piece, len(data) // 200)
    i = 0
    while i < len(data):
        n = rng.randint(1, max_piece)
        yield data[i:i + n]
        i += n


SHM = "/dev/shm" if os.path.isdir("/dev/shm") else None     # tmpfs: fsync costs nothing


def scratch(name: str) -> str:
    """A directory for the files a target writes: $FUZZ_SCRATCH/NAME-PID (runner.py
    passes one and removes it afterwards), else under /dev/shm/estafeta-fuzz-UID/. There
    the directories of processes that are gone are removed first: libFuzzer ends the
    process without running atexit."""
    base = os.environ.get("FUZZ_SCRATCH") or os.path.join(SHM or tempfile.gettempdir(),
                                                         f"estafeta-fuzz-{os.getuid()}")
    for old in glob.glob(os.path.join(base, f"{name}-*")):
        pid = old.rsplit("-", 1)[1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    d = os.path.join(base, f"{name}-{os.getpid()}")
    os.makedirs(d, exist_ok=True)
    return d


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def text(data: bytes) -> str:
    """Bytes as a configuration file reader sees them (utf-8, surrogateescape)."""
    return data.decode("utf-8", "surrogateescape")


def main(one_input: Callable[[bytes], None]) -> None:
    import atheris
    # libFuzzer runs argv[0] through the shell for -merge=1, -fork and -jobs: make it
    # "python script", not the bare script name (not executable, not on PATH).
    argv0 = f"{shlex.quote(sys.executable)} {shlex.quote(os.path.abspath(sys.argv[0]))}"
    atheris.Setup([argv0, *sys.argv[1:]], one_input)
    atheris.Fuzz()
