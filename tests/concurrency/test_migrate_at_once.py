"""Two `require2fa migrate` processes started together on a fresh database (two hosts running
the release phase at once): both exit 0, every migration is applied once, and the schema is
the one a single runner makes."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from db.migrate import LOCK_KEY, discover
from tests.conftest import ADMIN_DSN

REQUIRE2FA = str(Path(sys.executable).with_name("require2fa"))
# The schema as the migrations make it. Partitions are left out (their columns, indexes and
# triggers are their parent's): which months of `audit_log` exist depends on the clock's
# maintenance (`require2fa prune` adds the months ahead), which tests of the session database run.
SCHEMA = """
    with partitions as (select oid, relname from pg_class where relispartition)
    select 'column', table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable
    from information_schema.columns
    where table_schema = 'public' and table_name not in (select relname from partitions)
    union all
    select 'index', indexdef from pg_indexes
    where schemaname = 'public' and tablename not in (select relname from partitions)
    union all
    select 'constraint', conrelid::regclass || ' ' || pg_get_constraintdef(oid)
    from pg_constraint
    where connamespace = 'public'::regnamespace and conrelid not in (select oid from partitions)
    union all
    select 'trigger', tgrelid::regclass || ' ' || tgname from pg_trigger
    where not tgisinternal and tgrelid not in (select oid from partitions)
    order by 1, 2"""


@pytest.fixture
async def fresh_database(database: str) -> AsyncIterator[str]:
    name = f"require2fa_migrate_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'create database "{name}"')
    try:
        yield urlunsplit(urlsplit(ADMIN_DSN)._replace(path=f"/{name}"))
    finally:
        await admin.execute(f'drop database "{name}" with (force)')
        await admin.close()


async def migrate_processes(dsn: str, count: int) -> list[tuple[int, str]]:
    """Starts `count` `require2fa migrate`, and lets them go together: the test holds the
    migration lock until every one of them waits for it. Their (exit code, standard output)."""
    env = {**os.environ, "DATABASE_URL": dsn}
    holder = await asyncpg.connect(dsn)
    await holder.execute("select pg_advisory_lock($1)", LOCK_KEY)
    processes = [
        await asyncio.create_subprocess_exec(
            REQUIRE2FA,
            "migrate",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(count)
    ]
    try:
        for _ in range(1200):  # 60 s at most
            waiting = await holder.fetchval(
                """select count(*) from pg_locks where locktype = 'advisory' and not granted
                     and database = (select oid from pg_database where datname = current_database())
                     and ((classid::bigint << 32) | objid::bigint) = $1""",
                LOCK_KEY,
            )
            if waiting == count:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the migrate processes never reached the lock")
    finally:
        await holder.close()  # the lock goes with the session
    outputs = await asyncio.gather(*(p.communicate() for p in processes))
    return [
        (
            p.returncode if p.returncode is not None else -1,
            (out + err).decode() if p.returncode else out.decode(),
        )
        for p, (out, err) in zip(processes, outputs, strict=True)
    ]


async def schema(dsn: str) -> list[tuple[str, str]]:
    conn = await asyncpg.connect(dsn)
    try:
        return [tuple(row) for row in await conn.fetch(SCHEMA)]
    finally:
        await conn.close()


async def test_two_migrate_processes_at_once(fresh_database: str, database: str) -> None:
    versions = [m.version for m in discover()]
    results = await migrate_processes(fresh_database, 2)
    assert [code for code, _ in results] == [0, 0], results
    # One applied everything; the other waited for its lock and found nothing left.
    assert sorted(out.strip() for _, out in results) == [
        "applied 0 migration(s): none pending",
        f"applied {len(versions)} migration(s): {', '.join(versions)}",
    ]

    conn = await asyncpg.connect(fresh_database)
    try:
        applied = await conn.fetch("select version from schema_migrations order by version")
    finally:
        await conn.close()
    assert [row["version"] for row in applied] == versions
    assert await schema(fresh_database) == await schema(database)

    # And again, both: nothing left to do for either.
    again = await migrate_processes(fresh_database, 2)
    assert [(code, out.strip()) for code, out in again] == [
        (0, "applied 0 migration(s): none pending")
    ] * 2
