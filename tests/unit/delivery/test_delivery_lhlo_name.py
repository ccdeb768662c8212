"""lmtp_lhlo_name: the LMTP client's LHLO name (Postfix has no lmtp_helo_name)."""
from __future__ import annotations

import asyncio

from estafeta.config.main_cf import MainConfig, check
from estafeta.delivery.smtp import SmtpAgent, parse_nexthop


async def _hello_line(tmp_path, settings: str) -> bytes:
    """The first command an LMTP agent sends to a fake server on a unix socket."""
    path = str(tmp_path / "lmtp.sock")
    seen: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 fake LMTP\r\n")
        await writer.drain()
        seen.append(await reader.readline())
        writer.write(b"250-fake\r\n250 PIPELINING\r\n")
        await writer.drain()
        await reader.read()
        writer.close()

    server = await asyncio.start_unix_server(serve, path)
    agent = SmtpAgent(MainConfig.parse("myhostname = host.example\n" + settings), lmtp=True)
    try:
        s = await agent._open(parse_nexthop(f"unix:{path}", 24, True), path, path, False)
        s.abort()
    finally:
        await agent.close()
        server.close()
        await server.wait_closed()
    return seen[0]


def test_lmtp_sends_lmtp_lhlo_name_not_lmtp_helo_name(tmp_path) -> None:
    got = asyncio.run(_hello_line(tmp_path, "lmtp_lhlo_name = lhlo.example\nlmtp_helo_name = helo.example\n"
                                            "smtp_helo_name = smtp.example\n"))
    assert got == b"LHLO lhlo.example\r\n", got


def test_lmtp_lhlo_name_defaults_to_myhostname(tmp_path) -> None:
    got = asyncio.run(_hello_line(tmp_path, ""))
    assert got == b"LHLO host.example\r\n", got


def test_smtp_keeps_smtp_helo_name() -> None:
    cfg = MainConfig.parse("myhostname = host.example\nsmtp_helo_name = smtp.example\nlmtp_lhlo_name = x.example\n")
    assert SmtpAgent(cfg).helo_name == "smtp.example"


def test_lmtp_helo_name_is_ignored_with_a_warning() -> None:
    cfg = MainConfig.parse("lmtp_helo_name = helo.example\nlmtp_lhlo_name = lhlo.example\n", "/etc/estafeta/main.cf")
    assert check(cfg) == ["/etc/estafeta/main.cf, line 1: lmtp_helo_name is not used: "
                          "the LMTP client sends lmtp_lhlo_name: ignored"]
