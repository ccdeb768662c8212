"""pipe agent: master.cf attributes, argv macros, flags, exit statuses, and real commands."""
from __future__ import annotations

import os
import stat
import sys

import pytest

from estafeta.config.main_cf import MainConfig
from estafeta.core.errors import ConfigError
from estafeta.delivery import base
from estafeta.delivery.pipe import (PipeAgent, Rcpt, expand, expand_argv, message_image, outcome,
                                    parse_attributes, quote_local, unescape_eol)
from estafeta.queue import qfile


def check(got, want) -> None:
    assert got == want, f"got {got!r}, want {want!r}"


# -- attributes -----------------------------------------------------------------------------

def test_parse_attributes_argv_last_keeps_everything_after_it() -> None:
    s = parse_attributes(["flags=DRhu", "user=nobody:nogroup", "size=1000", "eol=\\r\\n",
                          "argv=/usr/bin/cmd", "-f", "${sender}", "--", "user=x", "${recipient}"])
    check((s.argv, s.user, s.group, s.flags, s.size_limit, s.eol, s.per_recipient),
          (("/usr/bin/cmd", "-f", "${sender}", "--", "user=x", "${recipient}"), "nobody", "nogroup",
           frozenset("DRhu"), 1000, b"\r\n", True))


@pytest.mark.parametrize("args, problem", [
    (["user=nobody"], "missing argv"),
    (["argv=/bin/true"], "missing user"),
    (["user=nobody", "flags=Z", "argv=/bin/true"], "unknown flag"),
    (["user=nobody", "argv=/bin/echo", "${nosuch}"], "unknown macro"),
    (["user=nobody", "bogus=1", "argv=/bin/true"], "unknown attribute"),
    (["user=nobody", "size=big", "argv=/bin/true"], "bad size"),
    (["user=nobody", "chroot=/x", "argv=/bin/true"], "chroot"),
])
def test_parse_attributes_errors(args, problem) -> None:
    with pytest.raises(ConfigError) as e:
        parse_attributes(args)
    assert problem in e.value.problem, f"got {e.value.problem!r}, want it to mention {problem!r}"


def test_unescape_eol() -> None:
    check(unescape_eol(r"\r\n"), b"\r\n")
    check(unescape_eol(r"\015\012\\x"), b"\r\n\\x")


# -- macros ---------------------------------------------------------------------------------

def test_macro_forms() -> None:
    v = {"sender": "s@x", "nexthop": "hop", "size": ""}
    check(expand("$sender ${sender} $(sender) $$sender ${nexthop}!rmail", v), "s@x s@x s@x $sender hop!rmail")
    check(expand("${nexthop?-n $nexthop}|${size:none}|${size?x}", v), "-n hop|none|")


def spec(*argv: str, flags: str = ""):
    return parse_attributes([f"flags={flags}", "user=nobody", "argv=/bin/cmd", *argv])


COMMON = {"sender": "Sender@Example.ORG", "nexthop": "Hop.Example", "queue_id": "3F1A2B7C9", "size": "123",
          "client_address": "192.0.2.7"}


def test_per_recipient_arguments_repeat_per_recipient() -> None:
    s = spec("-f", "${sender}", "-h", "$nexthop", "--", "${recipient}", "<$user|$extension|$mailbox|$domain>")
    got = expand_argv(s, COMMON, [Rcpt("Bob+Tag@Ex.COM", "orig@ex.com"), Rcpt("carol@ex.com")], "+")
    check(got, ["/bin/cmd", "-f", "Sender@Example.ORG", "-h", "Hop.Example", "--",
                "Bob+Tag@Ex.COM", "carol@ex.com", "<Bob|Tag|Bob+Tag|Ex.COM>", "<carol||carol|ex.com>"])


def test_other_macros() -> None:
    s = spec("${queue_id}", "${size}", "${client_address}", "${original_recipient}", "${client_helo}")
    check(expand_argv(s, COMMON, [Rcpt("a@ex.com", "first@ex.com")]),
          ["/bin/cmd", "3F1A2B7C9", "123", "192.0.2.7", "first@ex.com", ""])


def test_flags_h_u_fold_case() -> None:
    s = spec("$nexthop", "$recipient", "$original_recipient", "$user", "$domain", "$sender", flags="hu")
    check(expand_argv(s, COMMON, [Rcpt("Bob@Ex.COM", "Orig@Ex.COM")]),
          ["/bin/cmd", "hop.example", "bob@ex.com", "orig@ex.com", "bob", "ex.com", "Sender@Example.ORG"])


def test_flag_q_quotes_local_parts_and_null_sender() -> None:
    s = spec("$sender", "$recipient", "$mailbox", flags="q")
    got = expand_argv(s, {**COMMON, "sender": ""}, [Rcpt('"a b;c"@ex.com')])
    check(got, ["/bin/cmd", "MAILER-DAEMON", '"a b;c"@ex.com', "a b;c"])
    s2 = parse_attributes(["user=nobody", "null_sender=", "argv=/bin/cmd", "-f", "$sender"])
    check(expand_argv(s2, {**COMMON, "sender": ""}, [Rcpt("a@b")]), ["/bin/cmd", "-f", ""])
    check(quote_local('we"ird\\'), '"we\\"ird\\\\"')
    check(quote_local("plain.user+tag"), "plain.user+tag")


def test_hostile_local_parts_stay_one_literal_argument() -> None:
    s = spec("--", "${recipient}", "${user}")
    rcpts = [Rcpt('"a;rm -rf x"@ex.com'), Rcpt("-oQ/tmp/x@ex.com"), Rcpt('"|touch /tmp/y"@ex.com'),
             Rcpt('"$(id) `id` ${sender}"@ex.com')]
    got = expand_argv(s, COMMON, rcpts)
    check(got, ["/bin/cmd", "--", "a;rm -rf x@ex.com", "-oQ/tmp/x@ex.com", "|touch /tmp/y@ex.com",
                "$(id) `id` ${sender}@ex.com", "a;rm -rf x", "-oQ/tmp/x", "|touch /tmp/y", "$(id) `id` ${sender}"])


# -- the message image -----------------------------------------------------------------------

MSG = b"Subject: hi\n\nFrom here\n.dot\nlast"


def test_image_headers_and_quoting() -> None:
    s = spec(flags="DOR>.B")
    got = message_image(s, "s@x", Rcpt("r@y", "o@y"), MSG)
    check(got, b"Return-Path: <s@x>\nX-Original-To: o@y\nDelivered-To: r@y\nSubject: hi\n\n>From here\n..dot\nlast\n\n")


def test_image_from_line_and_eol() -> None:
    s = parse_attributes(["flags=F", "eol=\\r\\n", "user=nobody", "argv=/bin/cmd"])
    got = message_image(s, "", None, b"A: b\n\nbody\n", when=0)
    assert got.startswith(b"From MAILER-DAEMON  "), f"got {got[:40]!r}, want a From_ line for MAILER-DAEMON"
    assert got.endswith(b"\r\nA: b\r\n\r\nbody\r\n"), f"got {got!r}, want CRLF line ends"


def test_image_unchanged_without_flags() -> None:
    check(message_image(spec(), "s@x", Rcpt("r@y"), b"From x\n.y\n"), b"From x\n.y\n")


# -- exit statuses ----------------------------------------------------------------------------

# The whole table is tests/unit/delivery/test_delivery_command.py (shared with the local
# agent); here, that the pipe agent uses it.
@pytest.mark.parametrize("rc, out, want", [
    (0, b"", (base.SENT, "2.0.0", "")),
    (75, b"try later\n", (base.DEFERRED, "4.3.0", "temporary failure. Command output: try later ")),
    (67, b"", (base.BOUNCED, "5.1.1", "user unknown")),
    (1, b"4.2.2 mailbox full\n", (base.DEFERRED, "4.2.2", "mailbox full ")),
    (None, b"", (base.BOUNCED, "5.3.0", 'Command time limit exceeded: "/bin/cmd"')),
])
def test_outcome(rc, out, want) -> None:
    check(outcome(rc, out, "/bin/cmd"), want)


# -- the agent, with real commands -------------------------------------------------------------

SCRIPT = """#!{python}
import json, os, sys
out = {{"argv": sys.argv[1:], "stdin": sys.stdin.read(), "uid": os.getuid(), "cwd": os.getcwd()}}
with open(os.path.join({d!r}, "calls"), "a") as f:
    f.write(json.dumps(out) + "\\n")
code = int(os.environ.get("X", "0") or 0)
for a in sys.argv[1:]:
    if a.startswith("exit="):
        code = int(a.split("@")[0][5:])
if code:
    print("script says", code)
sys.exit(code)
"""


# The command runs as user=nobody when the tests run as root: everything it touches
# lives in a world-searchable directory, and it is run by the system's python3 (the
# venv's interpreter may sit where nobody cannot read, e.g. under /root).
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


@pytest.fixture
def setup():
    import pathlib
    import shutil
    import tempfile
    tmp_path = pathlib.Path(tempfile.mkdtemp(prefix="estafeta-pipe-", dir="/tmp"))
    try:
        yield _setup(tmp_path)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)


def _setup(tmp_path):
    d = tmp_path / "work"
    d.mkdir()
    os.chmod(tmp_path, 0o755)
    os.chmod(d, 0o777)
    script = tmp_path / "record"
    script.write_text(SCRIPT.format(python=PYTHON, d=str(d)))
    script.chmod(0o755)
    qf = tmp_path / "qf"
    rcpts = [("a@ex.com", {}), ('"b;rm -rf x"@ex.com', {"o": "alias@ex.com"})]
    env_bytes = qfile.encode_envelope(1000.0, "s@x", rcpts, {"client_address": "192.0.2.9"})
    body = b"Subject: t\n\nhello\n"
    qf.write_bytes(env_bytes + body)
    os.chmod(qf, 0o644)
    env = qfile.read_envelope(str(qf), "QID1")
    return tmp_path, script, str(qf), env


def agent(tmp_path, args, extra=""):
    cfg = MainConfig.parse(f"queue_directory = {tmp_path}\nmail_owner = daemon\nrecipient_delimiter = +\n"
                           f"command_time_limit = 5s\n{extra}", "main.cf")
    return PipeAgent(cfg, "mypipe", args, str(tmp_path))


def request(qf, env, rcpts):
    return base.DeliveryRequest("QID1", qf, env.message_offset, "s@x", 1000.0, "mypipe", "ex.com",
                                [base.RecipientRequest(a, o) for a, o in rcpts])


def calls(tmp_path):
    import json
    p = tmp_path / "work" / "calls"
    return [json.loads(line) for line in p.read_text().splitlines()] if p.exists() else []


def test_agent_runs_argv_without_shell(setup) -> None:
    tmp_path, script, qf, env = setup
    a = agent(tmp_path, ["flags=R", "user=nobody", f"argv={script}", "${sender}", "${recipient}", "${client_address}"])
    res = a.deliver_sync(request(qf, env, [("a@ex.com", ""), ('"b;rm -rf x"@ex.com', "alias@ex.com")]))
    check([(r.status, r.dsn, r.reason) for r in res], [(base.SENT, "2.0.0", "delivered via mypipe service")] * 2)
    got = calls(tmp_path)
    check(len(got), 1)
    check(got[0]["argv"], ["s@x", "a@ex.com", "b;rm -rf x@ex.com", "192.0.2.9"])
    check(got[0]["stdin"], "Return-Path: <s@x>\nSubject: t\n\nhello\n")
    if os.geteuid() == 0:
        check(got[0]["uid"], __import__("pwd").getpwnam("nobody").pw_uid)


def test_agent_D_flag_means_one_command_per_recipient(setup) -> None:
    tmp_path, script, qf, env = setup
    a = agent(tmp_path, ["flags=DO", "user=nobody", f"argv={script}", "${recipient}"])
    res = a.deliver_sync(request(qf, env, [("a@ex.com", ""), ("c@ex.com", "alias@ex.com")]))
    check([r.status for r in res], [base.SENT, base.SENT])
    got = calls(tmp_path)
    check([c["argv"] for c in got], [["a@ex.com"], ["c@ex.com"]])
    check(got[1]["stdin"].split("\n")[:2], ["X-Original-To: alias@ex.com", "Delivered-To: c@ex.com"])


def test_agent_recipient_limit_splits_commands(setup) -> None:
    tmp_path, script, qf, env = setup
    a = agent(tmp_path, ["user=nobody", f"argv={script}", "${recipient}"], "mypipe_destination_recipient_limit = 2\n")
    a.deliver_sync(request(qf, env, [("a@ex.com", ""), ("b@ex.com", ""), ("c@ex.com", "")]))
    check([c["argv"] for c in calls(tmp_path)], [["a@ex.com", "b@ex.com"], ["c@ex.com"]])


@pytest.mark.parametrize("code, want", [
    ("75", (base.DEFERRED, "4.3.0", "temporary failure. Command output: script says 75 ")),
    ("67", (base.BOUNCED, "5.1.1", "user unknown. Command output: script says 67 ")),
    ("3", (base.BOUNCED, "5.3.0", None)),
])
def test_agent_exit_status(setup, code, want) -> None:
    tmp_path, script, qf, env = setup
    a = agent(tmp_path, ["user=nobody", f"argv={script}", f"exit={code}@${{recipient}}"])
    (r,) = a.deliver_sync(request(qf, env, [("a@ex.com", "")]))
    check((r.status, r.dsn), want[:2])
    if want[2] is not None:
        check(r.reason, want[2])
    else:
        assert r.reason.startswith(f'Command died with status {code}: "{script}"') and "script says" in r.reason, r.reason


def test_agent_time_limit_bounces(setup) -> None:
    """pipe(8), like local(8), bounces a command that runs out of time (5.3.0)."""
    tmp_path, _, qf, env = setup
    slow = tmp_path / "slow"
    slow.write_text("#!/bin/sh\nsleep 30\n")
    slow.chmod(0o755)
    a = agent(tmp_path, ["user=nobody", f"argv={slow}"], "mypipe_time_limit = 1s\n")
    (r,) = a.deliver_sync(request(qf, env, [("a@ex.com", "")]))
    check((r.status, r.dsn, r.reason), (base.BOUNCED, "5.3.0", f'Command time limit exceeded: "{slow}"'))


def test_agent_missing_program_defers(setup) -> None:
    tmp_path, _, qf, env = setup
    a = agent(tmp_path, ["user=nobody", f"argv={tmp_path}/nosuch"])
    (r,) = a.deliver_sync(request(qf, env, [("a@ex.com", "")]))
    check((r.status, r.dsn), (base.DEFERRED, "4.3.0"))


def test_agent_starts_in_the_queue_directory_or_directory(setup) -> None:
    """pipe(8): the queue directory by default; directory= when given."""
    tmp_path, script, qf, env = setup
    a = agent(tmp_path, ["user=nobody", f"argv={script}"])
    (r,) = a.deliver_sync(request(qf, env, [("a@ex.com", "")]))
    check(r.status, base.SENT)
    work = tmp_path / "work"
    a = agent(tmp_path, ["user=nobody", f"directory={work}", f"argv={script}"])
    (r,) = a.deliver_sync(request(qf, env, [("a@ex.com", "")]))
    check(r.status, base.SENT)
    check([c["cwd"] for c in calls(tmp_path)], [str(tmp_path), str(work)])


def test_agent_directory_entered_as_the_user_or_deferred(setup, caplog) -> None:
    """directory= is entered with user='s rights (Postfix: "must be accessible for the
    user specified with user="): a directory only root may enter defers, nothing runs."""
    tmp_path, script, qf, env = setup
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    a = agent(tmp_path, ["user=nobody", f"directory={closed}", f"argv={script}"])
    (r,) = a.deliver_sync(request(qf, env, [("a@ex.com", "")]))
    if os.geteuid() == 0:
        check((r.status, r.dsn, r.reason), (base.DEFERRED, "4.3.0", "temporary failure"))
        check(calls(tmp_path), [])
    else:       # not root: the command runs as ourselves, who own the directory
        check(r.status, base.SENT)
    a = agent(tmp_path, ["user=nobody", f"directory={tmp_path}/nosuch", f"argv={script}"])
    (r,) = a.deliver_sync(request(qf, env, [("a@ex.com", "")]))
    check((r.status, r.dsn, r.reason), (base.DEFERRED, "4.3.0", "temporary failure"))


def test_agent_delivered_to_loop_bounces(setup) -> None:
    tmp_path, script, qf, env = setup
    data = open(qf, "rb").read()
    open(qf, "wb").write(data[:env.message_offset] + b"Delivered-To: A@ex.com\n" + data[env.message_offset:])
    a = agent(tmp_path, ["flags=D", "user=nobody", f"argv={script}"])
    (r,) = a.deliver_sync(request(qf, env, [("a@ex.com", "")]))
    check((r.status, r.dsn), (base.BOUNCED, "5.4.6"))
    check(calls(tmp_path), [])


def test_agent_size_limit_bounces(setup) -> None:
    tmp_path, script, qf, env = setup
    a = agent(tmp_path, ["size=5", "user=nobody", f"argv={script}"])
    (r,) = a.deliver_sync(request(qf, env, [("a@ex.com", "")]))
    check((r.status, r.dsn), (base.BOUNCED, "5.2.3"))


@pytest.mark.parametrize("user", ["root", "daemon"])       # daemon: the mail_owner in agent()
def test_agent_refuses_root_and_mail_owner(setup, user) -> None:
    tmp_path, script, qf, env = setup
    a = agent(tmp_path, [f"user={user}", f"argv={script}"])
    (r,) = a.deliver_sync(request(qf, env, [("a@ex.com", "")]))
    check((r.status, r.dsn), (base.DEFERRED, "4.3.5"))
    check(calls(tmp_path), [])


def test_master_cf_check_rejects_a_bad_pipe_service() -> None:
    from estafeta.config.master_cf import parse_master_cf
    from estafeta.daemons.master import check_services
    good = parse_master_cf("p unix - n n - - pipe flags=R user=nobody argv=/bin/cat -- ${recipient}\n")
    check_services(good, "master.cf")
    check(good[0].args, ["flags=R", "user=nobody", "argv=/bin/cat", "--", "${recipient}"])
    bad = parse_master_cf("p unix - n n - - pipe flags=R argv=/bin/cat\n")
    with pytest.raises(ConfigError) as e:
        check_services(bad, "master.cf")
    assert "missing user" in e.value.problem and e.value.line == 1, f"got {e.value}"
