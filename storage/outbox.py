"""The outbox: every Telegram send or edit is a row before it is attempted.

Card rows are coalesced: while a card's row is still pending, a newer rendering replaces its
payload (and bumps `version`), so a storm of repeats costs one edit per sending slot, not one
per alert. The sender marks a row sent only if the version it sent is still the newest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from storage.db import Executor
from storage.timefmt import now_db

#: a chat message (announcements, replies, storm summaries): after P0 cards, before P1's
MESSAGE_PRIORITY = 1


@dataclass(frozen=True)
class OutboxFile:
    """A photo or document queued with its row (payload["file"] names it, payload["text"] is its
    caption; the bytes live here)."""

    kind: str  # photo | document
    filename: str
    content: bytes


@dataclass(frozen=True)
class OutboxItem:
    id: int
    chat_id: int
    kind: str  # send | edit
    incident_id: int | None
    message_id: int | None  # for edits: the message to edit (the card's, for card rows)
    reply_to: int | None
    payload: dict[str, Any]
    version: int
    attempts: int
    failures: int = 0


class OutboxRepository:
    def __init__(self, db: Executor) -> None:
        self.db = db

    async def add(
        self,
        chat_id: int,
        payload: dict[str, Any],
        *,
        kind: str = "send",
        incident_id: int | None = None,
        message_id: int | None = None,
        reply_to: int | None = None,
        priority: int = MESSAGE_PRIORITY,
    ) -> int:
        return await self.db.insert(
            "INSERT INTO outbox (chat_id, kind, incident_id, message_id, reply_to, payload, created_at, priority) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (chat_id, kind, incident_id, message_id, reply_to, json.dumps(payload), now_db(), priority),
        )

    async def add_file(
        self, chat_id: int, payload: dict[str, Any], *, kind: str, filename: str, content: bytes,
        reply_to: int | None = None, priority: int = MESSAGE_PRIORITY,
    ) -> int:
        """Queue a photo or document: the row and its bytes in the caller's transaction."""
        outbox_id = await self.add(
            chat_id, {**payload, "file": {"kind": kind, "filename": filename}}, reply_to=reply_to, priority=priority
        )
        await self.db.execute(
            "INSERT INTO outbox_files (outbox_id, kind, filename, content) VALUES (?, ?, ?, ?)",
            (outbox_id, kind, filename, content),
        )
        return outbox_id

    async def file(self, outbox_id: int) -> OutboxFile | None:
        """The bytes to upload for a row; read only when it is sent, so the queue scans stay small."""
        row = await self.db.fetchone("SELECT kind, filename, content FROM outbox_files WHERE outbox_id = ?",
                                     (outbox_id,))
        return None if row is None else OutboxFile(row["kind"], row["filename"], bytes(row["content"]))

    async def put_card(
        self, chat_id: int, incident_id: int, payload: dict[str, Any], has_message: bool, priority: int = 3
    ) -> None:
        """Queue the newest rendering of an incident's card: replace a pending one, else add a row.

        `priority` is the incident's priority rank (0 for P0): the sender takes a chat's most
        urgent row first."""
        # One statement in the common case (a storm: the card's row is still waiting for its turn).
        replaced = await self.db.execute(
            "UPDATE outbox SET payload = ?, version = version + 1, priority = ? "
            "WHERE incident_id = ? AND state = 'pending'",
            (json.dumps(payload), priority, incident_id),
        )
        if replaced:
            return
        await self.add(
            chat_id, payload, kind="edit" if has_message else "send", incident_id=incident_id, priority=priority
        )

    async def pending(self, limit: int = 500) -> list[OutboxItem]:
        """The oldest pending rows, all chats together."""
        return await self._items(
            "WHERE o.state = 'pending' ORDER BY o.id LIMIT ?", (limit,)
        )

    async def heads(self) -> list[OutboxItem]:
        """The most urgent pending row of each chat (oldest first within a priority): all the
        sender may send now. A P0 card overtakes a queue of lower ones; equal ones keep their order."""
        # SQLite takes the bare column `id` from the row that holds the MIN() of the group.
        return await self._items(
            "WHERE o.id IN (SELECT id FROM (SELECT id, MIN(priority * 1000000000000 + id) FROM outbox "
            "WHERE state = 'pending' GROUP BY chat_id)) ORDER BY o.priority, o.id", ()
        )

    async def _items(self, where: str, params: tuple[Any, ...]) -> list[OutboxItem]:
        rows = await self.db.fetchall(
            f"SELECT o.*, i.card_message_id FROM outbox o LEFT JOIN incidents i ON i.id = o.incident_id {where}",
            params,
        )
        return [
            OutboxItem(
                id=r["id"], chat_id=r["chat_id"], kind=r["kind"], incident_id=r["incident_id"],
                message_id=r["message_id"] if r["message_id"] is not None else r["card_message_id"],
                reply_to=r["reply_to"], payload=json.loads(r["payload"]), version=r["version"],
                attempts=r["attempts"], failures=r["failures"],
            )
            for r in rows
        ]

    async def mark_sent(self, item: OutboxItem) -> bool:
        """Sent, unless a newer payload arrived meanwhile (then it stays pending, now as an edit)."""
        changed = await self.db.execute(
            "UPDATE outbox SET state = 'sent', sent_at = ?, attempts = attempts + 1 WHERE id = ? AND version = ?",
            (now_db(), item.id, item.version),
        )
        if changed == 0:
            await self.db.execute(
                "UPDATE outbox SET kind = CASE WHEN incident_id IS NULL THEN kind ELSE 'edit' END WHERE id = ?",
                (item.id,),
            )
        elif "file" in item.payload:
            # Telegram keeps the file now; the copy here only made the upload survive a crash.
            await self.db.execute("DELETE FROM outbox_files WHERE outbox_id = ?", (item.id,))
        return changed == 1

    async def note_failure(self, item_id: int, error: str) -> None:
        await self.db.execute(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE id = ?", (error[:500], item_id)
        )

    async def note_permanent_failure(self, item_id: int, error: str) -> None:
        await self.db.execute(
            "UPDATE outbox SET attempts = attempts + 1, failures = failures + 1, last_error = ? WHERE id = ?",
            (error[:500], item_id),
        )

    async def move_chat(self, old_chat_id: int, new_chat_id: int) -> None:
        """A group became a supergroup: its pending rows go to the new chat id."""
        await self.db.execute(
            "UPDATE outbox SET chat_id = ? WHERE chat_id = ? AND state = 'pending'", (new_chat_id, old_chat_id)
        )

    async def failed_count(self) -> int:
        row = await self.db.fetchone("SELECT COUNT(*) FROM outbox WHERE state = 'failed'")
        return int(row[0]) if row else 0

    async def convert_to_send(self, item_id: int) -> None:
        await self.db.execute("UPDATE outbox SET kind = 'send' WHERE id = ?", (item_id,))

    async def park(self, item_id: int, error: str) -> None:
        """Failed for good: the row stays (what failed, and why), its file's bytes go, as they
        would once sent; a parked row is never tried again, so nothing would read them."""
        await self.db.execute(
            "UPDATE outbox SET state = 'failed', attempts = attempts + 1, last_error = ? WHERE id = ?",
            (error[:500], item_id),
        )
        await self.db.execute("DELETE FROM outbox_files WHERE outbox_id = ?", (item_id,))

    async def drop_unsendable_files(self) -> int:
        """Delete the bytes no pending row will upload (a row parked or sent before its bytes were
        deleted, e.g. by a crash between the two statements, or by a version without the delete)."""
        return await self.db.execute(
            "DELETE FROM outbox_files WHERE outbox_id NOT IN (SELECT id FROM outbox WHERE state = 'pending')"
        )

    async def depth(self) -> int:
        row = await self.db.fetchone("SELECT COUNT(*) FROM outbox WHERE state = 'pending'")
        return int(row[0]) if row else 0
