"""Wiring: builds every service from the settings and runs them together in one process.

aiogram polling, the webhook server, the pipeline worker, the outbox sender and the scheduler
start and stop together. Follow the names from here to find any behaviour.
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
from bot.cards import CardPublisher
from bot.decisions import Actor, DecisionService
from bot.executor import ActionExecutor
from bot.fix_identity import FixIdentity
from bot.models import Alert, Triage
from bot.operator import COMMANDS, Operator
from bot.pipeline import PipelineWorker
from bot.proposer import Proposer
from bot.redact import Redactor
from bot.settings import Settings
from bot.storm import StormGate
from bot.telegram.sender import OutboxSender
from bot.telegram.sent_journal import SentJournal
from bot.triage import OwnerMap, RuleSet
from bot.web import WebhookLimits, WebhookServer
from handlers import build_router
from handlers.middlewares import ChatGate
from patterns import PatternSet
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


def load_patterns(settings: Settings) -> PatternSet:
    from patterns import load_patterns as load

    return load(settings.patterns_file)


class Application:
    def __init__(self, settings: Settings, *, chat_id: int, token: str, api_base: str | None) -> None:
        self.settings = settings
        self.chat_id = chat_id
        self.token = token
        self.api_base = api_base
        self.db = Database(settings.database_path)
        self.redactor = Redactor(settings.redact_patterns)
        self.approvers = set(settings.telegram_approvers)
        self._tasks: list[asyncio.Task[None]] = []
        self.web: WebhookServer | None = None
        self._polling = False
        self._stopping = False

    def _make_bot(self) -> Bot:
        session = AiohttpSession(api=TelegramAPIServer.from_base(self.api_base)) if self.api_base else None
        return Bot(self.token, session=session, default=DefaultBotProperties(parse_mode="HTML"))

    async def build(self) -> None:
        s = self.settings
        await self.db.connect()
        rules = RuleSet.load(s.rules_file)
        owners = OwnerMap.load(s.owners_file) if s.owners_file else None
        patterns = load_patterns(s) if s.rollout_stage >= 4 else None
        self.cards = CardPublisher(self.chat_id, s.rollout_stage)
        self.bot = self._make_bot()
        self.sender = OutboxSender(
            self.db, self.bot, rate_per_chat=s.telegram_rate_per_chat, group_per_minute=s.telegram_group_per_minute,
            rate_global=s.telegram_rate_global, journal=SentJournal(Path(f"{s.database_path}.sent-journal")),
        )
        self.cards.on_queued = self.sender.notify
        self.pipeline = PipelineWorker(
            self.db, RulesTriager(rules, owners), self.redactor, self.cards,
            proposer=Proposer(s.rollout_stage, s.proposal_expiry_hours, patterns, auto_fix=s.auto_fix,
                              fix_hosts=s.fix_hosts),
            max_attempts=s.inbox_max_attempts, on_committed=self.sender.notify,
            on_auto_approved=self._start_auto_fix,
            identify=FixIdentity(patterns) if patterns is not None else None,
            storm=StormGate(s.storm_cards_per_minute), row_budget_s=s.pipeline_row_budget_s,
        )
        self.fixes = None
        if patterns is not None:
            from bot.fixes import FixRunner

            self.fixes = FixRunner(self.db, patterns, self.redactor, s)
        self.executor = ActionExecutor(
            self.db, self.cards, approvers=self.approvers, stage=s.rollout_stage,
            run_pattern=self.fixes.run if self.fixes else None,
            start_checks=[self.fixes.start_check] if self.fixes else [],
        )
        self.decisions = DecisionService(
            self.db, self.cards, approvers=self.approvers, stage=s.rollout_stage, start_action=self.executor.execute
        )
        self.dp = Dispatcher()
        gate = ChatGate(self.chat_id, self.approvers)
        self.dp.message.outer_middleware(gate)
        self.dp.callback_query.outer_middleware(gate)
        self.dp.include_router(build_router())
        self.dp["decisions"] = self.decisions
        self.dp["cards"] = self.cards
        token = s.webhook_token.get_secret_value() if s.webhook_token else ""
        self.web = WebhookServer(self.db, token, on_accepted=self.pipeline.notify,
                                 on_parsed=self.pipeline.accept_parsed, limits=WebhookLimits.from_settings(s))
        self.dp["operator"] = self.operator = Operator(self.db, s.rollout_stage, webhook_refused=self.web.rejected.snapshot)
        self.scheduler = AsyncIOScheduler(timezone=s.timezone)
        self.scheduler.add_job(self.decisions.expire_due, "interval", seconds=60, id="expire_proposals")
        self.scheduler.add_job(self._purge_inbox, "interval", hours=1, id="purge_inbox")

    async def _purge_inbox(self) -> None:
        await InboxRepository(self.db).purge_done(self.settings.inbox_retention_days)

    def _start_auto_fix(self, proposal_id: int) -> None:
        self.decisions.spawn(self.executor.execute(proposal_id, AUTO_FIX_ACTOR))

    async def start(self) -> None:
        await self.build()
        s = self.settings
        if s.kill_switch:
            await killswitch.write(self.db, True, "environment (KILL_SWITCH=on)", "forced on at start")
            await AuditRepository(self.db).record("killswitch.on", "forced by environment", actor_name="environment")
        await self.sender.replay_journal()
        await self.executor.recover_interrupted()
        assert self.web is not None
        await self.web.start(s.webhook_host, s.webhook_port)
        self._tasks = [
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
        if self.web is not None:
            await self.web.stop()
        if self._polling:
            with contextlib.suppress(RuntimeError):
                await self.dp.stop_polling()
        self.pipeline.stop()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.decisions.wait_idle(), SHUTDOWN_GRACE_S)
        self.sender.stop()
        for task in self._tasks:
            # Retry loops sleeping between attempts have nothing in flight: no need to wait for them.
            if task.get_name() == "set-my-commands" or (task.get_name() == "telegram-polling" and not self._polling):
                task.cancel()
        done, pending = await asyncio.wait(self._tasks, timeout=SHUTDOWN_GRACE_S) if self._tasks else (set(), set())
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
