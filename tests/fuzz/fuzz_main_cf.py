"""Fuzz target: main.cf (estafeta/config/main_cf.py): parsing, $name expansion, typed
values, check(), and `estafeta config -e` editing (edit_main_cf).

Input: the text of a main.cf (UTF-8, surrogateescape, as MainConfig.load reads it).

Expected: ConfigError (always naming the file; the one error type of config code).
Bugs: any other exception (RecursionError, KeyError, ...); a value that check()
accepts but whose typed read then fails; and an edit that refuses a file parse()
accepts, or that leaves the edited parameter with another value or changes any
other parameter.
"""
from __future__ import annotations

import os
import zlib

import atheris

from fuzzlib import Invariant, check, main, scratch, text

with atheris.instrument_imports(include=["estafeta"]):
    from estafeta.config.main_cf import MainConfig, check as check_cfg, edit_main_cf
    from estafeta.config.params import PARAMS
    from estafeta.core.errors import ConfigError

TMP = scratch("main-cf")
PATH = os.path.join(TMP, "main.cf")
NAMES = sorted(PARAMS)


def one_input(data: bytes) -> None:
    src = text(data)
    try:
        cfg = MainConfig.parse(src, PATH)
    except ConfigError:
        return
    # check() reads all ~200 parameters (10-40 ms here): on one input in 8 (chosen by
    # content, so a crash replays); the others read only what the file sets.
    try:
        if zlib.crc32(data) % 8 == 0:
            warnings = check_cfg(cfg)
            check(all(isinstance(w, str) for w in warnings), "check() warnings")
            for name in cfg.changed():
                if name in PARAMS:
                    cfg.value(name)            # check() passed: every typed read must work
        else:
            for name in cfg.changed():
                cfg.value(name) if name in PARAMS else cfg.get(name)
    except ConfigError:
        pass
    for name in list(cfg.changed())[:3]:
        try:
            cfg.get(name)
            cfg.expand(cfg.raw(name) or "")
        except ConfigError:
            pass
    # postconf -e on the same file: the edited name gets the value, nothing else changes.
    before = cfg.changed()
    name = next(iter(before), NAMES[len(data) % len(NAMES)])
    value = "edited.example $myhostname"
    with open(PATH, "w", encoding="utf-8", errors="surrogateescape") as f:
        f.write(src)
    try:
        edit_main_cf(PATH, {name: value, "fuzz_added_parameter": "1"})
    except ConfigError as e:
        raise Invariant(f"edit_main_cf refuses a file MainConfig.parse accepts: {e}") from None
    with open(PATH, encoding="utf-8", errors="surrogateescape") as f:
        after = MainConfig.parse(f.read(), PATH).changed()
    want = {**before, name: value, "fuzz_added_parameter": "1"}
    check(after == want, f"after editing {name}: {sorted(set(after.items()) ^ set(want.items()))!r}")


if __name__ == "__main__":
    main(one_input)
