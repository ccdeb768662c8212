"""A private Postfix for interop tests: the master.cf it runs on (../shared/PEERS.md §7).

Postfix is the reference the tests compare estafeta with, and a real peer it exchanges
mail with. Tests write a main.cf of their own; this is the service table they share.
Postfix starts its services on demand, so listing one a test does not use costs nothing.
"""

MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix n - n 60 1 pickup
cleanup   unix n - n -  0 cleanup
qmgr      unix n - n 300 1 qmgr
rewrite   unix - - n -  - trivial-rewrite
bounce    unix - - n -  0 bounce
defer     unix - - n -  0 bounce
trace     unix - - n -  0 bounce
proxymap  unix - - n -  - proxymap
smtp      unix - - n -  - smtp
showq     unix n - n -  - showq
error     unix - - n -  - error
retry     unix - - n -  - error
discard   unix - - n -  - discard
virtual   unix - n n -  - virtual
anvil     unix - - n -  1 anvil
postlog   unix-dgram n - n - 1 postlogd
"""
