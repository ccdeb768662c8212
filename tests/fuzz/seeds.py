"""Write the seed corpus: tests/fuzz/corpus/TARGET/seed-NAME, one small file per case.

    .venv/bin/python tests/fuzz/seeds.py          # rewrite every seed-* file

Seeds are realistic inputs, written with estafeta's own writers where it has one
(qfile.encode_envelope, maildrop.submit, the default main.cf/master.cf, build_image),
and the SMTP dialogs of tests/dialogs/. Files named find-* are inputs that once
crashed a target (kept as regression tests); sha1-named files were added by the
fuzzer (runner.py --merge). This script touches only seed-* files.
"""
from __future__ import annotations

import glob
import os
import re
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CORPUS = os.path.join(HERE, "corpus")
sys.path.insert(0, ROOT)

from estafeta.config.defaults import default_main_cf, default_master_cf, default_vmailbox  # noqa: E402
from estafeta.queue import maildrop, qfile  # noqa: E402
from estafeta.tables.hash import MAGIC, build_image  # noqa: E402
from estafeta.testing.dialog import byte_expr  # noqa: E402

# Flags bytes of the SMTP server target (fuzz_smtp_server.py): printable, so that a
# seed reads as the dialog it is.
SMTP, LMTP, DSN, SMALL, FEW_ERRORS, PAD = ord("@"), ord("A"), ord("B"), ord("D"), ord("H"), ord("P")
SMUGGLE_ENDS = {"lf-dot-lf": b"\n.\n", "cr-dot-cr": b"\r.\r", "lf-dot-crlf": b"\n.\r\n", "crlf-dot-lf": b"\r\n.\n",
                "cr-dot-crlf": b"\r.\r\n", "crlf-dot-cr": b"\r\n.\r", "lf-dot-cr": b"\n.\r",
                "nul-dot": b"\r\n\0.\r\n"}
ENVELOPE = b"EHLO client.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n"


def smtp_server() -> dict[str, bytes]:
    out = {}
    for path in sorted(glob.glob(os.path.join(ROOT, "tests", "dialogs", "*.dialog"))):
        text = open(path, encoding="utf-8").read()
        stream = b""
        for line in text.splitlines():
            if line.startswith("C: "):
                stream += line[3:].encode() + b"\r\n"
            elif line.startswith("C!"):
                stream += byte_expr(line[2:])
        if len(stream) > 8192:
            continue        # the long-line dialogs: the PAD seeds below make those lines
        flags = SMTP | (2 if "@dsn" in text else 0) | (8 if "max_errors" in text else 0)
        if "message_size_limit" in text:
            flags |= 4
        out["dialog-" + os.path.basename(path)[:-7].replace("_", "-")] = bytes([flags]) + stream
    for name, end in SMUGGLE_ENDS.items():
        out[f"smuggling-{name}"] = bytes([SMTP]) + ENVELOPE + b"Subject: carrier\r\n\r\nbody" + end + \
            b"MAIL FROM:<admin@example.org>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\nSubject: smuggled\r\n\r\n" \
            b"evil\r\n.\r\nQUIT\r\n"
    out["pipelined-two-messages"] = bytes([SMTP]) + ENVELOPE + b"one\r\n..two\r\n.\r\n" + ENVELOPE[20:] + \
        b"three\r\n.\r\nQUIT\r\n"
    out["dsn-parameters"] = bytes([DSN]) + b"EHLO c\r\nMAIL FROM:<a@b.example> RET=HDRS ENVID=QQ+2B314159\r\n" \
        b"RCPT TO:<c@d.example> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;c+40d.example\r\n" \
        b"RCPT TO:<e@f.example> NOTIFY=NEVER\r\nDATA\r\nSubject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n"
    out["lmtp-three-recipients"] = bytes([LMTP]) + b"LHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<a@x>\r\nRCPT TO:<reject@x>\r\n" \
        b"RCPT TO:<b@x>\r\nRCPT TO:<c@x>\r\nDATA\r\nbody\r\n.\r\nQUIT\r\n"
    out["policy-replies"] = bytes([SMTP]) + b"HELO c\r\nMAIL FROM:<defer@x>\r\nMAIL FROM:<a@x>\r\nRCPT TO:<reject@x>\r\n" \
        b"DATA\r\nRCPT TO:<ok@x>\r\nRCPT TO:<close@x>\r\nDATA\r\n"
    out["smtputf8"] = bytes([SMTP]) + "EHLO c\r\nMAIL FROM:<jöran@bär.example> SMTPUTF8 BODY=8BITMIME SIZE=100\r\n" \
        "RCPT TO:<δοκιμή@παράδειγμα.δοκιμή>\r\nDATA\r\nSubject: ü\r\n\r\nß\r\n.\r\n".encode()
    out["size-limit"] = bytes([SMALL]) + ENVELOPE + b"x" * 250 + b"\r\n" + b"y" * 100 + b"\r\n.\r\nMAIL FROM:<a@b> SIZE=301\r\n"
    out["too-many-errors"] = bytes([FEW_ERRORS]) + b"FOO\r\nBAR\r\nMAIL FROM:<a@b>\r\nNOOP\r\n"
    out["helo-with-tab"] = bytes([SMTP]) + b"EHLO client\texample\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nx\r\n.\r\n"
    # PAD: offset 20 (after "EHLO c\r\n..."), 70 KB of "x": over-long command and data lines.
    out["long-command-line"] = bytes([PAD]) + b"\x08\x00\x46x" + b"EHLO c\r\nNOOP \r\nRSET\r\n"
    out["long-command-line-bare-lf"] = bytes([PAD]) + b"\x08\x00\x46x" + b"EHLO c\r\nNOOP \nRSET\r\n"
    out["long-data-line"] = bytes([PAD]) + b"\x55\x00\x46x" + ENVELOPE + b"Subject: long\r\n\r\n.\r\n.\r\n"
    out["vrfy-help-noop"] = bytes([SMTP]) + b"VRFY postmaster\r\nHELP\r\nNOOP x\r\nEHLO \r\nQUIT now\r\nquit\r\n"
    out["bad-utf8-and-controls"] = bytes([SMTP]) + b"EHLO \xff\xfe\r\nEHLO a\x1bb\r\nMAIL FROM:<a\0@b>\r\nEHLO x\r\n"
    return out


def smtp_client() -> dict[str, bytes]:
    ehlo = (b"250-mx.example.net Hello\r\n250-PIPELINING\r\n250-SIZE 35882577\r\n250-8BITMIME\r\n"
            b"250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n250-DSN\r\n250-CHUNKING\r\n250 SMTPUTF8\r\n")
    return {
        "session": b"\x00220 mx.example.net ESMTP ready\r\n" + ehlo + b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
                   b"354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Ok: queued as 4Xyz\r\n221 2.0.0 Bye\r\n",
        "rejections": b"\x00220 mx ESMTP\r\n250 mx\r\n550-5.1.1 The email account that you tried to reach does\r\n"
                      b"550-5.1.1 not exist. Please try double-checking the recipient's\r\n550 5.1.1 address.\r\n"
                      b"452 4.5.3 Too many recipients\r\n421 4.7.0 Try again later, closing connection.\r\n",
        "bare-lf-replies": b"\x00220 old.example\n250-old.example\n250 SIZE\n354 go ahead\n250 ok\n",
        "small-limits": b"\x01220-a\r\n220-b\r\n220-c\r\n220-d\r\n220-e\r\n220 f\r\n",
        "endless-continuation": b"\x01" + b"250-x\r\n" * 8,
        "long-line": b"\x00" + b"250 " + b"y" * 4100 + b"\r\n",
        "mixed-codes": b"\x00250-one\r\n251 two\r\n",
        "bad-codes": b"\x00099 x\r\n",
        "message-with-dots": b"\x00.leading\n..two\n.\nlast line no newline",
        "message-with-crlf": b"\x00Subject: x\r\n\r\nline\r\n.\r\n",
        "message-bare-cr": b"\x00a\r.\rb\n",
    }


def address() -> dict[str, bytes]:
    relay = ["user@remote.example", "user%remote.example@localhost", "remote.example!user@localhost",
             '"user@remote.example"@localhost', "@localhost:user@remote.example", "user@[127.0.0.1]",
             "user@[IPv6:::1]", "user@remote.example\\@localhost", "user@remote.example."]
    out = {f"relay-{i}": b"\x00<" + a.encode() + b">" for i, a in enumerate(relay)}
    out.update({
        "null": b"\x00<>",
        "params": b"\x00<a@b.example> SIZE=1000 BODY=8BITMIME RET=FULL ENVID=x+2By",
        "rcpt-dsn": b"\x00<c@d.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;c+40d.example",
        "source-route": b"\x00<@a.example,@b.example:u@c.example>",
        "quoted": b'\x00<"a b\\"c"@example.org>',
        "bare": b"\x00 user@example.org SIZE=10",
        "utf8": "\x01<jöran@bär.example> SMTPUTF8".encode(),
        "utf8-undeclared": "\x00<jöran@bär.example>".encode(),
        "literal-bad": b"\x00<u@[300.1.1.1]>",
        "general-literal": b"\x00<u@[x:y]>",
        "dup-param": b"\x00<a@b> SIZE=1 size=2",
    })
    return out


def dsn() -> dict[str, bytes]:
    said = b"host mx.example.net[192.0.2.7] said: 550 5.1.1 <bob@example.net>: User unknown (in reply to RCPT TO command)"
    msg = b"Subject: hello\nFrom: a@example.org\n\nbody\n.\n"
    return {
        "failure": b"\x00\0SUCCESS,FAILURE\0rfc822;bob+40example.net\0FULL\0QQ314159\0" + said + b"\0" + msg,
        "delay-hdrs": b"\x01\0DELAY\0rfc822;a+2Bb@c\0HDRS\0id+20x\0conversation timed out\0" + msg,
        "success-3": b"\x0e\0NEVER\0utf-8;x\0hdrs\0\0delivered to mailbox\0" + msg,
        "double-bounce": b"\x10\0failure,delay\0rfc822;\0full\0" + b"x" * 101 + b"\0refused to talk\0" + msg,
        "boundary-in-reason": b"\x00\0\0\0\0\0550 --4ABCDEF.1700003600000/mx.example\n--x--\0--4ABCDEF.1700003600000/mx.example\n",
    }


def qfile_seeds() -> dict[str, bytes]:
    out = {
        "two-recipients": qfile.encode_envelope(1700000000.5, "a@example.org", [
            ("c@example.net", {"o": "c@example.net", "dsn_orcpt": "rfc822;c@example.net", "dsn_notify": "SUCCESS"}),
            ("e@example.net", {})], {"client_address": "192.0.2.1", "helo_name": "client", "protocol": "ESMTP",
                                     "dsn_ret": "HDRS", "dsn_envid": "QQ314159"}) + b"Subject: x\n\nbody\n",
        "null-sender": qfile.encode_envelope(1.0, "", [("postmaster", {})], {}) + b"\n",
        "utf8": qfile.encode_envelope(1700000000.0, "jöran@bär.example", [("δ@π.example", {})], {}) + "ü\n".encode(),
    }
    done = bytearray(out["two-recipients"])
    done[done.index(b"R-") + 1] = ord("D")
    out["one-done"] = bytes(done)
    with tempfile.TemporaryDirectory() as d:
        name = maildrop.submit(d, "user", ["a@example.org", "b@example.org"], {"dsn_notify": "FAILURE",
                                                                              "full_name": "A User"},
                               b"Subject: local\n\nhi\n", sync=False)
        data = open(os.path.join(d, name), "rb").read()
        out["maildrop"] = re.sub(rb"\nT [0-9.]+\n", b"\nT 1700000000.000000\n", data)   # reproducible
    out["maildrop-dash-sender"] = out["maildrop"].replace(b"S user\n", b"S -oQ/tmp\n")
    out["truncated"] = out["two-recipients"][:60]
    return out


def main_cf() -> dict[str, bytes]:
    return {
        "default": default_main_cf("/srv/estafeta").encode(),
        "expansions": b"a = ${b?{x}:{y}} $(c) $$d ${e:z}\n  continued\n# comment\nb = $a\nc = ${myhostname}\n"
                      b"mydestination = $myhostname, localhost.$mydomain,\n\tlocalhost\n",
        "types": b"message_size_limit = 10240000\nsmtpd_timeout = 300s\nmaximal_queue_lifetime = 5d\n"
                 b"smtpd_helo_required = yes\nsmtpd_recipient_restrictions = permit_mynetworks,\n"
                 b"    reject_unauth_destination\nrecipient_delimiter = +\n",
        "name-then-value": b"myhostname\n = mx.example\nmydomain = example\n",
        "loop": b"a = $b\nb = $a\n",
        "deep-nesting": b"a = " + b"${b?" * 120 + b"x" + b"}" * 120 + b"\nb = 1\n",
    }


def master_cf() -> dict[str, bytes]:
    return {
        "default": default_master_cf().encode(),
        "postfix-style": b"smtp      inet  n       -       y       -       -       smtpd\n"
                         b"submission inet n       -       y       -       -       smtpd\n"
                         b"  -o syslog_name=postfix/submission\n  -o { smtpd_tls_security_level = encrypt }\n"
                         b"  -o smtpd_sasl_auth_enable=yes\n"
                         b"[::1]:2525 inet n - n 60? 1 smtpd -v\n"
                         b"mypipe unix - n n - - pipe flags=DRhu user=nobody argv=/bin/f ${sender} -o x\n",
    }


def aliases() -> dict[str, bytes]:
    return {
        "system": b"# /etc/aliases\nmailer-daemon: postmaster\npostmaster: root\nnobody: root\n"
                  b"root: admin@example.org, \\root\n",
        "kinds": b"list: :include:/etc/mail/list,\n\t\"|/usr/bin/procmail -a x\", /var/spool/archive\n"
                 b"\"name with space\": a@b\nowner-list: list-request\nq: \"|cmd a, b\", \"a b\"@example.org\n",
        "hash-value": b"x: #admin, b\n",
        "forward": b"# .forward\n\\user, \"|/usr/bin/vacation user\"\n/home/user/mail/archive\n",
    }


def tables() -> dict[str, bytes]:
    return {
        "regexp": b"\x00user+ext@example.com\n/^(.*)\\+(.*)@example\\.com$/ $1@example.com\nif !/@example\\.org$/\n"
                  b"/^postmaster@/i OK\nendif\n/[[:digit:]]{3,}/ REJECT numbers\n/^[^@]+@(a|b)\\./m ${1}\n",
        "pcre": b"\x01Foo@Example.com\n/^(?<u>[a-z]+)@(?i:example)\\.com$/ ${1}\n/\\Qa.b\\E\\x{41}\\h+\\R/ X\n"
                b"!/^x/ DUNNO\n/(a|b){2,}+/xs Y\n/^(?:x(?=y))\\1?\\g{-1}/A $$\n",
        "cidr": b"\x02192.0.2.1\n192.0.2.0/24 REJECT\n[2001:db8::]/32 OK\nif 10.0.0.0/8\n!10.1.0.0/16 DUNNO\n"
                b"endif\n0.0.0.0/0 x\n",
        "texthash": b"\x03alice\n" + default_vmailbox().encode() + b"alice alice@example.org\n  continued\nbob\n",
        "inline": b"\x04a\na=b, { c = d e }, f=g",
        "static": b"\x05x\nOK",
    }


def hash_db() -> dict[str, bytes]:
    img = build_image([("postmaster", "root"), ("root", "admin@example.org, \\root"), ("a", "b")])
    return {
        "image": img,
        "image-empty": build_image([]),
        "image-bad-size": img[:-3],
        "pairs": b"alice alice@example.org\nBob bob@x\nbob second\n\nno-value\n",
        "magic-only": MAGIC + b"\0" * 24,
    }


def access() -> dict[str, bytes]:
    values = ["REJECT go away", "550 5.7.1 No thanks", 'ERROR:"550 5.7.1 text"', "ERROR:5.7.1:550 text",
              '"450 try later"', "REDIRECT user@example.org", "BCC archive@example.org",
              "FILTER smtp:[127.0.0.1]:10025", "PREPEND X-Tag: yes", "permit_mynetworks, reject_unauth_destination",
              "QUARANTINE:spam", "DEFER_IF_PERMIT later", "12345", "RELAY", "OK", "DUNNO", "HOLD\twait",
              "check_sender_access hash:/etc/postfix/x"]
    return {f"v{i}": v.encode() for i, v in enumerate(values)}


SEEDS = {"smtp_server": smtp_server, "smtp_client": smtp_client, "address": address, "dsn": dsn,
         "qfile": qfile_seeds, "main_cf": main_cf, "master_cf": master_cf, "aliases": aliases,
         "tables": tables, "hash_db": hash_db, "access": access}


def write_all() -> int:
    n = 0
    for target, make in SEEDS.items():
        d = os.path.join(CORPUS, target)
        os.makedirs(d, exist_ok=True)
        for old in glob.glob(os.path.join(d, "seed-*")):
            os.unlink(old)
        for name, data in make().items():
            assert re.fullmatch(r"[a-z0-9-]+", name), name
            with open(os.path.join(d, f"seed-{name}"), "wb") as f:
                f.write(data)
            n += 1
    return n


if __name__ == "__main__":
    print(f"{write_all()} seed files under {os.path.relpath(CORPUS, ROOT)}/")
