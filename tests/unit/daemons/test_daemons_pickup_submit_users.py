"""pickup checks authorized_submit_users against each maildrop file's owner, root
included (as Postfix's sendmail and postdrop do); only the mail system always passes;
a refused file is removed and logged; a list that cannot answer leaves the file in
maildrop."""
import asyncio
import os

import pytest

from estafeta.config.main_cf import MainConfig
from estafeta.core import maillog
from estafeta.daemons.pickup import Pickup
from estafeta.queue import maildrop
from estafeta.queue.store import QueueStore

NOBODY_UID = 4000123          # no such user: its login name is "unknown"
OWNER_UID = 4000124           # stands for mail_owner's uid


class Ctx:
    def __init__(self, cfg, store):
        self.cfg, self.store = cfg, store
        self.stopping = asyncio.Event()


@pytest.fixture(autouse=True)
def log(tmp_path, monkeypatch):
    monkeypatch.setattr(maillog, "log", maillog.MailLog(path=str(tmp_path / "maillog"), stderr=False, hostname="mx"))
    return tmp_path / "maillog"


def pickup(tmp_path, users: str) -> Pickup:
    store = QueueStore(str(tmp_path / "q"))
    store.create_dirs()
    cfg = MainConfig.parse(f"queue_directory = {tmp_path}/q\nauthorized_submit_users = {users}\n"
                           "mail_owner = no-such-owner-xq\n", "main.cf")
    return Pickup(Ctx(cfg, store))


@pytest.mark.parametrize("users, uid, want", [
    ("static:anyone", NOBODY_UID, True),
    ("!unknown, static:anyone", NOBODY_UID, False),   # Postfix's name for a uid without one
    ("", NOBODY_UID, False),                          # empty: nobody...
    ("", 0, False),                                   # ...not even the super-user,
    ("!root, static:anyone", 0, False),               # whom the list can leave out
    ("root, !static:all", 0, True),                   # Postfix's idiom: root only
    ("root, !static:all", NOBODY_UID, False),
    ("", OWNER_UID, True),                            # the mail system always passes
])
def test_may_submit(tmp_path, users: str, uid: int, want: bool) -> None:
    p = pickup(tmp_path, users)
    p.owner_uid = OWNER_UID
    got = p.may_submit(uid)
    assert got == want, f"{users!r}, uid {uid}: got {got}, want {want}"


@pytest.mark.skipif(os.geteuid() == 0, reason="pickup's own uid is root here, which is never exempt")
def test_pickup_own_uid_always_passes(tmp_path) -> None:
    got = pickup(tmp_path, "").may_submit(os.geteuid())
    assert got is True, f"pickup's own uid with an empty list: got {got}, want True"


def drop(p: Pickup, uid: int) -> str:
    name = maildrop.submit(p.dir, "someone", ["demo@localhost"], {}, b"Subject: x\n\nbody\n", sync=False)
    os.chown(os.path.join(p.dir, name), uid, -1)
    return name


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: gives the maildrop file another owner")
def test_refused_file_is_removed_and_logged(tmp_path, log) -> None:
    p = pickup(tmp_path, "!unknown, static:anyone")
    name = drop(p, NOBODY_UID)
    asyncio.run(p.take(name))
    assert os.listdir(p.dir) == [] and os.listdir(p.store.path("incoming")) == []
    assert os.listdir(p.store.path("corrupt")) == []
    want = f"warning: maildrop/{name}: uid={NOBODY_UID}: User unknown({NOBODY_UID}) is not allowed to submit mail; removed"
    assert want in log.read_text(), log.read_text()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: gives the maildrop file another owner")
def test_list_that_cannot_answer_leaves_the_file(tmp_path, log) -> None:
    p = pickup(tmp_path, f"{tmp_path}/no-such-list")
    name = drop(p, NOBODY_UID)
    asyncio.run(p.take(name))
    assert os.listdir(p.dir) == [name]
    want = f"warning: maildrop/{name}: authorized_submit_users: open {tmp_path}/no-such-list: No such file or directory; left in maildrop"
    assert want in log.read_text(), log.read_text()
    # the super-user's file needs the list too, and waits with the others
    roots = drop(p, 0)
    asyncio.run(p.take(roots))
    assert sorted(os.listdir(p.dir)) == sorted([name, roots])
    assert os.listdir(p.store.path("incoming")) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: gives the maildrop file another owner")
def test_root_file_refused_when_the_list_leaves_root_out(tmp_path, log) -> None:
    """Before, pickup let root through whatever the list said, while the sendmail
    command refused root: now both refuse it, as Postfix does."""
    p = pickup(tmp_path, "!root, static:anyone")
    name = drop(p, 0)
    asyncio.run(p.take(name))
    assert os.listdir(p.dir) == [] and os.listdir(p.store.path("incoming")) == []
    want = f"warning: maildrop/{name}: uid=0: User root(0) is not allowed to submit mail; removed"
    assert want in log.read_text(), log.read_text()


# --- main.cf changed without a reload ---------------------------------------------------
def pickup_from_file(tmp_path, users: str) -> tuple[Pickup, str]:
    store = QueueStore(str(tmp_path / "q"))
    store.create_dirs()
    path = str(tmp_path / "main.cf")
    with open(path, "w") as f:
        f.write(f"queue_directory = {tmp_path}/q\nauthorized_submit_users = {users}\nmail_owner = no-such-owner-xq\n")
    return Pickup(Ctx(MainConfig.load(path), store)), path


def test_a_list_widened_without_reload_is_read_again_before_removing(tmp_path) -> None:
    # The sendmail command (a new process) already used the new list and told the
    # user the mail is on its way: pickup must not remove the file on the old one.
    p, path = pickup_from_file(tmp_path, "!unknown, static:anyone")
    assert p.may_submit(NOBODY_UID) is False
    with open(path, "w") as f:
        f.write(f"queue_directory = {tmp_path}/q\nauthorized_submit_users = static:anyone\n")
    assert p.may_submit(NOBODY_UID) is True, "main.cf now allows this user: the file must be taken"


def test_a_list_that_still_refuses_refuses(tmp_path) -> None:
    p, path = pickup_from_file(tmp_path, "!unknown, static:anyone")
    os.utime(path)                                   # touched, same list
    assert p.may_submit(NOBODY_UID) is False
    os.unlink(path)                                  # unreadable main.cf: the running list stands
    assert p.may_submit(NOBODY_UID) is False
