"""`remediator glitchtip check` as a user runs it: `python -m bot glitchtip check` in a subprocess,
against the fake GlitchTip on 127.0.0.1, with only the settings given here (no .env)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from bot.settings import Settings
from tests.conftest import free_port
from tests.glitchtip_fake import TOKEN, FakeGlitchTip

REPO = Path(__file__).resolve().parent.parent
SETTING_NAMES = {name.upper() for name in Settings.model_fields}


async def remediator(tmp_path: Path, *args: str, **settings: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SETTING_NAMES and k != "REMEDIATOR_ENV_FILE"}
    env.update(PYTHONPATH=str(REPO), **settings)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", *args, cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def fake():
    server = await FakeGlitchTip().start()
    yield server
    await server.stop()


async def test_check_prints_one_ok_line_per_question(tmp_path, fake):
    code, out, _ = await remediator(tmp_path, "glitchtip", "check", GLITCHTIP_URL=fake.base_url, GLITCHTIP_TOKEN=TOKEN)
    lines = out.splitlines()
    assert code == 0, out
    assert [line.split()[:2] for line in lines] == [["reach:", "ok"], ["auth:", "ok"], ["read:", "ok"],
                                                   ["resolve:", "ok"]]
    assert TOKEN not in out  # GlitchTip's /api/0/ echoes the token: it is never printed


async def test_check_fails_with_exit_1_and_says_which_scope_is_missing(tmp_path, fake):
    fake.scopes = ("event:read",)
    code, out, _ = await remediator(tmp_path, "glitchtip", "check", GLITCHTIP_URL=fake.base_url, GLITCHTIP_TOKEN=TOKEN)
    assert code == 1
    assert "resolve: FAILED — the token lacks event:write (403)" in out


async def test_check_says_when_nothing_answers(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    code, out, _ = await remediator(tmp_path, "glitchtip", "check", GLITCHTIP_URL=url, GLITCHTIP_TOKEN=TOKEN)
    assert code == 1 and out.startswith("reach:   FAILED")


async def test_check_without_settings_says_the_api_is_off(tmp_path):
    code, _, err = await remediator(tmp_path, "glitchtip", "check")
    assert code == 1 and "GLITCHTIP_URL and GLITCHTIP_TOKEN" in err


async def test_run_refuses_half_a_glitchtip_configuration(tmp_path, fake):
    code, _, err = await remediator(tmp_path, "run", GLITCHTIP_URL=fake.base_url)
    assert code == 2 and "GLITCHTIP_TOKEN: missing" in err
    assert fake.seen == []
