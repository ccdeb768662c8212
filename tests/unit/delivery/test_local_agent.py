"""The local delivery agent: aliases, .forward, mbox, files, commands, loops, limits.

The recipient is the user running the tests (root in CI, anyone elsewhere); as root,
file and command deliveries run as default_privs (nobody), so their directory is
world-writable. Real separate users are the e2e suite's (tests/e2e/test_local_delivery.py).
"""
import mailbox
import os
import pwd
import shutil
import stat
import tempfile

import pytest

from estafeta.config.main_cf import MainConfig
from estafeta.delivery import base, local, mailbox as mbox_writer
from estafeta.queue.store import QueueStore
from estafeta.tables.aliases import build_database

ME = pwd.getpwuid(os.getuid()).pw_name
ROOT = os.geteuid() == 0
MSG = b"From: a@example.org\nSubject: hi\n\nline one\nFrom me\n>From you\nlast\n"


@pytest.fixture
def shared():
    d = tempfile.mkdtemp(prefix="estafeta-local-", dir="/tmp")
    os.chmod(d, 0o1777)
    os.makedirs(os.path.join(d, "spool"), mode=0o1777)
    os.chmod(os.path.join(d, "spool"), 0o1777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def agent(d: str, aliases: str = "", store=None, **params: str) -> local.LocalAgent:
    with open(os.path.join(d, "aliases"), "w") as f:
        f.write(aliases)
    build_database(f"hash:{d}/aliases")
    settings = {"myhostname": "localhost", "mydestination": "localhost", "local_transport": "local",
                "alias_maps": f"hash:{d}/aliases", "mail_spool_directory": f"{d}/spool",
                "forward_path": f"{d}/forward.$user", "mail_owner": ME, "fsync_queue": "no", **params}
    cfg = MainConfig.parse("".join(f"{k} = {v}\n" for k, v in settings.items()))
    return local.LocalAgent(cfg, "local", store)


def request(d: str, *rcpts: str, message: bytes = MSG, sender: str = "a@example.org") -> base.DeliveryRequest:
    qf = os.path.join(d, "qfile")
    with open(qf, "wb") as f:
        f.write(b"ENVELOPE\n" + message)
    return base.DeliveryRequest("QID1", qf, 9, sender, 0.0, "local", "localhost",
                                [base.RecipientRequest(r) for r in rcpts])


def results(a, req):
    return [(r.status, r.dsn) for r in a.deliver_sync(req)]


def mbox_messages(d: str, user: str = ME):
    return list(mailbox.mbox(os.path.join(d, "spool", user), create=False))


def test_mbox_format(shared) -> None:
    a = agent(shared)
    assert results(a, request(shared, f"{ME}@localhost")) == [("sent", "2.0.0")]
    path = os.path.join(shared, "spool", ME)
    raw = open(path, "rb").read()
    assert raw.startswith(b"From a@example.org  "), raw[:60]
    assert b"\nReturn-Path: <a@example.org>\nX-Original-To: " in raw
    assert f"\nDelivered-To: {ME}@localhost\n".encode() in raw
    assert b"\n>From me\n>From you\nlast\n\n" in raw and raw.endswith(b"last\n\n"), raw
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.stat(path).st_uid == os.getuid()
    assert not os.path.exists(path + ".lock")
    msgs = mbox_messages(shared)
    assert len(msgs) == 1 and msgs[0]["Subject"] == "hi"
    assert msgs[0].get_payload() == "line one\n>From me\n>From you\nlast\n"


def test_second_message_appends(shared) -> None:
    a = agent(shared)
    a.deliver_sync(request(shared, f"{ME}@localhost"))
    a.deliver_sync(request(shared, f"{ME}@localhost", message=b"Subject: two\n\nno newline at end"))
    got = [m["Subject"] for m in mbox_messages(shared)]
    assert got == ["hi", "two"], got


def test_alias_list_delivers_one_copy_per_final_recipient(shared) -> None:
    a = agent(shared, f"usuarios: {ME}, otro, \\{ME}\notro: {ME.upper()}\n")
    req = request(shared, "usuarios@localhost", f"{ME}@localhost")
    got = results(a, req)
    assert got == [("sent", "2.0.0"), ("sent", "2.0.0")], got
    assert len(mbox_messages(shared)) == 1


def test_owner_alias_becomes_the_sender(shared) -> None:
    a = agent(shared, f"lista: {ME}\nowner-lista: {ME}\n")
    a.deliver_sync(request(shared, "lista@localhost"))
    m = mbox_messages(shared)[0]
    assert m["Return-Path"] == "<owner-lista@localhost>", m["Return-Path"]
    assert m.get_from().startswith("owner-lista@localhost ")


def test_unknown_user_bounces(shared) -> None:
    a = agent(shared)
    got = a.deliver_sync(request(shared, "no-such-user-xq@localhost"))[0]
    assert (got.status, got.dsn, got.reason) == ("bounced", "5.1.1", 'unknown user: "no-such-user-xq"')


def test_delivered_to_loop(shared) -> None:
    a = agent(shared)
    msg = f"Delivered-To: {ME}@localhost\nSubject: x\n\nbody\n".encode()
    got = a.deliver_sync(request(shared, f"{ME}@localhost", message=msg))[0]
    assert (got.status, got.dsn) == ("bounced", "5.4.6"), got
    assert "loop" in got.reason


def test_alias_loop(shared) -> None:
    a = agent(shared, "a: b\nb: c\nc: a\n")
    got = a.deliver_sync(request(shared, "a@localhost"))[0]
    assert (got.status, got.dsn) == ("bounced", "5.4.6"), got


def test_self_referencing_alias_means_the_mailbox(shared) -> None:
    a = agent(shared, f"{ME}: {ME}, copy\ncopy: {shared}/copy.mbox\n")
    assert results(a, request(shared, f"{ME}@localhost")) == [("sent", "2.0.0")]
    assert len(mbox_messages(shared)) == 1
    assert len(mailbox.mbox(f"{shared}/copy.mbox")) == 1


def test_file_and_command_from_alias(shared) -> None:
    out = f"{shared}/cmd.out"
    a = agent(shared, f'log: {shared}/log.mbox, "|env > {out}; cat >> {out}; id -u >> {out}"\n')
    assert results(a, request(shared, "log@localhost", sender="s@example.org")) == [("sent", "2.0.0")]
    box = mailbox.mbox(f"{shared}/log.mbox")
    assert [m["Subject"] for m in box] == ["hi"]
    text = open(out).read()
    assert "SENDER=s@example.org\n" in text and "RECIPIENT=log@localhost\n" in text
    assert "\nFrom me\n" in text, "commands get the message unquoted"
    want_uid = pwd.getpwnam("nobody").pw_uid if ROOT else os.getuid()
    assert text.rstrip().splitlines()[-1] == str(want_uid), f"command ran as {text.splitlines()[-1]}, want {want_uid}"
    if ROOT:
        assert os.stat(f"{shared}/log.mbox").st_uid == want_uid


def test_command_exit_codes(shared) -> None:
    a = agent(shared, 'tmp: "|exit 75"\nperm: "|echo no such list; exit 1"\n')
    t, p = a.deliver_sync(request(shared, "tmp@localhost", "perm@localhost"))
    assert (t.status, t.dsn) == ("deferred", "4.3.0"), t
    assert (p.status, p.dsn) == ("bounced", "5.3.0"), p
    assert "Command died with status 1" in p.reason and "no such list" in p.reason, p.reason


def test_command_time_limit_bounces(shared) -> None:
    """Postfix's local(8) bounces a command that runs out of time, 5.3.0."""
    a = agent(shared, 'slow: "|echo started; sleep 30"\n', command_time_limit="1s")
    got = a.deliver_sync(request(shared, "slow@localhost"))[0]
    want = ("bounced", "5.3.0", 'Command time limit exceeded: "echo started; sleep 30". Command output: started ')
    assert (got.status, got.dsn, got.reason) == want, f"got {got}, want {want}"


@pytest.mark.parametrize("cmd, want", [
    ("echo who; exit 67", ("bounced", "5.1.1", "user unknown. Command output: who ")),
    ("exit 73", ("bounced", "5.2.0", "can't create user output file")),
    ("echo busy; exit 71", ("deferred", "4.3.0", "system resource problem. Command output: busy ")),
    ("echo 4.2.2 over quota; exit 1", ("deferred", "4.2.2", "over quota ")),
    ("echo 5.7.1 not you; exit 75", ("bounced", "5.7.1", "not you ")),
    ("kill -TERM $$", ("deferred", "4.3.0", 'Command died with signal 15: "kill -TERM $$"')),
])
def test_command_results_as_postfix(shared, cmd, want) -> None:
    a = agent(shared, f'c: "|{cmd}"\n')
    got = a.deliver_sync(request(shared, "c@localhost"))[0]
    assert (got.status, got.dsn, got.reason) == want, f"got {got}, want {want}"


def test_command_environment(shared) -> None:
    """Postfix's local(8) environment: USER and LOGNAME are the bare recipient name,
    RECIPIENT the queued recipient, client attributes from the envelope, values censored
    with command_expansion_filter, empty ones left out, PATH reset."""
    from estafeta.queue import qfile
    out = f"{shared}/env.out"
    a = agent(shared, f'list: "|env > {out}"\n', recipient_delimiter="+")
    qf = os.path.join(shared, "qfile")
    env_bytes = qfile.encode_envelope(0.0, "s@x", [("List+Tag@localhost", {})],
                                      {"client_name": "mx.example.org", "client_address": "192.0.2.7",
                                       "helo_name": "helo;rm", "protocol": "ESMTP"})
    with open(qf, "wb") as f:
        f.write(env_bytes + MSG)
    req = base.DeliveryRequest("QID1", qf, len(env_bytes), "o'brien@example.org", 0.0, "local", "localhost",
                               [base.RecipientRequest("List+Tag@localhost", "orig@example.org")])
    got = a.deliver_sync(req)[0]
    assert got.status == "sent", got
    env = dict(line.split("=", 1) for line in open(out).read().splitlines() if "=" in line)
    want = {"USER": "list", "LOGNAME": "list", "RECIPIENT": "List+Tag@localhost", "LOCAL": "list+tag",
            "DOMAIN": "localhost", "EXTENSION": "tag", "ORIGINAL_RECIPIENT": "orig@example.org",
            "SENDER": "o_brien@example.org", "CLIENT_HOSTNAME": "mx.example.org", "CLIENT_ADDRESS": "192.0.2.7",
            "CLIENT_HELO": "helo_rm", "CLIENT_PROTOCOL": "ESMTP", "PATH": "/usr/bin:/bin"}
    assert {k: env.get(k) for k in want} == want, env
    assert not {"SASL_METHOD", "SASL_USERNAME", "SASL_SENDER"} & set(env), "empty attributes are left out"


def test_mailbox_command(shared) -> None:
    """mailbox_command replaces the mailbox, after aliases and .forward; it runs as the
    user (default_privs for root) and is not $name-expanded: the shell expands $USER."""
    out = f"{shared}/mbcmd"
    a = agent(shared, mailbox_command=f'echo "$USER $myhostname" > {out}; cat >> {out}; id -u >> {out}')
    got = a.deliver_sync(request(shared, f"{ME}@localhost"))[0]
    assert (got.status, got.dsn) == ("sent", "2.0.0"), got
    assert got.reason.startswith("delivered to command: echo \"$USER $myhostname\""), got.reason
    text = open(out).read().splitlines()
    assert text[0] == f"{ME} ", f"got {text[0]!r}: $myhostname is the shell's (empty), not main.cf's"
    assert text[1].startswith("From a@example.org ") and "Return-Path: <a@example.org>" in text
    want_uid = pwd.getpwnam("nobody").pw_uid if os.getuid() == 0 else os.getuid()
    assert text[-1] == str(want_uid), f"ran as {text[-1]}, want {want_uid}"
    assert not os.path.exists(os.path.join(shared, "spool", ME)), "no mailbox written"


def test_mailbox_command_runs_once_per_extension(shared) -> None:
    """The command sees the extension, so user+a and user+b are two deliveries (Postfix
    keys mailbox deliveries by the whole local part); the mbox stays one per user."""
    out = f"{shared}/ext"
    a = agent(shared, recipient_delimiter="+", mailbox_command=f'echo "$EXTENSION" >> {out}')
    got = a.deliver_sync(request(shared, f"{ME}+a@localhost", f"{ME}+b@localhost"))
    assert [(r.status, r.reason) for r in got] == [("sent", f'delivered to command: echo "$EXTENSION" >> {out}')] * 2
    assert open(out).read() == "a\nb\n"


def test_mailbox_command_result_is_the_recipients(shared) -> None:
    a = agent(shared, mailbox_command="echo 5.2.2 mailbox full; exit 1")
    got = a.deliver_sync(request(shared, f"{ME}@localhost"))[0]
    assert (got.status, got.dsn, got.reason) == ("bounced", "5.2.2", "mailbox full "), got


def test_restricted_commands_and_files(shared) -> None:
    a = agent(shared, f'c: "|cat"\nf: {shared}/f\n', allow_mail_to_commands="forward", allow_mail_to_files="forward")
    c, f = a.deliver_sync(request(shared, "c@localhost", "f@localhost"))
    assert (c.status, c.dsn, c.reason) == ("bounced", "5.7.1", "mail to command is restricted"), c
    assert (f.status, f.dsn, f.reason) == ("bounced", "5.7.1", "mail to file is restricted"), f


def test_include(shared) -> None:
    with open(f"{shared}/list", "w") as fh:
        fh.write(f"# members\n{ME}\n{shared}/inc.mbox\n")
    a = agent(shared, f"club: :include:{shared}/list\n", allow_mail_to_files="alias, forward, include")
    assert results(a, request(shared, "club@localhost")) == [("sent", "2.0.0")]
    assert len(mbox_messages(shared)) == 1
    assert len(mailbox.mbox(f"{shared}/inc.mbox")) == 1


def test_include_commands_need_include_class(shared) -> None:
    with open(f"{shared}/list", "w") as fh:
        fh.write('"|cat"\n')
    a = agent(shared, f"club: :include:{shared}/list\n")
    got = a.deliver_sync(request(shared, "club@localhost"))[0]
    assert (got.status, got.dsn) == ("bounced", "5.7.1"), got


def test_forward_file(shared) -> None:
    with open(f"{shared}/forward.{ME}", "w") as fh:
        fh.write(f"\\{ME}\n{shared}/fwd.mbox\n")
    a = agent(shared)
    assert results(a, request(shared, f"{ME}@localhost")) == [("sent", "2.0.0")]
    assert len(mbox_messages(shared)) == 1
    assert len(mailbox.mbox(f"{shared}/fwd.mbox")) == 1


def test_forward_to_remote_writes_a_queue_file(shared) -> None:
    store = QueueStore(f"{shared}/queue")
    store.create_dirs()
    a = agent(shared, "away: someone@example.net\n", store=store)
    got = a.deliver_sync(request(shared, "away@localhost"))[0]
    assert got.status == "sent" and got.reason.startswith("forwarded as "), got
    qid = got.reason.split()[-1]
    env = store.read_envelope("incoming", qid)
    assert [(r.address, r.original) for r in env.recipients] == [("someone@example.net", "away@localhost")]
    data = open(store.path("incoming", qid), "rb").read()
    assert b"Delivered-To: away@localhost\nFrom: a@example.org\n" in data


def test_mailbox_size_limit(shared) -> None:
    a = agent(shared, mailbox_size_limit="200")
    assert results(a, request(shared, f"{ME}@localhost")) == [("sent", "2.0.0")]
    got = a.deliver_sync(request(shared, f"{ME}@localhost"))[0]
    assert (got.status, got.dsn) == ("bounced", "5.2.2"), got
    assert len(mbox_messages(shared)) == 1, "the mailbox keeps only whole messages"


def test_busy_and_stale_dotlock(shared, monkeypatch) -> None:
    monkeypatch.setattr(mbox_writer, "LOCK_ATTEMPTS", 2)
    monkeypatch.setattr(mbox_writer, "LOCK_DELAY", 0.01)
    a = agent(shared)
    lock = os.path.join(shared, "spool", ME + ".lock")
    open(lock, "w").close()
    got = a.deliver_sync(request(shared, f"{ME}@localhost"))[0]
    assert (got.status, got.dsn) == ("deferred", "4.2.0"), got
    os.utime(lock, (1, 1))                 # far older than stale_lock_time
    assert results(a, request(shared, f"{ME}@localhost")) == [("sent", "2.0.0")]
    assert not os.path.exists(lock)


def test_maildir_file_destination(shared) -> None:
    a = agent(shared, f"md: {shared}/md/\n")
    assert results(a, request(shared, "md@localhost")) == [("sent", "2.0.0")]
    assert [m["Delivered-To"] for m in mailbox.Maildir(f"{shared}/md", create=False)] == ["md@localhost"]


@pytest.mark.skipif(not ROOT, reason="needs root: run_as switches users")
def test_run_as_switches_user() -> None:
    nobody = local.Privs.of(pwd.getpwnam("nobody"))
    assert local.run_as(nobody, os.getuid) == nobody.uid
    assert os.getuid() == 0
    with pytest.raises(PermissionError):
        local.run_as(nobody, os.open, "/etc/shadow", os.O_RDONLY)


def test_missing_alias_database_defers(shared) -> None:
    a = agent(shared, alias_maps=f"hash:{shared}/nothere")
    got = a.deliver_sync(request(shared, f"{ME}@localhost"))[0]
    assert (got.status, got.dsn) == ("deferred", "4.3.0"), got
