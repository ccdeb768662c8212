"""The mail log: escaping of client text and Postfix-shaped lines."""
from __future__ import annotations

import os
import re

import pytest

from estafeta.core import maillog
from estafeta.core.maillog import MailLog, esc

LINE_RE = re.compile(r"^[A-Z][a-z]{2} [ 0-9]\d \d\d:\d\d:\d\d (\S+) (\S+)\[(\d+)\]: (.*)$")


@pytest.mark.parametrize("text, want", [
    ("plain text", "plain text"),
    ("a\nb", "a\\012b"),
    ("a\r\nb", "a\\015\\012b"),
    ("\0\x1b[31m", "\\000\\033[31m"),
    ("tab\there", "tab\\011here"),
    ("\x7f", "\\177"),
    ("\x85", "\\205"),
    ("\u2028", "?"),
    ("jösé", "jösé"),
    ("", ""),
])
def test_esc(text: str, want: str) -> None:
    got = esc(text)
    assert got == want, f"got {got!r}, want {want!r}"


def test_esc_limits_length() -> None:
    got = esc("x" * 500)
    assert got == "x" * 200, f"got {len(got)} chars, want 200"
    assert esc("x" * 20, limit=5) == "xxxxx"


def test_esc_output_is_one_printable_line() -> None:
    got = esc("".join(chr(i) for i in range(0x3000)), limit=0x3000)
    assert got.isprintable(), "escaped text still holds control characters"


def read_lines(path) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return f.read().splitlines()


def test_log_lines_are_postfix_shaped(tmp_path) -> None:
    path = tmp_path / "log" / "maillog"          # the directory is made on demand
    log = MailLog("estafeta/smtpd", path=str(path), stderr=False, hostname="mx.example.org")
    log.info("3F1A2B7C9: client=localhost[127.0.0.1]")
    log.warning("something odd")
    log.error("worse")
    log.fatal("the end")
    lines = read_lines(path)
    assert len(lines) == 4, f"got {lines}, want 4 lines"
    texts = []
    for line in lines:
        m = LINE_RE.match(line)
        assert m, f"got {line!r}, want 'Mon DD HH:MM:SS host prog[pid]: text'"
        host, prog, pid, text = m.groups()
        assert (host, prog, int(pid)) == ("mx", "estafeta/smtpd", os.getpid()), f"got {(host, prog, pid)}"
        texts.append(text)
    want = ["3F1A2B7C9: client=localhost[127.0.0.1]", "warning: something odd", "error: worse", "fatal: the end"]
    assert texts == want, f"got {texts}, want {want}"
    assert (os.stat(path).st_mode & 0o777) == 0o640


def test_log_appends_and_reopens(tmp_path) -> None:
    path = tmp_path / "maillog"
    path.write_text("old line\n")
    log = MailLog("estafeta/qmgr", path=str(path), stderr=False, hostname="mx")
    log.info("one")
    os.rename(path, tmp_path / "maillog.1")       # logrotate
    log.info("two")                               # still the old file
    log.reopen()
    log.info("three")
    old, new = read_lines(tmp_path / "maillog.1"), read_lines(path)
    assert [line.rsplit(": ", 1)[1] for line in old[1:]] == ["one", "two"], f"got {old}"
    assert old[0] == "old line"
    assert [line.rsplit(": ", 1)[1] for line in new] == ["three"], f"got {new}"


def test_log_to_stderr(capfd) -> None:
    log = MailLog("estafeta/cleanup", stderr=True, hostname="mx")
    log.info("hello")
    err = capfd.readouterr().err
    assert LINE_RE.match(err.rstrip("\n")), f"got {err!r}"
    assert err.endswith("estafeta/cleanup[%d]: hello\n" % os.getpid())


def test_exception_logs_traceback_lines(tmp_path) -> None:
    path = tmp_path / "maillog"
    log = MailLog("estafeta/qmgr", path=str(path), stderr=False, hostname="mx")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("unexpected error")
    lines = read_lines(path)
    assert lines[0].endswith("warning: unexpected error")
    assert all(": warning:   " in line for line in lines[1:]), f"got {lines}"
    assert lines[-1].endswith("RuntimeError: boom")


def test_unwritable_log_path_warns_but_does_not_fail(tmp_path, capfd) -> None:
    (tmp_path / "file").write_text("")
    log = MailLog("estafeta", path=str(tmp_path / "file" / "maillog"), stderr=False, hostname="mx")
    log.info("lost")                               # goes nowhere, raises nothing
    assert "cannot open" in capfd.readouterr().err


def test_setup_configures_the_process_log(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(maillog, "log", MailLog(stderr=False))
    log = maillog.setup("estafeta/virtual", path=str(tmp_path / "maillog"), stderr=False,
                        hostname="box.example.org")
    assert log is maillog.log
    log.info("x")
    got = read_lines(tmp_path / "maillog")[0]
    assert " box estafeta/virtual[" in got, f"got {got!r}"


def test_lines_of_one_loop_turn_go_out_in_one_write(tmp_path, monkeypatch) -> None:
    import asyncio
    import os as _os
    from estafeta.core import maillog as ml
    path = tmp_path / "maillog"
    log = ml.MailLog("estafeta/smtpd", path=str(path), stderr=False, hostname="mx")
    writes = []
    real_write = _os.write

    def counting_write(fd, data):
        if fd == log.fd:
            writes.append(bytes(data))
        return real_write(fd, data)
    monkeypatch.setattr(ml.os, "write", counting_write)

    async def main():
        log.info("one")
        log.info("two")
        assert path.read_text() == "", "lines must wait for the end of the loop turn"
        await asyncio.sleep(0)
    asyncio.run(main())
    assert len(writes) == 1, f"got {len(writes)} writes, want 1"
    lines = path.read_text().splitlines()
    assert [l.split(": ", 1)[1] for l in lines] == ["one", "two"], f"got {lines}"
    log.info("no loop: written at once")
    assert len(writes) == 2
