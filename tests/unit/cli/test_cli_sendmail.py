"""sendmail's pure parts: flag parsing, -i, -t header extraction, Bcc removal."""
import pytest

from estafeta.cli import sendmail as sm


def test_flags_postfix_style():
    o = sm.parse_args(["-t", "-i", "-f", "<alice@example.org>", "-F", "Alice A", "-N", "never", "-R", "hdrs",
                       "-C", "/etc/x", "bob@example.org, carol@example.org", "dave"])
    assert (o.mode, o.extract, o.ignore_dots, o.sender, o.full_name) == ("m", True, True, "alice@example.org", "Alice A")
    assert (o.notify, o.ret, o.config) == ("never", "hdrs", "/etc/x")
    assert o.recipients == ["bob@example.org", "carol@example.org", "dave"], f"got {o.recipients}"


@pytest.mark.parametrize("argv,want", [
    (["-oi"], True), (["-i"], True), (["-ti"], True), ([], False), (["-oem"], False)])
def test_ignore_dots(argv, want):
    assert sm.parse_args(argv + ["x"]).ignore_dots is want


def test_ignored_sendmail_flags_are_not_fatal():
    o = sm.parse_args(["-Am", "-B", "8BITMIME", "-m", "-n", "-U", "-oem", "-odb", "-L", "tag", "-h", "5",
                       "-O", "Timeout=1", "-X", "/tmp/log", "-G", "-bh", "x@y"])
    assert o.mode == "m" and o.recipients == ["x@y"]
    assert "-X/tmp/log" in o.ignored


@pytest.mark.parametrize("argv,mode", [
    (["-bp"], "p"), (["-bi"], "i"), (["-I"], "i"), (["-bd"], "d"), (["-bl"], "d"), (["-bs"], "s"),
    (["-bv"], "v"), (["-bm"], "m"), (["-q"], "q")])
def test_modes(argv, mode):
    assert sm.parse_args(argv).mode == mode


def test_program_names():
    assert sm.parse_args([], prog="mailq").mode == "p"
    assert sm.parse_args([], prog="newaliases").mode == "i"


@pytest.mark.parametrize("text,seconds", [("2h30m", 9000), ("15m", 900), ("90s", 90), ("1d", 86400), ("30", 1800),
                                          ("1w2d", 9 * 86400)])
def test_queue_interval(text, seconds):
    o = sm.parse_args(["-q" + text])
    assert o.interval == seconds, f"got {o.interval}, want {seconds}"


@pytest.mark.parametrize("arg,sel", [("-qIABC", ("I", "ABC")), ("-qRexample.org", ("R", "example.org")),
                                     ("-qSalice", ("S", "alice"))])
def test_queue_select(arg, sel):
    assert sm.parse_args([arg]).select == sel


@pytest.mark.parametrize("argv", [["-f", "-X/tmp/x"], ["-f-oQ/tmp"], ["-r", "-x"], ["-qfoo"], ["-qR"],
                                  ["-Z"], ["-f"], ["-bz"], ["-f", "a\nb"]])
def test_usage_errors(argv):
    with pytest.raises(sm.UsageError):
        sm.parse_args(argv)


def test_main_refuses_dash_sender(capsys):
    assert sm.main(["-f", "-X/tmp/x", "a@b"], prog="sendmail") == 64
    assert "bad sender" in capsys.readouterr().err


@pytest.mark.parametrize("data,dots,want", [
    (b"a\r\nb\r\n", False, b"a\nb\n"),
    (b"a\n.\nb\n", False, b"a\n"),
    (b"a\n.\nb\n", True, b"a\n.\nb\n"),
    (b".\n", False, b""),
    (b"a\n..\nb", False, b"a\n..\nb\n"),
    (b"a\n.", False, b"a\n"),
])
def test_read_message(data, dots, want):
    got = sm.read_message(data, dots)
    assert got == want, f"got {got!r}, want {want!r}"


HEAD = (b"From: a@example.org\nTo: Bob <bob@example.org>,\n carol@example.org\nCc: dave@example.org\n"
        b"Bcc: secret@example.org,\n\tother@example.org\nSubject: hi\n")


def test_extract_recipients():
    got = sm.extract_recipients(HEAD)
    want = ["bob@example.org", "carol@example.org", "dave@example.org", "secret@example.org", "other@example.org"]
    assert got == want, f"got {got}, want {want}"


def test_resent_headers_win():
    head = b"To: old@example.org\nResent-To: new@example.org\nResent-Bcc: hidden@example.org\n"
    assert sm.extract_recipients(head) == ["new@example.org", "hidden@example.org"]


def test_remove_bcc_with_continuation():
    got = sm.remove_bcc(HEAD)
    assert b"secret" not in got and b"other@" not in got
    assert b"Subject: hi\n" in got and b" carol@example.org\n" in got


def test_split_header_and_from():
    head, rest = sm.split_header(b"Subject: x\n\nbody\n")
    assert (head, rest) == (b"Subject: x\n", b"\nbody\n")
    assert sm.has_header(b"from: x\n", "from") and not sm.has_header(head, "from")
    assert sm.from_header('A "B"', "a@x") == b'From: "A \\"B\\"" <a@x>\n'
