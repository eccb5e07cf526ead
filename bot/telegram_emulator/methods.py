"""The Bot API methods the emulator answers, and what each one does to the chat.

Each method takes the decoded parameters, validates them (:mod:`.validation`), changes
:class:`ChatState` and returns the ``result`` Telegram would; a refusal is an
:class:`ApiError`. The transport around them (HTTP, tokens, faults, the call log) is in
:mod:`.transport`, so a method is only Telegram's behaviour. To emulate another method,
add it here and to the table in :meth:`BotMethods.__init__`.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol

from .changes import ChangeSignal, EventFeed
from .errors import ApiError, bad_request
from .media import check_document, mime_type, photo_size, render_caption, uploaded_file
from .models import EmulatorEvent, StoredFile, StoredMessage
from .polling import UpdatePoller
from .state import ChatState, commands_key
from .validation import (
    CHAT_ACTIONS,
    chat_id_of,
    editable_message,
    render_text,
    reply_markup_of,
    valid_command_name,
)

MethodHandler = Callable[[dict[str, Any]], Awaitable[Any]]

_QUERY_INVALID = "Bad Request: query is too old and response timeout expired or query ID is invalid"
_NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are exactly "
    "the same as a current content and reply markup of the message"
)
_MAX_ANSWER_TEXT = 200
_MAX_COMMAND_DESCRIPTION = 256


class MethodSettings(Protocol):
    """Settings the methods read on every call, so a test can change them on a running emulator."""

    strict_html: bool
    query_ttl: float


class BotMethods:
    """Telegram's behaviour for each supported method, looked up by its (case-insensitive) name."""

    def __init__(
        self,
        state: ChatState,
        poller: UpdatePoller,
        feed: EventFeed,
        signal: ChangeSignal,
        settings: MethodSettings,
        clock: Callable[[], float],
    ) -> None:
        self._state = state
        self._feed = feed
        self._signal = signal
        self._settings = settings
        self._clock = clock
        self._file_numbers = itertools.count(1)
        self._handlers: dict[str, MethodHandler] = {
            "getMe": self.get_me,
            "deleteWebhook": poller.delete_webhook,
            "getWebhookInfo": poller.get_webhook_info,
            "getUpdates": poller.get_updates,
            "sendMessage": self.send_message,
            "sendPhoto": self.send_photo,
            "sendDocument": self.send_document,
            "editMessageText": self.edit_message_text,
            "editMessageReplyMarkup": self.edit_message_reply_markup,
            "deleteMessage": self.delete_message,
            "answerCallbackQuery": self.answer_callback_query,
            "setMyCommands": self.set_my_commands,
            "getMyCommands": self.get_my_commands,
            "deleteMyCommands": self.delete_my_commands,
            "sendChatAction": self.send_chat_action,
        }
        # Telegram method names are case-insensitive.
        self._names = {name.lower(): name for name in self._handlers}

    def canonical_name(self, asked: str) -> str:
        """``SENDMESSAGE`` → ``sendMessage``; an unknown name is returned as asked."""
        return self._names.get(asked.lower(), asked)

    def handler(self, method: str) -> MethodHandler | None:
        """The handler for a canonical method name, None if the emulator does not know it."""
        return self._handlers.get(method)

    # ------------------------------------------------------------------ the bot itself

    async def get_me(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            **self._state.bot_user(),
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }

    # ------------------------------------------------------------------ messages

    async def send_message(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = chat_id_of(params, self._state)
        rendered = render_text(params, strict_html=self._settings.strict_html)
        return self._store_sent(chat_id, params, rendered.text, rendered.plain, rendered.parse_mode,
                                rendered.entities)

    async def send_photo(self, params: dict[str, Any]) -> dict[str, Any]:
        """A photo (PNG or JPEG) with an optional caption; Telegram's size and dimension limits apply."""
        chat_id = chat_id_of(params, self._state)
        upload = uploaded_file(params, "photo")
        width, height = photo_size(upload)
        return self._send_file(chat_id, params, self._stored_file("photo", upload.filename, upload.content,
                                                                   width, height))

    async def send_document(self, params: dict[str, Any]) -> dict[str, Any]:
        """Any file up to 50 MB, with an optional caption."""
        chat_id = chat_id_of(params, self._state)
        upload = uploaded_file(params, "document")
        check_document(upload)
        return self._send_file(chat_id, params, self._stored_file("document", upload.filename, upload.content))

    def _stored_file(
        self, kind: Literal["photo", "document"], filename: str, content: bytes, width: int = 0, height: int = 0
    ) -> StoredFile:
        number = next(self._file_numbers)
        return StoredFile(kind=kind, file_id=f"emu-{kind}-{number}", file_unique_id=f"emu{number}",
                          file_name=filename, mime_type=mime_type(filename), content=content, width=width,
                          height=height)

    def _send_file(self, chat_id: int, params: dict[str, Any], media: StoredFile) -> dict[str, Any]:
        """Store a photo or document message; its caption is its text, as a user sees it."""
        caption, plain, entities = render_caption(params, strict_html=self._settings.strict_html)
        return self._store_sent(chat_id, params, caption, plain, params.get("parse_mode") or None, entities,
                                media=media)

    def _store_sent(
        self, chat_id: int, params: dict[str, Any], text: str, plain: str, parse_mode: str | None,
        entities: Any, *, media: StoredFile | None = None,
    ) -> dict[str, Any]:
        """A message the bot sent (text, or a file with its caption): stored, announced, answered."""
        markup = reply_markup_of(params)
        msg = self._state.store(
            chat_id,
            sender=self._state.bot_user(),
            text=text,
            plain_text=plain,
            parse_mode=parse_mode,
            entities=entities,
            reply_markup=markup,
            from_bot=True,
            reply_to_message_id=self._reply_target(chat_id, params),
            media=media,
        )
        attachment = (f"{media.kind} {media.file_name}, {max(1, round(media.file_size / 1024))} KB"
                      if media is not None else None)
        self._feed.emit(EmulatorEvent(kind="new", chat_id=chat_id, message_id=msg.message_id, text=text,
                                      plain_text=plain, parse_mode=parse_mode, reply_markup=markup,
                                      attachment=attachment))
        return self._state.message_api(msg)

    def _reply_target(self, chat_id: int, params: dict[str, Any]) -> int | None:
        """The message being replied to (old-style parameter or ``reply_parameters``)."""
        reply_to = params.get("reply_to_message_id")
        allow_missing = bool(params.get("allow_sending_without_reply"))
        reply_parameters = params.get("reply_parameters")
        if isinstance(reply_parameters, dict):
            reply_to = reply_parameters.get("message_id")
            allow_missing = bool(reply_parameters.get("allow_sending_without_reply"))
        if reply_to is not None and (not isinstance(reply_to, int) or self._state.find(chat_id, reply_to) is None):
            if not allow_missing:
                raise bad_request("message to be replied not found")
            reply_to = None
        return reply_to

    async def edit_message_text(self, params: dict[str, Any]) -> dict[str, Any]:
        rendered = render_text(params, strict_html=self._settings.strict_html)
        msg = editable_message(params, self._state)
        if msg.media is not None:
            raise bad_request("there is no text in the message to edit")
        # Like Telegram: an edit without reply_markup removes the inline keyboard.
        markup = reply_markup_of(params)
        if rendered.plain == msg.plain_text and rendered.entities == msg.entities and markup == msg.reply_markup:
            raise ApiError(400, _NOT_MODIFIED)
        msg.text, msg.plain_text = rendered.text, rendered.plain
        msg.parse_mode, msg.entities = rendered.parse_mode, rendered.entities
        msg.history.append(rendered.text)
        return self._edited(msg, markup, markup_only=False)

    async def edit_message_reply_markup(self, params: dict[str, Any]) -> dict[str, Any]:
        msg = editable_message(params, self._state)
        markup = reply_markup_of(params)
        if markup == msg.reply_markup:
            raise ApiError(400, _NOT_MODIFIED)
        return self._edited(msg, markup, markup_only=True)

    def _edited(self, msg: StoredMessage, markup: dict[str, Any] | None, *, markup_only: bool) -> dict[str, Any]:
        """Finish an edit: the new keyboard, the edit stamp, the event; returns the edited Message."""
        msg.reply_markup = markup
        msg.edit_count += 1
        msg.edit_date = int(time.time())
        self._feed.emit(
            EmulatorEvent(
                kind="edit",
                chat_id=msg.chat_id,
                message_id=msg.message_id,
                text=msg.text,
                plain_text=msg.plain_text,
                parse_mode=msg.parse_mode,
                reply_markup=markup,
                markup_only=markup_only,
            )
        )
        return self._state.message_api(msg)

    async def delete_message(self, params: dict[str, Any]) -> bool:
        chat_id = chat_id_of(params, self._state)
        message_id = params.get("message_id")
        msg = self._state.find(chat_id, message_id) if isinstance(message_id, int) else None
        if msg is None:
            raise bad_request("message to delete not found")
        msg.deleted = True
        self._feed.emit(EmulatorEvent(kind="delete", chat_id=chat_id, message_id=msg.message_id))
        return True

    async def send_chat_action(self, params: dict[str, Any]) -> bool:
        chat_id_of(params, self._state)
        if params.get("action") not in CHAT_ACTIONS:
            raise bad_request("wrong parameter action in request")
        return True

    # ------------------------------------------------------------------ button presses

    async def answer_callback_query(self, params: dict[str, Any]) -> bool:
        """Answer once, within ``query_ttl`` of the press; later or twice is "query is too old"."""
        query = self._state.queries.get(str(params.get("callback_query_id", "")))
        if query is None or query.answer is not None or self._clock() - query.created > self._settings.query_ttl:
            raise ApiError(400, _QUERY_INVALID)
        text = params.get("text")
        if isinstance(text, str) and len(text) > _MAX_ANSWER_TEXT:
            raise bad_request("MESSAGE_TOO_LONG")
        show_alert = bool(params.get("show_alert"))
        query.answer = {
            "text": text,
            "show_alert": show_alert,
            "url": params.get("url"),
            "cache_time": params.get("cache_time"),
        }
        self._feed.emit(
            EmulatorEvent(
                kind="answer",
                chat_id=query.chat_id,
                message_id=query.message_id,
                text=text,
                user_id=query.user_id,
                data=query.data,
                callback_query_id=query.id,
                show_alert=show_alert,
            )
        )
        return True

    # ------------------------------------------------------------------ the command menu

    async def set_my_commands(self, params: dict[str, Any]) -> bool:
        commands = params.get("commands")
        if not isinstance(commands, list):
            raise bad_request("can't parse commands JSON object")
        for command in commands:
            name = command.get("command") if isinstance(command, dict) else None
            description = command.get("description") if isinstance(command, dict) else None
            if not isinstance(name, str) or not valid_command_name(name):
                raise bad_request("BOT_COMMAND_INVALID")
            if not isinstance(description, str) or not 1 <= len(description) <= _MAX_COMMAND_DESCRIPTION:
                raise bad_request("BOT_COMMAND_DESCRIPTION_INVALID")
        key = commands_key(params.get("scope"), params.get("language_code"))
        self._state.commands[key] = [{"command": c["command"], "description": c["description"]} for c in commands]
        self._signal.notify()
        return True

    async def get_my_commands(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        return self._state.commands_for(params.get("scope"), params.get("language_code"))

    async def delete_my_commands(self, params: dict[str, Any]) -> bool:
        self._state.commands.pop(commands_key(params.get("scope"), params.get("language_code")), None)
        return True
