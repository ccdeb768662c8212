"""End to end, as root: pickup applies authorized_submit_users to the owner of each
maildrop file, since a user can write one by hand without the sendmail command's check.

Two system users (useradd) each write a submission straight into maildrop/ (mode 3733)
as themselves, with the system python3 and no estafeta code: the refused user's file
is removed and logged, the permitted user's file is delivered.
"""
import os
import pwd
import re
import secrets
import subprocess
import time

import pytest

from estafeta.queue import qfile
from estafeta.testing.instance import wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: creates system users with useradd")

# Writes stdin to maildrop/.NAME (0640), then renames it to NAME, as the sendmail command does.
WRITE = ("import os, sys\n"
         "d, n = sys.argv[1], sys.argv[2]\n"
         "fd = os.open(os.path.join(d, '.' + n), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)\n"
         "os.write(fd, sys.stdin.buffer.read())\n"
         "os.close(fd)\n"
         "os.rename(os.path.join(d, '.' + n), os.path.join(d, n))\n")


@pytest.fixture
def users():
    tag = secrets.token_hex(3)
    names = {role: f"et{tag}{role}" for role in ("ok", "no")}
    made = []
    try:
        for n in names.values():
            subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", n],
                           check=True, capture_output=True)
            made.append(n)
        yield names
    finally:
        for n in made:
            subprocess.run(["userdel", n], capture_output=True)


def drop_as(user: str, maildrop: str, subject: str) -> str:
    name = secrets.token_hex(16)
    data = qfile.encode_envelope(time.time(), user, [("demo@localhost", {})], {})
    data += f"Subject: {subject}\n\nwritten by hand\n".encode()
    r = subprocess.run(["runuser", "-u", user, "--", "/usr/bin/python3", "-c", WRITE, maildrop, name],
                       input=data, capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert os.stat(os.path.join(maildrop, name)).st_uid == pwd.getpwnam(user).pw_uid
    return name


def test_pickup_removes_files_of_users_not_allowed_to_submit(instance_factory, users):
    ok, no = users["ok"], users["no"]
    inst = instance_factory(main={"authorized_submit_users": f"!{no}, static:anyone"}, start=False)
    maildrop = os.path.join(inst.queue_dir, "maildrop")
    refused = drop_as(no, maildrop, "refused")
    drop_as(ok, maildrop, "allowed")
    inst.start()
    uid = pwd.getpwnam(no).pw_uid
    want = f"maildrop/{refused}: uid={uid}: User {no}({uid}) is not allowed to submit mail; removed"
    wait_for(lambda: want in inst.log(), 30, what="the refusal log line")
    wait_for(lambda: inst.delivered(), 30, what="delivery of the permitted user's file")
    wait_for(lambda: inst.queue_count() == 0, 30, what="empty queue")
    assert re.search(rf"warning: {re.escape(want)}", inst.log()), inst.log()
    got = [open(p, "rb").read() for p in inst.delivered()]
    assert len(got) == 1 and b"Subject: allowed" in got[0], got
    assert os.listdir(maildrop) == [], "the refused file stays in maildrop"
    assert os.listdir(os.path.join(inst.queue_dir, "corrupt")) == [], "the refused file went to corrupt/"
    assert f"uid={pwd.getpwnam(ok).pw_uid} from=<{ok}@" in inst.log()
