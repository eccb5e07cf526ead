"""Alerts from whatever a person pastes on the command line: JSON (GlitchTip, generic, or a
corpus record with `title` + `stacktrace`), a JSON-lines file, or plain text."""

from __future__ import annotations

import json
from collections.abc import Iterable

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


def alerts_from_lines(lines: Iterable[str]) -> list[tuple[int, list[Alert] | PayloadError]]:
    """Each non-blank line of a JSON-lines file -> (line number, its alerts or the error)."""
    out: list[tuple[int, list[Alert] | PayloadError]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            out.append((number, alerts_from_text(line)))
        except PayloadError as exc:
            out.append((number, exc))
    return out


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True
