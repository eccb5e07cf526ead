"""The triage card: HTML text and buttons for one incident, whatever the input.

Pure rendering (no aiogram): buttons are (label, callback data) pairs, turned into Telegram
markup by the sender. Every value from an alert is HTML-escaped and cut, and the whole text is
kept under Telegram's 4096-character limit.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bot.callback_data import APPROVE, INVESTIGATE, MUTE, PRIORITY, REJECT, RESOLVE, CardPress
from bot.models import AlertKind, Incident, Priority, Proposal, ProposalState
from bot.rollout import RolloutPolicy, Stage

TELEGRAM_TEXT_LIMIT = 4096
DEFAULT_POLICY = RolloutPolicy(Stage.TRIAGE)
PRIORITY_EMOJI = {Priority.P0: "🔴", Priority.P1: "🟠", Priority.P2: "🟡", Priority.P3: "🔵"}
Button = tuple[str, str]


@dataclass(frozen=True)
class Card:
    text: str
    buttons: list[list[Button]] = field(default_factory=list)

    def payload(self) -> dict[str, Any]:
        """The outbox payload: what the sender needs to send or edit this card."""
        return {"text": self.text, "parse_mode": "HTML", "buttons": [[list(b) for b in row] for row in self.buttons]}


@dataclass(frozen=True)
class CardExtras:
    """Lines an integration adds to a card (already-escaped HTML), each where a reader looks for it
    (GlitchTip's API: bot/glitchtip/card.py). Cut like any body line when a card is too long."""

    counts: str | None = None  # replaces the bot's own "🔁 ×n · first · last" line
    about: tuple[str, ...] = ()  # under the title: culprit, level
    events: tuple[str, ...] = ()  # under the counts: it came back in the tracker, …
    details: tuple[str, ...] = ()  # under triage and owner: frames, request, release, runtime
    state: tuple[str, ...] = ()  # under the resolved line: whether the tracker heard of it
    links: tuple[str, ...] = ()  # under the tracker link: an issue filed elsewhere (bot/github/card.py)

    def merged(self, other: CardExtras) -> CardExtras:
        """Two integrations' lines on one card (each slot's lines in order; the first counts line wins)."""
        return CardExtras(
            counts=self.counts or other.counts, about=self.about + other.about, events=self.events + other.events,
            details=self.details + other.details, state=self.state + other.state, links=self.links + other.links,
        )


def esc(value: object, limit: int = 300) -> str:
    """HTML-escape a value from the outside world, cut to `limit` characters first."""
    text = str(value)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return html.escape(text, quote=False)


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "?"


def _proposal_line(proposal: Proposal | None) -> str:
    """What Approve does, and where its commands run: one block the card always keeps."""
    if proposal is None:
        return "➡️ No action proposed"
    where = _where_line(proposal)
    state = _state_line(proposal)
    return f"{state}\n{where}" if where else state


def _where_line(proposal: Proposal) -> str | None:
    """E.g. "runs on web-01" or "no local fix: the error came from web-03" (set by the proposer)."""
    where = (proposal.action or {}).get("where")
    return f"🖥 {esc(where, 200)}" if isinstance(where, str) and where else None


def _state_line(proposal: Proposal) -> str:
    summary = esc(proposal.summary, 400)
    who = esc(proposal.decided_by or "", 80)
    state = proposal.state
    if state is ProposalState.PENDING:
        need = f"{len(proposal.approvals)}/{proposal.approvals_required} approvals"
        refused = f"\n⚠️ The last approval {esc(proposal.result, 300)}" if proposal.result else ""
        return f"➡️ Proposal: {summary} · {need}{refused}"
    if state in (ProposalState.APPROVED, ProposalState.RUNNING):
        return f"⏳ Running: {summary} (approved by {who})"
    outcome = f" — {esc(proposal.result, 600)}" if proposal.result else ""
    if state is ProposalState.SUCCEEDED:
        return f"✅ Done: {summary} (approved by {who}, {_when(proposal.decided_at)}){outcome}"
    if state is ProposalState.FAILED:
        return f"❌ Failed: {summary} (approved by {who}){outcome}"
    if state is ProposalState.REJECTED:
        return f"🚫 Rejected by {who} at {_when(proposal.decided_at)}: {summary}"
    if state is ProposalState.EXPIRED:
        return f"⌛ Expired without a decision: {summary}"
    return f"➡️ Superseded: {summary}"


def _override_line(incident: Incident) -> str:
    """What a priority override did to this card; once a person set the priority, that it was set aside."""
    t = incident.triage
    rules = t.priority_before_override.value if t.priority_before_override else "?"
    if incident.priority is not t.priority:  # a person's press moved it off the override's priority
        return (f"⚖️ Override to {t.priority.value} set aside: a person set {incident.priority.value} "
                f"(the rules said {rules})")
    n = t.override_corrections or 0
    return (f"⚖️ {t.priority.value} by override from {n} correction{'s' if n != 1 else ''} "
            f"(the rules said {rules}; /overrides)")


def render_card(
    incident: Incident,
    *,
    proposal: Proposal | None = None,
    policy: RolloutPolicy = DEFAULT_POLICY,
    now: datetime | None = None,
    history: list[str] | None = None,
    extras: CardExtras | None = None,
) -> Card:
    """The card for `incident` as it stands now; `history` and `extras` lines are already-safe HTML."""
    t = incident.triage
    extra = extras or CardExtras()
    prio = incident.priority
    head = f"{PRIORITY_EMOJI[prio]} <b>{prio.value}</b> · {esc(incident.category.value)} · #{incident.id}"
    if incident.priority != incident.priority_original:
        head += f" <i>(triaged {incident.priority_original.value})</i>"
    lines = [head]
    if t.priority_before_override is not None:  # bot/overrides.py: learnt from human corrections
        lines.append(_override_line(incident))
    if incident.kind is AlertKind.UPTIME_DOWN:
        lines.append("⛔ <b>Uptime monitor: site is down</b>")
    lines.append(f"<b>{esc(incident.title, 500)}</b>")
    if incident.message:
        lines.append(f"<code>{esc(incident.message, 300)}</code>")
    lines.extend(extra.about)
    where = [esc(v, 80) for v in (incident.project, incident.environment, incident.server, incident.release) if v]
    if where:
        lines.append("📦 " + " · ".join(where))
    lines.append(
        extra.counts or f"🔁 ×{incident.count} · first {_when(incident.first_seen)} · last {_when(incident.last_seen)}"
    )
    lines.extend(extra.events)
    if incident.regression_of:
        lines.append(f"♻️ Regression: this came back after #{incident.regression_of} was resolved")
    if t.likely_cause:
        lines.append(f"💡 {esc(t.likely_cause, 400)}")
    if t.tags:
        lines.append("🏷 " + esc(", ".join(t.tags), 200))
    if t.affected_users:
        lines.append(f"👥 {esc(t.affected_users, 100)}")
    if t.owner:
        handle = t.owner.telegram or t.owner.name
        lines.append(f"👤 Owner: {esc(handle, 80)}")
    if t.note:  # e.g. "triage: Claude (confidence 80%)", "rules; Claude unavailable: rate limited (429)"
        lines.append(f"{'🤖' if t.source == 'claude' else 'ℹ️'} {esc(t.note, 200)}")
    lines.extend(extra.details)
    link = _link(incident)
    if link:
        lines.append(link)
    lines.extend(extra.links)
    if now and incident.muted(now):
        lines.append(f"🔕 Muted until {_when(incident.muted_until)}")
    if not incident.is_open:
        lines.append(f"✅ Resolved by {esc(incident.resolved_by or '?', 80)} at {_when(incident.resolved_at)}")
    lines.extend(extra.state)
    text = _fit(lines, _proposal_line(proposal), history or [])
    return Card(text, _buttons(incident, proposal, policy))


MAX_URL = 1000


def _link(incident: Incident) -> str | None:
    """The tracker link; an over-long URL loses its query string, or the link is left out."""
    url = incident.url or ""
    if len(url) > MAX_URL:
        url = url.split("?", 1)[0]
    if not url or len(url) > MAX_URL or not url.startswith(("http://", "https://")):
        return None
    label = (incident.tags.get("short_id") or "Open in GlitchTip") if incident.source == "glitchtip" else "Open"
    return f'🔗 <a href="{html.escape(url, quote=True)}">{esc(label, 60)}</a>'


def units(text: str) -> int:
    """Length as Telegram counts it (UTF-16 code units). Counted on the HTML, which is never
    shorter than the text Telegram shows, so a card that fits here fits there."""
    return len(text.encode("utf-16-le")) // 2


def _fit(body: list[str], proposal_line: str, history: list[str]) -> str:
    """Keep under Telegram's limit. The proposal line always stays (it says what Approve does);
    body lines are cut first from the bottom, then history lines from the end."""
    budget = TELEGRAM_TEXT_LIMIT - 8  # room for the "…" marker lines
    text = "\n".join([*body, proposal_line, *history])
    if units(text) <= TELEGRAM_TEXT_LIMIT:
        return text
    proposal_line = _cut_line(proposal_line, budget // 2)
    size = units(proposal_line) + 1
    kept_body: list[str] = []
    for line in body:
        line = _cut_line(line, budget - size - 1)
        if not line:
            break
        kept_body.append(line)
        size += units(line) + 1
    kept_history: list[str] = []
    for line in history:
        if size + units(line) + 1 > budget:
            break
        kept_history.append(line)
        size += units(line) + 1
    cut = len(kept_body) < len(body) or len(kept_history) < len(history)
    return "\n".join([*kept_body, proposal_line, *kept_history]) + ("\n…" if cut else "")


def _cut_line(line: str, room: int) -> str:
    """A line that fits in `room` units, or "" when it cannot be cut safely (it holds markup)."""
    if units(line) <= room:
        return line
    if "<" in line or "&" in line or room < 20:
        return ""
    text = line
    while units(text) > room - 1:
        text = text[: max(0, len(text) - max(1, (units(text) - room) // 2 + 1))]
    return text + "…"


def _buttons(incident: Incident, proposal: Proposal | None, policy: RolloutPolicy) -> list[list[Button]]:
    if not incident.is_open:
        return []
    rows: list[list[Button]] = []
    decide: list[Button] = []
    if policy.draws(APPROVE) and proposal is not None and proposal.state is ProposalState.PENDING:
        decide.append(("✅ Approve", CardPress(APPROVE, incident.id, str(proposal.id)).encode()))
        decide.append(("🚫 Reject", CardPress(REJECT, incident.id, str(proposal.id)).encode()))
    if policy.draws(INVESTIGATE):
        decide.append(("🔎 Investigate", CardPress(INVESTIGATE, incident.id).encode()))
    if decide:
        rows.append(decide)
    rows.append(
        [
            (f"{'• ' if p is incident.priority else ''}{p.value}", CardPress(PRIORITY, incident.id, p.value).encode())
            for p in Priority
        ]
    )
    if policy.draws(RESOLVE):
        rows.append(
            [
                ("🔕 Mute 1h", CardPress(MUTE, incident.id, "1h").encode()),
                ("🔕 Mute 24h", CardPress(MUTE, incident.id, "24h").encode()),
                ("✔️ Resolve", CardPress(RESOLVE, incident.id).encode()),
            ]
        )
    return rows


def test_notification_text(title: str) -> str:
    return f"🧪 <b>GlitchTip test notification received</b>\n{esc(title)}\nThe alert recipient works; no incident was opened."
