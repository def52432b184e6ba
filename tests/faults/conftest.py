"""What the fault tests share: a deployment of real processes on this run's database, on the
Redis or the RabbitMQ broker (a namespace or virtual host of each test's own), an organization
of many members, the run turned on as the API does, and the checks every scenario ends with.

Each test writes its figures as one JSON file in `FAULTS_RESULTS` (default
`.require2fa/faults/`), and prints them: docs/RELIABILITY.md quotes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import dramatiq
import pytest
import redis as sync_redis

from commands.seed import seed
from db import counts
from db.audit import Actor
from jobs.broker import build_broker
from require2fa import organization_settings
from tests.conftest import RABBITMQ_URL, _unavailable
from tests.factories import create_user
from tests.faults.deployment import CountingSink, Deployment, start_sink

RESULTS = Path(os.environ.get("FAULTS_RESULTS") or ".require2fa/faults")
# Emails a second: high enough that 10k emails take a few seconds more than the removals.
EMAIL_RATE = 500


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@dataclass
class Stack:
    """One test's deployment: where its processes connect, and a broker to send with."""

    kind: str
    namespace: str
    deployment: Deployment
    sender: dramatiq.Broker
    sink: CountingSink
    controller: Any

    def send(self, actor_name: str, queue_name: str, *args: Any) -> None:
        """Sends a message by actor name, as the API and the clock do."""
        message: dramatiq.Message[Any] = dramatiq.Message(
            queue_name=queue_name, actor_name=actor_name, args=args, kwargs={}, options={}
        )
        self.sender.enqueue(message)


@pytest.fixture
def make_stack(
    tmp_path: Path, database: str, redis_url: str, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Stack]]:
    """`make_stack(kind, redis_url=…, database_url=…, email_rate=…)`: a deployment (no process
    started yet), an SMTP sink of its own, a sending broker; all stopped at the end."""
    made: list[Stack] = []
    vhosts: list[str] = []
    namespaces: list[tuple[str, str]] = []

    def make(
        kind: str,
        *,
        redis: str | None = None,
        database_url: str | None = None,
        email_rate: float = EMAIL_RATE,
        smtp_port: int | None = None,
    ) -> Stack:
        namespace = f"r2fa-faults-{uuid.uuid4().hex[:8]}"
        redis = redis or redis_url
        env = {
            **os.environ,
            "ENVIRONMENT": "development",
            "DATABASE_URL": database_url or database,
            "REDIS_URL": redis,
            "REDIS_NAMESPACE": namespace,
            "BASE_URL": "http://testserver",
            "EMAIL_RATE": str(email_rate),
            "LOG_FORMAT": "json",
        }
        env.pop("BROKER_URL", None)
        broker_url = redis
        if kind == "rabbitmq":
            try:
                _rabbitmqctl("add_vhost", namespace)
                _rabbitmqctl("set_permissions", "-p", namespace, "guest", ".*", ".*", ".*")
            except (OSError, subprocess.SubprocessError) as err:
                _unavailable("RabbitMQ", err)  # fails under CI=true, as in tests/conftest.py
            vhosts.append(namespace)
            broker_url = f"{RABBITMQ_URL.rstrip('/')}/{namespace}"
            env["BROKER_URL"] = broker_url
        namespaces.append((redis, namespace))
        controller, sink = start_sink(smtp_port if smtp_port is not None else None)
        env["SMTP_URL"] = f"smtp://127.0.0.1:{controller.port}"
        logs = tmp_path / f"logs-{len(made)}"
        logs.mkdir()
        stack = Stack(
            kind=kind,
            namespace=namespace,
            deployment=Deployment(logs=logs, env=env),
            sender=build_broker(broker_url, namespace, middleware=[], redis_url=redis),
            sink=sink,
            controller=controller,
        )
        made.append(stack)
        return stack

    yield make
    for stack in made:
        stack.deployment.stop_all()
        stack.sender.close()
        with contextlib.suppress(AssertionError):  # stopped already by the test
            stack.controller.stop()
    for vhost in vhosts:
        _rabbitmqctl("delete_vhost", vhost)
    for url, namespace in namespaces:
        try:
            client = sync_redis.Redis.from_url(url, socket_timeout=5)
            for key in client.scan_iter(f"{namespace}*"):
                client.delete(key)
            client.close()
        except sync_redis.RedisError:
            pass  # a private server already gone


@dataclass
class Org:
    id: int
    owner: asyncpg.Record
    expected: int  # members who do not meet the requirement (the owner has 2FA)
    members: int
    slug: str


async def big_org(pool: asyncpg.Pool, settings: Any, members: int, enrolled: float) -> Org:
    owner = await create_user(pool, f"owner-{uuid.uuid4().hex[:6]}@faults.test", has2fa=True)
    slug = f"faults-{uuid.uuid4().hex[:6]}"
    async with pool.acquire() as conn:
        result = await seed(
            conn,
            settings,
            slug=slug,
            count=members,
            enrolled=enrolled,
            owner_email=owner["email"],
        )
        expected = await counts.count_noncompliant(
            conn, result.organization_id, except_user_id=owner["id"]
        )
    return Org(result.organization_id, owner, expected, members, slug)


async def turn_on(pool: asyncpg.Pool, org: Org) -> int:
    """Turns the requirement on as the owner, with the API's own function; returns the run."""
    async with pool.acquire() as conn, conn.transaction():
        change = await organization_settings.change_organization(
            conn,
            organization_settings.SettingsChange(require_2fa=True),
            organization_id=org.id,
            actor=Actor(user_id=org.owner["id"], label=org.owner["email"], ip_address="127.0.0.1"),
            role="owner",
        )
    assert change.started and change.run is not None
    return int(change.run["id"])


async def run_status(pool: asyncpg.Pool, run_id: int) -> asyncpg.Record:
    async with pool.acquire() as conn:
        return await conn.fetchrow("select * from enforcement_runs where id = $1", run_id)


async def removed_so_far(pool: asyncpg.Pool, run_id: int) -> int:
    async with pool.acquire() as conn:
        return int(
            await conn.fetchval("select count(*) from members where removed_by_run = $1", run_id)
        )


async def emails_sent(pool: asyncpg.Pool, run_id: int) -> int:
    async with pool.acquire() as conn:
        return int(
            await conn.fetchval(
                """select count(*) from email_outbox
                   where enforcement_id = $1 and template = 'removed_for_2fa'
                     and status = 'sent'""",
                run_id,
            )
        )


async def until(check: Callable[[], Any], what: str, limit: float) -> float:
    """Waits (polling) for `check()` to hold; returns the seconds it took. Fails past `limit`."""
    started = time.monotonic()
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return time.monotonic() - started
        if time.monotonic() - started > limit:
            raise AssertionError(f"gave up after {limit:.0f} s waiting for: {what}")
        await asyncio.sleep(0.1)


async def finished(pool: asyncpg.Pool, run_id: int, org: Org) -> bool:
    """The run completed and every removal email is sent."""
    run = await run_status(pool, run_id)
    assert run["status"] not in ("failed", "cancelled"), dict(run)
    return run["status"] == "completed" and await emails_sent(pool, run_id) == org.expected


async def assert_exact(pool: asyncpg.Pool, run_id: int, org: Org, sink: CountingSink) -> dict:
    """The end of every scenario: the run completed; exactly the members without 2FA removed,
    each with one `member.pending` entry and one outbox row, sent; each of those emails at the
    SMTP server at least once. Returns the figures, duplicates included."""
    async with pool.acquire() as conn:
        run = await conn.fetchrow("select * from enforcement_runs where id = $1", run_id)
        found = await conn.fetchrow(
            """select (select count(*) from members where removed_by_run = $1) as removed,
                      (select count(*) from audit_log a join members m on m.id = a.target_member_id
                        where a.event = 'member.pending' and m.removed_by_run = $1) as audit,
                      (select count(distinct a.target_member_id) from audit_log a
                         join members m on m.id = a.target_member_id
                        where a.event = 'member.pending' and m.removed_by_run = $1)
                          as audited_members,
                      (select count(*) from email_outbox
                        where enforcement_id = $1 and template = 'removed_for_2fa') as emails,
                      (select count(*) from email_outbox
                        where enforcement_id = $1 and template = 'removed_for_2fa'
                          and status = 'sent') as sent""",
            run_id,
        )
        message_ids = {
            row["message_id"]: row["to_address"]
            for row in await conn.fetch(
                """select message_id, to_address from email_outbox
                   where enforcement_id = $1 and template = 'removed_for_2fa'""",
                run_id,
            )
        }
        left = await counts.count_noncompliant(conn, org.id, except_user_id=org.owner["id"])
    assert run["status"] == "completed", dict(run)
    assert dict(found) == {
        "removed": org.expected,
        "audit": org.expected,
        "audited_members": org.expected,
        "emails": org.expected,
        "sent": org.expected,
    }
    assert run["removed"] == org.expected and left == 0
    assert run["total"] == run["removed"] + run["skipped"] == org.members + 1
    arrived = {mid: sink.ids[mid] for mid in message_ids}
    missing = [mid for mid, n in arrived.items() if n == 0]
    assert missing == [], f"{len(missing)} emails never arrived"
    for address in message_ids.values():
        assert sink.recipients[address] >= 1
    return {
        "members": org.members,
        "removed": org.expected,
        "member_pending": found["audit"],
        "emails_distinct_at_smtp": sum(1 for n in arrived.values() if n),
        "duplicate_emails": sum(n - 1 for n in arrived.values()),
        "recipients_with_two_copies": sum(1 for n in arrived.values() if n > 1),
    }


def record(name: str, figures: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    print(f"\nFAULTS {name} {json.dumps(figures, sort_keys=True)}")


async def wait_for_lock_wait(pool: asyncpg.Pool, blocker: int, limit: float = 120.0) -> int:
    """Waits until a connection is blocked by the backend `blocker` (a lock the test holds);
    returns its pid."""
    started = time.monotonic()
    async with pool.acquire() as conn:
        while True:
            found = await conn.fetchval(
                """select pid from pg_stat_activity
                   where wait_event_type = 'Lock' and datname = current_database()
                     and $1 = any(pg_blocking_pids(pid))
                   limit 1""",
                blocker,
            )
            if found is not None:
                return int(found)
            if time.monotonic() - started > limit:
                raise AssertionError("no connection came to wait on the lock")
            await asyncio.sleep(0.02)
