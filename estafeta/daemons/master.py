"""master: owns the listening sockets and the process tree (SPEC S10).

Reads main.cf and master.cf, binds every listener (so only the master ever needs
root for port 25), starts each service as its own process, restarts one that dies,
reloads on SIGHUP and stops gracefully on SIGTERM. Privileges: started as root it
stays root only to bind and supervise; each child drops to mail_owner itself
(skeleton.py) unless master.cf says unpriv=n. Started by an ordinary user,
everything runs as that user.

Processes per service. Our services are asyncio programs that serve many clients
each, so the master.cf maxproc column keeps Postfix's meaning of "how many clients
at once" rather than "how many processes": smtpd runs smtpd_worker_count processes
(default: one per core) sharing the listening socket, and maxproc sessions are
divided among them; qmgr and each delivery service run one process.
"""
from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field

from .. import __version__
from ..config.main_cf import MainConfig, check
from ..config.master_cf import ServiceEntry, load_master_cf
from ..core import maillog
from ..core.errors import ConfigError
from ..queue.store import QueueStore
from .skeleton import mail_owner_ids

DGRAM_COMMANDS = {"qmgr", "pickup"}       # services whose socket takes trigger datagrams


@dataclass
class Child:
    service: "Service"
    proc: object
    started: float
    slot: int = -1


@dataclass
class Service:
    entry: ServiceEntry
    sock: socket.socket | None
    nprocs: int
    args: list[str]
    children: list[Child] = field(default_factory=list)
    key: tuple = ()
    board: int = -1                     # smtpd: session_board fd
    on_demand: bool = False             # started when its socket has a client
    armed: bool = False
    free_slots: list[int] = field(default_factory=list)


def load_config(config_dir: str) -> tuple[MainConfig, list[ServiceEntry]]:
    cfg = MainConfig.load(os.path.join(config_dir, "main.cf"))
    check(cfg)
    from ..queue.scheduler import sort_key_fields
    try:
        sort_key_fields(cfg.get("queue_sort_order"))
    except ValueError as e:
        where = cfg.setting("queue_sort_order")
        raise ConfigError(where.path if where else "main.cf", where.line if where else 0, str(e)) from None
    path = os.path.join(config_dir, "master.cf")
    entries = load_master_cf(path, default_process_limit=cfg.get_int("default_process_limit"))
    check_services(entries, path)
    return cfg, entries


def socket_kind(entry: ServiceEntry) -> str:
    if entry.type == "unix" and entry.command in DGRAM_COMMANDS:
        return "unix-dgram"
    return entry.type


def unix_path(store: QueueStore, entry: ServiceEntry) -> str:
    return store.path("private" if entry.private else "public", entry.name)


def bind(entry: ServiceEntry, cfg: MainConfig, store: QueueStore, owner) -> socket.socket | None:
    kind = socket_kind(entry)
    if kind == "inet":
        host, port = entry.endpoint
        if host is None:
            ifaces = cfg.get_list("inet_interfaces")
            host = "" if not ifaces or ifaces == ["all"] else ifaces[0]
            host = "127.0.0.1" if host == "loopback-only" else host
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        port_n = inet_port(entry)
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port_n))
        except OSError as e:
            s.close()
            raise ConfigError("master.cf", entry.line, f"cannot bind {host or '*'}:{port_n}: {e.strerror}") from e
        s.listen(1024)
    elif kind in ("unix", "unix-dgram"):
        path = unix_path(store, entry)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM if kind == "unix-dgram" else socket.SOCK_STREAM)
        s.bind(path)
        if kind == "unix-dgram":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        else:
            s.listen(1024)
        os.chmod(path, 0o660 if entry.private else 0o666)
        if owner is not None:
            os.chown(path, *owner)
    else:
        return None
    os.set_inheritable(s.fileno(), True)
    return s


def inet_port(entry: ServiceEntry) -> int:
    port = entry.endpoint[1]
    if port.isascii() and port.isdigit():
        return int(port)
    try:
        return socket.getservbyname(port, "tcp")
    except OSError:
        raise ConfigError("master.cf", entry.line, f"unknown service port {port!r} for {entry.name}") from None


def check_services(entries: list[ServiceEntry], path: str) -> None:
    """What the parser cannot know: ports that resolve, commands that exist."""
    from .skeleton import KNOWN_COMMANDS
    for e in entries:
        try:
            if e.type == "inet":
                inet_port(e)
        except ConfigError as err:
            raise ConfigError(path, e.line, err.problem) from None
        if e.command not in KNOWN_COMMANDS:
            raise ConfigError(path, e.line, f"unknown command {e.command!r} (known: {', '.join(sorted(KNOWN_COMMANDS))})")
        if e.command == "pipe":             # flags= user= argv=...: wrong ones would defer all its mail
            from ..delivery.pipe import parse_attributes
            try:
                parse_attributes(e.args)
            except ConfigError as err:
                raise ConfigError(path, e.line, f"{e.name}: {err.problem}") from None


ALWAYS_RUNNING = frozenset({"qmgr", "pickup"})


def is_on_demand(entry: ServiceEntry) -> bool:
    """Stream unix services start when a client connects; listeners on the network,
    qmgr and pickup (whose sockets take trigger datagrams) always run."""
    return socket_kind(entry) == "unix" and entry.command not in ALWAYS_RUNNING


def process_count(entry: ServiceEntry, cfg: MainConfig) -> tuple[int, list[str]]:
    if entry.command == "smtpd":
        n = cfg.get_int("smtpd_worker_count") or os.cpu_count() or 1
        if entry.maxproc:
            n = min(n, entry.maxproc)
        return n, [str(entry.maxproc)]
    return 1, list(entry.args)


def session_board(nslots: int) -> int:
    """Shared memory where each smtpd worker keeps its session count (one int64 a
    worker). Every worker reads the sum, so maxproc bounds the service as a whole
    however unevenly the kernel hands connections to the workers."""
    fd = os.memfd_create("estafeta-sessions", os.MFD_CLOEXEC)
    os.ftruncate(fd, 8 * max(1, nslots))
    return fd


class Master:
    def __init__(self, config_dir: str) -> None:
        self.config_dir = os.path.abspath(config_dir)
        self.services: dict[tuple, Service] = {}
        self.stopping = False
        self.retiring: list[Child] = []

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        cfg, entries = load_config(self.config_dir)     # a bad config refuses to start
        self.cfg = cfg
        self.store = QueueStore(cfg.get("queue_directory"))
        self.owner = mail_owner_ids(cfg)
        self.store.create_dirs(self.owner)
        maillog.setup(f"{cfg.get('syslog_name')}/master", cfg.get("maillog_file"),
                      stderr=not cfg.get("maillog_file"), hostname=cfg.get("myhostname"))
        self.lock_pid_file()
        self.open_services(cfg, entries)
        self.write_pid()
        maillog.log.info(f"daemon started -- version {__version__}, configuration {self.config_dir}")

    def lock_pid_file(self) -> None:
        path = self.store.path("pid", "master.pid")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise SystemExit(f"estafeta: fatal: the mail system is already running (see {path})") from None
        self.pid_fd = fd
        self.pid_path = path

    def write_pid(self) -> None:
        """Only once every listener is bound: `estafeta start` takes the pid as 'up'."""
        os.ftruncate(self.pid_fd, 0)
        os.pwrite(self.pid_fd, f"{os.getpid():>10}\n".encode(), 0)

    def open_services(self, cfg: MainConfig, entries: list[ServiceEntry]) -> None:
        new: dict[tuple, Service] = {}
        for e in entries:
            key = (e.name, e.type)
            old = self.services.pop(key, None)
            same_socket = old is not None and old.entry.private == e.private and old.sock is not None
            sock = old.sock if same_socket else bind(e, cfg, self.store, self.owner)
            if old is not None and not same_socket and old.sock is not None:
                old.sock.close()
            n, args = process_count(e, cfg)
            svc = Service(e, sock, n, args, key=key, on_demand=is_on_demand(e))
            if e.command == "smtpd":
                svc.board = session_board(n)
                svc.free_slots = list(range(n))
            if old is not None and old.board >= 0:
                os.close(old.board)
            if old is not None:
                self.retiring.extend(old.children)
            new[key] = svc
        for old in self.services.values():        # services removed from master.cf
            self.retiring.extend(old.children)
            if old.sock is not None:
                old.sock.close()
        self.services = new
        for c in self.retiring:
            self.signal_child(c, signal.SIGTERM)
        for svc in self.services.values():
            if svc.on_demand:
                continue            # arm_all() watches its socket once the loop runs
            while len(svc.children) < svc.nprocs:
                self.spawn(svc)

    # -- services started on demand (Postfix's master does the same) ----------------------
    # A delivery agent, showq and the like cost a Python process each (~25 MB) and
    # most instances use few of them: the master watches their listening sockets and
    # starts the service when a client connects; the service exits after max_idle
    # seconds without work, and the master watches the socket again.

    def arm_all(self) -> None:
        for svc in self.services.values():
            if svc.on_demand and not svc.children:
                self.arm(svc)

    def arm(self, svc: Service) -> None:
        if self.stopping or svc.armed or svc.sock is None or svc.children:
            return
        if self.services.get(svc.key) is not svc:
            return          # replaced by a reload
        asyncio.get_running_loop().add_reader(svc.sock.fileno(), self.wake, svc.key)
        svc.armed = True

    def disarm(self, svc: Service) -> None:
        if svc.armed and svc.sock is not None:
            asyncio.get_running_loop().remove_reader(svc.sock.fileno())
        svc.armed = False

    def wake(self, key: tuple) -> None:
        svc = self.services.get(key)
        if svc is None:
            return
        self.disarm(svc)
        if not svc.children and not self.stopping:
            self.spawn(svc)

    def command_line(self, svc: Service, slot: int = -1) -> list[str]:
        e = svc.entry
        argv = [sys.executable, "-m", "estafeta.daemons.run", "-c", self.config_dir,
                "-s", e.name, "-t", socket_kind(e), "--unpriv", "y" if e.unpriv else "n"]
        for k, v in e.overrides.items():
            argv += ["-o", f"{k}={v}"]
        if svc.sock is not None:
            argv += ["--fd", str(svc.sock.fileno())]
        if svc.on_demand:
            argv += ["--max-idle", str(self.cfg.get_duration("max_idle"))]
        args = list(svc.args)
        if svc.board >= 0:
            args += [str(svc.board), str(slot)]
        return argv + [e.command, "--", *args]      # skeleton.parse_args: args after "--"

    def spawn(self, svc: Service) -> None:
        import subprocess
        fds = (svc.sock.fileno(),) if svc.sock is not None else ()
        slot = -1
        if svc.board >= 0:
            fds += (svc.board,)
            slot = svc.free_slots.pop(0) if svc.free_slots else 0
        try:
            proc = subprocess.Popen(self.command_line(svc, slot), pass_fds=fds, stdin=subprocess.DEVNULL,
                                    close_fds=True)
        except OSError as e:
            maillog.log.error(f"cannot start service {svc.entry.name}: {e}")
            if slot >= 0:
                svc.free_slots.append(slot)
            return
        svc.children.append(Child(svc, proc, time.monotonic(), slot))

    def signal_child(self, c: Child, sig: int) -> None:
        try:
            c.proc.send_signal(sig)
        except ProcessLookupError:
            pass

    # -- events -------------------------------------------------------------------------

    def reap(self) -> None:
        for svc in list(self.services.values()):
            for c in list(svc.children):
                rc = c.proc.poll()
                if rc is None:
                    continue
                svc.children.remove(c)
                if c.slot >= 0:
                    svc.free_slots.append(c.slot)
                if self.stopping:
                    continue
                how = f"killed by signal {-rc}" if rc < 0 else f"exit status {rc}"
                if rc != 0:
                    maillog.log.warning(f"process {svc.entry.command} pid {c.proc.pid} {how}")
                quick = time.monotonic() - c.started < 2.0 and rc > 0
                if quick:
                    # A service that fails at start would only fail again: throttle it.
                    delay = min(self.cfg.get_duration("service_throttle_time"), 10.0)
                    maillog.log.warning(f"{svc.entry.command}: bad command startup -- throttling for {delay:g}s")
                    asyncio.get_running_loop().call_later(delay, self.respawn, svc.key)
                elif svc.on_demand:
                    self.arm(svc)       # idle exit or crash: the next client starts it again
                else:
                    self.spawn(svc)
        self.retiring = [c for c in self.retiring if c.proc.poll() is None]

    def respawn(self, key: tuple) -> None:
        svc = self.services.get(key)
        if svc is None or self.stopping:
            return
        if svc.on_demand:
            self.arm(svc)
            return
        while len(svc.children) < svc.nprocs:
            self.spawn(svc)

    def reload(self) -> None:
        try:
            cfg, entries = load_config(self.config_dir)
        except (ConfigError, SystemExit) as e:
            maillog.log.error(f"reload refused, configuration error: {e}; still running the old one")
            return
        self.cfg = cfg
        for svc in self.services.values():
            self.disarm(svc)
        try:
            self.open_services(cfg, entries)
        except ConfigError as e:
            maillog.log.error(f"reload: {e}")
            return
        finally:
            self.arm_all()
        maillog.log.info(f"reload -- version {__version__}, configuration {self.config_dir}")

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        loop.add_signal_handler(signal.SIGCHLD, self.reap)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        loop.add_signal_handler(signal.SIGTERM, done.set)
        loop.add_signal_handler(signal.SIGINT, done.set)
        self.arm_all()
        while not done.is_set():
            try:
                await asyncio.wait_for(done.wait(), timeout=1.0)
            except asyncio.TimeoutError:
                self.reap()       # a SIGCHLD can be merged with another: poll too
        await self.shutdown()

    async def shutdown(self) -> None:
        for svc in self.services.values():
            self.disarm(svc)
        self.stopping = True
        children = [c for s in self.services.values() for c in s.children] + self.retiring
        for c in children:
            self.signal_child(c, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(c.proc.poll() is None for c in children):
            await asyncio.sleep(0.05)
        for c in children:
            if c.proc.poll() is None:
                maillog.log.warning(f"process {c.service.entry.name} pid {c.proc.pid} did not stop "
                                    f"in 15 s: killed")
                self.signal_child(c, signal.SIGKILL)
                c.proc.wait()
        maillog.log.info("terminating on signal")
        try:
            os.unlink(self.pid_path)
        except OSError:
            pass


def run_master(config_dir: str) -> int:
    m = Master(config_dir)
    m.start()
    asyncio.run(m.run())
    return 0
