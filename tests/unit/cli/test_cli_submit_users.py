"""authorized_submit_users: Postfix's match list, as the sendmail command applies it."""
import pytest

from estafeta.cli.sendmail import submit_allowed


@pytest.mark.parametrize("patterns, user, want", [
    ("static:anyone", "www-data", True),          # the default: everyone
    ("", "root", False),                          # empty: no one
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
