"""Delivery requests and results on the qmgr <-> agent wire; Postfix delay formatting."""
from __future__ import annotations

import json

import pytest

from estafeta.delivery import base
from estafeta.delivery.base import (DeliveryRequest, RecipientRequest, RecipientResult, delivery_log_line,
                                    fmt_delay, results_from_json, results_to_json)


def request(**kw) -> DeliveryRequest:
    fields = dict(queue_id="0000000000001000AA000", queue_file="/q/active/0000000000001000AA000",
                  message_offset=123, sender="", arrival=1764309001.5, transport="virtual",
                  nexthop="virt.example",
                  recipients=[RecipientRequest("bob@virt.example", "Bob@Virt.Example", 40),
                              RecipientRequest("jösé@virt.example")],
                  active_since=1764309002.25, attrs={"client_address": "192.0.2.7"})
    fields.update(kw)
    return DeliveryRequest(**fields)


def test_request_json_round_trip() -> None:
    req = request()
    line = req.to_json()
    assert line.endswith(b"\n") and line.count(b"\n") == 1, f"got {line!r}, want one JSON line"
    got = DeliveryRequest.from_json(line)
    assert got == req, f"got {got}, want {req}"
    assert isinstance(got.recipients[0], RecipientRequest)


def test_request_json_defaults() -> None:
    req = request(active_since=0.0, attrs={}, recipients=[RecipientRequest("a@b")])
    got = DeliveryRequest.from_json(req.to_json())
    assert got == req, f"got {got}, want {req}"
    assert got.recipients[0].offset == -1


def test_results_json_round_trip() -> None:
    results = [RecipientResult("a@b", base.SENT, "2.0.0", "delivered to maildir"),
               RecipientResult("ü@b", base.DEFERRED, "4.2.0", "quota \"full\"\nsecond line", relay="x"),
               RecipientResult("c@d", base.BOUNCED, "5.1.1", "unknown user")]
    line = results_to_json(results)
    assert line.count(b"\n") == 1 and line.endswith(b"\n")
    got = results_from_json(line)
    assert got == results, f"got {got}, want {results}"
    assert results_from_json(results_to_json([])) == []


def test_request_from_json_refuses_unknown_fields() -> None:
    d = json.loads(request().to_json())
    d["surprise"] = 1
    with pytest.raises(TypeError):
        DeliveryRequest.from_json(json.dumps(d).encode())


@pytest.mark.parametrize("x, want", [
    (0, "0"), (-1, "0"), (0.001, "0"), (0.0099, "0"),
    (0.01, "0.01"), (0.012345, "0.012"), (0.1, "0.1"), (0.25, "0.25"),
    (1, "1"), (1.2, "1.2"), (1.26, "1.3"), (9.94, "9.9"), (9.99, "10"),
    (10, "10"), (12.6, "13"), (3600, "3600"), (1e7, "10000000"),
])
def test_fmt_delay(x: float, want: str) -> None:
    got = fmt_delay(x)
    assert got == want, f"got {got!r} for {x}, want {want!r}"
    assert "e" not in got


def test_delivery_log_line_shape(monkeypatch) -> None:
    monkeypatch.setattr(base.time, "time", lambda: 1764309010.0)
    req = request()
    line = delivery_log_line(req, RecipientResult("bob@virt.example", base.SENT, "2.0.0", "delivered to maildir"),
                             started=1764309003.0, relay="virtual")
    want = ("0000000000001000AA000: to=<bob@virt.example>, orig_to=<Bob@Virt.Example>, relay=virtual, "
            "delay=8.5, delays=0.75/0.75/0/7, dsn=2.0.0, status=sent (delivered to maildir)")
    assert line == want, f"got {line!r}, want {want!r}"
