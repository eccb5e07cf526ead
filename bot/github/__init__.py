"""GitHub issues filed after a press (issue 12).

When no safe fix applies, the card can propose "file a GitHub issue in owner/name"; Approve files
it, once per incident, through a durable queue. Off unless `GITHUB_TOKEN` and `GITHUB_REPO` are set.

    api.py       GitHubClient: httpx, token in a header, deadlines, errors by kind (rate limits too)
    issue.py     the issue itself: title, Markdown body (redacted, inert), labels, the hidden marker
    runner.py    GitHubIssueRunner: the `github_issue` proposal's KindRunner (records the intent)
    service.py   GitHubIssueService: the queue's worker (file once, find by marker, comment on resolve)
    card.py      the card's line: the issue's link, or how its filing goes
    report_button.py  the investigation report's "📝 File GitHub issue" button (approvers, stage 3+)
    check.py     `remediator github check`: reach, token, repo, issues, labels

The rows live in storage/github.py (the intent per incident, and the job queue).

The investigation report (issues 9/11) plugs in at two places: `report_for=latest_report`
(bot/github/service.py) puts the newest report (Markdown) in the body and adds the
`auto-investigated` label, and the report's "📝 File GitHub issue" button
(bot/github/report_button.py) records the intent with `GitHubIssueRepository.request_issue`, the
same once-per-incident path as Approve: a second press or approval links the issue already filed.

Shared with GlitchTip's client and worker (bot/http_jobs.py): the capped call under a total
deadline, `Retry-After`, the outage pause, the job guard and the check's lines.
"""
