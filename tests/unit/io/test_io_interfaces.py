"""io/interfaces.py: this machine's addresses from /proc/net/fib_trie and if_inet6."""
from __future__ import annotations

from estafeta.io.interfaces import local_addresses, normalise, parse_fib_trie, parse_if_inet6

FIB_TRIE = """\
Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
     +-- 192.0.2.0/24 2 0 2
           |-- 192.0.2.0
              /24 link UNICAST
           |-- 192.0.2.2
              /32 host LOCAL
           |-- 192.0.2.9
              /32 host LOCAL
Local:
  +-- 0.0.0.0/0 3 0 5
           |-- 127.0.0.1
              /32 host LOCAL
"""
IF_INET6 = """\
fd000000000000000000000000000002 04 40 00 82     eth0
00000000000000000000000000000001 01 80 10 80       lo
fe8000000000000000fc00fffe000001 04 40 20 80     eth0
"""


def test_parse_fib_trie_takes_local_host_addresses_only():
    assert parse_fib_trie(FIB_TRIE) == {"127.0.0.1", "192.0.2.2", "192.0.2.9"}


def test_parse_if_inet6():
    assert parse_if_inet6(IF_INET6) == {"fd00::2", "::1", "fe80::fc:ff:fe00:1"}
    assert parse_if_inet6("garbage\n\n") == set()


def test_local_addresses_has_loopback():
    assert "127.0.0.1" in local_addresses()


def test_normalise():
    assert normalise("[::1]") == "::1"
    assert normalise("::ffff:192.0.2.1") == "192.0.2.1"
    assert normalise("fe80::1%eth0") == "fe80::1"
    assert normalise("FD00::0002") == "fd00::2"
    assert normalise("mail.example") == "mail.example"
