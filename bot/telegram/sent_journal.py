"""A tiny write-ahead note of what Telegram accepted, written before the database commit.

Telegram has no idempotency key: if the process dies after Telegram accepted a card but
before SQLite recorded it, the card would be sent again at restart. Recording a delivery in
SQLite has to wait for the shared database lock (behind a pipeline batch, say), so that window
could be tens of milliseconds. An append to this file takes microseconds and needs no lock;
at the next start the notes are replayed into the outbox, so only a death inside those
microseconds can still double a card.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Delivery:
    outbox_id: int
    version: int
    message_id: int | None


class SentJournal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def record(self, outbox_id: int, version: int, message_id: int | None) -> None:
        # One small write() with O_APPEND: it reaches the page cache whole, which survives SIGKILL.
        os.write(self._fd, f"{outbox_id} {version} {message_id or 0}\n".encode())

    def deliveries(self) -> list[Delivery]:
        found = []
        for line in self.path.read_text(encoding="ascii", errors="replace").splitlines():
            parts = line.split()
            if len(parts) == 3 and all(p.isdigit() for p in parts):
                found.append(Delivery(int(parts[0]), int(parts[1]), int(parts[2]) or None))
        return found

    def truncate(self) -> None:
        os.ftruncate(self._fd, 0)

    def close(self) -> None:
        os.close(self._fd)
