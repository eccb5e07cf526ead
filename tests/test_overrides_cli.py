"""Issue 13: `remediator triage` honours the bot's priority overrides, so the terminal and the
chat agree. Run as a user would (`python -m bot triage` as its own process, a clean environment,
a fresh working directory); the database is read, never written or created. Each run is forked
from the one interpreter per test worker that has imported the bot and loaded its rules
(tests/forked_cli.py): the process, its environment, output and exit code are the command's own,
only the start-up is shared."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from bot.models import Actor
from bot.settings import Settings
from storage.db import Database
from storage.overrides import OverrideRepository
from tests.forked_cli import ForkedCli

REPO = Path(__file__).resolve().parent.parent
SETTING_NAMES = {name.upper() for name in Settings.model_fields}
REDIS = {"title": "Error: connect ECONNREFUSED 127.0.0.1:6379", "project": "billing-api", "environment": "production"}
ANN = Actor(111, "Ann")


def _env(database: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.upper() not in SETTING_NAMES}
    env["PYTHONPATH"] = str(REPO)
    if database is not None:
        env["DATABASE_PATH"] = str(database)
    return env


@pytest.fixture
def cli(forked_cli: ForkedCli) -> ForkedCli:
    return forked_cli  # the worker's one zygote (tests/conftest.py)


def triage(cli: ForkedCli, workdir: Path, database: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`remediator triage ARGS` in its own process, reading `database`."""
    return cli.run(["triage", *args], cwd=workdir, env=_env(database), stdin="", timeout=30)


async def with_override(path: Path, rule: str, project: str, priority: str, corrections: int) -> None:
    async with Database(path) as db:
        repo = OverrideRepository(db)
        offer = await repo.get_offer(await repo.offer(rule, project, priority, corrections, corrections + 1))
        assert offer is not None
        await repo.add(offer, ANN.name, ANN.id)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_triage_shows_the_override_the_bot_would_apply(cli: ForkedCli, tmp_path: Path) -> None:
    database = tmp_path / "bot.db"
    await with_override(database, "infra.redis-down", "billing-api", "P0", 4)
    before = digest(database)
    alerts = tmp_path / "alerts.jsonl"  # the overridden project, then another one
    alerts.write_text(json.dumps(REDIS) + "\n" + json.dumps({**REDIS, "project": "jobs"}) + "\n")
    done = triage(cli, tmp_path, database, "--file", str(alerts))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("P0 infrastructure")
    assert lines[1] == "   priority: P0 by override from 4 corrections (the rules said P1), override #1 (/overrides)"
    [other_head] = [line for line in lines[2:] if not line.startswith(" ")]
    assert other_head.startswith("P1 infrastructure") and done.stdout.count("by override") == 1

    overridden, other = (json.loads(line) for line in triage(cli, tmp_path, database, "--json", "--file", str(alerts)).stdout.splitlines())
    assert (overridden["priority"], overridden["priority_before_override"], overridden["override_id"],
            overridden["override_corrections"]) == ("P0", "P1", 1, 4)
    assert other["priority"] == "P1" and "override_id" not in other
    assert digest(database) == before  # read-only: nothing written


async def test_without_a_live_override_the_rules_alone(cli: ForkedCli, tmp_path: Path) -> None:
    """Three cases: a removed override, no database, and a file that is not a database."""
    removed = tmp_path / "removed.db"
    await with_override(removed, "infra.redis-down", "billing-api", "P0", 3)
    async with Database(removed) as db:
        assert await OverrideRepository(db).remove(1, "Bob", 222)
    missing = tmp_path / "never-created.db"
    notes = tmp_path / "notes.db"
    notes.write_text("not a database\n" * 100)
    after_removal, without_database, not_a_database = (
        triage(cli, tmp_path, database, json.dumps(REDIS)) for database in (removed, missing, notes))

    for done in (after_removal, without_database, not_a_database):
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("P1 infrastructure") and "override" not in done.stdout
    # No database: nothing to say (triaging without the bot's database is normal), and none created.
    assert without_database.stderr == "" and not missing.exists()
    # A file that cannot be read is said, once.
    [line] = not_a_database.stderr.splitlines()
    assert "cannot read the priority overrides" in line and str(notes) in line
