"""One delivery through a real LocalAgent over a work directory (the `local_dir`
fixture of conftest.py), for the local agent's tests."""
import os

from estafeta.config.main_cf import MainConfig
from estafeta.delivery import base, local
from estafeta.tables.aliases import build_database


def deliver_local(d: str, rcpt: str, aliases: str, message: bytes, **params: str) -> base.RecipientResult:
    """Deliver `message` to `rcpt` with a LocalAgent over `d`: aliases in hash:d/aliases,
    the spool in d/spool, .forward files as d/forward.USER; `params` add to main.cf."""
    with open(os.path.join(d, "aliases"), "w") as f:
        f.write(aliases)
    build_database(f"hash:{d}/aliases")
    settings = {"myhostname": "localhost", "mydestination": "localhost", "local_transport": "local",
                "alias_maps": f"hash:{d}/aliases", "mail_spool_directory": f"{d}/spool",
                "forward_path": f"{d}/forward.$user", "fsync_queue": "no", **params}
    a = local.LocalAgent(MainConfig.parse("".join(f"{k} = {v}\n" for k, v in settings.items())), "local")
    qf = os.path.join(d, "qfile")
    with open(qf, "wb") as f:
        f.write(b"ENVELOPE\n" + message)
    req = base.DeliveryRequest("QID1", qf, 9, "a@example.org", 0.0, "local", "localhost",
                               [base.RecipientRequest(rcpt)])
    [r] = a.deliver_sync(req)
    return r
