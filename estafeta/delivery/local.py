"""local: delivery to the users of this system (SPEC S5, Postfix local(8) semantics).

For each recipient in a local domain, in order:
  1. alias_maps (aliases(5)): the local part (user+ext, then user) expands into
     addresses, /files, |commands and :include: files, recursively. An alias
     that names itself ("user: user, other") means the user's own mailbox. When
     `owner-name` exists it becomes the envelope sender of the expansion (with
     expand_owner_alias = yes: what owner-name expands to, when that is one address).
  2. the user's .forward (forward_path, $name-expanded per recipient by local_expand,
     each value censored with forward_expansion_filter), read with the user's rights.
  3. the mailbox: with a command for the user in mailbox_command_maps (keyed by the
     bare user name), or else mailbox_command, that command, run through the shell as
     the user (default_privs for root) with the message on stdin, as Postfix's
     local(8) does; otherwise mail_spool_directory/USER in mbox format (mode 0600
     owned by the user), or home_mailbox under the home directory ("Maildir/" with
     a trailing slash: Maildir). delivery/mailbox.py writes both (locks, From_
     line and quoting); mailbox_size_limit bounds the mbox file, or each Maildir
     message file: 5.2.2 "File too large". It is also the file size limit
     (RLIMIT_FSIZE) of every command, as in Postfix.
     Before all of that, mailbox_transport_maps (keyed by the bare user name) or
     mailbox_transport hands the recipient, found in the password database or not,
     to another agent (Postfix's deliver_pass, delivery/passalong.py): e.g. Dovecot
     over LMTP. That agent's answer is this recipient's result.
  4. a recipient not in the password database goes to fallback_transport_maps or
     fallback_transport the same way; without them it bounces 5.1.1.
Commands (|command in an expansion, mailbox_command) get Postfix's environment:
HOME, SHELL, USER and LOGNAME (the bare recipient name), SENDER, RECIPIENT (the
queued recipient), LOCAL, DOMAIN, EXTENSION, ORIGINAL_RECIPIENT, CLIENT_HOSTNAME,
CLIENT_ADDRESS, CLIENT_HELO, CLIENT_PROTOCOL, SASL_METHOD, SASL_SENDER,
SASL_USERNAME (all but USER, LOGNAME, SENDER, RECIPIENT and LOCAL only when not
empty), every character not in command_expansion_filter replaced by "_"; besides
them PATH (/usr/bin:/bin) and export_environment.
mailbox_command is not $name-expanded (postconf(5): "$EXTENSION" is for the shell).
Commands run in the queue directory (local(8): "The current working directory is
the mail queue directory"), or in command_execution_directory, expanded as
forward_path (censored with execution_directory_expansion_filter) and entered with
the command's rights; when that fails the delivery is deferred.
How a command's end is read (exit status, signal, time limit, "D.S.N text" output)
is delivery/command.py, shared with the pipe agent.
Addresses of other domains or transports in an expansion are forwarded: a new
queue file (with Delivered-To:) is written for qmgr, "forwarded as ID".

One copy per final destination and request: the seed's `usuarios: xavier,pepe,
juan` gives each user one copy, however many paths lead there. A Delivered-To:
for an address on the way, or a name met again among its own ancestors, is a
mail loop: 5.4.6.

Trust boundary and privileges. The agent process is root when the system runs
as root (master.cf unpriv=n): it is the one service that keeps root, so that
every file it touches for a user is touched *as* that user. Each such step runs
in a child process (`run_as`): os.fork() from the worker thread, then
setgroups/setgid/setuid in the child before it opens anything, the answer sent
back over a pipe. fork() rather than running a helper program because the
Python installation may be unreadable for mail users (a root-only pyenv), and
everything the child needs is already imported; the child only does file I/O and
leaves through os._exit. Commands run through subprocess with user=/group=/
extra_groups= (setuid between fork and exec, in C). Whose rights: the user for
the mailbox, .forward and its deliveries; for aliases the owner of the alias
database, or default_privs when that is root; for :include: files their owner
(default_privs when root); never root for a file or command. With a
world-writable spool (1777) everything on the mailbox runs as the user; with
Debian's /var/mail (2775 root:mail) the lock and the mailbox are created with
root's rights, then written with the user's effective ids, as Postfix does.
Started as an ordinary user, everything runs as that user.

Failures: a problem that may pass (lock busy, disk full, command exit 75, a
table that cannot answer) defers (4.x.x); a rule that will not change bounces
(5.x.x). When one destination of an expansion defers, the original recipient
is deferred as a whole (later attempts may repeat copies already delivered,
as with Postfix); otherwise one that bounces bounces the original recipient
with its reason.
Next: tables/aliases.py (syntax), delivery/privs.py, delivery/mailbox.py, delivery/maildir.py, delivery/command.py,
delivery/passalong.py, daemons/local.py.
"""
from __future__ import annotations

import asyncio
import errno
import os
import pwd
import resource
import signal
import stat
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..core import maillog
from ..core.errors import ConfigError, MailError, PermFail, TempFail
from ..queue import qfile
from ..queue.store import QueueFileWriter, fsync_dir
from ..tables import TableList, open_table, split_table_list
from ..tables.aliases import ADDRESS, COMMAND, FILE, INCLUDE, Token, parse_list
from . import base, passalong
from .command import ChdirError, outcome, run_command
from .mailbox import append_mbox, from_line, mbox_image, write_maildir
from .privs import Privs, run_as
from .privs import privileged as _privileged

MAX_DEPTH = 100          # nested alias/.forward/include levels before we call it a loop


def command_file_limit(limit: int) -> Callable[[], None] | None:
    """What a |command's child does before exec, or None (limit 0: nothing to do).

    mailbox_size_limit becomes its file size limit (RLIMIT_FSIZE): Postfix's local(8)
    sets that limit on itself, so every command it runs inherits it, together with
    SIGXFSZ ignored. We ignore SIGXFSZ as well, so a write past the limit fails with
    EFBIG: the command says "File too large" and exits non-zero (a bounce), as under
    Postfix, instead of being killed by the signal (a deferral). Runs between fork and
    exec, after the switch to the user: never raise the hard limit, only lower it.
    """
    if not limit:
        return None

    def child() -> None:
        hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
        cap = limit if hard == resource.RLIM_INFINITY else min(limit, hard)
        resource.setrlimit(resource.RLIMIT_FSIZE, (cap, cap))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    return child


# -- files read as the user -------------------------------------------------------------

def read_forward(paths: list[str]) -> tuple[str, str] | None:
    """The first .forward of `paths` that exists: (path, text). Runs as the user."""
    for p in paths:
        try:
            fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        except OSError as e:
            if e.errno == errno.ELOOP:   # a symlinked .forward is read through, as the user
                fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
            elif e.errno in (errno.EACCES, errno.ENOTDIR):
                continue
            else:
                raise TempFail(f"cannot open {p}: {e.strerror}", "4.3.0") from e
        with os.fdopen(fd, encoding="utf-8", errors="surrogateescape") as f:
            return p, f.read()
    return None


def read_file(path: str) -> tuple[str, int]:
    """An :include: file's text and owner."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return f.read(), os.fstat(f.fileno()).st_uid
    except FileNotFoundError:
        raise PermFail(f"cannot open include file {path}: No such file or directory", "5.3.0") from None
    except OSError as e:
        raise TempFail(f"cannot open include file {path}: {e.strerror}", "4.3.0") from e


# -- per-request state ---------------------------------------------------------------------

@dataclass
class Outcome:
    address: str
    status: str
    dsn: str
    reason: str


@dataclass
class RcptState:
    original: str
    rcpt: str = ""                  # the recipient as queued (a command's RECIPIENT)
    params: dict[str, str] = field(default_factory=dict)   # its DSN parameters, for a pass-along
    outcomes: list[Outcome] = field(default_factory=list)
    loops: list[str] = field(default_factory=list)


@dataclass
class RequestState:
    req: base.DeliveryRequest
    message: bytes
    delivered_to: set[str]
    started: float
    seen: set[tuple] = field(default_factory=set)          # final destinations done
    expanded: set[tuple[str, str]] = field(default_factory=set)   # (stage, name) expanded
    attrs: dict[str, str] | None = None                    # envelope attributes, read when needed


def delivered_to_headers(message: bytes) -> set[str]:
    head = message.split(b"\n\n", 1)[0]
    out = set()
    for line in head.split(b"\n"):
        if line[:13].lower() == b"delivered-to:":
            out.add(line[13:].strip().decode("utf-8", "surrogateescape").lower())
    return out


# -- the agent -------------------------------------------------------------------------------

class LocalAgent:
    relay_name = "local"

    def __init__(self, cfg, service: str = "local", store=None) -> None:
        self.cfg = cfg
        self.service = service
        self.store = store
        self.myhostname = cfg.get("myhostname")
        self.myorigin = cfg.get("myorigin")
        self.spool = cfg.get("mail_spool_directory")
        self.home_mailbox = cfg.get("home_mailbox")
        self.mailbox_command = cfg.get("mailbox_command")        # as written: no $name expansion
        self.mailbox_transport = cfg.get("mailbox_transport").strip()
        self.fallback_transport = cfg.get("fallback_transport").strip()
        self.pass_timeout = passalong.PASS_TIMEOUT
        self.cmd_filter = _charset(cfg.get("command_expansion_filter"))
        self.forward_filter = _charset(cfg.get("forward_expansion_filter"))
        self.exec_dir_filter = _charset(cfg.get("execution_directory_expansion_filter"))
        # Both as written (RAW_PARAMS): expanded per recipient by local_expand.
        self.exec_dir = cfg.get("command_execution_directory").strip()
        self.limit = cfg.get_int("mailbox_size_limit")
        self.delim = cfg.get("recipient_delimiter")
        self.sync = cfg.get_bool("fsync_queue")
        self.stale = cfg.get_duration("stale_lock_time")
        self.cmd_limit = cfg.get_duration("command_time_limit")
        self.shell = cfg.get("local_command_shell")
        self.allow_cmd = set(cfg.get_list("allow_mail_to_commands"))
        self.allow_file = set(cfg.get_list("allow_mail_to_files"))
        self.owner_special = cfg.get_bool("owner_request_special")
        self.expand_owner = cfg.get_bool("expand_owner_alias")
        self.propagate = set(cfg.get_list("propagate_unmatched_extensions"))
        self.forward_raw = cfg.raw("forward_path") or cfg.default("forward_path") or ""
        self.export_env = cfg.get_list("export_environment")
        # Commands start in the queue directory, Postfix's daemons' working directory
        # (local(8): "The current working directory is the mail queue directory").
        self.queue_dir = store.root if store is not None else cfg.get("queue_directory")
        self._alias_tables: list | None = None
        self._maps: dict[str, TableList] = {}
        self._resolver = None

    # -- tables, opened when first needed so that a missing aliases.db defers mail
    #    (until newaliases runs) instead of stopping the service.
    def alias_tables(self) -> list:
        if self._alias_tables is None:
            try:
                self._alias_tables = [open_table(s) for s in split_table_list(self.cfg.get("alias_maps"))]
            except Exception as e:   # ConfigError, TableTempError
                raise TempFail(f"alias database unavailable: {e}", "4.3.0") from e
        return self._alias_tables

    def map_lookup(self, maps_param: str, user: str) -> str | None:
        """What the tables of maps_param (a *_maps parameter, opened when first needed
        and kept) say for user, the bare name as Postfix's local(8) looks it up; None
        when they say nothing (or are not set), or only an empty value."""
        maps = self.cfg.get(maps_param)
        if not maps.strip():
            return None
        tl = self._maps.get(maps_param)
        try:
            if tl is None:
                tl = self._maps[maps_param] = TableList(maps)
            value = tl.lookup(user)
            if value is not None and _substitutes(tl):
                # Postfix opens these tables without $n substitution: the key is the
                # recipient's local part (the sender's choice), the result names where
                # its mail goes or the command that gets it.
                raise ValueError("regular expression substitution is not allowed")
        except Exception as e:   # ConfigError, TableTempError: details in the log, mail waits
            maillog.log.warning(f"{maps_param} lookup of {user!r}: {e}")
            raise TempFail("table lookup failure", "4.3.0") from e
        return value.strip() if value is not None and value.strip() else None

    def transport_for(self, setting: str, user: str) -> str:
        """The transport[:nexthop] of {setting}_maps for user, else of the setting
        itself; "" when neither says."""
        value = self.map_lookup(f"{setting}_maps", user)
        if value is not None:
            return value
        return self.mailbox_transport if setting == "mailbox_transport" else self.fallback_transport

    def resolver(self):
        if self._resolver is None:
            from ..core.resolve import Resolver
            self._resolver = Resolver(self.cfg)
        return self._resolver

    def alias_lookup(self, key: str):
        """(value, table) of the first alias table that has key, else None."""
        for t in self.alias_tables():
            v = t.lookup(key)
            if v is not None:
                return v, t
        return None

    def default_privs(self) -> Privs:
        name = self.cfg.get("default_privs")
        try:
            return Privs.of(pwd.getpwnam(name))
        except KeyError:
            raise TempFail(f"default_privs account {name!r} does not exist", "4.3.0") from None

    def privs_for_owner(self, uid: int | None) -> Privs:
        """The owner of an alias or include file, or default_privs when that is root."""
        if uid is None or uid == 0 or not _privileged():
            return self.default_privs() if _privileged() else self.me()
        try:
            return Privs.of(pwd.getpwuid(uid))
        except KeyError:
            return self.default_privs()

    @staticmethod
    def me() -> Privs:
        try:
            return Privs.of(pwd.getpwuid(os.getuid()))
        except KeyError:
            return Privs(str(os.getuid()), os.getuid(), os.getgid())

    def mail_owner(self) -> Privs | None:
        if not _privileged():
            return None
        try:
            return Privs.of(pwd.getpwnam(self.cfg.get("mail_owner")))
        except KeyError:
            raise TempFail("mail_owner does not exist", "4.3.0") from None

    # -- entry points ------------------------------------------------------------------

    async def deliver(self, req: base.DeliveryRequest) -> list[base.RecipientResult]:
        return await asyncio.to_thread(self.deliver_sync, req)

    def deliver_sync(self, req: base.DeliveryRequest) -> list[base.RecipientResult]:
        started = time.time()
        try:
            with open(req.queue_file, "rb") as f:
                f.seek(req.message_offset)
                message = f.read()
        except OSError as e:
            results = [base.RecipientResult(r.address, base.DEFERRED, "4.3.0",
                                            f"cannot read queue file: {e.strerror}") for r in req.recipients]
            for r in results:
                maillog.log.info(base.delivery_log_line(req, r, started, self.relay_name))
            return results
        st = RequestState(req, message, delivered_to_headers(message[:1 << 20]), started)
        out = []
        for r in req.recipients:
            rs = RcptState(r.original or r.address, r.address, r.params)
            try:
                self.expand_address(st, rs, r.address, req.sender, (), 0)
            except MailError as e:      # table failures and the like, before any delivery
                self.record(st, rs, r.address, base.DEFERRED if e.temporary else base.BOUNCED, e.dsn, e.reason)
            res = self.summarize(r.address, rs)
            if not rs.outcomes:     # nothing logged on the way (a loop, only duplicates)
                maillog.log.info(base.delivery_log_line(req, res, started, self.relay_name))
            out.append(res)
        return out

    def summarize(self, address: str, rs: RcptState) -> base.RecipientResult:
        deferred = [o for o in rs.outcomes if o.status == base.DEFERRED]
        bounced = [o for o in rs.outcomes if o.status == base.BOUNCED]
        if deferred:
            o = deferred[0]
            return base.RecipientResult(address, base.DEFERRED, o.dsn, o.reason, self.relay_name)
        if bounced:
            o = bounced[0]
            reason = o.reason if o.address == address else f"{o.address}: {o.reason}"
            return base.RecipientResult(address, base.BOUNCED, o.dsn, reason, self.relay_name)
        if not rs.outcomes and rs.loops:
            return base.RecipientResult(address, base.BOUNCED, "5.4.6",
                                        f"mail forwarding loop for {rs.loops[0]}", self.relay_name)
        sent = [o for o in rs.outcomes if o.status == base.SENT]
        reason = sent[0].reason if len(sent) == 1 else (f"delivered to {len(sent)} destinations" if sent
                                                         else "duplicate of a delivery already made")
        return base.RecipientResult(address, base.SENT, "2.0.0", reason, self.relay_name)

    def record(self, st: RequestState, rs: RcptState, address: str, status: str, dsn: str, reason: str,
               relay: str = "") -> None:
        rs.outcomes.append(Outcome(address, status, dsn, reason))
        line = base.delivery_log_line(st.req, base.RecipientResult(address, status, dsn, reason), st.started,
                                      relay or self.relay_name)
        if rs.original and rs.original.lower() != address.lower() and ", orig_to=" not in line:
            line = line.replace(f"to=<{address}>", f"to=<{address}>, orig_to=<{rs.original}>", 1)
        maillog.log.info(line)

    def attempt(self, st: RequestState, rs: RcptState, address: str, key: tuple, fn: Callable[[], str]) -> None:
        """Run one final delivery (once per destination and request) and record it."""
        if key in st.seen:
            return
        st.seen.add(key)
        try:
            reason = fn()
        except MailError as e:
            if e.temporary:
                st.seen.discard(key)
            self.record(st, rs, address, base.DEFERRED if e.temporary else base.BOUNCED, e.dsn, e.reason)
            return
        except OSError as e:
            st.seen.discard(key)
            self.record(st, rs, address, base.DEFERRED, "4.3.0", f"delivery failed: {e.strerror or e}")
            return
        self.record(st, rs, address, base.SENT, "2.0.0", reason)

    # -- expansion ---------------------------------------------------------------------

    def split_local(self, address: str) -> tuple[str, str, str]:
        """user@domain -> (user lowercased, extension, domain)."""
        local, at, domain = address.rpartition("@")
        if not at:
            local, domain = address, self.myhostname
        if local.startswith('"') and local.endswith('"') and len(local) >= 2:
            local = local[1:-1]
        local = local.lower()
        ext = ""
        if self.delim:
            for i, ch in enumerate(local):
                if ch in self.delim and i > 0:
                    local, ext = local[:i], local[i + 1:]
                    break
        return local, ext, domain

    def is_ours(self, address: str) -> bool:
        if "@" not in address:
            return True
        route = self.resolver().resolve(address)
        return route.address_class == "local" and route.transport == self.service

    def expand_address(self, st: RequestState, rs: RcptState, address: str, sender: str,
                       chain: tuple[tuple[str, str], ...], depth: int, no_alias: bool = False) -> None:
        if depth > MAX_DEPTH:
            self.record(st, rs, address, base.BOUNCED, "5.4.6", "mail forwarding loop (alias/forward nesting too deep)")
            return
        user, ext, domain = self.split_local(address)
        full = f"{user}+{ext}@{domain}" if ext and self.delim else f"{user}@{domain}"
        if "@" not in address:
            address = f"{address}@{domain}"
        if address.lower() in st.delivered_to or full.lower() in st.delivered_to:
            self.record(st, rs, address, base.BOUNCED, "5.4.6", f"mail forwarding loop for {address}")
            return
        parent = chain[-1] if chain else None
        # 1. aliases (skipped for "\user" and for the alias's own name in its expansion)
        if not no_alias and parent != ("alias", user):
            keys = ([f"{user}{self.delim[0]}{ext}"] if ext else []) + [user]
            for key in keys:
                hit = self.alias_lookup(key)
                if hit is None:
                    continue
                value, table = hit
                if self.seen_before(st, rs, ("alias", key), chain, address):
                    return
                new_sender = sender
                if self.owner_special and not key.startswith("owner-") and sender:
                    owner = self.alias_lookup(f"owner-{key}")
                    if owner is not None:
                        new_sender = self.owner_sender(key, owner[0])
                privs = self.privs_for_owner(getattr(table, "owner_uid", None) if _privileged() else None)
                try:
                    tokens = parse_list(value, getattr(table, "name", "alias_maps"))
                except Exception as e:
                    self.record(st, rs, address, base.DEFERRED, "4.3.0", f"bad alias {key}: {e}")
                    return
                if ext and key == user and "alias" in self.propagate:
                    tokens = [self.with_ext(t, ext) for t in tokens]
                self.expand_tokens(st, rs, address, tokens, new_sender, chain + (("alias", key),), depth + 1,
                                   "alias", privs)
                return
        # 2. the user, from the password database
        try:
            pw: pwd.struct_passwd | None = pwd.getpwnam(user)
        except KeyError:
            pw = None
        # 3. .forward (only a user in the password database has one)
        if pw is not None and not no_alias and parent != ("forward", user):
            upriv = Privs.of(pw)
            found = run_as(upriv, read_forward, self.forward_paths(upriv, address))
            if found is not None:
                path, text = found
                try:
                    tokens = parse_list(text, path)
                except Exception as e:
                    self.record(st, rs, address, base.DEFERRED, "4.3.0", f"bad {path}: {e}")
                    return
                if tokens:
                    if self.seen_before(st, rs, ("forward", user), chain, address):
                        return
                    self.expand_tokens(st, rs, address, tokens, sender, chain + (("forward", user),), depth + 1,
                                       "forward", upriv)
                    return
        # 4. mailbox_transport_maps, mailbox_transport: another agent does the mailbox, for
        #    every recipient that gets this far, in the password database or not (postconf(5)).
        #    5. Not in the password database: fallback_transport_maps, fallback_transport, or
        #    unknown user. The address handed on keeps its extension: user+a and user+b are
        #    two deliveries ("mailbox LOCAL", as Postfix's duplicate filter).
        try:
            stage, target = "mailbox_transport", self.transport_for("mailbox_transport", user)
            if not target and pw is None:
                stage, target = "fallback_transport", self.transport_for("fallback_transport", user)
        except MailError as e:
            self.record(st, rs, address, base.DEFERRED, e.dsn, e.reason)
            return
        if target:
            key = ("mailbox" if stage == "mailbox_transport" else "unknown", full.lower())
            self.pass_along(st, rs, address, key, stage, target)
            return
        if pw is None:
            self.record(st, rs, address, base.BOUNCED, "5.1.1", f"unknown user: \"{user}\"")
            return
        upriv = Privs.of(pw)
        # 6. the mailbox: mailbox_command_maps (keyed by the bare user name, as
        #    mailbox_transport_maps), mailbox_command, home_mailbox, the spool. A command
        #    sees the extension (EXTENSION, RECIPIENT), so user+a and user+b are two
        #    deliveries for it, as Postfix's "mailbox LOCAL" key.
        try:
            command = self.map_lookup("mailbox_command_maps", user) or self.mailbox_command
        except MailError as e:
            self.record(st, rs, address, base.DEFERRED, e.dsn, e.reason)
            return
        key = ("mailbox", full.lower()) if command else ("mailbox", user)
        self.attempt(st, rs, address, key, lambda: self.deliver_mailbox(st, rs, address, sender, upriv, command))

    def pass_along(self, st: RequestState, rs: RcptState, address: str, key: tuple, setting: str,
                   value: str) -> None:
        """Hand address to the agent of another transport (Postfix's deliver_pass) and take
        its answer as this recipient's result. That agent logs the delivery (relay=its
        server); we log only when it could not be asked (relay=none, as Postfix does).
        The envelope sender is the message's (Postfix passes the request's sender, not
        an owner- alias's)."""
        if key in st.seen:
            return
        st.seen.add(key)
        try:
            target = passalong.parse_target(value, st.req.nexthop, setting)
            if target.transport == self.service:    # it would come back here, forever
                raise TempFail(f"{setting} {value!r} names this delivery service: mail loop", "4.3.5")
            rcpt = base.RecipientRequest(address, rs.original, -1, rs.params)
            res = passalong.deliver_pass(self.private_socket(target.transport), st.req, rcpt, target,
                                         self.pass_timeout)
        except MailError as e:
            if e.temporary:
                st.seen.discard(key)
            self.record(st, rs, address, base.DEFERRED if e.temporary else base.BOUNCED, e.dsn, e.reason, "none")
            return
        if res.status == base.DEFERRED:
            st.seen.discard(key)
        rs.outcomes.append(Outcome(address, res.status, res.dsn, res.reason))

    def private_socket(self, transport: str) -> str:
        if self.store is not None:
            return self.store.path("private", transport)
        return os.path.join(self.cfg.get("queue_directory"), "private", transport)

    def owner_sender(self, key: str, owner_value: str) -> str:
        """The envelope sender of alias key's expansion: owner-key@$myorigin, or with
        expand_owner_alias what owner-key expands to. That must be one address (a
        sender cannot be a list, a file or a command); otherwise owner-key stays."""
        if self.expand_owner:
            try:
                tokens = parse_list(owner_value, "alias_maps")
            except Exception:
                tokens = []
            if len(tokens) == 1 and tokens[0].kind == ADDRESS:
                addr = tokens[0].value
                return addr if "@" in addr else f"{addr}@{self.myorigin}"
        return f"owner-{key}@{self.myorigin}"

    def seen_before(self, st: RequestState, rs: RcptState, stage: tuple[str, str], chain, address: str) -> bool:
        """An expansion met twice: among its own ancestors a loop, elsewhere a duplicate."""
        if stage in chain:
            rs.loops.append(address)
            maillog.log.info(f"{st.req.queue_id}: mail forwarding loop for {address} ({stage[0]} {stage[1]})")
            return True
        if stage in st.expanded:
            return True
        st.expanded.add(stage)
        return False

    def with_ext(self, tok: Token, ext: str) -> Token:
        if tok.kind != ADDRESS or not self.delim:
            return tok
        local, at, domain = tok.value.rpartition("@")
        if not at:
            local, domain = tok.value, ""
        value = f"{local}{self.delim[0]}{ext}" + (f"@{domain}" if at else "")
        return Token(ADDRESS, value, tok.no_alias)

    def local_expand(self, setting: str, template: str, u: Privs, address: str, recipient: str,
                     keep: frozenset[int]) -> str:
        """template (forward_path, command_execution_directory) with this delivery's
        $user, $home, $shell (of u), $recipient, $extension, $domain, $local (the whole
        local part, lowercased) and $recipient_delimiter (the one found in the address,
        else the first of recipient_delimiter, as Postfix 3.7.8 and later), also as
        ${name}, $(name), ${name?value}, ${name:value} and ${name?{a}:{b}}. Each value
        is censored with `keep` first (Postfix's forward_expansion_filter and
        execution_directory_expansion_filter): it comes from the sender's address.
        Other $names expand as main.cf's. Bad syntax: TempFail 4.3.5, as Postfix."""
        user, ext, domain = self.split_local(address)
        local = address.rpartition("@")[0] if "@" in address else address
        if local.startswith('"') and local.endswith('"') and len(local) >= 2:
            local = local[1:-1]
        local = local.lower()
        vals = {"user": user, "home": u.home, "shell": u.shell, "recipient": recipient, "extension": ext,
                "domain": domain, "local": local,
                "recipient_delimiter": local[len(user)] if len(local) > len(user) else self.delim[:1]}
        # "$$": a value is text, never expanded again ("user+$x" stays "$x" when keep allows "$").
        cfg = self.cfg.overrides({k: self.censor(v, keep).replace("$", "$$") for k, v in vals.items()})
        try:
            return cfg.expand(template)
        except ConfigError as e:
            maillog.log.warning(f"bad parameter value syntax for {setting}: {template}: {e}")
            raise TempFail("mail system configuration error", "4.3.5") from e

    def forward_paths(self, u: Privs, address: str) -> list[str]:
        """forward_path for user u receiving address: its absolute paths, in order."""
        out: list[str] = []
        for item in split_table_list(self.forward_raw):
            p = self.local_expand("forward_path", item, u, address, address, self.forward_filter)
            if p.startswith("/") and p not in out:
                out.append(p)
        return out

    def expand_tokens(self, st: RequestState, rs: RcptState, address: str, tokens: list[Token], sender: str,
                      chain: tuple, depth: int, origin: str, privs: Privs) -> None:
        remote: list[str] = []
        for tok in tokens:
            if tok.kind == ADDRESS:
                value = tok.value if "@" in tok.value else f"{tok.value}@{address.rpartition('@')[2]}"
                if self.is_ours(value):
                    self.expand_address(st, rs, value, sender, chain, depth, tok.no_alias)
                else:
                    remote.append(tok.value)
            elif tok.kind == INCLUDE:
                self.expand_include(st, rs, address, tok.value, sender, chain, depth, origin, privs)
            elif tok.kind == COMMAND:
                if origin not in self.allow_cmd:
                    self.record(st, rs, address, base.BOUNCED, "5.7.1", "mail to command is restricted")
                    continue
                p = self.not_root(privs)
                self.attempt(st, rs, address, ("command", tok.value, p.uid),
                             lambda tok=tok, p=p: self.deliver_command(st, rs, address, sender, tok.value, p))
            elif tok.kind == FILE:
                if origin not in self.allow_file:
                    self.record(st, rs, address, base.BOUNCED, "5.7.1", "mail to file is restricted")
                    continue
                p = self.not_root(privs)
                self.attempt(st, rs, address, ("file", tok.value),
                             lambda tok=tok, p=p: self.deliver_file(st, rs, address, sender, tok.value, p))
        for dest in remote:
            self.attempt(st, rs, address, ("forward", dest.lower()),
                         lambda dest=dest: self.forward(st, rs, address, sender, dest))

    def expand_include(self, st, rs, address, path, sender, chain, depth, origin, privs) -> None:
        if not path.startswith("/"):
            self.record(st, rs, address, base.BOUNCED, "5.3.5", f":include:{path}: not an absolute path")
            return
        if self.seen_before(st, rs, ("include", path), chain, address):
            return
        reader = None if origin == "alias" else privs     # the admin's files: as ourselves
        try:
            text, owner_uid = run_as(reader, read_file, path)
            tokens = parse_list(text, path)
        except MailError as e:
            self.record(st, rs, address, base.DEFERRED if e.temporary else base.BOUNCED, e.dsn, e.reason)
            return
        except Exception as e:
            self.record(st, rs, address, base.DEFERRED, "4.3.0", f"bad include file {path}: {e}")
            return
        inc_privs = privs if origin == "forward" else self.privs_for_owner(owner_uid)
        self.expand_tokens(st, rs, address, tokens, sender, chain + (("include", path),), depth + 1,
                           "include", inc_privs)

    def not_root(self, p: Privs) -> Privs:
        """Files and commands never run as root (Postfix: default_privs instead)."""
        return self.default_privs() if p.uid == 0 and _privileged() else p

    # -- final deliveries -----------------------------------------------------------------

    def headers(self, st: RequestState, rs: RcptState, address: str, sender: str) -> bytes:
        h = f"Return-Path: <{sender}>\n"
        if rs.original:
            h += f"X-Original-To: {rs.original}\n"
        h += f"Delivered-To: {address}\n"
        return h.encode("utf-8", "surrogateescape")

    def deliver_mailbox(self, st: RequestState, rs: RcptState, address: str, sender: str, u: Privs,
                        command: str = "") -> str:
        """The mailbox of u: `command` (of mailbox_command_maps or mailbox_command) when
        set, else the Maildir or mbox file."""
        if command:
            return self.deliver_command(st, rs, address, sender, command, u)
        if self.home_mailbox:
            path = os.path.join(u.home, self.home_mailbox)
            if self.home_mailbox.endswith("/"):
                run_as(u, write_maildir, path, self.headers(st, rs, address, sender), st.message, self.sync,
                       self.limit)
                return "delivered to maildir"
            data = mbox_image(sender, self.headers(st, rs, address, sender), st.message)
            run_as(u, append_mbox, path, data, u, self.limit, self.stale)
            return "delivered to mailbox"
        path = os.path.join(self.spool, u.name)
        data = mbox_image(sender, self.headers(st, rs, address, sender), st.message)
        try:
            world = os.stat(self.spool).st_mode & stat.S_IWOTH
        except OSError as e:
            raise TempFail(f"mail_spool_directory {self.spool}: {e.strerror}", "4.3.0") from e
        if world or not _privileged():
            run_as(u, append_mbox, path, data, u, self.limit, self.stale)
        else:
            # Debian's /var/mail (2775 root:mail): lock and create as root, write as the user.
            run_as(u, append_mbox, path, data, u, self.limit, self.stale, True, True, keep_root=True)
        return "delivered to mailbox"

    def deliver_file(self, st: RequestState, rs: RcptState, address: str, sender: str, path: str, p: Privs) -> str:
        if path.endswith("/"):
            run_as(p, write_maildir, path, self.headers(st, rs, address, sender), st.message, self.sync,
                   self.limit)
            return f"delivered to maildir: {path}"
        data = mbox_image(sender, self.headers(st, rs, address, sender), st.message)
        run_as(p, append_mbox, path, data, p, self.limit, self.stale, False)
        return f"delivered to file: {path}"

    def envelope_attrs(self, st: RequestState) -> dict[str, str]:
        """The queue file's envelope attributes (client, SASL), read once per request."""
        if st.attrs is None:
            try:
                st.attrs = qfile.read_envelope(st.req.queue_file, st.req.queue_id).attrs
            except (OSError, qfile.CorruptQueueFile, ValueError):
                st.attrs = {}
        return st.attrs

    def command_env(self, st: RequestState, rs: RcptState, address: str, sender: str,
                    p: Privs) -> dict[str, str]:
        """A command's environment, as Postfix's local(8) makes it: export_environment,
        PATH, then the message's attributes (the empty ones left out), censored with
        command_expansion_filter. USER and LOGNAME are the bare recipient name, HOME and
        SHELL those of p, whose delivery this is."""
        user, ext, domain = self.split_local(address)
        local = address.rpartition("@")[0] if "@" in address else address
        if local.startswith('"') and local.endswith('"') and len(local) >= 2:
            local = local[1:-1]
        a = self.envelope_attrs(st)
        attrs = {"HOME": p.home, "LOGNAME": user, "USER": user, "SENDER": sender,
                 "RECIPIENT": rs.rcpt or address, "LOCAL": local.lower(), "SHELL": p.shell,
                 "DOMAIN": domain.lower(), "EXTENSION": ext, "ORIGINAL_RECIPIENT": rs.original,
                 "CLIENT_HOSTNAME": a.get("client_name", ""), "CLIENT_ADDRESS": a.get("client_address", ""),
                 "CLIENT_HELO": a.get("helo_name", ""), "CLIENT_PROTOCOL": a.get("protocol", ""),
                 "SASL_METHOD": a.get("sasl_method", ""), "SASL_SENDER": a.get("sasl_sender", ""),
                 "SASL_USERNAME": a.get("sasl_username", "")}
        env = {k: os.environ[k] for k in self.export_env if "=" not in k and k in os.environ}
        env.update(k.split("=", 1) for k in self.export_env if "=" in k)
        env["PATH"] = "/usr/bin:/bin"
        for k, v in attrs.items():
            if v or k in ("SENDER", "LOGNAME", "USER", "RECIPIENT", "LOCAL"):
                env[k] = self.censor(v)
        return env

    def censor(self, value: str, keep: frozenset[int] | None = None) -> str:
        """Every byte not in keep (command_expansion_filter by default) becomes "_"
        (shell and file system safety of what a remote sender chose)."""
        keep = self.cmd_filter if keep is None else keep
        raw = value.encode("utf-8", "surrogateescape")
        return bytes(c if c in keep else 0x5F for c in raw).decode("utf-8", "surrogateescape")

    def deliver_command(self, st: RequestState, rs: RcptState, address: str, sender: str, cmd: str, p: Privs) -> str:
        """|cmd through local_command_shell (/bin/sh -c), with the message on stdin, as p
        (default_privs instead of root), with mailbox_size_limit as its file size limit and
        command_time_limit to finish. Its end is read as Postfix does (delivery/command.py).

        It runs in the queue directory, as under Postfix, or in command_execution_directory
        ($name-expanded here, with p's $home and $shell), entered as the runner: when that
        fails nothing runs and the recipient is deferred (4.3.0 "temporary failure", as
        Postfix's EX_TEMPFAIL; the reason in a warning)."""
        data = from_line(sender) + self.headers(st, rs, address, sender) + st.message
        argv = ["/bin/sh", "-c", cmd] if not self.shell else self.shell.split() + [cmd]
        runner = self.not_root(p)
        exec_dir = ""
        if self.exec_dir:
            exec_dir = self.local_expand("command_execution_directory", self.exec_dir, p, address,
                                         rs.rcpt or address, self.exec_dir_filter)
        cwd = self.queue_dir if os.path.isdir(self.queue_dir) else "/"
        try:
            rc, out = run_command(argv, data, runner if _privileged() else None, cwd,
                                  self.command_env(st, rs, address, sender, p), self.cmd_limit,
                                  command_file_limit(self.limit), exec_dir)
        except ChdirError as e:
            maillog.log.warning(f"{st.req.queue_id}: cannot change directory to \"{exec_dir}\" for "
                                f"uid={runner.uid} gid={runner.gid}: {e.strerror}")
            raise TempFail("temporary failure", "4.3.0") from e
        except OSError as e:
            raise TempFail(f"cannot run command: {e.strerror}", "4.3.0") from e
        except subprocess.SubprocessError as e:    # the limit could not be set in the child
            raise TempFail(f"cannot run command: {e}", "4.3.0") from e
        status, dsn, reason = outcome(rc, out, cmd)
        if status == base.SENT:
            return f"delivered to command: {cmd}"
        raise (TempFail if status == base.DEFERRED else PermFail)(reason, dsn)

    def forward(self, st: RequestState, rs: RcptState, address: str, sender: str, dest: str) -> str:
        """A new queue file for dest (Delivered-To: address added), written as the mail owner."""
        if self.store is None:
            raise TempFail("forwarding is not available here (no queue)", "4.3.0")
        from ..core.queueid import new_queue_id
        qid = new_queue_id()
        prefix = f"Delivered-To: {address}\n".encode("utf-8", "surrogateescape")
        run_as(self.mail_owner(), write_forward, self.store.path("incoming"), qid, sender,
               dest, rs.original or address, prefix, st.message, self.sync)
        _trigger_qmgr(self.store, qid)
        return f"forwarded as {qid}"


def _charset(chars: str) -> frozenset[int]:
    """A *_expansion_filter as the set of bytes it allows."""
    return frozenset(chars.encode("utf-8", "surrogateescape"))


def _substitutes(tl: TableList) -> bool:
    """Does a regexp:/pcre: table of tl have a rule whose result uses $n?"""
    for t in tl.tables:
        for r in getattr(t, "rules", ()):
            if any(isinstance(p, int) for p in (getattr(r, "result", None) or ())):
                return True
    return False


def write_forward(incoming: str, qid: str, sender: str, dest: str, original: str, prefix: bytes,
                  message: bytes, sync: bool) -> None:
    """Runs as mail_owner, after the switch: everything it uses is imported at the top."""
    w = QueueFileWriter(incoming, qid, sync)
    try:
        w.write(qfile.encode_envelope(time.time(), sender, [(dest, {"o": original})], {"protocol": "local"}))
        w.write(prefix)
        w.write(message)
        w.commit()
    except BaseException:
        w.abort()
        raise
    if sync:
        fsync_dir(incoming)


def _trigger_qmgr(store, qid: str) -> None:
    import socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        for path in (store.path("public", "qmgr"), store.path("private", "qmgr")):
            try:
                s.sendto(qid.encode(), path)
                return
            except OSError:
                continue
