"""Who owns an error: projects, categories and code paths mapped to people.

The owners file (``OWNERS_FILE``) is TOML, one ``[[owner]]`` table per entry::

    [[owner]]
    name = "Alice"                 # required, shown on the card
    telegram = "@alice"            # optional; "@" is added when missing
    github = "alice"               # optional GitHub login
    projects = ["ai-admin-api"]    # optional: alert.project values (case-insensitive)
    categories = ["database"]      # optional: triage categories
    paths = ["src/billing/*"]      # optional: fnmatch globs over stack-frame file paths

    [[owner]]
    name = "On-call"
    telegram = "@oncall"
    default = true                 # catch-all when nothing more specific matches

An entry applies when EVERY selector it declares matches (an entry with projects and
categories needs both). Most specific wins:

    paths  >  projects + categories  >  projects  >  categories  >  default

and among entries of the same rank the first in the file wins. A path glob matches a frame
path or any of its trailing parts (``src/billing/*`` matches
``/srv/app/src/billing/invoice.py``); ``*`` also crosses ``/``. Library and runtime frames
(node_modules, site-packages, node:internal, the Python stdlib) are never used for owners.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from bot.models import Category, Owner
from bot.triage.rules import RulesError

__all__ = ["OwnerEntry", "OwnerMap"]

_ENTRY_KEYS = frozenset({"name", "telegram", "github", "projects", "categories", "paths", "default"})
_HANDLE_RE = re.compile(r"@?[A-Za-z0-9_]{1,64}")
_GITHUB_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})")
MAX_PATHS = 50
_MAX_STACK = 200_000
# Python: File "/app/x.py", line 12
_PY_FRAME_RE = re.compile(r'File "([^"\n]{1,400})", line \d')
# Anything else: a token like /app/x.js:10:5, C:\app\x.ts:3, mirrors.py:294 (tokens are
# split first, so the regex below only ever runs anchored on one short token).
_TOKEN_SPLIT_RE = re.compile(r"[\s()\[\]\"'<>,;]+")
_PATH_TOKEN_RE = re.compile(r"(?:file://)?((?:[A-Za-z]:)?[^:]{1,400}?\.(?:[cm]?[jt]sx?|py|rb|go|php|vue|svelte)):\d+")
_LIBRARY_RE = re.compile(
    r"(?:^|/)(?:node_modules|site-packages|dist-packages|\.venv|venv)/|^node:|^internal/"
    r"|^<|/lib/python\d|(?:^|/)python\d(?:\.\d+)?/"
)
_RANKS = {"paths": 3, "project+category": 2, "project": 1, "category": 0, "default": -1}


@dataclass(frozen=True)
class OwnerEntry:
    owner: Owner
    projects: frozenset[str] = frozenset()
    categories: frozenset[Category] = frozenset()
    paths: tuple[str, ...] = ()
    default: bool = False

    @property
    def rank(self) -> int:
        if self.paths:
            return _RANKS["paths"]
        if self.projects and self.categories:
            return _RANKS["project+category"]
        if self.projects:
            return _RANKS["project"]
        if self.categories:
            return _RANKS["category"]
        return _RANKS["default"]

    def applies(self, project: str | None, category: Category, paths: Sequence[str]) -> bool:
        if self.projects and (project or "").strip().lower() not in self.projects:
            return False
        if self.categories and category not in self.categories:
            return False
        return not self.paths or any(_glob_hits(g, p) for g in self.paths for p in paths)


class OwnerMap:
    """Owner lookup; see the module docstring for the file format and precedence."""

    def __init__(self, entries: Iterable[OwnerEntry] = (), source: str = "<owners>") -> None:
        self.entries: tuple[OwnerEntry, ...] = tuple(entries)
        self.source = source

    @classmethod
    def load(cls, path: Path) -> OwnerMap:
        source = str(path)
        try:
            data = tomllib.loads(Path(path).read_text("utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise RulesError(f"{source}: cannot read owners file: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise RulesError(f"{source}: invalid TOML: {exc}") from exc
        return cls.from_dict(data, source)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<owners>") -> OwnerMap:
        unknown = set(data) - {"owner"}
        if unknown:
            raise RulesError(f"{source}: unknown top-level key(s): {', '.join(sorted(unknown))}")
        raw = data.get("owner", [])
        if not isinstance(raw, list):
            raise RulesError(f"{source}: 'owner' must be an array of [[owner]] tables")
        return cls([_parse_entry(e, source, i) for i, e in enumerate(raw, 1)], source)

    def find(self, project: str | None, category: Category, paths: Sequence[str]) -> Owner | None:
        """The most specific owner for this project, category and stack-frame paths."""
        best: OwnerEntry | None = None
        for entry in self.entries:
            if (best is None or entry.rank > best.rank) and entry.applies(project, category, paths):
                best = entry
        return best.owner if best else None

    @staticmethod
    def paths_from_stacktrace(text: str) -> list[str]:
        """Application file paths seen in a stack trace, in order, without library frames."""
        text = text[:_MAX_STACK]
        found = [m.group(1) for m in _PY_FRAME_RE.finditer(text)]
        for token in _TOKEN_SPLIT_RE.split(text):
            if 3 < len(token) <= 500:
                m = _PATH_TOKEN_RE.match(token)
                if m:
                    found.append(m.group(1))
        out: dict[str, None] = {}
        for raw in found:
            path = raw.replace("\\", "/").strip()
            if path and not _LIBRARY_RE.search(path):
                out.setdefault(path, None)
            if len(out) >= MAX_PATHS:
                break
        return list(out)


def _glob_hits(glob: str, path: str) -> bool:
    """Glob against the whole path or any trailing part that starts at a '/'."""
    if fnmatchcase(path, glob):
        return True
    start = path.find("/")
    while start != -1:
        if fnmatchcase(path[start + 1 :], glob):
            return True
        start = path.find("/", start + 1)
    return False


def _parse_entry(raw: Any, source: str, index: int) -> OwnerEntry:
    where = f"{source}: owner #{index}"
    if not isinstance(raw, dict):
        raise RulesError(f"{where}: must be a table")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise RulesError(f"{where}: 'name' is required and must be a non-empty string")
    where = f"{where} ('{name.strip()}')"
    unknown = set(raw) - _ENTRY_KEYS
    if unknown:
        raise RulesError(f"{where}: unknown key(s): {', '.join(sorted(unknown))}")
    telegram = _optional_str(raw, "telegram", where)
    if telegram is not None:
        if not _HANDLE_RE.fullmatch(telegram):
            raise RulesError(f"{where}: telegram must look like '@handle' (got {telegram!r})")
        telegram = "@" + telegram.lstrip("@")
    github = _optional_str(raw, "github", where)
    if github is not None and not _GITHUB_RE.fullmatch(github):
        raise RulesError(f"{where}: github must be a GitHub login (got {github!r})")
    projects = frozenset(p.strip().lower() for p in _str_list(raw, "projects", where))
    categories: set[Category] = set()
    for value in _str_list(raw, "categories", where):
        try:
            categories.add(Category(value))
        except ValueError:
            raise RulesError(
                f"{where}: unknown category {value!r} (expected one of {', '.join(c.value for c in Category)})"
            ) from None
    paths = tuple(_normalise_glob(p) for p in _str_list(raw, "paths", where))
    default = raw.get("default", False)
    if not isinstance(default, bool):
        raise RulesError(f"{where}: 'default' must be true or false")
    if not (projects or categories or paths or default):
        raise RulesError(f"{where}: no projects, categories or paths: add one, or set default = true for a catch-all")
    owner = Owner(name=name.strip(), telegram=telegram, github=github)
    return OwnerEntry(owner, projects, frozenset(categories), paths, default)


def _normalise_glob(glob: str) -> str:
    glob = glob.replace("\\", "/")
    glob = glob.removeprefix("./").lstrip("/")
    return glob + "*" if glob.endswith("/") or not glob else glob


def _optional_str(raw: dict[str, Any], key: str, where: str) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise RulesError(f"{where}: '{key}' must be a non-empty string")
    return value.strip()


def _str_list(raw: dict[str, Any], key: str, where: str) -> list[str]:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise RulesError(f"{where}: '{key}' must be a list of non-empty strings")
    return [v.strip() for v in value]
