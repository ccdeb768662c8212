"""The `estafeta` command: instance setup, daemon control and configuration.

    estafeta [-c DIR] init [DIR]            write a working instance (SPEC S13)
    estafeta [-c DIR] start [--foreground]  start the master (checks the config first)
    estafeta [-c DIR] stop | reload | status | check
    estafeta [-c DIR] config [-n|-d|-x|-h] [-e NAME=VALUE ...] [NAME ...]   (postconf)
    estafeta [-c DIR] map [-q KEY | -s] type:name        build or query a table (postmap)
    estafeta [-c DIR] newaliases                          rebuild alias_database
    estafeta [-c DIR] queue list|flush|delete|hold|release|requeue|show   (cli/queue_admin.py)
    estafeta [-c DIR] sendmail [sendmail flags]           (cli/sendmail.py)

The configuration directory is -c DIR, else $ESTAFETA_CONFIG (as Postfix's
MAIL_CONFIG), else /etc/estafeta. Exit codes follow sysexits.h where one fits.
"""
from __future__ import annotations

import argparse
import os
import pwd
import signal
import subprocess
import sys
import time

from ..core.errors import ConfigError

EX_USAGE, EX_UNAVAILABLE, EX_SOFTWARE, EX_CONFIG, EX_TEMPFAIL = 64, 69, 70, 78, 75
DEFAULT_CONFIG = "/etc/estafeta"


def config_dir(args) -> str:
    return os.path.abspath(args.config or os.environ.get("ESTAFETA_CONFIG") or DEFAULT_CONFIG)


def err(msg: str) -> None:
    print(f"estafeta: {msg}", file=sys.stderr)


def load(cdir: str):
    from ..config.main_cf import MainConfig
    return MainConfig.load(os.path.join(cdir, "main.cf"))


def read_pid(cdir: str) -> int | None:
    cfg = load(cdir)
    path = os.path.join(cfg.get("queue_directory"), "pid", "master.pid")
    try:
        with open(path) as f:
            pid = int(f.read().strip() or 0)
    except (OSError, ValueError):
        return None
    if pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return pid


# -- commands -------------------------------------------------------------------------

def cmd_init(args) -> int:
    from ..config import defaults
    from ..queue.store import QueueStore
    target = os.path.abspath(args.dir or config_dir(args))
    os.makedirs(target, exist_ok=True)
    wrote = []
    for name, text in (("main.cf", defaults.default_main_cf(target)),
                       ("master.cf", defaults.default_master_cf()),
                       ("vmailbox", defaults.default_vmailbox())):
        p = os.path.join(target, name)
        if not os.path.exists(p):
            with open(p, "w") as f:
                f.write(text)
            wrote.append(name)
    cfg = load(target)
    owner = None
    if os.geteuid() == 0:
        owner = ensure_mail_owner(cfg.get("mail_owner"))
    QueueStore(cfg.get("queue_directory")).create_dirs(owner)
    for param in ("data_directory", "virtual_mailbox_base"):
        d = cfg.get(param)
        if d:
            os.makedirs(d, exist_ok=True)
            if owner:
                os.chown(d, *owner)
    logf = cfg.get("maillog_file")
    if logf:
        os.makedirs(os.path.dirname(logf), exist_ok=True)
        if owner:
            open(logf, "a").close()
            os.chown(logf, *owner)
            os.chown(os.path.dirname(logf), *owner)
    print(f"estafeta: instance in {target}" + (f" (wrote {', '.join(wrote)})" if wrote else " (already there)"))
    return 0


def ensure_mail_owner(name: str) -> tuple[int, int]:
    """As root, create the unprivileged mail owner if missing (as Postfix's package does)."""
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--user-group", "--no-create-home",
                        "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name], check=True)
        pw = pwd.getpwnam(name)
        print(f"estafeta: created system user {name}")
    return pw.pw_uid, pw.pw_gid


def cmd_check(args) -> int:
    """main.cf and master.cf, then every table the daemons open and the transports
    main.cf names (config/table_check.py). Warnings are printed; the first error found
    before the tables, or the last of the table errors (the others printed as
    "error:"), is raised as ConfigError: start and reload refuse on it."""
    # Imported here as every command of this file does: `estafeta status` need not
    # load the table and policy modules. The check never runs after a privilege drop.
    from ..config.table_check import check_tables_and_transports
    from ..config.main_cf import check
    from ..core.resolve import Resolver
    from ..daemons.master import load_config
    cdir = config_dir(args)
    cfg = load(cdir)
    for w in check(cfg):
        print(f"estafeta: warning: {w}", file=sys.stderr)
    _cfg, entries = load_config(cdir)
    resolver = Resolver(cfg)    # the routing tables: their errors are fatal, as before
    report = check_tables_and_transports(cfg, entries, os.path.join(cdir, "master.cf"), resolver)
    for w in report.warnings:
        print(f"estafeta: warning: {w}", file=sys.stderr)
    for e in report.errors[:-1]:
        print(f"estafeta: error: {e}", file=sys.stderr)
    if report.errors:
        raise report.errors[-1]
    return 0


def cmd_start(args) -> int:
    cdir = config_dir(args)
    cmd_check(args)
    if read_pid(cdir):
        err("fatal: the mail system is already running")
        return 1
    if args.foreground:
        from ..daemons.master import run_master
        return run_master(cdir)
    cfg = load(cdir)
    out = os.path.join(cfg.get("data_directory") or cfg.get("queue_directory"), "master.out")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "ab") as o:
        proc = subprocess.Popen([sys.executable, "-m", "estafeta.cli.main", "-c", cdir, "start", "--foreground"],
                                stdin=subprocess.DEVNULL, stdout=o, stderr=o, start_new_session=True)
    for _ in range(200):
        if read_pid(cdir) == proc.pid:
            print(f"estafeta: starting the mail system (master pid {proc.pid})")
            return 0
        if proc.poll() is not None:
            err(f"fatal: the master exited with status {proc.returncode}; see {out}")
            return 1
        time.sleep(0.05)
    err("fatal: the master did not start in 10 seconds")
    return 1


def cmd_stop(args) -> int:
    cdir = config_dir(args)
    pid = read_pid(cdir)
    if not pid:
        err("fatal: the mail system is not running")
        return 1
    os.kill(pid, signal.SIGTERM)
    for _ in range(600):
        if read_pid(cdir) != pid:
            print("estafeta: stopping the mail system")
            return 0
        time.sleep(0.05)
    err(f"fatal: master pid {pid} did not stop in 30 seconds")
    return 1


def cmd_reload(args) -> int:
    cdir = config_dir(args)
    cmd_check(args)
    pid = read_pid(cdir)
    if not pid:
        err("fatal: the mail system is not running")
        return 1
    os.kill(pid, signal.SIGHUP)
    print("estafeta: refreshing the mail system")
    return 0


def cmd_status(args) -> int:
    pid = read_pid(config_dir(args))
    if pid:
        print(f"estafeta: the mail system is running: PID: {pid}")
        return 0
    print("estafeta: the mail system is not running")
    return 1


def cmd_config(args) -> int:
    from ..config import postconf
    cdir = config_dir(args)
    path = os.path.join(cdir, "main.cf")
    if args.edit:
        print(postconf.edit(path, args.names), end="")
        return 0
    cfg = load(cdir)
    warnings: list[str] = []
    out = postconf.show(cfg, args.names or None, changed_only=args.n, defaults=args.d,
                        expand=args.x, values_only=args.h, warnings=warnings)
    sys.stdout.write(out)
    for w in warnings:
        print(w, file=sys.stderr)
    return 0


# -- tables: map (postmap) and newaliases ---------------------------------------------

def default_database_type(args) -> str:
    """The type of a table named without one (postmap, newaliases): main.cf's
    default_database_type; its default when there is no main.cf yet."""
    path = os.path.join(config_dir(args), "main.cf")
    if not os.path.exists(path):
        from ..config.params import PARAMS
        return PARAMS["default_database_type"].default
    return load(config_dir(args)).get("default_database_type").strip()


def cmd_map(args) -> int:
    """postmap: build TYPE:NAME's index from its source, or query it with -q / dump with -s."""
    from ..tables import open_table
    spec = args.table if ":" in args.table else f"{default_database_type(args)}:{args.table}"
    kind, _, path = spec.partition(":")
    if kind == "proxy":
        refusal = proxy_map_refusal(args, spec, build=args.query is None and not args.dump)
        if refusal:
            err(f"fatal: {refusal}")
            return EX_CONFIG
    if args.query is not None or args.dump:
        from ..tables import TableTempError
        table = open_table(spec)
        for w in getattr(table, "warnings", []):
            err(f"warning: {w}")
        try:
            if args.dump:
                items = getattr(table, "items", None)
                if items is None:
                    err(f"fatal: table {spec}: a {kind} table cannot be listed; query it with -q")
                    return 1
                for k, v in items():
                    print(f"{k}\t{v}")
                return 0
            keys = sys.stdin.read().split("\n") if args.query == "-" else [args.query]
            found = False
            for key in keys:
                if args.query == "-" and not key.strip():
                    continue
                value = table.lookup(key.split()[0] if args.query == "-" else key)
                if value is not None:
                    found = True
                    print(f"{key.split()[0]}\t{value}" if args.query == "-" else value)
        except TableTempError as e:
            err(f"fatal: table {spec}: lookup error: {e.reason}")
            return EX_TEMPFAIL
        return 0 if found else 1
    if kind != "hash":
        # Nothing to build: open the table, which checks its syntax (file, line).
        table = open_table(spec)
        for w in getattr(table, "warnings", []):
            err(f"warning: {w}")
        return 0
    from ..tables import hash as hash_table
    hash_table.build(path, hash_table.source_pairs(path))
    return 0


def proxy_map_refusal(args, spec: str, build: bool) -> str | None:
    """Why `estafeta map` refuses a proxy: table, as Postfix's postmap does through
    proxymap(8): no index is built through proxy: (proxymap is read only here, there
    is no proxywrite), and a query needs the table approved by main.cf's
    proxy_read_maps (its default when there is no main.cf)."""
    from ..config.main_cf import MainConfig
    from ..tables import proxied_name, proxy_read_approved, unapproved_proxy_reads
    inner = proxied_name(spec) or ""
    if build:
        return f"{spec}: cannot build a table through proxy: (read only); build {inner}"
    path = os.path.join(config_dir(args), "main.cf")
    cfg = load(config_dir(args)) if os.path.exists(path) else MainConfig(path=path)
    refused = unapproved_proxy_reads(spec, proxy_read_approved(cfg.get("proxy_read_maps")))
    return f"proxymap service is not configured for table \"{inner}\" ({refused[0]})" if refused else None


def cmd_newaliases(args) -> int:
    from .newaliases import main as newaliases_main
    return newaliases_main(["-c", config_dir(args)])


def add_table_commands(sub) -> None:
    s = sub.add_parser("map", help="build or query a lookup table (like postmap)")
    s.add_argument("-q", dest="query", metavar="KEY", help="print the value of KEY (exit 1 when not found)")
    s.add_argument("-s", dest="dump", action="store_true", help="print every entry")
    s.add_argument("table", metavar="type:name")
    s.set_defaults(func=cmd_map)
    sub.add_parser("newaliases", help="rebuild the alias database").set_defaults(func=cmd_newaliases)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="estafeta", description="estafeta mail transfer agent")
    p.add_argument("-c", dest="config", metavar="DIR", help="configuration directory (else $ESTAFETA_CONFIG, /etc/estafeta)")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("init", help="write a working instance into DIR")
    s.add_argument("dir", nargs="?")
    s.set_defaults(func=cmd_init)
    s = sub.add_parser("start", help="start the mail system")
    s.add_argument("--foreground", action="store_true", help="run the master in this process")
    s.set_defaults(func=cmd_start)
    for name, f, h in (("stop", cmd_stop, "stop the mail system"), ("reload", cmd_reload, "reread the configuration"),
                       ("status", cmd_status, "is the mail system running?"), ("check", cmd_check, "check the configuration")):
        sub.add_parser(name, help=h).set_defaults(func=f)
    s = sub.add_parser("config", help="show or edit parameters (like postconf)", add_help=False)
    s.add_argument("--help", action="help", help="show this help")
    s.add_argument("-n", action="store_true", help="only parameters set in main.cf")
    s.add_argument("-d", action="store_true", help="defaults")
    s.add_argument("-x", action="store_true", help="expand $name")
    s.add_argument("-h", action="store_true", help="values only")
    s.add_argument("-e", dest="edit", action="store_true", help="edit main.cf: NAME=VALUE ...")
    s.add_argument("names", nargs="*")
    s.set_defaults(func=cmd_config)
    add_table_commands(sub)
    from .queue_admin import add_commands as add_queue_commands
    add_queue_commands(sub, config_dir)        # estafeta queue ..., estafeta sendmail ...
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    # -h belongs to `config` (postconf -h); keep --help for help.
    args = p.parse_args(argv)
    try:
        return args.func(args) or 0
    except ConfigError as e:
        err(f"fatal: {e}")
        return EX_CONFIG
    except FileNotFoundError as e:
        err(f"fatal: {e.filename}: {e.strerror}")
        return EX_CONFIG
    except KeyboardInterrupt:
        return 1


if __name__ == "__main__":
    sys.exit(main())
