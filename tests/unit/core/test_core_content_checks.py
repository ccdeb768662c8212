"""header_checks/body_checks actions (core/content_checks.py) and cleanup honouring them."""
from __future__ import annotations

import asyncio
import os

import pytest

from estafeta.config.main_cf import MainConfig
from estafeta.core import content_checks as cc
from estafeta.core.resolve import ALIAS, Resolver
from estafeta.daemons.cleanup import Cleanup, CleanupRefused
from estafeta.queue.store import QueueStore
from estafeta.tables import open_table

RULES = """\
/^Subject: reject plain/    REJECT
/^Subject: reject text/     REJECT go away
/^Subject: reject code/     REJECT 4.7.0 later
/^Subject: prepend/         PREPEND X-Seen: 1
/^Subject: bad prepend/     PREPEND no label here
/^Subject: replace/         REPLACE Subject: new
/^Subject: ignore/          IGNORE
/^Subject: dunno/           DUNNO
/^Subject: ok/              OK
/^Subject: hold/            HOLD
/^Subject: redirect/        REDIRECT x@y.example
/^Subject: filter/          FILTER smtp:[10.0.0.1]:10025
/^Subject: discard/         discard spam
/^Subject:/                 WARN any subject
"""


@pytest.fixture
def table(tmp_path):
    p = tmp_path / "hc"
    p.write_text(RULES)
    return [open_table(f"regexp:{p}")]


def run(table, line):
    v, logged = cc.Verdict(), []
    out = cc.apply(table, line, "header", v, lambda *a: logged.append(a))
    return out, v, logged


def test_actions(table):
    cases = {
        "Subject: reject plain": ([...], "5.7.1 message content rejected"),
        "Subject: reject text": ([...], "5.7.1 go away"),
        "Subject: reject code": ([...], "4.7.0 later"),
    }
    for line, (_, want) in cases.items():
        _, v, _ = run(table, line)
        assert v.reject == want and v.done, f"{line}: got {v.reject!r}, want {want!r}"
    got = {line: run(table, line)[0] for line in (
        "Subject: prepend", "Subject: bad prepend", "Subject: replace", "Subject: ignore",
        "Subject: dunno", "Subject: ok", "Subject: other", "X-None: 1", "")}
    want = {"Subject: prepend": ["X-Seen: 1", "Subject: prepend"], "Subject: bad prepend": ["Subject: bad prepend"],
            "Subject: replace": ["Subject: new"], "Subject: ignore": [], "Subject: dunno": ["Subject: dunno"],
            "Subject: ok": ["Subject: ok"], "Subject: other": ["Subject: other"], "X-None: 1": ["X-None: 1"],
            "": [""]}
    assert got == want, f"got {got}, want {want}"
    assert run(table, "Subject: hold")[1].hold
    assert run(table, "Subject: redirect")[1].redirect == "x@y.example"
    assert run(table, "Subject: filter")[1].filter == "smtp:[10.0.0.1]:10025"
    _, v, logged = run(table, "Subject: discard")
    assert v.discard == "spam" and v.done and logged == [("discard", "header", "Subject: discard", "spam")]
    assert run(table, "Subject: other")[2] == [("warning", "header", "Subject: other", "any subject")]


def cleanup(tmp_path, extra=""):
    (tmp_path / "hc").write_text(RULES)
    (tmp_path / "bc").write_text("/^bad line$/ REJECT body no\n/^drop$/ IGNORE\n/^swap$/ REPLACE swapped\n")
    cfg = MainConfig.parse(f"myhostname = localhost\nmydestination = localhost\nfsync_queue = no\n"
                           f"header_checks = regexp:{tmp_path}/hc\nbody_checks = regexp:{tmp_path}/bc\n{extra}",
                           "main.cf")
    store = QueueStore(str(tmp_path / "q"))
    store.create_dirs()
    return Cleanup(cfg, store), store


def submit(c, data: bytes, chunk: int = 3):
    async def go():
        t = c.open("ABCDEF1234", "a@b.example", [("demo@localhost", {})], {"protocol": "ESMTP"})
        for i in range(0, len(data), chunk):
            t.write(data[i:i + chunk])      # body lines split across chunks on purpose
        return await t.commit()
    return asyncio.run(go())


def test_cleanup_body_checks_across_chunks_and_reject(tmp_path):
    c, store = cleanup(tmp_path)
    assert submit(c, b"Subject: x\n\nkeep\ndrop\nswap\nlast") == "queued"
    text = open(store.path("incoming", "ABCDEF1234"), "rb").read()
    assert text.endswith(b"\n\nkeep\nswapped\nlast"), f"got {text[-40:]!r}"
    c2, store2 = cleanup(tmp_path / "..", "")
    with pytest.raises(CleanupRefused) as e:
        submit(c2, b"Subject: x\n\nok\nbad line\n", chunk=5)
    assert str(e.value.reply) == "550 5.7.1 body no"


def test_cleanup_hold_and_discard(tmp_path):
    c, store = cleanup(tmp_path)
    assert submit(c, b"Subject: hold\n\nx\n") == "held"
    held = os.listdir(store.path("hold"))
    assert held == ["ABCDEF1234"] and os.listdir(store.path("incoming")) == [], f"got hold={held}"
    (tmp_path / "d").mkdir()
    c2, store2 = cleanup(tmp_path / "d")
    assert submit(c2, b"Subject: discard\n\nx\n") == "discarded"
    assert os.listdir(store2.path("incoming")) == []


def test_cleanup_filter_attribute(tmp_path):
    c, store = cleanup(tmp_path)
    assert submit(c, b"Subject: filter\n\nx\n") == "queued"
    env = store.read_envelope("incoming", "ABCDEF1234")
    assert env.attrs.get("filter") == "smtp:[10.0.0.1]:10025" and env.recipients[0].address == "demo@localhost"


def test_resolve_relocated_and_alias_class():
    cfg = MainConfig.parse("myhostname = mx.example.org\nmydestination = $myhostname\nlocal_recipient_maps =\n"
                           "relocated_maps = inline:{ old@mx.example.org=new@x.example, { @gone.example = see x.example } }\n"
                           "virtual_alias_domains = alias.example\n", "main.cf")
    r = Resolver(cfg)
    got = {a: (r.resolve(a).transport, r.resolve(a).nexthop) for a in
           ("old@mx.example.org", "u@gone.example", "u@alias.example")}
    want = {"old@mx.example.org": ("error", "5.1.6 User has moved to new@x.example"),
            "u@gone.example": ("error", "5.1.6 User has moved to see x.example"),
            "u@alias.example": ("error", "5.1.1 User unknown in virtual alias table")}
    assert got == want, f"got {got}, want {want}"
    assert r.address_class("alias.example") == ALIAS
