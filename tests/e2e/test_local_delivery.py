"""End to end, as root: real system users (useradd), the local agent, aliases, .forward.

Mail goes in over SMTP to a real instance whose local_transport is `local`; it is read
back from /var/mail/USER and ~/Maildir with Python's mailbox module and with `mail`
from Debian's mailutils. Users get unique names and are removed (userdel -r) after.
"""
import mailbox
import os
import pwd
import secrets
import shutil
import smtplib
import subprocess

import pytest

from estafeta.testing.instance import Instance, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: creates system users with useradd")


@pytest.fixture(scope="module")
def users():
    tag = secrets.token_hex(3)
    names = {role: f"et{tag}{role}" for role in ("xavier", "pepe", "juan", "md", "mc", "cd")}
    made = []
    try:
        for n in names.values():
            subprocess.run(["useradd", "-m", "-s", "/bin/sh", n], check=True, capture_output=True)
            made.append(n)
        yield names
    finally:
        for n in made:
            subprocess.run(["userdel", "-r", n], capture_output=True)
            try:
                os.unlink(f"/var/mail/{n}")
            except FileNotFoundError:
                pass


def write_as(user: str, path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
    pw = pwd.getpwnam(user)
    os.chown(path, pw.pw_uid, pw.pw_gid)


@pytest.fixture(scope="module")
def inst(users):
    x, p, j = users["xavier"], users["pepe"], users["juan"]
    i = Instance(main={"mydestination": "localhost", "local_transport": "local", "local_recipient_maps": "",
                       "mail_spool_directory": "/var/mail"})
    i.init()
    out = i.path("out")
    os.makedirs(out)
    os.chmod(out, 0o1777)
    with open(i.path("club"), "w") as f:
        f.write(f"# an include file\n{j}\n")
    with open(i.path("aliases"), "w") as f:
        f.write(f"""\
# as in the seed, chapter 9
usuarios: {x},{p},
    {j}
club: :include:{i.path('club')}
logger: "|id -u > {out}/alias-cmd.uid; cat > {out}/alias-cmd.msg", {out}/alias-file
loopa: loopb
loopb: loopa
""")
    i.cli("config", "-e", f"alias_maps=hash:{i.path('aliases')}", f"alias_database=hash:{i.path('aliases')}")
    r = i.cli("newaliases", check=False)
    assert r.returncode == 0, r.stderr
    # juan keeps a copy and runs a command of his own
    write_as(j, os.path.join(pwd.getpwnam(j).pw_dir, ".forward"), f'\\{j}\n"|id -u > {out}/forward-cmd.uid"\n')
    i.start()
    yield i
    i.cleanup()


def send(inst, rcpts, body: bytes, sender="alice@example.org"):
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=30) as s:
        return s.sendmail(sender, rcpts, body)


def mbox(user: str) -> list:
    try:
        return list(mailbox.mbox(f"/var/mail/{user}", create=False))
    except (FileNotFoundError, mailbox.NoSuchMailboxError):
        return []


def mbox_complete(path: str) -> bool:
    """The file exists and ends with the blank line of a whole message: it is created
    before the message is appended under its lock, so existing is not enough."""
    try:
        with open(path, "rb") as f:
            return f.read().endswith(b"\n\n")
    except FileNotFoundError:
        return False


def subjects(user: str) -> list[str]:
    return [m["Subject"] for m in mbox(user)]


def test_alias_list_one_copy_each_with_from_quoting(inst, users) -> None:
    send(inst, ["usuarios@localhost", f"{users['xavier']}@localhost"],
         b"Subject: reunion\r\n\r\nhola\r\nFrom me\r\nadios\r\n")
    for role in ("xavier", "pepe", "juan"):
        u = users[role]
        wait_for(lambda: "reunion" in subjects(u), what=f"mail for {role}")
    wait_for(lambda: inst.queue_count() == 0, what="empty queue")
    for role in ("xavier", "pepe", "juan"):
        u = users[role]
        got = [m for m in mbox(u) if m["Subject"] == "reunion"]
        assert len(got) == 1, f"{role}: got {len(got)} copies, want 1"
        assert got[0].get_payload() == "hola\n>From me\nadios\n", got[0].get_payload()
        assert got[0]["Delivered-To"] == f"{u}@localhost"
        st = os.stat(f"/var/mail/{u}")
        pw = pwd.getpwnam(u)
        assert (st.st_uid, st.st_mode & 0o777) == (pw.pw_uid, 0o600), f"{role}: owner {st.st_uid} mode {oct(st.st_mode)}"
    wait_for(lambda: "orig_to=<usuarios@localhost>" in inst.log(), 20, what="log line: " + "orig_to=<usuarios@localhost>"[:60])


@pytest.mark.skipif(not shutil.which("mail"), reason="mail not installed (Debian package mailutils)")
def test_mailutils_reads_the_mbox(inst, users) -> None:
    u = users["pepe"]
    send(inst, [f"{u}@localhost"], b"Subject: para mailutils\r\n\r\ncuerpo\r\n")
    wait_for(lambda: "para mailutils" in subjects(u), what="delivery")
    r = subprocess.run(["mail", "-f", f"/var/mail/{u}", "-H"], capture_output=True, text=True, timeout=30)
    assert "para mailutils" in r.stdout, r.stdout + r.stderr
    r = subprocess.run(["mail", "-f", f"/var/mail/{u}", "-p"], capture_output=True, text=True, timeout=30,
                       input="")
    assert "cuerpo" in r.stdout, r.stdout + r.stderr


def test_include_command_file_and_forward(inst, users) -> None:
    j = users["juan"]
    send(inst, ["club@localhost", "logger@localhost"], b"Subject: varios\r\n\r\nFrom here\r\n")
    out = inst.path("out")
    wait_for(lambda: os.path.exists(f"{out}/alias-cmd.msg") and os.path.exists(f"{out}/forward-cmd.uid")
             and "varios" in subjects(j), what="deliveries")
    nobody = pwd.getpwnam("nobody").pw_uid
    assert open(f"{out}/alias-cmd.uid").read().strip() == str(nobody), "alias commands run as default_privs"
    assert open(f"{out}/forward-cmd.uid").read().strip() == str(pwd.getpwnam(j).pw_uid), \
        ".forward commands run as the user"
    assert "\nFrom here\n" in open(f"{out}/alias-cmd.msg").read()
    wait_for(lambda: mbox_complete(f"{out}/alias-file"), what="file delivery")
    box = list(mailbox.mbox(f"{out}/alias-file"))
    assert [m["Subject"] for m in box] == ["varios"] and box[0].get_payload() == ">From here\n"
    assert os.stat(f"{out}/alias-file").st_uid == nobody
    assert subjects(j).count("varios") == 1


def test_loops_bounce_5_4_6(inst, users) -> None:
    x = users["xavier"]
    send(inst, ["loopa@localhost"], b"Subject: loop1\r\n\r\nx\r\n")
    send(inst, [f"{x}@localhost"], f"Delivered-To: {x}@localhost\r\nSubject: loop2\r\n\r\nx\r\n".encode())
    try:
        wait_for(lambda: inst.log().count("dsn=5.4.6") >= 2, what="two loop bounces")
    except TimeoutError:
        pytest.fail(inst.log()[-3000:])
    assert "loop2" not in subjects(x)


def test_unknown_user_bounces_5_1_1(inst) -> None:
    send(inst, ["nosuchuser-zz@localhost"], b"Subject: nobody\r\n\r\nx\r\n")
    wait_for(lambda: 'status=bounced (unknown user: "nosuchuser-zz")' in inst.log(), what="bounce")
    wait_for(lambda: "dsn=5.1.1" in inst.log(), 20, what="log line: " + "dsn=5.1.1"[:60])


def test_only_master_and_local_keep_root(inst, users) -> None:
    send(inst, [f"{users['pepe']}@localhost"], b"Subject: wake local\r\n\r\nx\r\n")
    wait_for(lambda: inst.service_pids("local"), what="the local agent, started on demand")
    assert inst.uid_of(inst.master_pid()) == 0
    for pid in inst.service_pids("local"):
        assert inst.uid_of(pid) == 0
    for cmd in ("smtpd", "qmgr"):
        for pid in inst.service_pids(cmd):
            wait_for(lambda: inst.uid_of(pid) != 0, timeout=10, what=f"{cmd} drops root")


def test_home_maildir(users, instance_factory) -> None:
    u = users["md"]
    i = instance_factory(main={"mydestination": "localhost", "local_transport": "local", "local_recipient_maps": "",
                               "home_mailbox": "Maildir/", "alias_maps": ""})
    send(i, [f"{u}@localhost"], b"Subject: al maildir\r\n\r\nFrom x\r\n")
    md = os.path.join(pwd.getpwnam(u).pw_dir, "Maildir")
    wait_for(lambda: os.path.isdir(f"{md}/new") and os.listdir(f"{md}/new"), what="maildir delivery")
    msgs = list(mailbox.Maildir(md, create=False))
    assert [m["Subject"] for m in msgs] == ["al maildir"]
    assert msgs[0].get_payload() == "From x\n", "Maildir needs no From quoting"
    pw = pwd.getpwnam(u)
    for sub in ("", "new"):
        assert os.stat(os.path.join(md, sub)).st_uid == pw.pw_uid
    assert os.stat(os.path.join(md, "new", os.listdir(f"{md}/new")[0])).st_uid == pw.pw_uid


@pytest.mark.skipif(not shutil.which("mail"), reason="mail not installed (Debian package mailutils)")
def test_mailutils_sends_through_our_sendmail(inst, users) -> None:
    """mail(1) as cron or a user would run it, with estafeta's sendmail in place of
    /usr/sbin/sendmail: the message goes through maildrop and pickup to the mbox."""
    import sys
    u = users["xavier"]
    sendmail = os.path.join(os.path.dirname(sys.executable), "sendmail")
    env = dict(os.environ, ESTAFETA_CONFIG=inst.root)
    r = subprocess.run(["mail", "-E", f"set sendmail=sendmail://{sendmail}", "-s", "desde mailutils",
                        f"{u}@localhost"], input="hola desde mail(1)\n", capture_output=True, text=True,
                       timeout=60, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    wait_for(lambda: "desde mailutils" in subjects(u), what="delivery of mail(1)'s message")
    m = [m for m in mbox(u) if m["Subject"] == "desde mailutils"][0]
    assert "hola desde mail(1)" in m.get_payload()


def test_mailbox_size_limit_bounds_commands(instance_factory) -> None:
    """mailbox_size_limit is the file size limit of |command deliveries, as in Postfix:
    a command that writes past it gets EFBIG ("File too large"), fails, and the
    recipient bounces with the command's output; a command under it delivers."""
    # message_size_limit too: a mailbox_size_limit below it stops the start (as Postfix's local(8)).
    i = instance_factory(main={"mydestination": "localhost", "local_transport": "local", "local_recipient_maps": "",
                               "mailbox_size_limit": "100000", "message_size_limit": "100000"}, start=False)
    out = i.path("out")
    os.makedirs(out)
    os.chmod(out, 0o1777)                     # alias commands run as default_privs
    with open(i.path("aliases"), "w") as f:
        f.write(f'big: "|head -c 200000 /dev/zero > {out}/big"\n'
                f'small: "|head -c 50000 /dev/zero > {out}/small"\n')
    i.cli("config", "-e", f"alias_maps=hash:{i.path('aliases')}", f"alias_database=hash:{i.path('aliases')}")
    r = i.cli("newaliases", check=False)
    assert r.returncode == 0, r.stderr
    i.start()
    send(i, ["big@localhost", "small@localhost"], b"Subject: limit\r\n\r\nx\r\n")

    def line(rcpt: str) -> str:
        return next((x for x in i.log().splitlines() if f"to=<{rcpt}>" in x and "relay=local" in x), "")

    wait_for(lambda: line("big@localhost") and line("small@localhost"), what="both command deliveries")
    big = line("big@localhost")
    assert (f'dsn=5.3.0, status=bounced (Command died with status 1: "head -c 200000 /dev/zero > {out}/big". '
            "Command output: ") in big and big.endswith("File too large )"), big
    assert os.path.getsize(f"{out}/big") == 100000, "the command's file stops at mailbox_size_limit"
    assert "dsn=2.0.0, status=sent (delivered to command: " in line("small@localhost")
    assert os.path.getsize(f"{out}/small") == 50000


MAILBOX_COMMAND = """#!/bin/sh
# A mailbox_command: what it was given, where the test can read it.
out={out}/$USER.$EXTENSION
env > $out.env
printf '%s\\n' "$@" > $out.args
id -u > $out.uid
ulimit -f > $out.ulimit
cat > $out.msg
case "$1" in
full) echo "5.2.2 over quota"; exit 1 ;;
later) echo "try again"; exit 75 ;;
esac
exit 0
"""


def test_mailbox_command(users, instance_factory) -> None:
    """mailbox_command, as Postfix's local(8): after aliases and .forward, the user's mail
    goes to the command, run through /bin/sh as the user with the message on stdin,
    Postfix's environment, mailbox_size_limit as its file size limit, and its value not
    $name-expanded ("$EXTENSION" is the shell's). Its exit is read as any command's."""
    u = users["mc"]
    pw = pwd.getpwnam(u)
    i = instance_factory(main={"mydestination": "localhost", "local_transport": "local", "local_recipient_maps": "",
                               "recipient_delimiter": "+", "alias_maps": "",
                               "mailbox_size_limit": "20480000", "message_size_limit": "10240000"}, start=False)
    out = i.path("out")
    os.makedirs(out)
    os.chmod(out, 0o1777)
    script = i.path("mbcmd")
    with open(script, "w") as f:
        f.write(MAILBOX_COMMAND.format(out=out))
    os.chmod(script, 0o755)
    i.cli("config", "-e", f'mailbox_command={script} "$EXTENSION" $myhostname')
    i.start()
    send(i, [f"{u}+box@localhost"], b"Subject: por comando\r\n\r\nFrom here\r\n")
    line = wait_for(lambda: next((x for x in i.log().splitlines() if f"to=<{u}+box@localhost>" in x), None),
                    what="the delivery log line")
    assert line.endswith(f'status=sent (delivered to command: {script} "$EXTENSION" $myhostname)'), line
    base = f"{out}/{u}.box"
    assert open(f"{base}.args").read() == "box\n", "the shell expands $EXTENSION; $myhostname is empty there"
    assert open(f"{base}.uid").read().strip() == str(pw.pw_uid), "runs as the recipient"
    assert open(f"{base}.ulimit").read().strip() == str(20480000 // 512), "mailbox_size_limit is its ulimit -f"
    env = dict(x.split("=", 1) for x in open(f"{base}.env").read().splitlines() if "=" in x)
    want = {"HOME": pw.pw_dir, "SHELL": "/bin/sh", "USER": u, "LOGNAME": u, "SENDER": "alice@example.org",
            "RECIPIENT": f"{u}+box@localhost", "LOCAL": f"{u}+box", "DOMAIN": "localhost", "EXTENSION": "box",
            "ORIGINAL_RECIPIENT": f"{u}+box@localhost", "CLIENT_ADDRESS": "127.0.0.1", "CLIENT_PROTOCOL": "ESMTP",
            "PATH": "/usr/bin:/bin"}
    assert {k: env.get(k) for k in want} == want, env
    assert env.get("CLIENT_HELO") and env.get("CLIENT_HOSTNAME"), env
    msg = open(f"{base}.msg").read()
    assert msg.startswith("From alice@example.org "), msg[:80]
    assert "\nReturn-Path: <alice@example.org>\n" in msg and f"\nDelivered-To: {u}+box@localhost\n" in msg, msg
    assert msg.endswith("\n\nFrom here\n"), "a command gets the message unquoted"
    assert mbox(u) == [], "no mailbox written"

    send(i, [f"{u}+full@localhost", f"{u}+later@localhost"], b"Subject: no cabe\r\n\r\nx\r\n")
    wait_for(lambda: f"to=<{u}+full@localhost>, relay=local" in i.log()
             and f"to=<{u}+later@localhost>, relay=local" in i.log(), what="both results")
    log = i.log().splitlines()
    full = next(x for x in log if f"to=<{u}+full@localhost>, relay=local" in x)
    later = next(x for x in log if f"to=<{u}+later@localhost>, relay=local" in x)
    assert "dsn=5.2.2, status=bounced (over quota )" in full, full
    assert "dsn=4.3.0, status=deferred (temporary failure. Command output: try again )" in later, later


def test_mailbox_command_maps_in_command_execution_directory(users, instance_factory) -> None:
    """mailbox_command_maps (keyed by the bare user name) names the user's command; it
    runs in command_execution_directory, expanded per recipient ($home, $extension) and
    entered as the user: a directory that is not there defers the recipient, as in
    Postfix, and the command does not run."""
    u = users["cd"]
    pw = pwd.getpwnam(u)
    i = instance_factory(main={"mydestination": "localhost", "local_transport": "local", "local_recipient_maps": "",
                               "recipient_delimiter": "+", "alias_maps": ""}, start=False)
    with open(i.path("cmdmaps"), "w") as f:
        f.write(f"{u} pwd > here; id -u >> here\n")
    i.cli("config", "-e", f"mailbox_command_maps=texthash:{i.path('cmdmaps')}",
          "command_execution_directory=$home/in${extension}")
    work = os.path.join(pw.pw_dir, "ina")
    os.mkdir(work, 0o700)
    os.chown(work, pw.pw_uid, pw.pw_gid)
    i.start()
    send(i, [f"{u}+a@localhost", f"{u}+b@localhost"], b"Subject: donde\r\n\r\nx\r\n")

    def line(rcpt: str) -> str:
        return next((x for x in i.log().splitlines() if f"to=<{rcpt}>" in x and "relay=local" in x), "")

    wait_for(lambda: line(f"{u}+a@localhost") and line(f"{u}+b@localhost"), what="both results")
    assert "status=sent (delivered to command: pwd > here; id -u >> here)" in line(f"{u}+a@localhost")
    assert open(os.path.join(work, "here")).read().split() == [work, str(pw.pw_uid)]
    assert "dsn=4.3.0, status=deferred (temporary failure)" in line(f"{u}+b@localhost"), line(f"{u}+b@localhost")
    assert f'cannot change directory to "{pw.pw_dir}/inb" for uid={pw.pw_uid}' in i.log()
    assert mbox(u) == [], "no mailbox written"


def test_start_refuses_mailbox_limit_below_message_limit(instance_factory) -> None:
    """Postfix: "fatal: main.cf configuration error: mailbox_size_limit is smaller than
    message_size_limit"; here check and start say so, with the main.cf line."""
    i = instance_factory(main={"mailbox_size_limit": "1000000"}, start=False)
    lines = open(i.path("main.cf")).read().splitlines()
    n = next(k for k, x in enumerate(lines, 1) if x.startswith("mailbox_size_limit"))
    want = (f"{i.path('main.cf')}, line {n}: mailbox_size_limit is smaller than message_size_limit "
            "(1000000 < 10240000)")
    for cmd in ("check", "start"):
        r = i.cli(cmd, check=False)
        assert r.returncode != 0 and want in r.stderr, f"{cmd}: got {r.returncode} {r.stderr!r}, want {want!r}"
    assert i.master_pid() is None
