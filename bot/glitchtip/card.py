"""The card's GlitchTip lines: what the API added, or plainly why it could not.

Every value is escaped here (it was redacted and cut when it was stored); bot/card_render.py
places the lines and keeps the card under Telegram's limit with the proposal line kept.
"""

from __future__ import annotations

from datetime import datetime

from bot.card_render import CardExtras, esc
from bot.glitchtip.details import IssueDetails, MonitorDetails, stored_issue_details
from bot.models import Incident
from storage.db import Executor
from storage.glitchtip import GlitchTipLink, GlitchTipRepository


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "?"


async def glitchtip_card_extras(tx: Executor, incident: Incident) -> CardExtras | None:
    """What the card of this incident gains from GlitchTip's API (None: not a linked incident)."""
    link = await GlitchTipRepository(tx).link(incident.id)
    return card_extras(link, incident) if link is not None else None


def card_extras(link: GlitchTipLink, incident: Incident) -> CardExtras:
    if link.kind == "monitor":
        return CardExtras(details=tuple(_monitor_lines(link)))
    details = stored_issue_details(link)
    return CardExtras(
        counts=_counts_line(details, incident) if details and details.count is not None else None,
        about=tuple(_about_lines(details, incident)) if details else (),
        events=tuple(_event_lines(link, incident)),
        details=tuple(_detail_lines(link, details, incident)),
        state=tuple(_resolve_lines(link)),
    )


def _counts_line(details: IssueDetails, incident: Incident) -> str:
    """GlitchTip's own count and times: GlitchTip alerts once, so the bot's own count stays at 1."""
    line = (f"🔁 ×{details.count:,} in GlitchTip · first {_when(details.first_seen or incident.first_seen)}"
            f" · last {_when(details.last_seen or incident.last_seen)}")
    if incident.count > 1:
        line += f" · {incident.count:,} alerts here"
    return line


def _about_lines(details: IssueDetails, incident: Incident) -> list[str]:
    parts = []
    if details.culprit and details.culprit != incident.message:
        parts.append(f"🎯 <code>{esc(details.culprit, 300)}</code>")
    if details.level:
        parts.append(f"level {esc(details.level, 20)}")
    return [" · ".join(parts)] if parts else []


def _event_lines(link: GlitchTipLink, incident: Incident) -> list[str]:
    lines = []
    if link.comebacks:
        again = f" ({link.comebacks} times)" if link.comebacks > 1 else ""
        lines.append(f"♻️ <b>Came back in GlitchTip</b> at {_when(link.comeback_at)}{again}, after it was "
                     "resolved there")
    if incident.is_open and link.api_status == "resolved":
        lines.append("✔️ Resolved in GlitchTip; still open here")
    return lines


def _detail_lines(link: GlitchTipLink, details: IssueDetails | None, incident: Incident) -> list[str]:
    lines: list[str] = []
    if details is not None and details.frames:
        which = "in-app frames" if details.frames_in_app else "frames"
        lines.append(f"🧵 Where it crashed ({which}, innermost first):")
        lines.extend(f"  <code>{esc(frame.label(), 300)}</code>" for frame in details.frames)
    if details is not None and details.request:
        lines.append(f"🌐 {esc(details.request, 300)}")
    if details is not None and details.release and details.release != incident.release:
        lines.append(f"🚀 release {esc(details.release, 120)}")
    if details is not None and details.runtime:
        lines.append("🧩 " + " · ".join(f"{esc(k, 10)} {esc(v, 80)}" for k, v in details.runtime))
    if link.problem:
        lines.append(f"⚠️ GlitchTip: {esc(link.problem, 300)}")
    elif details is None:
        lines.append("⏳ Details from GlitchTip's API on the way")
    elif not details.event_seen:
        lines.append("ℹ️ GlitchTip has no event for this issue yet: no stack to show")
    return lines


def _resolve_lines(link: GlitchTipLink) -> list[str]:
    note = esc(link.resolve_note, 300) if link.resolve_note else ""
    if link.resolve_state == "pending":
        return [f"⏳ Resolving in GlitchTip… {note}".rstrip()]
    if link.resolve_state == "done":
        return [f"✔️ Resolved in GlitchTip too {note}".rstrip()]
    if link.resolve_state == "failed":
        return [f"⚠️ Not resolved in GlitchTip: {note or 'it did not work'}"]
    if link.resolve_state == "skipped":
        return [f"ℹ️ Not resolved in GlitchTip: {note}"]
    return []


def _monitor_lines(link: GlitchTipLink) -> list[str]:
    if not link.details:
        if link.problem:
            return [f"ℹ️ Monitor details unknown: {esc(link.problem, 300)}"]
        return ["⏳ Monitor details from GlitchTip's API on the way"]
    monitor = MonitorDetails.from_dict(link.details)
    head = f"📡 Monitor <b>{esc(monitor.name, 200)}</b>"
    if monitor.url:
        kind = f"{esc(monitor.monitor_type, 20)} " if monitor.monitor_type else ""
        head += f" · {kind}{esc(monitor.url, 300)}"
    lines = [head]
    if monitor.down_since:
        lines.append(f"⏱ down since {_when(monitor.down_since)}")
    if monitor.last_check_at:
        why = f": {esc(monitor.last_reason, 100)}" if monitor.last_reason else ""
        took = f" ({monitor.response_ms:,} ms)" if monitor.response_ms is not None else ""
        lines.append(f"🩺 last check {_when(monitor.last_check_at)}{why}{took}")
    else:
        lines.append("🩺 no check recorded yet")
    if link.problem:
        lines.append(f"⚠️ GlitchTip: {esc(link.problem, 300)}")
    return lines
