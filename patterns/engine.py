"""Allow-list engine: load, validate and match safe-fix patterns, and render their argv.

Why this exists: the bot may only ever propose a command that an operator wrote down in
advance, as an argv list (never a shell string), and a value lifted out of an error message
(a package name, a port) may only reach that argv after it fully matches a validation regex
written next to it. Everything that can be checked is checked when the file is loaded, and
every problem is reported at once with where it is (file, pattern id, key), so a bad
allow-list fails loudly at start-up instead of misbehaving at 3 a.m.

The file format is documented in the header of ``patterns/default.toml``.
Nothing in this module runs a process: see ``patterns.runner`` for that.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
import shlex
import socket
import tomllib
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from bot.models import Alert, Category

# The triage rules' catastrophic-backtracking check, reused so both files refuse the same shapes.
from bot.triage.rules import _NESTED_QUANTIFIER_RE as NESTED_QUANTIFIER_RE

__all__ = [
    "ACTIONABLE_CATEGORIES",
    "GRAMMARS",
    "Pattern",
    "PatternError",
    "PatternMatch",
    "PatternSet",
    "Placeholder",
    "default_patterns_path",
    "host_key",
    "host_keys",
    "load_patterns",
    "local_host_names",
    "npm_package_refusal",
    "pypi_distribution_refusal",
    "this_host",
]

#: Only these categories may carry an action: the others (code, configuration, database,
#: security) need a human fix, and "restart it" or "install it" would only hide them.
ACTIONABLE_CATEGORIES: frozenset[Category] = frozenset(
    {Category.INFRASTRUCTURE, Category.TRANSIENT, Category.RESOURCE, Category.DEPENDENCY}
)

TEXT_FIELDS: tuple[str, ...] = ("title", "message", "stacktrace")
ALERT_FIELDS: tuple[str, ...] = ("project", "environment", "server", "release", "level")
MAX_STEPS = 5
MAX_TIMEOUT = 3600.0
#: Regexes look at most at this many characters of an alert (bounds the matching cost).
MAX_TEXT = 64_000
#: A value taken from error text is never longer than this.
MAX_VALUE_LEN = 214
REGEX_FLAGS = re.MULTILINE

# argv[0] that would turn an argv back into a shell string ("sh -c ..."), refused at load.
_SHELLS = frozenset(
    {"sh", "bash", "dash", "zsh", "ksh", "mksh", "csh", "tcsh", "fish", "ash", "busybox",
     "su", "eval", "exec", "cmd", "cmd.exe", "powershell", "pwsh", "xargs"}
)
# Commands that run another command given as their arguments: a shell hidden behind them
# is refused too.
_WRAPPERS = frozenset(
    {"sudo", "doas", "env", "nice", "nohup", "ionice", "setsid", "stdbuf", "timeout", "chrt",
     "runuser", "unbuffer", "time", "flock"}
)
_ID_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_TEMPLATE_RE = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}|[{}]")
# Never allowed in a value taken from error text, whatever its validation regex says
# (defence in depth: the validation regex is the real allow-list).
_UNSAFE_CHARS = frozenset(";&|$`<>(){}[]*?!'\"\\,=%^#:+~")
_FORBIDDEN_ENV = re.compile(r"(?:LD_|DYLD_)\w*|NODE_OPTIONS|PYTHONSTARTUP|BASH_ENV|ENV")

_TOP_KEYS = ("settings", "patterns")
_PATTERN_KEYS = (
    "description", "category", "enabled", "match", "exclude", "projects", "environments",
    "servers", "categories", "precheck", "action", "verify", "placeholders", "cwd", "env", "timeout",
    "precheck_timeout", "verify_timeout", "verify_delay", "approvals_required", "requires_approval",
    "cooldown", "max_runs", "window", "recurrence_window",
)
_MATCH_KEYS = ("any", "all", "in")
_PLACEHOLDER_KEYS = ("from", "alert", "setting", "default", "validate", "grammar", "map")
_CONDITION_KEYS = ("projects", "environments", "servers")


class PatternError(Exception):
    """The pattern file is invalid; ``problems`` lists every problem with where it is."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems: list[str] = list(problems)
        lines = "\n".join(f"- {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) in the pattern file:\n{lines}")


# -- placeholder grammars: a registry's own name rules, written once in code ------------------
#
# A `validate` regex says what the operator expects; a grammar says what the package manager
# will actually treat as a registry name. `npm install evil.tgz` installs a file from the
# working directory (and runs its install scripts); `pip install x.zip` does the same. So a
# placeholder that names a package says `grammar = "npm-package"` or "pypi-distribution",
# and a value must pass both.

NPM_NAME_MAX = 214
# @scope/name or name: lowercase, url-safe, no leading '.', '_' or '-' (validate-npm-package-name,
# minus the characters npm no longer accepts in new names and minus anything a shell or npm's
# spec parser reads specially: '@' after the scope is a version, ':' a protocol, '/' a path).
_NPM_NAME_RE = re.compile(r"(?:@(?P<scope>[a-z0-9][a-z0-9._-]*)/)?(?P<name>[a-z0-9][a-z0-9._-]*)")
# npm-package-arg reads an unscoped spec ending like this as a local tarball.
_NPM_TARBALL_SUFFIXES = (".tgz", ".tar.gz", ".tar")
_NPM_RESERVED = frozenset({"node_modules", "favicon.ico"})
#: Node resolves these to its built-in module before node_modules, so no npm package can fix a
#: "Cannot find module" for them (require('module').builtinModules of Node 20, top level).
NODE_CORE_MODULES = frozenset(
    {"assert", "async_hooks", "buffer", "child_process", "cluster", "console", "constants", "crypto", "dgram",
     "diagnostics_channel", "dns", "domain", "events", "fs", "http", "http2", "https", "inspector", "module",
     "net", "os", "path", "perf_hooks", "process", "punycode", "querystring", "readline", "repl", "stream",
     "string_decoder", "sys", "timers", "tls", "trace_events", "tty", "url", "util", "v8", "vm", "wasi",
     "worker_threads", "zlib"}
)
# PEP 508 / PEP 503 project name: letters, digits, '.', '_', '-', starting and ending alphanumeric.
_PYPI_NAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")
# pip installs a requirement ending like this from a file in its working directory.
_PIP_ARCHIVE_SUFFIXES = (".zip", ".whl", ".tar", ".tgz", ".tar.gz", ".tbz", ".tar.bz2", ".txz", ".tar.xz",
                         ".tlz", ".tar.lz", ".tar.lzma")


def npm_package_refusal(value: str) -> str | None:
    """Why ``value`` is not a bare npm registry package name, or None when it is one."""
    if not value or len(value) > NPM_NAME_MAX:
        return f"is not 1 to {NPM_NAME_MAX} characters long (npm's limit)"
    if _NPM_NAME_RE.fullmatch(value) is None:
        return ("is not an npm package name (lowercase letters, digits, '.', '_', '-', optionally @scope/name; "
                "no path, URL, git, alias or version spec)")
    if value.endswith(_NPM_TARBALL_SUFFIXES):
        return "names a tarball file, which npm would install from the working directory"
    if value in _NPM_RESERVED:
        return "is a name npm reserves"
    if value in NODE_CORE_MODULES:
        return "is a Node.js core module: Node loads its own before node_modules, npm cannot provide it"
    return None


def pypi_distribution_refusal(value: str) -> str | None:
    """Why ``value`` is not a bare PyPI project name, or None when it is one."""
    if not value or len(value) > MAX_VALUE_LEN:
        return f"is not 1 to {MAX_VALUE_LEN} characters long"
    if _PYPI_NAME_RE.fullmatch(value) is None:
        return ("is not a PyPI project name (PEP 508: letters, digits, '.', '_', '-', starting and ending with "
                "a letter or digit; no version, extra, URL, path or option)")
    if value.lower().endswith(_PIP_ARCHIVE_SUFFIXES):
        return "names an archive file, which pip would install from the working directory"
    return None


#: The named grammars a placeholder may reference with ``grammar = "..."``.
GRAMMARS: Mapping[str, Callable[[str], str | None]] = {
    "npm-package": npm_package_refusal,
    "pypi-distribution": pypi_distribution_refusal,
}


# -- where a fix runs ----------------------------------------------------------------------------
#
# Every command runs on the machine the bot runs on. An error that names another server
# ("web-03") is not fixed by restarting a unit here, so a pattern applies only to errors from
# this host (or that name no server) unless it lists the `servers` it is meant for.


def host_key(name: str) -> str:
    """A host name as compared: case-insensitive, without a trailing dot or spaces."""
    return name.strip().rstrip(".").lower()


def this_host() -> str:
    """The name of the machine the commands run on, as shown on cards."""
    return socket.gethostname() or "localhost"


@functools.cache
def local_host_names() -> tuple[str, ...]:
    """This machine's names: its host name, the short form, the FQDN, localhost, 127.0.0.1."""
    name = socket.gethostname()
    try:
        fqdn = socket.getfqdn()
    except OSError:  # no resolver: the plain host name still counts
        fqdn = name
    names = [name, name.split(".", 1)[0], fqdn, "localhost", "127.0.0.1"]
    return tuple(dict.fromkeys(host_key(n) for n in names if n and host_key(n)))


@dataclass(frozen=True, eq=False)
class Placeholder:
    """Where a ``{name}`` in an argv gets its value, and what that value must look like.

    Sources are tried in this order: ``group`` (a named group of a match regex that
    matched), ``alert_field`` (project, environment, server, ...), ``setting``, ``default``.
    The first that yields a value wins; if that value is then refused the whole match is
    refused (no silent fall-back to another source). A text value that is a key of
    ``mapping`` is replaced by the mapped value (written by the operator, e.g.
    psycopg2 -> psycopg2-binary). The final value must fully match ``validate`` and, when
    ``grammar`` names one of :data:`GRAMMARS`, pass that package registry's name rules too.
    """

    name: str
    group: str | None = None
    alert_field: str | None = None
    setting: str | None = None
    default: str | None = None
    validate: re.Pattern[str] | None = None
    mapping: Mapping[str, str] = field(default_factory=dict)
    grammar: str | None = None

    @property
    def from_text(self) -> bool:
        """True when the value may come from the alert, i.e. from someone else's text."""
        return self.group is not None or self.alert_field is not None

    def resolve(
        self, groups: Mapping[str, str], alert: Alert, settings: Mapping[str, str]
    ) -> tuple[str | None, str | None]:
        """Return ``(value, None)`` or ``(None, reason it was refused)``."""
        raw: str | None = None
        text_sourced = False
        if self.group is not None and groups.get(self.group) is not None:
            raw, text_sourced = groups[self.group], True
        elif self.alert_field is not None and getattr(alert, self.alert_field, None):
            raw, text_sourced = str(getattr(alert, self.alert_field)), True
        elif self.setting is not None and self.setting in settings:
            raw = settings[self.setting]
        elif self.default is not None:
            raw = self.default
        if raw is None:
            return None, f"{{{self.name}}} has no value (no capture, alert field, setting or default)"
        value = raw
        if text_sourced:
            if raw in self.mapping:
                value = self.mapping[raw]
            else:
                unsafe = unsafe_reason(raw)
                if unsafe:
                    return None, f"{{{self.name}}} refused: {raw!r} {unsafe}"
        if self.validate is not None and not self.validate.fullmatch(value):
            return None, f"{{{self.name}}} refused: {value!r} does not match {self.validate.pattern!r}"
        if self.grammar is not None:
            wrong = GRAMMARS[self.grammar](value)
            if wrong:
                return None, f"{{{self.name}}} refused: {value!r} {wrong}"
        return value, None


@dataclass(frozen=True, eq=False)
class Pattern:
    """One allow-listed fix: when it applies, and exactly what it runs."""

    id: str
    description: str
    category: Category
    match_any: tuple[re.Pattern[str], ...] = ()
    match_all: tuple[re.Pattern[str], ...] = ()
    exclude: tuple[re.Pattern[str], ...] = ()
    fields: tuple[str, ...] = TEXT_FIELDS
    steps: tuple[tuple[str, ...], ...] = ()  # argv templates, run in order
    verify: tuple[str, ...] | None = None
    precheck: tuple[str, ...] | None = None  # runs first; a non-zero exit means the steps do not run
    placeholders: Mapping[str, Placeholder] = field(default_factory=dict)
    cwd: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 120.0
    precheck_timeout: float = 60.0
    verify_timeout: float = 60.0
    verify_delay: float = 0.0
    projects: frozenset[str] | None = None
    environments: frozenset[str] | None = None
    servers: frozenset[str] | None = None
    categories: frozenset[Category] | None = None
    approvals_required: int = 1
    requires_approval: bool = True
    cooldown: float = 300.0
    max_runs: int | None = 3
    window: float | None = 3600.0
    recurrence_window: float | None = 600.0
    enabled: bool = True
    source: str = ""

    @property
    def has_action(self) -> bool:
        return bool(self.steps)

    def text_of(self, alert: Alert) -> str:
        """The part of the alert this pattern's regexes look at, bounded in size."""
        parts = (str(getattr(alert, f, "") or "") for f in self.fields)
        return "\n".join(p for p in parts if p)[:MAX_TEXT]

    def conditions_hold(self, alert: Alert, category: Category | None) -> bool:
        """Project/environment/server lists are exact allow-lists; an unknown value fails.

        ``categories`` only applies when the caller knows the triage category.
        """
        for attr, allowed in (
            ("project", self.projects),
            ("environment", self.environments),
            ("server", self.servers),
        ):
            if allowed is not None and getattr(alert, attr) not in allowed:
                return False
        return not (
            self.categories is not None and category is not None and category not in self.categories
        )

    def host_refusal(self, server: str | None, hosts: Collection[str]) -> str | None:
        """Why this pattern's commands, which run on this machine, do not fit an error from
        ``server``; None when they do.

        A pattern that lists ``servers`` has chosen its servers itself (checked with the other
        conditions). Otherwise the error must come from one of ``hosts`` (host keys, see
        :func:`host_key`) or name no server at all.
        """
        if self.servers is not None or not server or host_key(server) in hosts:
            return None
        shown = server if len(server) <= 80 else server[:79] + "…"  # alert text: keep the line short
        return f"no local fix: the error came from {shown}"

    def rate_limit_reason(self, run_times: Sequence[float], now: float) -> str | None:
        """Why this pattern may not run now given its past run times (epoch s), or None.

        The integrator keeps the run history; this only applies ``cooldown`` and
        ``max_runs`` per ``window`` to it.
        """
        past = sorted(t for t in run_times if t <= now)
        if past and self.cooldown and now - past[-1] < self.cooldown:
            wait = int(self.cooldown - (now - past[-1])) + 1
            return f"{self.id} ran {int(now - past[-1])} s ago (cooldown {int(self.cooldown)} s, {wait} s left)"
        if self.max_runs is not None and self.window:
            recent = [t for t in past if now - t < self.window]
            if len(recent) >= self.max_runs:
                return f"{self.id} already ran {len(recent)} time(s) in the last {int(self.window)} s (max {self.max_runs})"
        return None


@dataclass(frozen=True, eq=False)
class PatternMatch:
    """A pattern that applies to an alert, with its argv rendered.

    ``refused`` is set (and ``argv`` empty) when the pattern's regexes matched but a
    placeholder value was refused, or the error came from another server (``elsewhere``):
    useful to explain, never runnable.
    """

    pattern: Pattern
    argv: list[list[str]]
    verify: list[str] | None
    values: dict[str, str]
    cwd: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    refused: str | None = None
    evidence: str = ""  # the text the first matching regex matched
    precheck: list[str] | None = None
    #: set (with ``refused``) when the fix would apply but the error came from another server
    elsewhere: str | None = None

    @property
    def runnable(self) -> bool:
        return self.refused is None and bool(self.argv)

    def command_text(self) -> str:
        """The steps as one line for humans (display only, never executed)."""
        return " then ".join(f"`{shlex.join(a)}`" for a in self.argv)

    def summary(self) -> str:
        """E.g. "restart_redis — `systemctl restart redis-server` — 1 approval"."""
        if not self.runnable:
            return f"{self.pattern.id} — refused: {self.refused or 'no action'}"
        p = self.pattern
        if not p.requires_approval:
            approvals = "no approval needed"
        else:
            n = p.approvals_required
            approvals = f"{n} approval{'s' if n != 1 else ''}"
        checked = " — only if its precheck passes" if self.precheck else ""
        return f"{p.id} — {self.command_text()}{checked} — {approvals}"


def unsafe_reason(value: str) -> str | None:
    """Why a value taken from error text can never be an argument, whatever the regexes say."""
    if not value:
        return "is empty"
    if len(value) > MAX_VALUE_LEN:
        return f"is longer than {MAX_VALUE_LEN} characters"
    if value[0] in "-/.":
        return "starts with '-', '/' or '.' (an option or a path)"
    if ".." in value:
        return "contains '..'"
    for ch in value:
        if ch.isspace() or not ch.isprintable():
            return "contains whitespace or a control/invisible character"
        if ch in _UNSAFE_CHARS:
            return f"contains {ch!r}"
    return None


def _template_names(template: str) -> list[str] | None:
    """Names of the ``{placeholders}`` in template; None when a brace is unbalanced."""
    names: list[str] = []
    for m in _TEMPLATE_RE.finditer(template):
        if m.group(1):
            names.append(m.group(1))
        elif m.group(0) not in ("{{", "}}"):
            return None
    return names


def render(template: str, values: Mapping[str, str]) -> str:
    """Substitute ``{name}`` in one pass: a value is never re-read as a template."""

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        return values[name] if name else m.group(0)[0]

    return _TEMPLATE_RE.sub(sub, template)


def _shell_reason(argv: Sequence[str]) -> str | None:
    head = os.path.basename(argv[0])
    if head in _SHELLS:
        return f"runs a shell ({argv[0]!r}): give the command itself as the argv"
    if head in _WRAPPERS:
        for arg in argv[1:]:
            if os.path.basename(arg) in _SHELLS:
                return f"runs a shell ({arg!r}) through {argv[0]!r}: give the command itself as the argv"
    return None


class PatternSet:
    """The loaded allow-list. Immutable; build it with :func:`load_patterns`."""

    def __init__(self, patterns: Sequence[Pattern], settings: Mapping[str, str], source: str,
                 hosts: Collection[str] | None = None) -> None:
        self._patterns = tuple(patterns)
        self._by_id = {p.id: p for p in self._patterns}
        self.settings: dict[str, str] = dict(settings)
        self.source = source
        #: errors from these hosts (or naming none) get fixes; default: this machine's names
        self.hosts: frozenset[str] = host_keys(hosts)

    @staticmethod
    def check_file(path: Path | None = None, settings: Mapping[str, str] | None = None) -> list[str]:
        """Every problem in the file (with where it is), [] when it is valid."""
        try:
            load_patterns(path, settings=settings)
        except PatternError as exc:
            return exc.problems
        return []

    @property
    def patterns(self) -> tuple[Pattern, ...]:
        return self._patterns

    def __iter__(self) -> Iterator[Pattern]:
        return iter(self._patterns)

    def __len__(self) -> int:
        return len(self._patterns)

    def get(self, pattern_id: str) -> Pattern | None:
        return self._by_id.get(pattern_id)

    def match(self, alert: Alert, category: Category | str | None = None, *,
              hosts: Collection[str] | None = None) -> PatternMatch | None:
        """The first pattern (file order) that applies and whose placeholders all validate.

        Returns only runnable matches: a pattern whose placeholder is refused, or that does
        not fit the server the error came from (``hosts``, default :attr:`hosts`), is skipped
        (use :meth:`evaluate` to see why).
        """
        for candidate in self._candidates(alert, category, hosts):
            if candidate.runnable:
                return candidate
        return None

    def evaluate(self, alert: Alert, category: Category | str | None = None, *,
                 hosts: Collection[str] | None = None) -> PatternMatch | None:
        """Like :meth:`match`, but when nothing runnable applies, return a refused match
        (``refused`` set, ``argv`` empty) so a human can see why. Never run it.

        A fix refused only because the error came from another server (``elsewhere``) is
        preferred over other refusals: "no local fix" is what the card should say then.
        """
        first_refused: PatternMatch | None = None
        for candidate in self._candidates(alert, category, hosts):
            if candidate.runnable:
                return candidate
            if first_refused is None or (candidate.elsewhere and not first_refused.elsewhere):
                first_refused = candidate
        return first_refused

    def _candidates(self, alert: Alert, category: Category | str | None,
                    hosts: Collection[str] | None) -> Iterator[PatternMatch]:
        cat = Category(category) if category is not None else None
        keys = self.hosts if hosts is None else host_keys(hosts)
        for pattern in self._patterns:
            if not pattern.enabled or not pattern.has_action:
                continue
            found = self._try(pattern, alert, cat, keys)
            if found is not None:
                yield found

    def _try(self, pattern: Pattern, alert: Alert, category: Category | None,
             hosts: frozenset[str]) -> PatternMatch | None:
        if not pattern.conditions_hold(alert, category):
            return None
        text = pattern.text_of(alert)
        if not text:
            return None
        hits: list[re.Match[str]] = []
        if pattern.match_any:
            hits = [m for rx in pattern.match_any if (m := rx.search(text))]
            if not hits:
                return None
        for rx in pattern.match_all:
            m = rx.search(text)
            if m is None:
                return None
            hits.append(m)
        if not hits or any(rx.search(text) for rx in pattern.exclude):
            return None
        groups: dict[str, str] = {}
        for m in hits:
            for name, value in m.groupdict().items():
                if value is not None and name not in groups:
                    groups[name] = value
        evidence = hits[0].group(0)[:300]

        def refused(reason: str) -> PatternMatch:
            return PatternMatch(pattern, [], None, {}, refused=reason, evidence=evidence)

        values: dict[str, str] = {}
        for name, ph in pattern.placeholders.items():
            value, reason = ph.resolve(groups, alert, self.settings)
            if value is None:
                return refused(reason or f"{{{name}}} refused")
            values[name] = value
        lookup = {**self.settings, **values}
        argv = [[render(a, lookup) for a in step] for step in pattern.steps]
        verify = [render(a, lookup) for a in pattern.verify] if pattern.verify else None
        precheck = [render(a, lookup) for a in pattern.precheck] if pattern.precheck else None
        for cmd in [*argv, *([verify] if verify else []), *([precheck] if precheck else [])]:
            shell = _shell_reason(cmd)
            if shell:
                return refused(shell)
        # Checked last, so "no local fix" is only said of a fix that would otherwise be proposed.
        elsewhere = pattern.host_refusal(alert.server, hosts)
        if elsewhere:
            return PatternMatch(pattern, [], None, {}, refused=elsewhere, evidence=evidence,
                                elsewhere=alert.server)
        used = {n for t in _all_templates(pattern) for n in (_template_names(t) or [])}
        return PatternMatch(
            pattern=pattern,
            argv=argv,
            verify=verify,
            values={k: v for k, v in lookup.items() if k in used or k in values},
            cwd=render(pattern.cwd, lookup) if pattern.cwd else None,
            env={k: render(v, lookup) for k, v in pattern.env.items()},
            evidence=evidence,
            precheck=precheck,
        )


def host_keys(hosts: Collection[str] | None) -> frozenset[str]:
    """Host names as compared (see :func:`host_key`); None: this machine's names."""
    names = local_host_names() if hosts is None else hosts
    return frozenset(k for k in (host_key(h) for h in names) if k)


def _all_templates(pattern: Pattern) -> Iterator[str]:
    for step in pattern.steps:
        yield from step
    if pattern.verify:
        yield from pattern.verify
    if pattern.precheck:
        yield from pattern.precheck
    if pattern.cwd:
        yield pattern.cwd
    yield from pattern.env.values()


def default_patterns_path() -> Path:
    """The packaged default allow-list (``patterns/default.toml``)."""
    return Path(str(resources.files("patterns").joinpath("default.toml")))


def load_patterns(path: Path | None = None, *, settings: Mapping[str, str] | None = None,
                  hosts: Collection[str] | None = None) -> PatternSet:
    """Load and validate a pattern file (None: the packaged default).

    ``settings`` overrides/extends the file's ``[settings]`` (e.g. the app directory or
    the interpreter path from the bot's own configuration). ``hosts`` are the servers whose
    errors may be fixed here (``FIX_HOSTS``; default: this machine's names).
    Raises :class:`PatternError` listing every problem with where it is.
    """
    source_path = default_patterns_path() if path is None else Path(path)
    source = str(source_path)
    try:
        text = source_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PatternError([f"{source}: cannot read: {exc}"]) from None
    loader = _Loader(source)
    patterns, merged = loader.load(text, settings or {})
    if loader.problems:
        raise PatternError(loader.problems)
    return PatternSet(patterns, merged, source, hosts)


class _Loader:
    """Turns parsed TOML into Patterns, collecting every problem instead of stopping."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []

    def err(self, where: str, message: str) -> None:
        self.problems.append(f"{self.source}: {where}: {message}")

    def unknown_keys(self, where: str, table: Mapping[str, Any], known: Sequence[str]) -> None:
        for key in table:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(known)})"
                self.err(f"{where}.{key}" if where else key, f"unknown key{hint}")

    # -- top level -------------------------------------------------------------------------

    def load(self, text: str, overrides: Mapping[str, str]) -> tuple[list[Pattern], dict[str, str]]:
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            self.problems.append(f"{self.source}: invalid TOML: {exc}")
            return [], {}
        self.unknown_keys("", doc, _TOP_KEYS)
        settings = self.settings(doc.get("settings", {}), overrides)
        raw_patterns = doc.get("patterns", {})
        if not isinstance(raw_patterns, dict):
            self.err("patterns", "must be a table of [patterns.<id>] tables")
            return [], settings
        patterns: list[Pattern] = []
        for pid, spec in raw_patterns.items():
            pattern = self.pattern(pid, spec, settings)
            if pattern is not None:
                patterns.append(pattern)
        return patterns, settings

    def settings(self, raw: Any, overrides: Mapping[str, str]) -> dict[str, str]:
        out: dict[str, str] = {}
        if not isinstance(raw, dict):
            self.err("settings", "must be a table of name = \"value\"")
            return out
        for where, table in (("settings", raw), ("settings (overrides)", dict(overrides))):
            for key, value in table.items():
                w = f"{where}.{key}"
                if not _NAME_RE.fullmatch(key):
                    self.err(w, "a setting name must be letters, digits and '_'")
                elif isinstance(value, bool) or not isinstance(value, str | int | float):
                    self.err(w, "must be a string (or a number)")
                elif "\n" in str(value) or "\x00" in str(value):
                    self.err(w, "must not contain a newline or NUL")
                else:
                    out[key] = str(value)
        return out

    # -- one pattern -------------------------------------------------------------------------

    def pattern(self, pid: str, spec: Any, settings: Mapping[str, str]) -> Pattern | None:
        where = f"patterns.{pid}"
        n_before = len(self.problems)
        if not _ID_RE.fullmatch(pid):
            self.err(where, "a pattern id must be lowercase letters, digits and '_', starting with a letter")
        if not isinstance(spec, dict):
            self.err(where, "must be a table")
            return None
        self.unknown_keys(where, spec, _PATTERN_KEYS)

        description = spec.get("description")
        if not isinstance(description, str) or not description.strip():
            self.err(f"{where}.description", "required: one line saying what is wrong and what the fix does")
            description = ""
        category = self.category(f"{where}.category", spec.get("category"), required=True)
        enabled = self.boolean(f"{where}.enabled", spec.get("enabled"), True)

        match_any, match_all, fields = self.match(f"{where}.match", spec.get("match"))
        exclude = self.regex_list(f"{where}.exclude", spec.get("exclude", []))
        conditions = {k: self.str_set(f"{where}.{k}", spec.get(k)) for k in _CONDITION_KEYS}
        categories = self.categories(f"{where}.categories", spec.get("categories"))

        steps: list[tuple[str, ...]] = []
        if "action" in spec:
            steps = self.argv_steps(f"{where}.action", spec["action"], allow_steps=True)
            if category is not None and category not in ACTIONABLE_CATEGORIES:
                allowed = ", ".join(sorted(c.value for c in ACTIONABLE_CATEGORIES))
                self.err(
                    f"{where}.action",
                    f"pattern '{pid}' has category '{category.value}', which may not carry an action "
                    f"(only {allowed} may): such errors need a human fix, not an automatic one",
                )
        verify = self.single_argv(where, spec, "verify", "a verify command needs an action to verify")
        precheck = self.single_argv(where, spec, "precheck", "a precheck needs an action to guard")

        cwd = spec.get("cwd")
        if cwd is not None and (not isinstance(cwd, str) or not cwd):
            self.err(f"{where}.cwd", "must be a non-empty string (a directory)")
            cwd = None
        env = self.env(f"{where}.env", spec.get("env", {}))

        timeout = self.number(f"{where}.timeout", spec.get("timeout"), 120.0, low=0.1, high=MAX_TIMEOUT)
        precheck_timeout = self.number(
            f"{where}.precheck_timeout", spec.get("precheck_timeout"), min(timeout, 60.0), low=0.1, high=MAX_TIMEOUT
        )
        verify_timeout = self.number(
            f"{where}.verify_timeout", spec.get("verify_timeout"), min(timeout, 60.0), low=0.1, high=MAX_TIMEOUT
        )
        verify_delay = self.number(f"{where}.verify_delay", spec.get("verify_delay"), 0.0, low=0, high=600)
        approvals = int(
            self.number(f"{where}.approvals_required", spec.get("approvals_required"), 1, low=1, high=10,
                        integer=True)
        )
        requires_approval = self.boolean(f"{where}.requires_approval", spec.get("requires_approval"), True)
        cooldown = self.number(f"{where}.cooldown", spec.get("cooldown"), 300.0, low=0, high=30 * 86400)
        max_runs: int | None = None
        window: float | None = None
        if "max_runs" in spec or "window" in spec:
            max_runs = int(self.number(f"{where}.max_runs", spec.get("max_runs"), 3, low=1, high=1000,
                                       integer=True))
            if "window" not in spec:
                self.err(f"{where}.window", "required with max_runs: the window in seconds")
            window = self.number(f"{where}.window", spec.get("window"), 3600.0, low=1, high=30 * 86400)
        else:
            max_runs, window = 3, 3600.0
        recurrence = self.number(
            f"{where}.recurrence_window", spec.get("recurrence_window"), 600.0, low=0, high=30 * 86400
        )

        placeholders = self.placeholders(
            f"{where}.placeholders", spec.get("placeholders", {}), match_any + match_all, settings
        )
        self.check_templates(where, steps, verify, precheck, cwd, env, placeholders, settings)

        if len(self.problems) > n_before or category is None:
            return None
        return Pattern(
            id=pid,
            description=description.strip(),
            category=category,
            match_any=match_any,
            match_all=match_all,
            exclude=exclude,
            fields=fields,
            steps=tuple(steps),
            verify=verify,
            precheck=precheck,
            placeholders=placeholders,
            cwd=cwd,
            env=env,
            timeout=timeout,
            precheck_timeout=precheck_timeout,
            verify_timeout=verify_timeout,
            verify_delay=verify_delay,
            projects=conditions["projects"],
            environments=conditions["environments"],
            servers=conditions["servers"],
            categories=categories,
            approvals_required=approvals,
            requires_approval=requires_approval,
            cooldown=cooldown,
            max_runs=max_runs,
            window=window,
            recurrence_window=recurrence or None,
            enabled=enabled,
            source=self.source,
        )

    # -- pieces ---------------------------------------------------------------------------------

    def category(self, where: str, raw: Any, *, required: bool) -> Category | None:
        if raw is None:
            if required:
                self.err(where, f"required: one of {', '.join(c.value for c in Category)}")
            return None
        try:
            return Category(raw)
        except ValueError:
            self.err(where, f"{raw!r} is not a category (one of {', '.join(c.value for c in Category)})")
            return None

    def categories(self, where: str, raw: Any) -> frozenset[Category] | None:
        values = self.str_set(where, raw)
        if values is None:
            return None
        out = {c for v in sorted(values) if (c := self.category(where, v, required=True)) is not None}
        return frozenset(out)

    def boolean(self, where: str, raw: Any, default: bool) -> bool:
        if raw is None:
            return default
        if not isinstance(raw, bool):
            self.err(where, "must be true or false")
            return default
        return raw

    def number(self, where: str, raw: Any, default: float, *, low: float, high: float,
               integer: bool = False) -> float:
        if raw is None:
            return default
        if isinstance(raw, bool) or not isinstance(raw, int | float) or (integer and not isinstance(raw, int)):
            self.err(where, f"must be {'an integer' if integer else 'a number'} (seconds where a duration)")
            return default
        if not low <= raw <= high:
            self.err(where, f"must be between {low:g} and {high:g}")
            return default
        return float(raw)

    def str_set(self, where: str, raw: Any) -> frozenset[str] | None:
        if raw is None:
            return None
        if not isinstance(raw, list) or not raw or not all(isinstance(x, str) and x for x in raw):
            self.err(where, "must be a non-empty list of non-empty strings")
            return None
        return frozenset(raw)

    def regex(self, where: str, raw: Any, flags: int = REGEX_FLAGS) -> re.Pattern[str] | None:
        if not isinstance(raw, str) or not raw:
            self.err(where, "must be a non-empty regex string")
            return None
        if NESTED_QUANTIFIER_RE.search(raw):
            self.err(where, f"nested unbounded quantifier (like (a+)+) can backtrack catastrophically: {raw!r}")
            return None
        try:
            return re.compile(raw, flags)
        except re.error as exc:
            self.err(where, f"bad regex {raw!r}: {exc}")
            return None

    def regex_list(self, where: str, raw: Any) -> tuple[re.Pattern[str], ...]:
        if not isinstance(raw, list):
            self.err(where, "must be a list of regex strings")
            return ()
        compiled = (self.regex(f"{where}[{i}]", r) for i, r in enumerate(raw))
        return tuple(rx for rx in compiled if rx is not None)

    def match(self, where: str, raw: Any) -> tuple[tuple[re.Pattern[str], ...], tuple[re.Pattern[str], ...],
                                                   tuple[str, ...]]:
        if raw is None:
            self.err(where, "required: {any = [regex, ...]} and/or {all = [regex, ...]} (or a list = any)")
            return (), (), TEXT_FIELDS
        if isinstance(raw, list):
            raw = {"any": raw}
        if not isinstance(raw, dict):
            self.err(where, "must be a table {any = [...], all = [...], in = [...]} or a list of regexes")
            return (), (), TEXT_FIELDS
        self.unknown_keys(where, raw, _MATCH_KEYS)
        match_any = self.regex_list(f"{where}.any", raw.get("any", []))
        match_all = self.regex_list(f"{where}.all", raw.get("all", []))
        if not raw.get("any") and not raw.get("all"):
            self.err(where, "needs at least one regex in 'any' or 'all'")
        fields = TEXT_FIELDS
        if "in" in raw:
            chosen = self.str_set(f"{where}.in", raw["in"])
            if chosen is not None:
                bad = sorted(chosen - set(TEXT_FIELDS))
                if bad:
                    self.err(f"{where}.in", f"unknown field(s) {bad}: use {', '.join(TEXT_FIELDS)}")
                fields = tuple(f for f in TEXT_FIELDS if f in chosen)
        return match_any, match_all, fields

    def argv_steps(self, where: str, raw: Any, *, allow_steps: bool) -> list[tuple[str, ...]]:
        example = '["systemctl", "restart", "redis-server"]'
        if isinstance(raw, str):
            self.err(where, f"a shell string is refused: give an argv list such as {example}")
            return []
        if not isinstance(raw, list) or not raw:
            self.err(where, f"must be a non-empty argv list such as {example}"
                     + (" or a list of such lists" if allow_steps else ""))
            return []
        if all(isinstance(x, str) for x in raw):
            steps, multi = [raw], False
        elif allow_steps and all(isinstance(x, list) for x in raw):
            steps, multi = raw, True
            if len(steps) > MAX_STEPS:
                self.err(where, f"at most {MAX_STEPS} steps")
        else:
            kind = "a list of argv lists (one per step)" if allow_steps else "one argv list of strings"
            self.err(where, f"must be {kind}; got a mix of strings and other values")
            return []
        out: list[tuple[str, ...]] = []
        for i, argv in enumerate(steps):
            w = f"{where}[{i}]" if multi else where
            if isinstance(argv, str):
                self.err(w, f"a shell string is refused: give an argv list such as {example}")
                continue
            if not argv or not all(isinstance(a, str) for a in argv):
                self.err(w, "must be a non-empty list of strings")
                continue
            if not argv[0]:
                self.err(w, "the program (first element) must not be empty")
                continue
            if any("\n" in a or "\x00" in a or "\r" in a for a in argv):
                self.err(w, "arguments must not contain newlines or NUL")
                continue
            shell = _shell_reason(argv)
            if shell:
                self.err(w, shell)
                continue
            out.append(tuple(argv))
        return out

    def single_argv(self, where: str, spec: Mapping[str, Any], key: str, needs_action: str) -> tuple[str, ...] | None:
        """``verify`` or ``precheck``: one argv list, only next to an action."""
        if key not in spec:
            return None
        parsed = self.argv_steps(f"{where}.{key}", spec[key], allow_steps=False)
        if "action" not in spec:
            self.err(f"{where}.{key}", needs_action)
        return parsed[0] if parsed else None

    def env(self, where: str, raw: Any) -> dict[str, str]:
        if not isinstance(raw, dict):
            self.err(where, "must be a table NAME = \"value\"")
            return {}
        out: dict[str, str] = {}
        for key, value in raw.items():
            if not _NAME_RE.fullmatch(key):
                self.err(f"{where}.{key}", "an environment variable name must be letters, digits and '_'")
            elif _FORBIDDEN_ENV.fullmatch(key):
                self.err(f"{where}.{key}", "this variable changes what a program loads or runs: refused")
            elif not isinstance(value, str) or "\x00" in value or "\n" in value:
                self.err(f"{where}.{key}", "must be a one-line string")
            else:
                out[key] = value
        return out

    def placeholders(self, where: str, raw: Any, regexes: Sequence[re.Pattern[str]],
                     settings: Mapping[str, str]) -> dict[str, Placeholder]:
        if not isinstance(raw, dict):
            self.err(where, "must be a table of [placeholders.<name>] tables")
            return {}
        groups = {g for rx in regexes for g in rx.groupindex}
        out: dict[str, Placeholder] = {}
        for name, spec in raw.items():
            w = f"{where}.{name}"
            if not _NAME_RE.fullmatch(name):
                self.err(w, "a placeholder name must be letters, digits and '_'")
                continue
            if not isinstance(spec, dict):
                self.err(w, 'must be a table such as {from = "group", validate = "^...$"}')
                continue
            self.unknown_keys(w, spec, _PLACEHOLDER_KEYS)
            n_before = len(self.problems)
            group = spec.get("from")
            if group is not None and (not isinstance(group, str) or group not in groups):
                have = ", ".join(sorted(groups)) or "none"
                self.err(f"{w}.from", f"{group!r} is not a named group of this pattern's match regexes "
                                      f"(groups: {have})")
            alert_field = spec.get("alert")
            if alert_field is not None and alert_field not in ALERT_FIELDS:
                self.err(f"{w}.alert", f"{alert_field!r} is not one of {', '.join(ALERT_FIELDS)}")
            setting = spec.get("setting")
            if setting is not None and (not isinstance(setting, str) or setting not in settings):
                self.err(f"{w}.setting", f"{setting!r} is not a key of [settings]")
            default = spec.get("default")
            if default is not None and (not isinstance(default, str) or not default):
                self.err(f"{w}.default", "must be a non-empty string")
            if group is None and alert_field is None and setting is None and default is None:
                self.err(w, "needs a source: from (regex group), alert, setting or default")
            validate = None
            if "validate" in spec:
                # no flags, and always used with fullmatch: the whole value must match
                validate = self.regex(f"{w}.validate", spec["validate"], flags=0)
            elif group is not None or alert_field is not None:
                self.err(f"{w}.validate", "required: a value taken from the alert must fully match a "
                                          "validation regex before it may fill an argument")
            grammar = spec.get("grammar")
            if grammar is not None and grammar not in GRAMMARS:
                self.err(f"{w}.grammar", f"{grammar!r} is not a grammar (one of {', '.join(GRAMMARS)})")
                grammar = None
            mapping = spec.get("map", {})
            if not isinstance(mapping, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()
            ):
                self.err(f"{w}.map", "must be a table of \"text in the error\" = \"value to use\"")
                mapping = {}
            if validate is not None:
                for label, value in [("default", default), *((f"map.{k}", v) for k, v in mapping.items())]:
                    if isinstance(value, str) and not validate.fullmatch(value):
                        self.err(f"{w}.{label}", f"{value!r} does not match its own validate regex")
                if isinstance(setting, str) and setting in settings and not validate.fullmatch(settings[setting]):
                    self.err(f"{w}.setting", f"the value of setting {setting!r} ({settings[setting]!r}) "
                                             "does not match this placeholder's validate regex")
            if grammar is not None:
                fixed = [("default", default), *((f"map.{k}", v) for k, v in mapping.items())]
                if isinstance(setting, str) and setting in settings:
                    fixed.append(("setting", settings[setting]))
                for label, value in fixed:
                    wrong = GRAMMARS[grammar](value) if isinstance(value, str) else None
                    if wrong:
                        self.err(f"{w}.{label}", f"{value!r} {wrong} (grammar {grammar!r})")
            if len(self.problems) > n_before:
                continue
            out[name] = Placeholder(
                name=name, group=group, alert_field=alert_field, setting=setting, default=default,
                validate=validate, mapping=dict(mapping), grammar=grammar,
            )
        return out

    def check_templates(self, where: str, steps: Sequence[tuple[str, ...]], verify: tuple[str, ...] | None,
                        precheck: tuple[str, ...] | None, cwd: str | None, env: Mapping[str, str],
                        placeholders: Mapping[str, Placeholder], settings: Mapping[str, str]) -> None:
        """Every {name} must be defined; values from error text may not choose the program,
        the working directory or the environment."""
        spots: list[tuple[str, str, bool]] = []  # (where, template, may hold text-sourced values)
        multi = len(steps) > 1
        for i, step in enumerate(steps):
            base = f"{where}.action[{i}]" if multi else f"{where}.action"
            spots += [(base, a, j > 0) for j, a in enumerate(step)]
        if verify:
            spots += [(f"{where}.verify", a, j > 0) for j, a in enumerate(verify)]
        if precheck:
            spots += [(f"{where}.precheck", a, j > 0) for j, a in enumerate(precheck)]
        if cwd:
            spots.append((f"{where}.cwd", cwd, False))
        spots += [(f"{where}.env.{k}", v, False) for k, v in env.items()]
        for spot, template, text_ok in spots:
            names = _template_names(template)
            if names is None:
                self.err(spot, f"unbalanced brace in {template!r} (write {{{{ and }}}} for literal braces)")
                continue
            for name in names:
                ph = placeholders.get(name)
                if ph is None and name not in settings:
                    self.err(spot, f"placeholder {{{name}}} is not defined: add "
                                   f"[{where}.placeholders.{name}] or a [settings] key '{name}'")
                elif ph is not None and ph.from_text and not text_ok:
                    self.err(spot, f"placeholder {{{name}}} takes its value from the alert and may not "
                                   "choose the program, the working directory or the environment")
        # a program given through a setting must not be a shell either
        commands = [(f"{where}.action[{i}]", step) for i, step in enumerate(steps)]
        commands += [(f"{where}.{key}", argv) for key, argv in (("verify", verify), ("precheck", precheck)) if argv]
        for spot, step in commands:
            names = _template_names(step[0]) or []
            if names and all(n in settings and n not in placeholders for n in names):
                shell = _shell_reason([render(step[0], settings), *step[1:]])
                if shell:
                    self.err(spot, shell)
