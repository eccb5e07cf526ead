"""Storm limits: past a few new incidents a minute per source, cards give way to one summary.

A storm of distinct errors (a bad deploy, a hostile sender) would otherwise queue hundreds of
cards at Telegram's 20 messages a minute per group, hours ahead of the next real P0. Incidents
beyond the limit are still recorded in full; only their cards are held back and named together
in one message. A P0 always gets its own card.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from bot.card_render import esc
from bot.models import Priority

WINDOW_S = 60.0
SUMMARY_LINES = 12


class StormGate:
    """Admits at most `per_minute` new cards per source in any 60 s; counts in memory only."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self._admitted: dict[str, deque[float]] = {}

    def admit(self, source: str, priority: Priority) -> bool:
        if priority is Priority.P0:
            return True  # never buried: a P0 has its own card (and the outbox sends it first)
        now = self.clock()
        recent = self._admitted.setdefault(source, deque())
        while recent and now - recent[0] >= WINDOW_S:
            recent.popleft()
        if len(recent) >= self.per_minute:
            return False
        recent.append(now)
        return True


@dataclass(frozen=True)
class HeldBack:
    """An incident whose card was held back, as the summary shows it."""

    id: int
    source: str
    priority: str
    category: str
    title: str
    count: int
    first_seen: datetime


def storm_summary(held: Sequence[HeldBack], per_minute: int, span_s: float) -> str:
    """One message naming the incidents whose cards were held back (HTML, well under 4096)."""
    ordered = sorted(held, key=lambda h: (h.priority, -h.count, h.id))
    sources = ", ".join(sorted({h.source for h in held}))
    lines = [
        f"🌊 <b>{len(held)} new incidents in {max(1, round(span_s))} s</b> from {esc(sources, 80)}: "
        f"more than {per_minute} a minute, so they are summarised here instead of one card each "
        "(STORM_CARDS_PER_MINUTE).",
    ]
    for h in ordered[:SUMMARY_LINES]:
        lines.append(f"#{h.id} {h.priority} · {esc(h.category, 20)} · ×{h.count} · {esc(h.title, 120)}")
    if len(ordered) > SUMMARY_LINES:
        lines.append(f"…and {len(ordered) - SUMMARY_LINES} more.")
    lines.append("/incidents lists them; <code>/incident &lt;id&gt;</code> shows one; /resolve and /mute work on them.")
    return "\n".join(lines)
