"""Operator commands as plain functions returning HTML: the handlers only route to them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bot import __version__, killswitch
from bot.callbacks import is_valid_id
from bot.card import PRIORITY_EMOJI, esc, render_card
from bot.decisions import Actor
from bot.models import Priority, utcnow
from storage.audit import AuditEntry, AuditRepository
from storage.db import Database
from storage.inbox import InboxRepository
from storage.incidents import IncidentRepository
from storage.kv import KeyValueRepository
from storage.outbox import OutboxRepository
from storage.proposals import ProposalRepository

STAGES = {1: "monitor", 2: "triage + decisions", 3: "investigate", 4: "auto-fix"}

COMMANDS: list[tuple[str, str]] = [
    ("start", "What this bot does"),
    ("help", "Commands and buttons"),
    ("status", "Stage, kill switch, open incidents, queues"),
    ("incidents", "Open incidents, newest first"),
    ("incident", "/incident <id>: a card with its history"),
    ("mute", "/mute <id> <1h|24h|30m|2d>: silence repeats"),
    ("resolve", "/resolve <id>: mark resolved"),
    ("killswitch", "/killswitch [on [reason] | off]"),
]

HELP = (
    "🤖 <b>remediator</b> turns production errors into cards you decide on.\n"
    "Each card shows the triage (priority, category, likely cause, owner) and buttons:\n"
    "• <b>Approve</b> / <b>Reject</b> the proposed next step (nothing runs without a press)\n"
    "• <b>Investigate</b> (stage 3+)\n"
    "• <b>P0–P3</b> corrects the priority; <b>Mute</b> silences repeats; <b>Resolve</b> closes it\n\n"
    "<b>Commands</b> (approvers only, except /start and /help):\n"
    + "\n".join(f"/{name} — {esc(text)}" for name, text in COMMANDS)
)


def _no_counts() -> dict[str, int]:
    return {}


@dataclass
class Operator:
    db: Database
    stage: int
    # Webhook requests refused since start, by reason (counted in memory: strangers write no rows).
    webhook_refused: Callable[[], dict[str, int]] = _no_counts

    async def status(self) -> str:
        ks = await killswitch.read(self.db)
        counts = await IncidentRepository(self.db).open_counts_by_priority()
        inbox = await InboxRepository(self.db).depth()
        failed = await InboxRepository(self.db).failed_count()
        outbox = await OutboxRepository(self.db).depth()
        outbox_failed = await OutboxRepository(self.db).failed_count()
        last = await KeyValueRepository(self.db).get("last_alert_at")
        by_prio = " · ".join(f"{PRIORITY_EMOJI[p]} {p.value}: {counts.get(p.value, 0)}" for p in Priority)
        switch = f"🛑 ON (by {esc(ks.by or '?')}: {esc(ks.reason or 'no reason')})" if ks.on else "off"
        return (
            "📊 <b>Status</b>\n"
            f"Rollout stage: {self.stage} ({STAGES[self.stage]})\n"
            f"Kill switch: {switch}\n"
            f"Open incidents: {sum(counts.values())} — {by_prio}\n"
            f"Inbox: {inbox} waiting, {failed} set aside · Outbox: {outbox} waiting, {outbox_failed} undeliverable\n"
            f"Last alert: {esc(last[:19].replace('T', ' ') + ' UTC') if last else 'none yet'}\n"
            f"Webhook refused since start: {_refusals(self.webhook_refused())}\n"
            f"Version: {__version__}"
        )

    async def incidents(self) -> str:
        rows = await IncidentRepository(self.db).list_open(limit=30)
        if not rows:
            return "No open incidents. 🎉"
        now = utcnow()
        lines = ["<b>Open incidents</b> (newest first)"]
        for i in rows:
            muted = " 🔕" if i.muted(now) else ""
            lines.append(f"{PRIORITY_EMOJI[i.priority]} #{i.id} {i.priority.value} · {esc(i.title, 80)} · ×{i.count}{muted}")
        return "\n".join(lines)

    async def incident(self, incident_id: int) -> str | None:
        if not is_valid_id(incident_id):
            return None
        incident = await IncidentRepository(self.db).get(incident_id)
        if incident is None:
            return None
        proposal = await ProposalRepository(self.db).latest_for(incident_id)
        entries = await AuditRepository(self.db).list(incident_id=incident_id)
        history = ["", "<b>History</b>"] + [_history_line(e) for e in entries[-20:]]
        return render_card(incident, proposal=proposal, stage=self.stage, now=utcnow(), history=history).text

    async def set_killswitch(self, actor: Actor, on: bool, reason: str | None) -> str:
        state = await killswitch.write(self.db, on, actor.name, reason)
        await AuditRepository(self.db).record(
            "killswitch.on" if on else "killswitch.off", "changed", actor_id=actor.id, actor_name=actor.name,
            detail={"reason": reason},
        )
        if on:
            return (f"🛑 <b>Kill switch ON</b> by {esc(actor.name)}"
                    f"{': ' + esc(reason) if reason else ''}\nNo action will start until it is turned off. "
                    "Cards keep coming.")
        return f"✅ <b>Kill switch off</b> by {esc(actor.name)} at {esc(state.at or '')}. Approved actions may run again."

    async def killswitch_state(self) -> str:
        ks = await killswitch.read(self.db)
        if ks.on:
            return (f"🛑 Kill switch is <b>ON</b> since {esc(ks.at or '?')} (by {esc(ks.by or '?')}"
                    f"{': ' + esc(ks.reason) if ks.reason else ''}).\nTurn off: /killswitch off")
        return "Kill switch is <b>off</b>. Turn on: /killswitch on [reason]"


def _history_line(entry: AuditEntry) -> str:
    who = f" by {esc(entry.actor_name, 40)}" if entry.actor_name else ""
    return f"• {entry.at:%m-%d %H:%M} {esc(entry.action, 40)}: {esc(entry.outcome, 80)}{who}"


def _refusals(counts: dict[str, int]) -> str:
    total = sum(counts.values())
    if not total:
        return "none"
    parts = ", ".join(f"{esc(reason, 40)} {n}" for reason, n in sorted(counts.items(), key=lambda kv: -kv[1]) if n)
    return f"{total} ({parts})"
