"""End to end: access tables in the restriction lists of a real instance.

The seed's Sendmail /etc/mail/access (seed 5.3.2) is used as written, with its
networks repeated on loopback so that real clients come from them: 127.0.2 stands
for 192.168.119 (RELAY) and 127.3 for 168.0 (REJECT). Clients bind their source
address with smtplib's source_address (all of 127/8 is on lo).
"""
import os
import smtplib

import pytest

from estafeta.testing.instance import wait_for

SEED_ACCESS = """\
localhost.localdomain    RELAY
localhost                 RELAY
127.0.0.1                 RELAY
192.168.119               RELAY
168.0                     REJECT
"""
LOOPBACK_STAND_INS = """\
127.0.2                   RELAY
127.3                     REJECT
127.0.0.5                 ERROR:"550 We do not accept mail from you"
127.0.0.6                 DISCARD
"""


def session(inst, source):
    s = smtplib.SMTP("127.0.0.1", inst.port, timeout=30, source_address=(source, 0))
    s.ehlo("client.example")
    return s


def rcpt_reply(inst, source, rcpt, sender="someone@example.org"):
    with session(inst, source) as s:
        code, _ = s.mail(sender)
        assert code == 250
        code, msg = s.rcpt(rcpt)
        return code, msg.decode()


def make(instance_factory, tables, **main):
    inst = instance_factory(start=False)
    for name, text in tables.items():
        with open(inst.path(name), "w") as f:
            f.write(text)
        inst.cli("map", f"hash:{inst.path(name)}")
    settings = {k: v.replace("DIR", inst.root) for k, v in main.items()}
    inst.cli("config", "-e", "mynetworks=127.0.0.1/32", *(f"{k}={v}" for k, v in settings.items()))
    return inst.start()


@pytest.fixture
def seed(instance_factory):
    return make(instance_factory, {"access": SEED_ACCESS + LOOPBACK_STAND_INS},
                smtpd_client_restrictions="check_client_access hash:DIR/access")


@pytest.mark.parametrize("source,rcpt,want", [
    ("127.0.2.7", "someone@remote.example", (250, "2.1.5 Ok")),         # RELAY by prefix (192.168.119)
    ("127.0.2.200", "someone@remote.example", (250, "2.1.5 Ok")),
    ("127.0.0.1", "someone@remote.example", (250, "2.1.5 Ok")),         # localhost / 127.0.0.1 RELAY
    ("127.0.9.9", "someone@remote.example", (454, "4.7.1 <someone@remote.example>: Relay access denied")),
    ("127.0.9.9", "demo@localhost", (250, "2.1.5 Ok")),                 # unlisted: local mail only
    ("127.3.0.1", "demo@localhost", (554, "5.7.1 <unknown[127.3.0.1]>: Client host rejected: Access denied")),
    ("127.3.200.9", "someone@remote.example",
     (554, "5.7.1 <unknown[127.3.200.9]>: Client host rejected: Access denied")),
    ("127.0.0.5", "demo@localhost",
     (550, "5.7.1 <unknown[127.0.0.5]>: Client host rejected: We do not accept mail from you")),
])
def test_seed_sendmail_access_file(seed, source, rcpt, want):
    got = rcpt_reply(seed, source, rcpt)
    assert got == want, f"{source} -> {rcpt}: got {got}, want {want}"


def test_seed_reject_is_logged_in_postfix_shape(seed):
    rcpt_reply(seed, "127.3.0.1", "demo@localhost")
    assert ("NOQUEUE: reject: RCPT from unknown[127.3.0.1]: 554 5.7.1 <unknown[127.3.0.1]>: Client host rejected: "
            "Access denied; from=<someone@example.org> to=<demo@localhost> proto=ESMTP helo=<client.example>") \
        in seed.log()


def test_seed_discard_accepts_and_drops(seed):
    with session(seed, "127.0.0.6") as s:
        refused = s.sendmail("someone@example.org", ["demo@localhost", "other@remote.example"],
                             b"Subject: dropped\r\n\r\nnever delivered\r\n")
    assert refused == {}, f"got refusals {refused}, want none"
    wait_for(lambda: "discard: END-OF-MESSAGE from unknown[127.0.0.6]" in seed.log(), what="discard log")
    assert "<unknown[127.0.0.6]>: Client host triggers DISCARD action" in seed.log()
    # a message sent afterwards from a normal client arrives; the discarded one never does
    with session(seed, "127.0.0.1") as s:
        s.sendmail("someone@example.org", ["demo@localhost"], b"Subject: kept\r\n\r\nhello\r\n")
    got = wait_for(lambda: seed.delivered(), what="delivery")
    assert len(got) == 1 and b"Subject: kept" in open(got[0], "rb").read()
    assert seed.queue_count() == 0


def test_postfix_actions_in_recipient_restrictions(instance_factory):
    inst = make(instance_factory, {
        "client_access": "127.0.4 REJECT no service for you\n127.0.0.7 421 4.7.0 closing now\n",
        "sender_access": "spammer.example REJECT\nbulk@ 450 4.7.1 try later\nfriend.example OK\n",
        "rcpt_access": "demo@localhost PREPEND X-Access: checked\nblocked@localhost 550 5.1.1 mailbox disabled\n"
                       "nobody@localhost DUNNO\n",
    }, smtpd_recipient_restrictions="check_client_access hash:DIR/client_access, "
                                    "check_sender_access hash:DIR/sender_access, "
                                    "check_recipient_access hash:DIR/rcpt_access")
    assert rcpt_reply(inst, "127.0.4.1", "demo@localhost") == \
        (554, "5.7.1 <unknown[127.0.4.1]>: Client host rejected: no service for you")
    assert rcpt_reply(inst, "127.0.0.1", "demo@localhost", sender="x@mx.spammer.example") == \
        (554, "5.7.1 <x@mx.spammer.example>: Sender address rejected: Access denied")
    assert rcpt_reply(inst, "127.0.0.1", "demo@localhost", sender="bulk@anywhere.example") == \
        (450, "4.7.1 <bulk@anywhere.example>: Sender address rejected: try later")
    assert rcpt_reply(inst, "127.0.0.1", "blocked@localhost") == \
        (550, "5.1.1 <blocked@localhost>: Recipient address rejected: mailbox disabled")
    # the relay restrictions still run first: OK for the sender does not open relaying
    assert rcpt_reply(inst, "127.0.9.1", "x@remote.example", sender="a@friend.example") == \
        (454, "4.7.1 <x@remote.example>: Relay access denied")
    # 421 from a table: reply, then the server closes the connection
    with session(inst, "127.0.0.7") as s:
        s.mail("a@example.org")
        code, msg = s.rcpt("demo@localhost")
        assert (code, msg) == (421, b"4.7.0 <unknown[127.0.0.7]>: Client host rejected: closing now")
        with pytest.raises(smtplib.SMTPServerDisconnected):
            s.noop()
    # PREPEND: the header reaches the mailbox, above the client's own
    with session(inst, "127.0.0.1") as s:
        s.sendmail("a@example.org", ["demo@localhost"], b"Subject: prepended\r\n\r\nbody\r\n")
    got = wait_for(lambda: inst.delivered(), what="delivery")
    text = open(got[0], "rb").read()
    assert b"X-Access: checked\n" in text and text.index(b"X-Access:") < text.index(b"Subject: prepended")


def test_unavailable_table_defers_with_451(instance_factory):
    inst = make(instance_factory, {"rcpt_access": "demo@localhost OK\n"},
                smtpd_recipient_restrictions="check_recipient_access hash:DIR/rcpt_access")
    assert rcpt_reply(inst, "127.0.0.1", "demo@localhost") == (250, "2.1.5 Ok")
    os.unlink(inst.path("rcpt_access.db"))
    assert rcpt_reply(inst, "127.0.0.1", "demo@localhost") == \
        (451, "4.3.0 <demo@localhost>: Temporary lookup failure")
    wait_for(lambda: "table lookup problem" in inst.log(), 20, what="log line: " + "table lookup problem"[:60])


def test_table_missing_at_start_defers_with_451(instance_factory):
    inst = make(instance_factory, {},
                smtpd_sender_restrictions="check_sender_access hash:DIR/never_built")
    assert rcpt_reply(inst, "127.0.0.1", "demo@localhost") == \
        (451, "4.3.0 <someone@example.org>: Temporary lookup failure")
    wait_for(lambda: "never_built is unavailable" in inst.log(), 20, what="log line: " + "never_built is unavailable"[:60])


def test_unreachable_pgsql_defers_with_451(instance_factory):
    pytest.importorskip("psycopg")
    inst = instance_factory(start=False)
    from estafeta.testing.instance import free_port
    with open(inst.path("pg.cf"), "w") as f:
        f.write(f"hosts = inet:127.0.0.1:{free_port()}\ndbname = mail\nuser = x\n"
                "query = SELECT action FROM access WHERE key = '%s'\n")
    inst.cli("config", "-e", f"smtpd_recipient_restrictions=check_recipient_access pgsql:{inst.path('pg.cf')}")
    inst.start()
    assert rcpt_reply(inst, "127.0.0.1", "demo@localhost") == \
        (451, "4.3.0 <demo@localhost>: Temporary lookup failure")


def test_delay_reject_no_refuses_at_mail(instance_factory):
    inst = make(instance_factory, {"access": SEED_ACCESS + LOOPBACK_STAND_INS},
                smtpd_client_restrictions="check_client_access hash:DIR/access", smtpd_delay_reject="no")
    with session(inst, "127.3.0.1") as s:
        code, msg = s.mail("a@example.org")
        assert (code, msg) == (554, b"5.7.1 <unknown[127.3.0.1]>: Client host rejected: Access denied")
    assert rcpt_reply(inst, "127.0.2.9", "x@remote.example") == (250, "2.1.5 Ok")   # RELAY at MAIL holds


def test_access_hold_and_redirect_act_in_cleanup(instance_factory):
    # HOLD and REDIRECT from an access table are recorded by smtpd and carried out
    # by cleanup: the held message waits in hold/, the redirected one goes elsewhere.
    inst = make(instance_factory, {
        "sender_access": "quarantine@example.org HOLD suspicious sender\n"
                         "moved@example.org REDIRECT demo@localhost\n",
    }, smtpd_sender_restrictions="check_sender_access hash:DIR/sender_access")
    with session(inst, "127.0.0.1") as s:
        s.sendmail("quarantine@example.org", ["demo@localhost"], b"Subject: held\r\n\r\nbody\r\n")
    wait_for(lambda: inst.queue_count("hold") == 1, what="message in hold/")
    assert inst.delivered() == []
    with open(inst.path("vmailbox"), "a") as f:
        f.write("other@localhost other/Maildir/\n")
    with session(inst, "127.0.0.1") as s:
        s.sendmail("moved@example.org", ["other@localhost"], b"Subject: redirected\r\n\r\nbody\r\n")
    got = wait_for(lambda: inst.delivered(), what="redirected delivery to demo")
    assert b"Subject: redirected" in open(got[0], "rb").read()
    assert inst.delivered("other") == [], "the original recipient got the redirected message"
    assert inst.queue_count("hold") == 1
