"""🔎 Investigate: the crashing code under REPO_PATH, its git history, similar past incidents.

frames.py   stack text → frames → files of REPO_PATH (suffix match, library frames skipped, no escape)
git.py      read-only git (argv, timeout): tracked files, a file's log, a line's blame
similar.py  normalised titles/culprits/stacks in SQLite FTS5: past incidents and how they ended
report.py   the findings as a chat reply (Telegram HTML, redacted, under 4096)
service.py  Investigator: the durable row per press, the background run, recovery, 👍/👎 votes
"""
