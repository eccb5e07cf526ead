"""GitHub issues end to end: the real app, the Bot API emulator and the fake GitHub, over HTTP.

An alert no safe fix applies to → the card proposes "file a GitHub issue in acme/api" → Approve
→ one issue on the fake GitHub with the title, labels, assignee and marker → its link on the card.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bot.callback_data import RESOLVE
from storage.audit import AuditRepository
from storage.github import GitHubIssueRepository
from tests.conftest import APPROVER, APPROVER_2, CHAT_ID
from tests.github_fake import NO_PERMISSION, REPO, TOKEN, FakeGitHub
from tests.test_e2e_decisions import button, has_button

TITLE = "TypeError: Cannot read properties of undefined (reading 'invoiceId')"
STACK = [
    "TypeError: Cannot read properties of undefined (reading 'invoiceId')",
    "    at renderInvoice (/srv/app/src/billing/invoice.js:42:17)",
    "    at Layer.handle (/srv/app/node_modules/express/lib/router/layer.js:95:5)",
    # A secret that slipped into a stack: it must not reach GitHub.
    "    at connect (postgres://billing:S3cr3tPassw0rd@db.internal:5432/billing)",
]
OWNERS = """
[[owner]]
name = "Alice"
telegram = "@alice"
github = "alice"
projects = ["billing-api"]

[[owner]]
name = "On-call"
telegram = "@oncall"
default = true
"""


@pytest.fixture
async def fake():
    server = await FakeGitHub().start()
    yield server
    await server.stop()


@pytest.fixture
def start_app(start_app):
    """The app with its GitHub worker's waits made short: a pause for an outage starts at 0.05 s
    instead of 2 s (and grows to 0.2 s, not 5 minutes), and jobs nothing wakes the worker for (a
    retry after an outage, say) are looked for within 0.1 s instead of `poll_s`. What the waits are
    for stays tested: the backoff's growth and cap in tests/test_http_jobs.py, a `Retry-After`
    below (GitHub's wins over the short backoff)."""

    async def start(**settings: Any):
        h = await start_app(**settings)
        if h.app.github is not None:
            h.app.github.outage_backoff = (0.05, 0.2)
            h.app.github.poll_s = 0.1
            h.app.github.notify()  # the first idle sleep was `poll_s` long: start again with the short one
        return h

    return start


def github(fake: FakeGitHub, tmp_path: Path, **more: Any) -> dict[str, Any]:
    owners = tmp_path / "owners.toml"
    owners.write_text(OWNERS)
    return {"github_token": TOKEN, "github_repo": REPO, "github_api_url": fake.base_url, "owners_file": owners,
            **more}


def alert(title: str = TITLE, project: str = "billing-api") -> dict[str, Any]:
    return {"title": title, "message": "renderInvoice(src/billing/invoice)", "project": project,
            "environment": "production", "server": "web-03", "release": "api@2.14.0", "stacktrace": STACK,
            "url": "https://glitchtip.example.com/acme/issues/77"}


async def wait_until(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)
    return value


async def no_github_jobs(h, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while await GitHubIssueRepository(h.app.db).pending_count():
        assert time.monotonic() < deadline, "GitHub jobs still pending"
        await asyncio.sleep(0.02)


async def first_card(h, body: dict[str, Any] | None = None):
    assert (await h.post("generic", body or alert())).status_code == 202
    [card] = await h.wait_cards(1)
    return card


async def test_approve_files_exactly_one_issue_and_the_card_links_it(start_app, fake, tmp_path):
    h = await start_app(**github(fake, tmp_path))
    card = await first_card(h)
    assert "Proposal: file a GitHub issue in acme/api" in card.plain_text
    assert "acknowledge" not in card.plain_text
    answer = await h.press(card.message_id, button(card, "ap:"), name="Ann")
    assert "Approved" in answer["text"]
    linked = await h.wait_text(card.message_id, "GitHub issue acme/api#1")
    assert "Done: file a GitHub issue in acme/api (approved by Ann" in linked.plain_text
    assert 'href="https://github.com/acme/api/issues/1"' in linked.text
    assert "assigned to alice" in linked.plain_text

    [issue] = fake.issues()
    assert issue["title"] == f"[Auto] {TITLE}"
    priority = next(p for p in ("P0", "P1", "P2", "P3") if f"{p} ·" in card.plain_text)
    assert {label["name"] for label in issue["labels"]} == {"needs-review", priority}
    assert [a["login"] for a in issue["assignees"]] == ["alice"]
    body = issue["body"]
    assert body.rstrip().endswith("<!-- remediator-incident: 1 -->")
    for expected in (f"**Priority:** {priority}", "**Owner:** Alice (@alice, assigned)", "renderInvoice",
                     "/srv/app/src/billing/invoice.js:42:17", "**Incident:** #1",
                     "https://glitchtip.example.com/acme/issues/77", "Approved in Telegram by Ann",
                     "needs review"):
        assert expected in body, expected
    assert "S3cr3tPassw0rd" not in body  # redacted before it left
    # The labels were created with the bot's colours and descriptions before the issue used them.
    labels = fake.repo().labels
    assert labels["needs-review"]["description"].startswith("Filed by remediator")
    assert labels[priority.lower()]["color"] != "ededed"
    # The token went in the header and nowhere else the bot writes.
    assert {s.authorization for s in fake.seen} == {f"Bearer {TOKEN}"}
    audit = [e.as_dict() for e in await AuditRepository(h.app.db).list()]
    assert [e["outcome"] for e in audit if e["action"] == "github.issue"] == ["filed"]
    assert TOKEN not in json.dumps(audit, default=str) and TOKEN not in linked.text


async def test_thirty_concurrent_presses_file_one_issue(start_app, fake, tmp_path):
    h = await start_app(**github(fake, tmp_path))
    card = await first_card(h)
    approve = button(card, "ap:")
    queries = [h.emu.press_button(CHAT_ID, card.message_id, APPROVER if n % 2 else APPROVER_2, approve,
                                  first_name="Ann" if n % 2 else "Bob") for n in range(30)]
    answers = await asyncio.gather(*(h.emu.wait_for_answer(q, timeout=20) for q in queries))
    assert sum("Approved" in a["text"] for a in answers) == 1
    await h.wait_text(card.message_id, "GitHub issue acme/api#1", timeout=20)
    await no_github_jobs(h)
    assert len(fake.issues()) == 1 and len(fake.creates()) == 1


async def test_a_second_approval_links_the_existing_issue(start_app, fake, tmp_path):
    """A later proposal of the same incident (say, the investigation report's button) finds the
    issue filed: no second one, and the card says which it is."""
    h = await start_app(**github(fake, tmp_path))
    card = await first_card(h)
    await h.press(card.message_id, button(card, "ap:"))
    await h.wait_text(card.message_id, "GitHub issue acme/api#1")
    from bot.proposer import github_issue_summary
    from storage.proposals import ProposalRepository

    async with h.app.db.transaction() as tx:
        await ProposalRepository(tx).create(1, "github_issue", github_issue_summary(REPO),
                                            (await ProposalRepository(tx).get(1)).expires_at,  # type: ignore[union-attr]
                                            action={"repo": REPO})
        await h.app.cards.publish(tx, 1)
    again = await h.wait_text(card.message_id, "0/1 approvals")
    await h.press(card.message_id, button(again, "ap:"), name="Bob")
    done = await h.wait_text(card.message_id, "already filed as acme/api#1")
    assert "approved by Bob" in done.plain_text
    assert len(fake.issues()) == 1 and len(fake.creates()) == 1


async def test_github_down_for_the_whole_run_files_it_once_it_is_back(start_app, fake, tmp_path):
    await fake.go_down()
    h = await start_app(**github(fake, tmp_path))
    card = await first_card(h)
    await h.press(card.message_id, button(card, "ap:"))
    waiting = await h.wait_text(card.message_id, "GitHub did not answer")
    assert "Filing a GitHub issue in acme/api" in waiting.plain_text and "trying again" in waiting.plain_text
    await fake.come_back()
    await h.wait_text(card.message_id, "GitHub issue acme/api#1", timeout=15)
    assert len(fake.issues()) == 1
    # The create may have reached a GitHub that went away mid-answer: the marker was looked for first.
    jobs = await h.app.db.fetchall("SELECT state, attempts FROM github_jobs")
    assert [(j["state"], j["attempts"]) for j in jobs] == [("done", 0)]  # the outage spent no attempt


async def test_a_restart_during_an_outage_loses_nothing(start_app, fake, tmp_path):
    await fake.go_down()
    settings = github(fake, tmp_path)
    h = await start_app(**settings)
    card = await first_card(h)
    await h.press(card.message_id, button(card, "ap:"))
    await h.wait_text(card.message_id, "GitHub did not answer")
    await h.app.stop()
    await fake.come_back()
    h2 = await start_app(**settings)
    await h2.wait_text(card.message_id, "GitHub issue acme/api#1", timeout=15)
    assert len(fake.issues()) == 1


async def test_a_secondary_rate_limit_is_waited_out_as_github_asks(start_app, fake, tmp_path):
    fake.secondary_rate_limit(1, method="POST", path=r"/repos/acme/api/issues")
    h = await start_app(**github(fake, tmp_path))
    card = await first_card(h)
    await h.press(card.message_id, button(card, "ap:"))
    await h.wait_text(card.message_id, "GitHub issue acme/api#1", timeout=15)
    limited, created = fake.creates()  # two tries: the limited one, then the one that filed it
    assert created.at - limited.at >= 1.0  # not before Retry-After said
    assert len(fake.issues()) == 1
    # The retry looked for the marker first: the limited create might have been taken.
    assert fake.calls("GET", "/search/issues")


async def test_a_refusal_shows_githubs_message_and_approve_tries_again(start_app, fake, tmp_path):
    fake.issues_write = False  # the token lacks Issues: write
    h = await start_app(**github(fake, tmp_path))
    card = await first_card(h)
    await h.press(card.message_id, button(card, "ap:"))
    refused = await h.wait_text(card.message_id, NO_PERMISSION)
    assert "GitHub issue not filed in acme/api" in refused.plain_text
    assert has_button(refused, "ap:")  # once the token is fixed, one press files it
    said = [m for m in h.emu.messages(CHAT_ID) if m.from_bot and "was not filed" in m.plain_text]
    assert len(said) == 1 and NO_PERMISSION in said[0].plain_text and said[0].reply_to_message_id == card.message_id
    assert fake.issues() == []
    fake.issues_write = True
    await h.press(card.message_id, button(refused, "ap:"), name="Bob")
    done = await h.wait_text(card.message_id, "GitHub issue acme/api#1")
    assert NO_PERMISSION not in done.plain_text and "approved by Bob" in done.plain_text
    assert len(fake.issues()) == 1


async def test_an_owner_github_will_not_assign_is_mentioned_instead(start_app, fake, tmp_path):
    fake.repo().assignable.clear()
    h = await start_app(**github(fake, tmp_path))
    card = await first_card(h)
    await h.press(card.message_id, button(card, "ap:"))
    done = await h.wait_text(card.message_id, "GitHub issue acme/api#1")
    assert "assigned to" not in done.plain_text
    [issue] = fake.issues()
    assert issue["assignees"] == []
    assert "@alice" in issue["body"]


async def test_resolving_comments_on_the_issue_and_never_closes_or_reopens_it(start_app, fake, tmp_path):
    h = await start_app(**github(fake, tmp_path))
    card = await first_card(h)
    await h.press(card.message_id, button(card, "ap:"))
    linked = await h.wait_text(card.message_id, "GitHub issue acme/api#1")
    fake.close_issue(1)  # a person closed it on GitHub already
    await h.press(card.message_id, button(linked, f"{RESOLVE}:"), name="Ann")
    await h.wait_text(card.message_id, "told it was resolved here")
    [comment] = fake.repo().comments[1]
    assert comment["body"].startswith("Resolved in chat by Ann (the ✔️ Resolve button")
    assert fake.issues()[0]["state"] == "closed"  # not reopened
    assert not fake.calls("PATCH", r"/repos/acme/api/issues/\d+")  # the bot never changes an issue's state


async def test_without_github_settings_cards_propose_acknowledge(start_app, fake):
    h = await start_app()
    card = await first_card(h)
    assert "Proposal: acknowledge" in card.plain_text and "GitHub" not in card.plain_text
    assert fake.seen == []


async def test_at_stage_1_nothing_is_proposed_and_github_is_never_called(start_app, fake, tmp_path):
    h = await start_app(**github(fake, tmp_path), rollout_stage=1)
    card = await first_card(h)
    assert "No action proposed" in card.plain_text and not has_button(card, "ap:")
    assert fake.seen == []


async def test_a_create_that_timed_out_after_github_took_it_is_found_not_made_twice(start_app, fake, tmp_path):
    """GitHub stored the issue but its answer came too late: the retry's search finds the marker."""
    fake.create_delay_s = 0.8
    h = await start_app(**github(fake, tmp_path, github_timeout_s=0.3))
    card = await first_card(h)
    await h.press(card.message_id, button(card, "ap:"))
    linked = await h.wait_text(card.message_id, "GitHub issue acme/api#1", timeout=15)
    assert "assigned to alice" in linked.plain_text  # read back from the issue found
    assert len(fake.issues()) == 1 and len(fake.creates()) == 1
    assert fake.calls("GET", "/search/issues")
    outcomes = [e.outcome for e in await AuditRepository(h.app.db).list() if e.action == "github.issue"]
    assert outcomes == ["linked existing"]


async def test_server_errors_are_retried_until_github_files_it(start_app, fake, tmp_path):
    fake.fail(502, times=2, method="POST", path=r"/repos/acme/api/issues")
    h = await start_app(**github(fake, tmp_path))
    card = await first_card(h)
    await h.press(card.message_id, button(card, "ap:"))
    await h.wait_text(card.message_id, "GitHub issue acme/api#1", timeout=15)
    assert len(fake.creates()) == 3 and len(fake.issues()) == 1


async def test_an_outage_longer_than_github_retry_hours_is_reported(start_app, fake, tmp_path):
    await fake.go_down()
    h = await start_app(**github(fake, tmp_path, github_retry_hours=0.0001))  # 0.36 s
    card = await first_card(h)
    await h.press(card.message_id, button(card, "ap:"))
    given_up = await h.wait_text(card.message_id, "GitHub issue not filed", timeout=15)
    assert "GitHub did not answer for" in given_up.plain_text and has_button(given_up, "ap:")
    said = [m for m in h.emu.messages(CHAT_ID) if m.from_bot and "was not filed" in m.plain_text]
    assert len(said) == 1


async def test_with_glitchtips_api_the_issue_carries_its_frames_and_counts(start_app, fake, tmp_path):
    from tests.conftest import glitchtip_sample
    from tests.glitchtip_fake import TOKEN as GLITCHTIP_TOKEN
    from tests.glitchtip_fake import FakeGlitchTip

    glitchtip = await FakeGlitchTip().start()
    glitchtip.add_issue("1")
    try:
        h = await start_app(**github(fake, tmp_path), glitchtip_url=glitchtip.base_url,
                            glitchtip_token=GLITCHTIP_TOKEN)
        assert (await h.post("glitchtip", glitchtip_sample("real_issue_alert.json"))).status_code == 202
        [card] = await h.wait_cards(1)
        await h.press(card.message_id, button(card, "ap:"))
        linked = await h.wait_text(card.message_id, "GitHub issue acme/api#1")
        assert "send_event.py:6 in connect" in linked.plain_text  # GlitchTip's lines and GitHub's, one card
        [issue] = fake.issues()
        assert "`send_event.py:6 in connect`" in issue["body"] and "**In GlitchTip:** 1 event(s)" in issue["body"]
        assert "**Culprit:** `__main__ in connect`" in issue["body"]
    finally:
        await glitchtip.stop()


async def test_resolved_while_github_was_down_the_issue_is_filed_then_told(start_app, fake, tmp_path):
    await fake.go_down()
    h = await start_app(**github(fake, tmp_path))
    card = await first_card(h)
    await h.press(card.message_id, button(card, "ap:"))
    waiting = await h.wait_text(card.message_id, "GitHub did not answer")
    await h.press(card.message_id, button(waiting, f"{RESOLVE}:"))
    await h.wait_text(card.message_id, "Resolved by Ann")
    await fake.come_back()
    await h.wait_text(card.message_id, "told it was resolved here", timeout=15)
    assert len(fake.issues()) == 1 and len(fake.repo().comments[1]) == 1


async def test_the_token_never_reaches_a_log_line_even_at_debug(start_app, fake, tmp_path, caplog):
    import logging

    caplog.set_level(logging.DEBUG)
    fake.fail(401, method="POST", path=r"/repos/acme/api/issues")  # refused once: an error path logs too
    h = await start_app(**github(fake, tmp_path))
    card = await first_card(h)
    await h.press(card.message_id, button(card, "ap:"))
    refused = await h.wait_text(card.message_id, "Bad credentials")
    await h.press(card.message_id, button(refused, "ap:"))
    await h.wait_text(card.message_id, "GitHub issue acme/api#1")
    assert "github" in caplog.text.lower()
    assert TOKEN not in caplog.text
