"""🔎 Investigate without any key: frames mapped to REPO_PATH, git log and blame, a suspect commit,
similar past incidents, the report under the card, 👍/👎 votes. Real git, real SQLite."""

from __future__ import annotations

import os
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest

from bot.callback_data import INVESTIGATE, CardPress, decode
from bot.investigate.frames import RepoFiles, StackFrame, map_frames, parse_stack, safe_file
from bot.investigate.service import Investigator
from bot.models import utcnow
from storage.investigations import InvestigationRepository
from storage.outbox import OutboxRepository
from tests.conftest import ANN, APPROVER, APPROVER_2, CHAT_ID

# -- frames → files ---------------------------------------------------------------------------------

REPO_FILES = ["src/shop/orders.py", "src/cart.ts", "requests/api.py", "web/index.js", "api/index.js",
              "dist/server.js", "src/link.py"]


@pytest.fixture
def repo_tree(tmp_path: Path) -> Path:
    root = tmp_path / "app"
    for name in REPO_FILES:
        if name != "src/link.py":
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text("x = 1\n")
    outside = tmp_path / "secret.py"
    outside.write_text("TOKEN = 'x'\n")
    (root / "src" / "link.py").symlink_to(outside)
    return root


@pytest.mark.parametrize(("frame_path", "expected"), [
    ("/srv/app/releases/42/src/shop/orders.py", "src/shop/orders.py"),  # absolute path on the server
    ("C:\\deploy\\src\\shop\\orders.py", "src/shop/orders.py"),  # Windows
    ("webpack://shop/./src/cart.ts", "src/cart.ts"),  # webpack with a namespace
    ("webpack:///./src/cart.ts?abc", "src/cart.ts"),
    ("app:///dist/server.js", "dist/server.js"),  # Sentry SDK's rewritten path
    ("/usr/lib/python3.11/site-packages/requests/api.py", None),  # a library, though the repo has requests/api.py
    ("/srv/app/.venv/lib/python3.11/site-packages/requests/api.py", None),
    ("webpack:///./node_modules/react/index.js", None),
    ("node:internal/process/task_queues", None),
    ("<frozen importlib._bootstrap>", None),
    ("../../secret.py", None),  # climbs out of the repository
    ("/srv/app/src/../../secret.py", None),
    ("/srv/app/src/link.py", None),  # a tracked symlink that leads out of the repository
    ("index.js", None),  # two index.js files and nothing to choose between them: no guess
    ("/srv/app/web/index.js", "web/index.js"),  # …but a longer suffix decides
    ("/srv/app/src/shop/missing.py", None),
])
def test_frames_map_to_files_of_the_repository(repo_tree: Path, frame_path: str, expected: str | None) -> None:
    repo = RepoFiles(repo_tree, REPO_FILES)
    assert repo.map(StackFrame(frame_path, 3)) == expected


def test_paths_outside_the_repository_are_refused(repo_tree: Path) -> None:
    assert safe_file(repo_tree, "src/shop/orders.py") == (repo_tree / "src/shop/orders.py").resolve()
    for bad in ("/etc/passwd", "../secret.py", "src/../../secret.py", "src/link.py", "src", ""):
        assert safe_file(repo_tree, bad) is None, bad


def test_python_and_node_stacks_are_parsed_innermost_first() -> None:
    python = ('Traceback (most recent call last):\n  File "/srv/app/src/shop/api.py", line 10, in handle\n'
              '    return total(order)\n  File "/srv/app/src/shop/orders.py", line 7, in total\n'
              "    return sum(i['price'] for i in items)\nKeyError: 'price'")
    assert parse_stack(python) == [StackFrame("/srv/app/src/shop/orders.py", 7, "total"),
                                   StackFrame("/srv/app/src/shop/api.py", 10, "handle")]
    node = ("TypeError: Cannot read properties of undefined (reading 'id')\n"
            "    at getUser (webpack:///./src/cart.ts:12:9)\n    at new Cart (/srv/app/dist/server.js:40:3)\n"
            "    at /srv/app/web/index.js:5:1\n    at async Promise.all (index 0)")
    assert parse_stack(node) == [StackFrame("webpack:///./src/cart.ts", 12, "getUser"),
                                 StackFrame("/srv/app/dist/server.js", 40, "new Cart"),
                                 StackFrame("/srv/app/web/index.js", 5, None)]
    repo = RepoFiles(Path("/nonexistent"), [])
    assert map_frames(parse_stack(node), repo) == []


# -- a real git repository -----------------------------------------------------------------------------

ORDERS_V1 = "def total(order):\n    items = order['items']\n    return sum(i['cost'] for i in items)\n"
ORDERS_V2 = "def total(order):\n    items = order['items']\n    return sum(i['price'] for i in items)\n"


def _git(repo: Path, *args: str, author: str, days_ago: float) -> None:
    when = (utcnow() - timedelta(days=days_ago)).strftime("%Y-%m-%dT%H:%M:%S+00:00")
    env = {**os.environ, "GIT_AUTHOR_NAME": author, "GIT_AUTHOR_EMAIL": f"{author.lower()}@example.com",
           "GIT_COMMITTER_NAME": author, "GIT_COMMITTER_EMAIL": f"{author.lower()}@example.com",
           "GIT_AUTHOR_DATE": when, "GIT_COMMITTER_DATE": when}
    subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)


@pytest.fixture
def app_repo(tmp_path: Path) -> Path:
    """Alice wrote orders.py a month ago; Bob changed its line 3 yesterday."""
    repo = tmp_path / "shop"
    (repo / "src" / "shop").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repo, check=True)
    (repo / "src" / "shop" / "orders.py").write_text(ORDERS_V1)
    (repo / "README.md").write_text("shop\n")
    _git(repo, "add", ".", author="Alice", days_ago=30)
    _git(repo, "commit", "-q", "-m", "Orders: totals", author="Alice", days_ago=30)
    (repo / "src" / "shop" / "orders.py").write_text(ORDERS_V2)
    _git(repo, "commit", "-q", "-am", "Rename cost to price", author="Bob", days_ago=1)
    return repo


STACK = ('Traceback (most recent call last):\n'
         '  File "/usr/lib/python3.11/site-packages/flask/app.py", line 880, in dispatch\n'
         '  File "/srv/shop/current/src/shop/orders.py", line 3, in total\n'
         "    return sum(i['price'] for i in items)\nKeyError: 'price'")


def _bob_sha(repo: Path) -> str:
    return subprocess.run(["git", "log", "-n1", "--format=%h", "--abbrev=10"], cwd=repo, check=True,
                          capture_output=True, text=True).stdout.strip()


async def test_press_investigate_replies_with_code_history_suspect_and_a_similar_resolved_incident(
    start_app, app_repo: Path,
):
    h = await start_app(rollout_stage=3, repo_path=app_repo)
    # The same trouble once before, resolved by Ann.
    await h.post("generic", {"title": "KeyError: 'price' while totalling the order", "project": "shop"})
    [old] = await h.wait_cards(1)
    assert "resolved" in (await h.command("/resolve 1")).plain_text
    await h.post("generic", {"title": "KeyError: 'price' while totalling the cart order", "project": "shop",
                             "stacktrace": STACK})
    cards = await h.wait_cards(3)  # old card, the /resolve answer, the new card
    card = next(c for c in cards if "cart order" in c.plain_text)

    answer = await h.press(card.message_id, f"iv:{2}:")
    assert "recorded" in answer["text"]
    report = await h.emu.wait_for(lambda: next(
        (m for m in h.emu.messages(CHAT_ID) if m.from_bot and "Investigation of #2" in m.plain_text), None), 15)
    assert report.reply_to_message_id == card.message_id
    # The reply: a short summary (the suspect place and commit, the confidence) and the full report attached.
    summary = report.plain_text
    assert f"src/shop/orders.py:3 · commit {_bob_sha(app_repo)}" in summary
    assert "Confidence: medium · no AI" in summary and "No AI analysis was made" in summary
    assert report.media is not None and report.media.file_name == "investigation-2-1.md"
    text = report.media.content.decode()
    assert "### `src/shop/orders.py:3` in `total`" in text
    assert "return sum(i['price'] for i in items)" in text  # the snippet, crashing line included
    assert "flask" not in text.split("## Where it crashed")[1]  # library frames are not the app's code
    assert f"## Suspect commit\n\n`{_bob_sha(app_repo)}` Bob" in text and "Rename cost to price" in text
    assert "Orders: totals" in text and "Alice" in text  # the file's history
    assert "- #1 KeyError: 'price' while totalling the order — resolved by Ann" in text
    assert "No AI analysis was made" in text
    stored = await InvestigationRepository(h.app.db).get(1)
    assert stored is not None and stored.state == "done" and stored.report_html == report.text
    assert await InvestigationRepository(h.app.db).latest_report_markdown(2) == text

    # 👍 / 👎: one vote per person, changeable, audited.
    up, down = (b["callback_data"] for row in report.buttons for b in row)
    assert decode(up) is not None and len(up.encode()) < 64
    since = utcnow() - timedelta(minutes=1)
    assert "recorded as helpful" in (await h.press(report.message_id, up))["text"]
    assert "already said helpful" in (await h.press(report.message_id, up))["text"]
    assert "(1 👍 / 1 👎)" in (await h.press(report.message_id, down, user_id=APPROVER_2, name="Bob"))["text"]
    repo = InvestigationRepository(h.app.db)
    assert await repo.helpfulness(since) == (1, 1)
    assert "Changed to not helpful" in (await h.press(report.message_id, down))["text"]
    assert await repo.helpfulness(since) == (0, 2)
    assert "Not allowed" in (await h.press(report.message_id, up, user_id=999, name="Mallory"))["text"]
    assert await repo.helpfulness(since) == (0, 2)
    votes = await h.app.db.fetchall("SELECT outcome, actor_id FROM audit WHERE action = 'investigation.vote'")
    assert [(r["outcome"], r["actor_id"]) for r in votes] == [
        ("voted", APPROVER), ("unchanged", APPROVER), ("voted", APPROVER_2), ("changed", APPROVER)]


# -- the service alone ----------------------------------------------------------------------------------


async def queued_reports(services) -> list[tuple[str, str]]:
    """(caption, Markdown document) of each investigation report queued under a card."""
    found = []
    for item in await services.queued():
        if item.payload.get("file"):
            attached = await OutboxRepository(services.db).file(item.id)
            found.append((item.payload.get("text") or item.payload["caption"], attached.content.decode()))
    return found


async def _with_investigator(make_services, repo_path: Path | None = None, stage: int = 3):
    services = await make_services(stage=stage)
    services.decisions.investigator = Investigator(
        services.db, services.cards, services.tasks, repo_path=repo_path, redact=lambda t: t.replace("hunter2", "***"))
    return services


async def test_without_repo_path_the_report_says_so_and_still_lists_similar_incidents(make_services):
    services = await _with_investigator(make_services)
    old_id, _ = await services.open_incident("RuntimeError: worker 7 crashed password=hunter2")
    await services.decisions.resolve(ANN, old_id)
    new_id, _ = await services.open_incident("RuntimeError: worker 12 crashed")
    outcome = await services.decisions.press(ANN, CardPress(INVESTIGATE, new_id))
    assert outcome.changed
    await services.tasks.wait_idle()
    [(caption, report)] = await queued_reports(services)
    assert "Investigation of" in caption and "hunter2" not in caption
    assert "REPO_PATH is not set" in report
    assert f"- #{old_id} RuntimeError: worker 7 crashed password=\\*\\*\\* — resolved by Ann" in report
    assert "hunter2" not in report


async def test_investigate_command_one_at_a_time_and_interrupted_by_a_crash(make_services):
    services = await _with_investigator(make_services)
    incident_id, _ = await services.open_incident()
    # A row left queued (as a crash between the press and the run would leave it).
    await InvestigationRepository(services.db).create(incident_id, "Ann", APPROVER, "button")
    again = await services.commands.run(ANN, "investigate", str(incident_id), CHAT_ID)
    assert again.html is not None and "already running" in again.html
    assert await services.decisions.investigator.recover_interrupted() == 1  # type: ignore[union-attr]
    assert any("was interrupted by a restart" in m for m in await services.messages())
    row = await InvestigationRepository(services.db).get(1)
    assert row is not None and row.state == "interrupted"
    started = await services.commands.run(ANN, "investigate", f"#{incident_id}", CHAT_ID)
    assert started.html is not None and "started and recorded" in started.html
    await services.tasks.wait_idle()
    assert (await InvestigationRepository(services.db).get(2)).state == "done"  # type: ignore[union-attr]
    assert (await services.commands.run(ANN, "investigate", "424242", CHAT_ID)).html == "No incident #424242."


async def test_investigate_command_is_refused_below_stage_3(make_services):
    services = await _with_investigator(make_services, stage=2)
    incident_id, _ = await services.open_incident()
    reply = await services.commands.run(ANN, "investigate", str(incident_id), CHAT_ID)
    assert reply.html is not None and "Not available at rollout stage 2" in reply.html
    assert await InvestigationRepository(services.db).active_for(incident_id) is None
