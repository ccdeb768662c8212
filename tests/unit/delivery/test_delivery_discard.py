"""discard, error and retry agents: the nexthop is the reason."""
from __future__ import annotations

import asyncio

import pytest

from estafeta.delivery import base
from estafeta.delivery.discard import DiscardAgent, ErrorAgent, split_dsn


def req(nexthop: str) -> base.DeliveryRequest:
    return base.DeliveryRequest("QID", "/nonexistent", 0, "s@x", 0.0, "t", nexthop,
                                [base.RecipientRequest("a@ex.com"), base.RecipientRequest("b@ex.com")])


def results(agent, nexthop):
    return [(r.address, r.status, r.dsn, r.reason) for r in asyncio.run(agent.deliver(req(nexthop)))]


def check(got, want) -> None:
    assert got == want, f"got {got!r}, want {want!r}"


def test_split_dsn() -> None:
    check(split_dsn("5.1.2 gone", "5.0.0"), ("5.1.2", "gone"))
    check(split_dsn("mail for x is not accepted", "5.0.0"), ("5.0.0", "mail for x is not accepted"))
    check(split_dsn("5.1.2gone", "5.0.0"), ("5.0.0", "5.1.2gone"))


@pytest.mark.parametrize("nexthop, want", [
    ("ex.com", ("sent", "2.0.0", "ex.com")),
    ("", ("sent", "2.0.0", "discarded")),
    ("2.7.0 spam trap", ("sent", "2.7.0", "spam trap")),
])
def test_discard(nexthop, want) -> None:
    check(results(DiscardAgent(), nexthop), [("a@ex.com", *want), ("b@ex.com", *want)])


@pytest.mark.parametrize("service, nexthop, want", [
    ("error", "mail for x is not accepted", (base.BOUNCED, "5.0.0", "mail for x is not accepted")),
    ("error", "5.1.2 domain retired", (base.BOUNCED, "5.1.2", "domain retired")),
    ("error", "4.3.2 come back later", (base.DEFERRED, "4.3.2", "come back later")),
    ("retry", "down for maintenance", (base.DEFERRED, "4.0.0", "down for maintenance")),
    ("retry", "5.1.2 still retried", (base.DEFERRED, "4.1.2", "still retried")),
])
def test_error_and_retry(service, nexthop, want) -> None:
    check(results(ErrorAgent(None, service), nexthop), [("a@ex.com", *want), ("b@ex.com", *want)])
