"""Wiring: builds every service from the settings and runs them together in one process.

aiogram polling, the webhook server, the pipeline worker, the outbox sender and the scheduler
start and stop together. `Application.__init__` constructs everything once, in reading order:

    an alert:  WebhookServer ─▶ inbox ─▶ PipelineWorker (parse, fingerprint, redact, triage)
               ─▶ Proposer (what the card proposes) ─▶ CardPublisher ─▶ outbox ─▶ OutboxSender
    a press:   aiogram ─▶ handlers/ ─▶ DecisionService / CommandService (authorise, change,
               audit, card, in one transaction) ─▶ ProposalExecutor ─▶ the kind's runner
               (AcknowledgeRunner, FixAction) ─▶ audit + card edit

docs/ARCHITECTURE.md draws both paths module by module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass
from pathlib import Path

from aiogram import Bot, Dispatcher
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.types import BotCommand
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot import killswitch
from bot.background import BackgroundTasks
from bot.card_publisher import CardPublisher
from bot.chat_commands import COMMANDS, CommandService
from bot.decisions import DecisionService
from bot.execution import AcknowledgeRunner, KindRunner, ProposalExecutor
from bot.fix_identity import FixIdentity
from bot.models import Actor, Alert, Triage
from bot.pipeline import PipelineWorker
from bot.proposals import ProposalKind
from bot.proposer import Proposer
from bot.redact import Redactor
from bot.rollout import RolloutPolicy
from bot.settings import Settings
from bot.storm import StormGate
from bot.telegram.sender import OutboxSender
from bot.telegram.sent_journal import SentJournal
from bot.triage import OwnerMap, RuleSet
from bot.web import WebhookLimits, WebhookServer
from handlers import build_router
from handlers.middlewares import ChatGate
from patterns import PatternSet, load_patterns
from storage.audit import AuditRepository
from storage.db import Database
from storage.inbox import InboxRepository

log = logging.getLogger(__name__)
SHUTDOWN_GRACE_S = 20.0
AUTO_FIX_ACTOR = Actor(id=-1, name="auto-fix (AUTO_FIX=on)")


@dataclass
class RulesTriager:
    """Offline triage: the rules file plus the owners map."""

    rules: RuleSet
    owners: OwnerMap | None

    def triage(self, alert: Alert) -> Triage:
        return self.rules.triage(alert, self.owners)


def make_bot(token: str, api_base: str | None) -> Bot:
    """aiogram's Bot, against api.telegram.org or a local Bot API server (the demo's emulator)."""
    session = AiohttpSession(api=TelegramAPIServer.from_base(api_base)) if api_base else None
    return Bot(token, session=session, default=DefaultBotProperties(parse_mode="HTML"))


class Application:
    def __init__(self, settings: Settings, *, chat_id: int, token: str, api_base: str | None) -> None:
        s = self.settings = settings
        self.chat_id = chat_id
        self.policy = policy = RolloutPolicy.from_setting(s.rollout_stage)
        self.db = db = Database(s.database_path)
        self.redactor = redactor = Redactor(s.redact_patterns)
        approvers = set(s.telegram_approvers)
        self.tasks = BackgroundTasks()  # actions started after a press: shutdown waits for them

        # Telegram out: every card and message is an outbox row first, sent by one paced sender.
        self.bot = make_bot(token, api_base)
        self.sender = OutboxSender(
            db, self.bot, rate_per_chat=s.telegram_rate_per_chat, group_per_minute=s.telegram_group_per_minute,
            rate_global=s.telegram_rate_global, journal=SentJournal(Path(f"{s.database_path}.sent-journal")),
        )
        self.cards = cards = CardPublisher(chat_id, policy, on_queued=self.sender.notify)

        # What Approve does, per kind of proposal.
        patterns: PatternSet | None = load_patterns(s.patterns_file) if policy.proposes_fixes else None
        runners: dict[ProposalKind, KindRunner] = {ProposalKind.ACKNOWLEDGE: AcknowledgeRunner()}
        if patterns is not None:
            from bot.fix_action import FixAction

            runners[ProposalKind.PATTERN] = FixAction(db, patterns, redactor, s)
        self.executor = ProposalExecutor(db, cards, approvers=approvers, policy=policy, runners=runners,
                                         redact=redactor.redact)

        # A press or a command: one service decides, the executor acts.
        self.decisions = DecisionService(db, cards, approvers=approvers, policy=policy, tasks=self.tasks,
                                         start_action=self.executor.execute)

        # An alert: webhook -> inbox -> pipeline -> incident, proposal and card.
        self.pipeline = PipelineWorker(
            db, RulesTriager(RuleSet.load(s.rules_file), OwnerMap.load(s.owners_file) if s.owners_file else None),
            redactor, cards,
            proposer=Proposer(policy, s.proposal_expiry_hours, patterns, auto_fix=s.auto_fix, fix_hosts=s.fix_hosts),
            max_attempts=s.inbox_max_attempts, on_committed=self.sender.notify,
            on_auto_approved=lambda proposal_id: self.decisions.start(proposal_id, AUTO_FIX_ACTOR),
            identify=FixIdentity(patterns) if patterns is not None else None,
            storm=StormGate(s.storm_cards_per_minute), row_budget_s=s.pipeline_row_budget_s,
        )
        self.web = WebhookServer(
            db, s.webhook_token.get_secret_value() if s.webhook_token else "", on_accepted=self.pipeline.notify,
            on_parsed=self.pipeline.accept_parsed, limits=WebhookLimits.from_settings(s),
        )
        self.commands = CommandService(db, self.decisions, policy, chat_id, webhook_refused=self.web.rejected.snapshot)

        # Telegram in: the dispatcher hands each update to a thin handler with the services injected.
        self.dp = Dispatcher(decisions=self.decisions, commands=self.commands)
        gate = ChatGate(chat_id, approvers)
        self.dp.message.outer_middleware(gate)
        self.dp.callback_query.outer_middleware(gate)
        self.dp.include_router(build_router())

        self.scheduler = AsyncIOScheduler(timezone=s.timezone)
        self.scheduler.add_job(self.decisions.expire_due, "interval", seconds=60, id="expire_proposals")
        self.scheduler.add_job(self._purge_inbox, "interval", hours=1, id="purge_inbox")

        self._loops: list[asyncio.Task[None]] = []
        self._polling = False
        self._stopping = False

    async def _purge_inbox(self) -> None:
        await InboxRepository(self.db).purge_done(self.settings.inbox_retention_days)

    async def start(self) -> None:
        s = self.settings
        await self.db.connect()
        if s.kill_switch:
            await killswitch.write(self.db, True, "environment (KILL_SWITCH=on)", "forced on at start")
            await AuditRepository(self.db).record("killswitch.on", "forced by environment", actor_name="environment")
        await self.sender.replay_journal()
        await self.executor.recover_interrupted()
        await self.web.start(s.webhook_host, s.webhook_port)
        self._loops = [
            asyncio.create_task(self.pipeline.run(), name="pipeline"),
            asyncio.create_task(self.sender.run(), name="outbox-sender"),
            asyncio.create_task(self._poll(), name="telegram-polling"),
            asyncio.create_task(self._register_commands(), name="set-my-commands"),
        ]
        self.scheduler.start()
        self.sender.notify()

    async def _poll(self) -> None:
        """aiogram polling, restarted if Telegram is unreachable at start (getMe fails)."""
        delay = 1.0
        while not self._stopping:
            self._polling = True
            try:
                await self.dp.start_polling(
                    self.bot, handle_signals=False, close_bot_session=False, polling_timeout=10,
                    allowed_updates=["message", "callback_query"],
                )
                return
            except Exception as exc:
                log.warning("Telegram polling could not start (%s); retrying in %.0fs", type(exc).__name__, delay)
            finally:
                self._polling = False
            await asyncio.sleep(delay)
            delay = min(30.0, delay * 2)

    async def _register_commands(self) -> None:
        """setMyCommands so the commands show in the client's menu; retried until it works."""
        delay = 1.0
        while True:
            try:
                await self.bot.set_my_commands([BotCommand(command=c, description=d) for c, d in COMMANDS])
                return
            except Exception as exc:
                log.warning("setMyCommands failed (%s); retrying in %.0fs", type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(60.0, delay * 2)

    async def stop(self) -> None:
        """Stop taking alerts, let in-flight work finish (or stay resumable), then close."""
        self._stopping = True
        await self.web.stop()
        if self._polling:
            with contextlib.suppress(RuntimeError):
                await self.dp.stop_polling()
        self.pipeline.stop()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.tasks.wait_idle(), SHUTDOWN_GRACE_S)
        self.sender.stop()
        for task in self._loops:
            # Retry loops sleeping between attempts have nothing in flight: no need to wait for them.
            if task.get_name() == "set-my-commands" or (task.get_name() == "telegram-polling" and not self._polling):
                task.cancel()
        done, pending = await asyncio.wait(self._loops, timeout=SHUTDOWN_GRACE_S) if self._loops else (set(), set())
        for task in pending:
            task.cancel()
        self.pipeline.close()
        with contextlib.suppress(Exception):
            self.scheduler.shutdown(wait=False)
        await self.bot.session.close()
        if self.sender.journal is not None:
            await self.sender.replay_journal()  # a clean stop leaves an empty journal
            self.sender.journal.close()
        await self.db.close()

    async def run_until_signal(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        log.info("remediator running: stage %s, chat %s", self.settings.rollout_stage, self.chat_id)
        try:
            await stop.wait()
        finally:
            log.info("stopping…")
            await self.stop()
