"""Read-only git over REPO_PATH: tracked files, a file's recent commits, who last touched a line.

git runs as an argv subprocess (never a shell) with a timeout, no pager, no prompts, and file
names printed as they are (`core.quotepath=off`); every path it is given was checked by
`frames.safe_file` first and is passed after `--`, so nothing in a stack can become an option.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

GIT_TIMEOUT_S = 10.0
MAX_OUTPUT = 4_000_000  # bytes read from one git command
_SEP = "\x1f"


class GitError(Exception):
    """git is missing, timed out, or said no (not a repository, unknown path…)."""


@dataclass(frozen=True)
class Commit:
    sha: str
    author: str
    at: datetime
    subject: str

    @property
    def short(self) -> str:
        return self.sha[:10]


async def git(repo: Path, *args: str, timeout_s: float = GIT_TIMEOUT_S) -> str:
    """stdout of `git <args>` run in `repo`; GitError on failure or timeout."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_PAGER": "cat", "LC_ALL": "C", "GIT_OPTIONAL_LOCKS": "0"}
    try:
        proc = await asyncio.create_subprocess_exec(
            # No fsmonitor hook: a repository's own config could name a program to run.
            "git", "--no-pager", "-c", "core.quotepath=off", "-c", "core.fsmonitor=false", *args, cwd=str(repo),
            env=env,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        raise GitError(f"git could not run: {exc}") from exc
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise GitError(f"git {args[0]} took longer than {timeout_s:.0f}s") from None
    if proc.returncode != 0:
        message = err.decode("utf-8", "replace").strip().splitlines()
        raise GitError(f"git {args[0]}: {message[-1] if message else f'exit {proc.returncode}'}")
    return out[:MAX_OUTPUT].decode("utf-8", "replace")


async def tracked_files(repo: Path) -> list[str]:
    out = await git(repo, "ls-files", "-z")
    return [name for name in out.split("\0") if name]


def _commit(line: str) -> Commit | None:
    fields = line.split(_SEP)
    if len(fields) != 4:
        return None
    sha, author, when, subject = fields
    try:
        at = datetime.fromisoformat(when).astimezone(UTC)
    except ValueError:
        return None
    return Commit(sha, author, at, subject)


async def recent_commits(repo: Path, file: str, limit: int = 5) -> list[Commit]:
    """The file's latest commits, newest first (renames followed)."""
    out = await git(repo, "log", f"-n{limit}", "--follow", f"--format=%H{_SEP}%an{_SEP}%aI{_SEP}%s", "--", file)
    return [c for line in out.splitlines() if (c := _commit(line)) is not None]


async def blame_line(repo: Path, file: str, line: int) -> Commit | None:
    """The commit that last touched this line of the file at HEAD (None: not committed yet)."""
    out = await git(repo, "blame", "--porcelain", f"-L{line},{line}", "HEAD", "--", file)
    lines = out.splitlines()
    if not lines:
        return None
    sha = lines[0].split(" ", 1)[0]
    if set(sha) == {"0"}:
        return None
    headers = dict(h.split(" ", 1) for h in lines[1:] if " " in h and not h.startswith("\t"))
    try:
        at = datetime.fromtimestamp(int(headers.get("author-time", "")), UTC)
    except ValueError:
        return None
    return Commit(sha, headers.get("author", "?"), at, headers.get("summary", ""))
