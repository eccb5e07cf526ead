"""Queue an incident's card (new or edited) in the outbox, rendered from what is stored now.

Every path that changes an incident or its proposal (pipeline, buttons, commands, executor)
calls `CardPublisher.publish` inside its own transaction, so the card and the change commit
together and the outbox coalesces rapid changes into one edit.
"""

from __future__ import annotations

import html
from collections.abc import Awaitable, Callable
from html.parser import HTMLParser

from bot.card_render import CardExtras, render_card
from bot.models import Incident, utcnow
from bot.rollout import RolloutPolicy
from storage.db import Executor
from storage.incidents import IncidentRepository
from storage.outbox import MESSAGE_PRIORITY, OutboxRepository
from storage.proposals import ProposalRepository

#: what integrations add to an incident's card, read inside the publishing transaction
ExtrasSource = Callable[[Executor, Incident], Awaitable[CardExtras | None]]
#: Telegram's limit on a photo's or document's caption, in UTF-16 units of the text a user sees
CAPTION_LIMIT = 1024
#: the Bot API's upload limits, in bytes, per kind of file
FILE_LIMITS = {"photo": 10 * 1024 * 1024, "document": 50 * 1024 * 1024}


class CardPublisher:
    def __init__(self, chat_id: int, policy: RolloutPolicy, on_queued: Callable[[], None] | None = None,
                 extras: ExtrasSource | None = None) -> None:
        self.chat_id = chat_id
        self.policy = policy
        # Wakes the outbox sender. Safe inside a transaction: the sender's read waits for the
        # database lock, so it sees the rows only once they are committed.
        self.on_queued = on_queued or (lambda: None)
        self.extras = extras  # e.g. GlitchTip's API lines (bot/glitchtip/card.py); None: none

    async def publish(
        self, tx: Executor, incident_id: int, *, held_back_too: bool = False, claude_waited: bool = False,
    ) -> None:
        """Queue the card as it is now. A card held back in a storm (bot/storm.py) stays held back
        unless `held_back_too`: a human asked for it. A new card waiting for Claude's triage is not
        sent by a repeat or any other change before Claude answers or `claude_waited` (its wait ended)."""
        incident = await IncidentRepository(tx).get(incident_id)
        if incident is None:
            return
        unsent = incident.card_message_id is None
        if unsent and incident.card_deferred and not held_back_too:
            return
        if unsent and incident.claude_pending and not claude_waited:
            return
        proposal = await ProposalRepository(tx).latest_for(incident_id)
        now = utcnow()
        extras = await self.extras(tx, incident) if self.extras is not None else None
        card = render_card(incident, proposal=proposal, policy=self.policy, now=now, extras=extras)
        payload = card.payload()
        payload["silent"] = incident.muted(now)  # a muted error's cards arrive without a notification
        await OutboxRepository(tx).put_card(
            incident.chat_id or self.chat_id, incident_id, payload,
            has_message=incident.card_message_id is not None, priority=incident.priority.rank,
        )
        self.on_queued()

    async def say(
        self, tx: Executor, html_text: str, reply_to: int | None = None, chat_id: int | None = None,
        priority: int = MESSAGE_PRIORITY, buttons: list[list[tuple[str, str]]] | None = None,
    ) -> None:
        """Queue a plain chat message (already-escaped HTML); `priority` 0 goes ahead of every card;
        `buttons`: rows of (label, callback data), e.g. 👍/👎 under an investigation report."""
        rows = [[list(b) for b in row] for row in buttons or []]
        await OutboxRepository(tx).add(
            chat_id or self.chat_id, {"text": html_text, "parse_mode": "HTML", "buttons": rows}, reply_to=reply_to,
            priority=priority,
        )
        self.on_queued()

    async def send_file(
        self, tx: Executor, *, kind: str, filename: str, content: bytes, caption: str, reply_to: int | None = None,
        buttons: list[list[tuple[str, str]]] | None = None, chat_id: int | None = None,
        priority: int = MESSAGE_PRIORITY,
    ) -> None:
        """Queue a photo or document (`kind`) with an HTML caption, cut to Telegram's 1024 visible
        characters. The bytes are stored with the outbox row in `tx`: sent once, after any outage.
        The caption is the row's "text", as a message's text is: whatever lists queued texts sees it."""
        if kind not in FILE_LIMITS:
            raise ValueError(f"kind must be one of {sorted(FILE_LIMITS)}, not {kind!r}")
        if not content or len(content) > FILE_LIMITS[kind]:
            # Refused here, where the caller can still do something else: Telegram would refuse it.
            raise ValueError(f"a {kind} must be 1 byte to {FILE_LIMITS[kind] // 2**20} MB, not {len(content)} bytes")
        rows = [[list(b) for b in row] for row in buttons or []]
        await OutboxRepository(tx).add_file(
            chat_id or self.chat_id, {"text": cut_html(caption, CAPTION_LIMIT), "parse_mode": "HTML",
                                      "buttons": rows},
            kind=kind, filename=filename, content=content, reply_to=reply_to, priority=priority,
        )
        self.on_queued()


def visible_units(html_text: str) -> int:
    """How long Telegram counts an HTML text: UTF-16 units of what a user sees (tags dropped)."""
    reader = _HtmlTokens()
    reader.feed(html_text)
    reader.close()
    return sum(_units(data) for token, data in reader.tokens if token == "data")


def cut_html(html_text: str, limit: int) -> str:
    """`html_text` if it shows at most `limit` UTF-16 units, else its start with "…", the tags
    still open at the cut closed, so the result is still valid Telegram HTML."""
    if visible_units(html_text) <= limit:
        return html_text
    reader = _HtmlTokens()
    reader.feed(html_text)
    reader.close()
    out: list[str] = []
    open_tags: list[str] = []
    room = limit - 1  # the "…"
    for index, (token, data) in enumerate(reader.tokens):
        if token == "start":
            out.append(data)
            open_tags.append(reader.names[index])
        elif token == "end":
            out.append(data)
            if open_tags:
                open_tags.pop()
        else:
            kept = _prefix_within(data, room)
            out.append(html.escape(kept, quote=False))
            room -= _units(kept)
            if len(kept) < len(data):
                break
    out.append("…")
    out.extend(f"</{name}>" for name in reversed(open_tags))
    return "".join(out)


def _units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _prefix_within(text: str, room: int) -> str:
    """The longest start of `text` of at most `room` UTF-16 units."""
    size = 0
    for index, char in enumerate(text):
        size += _units(char)
        if size > room:
            return text[:index]
    return text


class _HtmlTokens(HTMLParser):
    """Telegram HTML as (start | end | data, text) tokens: tags as written, data decoded."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tokens: list[tuple[str, str]] = []
        self.names: dict[int, str] = {}  # token index of a start tag -> its tag name

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.names[len(self.tokens)] = tag
        self.tokens.append(("start", self.get_starttag_text() or f"<{tag}>"))

    def handle_endtag(self, tag: str) -> None:
        self.tokens.append(("end", f"</{tag}>"))

    def handle_data(self, data: str) -> None:
        self.tokens.append(("data", data))
