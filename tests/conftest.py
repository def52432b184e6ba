"""Real services for the tests: PostgreSQL (a fresh database per run), Redis, an SMTP server,
and RabbitMQ for the tests that run on both brokers. A "run" is one pytest process: each of
the processes of `pytest -n` (`make test`) has its own database, Redis namespace, RabbitMQ
virtual host, SMTP port and DATA_DIR.

Targets come from DATABASE_URL / REDIS_URL, else 127.0.0.1:5432 / :6379 (`make test` starts
embedded servers when neither answers); RabbitMQ from RABBITMQ_URL, else 127.0.0.1:5672 as
guest, in a virtual host of this run's own (made and deleted with `rabbitmqctl`). A missing
service skips locally and fails under CI=true.

Every test that runs real workers (it uses `start_worker`, or is marked `e2e` or `faults`, and
uses `broker`) runs twice: `[redis]` on the Redis broker, `[rabbitmq]` on the RabbitMQ one.
The environment is set here, before any test module imports `jobs`, so the Dramatiq broker
of this run has its own Redis namespace and its workers use this run's database.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import types
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import dramatiq
import pytest
import redis as sync_redis
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient
from aiosmtpd.controller import Controller
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from db.migrate import migrate
from db.pool import create_pool
from require2fa.settings import Settings
from tests.security.totals import (  # noqa: F401  (hooks of this conftest)
    pytest_sessionfinish,
    pytest_terminal_summary,
    pytest_testnodedown,
)

RUN_ID = uuid.uuid4().hex[:10]
# The server given to the run. DATABASE_URL is then set to this process's own database (below),
# and the processes of `pytest -n` inherit that environment: the given one travels under a name
# of its own, so that each of them makes a database of its own on that server.
ADMIN_DSN = (
    os.environ.get("TEST_ADMIN_DATABASE_URL")
    or os.environ.get("DATABASE_URL")
    or "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
TEST_DB = f"require2fa_test_{RUN_ID}"
TEST_DSN = urlunsplit(urlsplit(ADMIN_DSN)._replace(path=f"/{TEST_DB}"))
NAMESPACE = f"require2fa-test-{RUN_ID}"
RABBITMQ_URL = os.environ.get("RABBITMQ_URL") or "amqp://guest:guest@127.0.0.1:5672"
RABBITMQ_VHOST = NAMESPACE
BROKERS = ("redis", "rabbitmq")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# The `smtp_server` fixture listens here; Dramatiq workers started by tests send to it too.
SMTP_PORT = _free_port()

os.environ.update(
    TEST_ADMIN_DATABASE_URL=ADMIN_DSN,
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
    "purged_members, sessions, webhooks, webhook_deliveries"
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


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """An asyncio Redis client on the tests' server; the email dispatch's keys of this run
    (rate buckets, leases) are deleted after the test."""
    client = aioredis.Redis.from_url(redis_url)
    yield client
    keys = [key async for key in client.scan_iter(f"{NAMESPACE}:email:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


# --- Dramatiq ------------------------------------------------------------------------------


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests with real workers run on both brokers (see the module's docstring)."""
    names = metafunc.fixturenames
    real_workers = "start_worker" in names or any(
        metafunc.definition.get_closest_marker(mark) for mark in ("e2e", "faults")
    )
    if "broker_kind" in names and "broker" in names and real_workers:
        metafunc.parametrize("broker_kind", BROKERS, indirect=True)


@pytest.fixture
def broker_kind(request: pytest.FixtureRequest) -> str:
    return getattr(request, "param", "redis")


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def rabbitmq_url() -> Iterator[str]:
    """A virtual host of this run's own on the RabbitMQ server (guest may use it); deleted at
    the end. Nothing else on that server is touched."""
    if shutil.which("rabbitmqctl") is None:
        _unavailable("RabbitMQ", RuntimeError("rabbitmqctl is not installed"))
    try:
        _rabbitmqctl("add_vhost", RABBITMQ_VHOST)
        _rabbitmqctl("set_permissions", "-p", RABBITMQ_VHOST, "guest", ".*", ".*", ".*")
    except (OSError, subprocess.SubprocessError) as err:
        _unavailable("RabbitMQ", err)
    yield f"{RABBITMQ_URL.rstrip('/')}/{RABBITMQ_VHOST}"
    _rabbitmqctl("delete_vhost", RABBITMQ_VHOST)


@pytest.fixture
def broker_url(request: pytest.FixtureRequest, broker_kind: str) -> str | None:
    """BROKER_URL of this test: None (the Redis broker at REDIS_URL) or this run's vhost."""
    if broker_kind == "rabbitmq":
        return str(request.getfixturevalue("rabbitmq_url"))
    return None


# Worker threads started in this process by `start_worker`; the RabbitMQ join waits for them.
_STARTED: list[dramatiq.Worker] = []
# How long (ms) an idle worker thread waits on its work queue, and an idle consumer on its
# queue, before looking whether it has been told to stop. Dramatiq's default (1,000) made
# every `worker.stop()` sleep out a second on each side (worker threads, then consumers), for
# nothing: a thread that holds a message still finishes it before it stops, and its
# unacknowledged messages go back to the queue as before.
TEST_WORKER_TIMEOUT_MS = 50


def _join_with_workers(self: RabbitmqBroker, queue_name: str, **options: object) -> None:
    """RabbitMQ's message counts leave out messages a worker holds (prefetched, running,
    delayed), so its `join` alone may return early: join the workers of this process too, until
    the queue stays empty."""
    while True:
        RabbitmqBroker.join(self, queue_name, **options)  # type: ignore[arg-type]
        for worker in list(_STARTED):
            worker.join()
        if not any(self.get_queue_message_counts(queue_name)[:2]):
            return


@pytest.fixture
def broker(
    redis_url: str,
    pool: asyncpg.Pool,
    broker_url: str | None,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[dramatiq.Broker]:
    """This run's broker, every queue empty before and after: the Redis one (its own
    namespace), or, for `[rabbitmq]`, a RabbitMQ broker on this run's vhost that every actor is
    moved to for the test (and `BROKER_URL` set, for the processes the test starts)."""
    # `jobs.broker` as an attribute is the broker object (jobs/__init__.py imports it by that
    # name); the module is the one in sys.modules.
    import jobs  # noqa: F401

    broker_module = sys.modules["jobs.broker"]
    redis_broker = broker_module.broker
    if broker_url is None:
        redis_broker.flush_all()
        yield redis_broker
        redis_broker.flush_all()
        return
    rabbit = broker_module.build_broker(broker_url, NAMESPACE)
    assert isinstance(rabbit, RabbitmqBroker)
    rabbit.join = types.MethodType(_join_with_workers, rabbit)  # type: ignore[method-assign]
    actors = [redis_broker.get_actor(name) for name in redis_broker.get_declared_actors()]
    for actor in actors:
        actor.broker = rabbit
        rabbit.declare_actor(actor)
    monkeypatch.setattr(broker_module, "broker", rabbit)
    monkeypatch.setenv("BROKER_URL", broker_url)
    dramatiq.set_broker(rabbit)
    rabbit.flush_all()
    try:
        yield rabbit
    finally:
        rabbit.flush_all()
        for actor in actors:
            actor.broker = redis_broker
        dramatiq.set_broker(redis_broker)
        rabbit.close()


@pytest.fixture
async def start_worker(broker: dramatiq.Broker) -> AsyncIterator[Callable[..., dramatiq.Worker]]:
    """`start_worker("enforcement", threads=4)`: real worker threads on those queues, consuming
    from this test's broker in this process; every one started is stopped at the end."""
    started: list[dramatiq.Worker] = []

    def start(*queues: str, threads: int = 2) -> dramatiq.Worker:
        worker = dramatiq.Worker(
            broker,
            worker_threads=threads,
            queues=set(queues),
            worker_timeout=TEST_WORKER_TIMEOUT_MS,
        )
        worker.start()
        started.append(worker)
        _STARTED.append(worker)
        return worker

    yield start
    for worker in started:
        await asyncio.to_thread(worker.stop)
        _STARTED.remove(worker)


# --- SMTP ---------------------------------------------------------------------------------


class Mailbox:
    """An aiosmtpd handler that keeps every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def handle_DATA(self, server, session, envelope) -> str:
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


@pytest.fixture(scope="session", autouse=True)
def run_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """DATA_DIR of this run (the console SMS file, the development mailbox), for the settings
    below and the processes tests start: not the `.require2fa/` of the working directory, which
    a developer's `require2fa dev` and the other pytest processes of the run share."""
    path = tmp_path_factory.mktemp("data")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DATA_DIR", str(path))
        yield path


@pytest.fixture
def settings(
    database: str,
    redis_url: str,
    broker_url: str | None,
    smtp_server: tuple[Controller, Mailbox],
    run_data_dir: Path,
) -> Settings:
    controller = smtp_server[0]
    return Settings(
        environment="development",
        database_url=database,
        redis_url=redis_url,
        broker_url=broker_url,
        redis_namespace=NAMESPACE,
        smtp_url=f"smtp://127.0.0.1:{controller.port}",
        base_url="http://testserver",
        data_dir=str(run_data_dir),
    )


@pytest.fixture
async def client(aiohttp_client, settings: Settings, pool: asyncpg.Pool) -> TestClient:
    from api.app import create_app

    return await aiohttp_client(create_app(settings))
