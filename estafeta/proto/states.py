"""SMTP server session states and the two tables that move between them.

Owns every sequencing rule of the server side of SMTP/LMTP (RFC 5321 4.1.4,
RFC 2033), as data: COMMANDS says which command may come in which state (and
the 503 reply otherwise); TRANSITIONS says where a reply takes the session.
No trust boundary here: the input is already-parsed events.
Next: smtp_server.py (applies these tables), replies.py.
"""
from __future__ import annotations

import enum

from estafeta.proto import replies as R
from estafeta.proto.events import (
    Data, Ehlo, EndOfData, Helo, Help, Lhlo, MailFrom, Noop, Quit, RcptTo, Rset, Vrfy,
)
from estafeta.proto.replies import Reply


class State(enum.Enum):
    CONNECTED = "CONNECTED"   # before a successful HELO/EHLO/LHLO
    READY = "READY"           # greeted, no transaction
    IN_TXN = "IN_TXN"         # MAIL accepted, no recipient yet
    HAVE_RCPT = "HAVE_RCPT"   # at least one RCPT accepted
    IN_DATA = "IN_DATA"       # 354 sent; reading message content
    CLOSED = "CLOSED"


CONNECTED, READY, IN_TXN, HAVE_RCPT, IN_DATA, CLOSED = (
    State.CONNECTED, State.READY, State.IN_TXN, State.HAVE_RCPT, State.IN_DATA, State.CLOSED)

# Commands allowed anywhere outside DATA: RFC 5321 4.1.4 lets RSET, NOOP, QUIT,
# VRFY, HELP and a new EHLO (which resets the transaction) come at any time.
_ANYTIME: dict[type, Reply | None] = {
    Helo: None, Ehlo: None, Lhlo: None, Rset: None, Noop: None, Quit: None, Vrfy: None, Help: None,
}

# state -> command type -> None (allowed) or the reply refusing it. A state that
# is missing a type does not parse commands at all (IN_DATA, CLOSED).
COMMANDS: dict[State, dict[type, Reply | None]] = {
    # We require HELO/EHLO before MAIL, like Postfix with smtpd_helo_required=yes.
    CONNECTED: {**_ANYTIME, MailFrom: R.SEND_HELO, RcptTo: R.NEED_MAIL, Data: R.NEED_RCPT},
    READY: {**_ANYTIME, MailFrom: None, RcptTo: R.NEED_MAIL, Data: R.NEED_RCPT},
    # DATA after MAIL when no RCPT was accepted: Postfix's 554 "no valid recipients".
    IN_TXN: {**_ANYTIME, MailFrom: R.NESTED_MAIL, RcptTo: None, Data: R.NO_VALID_RECIPIENTS},
    HAVE_RCPT: {**_ANYTIME, MailFrom: R.NESTED_MAIL, RcptTo: None, Data: None},
    IN_DATA: {},
    CLOSED: {},
}

# state -> answered event type -> (state after a positive reply, after a negative one).
# Absent: the state does not change. Any reply with close=True goes to CLOSED
# (applied in smtp_server.py, it overrides this table). Entering READY or
# CONNECTED clears the transaction (RFC 5321 4.1.1.5 RSET, 4.1.4 EHLO).
_GREETINGS = (Helo, Ehlo, Lhlo)


def _greet(stay: State) -> dict[type, tuple[State, State]]:
    return {t: (READY, stay) for t in _GREETINGS}


TRANSITIONS: dict[State, dict[type, tuple[State, State]]] = {
    CONNECTED: {**_greet(CONNECTED)},
    READY: {**_greet(READY), MailFrom: (IN_TXN, READY), Rset: (READY, READY)},
    IN_TXN: {**_greet(IN_TXN), RcptTo: (HAVE_RCPT, IN_TXN), Rset: (READY, IN_TXN)},
    HAVE_RCPT: {**_greet(HAVE_RCPT), RcptTo: (HAVE_RCPT, HAVE_RCPT),
                Data: (IN_DATA, HAVE_RCPT), Rset: (READY, HAVE_RCPT)},
    # RFC 5321 4.1.1.4: whatever the answer to the end of data, the transaction is over.
    IN_DATA: {EndOfData: (READY, READY)},
    CLOSED: {},
}


def refusal(state: State, command: type) -> Reply | None:
    """The 503 reply for `command` in `state`, or None when it is allowed."""
    return COMMANDS[state].get(command, R.UNKNOWN_COMMAND)


def next_state(state: State, answered: type, reply: Reply) -> State:
    """Where `reply` to an event of type `answered` takes the session."""
    if reply.close:
        return CLOSED
    pos, neg = TRANSITIONS[state].get(answered, (state, state))
    return pos if reply.is_positive else neg
