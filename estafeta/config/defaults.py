"""Text of the embedded default instance (SPEC S13: `make run`).

Owns the main.cf, master.cf and vmailbox that ``estafeta init DIR`` writes:
an unprivileged instance under DIR with SMTP on 127.0.0.1:2525 (POP3 on
127.0.0.1:1110 comes later), local domain "localhost" delivered to Maildirs under
DIR/var/mail, the queue under DIR/var/queue, and no relaying (only
127.0.0.0/8 may relay, and the server listens on loopback only).

Pure text; writing the files is the init command's job (estafeta/cli/).
The unit tests parse and check this text, so it cannot rot silently.
"""
from __future__ import annotations

import os


def _dir(instance_dir: str) -> str:
    d = os.path.abspath(instance_dir)
    if any(ch.isspace() for ch in d):
        # Table names like texthash:DIR/vmailbox are list items; whitespace
        # would split them, as in Postfix.
        raise ValueError(f"instance directory must not contain whitespace: {d!r}")
    return d.replace("$", "$$")  # a literal $ must not expand


def default_main_cf(instance_dir: str) -> str:
    d = _dir(instance_dir)
    return f"""\
# main.cf of an estafeta instance created by "estafeta init".
# Syntax as Postfix's main.cf: "name = value"; a line starting with
# whitespace continues the previous one; "#" starts a comment line.
# "estafeta config" prints every parameter, "estafeta config -n" the ones
# set here, "estafeta config -e name=value" edits this file.
# The parameter reference is docs/PARAMETERS.md.

# Where this instance keeps its queue and its state.
queue_directory = {d}/var/queue
data_directory = {d}/var/lib

# Log to a file instead of syslog, so an unprivileged instance needs nothing
# from the system.
maillog_file = {d}/var/log/maillog

# Identity. "localhost" avoids depending on the machine's name or DNS.
myhostname = localhost
mydomain = localdomain
myorigin = $myhostname

# Mail for these domains is for this instance.
mydestination = localhost

# Listen on loopback only; only loopback clients may relay.
inet_interfaces = 127.0.0.1
mynetworks = 127.0.0.0/8

# Deliver local mail with the virtual delivery agent: it writes Maildirs
# under virtual_mailbox_base and needs no system accounts or root.
local_transport = virtual
virtual_mailbox_base = {d}/var/mail

# Mailboxes: "address path/relative/to/virtual_mailbox_base/" (a trailing
# slash means Maildir). The same table says which local recipients exist, so
# mail to anyone else is rejected during the SMTP dialog.
virtual_mailbox_maps = texthash:{d}/vmailbox
local_recipient_maps = $virtual_mailbox_maps

# localhost is already a local domain (mydestination); a domain must not be
# in two address classes, so no separate virtual mailbox domains.
virtual_mailbox_domains =
"""


def default_master_cf() -> str:
    return """\
# master.cf of an estafeta instance: the services the master process runs.
# Syntax as Postfix's master.cf; "-" means the default. Estafeta's chroot
# default is n (Postfix: y). Lines starting with whitespace continue the
# previous line; -o name=value overrides a main.cf parameter for one service.
#
# ==========================================================================
# service type  private unpriv  chroot  wakeup  maxproc command + args
#               (yes)   (yes)   (no)    (never) (100)
# ==========================================================================
127.0.0.1:2525 inet n   -       n       -       -       smtpd
qmgr      unix  n       -       n       300     1       qmgr
virtual   unix  -       -       n       -       -       virtual
# local: system users (mbox in mail_spool_directory or home_mailbox), aliases,
# .forward. unpriv = n: the one service that keeps root, to act as each user.
local     unix  -       n       n       -       -       local
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
lmtp      unix  -       -       n       -       -       lmtp
# Agents that deliver nothing: transport_maps "discard:" or "error:text" (the
# nexthop is the reason); "retry" defers. pipe services are added by hand, e.g.
# mypipe unix - n n - - pipe flags=DRhu user=nobody argv=/usr/local/bin/filter ${sender} ${recipient}
discard   unix  -       -       n       -       -       discard
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
# Messages are cleaned up in process by smtpd; no separate cleanup service.
# POP3 on 127.0.0.1:1110 arrives with the mail access work (SPEC S9).
# Local submission: the sendmail command writes into maildrop/, pickup feeds
# cleanup; showq lists the queue for users who cannot read it (mailq).
pickup    unix  n       -       n       60      1       pickup
showq     unix  n       -       n       -       -       showq
"""


def default_vmailbox() -> str:
    """The texthash file named by virtual_mailbox_maps: one demo mailbox."""
    return """\
# address            mailbox under virtual_mailbox_base (trailing / = Maildir)
demo@localhost       demo/Maildir/
"""
