"""What an SMTP server session takes from main.cf, built in one place for smtpd and
for `sendmail -bs`.

Postfix runs the same program for both (`sendmail -bs` starts `smtpd -S` on the
caller's stdin), so a client sees the same banner, EHLO keywords, SIZE, VRFY answer,
SMTPUTF8 and envelope syntax rules, and meets the same limits, whichever way it came
in. Here the two drivers differ (asyncio sockets in daemons/smtpd.py, a blocking
loop on stdio in cli/sendmail.py), so both build their settings and their codec
with `smtp_settings` and `SmtpSettings.connection`, and cannot drift apart.
Pure: reads the configuration, no IO. The one deliberate difference, DSN, is a
parameter of `smtp_settings` (see there).

smtpd_discard_ehlo_keywords, as Postfix 3.7 does it (checked on the wire): a
discarded keyword is not announced, whatever else the settings say; "dsn" also
refuses RET, ENVID, NOTIFY and ORCPT with 501 5.7.1 and "smtputf8" refuses MAIL's
SMTPUTF8 parameter (555); "8bitmime", "size", "vrfy" and "pipelining" only hide
the keyword (BODY=, SIZE= and VRFY still work). The driver logs `ehlo_log` at each
EHLO (not HELO).

smtpd_discard_ehlo_keyword_address_maps (DiscardMaps), as Postfix's smtpd: at
connect, before the banner, the tables are asked in order for the client address
(the bare address text, IPv4-mapped IPv6 as IPv4; a cidr: table matches it as an
address, a hash: or inline: table only as that exact string); the first result
replaces smtpd_discard_ehlo_keywords for the whole session: EHLO reply, log line
and the DSN/SMTPUTF8 parameter refusals alike. No result: the global list. A
lookup error: the global list, and EHLO is answered 421 (the driver's part).
The tables are opened once per process; DiscardMaps does the lookups and nothing
else (the Table objects do the IO).

Next: proto/smtp_server.py (the codec), daemons/smtpd.py, cli/sendmail.py.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from ..config.main_cf import MainConfig
from .errors import ConfigError
from ..proto import dsn as proto_dsn
from ..proto import replies as R
from ..proto.smtp_server import DEFAULT_MAIL_PARAMS, ServerConnection
from ..tables import Table, TableTempError, split_table_list


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    hostname: str                   # myhostname
    banner: R.Reply                 # smtpd_banner
    helo: R.Reply
    ehlo: R.Reply                   # keywords in Postfix's order: SIZE message_size_limit,
                                    # VRFY, DSN, SMTPUTF8 as the settings say
    vrfy: R.Reply                   # disable_vrfy_command
    smtputf8: bool                  # smtputf8_enable
    strict_envelopes: bool          # strict_rfc821_envelopes
    size_limit: int                 # message_size_limit (0: none)
    line_limit: int                 # line_length_limit
    hard_errors: int                # smtpd_hard_error_limit
    junk_limit: int                 # smtpd_junk_command_limit
    rcpt_limit: int                 # smtpd_recipient_limit
    overshoot_limit: int            # smtpd_recipient_overshoot_limit
    mail_params: frozenset[str]     # MAIL FROM parameters accepted
    rcpt_params: frozenset[str]     # RCPT TO parameters accepted
    discard: frozenset[str] = frozenset()   # smtpd_discard_ehlo_keywords, known names upper-case
    ehlo_log: str = ""              # logged (info) at each EHLO; "" for nothing
    refused_params: tuple[tuple[str, R.Reply], ...] = ()    # MAIL/RCPT parameter -> its refusal

    def connection(self) -> ServerConnection:
        """A codec for one session, with these limits and parameters."""
        return ServerConnection(self.hostname, max_line=self.line_limit, message_size_limit=self.size_limit,
                                max_errors=self.hard_errors, max_junk=self.junk_limit,
                                max_overshoot=self.overshoot_limit,
                                mail_params=self.mail_params, rcpt_params=self.rcpt_params,
                                strict_envelopes=self.strict_envelopes,
                                refused_params=dict(self.refused_params))


# The keywords smtpd_discard_ehlo_keywords knows, in the order Postfix's log line
# lists them (its keyword table, not the EHLO order); other words are ignored, as
# Postfix ignores them. SILENT-DISCARD is the pseudo keyword that stops the log line.
DISCARD_NAMES = ("8BITMIME", "AUTH", "ETRN", "PIPELINING", "SIZE", "VERP", "VRFY", "XCLIENT",
                 "XFORWARD", "STARTTLS", "ENHANCEDSTATUSCODES", "DSN", "SMTPUTF8", "CHUNKING")
SILENT_DISCARD = "SILENT-DISCARD"
# Postfix 3.7 names SMTPUTF8 so in that log line (a slip in its keyword table, seen on
# the wire); kept, so that log scrapers written for Postfix see the same text.
_LOGGED_AS = {"SMTPUTF8": "EHLO_MASK_SMTPUTF8"}


def discard_keywords(words: list[str]) -> frozenset[str]:
    """The known keywords among `words` (any case; "silent-discard" included)."""
    names = {w.upper() for w in words}
    return frozenset(names & {*DISCARD_NAMES, SILENT_DISCARD})


def discard_log_line(discard: frozenset[str]) -> str:
    """What Postfix logs at EHLO for this discard list: nothing when it is empty or
    has silent-discard, nor (as Postfix 3.7) when it hides ENHANCEDSTATUSCODES."""
    if not discard or SILENT_DISCARD in discard or "ENHANCEDSTATUSCODES" in discard:
        return ""
    return "discarding EHLO keywords: " + " ".join(_LOGGED_AS.get(n, n) for n in DISCARD_NAMES if n in discard)


def smtp_settings(cfg: MainConfig, *, dsn: bool = True, discard_words: list[str] | None = None) -> SmtpSettings:
    """The session settings main.cf asks for. `dsn=False` leaves out DSN (RFC 3461:
    the keyword and its MAIL/RCPT parameters): `sendmail -bs` writes to maildrop,
    which cannot carry NOTIFY or ORCPT per recipient, and offering what would be
    dropped is worse than not offering it (Postfix's smtpd -S offers DSN).
    `discard_words` replaces smtpd_discard_ehlo_keywords (a client's result from
    smtpd_discard_ehlo_keyword_address_maps: see DiscardMaps)."""
    hostname = cfg.get("myhostname")
    size_limit = cfg.get_int("message_size_limit")
    utf8 = cfg.get_bool("smtputf8_enable")     # no: not announced, MAIL ... SMTPUTF8 refused
    vrfy = not cfg.get_bool("disable_vrfy_command")     # announced when enabled, as Postfix does
    if discard_words is None:
        discard_words = cfg.get_list("smtpd_discard_ehlo_keywords")
    discard = discard_keywords(discard_words)
    refused: tuple[tuple[str, R.Reply], ...] = ()
    if "DSN" in discard:        # even in sendmail -bs, as Postfix's smtpd -S
        dsn = False
        refused = tuple((p, R.DSN_DISABLED) for p in sorted(proto_dsn.MAIL_PARAMS | proto_dsn.RCPT_PARAMS))
    mail_params = DEFAULT_MAIL_PARAMS | (proto_dsn.MAIL_PARAMS if dsn else frozenset())
    if not utf8 or "SMTPUTF8" in discard:
        mail_params -= {"SMTPUTF8"}
    return SmtpSettings(
        hostname=hostname,
        banner=R.Reply(220, "", cfg.get("smtpd_banner")),
        helo=R.helo_reply(hostname),
        ehlo=R.ehlo_reply(hostname, size_limit, ("DSN",) if dsn else (), smtputf8=utf8, vrfy=vrfy,
                          discard=discard),
        vrfy=R.VRFY_REPLY if vrfy else R.VRFY_DISABLED,
        smtputf8=utf8,
        strict_envelopes=cfg.get_bool("strict_rfc821_envelopes"),
        size_limit=size_limit,
        line_limit=cfg.get_int("line_length_limit"),
        hard_errors=cfg.get_int("smtpd_hard_error_limit"),
        junk_limit=cfg.get_int("smtpd_junk_command_limit"),
        rcpt_limit=cfg.get_int("smtpd_recipient_limit"),
        overshoot_limit=cfg.get_int("smtpd_recipient_overshoot_limit"),
        mail_params=frozenset(mail_params),
        rcpt_params=proto_dsn.RCPT_PARAMS if dsn else frozenset(),
        discard=discard,
        ehlo_log=discard_log_line(discard),
        refused_params=refused,
    )


# Postfix splits a keyword list (main.cf or a table's result) on commas and white space.
_WORDS = re.compile(r"[\s,]+")


def lookup_key(addr: str) -> str:
    """The key Postfix looks the client up with: its address as text, an IPv4-mapped
    IPv6 address as the IPv4 one (Postfix's smtpd converts those at connect)."""
    low = addr.lower()
    if low.startswith("::ffff:") and "." in low:
        return low[7:]
    return addr


class _UnopenedTable:
    """A table that could not be opened (Postfix's surrogate): every lookup fails."""

    def __init__(self, name: str, error: str) -> None:
        self.name = name
        self.error = error

    def lookup(self, key: str) -> str | None:
        raise TableTempError(f"{self.name} is unavailable: {self.error}")


class DiscardMaps:
    """smtpd_discard_ehlo_keyword_address_maps of one process: its tables, opened once
    (here, at process start and at each reload), and the settings for each distinct
    result, built once and kept (a bounded cache: results come from the
    administrator's tables, so they are few)."""

    CACHE = 256

    def __init__(self, cfg: MainConfig, base: SmtpSettings, open_table: Callable[[str], Table], *,
                 dsn: bool = True) -> None:
        self.cfg = cfg
        self.base = base
        self.dsn = dsn
        self.problems: list[str] = []         # found while opening: the caller logs them
        self.tables: list[Table] = []
        for spec in split_table_list(cfg.get("smtpd_discard_ehlo_keyword_address_maps")):
            try:
                self.tables.append(open_table(spec))
            except (ConfigError, TableTempError, OSError) as e:
                self.problems.append(f"{spec} is unavailable: {e}")
                self.tables.append(_UnopenedTable(spec, str(e)))
        self._settings: dict[str, SmtpSettings] = {}

    def __bool__(self) -> bool:
        return bool(self.tables)

    def settings_for(self, addr: str) -> SmtpSettings:
        """The settings of a session with the client at `addr`: the base ones, or those
        of the first table that has a result for it. TableTempError when a table
        cannot answer (the message names the table and the key, as Postfix's)."""
        key = lookup_key(addr)
        for table in self.tables:
            try:
                words = table.lookup(key)
            except TableTempError as e:
                raise TableTempError(f'{table.name} lookup error for "{key}": {e}') from e
            if words is not None:
                return self.for_words(words)
        return self.base

    def for_words(self, words: str) -> SmtpSettings:
        s = self._settings.get(words)
        if s is None:
            if len(self._settings) >= self.CACHE:
                self._settings.clear()
            s = smtp_settings(self.cfg, dsn=self.dsn, discard_words=[w for w in _WORDS.split(words) if w])
            self._settings[words] = s
        return s
