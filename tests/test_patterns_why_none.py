"""`remediator patterns test` says why nothing was proposed."""

from __future__ import annotations

import io
import json

from patterns.cli import test_command


def run(*texts: str) -> list[dict]:
    out = io.StringIO()
    test_command(list(texts), None, True, out=out)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_an_excluded_near_miss_names_the_pattern_and_its_guard() -> None:
    [record] = run("Error: ENOSPC: System limit for number of file watchers reached, no space left on device")
    assert record["pattern"] is None
    assert record["why_none"].startswith("cleanup_disk recognises it, but exclude[")


def test_an_injection_attempt_is_not_recognised_and_says_so() -> None:
    [record] = run("Error: Cannot find module 'lodash; rm -rf /'")
    assert record["pattern"] is None and record["argv"] == []
    assert "recognise" in record["why_none"]


def test_a_refused_value_says_which_placeholder_and_a_match_has_no_why() -> None:
    refused, ok = run("Error: Cannot find module 'evil.tgz'", "Error: Cannot find module 'express'")
    assert "{package}" in refused["refused"] and "why_none" not in refused
    assert ok["pattern"] == "npm_install_missing" and "why_none" not in ok
