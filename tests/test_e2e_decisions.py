"""Buttons that decide, over real HTTP through the Bot API emulator and aiogram."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from bot.models import utcnow
from storage.audit import AuditRepository
from storage.proposals import ProposalRepository
from tests.conftest import APPROVER, APPROVER_2, CHAT_ID, STRANGER, glitchtip_sample


def button(card, prefix: str) -> str:
    for row in card.buttons:
        for b in row:
            if b["callback_data"].startswith(prefix):
                return b["callback_data"]
    raise AssertionError(f"no {prefix} button on card: {[b['text'] for r in card.buttons for b in r]}")


def has_button(card, prefix: str) -> bool:
    return any(b["callback_data"].startswith(prefix) for row in card.buttons for b in row)


async def audit_rows(h) -> list[dict[str, Any]]:
    """The audit log as `remediator audit --json` prints it (that command is tested in tests/test_cli.py)."""
    return [entry.as_dict() for entry in await AuditRepository(h.app.db).list()]


async def first_card(h, sample: str = "issue_alert_v2.json"):
    await h.post("glitchtip", glitchtip_sample(sample))
    [card] = await h.wait_cards(1)
    return card


async def test_approve_runs_once_and_the_card_shows_who(start_app):
    h = await start_app()
    card = await first_card(h)
    assert "Proposal: acknowledge" in card.plain_text and "0/1 approvals" in card.plain_text
    approve = button(card, "ap:")
    answer = await h.press(card.message_id, approve, name="Ann")
    assert "Approved" in answer["text"]
    done = await h.wait_text(card.message_id, "Done: acknowledge")
    assert "approved by Ann" in done.plain_text
    assert not has_button(done, "ap:") and not has_button(done, "rj:")
    again = await h.press(card.message_id, approve, stale=True)  # the old button, pressed again
    assert "Already" in again["text"]
    entries = await audit_rows(h)
    approvals = [e for e in entries if e["action"] == "proposal.approve" and e["outcome"] == "approved"]
    assert len(approvals) == 1 and approvals[0]["actor_id"] == APPROVER and approvals[0]["actor_name"] == "Ann"
    assert [e["outcome"] for e in entries if e["action"] == "action.finish"] == ["succeeded"]


async def test_every_other_button_answers_and_edits_the_card(start_app):
    """Priority, Investigate and Reject over the real protocol, at stage 3 (which draws them all).
    Each press's rules are tested in tests/test_decision_service.py; here: toast, card edit, audit."""
    h = await start_app(rollout_stage=3)
    card = await first_card(h)
    approve = button(card, "ap:")
    original = next(p for p in ("P0", "P1", "P2", "P3") if f"{p} ·" in card.plain_text)
    target = "P0" if original != "P0" else "P3"
    assert target in (await h.press(card.message_id, button(card, f"pr:1:{target}")))["text"]
    edited = await h.wait_text(card.message_id, f"{target} ·")
    assert f"triaged {original}" in edited.plain_text
    assert (await h.press(card.message_id, button(card, f"pr:1:{target}"), stale=True))["text"] == f"Already {target}."
    row = await h.app.db.fetchone("SELECT original, corrected, user_id FROM priority_corrections")
    assert (row["original"], row["corrected"], row["user_id"]) == (original, target, APPROVER)
    assert "recorded" in (await h.press(card.message_id, button(card, "iv:")))["text"]
    assert "Rejected" in (await h.press(card.message_id, button(card, "rj:"), name="Bob"))["text"]
    await h.wait_text(card.message_id, "Rejected by Bob")
    assert "Already rejected by Bob" in (await h.press(card.message_id, approve, stale=True))["text"]
    entries = await audit_rows(h)
    priority = next(e for e in entries if e["action"] == "incident.priority")
    assert priority["detail"]["original"] == original and priority["detail"]["to"] == target
    assert priority["detail"]["human_intervention"] is True
    assert any(e["action"] == "button.pr" and e["outcome"] == f"Already {target}." for e in entries)
    assert any(e["action"] == "incident.investigate" for e in entries)
    assert any(e["action"] == "proposal.reject" and e["outcome"] == "rejected" for e in entries)
    assert sum(e["action"] == "proposal.approve" and e["actor_id"] == APPROVER for e in entries) == 1
    assert not any(e["action"] == "action.start" for e in entries)


async def test_two_approvers_at_the_same_moment_one_wins(start_app):
    h = await start_app()
    card = await first_card(h)
    data = button(card, "ap:")
    q1 = h.emu.press_button(CHAT_ID, card.message_id, APPROVER, data, first_name="Ann")
    q2 = h.emu.press_button(CHAT_ID, card.message_id, APPROVER_2, data, first_name="Bob")
    a1, a2 = await asyncio.gather(h.emu.wait_for_answer(q1, 10), h.emu.wait_for_answer(q2, 10))
    texts = sorted([a1["text"], a2["text"]])
    assert sum("✅ Approved" in t for t in texts) == 1, texts
    assert sum("Already approved by" in t for t in texts) == 1, texts
    await h.app.decisions.wait_idle()
    rows = await h.app.db.fetchall("SELECT * FROM audit WHERE action = 'action.start'")
    assert len(rows) == 1


async def test_unauthorised_press_changes_nothing_and_is_audited(start_app):
    h = await start_app()
    card = await first_card(h)
    answer = await h.press(card.message_id, button(card, "ap:"), user_id=STRANGER, name="Mallory")
    assert "Not allowed" in answer["text"]
    answer = await h.press(card.message_id, button(card, "pr:"), user_id=STRANGER, name="Mallory")
    assert "Not allowed" in answer["text"]
    proposal = await ProposalRepository(h.app.db).latest_for(1)
    assert proposal is not None and proposal.state.value == "pending"
    refusals = [e for e in await audit_rows(h) if e["actor_id"] == STRANGER]
    assert len(refusals) == 2 and all("not an approver" in e["outcome"] for e in refusals)
    assert h.emu.message(CHAT_ID, card.message_id).edit_count == 0


async def test_stale_card_after_resolve_answers_what_happened(start_app):
    h = await start_app()
    card = await first_card(h)
    approve = button(card, "ap:")
    await h.command("/resolve 1")
    await h.wait_text(card.message_id, "Resolved by")
    answer = await h.press(card.message_id, approve, stale=True)
    assert "replaced" in answer["text"] or "resolved" in answer["text"]
    assert (await ProposalRepository(h.app.db).latest_for(1)).state.value == "superseded"


async def test_kill_switch_blocks_approve_and_survives_restart(start_app):
    h = await start_app()
    card = await first_card(h)
    approve = button(card, "ap:")
    reply = await h.command("/killswitch on deploy in progress")
    assert "Kill switch ON" in reply.plain_text and "deploy in progress" in reply.plain_text
    answer = await h.press(card.message_id, approve)
    assert "kill switch is on" in answer["text"].lower()
    assert (await ProposalRepository(h.app.db).latest_for(1)).state.value == "pending"
    await h.app.stop()
    h2 = await start_app()
    state = await h2.command("/killswitch")
    assert "ON" in state.plain_text and "deploy in progress" in state.plain_text
    answer = await h2.press(card.message_id, approve)
    assert "kill switch is on" in answer["text"].lower()
    await h2.command("/killswitch off")
    answer = await h2.press(card.message_id, approve)
    assert "Approved" in answer["text"]
    outcomes = [(e["action"], e["outcome"]) for e in await audit_rows(h2)]
    assert ("killswitch.on", "changed") in outcomes and ("killswitch.off", "changed") in outcomes
    assert outcomes.count(("proposal.approve", "refused: kill switch on")) == 2


async def test_kill_switch_env_forces_it_on(start_app):
    h = await start_app(kill_switch=True)
    card = await first_card(h)
    answer = await h.press(card.message_id, button(card, "ap:"))
    assert "kill switch is on" in answer["text"].lower()


async def test_interrupted_action_is_reported_after_restart_and_not_rerun(start_app, tmp_path):
    h = await start_app()
    card = await first_card(h)
    await h.app.stop()
    # The process died while the action ran: the row says running, nothing finished it.
    db = __import__("sqlite3").connect(tmp_path / "remediator.db")
    db.execute("UPDATE proposals SET state = 'running', decided_by = 'Ann', started_at = '2026-01-01T00:00:00+00:00'")
    db.commit()
    db.close()
    h2 = await start_app()
    edited = await h2.wait_text(card.message_id, "failed (interrupted)")
    assert "Failed" in edited.plain_text
    notice = await h2.emu.wait_for(
        lambda: next((m for m in h2.cards() if "was running when the bot stopped" in m.plain_text), None)
    )
    assert "not re-run" in notice.plain_text
    entries = await audit_rows(h2)
    assert [e["outcome"] for e in entries if e["action"] == "action.interrupted"] == ["failed (interrupted)"]
    assert not any(e["action"] == "action.start" for e in entries)


async def test_mute_then_repeats_update_silently(start_app):
    h = await start_app()
    card = await first_card(h)
    answer = await h.press(card.message_id, button(card, "mu:1:1h"))
    assert "Muted until" in answer["text"]
    await h.wait_text(card.message_id, "Muted until")
    await h.post("glitchtip", glitchtip_sample("issue_alert_v2.json"))
    await h.wait_text(card.message_id, "×2")
    assert len(h.cards()) == 1


async def test_operator_commands(start_app):
    h = await start_app()
    await first_card(h)
    await h.emu.wait_for(lambda: h.emu.commands, timeout=10)
    registered = {c["command"] for c in h.emu.commands}
    assert {"start", "help", "status", "incidents", "incident", "mute", "resolve", "killswitch"} <= registered
    help_text = (await h.command("/help", user_id=STRANGER)).plain_text
    assert "/killswitch" in help_text
    status = (await h.command("/status")).plain_text
    assert "Rollout stage: 2" in status and "Open incidents: 1" in status and "Kill switch: off" in status
    assert "Inbox: 0 waiting" in status
    listing = (await h.command("/incidents")).plain_text
    assert "#1" in listing and "slots" in listing
    one = (await h.command("/incident 1")).plain_text
    assert "History" in one and "incident.opened" in one
    assert "No incident #77" in (await h.command("/incident 77")).plain_text
    assert "Muted until" in (await h.command("/mute 1 2h")).plain_text
    assert "Usage" in (await h.command("/mute 1 forever")).plain_text
    assert "resolved" in (await h.command("/resolve 1")).plain_text
    assert "already resolved" in (await h.command("/resolve 1")).plain_text
    assert "Not allowed" in (await h.command("/status", user_id=STRANGER)).plain_text
    # A stranger's private chat gets no answer at all. Updates are handled in the order they were
    # sent, so once the approver's later command is answered, the stranger's was handled (dropped).
    h.emu.send_user_message(STRANGER, STRANGER, "/status")
    private = await h.command("/status", user_id=APPROVER, chat_id=APPROVER)
    assert "Rollout stage" in private.plain_text
    assert [m for m in h.emu.messages(STRANGER) if m.from_bot] == []
    # Had the gate let it through, its refusal row would be written before the approver's reads.
    refused = [e for e in await audit_rows(h) if e["actor_id"] == STRANGER and e["action"] == "command./status"]
    assert len(refused) == 1  # the one from the alert chat above


async def test_stage_1_draws_only_the_priority_row_and_refuses_decisions(start_app):
    h = await start_app(rollout_stage=1)
    card = await first_card(h)
    assert not has_button(card, "ap:") and not has_button(card, "iv:") and not has_button(card, "mu:")
    assert has_button(card, "pr:")
    assert "No action proposed" in card.plain_text
    answer = await h.press(card.message_id, button(card, "pr:1:P0"))
    assert "P0" in answer["text"]


async def test_expired_proposal_loses_its_buttons_and_refuses_approve(start_app):
    h = await start_app(proposal_expiry_hours=1)
    card = await first_card(h)
    approve = button(card, "ap:")
    assert await h.app.decisions.expire_due(now=utcnow() + timedelta(minutes=59)) == 0
    # What the scheduler runs every minute, as it would an hour from now.
    assert await h.app.decisions.expire_due(now=utcnow() + timedelta(hours=1, minutes=1)) == 1
    expired = await h.wait_text(card.message_id, "Expired without a decision")
    assert not has_button(expired, "ap:")
    answer = await h.press(card.message_id, approve, stale=True)
    assert "expired" in answer["text"]
    assert any(e["action"] == "proposal.expire" for e in await audit_rows(h))


async def test_mute_carries_to_a_regression_which_arrives_silently(start_app):
    h = await start_app()
    card = await first_card(h)
    await h.press(card.message_id, button(card, "mu:1:24h"))
    await h.wait_text(card.message_id, "Muted until")
    await h.command("/resolve 1")
    await h.wait_text(card.message_id, "Resolved by")
    await h.post("glitchtip", glitchtip_sample("issue_alert_v2.json"))
    regression = await h.emu.wait_for(lambda: next((m for m in h.cards() if "Regression" in m.plain_text), None))
    assert "Muted until" in regression.plain_text
    sends = [c for c in h.emu.calls if c.method == "sendMessage" and c.ok]
    regression_send = next(c for c in sends if "Regression" in c.params["text"])
    assert regression_send.params.get("disable_notification") is True
    first_send = next(c for c in sends if "Regression" not in c.params["text"])
    assert not first_send.params.get("disable_notification")
