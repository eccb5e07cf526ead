"""The GitHub client against the fake GitHub on 127.0.0.1: answers parsed, errors by kind, with
GitHub's own message, rate limits with how long to wait, and the token never in an error."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from bot.github.api import FailureKind, GitHubClient, GitHubError
from tests.conftest import free_port
from tests.github_fake import NO_PERMISSION, REPO, TOKEN, FakeGitHub


@pytest.fixture
async def fake():
    server = await FakeGitHub().start()
    yield server
    await server.stop()


@pytest.fixture
async def client(fake):
    made = GitHubClient(fake.base_url, TOKEN, timeout_s=2)
    yield made
    await made.aclose()


async def refused(call) -> GitHubError:
    with pytest.raises(GitHubError) as caught:
        await call
    assert TOKEN not in str(caught.value)
    return caught.value


async def test_create_issue_sends_the_token_in_a_header_and_parses_the_answer(client, fake):
    issue = await client.create_issue(REPO, "[Auto] x", "body", labels=["needs-review"], assignees=["alice"])
    assert (issue.number, issue.html_url, issue.state) == (1, "https://github.com/acme/api/issues/1", "open")
    [seen] = fake.creates()
    assert seen.authorization == f"Bearer {TOKEN}" and TOKEN not in seen.path and TOKEN not in str(seen.query)
    assert seen.body == {"title": "[Auto] x", "body": "body", "labels": ["needs-review"], "assignees": ["alice"]}


async def test_labels_and_assignees(client, fake):
    assert not await client.has_label(REPO, "needs-review")
    assert await client.create_label(REPO, "needs-review", "fbca04", "Filed by remediator")
    assert await client.has_label(REPO, "needs-review")
    assert not await client.create_label(REPO, "needs-review", "fbca04", "")  # 422 already_exists: fine
    assert await client.can_be_assigned(REPO, "alice") and not await client.can_be_assigned(REPO, "mallory")


async def test_a_4xx_carries_githubs_own_message(client, fake):
    fake.issues_write = False
    error = await refused(client.create_issue(REPO, "t", "b", labels=[], assignees=[]))
    assert (error.kind, error.status, error.message) == (FailureKind.FORBIDDEN, 403, NO_PERMISSION)
    assert not error.kind.transient
    error = await refused(client.create_issue("acme/nope", "t", "b", labels=[], assignees=[]))
    assert (error.kind, error.message) == (FailureKind.NOT_FOUND, "Not Found")
    fake.issues_write = True
    error = await refused(client.create_issue(REPO, "t", "b", labels=[], assignees=["mallory"]))
    assert error.kind is FailureKind.INVALID and error.message == "Validation Failed: Issue assignees invalid"
    bad = GitHubClient(fake.base_url, "github_pat_wrong", timeout_s=2)
    try:
        error = await refused(bad.issue(REPO, 1))
    finally:
        await bad.aclose()
    assert (error.kind, error.message) == (FailureKind.UNAUTHORIZED, "Bad credentials")


async def test_server_errors_and_outages_are_transient(client, fake):
    fake.fail(502)
    error = await refused(client.issue(REPO, 1))
    assert (error.kind, error.status) == (FailureKind.SERVER, 502) and error.kind.transient
    await fake.go_down()
    error = await refused(client.issue(REPO, 1))
    assert error.kind is FailureKind.NETWORK and error.kind.transient


async def test_a_secondary_rate_limit_says_how_long_to_wait(client, fake):
    fake.secondary_rate_limit(7)  # a 403 with Retry-After
    error = await refused(client.search_issues(f"repo:{REPO} x"))
    assert (error.kind, error.status, error.retry_after_s) == (FailureKind.RATE_LIMITED, 403, 7.0)
    assert "secondary rate limit" in error.message
    fake.secondary_rate_limit(3, status=429)
    assert (await refused(client.issue(REPO, 1))).retry_after_s == 3.0
    # Without a Retry-After, a secondary limit (said in its message) waits at least a minute.
    fake.fail(403, body={"message": "You have exceeded a secondary rate limit."})
    assert (await refused(client.issue(REPO, 1))).retry_after_s == 60.0


async def test_a_spent_primary_rate_limit_waits_until_its_reset(client, fake):
    reset = int(time.time()) + 120
    fake.fail(403, headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)},
              body={"message": "API rate limit exceeded for user ID 1."})
    error = await refused(client.issue(REPO, 1))
    assert error.kind is FailureKind.RATE_LIMITED
    assert 110 <= (error.retry_after_s or 0) <= 125


async def test_search_and_the_recent_issues_list(client, fake):
    fake.add_issue("old", "x\n\n<!-- remediator-incident: 4 -->")
    fake.add_issue("a pull request", "<!-- remediator-incident: 4 -->", pull_request=True)
    found = await client.search_issues(f'repo:{REPO} is:issue in:body "remediator-incident: 4"')
    assert [i.number for i in found.items] == [1]  # GitHub's is:issue leaves pull requests out
    recent = await client.recent_issues(REPO, datetime.now(UTC) - timedelta(minutes=1))
    assert [(i.number, i.pull_request is not None) for i in recent] == [(2, True), (1, False)]


async def test_nothing_listening_is_a_network_error():
    made = GitHubClient(f"http://127.0.0.1:{free_port()}", TOKEN, timeout_s=2)
    try:
        error = await refused(made.issue(REPO, 1))
    finally:
        await made.aclose()
    assert error.kind is FailureKind.NETWORK
