"""Real services for the tests: PostgreSQL (a fresh database per run), Redis, an SMTP server.

Targets come from DATABASE_URL / REDIS_URL, else 127.0.0.1:5432 / :6379 (`make test` starts
embedded servers when neither answers). A missing service skips locally and fails under CI=true.
The environment is set here, before any test module imports `jobs`, so the Dramatiq broker
of this run has its own Redis namespace and its workers use this run's database.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import dramatiq
import pytest
import redis as sync_redis
from aiohttp.test_utils import TestClient
from aiosmtpd.controller import Controller

from db.migrate import migrate
from db.pool import create_pool
from require2fa.settings import Settings

RUN_ID = uuid.uuid4().hex[:10]
ADMIN_DSN = os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
TEST_DB = f"require2fa_test_{RUN_ID}"
TEST_DSN = urlunsplit(urlsplit(ADMIN_DSN)._replace(path=f"/{TEST_DB}"))
NAMESPACE = f"require2fa-test-{RUN_ID}"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# The `smtp_server` fixture listens here; Dramatiq workers started by tests send to it too.
SMTP_PORT = _free_port()

os.environ.update(
    ENVIRONMENT="development",
    DATABASE_URL=TEST_DSN,
    REDIS_URL=REDIS_URL,
    REDIS_NAMESPACE=NAMESPACE,
    BASE_URL="http://testserver",
    SMTP_URL=f"smtp://127.0.0.1:{SMTP_PORT}",
)

TABLES = (
    "users, api_tokens, authenticators, recovery_codes, organizations, teams, members, "
    "member_teams, audit_log, enforcement_runs, enforcement_batches, email_outbox, "
    "purged_members"
)


def _unavailable(what: str, err: Exception) -> None:
    message = f"{what} is not reachable: {err}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


# --- PostgreSQL ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
async def database() -> AsyncIterator[str]:
    """A fresh, migrated database for this test run; dropped at the end."""
    try:
        admin = await asyncpg.connect(ADMIN_DSN, timeout=5)
    except (OSError, asyncpg.PostgresError) as err:
        _unavailable("PostgreSQL", err)
    await admin.execute(f'create database "{TEST_DB}"')
    conn = await asyncpg.connect(TEST_DSN)
    await migrate(conn)
    await conn.close()
    yield TEST_DSN
    await admin.execute(f'drop database if exists "{TEST_DB}" with (force)')
    await admin.close()


@pytest.fixture(scope="session")
async def pool(database: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database, max_size=10)
    yield pool
    await pool.close()


@pytest.fixture(autouse=True)
async def _clean_tables(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Each test starts from empty tables (only when the test uses the database)."""
    yield
    if "pool" in request.fixturenames:
        pool = request.getfixturevalue("pool")
        async with pool.acquire() as conn:
            await conn.execute(f"truncate {TABLES} restart identity cascade")


# --- Redis --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    client = sync_redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except sync_redis.RedisError as err:
        _unavailable("Redis", err)
    yield REDIS_URL
    for key in client.scan_iter(f"{NAMESPACE}*"):
        client.delete(key)
    client.close()


@pytest.fixture(autouse=True)
def _forget_redis_state(request: pytest.FixtureRequest) -> Iterator[None]:
    """Rate-limit counters, pending SMS codes and WebAuthn challenges are keyed by ids that
    restart in every test:
    forget them after each test that used Redis."""
    yield
    if "redis_url" not in request.fixturenames:
        return
    client = sync_redis.Redis.from_url(REDIS_URL)
    for pattern in ("rl", "sms-code", "webauthn"):
        for key in client.scan_iter(f"{NAMESPACE}:{pattern}:*"):
            client.delete(key)
    client.close()


# --- Dramatiq ------------------------------------------------------------------------------


@pytest.fixture
def broker(redis_url: str, pool: asyncpg.Pool) -> Iterator[dramatiq.Broker]:
    """This run's Redis broker (its own namespace), every queue empty before and after."""
    from jobs.broker import broker

    broker.flush_all()
    yield broker
    broker.flush_all()


@pytest.fixture
async def start_worker(broker: dramatiq.Broker) -> AsyncIterator[Callable[..., dramatiq.Worker]]:
    """`start_worker("enforcement", threads=4)`: real worker threads on those queues, consuming
    from Redis in this process; every one started is stopped at the end of the test."""
    started: list[dramatiq.Worker] = []

    def start(*queues: str, threads: int = 2) -> dramatiq.Worker:
        worker = dramatiq.Worker(broker, worker_threads=threads, queues=set(queues))
        worker.start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        await asyncio.to_thread(worker.stop)


# --- SMTP ---------------------------------------------------------------------------------


class Mailbox:
    """An aiosmtpd handler that keeps every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 (aiosmtpd's name)
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        return "250 OK"

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.messages if address in str(m["To"])]


class RestartableController(Controller):
    """A Controller that can `start()` again after `stop()`: tests take the server down a while."""

    def start(self) -> None:
        if self.loop.is_closed():
            self.loop = asyncio.new_event_loop()
        super().start()


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[tuple[Controller, Mailbox]]:
    mailbox = Mailbox()
    controller = RestartableController(mailbox, hostname="127.0.0.1", port=SMTP_PORT)
    controller.start()
    yield controller, mailbox
    controller.stop()


@pytest.fixture
def mailbox(smtp_server: tuple[Controller, Mailbox]) -> Mailbox:
    smtp_server[1].messages.clear()
    return smtp_server[1]


# --- The application ----------------------------------------------------------------------


@pytest.fixture
def settings(database: str, redis_url: str, smtp_server: tuple[Controller, Mailbox]) -> Settings:
    controller = smtp_server[0]
    return Settings(
        environment="development",
        database_url=database,
        redis_url=redis_url,
        redis_namespace=NAMESPACE,
        smtp_url=f"smtp://127.0.0.1:{controller.port}",
        base_url="http://testserver",
    )


@pytest.fixture
async def client(aiohttp_client, settings: Settings, pool: asyncpg.Pool) -> TestClient:
    from api.app import create_app

    return await aiohttp_client(create_app(settings))
