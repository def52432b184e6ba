"""Two clocks on two hosts (network namespaces); the leader's host is cut off the network.

Leadership is a PostgreSQL advisory lock held by the leader's session, so the other clock can
lead only once the server has ended that session. A host cut off sends no FIN and no RST: the
server finds out through TCP keepalives (or an unacknowledged reply), which our sessions ask for
(`db.pool.SERVER_SETTINGS`): about half a minute instead of Linux's two hours. The clocks reach
a PostgreSQL of the test's own directly (`private_pg`), so that this is the server's doing and
not a forwarder's; Redis through the hosts' forwarders. Then the old leader comes back, finds
the lock taken and follows. `make test-faults`; needs root for `ip netns`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from commands.clock import LOCK_KEY
from db.migrate import migrate
from tests.conftest import NAMESPACE, REDIS_URL
from tests.hosts import netns, private_pg

BIN = Path(sys.executable).parent
LEADER = """
    select host(a.client_addr) from pg_locks l join pg_stat_activity a on a.pid = l.pid
    where l.locktype = 'advisory' and l.granted
      and ((l.classid::bigint << 32) | l.objid::bigint) = $1"""


@pytest.fixture
def two_hosts_and_a_server():
    with contextlib.ExitStack() as stack:
        try:
            made = stack.enter_context(netns.hosts(("a", "b"), [urlsplit(REDIS_URL).port or 6379]))
            port = stack.enter_context(private_pg.server([host.gateway for host in made.values()]))
        except netns.Unavailable as err:
            pytest.skip(f"hosts as network namespaces: {err}")
        try:
            yield made, port
        finally:
            for host in made.values():  # before their servers go
                host.stop_all()


async def wait_for(conn: asyncpg.Connection, query: str, wanted, what: str, limit: float):
    """Polls `query` (with LOCK_KEY) until it returns `wanted`; the seconds it took."""
    started = time.monotonic()
    while (got := await conn.fetchval(query, LOCK_KEY)) != wanted:
        if time.monotonic() - started > limit:
            raise AssertionError(f"gave up after {limit:.0f} s waiting for {what} (got {got})")
        await asyncio.sleep(0.5)
    return time.monotonic() - started


@pytest.mark.faults
@pytest.mark.timeout(600)
async def test_clock_leader_host_cut_off(two_hosts_and_a_server, redis_url, tmp_path) -> None:
    made, port = two_hosts_and_a_server
    host_a, host_b = made["a"], made["b"]
    admin = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres")
    await admin.execute("create database require2fa")
    await admin.close()
    conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{port}/require2fa")
    try:
        await migrate(conn)

        def clock_env(gateway: str) -> dict[str, str]:
            return {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "ENVIRONMENT": "development",
                "DATABASE_URL": f"postgresql://postgres@{gateway}:{port}/require2fa",
                "REDIS_URL": f"redis://{gateway}:{urlsplit(REDIS_URL).port or 6379}/0",
                "REDIS_NAMESPACE": NAMESPACE,
                "LOG_FORMAT": "text",
            }

        clock = [str(BIN / "require2fa"), "clock"]
        host_a.run(clock, clock_env(host_a.gateway), str(tmp_path / "a.log"))
        await wait_for(conn, LEADER, host_a.address, "the clock on A to lead", 120)
        host_b.run(clock, clock_env(host_b.gateway), str(tmp_path / "b.log"))
        started = time.monotonic()
        while not await conn.fetchval(
            "select count(*) from pg_stat_activity where host(client_addr) = $1",
            host_b.address,
        ):
            assert time.monotonic() - started < 120, "the clock on B never connected"
            await asyncio.sleep(0.5)
        assert await conn.fetchval(LEADER, LOCK_KEY) == host_a.address

        host_a.cut()
        takeover = await wait_for(conn, LEADER, host_b.address, "B to lead", 240)
        # A's session is gone from the server (that is what freed the lock).
        assert not await conn.fetchval(
            "select count(*) from pg_stat_activity where host(client_addr) = $1",
            host_a.address,
        )

        host_a.restore()
        started = time.monotonic()
        while not await conn.fetchval(
            "select count(*) from pg_stat_activity where host(client_addr) = $1",
            host_a.address,
        ):
            assert time.monotonic() - started < 240, "the clock on A never came back"
            await asyncio.sleep(0.5)
        returned = time.monotonic() - started
        await asyncio.sleep(5)
        assert await conn.fetchval(LEADER, LOCK_KEY) == host_b.address
        assert all(p.poll() is None for p in host_a.processes + host_b.processes)
    finally:
        await conn.close()
    print(
        "clock:",
        json.dumps(
            {
                "seconds_cut_to_b_leading": round(takeover, 1),
                "seconds_back_to_a_reconnected_as_follower": round(returned, 1),
            }
        ),
    )
