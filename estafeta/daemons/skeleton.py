"""What every estafeta service process does before it serves (Postfix's skeleton).

The master starts each service as `python -m estafeta.daemons.run ...` with its
listening socket inherited as a file descriptor. Here the child loads main.cf with
the master.cf `-o` overrides, opens the mail log, drops root for the mail owner
(unless master.cf says `unpriv = n`), dies with its master (PR_SET_PDEATHSIG), and
runs the service's coroutine on asyncio (uvloop when installed). SIGTERM asks for a
graceful stop: stop accepting, finish what is in hand, exit.
Next: master.py (who starts us), smtpd.py / qmgr.py / agent.py (what we run).
"""
from __future__ import annotations

import argparse
import asyncio
import cProfile
import ctypes
import os
import pwd
import signal
import socket
import sys
import time
from dataclasses import dataclass, field

from ..config.main_cf import MainConfig
from ..core import maillog
from ..queue.store import QueueStore


@dataclass
class ServiceContext:
    service: str
    type: str
    command: str
    config_dir: str
    cfg: MainConfig
    listen_socket: socket.socket | None
    store: QueueStore
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    busy: int = 0
    last_active: float = 0.0
    max_idle: float = 0.0
    args: list[str] = field(default_factory=list)


def mail_owner_ids(cfg: MainConfig) -> tuple[int, int] | None:
    """(uid, gid) of mail_owner when running as root, else None (stay who we are)."""
    if os.geteuid() != 0:
        return None
    name = cfg.get("mail_owner")
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        raise SystemExit(f"fatal: mail_owner {name!r} is not a user of this system; "
                         f"run 'estafeta init' as root to create it") from None
    return pw.pw_uid, pw.pw_gid


def drop_privileges(ids: tuple[int, int], name: str) -> None:
    uid, gid = ids
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    if os.geteuid() == 0 or os.getuid() == 0:
        raise SystemExit("fatal: could not drop root privileges")


def die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def install_loop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="estafeta-service")
    p.add_argument("-c", dest="config_dir", required=True)
    p.add_argument("-s", dest="service", required=True)
    p.add_argument("-t", dest="type", required=True)
    p.add_argument("-o", dest="overrides", action="append", default=[])
    p.add_argument("--fd", type=int, default=-1)
    p.add_argument("--unpriv", default="y")
    p.add_argument("--max-idle", type=float, default=0.0)
    p.add_argument("command")
    # The service's master.cf arguments come after a "--" (the master puts it there):
    # they are data, not our options, and may hold "-f" or "--" themselves (a pipe
    # argv=), which argparse would take for options or drop.
    if "--" in argv:
        i = argv.index("--")
        a = p.parse_args(argv[:i])
        a.args = argv[i + 1:]
        return a
    p.add_argument("args", nargs="*")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    a = parse_args(sys.argv[1:] if argv is None else argv)
    die_with_parent()
    overrides = dict(o.split("=", 1) for o in a.overrides)
    cfg = MainConfig.load(os.path.join(a.config_dir, "main.cf")).overrides(overrides)
    maillog.setup(f"{cfg.get('syslog_name')}/{a.command}", cfg.get("maillog_file"),
                  stderr=not cfg.get("maillog_file"), hostname=cfg.get("myhostname"))
    sock = None
    if a.fd >= 0:
        if a.type == "inet":
            sock = socket.socket(fileno=a.fd)
        elif a.type == "unix-dgram":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM, fileno=a.fd)
        else:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=a.fd)
        sock.setblocking(False)
    # Import everything the service will need while we can still read the whole
    # Python installation: after the drop it may live where the mail owner cannot
    # look (a root-only home, as pyenv under /root).
    module = _command_module(a.command)
    install_loop()
    import concurrent.futures.thread  # noqa: F401  (asyncio.to_thread's pool)
    ids = mail_owner_ids(cfg)
    if ids is not None and a.unpriv != "n":
        drop_privileges(ids, cfg.get("mail_owner"))
    store = QueueStore(cfg.get("queue_directory"))
    if not os.access(store.root, os.R_OK | os.X_OK):
        maillog.log.fatal(f"queue_directory {store.root}: permission denied for uid {os.getuid()}; "
                          f"every directory above it must be searchable by the mail owner")
        raise SystemExit(1)
    ctx = ServiceContext(a.service, a.type, a.command, a.config_dir, cfg, sock, store, args=a.args,
                         max_idle=a.max_idle)
    prof_dir = os.environ.get("ESTAFETA_PROFILE_DIR")   # developers: cProfile each service
    profiler = None
    if prof_dir:
        profiler = cProfile.Profile()
        profiler.enable()
    try:
        asyncio.run(_run(ctx, module))
    except KeyboardInterrupt:
        pass
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(os.path.join(prof_dir, f"{a.command}.{os.getpid()}.prof"))


KNOWN_COMMANDS = frozenset({"smtpd", "qmgr", "virtual", "smtp", "lmtp", "pickup", "showq", "local",
                            "pipe", "discard", "error"})


def _command_module(command: str):
    from importlib import import_module
    if command not in KNOWN_COMMANDS:
        raise SystemExit(f"fatal: unknown service command {command!r} (known: {', '.join(sorted(KNOWN_COMMANDS))})")
    return import_module(f"estafeta.daemons.{command}")


async def _idle_exit(ctx: ServiceContext) -> None:
    """An on-demand service leaves after max_idle seconds without a client (Postfix's
    max_idle); the master starts it again when one comes."""
    while not ctx.stopping.is_set():
        await asyncio.sleep(min(1.0, ctx.max_idle))
        if ctx.busy:
            ctx.last_active = time.monotonic()
        elif time.monotonic() - ctx.last_active >= ctx.max_idle:
            ctx.stopping.set()


# Blocking file work (fsync above all) runs in threads. ext4 and xfs merge concurrent
# fsyncs into one journal commit, so the more sessions wait at once, the more one disk
# flush serves: the pool must not be the bottleneck (asyncio's default is cpu+4).
IO_THREADS = int(os.environ.get("ESTAFETA_IO_THREADS", "64"))


async def _run(ctx: ServiceContext, module) -> None:
    from concurrent.futures import ThreadPoolExecutor
    ctx.stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    executor = ThreadPoolExecutor(max_workers=IO_THREADS, thread_name_prefix="io")
    loop.set_default_executor(executor)
    loop.add_signal_handler(signal.SIGTERM, ctx.stopping.set)
    loop.add_signal_handler(signal.SIGINT, ctx.stopping.set)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if ctx.max_idle > 0:
        ctx.last_active = time.monotonic()
        ctx.idle_task = loop.create_task(_idle_exit(ctx))
    try:
        await module.serve(ctx)
    except Exception:
        maillog.log.exception(f"{ctx.command}: unexpected error")
        raise SystemExit(1)
    await _leave(loop, executor)


# How long a stopping service waits for its own unfinished work (a delivery in
# progress, a DNS query or an fsync in an I/O thread) before it leaves anyway. Leaving
# then is as safe as a kill -9, which every queue operation survives (docs/RELIABILITY.md):
# what was not acknowledged or marked done is redone after the next start. Postfix's
# services simply die on SIGTERM; the master gives its children 15 s.
STOP_WAIT = 2.0


async def _leave(loop, executor) -> None:
    me = asyncio.current_task()
    rest = [t for t in asyncio.all_tasks() if t is not me]
    for t in rest:
        t.cancel()
    deadline = loop.time() + STOP_WAIT
    if rest:
        await asyncio.wait(rest, timeout=STOP_WAIT)
    # Threads still blocked (a DNS query to a dead server...) would hold the exit:
    # asyncio.run and the interpreter both join the executor's threads.
    executor.shutdown(wait=False, cancel_futures=True)
    while any(t.is_alive() for t in list(executor._threads)):
        if loop.time() >= deadline:
            import logging
            logging.shutdown()
            os._exit(0)
        await asyncio.sleep(0.05)
