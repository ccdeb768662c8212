"""Agents mark delivered recipients done in place before answering qmgr."""
from estafeta.daemons.agent import mark_sent
from estafeta.delivery import base
from estafeta.queue import qfile


def test_mark_sent_marks_only_sent_recipients(tmp_path):
    qid = "66150000000000000000A"
    path = tmp_path / qid
    path.write_bytes(qfile.encode_envelope(1.0, "s@example.org", [("a@x", {}), ("b@x", {}), ("c@x", {})], {})
                     + b"Subject: x\n\nbody\n")
    env = qfile.read_envelope(str(path), qid)
    req = base.DeliveryRequest(qid, str(path), env.message_offset, env.sender, env.arrival, "virtual", "x",
                               [base.RecipientRequest(r.address, r.address, r.offset) for r in env.recipients])
    results = [base.RecipientResult("a@x", base.SENT, "2.0.0", "ok"),
               base.RecipientResult("b@x", base.BOUNCED, "5.1.1", "unknown"),
               base.RecipientResult("c@x", base.DEFERRED, "4.3.0", "later")]
    mark_sent(req, results)
    got = [(r.address, r.done) for r in qfile.read_envelope(str(path), qid).recipients]
    assert got == [("a@x", True), ("b@x", False), ("c@x", False)], f"got {got}"
    assert path.read_bytes().endswith(b"Subject: x\n\nbody\n"), "the message was changed"
