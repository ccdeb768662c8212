"""8-bit mail to a server without 8BITMIME (RFC 6152 3): Postfix's smtp-sink started
with -8 (do not announce 8BITMIME) receives the 8-bit parts quoted-printable, and
they decode to the original text; 7-bit and base64 parts arrive byte for byte.
The agent is driven directly, then a real instance relays to the sink end to end.
Debian package: postfix (smtp-sink).
"""
from __future__ import annotations

import base64
import email
import email.policy

from estafeta.delivery.smtp import SmtpAgent
from estafeta.testing.instance import free_port, wait_for

from test_smtp_delivery import (body_of, cfg, deliver, dumped, instances, needs_sink, peers,  # noqa: F401
                                request, send, workdir)

LATIN1 = ("MIME-Version: 1.0\nFrom: a@example.org\nTo: b@tesis.com\nSubject: latin-1\n"
          "Content-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: 8bit\n\n").encode() + \
    "Grüße aus Köln, ça va? Ñandú = 1/2 ½\n.a line with a dot\n".encode("latin-1") + b"x" * 90 + "é\n".encode("latin-1")
PLAIN_UTF8 = "From: a@example.org\nSubject: no MIME headers\n\nnaïve café — 東京\n".encode()
PNG = bytes(range(256)) * 3
MULTI = (b"MIME-Version: 1.0\nSubject: multi\nContent-Type: multipart/mixed; boundary=\"=_sep\"\n"
         b"Content-Transfer-Encoding: 8bit\n\nPreamble.\n"
         b"--=_sep\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n"
         + "Überprüfung bestanden.\n".encode() +
         b"--=_sep\nContent-Type: text/plain; charset=us-ascii\n\nplain ascii part\n"
         b"--=_sep\nContent-Type: image/png\nContent-Transfer-Encoding: base64\n\n"
         + base64.encodebytes(PNG) + b"--=_sep--\n")


def received(d: str) -> tuple[bytes, bytes]:
    """(smtp-sink's dump with its own headers, the message as it arrived)."""
    wait_for(lambda: dumped(d), 10, what="dump")
    (got,) = dumped(d)
    msg = body_of(got)
    assert msg.endswith(b"\n\n")
    return got, msg[:-1]        # smtp-sink ends each dumped message with an empty line


def parse(raw: bytes):
    return email.message_from_bytes(raw, policy=email.policy.default)


@needs_sink
def test_latin1_body_arrives_quoted_printable(peers):
    port = free_port()
    d = peers.sink("127.0.0.1", port, "-8")
    (r,) = deliver(SmtpAgent(cfg()), request(f"[127.0.0.1]:{port}", "b@tesis.com"), LATIN1)
    assert r.status == "sent", f"got {r}"
    dump, msg = received(d)
    assert b"X-Mail-Args: <a@example.org>\n" in dump, "BODY=8BITMIME sent to a server that did not offer it"
    assert msg.isascii(), msg
    assert all(len(x) <= 76 for x in msg.split(b"\n")), msg
    m = parse(msg)
    assert m["Content-Transfer-Encoding"] == "quoted-printable"
    assert m.get_content() == LATIN1.split(b"\n\n", 1)[1].decode("latin-1")
    assert b"\n.a line with a dot\n" in msg          # dot-stuffing undone by the sink, as before


@needs_sink
def test_utf8_without_mime_headers_gets_them(peers):
    port = free_port()
    d = peers.sink("127.0.0.1", port, "-8")
    (r,) = deliver(SmtpAgent(cfg()), request(f"[127.0.0.1]:{port}", "b@tesis.com"), PLAIN_UTF8)
    assert r.status == "sent", f"got {r}"
    _, msg = received(d)
    assert msg.isascii()
    m = parse(msg)
    assert (m["MIME-Version"], m.get_content_type(), m.get_param("charset")) == ("1.0", "text/plain", "utf-8")
    assert m.get_content() == "naïve café — 東京\n"


@needs_sink
def test_multipart_converts_the_8bit_part_only(peers):
    port = free_port()
    d = peers.sink("127.0.0.1", port, "-8")
    (r,) = deliver(SmtpAgent(cfg()), request(f"[127.0.0.1]:{port}", "b@tesis.com"), MULTI)
    assert r.status == "sent", f"got {r}"
    _, msg = received(d)
    assert msg.isascii()
    # the 7-bit and base64 parts are byte for byte what was queued
    for part in (b"Content-Type: text/plain; charset=us-ascii\n\nplain ascii part\n",
                 b"Content-Transfer-Encoding: base64\n\n" + base64.encodebytes(PNG) + b"--=_sep--\n"):
        assert part in msg
    m = parse(msg)
    assert m["Content-Transfer-Encoding"] == "7bit"
    text, ascii_part, png = m.iter_parts()
    assert text["Content-Transfer-Encoding"] == "quoted-printable"
    assert text.get_content() == "Überprüfung bestanden."
    assert png.get_content() == PNG and ascii_part.get_content() == "plain ascii part"


@needs_sink
def test_server_with_8bitmime_and_disabled_conversion_get_it_unchanged(peers):
    p1, p2 = free_port(), free_port()
    d1 = peers.sink("127.0.0.1", p1, name="eight")
    d2 = peers.sink("127.0.0.1", p2, "-8", name="seven")
    (r,) = deliver(SmtpAgent(cfg()), request(f"[127.0.0.1]:{p1}", "b@tesis.com"), LATIN1)
    assert r.status == "sent"
    dump, msg = received(d1)
    assert b"X-Mail-Args: <a@example.org> BODY=8BITMIME" in dump and msg == LATIN1
    (r,) = deliver(SmtpAgent(cfg(disable_mime_output_conversion="yes")),
                   request(f"[127.0.0.1]:{p2}", "b@tesis.com"), LATIN1)
    assert r.status == "sent"
    _, msg = received(d2)
    assert msg == LATIN1


@needs_sink
def test_8bit_headers_are_sent_as_before(peers):
    # SMTPUTF8-style headers cannot be downgraded: the message goes as it was (the
    # addresses are ASCII, so no SMTPUTF8 is needed for the envelope).
    port = free_port()
    d = peers.sink("127.0.0.1", port, "-8")
    m = "Subject: Grüße\nContent-Transfer-Encoding: 8bit\n\nGrüße\n".encode()
    (r,) = deliver(SmtpAgent(cfg()), request(f"[127.0.0.1]:{port}", "b@tesis.com"), m)
    assert r.status == "sent"
    assert received(d)[1] == m


@needs_sink
def test_e2e_relay_to_a_7bit_server(peers, instances):
    port = free_port()
    d = peers.sink("127.0.0.1", port, "-8")
    inst = instances({"relayhost": f"[127.0.0.1]:{port}"})
    body = LATIN1.replace(b"\n", b"\r\n")
    send(inst, ["bob@tesis.com"], body)
    _, msg = received(d)
    wait_for(lambda: "status=sent" in inst.log(), 20, what="delivery log line")
    assert msg.isascii(), msg
    m = parse(msg)
    assert m["Content-Transfer-Encoding"] == "quoted-printable" and m["Subject"] == "latin-1"
    assert m["Received"] is not None                  # our Received: went with it
    assert m.get_content() == LATIN1.split(b"\n\n", 1)[1].decode("latin-1")
