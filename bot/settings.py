"""Settings from the environment or `.env` (pydantic-settings).

Every name here is documented in `.env.example` and the README's settings table.
`load_settings` turns validation errors into one readable message per bad setting.
"""

from __future__ import annotations

import re
from datetime import time
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from patterns.engine import host_key, local_host_names

# A host name, an IPv4 address or an IPv6 address (letters, digits, '.', '-', '_', ':').
_HOST_NAME_RE = re.compile(r"[A-Za-z0-9_:][A-Za-z0-9_.:-]{0,252}")


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
    log_level: str = "INFO"

    # Integrations (all optional: everything works offline)
    anthropic_api_key: SecretStr | None = None
    anthropic_model: str = "claude-sonnet-4-5"
    glitchtip_url: str | None = None
    glitchtip_token: SecretStr | None = None
    github_token: SecretStr | None = None
    github_repo: str | None = None
    github_api_url: str = "https://api.github.com"
    repo_path: Path | None = None

    # Scheduler
    digest_time: time = time(9, 0)
    timezone: str = "UTC"

    @field_validator("telegram_approvers", mode="before")
    @classmethod
    def _split_ids(cls, value: object) -> object:
        if isinstance(value, str):
            parts = [p for p in re.split(r"[\s,;]+", value.strip()) if p]
            return [int(p) for p in parts] if all(re.fullmatch(r"-?\d+", p) for p in parts) else parts
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
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from exc
        return value

    @field_validator("kill_switch", "auto_fix", mode="before")
    @classmethod
    def _on_off(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in {"on", "off"}:
            return value.strip().lower() == "on"
        return value

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
    def demo_mode(self) -> bool:
        """No token: run against the built-in Bot API emulator instead of Telegram."""
        return self.telegram_bot_token is None or not self.telegram_bot_token.get_secret_value()

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
}


def _env_name(loc: tuple[object, ...]) -> str:
    return str(loc[0]).upper() if loc else "?"


def load_settings(**overrides: object) -> Settings:
    """Settings from env/.env, or SettingsError listing every bad one with what it needs."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = _env_name(err["loc"])
            hint = _HINTS.get(name.lower())
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"  {name}: {msg}" + (f" — needs {hint}" if hint else ""))
        raise SettingsError("Invalid settings:\n" + "\n".join(lines)) from None


def check_for_run(settings: Settings) -> None:
    """What `remediator run` needs beyond types: raise SettingsError naming each gap."""
    problems = []
    if not settings.demo_mode:
        if settings.telegram_chat_id is None:
            problems.append(f"  TELEGRAM_CHAT_ID: missing — needs {_HINTS['telegram_chat_id']}")
        if not settings.telegram_approvers:
            problems.append(f"  TELEGRAM_APPROVERS: missing — needs {_HINTS['telegram_approvers']}")
        if settings.webhook_token is None or len(settings.webhook_token.get_secret_value()) < 16:
            problems.append("  WEBHOOK_TOKEN: missing or shorter than 16 characters — needs "
                            + _HINTS["webhook_token"])
        token = settings.telegram_bot_token.get_secret_value() if settings.telegram_bot_token else ""
        if not re.fullmatch(r"\d+:[A-Za-z0-9_-]{20,}", token):
            problems.append("  TELEGRAM_BOT_TOKEN: does not look like a bot token — needs the token "
                            "@BotFather gave, like 123456789:AAE...")
    for name in ("rules_file", "patterns_file", "owners_file"):
        path = getattr(settings, name)
        if path is not None and not Path(path).is_file():
            problems.append(f"  {name.upper()}: no such file {path}")
    if problems:
        raise SettingsError("Invalid settings:\n" + "\n".join(problems))
