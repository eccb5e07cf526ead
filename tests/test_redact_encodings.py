"""Secrets in the places the first redaction rules missed (found by the adversarial review):
XML elements, an "=" escaped as an HTML entity, JSON or query strings URL-encoded twice, and the
two command-line tools that take a password as an argument (`redis-cli -a`, `sshpass -p`).
Ordinary text of the same shapes stays as it was."""

from __future__ import annotations

import pytest

from bot.redact import MASK, Redactor, redact

LEAKS = {
    "xml element": ("<config><password>Hunter2pw</password></config>", "<password>[REDACTED]</password>"),
    "xml element with namespace and attributes": (
        '<db:Password type="plain">s3cr3tValue</db:Password>', '<db:Password type="plain">[REDACTED]</db:Password>'),
    "xml api key": ("<ApiKey>AKx81hd9aKd</ApiKey>", "<ApiKey>[REDACTED]</ApiKey>"),
    "soap session id": ("<sessionId>00D5g000004ABCD!AQ</sessionId>", "<sessionId>[REDACTED]</sessionId>"),
    "html-escaped equals": ("GET /login?user=bob&password&#61;Hunter2pw&next=/",
                            "&password&#61;[REDACTED]&next=/"),
    "html-escaped equals, hex": ("token&#x3D;abc123def&amp;page=2", "token&#x3D;[REDACTED]&amp;page=2"),
    "double-encoded query": ("next=%2Flogin%3Fpassword%253DHunter2pw%2526a%253Db",
                             "password%253D[REDACTED]%2526a%253Db"),
    "double-encoded json": ("%257B%2522password%2522%253A%2522Hunter2pw%2522%257D",
                            "%2522password%2522%253A%2522[REDACTED]%2522"),
    "redis-cli -a": ("Command failed: redis-cli -h cache -a Hunter2pw ping", "-a [REDACTED] ping"),
    "redis-cli -a quoted": ("redis-cli -a 'my pass' --no-auth-warning info", "-a '[REDACTED]' --no"),
    "sshpass -p": ("sshpass -p Hunter2pw ssh deploy@web1", "sshpass -p [REDACTED] ssh deploy@web1"),
    "sshpass -p glued": ("sshpass -p'Hunter2pw' rsync -a x y", "sshpass -p'[REDACTED]' rsync"),
}

KEPT = [
    "<passwordPolicy>min 8</passwordPolicy>",  # the key must end the element name
    "<password>${DB_PASSWORD}</password>",  # a placeholder is worth seeing
    "<password></password>",
    "ssh -p 2222 deploy@web1",  # -p is a port everywhere else
    "tar -a -cf x.tar.gz dir",  # -a is not redis-cli's
    "rsync -a src/ dst/",
    "GET /search?q=tokens&#61;many",  # tokens= is not token=
]


@pytest.mark.parametrize(("text", "expected"), list(LEAKS.values()), ids=list(LEAKS))
def test_secret_is_masked_and_its_context_kept(text: str, expected: str) -> None:
    out = redact(text)
    assert expected in out
    assert "Hunter2pw" not in out and "s3cr3tValue" not in out


@pytest.mark.parametrize("text", KEPT)
def test_ordinary_text_of_the_same_shape_is_unchanged(text: str) -> None:
    assert redact(text) == text


@pytest.mark.parametrize("text", [t for t, _ in LEAKS.values()], ids=list(LEAKS))
def test_redacting_twice_changes_nothing_more(text: str) -> None:
    once = redact(text)
    assert redact(once) == once
    assert MASK in once


def test_the_audit_export_masks_the_same_shapes_inside_structures() -> None:
    exported = Redactor().redact_obj({"stderr": ["redis-cli -a Hunter2pw ping"], "xml": "<token>Hunter2pw</token>"})
    assert "Hunter2pw" not in repr(exported)
