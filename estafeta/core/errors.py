"""Failure kinds. Every failure is temporary or permanent (STYLE 5).

TempFail: try again later (SMTP 4xx, defer). PermFail: never works (5xx, bounce).
Each carries the enhanced status code and a human reason for logs and notices.
"""
from __future__ import annotations


class MailError(Exception):
    temporary: bool = True

    def __init__(self, reason: str, dsn: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.dsn = dsn or ("4.3.0" if self.temporary else "5.3.0")


class TempFail(MailError):
    temporary = True


class PermFail(MailError):
    temporary = False


class ConfigError(Exception):
    """A configuration problem, always naming the file and line."""

    def __init__(self, path: str, line: int, problem: str) -> None:
        super().__init__(f"{path}, line {line}: {problem}" if line else f"{path}: {problem}")
        self.path = path
        self.line = line
        self.problem = problem
