"""estafeta.proto.states: the tables are complete and say what RFC 5321 says."""
from __future__ import annotations

from estafeta.proto import replies as R
from estafeta.proto.events import (
    Data, Ehlo, EndOfData, Helo, Help, Lhlo, MailFrom, Noop, Quit, RcptTo, Rset, Vrfy,
)
from estafeta.proto.states import COMMANDS, TRANSITIONS, State, next_state, refusal

COMMAND_TYPES = {Helo, Ehlo, Lhlo, MailFrom, RcptTo, Data, Rset, Noop, Quit, Vrfy, Help}


def test_every_state_in_both_tables():
    assert set(COMMANDS) == set(State) == set(TRANSITIONS)


def test_command_states_cover_every_command():
    for state in (State.CONNECTED, State.READY, State.IN_TXN, State.HAVE_RCPT):
        assert set(COMMANDS[state]) == COMMAND_TYPES, state


def test_refusals():
    assert refusal(State.CONNECTED, MailFrom) == R.SEND_HELO
    assert refusal(State.READY, RcptTo) == R.NEED_MAIL
    assert refusal(State.IN_TXN, Data) == R.NO_VALID_RECIPIENTS     # Postfix: after MAIL, no RCPT accepted
    assert refusal(State.HAVE_RCPT, MailFrom) == R.NESTED_MAIL
    assert refusal(State.HAVE_RCPT, Data) is None


def test_transitions():
    assert next_state(State.READY, MailFrom, R.SENDER_OK) is State.IN_TXN
    assert next_state(State.READY, MailFrom, R.BAD_SENDER_SYNTAX) is State.READY
    assert next_state(State.IN_TXN, RcptTo, R.RELAY_DENIED) is State.IN_TXN
    assert next_state(State.IN_TXN, RcptTo, R.RECIPIENT_OK) is State.HAVE_RCPT
    assert next_state(State.HAVE_RCPT, Data, R.START_DATA) is State.IN_DATA
    assert next_state(State.IN_DATA, EndOfData, R.MESSAGE_TOO_BIG) is State.READY
    assert next_state(State.HAVE_RCPT, Ehlo, R.OK) is State.READY
    assert next_state(State.CONNECTED, Rset, R.OK) is State.CONNECTED
    assert next_state(State.HAVE_RCPT, Rset, R.OK) is State.READY
    assert next_state(State.READY, Noop, R.TOO_MANY_ERRORS) is State.CLOSED
