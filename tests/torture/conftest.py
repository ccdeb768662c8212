"""The torture suite's scale, its shared report and the table printed at the end.

TORTURE_SCALE (default 1) sizes every load, run time and fuzz budget: 1 is the short
version that runs with `make test`; `make torture` sets a larger one. Tests add their
counts to REPORT; hostile-input and fault tests carry a `klass("name")` marker and
their outcome becomes that class's pass/fail line. The table is printed once, at the
end of the session, and also written to $TORTURE_REPORT (JSON) when that is set.
"""
from __future__ import annotations

import json
import os

import pytest

from torture_support import CLASSES, REPORT, SCALE, distinct_inputs


def pytest_configure(config):
    config.addinivalue_line("markers", "klass(name): a hostile-input or fault class in the torture table")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    m = item.get_closest_marker("klass")
    if m is None:
        return
    name = m.args[0]
    if rep.when == "call" or (rep.when == "setup" and not rep.passed):
        if rep.skipped:
            CLASSES.setdefault(name, "skipped")
        elif rep.failed:
            CLASSES[name] = "FAIL"
        elif CLASSES.get(name) in (None, "skipped"):
            CLASSES[name] = "pass"


ROWS = ("messages accepted", "messages delivered", "lost", "duplicated", "crashes injected",
        "faults injected", "fuzz executions", "distinct inputs")


def table() -> str:
    REPORT["distinct inputs"] = distinct_inputs()
    w = max(len(r) for r in (*ROWS, *CLASSES)) + 2
    out = [f"estafeta torture report (TORTURE_SCALE={SCALE})", "-" * (w + 12)]
    out += [f"{r:<{w}}{REPORT.get(r, 0):>10}" for r in ROWS]
    out.append("-" * (w + 12))
    out += [f"{c:<{w}}{v:>10}" for c, v in sorted(CLASSES.items())]
    return "\n".join(out)


def pytest_terminal_summary(terminalreporter):
    if not REPORT and not CLASSES:
        return
    terminalreporter.write_line("")
    terminalreporter.write_line(table())
    path = os.environ.get("TORTURE_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump({"scale": SCALE, "counts": dict(REPORT), "classes": CLASSES}, f, indent=1)
