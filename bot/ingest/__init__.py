"""Parsing incoming alert bodies into domain `Alert`s.

Each source has a pydantic schema: a body of the wrong shape is a `PayloadError` naming the
field (the web layer answers 422), so nothing malformed reaches the inbox.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from pydantic import ValidationError

from bot.models import Alert


class PayloadError(Exception):
    """A body we refuse; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class ParsedPayload:
    alerts: list[Alert] = field(default_factory=list)
    test_notification: str | None = None  # the text of a "test" ping: answered in chat, no incident


SOURCES = ("glitchtip", "generic")


def decode_json(body: bytes) -> object:
    try:
        return json.loads(body)
    except UnicodeDecodeError as exc:
        raise PayloadError(400, f"body is not UTF-8 text: {exc}") from None
    except json.JSONDecodeError as exc:
        raise PayloadError(400, f"body is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None


def describe_validation_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def parse_payload(source: str, body: bytes) -> ParsedPayload:
    """Parse a raw body from `source`; raises PayloadError (400 not JSON, 422 wrong shape)."""
    from bot.ingest.generic import parse_generic
    from bot.ingest.glitchtip import parse_glitchtip

    data = decode_json(body)
    parser = {"glitchtip": parse_glitchtip, "generic": parse_generic}.get(source)
    if parser is None:
        raise PayloadError(404, f"unknown source {source!r}")
    try:
        return parser(data)
    except ValidationError as exc:
        raise PayloadError(422, describe_validation_error(exc)) from None
