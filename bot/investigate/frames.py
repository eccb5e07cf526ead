"""Crashing frames: read from a stack's text, and mapped to files of the application's repository.

A frame's path is whatever the runtime printed: an absolute path on the server
(`/srv/app/src/api/orders.py`), a bundler's (`webpack://app/./src/cart.ts`), a Sentry SDK's
(`app:///dist/server.js`), or a library's (`…/site-packages/requests/api.py`). Library frames are
skipped; the others are matched to a tracked file of REPO_PATH by the longest common path
suffix. A match is used only when, symlinks resolved, it is a regular file inside REPO_PATH.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

MAX_FRAMES = 3  # crashing frames a report shows
# Library and runtime code: never "the app's code", even when REPO_PATH vendors a file of that name.
LIBRARY_PATH = re.compile(
    r"(?:^|/)(?:node_modules|site-packages|dist-packages|\.venv|venv|vendor|__pypackages__)/"
    r"|^node:|^internal/|^<|/lib/python\d|(?:^|/)python\d(?:\.\d+)?/|^/usr/lib/|^/usr/local/lib/"
    r"|/usr/local/go/|^runtime/"
)
_SCHEMES = re.compile(r"^(?:webpack-internal:///|webpack:///?|app:///?|file:///?)")
_PY_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+)(?:, in (?P<fn>.+?))?\s*$')
_NODE_FRAME = re.compile(
    r"^\s*at (?:(?P<fn>.+?) \()?(?P<file>(?:[a-z][a-z0-9+.-]*://)?[^()\s]+?):(?P<line>\d+)(?::\d+)?\)?\s*$"
)


@dataclass(frozen=True)
class StackFrame:
    """A frame as the stack printed it."""

    path: str
    line: int | None
    function: str | None = None


@dataclass(frozen=True)
class MappedFrame:
    """A frame of the application's code, as a file of REPO_PATH (relative, POSIX)."""

    frame: StackFrame
    file: str


def parse_stack(text: str) -> list[StackFrame]:
    """The frames of a Python traceback or a Node stack, innermost (crashing) first."""
    python: list[StackFrame] = []
    node: list[StackFrame] = []
    for raw in text.splitlines():
        if (m := _PY_FRAME.match(raw)) is not None:
            python.append(StackFrame(m["file"], int(m["line"]), m["fn"]))
        elif (m := _NODE_FRAME.match(raw)) is not None:
            node.append(StackFrame(m["file"], int(m["line"]), m["fn"]))
    # Python prints the crashing frame last, Node first.
    return list(reversed(python)) + node


def frame_parts(path: str) -> tuple[str, ...] | None:
    """A frame's path as POSIX parts without scheme or bundler prefix; None for a library's or a
    runtime's frame, and for a path that climbs (`..`): it could only name a file outside the app."""
    text = path.strip().replace("\\", "/")
    text = re.split(r"[?#]", text, maxsplit=1)[0]
    if LIBRARY_PATH.search(text):
        return None
    bare = _SCHEMES.sub("", text)
    if bare != text and text.startswith("webpack://") and not text.startswith("webpack:///"):
        bare = bare.split("/", 1)[1] if "/" in bare else ""  # webpack://<namespace>/./src/x.ts
    if re.match(r"^[A-Za-z]:/", bare):  # C:/app/src/x.py
        bare = bare[2:]
    parts = tuple(p for p in PurePosixPath(bare).parts if p not in ("/", ".", ""))
    if not parts or ".." in parts or LIBRARY_PATH.search("/".join(parts)):
        return None
    return parts


class RepoFiles:
    """The files of REPO_PATH (tracked ones when it is a git work tree), indexed by file name."""

    def __init__(self, root: Path, files: Iterable[str]) -> None:
        self.root = root.resolve()
        self._by_name: dict[str, list[tuple[str, ...]]] = {}
        for name in files:
            parts = tuple(PurePosixPath(name).parts)
            if parts:
                self._by_name.setdefault(parts[-1], []).append(parts)

    def map(self, frame: StackFrame) -> str | None:
        """The repository file a frame stands for (relative POSIX path), or None.

        The candidate sharing the longest path suffix with the frame wins; a tie is no answer (two
        `index.js` files and a frame that says only `index.js`: guessing would show the wrong code).
        """
        parts = frame_parts(frame.path)
        if parts is None:
            return None
        best: list[tuple[str, ...]] = []
        best_len = 0
        for candidate in self._by_name.get(parts[-1], ()):
            common = _common_suffix(candidate, parts)
            if common > best_len:
                best, best_len = [candidate], common
            elif common == best_len:
                best.append(candidate)
        if len(best) != 1:
            return None
        relative = "/".join(best[0])
        return relative if safe_file(self.root, relative) is not None else None


def _common_suffix(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    n = 0
    while n < len(a) and n < len(b) and a[-1 - n] == b[-1 - n]:
        n += 1
    return n


def safe_file(root: Path, relative: str) -> Path | None:
    """`root/relative` when, after resolving symlinks, it is a regular file inside `root`; else None."""
    if not relative or os.path.isabs(relative) or ".." in PurePosixPath(relative).parts:
        return None
    base = root.resolve()
    try:
        target = (base / relative).resolve(strict=True)
    except (OSError, RuntimeError):  # missing, or a symlink loop
        return None
    if not target.is_relative_to(base) or not target.is_file():
        return None
    return target


def map_frames(frames: Iterable[StackFrame], repo: RepoFiles, limit: int = MAX_FRAMES) -> list[MappedFrame]:
    """The first `limit` frames that are the application's own files, each file:line once."""
    mapped: list[MappedFrame] = []
    seen: set[tuple[str, int | None]] = set()
    for frame in frames:
        file = repo.map(frame)
        if file is None or (file, frame.line) in seen:
            continue
        seen.add((file, frame.line))
        mapped.append(MappedFrame(frame, file))
        if len(mapped) >= limit:
            break
    return mapped


def snippet(path: Path, line: int, around: int = 3, width: int = 160) -> list[tuple[int, str]]:
    """The lines around `line` (1-based) as (number, text); empty when the line is past the end."""
    if path.stat().st_size > 5_000_000:
        return []
    with path.open(encoding="utf-8", errors="replace") as handle:
        lines = handle.read().splitlines()
    if not 1 <= line <= len(lines):
        return []
    first, last = max(1, line - around), min(len(lines), line + around)
    return [(n, lines[n - 1].rstrip()[:width]) for n in range(first, last + 1)]
