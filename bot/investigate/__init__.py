"""🔎 Investigate: the crashing code under REPO_PATH, its git history, similar past incidents.

frames.py   stack text → frames → files of REPO_PATH (suffix match, library frames skipped, no escape)
git.py      read-only git (argv, timeout): tracked files, a file's log, a line's blame
similar.py  normalised titles/culprits/stacks in SQLite FTS5: past incidents and how they ended
report.py   the findings (dataclasses) every report is made from
model.py    one report shape (pydantic) for both paths: Claude's, or built from the findings (no AI)
markdown.py the full report as Markdown (the chat's document, a GitHub issue body), redacted
summary.py  the short reply under the card (a document's caption)
tools.py    Claude's read-only tools, confined to REPO_PATH (no `..`, no symlinks out, no .git, no secrets)
claude.py   the tool-use loop through ClaudeGate, capped in steps, time, tokens and spend
card.py     "investigating…" on the card while one is queued or running
service.py  Investigator: the durable row per press, the background run, recovery, 👍/👎 votes
"""
