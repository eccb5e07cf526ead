"""Alerts from whatever a person pastes on the command line: JSON (GlitchTip, generic, or a
corpus record with `title` + `stacktrace`), a JSON-lines file, or plain text."""

from __future__ import annotations

import json

from bot.fingerprint import title_fingerprint
from bot.ingest import PayloadError, parse_payload
from bot.models import Alert, AlertKind


def alerts_from_text(text: str) -> list[Alert]:
    """One input (a JSON object or plain text) -> its alerts. Raises PayloadError on bad JSON shape."""
    stripped = text.strip()
    if not stripped:
        raise PayloadError(400, "empty input")
    if stripped.startswith("{"):
        data = json.loads(stripped) if _is_json(stripped) else None
        if isinstance(data, dict):
            source = "glitchtip" if "attachments" in data else "generic"
            parsed = parse_payload(source, stripped.encode())
            return parsed.alerts
    first, _, rest = stripped.partition("\n")
    return [
        Alert(source="generic", kind=AlertKind.ERROR, title=first.strip()[:2000],
              fingerprint=title_fingerprint(first, None, None), stacktrace=rest.strip())
    ]


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True
