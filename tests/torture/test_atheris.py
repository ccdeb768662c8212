"""Coverage-guided fuzzing (atheris/libFuzzer) of every sans-IO codec and parser, for a
fixed time per target (docs/RELIABILITY.md, "Coverage-guided fuzzing").

Each target in tests/fuzz/ runs in its own process (libFuzzer owns it) for FUZZ_SECONDS
(default 3 x TORTURE_SCALE: about 40 s for all targets at scale 1, in `make test`),
starting from the committed corpus tests/fuzz/corpus/TARGET/, which it replays first:
every input that once crashed a target is in there, so this is also their regression
test. New units go to a temporary directory, never into the repository. At scale 1
libFuzzer's seed is fixed (-seed=1), as the hypothesis tests are derandomized there.

A crash, a hang (-timeout), an out-of-memory or a libFuzzer error fails the test with
the traceback and the input in base64. Executions count as "fuzz executions" in the
torture table, corpus units (seeds plus new finds) as "distinct inputs".
"""
from __future__ import annotations

import os
import sys

import pytest

from torture_support import SCALE, corpus_units, count

pytest.importorskip("atheris", reason="atheris is not installed (pip install -e '.[test]')")

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fuzz"))
import runner  # noqa: E402  (tests/fuzz/runner.py)

SECONDS = int(os.environ.get("FUZZ_SECONDS", 3 * SCALE))


def _listing(target: str) -> list[tuple[str, int]]:
    d = os.path.join(runner.CORPUS, target)
    return sorted((n, os.path.getsize(os.path.join(d, n))) for n in os.listdir(d))


@pytest.mark.timeout(SECONDS + 180)
@pytest.mark.parametrize("target", [
    pytest.param(t, marks=pytest.mark.klass(f"hostile: coverage-guided fuzzing (atheris) of {t}"))
    for t in runner.TARGETS])
def test_atheris(target, tmp_path):
    before = _listing(target)
    r = runner.run(target, SECONDS, str(tmp_path), seed=1 if SCALE == 1 else None, timeout=SECONDS + 120)
    count("fuzz executions", r.executions)
    corpus_units(r.corpus)
    print(f"\natheris {target}: {r.executions} executions in {SECONDS} s, cov {r.coverage}, ft {r.features}, "
          f"corpus {r.corpus} ({r.new_units} new)")
    if r.failed:
        pytest.fail(r.report(), pytrace=False)
    assert _listing(target) == before, "the fuzzer changed the committed corpus"
    assert r.executions > 0 and r.corpus > 0, f"libFuzzer ran nothing:\n{r.output[-3000:]}"
