"""Expansion agrees with the real Postfix postconf (STYLE 11), when installed."""
from __future__ import annotations

import os
import subprocess

import pytest

from estafeta.config.main_cf import MainConfig

POSTCONF = "/usr/sbin/postconf"

pytestmark = pytest.mark.skipif(not os.access(POSTCONF, os.X_OK), reason="Postfix postconf not installed")

# User-defined parameters only, so Postfix's own defaults do not matter.
TRICKY = {
    "a": "1",
    "b": "$a$a",
    "c": "${a?yes}",
    "d": "${zz:no}",
    "e": "foo\n  bar\n  # comment inside\n\tbaz",
    "f": "${a?{x y}:{no}}",
    "g": "${zz?{x y}:{no}}",
    "h": "$$a",
    "i": "$(a)x",
    "j": "$zz-",
    "k": "${a:{z}}",
    "l": "$j$k",
    "m": "${a?$b$b}",
    "n": "${empty:was_empty}",
    "o": "${empty?{set}:{unset}}",
    "p": "${a?{ left}}|",
    "q": "${s?yes:no}",
    "s": "$zz",
    "t": "${a?${b}}.$(b)",
    "empty": "",
}


def test_expansion_matches_postconf(tmp_path: object) -> None:
    d = str(tmp_path)
    names = sorted(TRICKY)
    lines = [f"{n} = {v}" for n, v in TRICKY.items()]
    # postconf only prints user-defined parameters that something references.
    lines.append("refs = " + " ".join(f"${n}" for n in names))
    with open(os.path.join(d, "main.cf"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(d, "master.cf"), "w") as f:
        f.write("")
    cfg = MainConfig.load(os.path.join(d, "main.cf"))
    for name in names:
        proc = subprocess.run([POSTCONF, "-c", d, "-x", "-h", name], capture_output=True,
                              text=True, timeout=30, check=True)
        want = proc.stdout.rstrip("\n")
        got = cfg.get(name)
        # postconf -h folds runs of whitespace when printing; compare likewise.
        assert " ".join(got.split()) == " ".join(want.split()), f"{name}: got {got!r}, want {want!r}"
