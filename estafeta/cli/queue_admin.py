"""Queue administration: postqueue, postsuper, postcat and `estafeta queue` (SPEC S3).

    postqueue [-c DIR] -p | -j | -f | -s SITE | -i ID         any user
    postsuper [-c DIR] -d ID|ALL [QUEUE] | -h ID|ALL | -H ID|ALL | -r ID|ALL    administrator
    postcat   [-c DIR] -q ID | FILE...                          administrator
    estafeta queue list [--json] | flush [-s SITE|-i ID] | delete | hold | release | requeue | show

Trust boundary. Listing and flushing are open to every local user, as with
Postfix's defaults (authorized_mailq_users, authorized_flush_users: anyone):
they go through the showq service (daemons/showq.py), which runs as the mail owner
and never returns message content. When the daemons are down, only a caller who
can read the queue (root, or the owner of an unprivileged instance) reads it
directly. postsuper and postcat need that same access ("administrator"): they
work on the files themselves and refuse anyone else (EX_NOPERM).

postsuper is the administrative exception to "only qmgr moves queue files", as
Postfix's is: each move is one rename (atomic), never of a file in active/ (qmgr
holds it), and qmgr is told afterwards through its trigger socket. hold/ is never
scanned by qmgr: held mail stays until released (-H: back to deferred, due at
the next deferred scan; postqueue -i ID tries it at once).
-r (requeue) moves the file to incoming/ so qmgr routes it afresh at once; unlike
Postfix it does not pass it through cleanup again.
Next: queue/listing.py (formats, selection), daemons/showq.py.
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
import time

from ..queue import listing, qfile
from ..queue.store import QueueStore

EX_USAGE, EX_NOUSER, EX_UNAVAILABLE, EX_SOFTWARE, EX_TEMPFAIL, EX_NOPERM, EX_CONFIG = 64, 67, 69, 70, 75, 77, 78
DEFAULT_CONFIG = "/etc/estafeta"
POSTSUPER_QUEUES = ("hold", "incoming", "active", "deferred")


class CommandError(Exception):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def config_dir(explicit: str | None) -> str:
    d = explicit or os.environ.get("ESTAFETA_CONFIG") or os.environ.get("MAIL_CONFIG") or DEFAULT_CONFIG
    if os.path.isfile(d):        # sendmail -C accepts a file: its directory is meant
        d = os.path.dirname(d)
    return os.path.abspath(d)


def load(cdir: str):
    from ..config.main_cf import MainConfig
    path = os.path.join(cdir, "main.cf")
    try:
        return MainConfig.load(path)
    except FileNotFoundError:
        raise CommandError(f"fatal: open {path}: No such file or directory", EX_CONFIG) from None
    except PermissionError:
        raise CommandError(f"fatal: open {path}: Permission denied", EX_CONFIG) from None


def store_of(cfg) -> QueueStore:
    return QueueStore(cfg.get("queue_directory"))


def is_administrator(store: QueueStore) -> bool:
    """Root, or whoever owns the queue (an instance run by an ordinary user)."""
    if os.geteuid() == 0:
        return True
    try:
        return os.stat(store.root).st_uid == os.geteuid() and os.access(store.path("deferred"), os.R_OK | os.W_OK | os.X_OK)
    except OSError:
        return False


def require_administrator(store: QueueStore, prog: str) -> None:
    if not is_administrator(store):
        raise CommandError(f"fatal: permission denied: only the super-user or the mail "
                           f"system's owner may use this command", EX_NOPERM)


# -- talking to the daemons ------------------------------------------------------------

def trigger(store: QueueStore, service: str, word: str) -> bool:
    """One datagram to public/<service> (else private/). False when nobody listens."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        for where in ("public", "private"):
            try:
                s.sendto(word.encode(), store.path(where, service))
                return True
            except OSError:
                continue
    return False


def ask_showq(store: QueueStore, request: str, timeout: float = 60.0) -> str | None:
    """The showq service's answer, or None when it does not answer (daemons down)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(store.path("public", "showq"))
            s.sendall(request.encode() + b"\n")
            chunks = []
            while (b := s.recv(65536)):
                chunks.append(b)
    except OSError:
        return None
    return b"".join(chunks).decode("utf-8", "surrogateescape")


# -- operations --------------------------------------------------------------------------

def list_queue(store: QueueStore, as_json: bool = False, prog: str = "postqueue") -> str:
    text = ask_showq(store, "json" if as_json else "list")
    if text and not text.startswith("error:"):
        return text
    if not is_administrator(store):
        raise CommandError(f"fatal: Queue report unavailable - mail system is down", EX_UNAVAILABLE)
    print(f"{prog}: warning: Mail system is down -- accessing queue directly", file=sys.stderr)
    entries = listing.collect(store)
    return listing.format_json(entries) if as_json else listing.format_text(entries)


def flush_all(store: QueueStore, prog: str = "postqueue") -> None:
    if not trigger(store, "qmgr", "FLUSH"):
        raise CommandError(f"fatal: Cannot flush mail queue - mail system is down", EX_UNAVAILABLE)


def flush_select(store: QueueStore, kind: str, substr: str, prog: str = "postqueue") -> list[str]:
    """-qI / -qR / -qS (and postqueue -i / -s): only the matching deferred mail."""
    if is_administrator(store):
        ids = listing.flush_selected(store, kind, substr)
        if not trigger(store, "qmgr", "DEFERRED"):
            raise CommandError(f"fatal: Cannot flush mail queue - mail system is down", EX_UNAVAILABLE)
        return ids
    text = ask_showq(store, f"flush {kind} {substr}")
    if text is None or not text.endswith("ok\n"):
        raise CommandError(f"fatal: Cannot flush mail queue - mail system is down", EX_UNAVAILABLE)
    return text.splitlines()[:-1]


def _targets(store: QueueStore, ident: str, queues: tuple[str, ...]) -> list[tuple[str, str]]:
    """(queue, id) pairs named by an id or ALL, within `queues`."""
    if ident == "ALL":
        return [(q, i) for q in queues for i in store.list(q)]
    return [(q, ident) for q in queues if os.path.exists(store.path(q, ident))]


def delete(store: QueueStore, ident: str, queues: tuple[str, ...] = POSTSUPER_QUEUES) -> list[str]:
    done = []
    for q, qid in _targets(store, ident, queues):
        try:
            store.remove(q, qid)
        except FileNotFoundError:
            continue
        done.append(qid)
    return done


def hold(store: QueueStore, ident: str) -> tuple[list[str], list[str]]:
    """Move to hold/ from incoming/ and deferred/. Returns (held, busy in active/)."""
    done = []
    for q, qid in _targets(store, ident, ("incoming", "deferred")):
        try:
            store.move(qid, q, "hold")
        except FileNotFoundError:
            continue
        done.append(qid)
    busy = [qid for _, qid in _targets(store, ident, ("active",))]
    return done, busy


def release(store: QueueStore, ident: str) -> list[str]:
    """hold/ -> deferred/, due at qmgr's next deferred scan (queue_run_delay) as
    with Postfix; `postqueue -i ID` or -f to try it at once. No trigger here."""
    done = []
    now = time.time()
    for _, qid in _targets(store, ident, ("hold",)):
        p = store.path("hold", qid)
        try:
            os.utime(p, (now, now))
            store.move(qid, "hold", "deferred")
        except FileNotFoundError:
            continue
        done.append(qid)
    return done


def requeue(store: QueueStore, ident: str) -> list[str]:
    """hold/ or deferred/ -> incoming/: routed afresh and tried now."""
    done = []
    for q, qid in _targets(store, ident, ("hold", "deferred")):
        try:
            store.move(qid, q, "incoming")
        except FileNotFoundError:
            continue
        try:
            os.unlink(store.path("defer", qid))
        except FileNotFoundError:
            pass
        done.append(qid)
    for qid in done:
        trigger(store, "qmgr", qid)
    return done


def show(store: QueueStore, qid: str, out) -> None:
    """postcat -q: envelope records, then the message, in postcat's sections."""
    queue = store.find(qid)
    if queue is None:
        raise CommandError(f"fatal: open queue file {qid}: No such file or directory", EX_NOUSER)
    path = store.path(queue, qid)
    show_file(path, qid, f"{queue}/{qid}", out)


def show_file(path: str, qid: str, label: str, out) -> None:
    try:
        env = qfile.read_envelope(path, qid)
        body = qfile.read_message(path, env.message_offset)
    except (OSError, qfile.CorruptQueueFile) as e:
        raise CommandError(f"fatal: {label}: {e}", EX_SOFTWARE) from None
    w = out.write
    w(f"*** ENVELOPE RECORDS {label} ***\n")
    w(f"message_size: {env.message_size:>15}\n")
    w(f"message_arrival_time: {time.ctime(env.arrival)}\n")
    w(f"create_time: {time.ctime(env.arrival)}\n")
    for k, v in env.attrs.items():
        w(f"named_attribute: {k}={v}\n")
    w(f"sender: {env.sender}\n")
    for r in env.recipients:
        w(f"{'done_recipient' if r.done else 'recipient'}: {r.address}\n")
        if "o" in r.params:
            w(f"original_recipient: {r.params['o']}\n")
    head, sep, rest = body.partition(b"\n\n")
    w(f"*** MESSAGE CONTENTS {label} ***\n")
    out.flush()
    raw = getattr(out, "buffer", None)
    if raw is not None:
        raw.write(head + sep + rest)
        raw.flush()
    else:
        w((head + sep + rest).decode("utf-8", "replace"))
    if not body.endswith(b"\n"):
        w("\n")
    w(f"*** HEADER EXTRACTED {label} ***\n")
    w(f"*** MESSAGE FILE END {label} ***\n")


# -- command lines ---------------------------------------------------------------------------

def _run(fn, prog: str) -> int:
    try:
        return fn() or 0
    except CommandError as e:
        msg = str(e)
        print(msg if msg.startswith(prog) else f"{prog}: {msg}", file=sys.stderr)
        return e.status
    except BrokenPipeError:
        return 0


def postqueue_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="postqueue", description="Postfix-compatible queue control")
    p.add_argument("-c", dest="config", metavar="DIR")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("-p", action="store_true", help="list the queue (mailq)")
    g.add_argument("-j", action="store_true", help="list the queue as JSON lines")
    g.add_argument("-f", action="store_true", help="flush: try all deferred mail now")
    g.add_argument("-s", dest="site", help="flush mail for one site (domain)")
    g.add_argument("-i", dest="qid", help="flush one message")
    p.add_argument("-v", action="count", default=0)
    a = p.parse_args(argv)

    def go() -> int:
        store = store_of(load(config_dir(a.config)))
        if a.p or a.j:
            sys.stdout.write(list_queue(store, a.j))
        elif a.f:
            flush_all(store)
        elif a.site:
            flush_select(store, "R", "@" + a.site.lower())
        else:
            flush_select(store, "I", a.qid)
        return 0
    return _run(go, "postqueue")


def _ids_from(values: list[str]) -> list[str]:
    out = []
    for v in values:
        if v == "-":
            out.extend(line.strip() for line in sys.stdin if line.strip())
        else:
            out.append(v)
    return out


def postsuper_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="postsuper", description="Postfix-compatible queue maintenance",
                                add_help=False)
    p.add_argument("-c", dest="config", metavar="DIR")
    p.add_argument("-d", action="append", default=[], metavar="ID|ALL", help="delete")
    p.add_argument("-h", dest="hold", action="append", default=[], metavar="ID|ALL", help="put on hold")
    p.add_argument("-H", dest="release", action="append", default=[], metavar="ID|ALL", help="release from hold")
    p.add_argument("-r", dest="requeue", action="append", default=[], metavar="ID|ALL", help="requeue")
    p.add_argument("-v", action="count", default=0)
    p.add_argument("--help", action="help")
    p.add_argument("queues", nargs="*", help="limit to these queues (hold incoming active deferred)")
    a = p.parse_args(argv)

    def go() -> int:
        store = store_of(load(config_dir(a.config)))
        require_administrator(store, "postsuper")
        for q in a.queues:
            if q not in POSTSUPER_QUEUES:
                raise CommandError(f"fatal: invalid directory name: {q}", EX_USAGE)
        queues = tuple(a.queues) or POSTSUPER_QUEUES
        report = []
        n = sum(len(delete(store, i, queues)) for i in _ids_from(a.d))
        if a.d:
            report.append(f"Deleted: {n} message{'s' if n != 1 else ''}")
        if a.hold:
            n = 0
            for i in _ids_from(a.hold):
                held, busy = hold(store, i)
                n += len(held)
                for b in busy:
                    print(f"postsuper: {b}: being delivered (active queue): not placed on hold", file=sys.stderr)
            report.append(f"Placed on hold: {n} message{'s' if n != 1 else ''}")
        if a.release:
            n = sum(len(release(store, i)) for i in _ids_from(a.release))
            report.append(f"Released from hold: {n} message{'s' if n != 1 else ''}")
        if a.requeue:
            n = sum(len(requeue(store, i)) for i in _ids_from(a.requeue))
            report.append(f"Requeued: {n} message{'s' if n != 1 else ''}")
        for line in report:
            print(f"postsuper: {line}", file=sys.stderr)
        return 0
    return _run(go, "postsuper")


def postcat_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="postcat", description="show a queue file")
    p.add_argument("-c", dest="config", metavar="DIR")
    p.add_argument("-q", dest="qids", action="append", default=[], metavar="ID")
    p.add_argument("files", nargs="*")
    a = p.parse_args(argv)

    def go() -> int:
        store = store_of(load(config_dir(a.config)))
        require_administrator(store, "postcat")
        for qid in a.qids:
            show(store, qid, sys.stdout)
        for f in a.files:
            show_file(f, os.path.basename(f), f, sys.stdout)
        return 0
    return _run(go, "postcat")


# -- `estafeta queue ...` ------------------------------------------------------------------

def add_commands(sub, config_dir_of) -> None:
    """Register `estafeta queue` (and `estafeta sendmail`) on the main parser."""
    q = sub.add_parser("queue", help="list and manage the mail queue (postqueue, postsuper, postcat)")
    qs = q.add_subparsers(dest="queue_command", required=True)
    s = qs.add_parser("list", help="list the queue (mailq)")
    s.add_argument("--json", action="store_true", help="one JSON object per message (postqueue -j)")
    s = qs.add_parser("flush", help="try deferred mail now (all, one site or one id)")
    s.add_argument("-s", dest="site")
    s.add_argument("-i", dest="qid")
    for name, h in (("delete", "delete messages"), ("hold", "put messages on hold"),
                    ("release", "release held messages"), ("requeue", "route messages again now")):
        s = qs.add_parser(name, help=h)
        s.add_argument("ids", nargs="+", metavar="ID|ALL")
        if name == "delete":
            s.add_argument("--queue", action="append", default=[], choices=POSTSUPER_QUEUES)
    s = qs.add_parser("show", help="print a queued message (postcat -q)")
    s.add_argument("ids", nargs="+", metavar="ID")
    q.set_defaults(func=lambda args: queue_command(args, config_dir_of(args)))
    # prefix_chars="+": every "-flag" after `sendmail` is sendmail's, not argparse's.
    s = sub.add_parser("sendmail", help="submit a message (Sendmail-compatible flags)", add_help=False,
                       prefix_chars="+")
    s.add_argument("sendmail_args", nargs=argparse.REMAINDER)
    s.set_defaults(func=lambda args: _sendmail(args, config_dir_of(args)))


def _sendmail(args, cdir: str) -> int:
    from .sendmail import main as sendmail_main
    argv = list(args.sendmail_args)
    if args.config and "-C" not in argv:
        argv = ["-C", cdir, *argv]
    return sendmail_main(argv)


def queue_command(args, cdir: str) -> int:
    c = args.queue_command
    argv = ["-c", cdir]
    if c == "list":
        return postqueue_main(argv + ["-j" if args.json else "-p"])
    if c == "flush":
        return postqueue_main(argv + (["-s", args.site] if args.site else ["-i", args.qid] if args.qid else ["-f"]))
    if c == "show":
        return postcat_main(argv + [x for i in args.ids for x in ("-q", i)])
    flag = {"delete": "-d", "hold": "-h", "release": "-H", "requeue": "-r"}[c]
    extra = list(getattr(args, "queue", []) or [])
    return postsuper_main(argv + [x for i in args.ids for x in (flag, i)] + extra)
