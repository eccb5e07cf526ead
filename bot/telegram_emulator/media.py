"""Telegram's checks on uploaded photos and documents, worded as Telegram words its 400s.

``sendPhoto`` and ``sendDocument`` take the file as a multipart part, either directly under
the parameter's name or, as aiogram does, as ``attach://<part>``. The limits are the Bot
API's: a photo at most 10 MB, width + height at most 10000 and a side ratio at most 20 (read
from the PNG or JPEG header, as Telegram decodes the image); a document at most 50 MB; a
caption at most 1024 characters after entity parsing.
"""

from __future__ import annotations

import mimetypes
import struct
from typing import Any, Literal

from .errors import ApiError, bad_request
from .markup import HTMLParseError, parse_html, trim, utf16_len
from .models import UploadedFile

MAX_CAPTION_UTF16 = 1024
MAX_PHOTO_BYTES = 10 * 1024 * 1024
MAX_DOCUMENT_BYTES = 50 * 1024 * 1024
MAX_PHOTO_SIDES = 10_000  # width + height
MAX_PHOTO_RATIO = 20
#: the largest request body the emulator reads: a full-size document plus the multipart framing
MAX_REQUEST_BYTES = MAX_DOCUMENT_BYTES + 1024 * 1024

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (baseline, progressive, ...) that carry the image size.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def uploaded_file(params: dict[str, Any], name: Literal["photo", "document"]) -> UploadedFile:
    """The file sent as ``params[name]``: a part of its own or ``attach://<part>``."""
    value = params.get(name)
    if isinstance(value, str) and value.startswith("attach://"):
        value = params.get(value.removeprefix("attach://"))
    if isinstance(value, UploadedFile):
        if not value.content:
            raise bad_request("file must be non-empty")
        return value
    if value is None or value == "":
        raise bad_request(f"there is no {name} in the request")
    # A file_id or URL: the emulator keeps no files from earlier uploads and fetches nothing.
    raise bad_request("wrong file identifier/HTTP URL specified")


def photo_size(upload: UploadedFile) -> tuple[int, int]:
    """Width and height of an uploaded photo, refused as Telegram refuses it."""
    if len(upload.content) > MAX_PHOTO_BYTES:
        raise bad_request("PHOTO_SAVE_FILE_INVALID")
    size = image_size(upload.content)
    if size is None:
        raise bad_request("IMAGE_PROCESS_FAILED")
    width, height = size
    if width < 1 or height < 1 or width + height > MAX_PHOTO_SIDES or max(width, height) > MAX_PHOTO_RATIO * min(
        width, height
    ):
        raise bad_request("PHOTO_INVALID_DIMENSIONS")
    return size


def check_document(upload: UploadedFile) -> None:
    if len(upload.content) > MAX_DOCUMENT_BYTES:
        raise ApiError(413, "Request Entity Too Large")


def mime_type(filename: str) -> str:
    return mimetypes.guess_type(filename)[0] or "application/octet-stream"


def render_caption(params: dict[str, Any], *, strict_html: bool) -> tuple[str, str, list[dict[str, Any]]]:
    """(caption as sent, as seen, entities); "" when there is none. At most 1024 UTF-16 units as seen."""
    caption = params.get("caption")
    if caption is None or caption == "":
        return "", "", []
    if not isinstance(caption, str):
        raise bad_request("caption must be a string")
    parse_mode = params.get("parse_mode") or None
    if parse_mode is not None and parse_mode.lower() == "html":
        try:
            plain, entities = parse_html(caption, strict=strict_html)
        except HTMLParseError as err:
            raise bad_request(f"can't parse entities: {err}") from None
    else:
        plain, entities = caption, []
    plain, entities = trim(plain, entities)
    if utf16_len(plain) > MAX_CAPTION_UTF16:
        raise bad_request("message caption is too long")
    return caption, plain, entities


def image_size(content: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR or a JPEG's start-of-frame; None for anything else."""
    if content.startswith(_PNG_SIGNATURE) and content[12:16] == b"IHDR" and len(content) >= 24:
        width, height = struct.unpack(">II", content[16:24])
        return int(width), int(height)
    if content.startswith(b"\xff\xd8"):
        return _jpeg_size(content)
    return None


def _jpeg_size(content: bytes) -> tuple[int, int] | None:
    pos = 2
    while pos + 4 <= len(content):
        if content[pos] != 0xFF:
            return None
        marker = content[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        length = struct.unpack(">H", content[pos + 2 : pos + 4])[0]
        if marker in _JPEG_SOF and pos + 9 <= len(content):
            height, width = struct.unpack(">HH", content[pos + 5 : pos + 9])
            return int(width), int(height)
        pos += 2 + length
    return None
