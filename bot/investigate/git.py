"""Read-only git over REPO_PATH: tracked files, a file's recent commits, who last touched a line.

git runs as an argv subprocess (never a shell) with a timeout, no pager, no prompts, and file
names printed as they are (`core.quotepath=off`); every path it is given was checked by
`frames.safe_file` first and is passed after `--`, so nothing in a stack can become an option.

The repository's own configuration is data too: it could name programs for git to run (a textconv
driver, a signature verifier, an fsmonitor hook, a pager). The single runner here ignores the
system and global configuration, overrides every such setting on the command line (which wins over
the repository's), trusts the repository the operator configured as REPO_PATH by its path
(`safe.directory`), caps git's memory (RLIMIT_AS) and kills git's whole process group when the
call times out, fails, or is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import resource
import signal
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

GIT_TIMEOUT_S = 10.0
MAX_OUTPUT = 4_000_000  # bytes read from one git command
GIT_MEMORY_BYTES = 512 * 1024 * 1024  # address space of one git process (a regex can ask for gigabytes)
_SEP = "\x1f"
# For log and show: no external diff or textconv program, no signature check, no notes.
LOG_SAFE = ("--no-ext-diff", "--no-textconv", "--no-show-signature", "--no-notes")

# Settings a repository's config (or the operator's) could use to make git start a program, or that
# change what git prints; the command line wins over every config file.
_NEUTRAL_CONFIG = (
    "core.quotepath=off", "core.fsmonitor=false", "core.hooksPath=/dev/null", "core.pager=cat",
    "core.editor=/bin/false", "core.sshCommand=/bin/false", "core.askPass=/bin/false",
    "diff.external=", "log.showSignature=false", "gpg.program=/bin/false", "gpg.ssh.program=/bin/false",
    "gpg.x509.program=/bin/false", "protocol.allow=never", "credential.helper=",
    # Small pack windows and one grep thread keep ordinary reads well inside GIT_MEMORY_BYTES.
    "core.packedGitWindowSize=32m", "core.packedGitLimit=256m", "grep.threads=1",
)
# git quotes a line it could not parse as an object name; the line may come from any file the
# repository's config names (`blame.ignoreRevsFile=/etc/shadow`, which the command line cannot unset).
_NAMED_OBJECT = re.compile(r"(invalid object name)\b.*", re.IGNORECASE)
# Environment variables git reads: only ours reach it (the bot's own GIT_* could redirect it).
_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_PAGER": "cat", "PAGER": "cat", "LC_ALL": "C", "GIT_OPTIONAL_LOCKS": "0",
            "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_ASKPASS": "/bin/false",
            "MALLOC_ARENA_MAX": "2"}


class GitError(Exception):
    """git is missing, timed out, or said no (not a repository, unknown path…)."""

    def __init__(self, message: str, returncode: int | None = None) -> None:
        super().__init__(message)
        self.returncode = returncode  # git's exit status; None when it did not finish


@dataclass(frozen=True)
class Commit:
    sha: str
    author: str
    at: datetime
    subject: str

    @property
    def short(self) -> str:
        return self.sha[:10]


def _trusted_worktree(repo: Path) -> str:
    """The top of the git work tree holding `repo` (the first folder up with a `.git`), resolved.

    Passed as `safe.directory`: the operator chose REPO_PATH, so git may read it even when another
    user owns it (the global config, where operators used to allow it, is not read any more)."""
    resolved = repo.resolve()
    for folder in (resolved, *resolved.parents):
        if (folder / ".git").exists():
            return str(folder)
    return str(resolved)


def _limit_memory() -> None:  # runs in the child between fork and exec
    resource.setrlimit(resource.RLIMIT_AS, (GIT_MEMORY_BYTES, GIT_MEMORY_BYTES))


def _argv(repo: Path, args: tuple[str, ...]) -> list[str]:
    overrides = [item for setting in _NEUTRAL_CONFIG for item in ("-c", setting)]
    return ["git", "--no-pager", *overrides, "-c", f"safe.directory={_trusted_worktree(repo)}", *args]


def _env() -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("GIT_")}, **_GIT_ENV}


async def _kill(proc: asyncio.subprocess.Process) -> None:
    """Kill git and anything it started (its own process group), then reap it."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    await asyncio.shield(proc.wait())


async def git(repo: Path, *args: str, timeout_s: float = GIT_TIMEOUT_S) -> str:
    """stdout of `git <args>` run in `repo`; GitError on failure or timeout."""
    starting = asyncio.ensure_future(asyncio.create_subprocess_exec(
        *_argv(repo, args), cwd=str(repo), env=_env(),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        start_new_session=True, preexec_fn=_limit_memory,
    ))
    try:
        # Shielded: git is running before its pipes are connected, and a cancel landing in between
        # would make asyncio kill git alone and wait for what git started to close the pipes.
        proc = await asyncio.shield(starting)
    except OSError as exc:
        raise GitError(f"git could not run: {exc}") from exc
    except asyncio.CancelledError:
        with contextlib.suppress(OSError):
            await _kill(await asyncio.shield(starting))
        raise
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        await _kill(proc)
        raise GitError(f"git {args[0]} took longer than {timeout_s:.0f}s") from None
    except BaseException:  # cancelled (the investigation stopped) or failed: git must not outlive the call
        await _kill(proc)
        raise
    if proc.returncode != 0:
        message = err.decode("utf-8", "replace").strip().splitlines()
        line = _NAMED_OBJECT.sub(r"\1 (not shown)", message[-1]) if message else f"exit {proc.returncode}"
        raise GitError(f"git {args[0]}: {line}", proc.returncode)
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
    out = await git(repo, "log", *LOG_SAFE, f"-n{limit}", "--follow", f"--format=%H{_SEP}%an{_SEP}%aI{_SEP}%s",
                    "--", file)
    return [c for line in out.splitlines() if (c := _commit(line)) is not None]


async def blame_line(repo: Path, file: str, line: int) -> Commit | None:
    """The commit that last touched this line of the file at HEAD (None: not committed yet)."""
    out = await git(repo, "blame", "--no-textconv", "--porcelain", f"-L{line},{line}", "HEAD", "--", file)
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
