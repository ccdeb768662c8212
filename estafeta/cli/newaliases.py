"""newaliases (also `estafeta newaliases` and `sendmail -bi`): rebuild the alias index.

Builds the index of every `hash:` table named in alias_database, as Postfix's
newaliases(1) does, from the aliases(5) source next to it. Other table types are
read as they are and need no index. Exit codes from sysexits.h: 78 (EX_CONFIG)
for a bad source file, 73 (EX_CANTCREAT) when the index cannot be written.
Next: tables/aliases.py (the format), tables/hash.py (the index).
"""
from __future__ import annotations

import argparse
import os
import sys

from ..core.errors import ConfigError

EX_CANTCREAT, EX_CONFIG = 73, 78


def rebuild(cfg) -> list[tuple[str, int]]:
    """Build every hash: table of alias_database; [(spec, entries)]."""
    from ..tables import split_table_list
    from ..tables.aliases import build_database
    done = []
    for spec in split_table_list(cfg.get("alias_database")):
        if ":" not in spec:         # a bare file name: default_database_type, as Postfix
            spec = f"{cfg.get('default_database_type').strip()}:{spec}"
        n = build_database(spec)
        if n >= 0:
            done.append((spec, n))
    return done


def main(argv: list[str] | None = None) -> int:
    """Console script `newaliases`; sendmail -bi calls this with the -C/-c directory."""
    p = argparse.ArgumentParser(prog="newaliases", description="rebuild the alias database")
    p.add_argument("-c", "-C", dest="config", metavar="DIR",
                   help="configuration directory (else $ESTAFETA_CONFIG, /etc/estafeta)")
    p.add_argument("-v", action="store_true", help="say what was built")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    from ..config.main_cf import MainConfig
    cdir = os.path.abspath(args.config or os.environ.get("ESTAFETA_CONFIG") or "/etc/estafeta")
    try:
        cfg = MainConfig.load(os.path.join(cdir, "main.cf"))
        for spec, n in rebuild(cfg):
            if args.v:
                print(f"newaliases: {spec}: {n} aliases")
    except ConfigError as e:
        print(f"newaliases: fatal: {e}", file=sys.stderr)
        return EX_CONFIG
    except OSError as e:
        print(f"newaliases: fatal: {e.filename or ''}: {e.strerror}", file=sys.stderr)
        return EX_CANTCREAT
    return 0


if __name__ == "__main__":
    sys.exit(main())
