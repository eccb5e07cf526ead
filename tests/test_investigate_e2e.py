"""🔎 Investigate end to end, with ANTHROPIC_API_KEY: a GlitchTip-like alert through the webhook, the
button pressed in the Bot API emulator, Claude (the loopback fake, through the real SDK) reading the
code, the card saying "investigating…", the summary and the Markdown report under the card, votes."""

from __future__ import annotations

import os
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

from bot.investigate.claude import SUBMIT
from bot.models import utcnow
from storage.investigations import InvestigationRepository
from tests.anthropic_fake import Reply, anthropic_fake, error_reply, held_reply, tool_use_reply
from tests.conftest import CHAT_ID

STACK = ('Traceback (most recent call last):\n'
         '  File "/srv/shop/current/src/shop/orders.py", line 3, in total\n'
         "    return sum(i['price'] for i in items)\nKeyError: 'price'")


def _repo(tmp_path: Path) -> tuple[Path, str]:
    repo = tmp_path / "shop"
    (repo / "src" / "shop").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repo, check=True)
    (repo / "src" / "shop" / "orders.py").write_text(
        "def total(order):\n    items = order['items']\n    return sum(i['price'] for i in items)\n")
    when = (utcnow() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S+00:00")
    env = {**os.environ, "GIT_AUTHOR_NAME": "Bob", "GIT_AUTHOR_EMAIL": "bob@example.com", "GIT_COMMITTER_NAME": "Bob",
           "GIT_COMMITTER_EMAIL": "bob@example.com", "GIT_AUTHOR_DATE": when, "GIT_COMMITTER_DATE": when}
    subprocess.run(["git", "add", "-A"], cwd=repo, env=env, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "Rename cost to price"], cwd=repo, env=env, check=True)
    sha = subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], cwd=repo, check=True, capture_output=True,
                         text=True).stdout.strip()
    return repo, sha


async def test_with_a_key_claude_investigates_and_the_report_replies_under_the_card(start_app, tmp_path):
    repo, sha = _repo(tmp_path)
    first_step, step_now = held_reply(tool_use_reply("read_file", {"path": "src/shop/orders.py"}))  # see the card
    investigation: list[Reply] = [
        first_step,
        tool_use_reply(SUBMIT, {
            "root_cause": "Orders still carry 'cost'; the renamed key 'price' is missing",
            "evidence": [{"file": "src/shop/orders.py", "line": 3, "commit": sha, "why": "the KeyError's line"}],
            "suggested_fix": "-    return sum(i['price'] for i in items)\n+    return sum(i.get('price', 0) for i in items)",
            "tests_to_add": ["an order with 'cost' only"], "confidence": "medium", "could_not_determine": []}),
    ]

    def answer(body: dict[str, Any]) -> Reply:
        # Only the investigation is scripted; any other Claude call (triage) fails and falls back to rules.
        if any(t.get("name") == SUBMIT for t in body.get("tools") or []) and investigation:
            return investigation.pop(0)
        return error_reply(500, "not scripted")

    async with anthropic_fake() as fake:
        fake.default = answer
        h = await start_app(rollout_stage=3, repo_path=repo, anthropic_api_key="test-key",
                            anthropic_base_url=fake.base_url, anthropic_investigate_model="claude-investigate-e2e")
        await h.post("generic", {"title": "KeyError: 'price' while totalling the order", "project": "shop",
                                 "stacktrace": STACK})
        [card] = await h.wait_cards(1)
        assert "recorded" in (await h.press(card.message_id, f"iv:{1}:"))["text"]
        await h.emu.wait_for(lambda: "Investigating" in h.emu.message(CHAT_ID, card.message_id).plain_text, 10)
        step_now.set()
        report = await h.emu.wait_for(lambda: next(
            (m for m in h.emu.messages(CHAT_ID) if m.media is not None and m.reply_to_message_id == card.message_id),
            None), 20)
        await h.emu.wait_for(lambda: "Investigating" not in h.emu.message(CHAT_ID, card.message_id).plain_text, 10)

    assert "Orders still carry 'cost'" in report.plain_text
    assert f"src/shop/orders.py:3 · commit {sha}" in report.plain_text
    assert "Confidence: medium · Claude" in report.plain_text
    assert report.media.file_name == "investigation-1-1.md"
    markdown = report.media.content.decode()
    assert "- **Analysis**: Claude" in markdown and "## Suggested fix" in markdown
    assert "👍 Helpful" in report.button_texts and "👎 Not helpful" in report.button_texts
    up = report.buttons[0][0]["callback_data"]
    assert "recorded as helpful" in (await h.press(report.message_id, up))["text"]
    assert await InvestigationRepository(h.app.db).latest_report_markdown(1) == markdown
    investigate_calls = [r for r in fake.requests if any(t.get("name") == SUBMIT for t in r.get("tools") or [])]
    assert len(investigate_calls) == 2 and investigate_calls[0]["model"] == "claude-investigate-e2e"
