"""Fixtures for the daemons' unit tests."""
from __future__ import annotations

import pytest

from estafeta.core import maillog


@pytest.fixture
def logged(monkeypatch) -> list[str]:
    """The maillog's info and warning lines of the test, in order ("warning: " marked)."""
    lines: list[str] = []
    monkeypatch.setattr(maillog.log, "info", lambda m: lines.append(m))
    monkeypatch.setattr(maillog.log, "warning", lambda m: lines.append("warning: " + m))
    return lines
