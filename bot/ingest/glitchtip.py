"""GlitchTip's "General Slack-compatible webhook" body (see shared/glitchtip/README.md).

Both variants are accepted (with and without `alias`/`sections`), unknown keys are ignored,
`text` and `fields` may be null, and one POST may carry up to three issues.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field

from bot.fingerprint import glitchtip_fingerprint, glitchtip_ids, title_fingerprint
from bot.ingest import ParsedPayload
from bot.models import Alert, AlertKind

TEST_TEXT = "GlitchTip Test Notification"
UPTIME_TEXT = "GlitchTip Uptime Alert"


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore")


class GlitchTipField(_Loose):
    title: str
    value: str | None = None


class GlitchTipAttachment(_Loose):
    title: str = Field(min_length=1)
    title_link: str | None = None
    text: str | None = None
    color: str | None = None
    fields: list[GlitchTipField] | None = None


class GlitchTipSection(_Loose):
    activityTitle: str | None = None  # noqa: N815 - GlitchTip's key
    activitySubtitle: str | None = None  # noqa: N815


class GlitchTipPayload(_Loose):
    text: str | None = None
    alias: str | None = None
    attachments: list[GlitchTipAttachment] = Field(min_length=1)
    sections: list[GlitchTipSection] | None = None


_SHORT_ID = re.compile(r"\[View Issue ([A-Z0-9][A-Z0-9_-]*-[A-Z0-9]+)\]\((\S+?)\)")
_KNOWN_FIELDS = {"project": "project", "environment": "environment", "server name": "server", "release": "release"}
_COLOR_LEVEL = {"#e52b50": "error", "#4b60b4": "info"}


def _short_ids(sections: list[GlitchTipSection] | None) -> dict[str, str]:
    """title_link -> short id (PROJECT-3F); only older GlitchTip sends them, in sections."""
    found = {}
    for section in sections or []:
        match = _SHORT_ID.search(section.activitySubtitle or "")
        if match:
            found[match.group(2)] = match.group(1)
    return found


def _attachment_alert(att: GlitchTipAttachment, kind: AlertKind, short_ids: dict[str, str]) -> Alert:
    known: dict[str, str | None] = {}
    tags: dict[str, str] = {}
    for fld in att.fields or []:
        key = fld.title.strip().lower()
        if key in _KNOWN_FIELDS:
            known[_KNOWN_FIELDS[key]] = fld.value
        elif fld.value is not None:
            tags[key] = fld.value
    link = att.title_link or None
    if link and link in short_ids:
        tags["short_id"] = short_ids[link]
    ids = glitchtip_ids(link)
    if ids:
        fingerprint = glitchtip_fingerprint(*ids)
        external_id = ids[2]
    else:
        fingerprint = title_fingerprint(att.title, known.get("project"), known.get("environment"))
        external_id = None
    return Alert(
        source="glitchtip",
        kind=kind,
        title=att.title,
        fingerprint=fingerprint,
        message=att.text or "",
        level=_COLOR_LEVEL.get((att.color or "").lower()),
        project=known.get("project"),
        environment=known.get("environment"),
        release=known.get("release"),
        server=known.get("server"),
        url=link,
        external_id=external_id,
        tags=tags,
    )


def _kind(payload: GlitchTipPayload, att: GlitchTipAttachment) -> AlertKind:
    link = att.title_link or ""
    if "/uptime-monitors/" in link or (payload.text or "").startswith(UPTIME_TEXT):
        return AlertKind.UPTIME_UP if "back up" in (att.text or "").lower() else AlertKind.UPTIME_DOWN
    return AlertKind.ERROR


def parse_glitchtip(data: object) -> ParsedPayload:
    payload = GlitchTipPayload.model_validate(data)
    if (payload.text or "").strip().startswith(TEST_TEXT):
        first = payload.attachments[0]
        return ParsedPayload(test_notification=first.title)
    short_ids = _short_ids(payload.sections)
    return ParsedPayload(alerts=[_attachment_alert(a, _kind(payload, a), short_ids) for a in payload.attachments])
