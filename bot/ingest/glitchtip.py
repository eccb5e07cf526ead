"""GlitchTip's "General Slack-compatible webhook" body (see shared/glitchtip/README.md).

Both variants are accepted (with and without `alias`/`sections`), unknown keys are ignored,
`text` and `fields` may be null, and one POST may carry up to three issues.

Long text is cut, never refused (a real tracker must not get a 422 for a long title); only a
body with more issues than GlitchTip ever sends is refused, so one POST cannot open thousands
of incidents.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from bot.fingerprint import glitchtip_fingerprint, glitchtip_ids, title_fingerprint
from bot.ingest import (
    MAX_FIELDS,
    MAX_ISSUES_PER_BODY,
    CappedMessage,
    CappedName,
    CappedTitle,
    CappedUrl,
    CappedValue,
    ParsedPayload,
)
from bot.models import Alert, AlertKind

TEST_TEXT = "GlitchTip Test Notification"
UPTIME_TEXT = "GlitchTip Uptime Alert"


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore")


class GlitchTipField(_Loose):
    title: CappedName
    value: CappedValue | None = None


class GlitchTipAttachment(_Loose):
    title: CappedTitle = Field(min_length=1)
    title_link: CappedUrl | None = None
    text: CappedMessage | None = None
    color: CappedName | None = None
    fields: list[GlitchTipField] | None = None

    @field_validator("fields", mode="before")
    @classmethod
    def _first_fields(cls, value: Any) -> Any:
        # GlitchTip sends a handful; more would only be tags nobody reads on a card.
        return value[:MAX_FIELDS] if isinstance(value, list) else value


class GlitchTipSection(_Loose):
    activityTitle: CappedTitle | None = None  # noqa: N815 - GlitchTip's key
    activitySubtitle: CappedTitle | None = None  # noqa: N815


class GlitchTipPayload(_Loose):
    text: CappedMessage | None = None
    alias: CappedName | None = None
    attachments: list[GlitchTipAttachment] = Field(min_length=1)
    sections: list[GlitchTipSection] | None = None

    @field_validator("attachments", mode="before")
    @classmethod
    def _at_most_a_few_issues(cls, value: Any) -> Any:
        # Checked before the items are validated: a 5,000-issue body costs one len().
        if isinstance(value, list) and len(value) > MAX_ISSUES_PER_BODY:
            raise PydanticCustomError(
                "too_many_issues",
                "at most {limit} issues per body (GlitchTip sends up to 3); this one has {count}",
                {"limit": MAX_ISSUES_PER_BODY, "count": len(value)},
            )
        return value

    @field_validator("sections", mode="before")
    @classmethod
    def _first_sections(cls, value: Any) -> Any:
        # One section per issue in the older variant; more than the issue limit are never read.
        return value[:MAX_ISSUES_PER_BODY] if isinstance(value, list) else value


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
    """Uptime only for a monitor: its link is `/uptime-monitors/N` (what GlitchTip always sends), or
    there is no link and the text says uptime. A body's text claims anything: "GlitchTip Uptime
    Alert" over an issue link is an ordinary error about that issue, never a "back up" for it."""
    ids = glitchtip_ids(att.title_link)
    if ids is not None:
        is_uptime = ids[1] == "monitor"
    else:
        is_uptime = not att.title_link and (payload.text or "").startswith(UPTIME_TEXT)
    if not is_uptime:
        return AlertKind.ERROR
    return AlertKind.UPTIME_UP if "back up" in (att.text or "").lower() else AlertKind.UPTIME_DOWN


def parse_glitchtip(data: object) -> ParsedPayload:
    payload = GlitchTipPayload.model_validate(data)
    if (payload.text or "").strip().startswith(TEST_TEXT):
        first = payload.attachments[0]
        return ParsedPayload(test_notification=first.title)
    short_ids = _short_ids(payload.sections)
    return ParsedPayload(alerts=[_attachment_alert(a, _kind(payload, a), short_ids) for a in payload.attachments])
