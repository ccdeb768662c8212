"""local(8)'s mailbox_transport(_maps) and fallback_transport(_maps): the pass-along
client (delivery/passalong.py) and where it sits in local's order of precedence.

The other agent here is a small stand-in on a real unix socket under private/ that
records the one JSON-line request and answers what the test says: the contract of
delivery/base.py, nothing more. The real thing, local -> lmtp agent -> Dovecot, is
tests/interop/test_lmtp_dovecot.py.
"""
import json
import os
import pwd
import socket
import threading
import time

import pytest

from estafeta.core import maillog
from estafeta.core.errors import TempFail
from estafeta.delivery import base, passalong
from local_support import deliver_local

ME = pwd.getpwuid(os.getuid()).pw_name
MSG = b"From: a@example.org\nSubject: hi\n\nbody\n"


class StandIn:
    """An agent on DIR/private/NAME answering each request with `answer(request)`."""

    def __init__(self, d: str, name: str, answer) -> None:
        os.makedirs(os.path.join(d, "private"), exist_ok=True)
        self.path = os.path.join(d, "private", name)
        self.answer = answer
        self.requests: list[dict] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(8)
        self.sock.settimeout(10)
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(10)
                buf = b""
                while not buf.endswith(b"\n"):
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    buf += chunk
                if not buf:
                    continue
                req = json.loads(buf)
                self.requests.append(req)
                out = self.answer(req)
                if out is not None:
                    conn.sendall(out)

    def close(self) -> None:
        self.sock.close()


def sent(req: dict) -> bytes:
    r = req["recipients"][0]
    return base.results_to_json([base.RecipientResult(r["address"], "sent", "2.0.0", "250 2.0.0 Saved", "x[y]")])


@pytest.fixture
def logfile(local_dir, monkeypatch):
    path = os.path.join(local_dir, "maillog")
    monkeypatch.setattr(maillog, "log", maillog.MailLog(path=path, stderr=False, hostname="mx"))

    def read() -> str:
        try:
            return open(path).read()
        except FileNotFoundError:
            return ""
    return read


@pytest.fixture
def stand_ins():
    made = []

    def make(d, name, answer=sent):
        s = StandIn(d, name, answer)
        made.append(s)
        return s
    yield make
    for s in made:
        s.close()


def test_no_such_transport_defers_4_3_0(local_dir, logfile):
    r = deliver_local(local_dir, f"{ME}@localhost", "", MSG, queue_directory=local_dir,
                      mailbox_transport="nosuch")
    assert (r.status, r.dsn, r.reason) == ("deferred", "4.3.0", "mail transport unavailable"), r
    assert not os.path.exists(os.path.join(local_dir, "spool", ME)), "the mailbox was written anyway"
    log = logfile()
    assert "connect to transport private/nosuch" in log, log
    assert f"to=<{ME}@localhost>, relay=none," in log and "status=deferred (mail transport unavailable)" in log, log


def test_pass_along_request_and_answer(local_dir, logfile, stand_ins):
    agent = stand_ins(local_dir, "dove")
    r = deliver_local(local_dir, f"{ME}+box@localhost", "", MSG, queue_directory=local_dir,
                      recipient_delimiter="+", mailbox_transport="dove")
    assert (r.status, r.dsn, r.reason) == ("sent", "2.0.0", "250 2.0.0 Saved"), r
    [req] = agent.requests
    # the one recipient with its extension; the nexthop of local's own request when the
    # value has none; offset -1: the other agent does not mark the queue file
    assert (req["transport"], req["nexthop"], req["queue_id"], req["message_offset"]) == ("dove", "localhost", "QID1", 9)
    assert req["recipients"] == [{"address": f"{ME}+box@localhost", "original": f"{ME}+box@localhost",
                                  "offset": -1, "params": {}}], req
    assert req["sender"] == "a@example.org" and req["queue_file"] == os.path.join(local_dir, "qfile")
    assert not os.path.exists(os.path.join(local_dir, "spool", ME))
    assert "status=sent" not in logfile(), "the delivering agent logs the delivery, not local"


def test_alias_then_transport_with_explicit_nexthop(local_dir, stand_ins):
    agent = stand_ins(local_dir, "lmtp")
    r = deliver_local(local_dir, "team@localhost", f"team: {ME}\n", MSG, queue_directory=local_dir,
                      mailbox_transport="lmtp:unix:/run/dovecot/lmtp")
    assert r.status == "sent", r
    [req] = agent.requests
    assert (req["transport"], req["nexthop"]) == ("lmtp", "unix:/run/dovecot/lmtp")
    assert (req["recipients"][0]["address"], req["recipients"][0]["original"]) == (f"{ME}@localhost", "team@localhost")


def test_agent_answers_become_local_results(local_dir, stand_ins):
    def bounce(req):
        a = req["recipients"][0]["address"]
        return base.results_to_json([base.RecipientResult(a, "bounced", "5.1.1", "550 5.1.1 User doesn't exist")])
    stand_ins(local_dir, "b", bounce)
    r = deliver_local(local_dir, f"{ME}@localhost", "", MSG, queue_directory=local_dir, mailbox_transport="b")
    assert (r.status, r.dsn, r.reason) == ("bounced", "5.1.1", "550 5.1.1 User doesn't exist"), r
    stand_ins(local_dir, "mute", lambda req: None)          # closes without an answer
    r = deliver_local(local_dir, f"{ME}@localhost", "", MSG, queue_directory=local_dir, mailbox_transport="mute")
    assert (r.status, r.dsn, r.reason) == ("deferred", "4.3.0", "unknown mail transport error"), r
    stand_ins(local_dir, "junk", lambda req: b"[]\n")      # answers for no recipient
    r = deliver_local(local_dir, f"{ME}@localhost", "", MSG, queue_directory=local_dir, mailbox_transport="junk")
    assert (r.status, r.dsn) == ("deferred", "4.3.0"), r


def test_forward_wins_over_mailbox_transport(local_dir):
    out = os.path.join(local_dir, "fwd-file")
    with open(os.path.join(local_dir, f"forward.{ME}"), "w") as f:
        f.write(f"{out}\n")
    r = deliver_local(local_dir, f"{ME}@localhost", "", MSG, queue_directory=local_dir, mailbox_transport="nosuch")
    assert r.status == "sent", r
    assert b"Subject: hi" in open(out, "rb").read()


def test_mailbox_transport_wins_over_mailbox_command(local_dir, stand_ins):
    agent = stand_ins(local_dir, "dove")
    ran = os.path.join(local_dir, "command-ran")
    with open(os.path.join(local_dir, "cmdmaps"), "w") as f:
        f.write(f"{ME} touch {ran}.map\n")
    r = deliver_local(local_dir, f"{ME}@localhost", "", MSG, queue_directory=local_dir, mailbox_transport="dove",
                      mailbox_command=f"touch {ran}", mailbox_command_maps=f"texthash:{local_dir}/cmdmaps")
    assert r.status == "sent" and len(agent.requests) == 1, r
    assert not os.path.exists(ran), "mailbox_command ran"
    assert not os.path.exists(f"{ran}.map"), "mailbox_command_maps' command ran"


def test_mailbox_transport_maps_keyed_by_bare_user(local_dir, stand_ins):
    a, b = stand_ins(local_dir, "bymap"), stand_ins(local_dir, "byparam")
    with open(os.path.join(local_dir, "mtmaps"), "w") as f:
        f.write(f"{ME} bymap:hop.example\n")
    maps = f"texthash:{local_dir}/mtmaps"
    r = deliver_local(local_dir, f"{ME}+ext@localhost", "", MSG, queue_directory=local_dir,
                      recipient_delimiter="+", mailbox_transport_maps=maps, mailbox_transport="byparam")
    assert r.status == "sent" and len(a.requests) == 1 and not b.requests, r
    assert a.requests[0]["nexthop"] == "hop.example"
    # no entry: the parameter
    r = deliver_local(local_dir, "postmaster@localhost", "postmaster: nobodyhere\n", MSG,
                      queue_directory=local_dir, mailbox_transport_maps=maps, mailbox_transport="byparam")
    assert r.status == "sent" and len(b.requests) == 1, r
    assert b.requests[0]["recipients"][0]["address"] == "nobodyhere@localhost"


def test_transport_maps_failure_defers(local_dir):
    r = deliver_local(local_dir, f"{ME}@localhost", "", MSG, queue_directory=local_dir,
                      mailbox_transport_maps="nosuchtype:/x")
    assert (r.status, r.dsn, r.reason) == ("deferred", "4.3.0", "table lookup failure"), r


def test_fallback_transport_only_for_users_not_in_passwd(local_dir, stand_ins):
    fb = stand_ins(local_dir, "fb")
    r = deliver_local(local_dir, "no-such-user-x1@localhost", "", MSG, queue_directory=local_dir,
                      fallback_transport="fb")
    assert r.status == "sent" and fb.requests[0]["recipients"][0]["address"] == "no-such-user-x1@localhost", r
    r = deliver_local(local_dir, f"{ME}@localhost", "", MSG, queue_directory=local_dir, fallback_transport="fb")
    assert r.status == "sent" and len(fb.requests) == 1, "a passwd user went to fallback_transport"
    assert os.path.exists(os.path.join(local_dir, "spool", ME))
    # fallback_transport_maps first, keyed by the user name
    fm = stand_ins(local_dir, "fbmap")
    with open(os.path.join(local_dir, "fbmaps"), "w") as f:
        f.write("no-such-user-x2 fbmap\n")
    r = deliver_local(local_dir, "no-such-user-x2+e@localhost", "", MSG, queue_directory=local_dir,
                      recipient_delimiter="+", fallback_transport="fb", fallback_transport_maps=f"texthash:{local_dir}/fbmaps")
    assert r.status == "sent" and len(fm.requests) == 1 and len(fb.requests) == 1, r
    # without any: unknown user
    r = deliver_local(local_dir, "no-such-user-x1@localhost", "", MSG)
    assert (r.status, r.dsn) == ("bounced", "5.1.1"), r


def test_mailbox_transport_also_for_users_not_in_passwd(local_dir, stand_ins):
    mt, fb = stand_ins(local_dir, "mt"), stand_ins(local_dir, "fb")
    r = deliver_local(local_dir, "no-such-user-x3@localhost", "", MSG, queue_directory=local_dir,
                      mailbox_transport="mt", fallback_transport="fb")
    assert r.status == "sent" and len(mt.requests) == 1 and not fb.requests, r


def test_transport_naming_local_itself_defers(local_dir):
    r = deliver_local(local_dir, f"{ME}@localhost", "", MSG, queue_directory=local_dir, mailbox_transport="local")
    assert (r.status, r.dsn) == ("deferred", "4.3.5"), r


@pytest.mark.parametrize("value", ["", ":hop", "../public/qmgr", "a/b:x", ".."])
def test_parse_target_rejects_bad_names(value):
    with pytest.raises(TempFail) as e:
        passalong.parse_target(value, "localhost", "mailbox_transport")
    assert e.value.dsn == "4.3.5"


def test_parse_target():
    assert passalong.parse_target(" lmtp:unix:/run/x ", "h", "s") == passalong.Target("lmtp", "unix:/run/x")
    assert passalong.parse_target("lmtp:", "h", "s") == passalong.Target("lmtp", "h")
    assert passalong.parse_target("lmtp:[127.0.0.1]:24", "h", "s") == passalong.Target("lmtp", "[127.0.0.1]:24")


def test_transport_maps_refuse_regexp_substitution(local_dir, stand_ins):
    """As Postfix: the key is the recipient's, the result where its mail goes."""
    stand_ins(local_dir, "ok")
    with open(os.path.join(local_dir, "re"), "w") as f:
        f.write("/^(.*)$/ ok:$1\n")
    r = deliver_local(local_dir, f"{ME}@localhost", "", MSG, queue_directory=local_dir,
                      mailbox_transport_maps=f"regexp:{local_dir}/re")
    assert (r.status, r.dsn, r.reason) == ("deferred", "4.3.0", "table lookup failure"), r
    with open(os.path.join(local_dir, "re"), "w") as f:
        f.write("/^(.*)$/ ok:fixed\n")
    r = deliver_local(local_dir, f"{ME}@localhost", "", MSG, queue_directory=local_dir,
                      mailbox_transport_maps=f"regexp:{local_dir}/re")
    assert r.status == "sent", r


def test_agent_that_does_not_answer_in_time_defers(local_dir, stand_ins):
    slow = stand_ins(local_dir, "slow", lambda req: time.sleep(1.5))
    req = base.DeliveryRequest("QID2", "/nonexistent", 0, "a@example.org", 0.0, "local", "localhost",
                               [base.RecipientRequest("x@localhost")])
    with pytest.raises(TempFail) as e:
        passalong.deliver_pass(slow.path, req, req.recipients[0], passalong.Target("slow", "h"), 0.3)
    assert (e.value.dsn, e.value.reason) == ("4.3.0", "unknown mail transport error")
