"""Maildir delivery: tmp/ then new/, unique names, loop detection, temporary failures."""
from __future__ import annotations

import os

import pytest

from estafeta.core import atomic
from estafeta.core.errors import PermFail, TempFail
from estafeta.delivery.maildir import check_loop, deliver_maildir, ensure_maildir


def has_tmpfile(directory: str) -> bool:
    fd = atomic.open_unnamed(directory)
    if fd >= 0:
        os.close(fd)
    return fd >= 0


def test_deliver_writes_prefix_and_chunks_into_new(tmp_path) -> None:
    box = str(tmp_path / "Maildir")
    name = deliver_maildir(box, b"Delivered-To: bob@example.org\n", [b"Subject: x\n", b"\n", b"body\n"])
    assert sorted(os.listdir(box)) == ["cur", "new", "tmp"]
    assert os.listdir(os.path.join(box, "new")) == [name]
    assert os.listdir(os.path.join(box, "tmp")) == [], "file left in tmp/"
    assert os.listdir(os.path.join(box, "cur")) == []
    with open(os.path.join(box, "new", name), "rb") as f:
        got = f.read()
    want = b"Delivered-To: bob@example.org\nSubject: x\n\nbody\n"
    assert got == want, f"got {got!r}, want {want!r}"
    assert "/" not in name and ":" not in name, f"got name {name!r}"
    assert f"P{os.getpid()}Q" in name


def test_unnamed_file_is_linked_into_new_and_nothing_stays_in_tmp(tmp_path) -> None:
    box = str(tmp_path / "Maildir")
    ensure_maildir(box)
    if not has_tmpfile(os.path.join(box, "tmp")):
        pytest.skip("no O_TMPFILE on this file system")
    seen = []
    real = atomic.link_fd

    def spy(fd, path):
        seen.append((os.listdir(os.path.join(box, "tmp")), path))
        real(fd, path)

    atomic.link_fd, saved = spy, atomic.link_fd
    try:
        name = deliver_maildir(box, b"P\n", [b"body\n"])
    finally:
        atomic.link_fd = saved
    assert seen == [([], os.path.join(box, "new", name))], f"got {seen}: want one link from an unnamed file"
    with open(os.path.join(box, "new", name), "rb") as f:
        assert f.read() == b"P\nbody\n"


def test_deliver_into_existing_maildir_without_sync(tmp_path) -> None:
    box = str(tmp_path / "Maildir")
    ensure_maildir(box)
    name = deliver_maildir(box, b"", [memoryview(b"abc"), bytearray(b"def")], sync=False)
    with open(os.path.join(box, "new", name), "rb") as f:
        assert f.read() == b"abcdef"


def test_many_deliveries_get_unique_names(tmp_path) -> None:
    box = str(tmp_path / "Maildir")
    names = [deliver_maildir(box, b"", [b"m%d\n" % i], sync=False) for i in range(500)]
    assert len(set(names)) == 500, f"got {len(set(names))} unique names, want 500"
    assert len(os.listdir(os.path.join(box, "new"))) == 500
    assert os.listdir(os.path.join(box, "tmp")) == []


def test_large_message(tmp_path) -> None:
    box = str(tmp_path / "Maildir")
    chunk = bytes(range(256)) * 4096
    name = deliver_maildir(box, b"P\n", [chunk] * 8, sync=False)
    assert os.path.getsize(os.path.join(box, "new", name)) == 2 + len(chunk) * 8


def test_file_in_the_way_is_temporary(tmp_path) -> None:
    (tmp_path / "Maildir").write_text("not a directory")
    with pytest.raises(TempFail) as e:
        deliver_maildir(str(tmp_path / "Maildir"), b"", [b"x"])
    assert e.value.temporary and e.value.dsn.startswith("4."), f"got dsn {e.value.dsn}, want 4.x.x"


def test_file_in_the_way_of_a_parent_is_temporary(tmp_path) -> None:
    (tmp_path / "users").write_text("")
    with pytest.raises(TempFail):
        deliver_maildir(str(tmp_path / "users" / "bob"), b"", [b"x"])


def test_file_in_the_way_of_new_is_temporary(tmp_path) -> None:
    box = tmp_path / "Maildir"
    box.mkdir()
    (box / "new").write_text("")
    with pytest.raises(TempFail):
        deliver_maildir(str(box), b"", [b"x"])


@pytest.mark.parametrize("unnamed", [False, True], ids=["named-tmp", "o_tmpfile"])
def test_rename_failure_is_temporary_and_cleans_tmp(tmp_path, monkeypatch, unnamed: bool) -> None:
    # The last step that names the file in new/ fails: rename(2) of the named file in
    # tmp/, or linkat(2) of the unnamed one. Nothing may be left in either.
    box = str(tmp_path / "Maildir")
    ensure_maildir(box)
    if unnamed and not has_tmpfile(os.path.join(box, "tmp")):
        pytest.skip("no O_TMPFILE on this file system")
    monkeypatch.setattr(atomic, "_TMPFILE", unnamed)

    def broken_rename(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("estafeta.delivery.maildir.os.rename", broken_rename)
    monkeypatch.setattr(atomic, "link_fd", broken_rename)
    with pytest.raises(TempFail) as e:
        deliver_maildir(box, b"", [b"x"], sync=False)
    monkeypatch.undo()
    assert not isinstance(e.value, PermFail)
    assert "No space left" in e.value.reason, f"got {e.value.reason!r}"
    assert os.listdir(os.path.join(box, "tmp")) == [], "file left in tmp/"
    assert os.listdir(os.path.join(box, "new")) == []


# --- check_loop -----------------------------------------------------------------------
def test_check_loop_detects_own_delivered_to() -> None:
    head = b"Received: from x\nDelivered-To: Bob@Example.ORG\nSubject: s\n\nbody\n"
    with pytest.raises(PermFail) as e:
        check_loop(head, "bob@example.org")
    assert e.value.dsn == "5.4.6", f"got {e.value.dsn}, want 5.4.6"
    assert "loop" in e.value.reason


@pytest.mark.parametrize("head", [
    b"Delivered-To: alice@example.org\nSubject: s\n\nbody\n",
    b"Subject: s\n\nDelivered-To: bob@example.org\n",          # in the body: not a header
    b"X-Delivered-To: bob@example.org\n\n",
    b"Delivered-To: bob@example.org.evil\n\n",
    b"",
])
def test_check_loop_no_loop(head: bytes) -> None:
    check_loop(head, "bob@example.org")


def test_check_loop_header_spacing() -> None:
    with pytest.raises(PermFail):
        check_loop(b"DELIVERED-TO:bob@example.org  \n\n", "bob@example.org")


def test_short_writes_are_continued(tmp_path, monkeypatch) -> None:
    real_write = os.write

    def short_write(fd, data):
        return real_write(fd, bytes(data[:3]))

    box = str(tmp_path / "Maildir")
    ensure_maildir(box)
    monkeypatch.setattr("estafeta.delivery.maildir.os.write", short_write)
    name = deliver_maildir(box, b"Return-Path: <a@b>\n", [b"Subject: s\n\nbody\n"], sync=False)
    monkeypatch.undo()
    with open(os.path.join(box, "new", name), "rb") as f:
        got = f.read()
    want = b"Return-Path: <a@b>\nSubject: s\n\nbody\n"
    assert got == want, f"got {got!r}, want {want!r}"


# --- the fsync of new/ is shared by concurrent deliveries -------------------------------
def test_concurrent_deliveries_share_the_fsync_of_new(tmp_path, monkeypatch) -> None:
    import threading
    import time as _time

    from estafeta.delivery import maildir
    from estafeta.queue import store
    box = str(tmp_path / "Maildir")
    ensure_maildir(box)
    lock = threading.Lock()
    rounds: list[tuple[float, float]] = []          # (start, end) of each fsync of new/

    def slow_fsync_dir(path: str) -> None:
        assert path == os.path.join(box, "new"), f"fsync of {path}, want new/"
        start = _time.monotonic()
        _time.sleep(0.05)
        with lock:
            rounds.append((start, _time.monotonic()))

    monkeypatch.setattr(store, "fsync_dir", slow_fsync_dir)
    monkeypatch.setattr(maildir, "_syncers", {})
    linked: dict[str, float] = {}                   # name -> when its link was made
    real_link = atomic.link_fd

    def timed_link(fd, path):
        real_link(fd, path)
        with lock:
            linked[os.path.basename(path)] = _time.monotonic()
    monkeypatch.setattr(atomic, "link_fd", timed_link)
    monkeypatch.setattr(atomic, "_TMPFILE", has_tmpfile(os.path.join(box, "tmp")))
    done: dict[str, float] = {}

    def one(i: int) -> None:
        name = deliver_maildir(box, b"", [b"m%d\n" % i])
        with lock:
            done[name] = _time.monotonic()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(done) == 12 and len(os.listdir(os.path.join(box, "new"))) == 12
    assert rounds, "no fsync of new/ at all"
    assert len(rounds) < 12, f"got {len(rounds)} fsyncs of new/ for 12 concurrent deliveries: not shared"
    if linked:                                      # O_TMPFILE path: check the promise
        for name, returned in done.items():
            assert any(start >= linked[name] and end <= returned for start, end in rounds), (
                f"{name} returned before an fsync of new/ that started after its link")
