"""The enforcement fan-out against real PostgreSQL, Redis and Dramatiq worker threads.

Several tests stop a batch in the middle of its transaction by holding, from the test, the row
lock that the batch must take next (a user's, as 2FA enrollment does); `wait_for_lock_wait`
then waits until PostgreSQL reports the batch's connection waiting on a lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from datetime import timedelta

import asyncpg
import dramatiq
import pytest

from commands.seed import seed
from db import counts, outbox, planning, sweeper, users
from db.audit import Actor
from jobs.enforcement import coordinate, coordinate_run, remove_batch, remove_batch_now, sweep_now
from require2fa import organization_settings
from require2fa.security import token_hash
from tests.factories import add_member, add_totp, create_user, link_in, owner_and_org

SEEDED = 2_500  # three batches of 1,000


# --- fixtures and helpers ----------------------------------------------------------------------


async def drain(broker: dramatiq.Broker) -> None:
    """Waits until every message of the enforcement queue has been processed."""
    await asyncio.to_thread(broker.join, "enforcement", timeout=90_000)


async def start_run(pool: asyncpg.Pool, org_id: int, owner: asyncpg.Record) -> int:
    """Turns the requirement on as `owner` (the API's own function); returns the queued run."""
    async with pool.acquire() as conn, conn.transaction():
        change = await organization_settings.change_organization(
            conn,
            organization_settings.SettingsChange(require_2fa=True),
            organization_id=org_id,
            actor=Actor(user_id=owner["id"], label=owner["email"], ip_address="127.0.0.1"),
            role="owner",
        )
    assert change.started and change.run is not None
    return change.run["id"]


async def plan_without_sending(pool: asyncpg.Pool, run_id: int, batch_size: int = 1000) -> list:
    """Plans the run as the coordinator does, but its batch messages are lost."""
    lost: list[tuple[int, int]] = []
    await coordinate_run(pool, run_id, batch_size=batch_size, send=lambda *args: lost.append(args))
    return lost


async def seeded_org(pool: asyncpg.Pool, settings, slug: str = "big") -> tuple[int, asyncpg.Record]:
    """An organization of SEEDED members (about half with TOTP) whose owner has 2FA."""
    owner = await create_user(pool, f"owner@{slug}.test", has2fa=True)
    async with pool.acquire() as conn:
        result = await seed(
            conn, settings, slug=slug, count=SEEDED, enrolled=0.5, owner_email=owner["email"]
        )
    return result.organization_id, owner


async def run_row(pool: asyncpg.Pool, run_id: int) -> asyncpg.Record:
    async with pool.acquire() as conn:
        return await conn.fetchrow("select * from enforcement_runs where id = $1", run_id)


async def noncompliant(pool: asyncpg.Pool, org_id: int, owner_id: int) -> int:
    async with pool.acquire() as conn:
        return await counts.count_noncompliant(conn, org_id, except_user_id=owner_id)


async def assert_exactly_once(pool: asyncpg.Pool, run_id: int, removed: int) -> None:
    """`removed` members removed by the run, each with one audit entry and one outbox row."""
    async with pool.acquire() as conn:
        counts = await conn.fetchrow(
            """select (select count(*) from members where removed_by_run = $1) as members,
                      (select count(*) from audit_log where event = 'member.pending') as audit,
                      (select count(distinct target_member_id) from audit_log
                       where event = 'member.pending') as audited_members,
                      (select count(*) from email_outbox where enforcement_id = $1) as emails,
                      (select count(distinct member_id) from email_outbox
                       where enforcement_id = $1) as emailed_members""",
            run_id,
        )
    assert dict(counts) == {
        "members": removed,
        "audit": removed,
        "audited_members": removed,
        "emails": removed,
        "emailed_members": removed,
    }


async def wait_for_lock_wait(pool: asyncpg.Pool, *, other_than: int | None = None) -> int:
    """Waits until another connection (not `other_than`) is blocked on a lock; returns its pid."""
    async with pool.acquire() as conn:
        while True:
            found = await conn.fetchval(
                """select pid from pg_stat_activity
                   where wait_event_type = 'Lock' and datname = current_database()
                     and pid is distinct from $1 limit 1""",
                other_than,
            )
            if found is not None:
                return found
            await asyncio.sleep(0.02)


# --- the fan-out -------------------------------------------------------------------------------


async def test_run_removes_exactly_the_members_without_2fa(
    pool, settings, broker, start_worker
) -> None:
    org_id, owner = await seeded_org(pool, settings)
    expected = await noncompliant(pool, org_id, owner["id"])
    run_id = await start_run(pool, org_id, owner)
    start_worker("enforcement", threads=4)
    coordinate.send(run_id)
    await drain(broker)

    run = await run_row(pool, run_id)
    assert run["status"] == "completed"
    assert run["batches_total"] == run["batches_done"] == 3
    assert run["removed"] == expected > 0
    assert run["total"] == run["removed"] + run["skipped"] == SEEDED + 1
    await assert_exactly_once(pool, run_id, expected)
    assert await noncompliant(pool, org_id, owner["id"]) == 0


async def test_removal_keeps_the_row_and_writes_audit_and_email(pool, settings) -> None:
    owner, org = await owner_and_org(
        pool, "acme", "owner@example.com", has2fa=True, teams=("backend", "web")
    )
    alice = await create_user(pool, "alice@example.com")
    alice_id = await add_member(
        pool, org["id"], alice, role="admin", teams=("web", "backend"), settings={"deploy": "all"}
    )
    bob = await create_user(pool, "bob@example.com", has2fa=True)
    bob_id = await add_member(pool, org["id"], bob)
    other_owner = await create_user(pool, "carol@example.com")
    carol_id = await add_member(pool, org["id"], other_owner, role="owner")
    async with pool.acquire() as conn:
        invited_id = await conn.fetchval(
            """insert into members (organization_id, email, role, token_hash, pending_reason)
               values ($1, 'dan@example.com', 'member', '\\x00', 'invite') returning id""",
            org["id"],
        )

    run_id = await start_run(pool, org["id"], owner)
    await plan_without_sending(pool, run_id)
    result = await remove_batch_now(pool, settings, run_id, 0)
    assert result is not None and (result.removed, result.skipped) == (2, 3)

    async with pool.acquire() as conn:
        rows = {
            r["id"]: r
            for r in await conn.fetch("select * from members where organization_id = $1", org["id"])
        }
        teams = await conn.fetch(
            """select t.slug from member_teams mt join teams t on t.id = mt.team_id
               where mt.member_id = $1 order by t.slug""",
            alice_id,
        )
        entries = await conn.fetch(
            "select * from audit_log where event = 'member.pending' order by target_member_id"
        )
        emails = await conn.fetch(
            "select * from email_outbox where template = 'removed_for_2fa' order by member_id"
        )
        run = await conn.fetchrow("select * from enforcement_runs where id = $1", run_id)

    alice_row = rows[alice_id]
    assert alice_row["user_id"] is None and alice_row["pending_reason"] == "2fa"
    assert alice_row["email"] == "alice@example.com" and alice_row["role"] == "admin"
    assert alice_row["settings"] == {"deploy": "all"}
    assert [t["slug"] for t in teams] == ["backend", "web"]
    assert alice_row["removed_by_run"] == run_id
    assert alice_row["reinstate_by"] - alice_row["removed_at"] == settings.reinstatement_window
    assert rows[carol_id]["pending_reason"] == "2fa"  # an owner without 2FA is removed too
    assert rows[bob_id]["user_id"] == bob["id"]
    assert rows[invited_id]["pending_reason"] == "invite"
    assert run["status"] == "completed" and run["removed"] == 2 and run["total"] == 5

    assert [e["target_member_id"] for e in entries] == [alice_id, carol_id]
    first = entries[0]
    assert first["target_user_id"] == alice["id"]
    assert first["actor_user_id"] == owner["id"] and str(first["ip_address"]) == "127.0.0.1"
    assert first["data"] == {
        "email": "alice@example.com",
        "role": "admin",
        "teams": ["backend", "web"],
        "reason": "2fa",
    }

    assert [e["member_id"] for e in emails] == [alice_id, carol_id]
    mail = emails[0]
    assert mail["template"] == "removed_for_2fa" and mail["to_address"] == "alice@example.com"
    assert mail["enforcement_id"] == run_id and mail["organization_id"] == org["id"]
    assert mail["dedupe_key"] == f"removed:{run_id}:{alice_id}"
    assert mail["message_id"] == outbox.message_id(mail["dedupe_key"])
    context = mail["context"]
    assert set(context) == {
        "org_name",
        "org_slug",
        "member_email",
        "accept_url_sealed",
        "reinstate_by",
        "level",
        "needs",
    }
    assert context["level"] == "any"
    assert context["org_slug"] == "acme" and context["member_email"] == "alice@example.com"
    prefix = f"http://testserver/accept/{alice_id}/"
    link = link_in(context)
    assert link.startswith(prefix) and link.endswith("/")
    token = link[len(prefix) : -1]
    assert token_hash(token) == bytes(alice_row["token_hash"])
    assert context["reinstate_by"] == alice_row["reinstate_by"].isoformat()


async def test_enrollment_committed_before_the_batch_is_not_removed(pool, settings) -> None:
    owner, org = await owner_and_org(pool, "acme", "owner@example.com", has2fa=True)
    early = await create_user(pool, "early@example.com")
    early_id = await add_member(pool, org["id"], early)
    racing = await create_user(pool, "racing@example.com")
    racing_id = await add_member(pool, org["id"], racing)
    late = await create_user(pool, "late@example.com")
    late_id = await add_member(pool, org["id"], late)

    run_id = await start_run(pool, org["id"], owner)
    await plan_without_sending(pool, run_id)
    # Planned while all three had no 2FA. `early` enrolls and commits before the batch runs.
    async with pool.acquire() as conn, conn.transaction():
        await users.lock(conn, [early["id"]])
        await add_totp(conn, early["id"])
    # `racing` is enrolling (holds the user lock, not committed) when the batch starts.
    enrolling = await pool.acquire()
    transaction = enrolling.transaction()
    await transaction.start()
    await users.lock(enrolling, [racing["id"]])
    await add_totp(enrolling, racing["id"])
    batch = asyncio.create_task(remove_batch_now(pool, settings, run_id, 0))
    await wait_for_lock_wait(pool)
    await transaction.commit()
    await pool.release(enrolling)
    result = await batch

    assert result is not None and result.removed == 1
    async with pool.acquire() as conn:
        active = await conn.fetch(
            "select id from members where organization_id = $1 and user_id is not null",
            org["id"],
        )
    assert {r["id"] for r in active} >= {early_id, racing_id}
    assert late_id not in {r["id"] for r in active}
    await assert_exactly_once(pool, run_id, 1)


async def test_a_batch_delivered_twice_changes_nothing(
    pool, settings, broker, start_worker
) -> None:
    org_id, owner = await seeded_org(pool, settings)
    expected = await noncompliant(pool, org_id, owner["id"])
    run_id = await start_run(pool, org_id, owner)
    await plan_without_sending(pool, run_id)

    # Twice at once: one does the work, the other waits for the batch lock and finds it done.
    first, second = await asyncio.gather(
        remove_batch_now(pool, settings, run_id, 0), remove_batch_now(pool, settings, run_id, 0)
    )
    assert (first is None) != (second is None)
    after_first = await run_row(pool, run_id)
    # And again, later, through the broker, with every other batch's message sent twice too.
    for batch_no in (0, 0, 1, 1, 2, 2):
        remove_batch.send(run_id, batch_no)
    start_worker("enforcement", threads=4)
    await drain(broker)

    run = await run_row(pool, run_id)
    assert after_first["batches_done"] == 1
    assert run["status"] == "completed" and run["batches_done"] == 3
    assert run["removed"] == expected
    assert run["total"] == run["removed"] + run["skipped"] == SEEDED + 1
    await assert_exactly_once(pool, run_id, expected)


async def test_a_redelivered_coordinator_plans_once(pool, settings) -> None:
    org_id, owner = await seeded_org(pool, settings)
    run_id = await start_run(pool, org_id, owner)
    sent = await plan_without_sending(pool, run_id)
    again = await plan_without_sending(pool, run_id)
    assert sent == [(run_id, 0), (run_id, 1), (run_id, 2)]
    assert again == []  # all recorded as sent; lost ones are the sweeper's
    async with pool.acquire() as conn:
        assert (
            await conn.fetchval(
                "select count(*) from enforcement_batches where run_id = $1", run_id
            )
            == 3
        )


async def test_worker_dying_mid_run_ends_with_exact_counts(
    pool, settings, broker, start_worker
) -> None:
    """Batch 0 done; batch 1's worker dies inside its transaction; batch 2's message is lost.
    The sweeper sends what is missing and the run completes with exact counts."""
    org_id, owner = await seeded_org(pool, settings)
    expected = await noncompliant(pool, org_id, owner["id"])
    run_id = await start_run(pool, org_id, owner)
    await plan_without_sending(pool, run_id)
    await remove_batch_now(pool, settings, run_id, 0)

    async with pool.acquire() as conn:
        batch_1 = await conn.fetchrow(
            "select * from enforcement_batches where run_id = $1 and batch_no = 1", run_id
        )
        victim = await conn.fetchval(
            f"""select u.id from members m join users u on u.id = m.user_id
                where m.organization_id = $1 and m.id between $2 and $3
                  and not {users.HAS_2FA_SQL} order by u.id desc limit 1""",
            org_id,
            batch_1["first_member_id"],
            batch_1["last_member_id"],
        )
    blocker = await pool.acquire()
    blocking = blocker.transaction()
    await blocking.start()
    await users.lock(blocker, [victim])
    dying = asyncio.create_task(remove_batch_now(pool, settings, run_id, 1))
    pid = await wait_for_lock_wait(pool)
    async with pool.acquire() as conn:  # the worker's connection goes away mid-transaction
        await conn.execute("select pg_terminate_backend($1)", pid)
    with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError)):
        await dying
    await blocking.rollback()
    await pool.release(blocker)

    run = await run_row(pool, run_id)
    assert run["status"] == "running" and run["batches_done"] == 1

    coordinators, batches = await sweep_now(pool, stale_after=timedelta(0))
    assert (coordinators, batches) == (0, 2)
    start_worker("enforcement", threads=4)
    await drain(broker)

    run = await run_row(pool, run_id)
    assert run["status"] == "completed" and run["batches_done"] == 3
    assert run["removed"] == expected
    assert run["total"] == run["removed"] + run["skipped"] == SEEDED + 1
    await assert_exactly_once(pool, run_id, expected)
    # Nothing left for a later sweep.
    assert await sweep_now(pool, stale_after=timedelta(0)) == (0, 0)


async def test_sweeper_coordinates_a_run_whose_message_was_lost(
    pool, settings, broker, start_worker
) -> None:
    org_id, owner = await seeded_org(pool, settings)
    expected = await noncompliant(pool, org_id, owner["id"])
    run_id = await start_run(pool, org_id, owner)  # its coordinator message never sent
    assert await sweep_now(pool, stale_after=timedelta(hours=1)) == (0, 0)
    assert await sweep_now(pool, stale_after=timedelta(0)) == (1, 0)
    start_worker("enforcement", threads=4)
    await drain(broker)
    run = await run_row(pool, run_id)
    assert run["status"] == "completed" and run["removed"] == expected


async def test_sweeper_leaves_a_run_that_is_being_planned(pool, settings) -> None:
    org_id, owner = await seeded_org(pool, settings)
    run_id = await start_run(pool, org_id, owner)
    sent: list[int] = []
    async with pool.acquire() as planner, planner.transaction():
        # What a coordinator holds while it plans (a million members take a while).
        await planner.execute(
            "select pg_advisory_xact_lock($1, $2)", planning.PLAN_LOCK, run_id % 2**31
        )
        assert await sweep_now(pool, stale_after=timedelta(0), send_coordinate=sent.append) == (
            0,
            0,
        )
    assert await sweep_now(pool, stale_after=timedelta(0), send_coordinate=sent.append) == (1, 0)
    assert sent == [run_id]


async def test_a_batch_that_never_finishes_fails_its_run(pool, settings) -> None:
    org_id, owner = await seeded_org(pool, settings)
    run_id = await start_run(pool, org_id, owner)
    await plan_without_sending(pool, run_id)
    resent: list[tuple[int, int]] = []
    for _ in range(3):
        _, batches = await sweep_now(
            pool, stale_after=timedelta(0), send_batch=lambda *pair: resent.append(pair)
        )
        assert batches == 3  # every batch of the run, each time
    async with pool.acquire() as conn:
        after_three = await sweeper.stalled(conn, stale_after=timedelta(0), max_resends=3)
    run = await run_row(pool, run_id)
    assert after_three == ([], [])
    assert run["status"] == "failed" and run["finished_at"] is not None
    assert "did not finish after 3 re-sends" in run["error"]
    # The organization can start a new run.
    async with pool.acquire() as conn:
        assert (
            await conn.fetchval(
                "select count(*) from enforcement_runs where status in ('queued', 'running')"
            )
            == 0
        )


async def test_turning_the_switch_off_stops_removals(pool, settings) -> None:
    org_id, owner = await seeded_org(pool, settings)
    run_id = await start_run(pool, org_id, owner)
    await plan_without_sending(pool, run_id)
    done = await remove_batch_now(pool, settings, run_id, 0)
    assert done is not None and done.removed > 0

    actor = Actor(user_id=owner["id"], label=owner["email"])
    async with pool.acquire() as conn, conn.transaction():
        await organization_settings.change_organization(
            conn,
            organization_settings.SettingsChange(require_2fa=False),
            organization_id=org_id,
            actor=actor,
            role="owner",
            recently_authenticated=True,
        )
    for batch_no in (1, 2, 1):
        assert await remove_batch_now(pool, settings, run_id, batch_no) is None

    run = await run_row(pool, run_id)
    assert run["status"] == "cancelled" and run["finished_at"] is not None
    assert run["removed"] == done.removed and run["batches_done"] == 1
    await assert_exactly_once(pool, run_id, done.removed)


async def test_switch_turned_off_waits_for_the_batch_in_flight(pool, settings) -> None:
    """A batch that started before the switch went off finishes; none starts after it."""
    org_id, owner = await seeded_org(pool, settings)
    run_id = await start_run(pool, org_id, owner)
    await plan_without_sending(pool, run_id)
    async with pool.acquire() as conn:
        batch_0 = await conn.fetchrow(
            "select * from enforcement_batches where run_id = $1 and batch_no = 0", run_id
        )
        victim = await conn.fetchval(
            f"""select u.id from members m join users u on u.id = m.user_id
                where m.organization_id = $1 and m.id between $2 and $3
                  and not {users.HAS_2FA_SQL} order by u.id desc limit 1""",
            org_id,
            batch_0["first_member_id"],
            batch_0["last_member_id"],
        )
    blocker = await pool.acquire()
    blocking = blocker.transaction()
    await blocking.start()
    await users.lock(blocker, [victim])
    in_flight = asyncio.create_task(remove_batch_now(pool, settings, run_id, 0))
    batch_pid = await wait_for_lock_wait(pool)

    async def turn_off() -> None:
        async with pool.acquire() as conn, conn.transaction():
            await organization_settings.change_organization(
                conn,
                organization_settings.SettingsChange(require_2fa=False),
                organization_id=org_id,
                actor=Actor(user_id=owner["id"]),
                role="owner",
                recently_authenticated=True,
            )

    switching = asyncio.create_task(turn_off())
    await wait_for_lock_wait(pool, other_than=batch_pid)  # the switch waits for the batch
    await blocking.rollback()
    await pool.release(blocker)
    result = await in_flight
    await switching

    assert result is not None and result.removed > 0
    assert await remove_batch_now(pool, settings, run_id, 1) is None
    run = await run_row(pool, run_id)
    assert run["status"] == "cancelled" and run["removed"] == result.removed
    await assert_exactly_once(pool, run_id, result.removed)


async def test_message_id_sql_matches_the_outbox(pool) -> None:
    keys = ["removed:1:2", "reminder:3:4:2030-01-02", "ünïcode"]
    async with pool.acquire() as conn:
        got = await conn.fetch(
            f"select {outbox.MESSAGE_ID_SQL.format(key='k')} as id "
            "from unnest($1::text[]) with ordinality as t(k, n) order by n",
            keys,
        )
    assert [r["id"] for r in got] == [outbox.message_id(key) for key in keys]


# --- a worker process killed for real ---------------------------------------------------------


def spawn_worker() -> subprocess.Popen[bytes]:
    """`dramatiq jobs` on the enforcement queue, in its own process group, with this run's env."""
    return subprocess.Popen(
        [sys.executable, "-m", "dramatiq", "jobs", "--processes", "1", "--threads", "2"]
        + ["--queues", "enforcement"],
        env=os.environ.copy(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop_worker(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """SIGTERM goes to dramatiq's main process (it forwards it); SIGKILL to the whole group."""
    with contextlib.suppress(ProcessLookupError):
        if sig == signal.SIGKILL:
            os.killpg(process.pid, sig)
        else:
            process.send_signal(sig)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.mark.faults
@pytest.mark.timeout(300)
async def test_worker_process_killed_mid_batch_and_queue_lost(pool, settings, broker) -> None:
    """SIGKILL of a worker process while it is inside a batch's transaction, then its queue
    emptied (as a Redis restarted without data would be): a new worker and the sweeper finish
    the run with exact counts."""
    owner = await create_user(pool, "owner@huge.test", has2fa=True)
    async with pool.acquire() as conn:
        seeded = await seed(
            conn, settings, slug="huge", count=10_000, enrolled=0.5, owner_email=owner["email"]
        )
    org_id = seeded.organization_id
    expected = await noncompliant(pool, org_id, owner["id"])
    run_id = await start_run(pool, org_id, owner)
    async with pool.acquire() as conn, conn.transaction():
        await planning.plan(conn, run_id, batch_size=1000)
        batch_3 = await conn.fetchrow(
            "select * from enforcement_batches where run_id = $1 and batch_no = 3", run_id
        )
        victim = await conn.fetchval(
            f"""select u.id from members m join users u on u.id = m.user_id
                where m.organization_id = $1 and m.id between $2 and $3
                  and not {users.HAS_2FA_SQL} order by u.id desc limit 1""",
            org_id,
            batch_3["first_member_id"],
            batch_3["last_member_id"],
        )
    blocker = await pool.acquire()
    blocking = blocker.transaction()
    await blocking.start()
    await users.lock(blocker, [victim])

    first = spawn_worker()
    try:
        coordinate.send(run_id)
        await wait_for_lock_wait(pool)  # the worker is inside batch 3's transaction
        stop_worker(first, signal.SIGKILL)
    finally:
        if first.poll() is None:
            stop_worker(first, signal.SIGKILL)
    broker.flush("enforcement")
    await blocking.rollback()
    await pool.release(blocker)
    run = await run_row(pool, run_id)
    assert run["status"] == "running" and run["batches_done"] < run["batches_total"]

    second = spawn_worker()
    try:
        while (await run_row(pool, run_id))["status"] == "running":
            await sweep_now(pool, stale_after=timedelta(seconds=2))
            await asyncio.sleep(1)
    finally:
        stop_worker(second)

    run = await run_row(pool, run_id)
    assert run["status"] == "completed" and run["batches_done"] == run["batches_total"] == 11
    assert run["removed"] == expected
    assert run["total"] == run["removed"] + run["skipped"] == 10_001
    await assert_exactly_once(pool, run_id, expected)


# --- the operator's commands -------------------------------------------------------------------


async def test_enforce_and_status_commands(pool, settings, database, broker, start_worker) -> None:
    from click.testing import CliRunner

    from commands.cli import main

    owner, org = await owner_and_org(pool, "acme", "owner@example.com", has2fa=True)
    for i in range(4):
        user = await create_user(pool, f"user{i}@example.com", has2fa=i < 2)
        await add_member(pool, org["id"], user)
    stranger = await create_user(pool, "stranger@example.com", has2fa=True)
    manager = await create_user(pool, "manager@example.com", has2fa=True)
    await add_member(pool, org["id"], manager, role="manager")

    def run(*args: str):
        return CliRunner().invoke(main, list(args), env={"DATABASE_URL": database})

    dry = await asyncio.to_thread(
        run, "enforce", "--org", "acme", "--actor", "owner@example.com", "--dry-run"
    )
    assert dry.exit_code == 0, dry.output
    assert "user2@example.com\tmember" in dry.output and "user3@example.com" in dry.output
    assert "user0@example.com" not in dry.output
    assert "2 member(s) of acme would be removed" in dry.output

    refused = await asyncio.to_thread(
        run, "enforce", "--org", "acme", "--actor", "manager@example.com"
    )
    assert refused.exit_code != 0 and "Only an owner" in refused.output
    assert (
        await asyncio.to_thread(run, "enforce", "--org", "acme", "--actor", stranger["email"])
    ).exit_code != 0

    start_worker("enforcement", threads=4)
    done = await asyncio.to_thread(run, "enforce", "--org", "acme", "--actor", "owner@example.com")
    assert done.exit_code == 0, done.output
    assert "completed: 2 removed, 4 skipped of 6" in done.output

    shown = await asyncio.to_thread(run, "status", "--org", "acme")
    assert shown.exit_code == 0, shown.output
    assert "require 2FA on" in shown.output
    assert "4 active, 4 with 2FA, 0 without" in shown.output
    assert "2 removed for 2FA, 0 invited" in shown.output
    assert "completed: 2 removed" in shown.output
    assert (await asyncio.to_thread(run, "status", "--org", "nope")).exit_code != 0
