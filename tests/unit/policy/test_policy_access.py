"""access.parse_action: Postfix access(5) actions and Sendmail's access verbs."""
import pytest

from estafeta.policy import access as A
from estafeta.policy.access import Action, AccessSyntaxError, parse_action

CASES = [
    ("OK", Action(A.OK)),
    ("ok", Action(A.OK)),
    ("12345", Action(A.OK)),                       # all-numerical: OK (pop-before-smtp)
    ("RELAY", Action(A.RELAY)),
    ("relay", Action(A.RELAY)),
    ("REJECT", Action(A.REJECT)),
    ("REJECT go away", Action(A.REJECT, "go away")),
    ("DEFER", Action(A.DEFER)),
    ("DEFER busy now", Action(A.DEFER, "busy now")),
    ("DEFER_IF_REJECT maybe", Action(A.DEFER_IF_REJECT, "maybe")),
    ("DEFER_IF_PERMIT", Action(A.DEFER_IF_PERMIT)),
    ("DISCARD", Action(A.DISCARD)),
    ("DISCARD spam source", Action(A.DISCARD, "spam source")),
    ("HOLD look at this", Action(A.HOLD, "look at this")),
    ("REDIRECT abuse@example.org", Action(A.REDIRECT, "abuse@example.org")),
    ("BCC archive@example.org", Action(A.BCC, "archive@example.org")),
    ("FILTER smtp:[127.0.0.1]:10025", Action(A.FILTER, "smtp:[127.0.0.1]:10025")),
    ("FILTER scan:", Action(A.FILTER, "scan:")),
    ("PREPEND X-Checked: yes", Action(A.PREPEND, "X-Checked: yes")),
    ("WARN odd client", Action(A.WARN, "odd client")),
    ("INFO seen", Action(A.INFO, "seen")),
    ("DUNNO", Action(A.DUNNO)),
    ("SKIP", Action(A.DUNNO)),                     # Sendmail: stop the search, default action
    ("550 no thanks", Action(A.CODE, "no thanks", code=550)),
    ("450 4.7.2 later", Action(A.CODE, "later", code=450, enhanced="4.7.2")),
    ("550 4.7.2 mismatch", Action(A.CODE, "4.7.2 mismatch", code=550)),   # class must agree
    ("421 closing", Action(A.CODE, "closing", code=421)),
    ('ERROR:"550 We do not accept mail from spammers"',
     Action(A.CODE, "We do not accept mail from spammers", code=550)),
    ("ERROR:550 no", Action(A.CODE, "no", code=550)),
    ("ERROR:5.7.1:550 Access denied here", Action(A.CODE, "Access denied here", code=550, enhanced="5.7.1")),
    ('ERROR:"5.7.1:550 quoted"', Action(A.CODE, "quoted", code=550, enhanced="5.7.1")),
    ('ERROR:"550 5.7.0 inline status"', Action(A.CODE, "inline status", code=550, enhanced="5.7.0")),
    ('error:"451 later"', Action(A.CODE, "later", code=451)),
    ('"550 old style"', Action(A.CODE, "old style", code=550)),
    ("QUARANTINE:suspicious", Action(A.HOLD, "suspicious")),
    ("permit_mynetworks, reject", Action(A.RESTRICTIONS, restrictions=("permit_mynetworks", "reject"))),
    ("check_client_access cidr:/x reject", Action(A.RESTRICTIONS,
                                                  restrictions=("check_client_access", "cidr:/x", "reject"))),
    ("  OK  ", Action(A.OK)),
    ("REJECT\tno tabs please", Action(A.REJECT, "no tabs please")),
]


@pytest.mark.parametrize("value,want", CASES)
def test_parse(value, want):
    got = parse_action(value)
    assert got == want, f"{value!r}: got {got}, want {want}"


@pytest.mark.parametrize("value", ["", "OK please", "RELAY now", "REDIRECT", "REDIRECT nobody",
                                   "BCC a@b c@d", "FILTER nocolon", "FILTER :dest", "PREPEND no colon here",
                                   "ERROR:", "ERROR:hello", "ERROR:250 fine", "650 bad", "250 fine"])
def test_malformed(value):
    with pytest.raises(AccessSyntaxError):
        parse_action(value)


def test_fuzz_never_crashes():
    import random
    rng = random.Random(5)
    alphabet = 'OKREJCTDFLAYS_:"0123456789 .@-\t!abc'
    for _ in range(5000):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 20)))
        try:
            a = parse_action(s)
        except AccessSyntaxError:
            continue
        assert isinstance(a, Action)
        if a.kind == A.CODE:
            assert 400 <= a.code < 600
