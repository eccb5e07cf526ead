"""Read-only tools for Claude's investigation, confined to REPO_PATH.

read_file, grep, list_dir, git_log, git_show, git_blame, similar_incidents. Nothing here writes,
runs a shell, or reaches the network; git runs as an argv list (bot/investigate/git.py).

Every path the model names is checked before use (`confine`): relative, no `..`, no `.git`
internals, not starting with `:` or `-` (git pathspec magic, options), and, symlinks resolved,
inside the repository. Files that usually hold secrets (`.env`, keys, certificates, credential
files) and files git ignores are refused, and git's own output leaves them out (exclude
pathspecs). When git cannot tell whether a file is ignored (REPO_PATH is not a git repository,
git fails), read_file refuses: it fails closed. A symlink is followed only to a file git tracks
and does not ignore. git_show shows commits only (never a blob or a tree, which a bare object id
could name), limited to REPO_PATH and without the secret files. grep's regular expressions may
not nest repeat counts or use large ones (one short pattern can make git allocate gigabytes).
Each tool's output is redacted and capped. A refused or failed call is returned to
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

from bot.investigate.git import LOG_SAFE, GitError, git

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
    "*.tfstate.backup", "*.tfvars", "*.tfvars.json", "service-account*.json", "serviceaccount*.json",
    "*-credentials.json", "kubeconfig", "*.kubeconfig",
    # Generic names that are secret only in their folder (matched against the path's end).
    ".docker/config.json", ".kube/config", ".aws/credentials", ".aws/config", ".ssh/*", ".gnupg/*",
)
_COMMITISH = re.compile(r"(?:[0-9a-fA-F]{4,64}|HEAD)(?:~\d{1,4}|\^\d?)?")
# Regex features a safe pattern may not use: back-references (exponential in POSIX engines).
_BACKREF = re.compile(r"\\[1-9]")
# A repeat count `{m}`, `{m,}`, `{,n}`, `{m,n}` of an extended regular expression.
_BOUND = re.compile(r"\{(\d*)(?:,(\d*))?\}")
MAX_REPEAT = 32  # the largest repeat count grep accepts (git's regex engine copies the repeated part)

Redact = Callable[[str], str]
Similar = Callable[[], Awaitable[str]]


@dataclass(frozen=True)
class ToolResult:
    text: str
    is_error: bool = False


class ToolRefused(Exception):
    """A call refused (a path outside the repository, a secret file, a bad argument): told to the model."""


def is_secret_name(path: str) -> bool:
    parts = PurePosixPath(path.lower()).parts
    name, in_folder = parts[-1] if parts else "", "/".join(parts[-2:])
    return any(fnmatch.fnmatchcase(in_folder if "/" in pattern else name, pattern) for pattern in SECRET_NAMES)


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


@dataclass
class _Atom:
    """What a repeat would apply to: does it already hold a repeat, a repeat count?"""
    repeat: bool = False
    bound: bool = False


def _bracket_end(pattern: str, i: int) -> int:
    """The index after the bracket expression `[...]` starting at `i` (`[]a]`, `[^]a]`, `[[:alpha:]]`)."""
    j = i + 1
    if j < len(pattern) and pattern[j] == "^":
        j += 1
    if j < len(pattern) and pattern[j] == "]":
        j += 1
    while j < len(pattern) and pattern[j] != "]":
        if pattern[j] == "[" and j + 1 < len(pattern) and pattern[j + 1] in ":=.":
            close = pattern.find(pattern[j + 1] + "]", j + 2)
            j = close + 2 if close >= 0 else len(pattern)
        else:
            j += 1
    return j + 1


def _bound_problem(match: re.Match[str]) -> str | None:
    counts = [int(n) for n in match.groups() if n]
    if any(n > MAX_REPEAT for n in counts):
        return f"repeat counts above {MAX_REPEAT} are not allowed ({match.group()})"
    return None


def regex_problem(pattern: str) -> str | None:
    """Why this extended regular expression is refused for grep, or None.

    git's regex engine expands `x{m,n}` into n copies of x, so nested counts multiply:
    `((a{1,100}){1,100}){1,100}` asks for gigabytes. Refused: back-references, counts above
    MAX_REPEAT, and a repeat count nested with any other repeat (`(a{2})*`, `(a+){2}`, `a{2}{3}`)."""
    if _BACKREF.search(pattern):
        return "back-references are not allowed in a pattern"
    groups: list[_Atom] = [_Atom()]  # the open groups, outermost first: what each holds so far
    last: _Atom | None = None  # what a repeat here would apply to
    i = 0
    while i < len(pattern):
        char = pattern[i]
        bound = _BOUND.match(pattern, i) if char == "{" else None
        if char in "*+?" or bound is not None:
            if bound is not None and (problem := _bound_problem(bound)):
                return problem
            atom = last or _Atom()
            if atom.bound or (bound is not None and atom.repeat):
                return "a repeat count ({m,n}) may not be nested with another repeat"
            last = _Atom(repeat=True, bound=atom.bound or bound is not None)
            groups[-1].repeat |= last.repeat
            groups[-1].bound |= last.bound
            i = bound.end() if bound is not None else i + 1
            continue
        if char == "(":
            groups.append(_Atom())
            last = None
        elif char == ")" and len(groups) > 1:
            last = groups.pop()
            groups[-1].repeat |= last.repeat
            groups[-1].bound |= last.bound
        elif char == "|":
            last = None
        else:
            last = _Atom()  # one character, an escape or a bracket expression
        i = _bracket_end(pattern, i) if char == "[" else i + (2 if char == "\\" else 1)
    return None


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
        """Whether git ignores this path; ToolRefused when git cannot tell (fail closed)."""
        try:
            await git(self._root(), "check-ignore", "-q", "--", relative)  # a path, not a pathspec
        except GitError as exc:
            if exc.returncode == 1:
                return False  # git's answer: not ignored
            # Not a git repository, a path beyond a symlink, git missing…: an ignored file (local
            # settings, secrets) cannot be told from the others, so nothing is read.
            raise ToolRefused(f"refused: git cannot tell whether {relative} is ignored ({self.redact(str(exc))[:200]}); "
                              "files are read only where git can check that") from None
        return True

    async def _is_tracked(self, relative: str) -> bool:
        try:
            await git(self._root(), "ls-files", "--error-unmatch", "--", _literal(relative))
        except GitError as exc:
            if exc.returncode == 1:
                return False
            raise ToolRefused(f"refused: git cannot tell whether {relative} is tracked") from None
        return True

    async def _check_readable(self, path: Path, relative: str) -> None:
        """Refuse a file git ignores; through a symlink, judge the file it leads to, which git must track."""
        target = path.relative_to(self._root()).as_posix()
        if target == relative:
            if await self._is_ignored(relative):
                raise ToolRefused(f"refused: {relative} is ignored by git (often local configuration or secrets)")
            return
        # A symlink (the file, or a folder on its way): git would judge the link's name, not the file.
        if await self._is_ignored(target) or not await self._is_tracked(target):
            raise ToolRefused(f"refused: {relative} is a symlink to a file git ignores or does not track")

    # -- the tools -----------------------------------------------------------------------------

    async def read_file(self, args: dict[str, Any]) -> str:
        root = self._root()
        path, relative = confine(root, _str(args, "path"))
        if not path.is_file():
            raise ToolRefused(f"{relative} is not a file")
        await self._check_readable(path, relative)
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
        if regex and (problem := regex_problem(pattern)):
            raise ToolRefused(f"refused: {problem}; use a fixed string (regex=false) or a simpler pattern")
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
            if exc.returncode == 1 and "exit 1" in str(exc):  # no output on stderr: nothing matched
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
        out = await git(root, "log", *LOG_SAFE, f"-n{count}", "--date=short", "--format=%h %ad %an: %s", "--", *spec)
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
        sha = await self._commit_sha(commit)
        return await git(root, "show", *LOG_SAFE, "--stat", "--patch", "--format=fuller", sha, "--", *spec,
                         *_excludes())

    async def _commit_sha(self, commit: str) -> str:
        """The full sha of the commit `commit` names; ToolRefused for a blob or a tree.

        A bare object id may name any object: `git show <blob>` prints the file, whatever path it has
        (outside REPO_PATH, secret-named, deleted long ago), and ignores the pathspec."""
        try:
            out = await git(self._root(), "cat-file", "-t", commit)
        except GitError:
            raise ToolRefused(f"refused: {commit} is not a commit of this repository") from None
        if out.strip() not in ("commit", "tag"):
            raise ToolRefused(f"refused: {commit} is a {out.strip() or 'object'}, not a commit; only commits are shown")
        try:
            sha = (await git(self._root(), "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}")).strip()
        except GitError:
            raise ToolRefused(f"refused: {commit} is not a commit of this repository") from None
        if not re.fullmatch(r"[0-9a-f]{40,64}", sha):
            raise ToolRefused(f"refused: {commit} is not a commit of this repository")
        return sha

    async def git_blame(self, args: dict[str, Any]) -> str:
        root = self._root()
        path, relative = confine(root, _str(args, "path"))
        if not path.is_file():
            raise ToolRefused(f"{relative} is not a file")
        start = _int(args, "start_line", 1, 1, 10_000_000)
        end = _int(args, "end_line", start + 20, start, start + MAX_READ_LINES - 1)
        return await git(root, "blame", "--no-textconv", "--date=short", f"-L{start},{end}", "HEAD", "--", relative)

    async def similar_incidents(self, args: dict[str, Any]) -> str:
        if self.similar is None:
            return "no incident history available"
        return await self.similar()
