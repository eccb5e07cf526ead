"""The pipeline worker on a real SQLite file: batches, savepoints, retries and parking."""

from __future__ import annotations

import contextlib
import json
import sqlite3

from bot.card_publisher import CardPublisher
from bot.models import Alert, AlertKind, utcnow
from bot.pipeline import PipelineWorker
from bot.redact import Redactor
from bot.rollout import RolloutPolicy, Stage
from bot.triage import RuleSet
from storage.db import Database
from storage.inbox import InboxRepository
from storage.incidents import IncidentRepository
from storage.outbox import OutboxRepository


class FailingProposer:
    """Fails after the incident row was written, for alerts whose title says so."""

    async def propose(self, tx, incident_id, alert: Alert, triage):
        if "explode" in alert.title:
            raise RuntimeError("proposal store unavailable")
        return None


class Triager:
    rules = RuleSet.load()

    def triage(self, alert):
        return self.rules.triage(alert)


def body(title: str) -> bytes:
    return json.dumps({"title": title, "project": "api"}).encode()


async def worker(db: Database, max_attempts: int = 3) -> PipelineWorker:
    return PipelineWorker(db, Triager(), Redactor(), CardPublisher(-100, RolloutPolicy(Stage(2))), proposer=FailingProposer(),
                          max_attempts=max_attempts)


async def test_a_failing_row_rolls_back_alone_and_the_batch_goes_on(tmp_path):
    async with Database(tmp_path / "p.db") as db:
        inbox = InboxRepository(db)
        for title in ("ValueError: one", "RuntimeError: explode now", "ValueError: one", "KeyError: 'two'"):
            await inbox.add("generic", body(title))
        pipeline = await worker(db)
        assert await pipeline.drain_once() == 4
        incidents = await IncidentRepository(db).list_open()
        assert sorted((i.title, i.count) for i in incidents) == [("KeyError: 'two'", 1), ("ValueError: one", 2)]
        failed = await db.fetchone("SELECT state, attempts, last_error FROM inbox WHERE id = 2")
        assert (failed["state"], failed["attempts"]) == ("pending", 1)
        assert "proposal store unavailable" in failed["last_error"]
        assert await OutboxRepository(db).depth() == 2  # one card per incident, none for the failed row


async def test_a_row_that_keeps_failing_is_parked_and_reported(tmp_path):
    async with Database(tmp_path / "p.db") as db:
        await InboxRepository(db).add("generic", body("RuntimeError: explode again"))
        pipeline = await worker(db, max_attempts=2)
        await pipeline.drain_once()
        await db.execute("UPDATE inbox SET next_attempt_at = 0")  # skip the backoff
        await pipeline.drain_once()
        row = await db.fetchone("SELECT state, attempts FROM inbox")
        assert (row["state"], row["attempts"]) == ("failed", 2)
        [notice] = await OutboxRepository(db).pending()
        assert "could not be processed after 2 tries" in notice.payload["text"]
        assert await IncidentRepository(db).count_all() == 0


async def test_uptime_up_in_the_same_batch_resolves_after_counting_the_repeats(tmp_path):
    down = json.dumps({"text": "GlitchTip Uptime Alert", "attachments": [
        {"title": "API", "title_link": "https://gt.example.com/o/uptime-monitors/5",
         "text": "The monitored site has gone down."}]}).encode()
    up = down.replace(b"has gone down", b"is back up")
    async with Database(tmp_path / "p.db") as db:
        inbox = InboxRepository(db)
        for raw in (down, down, down, up, down):
            await inbox.add("glitchtip", raw)
        await (await worker(db)).drain_once()
        first, second = await db.fetchall("SELECT status, count, regression_of FROM incidents ORDER BY id")
        assert (first["status"], first["count"]) == ("resolved", 3)
        assert (second["status"], second["count"], second["regression_of"]) == ("open", 1, 1)


async def test_a_monitor_back_up_wakes_the_resolve_workers_once_its_resolve_is_committed(tmp_path):
    # GlitchTip's PUT and the GitHub comment a resolve queues go at once, as after a human's resolve,
    # not at the workers' next look.
    down = json.dumps({"text": "GlitchTip Uptime Alert", "attachments": [
        {"title": "API", "title_link": "https://gt.example.com/o/uptime-monitors/5",
         "text": "The monitored site has gone down."}]}).encode()
    up = down.replace(b"has gone down", b"is back up")
    path = tmp_path / "p.db"
    woken: list[list[str]] = []

    def after_resolve() -> None:  # another connection: it sees only what is committed
        with contextlib.closing(sqlite3.connect(path)) as other:
            woken.append([row[0] for row in other.execute("SELECT status FROM incidents")])

    async with Database(path) as db:
        inbox = InboxRepository(db)
        pipeline = PipelineWorker(db, Triager(), Redactor(), CardPublisher(-100, RolloutPolicy(Stage(2))),
                                  after_resolve=after_resolve)
        await inbox.add("glitchtip", down)
        await pipeline.drain_once()
        assert woken == []  # an incident opened: nothing to tell GlitchTip or GitHub
        await inbox.add("glitchtip", up)
        await inbox.add("glitchtip", up)  # a second "back up": nothing left to resolve
        await pipeline.drain_once()
        assert woken == [["resolved"]]


class PoisonCards(CardPublisher):
    """Rendering a card fails for one incident: the failure happens in the batch's final writes."""

    async def publish(self, tx, incident_id):
        incident = await IncidentRepository(tx).get(incident_id)
        if incident is not None and "poison" in incident.title:
            raise RuntimeError("cannot render this card")
        await super().publish(tx, incident_id)


async def test_a_batch_that_fails_at_its_end_is_retried_row_by_row(tmp_path):
    async with Database(tmp_path / "p.db") as db:
        inbox = InboxRepository(db)
        for title in ("ValueError: fine", "RuntimeError: poison pill", "KeyError: 'also fine'"):
            await inbox.add("generic", body(title))
        pipeline = PipelineWorker(db, Triager(), Redactor(), PoisonCards(-100, RolloutPolicy(Stage(2))), max_attempts=3)
        await pipeline.drain_once()
        states = {r["id"]: (r["state"], r["attempts"]) for r in await db.fetchall("SELECT * FROM inbox")}
        assert states == {1: ("done", 1), 2: ("pending", 1), 3: ("done", 1)}  # attempts count starts
        titles = sorted(i.title for i in await IncidentRepository(db).list_open())
        assert titles == ["KeyError: 'also fine'", "ValueError: fine"]


async def test_a_blocked_error_is_offered_no_automatic_fix_until_cleared(tmp_path):
    from bot.proposer import Proposer
    from bot.recurrence import blocked_key, clear_block
    from patterns import load_patterns
    from storage.kv import KeyValueRepository
    from storage.proposals import ProposalRepository

    alert = Alert(source="generic", kind=AlertKind.ERROR, fingerprint="fp-redis",
                  title="redis.exceptions.ConnectionError: Error 111 connecting to localhost:6379. Connection refused.")
    proposer = Proposer(RolloutPolicy(Stage(4)), expiry_hours=24, patterns=load_patterns())
    async with Database(tmp_path / "p.db") as db:
        async with db.transaction() as tx:
            incident = await IncidentRepository(tx).create(alert, Triager().triage(alert), utcnow(), -100, None)
            await KeyValueRepository(tx).set(blocked_key(alert.fingerprint), {"proposal_id": 1})
            blocked_id, _ = await proposer.propose(tx, incident.id, alert, Triager().triage(alert))
            await clear_block(tx, alert.fingerprint)
            cleared_id, _ = await proposer.propose(tx, incident.id, alert, Triager().triage(alert))
        blocked = await ProposalRepository(db).get(blocked_id)
        cleared = await ProposalRepository(db).get(cleared_id)
        assert (blocked.kind, cleared.kind, cleared.pattern_id) == ("acknowledge", "pattern", "restart_redis")


async def test_back_up_in_the_same_batch_closes_the_monitor_proposal_and_a_spoof_resolves_nothing(tmp_path):
    from bot.proposer import Proposer
    from storage.proposals import ProposalRepository

    def uptime(link: str, text: str) -> bytes:
        return json.dumps({"text": "GlitchTip Uptime Alert", "attachments": [
            {"title": "API", "title_link": link, "text": text}]}).encode()

    monitor, issue = "https://gt.example.com/o/uptime-monitors/5", "https://gt.example.com/o/issues/77"
    issue_alert = json.dumps({"text": "GlitchTip Alert", "attachments": [
        {"title": "ValueError: bad", "title_link": issue}]}).encode()
    async with Database(tmp_path / "p.db") as db:
        inbox = InboxRepository(db)
        for source, raw in (("glitchtip", uptime(monitor, "The monitored site has gone down.")),
                            ("glitchtip", issue_alert),
                            ("glitchtip", uptime(issue, "The monitored site is back up.")),
                            ("glitchtip", uptime(monitor, "The monitored site is back up."))):
            await inbox.add(source, raw)
        pipeline = PipelineWorker(db, Triager(), Redactor(), CardPublisher(-100, RolloutPolicy(Stage(2))),
                                  proposer=Proposer(RolloutPolicy(Stage(2)), expiry_hours=24))
        await pipeline.drain_once()
        down, error = await db.fetchall("SELECT status, count FROM incidents ORDER BY id")
        assert (down["status"], error["status"], error["count"]) == ("resolved", "open", 2)
        proposals = ProposalRepository(db)
        assert [(await proposals.latest_for(i)).state.value for i in (1, 2)] == ["superseded", "pending"]
