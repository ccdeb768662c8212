"""Fixtures shared by every test directory that runs real instances."""
import pytest

from estafeta.testing.instance import Instance


@pytest.fixture
def instance_factory():
    """make(main={...}, master_extra="...", start=True): real instances, each in its own
    directory on a free port, stopped and removed after the test."""
    made = []

    def make(main=None, master_extra="", start=True):
        inst = Instance(main=main, master_extra=master_extra).init()
        made.append(inst)
        if start:
            inst.start()
        return inst

    yield make
    for inst in made:
        inst.cleanup()


@pytest.fixture
def instance(instance_factory):
    return instance_factory()
