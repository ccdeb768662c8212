"""The virtual delivery agent against a real queue file and Maildirs under tmp_path."""
from __future__ import annotations

import asyncio
import mailbox
import os

import pytest

from estafeta.config.main_cf import MainConfig
from estafeta.core import maillog
from estafeta.delivery import base
from estafeta.delivery.virtual import VirtualAgent
from estafeta.queue import qfile

QID = "0000000000001000AA000"
MESSAGE = b"From: alice@example.org\nTo: bob@virt.example\nSubject: hello\n\nHi Bob.\n"
VMAILBOX = """\
# address                 mailbox under virtual_mailbox_base
bob@virt.example          virt.example/bob/
Carol@Virt.Example        virt.example/carol/
@catch.example            catch.example/all/
evil@virt.example         ../outside/
abs@virt.example          /etc/cron.d/
mbox@virt.example         virt.example/mbox
"""


@pytest.fixture
def setup(tmp_path, monkeypatch):
    monkeypatch.setattr(maillog, "log", maillog.MailLog(path=str(tmp_path / "maillog"), stderr=False,
                                                        hostname="mx"))
    (tmp_path / "vmailbox").write_text(VMAILBOX)
    cfg = MainConfig.parse(f"virtual_mailbox_base = {tmp_path}/mail\n"
                           f"virtual_mailbox_maps = texthash:{tmp_path}/vmailbox\n"
                           "fsync_queue = no\n", "main.cf")
    return tmp_path, VirtualAgent(cfg)


def make_request(tmp_path, recipients: list[str], sender: str = "alice@example.org",
                 message: bytes = MESSAGE) -> base.DeliveryRequest:
    head = qfile.encode_envelope(1764309001.0, sender, [(r, {}) for r in recipients], {})
    path = tmp_path / QID
    path.write_bytes(head + message)
    env = qfile.read_envelope(str(path), QID)
    return base.DeliveryRequest(QID, str(path), env.message_offset, env.sender, env.arrival, "virtual",
                                "virt.example", [base.RecipientRequest(r.address, r.original, r.offset)
                                                 for r in env.recipients], active_since=1764309002.0)


def deliver(agent: VirtualAgent, req: base.DeliveryRequest) -> list[base.RecipientResult]:
    return asyncio.run(agent.deliver(req))


def one_message(box_path) -> mailbox.MaildirMessage:
    box = mailbox.Maildir(str(box_path), create=False)
    keys = box.keys()
    assert len(keys) == 1, f"got {len(keys)} messages in {box_path}, want 1"
    return box[keys[0]]


def outcome(r: base.RecipientResult) -> tuple[str, str, str]:
    return (r.address, r.status, r.dsn)


def test_known_user_is_delivered(setup) -> None:
    tmp_path, agent = setup
    results = deliver(agent, make_request(tmp_path, ["bob@virt.example"]))
    got = [outcome(r) for r in results]
    want = [("bob@virt.example", base.SENT, "2.0.0")]
    assert got == want, f"got {got}, want {want}"
    msg = one_message(tmp_path / "mail" / "virt.example" / "bob")
    got_h = (msg["Return-Path"], msg["Delivered-To"], msg["Subject"])
    want_h = ("<alice@example.org>", "bob@virt.example", "hello")
    assert got_h == want_h, f"got {got_h}, want {want_h}"
    assert msg.get_payload() == "Hi Bob.\n"
    assert os.listdir(tmp_path / "mail" / "virt.example" / "bob" / "tmp") == []
    log = (tmp_path / "maillog").read_text()
    assert f"{QID}: to=<bob@virt.example>, relay=virtual," in log, f"got log {log!r}"
    assert "dsn=2.0.0, status=sent (delivered to maildir)" in log, f"got log {log!r}"


def test_null_sender_return_path(setup) -> None:
    tmp_path, agent = setup
    deliver(agent, make_request(tmp_path, ["bob@virt.example"], sender=""))
    msg = one_message(tmp_path / "mail" / "virt.example" / "bob")
    assert msg["Return-Path"] == "<>", f"got {msg['Return-Path']!r}, want '<>'"


def test_lookup_is_case_insensitive(setup) -> None:
    tmp_path, agent = setup
    results = deliver(agent, make_request(tmp_path, ["CAROL@virt.example"]))
    assert [outcome(r) for r in results] == [("CAROL@virt.example", base.SENT, "2.0.0")]
    one_message(tmp_path / "mail" / "virt.example" / "carol")


def test_unknown_user_bounces(setup) -> None:
    tmp_path, agent = setup
    results = deliver(agent, make_request(tmp_path, ["nobody@virt.example"]))
    got = [outcome(r) for r in results]
    want = [("nobody@virt.example", base.BOUNCED, "5.1.1")]
    assert got == want, f"got {got}, want {want}"
    assert "unknown user" in results[0].reason


def test_catch_all(setup) -> None:
    tmp_path, agent = setup
    results = deliver(agent, make_request(tmp_path, ["x@catch.example", "Y@Catch.Example"]))
    got = [outcome(r) for r in results]
    want = [("x@catch.example", base.SENT, "2.0.0"), ("Y@Catch.Example", base.SENT, "2.0.0")]
    assert got == want, f"got {got}, want {want}"
    box = mailbox.Maildir(str(tmp_path / "mail" / "catch.example" / "all"), create=False)
    got_to = sorted(m["Delivered-To"] for m in box)
    assert got_to == ["Y@Catch.Example", "x@catch.example"], f"got {got_to}"


@pytest.mark.parametrize("rcpt", ["evil@virt.example", "abs@virt.example"])
def test_path_escaping_the_base_is_deferred(setup, rcpt: str) -> None:
    tmp_path, agent = setup
    results = deliver(agent, make_request(tmp_path, [rcpt]))
    got = [outcome(r) for r in results]
    want = [(rcpt, base.DEFERRED, "4.3.5")]
    assert got == want, f"got {got}, want {want}"
    assert not (tmp_path / "outside").exists()


def test_mbox_path_is_deferred(setup) -> None:
    tmp_path, agent = setup
    results = deliver(agent, make_request(tmp_path, ["mbox@virt.example"]))
    got = [outcome(r) for r in results]
    want = [("mbox@virt.example", base.DEFERRED, "4.3.5")]
    assert got == want, f"got {got}, want {want}"
    assert not (tmp_path / "mail" / "virt.example" / "mbox").exists()


def test_loop_bounces(setup) -> None:
    tmp_path, agent = setup
    looped = b"Delivered-To: bob@virt.example\n" + MESSAGE
    results = deliver(agent, make_request(tmp_path, ["bob@virt.example", "carol@virt.example"], message=looped))
    got = [outcome(r) for r in results]
    want = [("bob@virt.example", base.BOUNCED, "5.4.6"), ("carol@virt.example", base.SENT, "2.0.0")]
    assert got == want, f"got {got}, want {want}"
    assert not (tmp_path / "mail" / "virt.example" / "bob").exists()


def test_mixed_recipients_each_get_a_result(setup) -> None:
    tmp_path, agent = setup
    rcpts = ["bob@virt.example", "nobody@virt.example", "evil@virt.example", "z@catch.example"]
    results = deliver(agent, make_request(tmp_path, rcpts))
    got = [outcome(r) for r in results]
    want = [("bob@virt.example", base.SENT, "2.0.0"), ("nobody@virt.example", base.BOUNCED, "5.1.1"),
            ("evil@virt.example", base.DEFERRED, "4.3.5"), ("z@catch.example", base.SENT, "2.0.0")]
    assert got == want, f"got {got}, want {want}"


def test_unreadable_queue_file_defers_everyone(setup) -> None:
    tmp_path, agent = setup
    req = make_request(tmp_path, ["bob@virt.example", "x@catch.example"])
    os.unlink(req.queue_file)
    got = [outcome(r) for r in deliver(agent, req)]
    want = [("bob@virt.example", base.DEFERRED, "4.3.0"), ("x@catch.example", base.DEFERRED, "4.3.0")]
    assert got == want, f"got {got}, want {want}"


def test_no_base_directory_defers(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(maillog, "log", maillog.MailLog(stderr=False, hostname="mx"))
    (tmp_path / "vmailbox").write_text(VMAILBOX)
    agent = VirtualAgent(MainConfig.parse(f"virtual_mailbox_maps = texthash:{tmp_path}/vmailbox\n"
                                          "fsync_queue = no\n", "main.cf"))
    got = [outcome(r) for r in deliver(agent, make_request(tmp_path, ["bob@virt.example"]))]
    want = [("bob@virt.example", base.DEFERRED, "4.3.5")]
    assert got == want, f"got {got}, want {want}"


def test_broken_table_edit_defers(setup) -> None:
    tmp_path, agent = setup
    vmailbox = tmp_path / "vmailbox"
    vmailbox.write_text("  continuation before any entry\n")
    st = os.stat(vmailbox)
    os.utime(vmailbox, (st.st_atime, st.st_mtime + 10))
    got = [outcome(r) for r in deliver(agent, make_request(tmp_path, ["bob@virt.example"]))]
    want = [("bob@virt.example", base.DEFERRED, "4.3.0")]
    assert got == want, f"got {got}, want {want}"
