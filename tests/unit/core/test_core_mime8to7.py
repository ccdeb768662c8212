"""core/mime8to7.py: 8-bit -> quoted-printable downgrade (RFC 6152, RFC 2045 6.7).

Properties: decoding the quoted-printable output gives back the original bytes of
every part; output lines are at most 76 characters; the output is pure 7-bit; parts
that need no conversion come out byte for byte; a 7-bit message is not touched.
MIME_EXAMPLES=4000 runs the hypothesis tests longer.
"""
from __future__ import annotations

import base64
import os
import binascii
import email
import email.policy
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from estafeta.core import mime8to7
from estafeta.core.mime8to7 import downgrade, encode_qp_line, header_8bit

_UNQ = re.compile(rb"=([0-9A-F]{2})")


def qp_decode(text: bytes) -> bytes:
    """A strict decoder: "=" at the end of a line is a soft break, =XX a byte, nothing
    else is special; a CR before the LF is part of the (hard) line ending."""
    out, cur = [], b""
    for line in text.split(b"\n"):
        cr = b""
        if line.endswith(b"\r"):
            line, cr = line[:-1], b"\r"
        if line.endswith(b"="):
            cur += _UNQ.sub(lambda m: bytes([int(m.group(1), 16)]), line[:-1])
            continue
        assert b"=" not in _UNQ.sub(b"", line), f"stray '=' in {line!r}"
        out.append(cur + _UNQ.sub(lambda m: bytes([int(m.group(1), 16)]), line) + cr)
        cur = b""
    assert cur == b"", "the text ended in a soft line break"
    return b"\n".join(out)


def check_lines(data: bytes) -> None:
    for line in data.split(b"\n"):
        assert len(line.rstrip(b"\r")) <= 76, f"line of {len(line)}: {line!r}"


# -- one line -----------------------------------------------------------------------

@given(st.binary(max_size=400))
def test_encode_qp_line_round_trip_and_shape(line):
    line = line.replace(b"\n", b"")
    enc = encode_qp_line(line)
    for i, x in enumerate(enc):
        assert x.isascii() and len(x) <= 76, x
        assert b"\r" not in x and b"\n" not in x
        if i < len(enc) - 1:
            assert x.endswith(b"="), enc
            assert not enc[i + 1].startswith(b"-"), "a continuation may look like a boundary"
        assert not x.endswith((b" ", b"\t")), "whitespace at the end of an encoded line"
    assert qp_decode(b"\n".join(enc)) == line
    assert binascii.a2b_qp(b"\n".join(enc)) == line


def test_encode_examples():
    assert encode_qp_line(b"caf\xe9 = ok ") == [b"caf=E9 =3D ok=20"]
    assert encode_qp_line(b"") == [b""]
    long = encode_qp_line(b"\xff" * 60)
    assert [len(x) for x in long] == [76, 76, 30] and long[0].endswith(b"=")


# -- whole messages -------------------------------------------------------------------

def test_seven_bit_message_is_returned_as_is():
    m = b"Subject: x\nContent-Transfer-Encoding: 8bit\n\nplain ascii\n"
    assert downgrade(m) is m


def test_plain_8bit_mime_message():
    m = (b"From: a@example.org\nMIME-Version: 1.0\nContent-Type: text/plain; charset=iso-8859-1\n"
         b"Content-Transfer-Encoding: 8bit\nSubject: x\n\nGr\xfc\xdfe aus K\xf6ln =\nline two\n")
    out = downgrade(m)
    assert out == (b"From: a@example.org\nMIME-Version: 1.0\nContent-Type: text/plain; charset=iso-8859-1\n"
                   b"Subject: x\nContent-Transfer-Encoding: quoted-printable\n\n"
                   b"Gr=FC=DFe aus K=F6ln =3D\nline two\n")
    msg = email.message_from_bytes(out, policy=email.policy.default)
    assert msg.get_content() == "Grüße aus Köln =\nline two\n"


def test_non_mime_message_gets_mime_headers():
    out = downgrade("Subject: x\n\nCafé\n".encode())
    assert out == (b"Subject: x\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n"
                   b"Content-Transfer-Encoding: quoted-printable\n\nCaf=C3=A9\n")
    out = downgrade(b"Subject: x\n\ncaf\xe9\n")
    assert b"charset=unknown-8bit" in out and out.endswith(b"\n\ncaf=E9\n")


def test_crlf_line_endings_are_kept():
    m = b"Subject: x\r\nContent-Transfer-Encoding: 8bit\r\n\r\ncaf\xe9\r\n" + b"\xe9" * 40 + b"\r\n"
    out = downgrade(m)
    assert out.isascii() and b"\r\n\r\n" in out
    head, body = out.split(b"\r\n\r\n", 1)
    assert head.endswith(b"Content-Transfer-Encoding: quoted-printable")
    assert b"\n" not in body.replace(b"\r\n", b""), "a soft line break without CR"
    assert qp_decode(body) == b"caf\xe9\r\n" + b"\xe9" * 40 + b"\r\n"


def test_multipart_converts_only_8bit_parts():
    b64 = b"Content-Type: image/png\nContent-Transfer-Encoding: base64\n\n" + \
        base64.encodebytes(bytes(range(200))).rstrip(b"\n")
    seven = b"Content-Type: text/plain\n\nonly ascii, long line " + b"y" * 100
    m = (b"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"=_b1\"\nContent-Transfer-Encoding: 8bit\n"
         b"\npreamble\n--=_b1\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n"
         + "naïve café\n".encode() + b"--=_b1\n" + b64 + b"\n--=_b1\n" + seven + b"\n--=_b1--\nepilogue\n")
    out = downgrade(m)
    assert out.isascii()
    assert b"\n" + b64 + b"\n" in out and b"\n" + seven + b"\n" in out, "untouched parts changed"
    assert b"preamble\n--=_b1\n" in out and out.endswith(b"--=_b1--\nepilogue\n")
    head = out.split(b"\n\n", 1)[0]
    assert head.count(b"Content-Transfer-Encoding") == 1 and head.endswith(b"Content-Transfer-Encoding: 7bit")
    msg = email.message_from_bytes(out, policy=email.policy.default)
    parts = list(msg.iter_parts())
    assert parts[0]["Content-Transfer-Encoding"] == "quoted-printable"
    assert parts[0].get_content() == "naïve café"      # the last LF belongs to the boundary
    assert parts[1].get_payload(decode=True) == bytes(range(200))


def test_nested_message_rfc822_and_digest():
    inner = "Subject: inner\nContent-Type: text/plain; charset=utf-8\n\nÜber\n".encode()
    m = (b"MIME-Version: 1.0\nContent-Type: multipart/digest; boundary=d\n\n--d\n\n" + inner +
         b"--d\nContent-Type: message/rfc822\nContent-Transfer-Encoding: 8bit\n\n" + inner + b"--d--\n")
    out = downgrade(m)
    assert out.isascii(), out
    assert out.count(b"Subject: inner\nContent-Type: text/plain; charset=utf-8\n"
                     b"Content-Transfer-Encoding: quoted-printable\n\n=C3=9Cber\n") == 2
    assert b"Content-Type: message/rfc822\nContent-Transfer-Encoding: 7bit\n\n" in out


def test_left_alone():
    # 8-bit in a base64 part (broken), in message/partial, in a header: nothing to do
    for m in (b"Content-Transfer-Encoding: base64\n\n\xe9\xe9\n",
              b"Content-Type: message/partial; id=x\n\nSubject: \xe9\n\n\xe9\n",
              b"Subject: caf\xe9\n\nascii\n",
              b"Content-Transfer-Encoding: x-uuencode\n\n\xe9\n"):
        assert downgrade(m) is m, m


def test_header_8bit():
    assert header_8bit("Subject: café\n\nx\n".encode())
    assert not header_8bit("Subject: x\n\ncafé\n".encode())
    assert not header_8bit("Subject: x\r\n\r\ncafé\n".encode())
    assert header_8bit(b"Subject: \xe9")


def test_deep_nesting_is_bounded():
    depth = mime8to7.MAX_DEPTH + 50
    m = b"".join(b"Content-Type: multipart/mixed; boundary=b%03d\n\n--b%03d\n" % (i, i) for i in range(depth))
    m += b"Content-Transfer-Encoding: 8bit\n\n\xe9\n"
    out = downgrade(m)        # no RecursionError; the part beyond the limit stays as it is
    assert out.endswith(b"\xe9\n")


def test_continuation_never_forms_a_boundary():
    line = b"\xe9" + b"a" * 73 + b"--b1--"
    m = b"Content-Type: multipart/mixed; boundary=b1\n\n--b1\nContent-Transfer-Encoding: 8bit\n\n" + line + b"\n--b1--\n"
    out = downgrade(m)
    assert out.count(b"\n--b1") == 2, out


# -- hypothesis: random multiparts ----------------------------------------------------

short_ascii = st.binary(max_size=60).map(lambda b: bytes(x & 0x7f for x in b if x & 0x7f not in (10, 13)))
# A CR before an LF is a line ending in the store (proto/smtp_client.message_wire_bytes):
# generated lines have CRs anywhere else.
lines_8bit = st.lists(st.binary(max_size=200).map(lambda b: b.replace(b"\n", b"").rstrip(b"\r")),
                      min_size=1, max_size=6)


@st.composite
def part(draw):
    kind = draw(st.sampled_from(["8bit", "none", "7bit", "base64", "qp", "ascii8"]))
    ctype = draw(st.sampled_from([b"text/plain; charset=iso-8859-1", b"text/html; charset=utf-8",
                                  b"application/octet-stream"]))
    head = b"Content-Type: " + ctype + b"\n"
    if kind in ("8bit", "none", "7bit"):
        body = b"\n".join(draw(lines_8bit))
        if kind != "none":
            head += b"Content-Transfer-Encoding: " + kind.encode() + b"\n"
        return kind, head, body, body
    if kind == "ascii8":           # declared 8bit, ASCII only: left alone
        body = b"\n".join(draw(st.lists(short_ascii, min_size=1, max_size=4)))
        return kind, head + b"Content-Transfer-Encoding: 8bit\n", body, body
    data = draw(st.binary(max_size=300))
    if kind == "base64":
        return kind, head + b"Content-Transfer-Encoding: base64\n", base64.encodebytes(data).rstrip(b"\n"), data
    enc = b"\n".join(encode_qp_line(data.replace(b"\n", b"")))
    return kind, head + b"Content-Transfer-Encoding: quoted-printable\n", enc, data.replace(b"\n", b"")


@settings(max_examples=int(os.environ.get("MIME_EXAMPLES", "150")), deadline=None)
@given(st.lists(part(), min_size=1, max_size=5), st.booleans())
def test_multipart_round_trip(parts, outer_8bit):
    b = b"=_bound.ary_42"
    m = b"MIME-Version: 1.0\nSubject: t\nContent-Type: multipart/mixed; boundary=\"" + b + b"\"\n"
    if outer_8bit:
        m += b"Content-Transfer-Encoding: 8bit\n"
    m += b"\nThis is a MIME message.\n"
    for _, head, body, _ in parts:
        m += b"--" + b + b"\n" + head + b"\n" + body + b"\n"
    m += b"--" + b + b"--\n"
    out = downgrade(m)
    if m.isascii():
        assert out is m
        return
    assert out.isascii(), "output is not 7-bit"
    check_lines(out)
    msg = email.message_from_bytes(out, policy=email.policy.compat32)
    got = msg.get_payload()
    assert len(got) == len(parts)
    segments = out.split(b"\n--" + b)      # preamble, "\n" + each part, "--\n"
    assert len(segments) == len(parts) + 2
    for k, ((kind, head, body, original), p) in enumerate(zip(parts, got)):
        payload = p.get_payload(decode=True)
        if kind in ("8bit", "none", "7bit") and not body.isascii():
            assert p["Content-Transfer-Encoding"] == "quoted-printable"
            assert p.get_all("Content-Transfer-Encoding") == ["quoted-printable"]
            assert payload == original
            # the strict decoder agrees with the email package
            enc = segments[k + 1].split(b"\n\n", 1)[1]
            assert qp_decode(enc) == original
        else:
            # untouched: its text is in the output byte for byte
            assert b"\n" + head + b"\n" + body + b"\n--" + b in out, kind
            assert payload == original or kind in ("7bit", "8bit", "none", "ascii8")
    if outer_8bit:
        assert msg["Content-Transfer-Encoding"] == "7bit"


@settings(max_examples=int(os.environ.get("MIME_EXAMPLES", "150")), deadline=None)
@given(st.binary(max_size=2000))
def test_single_part_round_trip(body):
    m = b"Subject: t\nMIME-Version: 1.0\nContent-Type: text/plain; charset=x-any\nContent-Transfer-Encoding: 8bit\n\n" + body
    out = downgrade(m)
    if m.isascii():
        assert out is m
        return
    assert out.isascii()
    check_lines(out)
    head, enc = out.split(b"\n\n", 1)
    assert head.endswith(b"\nContent-Transfer-Encoding: quoted-printable")
    assert qp_decode(enc) == body
