"""`remediator github check` as a user runs it: `python -m bot github check` as its own process
(forked from the worker's preloaded interpreter, tests/forked_cli.py),
against the fake GitHub on 127.0.0.1, with only the settings given here (no .env)."""

from __future__ import annotations

import pytest

from tests.conftest import free_port
from tests.github_fake import NO_PERMISSION, REPO, TOKEN, FakeGitHub
from tests.test_glitchtip_check_cli import remediator


@pytest.fixture
async def fake():
    server = await FakeGitHub().start()
    yield server
    await server.stop()


def settings(fake: FakeGitHub, **more: str) -> dict[str, str]:
    return {"GITHUB_API_URL": fake.base_url, "GITHUB_TOKEN": TOKEN, "GITHUB_REPO": REPO, **more}


def marks(out: str) -> list[list[str]]:
    return [line.split()[:2] for line in out.splitlines()]


async def test_check_prints_one_ok_line_per_question_and_creates_nothing(forked_cli, tmp_path, fake):
    code, out, err = await remediator(forked_cli, tmp_path, "github", "check", **settings(fake))
    assert code == 0, out + err
    assert marks(out) == [["reach:", "ok"], ["token:", "ok"], ["repo:", "ok"], ["issues:", "ok"], ["labels:", "ok"]]
    assert "signed in as remediator-bot" in out and "acme/api exists" in out
    assert fake.issues() == [] and fake.repo().labels == {}  # the probes were refused as invalid: nothing made
    assert TOKEN not in out + err


async def test_a_token_without_issues_write_fails_with_githubs_message(forked_cli, tmp_path, fake):
    fake.issues_write = False
    code, out, _ = await remediator(forked_cli, tmp_path, "github", "check", **settings(fake))
    assert code == 1
    assert marks(out)[3:] == [["issues:", "FAILED"], ["labels:", "FAILED"]]
    assert NO_PERMISSION in out and "Issues: read and write" in out


async def test_a_wrong_token_fails_and_skips_the_rest(forked_cli, tmp_path, fake):
    code, out, _ = await remediator(forked_cli, tmp_path, "github", "check", **settings(fake, GITHUB_TOKEN="github_pat_wrong"))
    assert code == 1
    assert marks(out) == [["reach:", "ok"], ["token:", "FAILED"], ["repo:", "skipped"], ["issues:", "skipped"],
                          ["labels:", "skipped"]]
    assert "Bad credentials" in out


async def test_a_wrong_repository_fails(forked_cli, tmp_path, fake):
    code, out, _ = await remediator(forked_cli, tmp_path, "github", "check", **settings(fake, GITHUB_REPO="acme/nope"))
    assert code == 1 and "repo:   FAILED — acme/nope not found (404)" in out


async def test_nothing_answering_fails_at_reach(forked_cli, tmp_path):
    code, out, _ = await remediator(forked_cli, tmp_path, "github", "check", GITHUB_API_URL=f"http://127.0.0.1:{free_port()}",
                                    GITHUB_TOKEN=TOKEN, GITHUB_REPO=REPO)
    assert code == 1 and out.startswith("reach:  FAILED")


async def test_check_without_settings_says_github_is_off(forked_cli, tmp_path):
    code, _, err = await remediator(forked_cli, tmp_path, "github", "check")
    assert code == 1 and "GITHUB_REPO" in err and "GITHUB_TOKEN" in err


async def test_run_refuses_half_a_github_configuration(forked_cli, tmp_path, fake):
    code, _, err = await remediator(forked_cli, tmp_path, "run", GITHUB_REPO=REPO)
    assert code == 2 and "GITHUB_TOKEN: missing" in err
    code, _, err = await remediator(forked_cli, tmp_path, "run", GITHUB_TOKEN=TOKEN, GITHUB_REPO="not a repo")
    assert code == 2 and "GITHUB_REPO" in err and "owner/name" in err
    assert TOKEN not in err
    assert fake.seen == []
