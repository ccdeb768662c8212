"""Runs every tests/dialogs/settings/*.dialog against a codec and replies built from
main.cf by core/smtpsettings.py, as smtpd and sendmail -bs build them.

In these files an "@name = value" line is a main.cf setting (on top of
myhostname = mx.test); "@sendmail-bs = 1" builds the settings as sendmail -bs
does (no DSN); "@client = 192.0.2.7" is the client address that
smtpd_discard_ehlo_keyword_address_maps is asked with, as smtpd asks it at connect
(default 127.0.0.1). The rest of the format is tests/dialogs' (estafeta/testing/dialog.py).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from estafeta.config.main_cf import MainConfig
from estafeta.core.smtpsettings import DiscardMaps, SmtpSettings, smtp_settings
from estafeta.proto.events import Ehlo, Event, Helo, Vrfy
from estafeta.proto.replies import Reply
from estafeta.tables import open_table
from estafeta.testing.dialog import HOSTNAME, AcceptAllDriver, InMemoryPeer, run_dialog

DIALOGS = sorted((Path(__file__).parent / "settings").glob("*.dialog"))


class SettingsDriver(AcceptAllDriver):
    def __init__(self, settings: SmtpSettings) -> None:
        super().__init__(settings.connection())
        self.settings = settings

    def handle(self, ev: Event) -> Reply | None:
        if isinstance(ev, Ehlo):
            return self.settings.ehlo
        if isinstance(ev, Helo):
            return self.settings.helo
        if isinstance(ev, Vrfy):
            return self.settings.vrfy
        return super().handle(ev)


class SettingsPeer(InMemoryPeer):
    def __init__(self, **options: Any) -> None:
        bs = bool(options.pop("sendmail-bs", 0))
        client = str(options.pop("client", "127.0.0.1"))
        text = f"myhostname = {HOSTNAME}\n" + "".join(f"{k} = {v}\n" for k, v in options.items())
        cfg = MainConfig.parse(text, "main.cf")
        settings = smtp_settings(cfg, dsn=not bs)
        maps = DiscardMaps(cfg, settings, open_table, dsn=not bs)
        assert not maps.problems, maps.problems
        settings = maps.settings_for(client)
        super().__init__()
        self.driver = SettingsDriver(settings)
        self.conn = self.driver.conn
        self._out = bytearray(self.conn.send(settings.banner))


@pytest.mark.parametrize("path", DIALOGS, ids=[p.stem for p in DIALOGS])
def test_settings_dialog(path: Path) -> None:
    problems = run_dialog(path.read_text(encoding="utf-8"), SettingsPeer)
    assert not problems, "\n".join(problems)


def test_there_are_dialogs() -> None:
    assert len(DIALOGS) >= 4, f"got {[p.name for p in DIALOGS]}"
