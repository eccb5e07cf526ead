"""Telegram's checks on a method's parameters, worded as Telegram words its 400s.

Shared by several methods (sendMessage and editMessageText render text the same way;
every chat method checks ``chat_id`` the same way), and kept apart from them so each
method reads as "validate, change state, answer". The text rules themselves (HTML,
UTF-16 lengths, keyboards) are in :mod:`.markup`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .errors import ApiError, bad_request
from .markup import MAX_MESSAGE_UTF16, HTMLParseError, MarkupError, parse_html, trim, utf16_len, validate_reply_markup
from .models import StoredMessage
from .state import ChatState

CHAT_ACTIONS = frozenset(
    [
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    ]
)
_PARSE_MODES = ("html", "markdown", "markdownv2")


class RenderedText(NamedTuple):
    """A message text as sent and as a user sees it."""

    text: str  # as sent, markup included
    plain: str  # after entity parsing and trimming
    parse_mode: str | None
    entities: list[dict[str, Any]]


def chat_id_of(params: dict[str, Any], state: ChatState) -> int:
    """The target chat; refuses empty, unknown-shaped and migrated (group → supergroup) ids."""
    chat_id = params.get("chat_id")
    if chat_id is None or chat_id == "":
        raise bad_request("chat_id is empty")
    if not isinstance(chat_id, int) or chat_id == 0:
        raise bad_request("chat not found")
    if chat_id in state.migrated:
        raise ApiError(
            400,
            "Bad Request: group chat was upgraded to a supergroup chat",
            migrate_to_chat_id=state.migrated[chat_id],
        )
    return chat_id


def render_text(params: dict[str, Any], *, strict_html: bool) -> RenderedText:
    """Validate ``text`` + ``parse_mode`` as Telegram does: parseable, non-empty, ≤ 4096 UTF-16 units."""
    text = params.get("text")
    if not isinstance(text, str) or not text:
        raise bad_request("message text is empty")
    parse_mode = params.get("parse_mode") or None
    if parse_mode is not None and parse_mode.lower() not in _PARSE_MODES:
        raise bad_request(f"unsupported parse_mode {parse_mode!r}")
    if parse_mode is not None and parse_mode.lower() == "html":
        try:
            plain, entities = parse_html(text, strict=strict_html)
        except HTMLParseError as err:
            raise bad_request(f"can't parse entities: {err}") from None
    else:
        # Markdown modes are stored verbatim: the bot under test sends HTML.
        plain = text
        given = params.get("entities")
        entities = given if isinstance(given, list) else []
    plain, entities = trim(plain, entities)
    if not plain:
        raise bad_request("message text is empty")
    if utf16_len(plain) > MAX_MESSAGE_UTF16:
        raise bad_request("message is too long")
    return RenderedText(text, plain, parse_mode, entities)


def reply_markup_of(params: dict[str, Any]) -> dict[str, Any] | None:
    """The validated ``reply_markup`` (None when absent)."""
    try:
        return validate_reply_markup(params.get("reply_markup"))
    except MarkupError as err:
        raise ApiError(400, str(err)) from None


def editable_message(params: dict[str, Any], state: ChatState) -> StoredMessage:
    """The bot's own, not deleted message named by ``chat_id`` + ``message_id``."""
    if params.get("inline_message_id"):
        raise bad_request("message to edit not found")
    chat_id = chat_id_of(params, state)
    message_id = params.get("message_id")
    msg = state.find(chat_id, message_id) if isinstance(message_id, int) else None
    if msg is None:
        raise bad_request("message to edit not found")
    if not msg.from_bot:
        raise bad_request("message can't be edited")
    return msg


def valid_command_name(name: str) -> bool:
    """1-32 characters of lower-case ASCII letters, digits and underscores."""
    return 1 <= len(name) <= 32 and all(c.islower() or c.isdigit() or c == "_" for c in name) and name.isascii()
