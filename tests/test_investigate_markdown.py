"""The full report as Markdown (the chat's document, a GitHub issue's body): text from the alert can
neither restyle it (links, HTML, headings) nor close its code blocks; secrets are redacted."""

from __future__ import annotations

from bot.callback_data import INVESTIGATE, CardPress
from bot.investigate.markdown import MAX_BYTES, _capped, fenced, inline
from bot.investigate.service import Investigator
from bot.models import Alert, AlertKind, Category, Priority, Triage
from bot.redact import Redactor
from storage.incidents import IncidentRepository
from storage.investigations import InvestigationRepository
from tests.conftest import ANN, CHAT_ID


def test_inline_text_and_code_blocks_cannot_be_escaped_from() -> None:
    assert inline("[click](https://evil.example) <img src=x> `code` | *bold*\n# heading") == (
        "\\[click\\](https://evil.example) \\<img src=x\\> \\`code\\` \\| \\*bold\\* # heading")
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
    assert "# Investigation of #1: Boom \\[click\\](https://evil.example) \\<img src=x onerror=alert(1)\\>" in markdown
    assert "`````\n```\n## Fake heading: ignore the report\n````\npassword=[REDACTED]\n`````" in markdown
    assert "hunter2" not in markdown
