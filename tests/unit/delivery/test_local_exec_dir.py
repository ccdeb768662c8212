"""local(8)'s command_execution_directory, forward_expansion_filter and
mailbox_command_maps, through a real LocalAgent (local_support.deliver_local): real
files, real commands.

The recipient is the user running the tests (root in CI): as root, commands run as
default_privs (nobody), so what they write goes to the world-writable work directory.
"""
import os
import pwd

import pytest

from estafeta.core import maillog
from local_support import deliver_local

ME = pwd.getpwuid(os.getuid()).pw_name
ROOT = os.geteuid() == 0
MSG = b"From: a@example.org\nSubject: hi\n\nbody\n"


@pytest.fixture
def logfile(local_dir, monkeypatch):
    path = os.path.join(local_dir, "maillog")
    monkeypatch.setattr(maillog, "log", maillog.MailLog(path=path, stderr=False, hostname="mx"))
    return lambda: open(path).read() if os.path.exists(path) else ""


def mkdir(path: str, mode: int = 0o755) -> str:
    os.mkdir(path)
    os.chmod(path, mode)
    return path


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


# -- command_execution_directory -------------------------------------------------------------

def test_commands_run_in_the_queue_directory_by_default(local_dir) -> None:
    """local(8): "The current working directory is the mail queue directory"."""
    queue = mkdir(f"{local_dir}/queue")
    r = deliver_local(local_dir, "pwdc@localhost", f'pwdc: "|pwd > {local_dir}/pwd.out"\n', MSG,
                      queue_directory=queue)
    assert r.status == "sent", r
    assert read(f"{local_dir}/pwd.out") == f"{queue}\n"


def test_command_execution_directory_expands_and_censors(local_dir) -> None:
    """$user and $extension of the recipient, each censored with
    execution_directory_expansion_filter (";" is not in it: "_")."""
    run = mkdir(f"{local_dir}/run.pwdc.a_b")
    r = deliver_local(local_dir, "pwdc+a;b@localhost", f'pwdc: "|pwd > {local_dir}/pwd.out"\n', MSG,
                      recipient_delimiter="+", command_execution_directory=f"{local_dir}/run.$user.${{extension}}")
    assert r.status == "sent", r
    assert read(f"{local_dir}/pwd.out") == f"{run}\n"
    # the filter is a parameter of its own: here ";" is allowed, "." not
    mkdir(f"{local_dir}/run2.a;b_")
    r = deliver_local(local_dir, "pwdc+a;b.@localhost", f'pwdc: "|pwd > {local_dir}/pwd2.out"\n', MSG,
                      recipient_delimiter="+", command_execution_directory=f"{local_dir}/run2.$extension",
                      execution_directory_expansion_filter="abcdefghijklmnopqrstuvwxyz;")
    assert r.status == "sent", r
    assert read(f"{local_dir}/pwd2.out") == f"{local_dir}/run2.a;b_\n"


def test_mailbox_command_in_command_execution_directory(local_dir) -> None:
    """mailbox_command too; ${name?value} and ${name:value} as in forward_path."""
    run = mkdir(f"{local_dir}/box.{ME}.none")
    r = deliver_local(local_dir, f"{ME}@localhost", "", MSG, recipient_delimiter="+",
                      mailbox_command=f"pwd > {local_dir}/pwd.out",
                      command_execution_directory=f"{local_dir}/box.$user.${{extension?ext}}${{extension:none}}")
    assert r.status == "sent", r
    assert read(f"{local_dir}/pwd.out") == f"{run}\n"


def test_missing_command_execution_directory_defers(local_dir, logfile) -> None:
    """postconf(5): "Failure to change directory causes the delivery to be deferred";
    the command does not run."""
    ran = f"{local_dir}/ran"
    r = deliver_local(local_dir, "c@localhost", f'c: "|touch {ran}"\n', MSG,
                      command_execution_directory=f"{local_dir}/nowhere/$user")
    assert (r.status, r.dsn, r.reason) == ("deferred", "4.3.0", "temporary failure"), r
    assert not os.path.exists(ran), "the command ran"
    assert f'QID1: cannot change directory to "{local_dir}/nowhere/c" for uid=' in logfile(), logfile()
    assert "No such file or directory" in logfile()


@pytest.mark.skipif(not ROOT, reason="needs root: the directory is entered as default_privs")
def test_command_execution_directory_is_entered_with_the_commands_rights(local_dir) -> None:
    """root (the agent) could enter a 0700 root directory; nobody, who runs the
    command, cannot: deferred, as under Postfix (the chdir follows the switch)."""
    mkdir(f"{local_dir}/private", 0o700)
    ran = f"{local_dir}/ran"
    r = deliver_local(local_dir, "c@localhost", f'c: "|touch {ran}"\n', MSG,
                      command_execution_directory=f"{local_dir}/private")
    assert (r.status, r.dsn) == ("deferred", "4.3.0"), r
    assert not os.path.exists(ran), "the command ran"


def test_bad_command_execution_directory_syntax_defers(local_dir) -> None:
    r = deliver_local(local_dir, "c@localhost", 'c: "|true"\n', MSG, command_execution_directory="/tmp/${user")
    assert (r.status, r.dsn, r.reason) == ("deferred", "4.3.5", "mail system configuration error"), r


# -- forward_path and forward_expansion_filter -------------------------------------------------

def forward_to_file(local_dir: str, name: str) -> str:
    """A .forward named `name` that delivers to a file; the file's path."""
    box = f"{local_dir}/{name}.mbox"
    with open(f"{local_dir}/{name}", "w") as f:
        f.write(f"{box}\n")
    return box


def test_forward_expansion_filter_censors_forward_path_values(local_dir) -> None:
    """$extension "a;b" becomes "a_b" (";" is not in the default filter)."""
    box = forward_to_file(local_dir, "fwd.a_b")
    r = deliver_local(local_dir, f"{ME}+a;b@localhost", "", MSG, recipient_delimiter="+",
                      forward_path=f"{local_dir}/fwd.$extension")
    assert r.status == "sent" and r.reason == f"delivered to file: {box}", r
    assert os.path.getsize(box) > 0


def test_forward_expansion_filter_is_its_own_parameter(local_dir) -> None:
    """Only the values are censored, not forward_path's own text ("." and "/" stay)."""
    box = forward_to_file(local_dir, "fwd.x_z")
    r = deliver_local(local_dir, f"{ME}+xyz@localhost", "", MSG, recipient_delimiter="+",
                      forward_path=f"{local_dir}/fwd.$extension", forward_expansion_filter="xz")
    assert r.status == "sent" and r.reason == f"delivered to file: {box}", r


def test_forward_path_macros(local_dir) -> None:
    """$local, $domain, $recipient and $recipient_delimiter: the delimiter that was found
    in the address (one of recipient_delimiter's characters). $local is folded to lower
    case, $recipient is the address as given."""
    box = forward_to_file(local_dir, f"fwd.{ME}-tag.localhost.-.{ME}-Tag@localhost")
    r = deliver_local(local_dir, f"{ME}-Tag@localhost", "", MSG, recipient_delimiter="+-",
                      forward_path=f"{local_dir}/fwd.$local.$domain.${{recipient_delimiter}}.$recipient")
    assert r.status == "sent" and r.reason == f"delivered to file: {box}", r


def test_forward_path_value_is_not_expanded_again(local_dir) -> None:
    """A "$" that the filter lets through stays text: it is the sender's, not main.cf's."""
    box = forward_to_file(local_dir, "fwd.$myhostname")
    r = deliver_local(local_dir, f"{ME}+$myhostname@localhost", "", MSG, recipient_delimiter="+",
                      forward_path=f"{local_dir}/fwd.$extension",
                      forward_expansion_filter="abcdefghijklmnopqrstuvwxyz$$")  # "$$": main.cf
    assert r.status == "sent" and r.reason == f"delivered to file: {box}", r


# -- mailbox_command_maps ----------------------------------------------------------------------

def test_mailbox_command_maps_hit_and_miss(local_dir) -> None:
    """Keyed by the bare user name (no extension, no domain), before mailbox_command;
    a user the tables do not name gets mailbox_command, or without it the mailbox."""
    with open(f"{local_dir}/cmdmaps", "w") as f:
        f.write(f'{ME} echo "map $EXTENSION" > {local_dir}/map.out\n')
    maps = f"texthash:{local_dir}/cmdmaps"
    r = deliver_local(local_dir, f"{ME}+x@localhost", "", MSG, recipient_delimiter="+", mailbox_command_maps=maps,
                      mailbox_command=f"echo param > {local_dir}/param.out")
    assert r.status == "sent" and r.reason == f'delivered to command: echo "map $EXTENSION" > {local_dir}/map.out', r
    assert read(f"{local_dir}/map.out") == "map x\n", "the shell expands $EXTENSION, not the agent"
    assert not os.path.exists(f"{local_dir}/param.out")
    with open(f"{local_dir}/cmdmaps", "w") as f:
        f.write(f"someone-else echo map > {local_dir}/map2.out\n")
    r = deliver_local(local_dir, f"{ME}@localhost", "", MSG, mailbox_command_maps=maps,
                      mailbox_command=f"echo param > {local_dir}/param.out")
    assert r.status == "sent" and read(f"{local_dir}/param.out") == "param\n", r
    r = deliver_local(local_dir, f"{ME}@localhost", "", MSG, mailbox_command_maps=maps)
    assert r.status == "sent" and r.reason == "delivered to mailbox", r
    assert not os.path.exists(f"{local_dir}/map2.out")


def test_mailbox_command_maps_runs_as_mailbox_command(local_dir) -> None:
    """Same rights, limits and working directory as mailbox_command."""
    run = mkdir(f"{local_dir}/run")
    with open(f"{local_dir}/cmdmaps", "w") as f:
        f.write(f"{ME} (id -u; pwd; ulimit -f) > {local_dir}/out\n")
    r = deliver_local(local_dir, f"{ME}@localhost", "", MSG, mailbox_command_maps=f"texthash:{local_dir}/cmdmaps",
                      command_execution_directory=run, mailbox_size_limit="1024000")
    assert r.status == "sent", r
    uid = pwd.getpwnam("nobody").pw_uid if ROOT else os.getuid()
    assert read(f"{local_dir}/out").split() == [str(uid), run, str(1024000 // 512)]


def test_mailbox_command_maps_failure_defers(local_dir) -> None:
    """A table that cannot answer, or a regexp result with $n (the key is the
    sender's choice: no substitution, as Postfix), defers."""
    ran = f"{local_dir}/ran"
    r = deliver_local(local_dir, f"{ME}@localhost", "", MSG, mailbox_command_maps="nosuchtype:/x",
                      mailbox_command=f"touch {ran}")
    assert (r.status, r.dsn, r.reason) == ("deferred", "4.3.0", "table lookup failure"), r
    with open(f"{local_dir}/re", "w") as f:
        f.write(f"/^(.*)$/ touch {local_dir}/$1\n")
    r = deliver_local(local_dir, f"{ME}@localhost", "", MSG, mailbox_command_maps=f"regexp:{local_dir}/re")
    assert (r.status, r.dsn, r.reason) == ("deferred", "4.3.0", "table lookup failure"), r
    assert not os.path.exists(ran) and not os.path.exists(f"{local_dir}/{ME}")
