"""/start answers everyone with the ids the setup needs; everything else from strangers stays ignored.

Through the real application and the Bot API emulator, plus the limits on a flood (a fake clock).
"""

from __future__ import annotations

import logging

from bot.models import Actor
from bot.open_commands import OpenCommandGuard, OpenCommandLimits
from handlers.middlewares import IgnoredMessageLog, open_command
from storage.audit import AuditEntry, AuditRepository
from storage.db import Database
from tests.conftest import APPROVER, CHAT_ID, STRANGER

OTHER_GROUP = -1009876543210


async def test_stranger_in_a_private_chat_gets_the_ids_and_env_lines(start_app):
    h = await start_app()
    reply = (await h.command("/start", user_id=STRANGER, chat_id=STRANGER)).plain_text
    assert f"This chat: {STRANGER} (a private chat with you), not the alert chat" in reply
    assert f"You: {STRANGER} (Ann), not an approver" in reply
    assert f"TELEGRAM_CHAT_ID={STRANGER}" in reply and f"TELEGRAM_APPROVERS={STRANGER}" in reply
    assert "add the bot to your group" in reply
    assert str(APPROVER) not in reply  # the approver list is not shown to a stranger


async def test_stranger_in_another_group_gets_the_group_id(start_app):
    h = await start_app()
    reply = (await h.command("/start@remediator_bot", user_id=STRANGER, chat_id=OTHER_GROUP)).plain_text
    assert f"This chat: {OTHER_GROUP} (this group), not the alert chat" in reply
    assert f"TELEGRAM_CHAT_ID={OTHER_GROUP}" in reply and f"TELEGRAM_APPROVERS={STRANGER}" in reply
    help_text = (await h.command("/help", user_id=STRANGER, chat_id=OTHER_GROUP)).plain_text
    assert "/killswitch" in help_text

    rows = [e for e in await AuditRepository(h.app.db).list() if e.action == "command./start"]
    assert [(e.actor_id, e.outcome, e.detail["chat_id"], e.detail["alert_chat"]) for e in rows] == [
        (STRANGER, "answered", OTHER_GROUP, False)
    ]


async def test_approver_in_the_alert_chat_or_privately_is_told_all_is_set(start_app):
    h = await start_app()
    reply = (await h.command("/start")).plain_text
    assert f"This chat: {CHAT_ID} (this group), ✅ this is the alert chat" in reply
    assert f"You: {APPROVER} (Ann), ✅ an approver" in reply
    assert "Nothing to change" in reply and "TELEGRAM_CHAT_ID=" not in reply
    # An approver's private chat is for commands: nothing to change there either.
    private = (await h.command("/start", chat_id=APPROVER)).plain_text
    assert f"This chat: {APPROVER} (a private chat with you), not the alert chat" in private
    assert "Nothing to change" in private


async def test_other_messages_from_elsewhere_are_ignored_with_one_log_line(start_app, caplog):
    h = await start_app()
    caplog.set_level(logging.WARNING, logger="handlers.middlewares")
    # An approver, but in another group: operator commands answer only in the alert chat.
    h.emu.send_user_message(OTHER_GROUP, APPROVER, "/status")
    h.emu.send_user_message(OTHER_GROUP, APPROVER, "/incidents")
    # Updates are handled in order, so once /start is answered the two before it were dropped.
    reply = await h.command("/start", user_id=APPROVER, chat_id=OTHER_GROUP)
    assert [m.message_id for m in h.emu.messages(OTHER_GROUP)] == [reply.message_id]
    assert "✅ an approver" in reply.plain_text and "not the alert chat" in reply.plain_text
    lines = [r.getMessage() for r in caplog.records if r.name == "handlers.middlewares"]
    assert lines == [
        f"ignored a message from chat {OTHER_GROUP} by user {APPROVER}: not the alert chat "
        f"(TELEGRAM_CHAT_ID={CHAT_ID}) (send /start there to see the ids)"
    ]


def test_open_command_recognises_start_and_help_only():
    assert open_command("/start") and open_command("/start@remediator_bot setup") and open_command("/HELP")
    assert not open_command("/status") and not open_command("start") and not open_command(None)
    assert not open_command("/starting")


def test_ignored_messages_log_once_a_minute_per_chat(caplog):
    now = [0.0]
    ignored = IgnoredMessageLog(CHAT_ID, per_minute=2, clock=lambda: now[0])
    caplog.set_level(logging.WARNING, logger="handlers.middlewares")
    for _ in range(5):
        ignored.note(-1, "group", 7)
    ignored.note(2, "private", 2)
    ignored.note(-3, "group", 3)  # over the shared budget of 2 lines a minute
    now[0] = 61.0
    ignored.note(-1, "group", 7)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3
    assert lines[0].startswith("ignored a message from chat -1 by user 7: not the alert chat")
    assert "private chat with someone not in TELEGRAM_APPROVERS" in lines[1]
    assert "; 4 more from it since the last line; 1 from other chats not logged" in lines[2]


async def test_a_flood_of_start_is_bounded_in_answers_and_audit_rows(make_services):
    now = [0.0]
    s = await make_services()
    limits = OpenCommandLimits(answers_per_person=3, answers_outside=5, audit_rows=4)
    guard = s.commands.open_guard = OpenCommandGuard(s.db, limits, clock=lambda: now[0])

    async def start(user: int, chat: int) -> bool:
        return (await s.commands.run(Actor(user, f"u{user}"), "start", None, chat)).html is not None

    async def rows() -> list[AuditEntry]:
        return [e for e in await s.audit() if e.action.startswith("command.")]

    # One person in one chat: 3 answers a minute.
    assert [await start(STRANGER, STRANGER) for _ in range(5)] == [True, True, True, False, False]
    # Strangers elsewhere share 5 answers a minute (3 spent above); the alert chat is not capped by them.
    assert [await start(500 + i, OTHER_GROUP) for i in range(4)] == [True, True, False, False]
    assert await start(APPROVER, CHAT_ID)

    audited = await rows()
    assert [e.outcome for e in audited] == ["answered"] * 3 + ["not answered: rate limit"]  # the budget of 4

    now[0] = 60.0  # a new minute: the summary of the other 6 comes first, then the next row
    assert await start(STRANGER, STRANGER)
    summary, latest = (await rows())[4:]
    assert summary.action == "command.open"
    assert summary.outcome == "6 more /start or /help, not audited one by one"
    assert summary.detail["counts"] == {"/start not answered: rate limit": 3, "/start answered": 3}
    assert (latest.action, latest.outcome, latest.actor_id) == ("command./start", "answered", STRANGER)
    await guard.close()  # nothing left to summarise
    assert len(await rows()) == 6


async def test_the_summary_is_written_at_shutdown(make_services):
    s = await make_services()
    s.commands.open_guard = OpenCommandGuard(s.db, OpenCommandLimits(audit_rows=1))
    for user in (500, 501, 502):
        await s.commands.run(Actor(user, "x"), "help", None, OTHER_GROUP)
    await s.commands.close()
    [summary] = await s.audit("command.open")
    assert summary.detail["counts"] == {"/help answered": 2}


async def test_stopping_the_app_writes_the_summary(start_app, tmp_path):
    h = await start_app()
    h.app.commands.open_guard = OpenCommandGuard(h.app.db, OpenCommandLimits(audit_rows=1))
    for user in (501, 502, 503):
        await h.command("/start", user_id=user, chat_id=OTHER_GROUP)
    await h.app.stop()
    db = await Database(tmp_path / "remediator.db").connect()
    try:
        entries = await AuditRepository(db).list()
    finally:
        await db.close()
    assert [e.actor_id for e in entries if e.action == "command./start"] == [501]
    [summary] = [e for e in entries if e.action == "command.open"]
    assert summary.detail["counts"] == {"/start answered": 2}
