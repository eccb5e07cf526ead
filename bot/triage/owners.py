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

What an entry may hold is declared by `OwnerModel`; every problem of a file is reported at
once in an `OwnersError`, each naming the file, the entry and the key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, StrictBool, model_validator

from bot.config_files import ConfigFileError, NonEmptyStr, StrictModel, matching, parse_model, read_toml
from bot.models import Category, Owner

__all__ = ["OwnerEntry", "OwnerMap", "OwnerModel", "OwnersError"]

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


class OwnersError(ConfigFileError):
    """The owners file is unreadable or invalid; ``problems`` says where and why, one line each."""

    what = "the owners file"


def _glob(glob: str) -> str:
    glob = glob.replace("\\", "/").removeprefix("./").lstrip("/")
    return glob + "*" if glob.endswith("/") or not glob else glob


class OwnerModel(StrictModel):
    """One [[owner]] table (format: the module docstring)."""

    name: NonEmptyStr
    telegram: Annotated[NonEmptyStr, matching(_HANDLE_RE, "must look like '@handle'"),
                        AfterValidator(lambda handle: "@" + handle.lstrip("@"))] | None = None
    github: Annotated[NonEmptyStr, matching(_GITHUB_RE, "must be a GitHub login")] | None = None
    projects: tuple[Annotated[NonEmptyStr, AfterValidator(str.lower)], ...] = ()
    categories: tuple[Category, ...] = ()
    paths: tuple[Annotated[NonEmptyStr, AfterValidator(_glob)], ...] = ()
    default: StrictBool = False

    @model_validator(mode="after")
    def _selects_something(self) -> OwnerModel:
        if not (self.projects or self.categories or self.paths or self.default):
            raise ValueError("no projects, categories or paths: add one, or set default = true for a catch-all")
        return self

    def to_entry(self) -> OwnerEntry:
        owner = Owner(name=self.name, telegram=self.telegram, github=self.github)
        return OwnerEntry(owner, frozenset(self.projects), frozenset(self.categories), self.paths, self.default)


class OwnersFile(StrictModel):
    """The whole owners file."""

    owner: list[OwnerModel] = []


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
        return cls.from_dict(read_toml(path, OwnersError, "owners file"), str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<owners>") -> OwnerMap:
        return cls([e.to_entry() for e in parse_model(OwnersFile, data, source, OwnersError).owner], source)

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
