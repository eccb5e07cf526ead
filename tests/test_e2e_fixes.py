"""Stage 4: allow-listed fixes proposed on the card, run after approval, over the real stack.

The Redis test is the real thing: a real redis-server on a free loopback port is stopped,
its ECONNREFUSED alert comes in, Approve is pressed, the pattern's command starts it again
and `redis-cli ping` verifies it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from storage.audit import AuditRepository
from tests.conftest import APPROVER, APPROVER_2, free_port

# The fixes run `python -I -S -c ...`: the little scripts need no site-packages, and each run starts
# a third cheaper without them.
FIX_TOML = """
[settings]
python = "{python}"
marker_dir = "{marker_dir}"

[patterns.touch_fix]
description = "test fix: writes a marker file for the stuck slot"
category = "transient"
match.any = ['''DemoFixableError: slot (?P<slot>[a-z]+) is stuck''']
action = ["{{python}}", "-I", "-S", "-c", "import pathlib,sys; pathlib.Path(sys.argv[1]).write_text('fixed')", "{{marker_dir}}/{{slot}}.done"]
verify = ["{{python}}", "-I", "-S", "-c", "import pathlib,sys; sys.exit(0 if pathlib.Path(sys.argv[1]).exists() else 1)", "{{marker_dir}}/{{slot}}.done"]
approvals_required = {approvals}
requires_approval = {requires_approval}
cooldown = 0
max_runs = {max_runs}
window = 3600
recurrence_window = 60

[patterns.touch_fix.placeholders.slot]
from = "slot"
validate = '^[a-z]{{1,20}}$'
"""


def fix_file(tmp_path: Path, approvals: int = 1, requires_approval: bool = True, max_runs: int = 100) -> Path:
    path = tmp_path / "patterns.toml"
    path.write_text(FIX_TOML.format(python=sys.executable, marker_dir=tmp_path, approvals=approvals,
                                    requires_approval=str(requires_approval).lower(), max_runs=max_runs))
    return path


def button(card, prefix: str) -> str:
    return next(b["callback_data"] for row in card.buttons for b in row if b["callback_data"].startswith(prefix))


def stuck(slot: str, server: str | None = None) -> dict:
    alert = {"title": f"DemoFixableError: slot {slot} is stuck", "project": "jobs", "environment": "production"}
    return {**alert, "server": server} if server else alert


async def test_multi_approval_fix_runs_after_the_second_person(start_app, tmp_path):
    h = await start_app(rollout_stage=4, patterns_file=fix_file(tmp_path, approvals=2))
    await h.post("generic", stuck("alpha"))
    [card] = await h.wait_cards(1)
    assert "touch_fix" in card.plain_text and "2 approvals" in card.plain_text and "0/2 approvals" in card.plain_text
    approve = button(card, "ap:")
    assert "1/2" in (await h.press(card.message_id, approve, user_id=APPROVER, name="Ann"))["text"]
    await h.wait_text(card.message_id, "1/2 approvals")
    assert "already approved" in (await h.press(card.message_id, approve, user_id=APPROVER, name="Ann"))["text"]
    assert not (tmp_path / "alpha.done").exists()
    assert "Approved" in (await h.press(card.message_id, approve, user_id=APPROVER_2, name="Bob"))["text"]
    done = await h.wait_text(card.message_id, "Done: touch_fix")
    assert "approved by Bob" in done.plain_text
    assert (tmp_path / "alpha.done").read_text() == "fixed"
    await h.app.decisions.wait_idle()
    finish = [e for e in await AuditRepository(h.app.db).list() if e.action == "action.finish"]
    assert len(finish) == 1 and finish[0].outcome == "succeeded"
    step = finish[0].detail["steps"][0]
    assert step["argv"][0] == sys.executable and step["exit_code"] == 0 and "duration_s" in step
    assert finish[0].detail["approved_by"] == "Bob" and finish[0].detail["verify_ok"] is True


async def test_hostile_text_never_becomes_an_argument(start_app, tmp_path):
    h = await start_app(rollout_stage=4, patterns_file=fix_file(tmp_path))
    marker = tmp_path / "pwned"
    for title in (f"DemoFixableError: slot $(touch {marker}) is stuck",
                  f"DemoFixableError: slot ab;touch {marker} is stuck",
                  "DemoFixableError: slot ../../x is stuck",
                  "Error: Cannot find module '--registry=http://evil'"):
        await h.post("generic", {"title": title})
    cards = await h.wait_cards(4)
    for card in cards:
        assert "touch_fix" not in card.plain_text and "npm" not in card.plain_text
        assert "acknowledge" in card.plain_text
    assert not marker.exists()


async def test_global_rate_limit_refuses_at_start_and_says_why(start_app, tmp_path):
    h = await start_app(rollout_stage=4, patterns_file=fix_file(tmp_path), fix_rate_limit_per_hour=1)
    await h.post("generic", stuck("one"))
    await h.post("generic", stuck("two"))
    first, second = [await card_for(h, slot) for slot in ("one", "two")]
    await h.press(first.message_id, button(first, "ap:"))
    await h.wait_text(first.message_id, "Done: touch_fix")
    await h.press(second.message_id, button(second, "ap:"))
    refused = await h.wait_text(second.message_id, "did not start")
    assert "global limit" in refused.plain_text and "0/1 approvals" in refused.plain_text  # may be approved again
    assert not (tmp_path / "two.done").exists()
    entries = await AuditRepository(h.app.db).list()
    assert any(e.action == "action.start" and "global limit" in e.outcome for e in entries)


async def test_simultaneous_approvals_cannot_beat_max_runs(start_app, tmp_path):
    h = await start_app(rollout_stage=4, patterns_file=fix_file(tmp_path, max_runs=1))
    for slot in ("aa", "bb", "cc"):
        await h.post("generic", stuck(slot))
    cards = await h.wait_cards(3)
    queries = [h.emu.press_button(c.chat_id, c.message_id, uid, button(c, "ap:"), first_name=name)
               for c, uid, name in zip(cards, (APPROVER, APPROVER_2, APPROVER), ("Ann", "Bob", "Ann"), strict=True)]
    await asyncio.gather(*(h.emu.wait_for_answer(q, 10) for q in queries))
    await h.app.decisions.wait_idle()
    ran = [slot for slot in ("aa", "bb", "cc") if (tmp_path / f"{slot}.done").exists()]
    assert len(ran) == 1, ran
    starts = [e.outcome for e in await AuditRepository(h.app.db).list() if e.action == "action.start"]
    assert starts.count("running") == 1 and sum("already ran" in o for o in starts) == 2


async def fix_that_does_not_hold(h, slot: str):
    """Approve the fix for `slot`, then the same error fires again inside the recurrence window."""
    await h.post("generic", stuck(slot))
    card = await h.emu.wait_for(lambda: next((m for m in h.cards() if f"slot {slot}" in m.plain_text), None))
    await h.press(card.message_id, button(card, "ap:"))
    await h.wait_text(card.message_id, "Done: touch_fix")
    await h.post("generic", stuck(slot))
    return card, await h.wait_text(card.message_id, "did not hold")


async def test_recurrence_marks_the_fix_failed_and_a_human_resolve_clears_the_block(start_app, tmp_path):
    h = await start_app(rollout_stage=4, patterns_file=fix_file(tmp_path))
    card, failed = await fix_that_does_not_hold(h, "beta")
    assert "Failed" in failed.plain_text
    notice = await h.emu.wait_for(lambda: next((m for m in h.cards() if "did not hold" in m.plain_text
                                                and m.message_id != card.message_id), None))
    assert "paused" in notice.plain_text
    # A human resolving the incident clears the block: the regression may get the fix again.
    await h.press(card.message_id, button(card, "rs:"))
    await h.wait_text(card.message_id, "Resolved")
    await h.post("generic", stuck("beta"))
    regression = await h.emu.wait_for(lambda: next((m for m in h.cards() if "Regression" in m.plain_text), None))
    assert "touch_fix" in regression.plain_text
    entries = await AuditRepository(h.app.db).list()
    assert any(e.action == "fix.recurred" for e in entries)


async def test_a_failed_fix_blocks_only_its_own_error(start_app, tmp_path):
    h = await start_app(rollout_stage=4, patterns_file=fix_file(tmp_path))
    await fix_that_does_not_hold(h, "gamma")
    blocked = await h.app.db.fetchall("SELECT key FROM kv WHERE key LIKE 'fix_blocked:%'")
    assert len(blocked) == 1
    # Another error the same pattern matches is unaffected.
    await h.post("generic", stuck("delta"))
    other = await h.emu.wait_for(lambda: next((m for m in h.cards() if "slot delta" in m.plain_text), None))
    assert "Proposal: touch_fix" in other.plain_text


async def test_auto_fix_runs_without_a_press_only_when_enabled(start_app, tmp_path):
    h = await start_app(rollout_stage=4, patterns_file=fix_file(tmp_path, requires_approval=False), auto_fix=True)
    await h.post("generic", stuck("auto"))
    [card] = await h.wait_cards(1)
    done = await h.wait_text(card.message_id, "Done: touch_fix")
    assert "auto-fix" in done.plain_text
    assert (tmp_path / "auto.done").exists()


async def test_auto_fix_off_still_waits_for_a_press(start_app, tmp_path):
    h = await start_app(rollout_stage=4, patterns_file=fix_file(tmp_path, requires_approval=False), auto_fix=False)
    await h.post("generic", stuck("manual"))
    [card] = await h.wait_cards(1)
    # An automatic start is spawned as the pipeline commits, before the card can go out: once the
    # card is here and the background work is idle, nothing more will start by itself.
    await h.app.decisions.wait_idle()
    assert "0/1 approvals" in h.emu.message(card.chat_id, card.message_id).plain_text
    assert not (tmp_path / "manual.done").exists()
    entries = await AuditRepository(h.app.db).list()
    assert not any(e.action in ("proposal.approve", "action.start") for e in entries)


async def test_auto_fix_is_stopped_by_the_kill_switch(start_app, tmp_path):
    h = await start_app(rollout_stage=4, patterns_file=fix_file(tmp_path, requires_approval=False), auto_fix=True,
                        kill_switch=True)
    await h.post("generic", stuck("halt"))
    [card] = await h.wait_cards(1)
    refused = await h.wait_text(card.message_id, "kill switch")
    assert "did not start" in refused.plain_text
    assert not (tmp_path / "halt.done").exists()


# -- where a fix runs: this host only ---------------------------------------------------------


async def card_for(h, slot: str):
    return await h.emu.wait_for(lambda: next((m for m in h.cards() if f"slot {slot} " in m.plain_text), None))


async def test_an_error_from_another_server_gets_no_local_fix_and_the_card_says_so(start_app, tmp_path):
    h = await start_app(rollout_stage=4, patterns_file=fix_file(tmp_path), fix_hosts=["app-1"])
    await h.post("generic", stuck("remote", server="web-03"))
    card = await card_for(h, "remote")
    assert "no local fix: the error came from web-03" in card.plain_text
    assert "touch_fix" not in card.plain_text and "Proposal: acknowledge" in card.plain_text
    await h.press(card.message_id, button(card, "ap:"))
    await h.wait_text(card.message_id, "Done: acknowledge")
    assert not (tmp_path / "remote.done").exists()


async def test_an_error_from_this_host_gets_the_fix_and_the_card_names_the_host(start_app, tmp_path):
    h = await start_app(rollout_stage=4, patterns_file=fix_file(tmp_path), fix_hosts=["app-1"])
    await h.post("generic", stuck("local", server="APP-1"))
    card = await card_for(h, "local")
    assert "Proposal: touch_fix" in card.plain_text
    assert f"runs on {socket.gethostname()}" in card.plain_text and "names no server" not in card.plain_text
    await h.press(card.message_id, button(card, "ap:"))
    done = await h.wait_text(card.message_id, "Done: touch_fix")
    assert f"runs on {socket.gethostname()}" in done.plain_text
    assert (tmp_path / "local.done").read_text() == "fixed"


async def test_an_alert_naming_no_server_gets_the_fix_with_a_note(start_app, tmp_path):
    h = await start_app(rollout_stage=4, patterns_file=fix_file(tmp_path), fix_hosts=["app-1"])
    await h.post("generic", stuck("anywhere"))
    card = await card_for(h, "anywhere")
    assert "Proposal: touch_fix" in card.plain_text
    assert f"the alert names no server; runs on {socket.gethostname()}" in card.plain_text


async def test_fix_hosts_changed_between_approval_and_run_refuses(start_app, tmp_path):
    patterns = fix_file(tmp_path)
    h = await start_app(rollout_stage=4, patterns_file=patterns, fix_hosts=["app-1"])
    await h.post("generic", stuck("moved", server="app-1"))
    card = await card_for(h, "moved")
    assert "Proposal: touch_fix" in card.plain_text
    await h.app.stop()
    # restarted with another FIX_HOSTS: app-1 is no longer this machine
    h2 = await start_app(rollout_stage=4, patterns_file=patterns, fix_hosts=["app-2"])
    await h2.press(card.message_id, button(card, "ap:"))
    refused = await h2.wait_text(card.message_id, "did not start")
    assert "no local fix: the error came from app-1" in refused.plain_text and "FIX_HOSTS" in refused.plain_text
    assert not (tmp_path / "moved.done").exists()
    await h2.app.decisions.wait_idle()
    starts = [e.outcome for e in await AuditRepository(h2.app.db).list() if e.action == "action.start"]
    assert starts == ["refused: no local fix: the error came from app-1, which is not in FIX_HOSTS (app-2)"]


PRECHECK_TOML = """
[settings]
python = "{python}"
marker_dir = "{marker_dir}"

[patterns.guarded_fix]
description = "test fix guarded by a precheck: it cleans only when the check says the slot is really full"
category = "resource"
match.any = ['''GuardedError: slot (?P<slot>[a-z]+) is full''']
precheck = ["{{python}}", "-I", "-S", "-c", "import sys; ok = sys.argv[1] == 'full'; print('slot is full' if ok else 'slot ' + sys.argv[1] + ' has room: the full one is another'); sys.exit(0 if ok else 1)", "{{slot}}"]
action = ["{{python}}", "-I", "-S", "-c", "import pathlib,sys; pathlib.Path(sys.argv[1]).write_text('cleaned')", "{{marker_dir}}/{{slot}}.cleaned"]
cooldown = 0

[patterns.guarded_fix.placeholders.slot]
from = "slot"
validate = '^[a-z]{{1,20}}$'
"""


def guarded_file(tmp_path: Path) -> Path:
    path = tmp_path / "guarded.toml"
    path.write_text(PRECHECK_TOML.format(python=sys.executable, marker_dir=tmp_path))
    return path


async def test_a_precheck_that_says_no_runs_nothing_and_the_card_says_why(start_app, tmp_path):
    h = await start_app(rollout_stage=4, patterns_file=guarded_file(tmp_path))
    await h.post("generic", {"title": "GuardedError: slot roomy is full"})
    card = await card_for(h, "roomy")
    assert "only if its precheck passes" in card.plain_text
    await h.press(card.message_id, button(card, "ap:"))
    failed = await h.wait_text(card.message_id, "Failed: guarded_fix")
    assert "not run — the precheck said no: slot roomy has room: the full one is another" in failed.plain_text
    assert not (tmp_path / "roomy.cleaned").exists()
    await h.app.decisions.wait_idle()
    finish = next(e for e in await AuditRepository(h.app.db).list() if e.action == "action.finish")
    assert finish.outcome == "failed" and finish.detail["action_ran"] is False and finish.detail["steps"] == []
    assert finish.detail["precheck"]["exit_code"] == 1


async def test_a_precheck_that_passes_lets_the_action_run(start_app, tmp_path):
    h = await start_app(rollout_stage=4, patterns_file=guarded_file(tmp_path))
    await h.post("generic", {"title": "GuardedError: slot full is full"})
    card = await card_for(h, "full")
    await h.press(card.message_id, button(card, "ap:"))
    await h.wait_text(card.message_id, "Done: guarded_fix")
    assert (tmp_path / "full.cleaned").read_text() == "cleaned"
    await h.app.decisions.wait_idle()
    finish = next(e for e in await AuditRepository(h.app.db).list() if e.action == "action.finish")
    assert finish.detail["action_ran"] is True and finish.detail["precheck"]["exit_code"] == 0


# -- the real Redis ------------------------------------------------------------------------

REDIS_TOML = """
[settings]
redis_dir = "{dir}"

[patterns.restart_redis]
description = "The local Redis refuses connections: start it again (test: a redis-server on a test port)."
category = "infrastructure"
match.any = ['''Redis connection to (?:localhost|127\\.0\\.0\\.1):(?P<port>\\d{{2,5}}) failed - connect ECONNREFUSED''']
exclude = ['''ENOTFOUND''']
action = ["redis-server", "--port", "{{port}}", "--bind", "127.0.0.1", "--daemonize", "yes", "--save", "",
          "--appendonly", "no", "--dir", "{{redis_dir}}", "--pidfile", "{{redis_dir}}/redis.pid"]
verify = ["redis-cli", "-h", "127.0.0.1", "-p", "{{port}}", "ping"]
verify_delay = 0.5
timeout = 20
cooldown = 0

[patterns.restart_redis.placeholders.port]
from = "port"
validate = '^[1-9][0-9]{{1,4}}$'
"""




def _ping(port: int) -> bool:
    result = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), "ping"], capture_output=True, text=True)
    return result.stdout.strip() == "PONG"


@pytest.fixture
def redis_port(tmp_path):
    if not shutil.which("redis-server") or not shutil.which("redis-cli"):
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server/redis-cli are required under CI (.ci/run installs them)")
        pytest.skip("redis-server not installed")
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not _ping(port):
        assert time.monotonic() < deadline, "test redis did not start"
        time.sleep(0.05)
    subprocess.run(["redis-cli", "-p", str(port), "shutdown", "nosave"], capture_output=True)
    proc.wait(timeout=10)
    assert not _ping(port)
    yield port
    subprocess.run(["redis-cli", "-p", str(port), "shutdown", "nosave"], capture_output=True)


async def test_real_redis_is_restarted_after_approve(start_app, tmp_path, redis_port):
    patterns = tmp_path / "redis.toml"
    patterns.write_text(REDIS_TOML.format(dir=tmp_path))
    h = await start_app(rollout_stage=4, patterns_file=patterns)
    title = f"Error: Redis connection to 127.0.0.1:{redis_port} failed - connect ECONNREFUSED 127.0.0.1:{redis_port}"
    await h.post("generic", {"title": title, "project": "worker", "environment": "production"})
    [card] = await h.wait_cards(1)
    assert f"restart_redis — redis-server --port {redis_port}" in card.plain_text.replace("`", "")
    assert "1 approval" in card.plain_text
    assert not _ping(redis_port)
    answer = await h.press(card.message_id, button(card, "ap:"), name="Ann")
    assert "Approved" in answer["text"]
    fixed = await h.wait_text(card.message_id, "Done: restart_redis", timeout=30)
    assert "approved by Ann" in fixed.plain_text
    assert _ping(redis_port)
    await h.app.decisions.wait_idle()
    finish = next(e for e in await AuditRepository(h.app.db).list() if e.action == "action.finish")
    assert finish.outcome == "succeeded" and finish.actor_name == "Ann"
    assert finish.detail["steps"][0]["argv"][:3] == ["redis-server", "--port", str(redis_port)]
    assert finish.detail["verify_ok"] is True
    reply = await h.emu.wait_for(lambda: next((m for m in h.cards() if m.reply_to_message_id == card.message_id), None))
    assert "PONG" in reply.plain_text
    json.dumps(finish.detail)  # the audit detail is plain JSON
