"""Every way an incident gets resolved, and what a webhook body or a button may not do.

Over real HTTP: the webhook, aiogram and the Bot API emulator; SQLite is real.
"""

from __future__ import annotations

import json

from bot.ingest import parse_payload
from bot.models import AlertKind
from bot.recurrence import blocked_key
from storage.incidents import IncidentRepository
from storage.kv import KeyValueRepository
from storage.proposals import ProposalRepository
from tests.conftest import APPROVER, CHAT_ID, glitchtip_sample
from tests.test_e2e_decisions import audit_rows, button, first_card, has_button

OTHER_GROUP = -1009876543210
BACK_UP = "The monitored site is back up."


def spoofed_back_up(title_link: str | None, title: str = "whatever", fields: list | None = None) -> bytes:
    """A body that claims to be an uptime "back up" but is not about a monitor."""
    return json.dumps({"text": "GlitchTip Uptime Alert", "attachments": [
        {"title": title, "title_link": title_link, "text": BACK_UP, "fields": fields}]}).encode()


async def settle(h, marker: str = "ZeroDivisionError: settle the pipeline") -> None:
    """The inbox is processed in order: once a later alert's card is out, earlier bodies were handled."""
    await h.post("generic", {"title": marker, "project": "settle"})
    await h.emu.wait_for(lambda: any(marker in m.plain_text for m in h.cards()), timeout=10)


async def incident_status(h, incident_id: int) -> str:
    incident = await IncidentRepository(h.app.db).get(incident_id)
    assert incident is not None
    return incident.status


# -- uptime events only touch uptime incidents ---------------------------------------------------------


def test_uptime_text_with_an_issue_link_is_an_ordinary_error() -> None:
    body = spoofed_back_up("https://glitchtip.example.com/acme/issues/4310")
    (alert,) = parse_payload("glitchtip", body).alerts
    assert alert.kind is AlertKind.ERROR
    assert alert.fingerprint == "glitchtip:glitchtip.example.com:issue:4310"


async def test_spoofed_back_up_with_an_issue_link_leaves_that_incident_open(start_app):
    h = await start_app()
    card = await first_card(h)  # issue 4310, open
    assert (await h.post("glitchtip", spoofed_back_up("https://glitchtip.example.com/acme/issues/4310"))).status_code == 202
    edited = await h.wait_text(card.message_id, "×2")  # taken as one more event of that error
    assert "Resolved" not in edited.plain_text and has_button(edited, "ap:")
    assert await incident_status(h, 1) == "open"
    assert (await ProposalRepository(h.app.db).latest_for(1)).state.value == "pending"


async def test_spoofed_back_up_without_a_link_cannot_resolve_an_error_with_the_same_title(start_app):
    h = await start_app()
    await h.post("generic", {"title": "Error: connect ECONNREFUSED 127.0.0.1:6379", "project": "api",
                             "environment": "production"})
    [card] = await h.wait_cards(1)
    fields = [{"title": "Project", "value": "api"}, {"title": "Environment", "value": "production"}]
    await h.post("glitchtip", spoofed_back_up(None, "Error: connect ECONNREFUSED 127.0.0.1:6379", fields))
    await settle(h)
    assert await incident_status(h, 1) == "open"
    assert "Resolved" not in h.emu.message(CHAT_ID, card.message_id).plain_text


async def test_real_back_up_resolves_its_monitor_incident_and_closes_the_proposal(start_app):
    h = await start_app()
    await h.post("glitchtip", glitchtip_sample("uptime_down.json"))
    [card] = await h.wait_cards(1)
    approve = button(card, "ap:")
    await h.post("glitchtip", glitchtip_sample("uptime_up.json"))
    resolved = await h.wait_text(card.message_id, "Resolved by uptime monitor")
    assert resolved.buttons == []
    assert "Superseded" in resolved.plain_text and "0/1 approvals" not in resolved.plain_text
    assert (await ProposalRepository(h.app.db).latest_for(1)).state.value == "superseded"
    answer = await h.press(card.message_id, approve, stale=True)
    assert "already resolved (by uptime monitor" in answer["text"]
    entry = next(e for e in await audit_rows(h) if e["action"] == "incident.resolve")
    assert entry["incident_id"] == 1 and entry["detail"]["human_intervention"] is False
    assert entry["detail"]["superseded_proposals"] == [1]


# -- every path clears the fix block the same way ------------------------------------------------------


async def _block(h, fingerprint: str) -> None:
    await KeyValueRepository(h.app.db).set(blocked_key(fingerprint), {"proposal_id": 1})


async def _blocked(h, fingerprint: str) -> bool:
    return await KeyValueRepository(h.app.db).get(blocked_key(fingerprint)) is not None


async def test_every_resolve_path_clears_the_fix_block(start_app):
    h = await start_app()
    samples = {"button": "issue_alert_v2.json", "command": "issue_alert_v1.json", "uptime": "uptime_down.json"}
    cards = {}
    for path, sample in samples.items():  # one incident per path, all blocked
        await h.post("glitchtip", glitchtip_sample(sample))
        [cards[path]] = [c for c in await h.wait_cards(len(cards) + 1) if c.message_id not in
                         {known.message_id for known in cards.values()}]
    incident_ids = {path: index + 1 for index, path in enumerate(samples)}
    fingerprints = {}
    for path, incident_id in incident_ids.items():
        fingerprints[path] = (await IncidentRepository(h.app.db).get(incident_id)).fingerprint
        await _block(h, fingerprints[path])
    assert "resolved" in (await h.press(cards["button"].message_id, button(cards["button"], "rs:")))["text"]
    assert "resolved" in (await h.command(f"/resolve {incident_ids['command']}")).plain_text
    await h.post("glitchtip", glitchtip_sample("uptime_up.json"))
    for path, card in cards.items():
        await h.wait_text(card.message_id, "Resolved by")
        assert not await _blocked(h, fingerprints[path]), path
        assert (await ProposalRepository(h.app.db).latest_for(incident_ids[path])).state.value == "superseded", path


# -- ids out of range answer clearly; refusals say why ------------------------------------------------


async def test_out_of_range_ids_answer_clearly_and_the_bot_keeps_working(start_app):
    h = await start_app()
    card = await first_card(h)
    answer = await h.press(card.message_id, "ap:1:11111111111111111111", stale=True)
    assert "Unknown button" in answer["text"]
    for text in ("/resolve 99999999999999999999", "/mute 99999999999999999999 1h",
                 "/incident 99999999999999999999", "/resolve 0"):
        reply = await h.command(text)
        assert "No incident #" in reply.plain_text, (text, reply.plain_text)
    assert "No incident #99999999999999999999" in (await h.command("/resolve #99999999999999999999")).plain_text
    # "²" is a digit to str.isdigit(), not to int(): a usage answer, not a crash.
    assert "Usage" in (await h.command("/resolve ²")).plain_text
    assert "Usage" in (await h.command("/mute 1 ²h")).plain_text
    # Still working: a real press and a real command.
    assert "Approved" in (await h.press(card.message_id, button(card, "ap:")))["text"]
    assert "resolved" in (await h.command("/resolve 1")).plain_text
    entries = await audit_rows(h)
    assert any(e["action"] == "button" and "unknown button" in e["outcome"] for e in entries)
    assert any(e["action"] == "command./resolve" and "invalid id" in e["outcome"] for e in entries)


async def test_an_approver_pressing_in_another_chat_is_audited_as_wrong_chat(start_app):
    h = await start_app()
    card = await first_card(h)
    # A message with the card's button in another group (e.g. a forwarded card).
    elsewhere = h.emu.send_user_message(OTHER_GROUP, APPROVER, "look at this")
    query = h.emu.press_button(OTHER_GROUP, elsewhere["message_id"], APPROVER, button(card, "ap:"), stale=True)
    answer = await h.emu.wait_for_answer(query, timeout=10)
    assert "Not allowed here" in answer["text"]
    [refusal] = [e for e in await audit_rows(h) if e["outcome"].startswith("refused")]
    assert refusal["actor_id"] == APPROVER
    assert "outside the alert chat" in refusal["outcome"] and "not an approver" not in refusal["outcome"]
    assert refusal["detail"]["chat_id"] == OTHER_GROUP
    assert (await ProposalRepository(h.app.db).latest_for(1)).state.value == "pending"


async def test_a_handler_that_crashes_still_answers(start_app, monkeypatch):
    h = await start_app()
    card = await first_card(h)

    async def broken(*_args, **_kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(h.app.decisions, "press", broken)
    answer = await h.press(card.message_id, button(card, "ap:"))
    assert "went wrong" in answer["text"]
    monkeypatch.setattr(h.app.decisions, "resolve", broken)
    assert "went wrong" in (await h.command("/resolve 1")).plain_text
