"""The generic alert schema, for any source that is not GlitchTip.

`title` is required; everything else is optional. Documented in the README, with its limits:
the title and the short fields are refused when too long (422, as documented), the message and
the stack trace are cut (the stack keeps its head and its tail) and `count` is bounded.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bot.fingerprint import given_fingerprint, title_fingerprint
from bot.ingest import COUNT_MAX, STACK_MAX, TITLE_MAX, URL_MAX, CappedMessage, ParsedPayload, cut_middle
from bot.models import Alert, AlertKind

LEVELS = ("fatal", "critical", "error", "warning", "info", "debug")


class GenericAlert(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    title: str = Field(min_length=1, max_length=TITLE_MAX)
    message: CappedMessage | None = None
    level: str | None = Field(None, max_length=20)
    project: str | None = Field(None, max_length=200)
    environment: str | None = Field(None, max_length=100)
    release: str | None = Field(None, max_length=200)
    server: str | None = Field(None, max_length=200)
    url: str | None = Field(None, max_length=URL_MAX)
    stacktrace: str | list[str] | None = None
    count: int = Field(1, ge=1, le=COUNT_MAX)
    fingerprint: str | None = Field(None, min_length=1, max_length=500)

    @field_validator("level")
    @classmethod
    def _known_level(cls, value: str | None) -> str | None:
        if value is None:
            return None
        level = value.lower()
        if level == "critical":
            level = "fatal"
        if level == "warn":
            level = "warning"
        if level not in LEVELS:
            raise ValueError(f"must be one of {', '.join(LEVELS)}")
        return level

    @field_validator("count", mode="before")
    @classmethod
    def _whole_number(cls, value: object) -> object:
        # pydantic's lax mode reads `true` as 1; a sender that sends a bool has a bug worth hearing about.
        if isinstance(value, bool):
            raise ValueError("must be a whole number, not true/false")
        return value

    def stack(self) -> str:
        """The stack trace as one string, cut to STACK_MAX keeping both ends."""
        stack = "\n".join(self.stacktrace) if isinstance(self.stacktrace, list) else (self.stacktrace or "")
        return cut_middle(stack, STACK_MAX)

    def to_alert(self) -> Alert:
        fingerprint = (
            given_fingerprint(self.fingerprint, self.project)
            if self.fingerprint
            else title_fingerprint(self.title, self.project, self.environment)
        )
        return Alert(
            source="generic",
            kind=AlertKind.ERROR,
            title=self.title,
            fingerprint=fingerprint,
            message=self.message or "",
            level=self.level,
            project=self.project,
            environment=self.environment,
            release=self.release,
            server=self.server,
            url=self.url,
            stacktrace=self.stack(),
            count=self.count,
        )


def parse_generic(data: object) -> ParsedPayload:
    return ParsedPayload(alerts=[GenericAlert.model_validate(data).to_alert()])
