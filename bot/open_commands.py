"""/start and /help: the commands anyone may send, from any chat.

`/start` is how a new operator finds the two ids the bot needs: it answers with the chat's id
and the sender's id, says whether this chat is the alert chat and whether the sender is an
approver, and gives the two `.env` lines. It shows nothing else: no incident, no approver list.

Because anyone can send them, they are bounded in memory: a few answers a minute per person and
chat, a cap on answers to chats other than the alert chat (so a flood of strangers cannot spend
the bot's Telegram quota), and a few audit rows a minute, the rest counted in one summary row.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from bot.audit_budget import AuditBudget
from bot.card_render import esc
from bot.models import Actor
from storage.audit import AuditRepository
from storage.db import Database

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OpenCommandLimits:
    """How often strangers may make the bot answer or write; per window (a minute)."""

    answers_per_person: int = 5  # per (chat, user): a person setting up never types /start more often
    answers_outside: int = 30  # to chats other than the alert chat, all together
    audit_rows: int = 10  # one by one; the rest are counted in one summary row per window
    window_s: float = 60.0
    max_tracked: int = 10_000  # (chat, user) pairs remembered at once; memory stays bounded


@dataclass(frozen=True)
class Asker:
    """Who sent an open command, and from where, as the bot's settings see them."""

    actor: Actor
    chat_id: int
    in_alert_chat: bool
    approver: bool

    @property
    def private(self) -> bool:
        return self.chat_id > 0  # Telegram: private chats have the user's (positive) id; groups are negative


def start_text(asker: Asker) -> str:
    """The /start answer: the ids, where they stand, and the two lines to put in `.env`."""
    chat = f"<code>{asker.chat_id}</code> ({'a private chat with you' if asker.private else 'this group'})"
    chat_state = ("✅ this is the alert chat (TELEGRAM_CHAT_ID)" if asker.in_alert_chat
                  else "not the alert chat: cards are posted to the chat in TELEGRAM_CHAT_ID")
    you = f"<code>{asker.actor.id}</code> ({esc(asker.actor.name, 80)})"
    you_state = "✅ an approver (TELEGRAM_APPROVERS)" if asker.approver else "not an approver"
    lines = [
        "🤖 <b>remediator</b> posts production errors as cards; approvers decide what happens.",
        "",
        f"This chat: {chat}, {chat_state}",
        f"You: {you}, {you_state}",
        "",
    ]
    if asker.approver and (asker.in_alert_chat or asker.private):
        # An approver's private chat is meant for commands; the cards stay in the alert chat.
        lines.append("Nothing to change: /help lists the commands you can use here.")
        return "\n".join(lines)
    lines += [
        "To get the cards in this chat and decide on them, the bot's <code>.env</code> needs (then restart it):",
        f"<code>TELEGRAM_CHAT_ID={asker.chat_id}</code>" + (" (already set)" if asker.in_alert_chat else ""),
        f"<code>TELEGRAM_APPROVERS={asker.actor.id}</code>" + (" (already set)" if asker.approver else ""),
        "Several approvers: their ids separated by commas; each can send /start to see theirs.",
    ]
    if asker.private:
        lines.append("For a team, add the bot to your group and send /start there for the group's id.")
    return "\n".join(lines)


class _Window:
    """Counts in a fixed window of `length` seconds that restarts at the first event after it ends."""

    def __init__(self, length: float) -> None:
        self.length = length
        self.ends = 0.0
        self.count = 0

    def take(self, now: float, limit: int) -> bool:
        if now >= self.ends:
            self.ends, self.count = now + self.length, 0
        if self.count >= limit:
            return False
        self.count += 1
        return True


class OpenCommandGuard:
    """Decides whether an open command gets an answer, and audits it within a budget."""

    def __init__(
        self, db: Database, limits: OpenCommandLimits | None = None, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.limits = limits = limits or OpenCommandLimits()
        self.clock = clock
        self._per_person: dict[tuple[int, int], _Window] = {}
        self._outside = _Window(limits.window_s)
        self._audit = AuditBudget(db, per_window=limits.audit_rows, window_s=limits.window_s, clock=clock,
                                  summary_action="command.open",
                                  summary="{total} more /start or /help, not audited one by one")

    def may_answer(self, asker: Asker) -> bool:
        """Within the per-person limit, and (outside the alert chat) within the shared one."""
        now = self.clock()
        window = self._person_window((asker.chat_id, asker.actor.id), now)
        if not window.take(now, self.limits.answers_per_person):
            return False
        return asker.in_alert_chat or self._outside.take(now, self.limits.answers_outside)

    def _person_window(self, key: tuple[int, int], now: float) -> _Window:
        window = self._per_person.get(key)
        if window is None:
            if len(self._per_person) >= self.limits.max_tracked:
                # Forget the windows that ended; if a flood of new senders keeps them all open,
                # forget everything (a few extra answers beat unbounded memory).
                self._per_person = {k: w for k, w in self._per_person.items() if w.ends > now}
                if len(self._per_person) >= self.limits.max_tracked:
                    self._per_person.clear()
            window = self._per_person[key] = _Window(self.limits.window_s)
        return window

    async def audit(self, command: str, outcome: str, asker: Asker) -> None:
        """One row, while this window's budget lasts; after it, a count for the summary row."""
        if await self._audit.take():
            await AuditRepository(self.db).record(
                f"command./{command}", outcome, actor_id=asker.actor.id, actor_name=asker.actor.name,
                detail={"chat_id": asker.chat_id, "alert_chat": asker.in_alert_chat, "approver": asker.approver},
            )
        else:
            self._audit.count(f"/{command} {outcome}")

    async def flush(self) -> None:
        """One row for the open commands not audited one by one since the last flush."""
        await self._audit.flush()

    async def close(self) -> None:
        """At shutdown: write what is still only counted."""
        await self._audit.close()
