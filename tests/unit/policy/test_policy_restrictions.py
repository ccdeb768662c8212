"""The restriction evaluator, sans-IO: a fake site and in-memory tables."""
import pytest

from estafeta.policy import restrictions as P
from estafeta.policy.restrictions import Accept, Defer, Policy, Request
from estafeta.tables import TableTempError, open_table


class FakeSite:
    def __init__(self, local=("example.org",), virtual=(), relay=(), users=("alice@example.org",)):
        self.local, self.virtual, self.relay, self.users = set(local), set(virtual), set(relay), set(users)

    def address_class(self, domain):
        d = domain.lower()
        if not d or d in self.local:
            return P.LOCAL
        if d in self.virtual:
            return P.VIRTUAL
        if d in self.relay:
            return P.RELAY
        return P.DEFAULT

    def unlisted(self, address, sender):
        if self.address_class(address.rpartition("@")[2] if "@" in address else "") == P.LOCAL and address.lower() not in self.users:
            return 550, "5.1.1", "User unknown in local recipient table"
        return None


class FakeTable:
    """A dict table; raises TableTempError when broken."""

    def __init__(self, name, data, broken=False):
        self.name, self.data, self.broken = name, {k.lower(): v for k, v in data.items()}, broken
        self.asked = []

    def lookup(self, key):
        self.asked.append(key)
        if self.broken:
            raise TableTempError(f"{self.name}: down")
        return self.data.get(key.lower())


def policy(tables=None, site=None, **lists):
    tables = tables or {}

    def opener(spec):
        return tables[spec] if spec in tables else open_table(spec)
    return Policy({k: v for k, v in lists.items()}, site or FakeSite(), opener)


# The seed's /etc/mail/access (Sendmail), as written (seed 5.3.2).
SEED_ACCESS = {"localhost.localdomain": "RELAY", "localhost": "RELAY", "127.0.0.1": "RELAY",
               "192.168.119": "RELAY", "168.0": "REJECT"}
DEFAULT_RELAY = "permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination"


def req(addr="203.0.113.9", name="unknown", helo="client.example.net", sender="s@example.net",
        rcpt="bob@remote.example", trusted=False):
    return Request(name, addr, helo, sender, rcpt, trusted)


def reply(outcome):
    v = outcome.verdict
    return None if isinstance(v, Accept) else str(v.reply)


def test_postfix_defaults():
    p = policy(relay=DEFAULT_RELAY)
    assert reply(p.check_rcpt(req())) == "454 4.7.1 <bob@remote.example>: Relay access denied"
    assert reply(p.check_rcpt(req(trusted=True))) is None
    assert reply(p.check_rcpt(req(rcpt="alice@example.org"))) is None
    assert reply(p.check_rcpt(req(rcpt="nobody@example.org", trusted=True))) == \
        "550 5.1.1 <nobody@example.org>: Recipient address rejected: User unknown in local recipient table"
    assert reply(p.check_rcpt(req(rcpt="postmaster"))) == \
        "550 5.1.1 <postmaster>: Recipient address rejected: User unknown in local recipient table"


def test_reject_unauth_destination_and_routing():
    p = policy(relay="permit_mynetworks, reject_unauth_destination")
    assert reply(p.check_rcpt(req())) == "554 5.7.1 <bob@remote.example>: Relay access denied"
    # sender-specified routing through a local domain is relaying too
    assert reply(p.check_rcpt(req(rcpt="bob%remote.example@example.org"))) == \
        "554 5.7.1 <bob%remote.example@example.org>: Relay access denied"


@pytest.mark.parametrize("addr,name,want", [
    ("192.168.119.3", "unknown", None),                    # RELAY by prefix: may relay
    ("192.168.119.250", "unknown", None),
    ("192.168.120.3", "unknown", "454 4.7.1 <bob@remote.example>: Relay access denied"),
    ("168.0.4.5", "unknown", "554 5.7.1 <unknown[168.0.4.5]>: Client host rejected: Access denied"),
    ("168.1.4.5", "unknown", "454 4.7.1 <bob@remote.example>: Relay access denied"),
    ("127.0.0.1", "localhost", None),
    ("198.51.100.7", "localhost.localdomain", None),        # by name
    ("198.51.100.7", "mail.localhost", None),               # parent domain matches (smtpd_access_maps)
])
def test_seed_access_file_as_client_restriction(addr, name, want):
    t = FakeTable("hash:/etc/mail/access", SEED_ACCESS)
    p = policy({"hash:/etc/mail/access": t}, client="check_client_access hash:/etc/mail/access",
               relay=DEFAULT_RELAY)
    got = reply(p.check_rcpt(req(addr=addr, name=name)))
    assert got == want, f"{name}[{addr}]: got {got}, want {want}"


def test_seed_access_in_relay_restrictions_and_key_order():
    t = FakeTable("hash:/etc/mail/access", SEED_ACCESS)
    p = policy({"hash:/etc/mail/access": t},
               relay="permit_mynetworks, check_client_access hash:/etc/mail/access, reject_unauth_destination")
    assert reply(p.check_rcpt(req(addr="192.168.119.3"))) is None
    assert t.asked == ["192.168.119.3", "192.168.119"], t.asked      # stops at the first hit
    t.asked.clear()
    assert reply(p.check_rcpt(req(addr="10.1.2.3", name="a.b.example"))) == \
        "554 5.7.1 <bob@remote.example>: Relay access denied"
    assert t.asked == ["a.b.example", "b.example", "example", "10.1.2.3", "10.1.2", "10.1", "10"], t.asked


def test_sendmail_error_and_discard():
    t = FakeTable("t", {"10.0.0.5": 'ERROR:"550 We do not accept mail from you"', "10.0.0.6": "DISCARD",
                        "10.0.0.7": "ERROR:4.1.1:451 come back later", "10.0.0.8": "SKIP", "10.0": "REJECT"})
    p = policy({"fake:t": t}, client="check_client_access fake:t", relay=DEFAULT_RELAY)
    assert reply(p.check_rcpt(req(addr="10.0.0.5"))) == \
        "550 5.7.1 <unknown[10.0.0.5]>: Client host rejected: We do not accept mail from you"
    assert reply(p.check_rcpt(req(addr="10.0.0.7"))) == \
        "451 4.0.0 <unknown[10.0.0.7]>: Client host rejected: come back later"      # client: non-address status
    out = p.check_rcpt(req(addr="10.0.0.6"))
    assert isinstance(out.verdict, Accept) and out.effects.discard
    assert out.logs == [("discard", "<unknown[10.0.0.6]>: Client host triggers DISCARD action")]
    # SKIP stops the search (10.0 REJECT is not reached); relay control still applies
    assert reply(p.check_rcpt(req(addr="10.0.0.8"))) == "454 4.7.1 <bob@remote.example>: Relay access denied"
    # once discarded, later recipients pass unchecked
    fx = P.Effects(discard="x")
    assert reply(p.check_rcpt(req(addr="10.0.0.5"), fx)) is None


def test_postfix_actions_on_sender_and_recipient():
    s = FakeTable("s", {"spammer.example": "REJECT", "friend@partner.example": "OK",
                        "<>": "DEFER no bounces now", "hold@": "HOLD please check",
                        "list.example": "550 5.1.1 no such list"})
    r = FakeTable("r", {"alice@example.org": "PREPEND X-Seen: yes", "@example.org": "REJECT unused",
                        "filtered@example.org": "FILTER scan:[127.0.0.1]:10025",
                        "redir@example.org": "REDIRECT alice@example.org",
                        "bcc@example.org": "BCC archive@example.org",
                        "example.org": "DUNNO"})
    site = FakeSite(users=("alice@example.org", "filtered@example.org", "redir@example.org", "bcc@example.org"))
    p = policy({"fake:s": s, "fake:r": r}, site=site, relay=DEFAULT_RELAY,
               recipient="check_sender_access fake:s, check_recipient_access fake:r")
    assert reply(p.check_rcpt(req(sender="x@mx.spammer.example", rcpt="alice@example.org"))) == \
        "554 5.7.1 <x@mx.spammer.example>: Sender address rejected: Access denied"
    assert reply(p.check_rcpt(req(sender="", rcpt="alice@example.org"))) == \
        "450 4.7.1 <>: Sender address rejected: no bounces now"
    # sender status X.1.1 becomes the sender's X.1.7 (access(5) ENHANCED STATUS CODES)
    assert reply(p.check_rcpt(req(sender="a@list.example", rcpt="alice@example.org"))) == \
        "550 5.1.7 <a@list.example>: Sender address rejected: no such list"
    out = p.check_rcpt(req(sender="hold@anywhere.example", rcpt="alice@example.org"))
    assert reply(out) is None
    assert out.effects.hold == "please check" and out.effects.prepend == ["X-Seen: yes"]
    assert ("hold", "<hold@anywhere.example>: Sender address please check") in out.logs
    # OK for the sender ends the recipient list: the recipient table is not asked
    out = p.check_rcpt(req(sender="friend@partner.example", rcpt="alice@example.org"))
    assert reply(out) is None and out.effects.prepend == []
    assert p.check_rcpt(req(rcpt="filtered@example.org")).effects.filter == "scan:[127.0.0.1]:10025"
    assert p.check_rcpt(req(rcpt="redir@example.org")).effects.redirect == "alice@example.org"
    assert p.check_rcpt(req(rcpt="bcc@example.org")).effects.bcc == "archive@example.org"
    # the domain's DUNNO hides "@example.org"? no: access(5) has no @domain form; DUNNO wins the domain step
    assert reply(p.check_rcpt(req(rcpt="carol@example.org"))) == \
        "550 5.1.1 <carol@example.org>: Recipient address rejected: User unknown in local recipient table"


def test_relay_and_recipient_lists_both_must_pass():
    r = FakeTable("r", {"remote.example": "OK"})
    p = policy({"fake:r": r}, relay="check_recipient_access fake:r, reject_unauth_destination",
               recipient="reject_non_fqdn_sender")
    assert reply(p.check_rcpt(req())) is None
    assert reply(p.check_rcpt(req(sender="bare"))) == \
        "504 5.5.2 <bare>: Sender address rejected: need fully-qualified address"
    # OK in the recipient list does not open relaying
    p = policy({"fake:r": r}, relay="reject_unauth_destination", recipient="check_recipient_access fake:r")
    assert reply(p.check_rcpt(req())) == "554 5.7.1 <bob@remote.example>: Relay access denied"


def test_relay_verb_grants_relaying_from_any_stage():
    s = FakeTable("s", {"partner.example": "RELAY"})
    p = policy({"fake:s": s}, sender="check_sender_access fake:s", relay=DEFAULT_RELAY)
    assert reply(p.check_rcpt(req(sender="a@partner.example"))) is None
    assert reply(p.check_rcpt(req(sender="a@other.example"))) == "454 4.7.1 <bob@remote.example>: Relay access denied"


def test_helo_checks():
    p = policy(helo="reject_invalid_helo_hostname, reject_non_fqdn_helo_hostname", relay="permit")
    assert reply(p.check_rcpt(req(helo="mail.example.com"))) is None
    assert reply(p.check_rcpt(req(helo="[192.0.2.1]"))) is None
    assert reply(p.check_rcpt(req(helo="monografia_postfix.com"))) is None   # underscores pass, as Postfix
    assert reply(p.check_rcpt(req(helo="bad..name"))) == "501 5.5.2 <bad..name>: Helo command rejected: Invalid name"
    assert reply(p.check_rcpt(req(helo="[999.1.1.1]"))) == "501 5.5.2 <[999.1.1.1]>: Helo command rejected: Invalid name"
    assert reply(p.check_rcpt(req(helo="localhost"))) == \
        "504 5.5.2 <localhost>: Helo command rejected: need fully-qualified hostname"
    assert reply(p.check_rcpt(req(helo=""))) is None      # nothing to judge before HELO
    h = FakeTable("h", {"example.com": "REJECT you are not me"})
    p = policy({"fake:h": h}, helo="check_helo_access fake:h", relay="permit")
    assert reply(p.check_rcpt(req(helo="mx.example.com"))) == \
        "554 5.7.1 <mx.example.com>: Helo command rejected: you are not me"


def test_non_fqdn_recipient_and_unlisted_sender():
    p = policy(recipient="reject_non_fqdn_recipient, reject_unlisted_sender", relay="permit")
    assert reply(p.check_rcpt(req(rcpt="bob@localhost"))) == \
        "504 5.5.2 <bob@localhost>: Recipient address rejected: need fully-qualified address"
    assert reply(p.check_rcpt(req(sender="ghost@example.org", rcpt="alice@example.org"))) == \
        "550 5.1.0 <ghost@example.org>: Sender address rejected: User unknown in local recipient table"


def test_defer_if_permit_and_defer_if_reject_and_warn_if_reject():
    t = FakeTable("t", {"10.9.9.9": "DEFER_IF_PERMIT slow down", "10.8.8.8": "DEFER_IF_REJECT maybe"})
    p = policy({"fake:t": t}, client="check_client_access fake:t", relay=DEFAULT_RELAY)
    assert reply(p.check_rcpt(req(addr="10.9.9.9", trusted=True))) == \
        "450 4.7.1 <unknown[10.9.9.9]>: Client host rejected: slow down"
    p = policy({"fake:t": t}, client="check_client_access fake:t, reject", relay="permit")
    assert reply(p.check_rcpt(req(addr="10.8.8.8"))) == "450 4.7.1 <unknown[10.8.8.8]>: Client host rejected: maybe"
    p = policy(client="warn_if_reject, reject", relay="permit")
    out = p.check_rcpt(req())
    assert reply(out) is None and out.logs[0][0] == "reject_warning"


def test_nested_restrictions_from_a_table():
    t = FakeTable("t", {"10.1.1.1": "permit_mynetworks reject", "10.2.2.2": "no_such_restriction"})
    p = policy({"fake:t": t}, client="check_client_access fake:t", relay="permit")
    assert reply(p.check_rcpt(req(addr="10.1.1.1"))) == "554 5.7.1 <unknown[10.1.1.1]>: Client host rejected: Access denied"
    assert reply(p.check_rcpt(req(addr="10.1.1.1", trusted=True))) is None
    out = p.check_rcpt(req(addr="10.2.2.2"))
    assert reply(out) == "451 4.3.5 Server configuration error"
    assert "no_such_restriction" in out.problems[0]


def test_lookup_failure_defers_never_accepts():
    broken = FakeTable("pgsql:/etc/x", {}, broken=True)
    p = policy({"pgsql:/etc/x": broken}, recipient="check_recipient_access pgsql:/etc/x", relay="permit")
    out = p.check_rcpt(req(rcpt="alice@example.org"))
    assert reply(out) == "451 4.3.0 <alice@example.org>: Temporary lookup failure"
    assert "down" in out.problems[0]
    # DEFER_IF_REJECT does not soften it, a permit before it is not reached
    p = policy({"pgsql:/etc/x": broken}, client="check_client_access pgsql:/etc/x", relay="permit")
    assert reply(p.check_rcpt(req())) == "451 4.3.0 <unknown[203.0.113.9]>: Temporary lookup failure"


def test_unopenable_table_and_unknown_restriction():
    p = policy(client="check_client_access hash:/nonexistent/access", recipient="permit_everything", relay="permit")
    assert any("/nonexistent/access" in x for x in p.problems)
    assert reply(p.check_rcpt(req())) == "451 4.3.0 <unknown[203.0.113.9]>: Temporary lookup failure"
    p = policy(recipient="permit_everything", relay="permit")
    assert reply(p.check_rcpt(req())) == "451 4.3.5 Server configuration error"
    p = policy(recipient="check_recipient_access", relay="permit")
    assert reply(p.check_rcpt(req())) == "451 4.3.5 Server configuration error"


def test_delay_reject_no_runs_client_helo_sender_at_mail():
    t = FakeTable("t", {"10.3.3.3": "RELAY", "10.4.4.4": "REJECT"})
    p = Policy({"client": "check_client_access fake:t", "relay": DEFAULT_RELAY}, FakeSite(),
               lambda spec: t, delay_reject=False)
    out = p.check_mail(req(addr="10.4.4.4", rcpt=None))
    assert reply(out) == "554 5.7.1 <unknown[10.4.4.4]>: Client host rejected: Access denied"
    out = p.check_mail(req(addr="10.3.3.3", rcpt=None))
    assert reply(out) is None and out.effects.relay
    # RCPT does not repeat the client list; the RELAY granted at MAIL holds
    assert reply(p.check_rcpt(req(addr="10.3.3.3"), out.effects)) is None
    assert reply(p.check_rcpt(req(addr="10.3.3.3"))) == "454 4.7.1 <bob@remote.example>: Relay access denied"


def test_data_restrictions_and_inline_table():
    p = policy(data="check_client_access inline:{ 10.5.5.5=REJECT }", relay="permit")
    assert reply(p.check_data(req(addr="10.5.5.5", rcpt=None))) == \
        "554 5.7.1 <unknown[10.5.5.5]>: Client host rejected: Access denied"
    p = policy(data="reject", relay="permit")
    assert reply(p.check_data(req(rcpt=None))) == "554 5.7.1 <DATA>: Data command rejected: Access denied"


def test_421_closes():
    t = FakeTable("t", {"10.6.6.6": "421 go away now"})
    p = policy({"fake:t": t}, client="check_client_access fake:t", relay="permit")
    v = p.check_rcpt(req(addr="10.6.6.6")).verdict
    assert isinstance(v, Defer) and v.reply.close and v.reply.code == 421


def test_recipient_delimiter_keys():
    r = FakeTable("r", {"bob+spam@example.org": "REJECT", "bob@": "HOLD"})
    p = Policy({"recipient": "check_recipient_access fake:r", "relay": "permit"}, FakeSite(users=("bob@example.org", "bob+x@example.org", "bob+spam@example.org")),
               lambda spec: r, delimiter="+")
    assert reply(p.check_rcpt(req(rcpt="bob+spam@example.org"))) == \
        "554 5.7.1 <bob+spam@example.org>: Recipient address rejected: Access denied"
    r.asked.clear()
    assert p.check_rcpt(req(rcpt="bob+x@example.org")).effects.hold
    assert r.asked == ["bob+x@example.org", "bob@example.org", "example.org", "org", "bob+x@", "bob@"], r.asked


def test_dsn_fix():
    assert P.dsn_fix("5.1.1", "Sender address") == "5.1.7"
    assert P.dsn_fix("5.1.2", "Sender address") == "5.1.8"
    assert P.dsn_fix("5.1.7", "Recipient address") == "5.1.1"
    assert P.dsn_fix("4.1.1", "Client host") == "4.0.0"
    assert P.dsn_fix("5.7.1", "Client host") == "5.7.1"
