"""What an smtpd Session needs around it in a unit test: the part of SmtpdConfig a
session reaches before MAIL's policy checks, and a transport that records what the
server wrote. Sessions run on a real event loop; the settings come from
core/smtpsettings.py as in smtpd. Used by test_daemons_smtpd_*.py."""
from __future__ import annotations

from estafeta.config.main_cf import MainConfig
from estafeta.core.smtpsettings import DiscardMaps, smtp_settings
from estafeta.daemons.smtpd import SmtpdConfig
from estafeta.proto import replies as R
from estafeta.tables import open_table


class FakeConfig:
    session_settings = SmtpdConfig.session_settings

    def __init__(self, text: str = "", opener=open_table, error_sleep: float = 0.0) -> None:
        cfg = MainConfig.parse("myhostname = mx.example.org\n" + text, "main.cf")
        self.smtp = smtp_settings(cfg)
        self.discard_maps = DiscardMaps(cfg, self.smtp, opener)
        self.hostname, self.banner, self.helo = self.smtp.hostname, self.smtp.banner, self.smtp.helo
        self.timeout, self.soft_errors, self.error_sleep = 300.0, 10, error_sleep
        self.sessions = self.max_sessions = 0
        self.board = self.acceptor = None
        self.delay_reject = True
        self.too_many_errors = R.TOO_MANY_ERRORS.with_text(f"{self.hostname} {R.TOO_MANY_ERRORS.text}")
        self.timeout_reply = R.TIMEOUT.with_text(f"{self.hostname} {R.TIMEOUT.text}")

    def in_mynetworks(self, addr: str) -> bool:
        return False


class FakeTransport:
    def __init__(self, addr: str = "192.0.2.1") -> None:
        self.addr, self.out, self.closed = addr, bytearray(), False

    def get_extra_info(self, name: str):
        return (self.addr, 40000) if name == "peername" else None

    def write(self, data: bytes) -> None:
        self.out += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass
