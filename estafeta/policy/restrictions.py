"""smtpd restriction lists (SPEC S6), evaluated as postconf(5) describes them.

Owns the evaluation of smtpd_client_, _helo_, _sender_, _relay_, _recipient_ and
_data_restrictions into one verdict per SMTP command: ACCEPT, or Reject(reply) /
Defer(reply). Inside a list each restriction answers ACCEPT (permit: the list
ends, later lists still run), CONTINUE (no decision), Reject or Defer; a list that
ends without a decision lets the request through. Pure apart from table lookups:
the session facts come in a `Request`, the site knowledge (address classes, user
tables) through the `Site` protocol, tables through an `open_table` callable. The
caller (daemons/smtpd.py) logs what `Outcome.logs` lists and applies
`Outcome.effects` to its transaction when the command is accepted.

Rules taken from Postfix's documentation (postconf(5), access(5)):
- smtpd_delay_reject = yes: client, HELO and sender lists run at RCPT TO, before the
  relay and recipient lists; "no": at MAIL FROM (`check_mail`).
- smtpd_relay_restrictions runs before smtpd_recipient_restrictions and both must
  pass (smtpd_relay_before_recipient_restrictions, Postfix >= 3.6).
- DEFER_IF_PERMIT turns a later permit (explicit or at the end of the lists) into a
  defer; DEFER_IF_REJECT turns a later 5xx into its defer; warn_if_reject turns the
  next restriction's reject into a logged warning.
- A table that cannot answer: 451 4.3.0 "Temporary lookup failure", never "not
  found"; an unknown restriction or malformed table result: 451 4.3.5 "Server
  configuration error" (logged with the detail).
- smtpd_reject_unlisted_recipient = yes checks unknown recipients after the lists
  unless reject_unlisted_recipient already ran; once a DISCARD fired, the rest of
  the lists and later commands of the transaction are not checked (the message is
  dropped anyway).
Sendmail's RELAY (access.py) permits like OK and also grants relaying: a later
reject_/defer_unauth_destination lets the recipient through.
Next: access.py (table results), daemons/smtpd.py (where this is called).
"""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ..core.errors import ConfigError
from ..proto.replies import Reply
from ..tables import Table, TableTempError, split_table_list
from ..tables.lookup import access_address_keys, first_match, ip_keys, parent_domains
from . import access as A

LOCAL, VIRTUAL, RELAY, DEFAULT = "local", "virtual", "relay", "default"   # core/resolve.py classes
STAGES = ("client", "helo", "sender", "relay", "recipient", "data")
_MAX_DEPTH = 8          # restriction lists nested through table results


# -- verdicts (ARCHITECTURE: Accept / Continue / Reject(reply) / Defer(reply)) ---------------

@dataclass(frozen=True, slots=True)
class Accept:
    pass


@dataclass(frozen=True, slots=True)
class Continue:
    pass


@dataclass(frozen=True, slots=True)
class Reject:
    reply: Reply


@dataclass(frozen=True, slots=True)
class Defer:
    reply: Reply


ACCEPT, CONTINUE = Accept(), Continue()
Verdict = Accept | Continue | Reject | Defer


# -- inputs and outputs -----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Request:
    """What the restrictions look at, from one session and transaction."""
    client_name: str                 # verified name, or "unknown"
    client_addr: str
    helo: str = ""                   # "" before HELO/EHLO
    sender: str | None = None        # None before MAIL FROM; "" is the null sender
    recipient: str | None = None     # the RCPT TO address being decided
    trusted: bool = False            # client in mynetworks
    sasl: bool = False               # authenticated (SASL is not built yet)

    @property
    def namaddr(self) -> str:
        return f"{self.client_name}[{self.client_addr}]"


@dataclass(slots=True)
class Effects:
    """What accepted commands ask of the message (access(5) OTHER ACTIONS)."""
    hold: str | None = None          # HOLD: reason logged; the message goes to the hold queue
    discard: str | None = None       # DISCARD: claim delivery, drop the message
    filter: str | None = None        # FILTER transport:destination (the last one wins)
    redirect: str | None = None      # REDIRECT address (the last one wins, all recipients)
    bcc: str | None = None           # BCC address (the last one wins, as Postfix 3.0)
    prepend: list[str] = field(default_factory=list)   # PREPEND header lines, in order
    relay: bool = False              # RELAY fired at MAIL time (smtpd_delay_reject = no)

    def merge(self, other: "Effects") -> None:
        for name in ("hold", "discard", "filter", "redirect", "bcc"):
            v = getattr(other, name)
            if v is not None and (name != "hold" or self.hold is None):
                setattr(self, name, v)
        self.prepend.extend(other.prepend)
        self.relay = self.relay or other.relay


@dataclass(slots=True)
class Outcome:
    verdict: Accept | Reject | Defer
    effects: Effects
    logs: list[tuple[str, str]]      # (event, text): "hold", "warn", "reject_warning", ...; the
                                     # caller logs "<id>: <event>: <CMD> from <client>: <text>; from=..."
    problems: list[str] = field(default_factory=list)   # warnings for the log (config, tables)


class Site(Protocol):
    """What the restrictions need to know about this system (core/resolve.py has it)."""

    def address_class(self, domain: str) -> str: ...

    def unlisted(self, address: str, sender: bool) -> tuple[int, str, str] | None:
        """reject_unlisted_recipient/_sender's question: (code, status, text) such as
        (550, "5.1.1", "User unknown in local recipient table") when the address's class
        has a table of valid users that lacks it, or None. May raise TableTempError."""
        ...


@dataclass(frozen=True, slots=True)
class Codes:
    """Reply codes, as the postconf(5) *_code parameters."""
    reject: int = 554                    # reject_code
    defer: int = 450                     # defer_code
    access_map_reject: int = 554         # access_map_reject_code
    access_map_defer: int = 450          # access_map_defer_code
    relay_domains_reject: int = 554      # relay_domains_reject_code
    non_fqdn: int = 504                  # non_fqdn_reject_code
    invalid_hostname: int = 501          # invalid_hostname_reject_code


TABLE_RESTRICTIONS = ("check_client_access", "check_helo_access", "check_sender_access",
                      "check_recipient_access")
_ALIASES = {"reject_non_fqdn_hostname": "reject_non_fqdn_helo_hostname",
            "reject_invalid_hostname": "reject_invalid_helo_hostname"}

TEMP_LOOKUP = "Temporary lookup failure"
CONFIG_ERROR = Reply(451, "4.3.5", "Server configuration error")


class _Abort(Exception):
    """Stops the whole evaluation with this verdict (lookup failures, config errors)."""

    def __init__(self, verdict: Reject | Defer) -> None:
        self.verdict = verdict


@dataclass(frozen=True, slots=True)
class _Step:
    name: str
    table: Table | None = None
    problem: str = ""                 # set: this step answers 451 4.3.5


class _FailedTable:
    """A table that could not be opened (Postfix's "surrogate"): every lookup fails."""

    def __init__(self, name: str, error: str) -> None:
        self.name = name
        self.error = error

    def lookup(self, key: str) -> str | None:
        raise TableTempError(f"{self.name} is unavailable: {self.error}")


@dataclass(slots=True)
class _State:
    req: Request
    relay: bool = False
    defer_if_permit: Reply | None = None
    defer_if_reject: Reply | None = None
    warn_if_reject: bool = False
    rcpt_checked: bool = False
    effects: Effects = field(default_factory=Effects)
    logs: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


# -- the evaluator --------------------------------------------------------------------------

class Policy:
    """The restriction lists of one smtpd process, compiled once."""

    def __init__(self, lists: dict[str, str], site: Site, open_table: Callable[[str], Table], *,
                 codes: Codes = Codes(), delimiter: str = "", parent_matches_subdomains: bool = True,
                 null_key: str = "<>", delay_reject: bool = True,
                 reject_unlisted_recipient: bool = True, reject_unlisted_sender: bool = False) -> None:
        unknown = set(lists) - set(STAGES)
        if unknown:
            raise ValueError(f"unknown restriction stages: {sorted(unknown)}")
        self.site = site
        self._open = open_table
        self.codes = codes
        self.delimiter = delimiter
        self.parent_matches = parent_matches_subdomains
        self.null_key = null_key
        self.delay_reject = delay_reject
        self.reject_unlisted_recipient = reject_unlisted_recipient
        self.reject_unlisted_sender = reject_unlisted_sender
        self._tables: dict[str, Table] = {}
        self._nested: dict[str, list[_Step]] = {}
        self.problems: list[str] = []         # found while compiling: the caller logs them
        self.lists = {stage: self.compile(lists.get(stage, "")) for stage in STAGES}

    # -- compiling ---------------------------------------------------------------------------

    def compile(self, value: str | list[str]) -> list[_Step]:
        tokens = split_table_list(value) if isinstance(value, str) else list(value)
        steps: list[_Step] = []
        i = 0
        while i < len(tokens):
            name = _ALIASES.get(tokens[i], tokens[i])
            i += 1
            if name in TABLE_RESTRICTIONS:
                if i >= len(tokens) or ":" not in tokens[i]:
                    problem = f"restriction {name} needs a type:table argument"
                    self.problems.append(problem)
                    steps.append(_Step(name, problem=problem))
                    continue
                steps.append(_Step(name, self._table(tokens[i])))
                i += 1
            elif name in _SIMPLE:
                steps.append(_Step(name))
            else:
                problem = f"unknown smtpd restriction: {name!r}"
                self.problems.append(problem)
                steps.append(_Step(name, problem=problem))
        return steps

    def _table(self, spec: str) -> Table:
        t = self._tables.get(spec)
        if t is None:
            try:
                t = self._open(spec)
            except (ConfigError, TableTempError, OSError) as e:
                self.problems.append(f"{spec} is unavailable: {e}")
                t = _FailedTable(spec, str(e))
            self._tables[spec] = t
        return t

    # -- entry points --------------------------------------------------------------------------

    def check_mail(self, req: Request, txn: Effects | None = None) -> Outcome:
        """MAIL FROM with smtpd_delay_reject = no: the client, HELO and sender lists."""
        st = _State(req, relay=bool(txn and txn.relay))
        return self._run_stages(st, ("client", "helo", "sender"), final=False)

    def check_rcpt(self, req: Request, txn: Effects | None = None) -> Outcome:
        """RCPT TO: (client, HELO, sender when delayed), relay, recipient, then unlisted users."""
        if txn is not None and txn.discard is not None:
            return Outcome(ACCEPT, Effects(), [])
        st = _State(req, relay=bool(txn and txn.relay))
        stages = ("client", "helo", "sender") if self.delay_reject else ()
        return self._run_stages(st, (*stages, "relay", "recipient"), final=True)

    def check_data(self, req: Request, txn: Effects | None = None) -> Outcome:
        """DATA: smtpd_data_restrictions."""
        if txn is not None and txn.discard is not None:
            return Outcome(ACCEPT, Effects(), [])
        st = _State(req, relay=bool(txn and txn.relay))
        return self._run_stages(st, ("data",), final=False)

    def _run_stages(self, st: _State, stages: tuple[str, ...], final: bool) -> Outcome:
        verdict: Accept | Reject | Defer = ACCEPT
        try:
            for stage in stages:
                v = self._run_list(st, self.lists[stage], _context(stage, st.req), 0)
                if isinstance(v, (Reject, Defer)):
                    verdict = v
                    break
            else:
                if st.defer_if_permit is not None:
                    verdict = Defer(st.defer_if_permit)
                elif final and st.effects.discard is None:
                    verdict = self._implicit_unlisted(st)
        except _Abort as a:
            verdict = a.verdict
        if stages[0] == "client" and not final and isinstance(verdict, Accept):
            st.effects.relay = st.relay          # MAIL-time RELAY holds for the transaction
        return Outcome(verdict, st.effects, st.logs, st.problems)

    def _implicit_unlisted(self, st: _State) -> Accept | Reject | Defer:
        req = st.req
        if self.reject_unlisted_sender and req.sender:
            v = self._unlisted(st, req.sender, "Sender address", sender=True)
            if not isinstance(v, Continue):
                return v
        if self.reject_unlisted_recipient and not st.rcpt_checked and req.recipient is not None:
            v = self._unlisted(st, req.recipient, "Recipient address", sender=False)
            if not isinstance(v, Continue):
                return v
        return ACCEPT

    # -- one list --------------------------------------------------------------------------

    def _run_list(self, st: _State, steps: list[_Step], ctx: tuple[str, str], depth: int) -> Verdict:
        for step in steps:
            if st.effects.discard is not None:
                break       # DISCARD: nothing more to decide, the message goes nowhere
            warn, st.warn_if_reject = st.warn_if_reject, False
            if step.name == "warn_if_reject":
                st.warn_if_reject = True
                continue
            v = self._step(st, step, ctx, depth)
            if isinstance(v, Reject) and warn:
                st.logs.append(("reject_warning", str(v.reply)))
                continue
            if not isinstance(v, Continue):
                return v
        return CONTINUE

    def _step(self, st: _State, step: _Step, ctx: tuple[str, str], depth: int) -> Verdict:
        if step.problem:
            st.problems.append(step.problem)
            raise _Abort(Defer(CONFIG_ERROR))
        if step.table is not None:
            return self._check_access(st, step, ctx, depth)
        return _SIMPLE[step.name](self, st, ctx)

    # -- replies ---------------------------------------------------------------------------

    def reject(self, st: _State, code: int, enhanced: str, ctx: tuple[str, str], text: str,
               bare: bool = False) -> Reject | Defer:
        """A refusal "<name>: Class rejected: text" (bare: "<name>: text"), softened by
        DEFER_IF_REJECT when it is a 5xx."""
        name, cls = ctx
        body = f"<{name}>: {text}" if bare else f"<{name}>: {cls} rejected: {text}"
        reply = Reply(code, enhanced, body, close=code in (421, 521))
        if code >= 500:
            if st.defer_if_reject is not None:
                return Defer(st.defer_if_reject)
            return Reject(reply)
        return Defer(reply)

    # -- check_*_access ----------------------------------------------------------------------

    def _check_access(self, st: _State, step: _Step, ctx: tuple[str, str], depth: int) -> Verdict:
        req = st.req
        assert step.table is not None
        tables = [step.table]
        hit: tuple[str, str] | None = None
        try:
            if step.name == "check_client_access":
                actx = (req.namaddr, "Client host")
                if req.client_name and req.client_name != "unknown":
                    hit = first_match(tables, parent_domains(req.client_name, self.parent_matches))
                if hit is None:
                    hit = first_match(tables, ip_keys(req.client_addr), full=req.client_addr)
            elif step.name == "check_helo_access":
                if not req.helo:
                    return CONTINUE
                actx = (req.helo, "Helo command")
                hit = first_match(tables, parent_domains(req.helo, self.parent_matches), full=req.helo)
            elif step.name == "check_sender_access":
                if req.sender is None:
                    return CONTINUE
                actx = (req.sender, "Sender address")
                hit = first_match(tables, access_address_keys(
                    req.sender, self.delimiter, self.parent_matches, self.null_key),
                    full=req.sender or self.null_key)
            else:
                if req.recipient is None:
                    return CONTINUE
                actx = (req.recipient, "Recipient address")
                hit = first_match(tables, access_address_keys(
                    req.recipient, self.delimiter, self.parent_matches, self.null_key),
                    full=req.recipient or self.null_key)
        except TableTempError as e:
            st.problems.append(f"{step.name} {step.table.name}: table lookup problem: {e}")
            raise _Abort(Defer(Reply(451, "4.3.0", f"<{ctx[0]}>: {TEMP_LOOKUP}"))) from None
        if hit is None:
            return CONTINUE
        return self._action(st, hit[1], actx, step.table.name, depth)

    def _action(self, st: _State, value: str, ctx: tuple[str, str], table: str, depth: int) -> Verdict:
        try:
            act = A.parse_action(value)
        except A.AccessSyntaxError as e:
            st.problems.append(f"{table}: {e}")
            raise _Abort(Defer(CONFIG_ERROR)) from None
        c = self.codes
        name, cls = ctx
        kind, text = act.kind, act.text
        if kind == A.OK:
            return ACCEPT
        if kind == A.RELAY:
            st.relay = True
            return ACCEPT
        if kind == A.DUNNO:
            return CONTINUE
        if kind == A.REJECT:
            return self.reject(st, c.access_map_reject, "5.7.1", ctx, text or "Access denied")
        if kind == A.DEFER:
            return self.reject(st, c.access_map_defer, "4.7.1", ctx, text or "Access denied")
        if kind in (A.DEFER_IF_REJECT, A.DEFER_IF_PERMIT):
            reply = Reply(c.access_map_defer, "4.7.1", f"<{name}>: {cls} rejected: {text or 'Access denied'}")
            if kind == A.DEFER_IF_REJECT:
                st.defer_if_reject = reply
            else:
                st.defer_if_permit = reply
            return CONTINUE
        if kind == A.CODE:
            default = "4.7.1" if act.code < 500 else "5.7.1"
            enhanced = dsn_fix(act.enhanced, cls) if act.enhanced else default
            return self.reject(st, act.code, enhanced, ctx, text or "Access denied")
        if kind == A.DISCARD:
            st.effects.discard = text or f"<{name}>: {cls} triggers DISCARD action"
            st.logs.append(("discard", f"<{name}>: {cls} {text or 'triggers DISCARD action'}"))
            return ACCEPT
        if kind == A.HOLD:
            st.effects.hold = text or f"<{name}>: {cls} triggers HOLD action"
            st.logs.append(("hold", f"<{name}>: {cls} {text or 'triggers HOLD action'}"))
            return CONTINUE
        if kind in (A.REDIRECT, A.FILTER, A.BCC):
            setattr(st.effects, kind, text)
            st.logs.append((kind, f"<{name}>: {cls} triggers {kind.upper()} {text}"))
            return CONTINUE
        if kind == A.PREPEND:
            st.effects.prepend.append(text)
            return CONTINUE
        if kind in (A.WARN, A.INFO):
            st.logs.append((kind, f"<{name}>: {cls} {text or 'triggers ' + kind.upper() + ' action'}"))
            return CONTINUE
        # A list of restriction names.
        if depth >= _MAX_DEPTH:
            st.problems.append(f"{table}: restrictions nested deeper than {_MAX_DEPTH}")
            raise _Abort(Defer(CONFIG_ERROR))
        key = " ".join(act.restrictions)
        steps = self._nested.get(key)
        if steps is None:
            before = len(self.problems)
            steps = self._nested[key] = self.compile(list(act.restrictions))
            del self.problems[before:]          # reported when the step runs
        return self._run_list(st, steps, ctx, depth + 1)

    # -- address and name checks -----------------------------------------------------------

    def _unlisted(self, st: _State, address: str, cls: str, sender: bool) -> Verdict:
        try:
            found = self.site.unlisted(address, sender)
        except TableTempError as e:
            st.problems.append(f"<{address}>: {cls.lower()} lookup problem: {e}")
            raise _Abort(Defer(Reply(451, "4.3.0", f"<{address}>: {TEMP_LOOKUP}"))) from None
        if found is None:
            return CONTINUE
        code, status, text = found
        if sender:
            status = f"{status[0]}.1.0"
        return self.reject(st, code, status, (address, cls), text)

    def _auth_destination(self, st: _State) -> bool | None:
        """reject_unauth_destination's test; None when there is no recipient to judge."""
        rcpt = st.req.recipient
        if rcpt is None:
            return None
        local, at, domain = rcpt.rpartition("@")
        if not at:
            local, domain = rcpt, ""
        if any(ch in local for ch in "@!%"):
            return False           # sender-specified routing (user@elsewhere@domain)
        return self.site.address_class(domain) != DEFAULT


def dsn_fix(status: str, cls: str) -> str:
    """access(5) ENHANCED STATUS CODES: make a table's status fit what is being rejected."""
    klass, subject, detail = status.split(".")
    if subject != "1":
        return status
    if cls == "Sender address" and detail in ("1", "2", "3", "4", "5", "6"):
        return f"{klass}.1.{'8' if detail == '2' else '7'}"
    if cls == "Recipient address" and detail in ("7", "8"):
        return f"{klass}.1.{'2' if detail == '8' else '1'}"
    if cls not in ("Sender address", "Recipient address"):
        return f"{klass}.0.0"
    return status


def _context(stage: str, req: Request) -> tuple[str, str]:
    if stage == "client":
        return req.namaddr, "Client host"
    if stage == "helo":
        return req.helo, "Helo command"
    if stage == "sender":
        return req.sender or "", "Sender address"
    if stage == "data":
        return "DATA", "Data command"
    return req.recipient or "", "Recipient address"


# -- the simple restrictions -------------------------------------------------------------------

_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\Z")


def valid_hostname(name: str) -> bool:
    """RFC 1035 names as Postfix accepts them (underscores allowed); not all-numeric."""
    name = name.rstrip(".") if name.endswith(".") and not name.endswith("..") else name
    if not name or len(name) > 255:
        return False
    labels = name.split(".")
    if not all(_LABEL.match(label) for label in labels):
        return False
    return not all(label.isdigit() for label in labels)


def valid_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text[5:] if text.lower().startswith("ipv6:") else text)
        return True
    except ValueError:
        return False


def _helo_literal(helo: str) -> str | None:
    return helo[1:-1] if helo.startswith("[") and helo.endswith("]") else None


def _fqdn_address(address: str) -> bool:
    local, at, domain = address.rpartition("@")
    if not at:
        return False
    if domain.startswith("[") and domain.endswith("]"):
        return True
    return "." in domain.strip(".")


def _permit(cond: Callable[[_State], bool]) -> Callable[[Policy, _State, tuple[str, str]], Verdict]:
    return lambda p, st, ctx: ACCEPT if cond(st) else CONTINUE


def _unauth(defer: bool) -> Callable[[Policy, _State, tuple[str, str]], Verdict]:
    def run(p: Policy, st: _State, ctx: tuple[str, str]) -> Verdict:
        ok = p._auth_destination(st)
        if ok is None or ok or st.relay:
            return CONTINUE
        code = p.codes.relay_domains_reject
        if defer:
            code = 400 + code % 100      # postconf(5): "the reply code is 4XX instead of 5XX"
        rctx = (st.req.recipient or "", "Recipient address")
        return p.reject(st, code, "4.7.1" if defer else "5.7.1", rctx, "Relay access denied", bare=True)
    return run


def _non_fqdn(which: str) -> Callable[[Policy, _State, tuple[str, str]], Verdict]:
    def run(p: Policy, st: _State, ctx: tuple[str, str]) -> Verdict:
        addr = st.req.sender if which == "sender" else st.req.recipient
        if not addr or _fqdn_address(addr):
            return CONTINUE
        cls = "Sender address" if which == "sender" else "Recipient address"
        return p.reject(st, p.codes.non_fqdn, "5.5.2", (addr, cls), "need fully-qualified address")
    return run


def _helo_fqdn(p: Policy, st: _State, ctx: tuple[str, str]) -> Verdict:
    helo = st.req.helo
    if not helo:
        return CONTINUE
    lit = _helo_literal(helo)
    if (lit is not None and valid_address(lit)) or ("." in helo.strip(".") and valid_hostname(helo)):
        return CONTINUE
    return p.reject(st, p.codes.non_fqdn, "5.5.2", (helo, "Helo command"), "need fully-qualified hostname")


def _helo_valid(p: Policy, st: _State, ctx: tuple[str, str]) -> Verdict:
    helo = st.req.helo
    if not helo:
        return CONTINUE
    lit = _helo_literal(helo)
    ok = valid_address(lit) if lit is not None else (valid_hostname(helo) or valid_address(helo))
    if ok:
        return CONTINUE
    return p.reject(st, p.codes.invalid_hostname, "5.5.2", (helo, "Helo command"), "Invalid name")


def _unlisted_rcpt(p: Policy, st: _State, ctx: tuple[str, str]) -> Verdict:
    if st.req.recipient is None:
        return CONTINUE
    st.rcpt_checked = True
    return p._unlisted(st, st.req.recipient, "Recipient address", sender=False)


def _unlisted_sender(p: Policy, st: _State, ctx: tuple[str, str]) -> Verdict:
    if not st.req.sender:
        return CONTINUE
    return p._unlisted(st, st.req.sender, "Sender address", sender=True)


def _set_defer_if(kind: str) -> Callable[[Policy, _State, tuple[str, str]], Verdict]:
    def run(p: Policy, st: _State, ctx: tuple[str, str]) -> Verdict:
        reply = Reply(p.codes.defer, "4.7.1", f"<{ctx[0]}>: {ctx[1]} rejected: Access denied")
        if kind == "permit":
            st.defer_if_permit = reply
        else:
            st.defer_if_reject = reply
        return CONTINUE
    return run


_SIMPLE: dict[str, Callable[[Policy, _State, tuple[str, str]], Verdict]] = {
    "permit": lambda p, st, ctx: ACCEPT,
    "reject": lambda p, st, ctx: p.reject(st, p.codes.reject, "5.7.1", ctx, "Access denied"),
    "defer": lambda p, st, ctx: p.reject(st, p.codes.defer, "4.7.1", ctx, "Access denied"),
    "permit_mynetworks": _permit(lambda st: st.req.trusted),
    "permit_sasl_authenticated": _permit(lambda st: st.req.sasl),
    "permit_auth_destination": lambda p, st, ctx: ACCEPT if p._auth_destination(st) else CONTINUE,
    "reject_unauth_destination": _unauth(defer=False),
    "defer_unauth_destination": _unauth(defer=True),
    "reject_unlisted_recipient": _unlisted_rcpt,
    "reject_unlisted_sender": _unlisted_sender,
    "reject_non_fqdn_sender": _non_fqdn("sender"),
    "reject_non_fqdn_recipient": _non_fqdn("recipient"),
    "reject_non_fqdn_helo_hostname": _helo_fqdn,
    "reject_invalid_helo_hostname": _helo_valid,
    "defer_if_permit": _set_defer_if("permit"),
    "defer_if_reject": _set_defer_if("reject"),
    "warn_if_reject": lambda p, st, ctx: CONTINUE,      # handled in _run_list
}
