"""Operator commands on their own: each approver command's reply and audit row, usage errors, ids out of
range, who may use what, and where the kill switch answer goes.

`CommandService.run(actor, name, args, chat_id)` is exactly what the aiogram handler calls; the
reply is the HTML the handler sends back (None: nothing to send). Real services, real SQLite,
no HTTP (tests/test_e2e_decisions.py drives the same commands over the Bot API emulator).
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot import killswitch
from bot.chat_commands import Reply
from bot.models import Actor, Priority
from storage.incidents import IncidentRepository
from tests.conftest import ANN, APPROVER, CHAT_ID, MALLORY, STRANGER, Services

PRIVATE_CHAT = APPROVER  # a private chat's id is the user's id


async def run(services: Services, text: str, actor: Actor = ANN, chat_id: int = CHAT_ID) -> str | None:
    """Run `/name args` as the handler does; the reply's HTML."""
    name, _, args = text.removeprefix("/").partition(" ")
    reply = await services.commands.run(actor, name, args or None, chat_id)
    assert isinstance(reply, Reply)
    return reply.html


async def command_audit(services: Services) -> list[tuple[str, str, int | None]]:
    return [(e.action, e.outcome, e.actor_id) for e in await services.audit() if e.action.startswith("command.")]


# -- /start and /help (open to everyone) are tested in tests/test_start_command.py ------------------


async def test_a_command_the_bot_does_not_know_gets_no_answer_and_no_row(services: Services):
    assert await run(services, "/frobnicate now") is None
    assert await services.audit() == []


# -- reading: /status, /incidents, /incident, /killswitch ----------------------------------------------


async def test_status_shows_stage_switch_incidents_queues_and_refusals(services: Services):
    await services.open_incident(priority=Priority.P1)
    await services.open_incident("KeyError: 'slots'", priority=Priority.P3)
    status = await run(services, "/status")
    assert status is not None
    assert "Rollout stage: 2 (triage + decisions)" in status
    assert "Kill switch: off" in status
    assert "Open incidents: 2 — 🔴 P0: 0 · 🟠 P1: 1 · 🟡 P2: 0 · 🔵 P3: 1" in status
    assert "Inbox: 0 waiting, 0 set aside · Outbox: 2 waiting, 0 undeliverable" in status  # the two cards
    assert "Webhook refused since start: 2 (not_found 2)" in status
    await services.decisions.set_killswitch(ANN, True, "<deploy>")
    status = await run(services, "/status")
    assert status is not None and "Kill switch: 🛑 ON (by Ann: &lt;deploy&gt;)" in status
    assert await command_audit(services) == [("command./status", "ok", APPROVER)] * 2


async def test_incidents_lists_the_open_ones_newest_first_with_mutes(services: Services):
    assert await run(services, "/incidents") == "No open incidents. 🎉"
    first, _ = await services.open_incident("RuntimeError: first")
    second, _ = await services.open_incident("RuntimeError: second")
    await services.decisions.mute(ANN, first, timedelta(hours=2))
    listing = await run(services, "/incidents")
    assert listing is not None
    lines = listing.splitlines()
    assert lines[0].startswith("<b>Open incidents</b>")  # then the newest activity first
    assert f"#{second} P2 · RuntimeError: second · ×1" in lines[1] and "🔕" not in lines[1]
    assert f"#{first} P2 · RuntimeError: first · ×1 🔕" in lines[2]
    await services.decisions.resolve(ANN, second)
    listing = await run(services, "/incidents")
    assert listing is not None and "second" not in listing
    assert await command_audit(services) == [("command./incidents", "ok", APPROVER)] * 3


async def test_incident_shows_the_card_with_its_history(services: Services):
    incident_id, _ = await services.open_incident()
    await services.decisions.mute(ANN, incident_id, timedelta(hours=1))
    one = await run(services, f"/incident #{incident_id}")
    assert one is not None
    assert "RuntimeError: worker 7 crashed" in one and "<b>History</b>" in one
    assert "incident.mute: muted by Ann" in one
    assert await run(services, "/incident 77") == "No incident #77."
    assert await command_audit(services) == [("command./incident", "ok", APPROVER),
                                             ("command./incident", "not found", APPROVER)]


async def test_incident_shows_the_glitchtip_counts_and_the_github_issue_the_card_shows(services: Services):
    from types import SimpleNamespace

    from bot.app import card_extras_source
    from bot.glitchtip.details import IssueDetails
    from storage.github import GitHubIssueRepository
    from storage.glitchtip import GlitchTipRepository

    # Wired as bot/app.py wires it with GLITCHTIP_URL/GLITCHTIP_TOKEN and GITHUB_TOKEN/GITHUB_REPO set.
    services.cards.extras = card_extras_source(SimpleNamespace(glitchtip_api_on=True, github_on=True))  # type: ignore[arg-type]
    incident_id, _ = await services.open_incident()
    async with services.db.transaction() as tx:
        await GlitchTipRepository(tx).add_link(incident_id, "issue", "77", None)
        await GlitchTipRepository(tx).store_details(incident_id, IssueDetails(status="unresolved", count=1234).to_dict())
        await GitHubIssueRepository(tx).request_issue(incident_id, "acme/api", None, "Ann")
        await GitHubIssueRepository(tx).mark_filed(incident_id, 7, "https://github.com/acme/api/issues/7", None,
                                                   found_existing=False)
    shown = await run(services, f"/incident {incident_id}")
    assert shown is not None
    assert "×1,234 in GlitchTip" in shown
    assert 'GitHub issue <a href="https://github.com/acme/api/issues/7">acme/api#7</a>' in shown
    assert "<b>History</b>" in shown


@pytest.mark.parametrize(("text", "usage"), [
    ("/incident", "Usage: /incident &lt;id&gt;"),
    ("/incident abc", "Usage: /incident &lt;id&gt;"),
    ("/resolve", "Usage: /resolve &lt;id&gt;"),
    ("/resolve ²", "Usage: /resolve &lt;id&gt;"),  # a digit to str.isdigit(), not to int()
    ("/mute 1", "Usage: /mute"),
    ("/mute 1 forever", "Usage: /mute"),
    ("/mute 1 ²h", "Usage: /mute"),
    ("/mute 1 31d", "Usage: /mute"),  # 30 days at most
    ("/mute x 1h", "Usage: /mute"),
    ("/killswitch maybe", "Usage: /killswitch [on [reason] | off]"),
])
async def test_a_malformed_command_answers_its_usage_and_changes_nothing(services: Services, text, usage):
    incident_id, _ = await services.open_incident()
    reply = await run(services, text)
    assert reply is not None and reply.startswith(usage)
    incident = await IncidentRepository(services.db).get(incident_id)
    assert incident is not None and incident.is_open and incident.muted_until is None
    assert not (await killswitch.read(services.db)).on
    name = text.split()[0]
    assert await command_audit(services) == [(f"command.{name}", "usage error", APPROVER)]


@pytest.mark.parametrize("text", [
    "/resolve 99999999999999999999", "/resolve #99999999999999999999", "/resolve 0",
    "/mute 99999999999999999999 1h", "/incident 99999999999999999999",
])
async def test_an_id_no_incident_can_have_is_answered_as_such(services: Services, text):
    raw = text.split()[1].removeprefix("#")
    assert await run(services, text) == f"No incident #{raw}: not a valid incident id."
    name = text.split()[0]
    assert await command_audit(services) == [(f"command.{name}", "refused: invalid id (out of range)", APPROVER)]


# -- changing: /mute, /resolve, /killswitch -------------------------------------------------------------


async def test_mute_command_mutes_from_now(services: Services):
    incident_id, _ = await services.open_incident()
    until = services.clock() + timedelta(hours=2)
    assert await run(services, f"/mute {incident_id} 2h") == f"🔕 Muted until {until:%Y-%m-%d %H:%M} UTC."
    incident = await IncidentRepository(services.db).get(incident_id)
    assert incident is not None and incident.muted_until is not None
    assert abs(incident.muted_until - until) < timedelta(milliseconds=1)
    assert [(e.action, e.outcome) for e in await services.audit()] == [("incident.mute", "muted")]
    assert await run(services, "/mute 4242 1h") == "No incident #4242."
    assert (await services.audit())[-1].action == "command./mute"  # the no-op is audited as the command


async def test_resolve_command_resolves_once_and_says_by_whom_after(services: Services):
    incident_id, _ = await services.open_incident()
    assert await run(services, f"/resolve {incident_id}") == f"✔️ Incident #{incident_id} resolved."
    [resolved] = await services.audit("incident.resolve")
    assert resolved.detail["via"] == "command" and resolved.actor_name == "Ann"
    assert await run(services, f"/resolve {incident_id}") == f"Incident #{incident_id} was already resolved by Ann."
    assert await run(services, "/resolve 4242") == "No incident #4242."
    assert [(a, o) for a, o, _ in await command_audit(services)] == [
        ("command./resolve", f"Incident #{incident_id} was already resolved by Ann."),
        ("command./resolve", "No incident #4242."),
    ]


async def test_killswitch_in_the_alert_chat_is_answered_by_the_announcement_only(services: Services):
    assert await run(services, "/killswitch") == "Kill switch is <b>off</b>. Turn on: /killswitch on [reason]"
    assert await run(services, "/killswitch on deploy <now>") is None  # the announcement is the answer
    [announcement] = await services.messages()
    assert "Kill switch ON</b> by Ann: deploy &lt;now&gt;" in announcement
    state = await killswitch.read(services.db)
    assert (state.on, state.reason) == (True, "deploy <now>")
    shown = await run(services, "/killswitch")
    assert shown is not None and "Kill switch is <b>ON</b>" in shown and "(by Ann: deploy &lt;now&gt;)" in shown
    assert await run(services, "/killswitch OFF") is None
    assert not (await killswitch.read(services.db)).on
    assert [(e.action, e.outcome) for e in await services.audit()] == [
        ("command./killswitch", "shown"), ("killswitch.on", "changed"), ("command./killswitch", "shown"),
        ("killswitch.off", "changed"),
    ]


async def test_killswitch_in_a_private_chat_answers_there_too(services: Services):
    reply = await run(services, "/killswitch on maintenance", chat_id=PRIVATE_CHAT)
    assert reply is not None and "Kill switch ON" in reply and "maintenance" in reply
    assert await services.messages() == [reply]  # and the alert chat is told the same


# -- who may use what ---------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "/status", "/incidents", "/incident 1", "/mute 1 1h", "/resolve 1", "/killswitch", "/killswitch on lol",
])
async def test_a_non_approver_is_refused_and_nothing_changes(services: Services, text):
    incident_id, _ = await services.open_incident()
    queued = await services.queued()
    assert await run(services, text, MALLORY) == "⛔ Not allowed: only approvers can use this command."
    incident = await IncidentRepository(services.db).get(incident_id)
    assert incident is not None and incident.is_open and incident.muted_until is None
    assert not (await killswitch.read(services.db)).on
    assert await services.queued() == queued
    name = text.split()[0]
    [refusal] = await services.audit()
    assert (refusal.action, refusal.outcome, refusal.actor_id) == (f"command.{name}", "refused: not an approver",
                                                                    STRANGER)
