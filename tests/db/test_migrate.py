"""The migration runner: from empty, re-run, and two runners at once."""

from __future__ import annotations

import asyncio
import uuid
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from db.migrate import discover, migrate
from tests.conftest import ADMIN_DSN


@pytest.fixture
async def empty_database(database: str):
    name = f"require2fa_migrate_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'create database "{name}"')
    yield urlunsplit(urlsplit(ADMIN_DSN)._replace(path=f"/{name}"))
    await admin.execute(f'drop database "{name}" with (force)')
    await admin.close()


async def test_from_empty_then_again(empty_database: str) -> None:
    conn = await asyncpg.connect(empty_database)
    try:
        first = await migrate(conn)
        second = await migrate(conn)
        tables = await conn.fetchval(
            "select count(*) from pg_tables where schemaname = 'public' and tablename = 'members'"
        )
    finally:
        await conn.close()
    assert first == [m.version for m in discover()]
    assert second == []
    assert tables == 1


async def test_two_runners_at_once(empty_database: str) -> None:
    conns = [await asyncpg.connect(empty_database) for _ in range(2)]
    try:
        results = await asyncio.gather(*(migrate(conn) for conn in conns))
        applied = await conns[0].fetchval("select count(*) from schema_migrations")
    finally:
        for conn in conns:
            await conn.close()
    assert sorted(len(r) for r in results) == [0, len(discover())]
    assert applied == len(discover())


async def test_audit_log_is_append_only(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            "insert into audit_log (organization_id, event) values (1, 'member.edit')"
        )
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await conn.execute("update audit_log set event = 'x'")
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await conn.execute("delete from audit_log")


async def test_the_audit_log_becomes_partitioned_with_every_row(
    empty_database: str, tmp_path
) -> None:
    """Migration 0190 on a log with entries: the same ids, times and data, in month
    partitions, the id sequence continuing, both triggers still there."""
    for migration in discover():
        if migration.version < "0190":
            (tmp_path / migration.path.name).write_bytes(migration.path.read_bytes())
    conn = await asyncpg.connect(empty_database)
    try:
        await migrate(conn, tmp_path)
        await conn.execute(
            """insert into audit_log (organization_id, event, data, created_at)
               select 1, 'member.edit', jsonb_build_object('n', g),
                      now() - make_interval(days => g * 20)
                 from generate_series(0, 9) g"""
        )
        before = await conn.fetch("select * from audit_log order by id")
        await migrate(conn)
        after = await conn.fetch("select * from audit_log order by id")
        kind = await conn.fetchval("select relkind::text from pg_class where relname = 'audit_log'")
        months = await conn.fetchval("select count(distinct tableoid) from audit_log")
        next_id = await conn.fetchval(
            "insert into audit_log (organization_id, event) values (1, 'member.edit') returning id"
        )
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await conn.execute("delete from audit_log")
    finally:
        await conn.close()
    assert [dict(row) for row in after] == [dict(row) for row in before]
    assert kind == "p" and months >= 6
    assert next_id == before[-1]["id"] + 1
