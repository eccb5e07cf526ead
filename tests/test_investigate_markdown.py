"""The full report as Markdown (the chat's document, a GitHub issue's body): text from the alert can
neither restyle it (links, HTML, headings) nor close its code blocks; secrets are redacted."""

from __future__ import annotations

import re

from bot.callback_data import INVESTIGATE, CardPress
from bot.github.issue import IssueContext, render_issue
from bot.investigate.markdown import MAX_BYTES, ZWJ, _capped, fenced, inline
from bot.investigate.service import Investigator
from bot.models import Alert, AlertKind, Category, Priority, Triage
from bot.redact import Redactor
from storage.incidents import IncidentRepository
from storage.investigations import InvestigationRepository
from tests.conftest import ANN, CHAT_ID


def test_inline_text_and_code_blocks_cannot_be_escaped_from() -> None:
    assert inline("[click](https://evil.example) <img src=x> `code` | *bold*\n# heading") == (
        "\\[click\\](`https://evil.example`) \\<img src=x\\> \\`code\\` \\| \\*bold\\* # heading")
    assert fenced("a\n````\nb") == "`````\na\n````\nb\n`````"
    assert fenced("plain", "diff") == "```diff\nplain\n```"
    big = "é" * MAX_BYTES
    cut = _capped(big)
    assert len(cut.encode()) <= MAX_BYTES and cut.endswith("(report cut at 200 KB)\n")


async def test_a_hostile_alert_is_quoted_inert_in_the_stored_markdown(make_services) -> None:
    services = await make_services(stage=3)
    services.decisions.investigator = Investigator(services.db, services.cards, services.tasks, repo_path=None,
                                                   redact=Redactor().redact)
    title = "Boom [click](https://evil.example) <img src=x onerror=alert(1)>"
    message = "```\n## Fake heading: ignore the report\n````\npassword=hunter2"
    alert = Alert(source="generic", kind=AlertKind.ERROR, title=title, fingerprint="f", message=message)
    async with services.db.transaction() as tx:
        incident = await IncidentRepository(tx).create(
            alert, Triage(Priority.P2, Category.CODE, "a bug"), services.clock(), CHAT_ID, None)
    await services.decisions.press(ANN, CardPress(INVESTIGATE, incident.id))
    await services.tasks.wait_idle()
    markdown = await InvestigationRepository(services.db).latest_report_markdown(incident.id)
    assert markdown is not None
    assert "# Investigation of #1: Boom \\[click\\](`https://evil.example`) \\<img src=x onerror=alert(1)\\>" in markdown
    assert "`````\n```\n## Fake heading: ignore the report\n````\npassword=[REDACTED]\n`````" in markdown
    assert "hunter2" not in markdown


def _outside_code(markdown: str) -> str:
    """The Markdown without its code blocks and code spans (where GitHub links nothing)."""
    without_blocks = re.sub(r"^(`{3,})[^\n]*\n.*?^\1$", "", markdown, flags=re.MULTILINE | re.DOTALL)
    return re.sub(r"(`+)(.+?)\1", "", without_blocks)


def test_outside_text_cannot_mention_link_or_start_a_block_in_a_github_issue() -> None:
    assert inline("Boom @octocat see https://evil.example/reset, and acme/payments#1 or #2 (GH-3)") == (
        f"Boom @{ZWJ}octocat see `https://evil.example/reset`, and acme/payments#{ZWJ}1 or #{ZWJ}2 (GH-{ZWJ}3)")
    assert inline("ping www.evil.example &#64;team") == f"ping `www.evil.example` \\&#{ZWJ}64;team"
    for line, inert in [("# Ignore this report", "\\# Ignore this report"), ("===", "\\==="), ("- item", "\\- item"),
                        ("+ item", "\\+ item"), ("1. item", "1\\. item"), ("~~~", "\\~~~")]:
        assert inline(line) == inert


async def test_a_hostile_alert_and_triage_text_stay_inert_in_the_filed_github_issue(make_services) -> None:
    """The report goes into the GitHub issue's body as it is: nothing from the alert may notify, link or restyle."""
    services = await make_services(stage=3)
    services.decisions.investigator = Investigator(services.db, services.cards, services.tasks, repo_path=None,
                                                   redact=Redactor().redact)
    title = "Boom @octocat see https://evil.example/reset and acme/payments#1"
    alert = Alert(source="generic", kind=AlertKind.ERROR, title=title, fingerprint="f", message="m",
                  tags={"note": "ping @security-team www.evil.example"})
    cause = "a bug\n# Ignore this report: run the fix at https://evil.example/fix\n==="  # a triage cause may span lines
    async with services.db.transaction() as tx:
        incident = await IncidentRepository(tx).create(
            alert, Triage(Priority.P2, Category.CODE, cause), services.clock(), CHAT_ID, None)
    await services.decisions.press(ANN, CardPress(INVESTIGATE, incident.id))
    await services.tasks.wait_idle()
    markdown = await InvestigationRepository(services.db).latest_report_markdown(incident.id)
    assert markdown is not None
    fresh = await IncidentRepository(services.db).get(incident.id)
    assert fresh is not None
    body = render_issue(fresh, IssueContext(approved_by="Ann", approved_at=services.clock(), report=markdown),
                        Redactor()).body
    report = body.split("## Investigation (automatic)", 1)[1]
    live = _outside_code(body)  # what GitHub renders as text: mentions, references and URLs would be live there
    assert "@octocat" not in live and "@security-team" not in live and "evil.example" not in live
    assert "acme/payments#1" not in report and f"acme/payments#{ZWJ}1" in report  # no cross reference
    assert not re.search(r"^(# Ignore|===)", report, re.MULTILINE)  # no heading from the triage's text
    assert "\\# Ignore this report: run the fix at `https://evil.example/fix`\n\\===" in report  # still readable
    assert f"Boom @{ZWJ}octocat see `https://evil.example/reset`" in report
