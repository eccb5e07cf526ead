"""Wiring: builds every service from the settings and runs them together in one process.

aiogram polling, the webhook server, the pipeline worker, the outbox sender and the scheduler
start and stop together. `Application.__init__` constructs everything once, in reading order:

    an alert:  WebhookServer ─▶ inbox ─▶ PipelineWorker (parse, fingerprint, redact, triage)
               ─▶ Proposer (what the card proposes) ─▶ CardPublisher ─▶ outbox ─▶ OutboxSender
    a press:   aiogram ─▶ handlers/ ─▶ DecisionService / CommandService (authorise, change,
               audit, card, in one transaction) ─▶ ProposalExecutor ─▶ the kind's runner
               (AcknowledgeRunner, FixAction, GitHubIssueRunner → GitHubIssueService's queue)
               ─▶ audit + card edit

docs/ARCHITECTURE.md draws both paths module by module.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

from aiogram import Bot, Dispatcher
from aiogram.client.default import DefaultBotProperties
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import TelegramNetworkError, TelegramNotFound, TelegramServerError, TelegramUnauthorizedError
from aiogram.types import BotCommand
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot import killswitch
from bot.background import BackgroundTasks
from bot.card_publisher import CardPublisher, ExtrasSource
from bot.card_render import CardExtras
from bot.chat_commands import COMMANDS, CommandService
from bot.decisions import DecisionService
from bot.digest import MISFIRE_GRACE_S, DigestService
from bot.execution import AcknowledgeRunner, KindRunner, ProposalExecutor
from bot.fix_identity import FixIdentity
from bot.github.card import github_card_extras
from bot.github.report_button import ReportIssueFiler, file_issue_row
from bot.github.runner import GitHubIssueRunner
from bot.github.service import GitHubIssueService
from bot.glitchtip.card import glitchtip_card_extras
from bot.glitchtip.service import GlitchTipService
from bot.investigate.card import investigation_card_extras
from bot.investigate.claude import ClaudeInvestigator, ClaudeLimits
from bot.investigate.service import Investigator
from bot.llm.gate import ClaudeGate
from bot.models import Actor, Alert, Incident, Triage
from bot.overrides import OverrideService
from bot.pipeline import PipelineWorker
from bot.proposals import ProposalKind
from bot.proposer import Proposer
from bot.redact import Redactor
from bot.rollout import RolloutPolicy
from bot.settings import Settings, webhook_listen_problem
from bot.storm import StormGate
from bot.telegram.sender import OutboxSender
from bot.telegram.sent_journal import SentJournal
from bot.telegram.session import BotSession
from bot.triage import OwnerMap, RuleSet
from bot.triage.claude import ClaudeTriage
from bot.web import WebhookLimits, WebhookServer
from handlers import build_router
from handlers.middlewares import ChatGate
from patterns import PatternSet, load_patterns
from storage.audit import AuditRepository
from storage.db import Database, Executor
from storage.inbox import InboxRepository

log = logging.getLogger(__name__)
SHUTDOWN_GRACE_S = 20.0
# How long the start waits for Telegram to say whether it knows the token; an unreachable
# Telegram does not stop the start (alerts are still taken, cards wait in the outbox).
TOKEN_CHECK_TIMEOUT_S = 5.0
AUTO_FIX_ACTOR = Actor(id=-1, name="auto-fix (AUTO_FIX=on)")


class StartupError(Exception):
    """The bot cannot start (or keep running) as configured: one line that says what to change.

    Raised after whatever had started is stopped again; the CLI prints it and exits 2.
    """


def token_rejected(exc: TelegramUnauthorizedError | TelegramNotFound, api_base: str | None) -> str:
    """Telegram answered 401/404 to the bot's own token: a typo or a revoked token never fixes itself."""
    status = 401 if isinstance(exc, TelegramUnauthorizedError) else 404
    method = getattr(exc.method, "__api_method__", "a call")
    server = f" from {api_base} (TELEGRAM_API_BASE)" if api_base else ""
    return (f"Telegram rejected the token: check TELEGRAM_BOT_TOKEN (@BotFather shows the current one; "
            f"{method} got {status} {exc.message}{server})")


@dataclass
class RulesTriager:
    """Offline triage: the rules file plus the owners map."""

    rules: RuleSet
    owners: OwnerMap | None

    def triage(self, alert: Alert) -> Triage:
        return self.rules.triage(alert, self.owners)


def make_bot(token: str, api_base: str | None) -> Bot:
    """aiogram's Bot, against api.telegram.org or a local Bot API server (the demo's emulator)."""
    session = BotSession(TelegramAPIServer.from_base(api_base)) if api_base else BotSession()
    return Bot(token, session=session, default=DefaultBotProperties(parse_mode="HTML"))


def card_extras_source(settings: Settings) -> ExtrasSource | None:
    """What the configured integrations add to every card: GlitchTip's details, the GitHub issue."""
    sources: list[ExtrasSource] = [investigation_card_extras]  # "investigating…" while one runs
    if settings.glitchtip_api_on:
        sources.append(glitchtip_card_extras)
    if settings.github_on:
        sources.append(github_card_extras)
    if len(sources) <= 1:
        return sources[0] if sources else None

    async def together(tx: Executor, incident: Incident) -> CardExtras | None:
        found = [extras for source in sources if (extras := await source(tx, incident)) is not None]
        return functools.reduce(CardExtras.merged, found) if found else None

    return together


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
        self.cards = cards = CardPublisher(chat_id, policy, on_queued=self.sender.notify,
                                           extras=card_extras_source(s))
        # GlitchTip's API (only with GLITCHTIP_URL and GLITCHTIP_TOKEN): richer cards, live counts,
        # resolves written back; its own worker and job queue (bot/glitchtip/service.py).
        self.glitchtip = GlitchTipService.from_settings(s, db, redactor, cards)
        # GitHub issues (only with GITHUB_TOKEN and GITHUB_REPO): filed after a press, once per
        # incident, by their own worker and job queue (bot/github/service.py).
        self.github = GitHubIssueService.from_settings(s, db, redactor, cards, policy)

        # What Approve does, per kind of proposal.
        patterns: PatternSet | None = load_patterns(s.patterns_file) if policy.proposes_fixes else None
        runners: dict[ProposalKind, KindRunner] = {ProposalKind.ACKNOWLEDGE: AcknowledgeRunner()}
        if patterns is not None:
            from bot.fix_action import FixAction

            runners[ProposalKind.PATTERN] = FixAction(db, patterns, redactor, s)
        if self.github is not None:
            runners[ProposalKind.GITHUB_ISSUE] = GitHubIssueRunner(db, self.github.repo, self.github.notify)
        self.executor = ProposalExecutor(db, cards, approvers=approvers, policy=policy, runners=runners,
                                         redact=redactor.redact)

        # 🔎 Investigate (stage 3+): the code under REPO_PATH, its history, similar incidents; runs in
        # the background like an action (bot/investigate/).
        # 📝 File GitHub issue under a report (GitHub on): the same once-per-incident queue as Approve.
        report_filer = (ReportIssueFiler(db, cards, self.github.repo, self.github.notify)
                        if self.github is not None else None)
        # With ANTHROPIC_API_KEY, Claude reads the code through read-only tools (within the spend cap).
        self.investigate_gate = ClaudeGate.from_settings(s, db, cards)
        self.investigator = Investigator(db, cards, self.tasks, repo_path=s.repo_path, redact=redactor.redact,
                                         suspect_days=s.investigate_suspect_days,
                                         claude=ClaudeInvestigator(self.investigate_gate, ClaudeLimits.from_settings(s))
                                         if self.investigate_gate is not None else None,
                                         report_row=file_issue_row if report_filer is not None else None)
        # Priority overrides learnt from corrections (bot/overrides.py): offered under the digest and
        # /stats, applied and removed by approvers, honoured by the pipeline right after triage.
        self.overrides = OverrideService(db, cards, threshold=s.override_after_corrections)
        # A press or a command: one service decides, the executor acts.
        self.decisions = DecisionService(db, cards, approvers=approvers, policy=policy, tasks=self.tasks,
                                         start_action=self.executor.execute, investigator=self.investigator,
                                         overrides=self.overrides, report_filer=report_filer,
                                         after_resolve=self._wake_resolve_workers)

        # An alert: webhook -> inbox -> pipeline -> incident, proposal and card.
        owners = OwnerMap.load(s.owners_file) if s.owners_file else None
        # With ANTHROPIC_API_KEY, Claude triages new errors too (the same gate and spend cap); the
        # rules' triage stays the fallback and the only source of proposals (bot/triage/claude.py).
        self.claude_triage = (
            ClaudeTriage(self.investigate_gate, db, cards, self.tasks, owners=owners, redact=redactor.redact,
                         wait_s=s.claude_triage_wait_s)
            if self.investigate_gate is not None else None
        )
        self.pipeline = PipelineWorker(
            db, RulesTriager(RuleSet.load(s.rules_file), owners),
            redactor, cards,
            proposer=Proposer(policy, s.proposal_expiry_hours, patterns, auto_fix=s.auto_fix, fix_hosts=s.fix_hosts,
                              github_repo=self.github.repo if self.github is not None else None),
            max_attempts=s.inbox_max_attempts, on_committed=self.sender.notify,
            on_auto_approved=lambda proposal_id: self.decisions.start(proposal_id, AUTO_FIX_ACTOR),
            identify=FixIdentity(patterns) if patterns is not None else None,
            storm=StormGate(s.storm_cards_per_minute), row_budget_s=s.pipeline_row_budget_s,
            tracker=self.glitchtip, second_opinion=self.claude_triage,
            after_resolve=self._wake_resolve_workers,  # a monitor back up: as a human's resolve does
        )
        self.web = WebhookServer(
            db, s.webhook_token.get_secret_value() if s.webhook_token else "", on_accepted=self.pipeline.notify,
            on_parsed=self.pipeline.accept_parsed, limits=WebhookLimits.from_settings(s),
        )
        # The daily digest (bot/digest.py): at DIGEST_TIME in TIMEZONE, and on /digest.
        self.digest = DigestService(db, cards, policy, at=s.digest_time, tz=ZoneInfo(s.timezone),
                                    overrides=self.overrides, claude_on=s.claude_on)
        self.commands = CommandService(db, self.decisions, policy, chat_id, webhook_refused=self.web.rejected.snapshot,
                                       digest=self.digest)

        # Telegram in: the dispatcher hands each update to a thin handler with the services injected.
        self.dp = Dispatcher(decisions=self.decisions, commands=self.commands)
        gate = ChatGate(chat_id, approvers)
        self.dp.message.outer_middleware(gate)
        self.dp.callback_query.outer_middleware(gate)
        self.dp.include_router(build_router())

        self.scheduler = AsyncIOScheduler(timezone=s.timezone)
        self.scheduler.add_job(self.decisions.expire_due, "interval", seconds=60, id="expire_proposals")
        self.scheduler.add_job(self._purge_inbox, "interval", hours=1, id="purge_inbox")
        self.scheduler.add_job(self.digest.run_scheduled, self.digest.trigger, id="daily_digest",
                               misfire_grace_time=MISFIRE_GRACE_S, coalesce=True)
        if self.glitchtip is not None:  # GlitchTip alerts once per issue: counts come from its API
            self.scheduler.add_job(self.glitchtip.schedule_refresh, "interval",
                                   minutes=s.glitchtip_refresh_minutes, id="glitchtip_refresh")

        self._loops: list[asyncio.Task[None]] = []
        self._polling = False
        self._stopping = False
        self._database_open = False
        self.failure: StartupError | None = None  # set when a loop finds a failure retries cannot fix
        self._failed = asyncio.Event()

    async def _purge_inbox(self) -> None:
        await InboxRepository(self.db).purge_done(self.settings.inbox_retention_days)

    async def start(self) -> None:
        """Start every part; on any failure stop what had started, then raise (StartupError if known)."""
        try:
            await self._start_parts()
        except BaseException:
            try:
                await self.stop()
            except Exception:  # the start's own error is the one to report
                log.warning("stopping after a failed start did not finish cleanly", exc_info=True)
            raise

    async def _start_parts(self) -> None:
        s = self.settings
        await self._open_database()
        if s.kill_switch:
            await killswitch.write(self.db, True, "environment (KILL_SWITCH=on)", "forced on at start")
            await AuditRepository(self.db).record("killswitch.on", "forced by environment", actor_name="environment")
        await self.sender.replay_journal()
        await self.executor.recover_interrupted()
        await self.investigator.recover_interrupted()  # cut short by a crash: marked interrupted, said in the chat
        if self.claude_triage is not None and not s.setup_mode:
            await self.claude_triage.recover()  # Claude's triage cut short by a stop: asked again
        try:
            await self.web.start(s.webhook_host, s.webhook_port)
        except OSError as exc:
            raise StartupError(webhook_listen_problem(s.webhook_host, s.webhook_port, exc)) from exc
        await self._check_token()
        if self.glitchtip is not None:
            await self.glitchtip.start()  # before the pipeline: it knows which open issues GlitchTip resolved
        self._loops = [
            asyncio.create_task(self.sender.run(), name="outbox-sender"),
            asyncio.create_task(self._poll(), name="telegram-polling"),
            asyncio.create_task(self._register_commands(), name="set-my-commands"),
        ]
        if not s.setup_mode:  # setup mode has no chat for cards: alerts wait in the inbox
            self._loops.append(asyncio.create_task(self.pipeline.run(), name="pipeline"))
        if self.glitchtip is not None:
            self._loops.append(asyncio.create_task(self.glitchtip.run(), name="glitchtip"))
        if self.github is not None:
            self._loops.append(asyncio.create_task(self.github.run(), name="github"))
        try:
            await self.digest.catch_up()  # a digest missed while the bot was down: sent once, now
        except Exception:  # the bot starts all the same; the next scheduled digest tries again
            log.exception("the missed daily digest could not be sent at start")
        self.scheduler.start()
        self.sender.notify()

    async def _open_database(self) -> None:
        path = self.settings.database_path
        try:
            await self.db.connect()
        except (sqlite3.Error, OSError) as exc:
            raise StartupError(
                f"DATABASE_PATH {path}: cannot open the database ({exc}): "
                "point DATABASE_PATH at a SQLite file in a directory this user can write"
            ) from exc
        self._database_open = True

    async def _check_token(self) -> None:
        """Ask Telegram who the bot is: a rejected token stops the start; no answer does not."""
        try:
            await self.bot.get_me(request_timeout=int(TOKEN_CHECK_TIMEOUT_S))
        except (TelegramUnauthorizedError, TelegramNotFound) as exc:
            raise StartupError(token_rejected(exc, self.settings.telegram_api_base)) from exc
        except Exception as exc:
            log.warning("getMe at start: %s; starting anyway: alerts are taken, cards wait in the outbox, "
                        "and polling retries until Telegram answers", _trouble(exc))

    def _wake_resolve_workers(self) -> None:
        """A resolve was committed: GlitchTip's PUT and the GitHub comment go now, not at the next look."""
        for worker in (self.glitchtip, self.github):
            if worker is not None:
                worker.notify()

    def _fail(self, error: StartupError) -> None:
        """A failure that no retry can fix, found by a background loop: stop the process with it.

        Not logged here: `run_until_signal` raises it and the CLI prints it, once.
        """
        if self.failure is None:
            self.failure = error
        self._failed.set()

    async def _poll(self) -> None:
        """aiogram polling, restarted while Telegram is unreachable at start (getMe fails)."""
        delay = 1.0
        while not self._stopping:
            self._polling = True
            try:
                await self.dp.start_polling(
                    self.bot, handle_signals=False, close_bot_session=False, polling_timeout=10,
                    allowed_updates=["message", "callback_query"],
                )
                return
            except (TelegramUnauthorizedError, TelegramNotFound) as exc:
                self._fail(StartupError(token_rejected(exc, self.settings.telegram_api_base)))
                return
            except Exception as exc:
                log.warning("Telegram polling could not start: %s; retrying in %.0fs", _trouble(exc), delay)
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
            except (TelegramUnauthorizedError, TelegramNotFound) as exc:
                self._fail(StartupError(token_rejected(exc, self.settings.telegram_api_base)))
                return
            except Exception as exc:
                log.warning("setMyCommands failed: %s; retrying in %.0fs", _trouble(exc), delay)
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
            # (The GlitchTip and GitHub workers' jobs are rows: one cut short mid-call is tried again,
            # and a GitHub create cut short is looked for by its marker before another is made.)
            if task.get_name() in ("set-my-commands", "glitchtip", "github") or (
                task.get_name() == "telegram-polling" and not self._polling
            ):
                task.cancel()
        done, pending = await asyncio.wait(self._loops, timeout=SHUTDOWN_GRACE_S) if self._loops else (set(), set())
        for task in pending:
            task.cancel()
        # The last pipeline batch (an AUTO_FIX approval) or a press handled meanwhile may have started
        # an action after the first wait: give it the same grace, then cancel what is left before the
        # database closes (it is reported as interrupted at the next start, never re-run).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.tasks.wait_idle(), SHUTDOWN_GRACE_S)
        await self.tasks.cancel_all()
        self.pipeline.close()
        with contextlib.suppress(Exception):
            self.scheduler.shutdown(wait=False)
        if self.glitchtip is not None:
            await self.glitchtip.close()
        if self.github is not None:
            await self.github.close()
        if self.investigate_gate is not None:
            await self.investigate_gate.close()
        await self.bot.session.close()
        if self.sender.journal is not None:
            if self._database_open:  # a start that failed before the database opened has nothing to replay
                await self.sender.replay_journal()  # a clean stop leaves an empty journal
            self.sender.journal.close()
        await self.db.close()
        self._database_open = False

    async def wait(self, stop: asyncio.Event) -> None:
        """Until `stop` is set, or a background loop finds a failure no retry can fix (raised)."""
        stopped = asyncio.create_task(stop.wait())
        failed = asyncio.create_task(self._failed.wait())
        try:
            await asyncio.wait({stopped, failed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            failed.cancel()
        if self.failure is not None:
            raise self.failure

    async def run_until_signal(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        log.info("remediator running: stage %s, chat %s, webhook on %s:%s", self.settings.rollout_stage,
                 self.chat_id, self.settings.webhook_host, self.web.port)
        try:
            await self.wait(stop)
        finally:
            log.info("stopping…")
            await self.stop()


def _describe(exc: BaseException) -> str:
    """An exception as `Type: message`, for one log line."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _trouble(exc: BaseException) -> str:
    """What a failed Telegram call says about Telegram, for a retry's log line."""
    if isinstance(exc, TelegramNetworkError | OSError | TimeoutError):
        return f"Telegram is not reachable ({_describe(exc)})"
    if isinstance(exc, TelegramServerError):
        return f"Telegram answered with a server error ({_describe(exc)})"
    return _describe(exc)
