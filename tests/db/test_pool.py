"""The web process's pool gives connections back without asyncpg's reset query
(`db.pool.create_pool(clean_sessions=True)`): that holds only while nothing the web process
runs leaves session state behind. These tests look at every connection after real requests,
and at the product's statements."""

from __future__ import annotations

import re
from pathlib import Path

import asyncpg

from api.keys import PG
from db.pool import create_pool
from tests.factories import add_member, create_user, owner_org_and_token, sign_in

ROOT = Path(__file__).resolve().parents[2]

# What a session keeps after its statement or transaction ends (asyncpg's reset query undoes
# these; `SET LOCAL`, `pg_advisory_xact_lock` and the like end with their transaction).
SESSION_STATE = """
    select (select count(*) from pg_locks
             where pid = pg_backend_pid() and locktype = 'advisory') as advisory_locks,
           (select count(*) from pg_listening_channels()) as channels,
           (select count(*) from pg_cursors where name <> '') as cursors,  -- '': this query
           -- (asyncpg's type introspection sets `jit` for the session and puts it back)
           (select coalesce(array_agg(name order by name), '{}') from pg_settings
             where source = 'session' and setting is distinct from reset_val) as settings
"""
CLEAN = {"advisory_locks": 0, "channels": 0, "cursors": 0, "settings": []}


async def _states(pool: asyncpg.Pool) -> list[dict[str, object]]:
    """The session state of each of the pool's open connections (all acquired at once)."""
    held = [await pool.acquire() for _ in range(pool.get_size())]
    try:
        states = []
        for conn in held:
            assert not conn.is_in_transaction()
            states.append(dict(await conn.fetchrow(SESSION_STATE)))
        return states
    finally:
        for conn in held:
            await pool.release(conn)


async def test_connections_come_back_clean_after_requests(client, pool, settings) -> None:
    owner, org, headers = await owner_org_and_token(pool, "acme", "owner@example.com", has2fa=True)
    member = await create_user(pool, "member@example.com")
    await add_member(pool, org["id"], member)
    base = "/api/0/organizations/acme/"
    answers = [
        await client.get(base, headers=headers),
        await client.get(base + "members/?per_page=100", headers=headers),
        await client.get(base + "2fa-compliance/", headers=headers),
        await client.post(base + "teams/", json={"name": "Ops"}, headers=headers),
        # A transaction that locks the organization and writes the run and its audit entry.
        await client.put(base, json={"require2FA": True}, headers=headers),
        await client.get(base + "2fa-enforcements/", headers=headers),
        await client.put(base, json={"require2FA": False}, headers=headers),
        await client.get("/api/0/organizations/nobody/", headers=headers),
        await client.get(base, headers={"Authorization": "Bearer wrong"}),
        # A cookie session: written, read, ended.
        await sign_in(client, "member@example.com"),
        await client.get(base + "members/"),
        await client.post("/api/0/auth/logout/"),
    ]
    statuses = [200, 200, 200, 201, 200, 200, 200, 404, 401, 200, 200, 204]
    assert [a.status for a in answers] == statuses
    app_pool = client.app[PG]
    assert app_pool.get_size() >= 1
    assert await _states(app_pool) == [CLEAN] * app_pool.get_size()


async def test_what_the_reset_still_does_and_what_it_leaves(settings) -> None:
    """asyncpg rolls back a transaction left open before calling our reset; session state is
    the caller's to avoid (what the test above and the next one check)."""
    pool = await create_pool(settings.database_url, max_size=1, clean_sessions=True)
    try:
        conn = await pool.acquire()
        pid = conn.get_server_pid()
        await conn.execute("begin")
        await conn.execute("create temporary table left_open (x int) on commit drop")
        await pool.release(conn)
        async with pool.acquire() as again:
            assert again.get_server_pid() == pid  # the same connection, not a new one
            assert not again.is_in_transaction()
            assert await again.fetchval("select to_regclass('pg_temp.left_open')") is None
            await again.execute("set application_name = 'leaked'")
        async with pool.acquire() as third:
            assert await third.fetchval("show application_name") == "leaked"
    finally:
        await pool.close()


# Statements that leave session state behind (see SESSION_STATE). The web process must never
# run one on its pool; the modules that do run only on the workers', the clock's or the
# migration runner's own connections.
_SESSION_STATEMENTS = re.compile(
    r"pg_(try_)?advisory_lock(_shared)?\s*\(|[\"']\s*listen\s|add_listener\(|declare\s.*\swith\s+hold"
    r"|[\"']\s*set\s+(?!local\b|transaction\b)[a-z_]+\s*(=|to\b)",
    re.IGNORECASE,
)
_OWN_CONNECTIONS = {
    "db/planning.py",  # the coordinator's plan lock (workers)
    "db/migrate.py",  # the migrations' lock (`require2fa migrate`)
    "commands/clock.py",  # the clock's leadership
    "jobs/wakeup.py",  # the dispatchers' LISTEN
}


def test_only_the_workers_and_commands_take_session_state() -> None:
    found = {
        str(path.relative_to(ROOT))
        for package in ("api", "db", "require2fa", "jobs", "commands")
        for path in (ROOT / package).rglob("*.py")
        if _SESSION_STATEMENTS.search(path.read_text())
    }
    assert found == _OWN_CONNECTIONS
