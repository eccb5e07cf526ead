"""The investigation report's "📝 File GitHub issue" button (issue 12's last item).

A press files the incident's GitHub issue through the same once-per-incident queue as Approve
on a `github_issue` proposal, with the report in the body and the `auto-investigated` label —
whatever the card proposes; a second press links the issue; approvers only, stage 3 and up.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bot import killswitch
from bot.callback_data import FILE_ISSUE, CardPress, decode
from bot.github.api import GitHubClient
from bot.github.card import github_card_extras
from bot.github.report_button import ReportIssueFiler, file_issue_row
from bot.github.service import GitHubIssueService, latest_report
from bot.investigate.service import vote_buttons
from bot.models import Actor
from bot.proposals import ProposalKind
from bot.redact import Redactor
from storage.github import GitHubIssueRepository
from storage.investigations import InvestigationRepository
from tests.conftest import APPROVER, APPROVER_2, CHAT_ID, Services
from tests.github_fake import NO_PERMISSION, REPO, TOKEN, FakeGitHub
from tests.test_github_e2e import alert, first_card, github, no_github_jobs

ANN = Actor(APPROVER, "Ann")
BOB = Actor(APPROVER_2, "Bob")
MALLORY = Actor(999, "Mallory")
REPORT = ("## Investigation of #1\n\n### `src/jobs/worker.py:42` in `run`\n\n"
          "Suspect commit `abc1234` by Bob: *Rename cost to price*")


@pytest.fixture
async def fake() -> AsyncIterator[FakeGitHub]:
    server = await FakeGitHub().start()
    yield server
    await server.stop()


class Wired:
    """The services with GitHub on, wired as bot/app.py wires them; `drain` runs the GitHub worker."""

    def __init__(self, services: Services, fake: FakeGitHub) -> None:
        self.s = services
        services.cards.extras = github_card_extras  # the card's GitHub line, as with GITHUB_REPO set
        self.client = GitHubClient(fake.base_url, TOKEN, timeout_s=5.0)
        self.github = GitHubIssueService(services.db, self.client, Redactor(), services.cards, repo=REPO,
                                         policy=services.policy, report_for=latest_report)
        services.decisions.report_filer = ReportIssueFiler(services.db, services.cards, REPO, self.github.notify)

    async def drain(self) -> None:
        for _ in range(50):
            if not await GitHubIssueRepository(self.s.db).pending_count():
                return
            await self.github.step()
        raise AssertionError("GitHub jobs still pending")

    async def investigated(self, incident_id: int, markdown: str = REPORT) -> int:
        """A finished investigation of the incident, as the investigator stores it."""
        async with self.s.db.transaction() as tx:
            repo = InvestigationRepository(tx)
            investigation_id = await repo.create(incident_id, "Ann", APPROVER, "button")
            assert investigation_id is not None and await repo.start(investigation_id)
            assert await repo.finish(investigation_id, "<b>Investigation</b>", markdown, None)
        return investigation_id

    def press(self, incident_id: int, investigation_id: int) -> CardPress:
        return CardPress(FILE_ISSUE, incident_id, str(investigation_id))


@pytest.fixture
async def wired(make_services, fake) -> AsyncIterator[Wired]:
    w = Wired(await make_services(stage=4), fake)  # stage 4: the card's proposal can be a pattern fix
    yield w
    await w.client.aclose()


async def test_a_press_files_one_issue_with_the_report_even_when_the_card_proposes_a_fix(wired, fake):
    incident_id, proposal_id = await wired.s.open_incident(kind=ProposalKind.PATTERN)
    investigation_id = await wired.investigated(incident_id)
    outcome = await wired.s.decisions.press(ANN, wired.press(incident_id, investigation_id))
    assert outcome.changed and "Filing a GitHub issue in acme/api" in outcome.answer
    await wired.drain()

    [issue] = fake.issues()
    assert REPORT in issue["body"]
    assert "auto-investigated" in {label["name"] for label in issue["labels"]}
    assert "Approved in Telegram by Ann" in issue["body"]
    assert issue["body"].rstrip().endswith(f"<!-- remediator-incident: {incident_id} -->")
    card = await wired.s.card(incident_id)
    assert 'GitHub issue <a href="https://github.com/acme/api/issues/1">acme/api#1</a>' in card["text"]
    assert (await wired.s.proposal(proposal_id)).state.value == "pending"  # the fix is still the card's to decide

    again = await wired.s.decisions.press(BOB, wired.press(incident_id, investigation_id))
    assert again.answer == "Already filed: #1 https://github.com/acme/api/issues/1" and not again.changed
    await wired.drain()
    assert len(fake.issues()) == 1 and len(fake.creates()) == 1
    outcomes = [e.outcome for e in await wired.s.audit("github.request")]
    assert outcomes == ["requested", "already filed"]


async def test_the_button_under_an_older_report_files_that_report_not_the_newest(wired, fake):
    incident_id, _ = await wired.s.open_incident()
    older = await wired.investigated(incident_id, "## Older report\n\nThe cache was cold.")
    await wired.investigated(incident_id, "## Newer report\n\nThe disk was full.")
    assert (await wired.s.decisions.press(ANN, wired.press(incident_id, older))).changed
    await wired.drain()
    [issue] = fake.issues()
    assert "The cache was cold." in issue["body"] and "The disk was full." not in issue["body"]
    # Once filed, a press under the other report links the same issue.
    again = await wired.s.decisions.press(BOB, wired.press(incident_id, older + 1))
    assert again.answer == "Already filed: #1 https://github.com/acme/api/issues/1"
    assert len(fake.creates()) == 1


async def test_an_approve_files_the_newest_report(make_services, fake):
    w = Wired(await make_services(stage=3), fake)
    try:
        from bot.github.runner import GitHubIssueRunner

        w.s.executor.runners[ProposalKind.GITHUB_ISSUE] = GitHubIssueRunner(w.s.db, REPO, w.github.notify)
        incident_id, proposal_id = await w.s.open_incident(kind=ProposalKind.GITHUB_ISSUE)
        await w.investigated(incident_id, "## Older report\n\nThe cache was cold.")
        await w.investigated(incident_id, "## Newer report\n\nThe disk was full.")
        await w.s.decisions.press(ANN, CardPress("ap", incident_id, str(proposal_id)))
        await w.s.tasks.wait_idle()
        await w.drain()
        [issue] = fake.issues()
        assert "The disk was full." in issue["body"] and "The cache was cold." not in issue["body"]
    finally:
        await w.client.aclose()


async def test_an_approve_after_the_button_links_the_same_issue(make_services, fake):
    w = Wired(await make_services(stage=3), fake)
    try:
        from bot.github.runner import GitHubIssueRunner

        w.s.executor.runners[ProposalKind.GITHUB_ISSUE] = GitHubIssueRunner(w.s.db, REPO, w.github.notify)
        incident_id, proposal_id = await w.s.open_incident(kind=ProposalKind.GITHUB_ISSUE)
        await w.s.decisions.press(ANN, w.press(incident_id, await w.investigated(incident_id)))
        await w.drain()
        await w.s.decisions.press(BOB, CardPress("ap", incident_id, str(proposal_id)))
        await w.s.tasks.wait_idle()
        await w.drain()
        assert len(fake.creates()) == 1
        assert "already filed as acme/api#1" in ((await w.s.proposal(proposal_id)).result or "")
    finally:
        await w.client.aclose()


async def test_a_refusal_says_githubs_words_and_a_press_after_the_fix_files_it(wired, fake):
    fake.issues_write = False  # the token lacks Issues: write
    incident_id, _ = await wired.s.open_incident()
    press = wired.press(incident_id, await wired.investigated(incident_id))
    await wired.s.decisions.press(ANN, press)
    await wired.drain()
    [said] = [m for m in await wired.s.messages() if "was not filed" in m]
    assert NO_PERMISSION in said and "Press 📝 File GitHub issue under the report again" in said
    assert fake.issues() == []
    fake.issues_write = True
    again = await wired.s.decisions.press(BOB, press)
    assert again.changed and "Filing a GitHub issue" in again.answer
    await wired.drain()
    [issue] = fake.issues()
    assert "Approved in Telegram by Bob" in issue["body"]


async def test_concurrent_presses_file_one_issue(wired, fake):
    incident_id, _ = await wired.s.open_incident()
    investigation_id = await wired.investigated(incident_id)
    press = wired.press(incident_id, investigation_id)
    outcomes = await asyncio.gather(*(wired.s.decisions.press(ANN if n % 2 else BOB, press) for n in range(10)))
    assert sum(o.changed for o in outcomes) == 1
    await wired.drain()
    assert len(fake.issues()) == 1 and len(fake.creates()) == 1


async def test_refused_to_non_approvers_below_stage_3_with_the_kill_switch_and_for_unknown_reports(
    make_services, fake,
):
    for stage in (2, 3):
        w = Wired(await make_services(stage=stage), fake)
        try:
            incident_id, _ = await w.s.open_incident(kind=None)
            press = w.press(incident_id, await w.investigated(incident_id))
            if stage == 2:
                assert "Not available at rollout stage 2" in (await w.s.decisions.press(ANN, press)).answer
                continue
            assert (await w.s.decisions.press(MALLORY, press)).answer.startswith("⛔ Not allowed")
            forged = await w.s.decisions.press(ANN, CardPress(FILE_ISSUE, incident_id, "999"))
            assert forged.answer == "Unknown report: nothing changed."
            async with w.s.db.transaction() as tx:
                await killswitch.write(tx, True, "Ann", "incident")
            assert "kill switch is on" in (await w.s.decisions.press(ANN, press)).answer
            refusals = [(e.action, e.outcome, e.actor_id) for e in await w.s.audit() if "refused" in e.outcome]
            assert refusals == [("button.gi", "refused: not an approver", 999),
                                ("github.request", "refused: unknown report", APPROVER),
                                ("github.request", "refused: kill switch on", APPROVER)]
        finally:
            await w.client.aclose()
        assert await GitHubIssueRepository(w.s.db).issue(incident_id) is None
    assert fake.seen == []


def test_the_button_row_is_drawn_only_when_given_and_its_data_fits_telegram():
    assert vote_buttons(7, 3) == vote_buttons(7, 3, None) and len(vote_buttons(7, 3)) == 1
    incident_id, investigation_id = 10**15 - 1, 2**63 - 1  # the largest the callback data carries
    [_votes, row] = vote_buttons(incident_id, investigation_id, file_issue_row(incident_id, investigation_id))
    [(label, data)] = row
    assert label == "📝 File GitHub issue"
    assert len(data.encode()) < 64 and decode(data) == CardPress(FILE_ISSUE, incident_id, str(investigation_id))
    assert decode("gi:1:") is None and decode("gi:1:x") is None  # a report id, always


# -- end to end: the app, the Bot API emulator and the fake GitHub, over HTTP ------------------------


async def _report(h, card):
    """Press 🔎 Investigate on the card; the report that replies under it."""
    assert "recorded" in (await h.press(card.message_id, f"iv:{1}:"))["text"]
    return await h.emu.wait_for(lambda: next(
        (m for m in h.emu.messages(CHAT_ID) if m.from_bot and m.reply_to_message_id == card.message_id
         and m.buttons), None), 15)


def _button(message, prefix: str) -> str:
    return next(b["callback_data"] for row in message.buttons for b in row if b["callback_data"].startswith(prefix))


async def test_e2e_investigate_then_file_from_the_report(start_app, fake, tmp_path):
    h = await start_app(**github(fake, tmp_path), rollout_stage=3)
    card = await first_card(h, alert())
    report = await _report(h, card)
    file_issue = _button(report, "gi:")
    stored = await InvestigationRepository(h.app.db).latest_report_markdown(1)
    assert stored

    # Two people press at once: one issue.
    queries = [h.emu.press_button(CHAT_ID, report.message_id, user, file_issue, first_name=name)
               for user, name in ((APPROVER, "Ann"), (APPROVER_2, "Bob"))]
    answers = [a["text"] for a in await asyncio.gather(*(h.emu.wait_for_answer(q, timeout=10) for q in queries))]
    assert sum("Filing a GitHub issue in acme/api" in a for a in answers) == 1, answers
    linked = await h.wait_text(card.message_id, "GitHub issue acme/api#1", timeout=15)
    assert 'href="https://github.com/acme/api/issues/1"' in linked.text
    await no_github_jobs(h)
    [issue] = fake.issues()
    assert {"auto-investigated", "needs-review"} <= {label["name"] for label in issue["labels"]}
    assert stored.strip()[:200] in issue["body"]  # the report, as stored (redacted)
    assert "S3cr3tPassw0rd" not in issue["body"]

    # A later press links it; a non-approver is refused; still one issue.
    again = await h.press(report.message_id, file_issue, name="Bob", user_id=APPROVER_2)
    assert again["text"] == "Already filed: #1 https://github.com/acme/api/issues/1"
    refused = await h.press(report.message_id, file_issue, user_id=999, name="Mallory")
    assert "Not allowed" in refused["text"]
    assert len(fake.issues()) == 1 and len(fake.creates()) == 1


async def test_e2e_without_github_the_report_has_no_file_button(start_app, fake):
    h = await start_app(rollout_stage=3)
    card = await first_card(h, alert())
    report = await _report(h, card)
    assert not any(b["callback_data"].startswith("gi:") for row in report.buttons for b in row)
    assert fake.seen == []
