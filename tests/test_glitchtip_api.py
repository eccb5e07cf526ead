"""The GlitchTip API client against the loopback fake: real answers parse, failures say what they are."""

from __future__ import annotations

import time

import pytest

from bot.glitchtip.api import FailureKind, GlitchTipClient, GlitchTipError
from bot.glitchtip.check import check_api
from bot.redact import Redactor
from tests.conftest import free_port
from tests.glitchtip_fake import TOKEN, FakeGlitchTip


@pytest.fixture
async def fake():
    server = await FakeGlitchTip().start()
    server.add_issue("1")
    yield server
    await server.stop()


@pytest.fixture
async def client(fake):
    c = GlitchTipClient(fake.base_url, TOKEN, timeout_s=2.0)
    yield c
    await c.aclose()


async def test_real_answers_parse_into_typed_models(fake, client):
    issue = await client.issue("1")
    assert issue.id == "1" and issue.count == 1 and issue.status == "unresolved"  # count arrives as "1"
    assert issue.short_id == "BOT-PROJECT-1" and issue.level == "error"
    assert issue.first_seen is not None and issue.first_seen.year == 2026
    event = await client.latest_event("1")
    frames = event.exceptions()[-1].stacktrace.frames
    assert [f.function for f in frames] == ["<module>", "connect"]  # oldest first, crashing last
    assert frames[-1].line_no == 6 and frames[-1].in_app is True
    resolved = await client.resolve("1")  # GlitchTip answers the PUT with some snake_case keys
    assert resolved.status == "resolved" and resolved.first_seen == issue.first_seen
    assert fake.puts("1") == [{"status": "resolved"}]
    assert {s.authorization for s in fake.seen} == {f"Bearer {TOKEN}"}


@pytest.mark.parametrize(("status", "kind"), [
    (401, FailureKind.UNAUTHORIZED), (403, FailureKind.FORBIDDEN), (404, FailureKind.NOT_FOUND),
    (429, FailureKind.RATE_LIMITED), (500, FailureKind.SERVER), (502, FailureKind.SERVER),
    (400, FailureKind.BAD_ANSWER),
])
async def test_each_failure_has_its_kind(fake, client, status, kind):
    fake.fail(status, retry_after="7" if status == 429 else None)
    with pytest.raises(GlitchTipError) as caught:
        await client.issue("1")
    assert caught.value.kind is kind and caught.value.status == status
    assert caught.value.kind.auth == (status in (401, 403))
    assert caught.value.kind.transient == (status in (429, 500, 502))
    if status == 429:
        assert caught.value.retry_after_s == 7


async def test_a_wrong_token_is_401_not_an_outage(fake):
    c = GlitchTipClient(fake.base_url, "not-the-token", timeout_s=2.0)
    try:
        with pytest.raises(GlitchTipError) as caught:
            await c.issue("1")
    finally:
        await c.aclose()
    assert caught.value.kind is FailureKind.UNAUTHORIZED and not caught.value.kind.transient


async def test_a_slow_answer_times_out_within_the_deadline(fake):
    fake.fail(None, delay_s=5.0)  # answers, but only after 5 s
    c = GlitchTipClient(fake.base_url, TOKEN, timeout_s=0.3)
    started = time.monotonic()
    try:
        with pytest.raises(GlitchTipError) as caught:
            await c.issue("1")
    finally:
        await c.aclose()
    assert caught.value.kind is FailureKind.TIMEOUT
    assert time.monotonic() - started < 2.0


async def test_nothing_listening_is_a_network_failure():
    c = GlitchTipClient(f"http://127.0.0.1:{free_port()}", TOKEN, timeout_s=2.0)
    try:
        with pytest.raises(GlitchTipError) as caught:
            await c.issue("1")
    finally:
        await c.aclose()
    assert caught.value.kind is FailureKind.NETWORK and caught.value.kind.transient


async def test_an_oversized_answer_is_refused(fake):
    fake.events["1"]["padding"] = "x" * 300_000
    c = GlitchTipClient(fake.base_url, TOKEN, timeout_s=2.0, max_answer_bytes=100_000)
    try:
        with pytest.raises(GlitchTipError) as caught:
            await c.latest_event("1")
    finally:
        await c.aclose()
    assert caught.value.kind is FailureKind.BAD_ANSWER and "larger than" in str(caught.value)


async def test_ids_that_are_not_digits_never_reach_a_path(client, fake):
    with pytest.raises(GlitchTipError):
        await client.issue("1/../../admin")
    with pytest.raises(GlitchTipError):
        await client.monitor("../x", "1")
    assert fake.seen == []


# ---- `remediator glitchtip check`


async def _check(base_url: str, token: str) -> list[str]:
    c = GlitchTipClient(base_url, token, timeout_s=2.0)
    try:
        return [line.render() for line in await check_api(c, Redactor().redact)]
    finally:
        await c.aclose()


async def test_check_all_ok_and_changes_nothing(fake):
    lines = await _check(fake.base_url, TOKEN)
    assert [line.split()[0] for line in lines] == ["reach:", "auth:", "read:", "resolve:"]
    assert all(" ok — " in line for line in lines), lines
    assert "event:read, event:write" in lines[1]
    assert fake.issues["1"]["status"] == "unresolved"  # the resolve probe was for issue 0
    assert fake.puts("0") == [{"status": "resolved"}] and fake.puts("1") == []


async def test_check_names_the_missing_scope(fake):
    fake.scopes = ("event:read",)
    lines = await _check(fake.base_url, TOKEN)
    assert " ok — " in lines[2]
    assert lines[3].startswith("resolve: FAILED") and "lacks event:write (403)" in lines[3]
    assert "Profile → Auth Tokens" in lines[3]


async def test_check_says_a_token_is_unknown(fake):
    lines = await _check(fake.base_url, "wrong")
    assert lines[0].startswith("reach:   ok")
    assert lines[1].startswith("auth:    FAILED") and "401" in lines[1]
    assert lines[2].startswith("read:    skipped") and lines[3].startswith("resolve: skipped")


async def test_check_says_when_nothing_answers():
    lines = await _check(f"http://127.0.0.1:{free_port()}", TOKEN)
    assert lines[0].startswith("reach:   FAILED") and "GLITCHTIP_URL" in lines[0]
    assert all("skipped" in line for line in lines[1:])
