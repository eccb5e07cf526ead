"""Settings from the environment or a `.env` file (pydantic-settings).

Every name here is documented in `.env.example` and the README's settings table.
`load_settings` turns validation errors into one readable line per bad setting.

Which `.env` is read (`find_env_file`): the one given with `--env-file`, else the one named by
`REMEDIATOR_ENV_FILE`, else `.env` in the working directory when there is one. The environment
wins over the file. A relative path in the file (`DATABASE_PATH=remediator.db`) is relative to
the file's own directory, so the same `.env` means the same database wherever the bot is
started from; a relative path from the environment is relative to the working directory.
"""

from __future__ import annotations

import errno
import os
import re
import socket
from collections.abc import Mapping
from datetime import time
from pathlib import Path
from typing import Annotated

from pydantic import Field, PrivateAttr, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from patterns.engine import host_key, local_host_names

# A host name, an IPv4 address or an IPv6 address (letters, digits, '.', '-', '_', ':').
_HOST_NAME_RE = re.compile(r"[A-Za-z0-9_:][A-Za-z0-9_.:-]{0,252}")
ENV_FILE_VARIABLE = "REMEDIATOR_ENV_FILE"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# Settings that name a file or directory: relative ones in a `.env` are relative to that file.
_PATH_SETTINGS = ("database_path", "rules_file", "patterns_file", "owners_file", "repo_path",
                  "llm_prices_file")


class SettingsError(Exception):
    """Raised with a human message naming each bad setting."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore", env_ignore_empty=True)

    # Telegram
    telegram_bot_token: SecretStr | None = None
    telegram_api_base: str | None = None
    telegram_chat_id: int | None = None
    telegram_approvers: Annotated[list[int], NoDecode] = Field(default_factory=list)
    telegram_rate_per_chat: float = Field(1.0, gt=0)  # messages/s to one chat
    telegram_group_per_minute: int = Field(20, gt=0)  # messages/min to one group
    telegram_rate_global: float = Field(30.0, gt=0)  # messages/s overall

    # Incoming alerts
    webhook_host: str = "127.0.0.1"
    webhook_port: int = Field(8080, ge=0, le=65535)
    webhook_token: SecretStr | None = None
    webhook_max_connections: int = Field(256, ge=1)  # open at once; lowered to half the file limit
    webhook_header_timeout: float = Field(10.0, gt=0)  # s to send a request head; also the keep-alive timeout
    webhook_body_timeout: float = Field(30.0, gt=0)  # s to send the body once the head is in

    # Storage and behaviour
    database_path: Path = Path("remediator.db")
    rollout_stage: int = Field(2, ge=1, le=4)
    rules_file: Path | None = None
    patterns_file: Path | None = None
    owners_file: Path | None = None
    redact_patterns: Annotated[list[str], NoDecode] = Field(default_factory=list)
    proposal_expiry_hours: float = Field(24.0, gt=0)
    kill_switch: bool = False
    auto_fix: bool = False
    fix_rate_limit_per_hour: int = Field(10, ge=0)
    # Servers whose errors may be fixed here (fixes run on this machine); see _split_hosts.
    fix_hosts: Annotated[list[str], NoDecode] = Field(default_factory=lambda: list(local_host_names()))
    inbox_max_attempts: int = Field(5, ge=1)
    # New incidents a minute per source that get a card each; the rest are named in one summary.
    storm_cards_per_minute: int = Field(10, ge=1)
    # Seconds of CPU work (parse, redact, triage) one alert may take before it counts as a failed attempt.
    pipeline_row_budget_s: float = Field(10.0, gt=0)
    inbox_retention_days: float = Field(7.0, gt=0)
    # A rule + project whose priority people corrected the same way this often gets an Apply button
    # (a priority override) under the digest and /stats (bot/overrides.py).
    override_after_corrections: int = Field(3, ge=1)
    log_level: str = "INFO"

    # Integrations (all optional: everything works offline)
    anthropic_api_key: SecretStr | None = None
    anthropic_model: str = "claude-sonnet-5-5"
    # Claude (on when ANTHROPIC_API_KEY is set; bot/llm/): every call goes through the spend cap.
    anthropic_base_url: str | None = None  # another endpoint (a proxy, a gateway); unset: Anthropic's API
    anthropic_triage_model: str | None = None  # unset: ANTHROPIC_MODEL (a cheaper one is usually enough)
    anthropic_investigate_model: str | None = None  # unset: ANTHROPIC_MODEL
    anthropic_timeout_s: float = Field(30.0, gt=0)  # one call, whole answer
    llm_daily_budget_usd: float = Field(5.0, ge=0)  # Claude stops for the day once today's calls cost this
    llm_prices_file: Path | None = None  # USD per million tokens per model; unset: bot/llm/prices.toml
    claude_triage_wait_s: float = Field(3.0, ge=0)  # the first card waits at most this for Claude's triage
    glitchtip_url: str | None = None
    glitchtip_token: SecretStr | None = None
    # GlitchTip's API (on when GLITCHTIP_URL and GLITCHTIP_TOKEN are both set; bot/glitchtip/):
    glitchtip_enrich_budget_s: float = Field(2.0, ge=0)  # the first card waits at most this for the API
    glitchtip_refresh_minutes: float = Field(5.0, gt=0)  # open issues' counts are read again this often
    glitchtip_refresh_days: float = Field(7.0, gt=0)  # …if seen within this many days
    glitchtip_timeout_s: float = Field(10.0, gt=0)  # one API call, whole answer
    github_token: SecretStr | None = None
    github_repo: str | None = None
    github_api_url: str = "https://api.github.com"
    # GitHub issues (on when GITHUB_TOKEN and GITHUB_REPO are both set; bot/github/):
    github_timeout_s: float = Field(10.0, gt=0)  # one API call, whole answer
    github_retry_hours: float = Field(24.0, gt=0)  # outages are retried this long before it is reported failed
    repo_path: Path | None = None
    # 🔎 Investigate (bot/investigate/): a commit that changed a crashing line this recently is the suspect.
    investigate_suspect_days: float = Field(7.0, gt=0)
    # With ANTHROPIC_API_KEY, Claude's tool-use loop per investigation stops at the first limit reached
    # (then the report is the key-free one, marked "Claude unavailable: …"); LLM_DAILY_BUDGET_USD applies too.
    investigate_max_steps: int = Field(12, ge=1, le=100)  # Claude's answers (each may call tools)
    investigate_max_seconds: float = Field(180.0, gt=0)  # wall time of the whole loop
    investigate_max_tokens: int = Field(300_000, ge=1000)  # input + output tokens over the loop
    investigate_max_cost_usd: float = Field(1.0, gt=0)  # estimated cost of the loop (LLM_PRICES_FILE)

    # Scheduler
    digest_time: time = time(9, 0)
    timezone: str = "UTC"

    # The `.env` file these settings were read from (None: none was read); set by load_settings.
    _env_file_read: Path | None = PrivateAttr(default=None)

    @field_validator("telegram_approvers", mode="before")
    @classmethod
    def _split_ids(cls, value: object) -> object:
        if isinstance(value, str):
            parts = [p for p in re.split(r"[\s,;]+", value.strip()) if p]
            bad = [p for p in parts if not re.fullmatch(r"-?\d+", p)]
            if bad:
                # One message naming every bad value (item errors would repeat the setting per item).
                listed = ", ".join(repr(p) for p in bad)
                raise ValueError(f"{listed} {'is not a user id' if len(bad) == 1 else 'are not user ids'}"
                                 " (a @username is not an id)")
            return [int(p) for p in parts]
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _known_log_level(cls, value: object) -> object:
        if isinstance(value, str):
            level = value.strip().upper()
            if level not in LOG_LEVELS:
                raise ValueError(f"{value!r} is not a log level")
            return level
        return value

    @field_validator("fix_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return [p for p in re.split(r"[\s,;]+", value.strip()) if p]
        return value

    @field_validator("fix_hosts")
    @classmethod
    def _host_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _HOST_NAME_RE.fullmatch(name):
                raise ValueError(f"{name!r} is not a host name or address")
        return list(dict.fromkeys(host_key(n) for n in value))

    @field_validator("redact_patterns", mode="before")
    @classmethod
    def _split_patterns(cls, value: object) -> object:
        # Regexes may contain commas, so several patterns are separated by newlines or `;;`.
        if isinstance(value, str):
            return [p.strip() for p in re.split(r"\n|;;", value) if p.strip()]
        return value

    @field_validator("redact_patterns")
    @classmethod
    def _compile_patterns(cls, value: list[str]) -> list[str]:
        from bot.regex_safety import regex_problem

        for pattern in value:
            # They run over every alert: the same safety check as the rules and patterns files.
            problem = regex_problem(pattern)
            if problem:
                raise ValueError(f"regular expression {pattern!r} refused: {problem}")
        return value

    @field_validator("kill_switch", "auto_fix", mode="before")
    @classmethod
    def _on_off(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in {"on", "off"}:
            return value.strip().lower() == "on"
        return value

    @field_validator("glitchtip_url", "github_api_url", "anthropic_base_url")
    @classmethod
    def _http_base_url(cls, value: str | None) -> str | None:
        """An API's base URL: http(s), a host, maybe a path; kept without its trailing slash."""
        if value is None:
            return None
        if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", value.strip()):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value.strip().rstrip("/")

    @property
    def glitchtip_api_on(self) -> bool:
        """GlitchTip's API is used only with both its URL and a token."""
        return bool(self.glitchtip_url and self.glitchtip_token and self.glitchtip_token.get_secret_value())

    @field_validator("github_repo")
    @classmethod
    def _github_repo(cls, value: str | None) -> str | None:
        if value is None:
            return None
        repo = value.strip().removeprefix("https://github.com/").removesuffix(".git").strip("/")
        owner, _, name = repo.partition("/")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]{0,38}", owner) or not re.fullmatch(r"[A-Za-z0-9._-]{1,100}", name) \
                or name in (".", ".."):
            raise ValueError(f"{value!r} is not a repository as owner/name")
        return repo

    @property
    def claude_on(self) -> bool:
        """Claude (triage, investigations) is asked only with an API key."""
        return bool(self.anthropic_api_key and self.anthropic_api_key.get_secret_value())

    @property
    def github_on(self) -> bool:
        """GitHub issues are proposed and filed only with both a token and a repository."""
        return bool(self.github_repo and self.github_token and self.github_token.get_secret_value())

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (use an IANA name like Europe/Berlin)") from exc
        return value

    @property
    def env_file_read(self) -> Path | None:
        """The `.env` file these settings came from, or None when none was read."""
        return self._env_file_read

    @property
    def demo_mode(self) -> bool:
        """No token: run against the built-in Bot API emulator instead of Telegram."""
        return self.telegram_bot_token is None or not self.telegram_bot_token.get_secret_value()

    @property
    def setup_mode(self) -> bool:
        """A token but neither TELEGRAM_CHAT_ID nor TELEGRAM_APPROVERS: the first start of a new bot.
        It answers /start and /help (which tell people these ids) and posts no card; alerts wait in
        the inbox until it is started with both set."""
        return not self.demo_mode and self.telegram_chat_id is None and not self.telegram_approvers

    def is_approver(self, user_id: int) -> bool:
        return user_id in self.telegram_approvers


_HINTS = {
    "telegram_chat_id": "the numeric id of the chat that receives cards (groups are negative, e.g. -1001234567890)",
    "telegram_approvers": "comma-separated numeric Telegram user ids, e.g. 12345,67890",
    "webhook_port": "a TCP port 0-65535",
    "webhook_token": "a long random string (it goes in the webhook URL)",
    "rollout_stage": "1 (monitor), 2 (triage + decisions), 3 (investigate), or 4 (auto-fix)",
    "digest_time": "a time of day HH:MM, e.g. 09:00",
    "kill_switch": "on or off",
    "auto_fix": "on or off",
    "fix_hosts": "comma-separated host names of this machine, e.g. web-01,web-01.example.com (default: its own names)",
    "log_level": "one of " + ", ".join(LOG_LEVELS),
    "glitchtip_url": "GlitchTip's base URL, e.g. https://glitchtip.example.com",
    "github_repo": "the repository issues are filed in, as owner/name, e.g. acme/api",
    "anthropic_base_url": "an http(s) URL, e.g. https://api.anthropic.com (unset: Anthropic's API)",
    "llm_daily_budget_usd": "a number of US dollars, e.g. 5 (0: no Claude calls at all)",
    "github_api_url": "GitHub's API URL: https://api.github.com, or https://HOST/api/v3 for GitHub Enterprise",
}


def _env_name(loc: tuple[object, ...]) -> str:
    return str(loc[0]).upper() if loc else "?"


def find_env_file(explicit: Path | None = None, environ: Mapping[str, str] = os.environ) -> Path | None:
    """The `.env` to read: `explicit` (--env-file), else $REMEDIATOR_ENV_FILE, else ./.env if present.

    A file named on purpose must exist: a typo there would otherwise start the demo silently.
    """
    if explicit is not None:
        return _named_env_file(explicit, "--env-file")
    named = environ.get(ENV_FILE_VARIABLE, "").strip()
    if named:
        return _named_env_file(Path(named), ENV_FILE_VARIABLE)
    local = Path(".env")
    return local.absolute() if local.is_file() else None


def _named_env_file(path: Path, given_by: str) -> Path:
    if path.is_dir():
        raise SettingsError(f"Invalid settings:\n  {given_by}: {path} is a directory — needs the path of a .env file")
    if not path.is_file():
        raise SettingsError(f"Invalid settings:\n  {given_by}: no such file {path}")
    return path.absolute()


def load_settings(*, env_file: Path | None = None, **overrides: object) -> Settings:
    """Settings from the environment and a `.env` (see `find_env_file`), or SettingsError listing
    every bad setting once, with what it needs."""
    path = find_env_file(env_file)
    try:
        settings = Settings(_env_file=path, **overrides)  # type: ignore[call-arg, arg-type]
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"Invalid settings:\n  cannot read {path}: {exc}") from None
    if path is not None:
        settings = _relative_to_env_file(settings, path, overrides)
    settings._env_file_read = path
    return settings


def _describe(exc: ValidationError) -> str:
    """One line per setting (a list setting can fail several ways; its messages share the line)."""
    messages: dict[str, list[str]] = {}
    for err in exc.errors():
        msg = err["msg"].removeprefix("Value error, ")
        found = messages.setdefault(_env_name(err["loc"]), [])
        if msg not in found:
            found.append(msg)
    lines = []
    for name, msgs in messages.items():
        hint = _HINTS.get(name.lower())
        lines.append(f"  {name}: {'; '.join(msgs)}" + (f" — needs {hint}" if hint else ""))
    return "Invalid settings:\n" + "\n".join(lines)


def _relative_to_env_file(settings: Settings, env_file: Path, overrides: Mapping[str, object]) -> Settings:
    """Relative paths that came from the file are made relative to the file's directory."""
    from dotenv import dotenv_values

    in_file = {k.lower() for k, v in dotenv_values(env_file).items() if v}
    in_environment = {k.lower() for k, v in os.environ.items() if v} | set(overrides)
    update: dict[str, object] = {}
    for name in _PATH_SETTINGS:
        value = getattr(settings, name)
        if name in in_file and name not in in_environment and value is not None and not value.is_absolute():
            update[name] = env_file.parent / value
    return settings.model_copy(update=update) if update else settings


def describe_settings_source(settings: Settings) -> str:
    """For the start-up line: which `.env` was read, or that none was and where one was looked for."""
    if settings.env_file_read is not None:
        return f"settings from {settings.env_file_read} and the environment"
    return (f"no .env read (none in {Path.cwd()}; give one with --env-file or {ENV_FILE_VARIABLE}): "
            "settings from the environment only")


def webhook_listen_problem(host: str, port: int, exc: OSError) -> str:
    """Why the webhook server cannot listen, said as the setting to change."""
    if isinstance(exc, socket.gaierror):
        return f"WEBHOOK_HOST {host!r} is not a known host name ({exc.strerror}): use an address such as 127.0.0.1"
    if exc.errno == errno.EADDRINUSE:
        return (f"WEBHOOK_PORT {port} on {host} is already in use (another remediator, or another program): "
                "stop it, or set WEBHOOK_PORT to a free port")
    if exc.errno == errno.EADDRNOTAVAIL:
        return (f"WEBHOOK_HOST {host} is not an address of this machine: use 127.0.0.1 (behind a reverse proxy) "
                "or 0.0.0.0 (every interface)")
    if exc.errno == errno.EACCES:
        return (f"WEBHOOK_PORT {port} on {host} needs privileges this user does not have (ports below 1024): "
                "use a port of 1024 or more, e.g. 8080, behind a reverse proxy")
    return f"cannot listen on {host}:{port} ({exc.strerror or exc}): check WEBHOOK_HOST and WEBHOOK_PORT"


def webhook_port_problem(host: str, port: int) -> str | None:
    """Whether WEBHOOK_HOST:WEBHOOK_PORT can be listened on now: a quick look before the slow imports,
    so a busy port is reported at once. The application still reports a port lost after this."""
    if port == 0:
        return None
    try:
        # Every address the host names, bound as asyncio's create_server binds them.
        for family, kind, proto, _, address in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                                  flags=socket.AI_PASSIVE):
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                probe.bind(address)
    except OSError as exc:
        return webhook_listen_problem(host, port, exc)
    return None


def check_for_run(settings: Settings) -> None:
    """What `remediator run` needs beyond types: raise SettingsError naming each gap."""
    problems = []
    if not settings.demo_mode:
        # Both missing is setup mode (see Settings.setup_mode); one of the two is a mistake.
        if settings.telegram_chat_id is None and not settings.setup_mode:
            problems.append(f"  TELEGRAM_CHAT_ID: missing — needs {_HINTS['telegram_chat_id']}")
        if not settings.telegram_approvers and not settings.setup_mode:
            problems.append(f"  TELEGRAM_APPROVERS: missing — needs {_HINTS['telegram_approvers']}")
        if settings.webhook_token is None or len(settings.webhook_token.get_secret_value()) < 16:
            problems.append("  WEBHOOK_TOKEN: missing or shorter than 16 characters — needs "
                            + _HINTS["webhook_token"])
        token = settings.telegram_bot_token.get_secret_value() if settings.telegram_bot_token else ""
        if not re.fullmatch(r"\d+:[A-Za-z0-9_-]{20,}", token):
            problems.append("  TELEGRAM_BOT_TOKEN: does not look like a bot token — needs the token "
                            "@BotFather gave, like 123456789:AAE...")
    for name in ("rules_file", "patterns_file", "owners_file", "llm_prices_file"):
        path = getattr(settings, name)
        if path is not None and not Path(path).is_file():
            problems.append(f"  {name.upper()}: no such file {path}")
    if bool(settings.glitchtip_url) != bool(settings.glitchtip_token and settings.glitchtip_token.get_secret_value()):
        missing = "GLITCHTIP_TOKEN" if settings.glitchtip_url else "GLITCHTIP_URL"
        problems.append(f"  {missing}: missing — GlitchTip's API needs both GLITCHTIP_URL (e.g. "
                        "https://glitchtip.example.com) and GLITCHTIP_TOKEN (Profile → Auth Tokens, scopes "
                        "event:read and event:write); set both, or neither to leave it off")
    if bool(settings.github_repo) != bool(settings.github_token and settings.github_token.get_secret_value()):
        missing = "GITHUB_TOKEN" if settings.github_repo else "GITHUB_REPO"
        problems.append(f"  {missing}: missing — GitHub issues need both GITHUB_REPO (owner/name) and GITHUB_TOKEN "
                        "(a fine-grained token with Issues: read and write); set both, or neither to leave them off")
    if problems and settings.setup_mode:
        problems.append("  (TELEGRAM_CHAT_ID and TELEGRAM_APPROVERS may stay unset for the first start: the bot then "
                        "starts in setup mode and /start in your group tells you both)")
    if problems:
        raise SettingsError("Invalid settings:\n" + "\n".join(problems))
