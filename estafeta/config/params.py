"""The parameter registry: every main.cf parameter, declared once (STYLE 7).

Owns: the parameter types (how a value string becomes a Python value) and
``PARAMS``, the name -> Param table. Everything else is generated from it:
``estafeta config`` (config/postconf.py), docs/PARAMETERS.md and the typed
accessors of MainConfig (config/main_cf.py).

Trust boundary: none. Values are parsed here but come from main.cf, which the
administrator owns; a value that fails its type is a ConfigError raised by
main_cf.py with the file and line of the setting.

Names and defaults follow Postfix's postconf(5) unless the doc says "ours".
Defaults are *unexpanded* text ("$myhostname"), exactly as postconf -d prints
them. Two defaults depend on the host and are computed (myhostname, mydomain).
"""
from __future__ import annotations

import functools
import ipaddress
import re
import socket
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass

# A getter returns the expanded value of another parameter; computed defaults
# use it so that e.g. mydomain follows an explicitly set myhostname.
Getter = Callable[[str], str]


class ParamType:
    """How a value string is checked and converted. Raises ValueError."""

    label = "string"

    def parse(self, value: str, unit: str = "s") -> object:
        return value

    def __repr__(self) -> str:
        return self.label


class _Str(ParamType):
    label = "string"


class _Path(ParamType):
    label = "path"

    def parse(self, value: str, unit: str = "s") -> object:
        if "\0" in value:
            raise ValueError("NUL character in path")
        return value


class _Int(ParamType):
    label = "integer"

    def parse(self, value: str, unit: str = "s") -> object:
        if not re.fullmatch(r"-?[0-9]+", value.strip()):
            raise ValueError(f"bad integer value: {value!r}")
        return int(value)


class _Size(ParamType):
    label = "size"

    def parse(self, value: str, unit: str = "s") -> object:
        # Postfix sizes are plain byte counts; no k/M suffixes there, none here.
        if not re.fullmatch(r"[0-9]+", value.strip()):
            raise ValueError(f"bad size value: {value!r}")
        return int(value)


class _Bool(ParamType):
    label = "boolean"

    def parse(self, value: str, unit: str = "s") -> object:
        v = value.strip().lower()
        if v == "yes":
            return True
        if v == "no":
            return False
        raise ValueError(f"bad boolean value: {value!r} (want yes or no)")


# postconf(5) "time units": s, m, h, d, w; we also take ms for sub-second knobs.
DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION_RE = re.compile(r"([0-9]+)(ms|s|m|h|d|w)?")


class _Duration(ParamType):
    label = "duration"

    def parse(self, value: str, unit: str = "s") -> object:
        m = _DURATION_RE.fullmatch(value.strip().lower())
        if not m:
            raise ValueError(f"bad time value: {value!r}")
        return int(m.group(1)) * DURATION_UNITS[m.group(2) or unit]


def split_list(value: str) -> list[str]:
    """Split a Postfix list on commas and whitespace; "{ a b }" stays one item."""
    items: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in value:
        if ch == "{":
            depth += 1
        elif ch == "}" and depth:
            depth -= 1
        if depth == 0 and (ch == "," or ch.isspace()):
            if cur:
                items.append("".join(cur))
                cur = []
            continue
        cur.append(ch)
    if cur:
        items.append("".join(cur))
    return items


class _List(ParamType):
    label = "list"

    def parse(self, value: str, unit: str = "s") -> object:
        return split_list(value)


Str: ParamType = _Str()
Path: ParamType = _Path()
Int: ParamType = _Int()
Size: ParamType = _Size()
Bool: ParamType = _Bool()
Duration: ParamType = _Duration()
List: ParamType = _List()


@dataclass(frozen=True, slots=True)
class Param:
    """One main.cf parameter.

    ``default`` is the unexpanded default as text; for computed parameters it
    describes the computation (for the docs) and ``compute`` gives the value.
    ``unit`` is the unit of a bare number for Duration parameters.
    ``ignored`` says why estafeta does not act on the parameter (yet): check()
    warns when main.cf sets it to anything but the default or one of
    ``inert``, values that ask for what estafeta does anyway ("biff = no").
    """

    name: str
    type: ParamType
    default: str
    doc: str
    unit: str = "s"
    compute: Callable[[Getter], str] | None = None
    ignored: str = ""
    inert: tuple[str, ...] = ()

    def default_value(self, get: Getter) -> str:
        return self.compute(get) if self.compute else self.default


@functools.lru_cache(maxsize=1)
def _system_hostname() -> str:
    # Deliberately no DNS: gethostname() only, like Postfix; a bare name gets
    # ".localdomain" so that mydomain is never empty.
    name = socket.gethostname().strip().rstrip(".") or "localhost"
    return name if "." in name else name + ".localdomain"


def _default_myhostname(get: Getter) -> str:
    return _system_hostname()


def _default_mydomain(get: Getter) -> str:
    host = get("myhostname")
    _, _, rest = host.partition(".")
    # Like Postfix: a single remaining label (a bare TLD) is no domain.
    return rest if "." in rest else "localdomain"


MYNETWORKS_STYLES = ("host", "subnet", "class")
_Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


def style_networks(style: str, interfaces: Iterable[_Interface]) -> list[str]:
    """mynetworks for a mynetworks_style, given this host's interface addresses.

    host: the loopback networks only (ours; Postfix adds each interface address as a
    /32 or /128, which trusts no one else either); subnet: also the subnet of each
    interface; class: also each IPv4 address's class A, B or C network (IPv6: its
    subnet, as Postfix). An unknown style counts as host; check() reports it.
    """
    out = ["127.0.0.0/8", "[::1]/128"]
    if style not in ("subnet", "class"):
        return out
    for iface in interfaces:
        if iface.ip.is_loopback:
            continue
        net = iface.network
        if style == "class" and iface.version == 4:
            first = int(iface.ip) >> 24
            prefix = 8 if first < 128 else 16 if first < 192 else 24 if first < 224 else 32
            net = ipaddress.ip_network(f"{iface.ip}/{prefix}", strict=False)
        text = f"[{net.network_address}]/{net.prefixlen}" if net.version == 6 else str(net)
        if text not in out:
            out.append(text)
    return out


@functools.lru_cache(maxsize=1)
def _host_interfaces() -> tuple[_Interface, ...]:
    """This host's interface addresses with their prefix lengths (Linux; elsewhere
    none, so that subnet and class fall back to loopback only). IPv4 through the
    SIOCGIFADDR / SIOCGIFNETMASK ioctls, IPv6 from /proc/net/if_inet6; no privilege
    needed. io/interfaces.py lists the bare addresses for mail loop detection."""
    out: list[_Interface] = []
    if not sys.platform.startswith("linux"):
        return ()
    import fcntl
    import struct
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            req = struct.pack("256s", name.encode()[:15])
            try:
                addr = fcntl.ioctl(s.fileno(), 0x8915, req)[20:24]      # SIOCGIFADDR
                mask = fcntl.ioctl(s.fileno(), 0x891B, req)[20:24]      # SIOCGIFNETMASK
            except OSError:
                continue                                                # no IPv4 address
            out.append(ipaddress.IPv4Interface(f"{socket.inet_ntoa(addr)}/{socket.inet_ntoa(mask)}"))
    try:
        with open("/proc/net/if_inet6", encoding="ascii", errors="replace") as f:
            for line in f:
                w = line.split()        # address, index, prefix length (hex), scope, flags, name
                if len(w) >= 3 and len(w[0]) == 32:
                    out.append(ipaddress.IPv6Interface((int(w[0], 16), int(w[2], 16))))
    except (OSError, ValueError):
        pass
    return tuple(out)


def _default_mynetworks(get: Getter) -> str:
    return " ".join(style_networks(get("mynetworks_style").strip().lower(), _host_interfaces()))


def _p(name: str, type_: ParamType, default: str, doc: str, **kw: object) -> Param:
    return Param(name, type_, default, doc, **kw)  # type: ignore[arg-type]


def _client_params(p: str, name: str, *, port: str, connect_timeout: str) -> list[Param]:
    """The SMTP and LMTP clients share one set of knobs under two prefixes (Postfix 2.3+)."""
    return [
        _p(f"{p}_connect_timeout", Duration, connect_timeout, f"How long the {name} client waits for a TCP connection (0: no limit)."),
        _p(f"{p}_helo_timeout", Duration, "300s", f"How long the {name} client waits for the greeting and the EHLO/HELO reply.",
           # Postfix has no lmtp_helo_timeout: the LMTP client waits lmtp_lhlo_timeout.
           ignored="not used: the LMTP client waits lmtp_lhlo_timeout" if p == "lmtp" else ""),
        _p(f"{p}_starttls_timeout", Duration, "300s", f"How long the {name} client waits for the STARTTLS reply and the TLS handshake."),
        _p(f"{p}_mail_timeout", Duration, "300s", f"How long the {name} client waits for the reply to MAIL FROM."),
        _p(f"{p}_rcpt_timeout", Duration, "300s", f"How long the {name} client waits for the reply to RCPT TO."),
        _p(f"{p}_data_init_timeout", Duration, "120s", f"How long the {name} client waits for the reply to DATA."),
        _p(f"{p}_data_xfer_timeout", Duration, "180s", f"How long the {name} client may take to send a piece of the message content."),
        _p(f"{p}_data_done_timeout", Duration, "600s", f"How long the {name} client waits for the reply to the end of data."),
        _p(f"{p}_rset_timeout", Duration, "20s", f"How long the {name} client waits for the reply to RSET."),
        _p(f"{p}_quit_timeout", Duration, "300s", f"How long the {name} client waits for the reply to QUIT."),
        _p(f"{p}_helo_name", Str, "$myhostname", f"Host name the {name} client sends in EHLO/HELO.",
           # Postfix has no lmtp_helo_name: the LMTP client sends lmtp_lhlo_name.
           ignored="not used: the LMTP client sends lmtp_lhlo_name" if p == "lmtp" else ""),
        _p(f"{p}_bind_address", Str, "", f"Local IP address the {name} client binds to."),
        _p(f"{p}_tcp_port", Int, port, f"TCP port of the {name} client when the next hop names none (ours)."),
        _p(f"{p}_tls_security_level", Str, "", f"{name} client TLS: empty or none, may (opportunistic STARTTLS), encrypt, or verify (with {p}_tls_CAfile)."),
        _p(f"{p}_tls_CAfile", Path, "", f"PEM file of CA certificates the {name} client trusts for TLS verify."),
        _p(f"{p}_connection_cache_time_limit", Duration, "2s", f"How long the {name} client keeps an idle connection open for the next message to the same destination."),
        _p(f"{p}_connection_reuse_time_limit", Duration, "300s", f"How long the {name} client reuses one connection for more messages."),
    ]


_ALL: list[Param] = [
    # --- Paths and identity -------------------------------------------------
    _p("config_directory", Path, "/etc/estafeta",
       "Directory holding main.cf and master.cf; when main.cf does not set it, the directory it was read from "
       "(-c DIR, $ESTAFETA_CONFIG), so that $config_directory names the instance's own files.",
       ignored="informational only: estafeta reads the directory given with -c DIR or $ESTAFETA_CONFIG"),
    _p("queue_directory", Path, "/var/spool/estafeta", "Root of the mail queue (incoming, active, deferred, ...)."),
    _p("data_directory", Path, "/var/lib/estafeta", "Directory for writable state such as caches and locks."),
    _p("command_directory", Path, "/usr/sbin", "Directory holding the estafeta administrative commands.",
       ignored="informational only: estafeta's commands are console scripts found on $PATH"),
    _p("daemon_directory", Path, "/usr/lib/estafeta", "Directory holding helper programs run by the master (ours: Python services need none).",
       ignored="informational only: estafeta's services are Python modules, not programs in a directory"),
    _p("mail_owner", Str, "estafeta", "Unprivileged account that owns the queue and runs network-facing services (ours: estafeta)."),
    _p("setgid_group", Str, "estafetadrop", "Group used by the sendmail command to write into the maildrop directory.",
       ignored="informational only: the sendmail command needs no set-group-id helper (queue/maildrop.py)"),
    _p("default_privs", Str, "nobody", "Account whose rights deliveries to files and commands get when no other owner applies."),
    _p("mail_name", Str, "Estafeta", "Name of the mail system, shown in the Received: header (\"by HOST (Estafeta)\")."),
    _p("myhostname", Str, "(system host name, with .localdomain added when it has no dot)",
       "Fully qualified host name of this machine, used in the banner, HELO and Received: headers.",
       compute=_default_myhostname),
    _p("mydomain", Str, "(myhostname minus its first label, or localdomain)",
       "Internet domain of this machine.", compute=_default_mydomain),
    _p("myorigin", Str, "$myhostname", "Domain appended to unqualified sender addresses of locally posted mail."),
    _p("mydestination", List, "$myhostname, localhost.$mydomain, localhost",
       "Domains delivered by local_transport (the local domain class)."),
    _p("mynetworks", List, "(from mynetworks_style; host: 127.0.0.0/8 [::1]/128)",
       "Trusted client networks that may relay (see permit_mynetworks).", compute=_default_mynetworks),
    _p("mynetworks_style", Str, "host",
       "How mynetworks is computed when it is not set: host (the loopback networks; ours: Postfix also "
       "lists this host's own addresses), subnet (also the subnets of this host's interfaces) or class "
       "(also their class A/B/C networks; IPv6 as subnet)."),
    _p("inet_interfaces", List, "all", "Network addresses the SMTP server and other inet services listen on."),
    _p("inet_protocols", List, "all", "IP protocols to use: ipv4, ipv6 or all."),
    _p("proxy_interfaces", List, "",
       "Addresses (or host names) on which this system receives mail through a proxy or NAT; the SMTP client counts them as its own (mail loop detection)."),
    _p("relay_domains", List, "", "Domains this system relays mail to (the relay domain class)."),
    _p("relayhost", Str, "", "Next-hop host for mail to non-local destinations; empty means direct MX delivery."),
    _p("append_dot_mydomain", Bool, "no", "Append .$mydomain to addresses with a host part that has no dot."),
    _p("masquerade_domains", List, "", "Domains whose subdomains are stripped from addresses in headers and envelope."),
    _p("recipient_delimiter", Str, "", "Characters that separate a user name from an address extension (user+ext)."),
    _p("empty_address_recipient", Str, "MAILER-DAEMON", "Recipient of mail sent to the null address <>."),
    _p("double_bounce_sender", Str, "double-bounce", "Sender address of notices that must never bounce back."),
    # --- Transports and address classes -------------------------------------
    _p("local_transport", Str, "local:$myhostname", "Transport for domains in mydestination."),
    _p("virtual_transport", Str, "virtual", "Transport for domains in virtual_mailbox_domains."),
    _p("relay_transport", Str, "relay", "Transport for domains in relay_domains."),
    _p("default_transport", Str, "smtp", "Transport for all other destinations."),
    _p("transport_maps", List, "", "Lookup tables mapping recipients or domains to transport:nexthop."),
    _p("parent_domain_matches_subdomains", List,
       "debug_peer_list,fast_flush_domains,mynetworks,permit_mx_backup_networks,qmqpd_authorized_clients,"
       "relay_domains,smtpd_access_maps",
       "Features where a pattern example.com also matches its subdomains (else only .example.com does)."),
    _p("local_recipient_maps", List, "proxy:unix:passwd.byname $alias_maps",
       "Tables of valid local recipients; unknown local recipients are rejected by the SMTP server."),
    # Postfix 3.7's default, word for word: names estafeta does not declare expand to "".
    _p("proxy_read_maps", List,
       "$local_recipient_maps $mydestination $virtual_alias_maps $virtual_alias_domains $virtual_mailbox_maps $virtual_mailbox_domains $relay_recipient_maps $relay_domains $canonical_maps $sender_canonical_maps $recipient_canonical_maps $relocated_maps $transport_maps $mynetworks $smtpd_sender_login_maps $sender_bcc_maps $recipient_bcc_maps $smtp_generic_maps $lmtp_generic_maps $alias_maps $smtpd_client_restrictions $smtpd_helo_restrictions $smtpd_sender_restrictions $smtpd_relay_restrictions $smtpd_recipient_restrictions $address_verify_sender_dependent_default_transport_maps $address_verify_sender_dependent_relayhost_maps $address_verify_transport_maps $fallback_transport_maps $lmtp_discard_lhlo_keyword_address_maps $lmtp_pix_workaround_maps $lmtp_sasl_password_maps $lmtp_tls_policy_maps $mailbox_command_maps $mailbox_transport_maps $postscreen_discard_ehlo_keyword_address_maps $rbl_reply_maps $sender_dependent_default_transport_maps $sender_dependent_relayhost_maps $smtp_discard_ehlo_keyword_address_maps $smtp_pix_workaround_maps $smtp_sasl_password_maps $smtp_tls_policy_maps $smtpd_discard_ehlo_keyword_address_maps $smtpd_milter_maps $virtual_gid_maps $virtual_uid_maps $local_login_sender_maps $postscreen_reject_footer_maps $smtpd_reject_footer_maps $tls_server_sni_maps $tlsproxy_client_policy_maps $default_delivery_status_filter $lmtp_delivery_status_filter $lmtp_dns_reply_filter $lmtp_reply_filter $local_delivery_status_filter $pipe_delivery_status_filter $postscreen_command_filter $smtp_delivery_status_filter $smtp_dns_reply_filter $smtp_reply_filter $smtpd_command_filter $smtpd_dns_reply_filter $virtual_delivery_status_filter $body_checks $header_checks $lmtp_body_checks $lmtp_header_checks $lmtp_mime_header_checks $lmtp_nested_header_checks $milter_header_checks $mime_header_checks $nested_header_checks $smtp_body_checks $smtp_header_checks $smtp_mime_header_checks $smtp_nested_header_checks",
       "The tables a proxy:type:name may name: only its proxy: items count; estafeta check refuses "
       "a proxy: table not listed (ours: no proxymap daemon, each process opens the table itself; "
       "see docs/TABLES.md)."),
    _p("proxy_write_maps", List,
       "$smtp_sasl_auth_cache_name $lmtp_sasl_auth_cache_name $address_verify_map $postscreen_cache_map",
       "The proxy: tables Postfix's proxywrite service may update.",
       ignored="not used: estafeta writes no lookup table (no verify, postscreen or SASL caches)"),
    _p("alias_maps", List, "hash:/etc/aliases", "Alias tables used by the local delivery agent."),
    _p("alias_database", List, "hash:/etc/aliases", "Alias tables rebuilt by the newaliases command."),
    _p("virtual_mailbox_domains", List, "$virtual_mailbox_maps", "Domains delivered by virtual_transport (the virtual mailbox class)."),
    _p("virtual_mailbox_maps", List, "", "Tables mapping virtual recipients to mailbox paths under virtual_mailbox_base."),
    _p("virtual_mailbox_base", Path, "", "Directory prepended to the mailbox paths found in virtual_mailbox_maps."),
    _p("virtual_mailbox_limit", Size, "51200000", "Largest mailbox file the virtual delivery agent writes, in bytes (0: no limit)."),
    _p("virtual_alias_maps", List, "", "Tables rewriting recipient addresses for all address classes."),
    _p("virtual_alias_domains", List, "$virtual_alias_maps", "Domains whose every address is an alias (the virtual alias class)."),
    _p("canonical_maps", List, "", "Tables rewriting sender and recipient addresses in envelope and headers."),
    _p("sender_canonical_maps", List, "", "Tables rewriting sender addresses only."),
    _p("recipient_canonical_maps", List, "", "Tables rewriting recipient addresses only."),
    _p("relocated_maps", List, "", "Tables of moved users; mail to them bounces with their new address."),
    _p("canonical_classes", List, "envelope_sender, envelope_recipient, header_sender, header_recipient",
       "What canonical_maps rewrites: envelope_sender, envelope_recipient, header_sender, header_recipient."),
    _p("sender_canonical_classes", List, "envelope_sender, header_sender",
       "What sender_canonical_maps rewrites: envelope_sender, header_sender."),
    _p("recipient_canonical_classes", List, "envelope_recipient, header_recipient",
       "What recipient_canonical_maps rewrites: envelope_recipient, header_recipient."),
    _p("masquerade_classes", List, "envelope_sender, header_sender, header_recipient",
       "What masquerade_domains rewrites: envelope_sender, envelope_recipient, header_sender, header_recipient."),
    _p("masquerade_exceptions", List, "", "User names (or type:table) never masqueraded, e.g. root, mailer-daemon."),
    _p("virtual_alias_expansion_limit", Int, "1000",
       "Most addresses one original recipient may expand to through virtual_alias_maps; beyond it the message is deferred."),
    _p("virtual_alias_recursion_limit", Int, "1000",
       "Deepest nesting of virtual_alias_maps expansion; beyond it the message is deferred."),
    _p("append_at_myorigin", Bool, "yes", "Append @$myorigin to envelope and (local clients') header addresses without a domain."),
    _p("local_header_rewrite_clients", List, "permit_inet_interfaces",
       "Clients whose header addresses are rewritten (canonical, masquerading, @$myorigin): permit_inet_interfaces, permit_mynetworks, static:all."),
    _p("remote_header_rewrite_domain", Str, "",
       "When set, header addresses of other clients are rewritten too, bare names getting this domain."),
    _p("header_checks", List, "", "Pattern tables (regexp:, pcre:) applied to each logical header of the top-level message header."),
    _p("body_checks", List, "", "Pattern tables (regexp:, pcre:) applied to each body line."),
    _p("body_checks_size_limit", Size, "51200", "How many bytes of the message body body_checks inspects."),
    _p("internal_mail_filter_classes", List, "",
       "Mail generated by estafeta itself that header_checks and body_checks inspect: bounce (delivery status notices)."),
    _p("home_mailbox", Str, "", "Mailbox path relative to a local user's home; a trailing / means Maildir."),
    _p("mail_spool_directory", Path, "/var/mail", "Directory of mbox spool files for local users when home_mailbox is empty."),
    _p("mailbox_command", Str, "",
       "Shell command the local delivery agent runs, as the recipient (default_privs for root), instead of writing the mailbox; not $name-expanded (the shell sees $EXTENSION, $USER...)."),
    _p("mailbox_command_maps", List, "",
       "Tables mapping a local user name (no domain, no extension) to the command for its mailbox delivery, run as mailbox_command is; before mailbox_command, after mailbox_transport."),
    _p("mailbox_transport", Str, "",
       "transport[:nexthop] (a master.cf service) to which the local delivery agent hands mailbox delivery, after aliases and .forward, for every local recipient, in the password database or not."),
    _p("mailbox_transport_maps", List, "",
       "Tables mapping a local user name (no domain, no extension) to the transport[:nexthop] for its mailbox delivery; before mailbox_transport."),
    _p("fallback_transport", Str, "",
       "transport[:nexthop] to which the local delivery agent hands recipients found neither in the aliases nor in the password database (instead of a 5.1.1 bounce)."),
    _p("fallback_transport_maps", List, "",
       "Tables mapping a local user name (no domain, no extension) to the transport[:nexthop] for recipients not in the password database; before fallback_transport."),
    _p("mailbox_size_limit", Size, "51200000", "Largest file, in bytes, that the local delivery agent or a command it runs may write (0: no limit)."),
    _p("allow_mail_to_commands", List, "alias, forward", "Where the local delivery agent allows deliveries to |command."),
    _p("allow_mail_to_files", List, "alias, forward", "Where the local delivery agent allows deliveries to /file."),
    _p("biff", Bool, "yes", "Notify the local biff service of new mail.",
       ignored="not implemented: the local delivery agent does not notify comsat", inert=('no',)),
    _p("forward_path", List, "$home/.forward${recipient_delimiter}${extension}, $home/.forward",
       "Where the local delivery agent looks for a user's .forward file; not $name-expanded when read: $user, $home, $shell, $recipient, $extension, $domain, $local and $recipient_delimiter expand per recipient."),
    _p("forward_expansion_filter", Str, "1234567890!@%-_=+:,./abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
       "Characters allowed in the $name values expanded in forward_path; others become _."),
    _p("owner_request_special", Bool, "yes", "Give owner-name and name-request addresses their mailing-list meaning (owner-name receives bounces of alias name)."),
    _p("expand_owner_alias", Bool, "no", "Use the expansion of owner-name (when it is one address), not owner-name itself, as the sender of alias deliveries."),
    _p("propagate_unmatched_extensions", List, "canonical, virtual",
       "Where an address extension not matched by a table is appended to the result: canonical, virtual, alias, forward, include."),
    _p("local_command_shell", Str, "", "Shell for |command deliveries by the local agent; empty: /bin/sh -c."),
    _p("command_time_limit", Duration, "1000s", "How long a |command delivery of the local agent may run; past it the command is killed and the recipient bounced (5.3.0)."),
    _p("command_expansion_filter", Str, "1234567890!@%-_=+:,./abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
       "Characters allowed in the environment values the local agent gives a command (SENDER, RECIPIENT...); others become _."),
    _p("command_execution_directory", Str, "",
       "Working directory of the local agent's commands (|command, mailbox_command), entered as the command's user; expanded per recipient as forward_path; failure to enter it defers. Empty: the queue directory."),
    _p("execution_directory_expansion_filter", Str, "1234567890!@%-_=+:,./abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
       "Characters allowed in the $name values expanded in command_execution_directory; others become _."),
    _p("stale_lock_time", Duration, "500s", "Age after which a mailbox .lock file is taken as left over and removed."),
    # --- Message limits -------------------------------------------------------
    _p("message_size_limit", Size, "10240000", "Largest message accepted, in bytes, including the envelope."),
    _p("header_size_limit", Size, "102400", "Largest message header kept in memory, in bytes; the excess is discarded."),
    _p("line_length_limit", Size, "2048", "Longest input line kept whole; longer lines are split in pieces of this size."),
    _p("bounce_size_limit", Size, "50000", "Largest part of the original message returned in a bounce, in bytes."),
    _p("default_database_type", Str, "hash", "Table type of a file named without one by estafeta map (postmap) and newaliases."),
    # --- SMTP server -----------------------------------------------------------
    _p("smtpd_banner", Str, "$myhostname ESMTP", "Text after the 220 code in the greeting; no software version (seed 5.3.3)."),
    _p("smtpd_recipient_limit", Int, "1000", "Most recipients accepted in one transaction (at least 1, as in Postfix; sendmail -bs never takes more than 10,000)."),
    _p("smtpd_recipient_overshoot_limit", Int, "1000",
       "RCPTs refused past smtpd_recipient_limit (452) in one transaction that do not count as errors; "
       "later ones count toward smtpd_soft_error_limit and smtpd_hard_error_limit."),
    _p("smtpd_timeout", Duration, "300s", "How long the SMTP server waits for a client command or data."),
    _p("smtpd_min_data_rate", Int, "500",
       "Bytes per second of message content that extend the smtpd_timeout deadline of DATA (Postfix 3.7)."),
    _p("smtpd_hard_error_limit", Int, "20", "Errors after which the SMTP server disconnects the client."),
    _p("smtpd_soft_error_limit", Int, "10", "Errors (4xx/5xx replies) after which the SMTP server delays each reply by smtpd_error_sleep_time."),
    _p("smtpd_error_sleep_time", Duration, "1s", "Delay before each reply once smtpd_soft_error_limit is reached."),
    _p("smtpd_junk_command_limit", Int, "100",
       "NOOP, VRFY and RSET commands after which each one counts as an error (reset when mail is accepted)."),
    _p("smtpd_client_restrictions", List, "", "Access restrictions applied to the client address and name."),
    _p("smtpd_helo_restrictions", List, "", "Access restrictions applied to the HELO/EHLO name."),
    _p("smtpd_sender_restrictions", List, "", "Access restrictions applied to the MAIL FROM address."),
    _p("smtpd_relay_restrictions", List, "permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination",
       "Relay control applied at RCPT TO before smtpd_recipient_restrictions."),
    _p("smtpd_recipient_restrictions", List, "", "Access restrictions applied to the RCPT TO address."),
    _p("smtpd_data_restrictions", List, "", "Access restrictions applied at the DATA command."),
    _p("smtpd_delay_reject", Bool, "yes", "Apply client, HELO and sender restrictions at RCPT TO time."),
    _p("smtpd_helo_required", Bool, "no", "Require HELO or EHLO before MAIL FROM."),
    _p("disable_vrfy_command", Bool, "no", "Refuse the VRFY command (502 5.5.1)."),
    _p("strict_rfc821_envelopes", Bool, "no", "Require <> around MAIL FROM and RCPT TO addresses (501 otherwise)."),
    _p("smtpd_discard_ehlo_keywords", List, "",
       "EHLO keywords (any case) the SMTP server does not announce; dsn also refuses the DSN parameters, smtputf8 the SMTPUTF8 one; "
       "silent-discard stops the log line."),
    _p("smtpd_discard_ehlo_keyword_address_maps", List, "",
       "Lookup tables, by client address, of EHLO keyword lists to discard instead of smtpd_discard_ehlo_keywords "
       "(the first result wins; a lookup error answers EHLO with 421)."),
    _p("smtpd_forbid_bare_newline", Bool, "yes", "Reject bare LF line endings in SMTP commands and data (SMTP smuggling defence)."),
    _p("smtputf8_enable", Bool, "yes", "Announce and accept SMTPUTF8 (RFC 6531); no: not announced, and MAIL FROM ... SMTPUTF8 is refused as an unknown option."),
    _p("smtpd_worker_count", Int, "0", "Number of SMTP server worker processes (ours; 0 means one per CPU core)."),
    _p("smtpd_client_connection_count_limit", Int, "50", "Most simultaneous connections from one client (0: no limit).",
       ignored="not implemented yet (SPEC S6: limits)"),
    _p("smtpd_client_connection_rate_limit", Int, "0", "Most connections from one client per anvil_rate_time_unit (0: no limit).",
       ignored="not implemented yet (SPEC S6: limits)"),
    _p("smtpd_sasl_auth_enable", Bool, "no", "Offer SMTP AUTH (RFC 4954) to clients.",
       ignored="not implemented yet (SPEC S1: AUTH)"),
    _p("smtpd_tls_security_level", Str, "", "SMTP server TLS: empty or none, may (offer STARTTLS) or encrypt (require it).",
       ignored="not implemented yet (SPEC S1: STARTTLS)", inert=('none',)),
    _p("smtpd_tls_cert_file", Path, "", "PEM certificate chain of the SMTP server.",
       ignored="not implemented yet (SPEC S1: STARTTLS)"),
    _p("smtpd_tls_key_file", Path, "$smtpd_tls_cert_file", "PEM private key of the SMTP server.",
       ignored="not implemented yet (SPEC S1: STARTTLS)"),
    _p("unknown_local_recipient_reject_code", Int, "550", "SMTP code for recipients not found in local_recipient_maps."),
    _p("unknown_virtual_mailbox_reject_code", Int, "550", "SMTP code for recipients not found in virtual_mailbox_maps."),
    _p("access_map_reject_code", Int, "554", "SMTP code for a REJECT result of an access table (check_*_access)."),
    _p("access_map_defer_code", Int, "450", "SMTP code for DEFER, DEFER_IF_PERMIT and DEFER_IF_REJECT results of an access table."),
    _p("reject_code", Int, "554", "SMTP code for the reject restriction."),
    _p("defer_code", Int, "450", "SMTP code for the defer restriction."),
    _p("relay_domains_reject_code", Int, "554", "SMTP code for reject_unauth_destination (defer_unauth_destination uses 4XX)."),
    _p("non_fqdn_reject_code", Int, "504", "SMTP code for reject_non_fqdn_sender, _recipient and _helo_hostname."),
    _p("invalid_hostname_reject_code", Int, "501", "SMTP code for reject_invalid_helo_hostname."),
    _p("smtpd_null_access_lookup_key", Str, "<>", "Key that check_sender_access looks up for the null sender."),
    _p("smtpd_reject_unlisted_recipient", Bool, "yes",
       "Reject unknown local and virtual mailbox recipients even without reject_unlisted_recipient in the lists."),
    _p("smtpd_reject_unlisted_sender", Bool, "no", "Reject unknown local and virtual mailbox senders, as reject_unlisted_sender."),
    _p("authorized_submit_users", List, "static:anyone", "Users allowed to submit mail with the sendmail command (-bm, -t, -bs), and whose maildrop files pickup "
       "takes (mail_owner always; root only if listed, as in Postfix): names, !name, /file/name, type:table; the first match decides; empty: no one."),
    # --- SMTP client ------------------------------------------------------------
    *_client_params("smtp", "SMTP", port="25", connect_timeout="30s"),
    *_client_params("lmtp", "LMTP", port="24", connect_timeout="0s"),
    _p("lmtp_lhlo_timeout", Duration, "300s", "How long the LMTP client waits for the greeting and the LHLO reply."),
    _p("lmtp_lhlo_name", Str, "$myhostname", "Host name the LMTP client sends in LHLO."),
    _p("smtp_skip_5xx_greeting", Bool, "yes", "Try the next MX host after a 5xx greeting instead of bouncing the mail."),
    _p("disable_mime_output_conversion", Bool, "no",
       "Send 8-bit mail unchanged to SMTP/LMTP servers without 8BITMIME instead of converting 8-bit parts to quoted-printable."),
    _p("dns_nameservers", Str, "", "DNS servers to ask, \"host[:port], ...\" (ours; empty: those of /etc/resolv.conf)."),
    _p("dns_timeout", Duration, "5s", "How long one DNS query waits for an answer from one server (ours)."),
    # --- Queue manager and scheduling --------------------------------------------
    _p("queue_run_delay", Duration, "300s", "How often the queue manager scans the deferred queue."),
    _p("minimal_backoff_time", Duration, "300s", "Shortest time a deferred message waits before its next attempt."),
    _p("maximal_backoff_time", Duration, "4000s", "Longest time a deferred message waits before its next attempt."),
    _p("maximal_queue_lifetime", Duration, "5d", "How long a message may stay queued before it bounces (bare number: days).", unit="d"),
    _p("bounce_queue_lifetime", Duration, "5d", "How long a bounce message may stay queued before it is dropped (bare number: days).", unit="d"),
    _p("delay_warning_time", Duration, "0h", "When to warn the sender of delayed mail; 0 disables (bare number: hours).", unit="h"),
    _p("queue_sort_order", Str, "priority",
       "Order of deferred messages in a queue run, as Sendmail's QUEUE_SORT_ORDER (seed 8.2.4): "
       "priority (smallest first), host (first recipient's domain), filename (queue id: oldest first), "
       "time (arrival), modification (next-attempt time) or random (ours)."),
    _p("qmgr_message_active_limit", Int, "20000", "Most messages in the active queue."),
    _p("qmgr_message_recipient_limit", Int, "20000", "Most in-memory recipients of all active messages.",
       ignored="not implemented yet: qmgr_message_active_limit bounds the active queue"),
    _p("default_destination_concurrency_limit", Int, "20", "Most parallel deliveries to one destination per transport."),
    _p("default_destination_recipient_limit", Int, "50", "Most recipients per delivery request per transport."),
    _p("local_destination_concurrency_limit", Int, "2", "Most parallel local deliveries to one destination (one recipient "
       "when local_destination_recipient_limit is 1). Ours: applies only when main.cf sets it; "
       "otherwise default_destination_concurrency_limit."),
    _p("local_destination_recipient_limit", Int, "1", "Recipients per local delivery request; 1 makes each recipient a "
       "destination of its own. Ours: applies only when main.cf sets it; otherwise default_destination_recipient_limit, "
       "so that a user addressed both directly and through an alias list gets one copy."),
    _p("default_process_limit", Int, "100", "Default maxproc of master.cf services."),
    _p("fsync_queue", Bool, "yes", "fsync queue files and their directories before acknowledging mail (ours)."),
    _p("soft_bounce", Bool, "no", "Turn hard bounces into deferrals; for testing a new configuration."),
    # --- Notices -------------------------------------------------------------------
    _p("notify_classes", List, "resource, software", "Problem classes reported to the postmaster. bounce: a copy, "
       "message headers only, of every non-delivery notice, to bounce_notice_recipient; delay: the same for delay "
       "notices, to delay_notice_recipient; 2bounce (or bounce): undeliverable notices (mail from the null sender) "
       "to 2bounce_notice_recipient, otherwise they are discarded, as with the default. The SMTP session "
       "transcripts of data, policy, protocol, resource and software (to error_notice_recipient) are not "
       "implemented yet: qmgr logs a warning at start when one other than the default resource and software is "
       "set. Postmaster notices come from double_bounce_sender; one that cannot be delivered is discarded."),
    _p("2bounce_notice_recipient", Str, "postmaster", "Recipient of undeliverable notices (double bounces) when "
       "notify_classes has 2bounce or bounce."),
    _p("bounce_notice_recipient", Str, "postmaster", "Recipient of the postmaster copy (headers only) of non-delivery "
       "notices when notify_classes has bounce."),
    _p("delay_notice_recipient", Str, "postmaster", "Recipient of the postmaster copy (headers only) of delay "
       "notices when notify_classes has delay."),
    _p("error_notice_recipient", Str, "postmaster", "Recipient of protocol, policy, resource and software problem reports.",
       ignored="not implemented yet: no SMTP session transcripts (notify_classes data, policy, protocol, resource, "
               "software) are sent"),
    _p("always_bcc", Str, "", "Address that gets a copy of every message entering the system (not of notices estafeta makes "
       "itself), added as a recipient with NOTIFY=NEVER."),
    _p("sender_bcc_maps", List, "", "Tables giving a BCC address per envelope sender (after canonical rewriting; keys as canonical(5)), "
       "added like always_bcc."),
    _p("recipient_bcc_maps", List, "", "Tables giving a BCC address per envelope recipient (after canonical rewriting, before virtual alias "
       "expansion; keys as canonical(5)), added like always_bcc."),
    # --- Processes and logging ----------------------------------------------------
    _p("daemon_timeout", Duration, "18000s", "How long a service may take on one request before it is killed.",
       ignored="not implemented: services have no watchdog timer; each protocol stage has its own timeout"),
    _p("ipc_timeout", Duration, "3600s", "How long internal communication may block before it fails.",
       ignored="not implemented: each internal request has its own timeout"),
    _p("max_idle", Duration, "100s", "How long an idle service process waits for work before exiting."),
    _p("max_use", Int, "100", "Requests a service process handles before exiting.",
       ignored="not implemented: a service process serves many clients at once and lives until max_idle"),
    _p("service_throttle_time", Duration, "60s", "How long the master waits before restarting a service that failed to start."),
    _p("import_environment", List, "MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C",
       "Environment variables the master passes to its services (NAME=value sets one).",
       ignored="not implemented: services inherit the environment of the master"),
    _p("export_environment", List, "TZ MAIL_CONFIG LANG", "Environment variables passed to external commands."),
    _p("maillog_file", Path, "", "File to log to; empty means standard error (ours: no syslog)."),
    _p("syslog_name", Str, "estafeta", "Program name prefix of log lines (estafeta/smtpd[pid])."),
    _p("syslog_facility", Str, "mail", "Syslog facility of log lines.",
       ignored="not implemented: estafeta logs to maillog_file or to standard error, not to syslog"),
]

PARAMS: dict[str, Param] = {}
for _param in _ALL:
    if _param.name in PARAMS:  # pragma: no cover - guards the table itself
        raise RuntimeError(f"parameter declared twice: {_param.name}")
    PARAMS[_param.name] = _param
del _param
