"""mailbox_size_limit bounds each Maildir message file the local agent writes, as it
bounds the mbox file: too large bounces with 5.2.2 "File too large", nothing written."""
import mailbox
import os
import pwd

import pytest

from estafeta.delivery import base, local
from local_support import deliver_local

ME = pwd.getpwuid(os.getuid())
MSG = b"From: a@example.org\nSubject: big\n\n" + b"x" * 300 + b"\n"


@pytest.fixture
def shared(local_dir, monkeypatch):
    d = local_dir
    # home_mailbox lives under the user's home: point ours at the temporary directory.
    home = os.path.join(d, "home")
    os.mkdir(home)
    os.chown(home, ME.pw_uid, ME.pw_gid)
    real = pwd.getpwnam

    def getpwnam(name: str):
        pw = real(name)
        if pw.pw_uid != ME.pw_uid:
            return pw
        return pwd.struct_passwd((pw.pw_name, pw.pw_passwd, pw.pw_uid, pw.pw_gid, pw.pw_gecos, home, pw.pw_shell))

    monkeypatch.setattr(local.pwd, "getpwnam", getpwnam)
    return d


def deliver(d: str, rcpt: str, aliases: str = "", **params: str) -> base.RecipientResult:
    return deliver_local(d, rcpt, aliases, MSG, **{"mail_owner": ME.pw_name, "home_mailbox": "Maildir/", **params})


def count(path: str) -> int:
    return len(mailbox.Maildir(path, create=False)) if os.path.isdir(path) else 0


@pytest.mark.parametrize("limit, want", [("200", ("bounced", "5.2.2")), ("0", ("sent", "2.0.0")),
                                         ("100000", ("sent", "2.0.0"))])
def test_home_maildir_respects_mailbox_size_limit(shared, limit: str, want: tuple[str, str]) -> None:
    r = deliver(shared, f"{ME.pw_name}@localhost", mailbox_size_limit=limit)
    assert (r.status, r.dsn) == want, r
    box = os.path.join(shared, "home", "Maildir")
    assert count(box) == (1 if want[0] == "sent" else 0)
    if want[0] == "bounced":
        assert r.reason == "maildir delivery failed: error writing message: File too large", r.reason
        # each message file counts alone: the Maildir's other files do not
        assert deliver(shared, f"{ME.pw_name}@localhost", mailbox_size_limit="100000").status == "sent"


def test_maildir_file_destination_respects_mailbox_size_limit(shared) -> None:
    r = deliver(shared, "md@localhost", f"md: {shared}/md/\n", mailbox_size_limit="200")
    assert (r.status, r.dsn) == ("bounced", "5.2.2"), r
    assert "File too large" in r.reason
    assert count(f"{shared}/md") == 0


def test_mbox_and_maildir_agree(shared) -> None:
    mbox = deliver(shared, f"{ME.pw_name}@localhost", mailbox_size_limit="200", home_mailbox="")
    md = deliver(shared, f"{ME.pw_name}@localhost", mailbox_size_limit="200")
    assert (mbox.status, mbox.dsn) == (md.status, md.dsn) == ("bounced", "5.2.2"), (mbox, md)
