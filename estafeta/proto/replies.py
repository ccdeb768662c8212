"""SMTP replies: the Reply type and the one reply catalogue.

Owns every reply text the server sends. Code and tests both import from here, so
a reply is changed in one place. Text sent to clients stays generic; details go to
the log (STYLE 4). Enhanced status codes: RFC 3463, RFC 5248 registry.
Next: states.py (which replies move the session state), smtp_server.py.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    enhanced: str = ""      # "2.0.0"; empty for greeting/HELO-style replies
    text: str = ""
    lines: tuple[str, ...] = ()   # extra lines before `text` (EHLO keywords, HELP)
    close: bool = False           # the server closes the connection after this reply

    @property
    def is_positive(self) -> bool:
        return 200 <= self.code < 400

    def to_bytes(self) -> bytes:
        """Serialize, multi-line as RFC 5321 4.2.1: every line but the last has '-'."""
        all_lines = [*self.lines, self.text]
        out = []
        prefix = f"{self.enhanced} " if self.enhanced else ""
        for i, line in enumerate(all_lines):
            sep = "-" if i < len(all_lines) - 1 else " "
            out.append(f"{self.code}{sep}{prefix}{line}\r\n")
        data = "".join(out).encode("utf-8", "surrogateescape")
        if len(data) <= MAX_REPLY_LINE:
            return data
        # RFC 5321 4.5.3.1.5: a reply line is at most 512 octets with its CRLF. A text
        # that quotes the client (a 490-octet address) is cut, never sent over-long.
        return b"".join(_cut(line) + b"\r\n" for line in data.split(b"\r\n")[:-1])

    def with_text(self, text: str) -> "Reply":
        return Reply(self.code, self.enhanced, text, self.lines, self.close)

    def __str__(self) -> str:
        return f"{self.code} {self.enhanced + ' ' if self.enhanced else ''}{self.text}"


MAX_REPLY_LINE = 512       # octets, CRLF included (RFC 5321 4.5.3.1.5)


def _cut(line: bytes) -> bytes:
    """At most 510 octets, not ending inside a UTF-8 sequence (SMTPUTF8 addresses)."""
    if len(line) <= MAX_REPLY_LINE - 2:
        return line
    return line[:MAX_REPLY_LINE - 2].decode("utf-8", "ignore").encode("utf-8")


# --------------------------------------------------------------------------
# The catalogue. Wording follows Postfix's smtpd where it has one, so that
# operators and client-side log scrapers see familiar text.
# --------------------------------------------------------------------------

def greeting(hostname: str) -> Reply:
    """220 banner (RFC 5321 4.3.1). No software name or version: nothing to fingerprint."""
    return Reply(220, "", f"{hostname} ESMTP")


def helo_reply(hostname: str) -> Reply:
    """Answer to HELO (RFC 5321 4.1.1.1): one line, no extensions."""
    return Reply(250, "", hostname)


# Where each EHLO keyword goes: the order Postfix 3.7's smtpd lists them in (seen on
# the wire, tests/interop/test_ehlo_postfix.py). ETRN, XCLIENT, XFORWARD and CHUNKING
# are here for their place only: the codec does not implement them, so no caller may
# offer them. A keyword missing from the list goes before ENHANCEDSTATUSCODES.
EHLO_ORDER = ("PIPELINING", "SIZE", "VRFY", "ETRN", "STARTTLS", "AUTH", "XCLIENT", "XFORWARD",
              "ENHANCEDSTATUSCODES", "8BITMIME", "DSN", "SMTPUTF8", "CHUNKING")
_UNLISTED = EHLO_ORDER.index("ENHANCEDSTATUSCODES") - 0.5


def _ehlo_name(keyword: str) -> str:
    return keyword.replace("=", " ").split(" ", 1)[0].upper()     # "AUTH=PLAIN" is AUTH


def _ehlo_rank(keyword: str) -> float:
    name = _ehlo_name(keyword)
    return EHLO_ORDER.index(name) if name in EHLO_ORDER else _UNLISTED


def ehlo_reply(hostname: str, size_limit: int, extra: tuple[str, ...] = (),
               *, smtputf8: bool = True, vrfy: bool = True,
               discard: frozenset[str] = frozenset()) -> Reply:
    """Multi-line EHLO/LHLO answer (RFC 5321 4.1.1.1), one extension keyword a line,
    in Postfix's order (EHLO_ORDER) whatever the order of `extra`.

    `extra` carries keywords the driver offers on top of the codec's own
    (DSN, STARTTLS, AUTH PLAIN LOGIN...). `vrfy`: VRFY is announced when the
    command is enabled (disable_vrfy_command = no), as Postfix does. A size limit
    of 0 (none) is announced as a bare SIZE, as Postfix does (RFC 1870 4: the
    number is optional). `discard`: upper-case keyword names not to announce
    (smtpd_discard_ehlo_keywords), whichever line would carry them.
    """
    keywords = ["PIPELINING", f"SIZE {size_limit}" if size_limit > 0 else "SIZE", *extra,
                "ENHANCEDSTATUSCODES", "8BITMIME"]
    if vrfy:
        keywords.append("VRFY")
    if smtputf8:
        keywords.append("SMTPUTF8")
    if discard:
        keywords = [k for k in keywords if _ehlo_name(k) not in discard]
    keywords.sort(key=_ehlo_rank)       # stable: two AUTH lines keep their order
    return Reply(250, "", keywords[-1], lines=(hostname, *keywords[:-1]))


def queued(qid: str) -> Reply:
    """End-of-data acceptance naming the queue id, as Postfix does."""
    return Reply(250, "2.0.0", f"Ok: queued as {qid}")


# Positive replies.
OK = Reply(250, "2.0.0", "Ok")
SENDER_OK = Reply(250, "2.1.0", "Ok")        # RFC 3463 X.1.0: about the sender
RECIPIENT_OK = Reply(250, "2.1.5", "Ok")     # RFC 3463 X.1.5: destination valid
NOOP = OK
RSET = OK
START_DATA = Reply(354, "", "End data with <CR><LF>.<CR><LF>")
BYE = Reply(221, "2.0.0", "Bye", close=True)
# RFC 5321 3.5.3: 252 when we will not say whether a mailbox exists.
VRFY_REPLY = Reply(252, "2.0.0", "Cannot VRFY user, but will accept message and attempt delivery")
HELP = Reply(214, "2.0.0", "Commands: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP")

# Sequence errors (RFC 5321 4.3.2: 503 bad sequence of commands).
NEED_MAIL = Reply(503, "5.5.1", "Error: need MAIL command")
NEED_RCPT = Reply(503, "5.5.1", "Error: need RCPT command")
NESTED_MAIL = Reply(503, "5.5.1", "Error: nested MAIL command")
SEND_HELO = Reply(503, "5.5.1", "Error: send HELO/EHLO first")
SEND_LHLO = Reply(503, "5.5.1", "Error: send LHLO first")

# Syntax errors. 500: the line itself is bad, or its verb unknown (Postfix answers an
# unknown verb 500, RFC 5321 4.2.4 allows 500 or 502); 501: the arguments are bad.
UNKNOWN_COMMAND = Reply(500, "5.5.2", "Error: command not recognized")
BAD_SYNTAX = Reply(500, "5.5.2", "Error: bad syntax")
BAD_UTF8 = Reply(500, "5.5.2", "Error: bad UTF-8 syntax")
LINE_TOO_LONG = Reply(500, "5.5.2", "Error: line too long")
CONTROL_CHARACTERS = Reply(501, "5.5.4", "Error: control characters not allowed")
# A bare LF in a command line: we answer and close. After a bare LF we no longer
# know which line ending the client meant, so every later command (and any
# pipelined DATA) could be framed differently by us and by whoever relayed it:
# the desync that SMTP smuggling exploits. Postfix's smtpd_forbid_bare_newline
# disconnects for the same reason. 500 because the line itself is malformed.
BARE_LF_COMMAND = Reply(500, "5.5.2", "Error: bare <LF> received", close=True)
# Postfix sends these two without an enhanced status code (none was negotiated yet).
SYNTAX_HELO = Reply(501, "", "Syntax: HELO hostname")
SYNTAX_EHLO = Reply(501, "", "Syntax: EHLO hostname")
SYNTAX_LHLO = Reply(501, "5.5.4", "Syntax: LHLO hostname")
SYNTAX_MAIL = Reply(501, "5.5.4", "Syntax: MAIL FROM:<address>")
SYNTAX_RCPT = Reply(501, "5.5.4", "Syntax: RCPT TO:<address>")
SYNTAX_DATA = Reply(501, "5.5.4", "Syntax: DATA")
SYNTAX_RSET = Reply(501, "5.5.4", "Syntax: RSET")
SYNTAX_VRFY = Reply(501, "5.5.4", "Syntax: VRFY address")
SYNTAX_VRFY_UTF8 = Reply(501, "5.5.4", "Syntax: VRFY address [SMTPUTF8]")   # smtputf8_enable = yes
VRFY_DISABLED = Reply(502, "5.5.1", "VRFY command is disabled")      # disable_vrfy_command
BAD_SENDER_SYNTAX = Reply(501, "5.1.7", "Bad sender address syntax")
BAD_RECIPIENT_SYNTAX = Reply(501, "5.1.3", "Bad recipient address syntax")
# The same reply to a VRFY argument that is no address (proto/vrfy.py): its own
# object, so that the driver knows to log Postfix's "Illegal address syntax" warning.
BAD_VRFY_ADDRESS = Reply(501, "5.1.3", "Bad recipient address syntax")
BAD_PARAM_SYNTAX = Reply(501, "5.5.4", "Error: bad parameter syntax")
BAD_SIZE_SYNTAX = Reply(501, "5.5.4", "Bad message size syntax")   # RFC 1870 6
# RFC 3461 4: malformed DSN parameters (Postfix's texts: "Error:" on the RCPT ones only).
BAD_RET = Reply(501, "5.5.4", "Bad RET parameter syntax")
BAD_ENVID = Reply(501, "5.5.4", "Bad ENVID parameter syntax")
BAD_NOTIFY = Reply(501, "5.5.4", "Error: Bad NOTIFY parameter syntax")
BAD_ORCPT = Reply(501, "5.5.4", "Error: Bad ORCPT parameter syntax")
# RFC 6531 3.5: a non-ASCII address needs the SMTPUTF8 parameter on MAIL.
# smtpd_discard_ehlo_keywords has "dsn": Postfix's answer to RET, ENVID, NOTIFY and ORCPT.
DSN_DISABLED = Reply(501, "5.7.1", "DSN support is disabled")
NEED_SMTPUTF8 = Reply(553, "5.6.7", "Must declare SMTPUTF8 to send unicode address")



def bad_param(param: str) -> Reply:
    """RFC 5321 4.1.1.11: a MAIL/RCPT parameter we do not take, named as the client
    wrote it ("xyz=1"), as Postfix does. Also Postfix's answer to a known keyword with
    a value it does not take (BODY=X, SMTPUTF8=x) or without its value (SIZE, NOTIFY)."""
    return Reply(555, "5.5.4", f"Unsupported option: {param}")


# Commands Postfix knows and estafeta does not implement: Postfix's answers when
# the feature is off (no TLS, no SASL, CHUNKING not announced, a client not in
# smtpd_authorized_xclient_hosts / smtpd_authorized_xforward_hosts, no domain in
# fast_flush_domains for ETRN: etrn_unavailable).
STARTTLS_NOT_IMPLEMENTED = Reply(502, "5.5.1", "Error: command not implemented")
SYNTAX_STARTTLS = Reply(501, "5.5.4", "Syntax: STARTTLS")
AUTH_NOT_ENABLED = Reply(503, "5.5.1", "Error: authentication not enabled")
SYNTAX_ETRN = Reply(500, "", "Syntax: ETRN domain")
MAIL_IN_PROGRESS = Reply(503, "5.5.1", "Error: MAIL transaction in progress")     # XCLIENT, XFORWARD
# Postfix answers ETRN without enhanced status codes.
ETRN_MAIL_IN_PROGRESS = Reply(503, "", "Error: MAIL transaction in progress")
ETRN_SEND_HELO = Reply(503, "", "Error: send HELO/EHLO first")
NOT_AUTHORIZED = Reply(550, "5.7.0", "Error: insufficient authorization")     # XCLIENT, XFORWARD


def etrn_unavailable(domain: str) -> Reply:
    """ETRN for a domain we keep no flush list for (Postfix, without a status code)."""
    return Reply(459, "", f"<{domain}>: service unavailable")


# BDAT without CHUNKING: its binary chunk would follow and be read as commands, so
# the session ends here (Postfix: 521 and disconnect).
BDAT_NOT_IMPLEMENTED = Reply(521, "5.5.1", "Error: command not implemented", close=True)
# DATA after MAIL when every RCPT was refused (Postfix; 503 need RCPT before MAIL).
NO_VALID_RECIPIENTS = Reply(554, "5.5.1", "Error: no valid recipients")

# Message content errors, sent in answer to the end of data.
BARE_LF_DATA = Reply(550, "5.5.2", "Error: bare <LF> or <CR> received in message data")
MESSAGE_TOO_BIG = Reply(552, "5.3.4", "Error: message file too big")
SIZE_EXCEEDED_MAIL = Reply(552, "5.3.4", "Message size exceeds fixed limit")  # RFC 1870 6.1

# Policy (the driver decides; the codec never sends these on its own).
RELAY_DENIED = Reply(554, "5.7.1", "Relay access denied")
UNKNOWN_USER = Reply(550, "5.1.1", "Recipient address rejected: User unknown in local recipient table")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Error: too many recipients")  # RFC 5321 4.5.3.1.10

# Session ends and temporary failures. Postfix's 421s start with the host name
# ("421 4.7.0 mx.example.org Error: too many errors"): the drivers add it, once per
# process (smtpd's SmtpdConfig, sendmail -bs's with_host).
TOO_MANY_ERRORS = Reply(421, "4.7.0", "Error: too many errors", close=True)
TEMP_ERROR = Reply(451, "4.3.0", "Error: queue file write error")
SHUTDOWN = Reply(421, "4.3.2", "Service shutting down", close=True)
TIMEOUT = Reply(421, "4.4.2", "Error: timeout exceeded", close=True)
# An unexpected error in the server itself (STYLE 5: temporary, never a 5xx); the session ends.
INTERNAL_ERROR = Reply(421, "4.3.0", "Error: internal error", close=True)
