"""Shared by the local agent's tests: a world-writable work directory with a spool
(local_support.py delivers into it)."""
import os
import shutil
import tempfile

import pytest


@pytest.fixture
def local_dir():
    # Under /tmp, mode 1777 (spool too): as root the agent writes as the user or as
    # default_privs (nobody), who cannot enter pytest's tmp_path.
    d = tempfile.mkdtemp(prefix="estafeta-local-", dir="/tmp")
    os.chmod(d, 0o1777)
    os.mkdir(os.path.join(d, "spool"))
    os.chmod(os.path.join(d, "spool"), 0o1777)
    yield d
    shutil.rmtree(d, ignore_errors=True)
