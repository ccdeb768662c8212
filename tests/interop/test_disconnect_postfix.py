"""The replies and the session log lines of estafeta's smtpd and of a private Postfix
(Debian's 3.7) for the same sessions: `disconnect from HOST[ADDR] ehlo=1 mail=0/1 ...
commands=N/M`, with Postfix's counters (a failed command as ok/total, unknown verbs
as unknown=, STARTTLS, AUTH, BDAT, ETRN, XCLIENT, XFORWARD under their own names, in
Postfix's command-table order), the line before it when the session ended badly
(`lost connection after CMD`, `timeout after CMD`, `too many errors after CMD`, CMD
being CONNECT, the last verb, UNKNOWN, `DATA (N bytes)` or END-OF-MESSAGE), and the
reply to every command on the way. N is compared for a message left half-way, also
past message_size_limit (Postfix stops counting at the last whole line that fit) and
after a bare LF (Postfix goes on counting).

Both servers get the same main.cf settings: HELO required (estafeta always requires
it), no error sleep, two recipients a message, 5000-byte messages, root and
postmaster the only local users; Postfix does not offer CHUNKING or ETRN (estafeta
implements neither; it answers ETRN as Postfix does for a domain not in
fast_flush_domains). A second port has smtpd_hard_error_limit = 3, a third
smtpd_timeout = 2s, a fourth smtpd_recipient_overshoot_limit = 1 (with the hard
limit 3). The sessions run one after the other; after each, the last disconnect line
of each maillog is taken, with the "after" line the same process logged before it.
smtpd_recipient_limit = 0 (no limit to estafeta) has no session here: Postfix 3.7's
smtpd refuses that value ("fatal: invalid smtpd_recipient_limit parameter value 0 <
1"); tests/unit/daemons/test_daemons_smtpd_session_log.py covers it.
Recipe for the private Postfix: ../shared/PEERS.md section 7 (postfix_private.py);
the EHLO side of the same comparison: test_ehlo_postfix.py.
"""
import re
import socket
import time

import pytest
from postfix_private import REQUIRES, base_main, port_open, private_postfix

from estafeta.testing.instance import Instance, free_port, wait_for
from estafeta.testing.postfix import MASTER_CF

pytestmark = REQUIRES

SETTINGS = {
    "myhostname": "mx.example.test",
    "mydestination": "localhost",
    "alias_maps": "",
    "local_recipient_maps": "inline:{root=x, postmaster=x}",
    "local_transport": "discard:no local delivery in tests",
    "smtpd_helo_required": "yes",
    "smtpd_error_sleep_time": "0",
    "smtpd_recipient_limit": "2",
    "message_size_limit": "5000",
    "smtpd_discard_ehlo_keywords": "silent-discard, chunking, etrn",
}
HARD_ERRORS = "smtpd_hard_error_limit=3"
# port -> the master.cf -o settings of its smtpd ("main": none)
PORTS = {"main": "", "errors": f"-o {HARD_ERRORS}", "timeout": "-o smtpd_timeout=2s",
         "overshoot": f"-o smtpd_recipient_overshoot_limit=1 -o {HARD_ERRORS}",
         "novrfy": "-o disable_vrfy_command=yes"}

MSG = "<message>"          # stands for a small message and its end
BIG = "<big message>"      # one over message_size_limit
CLOSE = "<close>"          # the client closes without QUIT
PARTIAL = "<half a message, then close>"
WAIT = "<wait for the server's timeout>"
PARTIAL_WAIT = "<half a message, then wait>"
# Over message_size_limit in whole 80-octet lines (a dot-stuffed one among them),
# then a line without its end: Postfix's count stops at the last line that fit.
BIG_PARTIAL = "<more than message_size_limit, then close>"
BIG_PARTIAL_WAIT = "<more than message_size_limit, then wait>"
# A bare LF (a line end to Postfix, smtpd_forbid_bare_newline = no: its count goes
# on; estafeta will refuse the message but counts as Postfix does), a bare CR, then
# more than message_size_limit.
BARE_LF_PARTIAL = "<a bare LF, then too much, then close>"
BARE_LF_LAST = "<lines ended by bare LFs, then close>"
MAIL, RCPT = "MAIL FROM:<a@example.org>", "RCPT TO:<root@localhost>"

# name -> (port, commands). Every reply is compared; a reply that closes the
# session (221, 421, 521) ends it.
SESSIONS = {
    "accepted": ("main", ["EHLO c.example", "MAIL FROM:<a@example.org>", "RCPT TO:<root@localhost>",
                          "DATA", MSG, "QUIT"]),
    "two_messages": ("main", ["HELO a", "EHLO b", "HELO c", "MAIL FROM:<>", "RCPT TO:<root@localhost>",
                              "DATA", MSG, "MAIL FROM:<a@example.org>", "RCPT TO:<postmaster@localhost>",
                              "DATA", MSG, "RSET", "QUIT"]),
    "junk": ("main", ["HELO c.example", "NOOP", "NOOP hello there", "RSET", "RSET x", "VRFY root", "VRFY",
                      "QUIT x"]),
    "bad_helo": ("main", ["EHLO", "HELO", "EHLO c.example", "QUIT"]),
    "sequence": ("main", ["MAIL FROM:<a@example.org>", "RCPT TO:<root@localhost>", "DATA", "EHLO c",
                          "RCPT TO:<root@localhost>", "DATA", "MAIL FROM:<a@example.org>",
                          "MAIL FROM:<a@example.org>", "DATA", "QUIT"]),
    "unknown_before_helo": ("main", ["FOO bar", "", "STARTTLS", "AUTH PLAIN AHUAcA==", "XCLIENT NAME=x",
                                     "XFORWARD NAME=x", "QUIT"]),
    "not_offered": ("main", ["EHLO c", "STARTTLS", "STARTTLS x", "AUTH PLAIN", "ETRN example.org", "ETRN",
                             "ETRN a b", "MAIL FROM:<a@example.org>", "ETRN example.org", "XCLIENT NAME=x",
                             "XFORWARD NAME=x", "FOO", "QUIT"]),
    "etrn_before_helo": ("main", ["ETRN example.org", "QUIT"]),
    "bdat": ("main", ["EHLO c", "BDAT 3 LAST"]),
    "mail_refused": ("main", ["EHLO c", "MAIL FROM:<a@example.org> xyz=1", "MAIL FROM:<a@example.org> smtputf8=x",
                              "MAIL FROM:<a@example.org> SIZE=abc", "MAIL FROM:<a@example.org> SIZE=999999",
                              "MAIL FROM:<a@example.org> BODY=X", "MAIL FROM:<a@example.org> BODY",
                              "MAIL FROM:<a@example.org> SIZE", "MAIL FROM:<a@example.org> RET=X",
                              "MAIL FROM:<a@example.org> RET", "MAIL FROM:<a@example.org> ENVID",
                              "MAIL FROM:<a@example.org> ENVID=a+", "MAIL FROM:", "MAIL TO:<a@example.org>",
                              "RSET", "QUIT"]),
    "rcpt_refused": ("main", ["EHLO c", "MAIL FROM:<a@example.org>", "RCPT TO:", "RCPT FROM:<x@example.org>",
                              "RCPT TO:<nosuch@localhost>", "RCPT TO:<root@localhost> foo=bar",
                              "RCPT TO:<root@localhost> NOTIFY=X", "RCPT TO:<root@localhost> NOTIFY",
                              "RCPT TO:<root@localhost> ORCPT=x", "RCPT TO:<root@localhost> ORCPT",
                              "DATA", "RCPT TO:<root@localhost> NOTIFY=never", "RCPT TO:<postmaster@localhost>",
                              "RCPT TO:<root@localhost>", "DATA x", "RSET", "QUIT"]),
    "message_too_big": ("main", ["EHLO c", "MAIL FROM:<a@example.org>", "RCPT TO:<root@localhost>", "DATA", BIG,
                                 "QUIT"]),
    "left_in_message": ("main", ["EHLO c", "MAIL FROM:<a@example.org>", "RCPT TO:<root@localhost>", "DATA",
                                 PARTIAL]),
    "no_quit": ("main", ["EHLO c", "NOOP", CLOSE]),
    "nothing": ("main", [CLOSE]),
    "too_many_errors": ("errors", ["EHLO c", "FOO", "MAIL FROM:<a@example.org> xyz=1", "BAZ", "NOOP"]),
    # lost connection after CMD: the last command, whatever its reply
    "lost_after_rcpt": ("main", ["EHLO c", MAIL, RCPT, CLOSE]),
    "lost_after_refused_mail": ("main", ["EHLO c", "MAIL FROM:<a@example.org> xyz=1", CLOSE]),
    "lost_after_unknown": ("main", ["EHLO c", "FOO", CLOSE]),
    "lost_after_empty_line": ("main", ["EHLO c", "", CLOSE]),
    "blank_lines": ("main", ["", "EHLO c", "", "   ", "NOOP", "\t", "QUIT"]),
    "lost_after_helo_refused": ("main", ["MAIL FROM:<a@example.org>", CLOSE]),
    "lost_after_lowercase": ("main", ["ehlo c", "rset", CLOSE]),
    "lost_after_354": ("main", ["EHLO c", MAIL, RCPT, "DATA", CLOSE]),
    "lost_after_refused_data": ("main", ["EHLO c", MAIL, "DATA", CLOSE]),
    "lost_after_message": ("main", ["EHLO c", MAIL, RCPT, "DATA", MSG, CLOSE]),
    "lost_after_big_message": ("main", ["EHLO c", MAIL, RCPT, "DATA", BIG, CLOSE]),
    "lost_after_starttls": ("main", ["EHLO c", "STARTTLS", CLOSE]),
    "lost_in_big_message": ("main", ["EHLO c", MAIL, RCPT, "DATA", BIG_PARTIAL]),
    "lost_in_message_after_bare_lf": ("main", ["EHLO c", MAIL, RCPT, "DATA", BARE_LF_PARTIAL]),
    "lost_in_message_bare_lf_last": ("main", ["EHLO c", MAIL, RCPT, "DATA", BARE_LF_LAST]),
    # too many errors after CMD
    "too_many_errors_empty_lines": ("errors", ["EHLO c", "", "   ", "", "NOOP"]),
    "too_many_errors_after_mail": ("errors", ["EHLO c", "FOO", "BAR", "MAIL FROM:<a@example.org> xyz=1", "NOOP"]),
    "too_many_errors_after_rcpt": ("errors", ["EHLO c", MAIL, "RCPT TO:<nosuch@localhost>", "RCPT TO:",
                                              "RCPT TO:<nosuch@localhost>", "NOOP"]),
    # timeout after CMD (smtpd_timeout = 2s)
    "timeout_connect": ("timeout", [WAIT]),
    "timeout_after_rcpt": ("timeout", ["EHLO c", MAIL, RCPT, WAIT]),
    "timeout_after_unknown": ("timeout", ["HELO c", "FOO", WAIT]),
    "timeout_in_message": ("timeout", ["EHLO c", MAIL, RCPT, "DATA", PARTIAL_WAIT]),
    "timeout_after_message": ("timeout", ["EHLO c", MAIL, RCPT, "DATA", MSG, WAIT]),
    "timeout_in_big_message": ("timeout", ["EHLO c", MAIL, RCPT, "DATA", BIG_PARTIAL_WAIT]),
    # smtpd_recipient_limit 2, smtpd_recipient_overshoot_limit 1, smtpd_hard_error_limit 3:
    # the first 452 is no error; the next ones are, until the 421.
    "overshoot": ("overshoot", ["EHLO c", MAIL, RCPT, "RCPT TO:<postmaster@localhost>", RCPT, RCPT, "RSET",
                                MAIL, RCPT, RCPT, RCPT, RCPT, RCPT, "NOOP"]),
    # VRFY's argument: one address (else 501 5.1.3 and a warning), SMTPUTF8 as an option,
    # the domain resolvable; disable_vrfy_command answers 502 before any of it.
    "vrfy_arguments": ("main", ["HELO c", "VRFY", "VRFY   ", "VRFY \t", "VRFY SMTPUTF8", "VRFY a b", "VRFY a\tb",
                                "VRFY <>", "VRFY <a@b>", "VRFY a@b", 'VRFY "a b"@b', 'VRFY <"a b"@b>', 'VRFY ""',
                                "VRFY a b SMTPUTF8", "VRFY Root SMTPUTF8", "VRFY <a@b> SMTPUTF8", "VRFY ü@b",
                                "VRFY a@ü.de", "VRFY a@ü.de SMTPUTF8", "VRFY <a@b> foo", "VRFY John Doe <a@b>",
                                "VRFY a,b", "VRFY a:b;", "VRFY <@x:a@b>", "VRFY a (comment)", "VRFY (comment)",
                                "VRFY a@b..c", "VRFY a@", "VRFY a@1.2.3.4", "VRFY a@[1.2.3]", "VRFY a@[IPv6:::1]",
                                "VRFY a@b.", "VRFY " + "a" * 300, "VRFY a@" + "b" * 70 + ".example", "QUIT"]),
    "vrfy_disabled": ("novrfy", ["HELO c", "VRFY", "VRFY a b", "VRFY <>", "VRFY root", "QUIT"]),
    "overshoot_then_message": ("overshoot", ["EHLO c", MAIL, RCPT, RCPT, RCPT, "DATA", MSG, MAIL, RCPT, RCPT,
                                             RCPT, RCPT, "QUIT"]),
}

# Where estafeta's reply is knowingly not Postfix's, Postfix's reply (a pattern) ->
# ours (both mapped before comparing). VRFY: estafeta's 252 does not echo the
# client's text (proto/replies.py VRFY_REPLY: replies stay generic); code and
# enhanced code are compared all the same.
KNOWN_TEXT = {re.compile(r"252 2\.0\.0 .*"): "252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery"}


def _known(reply: str) -> str:
    for pattern, ours in KNOWN_TEXT.items():
        if pattern.fullmatch(reply):
            return ours
    return reply


def _reply(f) -> str:
    lines = []
    while True:
        line = f.readline().decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            return " | ".join(lines + ["<closed>"])
        lines.append(line)
        if line[3:4] != "-":
            break
    if lines[0].startswith("250-"):
        return lines[0].split("-")[0] + " (EHLO)"      # the keywords: test_ehlo_postfix.py
    return " | ".join(lines)


_BIG_LINES = b"Subject: big\r\n\r\n" + (b"x" * 78 + b"\r\n") * 40 + b"..dot\r\n" + (b"y" * 78 + b"\r\n") * 40 + b"and then"


def session(port: int, commands: list[str]) -> list[str]:
    """'command -> reply' for each command, until the server closes (221, 421, 521)."""
    seen = []
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        f = s.makefile("rb")
        assert f.readline().startswith(b"220"), "no greeting"
        for cmd in commands:
            if cmd == CLOSE:
                break
            if cmd == PARTIAL:
                s.sendall(b"Subject: half\r\n\r\nand then")
                break
            if cmd == BIG_PARTIAL:
                s.sendall(_BIG_LINES)
                break
            if cmd == BARE_LF_LAST:
                s.sendall(b"Subject: x\r\n\r\nab\r\n.cd\nef\n")
                break
            if cmd == BARE_LF_PARTIAL:
                s.sendall(b"Subject: x\r\n\r\nab\n.cd\r\nef\rgh\r\n..\r\n" + _BIG_LINES)
                break
            if cmd == WAIT:
                pass
            elif cmd == PARTIAL_WAIT:
                s.sendall(b"Subject: half\r\n..dot\r\nand then")
            elif cmd == BIG_PARTIAL_WAIT:
                s.sendall(_BIG_LINES)
            elif cmd == MSG:
                s.sendall(b"Subject: test\r\n\r\nhello\r\n.\r\n")
            elif cmd == BIG:
                s.sendall(b"Subject: big\r\n\r\n" + b"x" * 78 * 100 + b"\r\n.\r\n")
            else:
                s.sendall(cmd.encode() + b"\r\n")
            reply = _reply(f)
            reply = re.sub(r"queued as \w+$", "queued as ID", reply)
            seen.append(f"{cmd} -> {_known(reply)}")
            if reply[:3] in ("221", "421", "521") or reply.endswith("<closed>"):
                break
    return seen


_DISCONNECT = re.compile(r"smtpd\[(\d+)\]: disconnect from \S+\[[\d.]+\](.*)$")
_AFTER = re.compile(r"smtpd\[(\d+)\]: ((?:lost connection|timeout|too many errors) after .*) from \S+\[[\d.]+\]$")


def disconnects(log: str) -> list[str]:
    """For every disconnect line, "AFTER-LINE | counters": the "lost connection/timeout/
    too many errors after CMD" line the same process logged since its last disconnect
    (or "-"), and the counters (the client's name left out: Postfix says
    unknown[127.0.0.1] without peername lookups, estafeta localhost[127.0.0.1])."""
    out, after = [], {}
    for line in log.splitlines():
        if m := _AFTER.search(line):
            after[m[1]] = m[2]
        elif m := _DISCONNECT.search(line):
            out.append(f"{after.pop(m[1], '-')} | {m[2].strip()}")
    return out


def settle(maillog, probes: int) -> None:
    """Wait until the sessions of the start-up port probes (at least `probes`) have all
    logged their disconnect line: one logged late would be taken for a session's.
    Then until the log has stayed still for a second with every connect matched: a
    probe the server accepted but had not yet logged would otherwise come late."""
    def done() -> bool:
        log = maillog()
        connects = log.count(": connect from ")
        return connects >= probes and len(disconnects(log)) == connects
    wait_for(done, 20, what="the port probes' disconnect lines")
    last, deadline = maillog(), time.monotonic() + 20
    while True:
        time.sleep(1.0)
        now = maillog()
        if now == last and done():
            return
        assert time.monotonic() < deadline, "the log did not settle after the port probes"
        last = now


_VRFY_WARNING = re.compile(r"warning: Illegal address syntax from \S+\[[\d.]+\] in VRFY command: (.*)$", re.M)


def run(server: dict, commands: list[str], port: str) -> tuple[list[str], str]:
    """The replies and "AFTER-LINE | counters", then the VRFY warnings logged (the
    argument each quotes; the client's name left out as in disconnects())."""
    log = server["maillog"]()
    before, mark = len(disconnects(log)), len(log)
    replies = session(server["ports"][port], commands)
    lines = wait_for(lambda: (d := disconnects(server["maillog"]()))[before:] and d, 20,
                     what="the disconnect line")
    warnings = _VRFY_WARNING.findall(server["maillog"]()[mark:])
    return replies, lines[before] + "".join(f" | VRFY warning: {w}" for w in warnings)


def _extra_ports(ports: dict[str, int]) -> str:
    return "".join(f"127.0.0.1:{ports[name]} inet n - n - - smtpd {opts}\n"
                   for name, opts in PORTS.items() if name != "main")


@pytest.fixture
def postfix():
    ports = {name: free_port() for name in PORTS}
    with private_postfix("pf-disc-") as pf:
        main = base_main(pf.dir) + "".join(f"{k} = {v}\n" for k, v in SETTINGS.items()) + """\
inet_interfaces = loopback-only
inet_protocols = ipv4
default_transport = discard:no outbound delivery in tests
smtpd_peername_lookup = no
"""
        pf.write(main, MASTER_CF.format(port=ports["main"]) + _extra_ports(ports))
        pf.start(ports.values())
        settle(pf.maillog, len(ports))
        yield {"ports": ports, "maillog": pf.maillog}


@pytest.fixture
def estafeta():
    ports = {name: free_port() for name in PORTS}
    inst = Instance(main={**SETTINGS, "smtpd_worker_count": "1"}, port=ports["main"])
    inst.master_extra = _extra_ports(ports)
    with inst:
        inst.init()
        inst.start()
        for port in ports.values():
            wait_for(lambda: port_open(port), 20, what="estafeta smtpd")
        settle(inst.log, len(ports) + 1)      # Instance.start probes the main port once more
        yield {"ports": ports, "maillog": inst.log}


def test_same_replies_and_disconnect_line_as_postfix(postfix, estafeta):
    diffs, counted, afters = [], set(), set()
    for name, (port, commands) in SESSIONS.items():
        theirs, their_line = run(postfix, commands, port)
        ours, our_line = run(estafeta, commands, port)
        counted |= set(re.findall(r"(\w+)=", their_line))
        for i, (t, o) in enumerate(zip(theirs, ours)):
            if t != o:
                diffs.append(f"{name}: command {i + 1}: got {o!r}, want (Postfix) {t!r}")
        if len(theirs) != len(ours):
            diffs.append(f"{name}: got {len(ours)} replies, want (Postfix) {len(theirs)}")
        if our_line != their_line:
            diffs.append(f"{name}: got log lines {our_line!r}, want (Postfix) {their_line!r}")
        afters.add(their_line.split(" | ")[0].split(" after ")[0])
    assert not diffs, "\n".join(diffs)
    # The comparison cannot pass by both lines being short: Postfix counted these.
    want = {"helo", "ehlo", "xclient", "xforward", "starttls", "auth", "mail", "rcpt", "data", "bdat",
            "rset", "noop", "vrfy", "etrn", "quit", "unknown", "commands"}
    assert counted == want, f"got counters {sorted(counted)} in Postfix's lines, want {sorted(want)}"
    want = {"-", "lost connection", "timeout", "too many errors"}
    assert afters >= want, f"got {sorted(afters)} before Postfix's disconnect lines, want {sorted(want)}"
