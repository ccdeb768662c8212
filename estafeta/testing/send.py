"""Send one message from stdin over SMTP: `python -m estafeta.testing.send RCPT [HOST:PORT]`.

A tiny client for `make run`'s hint on machines without swaks.
"""
from __future__ import annotations

import smtplib
import sys


def main() -> int:
    if len(sys.argv) < 2:
        print("usage: python -m estafeta.testing.send RCPT [HOST:PORT] < message", file=sys.stderr)
        return 64
    rcpt = sys.argv[1]
    host, _, port = (sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1:2525").rpartition(":")
    body = sys.stdin.buffer.read().replace(b"\r\n", b"\n")
    first = body.split(b"\n", 1)[0]
    if b":" not in first:                      # plain text: give it a header
        body = b"Subject: test message\n\n" + body
    body = body.replace(b"\n", b"\r\n")
    with smtplib.SMTP(host, int(port)) as s:
        s.sendmail("you@localhost", [rcpt], body)
    print(f"sent to {rcpt}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
