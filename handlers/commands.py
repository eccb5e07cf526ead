"""Operator commands. Thin: parse arguments, check the approver right, call bot/ services."""

from __future__ import annotations

import html

from aiogram import Router
from aiogram.filters import Command, CommandObject, CommandStart
from aiogram.types import Message

from bot.callbacks import parse_id
from bot.card import esc
from bot.cards import CardPublisher
from bot.decisions import DecisionService, parse_duration
from bot.operator import HELP, Operator
from handlers.callbacks import actor_of
from storage.audit import AuditRepository


async def _approver(message: Message, decisions: DecisionService, command: str) -> bool:
    actor = actor_of(message.from_user)
    if decisions.is_approver(actor.id):
        return True
    await decisions.refuse(actor, f"command./{command}")
    await message.answer("⛔ Not allowed: only approvers can use this command.")
    return False


async def _audit_command(decisions: DecisionService, message: Message, command: str, outcome: str) -> None:
    actor = actor_of(message.from_user)
    await AuditRepository(decisions.db).record(f"command./{command}", outcome, actor_id=actor.id, actor_name=actor.name)


async def cmd_help(message: Message, decisions: DecisionService) -> None:
    await _audit_command(decisions, message, "help", "ok")
    await message.answer(HELP)


async def cmd_status(message: Message, decisions: DecisionService, operator: Operator) -> None:
    if await _approver(message, decisions, "status"):
        await _audit_command(decisions, message, "status", "ok")
        await message.answer(await operator.status())


async def cmd_incidents(message: Message, decisions: DecisionService, operator: Operator) -> None:
    if await _approver(message, decisions, "incidents"):
        await _audit_command(decisions, message, "incidents", "ok")
        await message.answer(await operator.incidents())


async def _incident_id(
    message: Message, command: CommandObject, decisions: DecisionService, name: str, usage: str
) -> tuple[int, list[str]] | None:
    """The incident id a command names, and the arguments after it; None once it has answered
    (usage, or an id no incident can have: answered as such, never looked up)."""
    parts = (command.args or "").split()
    raw = parts[0].removeprefix("#") if parts else ""
    if not (raw.isascii() and raw.isdigit()):
        await _audit_command(decisions, message, name, "usage error")
        await message.answer(usage)
        return None
    incident_id = parse_id(raw)
    if incident_id is None:
        await _audit_command(decisions, message, name, "refused: invalid id (out of range)")
        await message.answer(f"No incident #{esc(raw, 40)}: not a valid incident id.")
        return None
    return incident_id, parts[1:]


async def cmd_incident(message: Message, command: CommandObject, decisions: DecisionService, operator: Operator) -> None:
    if not await _approver(message, decisions, "incident"):
        return
    named = await _incident_id(message, command, decisions, "incident", "Usage: /incident &lt;id&gt;")
    if named is None:
        return
    incident_id, _ = named
    text = await operator.incident(incident_id)
    await _audit_command(decisions, message, "incident", "ok" if text else "not found")
    await message.answer(text or f"No incident #{incident_id}.")


async def cmd_mute(message: Message, command: CommandObject, decisions: DecisionService) -> None:
    if not await _approver(message, decisions, "mute"):
        return
    usage = "Usage: /mute &lt;id&gt; &lt;duration&gt; — e.g. /mute 12 1h (m, h or d; up to 30d)"
    named = await _incident_id(message, command, decisions, "mute", usage)
    if named is None:
        return
    incident_id, rest = named
    duration = parse_duration(rest[0]) if rest else None
    if duration is None:
        await _audit_command(decisions, message, "mute", "usage error")
        await message.answer(usage)
        return
    actor = actor_of(message.from_user)
    outcome = await decisions.mute(actor, incident_id, duration)
    await decisions.audit_outcome(actor, "command./mute", incident_id, outcome)
    await message.answer(html.escape(outcome.answer))


async def cmd_resolve(message: Message, command: CommandObject, decisions: DecisionService) -> None:
    if not await _approver(message, decisions, "resolve"):
        return
    named = await _incident_id(message, command, decisions, "resolve", "Usage: /resolve &lt;id&gt;")
    if named is None:
        return
    incident_id, _ = named
    actor = actor_of(message.from_user)
    outcome = await decisions.resolve(actor, incident_id, via="command")
    await decisions.audit_outcome(actor, "command./resolve", incident_id, outcome)
    await message.answer(html.escape(outcome.answer))


async def cmd_killswitch(
    message: Message, command: CommandObject, decisions: DecisionService, operator: Operator, cards: CardPublisher
) -> None:
    if not await _approver(message, decisions, "killswitch"):
        return
    parts = (command.args or "").split(maxsplit=1)
    verb = parts[0].lower() if parts else ""
    if verb not in ("", "on", "off"):
        await _audit_command(decisions, message, "killswitch", "usage error")
        await message.answer("Usage: /killswitch [on [reason] | off]")
        return
    if not verb:
        await _audit_command(decisions, message, "killswitch", "shown")
        await message.answer(await operator.killswitch_state())
        return
    reason = parts[1].strip() if len(parts) > 1 else None
    text = await operator.set_killswitch(actor_of(message.from_user), verb == "on", reason)
    # Announced in the alert chat (through the outbox) so everyone sees who and why.
    async with decisions.db.transaction() as tx:
        await cards.say(tx, text)
    if message.chat.id != cards.chat_id:
        await message.answer(text)


def build() -> Router:
    """A fresh router (aiogram attaches a router to one dispatcher only)."""
    router = Router(name="commands")
    router.message.register(cmd_help, CommandStart())
    router.message.register(cmd_help, Command("help"))
    router.message.register(cmd_status, Command("status"))
    router.message.register(cmd_incidents, Command("incidents"))
    router.message.register(cmd_incident, Command("incident"))
    router.message.register(cmd_mute, Command("mute"))
    router.message.register(cmd_resolve, Command("resolve"))
    router.message.register(cmd_killswitch, Command("killswitch"))
    return router
