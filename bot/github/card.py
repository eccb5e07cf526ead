"""The card's GitHub lines: the issue's number and link, or how its filing goes.

Every value is escaped here; bot/card_render.py places the lines under the tracker link and
keeps the card under Telegram's limit.
"""

from __future__ import annotations

import html

from bot.card_render import CardExtras, esc
from bot.models import Incident
from storage.db import Executor
from storage.github import GitHubIssueRepository, GitHubIssueRow


async def github_card_extras(tx: Executor, incident: Incident) -> CardExtras | None:
    """What the card of this incident shows about its GitHub issue (None: none was asked for)."""
    row = await GitHubIssueRepository(tx).issue(incident.id)
    return CardExtras(links=tuple(issue_lines(row))) if row is not None else None


def issue_lines(row: GitHubIssueRow) -> list[str]:
    if row.state == "filed" and row.number is not None:
        link = f"<b>{esc(row.ref, 200)}</b>"
        if row.html_url and row.html_url.startswith(("http://", "https://")):
            link = f'<a href="{html.escape(row.html_url, quote=True)}">{esc(row.ref, 200)}</a>'
        who = f" · assigned to {esc(row.assignee, 40)}" if row.assignee else ""
        lines = [f"🐙 GitHub issue {link}{who}"]
        lines.extend(_comment_lines(row))
        return lines
    if row.state == "failed":
        return [f"⚠️ GitHub issue not filed in {esc(row.repo, 140)}: {esc(row.problem or 'it failed', 500)}"]
    waiting = f": {esc(row.problem, 400)}" if row.problem else "…"
    return [f"⏳ Filing a GitHub issue in {esc(row.repo, 140)}{waiting}"]


def _comment_lines(row: GitHubIssueRow) -> list[str]:
    if row.comment_state == "done":
        return ["💬 The issue was told it was resolved here (it stays open for people to close)"]
    if row.comment_state == "failed":
        return [f"⚠️ Could not comment on the GitHub issue: {esc(row.comment_note or 'it failed', 300)}"]
    if row.comment_state == "pending" and row.comment_note:
        return [f"⏳ Commenting on the GitHub issue: {esc(row.comment_note, 300)}"]
    return []
