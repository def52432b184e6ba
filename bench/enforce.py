"""Benchmark: require 2FA on organizations of 10k, 100k and 1M members, against the bound.

    .venv/bin/python bench/enforce.py [--sizes 10000,100000,1000000] [--threads 4] [--webhook]
                                      [--probe] [--action remove|block] [--scope-team FRACTION]

For each size, two organizations are seeded with `commands.seed` (half the members without
2FA) in one fresh database. On the first, the requirement is turned on with `PUT
organizations/{org}/` over HTTP (the aiohttp app, in this process) and the clock runs until the
run is completed: every removal, `member.pending` entry and outbox row committed by two
`dramatiq jobs` worker processes. On the second, the bound: the same removals, audit entries and
outbox rows written by set-based SQL statements, one per slice of the members by id, run at once
on as many connections as the run's worker processes use (`--bound-connections`, default 2: the
run uses both cores, so the bound must too). Prints one JSON object: per size the PUT
latency, the run's and the bound's seconds and members per second, their ratio, and the peak
resident memory of each worker process. After the bound, on the same connections, the floor:
the same statements on a minimal schema (`FLOOR_SCHEMA`: members with only the columns the
removal needs, audit and outbox tables with only a primary key, no triggers), over a copy of
the bound organization's members taken before its bound ran; `throughput_vs_floor` is the
floor's seconds over the run's, `bound_vs_floor` the floor's over the bound's. With
`--webhook`, both organizations first subscribe a webhook to every event, so that each
removal also writes its webhook delivery (the audit_log trigger, in the same statement; nobody
sends them here). With `--probe`, the latency of what
users wait on is measured idle (before the run) and while the run goes, one request after
another: the members page of the organization under enforcement (`GET …/members/?per_page=100`)
and the switch of another organization (`PUT …/` `{"require2FA": true}`, then false), with p50,
p99 and the ratio of each p99 to its idle p99 (the requests compete with the run, so the run's
figures of a probed size are not the bound's). With `--action block`, the PUT also sets
`require2FAAction: "block"`: the run blocks its members in place (`member.blocked` entries and
one "Action required" email each) and the bound writes the same in its statements; the switch is
timed once (turning it off and on again would unblock and block everyone again). With
`--scope-team FRACTION`, each organization has a team `scoped` holding that fraction of its
members (chosen by a hash of the id) and the PUT sets `require2FAScope: {"teams": ["scoped"]}`:
only they must meet the requirement, in the run and in the bound. Uses the PostgreSQL at
DATABASE_URL (default 127.0.0.1:5432) and the Redis at REDIS_URL; the database and Redis keys it
creates are removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from commands.devstack import free_port, with_database  # noqa: E402

ADMIN_DSN = os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
RUN = uuid.uuid4().hex[:8]
DB = f"require2fa_bench_enforce_{RUN}"
NAMESPACE = f"require2fa-bench-{RUN}"
DSN = with_database(ADMIN_DSN, DB)

# What the batches do, for a whole organization at once: the members without a second factor
# (but the owner) become pending with a fresh random token, each with its audit entry and its
# outbox row. Tokens are 32 random bytes, base64url, like `secrets.token_urlsafe(32)`.
BOUND_SQL = """
with cand as (
    select m.id, m.user_id,
           translate(rtrim(encode(uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()),
                                  'base64'), '='), '+/', '-_') as token
    from {members} m join users u on u.id = m.user_id
         join organizations o on o.id = m.organization_id
    where m.organization_id = $1 and u.id <> $2 and not {has_2fa_user}
      and m.id between $5 and $6 and {in_scope}),
removed as (
    update {members} m
    set user_id = null, pending_reason = '2fa', token_hash = sha256(convert_to(c.token, 'UTF8')),
        reinstate_by = now() + interval '90 days', removed_at = now(), removed_by_run = $3,
        expiry_reminded_at = null,
        removal_reason = case when {any_factor_candidate} then '2fa-level' else '2fa' end
    from cand c
    where m.id = c.id and m.user_id = c.user_id and not {has_2fa_candidate}
    returning m.id, m.email, m.role, c.user_id, c.token, m.reinstate_by),
logged as (
    insert into {audit} (organization_id, event, actor_user_id, actor_label, target_member_id,
                           target_user_id, ip_address, data)
    select $1, 'member.pending', $2, 'owner', r.id, r.user_id, '127.0.0.1',
           jsonb_build_object(
               'email', r.email, 'role', r.role, 'reason', '2fa',
               'teams', coalesce((select jsonb_agg(tm.slug order by tm.slug) from member_teams mt
                                  join teams tm on tm.id = mt.team_id
                                  where mt.member_id = r.id), '[]'::jsonb))
    from removed r order by r.id),
mailed as (
    insert into {outbox} (template, to_address, context, dedupe_key, message_id,
                              organization_id, member_id, enforcement_id)
    select 'removed_for_2fa', r.email,
           jsonb_build_object('org_name', o.name, 'org_slug', o.slug, 'member_email', r.email,
                              'accept_url', 'http://bench/accept/' || r.id || '/' || r.token || '/',
                              'reinstate_by', r.reinstate_by::text),
           k.key, {message_id}, $1, r.id, $3
    from removed r cross join organizations o
         cross join lateral (select 'removed:' || $3 || ':' || r.id as key) k
    where o.id = $1
    order by r.id
    on conflict (dedupe_key) do nothing)
select count(*) from removed
"""

# The same for the action `block`: the members stay active and are marked blocked, each with
# its `member.blocked` entry and its "Action required" email.
BLOCK_BOUND_SQL = """
with cand as (
    select m.id, m.user_id
    from {members} m join users u on u.id = m.user_id
         join organizations o on o.id = m.organization_id
    where m.organization_id = $1 and u.id <> $2 and not {has_2fa_user}
      and m.id between $5 and $6 and {in_scope}),
blocked as (
    update {members} m set blocked_at = now(), blocked_by_run = $3
    from cand c
    where m.id = c.id and m.user_id = c.user_id and m.blocked_at is null
      and not {has_2fa_candidate}
    returning m.id, m.email, m.role, c.user_id),
logged as (
    insert into {audit} (organization_id, event, actor_user_id, actor_label, target_member_id,
                           target_user_id, ip_address, data)
    select $1, 'member.blocked', $2, 'owner', b.id, b.user_id, '127.0.0.1',
           jsonb_build_object('email', b.email, 'role', b.role, 'reason', '2fa')
    from blocked b order by b.id),
mailed as (
    insert into {outbox} (template, to_address, context, dedupe_key, message_id,
                              organization_id, member_id, enforcement_id)
    select 'blocked_for_2fa', b.email,
           jsonb_build_object('org_name', o.name, 'org_slug', o.slug, 'member_email', b.email,
                              'level', o.require_2fa_level,
                              'security_url', 'http://bench/account/security/'),
           k.key, {message_id}, $1, b.id, $3
    from blocked b cross join organizations o
         cross join lateral (select 'blocked:' || $3 || ':' || b.id as key) k
    where o.id = $1
    order by b.id
    on conflict (dedupe_key) do nothing)
select count(*) from blocked
"""

SCOPE_TEAM = "scoped"


# The floor: the same statements on a minimal schema, so that what the project's schema costs
# (its indexes, triggers, partitions and wider rows) shows beside what the work itself costs.
# Members with only the columns the removal reads or writes and a primary key; the audit and
# outbox tables with the same columns and only a primary key (the outbox's is the dedupe key,
# which the statement's `on conflict` needs); no triggers.
FLOOR_SCHEMA = """
create table floor_members (
    id bigint primary key, organization_id bigint not null, user_id bigint, email text not null,
    role text not null, pending_reason text, token_hash bytea, reinstate_by timestamptz,
    removed_at timestamptz, removed_by_run bigint, expiry_reminded_at timestamptz,
    removal_reason text, blocked_at timestamptz, blocked_by_run bigint);
create table floor_audit (
    id bigint generated always as identity primary key, organization_id bigint, event text,
    actor_user_id bigint, actor_label text, target_member_id bigint, target_user_id bigint,
    ip_address inet, data jsonb, created_at timestamptz not null default now());
create table floor_outbox (
    dedupe_key text primary key, template text, to_address text, context jsonb,
    message_id text, organization_id bigint, member_id bigint, enforcement_id bigint);
"""
TABLES = {"members": "members", "audit": "audit_log", "outbox": "email_outbox"}
FLOOR_TABLES = {"members": "floor_members", "audit": "floor_audit", "outbox": "floor_outbox"}


async def fill_floor(conn: asyncpg.Connection, org_id: int) -> None:
    """The floor's members: a copy of the organization's, taken before its bound runs."""
    await conn.execute(
        """insert into floor_members (id, organization_id, user_id, email, role, blocked_at)
           select id, organization_id, user_id, email, role, blocked_at from members
           where organization_id = $1""",
        org_id,
    )
    await conn.execute("vacuum analyze floor_members")


def bound_scope_sql(*, scoped: bool) -> str:
    """The bound's scope condition on `m` (roles `$7`, teams `$8`): with a scope, membership of
    the scope's set (`compliance.scope_members_sql`, read from the team's members), the
    shortest way; without, `compliance.in_scope_sql`, true at once for everyone."""
    from require2fa import compliance

    if scoped:
        members = compliance.scope_members_sql(
            "$1::bigint", roles_sql="$7::text[]", teams_sql="$8::text[]"
        )
        return f"m.id in ({members})"
    return compliance.in_scope_sql(
        "m.id", "m.role", roles_sql="$7::text[]", teams_sql="$8::text[]", organization_id_sql="$1"
    )


async def add_scope_team(conn: asyncpg.Connection, org_id: int, fraction: float) -> int:
    """A team `scoped` of about `fraction` of the organization's members (by a multiplicative
    hash of the id, so that it is spread over every batch); returns its size."""
    return await conn.fetchval(
        """with t as (insert into teams (organization_id, slug, name)
                      values ($1, $3, 'Scoped') returning id),
                added as (insert into member_teams (member_id, team_id)
                          select m.id, t.id from members m, t
                          where m.organization_id = $1
                            and (m.id * 2654435761) % 1000000 < $2::float8 * 1000000
                          returning 1)
           select count(*) from added""",
        org_id,
        fraction,
        SCOPE_TEAM,
    )


def rss_kb(pid: int) -> int:
    """Resident memory of one process, in kB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


class Workers:
    """Two `dramatiq jobs` processes on the enforcement queue (each a parent and one worker),
    with the peak memory of their worker processes."""

    def __init__(self, env: dict[str, str], threads: int) -> None:
        from commands.dev import ProcessGroup

        self.log_path = tempfile.mkstemp(prefix=f"{DB}.workers.", suffix=".log")[1]
        self.group = ProcessGroup(env, log_path=Path(self.log_path))
        command = [sys.executable, "-m", "dramatiq", "jobs", "--processes", "1"]
        command += ["--threads", str(threads), "--queues", "enforcement"]
        for n in range(2):
            self.group.start(f"worker-{n}", command)
        self.peak: dict[int, int] = {}
        self.sampled: list[int] = []

    def worker_pids(self) -> list[int]:
        return [child for p in self.group.processes.values() for child in children(p.pid)]

    def sample(self) -> None:
        # Only the processes found by `reset_peaks`: finding them walks all of /proc (about
        # 5 ms of CPU), which, every 50 ms during a run, took CPU from the run it measures.
        for pid in self.sampled:
            self.peak[pid] = max(self.peak.get(pid, 0), rss_kb(pid))

    def reset_peaks(self) -> None:
        self.peak = {}
        self.sampled = self.worker_pids()

    def stop(self) -> None:
        self.group.stop()


async def wait_for_workers(workers: Workers) -> None:
    """Until both worker processes have forked their worker and it has booted."""
    for _ in range(300):
        if len(workers.worker_pids()) >= 2:
            break
        await asyncio.sleep(0.2)
    await asyncio.sleep(2)  # they import and open their pools before the clock starts


async def make_owner(conn: asyncpg.Connection, email: str) -> tuple[int, str]:
    """A user with a confirmed TOTP factor and an API token; returns (user id, token)."""
    from db import users
    from require2fa.security import new_token, token_hash

    user = await users.create(conn, email=email, name="Owner", password_hash=None)
    assert user is not None
    await conn.execute(
        """insert into authenticators (user_id, type, name, secret_encrypted, confirmed_at)
           values ($1, 'totp', 'bench', 'x', now())""",
        user["id"],
    )
    token = new_token()
    await users.create_token(conn, user_id=user["id"], token_hash=token_hash(token))
    return user["id"], token


async def warm_up(
    conn: asyncpg.Connection, http: aiohttp.ClientSession, base: str, settings: Any
) -> None:
    """One small enforcement first, so that no measurement pays for imports and connections."""
    from commands.seed import seed

    _, token = await make_owner(conn, "owner@warmup.example")
    await seed(
        conn, settings, slug="warmup", count=100, enrolled=0.5, owner_email="owner@warmup.example"
    )
    headers = {"Authorization": f"Bearer {token}"}
    response = await http.put(
        f"{base}/api/0/organizations/warmup/", json={"require2FA": True}, headers=headers
    )
    assert response.status == 200, await response.text()
    run_id = int((await response.json())["enforcement"]["id"])
    await wait_for_run(conn, run_id)


async def wait_for_run(
    conn: asyncpg.Connection, run_id: int, workers: Workers | None = None
) -> asyncpg.Record:
    """Polls the run until it is no longer queued or running (sampling worker memory)."""
    while True:
        run = await conn.fetchrow("select * from enforcement_runs where id = $1", run_id)
        if run["status"] not in ("queued", "running"):
            return run
        if workers is not None:
            workers.sample()
        # Often enough that the run's seconds are not rounded up by much (by 25 ms on average
        # at 0.05 s, a tenth of a 10k run), cheap enough not to slow it: one indexed row read.
        await asyncio.sleep(0.01)


def latency(samples: list[float]) -> dict[str, float | int]:
    """p50, p99 and max of request durations (seconds), in ms."""
    ordered = sorted(samples)
    if len(ordered) < 2:  # a run shorter than one round of requests
        ordered = ordered * 2
    cuts = statistics.quantiles(ordered, n=100, method="inclusive")
    return {
        "requests": len(samples),
        "p50_ms": round(cuts[49] * 1000, 1),
        "p99_ms": round(cuts[98] * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
    }


class Probe:
    """One request after another: the members page of the organization under enforcement, then
    the switch of another one (on, off), each timed."""

    def __init__(
        self, http: aiohttp.ClientSession, base: str, slug: str, other: str, headers: dict[str, str]
    ) -> None:
        self.http, self.headers = http, headers
        self.page_url = f"{base}/api/0/organizations/{slug}/members/?per_page=100"
        self.switch_url = f"{base}/api/0/organizations/{other}/"
        self.on = True

    async def page(self) -> float:
        started = time.perf_counter()
        async with self.http.get(self.page_url, headers=self.headers) as response:
            await response.read()
            assert response.status == 200, response.status
        return time.perf_counter() - started

    async def switch(self) -> float:
        started = time.perf_counter()
        body = {"require2FA": self.on}
        async with self.http.put(self.switch_url, json=body, headers=self.headers) as response:
            await response.read()
            assert response.status == 200, response.status
        self.on = not self.on
        return time.perf_counter() - started

    async def samples(self, count: int) -> tuple[list[float], list[float]]:
        pages, switches = [], []
        for _ in range(count):
            pages.append(await self.page())
            switches.append(await self.switch())
        return pages, switches

    async def until(self, done: asyncio.Event) -> tuple[list[float], list[float]]:
        pages: list[float] = []
        switches: list[float] = []
        while True:  # at least one round, however short the run
            pages.append(await self.page())
            switches.append(await self.switch())
            if done.is_set():
                return pages, switches


async def bound_and_floor(
    conn: asyncpg.Connection,
    org_id: int,
    owner_id: int,
    *,
    action: str,
    scope: tuple[tuple[str, ...], tuple[str, ...]] | None,
    connections: int,
) -> tuple[float, float, int, int, int]:
    """The bound on the organization's members, then the floor on their copy, each statement
    on equal slices of the members by id at once, on the same connections: (bound seconds,
    floor seconds, bound rows, floor rows, connections)."""
    from db.outbox import MESSAGE_ID_SQL
    from require2fa import compliance

    bound_run = await conn.fetchval(
        """insert into enforcement_runs (organization_id, actor_user_id, status)
           values ($1, $2, 'completed') returning id""",
        org_id,
        owner_id,
    )
    statement = BLOCK_BOUND_SQL if action == "block" else BOUND_SQL
    pieces = dict(
        message_id=MESSAGE_ID_SQL.format(key="k.key"),
        # At the organization's level, as the batches judge it (`any` here: the seed's
        # factors are TOTP), with the removal reason they write.
        has_2fa_user=compliance.second_factor_sql("u.id", level_sql="o.require_2fa_level"),
        has_2fa_candidate=compliance.second_factor_sql("c.user_id", level_sql="$4::text"),
        any_factor_candidate=compliance.second_factor_sql("c.user_id"),
        in_scope=bound_scope_sql(scoped=scope is not None),
    )
    bound_sql = statement.format(**pieces, **TABLES)
    floor_sql = statement.format(**pieces, **FLOOR_TABLES)
    # Equal slices of the members by id, one statement each, all at once.
    slices = await conn.fetch(
        """select min(id) as lo, max(id) as hi
           from (select id, ntile($2) over (order by id) as part from members
                 where organization_id = $1) as parts
           group by part order by part""",
        org_id,
        connections,
    )
    bound_conns = [await asyncpg.connect(DSN) for _ in slices]

    async def timed(sql: str) -> tuple[float, int]:
        """The statement on every slice at once, each on its own connection: (seconds, rows)."""
        await conn.execute("checkpoint")
        started = time.perf_counter()
        parts = await asyncio.gather(
            *(
                c.fetchval(
                    sql,
                    org_id,
                    owner_id,
                    bound_run,
                    "any",
                    part["lo"],
                    part["hi"],
                    None,
                    list(scope[1]) if scope is not None else None,
                )
                for c, part in zip(bound_conns, slices, strict=True)
            )
        )
        return time.perf_counter() - started, sum(parts)

    try:
        bound_seconds, removed = await timed(bound_sql)
        floor_seconds, floor_removed = await timed(floor_sql)
    finally:
        for c in bound_conns:
            await c.close()
    return bound_seconds, floor_seconds, removed, floor_removed, len(slices)


async def measure(
    conn: asyncpg.Connection,
    http: aiohttp.ClientSession,
    base: str,
    workers: Workers,
    settings: Any,
    size: int,
    webhook: bool = False,
    bound_connections: int = 2,
    probe: bool = False,
    action: str = "remove",
    scope_team: float | None = None,
) -> dict[str, Any]:
    from commands.seed import seed
    from db.counts import count_noncompliant

    slug, bound_slug = f"bench-{size}", f"bound-{size}"
    owner_id, token = await make_owner(conn, f"owner@{slug}.example")
    bound_owner_id, _ = await make_owner(conn, f"owner@{bound_slug}.example")
    seeded = await seed(
        conn, settings, slug=slug, count=size, enrolled=0.5, owner_email=f"owner@{slug}.example"
    )
    bound_seeded = await seed(
        conn,
        settings,
        slug=bound_slug,
        count=size,
        enrolled=0.5,
        owner_email=f"owner@{bound_slug}.example",
        random_seed=3,
    )
    if webhook:
        for org_id in (seeded.organization_id, bound_seeded.organization_id):
            await conn.execute(
                """insert into webhooks (organization_id, url, events, secret_encrypted)
                   values ($1, 'http://127.0.0.1:9/', '{*}', 'x')""",
                org_id,
            )
    in_scope = None
    scope: tuple[tuple[str, ...], tuple[str, ...]] | None = None
    if scope_team is not None:
        scope = ((), (SCOPE_TEAM,))
        in_scope = await add_scope_team(conn, seeded.organization_id, scope_team)
        assert in_scope > 0 or scope_team == 0, in_scope
        await add_scope_team(conn, bound_seeded.organization_id, scope_team)
    await conn.execute("vacuum analyze users, members, authenticators, member_teams")
    await fill_floor(conn, bound_seeded.organization_id)
    expected = await count_noncompliant(
        conn, seeded.organization_id, except_user_id=owner_id, scope=scope
    )
    bound_expected = await count_noncompliant(
        conn, bound_seeded.organization_id, except_user_id=bound_owner_id, scope=scope
    )
    headers = {"Authorization": f"Bearer {token}"}
    turn_on: dict[str, Any] = {"require2FA": True}
    if action != "remove":
        turn_on["require2FAAction"] = action
    if scope is not None:
        turn_on["require2FAScope"] = {"teams": list(scope[1])}
    warm = await http.get(f"{base}/api/0/organizations/{slug}/", headers=headers)
    assert warm.status == 200, await warm.text()
    prober = None
    probed: dict[str, Any] = {}
    if probe:
        # Another organization of the same owner, every member with 2FA: its runs remove nobody.
        other = f"probe-{size}"
        await seed(
            conn,
            settings,
            slug=other,
            count=1000,
            enrolled=1.0,
            owner_email=f"owner@{slug}.example",
        )
        prober = Probe(http, base, slug, other, headers)
        await prober.samples(20)  # warm
        probed["idle"] = await prober.samples(200)
    await conn.execute("checkpoint")

    workers.reset_peaks()
    started = time.perf_counter()
    response = await http.put(f"{base}/api/0/organizations/{slug}/", json=turn_on, headers=headers)
    put_seconds = time.perf_counter() - started
    assert response.status == 200, await response.text()
    run_id = int((await response.json())["enforcement"]["id"])
    finished = asyncio.Event()
    probing = asyncio.create_task(prober.until(finished)) if prober is not None else None
    run = await wait_for_run(conn, run_id, workers)
    seconds = time.perf_counter() - started
    finished.set()
    if probing is not None and prober is not None:
        probed["during_run"] = await probing
        if not prober.on:  # leave the other organization's requirement off
            await prober.switch()
    assert run["status"] == "completed", run["status"]
    assert run["removed"] == expected, (run["removed"], expected)
    event = "member.blocked" if action == "block" else "member.pending"
    counts = await conn.fetchrow(
        """select (select count(*) from audit_log
                   where organization_id = $1 and event = $3) as audit,
                  (select count(*) from email_outbox where enforcement_id = $2) as emails""",
        seeded.organization_id,
        run_id,
        event,
    )
    assert counts["audit"] == counts["emails"] == expected, dict(counts)
    deliveries = await conn.fetchval(
        """select count(*) from webhook_deliveries d join webhooks w on w.id = d.webhook_id
           where w.organization_id = $1 and d.event = $2""",
        seeded.organization_id,
        event,
    )
    assert deliveries == (expected if webhook else 0), deliveries
    # Where the run's time went: queued until planned, planned until the first batch is done,
    # the batches' own transactions (summed over both processes), the last batch until seen.
    timeline = await conn.fetchrow(
        """select extract(epoch from r.started_at - r.created_at) as queued_to_planned,
                  extract(epoch from min(b.done_at) - r.started_at) as planned_to_first_batch,
                  extract(epoch from r.finished_at - r.started_at) as planned_to_finished,
                  sum(b.seconds) as batch_seconds_sum,
                  extract(epoch from max(b.enqueued_at) - r.started_at) as planned_to_last_sent
           from enforcement_runs r join enforcement_batches b on b.run_id = r.id
           where r.id = $1 group by r.id""",
        run_id,
    )

    # Two more samples of the switch's latency on the same organization, now that the first run
    # is over: off, then on again (measured; that run finds nobody left to remove), then off.
    # (Not with `block`: off lets every blocked member back in, on blocks them all again.)
    samples = [put_seconds]
    url = f"{base}/api/0/organizations/{slug}/"
    for _ in range(2 if action == "remove" else 0):
        off = await http.put(url, json={"require2FA": False}, headers=headers)
        assert off.status == 200, await off.text()
        started = time.perf_counter()
        again = await http.put(url, json={"require2FA": True}, headers=headers)
        samples.append(time.perf_counter() - started)
        assert again.status == 200, await again.text()
    if action == "remove":
        off = await http.put(url, json={"require2FA": False}, headers=headers)
        assert off.status == 200, await off.text()

    bound_seconds, floor_seconds, removed, floor_removed, connections = await bound_and_floor(
        conn,
        bound_seeded.organization_id,
        bound_owner_id,
        action=action,
        scope=scope,
        connections=bound_connections,
    )
    assert removed == floor_removed == bound_expected, (removed, floor_removed, bound_expected)

    members = size + 1
    return {
        "members": members,
        "action": action,
        **({"scope_team_fraction": scope_team, "in_scope": in_scope} if scope else {}),
        "removed": expected,  # blocked, with `block`
        "webhook_deliveries": deliveries,
        "put_ms": round(put_seconds * 1000, 2),
        "put_ms_samples": [round(x * 1000, 2) for x in samples],
        "put_ms_median": round(statistics.median(samples) * 1000, 2),
        "seconds": round(seconds, 2),
        "members_per_s": round(members / seconds),
        "removed_per_s": round(expected / seconds),
        "batches": run["batches_total"],
        "timeline_s": {key: round(float(value), 3) for key, value in timeline.items()},
        "bound_seconds": round(bound_seconds, 3),
        "bound_connections": connections,
        "bound_members_per_s": round(members / bound_seconds),
        "throughput_vs_bound": round(bound_seconds / seconds, 3),
        "floor_seconds": round(floor_seconds, 3),
        "throughput_vs_floor": round(floor_seconds / seconds, 3),
        "bound_vs_floor": round(floor_seconds / bound_seconds, 3),
        "worker_peak_rss_mb": sorted(round(kb / 1024, 1) for kb in workers.peak.values()),
        **({"probe": probe_figures(probed)} if probe else {}),
    }


def probe_figures(probed: dict[str, Any]) -> dict[str, Any]:
    """Latency of the members page and of the other organization's switch, idle and during the
    run, with the ratio of the p99s."""
    figures: dict[str, Any] = {}
    for n, name in enumerate(("members_page", "put_require2fa_other_org")):
        idle = latency(probed["idle"][n])
        during = latency(probed["during_run"][n])
        figures[name] = {
            "idle": idle,
            "during_run": during,
            "p99_during_over_idle": round(during["p99_ms"] / idle["p99_ms"], 2),
        }
    return figures


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--threads", type=int, default=4, help="worker threads per process")
    parser.add_argument(
        "--webhook", action="store_true", help="each organization has a webhook for every event"
    )
    parser.add_argument(
        "--bound-connections",
        type=int,
        default=2,
        help="connections the bound's statements run on at once (the run's worker processes)",
    )
    parser.add_argument("--action", choices=("remove", "block"), default="remove")
    parser.add_argument(
        "--scope-team",
        type=float,
        default=None,
        metavar="FRACTION",
        help="the requirement scoped to one team holding this fraction of the members",
    )
    parser.add_argument(
        "--probe",
        action="store_true",
        help="time the members page and another organization's switch, idle and during the run",
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    from require2fa import logs

    logs.configure("text")  # logs on stderr; stdout carries only the JSON

    env = {
        **os.environ,
        "ENVIRONMENT": "development",
        "DATABASE_URL": DSN,
        "REDIS_URL": REDIS_URL,
        "REDIS_NAMESPACE": NAMESPACE,
        "BASE_URL": "http://bench.example",
        "LOG_FORMAT": "json",
    }
    os.environ.update(env)  # the web app's broker (jobs.broker) reads these when imported

    from aiohttp import web

    from api.app import create_app
    from db.migrate import migrate
    from db.pool import connect
    from require2fa.settings import Settings

    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'create database "{DB}"')
    workers: Workers | None = None
    runner: web.AppRunner | None = None
    results: list[dict[str, Any]] = []
    try:
        conn = await connect(DSN)
        await migrate(conn)
        await conn.execute(FLOOR_SCHEMA)
        settings = Settings.from_env(env)
        workers = Workers(env, args.threads)
        runner = web.AppRunner(create_app(settings), access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await wait_for_workers(workers)
        async with aiohttp.ClientSession() as http:
            await warm_up(conn, http, f"http://127.0.0.1:{port}", settings)
            for size in sizes:
                result = await measure(
                    conn,
                    http,
                    f"http://127.0.0.1:{port}",
                    workers,
                    settings,
                    size,
                    args.webhook,
                    args.bound_connections,
                    args.probe,
                    args.action,
                    args.scope_team,
                )
                results.append(result)
                print(json.dumps(result), file=sys.stderr)
        await conn.close()
    finally:
        if runner is not None:
            await runner.cleanup()
        if workers is not None:
            workers.stop()
        await admin.execute(f'drop database if exists "{DB}" with (force)')
        await admin.close()
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(f"{NAMESPACE}*"):
            client.delete(key)
        client.close()

    by_size = {r["members"]: r for r in results}
    smallest = by_size[min(by_size)]
    summary = {
        "benchmark": "enforce",
        "workers": {"processes": 2, "threads_each": args.threads},
        "webhook": args.webhook,
        "action": args.action,
        "scope_team_fraction": args.scope_team,
        "results": results,
        "put_ms_median_largest_vs_smallest": round(
            by_size[max(by_size)]["put_ms_median"] / smallest["put_ms_median"], 2
        ),
        "peak_worker_rss_mb_by_size": {
            str(r["members"]): max(r["worker_peak_rss_mb"]) for r in results
        },
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
