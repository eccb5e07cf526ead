"""The values the emulator hands out: stored messages, recorded calls and observer events.

They live apart from the server so that everything reading them (tests, the demo's
printer in :mod:`.render`, the HTTP control API) needs only plain dataclasses, and so that
each of the emulator's parts can share them without importing one another.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

EventKind = Literal["new", "edit", "delete", "answer", "message", "press"]


@dataclass
class StoredMessage:
    """The emulator's current view of one message (bot's or user's).

    ``text`` is exactly what was sent (HTML markup included, so tests can assert on
    formatting); ``plain_text`` is what a user sees. ``history`` holds every text the
    message has had, oldest first, the current one last.
    """

    chat_id: int
    message_id: int
    date: int
    sender: dict[str, Any]
    chat: dict[str, Any]
    text: str
    plain_text: str
    parse_mode: str | None
    entities: list[dict[str, Any]]
    reply_markup: dict[str, Any] | None
    from_bot: bool
    reply_to_message_id: int | None = None
    edit_count: int = 0
    edit_date: int | None = None
    history: list[str] = field(default_factory=list)
    deleted: bool = False
    #: a photo or document message: ``text``/``plain_text`` hold its caption ("" when none)
    media: StoredFile | None = None

    @property
    def buttons(self) -> list[list[dict[str, Any]]]:
        """Inline keyboard rows (empty when there is none)."""
        if not self.reply_markup:
            return []
        return list(self.reply_markup.get("inline_keyboard") or [])

    @property
    def button_texts(self) -> list[str]:
        """Labels of all inline buttons, row by row."""
        return [b.get("text", "") for row in self.buttons for b in row]

    def find_button(self, data: str) -> dict[str, Any] | None:
        """The inline button whose callback_data is ``data``."""
        for row in self.buttons:
            for button in row:
                if button.get("callback_data") == data:
                    return button
        return None

    def to_api(self, reply_to: StoredMessage | None = None) -> dict[str, Any]:
        """The Bot API ``Message`` object, as aiogram expects to parse it."""
        msg: dict[str, Any] = {
            "message_id": self.message_id,
            "from": self.sender,
            "chat": self.chat,
            "date": self.date,
        }
        if self.media is None:
            msg["text"] = self.plain_text
            if self.entities:
                msg["entities"] = self.entities
        else:
            msg.update(self.media.to_api())
            if self.plain_text:
                msg["caption"] = self.plain_text
            if self.entities:
                msg["caption_entities"] = self.entities
        if self.edit_date is not None:
            msg["edit_date"] = self.edit_date
        if self.reply_markup and "inline_keyboard" in self.reply_markup:
            msg["reply_markup"] = self.reply_markup
        if reply_to is not None:
            msg["reply_to_message"] = reply_to.to_api()
        return msg

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state for the HTTP control API (a file's bytes are fetched apart: ``/_emulator/file``)."""
        state = asdict(self)
        if self.media is not None:
            state["media"] = self.media.to_dict()
        return state


@dataclass(frozen=True)
class UploadedFile:
    """A file part of a multipart request, as the bot uploaded it."""

    filename: str
    content: bytes = field(repr=False)

    def __str__(self) -> str:
        return f"<file {self.filename}>"


@dataclass
class StoredFile:
    """The photo or document of a message: what Telegram keeps, bytes included (for tests)."""

    kind: Literal["photo", "document"]
    file_id: str
    file_unique_id: str
    file_name: str
    mime_type: str
    content: bytes = field(repr=False)
    width: int = 0  # photos only
    height: int = 0

    @property
    def file_size(self) -> int:
        return len(self.content)

    def to_api(self) -> dict[str, Any]:
        """The ``photo`` (sizes, largest last) or ``document`` field of a Bot API ``Message``."""
        ids = {"file_id": self.file_id, "file_unique_id": self.file_unique_id, "file_size": self.file_size}
        if self.kind == "photo":
            return {"photo": [{**ids, "width": self.width, "height": self.height}]}
        return {"document": {**ids, "file_name": self.file_name, "mime_type": self.mime_type}}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, without the bytes."""
        return {"kind": self.kind, "file_id": self.file_id, "file_name": self.file_name, "mime_type": self.mime_type,
                "file_size": self.file_size, "width": self.width, "height": self.height}


@dataclass(frozen=True)
class ApiCall:
    """One Bot API request as received: what was asked and how it was answered."""

    method: str
    params: dict[str, Any]
    token: str
    time: float  # wall clock (time.time()) when the request arrived
    duration: float  # seconds until the answer (long polls included)
    status: int  # HTTP status of the answer
    description: str | None = None  # error description when not ok

    @property
    def ok(self) -> bool:
        return self.status == 200

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


@dataclass(frozen=True)
class EmulatorEvent:
    """What ``on_event`` observers receive: one visible thing happening in the chat.

    kinds: ``new`` / ``edit`` / ``delete`` (bot changed a message), ``answer`` (bot
    answered a callback query), ``message`` / ``press`` (a user wrote / pressed a button).
    """

    kind: EventKind
    chat_id: int | None = None
    message_id: int | None = None
    text: str | None = None  # message text as sent (HTML included) / answer text
    plain_text: str | None = None
    parse_mode: str | None = None
    reply_markup: dict[str, Any] | None = None
    markup_only: bool = False  # an edit that changed only the keyboard
    user_id: int | None = None
    user_name: str | None = None
    data: str | None = None  # callback_data of a pressed button
    button_text: str | None = None
    callback_query_id: str | None = None
    show_alert: bool = False
    attachment: str | None = None  # a new photo or document: "photo chart.png, 41 KB"
    time: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CallbackQuery:
    """A button press waiting for (or holding) the bot's answerCallbackQuery.

    ``created`` is read from the emulator's clock, so a test can age a query without sleeping.
    """

    id: str
    chat_id: int
    message_id: int
    user_id: int
    data: str
    created: float
    answer: dict[str, Any] | None = None
