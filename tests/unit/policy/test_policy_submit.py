"""authorized_submit_users: Postfix's match list, as the sendmail command and pickup
apply it (policy/submit.py)."""
import pwd

import pytest

from estafeta.policy.submit import SubmitListError, submit_allowed, submit_user_name

NOBODY_UID = 4000123          # no such user


@pytest.mark.parametrize("patterns, user, want", [
    ("static:anyone", "www-data", True),          # the default: everyone
    ("", "root", False),                          # empty: no one, root neither
    ("!root, static:anyone", "root", False),      # root is no exception
    ("root, !static:all", "root", True),          # the usual "root only"
    ("root, !static:all", "alice", False),
    ("alice, bob", "bob", True),
    ("alice, bob", "BOB", True),                  # names match case-insensitively
    ("alice bob", "carol", False),
    ("!www-data, static:all", "www-data", False),  # postconf(5)'s example
    ("!www-data, static:all", "alice", True),
    ("inline:{ alice=x }", "alice", True),        # a table matches the users it has a key for
    ("inline:{ alice=x }", "bob", False),
])
def test_submit_allowed(patterns: str, user: str, want: bool) -> None:
    got = submit_allowed(patterns, user)
    assert got is want, f"{patterns!r} for {user}: got {got}, want {want}"


def test_file_patterns(tmp_path) -> None:
    f = tmp_path / "senders"
    f.write_text("# who may send\nalice\nbob, carol\n")
    assert submit_allowed(str(f), "carol") is True
    assert submit_allowed(str(f), "dave") is False
    assert submit_allowed(f"!{f}, static:all", "bob") is False
    assert submit_allowed(f"!{f}, static:all", "dave") is True


def test_unreadable_file_cannot_answer(tmp_path) -> None:
    with pytest.raises(SubmitListError) as e:
        submit_allowed(f"{tmp_path}/no-such-list, static:anyone", "alice")
    want = f"open {tmp_path}/no-such-list: No such file or directory"
    assert str(e.value) == want, f"got {str(e.value)!r}, want {want!r}"


def test_submit_user_name() -> None:
    assert submit_user_name(0) == pwd.getpwuid(0).pw_name
    assert submit_user_name(NOBODY_UID) == "unknown"      # Postfix's name for a uid without one
