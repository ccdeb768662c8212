"""Loads smtp-source cannot make: open-loop overload, and many idle sessions.

overload: starts SMTP transactions at a fixed rate (open loop: arrivals do not wait
for the server), each one connect/greeting/EHLO/MAIL/RCPT/DATA/QUIT with a 1 KB body,
and counts greetings by code and latency, messages accepted (250 after the dot),
messages refused with 4xx/5xx, and client-side errors/timeouts. Outstanding
transactions are capped (--max-outstanding); an arrival over the cap is counted as
"not started" rather than queued, so the offered rate stays honest. Run as its own
process (python bench/loadgen.py overload ...), prints one JSON object.

idle: (function, used in-process) opens N sessions, reads each banner, and holds them.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time


async def read_reply(r: asyncio.StreamReader) -> int:
    while True:
        line = await r.readline()
        if not line:
            raise ConnectionError("closed")
        if len(line) < 4 or line[3:4] != b"-":
            return int(line[:3])


class Stats(dict):
    def add(self, k: str, n: int = 1) -> None:
        self[k] = self.get(k, 0) + n


async def transaction(host, port, body: bytes, st: Stats, lat: list, timeout: float, rcpt: str) -> None:
    t0 = time.monotonic()
    w = None
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        code = await asyncio.wait_for(read_reply(r), timeout)
        g = time.monotonic() - t0
        lat.append(g)
        if code != 220:
            st.add(f"greeting_{code // 100}xx")
            return
        if g > 1.0:
            st.add("greeting_slow_over_1s")

        async def cmd(line: bytes) -> int:
            w.write(line)
            return await asyncio.wait_for(read_reply(r), timeout)

        for line, want in ((b"EHLO load.bench.invalid\r\n", 250), (b"MAIL FROM:<sender@bench.invalid>\r\n", 250),
                           (f"RCPT TO:<{rcpt}>\r\n".encode(), 250), (b"DATA\r\n", 354)):
            code = await cmd(line)
            if code != want:
                st.add(f"refused_{code // 100}xx")
                return
        w.write(body)
        code = await asyncio.wait_for(read_reply(r), timeout)
        if code == 250:
            st.add("accepted")
        else:
            st.add(f"refused_{code // 100}xx")
            return
        w.write(b"QUIT\r\n")
        try:
            await asyncio.wait_for(read_reply(r), timeout)
        except Exception:
            pass
    except asyncio.TimeoutError:
        st.add("client_timeout")
    except (ConnectionError, OSError):
        st.add("connection_error")
    finally:
        if w is not None:
            w.close()


async def overload(host: str, port: int, rate: float, secs: float, size: int, cap: int, timeout: float,
                   rcpt: str) -> dict:
    line = b"X" * 78 + b"\r\n"
    body = b"Subject: overload\r\n\r\n" + line * max(1, size // len(line)) + b".\r\n"
    st, lat, tasks = Stats(), [], set()
    t0 = time.monotonic()
    started = 0
    while True:
        now = time.monotonic() - t0
        if now >= secs:
            break
        due = int(now * rate) - started
        for _ in range(due):
            started += 1
            if len(tasks) >= cap:
                st.add("not_started_over_cap")
                continue
            t = asyncio.ensure_future(transaction(host, port, body, st, lat, timeout, rcpt))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
        await asyncio.sleep(0.005)
    offered_secs = time.monotonic() - t0
    if tasks:
        await asyncio.wait(tasks, timeout=timeout * 7)
    lat.sort()
    q = (lambda p: round(lat[min(len(lat) - 1, int(p * len(lat)))], 4) if lat else None)
    return {"target_rate": rate, "attempted": started, "offered_rate": round(started / offered_secs, 1),
            "secs": round(offered_secs, 2), "greeting_p50_s": q(0.5), "greeting_p99_s": q(0.99),
            "greeting_max_s": round(lat[-1], 4) if lat else None, **st}


async def hold_idle(host: str, port: int, n: int, batch: int = 200, timeout: float = 30.0):
    """Open n sessions, read each banner; returns (writers, stats). Caller closes."""
    writers, st = [], Stats()

    async def one():
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
            code = await asyncio.wait_for(read_reply(r), timeout)
            st.add("banner_220" if code == 220 else f"banner_{code}")
            if code == 220:
                writers.append(w)
            else:
                w.close()
        except Exception as e:
            st.add(f"error_{type(e).__name__}")

    for i in range(0, n, batch):
        await asyncio.gather(*(one() for _ in range(min(batch, n - i))))
    return writers, st


async def banner_latency(host: str, port: int, timeout: float = 5.0) -> float | None:
    t0 = time.monotonic()
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        code = await asyncio.wait_for(read_reply(r), timeout)
        dt = time.monotonic() - t0
        w.close()
        return dt if code == 220 else None
    except Exception:
        return None


def raise_nofile(n: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, n)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    o = sub.add_parser("overload")
    o.add_argument("port", type=int)
    o.add_argument("--rate", type=float, required=True)
    o.add_argument("--secs", type=float, default=20)
    o.add_argument("--size", type=int, default=1024)
    o.add_argument("--max-outstanding", type=int, default=2000)
    o.add_argument("--timeout", type=float, default=30)
    o.add_argument("--rcpt", default="rcpt@example.invalid")
    a = p.parse_args()
    raise_nofile(a.max_outstanding + 1000)
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    res = asyncio.run(overload("127.0.0.1", a.port, a.rate, min(a.secs, 600), a.size, a.max_outstanding,
                               a.timeout, a.rcpt))
    json.dump(res, sys.stdout)
    print()


if __name__ == "__main__":
    main()
