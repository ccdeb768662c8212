"""Fuzz target: master.cf (estafeta/config/master_cf.py) and its -o overrides applied to
main.cf, as the master does for each service.

Input: the text of a master.cf (UTF-8, surrogateescape, as load_master_cf reads it).

Expected: ConfigError.
Bugs: any other exception; an entry with an empty name, command or field, a negative
process limit or wakeup time, a bad -o name, or an inet endpoint that cannot be
split; two entries with the same name and type (the parser promises to refuse them).
"""
from __future__ import annotations


import atheris

from fuzzlib import check, main, text

with atheris.instrument_imports(include=["estafeta"]):
    from estafeta.config.main_cf import NAME_RE, MainConfig
    from estafeta.config.master_cf import SERVICE_TYPES, parse_master_cf
    from estafeta.core.errors import ConfigError

BASE = MainConfig.parse("myhostname = mx.example\nmydomain = example\n")


def one_input(data: bytes) -> None:
    try:
        entries = parse_master_cf(text(data), "master.cf", default_process_limit=100)
    except ConfigError:
        return
    seen = set()
    for e in entries:
        check(e.name and e.command and e.type in SERVICE_TYPES, f"entry {e!r}")
        check(e.maxproc >= 0 and e.wakeup >= 0 and e.line >= 1, f"entry {e!r}")
        check((e.name, e.type) not in seen, f"duplicate service {e.name}/{e.type}")
        seen.add((e.name, e.type))
        check(all(NAME_RE.fullmatch(k) for k in e.overrides), f"override names {e.overrides}")
        check(all(a for a in e.args), f"empty argument in {e.args!r}")
        if e.type == "inet":
            host, port = e.endpoint
            check(port and (host is None or host), f"endpoint of {e.name!r}: {host!r}, {port!r}")
        try:
            cfg = BASE.overrides(e.overrides, path="master.cf", line=e.line)
            for name in e.overrides:
                cfg.get(name)
        except ConfigError:
            pass


if __name__ == "__main__":
    main(one_input)
