"""VRFY argument checks of the codec (proto/vrfy.py via ServerConnection._vrfy):
replies as Postfix 3.7's smtpd gave them for the same lines (seen on the wire,
tests/interop/test_disconnect_postfix.py compares the live ones), but 252 with our
generic text instead of the client's argument."""
from __future__ import annotations

import pytest

from estafeta.proto import replies as R
from estafeta.proto.events import BadCommand, Vrfy
from estafeta.proto.smtp_server import DEFAULT_MAIL_PARAMS, ServerConnection
from estafeta.proto.vrfy import words

OK, BAD, SYNTAX = "252", "501 5.1.3", "501 5.5.4"

# argument -> Postfix 3.7's reply (smtputf8_enable = yes)
CASES = {
    "root": OK, "  root  ": OK, "Root SMTPUTF8": OK, "root smtputf8": OK,
    "": SYNTAX, "   ": SYNTAX, "\t": SYNTAX, "SMTPUTF8": SYNTAX, "SMTPUTF8 SMTPUTF8": OK,
    "a b": BAD, "a\tb": BAD, "a  b": BAD, "<>": BAD, "<a b>": BAD, "a b SMTPUTF8": BAD,
    "a@b SMTPUTF8 SMTPUTF8": BAD, '""': BAD, '<"">': BAD, "(comment)": BAD, "@": BAD, "<@>": BAD,
    "<a@b>": OK, "a@b": OK, '"a b"@b': OK, '<"a b"@b>': OK, '"a"@b': OK, '"a  b"': OK, '"a b" SMTPUTF8': OK,
    "a@b SMTPUTF8": OK, "<a@b> SMTPUTF8": OK, "ü@b": OK, "a@ü.de": BAD, "a@ü.de SMTPUTF8": OK,
    "<a@b> foo": BAD, "<a@b>x": BAD, "x<a@b>": OK, "John Doe <a@b>": OK, "<<a@b>>": OK, "<a@b": OK,
    "a@b>": OK, "<a@b><c@d>": BAD, "a,b": BAD, "a@b,c@d": BAD, "a;b": BAD, "a:b": OK, "a:b;": OK,
    "g: a@b, c@d;": BAD, "g:;": BAD, "<a@b>,": OK, ",a@b": OK, "a@b c@d": BAD,
    "<@x:a@b>": OK, "@x:a@b": OK, "@b": OK, "a@": BAD, "a@b:c": BAD,
    "a@[1.2.3.4]": OK, "a@[1.2.3]": BAD, "a@[x]": BAD, "a@[IPv6:::1]": OK, "a@[ipv6:::1]": OK,
    "a@[1.2.3.4]x": BAD, "[1.2.3.4]": OK,
    "a@b..c": BAD, "a@.b": BAD, "a@-b": BAD, "a@b-": BAD, "a@b.": OK, "a@b_c": OK, "a@1.2.3.4": BAD,
    "a@123": BAD, "a@b.123": OK, "a@xn--bcher-kva.de": OK, "a@b.c.d": OK, "a@b@c": OK, '"a@b"': OK,
    "a(comment)@b": OK, "a (comment)": OK, "a(b c)": OK, "a@b (comment)": OK, '"unterminated': OK,
    '"a b': OK, "a\\\\b": OK, "a.b": OK, "a..b": OK, ".a@b": OK, "a.@b": OK, "a%b@c": OK, "a!b": OK,
    "a" * 400: OK, "a@" + "a" * 68 + ".de": BAD, "a@" + "b" * 300 + ".de": BAD,
}


def vrfy(arg: str, **options) -> str:
    conn = ServerConnection("mx.test", **options)
    conn.receive_data(b"HELO c\r\n")
    conn.next_event()
    conn.send(R.helo_reply("mx.test"))
    conn.receive_data(f"VRFY {arg}\r\n".encode())
    e = conn.next_event()
    if isinstance(e, BadCommand):
        assert e.command == "vrfy", f"{arg!r}: counted under {e.command!r}, want vrfy"
        return f"{e.reply.code} {e.reply.enhanced}"
    assert isinstance(e, Vrfy), f"{arg!r}: got {e!r}"
    return "252"


@pytest.mark.parametrize("arg", list(CASES), ids=[repr(a)[:40] for a in CASES])
def test_vrfy_argument_as_postfix(arg: str) -> None:
    got = vrfy(arg)
    assert got == CASES[arg], f"VRFY {arg!r}: got {got}, want {CASES[arg]}"


def test_bad_address_reply_and_logged_text() -> None:
    conn = ServerConnection("mx.test")
    conn.receive_data(b"HELO c\r\nVRFY a\t  b  SMTPUTF8\r\n")
    conn.next_event()
    conn.send(R.helo_reply("mx.test"))
    e = conn.next_event()
    assert isinstance(e, BadCommand) and e.reply is R.BAD_VRFY_ADDRESS, f"got {e!r}"
    assert conn.send(e.reply) == b"501 5.1.3 Bad recipient address syntax\r\n"
    assert conn.vrfy_refused == "a b", f"got {conn.vrfy_refused!r}, want 'a b' (Postfix's warning text)"


def test_vrfy_event_carries_joined_words() -> None:
    conn = ServerConnection("mx.test")
    conn.receive_data(b"HELO c\r\nVRFY  John\t Doe  <a@b>  smtputf8\r\n")
    conn.next_event()
    conn.send(R.helo_reply("mx.test"))
    e = conn.next_event()
    assert e == Vrfy("John Doe <a@b>"), f"got {e!r}"


def test_disabled_before_any_syntax_check() -> None:
    for arg in ("", "a b", "<>", "root"):
        got = vrfy(arg, vrfy=False)
        assert got == "502 5.5.1", f"VRFY {arg!r} with disable_vrfy_command: got {got}, want 502 5.5.1"


def test_without_smtputf8_the_word_is_part_of_the_address() -> None:
    params = DEFAULT_MAIL_PARAMS - {"SMTPUTF8"}        # smtputf8_enable = no, or discarded
    for arg, want in (("root SMTPUTF8", BAD), ("a@ü.de", BAD), ("", SYNTAX), ("root", OK)):
        got = vrfy(arg, mail_params=params)
        assert got == want, f"VRFY {arg!r} without SMTPUTF8: got {got}, want {want}"


def test_stand_alone_does_not_resolve_the_domain() -> None:
    # Postfix's sendmail -bs (smtpd -S) skips smtpd_check_addr: seen on the wire.
    for arg, want in (("a@b..c", OK), ("a@ü.de", OK), ("a@1.2.3.4", OK), ("a@[x]", OK), ("a@", OK),
                      ("a b", BAD), ("<>", BAD), ('""', BAD), ("", SYNTAX), ("root SMTPUTF8", OK)):
        got = vrfy(arg, vrfy_resolve=False)
        assert got == want, f"sendmail -bs VRFY {arg!r}: got {got}, want {want}"


def test_words_keep_quotes_and_brackets() -> None:
    for arg, want in (('a "b  c" d', ["a", '"b  c"', "d"]), ("<a  b> c", ["<a  b>", "c"]),
                      ('<"x>" y> z', ['<"x>" y>', "z"]), ("to:x", ["to:", "x"]), ('"a\\" b"', ['"a\\" b"']),
                      ("\t a \t", ["a"])):
        got = words(arg)
        assert got == want, f"words({arg!r}): got {got}, want {want}"

