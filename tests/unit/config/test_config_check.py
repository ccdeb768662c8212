"""`estafeta check` opens the tables the daemons open and compares transports with
master.cf (config/table_check.py): errors and warnings name the file and line."""
from __future__ import annotations

import os
import socket
import time

import pytest

from estafeta.cli.main import EX_CONFIG
from estafeta.cli.main import main as estafeta_main
from estafeta.config import table_check as C
from estafeta.config.params import PARAMS, List


@pytest.fixture
def inst(tmp_path, capsys):
    estafeta_main(["-c", str(tmp_path), "init"])
    capsys.readouterr()
    return tmp_path


def add(d, **settings: str) -> dict[str, int]:
    """Append settings to main.cf; their line numbers."""
    path = d / "main.cf"
    n = len(path.read_text().splitlines())
    lines = {}
    with open(path, "a") as f:
        for name, value in settings.items():
            n += 1
            f.write(f"{name} = {value}\n")
            lines[name] = n
    return lines


def run_check(d, capsys) -> tuple[int, str]:
    rc = estafeta_main(["-c", str(d), "check"])
    return rc, capsys.readouterr().err


def test_default_instance_checks_clean(inst, capsys) -> None:
    rc, err = run_check(inst, capsys)
    assert (rc, err) == (0, ""), f"got {rc} {err!r}, want 0 and no output"


def test_missing_alias_file_warns_when_local_is_used(inst, capsys) -> None:
    ln = add(inst, local_transport="local", alias_maps=f"hash:{inst}/aliases")
    rc, err = run_check(inst, capsys)
    want = (f"estafeta: warning: {inst}/main.cf, line {ln['alias_maps']}: alias_maps: {inst}/aliases.db: "
            "table file not found")
    assert rc == 0 and want in err, f"got {rc} {err!r}, want {want!r}"


def test_alias_maps_not_opened_when_no_transport_reaches_local(inst, capsys) -> None:
    add(inst, alias_maps=f"hash:{inst}/aliases")       # local_transport = virtual
    rc, err = run_check(inst, capsys)
    assert (rc, err) == (0, ""), f"got {rc} {err!r}"


@pytest.mark.parametrize("kind,text,want", [
    ("cidr", "10.0.0.0/8 OK\n10.0.0.0/33 REJECT\n", "{t}, line 2: bad mask length"),
    ("regexp", "/a/ OK\n/b( REJECT\n", "{t}, line 2: "),
    ("texthash", "  indented first\n", "{t}, line 1: continuation line before any entry"),
    ("hash", None, "{t}.db: not an estafeta hash table"),
])
def test_malformed_table_in_restriction_warns_with_its_line(inst, capsys, kind, text, want) -> None:
    t = f"{inst}/access"
    if text is None:
        open(t + ".db", "wb").write(b"\0" * 64)
    else:
        open(t, "w").write(text)
    ln = add(inst, smtpd_client_restrictions=f"permit_mynetworks, check_client_access {kind}:{t}")
    rc, err = run_check(inst, capsys)
    head = f"estafeta: warning: {inst}/main.cf, line {ln['smtpd_client_restrictions']}: smtpd_client_restrictions: "
    assert rc == 0, f"got {rc}, want 0 (smtpd starts and answers 451 there): {err!r}"
    assert head in err and want.format(t=t) in err, f"got {err!r}, want {head!r} ... {want.format(t=t)!r}"


def test_unknown_restriction_warns(inst, capsys) -> None:
    ln = add(inst, smtpd_recipient_restrictions="permit_mynetworks, reject_bogus")
    rc, err = run_check(inst, capsys)
    want = (f"{inst}/main.cf, line {ln['smtpd_recipient_restrictions']}: smtpd_recipient_restrictions: "
            "unknown smtpd restriction: 'reject_bogus'")
    assert rc == 0 and want in err, f"got {rc} {err!r}, want {want!r}"


def test_malformed_header_checks_is_fatal(inst, capsys) -> None:
    open(f"{inst}/hc", "w").write("/ok/ WARN\nif /x/\n")
    ln = add(inst, header_checks=f"regexp:{inst}/hc")
    rc, err = run_check(inst, capsys)
    want = (f"estafeta: fatal: {inst}/main.cf, line {ln['header_checks']}: header_checks: "
            f"{inst}/hc, line 2: if has no matching endif")
    assert rc == EX_CONFIG and want in err, f"got {rc} {err!r}, want {EX_CONFIG} {want!r}"


def test_several_errors_all_shown(inst, capsys) -> None:
    ln = add(inst, canonical_maps=f"hash:{inst}/nope", body_checks=f"pcre:{inst}/nope2")
    rc, err = run_check(inst, capsys)
    assert rc == EX_CONFIG
    assert f"estafeta: error: {inst}/main.cf, line {ln['canonical_maps']}: canonical_maps: {inst}/nope.db" in err, err
    assert f"estafeta: fatal: {inst}/main.cf, line {ln['body_checks']}: body_checks: {inst}/nope2" in err, err


def test_table_named_twice_is_opened_and_reported_once(inst, capsys, monkeypatch) -> None:
    opened = []
    real = C.open_table
    monkeypatch.setattr(C, "open_table", lambda spec: opened.append(spec) or real(spec))
    ln = add(inst, local_transport="local", alias_maps=f"hash:{inst}/gone",
             mailbox_command_maps=f"hash:{inst}/gone", smtpd_sender_restrictions=f"check_sender_access hash:{inst}/gone")
    rc, err = run_check(inst, capsys)
    assert opened.count(f"hash:{inst}/gone") == 1, f"got {opened}"
    assert rc == 0 and err.count("gone.db: table file not found") == 1, err
    assert f"line {ln['alias_maps']}: alias_maps: " in err, err


def test_transport_missing_from_master_cf_warns_with_line(inst, capsys) -> None:
    open(f"{inst}/transport", "w").write("# routes\na.example smtp:[mx.a.example]\nb.example nosuch2:\n")
    estafeta_main(["-c", str(inst), "map", f"hash:{inst}/transport"])
    capsys.readouterr()
    ln = add(inst, default_transport="nosuch", transport_maps=f"hash:{inst}/transport")
    rc, err = run_check(inst, capsys)
    want1 = (f"estafeta: warning: {inst}/main.cf, line {ln['default_transport']}: default_transport = nosuch: "
             f"no unix service named 'nosuch' in {inst}/master.cf; mail routed there is deferred "
             "(mail transport unavailable)")
    want2 = (f"estafeta: warning: {inst}/transport, line 3: transport_maps ({inst}/main.cf, line "
             f"{ln['transport_maps']}) entry 'nosuch2:': no unix service named 'nosuch2'")
    assert rc == 0 and want1 in err and want2 in err, f"got {rc} {err!r}, want {want1!r} and {want2!r}"
    assert "'smtp'" not in err


def test_override_in_master_cf_is_checked_at_its_line(inst, capsys) -> None:
    mc = inst / "master.cf"
    lines = mc.read_text().splitlines()
    n = next(i for i, x in enumerate(lines, 1) if x.split()[-1:] == ["smtpd"])
    lines.insert(n, f"  -o smtpd_client_restrictions=check_client_access,cidr:{inst}/none")
    mc.write_text("\n".join(lines) + "\n")
    rc, err = run_check(inst, capsys)
    want = (f"estafeta: warning: {mc}, line {n}: service 127.0.0.1:2525: smtpd_client_restrictions: "
            f"cidr:{inst}/none is unavailable")
    assert rc == 0 and want in err, f"got {rc} {err!r}, want {want!r}"


def test_unreachable_pgsql_warns_quickly(inst, capsys) -> None:
    pytest.importorskip("psycopg")
    silent = socket.socket()                  # accepts (backlog) and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))             # bound, not listening: refused
    try:
        for name, port in (("silent", silent.getsockname()[1]), ("closed", closed.getsockname()[1])):
            open(f"{inst}/{name}.cf", "w").write(f"hosts = inet:127.0.0.1:{port}\ndbname = mail\nuser = x\n"
                                                 "query = SELECT 1 WHERE '%s' = 'x'\n")
        add(inst, smtpd_recipient_restrictions=f"check_recipient_access pgsql:{inst}/silent.cf",
            virtual_alias_maps=f"pgsql:{inst}/closed.cf")
        t0 = time.monotonic()
        rc, err = run_check(inst, capsys)
        took = time.monotonic() - t0
    finally:
        silent.close()
        closed.close()
    assert rc == 0, err
    assert took < C.PROBE_SECONDS + 2, f"check took {took:.1f} s, want under {C.PROBE_SECONDS + 2} s"
    for name in ("silent", "closed"):
        want = f"estafeta: warning: {inst}/{name}.cf: "
        assert want in err and "lookups will defer until it answers" in err, f"got {err!r}, want {want!r}"


def test_probe_budget_bounds_a_hanging_connect() -> None:
    class T:
        name, path = "pgsql:/x.cf", "/x.cf"
    t0 = time.monotonic()
    got = C.probe_pgsql([T()], budget=0.2, connect=lambda t: time.sleep(5))  # type: ignore[list-item]
    assert time.monotonic() - t0 < 1.0
    assert got == ["/x.cf: pgsql:/x.cf: no answer from the server within 0.2 s; lookups will defer until it answers"]


def test_every_table_parameter_is_covered() -> None:
    """A new *_maps, *_checks or *_restrictions parameter must be placed: opened by
    the check (GROUPS or ROUTING) or declared as not opened by any daemon."""
    covered = set(C.ROUTING) | set(C.NOT_OPENED) | {p for g in C.GROUPS for p in g.params}
    tableish = {n for n, p in PARAMS.items() if p.type is List and n.endswith(("_maps", "_checks", "_restrictions"))}
    missing = sorted(tableish - covered)
    assert not missing, f"got uncovered table parameters {missing}; add them to config/table_check.py"
    assert covered - set(PARAMS) == set(), f"got unknown names {sorted(covered - set(PARAMS))}"
    assert os.path.exists(C.__file__)
