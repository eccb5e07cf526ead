"""The outbox sender: delivers queued sends and edits to Telegram, paced, retried, in order.

Rules (see ARCHITECTURE.md, "Telegram rules worth knowing"):
- one chat at a time per row, oldest first, so cards keep their order per chat;
- about `rate_per_chat` messages/s to one chat, at most `group_per_minute` to a group, and a
  global cap; a 429 blocks that chat for exactly the time Telegram asks;
- 5xx and network errors back off and retry forever (an outage delays, never drops);
- "message is not modified" is success; "can't parse entities" resends as plain text;
- an edit whose message is gone becomes a new card; other 4xx are parked after a few tries, but a
  413 (too large) or a 400 refusing a file's bytes (a photo's dimensions or format) is parked at the
  first answer: the same bytes always get the same answer;
- photos and documents are uploaded from the bytes stored with their row (storage/outbox.py).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import html
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiogram import Bot
from aiogram.exceptions import (
    ClientDecodeError,
    TelegramAPIError,
    TelegramBadRequest,
    TelegramEntityTooLarge,
    TelegramMigrateToChat,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.types import BufferedInputFile, InlineKeyboardButton, InlineKeyboardMarkup, Message, ReplyParameters

from bot.telegram.sent_journal import SentJournal
from bot.worker import WakeableLoop
from storage.db import Database
from storage.incidents import IncidentRepository
from storage.outbox import OutboxItem, OutboxRepository

log = logging.getLogger(__name__)
_TAG = re.compile(r"<[^>]+>")
MAX_PERMANENT_FAILURES = 3
#: 400 descriptions (lower case) that refuse a file's bytes, not the call: a retry uploads the same bytes.
FILE_REFUSALS = (
    "photo_invalid_dimensions", "image_process_failed", "photo_save_file_invalid", "photo_ext_invalid",
    "file must be non-empty", "file is too big",
)


def plain_text(html_text: str) -> str:
    """HTML card text as plain text, for the resend after "can't parse entities"."""
    return html.unescape(_TAG.sub("", html_text))


def refused_for_good(item: OutboxItem, exc: Exception) -> bool:
    """True when Telegram refused what this row uploads, so sending the same row again cannot succeed:
    a 413 (the request is too large) or a 400 about a file's bytes."""
    if isinstance(exc, TelegramEntityTooLarge):
        return True
    return (
        "file" in item.payload
        and isinstance(exc, TelegramBadRequest)
        and any(r in str(exc.message).lower() for r in FILE_REFUSALS)
    )


def keyboard(buttons: list[list[list[str]]] | None) -> InlineKeyboardMarkup | None:
    if not buttons:
        return None
    return InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton(text=t, callback_data=d) for t, d in row] for row in buttons]
    )


@dataclass
class _ChatPace:
    next_at: float = 0.0  # earliest time the next call to this chat may go
    recent: collections.deque[float] = field(default_factory=collections.deque)  # sends in the last minute


class OutboxSender(WakeableLoop):
    def __init__(
        self,
        db: Database,
        bot: Bot,
        *,
        rate_per_chat: float = 1.0,
        group_per_minute: int = 20,
        rate_global: float = 30.0,
        on_sent: Callable[[OutboxItem], None] | None = None,
        journal: SentJournal | None = None,
    ) -> None:
        super().__init__()
        self.db = db
        self.bot = bot
        self.min_interval = 1.0 / rate_per_chat
        self.group_per_minute = group_per_minute
        self.global_interval = 1.0 / rate_global
        self.on_sent = on_sent
        self.journal = journal
        self._journal_dirty = False
        self._delivered: dict[int, tuple[int, int | None]] = {}  # delivered, not yet recorded: id -> (version, msg)
        self._pace: dict[int, _ChatPace] = collections.defaultdict(_ChatPace)
        self._backoff: dict[int, float] = {}  # chat -> seconds of the current 5xx/network backoff
        #: 5xx and network errors: the first wait and the longest, doubling in between (seconds)
        self.outage_backoff: tuple[float, float] = (1.0, 60.0)
        self._global_next = 0.0
        self.chat_moves: dict[int, int] = {}  # groups upgraded to supergroups while running

    async def run(self) -> None:
        await self.drop_unsendable_files()  # once at start: what parked rows of an older run left behind
        await super().run()

    async def drop_unsendable_files(self) -> int:
        """Delete stored file bytes that no pending row will upload; never stops the sender."""
        try:
            dropped = await OutboxRepository(self.db).drop_unsendable_files()
        except Exception:  # a cleanup: the sender must start regardless
            log.exception("could not delete the bytes of files no longer to be sent")
            return 0
        if dropped:
            log.info("deleted the stored bytes of %d file(s) no longer to be sent", dropped)
        return dropped

    async def step(self) -> float:
        return await self.send_due()

    def _chat_ready_at(self, chat_id: int, now: float) -> float:
        pace = self._pace[chat_id]
        ready = pace.next_at
        if chat_id < 0:  # groups: at most N per rolling minute
            while pace.recent and pace.recent[0] <= now - 60:
                pace.recent.popleft()
            if len(pace.recent) >= self.group_per_minute:
                ready = max(ready, pace.recent[0] + 60)
        return ready

    async def send_due(self) -> float:
        """Send what is due now (one row per chat); return how long to sleep before the next look."""
        outbox = OutboxRepository(self.db)
        for old, new in self.chat_moves.items():
            await outbox.move_chat(old, new)
        heads = await outbox.heads()
        soonest = 5.0
        if not heads:
            if self.journal is not None and self._journal_dirty:
                self.journal.truncate()  # nothing is pending: every delivery it notes is committed
                self._journal_dirty = False
            return soonest
        now = time.monotonic()
        due = []
        for item in heads:
            ready = self._chat_ready_at(item.chat_id, now)
            if ready > now:
                soonest = min(soonest, ready - now)
            else:
                due.append(item)
        if not due:
            return max(0.01, soonest)
        await asyncio.gather(*(self._deliver(item) for item in due))
        return 0.0

    async def _global_slot(self) -> None:
        now = time.monotonic()
        slot = max(now, self._global_next)
        self._global_next = slot + self.global_interval
        if slot > now:
            await asyncio.sleep(slot - now)

    def _record_call(self, chat_id: int) -> None:
        now = time.monotonic()
        pace = self._pace[chat_id]
        pace.next_at = now + self.min_interval
        pace.recent.append(now)

    async def _deliver(self, item: OutboxItem) -> None:
        delivered = self._delivered.get(item.id)
        if delivered is not None:
            # Telegram has it already; only recording it failed last time. Record, never re-send.
            await self._mark_sent(dataclasses.replace(item, version=delivered[0]), delivered[1])
            return
        await self._global_slot()
        self._record_call(item.chat_id)
        outbox = OutboxRepository(self.db)
        try:
            message_id = await self._call(item, item.payload.get("parse_mode"))
            self._journal(item, message_id)
        except TelegramEntityTooLarge as exc:  # a network error to aiogram, but retrying cannot help: parked now
            await self._permanent_failure(item, exc)
            return
        except TelegramRetryAfter as exc:
            log.warning("Telegram asks to wait %ss (chat %s)", exc.retry_after, item.chat_id)
            self._pace[item.chat_id].next_at = time.monotonic() + exc.retry_after
            await outbox.note_failure(item.id, f"429 retry after {exc.retry_after}s")
            return
        except (TimeoutError, TelegramServerError, TelegramNetworkError, ClientDecodeError, OSError) as exc:
            first, longest = self.outage_backoff
            previous = self._backoff.get(item.chat_id)
            delay = first if previous is None else min(longest, previous * 2)
            self._backoff[item.chat_id] = delay
            self._pace[item.chat_id].next_at = time.monotonic() + delay
            log.warning("Telegram unavailable (%s); retrying chat %s in %.1fs", type(exc).__name__, item.chat_id, delay)
            await outbox.note_failure(item.id, f"{type(exc).__name__}: {exc}")
            return
        except TelegramMigrateToChat as exc:
            await self._migrate(item.chat_id, exc.migrate_to_chat_id)
            return
        except TelegramBadRequest as exc:
            if await self._handle_bad_request(item, exc):
                return
            message_id = None
        except TelegramAPIError as exc:  # 401/403/404: configuration problems; park after a few tries
            await self._permanent_failure(item, exc)
            return
        except Exception as exc:  # a row we cannot even send (a bug): park it, never block the chat
            log.exception("outbox #%s could not be sent", item.id)
            await self._permanent_failure(item, exc)
            return
        self._backoff.pop(item.chat_id, None)
        await self._mark_sent(item, message_id)

    async def _handle_bad_request(self, item: OutboxItem, exc: TelegramBadRequest) -> bool:
        """Deal with a 400; True when the row is handled (retry later or parked), False = done."""
        text = str(exc.message).lower()
        if "message is not modified" in text:
            return False
        if "can't parse entities" in text or "can't find end" in text:
            log.warning("HTML rejected by Telegram for outbox #%s; resending as plain text", item.id)
            try:
                message_id = await self._call(item, None)
                self._journal(item, message_id)
            except TelegramAPIError as second:
                await self._permanent_failure(item, second)
                return True
            await self._mark_sent(item, message_id)
            return True
        if item.kind == "edit" and ("message to edit not found" in text or "message can't be edited" in text):
            # The card was deleted in the chat: post it again rather than lose it.
            async with self.db.transaction() as tx:
                if item.incident_id is not None:
                    await IncidentRepository(tx).set_card(item.incident_id, item.chat_id, None)
                await OutboxRepository(tx).convert_to_send(item.id)
            return True
        await self._permanent_failure(item, exc)
        return True

    async def _migrate(self, old_chat_id: int, new_chat_id: int) -> None:
        """The group was upgraded to a supergroup: move what is queued, and say so in the log."""
        log.error("chat %s is now %s (group upgraded); set TELEGRAM_CHAT_ID=%s", old_chat_id, new_chat_id, new_chat_id)
        self.chat_moves[old_chat_id] = new_chat_id
        async with self.db.transaction() as tx:
            await OutboxRepository(tx).move_chat(old_chat_id, new_chat_id)
            await IncidentRepository(tx).move_chat(old_chat_id, new_chat_id)

    async def _permanent_failure(self, item: OutboxItem, exc: Exception) -> None:
        outbox = OutboxRepository(self.db)
        error = f"{type(exc).__name__}: {getattr(exc, 'message', exc)}"
        refused = refused_for_good(item, exc)
        if refused:
            error = f"refused for good, not retried: {error}"
        if refused or item.failures + 1 >= MAX_PERMANENT_FAILURES:
            log.error("outbox #%s parked: %s", item.id, error)
            async with self.db.transaction() as tx:  # the row's state and its bytes' deletion together
                await OutboxRepository(tx).park(item.id, error)
        else:
            delay = 5.0 * (item.failures + 1)
            self._pace[item.chat_id].next_at = time.monotonic() + delay
            log.warning("outbox #%s failed (%s); retry in %.0fs", item.id, error, delay)
            await outbox.note_permanent_failure(item.id, error)

    async def _call(self, item: OutboxItem, parse_mode: str | None) -> int | None:
        payload: dict[str, Any] = item.payload
        if "file" in payload:
            return (await self._send_file(item, parse_mode)).message_id
        text = payload["text"] if parse_mode else plain_text(payload["text"])
        markup = keyboard(payload.get("buttons"))
        if item.kind == "edit" and item.message_id is not None:
            await self.bot.edit_message_text(
                chat_id=item.chat_id, message_id=item.message_id, text=text, parse_mode=parse_mode,
                reply_markup=markup, disable_web_page_preview=True,
            )
            return item.message_id
        message = await self.bot.send_message(
            chat_id=item.chat_id, text=text, parse_mode=parse_mode, reply_markup=markup,
            disable_web_page_preview=True, disable_notification=bool(payload.get("silent")),
            reply_parameters=ReplyParameters(message_id=item.reply_to, allow_sending_without_reply=True)
            if item.reply_to else None,
        )
        return message.message_id

    async def _send_file(self, item: OutboxItem, parse_mode: str | None) -> Message:
        """Upload a queued photo or document (bytes from the outbox), its caption as HTML or plain."""
        stored = await OutboxRepository(self.db).file(item.id)
        if stored is None:
            raise LookupError(f"outbox #{item.id}: the file to send is missing")
        payload = item.payload
        caption = payload.get("text") or None  # the caption, stored as a message's text is
        if caption is not None and not parse_mode:
            caption = plain_text(caption)
        upload = BufferedInputFile(stored.content, filename=stored.filename)
        common: dict[str, Any] = {
            "chat_id": item.chat_id, "caption": caption, "parse_mode": parse_mode if caption else None,
            "reply_markup": keyboard(payload.get("buttons")), "disable_notification": bool(payload.get("silent")),
            "reply_parameters": ReplyParameters(message_id=item.reply_to, allow_sending_without_reply=True)
            if item.reply_to else None,
        }
        if stored.kind == "photo":
            return await self.bot.send_photo(photo=upload, **common)
        return await self.bot.send_document(document=upload, **common)

    def _journal(self, item: OutboxItem, message_id: int | None) -> None:
        self._delivered[item.id] = (item.version, message_id)
        if self.journal is not None:
            self.journal.record(item.id, item.version, message_id)
            self._journal_dirty = True

    async def replay_journal(self) -> int:
        """At start: deliveries Telegram accepted but the database never recorded are recorded now."""
        if self.journal is None:
            return 0
        replayed = 0
        pending = {item.id: item for item in await OutboxRepository(self.db).pending(limit=1_000_000)}
        for delivery in self.journal.deliveries():
            item = pending.pop(delivery.outbox_id, None)
            if item is None:
                continue
            log.warning("outbox #%s was delivered before the last stop; recording it, not re-sending", item.id)
            await self._mark_sent(dataclasses.replace(item, version=delivery.version), delivery.message_id)
            replayed += 1
        self.journal.truncate()
        return replayed

    async def _mark_sent(self, item: OutboxItem, message_id: int | None) -> None:
        async with self.db.transaction() as tx:
            if item.incident_id is not None and item.kind == "send" and message_id is not None:
                await IncidentRepository(tx).set_card(item.incident_id, item.chat_id, message_id)
            await OutboxRepository(tx).mark_sent(item)
        self._delivered.pop(item.id, None)
        if self.on_sent is not None:
            self.on_sent(item)
