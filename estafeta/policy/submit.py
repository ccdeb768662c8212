"""Who may submit local mail: authorized_submit_users, Postfix's user match list.

Owns the one check that both sides of local submission make: the sendmail command
(cli/sendmail.py) for the user who runs it, and pickup (daemons/pickup.py) for the
owner of each maildrop file, since a user can write one by hand. Both ask about a uid
through the same words, so a user refused by one is refused by the other. As in
Postfix (postdrop and sendmail call the same check), there is no exception for the
super-user: an administrator who wants root to keep submitting lists it, as in
`authorized_submit_users = root, !static:all`.
Trust boundary: the list comes from main.cf (the administrator); the user name from
the password file for a uid the kernel reports.
Next: cli/sendmail.py (check_submit_user), daemons/pickup.py (may_submit).
"""
from __future__ import annotations

import pwd

from ..tables import open_table, split_table_list

MAX_FILE_DEPTH = 5      # /file/name inside /file/name: no loop through a file naming itself


class SubmitListError(Exception):
    """A /file/name in the list cannot be read: the list cannot answer (the sendmail
    command stops with EX_CONFIG; pickup leaves the file in maildrop)."""


def submit_user_name(uid: int) -> str:
    """The name the list is matched against: the uid's login name, or "unknown" for
    a uid without one, as Postfix does (so `!unknown` refuses such uids)."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return "unknown"


def submit_allowed(patterns: str, user: str) -> bool:
    """Postfix's string match list: the first pattern that matches decides; "!" in
    front negates; /file/name stands for the words in that file; type:table matches
    a user it has a key for (the value does not matter: static:anyone matches all).
    No match, and an empty list, deny. Raises SubmitListError for an unreadable
    /file/name, ConfigError for a bad table, TableTempError when a table cannot answer."""
    user = user.lower()

    def match(pattern: str, depth: int = 0) -> bool | None:
        negate = pattern.startswith("!")
        p = pattern[1:] if negate else pattern
        hit: bool | None
        if p.startswith("/") and depth < MAX_FILE_DEPTH:
            try:
                with open(p, encoding="utf-8", errors="surrogateescape") as f:
                    words = [w for line in f if not line.lstrip().startswith("#") for w in split_table_list(line)]
            except OSError as e:
                raise SubmitListError(f"open {p}: {e.strerror}") from None
            hit = next((r for w in words if (r := match(w, depth + 1)) is not None), None)
            if hit is None:
                return None
            return not hit if negate else hit
        if ":" in p:
            hit = open_table(p).lookup(user) is not None
        else:
            hit = p.lower() == user
        return (not negate) if hit else None

    for pattern in split_table_list(patterns):
        result = match(pattern)
        if result is not None:
            return result
    return False
