"""Operator commands (/status, /incidents, /incident, /mute, /resolve, /killswitch, /overrides, /help).

Everything a command does lives here, behind one call: the aiogram handler only passes the
command's name, its arguments and who sent it, and sends back the reply.
"""

from __future__ import annotations

import html
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import time
from zoneinfo import ZoneInfo

from bot import __version__, killswitch
from bot.callback_data import is_valid_id, parse_id
from bot.card_render import PRIORITY_EMOJI, esc, render_card
from bot.decisions import DecisionService, parse_duration
from bot.digest import DigestService
from bot.metrics import MAX_DAYS, compute_metrics, fit, metrics_lines
from bot.models import Actor, Priority, utcnow
from bot.open_commands import Asker, OpenCommandGuard, start_text
from bot.overrides import offer_buttons, offer_lines
from bot.rollout import RolloutPolicy
from storage.audit import AuditEntry, AuditRepository
from storage.db import Database
from storage.inbox import InboxRepository
from storage.incidents import IncidentRepository
from storage.kv import KeyValueRepository
from storage.outbox import OutboxRepository
from storage.proposals import ProposalRepository

# Commands anyone may use, from any chat (bot/open_commands.py bounds them); the rest are for approvers.
OPEN_TO_ALL = frozenset({"start", "help"})
STATS_DAYS = 7  # /stats without a number of days
COMMANDS: list[tuple[str, str]] = [
    ("start", "This chat's id and yours, for the setup"),
    ("help", "Commands and buttons"),
    ("status", "Stage, kill switch, open incidents, queues"),
    ("incidents", "Open incidents, most recently active first"),
    ("incident", "/incident <id>: a card with its history"),
    ("mute", "/mute <id> <1h|24h|30m|2d>: silence repeats"),
    ("resolve", "/resolve <id>: mark resolved"),
    ("investigate", "/investigate <id>: code, history and similar incidents (stage 3+)"),
    ("killswitch", "/killswitch [on [reason] | off]"),
    ("digest", "The daily digest, now"),
    ("stats", "/stats [days]: the figures that judge the rollout (default 7)"),
    ("overrides", "/overrides [remove <id>]: priority overrides learnt from corrections"),
]

HELP = (
    "🤖 <b>remediator</b> turns production errors into cards you decide on.\n"
    "Each card shows the triage (priority, category, likely cause, owner) and buttons:\n"
    "• <b>Approve</b> / <b>Reject</b> the proposed next step (nothing runs without a press)\n"
    "• <b>Investigate</b> (stage 3+)\n"
    "• <b>P0–P3</b> corrects the priority; <b>Mute</b> silences repeats; <b>Resolve</b> closes it\n"
    "Under the digest and /stats, <b>Apply</b> makes a rule's priority in a project what people keep "
    "correcting it to (/overrides)\n\n"
    "<b>Commands</b> (approvers only, except /start and /help):\n"
    + "\n".join(f"/{name} — {esc(text)}" for name, text in COMMANDS)
)


def _no_counts() -> dict[str, int]:
    return {}


@dataclass(frozen=True)
class Reply:
    """What to answer a command with (HTML), or None when the alert chat already got it."""

    html: str | None
    buttons: list[list[tuple[str, str]]] = field(default_factory=list)  # (label, callback data) rows


class CommandService:
    """Operator commands: parse the arguments, check the approver's right, audit, and answer.

    The handlers only pass the command name, its argument text and who sent it. Commands that
    change something go through `DecisionService`, so a button and a command do the same thing.
    """

    def __init__(
        self, db: Database, decisions: DecisionService, policy: RolloutPolicy, alert_chat_id: int,
        webhook_refused: Callable[[], dict[str, int]] = _no_counts, open_guard: OpenCommandGuard | None = None,
        digest: DigestService | None = None,
    ) -> None:
        # /digest and /stats (bot/digest.py, bot/metrics.py); by default a digest at 09:00 UTC.
        self.digest = digest or DigestService(db, decisions.cards, policy, at=time(9, 0), tz=ZoneInfo("UTC"),
                                              overrides=decisions.overrides)
        self.db = db
        self.decisions = decisions
        self.policy = policy
        self.alert_chat_id = alert_chat_id
        # Webhook requests refused since start, by reason (counted in memory: strangers write no rows).
        self.webhook_refused = webhook_refused
        # /start and /help come from anyone: answered and audited within limits.
        self.open_guard = open_guard or OpenCommandGuard(db)

    async def run(self, actor: Actor, name: str, args: str | None, chat_id: int) -> Reply:
        if name in OPEN_TO_ALL:
            return await self._open(actor, name, chat_id)
        handler = self._handlers().get(name)
        if handler is None:
            return Reply(None)
        if not self.decisions.is_approver(actor.id):
            await self.decisions.refuse(actor, f"command./{name}")
            return Reply("⛔ Not allowed: only approvers can use this command.")
        return await handler(actor, (args or "").strip(), chat_id)

    def _handlers(self) -> dict[str, Callable[[Actor, str, int], Awaitable[Reply]]]:
        return {
            "status": self._status, "incidents": self._incidents, "incident": self._incident, "mute": self._mute,
            "resolve": self._resolve, "killswitch": self._killswitch, "investigate": self._investigate,
            "digest": self._digest, "stats": self._stats, "overrides": self._overrides,
        }

    async def _audit(self, actor: Actor, name: str, outcome: str) -> None:
        await AuditRepository(self.db).record(f"command./{name}", outcome, actor_id=actor.id, actor_name=actor.name)

    async def _answered(self, actor: Actor, name: str, outcome: str, html_text: str) -> Reply:
        await self._audit(actor, name, outcome)
        return Reply(html_text)

    async def _open(self, actor: Actor, name: str, chat_id: int) -> Reply:
        """/start or /help from anyone, anywhere: ids and setup lines, or the help; never incident data."""
        asker = Asker(actor, chat_id, in_alert_chat=chat_id == self.alert_chat_id,
                      approver=self.decisions.is_approver(actor.id))
        if not self.open_guard.may_answer(asker):
            await self.open_guard.audit(name, "not answered: rate limit", asker)
            return Reply(None)
        await self.open_guard.audit(name, "answered", asker)
        return Reply(start_text(asker) if name == "start" else HELP)

    async def close(self) -> None:
        """At shutdown: the audit summary of open commands still only counted."""
        await self.open_guard.close()

    async def _status(self, actor: Actor, args: str, chat_id: int) -> Reply:
        return await self._answered(actor, "status", "ok", await self.status_text())

    async def _incidents(self, actor: Actor, args: str, chat_id: int) -> Reply:
        return await self._answered(actor, "incidents", "ok", await self.incidents_text())

    async def _incident_id(self, actor: Actor, name: str, args: str, usage: str) -> tuple[int, list[str]] | Reply:
        """The incident id a command names and the words after it, or the reply that says why not
        (usage, or an id no incident can have: answered as such, never looked up)."""
        parts = args.split()
        raw = parts[0].removeprefix("#") if parts else ""
        if not (raw.isascii() and raw.isdigit()):
            return await self._answered(actor, name, "usage error", usage)
        incident_id = parse_id(raw)
        if incident_id is None:
            return await self._answered(actor, name, "refused: invalid id (out of range)",
                                        f"No incident #{esc(raw, 40)}: not a valid incident id.")
        return incident_id, parts[1:]

    async def _incident(self, actor: Actor, args: str, chat_id: int) -> Reply:
        named = await self._incident_id(actor, "incident", args, "Usage: /incident &lt;id&gt;")
        if isinstance(named, Reply):
            return named
        incident_id, _ = named
        text = await self.incident_text(incident_id)
        return await self._answered(actor, "incident", "ok" if text else "not found",
                                    text or f"No incident #{incident_id}.")

    async def _mute(self, actor: Actor, args: str, chat_id: int) -> Reply:
        usage = "Usage: /mute &lt;id&gt; &lt;duration&gt; — e.g. /mute 12 1h (m, h or d; up to 30d)"
        named = await self._incident_id(actor, "mute", args, usage)
        if isinstance(named, Reply):
            return named
        incident_id, rest = named
        duration = parse_duration(rest[0]) if rest else None
        if duration is None:
            return await self._answered(actor, "mute", "usage error", usage)
        outcome = await self.decisions.mute(actor, incident_id, duration)
        await self.decisions.audit_outcome(actor, "command./mute", incident_id, outcome)
        return Reply(html.escape(outcome.answer))

    async def _resolve(self, actor: Actor, args: str, chat_id: int) -> Reply:
        named = await self._incident_id(actor, "resolve", args, "Usage: /resolve &lt;id&gt;")
        if isinstance(named, Reply):
            return named
        incident_id, _ = named
        outcome = await self.decisions.resolve(actor, incident_id, via="command")
        await self.decisions.audit_outcome(actor, "command./resolve", incident_id, outcome)
        return Reply(html.escape(outcome.answer))

    async def _investigate(self, actor: Actor, args: str, chat_id: int) -> Reply:
        named = await self._incident_id(actor, "investigate", args, "Usage: /investigate &lt;id&gt;")
        if isinstance(named, Reply):
            return named
        incident_id, _ = named
        outcome = await self.decisions.investigate(actor, incident_id)
        await self.decisions.audit_outcome(actor, "command./investigate", incident_id, outcome)
        return Reply(html.escape(outcome.answer))

    async def _killswitch(self, actor: Actor, args: str, chat_id: int) -> Reply:
        parts = args.split(maxsplit=1)
        verb = parts[0].lower() if parts else ""
        if verb not in ("", "on", "off"):
            return await self._answered(actor, "killswitch", "usage error", "Usage: /killswitch [on [reason] | off]")
        if not verb:
            return await self._answered(actor, "killswitch", "shown", await self.killswitch_text())
        reason = parts[1].strip() if len(parts) > 1 else None
        outcome = await self.decisions.set_killswitch(actor, verb == "on", reason)
        # Announced in the alert chat (through the outbox) so everyone sees who and why; a private
        # chat gets the same text as its answer.
        return Reply(None if chat_id == self.alert_chat_id else outcome.answer)

    async def _digest(self, actor: Actor, args: str, chat_id: int) -> Reply:
        # Queued through the outbox to the chat that asked; the daily one still comes at its time.
        await self.digest.send_now(chat_id)
        await self._audit(actor, "digest", "sent")
        return Reply(None)

    async def _stats(self, actor: Actor, args: str, chat_id: int) -> Reply:
        raw = args.split()[0] if args.split() else str(STATS_DAYS)
        days = int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 5 else 0
        if not 1 <= days <= MAX_DAYS:
            return await self._answered(actor, "stats", "usage error",
                                        f"Usage: /stats [days] — a number of days from 1 to {MAX_DAYS} (default {STATS_DAYS})")
        found = await compute_metrics(self.db, self.policy, until=utcnow(), days=days,
                                      claude_on=self.digest.claude_on)
        overrides = self.decisions.overrides
        async with self.db.transaction() as tx:  # an Apply button names a recorded offer
            offers = await overrides.offers(tx, found)
        text = fit(metrics_lines(found, offer_lines(offers, overrides.threshold)))
        await self._audit(actor, "stats", f"shown: {days} days")
        return Reply(text, offer_buttons(offers))

    async def _overrides(self, actor: Actor, args: str, chat_id: int) -> Reply:
        """/overrides lists them with a Remove button each; /overrides remove <id> removes one."""
        parts = args.split()
        if not parts:
            text, buttons = await self.decisions.overrides.list_html()
            await self._audit(actor, "overrides", "shown")
            return Reply(text, buttons)
        usage = "Usage: /overrides, or /overrides remove &lt;id&gt;"
        raw = parts[1].removeprefix("#") if len(parts) == 2 else ""
        if parts[0].lower() != "remove" or not (raw.isascii() and raw.isdigit()):
            return await self._answered(actor, "overrides", "usage error", usage)
        override_id = parse_id(raw)
        if override_id is None:
            return await self._answered(actor, "overrides", "refused: invalid id (out of range)",
                                        f"No override #{esc(raw, 40)}.")
        outcome = await self.decisions.remove_override(actor, override_id, via="command")
        return Reply(html.escape(outcome.answer))

    # -- the texts -------------------------------------------------------------------------

    async def status_text(self) -> str:
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
            f"Rollout stage: {self.policy}\n"
            f"Kill switch: {switch}\n"
            f"Open incidents: {sum(counts.values())} — {by_prio}\n"
            f"Inbox: {inbox} waiting, {failed} set aside · Outbox: {outbox} waiting, {outbox_failed} undeliverable\n"
            f"Last alert: {esc(last[:19].replace('T', ' ') + ' UTC') if last else 'none yet'}\n"
            f"Webhook refused since start: {_refusals(self.webhook_refused())}\n"
            f"Version: {__version__}"
        )

    async def incidents_text(self) -> str:
        rows = await IncidentRepository(self.db).list_open(limit=30)
        if not rows:
            return "No open incidents. 🎉"
        now = utcnow()
        lines = ["<b>Open incidents</b> (most recently active first)"]
        for i in rows:
            muted = " 🔕" if i.muted(now) else ""
            lines.append(f"{PRIORITY_EMOJI[i.priority]} #{i.id} {i.priority.value} · {esc(i.title, 80)} · ×{i.count}{muted}")
        return "\n".join(lines)

    async def incident_text(self, incident_id: int) -> str | None:
        if not is_valid_id(incident_id):
            return None
        incident = await IncidentRepository(self.db).get(incident_id)
        if incident is None:
            return None
        proposal = await ProposalRepository(self.db).latest_for(incident_id)
        entries = await AuditRepository(self.db).list(incident_id=incident_id)
        history = ["", "<b>History</b>"] + [_history_line(e) for e in entries[-20:]]
        # The lines the card shows too: GlitchTip's link and counts, the GitHub issue and its link.
        extras_of = self.decisions.cards.extras
        extras = await extras_of(self.db, incident) if extras_of is not None else None
        return render_card(incident, proposal=proposal, policy=self.policy, now=utcnow(), history=history,
                           extras=extras).text

    async def killswitch_text(self) -> str:
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
