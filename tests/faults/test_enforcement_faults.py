"""Issue 14, points 1 and 2: an enforcement of FAULTS_MEMBERS members (100,000 by default, 10%
of them without 2FA) on a deployment of real processes, with a process or a server taken away
in the middle. Every scenario ends with the same exact counts (`assert_exact`): the run
completed; removed = the members without 2FA; one `member.pending` entry and one outbox row
each, all sent; each email at the SMTP server. The emails that arrived twice are counted and
held to their bound.

    make test-faults PYTEST_ARGS="tests/faults/test_enforcement_faults.py"
    FAULTS_MEMBERS=10000 make test-faults PYTEST_ARGS="tests/faults/test_enforcement_faults.py"
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from datetime import UTC, datetime, timedelta

import aiohttp
import asyncpg
import pytest

from commands import devstack
from db import users
from db.migrate import migrate
from db.pool import create_pool
from jobs import email as email_jobs
from jobs.mail import slots
from tests.factories import token_for
from tests.faults.conftest import (
    Org,
    assert_exact,
    big_org,
    emails_sent,
    finished,
    record,
    removed_so_far,
    run_status,
    turn_on,
    until,
    wait_for_lock_wait,
)
from tests.faults.deployment import PostgresServer, RedisServer, process_with_local_port

MEMBERS = int(os.environ.get("FAULTS_MEMBERS") or 100_000)
ENROLLED = 0.9
# The scenarios that `make test` runs too, on a small organization (`[quick]`); the `[full]`
# ones are behind the `faults` marker (`make test-faults`).
QUICK_MEMBERS = 3_000
SIZES = [
    pytest.param(QUICK_MEMBERS, id="quick"),
    pytest.param(MEMBERS, id="full", marks=pytest.mark.faults),
]
FULL = [pytest.param(MEMBERS, id="full", marks=pytest.mark.faults)]
BROKERS = ["redis", "rabbitmq"]
# The emails one killed worker process may send twice: one per SMTP connection it has open.
PER_PROCESS = slots.DISPATCHERS * email_jobs.CONNECTIONS
# Generous liveness deadline for a whole run (the figures recorded are the measurement).
RUN_LIMIT = 900

pytestmark = [pytest.mark.timeout(1800)]


async def owner_of(pool: asyncpg.Pool, backend_pid: int, processes: list) -> object:
    async with pool.acquire() as conn:
        port = await conn.fetchval(
            "select client_port from pg_stat_activity where pid = $1", backend_pid
        )
    return process_with_local_port(processes, int(port))


async def settle(
    stack, pool, run_id, org, started: float, name: str, since: float | None = None, **figures
) -> dict:
    """Waits for the end of the run, checks the exact counts, records the figures (with the
    seconds from `since`, the server's return, to the end)."""
    await until(
        lambda: finished(pool, run_id, org), "the run completed, every email sent", RUN_LIMIT
    )
    total = time.monotonic() - started
    if since is not None:
        figures["seconds_from_return_to_end"] = round(time.monotonic() - since, 1)
    await asyncio.sleep(2)  # a message accepted just before its row was marked arrives
    result = await assert_exact(pool, run_id, org, stack.sink)
    run = await run_status(pool, run_id)
    result.update(
        broker=stack.kind,
        total_seconds=round(total, 1),
        removal_seconds=round((run["finished_at"] - run["started_at"]).total_seconds(), 1),
        **figures,
    )
    record(f"{name}-{stack.kind}", result)
    return result


# --- processes -------------------------------------------------------------------------------


@pytest.mark.parametrize("members", SIZES)
@pytest.mark.parametrize("kind", BROKERS)
async def test_workers_killed_in_planning_removal_and_delivery(
    kind, members, pool, settings, make_stack
) -> None:
    """kill -9 of the worker process that is planning (inside the planning transaction), of the
    one inside a batch's transaction, and of one in the middle of delivering the emails; a new
    worker started after each kill."""
    stack = make_stack(kind)
    deployment = stack.deployment
    org = await big_org(pool, settings, members, ENROLLED)
    # Turned on before any worker runs: the run waits, queued, for the first worker's listener.
    run_id = await turn_on(pool, org)
    started = time.monotonic()
    kills: list[str] = []
    workers: list[object] = []

    async def kill_the_waiting_one(what: str, blocker: int) -> None:
        backend = await wait_for_lock_wait(pool, blocker)
        victim = await owner_of(pool, backend, workers)
        assert victim is not None, "the waiting connection belongs to no worker"
        deployment.kill(victim)  # type: ignore[arg-type]
        workers.remove(victim)  # type: ignore[arg-type]
        workers.append(deployment.worker())
        kills.append(what)

    # A user whom a batch in the middle of the run will remove: their row lock is held here
    # from the start (as 2FA enrollment takes it), so that batch waits for it.
    user_id = await middle_user(pool, org)
    user_holder = await pool.acquire()
    user_lock = user_holder.transaction()
    await user_lock.start()
    try:
        await user_holder.execute("select 1 from users where id = $1 for update", user_id)
        user_blocker = await user_holder.fetchval("select pg_backend_pid()")

        # 1. Planning: the run's first batch row is written here, uncommitted, so that the
        # coordinator's insert of the batches waits for it inside the planning transaction
        # (the workers start now; a listener's first look coordinates the queued run); its
        # worker is killed there.
        holder = await pool.acquire()
        try:
            async with holder.transaction():
                await holder.execute(
                    """insert into enforcement_batches
                           (run_id, batch_no, first_member_id, last_member_id)
                       values ($1, 0, 0, 0)""",
                    run_id,
                )
                deployment.clock()
                workers.extend([deployment.worker(), deployment.worker()])
                await kill_the_waiting_one(
                    "planning", await holder.fetchval("select pg_backend_pid()")
                )
                # Nothing of the killed planning stayed (checked while the row still holds off
                # the coordinator that RabbitMQ hands to the other worker at once).
                assert (await run_status(pool, run_id))["status"] == "queued"
                raise _RolledBack  # the row goes: the planning that comes next writes its own
        except _RolledBack:
            pass
        finally:
            await pool.release(holder)

        # 2. Removal: the worker of the batch waiting for that user is killed inside the
        # batch's transaction.
        await kill_the_waiting_one("removal", user_blocker)
        removed_at_kill = await removed_so_far(pool, run_id)
    finally:
        await user_lock.rollback()
        await pool.release(user_holder)

    # 3. Delivery: once a third of the emails arrived, the worker that is sending is killed
    # (every worker sends; the oldest one goes).
    await until(lambda: stack.sink.received >= org.expected // 3, "a third of the emails", 600)
    victim = workers.pop(0)
    deployment.kill(victim)
    killed_at = time.monotonic()
    sent_at_kill = stack.sink.received
    workers.append(deployment.worker())
    kills.append("delivery")

    result = await settle(
        stack,
        pool,
        run_id,
        org,
        started,
        f"workers_killed-{members}",
        kills=kills,
        removed_at_removal_kill=removed_at_kill,
        emails_at_delivery_kill=sent_at_kill,
        delivery_stood_still_seconds=round(stack.sink.largest_gap_after(killed_at), 1),
    )
    assert result["duplicate_emails"] <= PER_PROCESS


class _RolledBack(Exception):
    """Leaves a `transaction()` block by rolling it back."""


async def middle_user(pool: asyncpg.Pool, org) -> int:
    """The user without 2FA halfway through the organization's members (in id order, the order
    of the batches)."""
    async with pool.acquire() as conn:
        return int(
            await conn.fetchval(
                f"""select u.id from members m join users u on u.id = m.user_id
                    where m.organization_id = $1 and not {users.HAS_2FA_SQL}
                    order by m.id offset $2 limit 1""",
                org.id,
                org.expected // 2,
            )
        )


async def _put(port: int, slug: str, headers: dict[str, str], body: dict) -> aiohttp.ClientResponse:
    async with (
        aiohttp.ClientSession() as session,
        session.put(
            f"http://127.0.0.1:{port}/api/0/organizations/{slug}/", json=body, headers=headers
        ) as response,
    ):
        await response.read()
        return response


@pytest.mark.parametrize("members", SIZES)
@pytest.mark.parametrize("kind", BROKERS)
async def test_web_killed_in_the_middle_of_turning_it_on(
    kind, members, pool, settings, make_stack
) -> None:
    """kill -9 of the web process while the PUT that turns the requirement on is inside its
    transaction, after it wrote the flag (it waits for a lock held here): nothing of it stays.
    Then a PUT on a new web process, whose process is killed as soon as its transaction has
    committed: the run goes on (from the message if it was sent, else from the sweeper, a minute
    or two later). `[quick]` lets that second PUT answer."""
    stack = make_stack(kind)
    deployment = stack.deployment
    org = await big_org(pool, settings, members, ENROLLED)
    headers = await token_for(pool, org.owner["id"])
    deployment.clock()
    deployment.worker()
    deployment.worker()
    port = devstack.free_port()
    web = deployment.web(port)
    # A run scheduled for later: turning it on now cancels it, after writing the flag, under
    # the scheduled run's row lock, which the test holds.
    later = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    answer = await _put(port, org.slug, headers, {"require2FA": True, "enforceAt": later})
    assert answer.status == 200
    async with pool.acquire() as conn:
        before = await conn.fetchrow(
            """select (select count(*) from audit_log where organization_id = $1) as audit,
                      (select require_2fa from organizations where id = $1) as flag""",
            org.id,
        )
    holder = await pool.acquire()
    try:
        async with holder.transaction():
            await holder.execute(
                "select 1 from enforcement_runs where organization_id = $1 for update", org.id
            )
            put = asyncio.create_task(_put(port, org.slug, headers, {"require2FA": True}))
            await wait_for_lock_wait(pool, await holder.fetchval("select pg_backend_pid()"))
            deployment.kill(web)
            with pytest.raises(aiohttp.ClientError):
                await put
    finally:
        await pool.release(holder)
    async with pool.acquire() as conn:
        after = await conn.fetchrow(
            """select (select count(*) from audit_log where organization_id = $1) as audit,
                      (select require_2fa from organizations where id = $1) as flag""",
            org.id,
        )
        runs = await conn.fetch(
            "select status from enforcement_runs where organization_id = $1", org.id
        )
    assert dict(after) == dict(before) and after["flag"] is False
    assert [r["status"] for r in runs] == ["scheduled"]  # no run started, the schedule kept

    web = deployment.web(port)
    async with pool.acquire() as conn:
        put = asyncio.create_task(_put(port, org.slug, headers, {"require2FA": True}))
        deadline = time.monotonic() + 60
        # Looked for as often as the connection answers: the kill should fall between the
        # commit and the answer (whether the message was sent by then, the run must complete).
        while members != QUICK_MEMBERS and not await conn.fetchval(
            """select exists (select 1 from enforcement_runs where organization_id = $1
                                and status in ('queued', 'running', 'completed'))""",
            org.id,
        ):
            assert time.monotonic() < deadline, "the PUT never committed"
        if members != QUICK_MEMBERS:
            deployment.kill(web)
    started = time.monotonic()
    answered = True
    try:
        await put
    except aiohttp.ClientError:
        answered = False
    async with pool.acquire() as conn:
        run_id = await conn.fetchval(
            """select id from enforcement_runs where organization_id = $1
                 and status in ('queued', 'running', 'completed')""",
            org.id,
        )
        flag = await conn.fetchval("select require_2fa from organizations where id = $1", org.id)
    assert flag is True

    async def coordinated() -> bool:
        return (await run_status(pool, run_id))["status"] != "queued"

    queued_for = await until(coordinated, "the run planned", RUN_LIMIT)
    await settle(
        stack,
        pool,
        run_id,
        org,
        started,
        f"web_killed-{members}",
        inside_transaction="nothing kept: flag off, no run, no audit entry",
        after_commit_answered=answered,
        run_queued_seconds=round(queued_for, 1),
    )


@pytest.mark.parametrize("members", FULL)
@pytest.mark.parametrize("kind", BROKERS)
async def test_clock_leader_killed(kind, members, pool, settings, make_stack) -> None:
    """Two clocks; the run's coordinator message is lost, so only the clock's sweep can start
    it; the leading clock is killed at once. The other takes over within a minute and its sweeps
    carry the run to its end."""
    stack = make_stack(kind)
    deployment = stack.deployment
    org = await big_org(pool, settings, members, ENROLLED)
    first = deployment.clock()
    await until(lambda: _log_has(first, '"leader": true'), "the first clock leads", 60)
    second = deployment.clock()
    await until(lambda: _log_has(second, "clock started"), "the second clock started", 60)
    assert not _log_has(second, '"leader": true')
    deployment.worker()
    deployment.worker()
    run_id = await turn_on(pool, org)  # and no message: as if the web died before sending it
    started = time.monotonic()
    deployment.kill(first)
    takeover = await until(lambda: _log_has(second, "clock leads"), "the second clock leads", 120)
    await settle(
        stack,
        pool,
        run_id,
        org,
        started,
        "clock_leader_killed",
        takeover_seconds=round(takeover, 1),
    )
    assert takeover < 65


def _log_has(process, needle: str) -> bool:
    return needle in process.log_path.read_text(errors="replace")


# --- servers ----------------------------------------------------------------------------------


@pytest.mark.parametrize("members", FULL)
@pytest.mark.parametrize("kind", BROKERS)
async def test_redis_restarted_empty(kind, members, pool, settings, make_stack, tmp_path) -> None:
    """The deployment's Redis (a server of the test's own, nothing on disk) is killed when half
    the members are removed and started again empty 5 s later: queued messages (on the Redis
    broker), dispatcher slots, rate buckets are gone. The sweepers finish the run."""
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    try:
        stack = make_stack(kind, redis=redis.url)
        org, run_id, started = await start_run(stack, pool, settings, members)
        await until(
            lambda: _at_least(removed_so_far(pool, run_id), org.expected // 2),
            "half the members removed",
            600,
        )
        redis.kill()
        removed_at_kill = await removed_so_far(pool, run_id)
        await asyncio.sleep(5)
        redis.start()
        restarted = time.monotonic()
        await settle(
            stack,
            pool,
            run_id,
            org,
            started,
            "redis_restarted_empty",
            since=restarted,
            removed_at_kill=removed_at_kill,
        )
    finally:
        redis.kill()


async def start_run(stack, pool, settings, members: int) -> tuple[Org, int, float]:
    """A seeded organization, a clock and two workers, and its run turned on and sent: the
    organization, the run's id and when it was sent."""
    org = await big_org(pool, settings, members, ENROLLED)
    stack.deployment.clock()
    stack.deployment.worker()
    stack.deployment.worker()
    run_id = await turn_on(pool, org)
    started = time.monotonic()
    stack.send("enforcement.coordinate", "enforcement", run_id)
    return org, run_id, started


async def _at_least(count, n: int) -> bool:
    return await count >= n


@pytest.mark.parametrize("members", FULL)
@pytest.mark.parametrize("kind", BROKERS)
async def test_postgres_restarted(kind, members, settings, make_stack, tmp_path) -> None:
    """The deployment's PostgreSQL (a cluster of the test's own) is stopped when a third of the
    members are removed (a fast shutdown: open transactions roll back, connections drop) and
    started again 5 s later; then stopped again when a third of the emails arrived. The pools
    reconnect, batches and emails are tried again, nothing is stuck."""
    server = PostgresServer(tmp_path / "pg")
    server.start()
    try:
        admin = await asyncpg.connect(server.url())
        await admin.execute("create database require2fa")
        await admin.close()
        dsn = server.url("require2fa")
        conn = await asyncpg.connect(dsn)
        await migrate(conn)
        await conn.close()
        pool = await create_pool(dsn, max_size=4)
        try:
            stack = make_stack(kind, database_url=dsn)
            org, run_id, started = await start_run(stack, pool, settings, members)
            await until(
                lambda: _at_least(removed_so_far(pool, run_id), org.expected // 3),
                "a third of the members removed",
                600,
            )
            server.stop(signal.SIGINT)
            await asyncio.sleep(5)
            server.start()
            await until(
                lambda: stack.sink.received >= org.expected // 3, "a third of the emails", 600
            )
            server.stop(signal.SIGKILL)
            await asyncio.sleep(5)
            server.start()
            restarted = time.monotonic()
            await until(lambda: _reconnects(pool), "the test's pool reconnects", 60)
            await settle(
                stack,
                pool,
                run_id,
                org,
                started,
                "postgres_restarted",
                since=restarted,
                restarts="fast shutdown during removal, crash (SIGKILL) during delivery",
            )
        finally:
            await pool.close()
    finally:
        server.stop()


async def _reconnects(pool: asyncpg.Pool) -> bool:
    try:
        async with pool.acquire() as conn:
            return await conn.fetchval("select true")
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return False


@pytest.mark.parametrize("members", SIZES)
@pytest.mark.parametrize("kind", BROKERS)
async def test_smtp_down_for_a_minute(kind, members, pool, settings, make_stack) -> None:
    """The SMTP server goes away when a third of the emails arrived, and comes back a minute
    later (5 s in `[quick]`) on the same port: every email arrives, and the few in flight when
    it went may arrive twice (their acceptance was not seen)."""
    stack = make_stack(kind)
    org, run_id, started = await start_run(stack, pool, settings, members)
    await until(lambda: stack.sink.received >= org.expected // 3, "a third of the emails", 600)
    stack.controller.stop()
    down_at = time.monotonic()
    at_stop = stack.sink.received
    sent_rows_at_stop = await emails_sent(pool, run_id)
    await asyncio.sleep(60 if members == MEMBERS else 5)
    stack.controller.start()
    back_at = time.monotonic()
    result = await settle(
        stack,
        pool,
        run_id,
        org,
        started,
        f"smtp_down_a_minute-{members}",
        since=back_at,
        emails_when_it_went=at_stop,
        rows_marked_sent_when_it_went=sent_rows_at_stop,
        seconds_down=round(back_at - down_at, 1),
    )
    after = stack.sink.arrived_after(back_at)
    # The rows wait for their retry time (10 s, 20 s, 40 s… after each failed attempt).
    result["first_email_after_return_seconds"] = round(after[0] - back_at, 1) if after else None
    record(f"smtp_down_a_minute-{members}-{kind}", result)
    assert result["duplicate_emails"] <= 2 * PER_PROCESS
