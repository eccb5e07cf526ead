"""What the bot files: title, Markdown body, labels and marker, from a stored incident (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime

from bot.github.issue import (
    BODY_LIMIT,
    IssueContext,
    has_marker,
    issue_title,
    marker,
    render_issue,
)
from bot.models import AlertKind, Category, Incident, Owner, Priority, Triage
from bot.redact import Redactor

NOW = datetime(2026, 11, 30, 9, 15, tzinfo=UTC)
GITHUB_PAT = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"


def incident(*, title: str = "ValueError: bad invoice", stack: str = "", cause: str = "bad input reaches the parser",
             owner: Owner | None = None, priority: Priority = Priority.P1, incident_id: int = 7) -> Incident:
    triage = Triage(priority=priority, category=Category.CODE, likely_cause=cause, owner=owner)
    return Incident(
        id=incident_id, fingerprint="title:x", status="open", source="generic", kind=AlertKind.ERROR, title=title,
        message="billing.invoice in parse", level="error", project="billing-api", environment="production",
        release=None, server=None, url=None, stacktrace=stack, external_id=None, tags={}, count=3, first_seen=NOW,
        last_seen=NOW, priority=priority, priority_original=priority, category=Category.CODE, triage=triage,
    )


def draft(inc: Incident, **context: object):
    values: dict[str, object] = {"approved_by": "Ann", "approved_at": NOW, **context}
    return render_issue(inc, IssueContext(**values), Redactor())  # type: ignore[arg-type]


def test_the_title_is_one_line_prefixed_and_cut_to_githubs_limit():
    assert issue_title("KeyError: 'id'") == "[Auto] KeyError: 'id'"
    long = issue_title("E" * 5000 + "\n  more")
    assert len(long) == 256 and long.startswith("[Auto] EEE") and long.endswith("…")
    assert "\n" not in issue_title("line one\nline two")


def test_the_body_ends_with_the_marker_and_carries_triage_and_who_approved():
    made = draft(incident(owner=Owner("Alice", "@alice", "alice")), assignee="alice")
    assert made.body.rstrip().splitlines()[-1] == "<!-- remediator-incident: 7 -->"
    assert has_marker(made.body, 7) and not has_marker(made.body, 77) and not has_marker(made.body, 1)
    for expected in ("**Priority:** P1", "**Category:** code", "**Likely cause:** bad input reaches the parser",
                     "**Owner:** Alice (@alice, assigned)", "**Seen:** 3 time(s)", "**Incident:** #7",
                     "Approved in Telegram by Ann at 2026-11-30 09:15 UTC", "needs review"):
        assert expected in made.body, expected
    assert made.labels == ["needs-review", "P1"] and made.assignees == ["alice"]


def test_an_owner_github_does_not_accept_is_mentioned_not_assigned():
    made = draft(incident(owner=Owner("Alice", "@alice", "alice")), assignee=None)
    assert made.assignees == [] and "@alice" in made.body and "does not accept them as an assignee" in made.body


def test_alert_text_cannot_ping_people_add_html_or_fake_another_incidents_marker():
    hostile = "Error @everyone see #12 <img src=x> `` ``` " + marker(3)
    made = draft(incident(title=hostile, stack=f"Traceback\n```\n{marker(3)}\n```\n@octocat", cause="ask @bob"))
    # The error text appears once, inside a code span whose fence is longer than its own backtick runs.
    assert made.body.count("@everyone") == 1
    assert f"- **Error:** ````{hostile}````" in made.body.splitlines()
    assert "ask @\u200dbob" in made.body  # bot prose: the mention is inert
    assert not has_marker(made.body, 3) and has_marker(made.body, 7)
    assert "````text\nTraceback" in made.body  # the stack's own ``` cannot close its block


def test_secrets_never_reach_the_issue():
    made = draft(incident(title=f"auth failed with {GITHUB_PAT}",
                          stack="at connect (postgres://app:Hunter2Secret@db:5432/x)"))
    assert GITHUB_PAT not in made.title and GITHUB_PAT not in made.body
    assert "Hunter2Secret" not in made.body


def test_a_report_adds_its_section_and_the_auto_investigated_label():
    made = draft(incident(), report="The parser gets `None` from the cache.\n\n**Fix:** check for None.")
    assert made.labels == ["auto-investigated", "needs-review", "P1"]
    assert "## Investigation (automatic)\nThe parser gets `None`" in made.body
    assert has_marker(made.body, 7)
    assert "auto-investigated" not in draft(incident()).labels


def test_a_huge_stack_still_fits_githubs_body_limit():
    made = draft(incident(stack="frame\n" * 200_000), report="r" * 100_000)
    assert len(made.body) <= BODY_LIMIT and has_marker(made.body, 7)
    assert "chars cut" in made.body
