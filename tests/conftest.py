"""Shared fixtures: the Bot API emulator on 127.0.0.1 and the real application wired to it, and
the services alone on a real SQLite file (no HTTP) for the service-level tests."""

from __future__ import annotations

import asyncio
import atexit
import functools
import json
import os
import socket
import ssl
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import pytest
from pydantic import SecretStr
from xdist.scheduler import LoadScopeScheduling

from bot.background import BackgroundTasks
from bot.card_publisher import CardPublisher
from bot.chat_commands import CommandService
from bot.decisions import DecisionService
from bot.execution import AcknowledgeRunner, KindRunner, ProposalExecutor
from bot.models import Actor, Alert, AlertKind, Category, Priority, Proposal, Triage, utcnow
from bot.proposals import ProposalKind
from bot.rollout import RolloutPolicy, Stage
from bot.settings import Settings
from bot.telegram_emulator import BotAPIEmulator
from storage.audit import AuditEntry, AuditRepository
from storage.db import Database
from storage.incidents import IncidentRepository
from storage.outbox import OutboxItem, OutboxRepository
from storage.proposals import ProposalRepository
from tests.forked_cli import ForkedCli, zygote_env

if TYPE_CHECKING:
    # Imported where an app is started: aiogram costs about 1.5 s of CPU, which the xdist controller
    # (it loads this file too, and starts the workers only after) would pay for nothing.
    from bot.app import Application

DATA = Path(__file__).parent / "data"
CHAT_ID = -1001234567890
APPROVER = 111
APPROVER_2 = 222
STRANGER = 999
WEBHOOK_TOKEN = "test-webhook-token-0123456789"
BOT_TOKEN = "123456789:TEST-test-test-test-test-test-test1"


# -- a few tests need the machine to themselves -------------------------------------------------------

#: Tests that need the machine to themselves, one node id a line in tests/run_alone.txt (why: there).
RUN_ALONE = tuple(
    line.strip() for line in (Path(__file__).parent / "run_alone.txt").read_text("utf-8").splitlines()
    if line.strip() and not line.startswith("#")
)


# -- which tests share a worker -----------------------------------------------------------------------

#: scripts/test runs `-n auto --dist loadfile`, scheduled by `FilesAndGroups`: each file is one unit of
#: work (its module fixtures start once), except the files of one group below, which form one unit: what
#: they start up costly is then paid once in the run, not once on every worker. (By file name, here:
#: xdist's own `xdist_group` mark does not reach the scheduler under this pytest.)
WORKER_GROUPS = {
    # The anthropic SDK (about 2 s of CPU to import) and its fake API.
    "claude": ("test_claude_triage", "test_claude_triage_e2e", "test_investigate_claude", "test_investigate_e2e",
               "test_llm_gate"),
    # The preloaded interpreter `python -m bot` commands fork from (tests/forked_cli.py).
    "cli": ("test_cli", "test_demo_drive", "test_e2e_crash", "test_github_check_cli", "test_github_crash",
            "test_glitchtip_check_cli", "test_overrides_cli", "test_redaction_outputs", "test_startup_errors"),
}
_GROUP_OF_FILE = {f"tests/{name}.py": group for group, names in WORKER_GROUPS.items() for name in names}


class FilesAndGroups(LoadScopeScheduling):
    """xdist's `loadfile`, with the files of one `WORKER_GROUPS` group as one unit."""

    def _split_scope(self, nodeid: str) -> str:
        path = nodeid.split("::", 1)[0]
        return _GROUP_OF_FILE.get(path, path)


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which answers every --dist
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> LoadScopeScheduling | None:
    return FilesAndGroups(config, log) if config.getoption("dist") == "loadfile" else None


def _leave_without_teardown() -> None:
    """An xdist worker's last act: its results are sent, its files closed; tearing down every module
    of a process this size only keeps the run waiting (about a second at the end of each run)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if os.environ.get("PYTEST_XDIST_WORKER"):
    atexit.register(_leave_without_teardown)  # handlers registered later (the tests' own) still run before it


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "run_alone: run apart from the parallel run (scripts/test)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.startswith(RUN_ALONE):
            item.add_marker(pytest.mark.run_alone)


T = TypeVar("T")


async def eventually(read: Callable[[], Awaitable[T]], until: Callable[[T], bool], timeout: float = 10.0) -> T:
    """Read again until the condition holds: a wait for something to happen, never a fixed sleep."""
    deadline = time.monotonic() + timeout
    while not until(value := await read()):
        if time.monotonic() > deadline:
            raise AssertionError(f"still {value!r} after {timeout}s")
        await asyncio.sleep(0.01)
    return value


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def glitchtip_sample(name: str) -> bytes:
    return (DATA / "glitchtip" / name).read_bytes()


def corpus() -> list[dict[str, Any]]:
    return [json.loads(line) for line in (DATA / "corpus.jsonl").read_text().splitlines() if line.strip()]


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "telegram_chat_id": CHAT_ID,
        "telegram_approvers": [APPROVER, APPROVER_2],
        "webhook_host": "127.0.0.1",
        "webhook_port": 0,
        "webhook_token": SecretStr(WEBHOOK_TOKEN),
        "database_path": tmp_path / "remediator.db",
        # Fast pacing so tests do not wait on Telegram's real per-chat limits.
        "telegram_rate_per_chat": 200.0,
        "telegram_group_per_minute": 100000,
        "telegram_rate_global": 1000.0,
        # Storm summaries are tested on their own (tests/test_storms_and_poison.py).
        "storm_cards_per_minute": 1000,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
async def emulator() -> AsyncIterator[BotAPIEmulator]:
    async with BotAPIEmulator() as emu:
        yield emu


class Harness:
    """The application under test plus helpers to post alerts and read the chat."""

    def __init__(self, app: Application, emu: BotAPIEmulator, client: httpx.AsyncClient) -> None:
        self.app = app
        self.emu = emu
        self.client = client

    @property
    def base(self) -> str:
        assert self.app.web is not None
        return f"http://127.0.0.1:{self.app.web.port}"

    async def post(self, source: str, body: bytes | dict[str, Any], token: str = WEBHOOK_TOKEN) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return await self.client.post(
            f"{self.base}/webhook/{source}/{token}", content=content, headers={"Content-Type": "application/json"}
        )

    def cards(self) -> list[Any]:
        return [m for m in self.emu.messages(CHAT_ID) if m.from_bot]

    async def wait_cards(self, n: int, timeout: float = 10) -> list[Any]:
        await self.emu.wait_for(lambda: len(self.cards()) >= n, timeout=timeout)
        return self.cards()

    async def wait_text(self, message_id: int, needle: str, timeout: float = 10) -> Any:
        return await self.emu.wait_for(
            lambda: (m := self.emu.message(CHAT_ID, message_id)) and needle in m.plain_text and m, timeout=timeout
        )

    async def press(
        self, message_id: int, data: str, user_id: int = APPROVER, name: str = "Ann", stale: bool = False
    ) -> dict[str, Any]:
        query = self.emu.press_button(CHAT_ID, message_id, user_id, data, first_name=name, stale=stale)
        return await self.emu.wait_for_answer(query, timeout=10)

    async def command(self, text: str, user_id: int = APPROVER, chat_id: int = CHAT_ID) -> Any:
        before = len(self.emu.messages(chat_id))
        self.emu.send_user_message(chat_id, user_id, text)
        # The reply is the next bot message in that chat.
        return await self.emu.wait_for(
            lambda: next((m for m in self.emu.messages(chat_id)[before:] if m.from_bot), None), timeout=10
        )


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One per process: each client building its own loads the CA bundle again (about 50 ms)."""
    return ssl.create_default_context()


@pytest.fixture
async def start_app(
    emulator: BotAPIEmulator, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[Harness]]]:
    from bot.app import Application

    started: list[Application] = []
    client = httpx.AsyncClient(timeout=10, verify=_tls_context())

    async def start(**overrides: Any) -> Harness:
        settings = make_settings(tmp_path, **overrides)
        app = Application(settings, chat_id=CHAT_ID, token=BOT_TOKEN, api_base=emulator.base_url)
        await app.start()
        started.append(app)
        return Harness(app, emulator, client)

    yield start
    for app in started:
        if app.web is not None and app.db._conn is not None:
            await app.stop()
    await client.aclose()


# -- the services alone: a real SQLite file in tmp_path, no HTTP, no emulator -------------------------

ANN = Actor(APPROVER, "Ann")
BOB = Actor(APPROVER_2, "Bob")
MALLORY = Actor(STRANGER, "Mallory")


class Clock:
    """"Now" for the services, moved by the test instead of sleeping. Starts at the real time,
    because storage stamps rows (created_at, approvals) with the real clock."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@dataclass
class Services:
    """The services a press or a command goes through, wired as bot/app.py wires them."""

    db: Database
    clock: Clock
    policy: RolloutPolicy
    cards: CardPublisher
    tasks: BackgroundTasks
    executor: ProposalExecutor
    decisions: DecisionService
    commands: CommandService

    async def open_incident(
        self, title: str = "RuntimeError: worker 7 crashed", *, kind: ProposalKind | None = ProposalKind.ACKNOWLEDGE,
        approvals: int = 1, expires_in: timedelta = timedelta(hours=24), priority: Priority = Priority.P2,
    ) -> tuple[int, int | None]:
        """An incident with its card queued and (unless `kind` is None) a pending proposal, as the
        pipeline leaves it. Returns (incident id, proposal id)."""
        alert = Alert(source="generic", kind=AlertKind.ERROR, title=title, fingerprint=f"title:{title}",
                      project="jobs", environment="production")
        triage = Triage(priority=priority, category=Category.CODE, likely_cause="a bug in the worker")
        async with self.db.transaction() as tx:
            incident = await IncidentRepository(tx).create(alert, triage, self.clock(), CHAT_ID, None)
            proposal_id = None
            if kind is not None:
                proposal_id = await ProposalRepository(tx).create(
                    incident.id, kind, f"{kind.value}: {title}", self.clock() + expires_in,
                    pattern_id="touch_fix" if kind is ProposalKind.PATTERN else None, approvals_required=approvals,
                )
            await self.cards.publish(tx, incident.id)
        return incident.id, proposal_id

    async def proposal(self, proposal_id: int | None) -> Proposal:
        assert proposal_id is not None
        found = await ProposalRepository(self.db).get(proposal_id)
        assert found is not None
        return found

    async def audit(self, action: str | None = None) -> list[AuditEntry]:
        entries = await AuditRepository(self.db).list()
        return [e for e in entries if action is None or e.action == action]

    async def queued(self) -> list[OutboxItem]:
        """What would be sent to Telegram next (no sender runs in these tests)."""
        return await OutboxRepository(self.db).pending()

    async def card(self, incident_id: int) -> dict[str, Any]:
        """The card as it would be sent or edited now: its newest queued rendering."""
        [item] = [i for i in await self.queued() if i.incident_id == incident_id]
        return item.payload

    async def messages(self) -> list[str]:
        """Plain chat messages queued (announcements, notices), oldest first."""
        return [i.payload["text"] for i in await self.queued() if i.incident_id is None]


def card_buttons(payload: dict[str, Any]) -> list[str]:
    """The callback data of every button a queued card draws."""
    return [data for row in payload["buttons"] for _text, data in row]


@pytest.fixture
async def make_services(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Services]]]:
    """Build the services at a rollout stage; a test may swap the runners or the approver list."""
    built: list[Services] = []

    async def make(
        stage: int = 2, *, approvers: set[int] | None = None, runners: Mapping[ProposalKind, KindRunner] | None = None,
        executor_approvers: set[int] | None = None, start_actions: bool = True,
        redact: Callable[[str], str] = lambda text: text,
    ) -> Services:
        db = await Database(tmp_path / f"services-{len(built)}.db").connect()
        clock = Clock()
        policy = RolloutPolicy(Stage(stage))
        approver_ids = {APPROVER, APPROVER_2} if approvers is None else approvers
        cards = CardPublisher(CHAT_ID, policy)
        tasks = BackgroundTasks()
        executor = ProposalExecutor(
            db, cards, approvers=approver_ids if executor_approvers is None else executor_approvers, policy=policy,
            runners=runners if runners is not None else {ProposalKind.ACKNOWLEDGE: AcknowledgeRunner()},
            redact=redact,
        )
        decisions = DecisionService(db, cards, approvers=approver_ids, policy=policy, tasks=tasks,
                                    start_action=executor.execute if start_actions else None, clock=clock)
        commands = CommandService(db, decisions, policy, CHAT_ID, webhook_refused=lambda: {"not_found": 2})
        built.append(Services(db, clock, policy, cards, tasks, executor, decisions, commands))
        return built[-1]

    yield make
    for made in built:
        await made.decisions.wait_idle()  # an action still running would write to a closed database
        await made.db.close()


@pytest.fixture
async def services(make_services: Callable[..., Awaitable[Services]]) -> Services:
    """The services at stage 2 (decisions on, no fixes), Ann and Bob approvers."""
    return await make_services()


@pytest.fixture(scope="session")
def forked_cli() -> Iterator[ForkedCli]:
    """`python -m bot ...` as real processes forked from ONE preloaded interpreter per pytest worker
    (tests/forked_cli.py), shared by every test file that runs the command line. With `bot.app`
    (aiogram) preloaded: `run` imports it, and so does what `triage` imports, in part."""
    repo = Path(__file__).resolve().parent.parent
    zygote = ForkedCli(repo, zygote_env(repo, Settings.model_fields), preload=("bot.app",))
    try:
        yield zygote
    finally:
        zygote.close()
