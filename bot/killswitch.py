"""The kill switch: stored in SQLite so it survives restarts; while on, no action starts."""

from __future__ import annotations

from dataclasses import dataclass

from bot.models import utcnow
from storage.db import Executor
from storage.kv import KeyValueRepository

KEY = "kill_switch"


@dataclass(frozen=True)
class KillSwitchState:
    on: bool
    by: str | None = None
    reason: str | None = None
    at: str | None = None


async def read(db: Executor) -> KillSwitchState:
    value = await KeyValueRepository(db).get(KEY)
    if not value:
        return KillSwitchState(on=False)
    return KillSwitchState(on=bool(value.get("on")), by=value.get("by"), reason=value.get("reason"), at=value.get("at"))


async def write(db: Executor, on: bool, by: str, reason: str | None) -> KillSwitchState:
    state = KillSwitchState(on=on, by=by, reason=reason, at=utcnow().strftime("%Y-%m-%d %H:%M UTC"))
    await KeyValueRepository(db).set(KEY, state.__dict__)
    return state
