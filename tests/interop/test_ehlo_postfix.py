"""The EHLO reply of estafeta's smtpd and of a private Postfix (Debian's) for the same
settings: the same keywords, in the same order, for the extensions both implement.

One Postfix and one estafeta instance each listen on one port per case, every port an
smtpd service with the case's settings as `-o` overrides in master.cf, so each server
starts once. Postfix also announces ETRN and CHUNKING, which estafeta does not
implement and must not offer (nor STARTTLS or AUTH, which this Postfix does not offer
either without certificates or SASL). Every case is asked from several loopback
client addresses, for smtpd_discard_ehlo_keyword_address_maps (cidr:, hash:, inline:
and a missing table), and each session also compares the replies to MAIL parameters
the per-client list governs (DSN, SMTPUTF8); at the end, both maillogs must hold the
same EHLO log lines. Recipe for the private Postfix: ../shared/PEERS.md section 7
(tests/interop/postfix_private.py); the unit tests that pin the same lists without
Postfix are tests/unit/core/test_core_smtpsettings.py test_ehlo_keywords_as_postfix
and tests/unit/core/test_core_smtpsettings_maps.py.
"""
import re
import socket

import pytest
from postfix_private import REQUIRES, base_main, port_open, private_postfix

from estafeta.testing.instance import Instance, free_port, wait_for
from estafeta.testing.postfix import MASTER_CF

pytestmark = REQUIRES

# Keywords Postfix may announce and estafeta's codec does not implement.
NOT_IMPLEMENTED = {"ETRN", "CHUNKING", "STARTTLS", "AUTH", "XCLIENT", "XFORWARD"}
# Keywords estafeta must be seen to announce somewhere among the cases, so that the
# comparison cannot pass by both lists being short.
SHARED = {"PIPELINING", "SIZE", "VRFY", "ENHANCEDSTATUSCODES", "8BITMIME", "DSN", "SMTPUTF8"}

# smtpd_discard_ehlo_keyword_address_maps: files in {d} (Postfix's etc/, estafeta's
# root; hash: tables are built by each system's own postmap). A cidr: table matches
# the client address as an address; a hash: or inline: table only as that exact text
# (no access(5)-style "127.0.0" prefix keys).
TABLES = {
    "ehlo.cidr": """\
127.0.0.2        dsn, size
127.0.0.3        silent-discard 8bitmime VRFY
127.0.0.0/24     smtputf8
""",
    "ehlo_hash": """\
127.0.0.3        pipelining
127.0.1.1        enhancedstatuscodes, pipelining
127.0.0          dsn
""",
}

CASES = {
    "defaults": (),
    "vrfy_disabled": ("disable_vrfy_command=yes",),
    "no_smtputf8": ("smtputf8_enable=no",),
    "no_size_limit": ("message_size_limit=0",),
    "all_off": ("disable_vrfy_command=yes", "smtputf8_enable=no", "message_size_limit=5000"),
    # master.cf -o values cannot hold spaces: the list is comma-separated.
    "discard": ("smtpd_discard_ehlo_keywords=pipelining,DSN,8bitmime",),
    # A table result replaces the global list for that client; no result: the global one.
    "maps_cidr": ("smtpd_discard_ehlo_keywords=pipelining,dsn",
                  "smtpd_discard_ehlo_keyword_address_maps=cidr:{d}/ehlo.cidr"),
    # The first table with a result wins (hash: before cidr: here).
    "maps_hash_cidr": ("smtpd_discard_ehlo_keywords=vrfy",
                       "smtpd_discard_ehlo_keyword_address_maps=hash:{d}/ehlo_hash,cidr:{d}/ehlo.cidr"),
    "maps_inline": ("smtpd_discard_ehlo_keywords=size",
                    "smtpd_discard_ehlo_keyword_address_maps=inline:{{127.0.0.1=smtputf8,127.0.0.2=silent-discard}}"),
    # A table that cannot answer: EHLO gets 421 4.3.0 (HELO still works: seen on the
    # wire, pinned in tests/unit/daemons/test_daemons_smtpd_ehlo_maps.py).
    "maps_missing": ("smtpd_discard_ehlo_keywords=pipelining",
                     "smtpd_discard_ehlo_keyword_address_maps=hash:{d}/no_such_table"),
}
# Client addresses (all on loopback): every case is asked from each.
CLIENTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.1.1")
# After EHLO: what the per-client list does to MAIL parameters (dsn: 501 5.7.1,
# smtputf8: 555), answered by both servers.
MAIL_COMMANDS = (b"MAIL FROM:<a@example.org> RET=HDRS ENVID=x", b"RSET",
                 b"MAIL FROM:<a@example.org> SMTPUTF8", b"RSET",
                 b"MAIL FROM:<a@example.org> BODY=8BITMIME SIZE=100")

# Where estafeta's reply text is knowingly not Postfix's: none now (a refused MAIL
# parameter is named, as Postfix does). Postfix's text would be mapped to ours before
# comparing; every other difference fails the test.
KNOWN_TEXT: dict[str, str] = {}


def service_lines(ports: dict[str, int], d: str) -> str:
    """One smtpd service per case; the first case is MASTER_CF's own smtpd line."""
    return "".join(f"127.0.0.1:{ports[name]} inet n - n - - smtpd"
                   + "".join(f" -o {o.format(d=d)}" for o in CASES[name]) + "\n"
                   for name in list(CASES)[1:])


def write_tables(d: str) -> None:
    for name, text in TABLES.items():
        with open(f"{d}/{name}", "w") as f:
            f.write(text)


def _reply(f) -> list[str]:
    lines = []
    while True:
        line = f.readline().decode("ascii").rstrip("\r\n")
        assert line[:3].isdigit(), f"got {line!r}, want a reply line"
        lines.append(line)
        if line[3:4] != "-":
            return lines


def session(port: int, client: str = "127.0.0.1") -> list[str]:
    """What one client sees: the EHLO reply's lines after the host name, as sent (no
    code, no separator), then "command -> reply" for each of MAIL_COMMANDS; an EHLO
    that is not 250 ends it, "EHLO -> reply" being all there is."""
    with socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(client, 0)) as s:
        f = s.makefile("rb")
        assert f.readline().startswith(b"220"), "no greeting"
        s.sendall(b"EHLO client.example\r\n")
        lines = _reply(f)
        if not lines[0].startswith("250"):
            return [f"EHLO -> {' | '.join(lines)}"]
        assert all(line.startswith("250") for line in lines), f"got {lines} as the EHLO reply"
        seen = [line[4:] for line in lines[1:]]
        for cmd in MAIL_COMMANDS:
            s.sendall(cmd + b"\r\n")
            seen.append(f"{cmd.decode()} -> {' | '.join(_reply(f))}")
        s.sendall(b"QUIT\r\n")
        f.readline()
    return seen


def ehlo_keywords(port: int, client: str = "127.0.0.1") -> list[str]:
    """The EHLO reply's lines after the host name (session() without the MAIL part)."""
    return [k for k in session(port, client) if " -> " not in k]


@pytest.fixture
def ports():
    return {name: free_port() for name in CASES}


@pytest.fixture
def postfix(ports):
    with private_postfix("pf-ehlo-") as pf:
        main = base_main(pf.dir) + """myhostname = mx.example.test
mydestination = localhost
inet_interfaces = loopback-only
inet_protocols = ipv4
alias_maps =
default_transport = discard:no outbound delivery in tests
smtpd_peername_lookup = no
"""
        pf.write(main, MASTER_CF.format(port=ports["defaults"]) + service_lines(ports, pf.etc))
        write_tables(pf.etc)
        pf.postmap("ehlo_hash")
        pf.start(ports.values())
        yield {"ports": ports, "maillog": pf.maillog}


@pytest.fixture
def estafeta():
    mine = {name: free_port() for name in CASES}
    inst = Instance(main={"myhostname": "mx.example.test", "smtpd_worker_count": "1"}, port=mine["defaults"])
    inst.master_extra = service_lines(mine, inst.root)
    with inst:
        inst.init()
        write_tables(inst.root)
        inst.cli("map", f"hash:{inst.path('ehlo_hash')}")
        inst.start()
        for name, port in mine.items():
            wait_for(lambda: port_open(port), 20, what=f"estafeta smtpd ({name})")
        yield {"ports": mine, "maillog": inst.log}


def keyword_name(line: str) -> str:
    return line.replace("=", " ").split(" ", 1)[0].upper()


def test_same_ehlo_keywords_as_postfix(postfix, estafeta):
    diffs, seen = [], set()
    for name in CASES:
        for client in CLIENTS:
            theirs = session(postfix["ports"][name], client)
            ours = session(estafeta["ports"][name], client)
            seen |= {keyword_name(k) for k in ours if " -> " not in k}
            offered = [k for k in ours if keyword_name(k) in NOT_IMPLEMENTED]
            if offered:
                diffs.append(f"{name} from {client}: estafeta offers {offered}, which it does not implement")
            want = [_known(k) for k in theirs if keyword_name(k) not in NOT_IMPLEMENTED]
            if ours != want:
                diffs.append(f"{name} {CASES[name]} from {client}: got {ours}, want (Postfix {theirs}) {want}")
    assert not diffs, "\n".join(diffs)
    assert seen == SHARED, f"got keywords {sorted(seen)} over all cases, want {sorted(SHARED)}"
    # The same log lines for what was discarded (and for the table that failed).
    sessions = len(CASES) * len(CLIENTS)
    theirs = wait_for(lambda: ehlo_log(postfix["maillog"](), sessions), 30, what="Postfix's maillog")
    ours = wait_for(lambda: ehlo_log(estafeta["maillog"](), sessions), 30, what="estafeta's maillog")
    kinds = {k for k in ("discarding EHLO keywords", "don't know what EHLO", "reject: EHLO", "lookup error")
             if not any(k in line for line in theirs)}
    assert not kinds, f"Postfix's maillog has no {sorted(kinds)} lines: {theirs}"
    assert ours == theirs, "got (estafeta)\n  " + "\n  ".join(ours) + "\nwant (Postfix)\n  " + "\n  ".join(theirs)


def _known(line: str) -> str:
    for theirs, ours in KNOWN_TEXT.items():
        if line.endswith(" -> " + theirs):
            return line[:-len(theirs)] + ours
    return line


_LOGGED = re.compile(r"\bsmtpd\[\d+\]: ((?:warning: )?(?:discarding EHLO keywords.*|don't know what EHLO.*"
                     r"|NOQUEUE: reject: EHLO.*|\S+ lookup error for \"[^\"]*\"))", re.M)


def ehlo_log(text: str, sessions: int) -> list[str] | None:
    """The EHLO lines of a maillog, sorted, client names left out (Postfix says
    unknown[127.0.0.1] without peername lookups, estafeta localhost[127.0.0.1]),
    the table's path and detail too in a lookup error (logged at connect, the
    readiness probe's connection included, by both);
    None until all `sessions` have logged their disconnect (the readiness probes
    send no EHLO, so their disconnect lines have no ehlo=)."""
    if len(re.findall(r"disconnect from .* ehlo=", text)) < sessions:
        return None
    lines = (re.sub(r"\S*\[(127\.[\d.]+)\]", r"[\1]", m) for m in _LOGGED.findall(text))
    return sorted(re.sub(r"^warning: \S+ lookup error", "warning: TABLE lookup error", m) for m in lines)
