"""The VRFY argument (RFC 5321 4.1.1.6, RFC 6531 3.7.4.2), checked as Postfix 3.7 does.

Owns the one question "is this VRFY argument an address Postfix would take?", asked
by the codec (smtp_server.py `_vrfy`) and nowhere else: VRFY is rare, and none of
this runs for other commands. Input is untrusted client text, already decoded from
UTF-8 and free of control characters but TAB (the codec refused the rest).

Postfix's vrfy_cmd (smtpd.c) splits the line into words (smtpd_token.c: `"..."` and
`<...>` keep their spaces), drops a last word SMTPUTF8 (when SMTPUTF8 is offered),
joins the rest with one space and gives that to extract_addr(): an outer `<>` and a
leading source route `@a:` are dropped, then the RFC 822 parser (tok822_parse.c)
must find exactly one non-empty address in it ("a b", "a,b", "<a@b> x" hold two;
"John Doe <a@b>", "a (comment)" and "g: a;" one). Outside of sendmail -bs (smtpd -S)
the address must also resolve (trivial-rewrite): its domain a valid host name
(labels of letters, digits, "-", "_", not all-numeric), an IPv4 or IPv6: literal,
and 8-bit only with SMTPUTF8. Anything else is 501 5.1.3, with a warning that
quotes the joined words. The local part is not checked, as in Postfix.
Next: smtp_server.py (the caller), replies.py (BAD_VRFY_ADDRESS).
"""
from __future__ import annotations

from .address import literal_ok

__all__ = ["words", "address_ok"]

_SPECIALS = frozenset('()<>@,;:\\".[]')


def words(arg: str) -> list[str]:
    """The words of a command's argument as Postfix's smtpd_token.c splits them: on
    spaces and TABs, but not inside `"..."` or `<...>` (which nest, with backslash
    escapes); "to:" and "from:" end a word."""
    out: list[str] = []
    cur: list[str] = []
    i, n = 0, len(arg)
    while i < n:
        c = arg[i]
        i += 1
        if c in " \t":
            if cur:
                out.append("".join(cur))
                cur = []
        elif c == "<" or c == '"':
            cur.append(c)
            stack = [">" if c == "<" else '"']
            while i < n:
                c = arg[i]
                i += 1
                cur.append(c)
                if c == "\\":
                    if i < n:
                        cur.append(arg[i])
                        i += 1
                elif c == stack[-1]:
                    stack.pop()
                    if not stack:
                        break
                elif c == '"':
                    stack.append('"')
                elif c == "<" and stack[-1] == ">":
                    stack.append(">")
        else:
            cur.append(c)
            if c == ":" and "".join(cur).lower() in ("to:", "from:"):
                out.append("".join(cur))
                cur = []
    if cur:
        out.append("".join(cur))
    return out


def address_ok(text: str, *, smtputf8: bool, resolve: bool = True) -> bool:
    """Whether the joined VRFY words `text` are one address Postfix's extract_addr()
    takes (REJECT_EMPTY_ADDR, not strict). `smtputf8`: the client gave SMTPUTF8
    (8-bit domains allowed); `resolve`: check the domain as smtpd does (not smtpd -S)."""
    if len(text) > 1 and text[0] == "<" and text[-1] == ">":
        text = text[1:-1]
    if text[:1] == "@" and ":" in text:          # deprecated source route
        text = text[text.index(":") + 1:]
    addresses = _addresses(_scan(text))
    if len(addresses) != 1:
        return False
    addr = addresses[0]
    if not "".join(value for _, value in addr):   # "", <>, "" quoted: no address
        return False
    return _resolves(addr, smtputf8) if resolve else True


# Token kinds: "atom", "qstring" (value unquoted), "domlit" (value with brackets),
# or the special character itself.
_Token = tuple[str, str]


def _scan(text: str) -> list[_Token]:
    """tok822_scan(): RFC 822 tokens; comments are left out (tok822_parse moves them
    aside: they are never part of an address)."""
    out: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t":
            i += 1
        elif c == "(" or c == '"' or c == "[":
            close = {"(": ")", '"': '"', "[": "]"}[c]
            depth, j, value = 1, i + 1, []
            while j < n:
                d = text[j]
                j += 1
                if d == "\\" and j < n:
                    value.append(text[j])
                    j += 1
                    continue
                if c == "(" and d == "(":
                    depth += 1
                elif d == close:
                    depth -= 1
                    if depth == 0:
                        break
                value.append(d)
            if c == '"':
                out.append(("qstring", "".join(value)))
            elif c == "[":
                out.append(("domlit", "[" + "".join(value) + "]"))
            i = j
        elif c in _SPECIALS and c != "\\":
            out.append((c, c))
            i += 1
        else:
            j = i
            while j < n and text[j] not in " \t" and (text[j] not in _SPECIALS or text[j] == "\\"):
                j += 2 if text[j] == "\\" else 1
            out.append(("atom", text[i:j]))
            i = j
    return out


def _addresses(tokens: list[_Token]) -> list[list[_Token]]:
    """tok822_parse()'s grouping, right to left: the token lists of the address forms
    it finds (a word right after a word, a `<route>` or a `;` starts another)."""
    DO_WORD, DO_GROUP = 1, 2
    toks: list[object] = [("head", "")] + list(tokens)       # index 0: sentinel
    right = len(toks)
    found: list[list[_Token]] = []

    def group(left: int, right: int, comma: bool) -> None:
        if right - left > 1:
            found.append(toks[left + 1:right])      # type: ignore[arg-type]
            toks[left + 1:right] = [(",", ",")] if comma else []

    state = DO_WORD
    tp = len(toks) - 1
    while tp > 0:
        kind = toks[tp][0]       # type: ignore[index]
        if kind == ";":
            group(tp, right, True)
            right = tp
            state = DO_GROUP | DO_WORD
        elif kind == ":" and state & DO_GROUP:
            group(tp, right, False)
            while tp > 0 and toks[tp][0] != ",":       # type: ignore[index]
                tp -= 1
            right = tp
            continue
        elif kind == ">":
            group(tp, right, True)
            right = tp
            while tp > 0 and toks[tp][0] != "<":       # type: ignore[index]
                tp -= 1
            group(tp, right, False)
            while tp > 0 and toks[tp][0] not in (">", ";", ",", ":"):   # the phrase
                tp -= 1
            right = tp
            state |= DO_WORD
            continue
        elif kind in ("atom", "qstring", "domlit"):
            if not state & DO_WORD and right - tp > 1:
                group(tp, right, True)
                right = tp + 1                      # the comma put in its place
            state &= ~DO_WORD
        elif kind == ",":
            group(tp, right, False)
            right = tp
            state |= DO_WORD
        else:
            state |= DO_WORD
        tp -= 1
    group(0, right, False)
    return found


def _resolves(addr: list[_Token], smtputf8: bool) -> bool:
    """trivial-rewrite's verdict on the domain (resolve.c) and smtpd_check_addr()'s
    8-bit rule: no "@" is an unqualified address (fine); a trailing dot is dropped."""
    ats = [i for i, (kind, _) in enumerate(addr) if kind == "@"]
    if not ats:
        return True
    domain = addr[ats[-1] + 1:]
    if domain and domain[-1][0] == "." and len(domain) > 1 and domain[-2][0] not in (".",):
        domain = domain[:-1]
    name = "".join(value for _, value in domain)
    if not name:
        return False
    if name[0] == "[":
        return name[-1] == "]" and literal_ok(name[1:-1])
    if not name.isascii():
        # Postfix converts a UTF-8 name to A-labels (IDNA) before checking it; here
        # its letters and digits stand for what the A-label would be.
        if not smtputf8:
            return False
        name = "".join(c if c.isascii() else "x" if c.isalnum() else "!" for c in name)
    return _hostname_ok(name)


def _hostname_ok(name: str) -> bool:
    """Postfix's valid_hostname()."""
    if len(name) > 255 or not name.replace(".", "").replace("-", "").replace("_", "").isalnum():
        return False
    labels = name.split(".")
    if any(not label or len(label) > 63 or label[0] == "-" or label[-1] == "-" for label in labels):
        return False
    return not name.replace(".", "").isdigit()       # all-numeric: an address, not a name
