"""End to end: a Postfix main.cf's proxy: tables, used as written by a real instance.

virtual_alias_maps = proxy:texthash:..., and a proxy:cidr: access table in
smtpd_client_restrictions (both approved by the default proxy_read_maps). Clients
bind their source address on loopback (all of 127/8 is on lo). A proxy: table that
proxy_read_maps does not list makes start refuse, with Postfix's text.
"""
import smtplib

from estafeta.testing.instance import wait_for

CLIENTS = "127.0.0.7/32   REJECT proxied cidr says no\n"
ALIASES = "info@localhost   demo@localhost\n"


def make(instance_factory, **main):
    inst = instance_factory(start=False)
    with open(inst.path("clients.cidr"), "w") as f:
        f.write(CLIENTS)
    with open(inst.path("virtual"), "w") as f:
        f.write(ALIASES)
    settings = {k: v.replace("DIR", inst.root) for k, v in main.items()}
    inst.cli("config", "-e", "mynetworks=127.0.0.1/32", *(f"{k}={v}" for k, v in settings.items()))
    return inst


def test_proxy_tables_route_and_restrict(instance_factory):
    inst = make(instance_factory, virtual_alias_maps="proxy:texthash:DIR/virtual",
                smtpd_client_restrictions="check_client_access proxy:cidr:DIR/clients.cidr").start()
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=30, source_address=("127.0.0.7", 0)) as s:
        s.ehlo("client.example")
        assert s.mail("a@example.org")[0] == 250
        got = s.rcpt("demo@localhost")
        want = (554, b"5.7.1 <unknown[127.0.0.7]>: Client host rejected: proxied cidr says no")
        assert got == want, f"got {got}, want {want}"
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=30) as s:
        s.sendmail("a@example.org", ["info@localhost"], b"Subject: via proxy\r\n\r\nhello\r\n")
    wait_for(lambda: inst.delivered(), what="delivery through the proxy:texthash: alias")
    wait_for(lambda: "orig_to=<info@localhost>" in inst.log(), what="orig_to in the log")


def test_unapproved_proxy_table_refuses_start(instance_factory):
    inst = make(instance_factory, smtpd_data_restrictions="check_client_access proxy:cidr:DIR/clients.cidr")
    r = inst.cli("start", check=False)
    want = (f'smtpd_data_restrictions: request for unapproved table: "cidr:{inst.root}/clients.cidr"; to approve '
            f"this table for read-only access, list proxy:cidr:{inst.root}/clients.cidr in main.cf:proxy_read_maps")
    assert r.returncode == 78 and want in r.stderr, f"got {r.returncode} {r.stderr!r}, want 78 and {want!r}"
