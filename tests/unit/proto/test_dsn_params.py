"""proto/dsn.py: RFC 3461 parameter syntax, xtext, and what gets stored."""
from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from estafeta.proto import dsn
from estafeta.proto import replies as R


@pytest.mark.parametrize("text, want", [
    ("abc", "abc"), ("a+2Bb", "a+b"), ("a+3Db", "a=b"), ("+20", " "), ("", ""),
])
def test_decode_xtext(text, want):
    assert dsn.decode_xtext(text) == want


@pytest.mark.parametrize("text", ["a+2b", "a+", "a+G0", "a=b", "a b", "+0D+0A", "+00", "+C3+B1", "\u00f1"])
def test_decode_xtext_refuses(text):
    with pytest.raises(dsn.DsnSyntaxError):
        dsn.decode_xtext(text)


@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7e)))
def test_xtext_round_trip(text):
    enc = dsn.encode_xtext(text)
    assert dsn.decode_xtext(enc) == text
    assert all(0x21 <= ord(c) <= 0x7e for c in enc)


@given(st.text(max_size=40))
def test_decode_never_yields_controls(text):
    try:
        out = dsn.decode_xtext(text)
    except dsn.DsnSyntaxError:
        return
    assert all(0x20 <= ord(c) <= 0x7e for c in out)


@pytest.mark.parametrize("value, want", [
    ("NEVER", "NEVER"), ("never", "NEVER"), ("delay,success", "SUCCESS,DELAY"),
    ("FAILURE", "FAILURE"), ("Failure,Delay,Success", "SUCCESS,FAILURE,DELAY"),
])
def test_notify(value, want):
    assert dsn.parse_notify(value) == want


@pytest.mark.parametrize("value", [None, "", "NEVER,FAILURE", "SUCCESS,", "SUCCESS,SUCCESS", "ALWAYS"])
def test_notify_refused(value):
    assert dsn.check_rcpt_param("NOTIFY", value) == R.BAD_NOTIFY


def test_orcpt():
    assert dsn.parse_orcpt("RFC822;bob+40x.org") == "rfc822;bob@x.org"
    for bad in (None, "bob@x.org", ";bob@x.org", "rfc822;", "rfc 822;a", "rfc822;a+0Ab", "rfc822;" + "a" * 500):
        assert dsn.check_rcpt_param("ORCPT", bad) == R.BAD_ORCPT, bad


def test_ret_envid():
    assert dsn.mail_attrs({"RET": "hdrs", "ENVID": "Q+2B1", "SIZE": "10"}) == {"dsn_ret": "HDRS", "dsn_envid": "Q+1"}
    assert dsn.check_mail_param("RET", "PARTIAL") == R.BAD_RET
    assert dsn.check_mail_param("RET", None) == R.BAD_RET
    assert dsn.check_mail_param("ENVID", "x" * 101) == R.BAD_ENVID
    assert dsn.check_mail_param("ENVID", "x" * 100) is None
    assert dsn.check_mail_param("SIZE", "10") is None     # not ours


def test_rcpt_params_stored_names_match_sendmail():
    got = dsn.rcpt_params({"NOTIFY": "success", "ORCPT": "rfc822;a+40b"})
    assert got == {"dsn_notify": "SUCCESS", "dsn_orcpt": "rfc822;a@b"}


def test_notify_of_and_wants():
    assert dsn.notify_of({}, {}) == frozenset()
    assert dsn.notify_of({"dsn_notify": "NEVER"}, {"dsn_notify": "success"}) == {"NEVER"}
    assert dsn.notify_of({}, {"dsn_notify": "success,delay"}) == {"SUCCESS", "DELAY"}   # sendmail -N
    assert dsn.notify_of({}, {"dsn_notify": "garbage"}) == frozenset()
    assert dsn.wants(frozenset(), "FAILURE") and dsn.wants(frozenset(), "DELAY")
    assert not dsn.wants(frozenset(), "SUCCESS")
    assert not dsn.wants(frozenset({"NEVER"}), "FAILURE")
    assert dsn.wants(frozenset({"SUCCESS"}), "SUCCESS") and not dsn.wants(frozenset({"SUCCESS"}), "FAILURE")


def test_codec_accepts_only_when_offered():
    from estafeta.proto.events import MailFrom, RcptTo
    from estafeta.proto.smtp_server import DEFAULT_MAIL_PARAMS, ServerConnection
    plain = ServerConnection("mx.test")
    plain.receive_data(b"EHLO c\r\nMAIL FROM:<a@b> RET=FULL\r\n")
    plain.next_event()
    plain.send(plain.ehlo_reply())
    ev = plain.next_event()
    assert ev.reply == R.bad_param("RET=FULL"), f"got {ev}"
    conn = ServerConnection("mx.test", mail_params=DEFAULT_MAIL_PARAMS | dsn.MAIL_PARAMS,
                            rcpt_params=dsn.RCPT_PARAMS)
    conn.receive_data(b"EHLO c\r\nMAIL FROM:<a@b> RET=FULL ENVID=x\r\nRCPT TO:<c@d> NOTIFY=NEVER\r\n")
    conn.next_event()
    conn.send(conn.ehlo_reply(("DSN",)))
    ev = conn.next_event()
    assert isinstance(ev, MailFrom) and ev.params == {"RET": "FULL", "ENVID": "x"}
    conn.send(R.SENDER_OK)
    ev = conn.next_event()
    assert isinstance(ev, RcptTo) and ev.params == {"NOTIFY": "NEVER"}
