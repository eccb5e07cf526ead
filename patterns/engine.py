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

import contextlib
import functools
import logging
import os
import re
import shlex
import socket
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PlainValidator,
    StrictBool,
    StrictInt,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_validator,
)

from bot.config_files import (
    ConfigFileError,
    Loc,
    NonEmptyStr,
    Number,
    StrictModel,
    between,
    matching,
    parse_model,
    raise_problems,
    read_toml,
    regex,
)
from bot.models import Alert, Category
from bot.regex_safety import BoundedRegex, RegexMatch, RegexTimeout

__all__ = [
    "ACTIONABLE_CATEGORIES",
    "GRAMMARS",
    "Pattern",
    "PatternError",
    "PatternFile",
    "PatternMatch",
    "PatternModel",
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

TextField = Literal["title", "message", "stacktrace"]
TEXT_FIELDS: tuple[TextField, ...] = get_args(TextField)
#: The alert fields a placeholder may take its value from (``alert = "server"``).
AlertField = Literal["project", "environment", "server", "release", "level"]
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
log = logging.getLogger(__name__)
_ID_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_TEMPLATE_RE = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}|[{}]")
# Never allowed in a value taken from error text, whatever its validation regex says
# (defence in depth: the validation regex is the real allow-list).
_UNSAFE_CHARS = frozenset(";&|$`<>(){}[]*?!'\"\\,=%^#:+~")
_FORBIDDEN_ENV = re.compile(r"(?:LD_|DYLD_)\w*|NODE_OPTIONS|PYTHONSTARTUP|BASH_ENV|ENV")

class PatternError(ConfigFileError):
    """The pattern file is invalid; ``problems`` lists every problem with where it is."""

    what = "the pattern file"


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
Grammar = Literal["npm-package", "pypi-distribution"]
GRAMMARS: Mapping[Grammar, Callable[[str], str | None]] = {
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
    validate: BoundedRegex | None = None
    mapping: Mapping[str, str] = field(default_factory=dict)
    grammar: Grammar | None = None

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
    match_any: tuple[BoundedRegex, ...] = ()
    match_all: tuple[BoundedRegex, ...] = ()
    exclude: tuple[BoundedRegex, ...] = ()
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
            try:
                found = self._try(pattern, alert, cat, keys)
            except RegexTimeout as exc:  # a regex that gave up cannot vouch for a command: no proposal
                log.warning("pattern %s skipped for this alert: %s", pattern.id, exc)
                continue
            if found is not None:
                yield found

    def why_none(self, alert: Alert, category: Category | str | None = None) -> str:
        """Why no pattern applies (for `patterns test`): the guard that excluded a recognised error,
        a condition that did not hold, or that no pattern's regexes recognise the text at all."""
        cat = Category(category) if category is not None else None
        reasons = []
        for pattern in self._patterns:
            if not pattern.enabled or not pattern.has_action:
                continue
            try:
                reason = self._why_not(pattern, alert, cat)
            except RegexTimeout as exc:
                reason = f"{pattern.id}: {exc}, so it does not apply"
            if reason:
                reasons.append(reason)
        return "; ".join(reasons) or "no pattern's match regexes recognise this text"

    @staticmethod
    def _why_not(pattern: Pattern, alert: Alert, cat: Category | None) -> str | None:
        """Why a pattern that recognises the alert does not apply to it (None: it does not recognise it)."""
        text = pattern.text_of(alert)
        recognised = bool(text) and (
            (not pattern.match_any or any(rx.search(text) for rx in pattern.match_any))
            and all(rx.search(text) for rx in pattern.match_all)
            and bool(pattern.match_any or pattern.match_all)
        )
        if not recognised:
            return None
        if not pattern.conditions_hold(alert, cat):
            return (f"{pattern.id} recognises it, but its project/environment/server/category "
                    "conditions do not hold")
        for i, rx in enumerate(pattern.exclude):
            if rx.search(text):
                return f"{pattern.id} recognises it, but exclude[{i}] guards against it: {rx.pattern[:80]}"
        return None

    def _try(self, pattern: Pattern, alert: Alert, category: Category | None,
             hosts: frozenset[str]) -> PatternMatch | None:
        if not pattern.conditions_hold(alert, category):
            return None
        text = pattern.text_of(alert)
        if not text:
            return None
        hits: list[RegexMatch] = []
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


# -- the file, as models ------------------------------------------------------------------------
#
# What each key may hold is declared here; what needs several keys at once (a placeholder and
# the regex groups, a template and the placeholders) is checked by the validators below, each
# problem at its own key, so `remediator patterns check` lists them all with where they are.


def _not_a_shell_string(value: object) -> object:
    if isinstance(value, str):
        raise ValueError(f"a shell string is refused: give an argv list such as {_ARGV_EXAMPLE}")
    return value


def _runnable(argv: list[str]) -> list[str]:
    if not argv[0]:
        raise ValueError("the program (first element) must not be empty")
    if any("\n" in a or "\x00" in a or "\r" in a for a in argv):
        raise ValueError("arguments must not contain newlines or NUL")
    shell = _shell_reason(argv)
    if shell:
        raise ValueError(shell)
    return argv


def _one_or_more_steps(value: object, handler: ValidatorFunctionWrapHandler) -> list[list[str]]:
    """``["prog", "arg"]`` is one step: its problems are reported at the key itself, not at [0]."""
    if isinstance(value, str) or (isinstance(value, list) and all(isinstance(a, str) for a in value)):
        return [_ARGV.validate_python(value)]
    if isinstance(value, list) and not all(isinstance(a, list) for a in value):
        raise ValueError("must be one argv list of strings, or a list of argv lists (one per step); got a mix")
    steps: list[list[str]] = handler(value)
    return steps


def _harmless_env(name: str) -> str:
    if _FORBIDDEN_ENV.fullmatch(name):
        raise ValueError("this variable changes what a program loads or runs: refused")
    return name


def _setting_value(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("must be a string (or a number)")
    if "\n" in str(value) or "\x00" in str(value):
        raise ValueError("must not contain a newline or NUL")
    return str(value)


_ARGV_EXAMPLE = '["systemctl", "restart", "redis-server"]'
Argv = Annotated[list[str], BeforeValidator(_not_a_shell_string), Field(min_length=1), AfterValidator(_runnable)]
_ARGV: TypeAdapter[list[str]] = TypeAdapter(Argv)
Steps = Annotated[list[Argv], Field(min_length=1, max_length=MAX_STEPS), WrapValidator(_one_or_more_steps)]
Regex = Annotated[BoundedRegex, regex(REGEX_FLAGS)]
Name = Annotated[str, matching(_NAME_RE, "a name must be letters, digits and '_'")]
EnvName = Annotated[Name, AfterValidator(_harmless_env)]
PatternId = Annotated[str, matching(_ID_RE, "a pattern id must be lowercase letters, digits and '_', starting with a letter")]
Text = Annotated[str, Field(min_length=1)]
OneLine = Annotated[str, matching(re.compile(r"[^\n\x00]*"), "must be one line")]
SettingValue = Annotated[str, PlainValidator(_setting_value)]
Timeout = Annotated[Number, between(0.1, MAX_TIMEOUT)]
Interval = Annotated[Number, between(0, 30 * 86400)]
_SETTINGS: TypeAdapter[dict[str, str]] = TypeAdapter(dict[Name, SettingValue])


class MatchModel(StrictModel):
    """``match``: ``{any = [...], all = [...], in = [...]}``, or a plain list meaning ``any``."""

    any: list[Regex] = []
    all: list[Regex] = []
    in_: Annotated[list[TextField], Field(alias="in", min_length=1)] = list(TEXT_FIELDS)

    @model_validator(mode="before")
    @classmethod
    def _list_means_any(cls, value: object) -> object:
        return {"any": value} if isinstance(value, list) else value

    @model_validator(mode="after")
    def _has_a_regex(self) -> MatchModel:
        if not self.any and not self.all:
            raise ValueError("needs at least one regex in 'any' or 'all'")
        return self


class PlaceholderModel(StrictModel):
    """``[patterns.<id>.placeholders.<name>]``: where a ``{name}`` gets its value, what it must look like."""

    from_: Annotated[Text | None, Field(alias="from")] = None
    alert: AlertField | None = None
    setting: Text | None = None
    default: Text | None = None
    validate_: Annotated[Annotated[BoundedRegex, regex(0)] | None, Field(alias="validate")] = None
    grammar: Grammar | None = None
    map: dict[str, str] = {}

    def to_placeholder(self, name: str) -> Placeholder:
        return Placeholder(name=name, group=self.from_, alert_field=self.alert, setting=self.setting,
                           default=self.default, validate=self.validate_, mapping=dict(self.map), grammar=self.grammar)


class PatternModel(StrictModel):
    """``[patterns.<id>]``: one allow-listed fix (format: the header of ``patterns/default.toml``)."""

    description: Annotated[NonEmptyStr, Field(description="one line saying what is wrong and what the fix does")]
    category: Annotated[Category, Field(description=f"one of {', '.join(Category)}")]
    enabled: StrictBool = True
    match: Annotated[MatchModel, Field(description="{any = [regex, ...]} and/or {all = [regex, ...]} (or a list)")]
    exclude: list[Regex] = []
    projects: Annotated[list[Text], Field(min_length=1)] | None = None
    environments: Annotated[list[Text], Field(min_length=1)] | None = None
    servers: Annotated[list[Text], Field(min_length=1)] | None = None
    categories: Annotated[list[Category], Field(min_length=1)] | None = None
    placeholders: dict[Name, PlaceholderModel] = {}
    action: Steps | None = None
    verify: Argv | None = None
    precheck: Argv | None = None
    cwd: Text | None = None
    env: dict[EnvName, OneLine] = {}
    timeout: Timeout = 120.0
    precheck_timeout: Timeout | None = None  # default: min(timeout, 60)
    verify_timeout: Timeout | None = None  # default: min(timeout, 60)
    verify_delay: Annotated[Number, between(0, 600)] = 0.0
    approvals_required: Annotated[StrictInt, between(1, 10)] = 1
    requires_approval: StrictBool = True
    cooldown: Interval = 300.0
    max_runs: Annotated[StrictInt, between(1, 1000)] | None = None
    window: Annotated[Number, between(1, 30 * 86400)] | None = None
    recurrence_window: Interval = 600.0

    @field_validator("placeholders")
    @classmethod
    def _placeholders_can_be_filled(cls, value: dict[str, PlaceholderModel],
                                    info: ValidationInfo) -> dict[str, PlaceholderModel]:
        match: MatchModel | None = info.data.get("match")
        groups = None if match is None else {g for rx in match.any + match.all for g in rx.groupindex}
        settings = (info.context or {}).get("settings", {})
        raise_problems(p for name, ph in value.items() for p in _placeholder_problems(name, ph, groups, settings))
        return value

    @model_validator(mode="after")
    def _commands_fit_together(self, info: ValidationInfo) -> PatternModel:
        problems: list[tuple[Loc, str]] = [
            ((key,), f"a {key} command needs an action to {verb}")
            for key, verb in (("verify", "verify"), ("precheck", "guard"))
            if getattr(self, key) is not None and self.action is None
        ]
        if self.action is not None and self.category not in ACTIONABLE_CATEGORIES:
            allowed = ", ".join(sorted(c.value for c in ACTIONABLE_CATEGORIES))
            problems.append((("action",), f"category '{self.category.value}' may not carry an action (only "
                                          f"{allowed} may): such errors need a human fix, not an automatic one"))
        if self.max_runs is not None and self.window is None:
            problems.append((("window",), "required with max_runs: the window in seconds"))
        problems += _template_problems(self, (info.context or {}).get("settings", {}))
        raise_problems(problems)
        return self

    def to_pattern(self, pid: str, source: str) -> Pattern:
        sets = {k: frozenset(v) if v is not None else None for k, v in
                (("projects", self.projects), ("environments", self.environments), ("servers", self.servers))}
        return Pattern(
            id=pid, description=self.description, category=self.category, match_any=tuple(self.match.any),
            match_all=tuple(self.match.all), exclude=tuple(self.exclude),
            fields=tuple(f for f in TEXT_FIELDS if f in self.match.in_),
            steps=tuple(tuple(step) for step in self.action or ()),
            verify=tuple(self.verify) if self.verify else None, precheck=tuple(self.precheck) if self.precheck else None,
            placeholders={name: ph.to_placeholder(name) for name, ph in self.placeholders.items()},
            cwd=self.cwd, env=dict(self.env), timeout=self.timeout,
            precheck_timeout=self.precheck_timeout or min(self.timeout, 60.0),
            verify_timeout=self.verify_timeout or min(self.timeout, 60.0), verify_delay=self.verify_delay,
            **sets, categories=frozenset(self.categories) if self.categories else None,
            approvals_required=self.approvals_required, requires_approval=self.requires_approval,
            cooldown=self.cooldown, max_runs=self.max_runs or 3, window=self.window or 3600.0,
            recurrence_window=self.recurrence_window or None,
            enabled=self.enabled, source=source,
        )


class PatternFile(StrictModel):
    """The whole allow-list file."""

    settings: dict[Name, SettingValue] = {}
    patterns: dict[PatternId, PatternModel] = {}


def _placeholder_problems(name: str, ph: PlaceholderModel, groups: set[str] | None,
                          settings: Mapping[str, str]) -> Iterator[tuple[Loc, str]]:
    """What a placeholder needs beyond its own keys: a source, a validate regex for text from the
    alert, a group the match regexes define, a setting that exists, fixed values that obey the rules."""
    if groups is not None and ph.from_ is not None and ph.from_ not in groups:
        have = ", ".join(sorted(groups)) or "none"
        yield (name, "from"), f"{ph.from_!r} is not a named group of this pattern's match regexes (groups: {have})"
    if ph.setting is not None and ph.setting not in settings:
        yield (name, "setting"), f"{ph.setting!r} is not a key of [settings]"
    if (ph.from_, ph.alert, ph.setting, ph.default) == (None, None, None, None):
        yield (name,), "needs a source: from (regex group), alert, setting or default"
    if ph.validate_ is None and (ph.from_ is not None or ph.alert is not None):
        yield (name, "validate"), ("required: a value taken from the alert must fully match a validation regex "
                                   "before it may fill an argument")
    fixed = [("default", ph.default), *((f"map.{k}", v) for k, v in ph.map.items())]
    if ph.setting is not None and ph.setting in settings:
        fixed.append(("setting", settings[ph.setting]))
    for label, value in fixed:
        if value is None:
            continue
        if ph.validate_ is not None and not ph.validate_.fullmatch(value):
            yield (name, label), f"{value!r} does not match this placeholder's validate regex"
        wrong = GRAMMARS[ph.grammar](value) if ph.grammar else None
        if wrong:
            yield (name, label), f"{value!r} {wrong} (grammar {ph.grammar!r})"


def _template_problems(m: PatternModel, settings: Mapping[str, str]) -> Iterator[tuple[Loc, str]]:
    """Every {name} must be defined; values from error text may not choose the program, the
    working directory or the environment; a program given through a setting is not a shell."""
    steps = m.action or []
    commands: list[tuple[Loc, list[str]]] = [((("action", i) if len(steps) > 1 else ("action",)), s)
                                             for i, s in enumerate(steps)]
    commands += [((key,), argv) for key, argv in (("verify", m.verify), ("precheck", m.precheck)) if argv]
    spots = [(loc, arg, j > 0) for loc, argv in commands for j, arg in enumerate(argv)]
    spots += [(("cwd",), m.cwd, False)] if m.cwd else []
    spots += [(("env", k), v, False) for k, v in m.env.items()]
    for loc, template, text_ok in spots:
        names = _template_names(template)
        if names is None:
            yield loc, f"unbalanced brace in {template!r} (write {{{{ and }}}} for literal braces)"
        for name in names or ():
            ph = m.placeholders.get(name)
            if ph is None and name not in settings:
                yield loc, (f"placeholder {{{name}}} is not defined: add [placeholders.{name}] to this pattern "
                            f"or a [settings] key '{name}'")
            elif ph is not None and (ph.from_ or ph.alert) and not text_ok:
                yield loc, (f"placeholder {{{name}}} takes its value from the alert and may not choose the "
                            "program, the working directory or the environment")
    for loc, argv in commands:
        names = _template_names(argv[0]) or []
        if names and all(n in settings and n not in m.placeholders for n in names):
            shell = _shell_reason([render(argv[0], settings), *argv[1:]])
            if shell:
                yield loc, shell


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
    doc = read_toml(source_path, PatternError, "pattern file")
    if isinstance(doc.get("settings", {}), dict):
        doc["settings"] = {**doc.get("settings", {}), **(settings or {})}
    model = parse_model(PatternFile, doc, str(source_path), PatternError, settings=_valid_settings(doc))
    patterns = [spec.to_pattern(pid, str(source_path)) for pid, spec in model.patterns.items()]
    return PatternSet(patterns, model.settings, str(source_path), hosts)


def _valid_settings(doc: Mapping[str, object]) -> dict[str, str]:
    """The good [settings] entries: the patterns are checked against them while the bad ones are reported."""
    valid: dict[str, str] = {}
    raw = doc.get("settings")
    for key, value in raw.items() if isinstance(raw, dict) else ():
        with contextlib.suppress(ValidationError):
            valid |= _SETTINGS.validate_python({key: value})
    return valid
