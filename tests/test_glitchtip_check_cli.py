"""`remediator glitchtip check` as a user runs it: `python -m bot glitchtip check` as its own process,
against the fake GlitchTip on 127.0.0.1, with only the settings given here (no .env)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from bot.settings import Settings
from tests.conftest import free_port
from tests.forked_cli import ForkedCli
from tests.glitchtip_fake import TOKEN, FakeGlitchTip

REPO = Path(__file__).resolve().parent.parent
SETTING_NAMES = {name.upper() for name in Settings.model_fields}


async def remediator(cli: ForkedCli, tmp_path: Path, *args: str, **settings: str) -> tuple[int, str, str]:
    """`python -m bot ARGS` in its own process, forked from the worker's preloaded interpreter
    (tests/forked_cli.py), in a thread: the fake answers it meanwhile."""
    env = {k: v for k, v in os.environ.items() if k not in SETTING_NAMES and k != "REMEDIATOR_ENV_FILE"}
    env.update(PYTHONPATH=str(REPO), **settings)
    done = await asyncio.to_thread(cli.run, list(args), cwd=tmp_path, env=env, stdin="", timeout=60)
    return done.returncode, done.stdout, done.stderr


@pytest.fixture
async def fake():
    server = await FakeGlitchTip().start()
    yield server
    await server.stop()


async def test_check_prints_one_ok_line_per_question(forked_cli, tmp_path, fake):
    code, out, _ = await remediator(forked_cli, tmp_path, "glitchtip", "check", GLITCHTIP_URL=fake.base_url, GLITCHTIP_TOKEN=TOKEN)
    lines = out.splitlines()
    assert code == 0, out
    assert [line.split()[:2] for line in lines] == [["reach:", "ok"], ["auth:", "ok"], ["read:", "ok"],
                                                   ["resolve:", "ok"]]
    assert TOKEN not in out  # GlitchTip's /api/0/ echoes the token: it is never printed


async def test_check_fails_with_exit_1_and_says_which_scope_is_missing(forked_cli, tmp_path, fake):
    fake.scopes = ("event:read",)
    code, out, _ = await remediator(forked_cli, tmp_path, "glitchtip", "check", GLITCHTIP_URL=fake.base_url, GLITCHTIP_TOKEN=TOKEN)
    assert code == 1
    assert "resolve: FAILED — the token lacks event:write (403)" in out


async def test_check_says_when_nothing_answers(forked_cli, tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    code, out, _ = await remediator(forked_cli, tmp_path, "glitchtip", "check", GLITCHTIP_URL=url, GLITCHTIP_TOKEN=TOKEN)
    assert code == 1 and out.startswith("reach:   FAILED")


async def test_check_without_settings_says_the_api_is_off(forked_cli, tmp_path):
    code, _, err = await remediator(forked_cli, tmp_path, "glitchtip", "check")
    assert code == 1 and "GLITCHTIP_URL and GLITCHTIP_TOKEN" in err


async def test_run_refuses_half_a_glitchtip_configuration(forked_cli, tmp_path, fake):
    code, _, err = await remediator(forked_cli, tmp_path, "run", GLITCHTIP_URL=fake.base_url)
    assert code == 2 and "GLITCHTIP_TOKEN: missing" in err
    assert fake.seen == []
