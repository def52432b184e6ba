"""Benchmark: the statements users wait on, without and with years of history; one day's pruning.

    .venv/bin/python bench/history.py [--scale 1.0] [--members N] [--run-members N] [--rounds 5]

Builds a database with what a young deployment holds: an organization of `--members` (half
of them with 2FA) with an audit entry per member over the last thirty days, a queue of emails
to send, and two organizations of `--run-members` (half without 2FA) for the enforcement runs
(both default to 100k × `--scale`). A copy of it (`create database … template`) gets the
history, seeded with COPY (issue 30: 50M audit entries over 24 months in monthly partitions,
20M sent email rows and 5M delivered webhook deliveries over the last 31 days, all times
`--scale`, of other organizations), then `vacuum analyze` as autovacuum would. On both, in
alternating rounds so that both share the machine's load alike, the functions the API, the
CLI and the workers call:
- the members page (`require2fa.members.listed`, first page and a cursor at 90%);
- the audit log (`require2fa.audit_log.page`): first page, a deep page (a cursor 90% down the
  organization's log), and the first page of `?event=member.pending`;
- the compliance CSV (`commands.report.write_report`, what `require2fa report` runs);
- the outbox claim (`db.outbox.claim` of `jobs.email.BATCH_MAX` rows, rolled back);
- an enforcement run of `--run-members` (`organization_settings.change_organization`, then
  `jobs.enforcement.coordinate_run` and `remove_batch_now` for every batch (each finished batch's
  next one after the window sent), two at a time as a
  worker's batch slots allow), in this process; two runs on each database, in turn.
Each figure is the median of its samples; each ratio is the figure with the history over the
figure without it; the goal is at most 1.2 for each. Then one day's pruning on the copy: the
passes of `require2fa.retention.prune` (the clock's batch sizes) until a pass finds nothing,
with one day of email rows and deliveries past OUTBOX_RETENTION (30 days) and the oldest audit
month past the audit retention; meanwhile `pg_locks` is sampled every 10 ms (the most locks
the pruning backend held, the samples where it held an ACCESS EXCLUSIVE lock, the samples where
another backend waited for a lock) and the audit log's first page is requested one after
another (its p99 beside idle). Prints one JSON object. Uses the PostgreSQL at DATABASE_URL
(default 127.0.0.1:5432); the two databases it creates are dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from commands.devstack import with_database  # noqa: E402

ADMIN_DSN = os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
RUN = uuid.uuid4().hex[:8]
DB = f"require2fa_bench_history_{RUN}"
DSN = with_database(ADMIN_DSN, DB)
HISTORY_DB = f"{DB}_with_history"
HISTORY_DSN = with_database(ADMIN_DSN, HISTORY_DB)

# The history at scale 1 (issue 30, point 4).
AUDIT_ROWS, AUDIT_MONTHS = 50_000_000, 24
EMAIL_ROWS, DELIVERY_ROWS, OUTBOX_DAYS = 20_000_000, 5_000_000, 31
HISTORY_ORGS = 1_000  # the audit history is spread over this many organizations
QUEUED_EMAILS = 10_000  # the queue the claim takes from, in both phases
GOAL = 1.2
CHUNK = 50_000  # rows per chunk handed to COPY

EVENTS = ("member.pending", "member.accept", "member.invite", "member.edit", "org.edit")


def median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 3)


def latency(samples: list[float]) -> dict[str, float | int]:
    ordered = sorted(samples) if len(samples) > 1 else samples * 2
    cuts = statistics.quantiles(ordered, n=100, method="inclusive")
    return {
        "requests": len(samples),
        "p50_ms": round(cuts[49] * 1000, 2),
        "p99_ms": round(cuts[98] * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


async def timed(work: Callable[[], Awaitable[Any]], repeats: int) -> list[float]:
    """`work` `repeats` times, each timed."""
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        await work()
        samples.append(time.perf_counter() - started)
    return samples


# --- Seeding with COPY ---------------------------------------------------------------------


async def chunks(rows: int, line: Callable[[int], str]) -> AsyncIterator[bytes]:
    """CSV lines `line(0)` … `line(rows - 1)`, in chunks of CHUNK lines."""
    for start in range(0, rows, CHUNK):
        yield "".join(line(n) for n in range(start, min(start + CHUNK, rows))).encode()
        await asyncio.sleep(0)


def spread(now: datetime, span: timedelta, rows: int) -> Callable[[int], str]:
    """Row n's time, oldest first, evenly over `span` up to `now`, as CSV text."""
    start, step = now - span, span / max(rows, 1)
    return lambda n: (start + step * n).isoformat()


async def copy_audit(
    conn: asyncpg.Connection, rows: int, span: timedelta, now: datetime, orgs: list[int]
) -> None:
    """`rows` entries of the organizations `orgs`, evenly over `span`, oldest first (so that ids
    grow with time, as they do)."""
    at = spread(now, span, rows)

    def line(n: int) -> str:
        event = EVENTS[n % len(EVENTS)]
        data = f'"{{""email"": ""m{n}@history.example"", ""reason"": ""2fa""}}"'
        return f"{orgs[n % len(orgs)]},{event},owner,{n},10.0.0.1,{data},{at(n)}\n"

    await conn.copy_to_table(
        "audit_log",
        source=chunks(rows, line),
        columns=[
            "organization_id",
            "event",
            "actor_label",
            "target_member_id",
            "ip_address",
            "data",
            "created_at",
        ],
        format="csv",
    )


async def copy_sent_emails(
    conn: asyncpg.Connection, rows: int, now: datetime, org_id: int, runs: list[int], tag: str
) -> None:
    """`rows` sent email rows (context wiped, as `db.outbox.mark_sent` leaves them) over the last
    OUTBOX_DAYS days, half of them of the enforcement runs `runs`."""
    at = spread(now, timedelta(days=OUTBOX_DAYS), rows)

    def line(n: int) -> str:
        run = runs[n % len(runs)] if n % 2 else ""
        when = at(n)
        return (
            f"removed_for_2fa,m{n}@history.example,{{}},{tag}:{n},<{tag}.{n}@require2fa>,"
            f"sent,1,{when},{org_id},{run},{when},{when}\n"
        )

    await conn.copy_to_table(
        "email_outbox",
        source=chunks(rows, line),
        columns=[
            "template",
            "to_address",
            "context",
            "dedupe_key",
            "message_id",
            "status",
            "attempts",
            "next_attempt_at",
            "organization_id",
            "enforcement_id",
            "created_at",
            "sent_at",
        ],
        format="csv",
    )


async def copy_queued_emails(conn: asyncpg.Connection, rows: int, org_id: int) -> None:
    def line(n: int) -> str:
        return f"invite,q{n}@queued.example,{{}},queued:{n},<queued.{n}@require2fa>,{org_id}\n"

    await conn.copy_to_table(
        "email_outbox",
        source=chunks(rows, line),
        columns=[
            "template",
            "to_address",
            "context",
            "dedupe_key",
            "message_id",
            "organization_id",
        ],
        format="csv",
    )


async def copy_deliveries(
    conn: asyncpg.Connection, rows: int, now: datetime, webhook_id: int
) -> None:
    at = spread(now, timedelta(days=OUTBOX_DAYS), rows)

    def line(n: int) -> str:
        when = at(n)
        return f"{webhook_id},{n},member.pending,delivered,1,{when},200,ok,{when},{when}\n"

    await conn.copy_to_table(
        "webhook_deliveries",
        source=chunks(rows, line),
        columns=[
            "webhook_id",
            "audit_log_id",
            "event",
            "status",
            "attempts",
            "next_attempt_at",
            "last_status",
            "last_body",
            "created_at",
            "delivered_at",
        ],
        format="csv",
    )


async def seed_history(
    conn: asyncpg.Connection, scale: float, history_org: int, history_owner: int
) -> dict[str, Any]:
    """The history (see the module), for organizations other than the measured ones; returns
    what was written and how long it took."""
    started = time.perf_counter()
    now: datetime = await conn.fetchval("select now()")
    first_month = (now - timedelta(days=AUDIT_MONTHS * 365 / 12)).replace(
        day=1, hour=0, minute=0, second=0, microsecond=0
    )
    await conn.execute("select audit_log_add_partitions($1, 2)", first_month)
    audit_rows = int(AUDIT_ROWS * scale)
    orgs = list(range(10_000_000, 10_000_000 + HISTORY_ORGS))
    # One COPY per month: the audit log's statement trigger (webhooks) holds each statement's
    # new rows, and a month at a time keeps that small.
    months, month = [], first_month
    while month < now:
        following = (month + timedelta(days=32)).replace(day=1)
        months.append((month, min(following, now)))
        month = following
    span_total = (now - first_month).total_seconds()
    for start, end in months:
        share = int(audit_rows * (end - start).total_seconds() / span_total)
        await copy_audit(conn, share, end - start, end - timedelta(microseconds=1), orgs)
    runs = [
        await conn.fetchval(
            """insert into enforcement_runs (organization_id, actor_user_id, status)
               values ($1, $2, 'completed') returning id""",
            history_org,
            history_owner,
        )
        for _ in range(20)
    ]
    emails = int(EMAIL_ROWS * scale)
    await copy_sent_emails(conn, emails, now, history_org, runs, "history")
    webhook_id = await conn.fetchval(
        """insert into webhooks (organization_id, url, events, secret_encrypted)
           values ($1, 'https://hooks.history.example/', '{member.pending}', 'x') returning id""",
        history_org,
    )
    deliveries = int(DELIVERY_ROWS * scale)
    await copy_deliveries(conn, deliveries, now, webhook_id)
    copied = time.perf_counter() - started
    await conn.execute("vacuum analyze")
    sizes = await conn.fetchrow(
        """select pg_total_relation_size('email_outbox') as email_outbox,
                  pg_total_relation_size('webhook_deliveries') as webhook_deliveries,
                  (select sum(pg_total_relation_size(inhrelid)) from pg_inherits
                    where inhparent = 'audit_log'::regclass) as audit_log,
                  (select count(*) from pg_inherits
                    where inhparent = 'audit_log'::regclass) as audit_partitions"""
    )
    return {
        "audit_entries": audit_rows,
        "audit_months": len(months),
        "audit_partitions": int(sizes["audit_partitions"]),
        "sent_emails": emails,
        "webhook_deliveries": deliveries,
        "copy_seconds": round(copied, 1),
        "vacuum_analyze_seconds": round(time.perf_counter() - started - copied, 1),
        "size_mb": {
            name: round(int(sizes[name]) / 2**20)
            for name in ("audit_log", "email_outbox", "webhook_deliveries")
        },
    }


# --- What is measured ----------------------------------------------------------------------


class Subject:
    """The measured organization and what the measurements need of it, chosen once."""

    def __init__(self, org_id: int, slug: str, members_cursor: int, audit_cursor: Any) -> None:
        self.org_id, self.slug = org_id, slug
        self.members_cursor, self.audit_cursor = members_cursor, audit_cursor


Work = Callable[[], Awaitable[Any]]


def statements(pool: asyncpg.Pool, subject: Subject) -> dict[str, tuple[Work, int]]:
    """What is measured on one database: name → (one call, calls per round)."""
    from commands.report import write_report
    from db import outbox
    from jobs.email import BATCH_MAX, LEASE
    from require2fa import audit_log, members

    everyone = members.parse_query("")

    async def members_first() -> None:
        rows = await members.listed(pool, subject.org_id, where=everyone, after_id=None, limit=101)
        assert len(rows) == 101

    async def members_deep() -> None:
        await members.listed(
            pool, subject.org_id, where=everyone, after_id=subject.members_cursor, limit=101
        )

    async def audit_first() -> None:
        rows = await audit_log.page(pool, subject.org_id, cursor=None, limit=101)
        assert len(rows) == 101

    async def audit_deep() -> None:
        rows = await audit_log.page(pool, subject.org_id, cursor=subject.audit_cursor, limit=101)
        assert len(rows) == 101

    async def audit_event() -> None:
        pending = audit_log.AuditFilter(event="member.pending")
        await audit_log.page(pool, subject.org_id, cursor=None, limit=101, where=pending)

    async def report() -> None:
        async with pool.acquire() as conn:
            await write_report(conn, subject.slug, os.devnull)

    async def claim() -> None:
        async with pool.acquire() as conn:
            transaction = conn.transaction()
            await transaction.start()
            try:
                rows = await outbox.claim(conn, limit=BATCH_MAX, lease=LEASE)
                assert len(rows) == BATCH_MAX, len(rows)
            finally:
                await transaction.rollback()

    return {
        "members_page_first_ms": (members_first, 10),
        "members_page_at_90pct_ms": (members_deep, 10),
        "audit_page_first_ms": (audit_first, 10),
        "audit_page_deep_ms": (audit_deep, 10),
        "audit_page_event_first_ms": (audit_event, 10),
        "compliance_csv_ms": (report, 1),
        "outbox_claim_ms": (claim, 6),
    }


class Explaining:
    """A pool whose connections run `EXPLAIN (ANALYZE, BUFFERS)` of each `fetch`/`fetchrow`
    before the statement itself, keeping the plans: what the audit pages' statements read."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.plans: list[dict[str, Any]] = []

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[Any]:
        async with self.pool.acquire() as conn:
            yield _Explained(conn, self.plans)


class _Explained:
    def __init__(self, conn: asyncpg.Connection, plans: list[dict[str, Any]]) -> None:
        self.conn, self.plans = conn, plans

    async def _explain(self, sql: str, *args: Any) -> None:
        found = await self.conn.fetchval(f"explain (analyze, buffers, format json) {sql}", *args)
        self.plans.append((found if isinstance(found, list) else json.loads(found))[0])

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        await self._explain(sql, *args)
        return await self.conn.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        await self._explain(sql, *args)
        return await self.conn.fetchrow(sql, *args)


def plan_summary(plans: list[dict[str, Any]]) -> dict[str, Any]:
    """The statements of one call: how many, the audit partitions their plans scan, the shared
    buffers they touched and their execution time."""

    def relations(node: dict[str, Any]) -> list[str]:
        own = (
            [node["Relation Name"]] if node.get("Relation Name", "").startswith("audit_log") else []
        )
        return own + [found for child in node.get("Plans", []) for found in relations(child)]

    return {
        "statements": len(plans),
        "partitions_scanned": [relations(plan["Plan"]) for plan in plans],
        "shared_buffers": sum(
            plan["Plan"].get("Shared Hit Blocks", 0) + plan["Plan"].get("Shared Read Blocks", 0)
            for plan in plans
        ),
        "execution_ms": round(sum(plan["Execution Time"] for plan in plans), 3),
        "planning_ms": round(sum(plan["Planning Time"] for plan in plans), 3),
    }


async def audit_plans(pool: asyncpg.Pool, subject: Subject) -> dict[str, Any]:
    """`plan_summary` of the audit log's first page, deep page and `?event=` first page."""
    from require2fa import audit_log

    pending = audit_log.AuditFilter(event="member.pending")
    found = {}
    for name, cursor, where in (
        ("first", None, None),
        ("deep", subject.audit_cursor, None),
        ("event_first", None, pending),
    ):
        explaining = Explaining(pool)
        await audit_log.page(explaining, subject.org_id, cursor=cursor, limit=101, where=where)  # type: ignore[arg-type]
        found[name] = plan_summary(explaining.plans)
    return found


async def measure(
    pools: tuple[asyncpg.Pool, asyncpg.Pool],
    settings: Any,
    subject: Subject,
    runs: list[tuple[int, int, str]],
    rounds: int,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Each statement's median in ms on both databases (without, with the history), in
    alternating rounds so that both share the machine's load alike; then the runs, one on each
    database in turn (a run's seconds, the median)."""
    sides = [statements(pool, subject) for pool in pools]
    samples: list[dict[str, list[float]]] = [{name: [] for name in side} for side in sides]
    # Warm: a connection plans a statement anew on its first five executions (then keeps a
    # generic plan when it is no worse), and the pool hands out its connections in turn.
    for side in sides:
        for work, repeats in side.values():
            for _ in range(20 if repeats > 1 else 1):
                await work()
    for _ in range(rounds):
        for side, found in zip(sides, samples, strict=True):
            for name, (work, repeats) in side.items():
                found[name] += await timed(work, repeats)
    figures: list[dict[str, Any]] = [
        {name: median_ms(values) for name, values in found.items()} for found in samples
    ]
    print(json.dumps({"statements_without_and_with": figures}), file=sys.stderr)
    seconds: list[list[float]] = [[], []]
    for run in runs:
        for n, pool in enumerate(pools):
            seconds[n].append(await enforcement_run(pool, settings, *run))
    for n, figure in enumerate(figures):
        figure["enforcement_run_s"] = round(statistics.median(seconds[n]), 3)
        figure["enforcement_runs_s"] = [round(x, 3) for x in seconds[n]]
    return figures[0], figures[1]


async def enforcement_run(
    pool: asyncpg.Pool, settings: Any, org_id: int, owner_id: int, owner_email: str
) -> float:
    """The run of the organization, from the switch to its last batch; its seconds."""
    from db import counts
    from db.audit import Actor
    from jobs.enforcement import BATCHES_AT_ONCE, coordinate_run, remove_batch_now
    from require2fa import organization_settings

    async with pool.acquire() as conn:
        expected = await counts.count_noncompliant(conn, org_id, except_user_id=owner_id)
        await conn.execute("checkpoint")
    started = time.perf_counter()
    async with pool.acquire() as conn, conn.transaction():
        change = await organization_settings.change_organization(
            conn,
            organization_settings.SettingsChange(require_2fa=True),
            organization_id=org_id,
            actor=Actor(user_id=owner_id, label=owner_email, ip_address="127.0.0.1"),
            role="owner",
        )
    assert change.started and change.run is not None
    run_id = change.run["id"]
    # The batches sent (a window of them), then each finished batch's next one, as the workers
    # take them, `BATCHES_AT_ONCE` at a time.
    queue: asyncio.Queue[int] = asyncio.Queue()
    await coordinate_run(pool, run_id, send=lambda _run, batch_no: queue.put_nowait(batch_no))

    async def batches() -> None:
        while not queue.empty():
            done = await remove_batch_now(pool, settings, run_id, queue.get_nowait())
            if done is not None and done.next_batch is not None:
                queue.put_nowait(done.next_batch)

    while True:
        await asyncio.gather(*(batches() for _ in range(BATCHES_AT_ONCE)))
        # What a batch's `take_next` skipped (a row another batch held): the sweeper's part.
        async with pool.acquire() as conn:
            left = await conn.fetch(
                """select batch_no from enforcement_batches
                    where run_id = $1 and done_at is null order by batch_no""",
                run_id,
            )
        if not left:
            break
        for row in left:
            queue.put_nowait(row["batch_no"])
    seconds = time.perf_counter() - started
    async with pool.acquire() as conn:
        run = await conn.fetchrow(
            "select status, removed from enforcement_runs where id = $1", run_id
        )
        assert run["status"] == "completed" and run["removed"] == expected, (dict(run), expected)
        # Its emails delivered, as the dispatcher would, so that the next phase's claim takes
        # from the same queue as this one's.
        await conn.execute(
            """update email_outbox set status = 'sent', sent_at = now(), context = '{}'
                where enforcement_id = $1""",
            run_id,
        )
    return seconds


# --- One day's pruning ---------------------------------------------------------------------

LOCKS_SQL = """
select count(*) filter (where l.pid = $1) as held,
       count(*) filter (where l.pid = $1 and l.mode = 'AccessExclusiveLock') as exclusive,
       count(*) filter (where l.pid <> $1 and not l.granted) as waiting
  from pg_locks l join pg_stat_activity a on a.pid = l.pid
 where a.datname = current_database()
"""


async def one_days_pruning(pool: asyncpg.Pool, subject: Subject) -> dict[str, Any]:
    """The passes of `require2fa.retention.prune` until one finds nothing (at most a day of
    hourly passes), with one day of rows past OUTBOX_RETENTION and the oldest audit month past
    the audit retention; the locks sampled and the audit log's first page timed meanwhile."""
    from db.pool import create_pool
    from require2fa import audit_log
    from require2fa.retention import MAX_BATCHES, prune
    from require2fa.settings import Settings

    outbox_retention = Settings(environment="development").outbox_retention
    async with pool.acquire() as conn:
        now: datetime = await conn.fetchval("select now()")
        oldest: datetime = await conn.fetchval(
            "select min(month) from audit_log_partitions_before('infinity')"
        )
    # The cutoff an hour into the second month: the first month is due, the second is not.
    second = (oldest + timedelta(days=32)).replace(day=1)
    audit_retention = now - second - timedelta(hours=1)

    async def first_page() -> None:
        await audit_log.page(pool, subject.org_id, cursor=None, limit=101)

    idle = await timed(first_page, 200)
    pruner = await create_pool(HISTORY_DSN, min_size=1, max_size=1)
    sampler = await asyncpg.connect(HISTORY_DSN)
    async with pruner.acquire() as conn:
        pid = await conn.fetchval("select pg_backend_pid()")
    samples: list[asyncpg.Record] = []
    during: list[float] = []
    done = asyncio.Event()

    async def sample() -> None:
        while not done.is_set():
            samples.append(await sampler.fetchrow(LOCKS_SQL, pid))
            await asyncio.sleep(0.01)

    async def probe() -> None:
        while not done.is_set():
            started = time.perf_counter()
            await first_page()
            during.append(time.perf_counter() - started)

    background = [asyncio.create_task(sample()), asyncio.create_task(probe())]
    passes: list[dict[str, Any]] = []
    started = time.perf_counter()
    try:
        for _ in range(24):
            result = await prune(
                pruner, outbox_retention=outbox_retention, audit_retention=audit_retention
            )
            passes.append(
                {
                    "emails": result.emails,
                    "deliveries": result.deliveries,
                    "audit_months_dropped": result.audit_months_dropped,
                    "audit_entries": result.audit_entries,
                    "lock_timeouts": result.lock_timeouts,
                    "seconds": round(result.seconds, 2),
                }
            )
            if not (result.emails or result.deliveries or result.audit_months_dropped):
                break
    finally:
        seconds = time.perf_counter() - started
        done.set()
        await asyncio.gather(*background)
        await sampler.close()
        await pruner.close()
    async with pool.acquire() as conn:
        left = await conn.fetchrow(
            """select (select count(*) from email_outbox where status in ('sent', 'failed')
                        and coalesce(sent_at, created_at) < now() - $1::interval) as emails,
                      (select count(*) from webhook_deliveries
                        where coalesce(delivered_at, created_at) < now() - $1::interval)
                        as deliveries""",
            outbox_retention,
        )
    idle_figures, during_figures = latency(idle), latency(during)
    return {
        "outbox_retention_days": outbox_retention.days,
        "audit_retention_days": round(audit_retention / timedelta(days=1), 1),
        "batch_size_and_max_batches": [1_000, MAX_BATCHES],
        "passes": passes,
        "seconds": round(seconds, 2),
        "emails_deleted": sum(p["emails"] for p in passes),
        "deliveries_deleted": sum(p["deliveries"] for p in passes),
        "audit_entries_dropped": sum(p["audit_entries"] for p in passes),
        "left_past_retention": dict(left),
        "lock_timeouts": sum(p["lock_timeouts"] for p in passes),
        "locks": {
            "samples": len(samples),
            "most_held_by_the_pruning": max((s["held"] for s in samples), default=0),
            "samples_with_an_access_exclusive_lock": sum(1 for s in samples if s["exclusive"]),
            "samples_with_another_backend_waiting": sum(1 for s in samples if s["waiting"]),
        },
        "audit_first_page": {
            "idle": idle_figures,
            "during_pruning": during_figures,
            "p99_during_over_idle": round(during_figures["p99_ms"] / idle_figures["p99_ms"], 2),
        },
    }


# --- The whole ------------------------------------------------------------------------------


async def prepare(conn: asyncpg.Connection, settings: Any, members: int, run_members: int) -> Any:
    """The young deployment (see the module); returns the subject and the two run organizations."""
    from commands.seed import seed
    from require2fa import audit_log

    subject = await seed(conn, settings, slug="subject", count=members, enrolled=0.5)
    now: datetime = await conn.fetchval("select now()")
    # Its own log: an entry per member over the last thirty days, in the months' partitions
    # (the clock creates them ahead; migration 0190 created those of the entries before it).
    await conn.execute("select audit_log_add_partitions($1, 2)", now - timedelta(days=30))
    await copy_audit(conn, members, timedelta(days=30), now, [subject.organization_id])
    runs = []
    for slug in ("run-before", "run-after"):
        email = f"owner@{slug}.example"
        seeded = await seed(
            conn, settings, slug=slug, count=run_members, enrolled=0.5, owner_email=email
        )
        runs.append((seeded.organization_id, seeded.owner_id, email))
    history = await seed(conn, settings, slug="history", count=10, enrolled=1.0)
    await copy_queued_emails(conn, QUEUED_EMAILS, history.organization_id)
    await conn.execute("vacuum analyze")
    members_cursor = await conn.fetchval(
        "select id from members where organization_id = $1 order by id offset $2 limit 1",
        subject.organization_id,
        int(members * 0.9),
    )
    audit_cursor = await conn.fetchrow(
        """select created_at, id from audit_log where organization_id = $1
            order by created_at desc, id desc offset $2 limit 1""",
        subject.organization_id,
        int(members * 0.9) - 101,  # a full page left behind it
    )
    return (
        Subject(
            subject.organization_id,
            "subject",
            members_cursor,
            audit_log.cursor_of(audit_cursor),
        ),
        runs,
        history,
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="of the history's rows")
    parser.add_argument("--members", type=int, help="of the measured organization (100k×scale)")
    parser.add_argument("--run-members", type=int, help="of each enforcement run (100k×scale)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of each measure")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()
    members = args.members or max(1_000, int(100_000 * args.scale))
    run_members = args.run_members or max(1_000, int(100_000 * args.scale))
    env = {
        **os.environ,
        "ENVIRONMENT": "development",
        "DATABASE_URL": DSN,
        "REDIS_URL": REDIS_URL,
        "REDIS_NAMESPACE": f"require2fa-bench-{RUN}",
        "BASE_URL": "http://bench.example",
        "LOG_FORMAT": "text",
    }
    os.environ.update(env)  # jobs.broker reads these when imported

    from db.migrate import migrate
    from db.pool import connect, create_pool
    from require2fa import logs
    from require2fa.settings import Settings

    logs.configure("text")  # logs on stderr; stdout carries only the JSON
    settings = Settings.from_env(env)
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'create database "{DB}"')
    try:
        started = time.perf_counter()
        conn = await connect(DSN)
        await migrate(conn)
        subject, runs, history = await prepare(conn, settings, members, run_members)
        await conn.close()
        # The same database, to which the history is added.
        await admin.execute(f'create database "{HISTORY_DB}" template "{DB}"')
        setup_seconds = time.perf_counter() - started
        conn = await connect(HISTORY_DSN)
        try:
            seeded = await seed_history(conn, args.scale, history.organization_id, history.owner_id)
        finally:
            await conn.close()
        print(json.dumps({"history": seeded}), file=sys.stderr)
        young = await create_pool(DSN, min_size=2, max_size=4)
        old = await create_pool(HISTORY_DSN, min_size=2, max_size=4)
        try:
            before, after = await measure((young, old), settings, subject, runs, args.rounds)
            print(json.dumps({"without": before, "with": after}), file=sys.stderr)
            plans = {
                "without_history": await audit_plans(young, subject),
                "with_history": await audit_plans(old, subject),
            }
            pruning = await one_days_pruning(old, subject)
        finally:
            await young.close()
            await old.close()
    finally:
        if not args.keep:
            for name in (DB, HISTORY_DB):
                await admin.execute(f'drop database if exists "{name}" with (force)')
        await admin.close()

    ratios = {
        name: round(after[name] / before[name], 2)
        for name in before
        if name.endswith("_ms") or name == "enforcement_run_s"
    }
    print(
        json.dumps(
            {
                "benchmark": "history",
                "scale": args.scale,
                "members": members + 1,
                "run_members": run_members + 1,
                "history": seeded,
                "without_history": before,
                "with_history": after,
                "ratios": ratios,
                "goal": GOAL,
                "pass": all(ratio <= GOAL for ratio in ratios.values()),
                "audit_page_plans": plans,
                "one_days_pruning": pruning,
                "setup_seconds": round(setup_seconds, 1),
                "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
