"""Telegram's text rules, reimplemented so the emulator rejects what Telegram rejects.

Pure functions, no I/O: the HTML ``parse_mode`` parser (a port of the rules of tdlib's
``parse_html``, which the Bot API server runs), UTF-16 length counting, whitespace
trimming, bot-command entities for user messages, and inline-keyboard validation.
Getting these exactly right matters more than anything else in the emulator: an
escaping bug that only shows up as a 400 from the real Telegram at 3 a.m. is what the
end-to-end tests exist to catch.
"""

from __future__ import annotations

import re
from typing import Any

MAX_MESSAGE_UTF16 = 4096
MAX_CALLBACK_DATA_BYTES = 64

_SPACE = " \t\r\n\v\f"
_SUPPORTED_TAGS = frozenset(
    [
        "a",
        "b",
        "strong",
        "i",
        "em",
        "u",
        "ins",
        "s",
        "strike",
        "del",
        "code",
        "pre",
        "tg-spoiler",
        "span",
        "blockquote",
        "tg-emoji",
    ]
)
_TAG_ENTITY = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "tg-spoiler": "spoiler",
    "span": "spoiler",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
}
_NAMED_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
# Strict form: what a correct escaper (html.escape, aiogram's html_decoration) emits.
_STRICT_ENTITY = re.compile(r"&(?:(lt|gt|amp|quot);|#([0-9]{1,7});|#[xX]([0-9a-fA-F]{1,6});)")
_BOT_COMMAND = re.compile(r"(?<![\w/])/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{3,32})?")

_BUTTON_ACTIONS = (
    "callback_data",
    "url",
    "switch_inline_query",
    "switch_inline_query_current_chat",
    "switch_inline_query_chosen_chat",
    "login_url",
    "web_app",
    "callback_game",
    "pay",
    "copy_text",
)


class HTMLParseError(ValueError):
    """The text is not valid Telegram HTML; str(exc) is tdlib's wording (without the prefix)."""


class MarkupError(ValueError):
    """A reply_markup Telegram would refuse; str(exc) is the full API description."""


_TAG_OR_ENTITY = re.compile(r"[<&]")


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units: the unit of every Telegram limit and entity offset."""
    return len(text.encode("utf-16-le", errors="surrogatepass")) // 2


def _byte_offset(text: str, index: int) -> int:
    """tdlib reports positions as UTF-8 byte offsets into the source text."""
    return len(text[:index].encode("utf-8", errors="surrogatepass"))


def _decode_entity_lenient(text: str, pos: int) -> tuple[str, int] | None:
    """tdlib's ``decode_html_entity``: ``(char, next_pos)`` or None (the ``&`` is then literal)."""
    end = pos + 1
    n = len(text)
    if end < n and text[end] == "#":
        end += 1
        value = 0
        if end < n and text[end] in "xX":
            end += 1
            start = end
            while end < n and text[end] in "0123456789abcdefABCDEF":
                end += 1
            if start < end:
                value = int(text[start:end], 16)
        else:
            start = end
            while end < n and text[end].isdigit() and text[end].isascii():
                end += 1
            if start < end:
                value = int(text[start:end])
        if value == 0 or value >= 0x10FFFF or end - pos >= 10:
            return None
        char = chr(value)
    else:
        while end < n and text[end].isascii() and text[end].isalpha():
            end += 1
        char_or_none = _NAMED_ENTITIES.get(text[pos + 1 : end])
        if char_or_none is None:
            return None
        char = char_or_none
    if end < n and text[end] == ";":
        end += 1
    return char, end


def _decode_entity_strict(text: str, pos: int) -> tuple[str, int] | None:
    """Only complete, ``;``-terminated references count; anything else is an unescaped ``&``."""
    m = _STRICT_ENTITY.match(text, pos)
    if m is None:
        return None
    named, dec, hexa = m.groups()
    if named is not None:
        char = _NAMED_ENTITIES[named]
    else:
        value = int(dec) if dec is not None else int(hexa, 16)
        if value == 0 or value >= 0x10FFFF:
            return None
        char = chr(value)
    return char, m.end()


class _Open:
    __slots__ = ("name", "argument", "utf16_start", "language")
    # For <pre>, ``language`` is filled in by a nested <code class="language-x">.

    def __init__(self, name: str, argument: str, utf16_start: int) -> None:
        self.name = name
        self.argument = argument
        self.utf16_start = utf16_start
        self.language = ""


def parse_html(text: str, *, strict: bool = True) -> tuple[str, list[dict[str, Any]]]:
    """Parse Telegram-flavoured HTML into ``(plain_text, entities)`` like the Bot API does.

    Tags are removed, entities decoded, and Bot API ``MessageEntity`` dicts produced with
    UTF-16 offsets. Errors carry tdlib's messages ("Unsupported start tag \\"br\\" at byte
    offset 5", "Can't find end tag corresponding to start tag \\"b\\"", ...).

    ``strict=True`` additionally refuses a bare ``&`` that does not start a complete
    ``&...;`` reference. Real Telegram keeps such an ``&`` literally, but a bot that
    lets one through has an escaping bug that a ``<`` in the same spot would turn into
    a hard failure, so the emulator flags it by default.
    """
    decode = _decode_entity_strict if strict else _decode_entity_lenient
    out: list[str] = []
    utf16 = 0
    stack: list[_Open] = []
    entities: list[dict[str, Any]] = []
    n = len(text)

    def at(k: int) -> str:
        return text[k] if k < n else ""

    i = 0
    while i < n:
        c = text[i]
        if c == "&":
            decoded = decode(text, i)
            if decoded is not None:
                char, i = decoded
                out.append(char)
                utf16 += utf16_len(char)
                continue
            if strict:
                raise HTMLParseError(f'Unsupported HTML entity or unescaped "&" at byte offset {_byte_offset(text, i)}')
        if c != "<":
            # Plain text up to the next tag or entity, as one run (the same as char by char, cheaper).
            special = _TAG_OR_ENTITY.search(text, i + 1)
            end = special.start() if special else n
            out.append(text[i:end])
            utf16 += utf16_len(text[i:end])
            i = end
            continue

        begin = i
        i += 1
        if at(i) != "/":
            while at(i) and at(i) not in _SPACE and at(i) != ">":
                i += 1
            if not at(i):
                raise HTMLParseError(f"Unclosed start tag at byte offset {_byte_offset(text, begin)}")
            tag = text[begin + 1 : i].lower()
            if tag not in _SUPPORTED_TAGS:
                raise HTMLParseError(f'Unsupported start tag "{tag}" at byte offset {_byte_offset(text, begin)}')
            argument = ""
            language = ""
            while at(i) != ">":
                while at(i) and at(i) in _SPACE:
                    i += 1
                if at(i) == ">":
                    break
                attr_begin = i
                while at(i) and at(i) not in _SPACE and at(i) not in "=>":
                    i += 1
                attr = text[attr_begin:i].lower()
                if not attr:
                    raise HTMLParseError(
                        f'Empty attribute name in the tag "{tag}" at byte offset {_byte_offset(text, begin)}'
                    )
                while at(i) and at(i) in _SPACE:
                    i += 1
                if at(i) != "=":
                    if tag == "blockquote" and attr == "expandable":
                        argument = "expandable"
                        continue
                    raise HTMLParseError(
                        "Expected equal sign in declaration of an attribute of the tag "
                        f'"{tag}" at byte offset {_byte_offset(text, begin)}'
                    )
                i += 1
                while at(i) and at(i) in _SPACE:
                    i += 1
                if not at(i):
                    raise HTMLParseError(f'Unclosed start tag "{tag}" at byte offset {_byte_offset(text, begin)}')
                value_chars: list[str] = []
                if at(i) not in "'\"":
                    token_begin = i
                    while at(i) and (at(i).isalnum() or at(i) in ".-"):
                        i += 1
                    value = text[token_begin:i].lower()
                    if at(i) and at(i) not in _SPACE and at(i) != ">":
                        raise HTMLParseError(
                            f"Unexpected end of name token at byte offset {_byte_offset(text, token_begin)}"
                        )
                else:
                    quote = text[i]
                    i += 1
                    while at(i) and at(i) != quote:
                        if at(i) == "&":
                            decoded = _decode_entity_lenient(text, i)
                            if decoded is not None:
                                value_chars.append(decoded[0])
                                i = decoded[1]
                                continue
                        value_chars.append(text[i])
                        i += 1
                    if at(i) == quote:
                        i += 1
                    value = "".join(value_chars)
                if not at(i):
                    raise HTMLParseError(f"Unclosed start tag at byte offset {_byte_offset(text, begin)}")
                if tag == "a" and attr == "href":
                    argument = value
                elif tag == "code" and attr == "class" and value.startswith("language-"):
                    language = value[len("language-") :]
                elif tag == "span" and attr == "class" and value.startswith("tg-"):
                    argument = value[3:]
                elif tag == "tg-emoji" and attr == "emoji-id":
                    argument = value
            if tag == "span" and argument != "spoiler":
                raise HTMLParseError(
                    f'Tag "span" must have class "tg-spoiler" at byte offset {_byte_offset(text, begin)}'
                )
            opened = _Open(tag, argument, utf16)
            opened.language = language
            stack.append(opened)
            i += 1  # past '>'
            continue

        # end tag
        if not stack:
            raise HTMLParseError(f"Unexpected end tag at byte offset {_byte_offset(text, begin)}")
        i += 1
        name_begin = i
        while at(i) and at(i) not in _SPACE and at(i) != ">":
            i += 1
        end_name = text[name_begin:i].lower()
        while at(i) and at(i) in _SPACE:
            i += 1
        if at(i) != ">":
            raise HTMLParseError(f"Unclosed end tag at byte offset {_byte_offset(text, begin)}")
        i += 1
        opened = stack.pop()
        if end_name and end_name != opened.name:
            raise HTMLParseError(
                f"Unmatched end tag at byte offset {_byte_offset(text, begin)}, "
                f'expected "</{opened.name}>", found "</{end_name}>"'
            )
        length = utf16 - opened.utf16_start
        if length <= 0:
            continue
        entity = _make_entity(opened, length, "".join(out), stack[-1] if stack else None)
        if entity is not None:
            entities.append(entity)

    if stack:
        raise HTMLParseError(f'Can\'t find end tag corresponding to start tag "{stack[-1].name}"')
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return "".join(out), entities


def _make_entity(opened: _Open, length: int, plain_so_far: str, parent: _Open | None) -> dict[str, Any] | None:
    """Turn a closed tag into a MessageEntity dict (None for tags that produce nothing)."""
    entity: dict[str, Any] = {"offset": opened.utf16_start, "length": length}
    name = opened.name
    if name == "a":
        url = opened.argument or _utf16_slice(plain_so_far, opened.utf16_start, length)
        if not url:
            return None
        entity.update(type="text_link", url=url)
    elif name == "tg-emoji":
        if not opened.argument:
            return None
        entity.update(type="custom_emoji", custom_emoji_id=opened.argument)
    elif name == "blockquote":
        entity["type"] = "expandable_blockquote" if opened.argument == "expandable" else "blockquote"
    elif (
        name == "code"
        and opened.language
        and parent is not None
        and parent.name == "pre"
        and (parent.utf16_start == opened.utf16_start)
    ):
        # <pre><code class="language-x"> is one pre entity carrying a language.
        parent.language = opened.language
        return None
    elif name == "pre" and opened.language:
        entity.update(type="pre", language=opened.language)
    else:
        entity["type"] = _TAG_ENTITY[name]
    return entity


def _utf16_slice(text: str, offset: int, length: int) -> str:
    raw = text.encode("utf-16-le", errors="surrogatepass")
    return raw[offset * 2 : (offset + length) * 2].decode("utf-16-le", errors="surrogatepass")


def trim(text: str, entities: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """Strip leading/trailing whitespace like Telegram does, keeping entities aligned."""
    stripped_left = text.lstrip()
    lead = utf16_len(text) - utf16_len(stripped_left)
    result = stripped_left.rstrip()
    total = utf16_len(result)
    fixed: list[dict[str, Any]] = []
    for e in entities:
        start = max(0, e["offset"] - lead)
        end = min(total, e["offset"] + e["length"] - lead)
        if end > start:
            fixed.append({**e, "offset": start, "length": end - start})
    return result, fixed


def strip_html(text: str) -> str:
    """Best-effort plain text of an HTML message, for terminals; never raises."""
    try:
        return parse_html(text, strict=False)[0]
    except HTMLParseError:
        return text


def bot_command_entities(text: str) -> list[dict[str, Any]]:
    """``bot_command`` entities Telegram attaches to user messages such as ``/start@my_bot``."""
    return [
        {
            "type": "bot_command",
            "offset": utf16_len(text[: m.start()]),
            "length": utf16_len(m.group(0)),
        }
        for m in _BOT_COMMAND.finditer(text)
    ]


def validate_reply_markup(markup: Any) -> dict[str, Any] | None:
    """Check a (decoded) reply_markup the way Telegram does; return it normalised or raise.

    Only inline keyboards are validated in depth: they are what a chatops bot lives on,
    and the 64-byte ``callback_data`` limit is the classic production-only failure.
    """
    if markup is None:
        return None
    if not isinstance(markup, dict):
        raise MarkupError("Bad Request: can't parse reply keyboard markup JSON object")
    if "inline_keyboard" not in markup:
        return markup
    rows = markup["inline_keyboard"]
    if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
        raise MarkupError(
            'Bad Request: field "inline_keyboard" of the InlineKeyboardMarkup should be an Array of Arrays'
        )
    for row in rows:
        for button in row:
            if not isinstance(button, dict):
                raise MarkupError("Bad Request: can't parse inline keyboard button: Object expected")
            if not isinstance(button.get("text"), str):
                raise MarkupError(
                    'Bad Request: can\'t parse inline keyboard button: Field "text" must be of type String'
                )
            actions = [k for k in _BUTTON_ACTIONS if k in button]
            if not actions:
                raise MarkupError(
                    "Bad Request: can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard"
                )
            if "callback_data" in button:
                data = button["callback_data"]
                if not isinstance(data, str) or not 1 <= len(data.encode("utf-8")) <= MAX_CALLBACK_DATA_BYTES:
                    raise MarkupError("Bad Request: BUTTON_DATA_INVALID")
            if "url" in button:
                url = button["url"]
                if not isinstance(url, str) or not re.match(r"^(https?|tg)://\S+$", url):
                    raise MarkupError(f"Bad Request: inline keyboard button URL '{url}' is invalid: Wrong HTTP URL")
    return markup
