"""Webhook in -> card out, over real HTTP: the app, aiogram and the Bot API emulator."""

from __future__ import annotations

import asyncio
import json

import aiohttp

from storage.audit import AuditRepository
from storage.inbox import InboxRepository
from storage.incidents import IncidentRepository
from storage.outbox import OutboxRepository
from tests.conftest import CHAT_ID, WEBHOOK_TOKEN, eventually, glitchtip_sample


async def outbox_drained(h) -> None:
    await eventually(lambda: OutboxRepository(h.app.db).depth(), until=lambda depth: depth == 0)


async def test_glitchtip_alert_becomes_a_card(start_app):
    h = await start_app()
    response = await h.post("glitchtip", glitchtip_sample("issue_alert_v1.json"))
    assert response.status_code == 202
    assert response.json()["inbox_id"] >= 1
    [card] = await h.wait_cards(1)
    text = card.plain_text
    assert "Error: connect ECONNREFUSED 127.0.0.1:6379" in text
    assert "ai-admin-worker" in text and "production" in text and "web-1" in text and "ai-admin-worker@2.4.1" in text
    assert "infrastructure" in text
    assert "AI-ADMIN-WORKER-3F" in text  # the link to GlitchTip, labelled with the short id
    assert 'href="https://glitchtip.example.com/acme/issues/4242"' in card.text
    labels = [b["text"] for row in card.buttons for b in row]
    assert any("Approve" in t for t in labels) and any("Reject" in t for t in labels)
    assert [t.replace("• ", "") for t in labels if t.replace("• ", "") in {"P0", "P1", "P2", "P3"}] == [
        "P0", "P1", "P2", "P3"]
    # The sender records the message id just after Telegram answered: a moment after the chat shows it.
    incident = await eventually(lambda: IncidentRepository(h.app.db).get(1),
                                lambda found: found is not None and found.card_message_id is not None)
    assert incident is not None and incident.card_message_id == card.message_id


async def test_batch_makes_one_card_per_issue_and_v2_payload_parses(start_app):
    h = await start_app()
    assert (await h.post("glitchtip", glitchtip_sample("issue_alert_batch.json"))).status_code == 202
    assert (await h.post("glitchtip", glitchtip_sample("issue_alert_v2.json"))).status_code == 202
    cards = await h.wait_cards(4)
    titles = "\n".join(c.plain_text for c in cards)
    for title in ("Cannot find module '@sentry/node'", "YClients API rate limit exceeded",
                  "ENOSPC: no space left on device", "Cannot read properties of undefined (reading 'slots')"):
        assert title in titles


async def test_test_notification_is_answered_without_incident(start_app):
    h = await start_app()
    assert (await h.post("glitchtip", glitchtip_sample("test_notification.json"))).status_code == 202
    [msg] = await h.wait_cards(1)
    assert "test notification" in msg.plain_text.lower()
    assert msg.buttons == []
    assert await IncidentRepository(h.app.db).count_all() == 0


async def test_uptime_down_opens_p0_and_back_up_resolves(start_app):
    h = await start_app()
    await h.post("glitchtip", glitchtip_sample("uptime_down.json"))
    [card] = await h.wait_cards(1)
    assert "P0" in card.plain_text and "Booking API health" in card.plain_text
    await h.post("glitchtip", glitchtip_sample("uptime_up.json"))
    await h.wait_text(card.message_id, "Resolved")
    assert len(h.cards()) == 1
    assert h.emu.message(CHAT_ID, card.message_id).buttons == []


async def test_generic_alert_with_null_fields_and_unknown_keys(start_app):
    h = await start_app()
    body = {"title": "KeyError: 'user_id'", "message": None, "level": "error", "project": "billing",
            "environment": "staging", "stacktrace": ["File app.py, line 3", "KeyError"], "extra": {"x": 1}}
    assert (await h.post("generic", body)).status_code == 202
    nulls = json.loads(glitchtip_sample("issue_alert_v2.json"))
    nulls["attachments"][0]["text"] = None
    nulls["attachments"][0]["fields"] = None
    nulls["unknown"] = [1, 2]
    assert (await h.post("glitchtip", json.dumps(nulls).encode())).status_code == 202
    cards = await h.wait_cards(2)  # sent most urgent first: found by their titles, not their order
    [generic] = [c for c in cards if "KeyError: 'user_id'" in c.plain_text]
    assert "billing" in generic.plain_text
    assert any(nulls["attachments"][0]["title"] in c.plain_text for c in cards if c is not generic)


async def test_repeats_edit_one_card_and_storm_costs_few_edits(start_app):
    h = await start_app(telegram_rate_per_chat=1.0)  # Telegram's real per-chat pace
    body = glitchtip_sample("issue_alert_v1.json")
    await h.post("glitchtip", body)
    [card] = await h.wait_cards(1)
    storm = 1000

    # aiohttp's client, not the harness's httpx: a thousand posts through httpx cost more CPU than
    # the bot spends taking them in.
    url = f"{h.base}/webhook/glitchtip/{WEBHOOK_TOKEN}"
    async with aiohttp.ClientSession(headers={"Content-Type": "application/json"}) as http:

        async def burst(n: int) -> None:
            for _ in range(n):
                async with http.post(url, data=body) as response:
                    assert response.status == 202

        await asyncio.gather(*(burst(storm // 10) for _ in range(10)))
    await h.wait_text(card.message_id, f"×{storm + 1}", timeout=20)
    assert len(h.cards()) == 1, "repeats must edit the card, never post a new one"
    edits = h.emu.message(CHAT_ID, card.message_id).edit_count
    assert 1 <= edits <= storm // 100, f"{edits} edits for {storm} repeats"  # at most one per hundred


async def test_regression_after_resolve_gets_a_new_card(start_app):
    h = await start_app()
    await h.post("glitchtip", glitchtip_sample("issue_alert_v2.json"))
    [card] = await h.wait_cards(1)
    resolve = next(b["callback_data"] for row in card.buttons for b in row if b["callback_data"].startswith("rs:"))
    await h.press(card.message_id, resolve)
    await h.wait_text(card.message_id, "Resolved")
    await h.post("glitchtip", glitchtip_sample("issue_alert_v2.json"))
    cards = await h.wait_cards(2)
    assert "Regression" in cards[1].plain_text and "#1" in cards[1].plain_text


async def test_bad_requests_are_refused_with_reasons_and_store_nothing(start_app):
    h = await start_app()
    good = glitchtip_sample("issue_alert_v1.json")
    assert (await h.post("glitchtip", good, token="wrong-token")).status_code == 404
    assert (await h.client.post(f"{h.base}/webhook/glitchtip/", content=good)).status_code == 404
    assert (await h.post("nosuchsource", good)).status_code == 404
    too_big = b'{"title": "' + b"x" * (1024 * 1024 + 10) + b'"}'
    assert (await h.post("generic", too_big)).status_code == 413
    not_json = await h.post("glitchtip", b"<html>hello</html>")
    assert not_json.status_code == 400 and "not JSON" in not_json.json()["error"]
    wrong_shape = await h.post("glitchtip", {"text": "GlitchTip Alert", "attachments": [{"title_link": "x"}]})
    assert wrong_shape.status_code == 422 and "attachments.0.title" in wrong_shape.json()["error"]
    generic_no_title = await h.post("generic", {"message": "no title"})
    assert generic_no_title.status_code == 422 and "title" in generic_no_title.json()["error"]
    bad_count = await h.post("generic", {"title": "x", "count": "many"})
    assert bad_count.status_code == 422 and "count" in bad_count.json()["error"]
    row = await h.app.db.fetchone("SELECT COUNT(*) FROM inbox")
    assert row[0] == 0
    audit = await AuditRepository(h.app.db).list()
    rejected = [e for e in audit if e.action == "webhook.rejected"]
    # Only the refusals that carried the right token are audited; strangers are counted in memory.
    assert sorted(e.outcome for e in rejected) == ["http 400", "http 413", "http 422", "http 422", "http 422"]
    assert all(WEBHOOK_TOKEN_NOT_IN(e.detail) for e in rejected)
    health = (await h.client.get(f"{h.base}/healthz")).json()
    assert health["rejected"]["not_found"] == 2  # wrong token, unknown source
    assert health["rejected"]["invalid"] == 3 and health["rejected"]["too_large"] == 1


def WEBHOOK_TOKEN_NOT_IN(detail: dict) -> bool:  # noqa: N802 - reads as a sentence in the assert
    from tests.conftest import WEBHOOK_TOKEN

    return WEBHOOK_TOKEN not in json.dumps(detail)


async def test_healthz_reports_queue_depths(start_app):
    h = await start_app()
    response = await h.client.get(f"{h.base}/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["inbox_depth"] == 0 and body["outbox_depth"] == 0
    assert body["rejected"] == {reason: 0 for reason in body["rejected"]} and "not_found" in body["rejected"]
    assert body["connections"]["open"] == 1 and body["connections"]["max"] >= 1


async def test_telegram_429_and_500_delay_but_deliver_every_card_once_in_order(start_app):
    # One of each over the real protocol; repeated ones (retry_after kept, backoff doubling) are
    # tested on the sender itself in tests/test_outbox_sender.py, without waiting them out.
    h = await start_app()
    h.app.sender.outage_backoff = (0.05, 0.2)  # the 5xx wait's length is tested on the sender itself
    h.emu.fail("sendMessage", 429, times=1, retry_after=1)
    h.emu.fail("sendMessage", 500, times=1)
    titles = [f"RuntimeError: job {name} crashed" for name in ("alpha", "bravo", "charlie", "delta", "echo")]
    for title in titles:
        assert (await h.post("generic", {"title": title, "project": "jobs"})).status_code == 202
    await h.wait_cards(5, timeout=30)
    await outbox_drained(h)  # every row marked sent: no send can follow
    cards = h.cards()
    assert len(cards) == 5
    assert [next(t for t in titles if t in c.plain_text) for c in cards] == titles  # each once, in order
    assert h.emu.call_count("sendMessage", ok=False) == 2


async def test_outage_then_recovery_delivers_everything(start_app):
    h = await start_app()
    h.app.sender.outage_backoff = (0.05, 0.2)  # retried soon after the outage (the waits: tests/test_outbox_sender.py)
    h.emu.set_down(True)
    for i in range(3):
        await h.post("generic", {"title": f"ValueError: bad input {chr(97 + i)}", "fingerprint": f"fp-{i}"})
    await eventually(lambda: OutboxRepository(h.app.db).depth(), until=lambda depth: depth == 3)
    await h.emu.wait_for(lambda: h.emu.call_count("sendMessage", ok=False) >= 1)  # tried, and refused
    assert h.cards() == []
    h.emu.set_down(False)
    cards = await h.wait_cards(3, timeout=30)
    assert len(cards) == 3


async def test_unprocessable_inbox_row_is_parked_and_reported(start_app):
    h = await start_app()
    # A row that passed the web checks once but no longer parses (e.g. written by an older version).
    await InboxRepository(h.app.db).add("glitchtip", b'{"attachments": "not a list"}')
    h.app.pipeline.notify()
    [msg] = await h.wait_cards(1)
    assert "could not be processed" in msg.plain_text
    row = await h.app.db.fetchone("SELECT state, last_error FROM inbox")
    assert row["state"] == "failed" and "attachments" in row["last_error"]


async def test_secrets_in_alerts_never_reach_telegram(start_app):
    h = await start_app()
    secret = "sk-ant-api03-" + "A" * 40
    await h.post("generic", {"title": f"AuthError: invalid key {secret}",
                             "message": "postgres://app:hunter2secret@db:5432/app"})
    [card] = await h.wait_cards(1)
    assert secret not in card.text and "hunter2secret" not in card.text
    assert "[REDACTED]" in card.text


async def test_card_mentions_the_owner_from_owners_file(start_app, tmp_path):
    owners = tmp_path / "owners.toml"
    owners.write_text('[[owner]]\nname = "Alice"\ntelegram = "@alice"\nprojects = ["ai-admin-api"]\n\n'
                      '[[owner]]\nname = "On-call"\ntelegram = "@oncall"\ndefault = true\n')
    h = await start_app(owners_file=owners)
    await h.post("glitchtip", glitchtip_sample("issue_alert_v2.json"))
    await h.post("generic", {"title": "RuntimeError: elsewhere", "project": "other"})
    cards = await h.wait_cards(2)  # sent most urgent first: found by their titles, not their order
    [elsewhere] = [c for c in cards if "RuntimeError: elsewhere" in c.plain_text]
    [api] = [c for c in cards if c is not elsewhere]
    assert "Owner: @alice" in api.plain_text
    assert "Owner: @oncall" in elsewhere.plain_text
