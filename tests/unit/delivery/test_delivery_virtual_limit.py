"""virtual_mailbox_limit: a Maildir file larger than the limit bounces with 5.2.2."""
from __future__ import annotations

import asyncio
import os

import pytest

from estafeta.config.main_cf import MainConfig
from estafeta.core import maillog
from estafeta.delivery import base
from estafeta.delivery.virtual import VirtualAgent
from estafeta.queue import qfile

QID = "0000000000002000AA000"
MESSAGE = b"From: alice@example.org\nSubject: big\n\n" + b"x" * 200 + b"\n"


def agent_and_request(tmp_path, limit: str) -> tuple[VirtualAgent, base.DeliveryRequest]:
    (tmp_path / "vmailbox").write_text("bob@virt.example virt.example/bob/\n")
    cfg = MainConfig.parse(f"virtual_mailbox_base = {tmp_path}/mail\n"
                           f"virtual_mailbox_maps = texthash:{tmp_path}/vmailbox\n"
                           f"virtual_mailbox_limit = {limit}\nfsync_queue = no\n", "main.cf")
    path = tmp_path / QID
    path.write_bytes(qfile.encode_envelope(1764309001.0, "alice@example.org", [("bob@virt.example", {})], {})
                     + MESSAGE)
    env = qfile.read_envelope(str(path), QID)
    req = base.DeliveryRequest(QID, str(path), env.message_offset, env.sender, env.arrival, "virtual",
                               "virt.example", [base.RecipientRequest(r.address, r.original, r.offset)
                                                for r in env.recipients], active_since=1764309002.0)
    return VirtualAgent(cfg), req


@pytest.fixture(autouse=True)
def quiet_log(tmp_path, monkeypatch):
    monkeypatch.setattr(maillog, "log", maillog.MailLog(path=str(tmp_path / "maillog"), stderr=False,
                                                        hostname="mx"))


@pytest.mark.parametrize("limit, want", [("100", (base.BOUNCED, "5.2.2")), ("0", (base.SENT, "2.0.0")),
                                         ("100000", (base.SENT, "2.0.0"))])
def test_virtual_mailbox_limit(tmp_path, limit: str, want: tuple[str, str]) -> None:
    agent, req = agent_and_request(tmp_path, limit)
    [r] = asyncio.run(agent.deliver(req))
    got = (r.status, r.dsn)
    assert got == want, f"got {got} ({r.reason}), want {want}"
    new = tmp_path / "mail" / "virt.example" / "bob" / "new"
    count = len(os.listdir(new)) if new.exists() else 0
    assert count == (1 if want[0] == base.SENT else 0), f"got {count} delivered files"
    if want[0] == base.BOUNCED:
        assert "File too large" in r.reason, f"got reason {r.reason!r}"
