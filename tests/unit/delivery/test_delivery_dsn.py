"""DSN parameters between qmgr and the smtp agent: the JSON contract and the
MAIL/RCPT parameters the agent passes on."""
from __future__ import annotations

from estafeta.delivery import base
from estafeta.delivery.smtp import dsn_mail_params, dsn_rcpt_params


def test_json_round_trip_keeps_params_and_action():
    req = base.DeliveryRequest("Q1", "/q", 10, "a@b", 1.0, "smtp", "[h]:25",
                               [base.RecipientRequest("c@d", "C@d", 7, {"dsn_notify": "SUCCESS"})],
                               2.0, {"dsn_ret": "HDRS"})
    back = base.DeliveryRequest.from_json(req.to_json())
    assert back == req, f"got {back}, want {req}"
    res = [base.RecipientResult("c@d", base.SENT, "2.0.0", "250 ok", "h[1.2.3.4]:25", "relayed")]
    assert base.results_from_json(base.results_to_json(res)) == res
    # An agent that knows nothing of action still answers in a form qmgr reads.
    assert base.results_from_json(b'[{"address":"c@d","status":"sent","dsn":"2.0.0","reason":"x"}]')[0].action == ""


def test_mail_params_reencoded():
    req = base.DeliveryRequest("Q1", "/q", 0, "a@b", 1.0, "smtp", "h", [],
                               attrs={"dsn_ret": "hdrs", "dsn_envid": "id=1 +x"})
    assert dsn_mail_params(req) == ("RET=HDRS", "ENVID=id+3D1+20+2Bx")
    assert dsn_mail_params(base.DeliveryRequest("Q1", "/q", 0, "a@b", 1.0, "smtp", "h", [])) == ()


def test_rcpt_params():
    rr = base.RecipientRequest("c@d", "orig@d", 0, {"dsn_notify": "delay,success", "dsn_orcpt": "rfc822;x+y@d"})
    assert dsn_rcpt_params(rr) == ("NOTIFY=SUCCESS,DELAY", "ORCPT=rfc822;x+2By@d")
    # No ORCPT given: the recipient as it entered is the original one; bad -N values are dropped.
    rr = base.RecipientRequest("c@d", "orig@d", 0, {"dsn_notify": "sometimes"})
    assert dsn_rcpt_params(rr) == ("ORCPT=rfc822;orig@d",)
