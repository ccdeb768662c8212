"""proxy:TYPE:NAME tables: TYPE:NAME opened in the asking process, approved by
proxy_read_maps (Postfix's proxymap(8) rule, checked by `estafeta check` and
`estafeta map`). Answers are compared with the plain table, and with Debian's
postmap -q on the plain table where it can read it (postmap itself only reaches
proxy: through a running proxymap daemon)."""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess

import pytest

from estafeta.cli.main import EX_CONFIG
from estafeta.cli.main import main as estafeta_main
from estafeta.config.params import PARAMS
from estafeta.core.errors import ConfigError
from estafeta.tables import (TableList, open_table, proxied_name, proxy_read_approved, split_table_list,
                             unapproved_proxy_reads)
from estafeta.tables import hash as hash_table
from estafeta.tables.lookup import first_match

POSTMAP = shutil.which("postmap") or "/usr/sbin/postmap"
VIRTUAL = "alice@example.com alice@mail.example\n@example.org catchall@example.com\nBob   bob@elsewhere\n"
CIDR = "192.168.1.1 OK\n192.168.0.0/16 REJECT\n2001:db8::/32 REJECT blocked\n"


@pytest.fixture
def files(tmp_path):
    v = tmp_path / "virtual"
    v.write_text(VIRTUAL)
    hash_table.build(str(v), hash_table.source_pairs(str(v)))
    c = tmp_path / "cidr"
    c.write_text(CIDR)
    return str(v), str(c)


def plain_and_proxy(spec: str, keys: list[str]) -> None:
    plain = open_table(spec)
    proxied = open_table("proxy:" + spec)
    got = {k: proxied.lookup(k) for k in keys}
    want = {k: plain.lookup(k) for k in keys}
    assert got == want, f"proxy:{spec}: got {got}, want {want}"
    assert proxied.name == plain.name, f"got name {proxied.name!r}, want {plain.name!r}"


def test_proxy_hash_and_texthash_answer_as_the_table(files) -> None:
    v, _ = files
    keys = ["alice@example.com", "ALICE@example.com", "@example.org", "bob", "nobody@example.com"]
    plain_and_proxy(f"hash:{v}", keys)
    plain_and_proxy(f"texthash:{v}", keys)
    assert open_table(f"proxy:hash:{v}").lookup("bob") == "bob@elsewhere"


def test_proxy_cidr_answers_as_the_table_and_stays_a_pattern_table(files) -> None:
    _, c = files
    plain_and_proxy(f"cidr:{c}", ["192.168.1.1", "192.168.7.7", "10.0.0.1", "2001:db8::1", "not-an-ip"])
    # Pattern tables are asked once, with the whole string, never with partial keys.
    t = open_table(f"proxy:cidr:{c}")
    assert first_match([t], ["192.168.7.7", "192.168.7", "192.168"]) == ("192.168.7.7", "REJECT")


def test_proxy_unix_passwd_byname() -> None:
    root = pwd.getpwnam("root")
    t = open_table("proxy:unix:passwd.byname")
    assert t.lookup("root") == f"root:x:0:0:{root.pw_gecos}:{root.pw_dir}:{root.pw_shell}"
    assert t.lookup("no-such-user-here") is None


def test_default_local_recipient_maps_is_postfix_and_opens() -> None:
    assert PARAMS["local_recipient_maps"].default == "proxy:unix:passwd.byname $alias_maps"
    assert TableList("proxy:unix:passwd.byname, static:x").lookup("root").startswith("root:x:0:0:")


@pytest.mark.parametrize("spec,want", [
    ("proxy:proxy:hash:/etc/x", "proxy:proxy:hash:/etc/x: nested proxy: table: write proxy:type:name, "
                                "with one proxy: prefix"),
    ("proxy:/etc/x", "proxy:/etc/x: proxy: table must be written proxy:type:name"),
    ("proxy:nis:mail.aliases", "nis:mail.aliases: unsupported table type 'nis'"),
])
def test_bad_proxy_specs_are_refused(spec, want) -> None:
    with pytest.raises(ConfigError) as e:
        open_table(spec)
    assert str(e.value).startswith(want), f"got {e.value}, want {want!r}..."


def test_proxied_name_strips_every_prefix() -> None:
    assert proxied_name("proxy:hash:/x") == "hash:/x"
    assert proxied_name("proxy:proxy:hash:/x") == "hash:/x"
    assert proxied_name("hash:/x") is None


def test_approved_tables_are_the_proxy_items_of_proxy_read_maps() -> None:
    value = ("proxy:unix:passwd.byname hash:/etc/aliases check_client_access proxy:cidr:/c, "
             "permit_mynetworks proxy:proxy:texthash:/t proxy:nocolon")
    assert proxy_read_approved(value) == {"unix:passwd.byname", "cidr:/c", "texthash:/t"}


def test_unapproved_table_gets_postfix_text() -> None:
    approved = proxy_read_approved("proxy:hash:/a")
    got = unapproved_proxy_reads("check_sender_access proxy:hash:/a, proxy:hash:/b hash:/c proxy:hash:/b", approved)
    want = ['request for unapproved table: "hash:/b"; to approve this table for read-only access, '
            "list proxy:hash:/b in main.cf:proxy_read_maps"]
    assert got == want, f"got {got}, want {want}"


def test_proxy_read_maps_default_is_postfix_and_approves_the_default_recipient_table(tmp_path) -> None:
    from estafeta.config.main_cf import MainConfig
    cfg = MainConfig(path=str(tmp_path / "main.cf"))
    assert "unix:passwd.byname" in proxy_read_approved(cfg.get("proxy_read_maps"))
    assert split_table_list(PARAMS["proxy_read_maps"].default)[0] == "$local_recipient_maps"


@pytest.mark.skipif(not os.path.exists(POSTMAP), reason="no postmap")
def test_answers_match_postmap_on_the_plain_table(files, tmp_path) -> None:
    v, c = files
    cf = tmp_path / "postfix"
    cf.mkdir()
    (cf / "main.cf").write_text("")
    env = dict(os.environ, MAIL_CONFIG=str(cf))
    cases = [(f"texthash:{v}", "alice@example.com"), (f"texthash:{v}", "bob"), (f"texthash:{v}", "x@y"),
             (f"cidr:{c}", "192.168.7.7"), (f"cidr:{c}", "2001:db8::5"), (f"cidr:{c}", "10.1.1.1"),
             ("unix:passwd.byname", "root"), ("unix:passwd.byname", "no-such-user-here")]
    for spec, key in cases:
        p = subprocess.run([POSTMAP, "-q", key, spec], env=env, capture_output=True, text=True, timeout=20)
        want = p.stdout.rstrip("\n") if p.returncode == 0 else None
        got = open_table("proxy:" + spec).lookup(key)
        assert got == want, f"proxy:{spec} {key}: got {got!r}, want postmap's {want!r} ({p.stderr.strip()})"


# --- estafeta check and estafeta map on an instance ---------------------------------------

@pytest.fixture
def inst(tmp_path, capsys):
    d = tmp_path / "etc"
    estafeta_main(["-c", str(d), "init"])
    capsys.readouterr()
    return d


def add(d, **settings: str) -> dict[str, int]:
    path = d / "main.cf"
    n = len(path.read_text().splitlines())
    lines = {}
    with open(path, "a") as f:
        for name, value in settings.items():
            n += 1
            f.write(f"{name} = {value}\n")
            lines[name] = n
    return lines


def run(d, capsys, *argv: str) -> tuple[int, str, str]:
    try:
        rc = estafeta_main(["-c", str(d), *argv])
    except ConfigError as e:          # main() may raise it for `check`; print as the CLI does
        rc, extra = EX_CONFIG, f"estafeta: fatal: {e}\n"
    else:
        extra = ""
    out = capsys.readouterr()
    return rc, out.out, out.err + extra


def test_check_accepts_listed_proxy_tables(inst, files, capsys) -> None:
    v, c = files
    add(inst, virtual_alias_maps=f"proxy:hash:{v}, proxy:texthash:{v}",
        smtpd_client_restrictions=f"check_client_access proxy:cidr:{c}")
    rc, _, err = run(inst, capsys, "check")
    assert (rc, err) == (0, ""), f"got {rc} {err!r}, want 0 and no output"


def test_check_refuses_unapproved_table_with_file_and_line(inst, files, capsys) -> None:
    v, _ = files
    ln = add(inst, smtpd_data_restrictions=f"check_sender_access proxy:hash:{v}")
    rc, _, err = run(inst, capsys, "check")
    want = (f"{inst}/main.cf, line {ln['smtpd_data_restrictions']}: smtpd_data_restrictions: request for "
            f'unapproved table: "hash:{v}"; to approve this table for read-only access, list proxy:hash:{v} '
            "in main.cf:proxy_read_maps")
    assert rc == EX_CONFIG and want in err, f"got {rc} {err!r}, want {EX_CONFIG} and {want!r}"


def test_check_follows_an_explicit_proxy_read_maps(inst, files, capsys) -> None:
    v, _ = files
    add(inst, smtpd_data_restrictions=f"check_sender_access proxy:hash:{v}",
        proxy_read_maps=f"$local_recipient_maps proxy:hash:{v}")
    rc, _, err = run(inst, capsys, "check")
    assert (rc, err) == (0, ""), f"got {rc} {err!r}, want 0 and no output"
    # Without $local_recipient_maps, Postfix's proxy:unix:passwd.byname there is unapproved.
    add(inst, local_recipient_maps="proxy:unix:passwd.byname", proxy_read_maps=f"proxy:hash:{v}")
    rc, _, err = run(inst, capsys, "check")
    want = 'local_recipient_maps: request for unapproved table: "unix:passwd.byname"'
    assert rc == EX_CONFIG and want in err, f"got {rc} {err!r}, want {want!r}"


def test_check_names_file_and_line_of_a_bad_proxy_value(inst, files, capsys) -> None:
    v, _ = files
    ln = add(inst, canonical_maps=f"proxy:proxy:hash:{v}")
    rc, _, err = run(inst, capsys, "check")
    want = (f"{inst}/main.cf, line {ln['canonical_maps']}: canonical_maps: proxy:proxy:hash:{v}: "
            "nested proxy: table")
    assert rc == EX_CONFIG and want in err, f"got {rc} {err!r}, want {want!r}"


def test_check_approves_master_cf_overrides_against_main_cf(inst, files, capsys) -> None:
    _, c = files
    mc = inst / "master.cf"
    lines = mc.read_text().splitlines()
    n = next(i for i, x in enumerate(lines, 1) if x.split()[-1:] == ["smtpd"])
    lines.insert(n, f"  -o smtpd_end_of_data_restrictions=check_client_access,proxy:cidr:{c}")
    mc.write_text("\n".join(lines) + "\n")
    rc, _, err = run(inst, capsys, "check")
    want = (f"{mc}, line {n}: service 127.0.0.1:2525: smtpd_end_of_data_restrictions: request for unapproved "
            f'table: "cidr:{c}"')
    assert rc == EX_CONFIG and want in err, f"got {rc} {err!r}, want {want!r}"


def test_map_queries_an_approved_proxy_table(inst, files, capsys) -> None:
    v, c = files
    add(inst, virtual_alias_maps=f"proxy:hash:{v}", smtpd_client_restrictions=f"check_client_access proxy:cidr:{c}",
        local_recipient_maps="proxy:unix:passwd.byname")
    assert run(inst, capsys, "map", "-q", "alice@example.com", f"proxy:hash:{v}")[:2] == (0, "alice@mail.example\n")
    assert run(inst, capsys, "map", "-q", "192.168.3.4", f"proxy:cidr:{c}")[:2] == (0, "REJECT\n")
    assert run(inst, capsys, "map", "-q", "nobody@x", f"proxy:hash:{v}")[:2] == (1, "")
    rc, out, _ = run(inst, capsys, "map", "-q", "root", "proxy:unix:passwd.byname")
    assert rc == 0 and out.startswith("root:x:0:0:"), f"got {rc} {out!r}"


def test_map_refuses_unapproved_query_and_building_through_proxy(inst, files, capsys) -> None:
    v, _ = files
    rc, _, err = run(inst, capsys, "map", "-q", "bob", f"proxy:texthash:{v}")
    want = f'estafeta: fatal: proxymap service is not configured for table "texthash:{v}"'
    assert rc == EX_CONFIG and want in err, f"got {rc} {err!r}, want {want!r}"
    rc, _, err = run(inst, capsys, "map", f"proxy:hash:{v}")
    want = f"cannot build a table through proxy: (read only); build hash:{v}"
    assert rc == EX_CONFIG and want in err, f"got {rc} {err!r}, want {want!r}"
