"""Logging set-up: every log line passes through the redactor, so secrets never reach a log."""

from __future__ import annotations

import logging

from bot.redact import Redactor


class RedactingFilter(logging.Filter):
    """Masks secrets in a record's message, arguments, traceback and stack before any handler formats it.

    Installed on the handler (a logger's filter would miss records propagated from child
    loggers). The record is rewritten in place, so every later handler sees the masked text.
    """

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        message = _message_of(record)
        redacted = self.redactor.redact(message)
        if redacted != message or record.args or not isinstance(record.msg, str):
            record.msg, record.args = redacted, None
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = self.redactor.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redactor.redact(record.stack_info)
        return True


def _message_of(record: logging.LogRecord) -> str:
    """The formatted message; for a call whose arguments do not fit its format, both side by side.

    Left to the handler, a bad format would be reported by `Handler.handleError`, which
    prints the raw arguments (unredacted) to stderr.
    """
    try:
        return record.getMessage()
    except Exception:
        return f"{record.msg} (log arguments did not fit the format: {record.args!r})"


def configure_logging(level: str, redactor: Redactor) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter(redactor))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiogram.event", "apscheduler", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
