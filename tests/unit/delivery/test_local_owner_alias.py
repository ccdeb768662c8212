"""expand_owner_alias: the sender of an alias expansion is what owner-NAME expands to
(local(8)); without it, owner-NAME itself (test_local_agent.py covers that too)."""
import mailbox
import os
import pwd

import pytest

from estafeta.config.main_cf import MainConfig
from estafeta.delivery import base, local
from estafeta.tables.aliases import build_database

ME = pwd.getpwuid(os.getuid()).pw_name


@pytest.fixture
def spool_dir(local_dir):
    return local_dir


@pytest.mark.parametrize("expand, owner, want", [
    ("no", "listadmin@example.org", "<owner-lista@localhost>"),
    ("yes", "listadmin@example.org", "<listadmin@example.org>"),
    ("yes", "listadmin", "<listadmin@localhost>"),
    # a list, a file or a command is no sender: owner-NAME stays
    ("yes", "a@example.org, b@example.org", "<owner-lista@localhost>"),
    ("yes", "|/bin/true", "<owner-lista@localhost>"),
])
def test_expand_owner_alias(spool_dir: str, expand: str, owner: str, want: str) -> None:
    d = spool_dir
    with open(os.path.join(d, "aliases"), "w") as f:
        f.write(f"lista: {ME}\nowner-lista: {owner}\n")
    build_database(f"hash:{d}/aliases")
    cfg = MainConfig.parse(f"myhostname = localhost\nmydestination = localhost\nlocal_transport = local\n"
                           f"alias_maps = hash:{d}/aliases\nmail_spool_directory = {d}/spool\n"
                           f"forward_path = {d}/forward.$user\nmail_owner = {ME}\nfsync_queue = no\n"
                           f"expand_owner_alias = {expand}\n")
    qf = os.path.join(d, "qfile")
    with open(qf, "wb") as f:
        f.write(b"ENVELOPE\nFrom: a@example.org\nSubject: hi\n\nbody\n")
    req = base.DeliveryRequest("QID1", qf, 9, "a@example.org", 0.0, "local", "localhost",
                               [base.RecipientRequest("lista@localhost")])
    [r] = local.LocalAgent(cfg, "local").deliver_sync(req)
    assert r.status == "sent", f"got {r.status} {r.reason}"
    got = list(mailbox.mbox(os.path.join(d, "spool", ME), create=False))[0]["Return-Path"]
    assert got == want, f"got {got}, want {want}"
