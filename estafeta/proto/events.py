"""Events the SMTP server codec hands to its driver.

Owns the vocabulary between smtp_server.ServerConnection and whatever drives it
(daemons/smtpd, the dialog runner). Everything here has already passed the codec's
syntax and sequence checks, but addresses and names are still client-supplied:
untrusted text, to be escaped before it reaches a log line.
Next: smtp_server.py (produces these), states.py (which replies move the state).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Final, Literal, Union

from estafeta.proto.replies import Reply


class Sentinel(enum.Enum):
    """next_event() results that are not events."""
    NEED_DATA = "NEED_DATA"   # feed more bytes with receive_data()
    CLOSED = "CLOSED"         # the session is over (peer closed, or we sent close=True)

    def __repr__(self) -> str:
        return self.value


NEED_DATA: Final = Sentinel.NEED_DATA
CLOSED: Final = Sentinel.CLOSED

Params = dict[str, Union[str, None]]


@dataclass(frozen=True, slots=True)
class Helo:
    name: str


@dataclass(frozen=True, slots=True)
class Ehlo:
    name: str


@dataclass(frozen=True, slots=True)
class Lhlo:
    """LMTP greeting (RFC 2033 4.1); only produced when the codec runs with lmtp=True."""
    name: str


@dataclass(frozen=True, slots=True)
class MailFrom:
    address: str                         # "" for the null reverse-path <>
    params: Params = field(default_factory=dict)   # keys uppercased; None: no "=VALUE"


@dataclass(frozen=True, slots=True)
class RcptTo:
    address: str
    params: Params = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Data:
    """The DATA command. Answer START_DATA (354) to receive the message, or refuse."""


@dataclass(frozen=True, slots=True)
class MessageData:
    """Message content: dot-unstuffed, line endings b"\\n", split at line boundaries
    (a very long line may span several chunks). Needs no reply."""
    data: bytes


@dataclass(frozen=True, slots=True)
class EndOfData:
    """The final CRLF.CRLF arrived. `error` is set when the codec found the message
    bad (bare LF/CR, over the size limit); send that reply instead of accepting."""
    error: Reply | None = None


@dataclass(frozen=True, slots=True)
class Rset:
    pass


@dataclass(frozen=True, slots=True)
class Noop:
    pass


@dataclass(frozen=True, slots=True)
class Quit:
    pass


@dataclass(frozen=True, slots=True)
class Vrfy:
    arg: str


@dataclass(frozen=True, slots=True)
class Help:
    arg: str


@dataclass(frozen=True, slots=True)
class BadCommand:
    """The codec rejected a command itself (syntax, sequence, too many errors).
    The driver sends `reply` unchanged. `command`: the counter the refused command
    goes to in the disconnect log line, as Postfix counts it ("mail" for a MAIL
    refused, "unknown" for a verb it does not know, "" for no command at all: an
    empty line, the hard error limit). Not part of equality: tests compare replies."""
    reply: Reply
    command: str = field(default="unknown", compare=False)


Command = Union[Helo, Ehlo, Lhlo, MailFrom, RcptTo, Data, Rset, Noop, Quit, Vrfy, Help]
Event = Union[Command, MessageData, EndOfData, BadCommand]
NextEvent = Union[Event, Literal[Sentinel.NEED_DATA, Sentinel.CLOSED]]
