"""delivery/smtp.py: the message is read on the loop when small, in a thread when not."""
from __future__ import annotations

from estafeta.delivery import smtp


def test_read_small_and_large(tmp_path) -> None:
    p = tmp_path / "qf"
    head = b"ENVELOPE\n"
    p.write_bytes(head + b"m" * 100)
    assert smtp._read_small(str(p), len(head)) == b"m" * 100
    p.write_bytes(head + b"m" * (smtp.SMALL_READ + 1))
    assert smtp._read_small(str(p), len(head)) is None
    assert smtp._read_message(str(p), len(head)) == b"m" * (smtp.SMALL_READ + 1)
