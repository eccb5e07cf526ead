"""Issue 13: `remediator triage` honours the bot's priority overrides, so the terminal and the
chat agree. Run as a user would (`python -m bot triage` in a subprocess, a clean environment,
a fresh working directory); the database is read, never written or created."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from bot.models import Actor
from bot.settings import Settings
from storage.db import Database
from storage.overrides import OverrideRepository

REPO = Path(__file__).resolve().parent.parent
SETTING_NAMES = {name.upper() for name in Settings.model_fields}
REDIS = {"title": "Error: connect ECONNREFUSED 127.0.0.1:6379", "project": "billing-api", "environment": "production"}
ANN = Actor(111, "Ann")


def start(workdir: Path, database: Path, *args: str) -> subprocess.Popen[str]:
    """`remediator triage ARGS`, started (several run side by side: each costs an interpreter)."""
    env = {k: v for k, v in os.environ.items() if k.upper() not in SETTING_NAMES}
    env.update(PYTHONPATH=str(REPO), DATABASE_PATH=str(database))
    return subprocess.Popen([sys.executable, "-m", "bot", "triage", *args], cwd=workdir, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)


def finish(run: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    stdout, stderr = run.communicate(timeout=30)
    return subprocess.CompletedProcess(run.args, run.returncode, stdout, stderr)


def triage(workdir: Path, database: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return finish(start(workdir, database, *args))


async def with_override(path: Path, rule: str, project: str, priority: str, corrections: int) -> None:
    async with Database(path) as db:
        repo = OverrideRepository(db)
        offer = await repo.get_offer(await repo.offer(rule, project, priority, corrections, corrections + 1))
        assert offer is not None
        await repo.add(offer, ANN.name, ANN.id)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_triage_shows_the_override_the_bot_would_apply(tmp_path: Path) -> None:
    database = tmp_path / "bot.db"
    await with_override(database, "infra.redis-down", "billing-api", "P0", 4)
    before = digest(database)
    alerts = tmp_path / "alerts.jsonl"  # the overridden project, then another one
    alerts.write_text(json.dumps(REDIS) + "\n" + json.dumps({**REDIS, "project": "jobs"}) + "\n")
    text_run, json_run = (start(tmp_path, database, "--file", str(alerts)),
                          start(tmp_path, database, "--json", "--file", str(alerts)))

    done = finish(text_run)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("P0 infrastructure")
    assert lines[1] == "   priority: P0 by override from 4 corrections (the rules said P1), override #1 (/overrides)"
    [other_head] = [line for line in lines[2:] if not line.startswith(" ")]
    assert other_head.startswith("P1 infrastructure") and done.stdout.count("by override") == 1

    overridden, other = (json.loads(line) for line in finish(json_run).stdout.splitlines())
    assert (overridden["priority"], overridden["priority_before_override"], overridden["override_id"],
            overridden["override_corrections"]) == ("P0", "P1", 1, 4)
    assert other["priority"] == "P1" and "override_id" not in other
    assert digest(database) == before  # read-only: nothing written


async def test_without_a_live_override_the_rules_alone(tmp_path: Path) -> None:
    """Three cases side by side (each run costs an interpreter): a removed override, no database,
    and a file that is not a database."""
    removed = tmp_path / "removed.db"
    await with_override(removed, "infra.redis-down", "billing-api", "P0", 3)
    async with Database(removed) as db:
        assert await OverrideRepository(db).remove(1, "Bob", 222)
    missing = tmp_path / "never-created.db"
    notes = tmp_path / "notes.db"
    notes.write_text("not a database\n" * 100)
    runs = [start(tmp_path, database, json.dumps(REDIS)) for database in (removed, missing, notes)]
    after_removal, without_database, not_a_database = (finish(run) for run in runs)

    for done in (after_removal, without_database, not_a_database):
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("P1 infrastructure") and "override" not in done.stdout
    # No database: nothing to say (triaging without the bot's database is normal), and none created.
    assert without_database.stderr == "" and not missing.exists()
    # A file that cannot be read is said, once.
    [line] = not_a_database.stderr.splitlines()
    assert "cannot read the priority overrides" in line and str(notes) in line
