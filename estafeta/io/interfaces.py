"""This machine's own network addresses, for mail loop detection (Postfix's
own_inet_addr: inet_interfaces = all means every address of every interface).

On Linux, read from /proc (readable by any user, so this works after a service has
dropped its privileges): IPv4 addresses are the "/32 host LOCAL" entries of
/proc/net/fib_trie, IPv6 addresses the lines of /proc/net/if_inet6. Elsewhere, or
when /proc cannot be read, the loopback addresses and those the host name resolves
to locally. The parsers are pure functions of the file text, for the tests.
Next: delivery/smtp.py (MX pointing back to this machine).
"""
from __future__ import annotations

import ipaddress
import socket

LOOPBACK = frozenset({"127.0.0.1", "::1"})


def parse_fib_trie(text: str) -> set[str]:
    """IPv4 addresses of the local interfaces: an address line ("|-- 192.0.2.2")
    followed by "/32 host LOCAL". A "/8 host LOCAL" route (127.0.0.0) is no address."""
    out: set[str] = set()
    last = ""
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("|-- "):
            last = s[4:].strip()
        elif s.startswith("/32 host LOCAL") and last:
            out.add(last)
    return out


def parse_if_inet6(text: str) -> set[str]:
    """IPv6 addresses: the first column, 32 hex digits."""
    out: set[str] = set()
    for line in text.splitlines():
        word = line.split()[0] if line.split() else ""
        if len(word) == 32:
            try:
                out.add(str(ipaddress.IPv6Address(int(word, 16))))
            except ValueError:
                continue
    return out


def local_addresses() -> frozenset[str]:
    """Every address of this machine's interfaces, as normalised text."""
    out: set[str] = set()
    try:
        with open("/proc/net/fib_trie", encoding="ascii", errors="replace") as f:
            out |= parse_fib_trie(f.read())
    except OSError:
        pass
    try:
        with open("/proc/net/if_inet6", encoding="ascii", errors="replace") as f:
            out |= parse_if_inet6(f.read())
    except OSError:
        pass
    if not out:
        out |= LOOPBACK
        try:
            for info in socket.getaddrinfo(socket.gethostname(), None, proto=socket.IPPROTO_TCP):
                out.add(normalise(str(info[4][0])))
        except OSError:
            pass
    return frozenset(out)


def normalise(addr: str) -> str:
    """"::ffff:192.0.2.1" -> "192.0.2.1", "[::1]" -> "::1", zone ids dropped;
    anything that is no address comes back as it was."""
    a = addr.strip().strip("[]").split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(a)
    except ValueError:
        return addr
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        return str(ip.ipv4_mapped)
    return str(ip)
