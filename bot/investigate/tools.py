"""Read-only tools for Claude's investigation, confined to REPO_PATH.

read_file, grep, list_dir, git_log, git_show, git_blame, similar_incidents. Nothing here writes,
runs a shell, or reaches the network; git runs as an argv list (bot/investigate/git.py).

Every path the model names is checked before use (`confine`): relative, no `..`, no `.git`
internals, not starting with `:` or `-` (git pathspec magic, options), and, symlinks resolved,
inside the repository. Files that usually hold secrets (`.env`, keys, certificates, credential
files) and files git ignores are refused, and git's own output leaves them out (exclude
pathspecs). Each tool's output is redacted and capped. A refused or failed call is returned to
the model as a tool error (`ToolResult(is_error=True)`), never raised: the model reads why and
may try something else.
"""

from __future__ import annotations

import asyncio
import fnmatch
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from bot.investigate.git import GitError, git

MAX_OUTPUT = 12_000  # characters of one tool's answer
MAX_READ_LINES = 300
MAX_LIST_ENTRIES = 300
MAX_GREP_LINES = 200
MAX_LOG_COMMITS = 30
MAX_PATTERN = 200
MAX_FILE_BYTES = 2_000_000
# Names (matched against the file name, case-insensitive) that usually hold secrets: never read.
SECRET_NAMES = (
    ".env", ".env.*", "*.env", ".envrc", "*.pem", "*.key", "*.p12", "*.pfx", "*.jks", "*.keystore", "*.kdbx",
    "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*", ".netrc", ".pgpass", ".npmrc", ".pypirc", ".git-credentials",
    "credentials", "credentials.*", "secrets.*", "*.secret", "*.secrets", "htpasswd", ".htpasswd", "*.tfstate",
)
_COMMITISH = re.compile(r"(?:[0-9a-fA-F]{4,64}|HEAD)(?:~\d{1,4}|\^\d?)?")
# Regex features a safe pattern may not use: back-references (exponential in POSIX engines).
_BACKREF = re.compile(r"\\[1-9]")

Redact = Callable[[str], str]
Similar = Callable[[], Awaitable[str]]


@dataclass(frozen=True)
class ToolResult:
    text: str
    is_error: bool = False


class ToolRefused(Exception):
    """A call refused (a path outside the repository, a secret file, a bad argument): told to the model."""


def is_secret_name(path: str) -> bool:
    name = PurePosixPath(path).name.lower()
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in SECRET_NAMES)


def confine(root: Path, relative: str, *, must_exist: bool = True) -> tuple[Path, str]:
    """(absolute path, normalised relative POSIX path) of `relative` inside `root`; ToolRefused otherwise."""
    raw = (relative or ".").strip()
    if "\0" in raw or "\\" in raw:
        raise ToolRefused(f"refused: {relative!r} is not a plain relative path")
    if raw.startswith(("/", "~")) or os.path.isabs(raw) or re.match(r"^[A-Za-z]:", raw):
        raise ToolRefused(f"refused: {relative!r} is absolute; give a path relative to the repository")
    if raw.startswith((":", "-")):
        raise ToolRefused(f"refused: {relative!r} may not start with ':' or '-'")
    parts = [p for p in PurePosixPath(raw).parts if p not in ("", ".")]
    if ".." in parts:
        raise ToolRefused(f"refused: {relative!r} climbs out of the repository ('..')")
    if any(p.lower() == ".git" for p in parts):
        raise ToolRefused(f"refused: {relative!r} is inside .git (use git_log, git_show, git_blame)")
    if parts and is_secret_name(parts[-1]):
        raise ToolRefused(f"refused: {relative!r} looks like a secrets file; it is never read")
    base = root.resolve()
    try:
        target = (base / "/".join(parts)).resolve(strict=must_exist)
    except FileNotFoundError:
        raise ToolRefused(f"no such file or directory: {relative!r}") from None
    except (OSError, RuntimeError):
        raise ToolRefused(f"refused: {relative!r} cannot be resolved") from None
    if not target.is_relative_to(base):
        raise ToolRefused(f"refused: {relative!r} leads outside the repository")
    inside = target.relative_to(base)
    if any(p.lower() == ".git" for p in inside.parts) or (inside.parts and is_secret_name(inside.parts[-1])):
        raise ToolRefused(f"refused: {relative!r} leads to a file that is never read")
    return target, "/".join(parts) or "."


def _cap(text: str, limit: int = MAX_OUTPUT) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[output cut at {limit} characters; ask for a narrower range]"


def _int(args: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = args.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ToolRefused(f"{name} must be an integer")
    return max(low, min(high, value))


def _str(args: dict[str, Any], name: str, default: str | None = None) -> str:
    value = args.get(name, default)
    if value is None:
        raise ToolRefused(f"{name} is required")
    if not isinstance(value, str):
        raise ToolRefused(f"{name} must be a string")
    return value


def _literal(path: str) -> str:
    """A pathspec that is exactly this path (no glob, no magic)."""
    return f":(literal){path}"


def _excludes() -> list[str]:
    """Pathspecs leaving secret-looking files out of git's answers."""
    return [f":(exclude,glob,icase)**/{pattern}" for pattern in SECRET_NAMES]


TOOL_SPECS: list[dict[str, Any]] = [
    {"name": "read_file", "description": "Read lines of a file of the repository (relative path). "
     f"At most {MAX_READ_LINES} lines per call.",
     "input_schema": {"type": "object", "properties": {
         "path": {"type": "string"}, "start_line": {"type": "integer", "minimum": 1},
         "end_line": {"type": "integer", "minimum": 1}}, "required": ["path"]}},
    {"name": "grep", "description": "Search tracked files (git grep). A fixed string by default; "
     "regex=true for an extended regular expression (no back-references). Optional path limits the search.",
     "input_schema": {"type": "object", "properties": {
         "pattern": {"type": "string"}, "regex": {"type": "boolean"}, "path": {"type": "string"},
         "ignore_case": {"type": "boolean"}}, "required": ["pattern"]}},
    {"name": "list_dir", "description": "List a directory of the repository (relative path; '.' is the top).",
     "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}}},
    {"name": "git_log", "description": "Recent commits (sha, author, date, subject), of the whole repository "
     "or of one path.",
     "input_schema": {"type": "object", "properties": {
         "path": {"type": "string"}, "max_count": {"type": "integer", "minimum": 1}}}},
    {"name": "git_show", "description": "A commit's message and diff (commit: a hex sha or HEAD, HEAD~N); "
     "optional path limits the diff.",
     "input_schema": {"type": "object", "properties": {
         "commit": {"type": "string"}, "path": {"type": "string"}}, "required": ["commit"]}},
    {"name": "git_blame", "description": "Who last changed each line of a file's range (at HEAD).",
     "input_schema": {"type": "object", "properties": {
         "path": {"type": "string"}, "start_line": {"type": "integer", "minimum": 1},
         "end_line": {"type": "integer", "minimum": 1}}, "required": ["path", "start_line"]}},
    {"name": "similar_incidents", "description": "Past incidents like this one, resolved first, and how each ended.",
     "input_schema": {"type": "object", "properties": {}}},
]


class RepoTools:
    """The tools over one repository (None: only similar_incidents works)."""

    def __init__(self, root: Path | None, redact: Redact, similar: Similar | None = None) -> None:
        self.root = root.resolve() if root is not None else None
        self.redact = redact
        self.similar = similar

    async def call(self, name: str, args: object) -> ToolResult:
        """Run one tool; refusals and failures come back as tool errors."""
        handlers = {"read_file": self.read_file, "grep": self.grep, "list_dir": self.list_dir,
                    "git_log": self.git_log, "git_show": self.git_show, "git_blame": self.git_blame,
                    "similar_incidents": self.similar_incidents}
        handler = handlers.get(name)
        if handler is None:
            return ToolResult(f"unknown tool {name!r}", is_error=True)
        if not isinstance(args, dict):
            return ToolResult("the tool input must be an object", is_error=True)
        try:
            text = await handler(args)
        except ToolRefused as exc:
            return ToolResult(str(exc), is_error=True)
        except GitError as exc:
            return ToolResult(self.redact(str(exc))[:500], is_error=True)
        return ToolResult(_cap(self.redact(text)))

    def _root(self) -> Path:
        if self.root is None:
            raise ToolRefused("REPO_PATH is not set: there is no repository to read")
        return self.root

    async def _is_ignored(self, relative: str) -> bool:
        try:
            await git(self._root(), "check-ignore", "-q", "--", relative)  # a path, not a pathspec
        except GitError:
            return False  # exit 1: not ignored (or not a git repository)
        return True

    # -- the tools -----------------------------------------------------------------------------

    async def read_file(self, args: dict[str, Any]) -> str:
        root = self._root()
        path, relative = confine(root, _str(args, "path"))
        if not path.is_file():
            raise ToolRefused(f"{relative} is not a file")
        if await self._is_ignored(relative):
            raise ToolRefused(f"refused: {relative} is ignored by git (often local configuration or secrets)")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ToolRefused(f"{relative} is larger than {MAX_FILE_BYTES} bytes")
        start = _int(args, "start_line", 1, 1, 10_000_000)
        end = _int(args, "end_line", start + MAX_READ_LINES - 1, start, start + MAX_READ_LINES - 1)
        lines = (await asyncio.to_thread(path.read_text, "utf-8", "replace")).splitlines()
        if start > len(lines):
            return f"{relative} has {len(lines)} lines"
        shown = [f"{n:>6}  {lines[n - 1][:500]}" for n in range(start, min(end, len(lines)) + 1)]
        return f"{relative} lines {start}-{start + len(shown) - 1} of {len(lines)}:\n" + "\n".join(shown)

    async def grep(self, args: dict[str, Any]) -> str:
        root = self._root()
        pattern = _str(args, "pattern")
        if not pattern or len(pattern) > MAX_PATTERN or "\n" in pattern:
            raise ToolRefused(f"the pattern must be one line of 1 to {MAX_PATTERN} characters")
        regex = bool(args.get("regex"))
        if regex and _BACKREF.search(pattern):
            raise ToolRefused("back-references are not allowed in a pattern")
        spec = ["."]  # REPO_PATH only, even when it is a folder of a larger repository
        if args.get("path") not in (None, "", "."):
            _, relative = confine(root, _str(args, "path"))
            spec = [_literal(relative)]
        argv = ["grep", "-n", "-I", "--no-color", "-E" if regex else "-F"]  # paths relative to REPO_PATH
        if args.get("ignore_case"):
            argv.append("-i")
        try:
            out = await git(root, *argv, "-e", pattern, "--", *spec, *_excludes())
        except GitError as exc:
            if "exit 1" in str(exc):
                return "no match"
            raise
        lines = out.splitlines()
        shown = [line[:400] for line in lines[:MAX_GREP_LINES]]
        more = f"\n[{len(lines) - MAX_GREP_LINES} more matches not shown]" if len(lines) > MAX_GREP_LINES else ""
        return "\n".join(shown) + more

    async def list_dir(self, args: dict[str, Any]) -> str:
        root = self._root()
        path, relative = confine(root, _str(args, "path", "."))
        if not path.is_dir():
            raise ToolRefused(f"{relative} is not a directory")
        entries = sorted(await asyncio.to_thread(os.listdir, path))
        shown = []
        for name in entries:
            if name == ".git" or is_secret_name(name):
                continue
            shown.append(name + ("/" if (path / name).is_dir() else ""))
        more = f"\n[{len(shown) - MAX_LIST_ENTRIES} more entries]" if len(shown) > MAX_LIST_ENTRIES else ""
        return f"{relative}/:\n" + "\n".join(shown[:MAX_LIST_ENTRIES]) + more

    async def git_log(self, args: dict[str, Any]) -> str:
        root = self._root()
        count = _int(args, "max_count", 10, 1, MAX_LOG_COMMITS)
        spec = ["."]
        if args.get("path") not in (None, "", "."):
            _, relative = confine(root, _str(args, "path"), must_exist=False)
            spec = [_literal(relative)]
        out = await git(root, "log", f"-n{count}", "--date=short", "--format=%h %ad %an: %s", "--", *spec)
        return out or "no commits"

    async def git_show(self, args: dict[str, Any]) -> str:
        root = self._root()
        commit = _str(args, "commit").strip()
        if not _COMMITISH.fullmatch(commit):
            raise ToolRefused(f"refused: commit {commit[:80]!r} is not a hex sha (4-64 digits) or HEAD, HEAD~N, HEAD^")
        spec = ["."]  # REPO_PATH only, even when it is a folder of a larger repository
        if args.get("path") not in (None, "", "."):
            _, relative = confine(root, _str(args, "path"), must_exist=False)
            spec = [_literal(relative)]
        return await git(root, "show", "--no-ext-diff", "--no-textconv", "--stat", "--patch", "--format=fuller",
                         commit, "--", *spec, *_excludes())

    async def git_blame(self, args: dict[str, Any]) -> str:
        root = self._root()
        path, relative = confine(root, _str(args, "path"))
        if not path.is_file():
            raise ToolRefused(f"{relative} is not a file")
        start = _int(args, "start_line", 1, 1, 10_000_000)
        end = _int(args, "end_line", start + 20, start, start + MAX_READ_LINES - 1)
        return await git(root, "blame", "--date=short", f"-L{start},{end}", "HEAD", "--", relative)

    async def similar_incidents(self, args: dict[str, Any]) -> str:
        if self.similar is None:
            return "no incident history available"
        return await self.similar()
