"""Benchmark: the API under load against bare aiohttp + asyncpg servers: the same SQL, and the
page's own query alone.

    .venv/bin/python bench/api.py [--members 100000] [--seconds 10] [--connections 50,200]
                                  [--rounds 3]

Seeds an organization with `commands.seed` (30% of the members without a second factor) and an
enforcement run, then runs `wrk -t2 --latency` with the owner's bearer token, for each endpoint
and number of connections, against:
- `require2fa web` (the real application: middlewares, authentication, organization access,
  serializers);
- the bound: a bare aiohttp server started from this script (`--bare`) with an asyncpg pool of the
  same size and codecs (`db.pool.create_pool`), that runs the same statements (`db.access`'s
  caller, organization and membership, then the handler's) on one connection per request and
  answers `orjson.dumps` of the rows, with no checks, serializers or middlewares;
- the floor: the same bare server (`--bare PORT --floor`) running only the page's own query
  (the organization by slug for the organization GET; the handler's statements for the others,
  with the organization's and the caller's ids read once at start): no authentication, no
  access check.
Endpoints: the members page (`?per_page=100`), the organization GET, the 2fa-compliance count and
first page, and a run's status. Each pair (endpoint, connections) is measured in `--rounds`
rounds that rotate which server goes first (floor, bound, app; then bound, app, floor; ...), so
that a change of the machine's load during the pair weighs on every side. Prints one JSON
object: for each side (`app`, `bound`, `floor`) the req/s over all its rounds, the median of
its rounds' p99, its errors and the median CPU time its server process used per request (user
and system, from /proc/PID/stat: less noisy than req/s on a shared machine); `ratio`, the
application's req/s over the bound's, and `floor_ratio`, over the floor's (goal: at least
0.85), with each round's. Needs `wrk` (apt-get install -y wrk). Uses the PostgreSQL at
DATABASE_URL (default 127.0.0.1:5432) and the Redis at REDIS_URL; the database it creates is
dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from commands.devstack import free_port, with_database  # noqa: E402
from commands.seed import seed  # noqa: E402
from db import access, counts, members, organizations, runs, users  # noqa: E402
from db.audit import Actor  # noqa: E402
from db.migrate import migrate  # noqa: E402
from db.pool import connect, create_pool  # noqa: E402
from require2fa import logs  # noqa: E402
from require2fa.security import new_token, token_hash  # noqa: E402
from require2fa.settings import Settings  # noqa: E402

ADMIN_DSN = os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
DB = f"require2fa_bench_api_{uuid.uuid4().hex[:8]}"
DSN = with_database(ADMIN_DSN, DB)
SLUG = "loaded"
POOL_SIZE = 20  # the web process's pool (api/app.py)


# The bound: the same statements, one connection per request, nothing else. The floor: only
# the page's own query.


def _json(value: Any) -> web.Response:
    return web.Response(body=orjson.dumps(value, default=str), content_type="application/json")


def bare_app(database_url: str, *, floor: bool = False) -> web.Application:
    app = web.Application()
    pool_key = web.AppKey("pool", asyncpg.Pool)
    # The floor's ids of the organization and the caller, read once at start.
    known: dict[str, int] = {}

    async def pool_ctx(app: web.Application) -> Any:
        # Idle connections close within seconds: PostgreSQL's max_connections is shared by the
        # three servers (and whatever else runs), and only one server is measured at a time.
        app[pool_key] = await create_pool(
            database_url, max_size=POOL_SIZE, clean_sessions=True, idle_seconds=2.0
        )
        async with app[pool_key].acquire() as conn:
            org = await organizations.by_slug(conn, SLUG)
            assert org is not None
            known["org"] = org["id"]
            known["user"] = await conn.fetchval(
                "select user_id from members where organization_id = $1 and role = 'owner'"
                " order by id limit 1",
                org["id"],
            )
        yield
        await app[pool_key].close()

    async def caller(conn: asyncpg.Connection, request: web.Request) -> tuple[int, int]:
        """The organization's and the caller's ids: read with the caller's membership as the
        application reads them (the bound), or known (the floor)."""
        if floor:
            return known["org"], known["user"]
        token = request.headers["Authorization"].partition(" ")[2]
        found = await access.by_token(conn, token_hash(token), request.match_info["org"])
        assert found is not None and found.org is not None and found.member is not None
        return found.org["id"], found.user["id"]

    async def members_page(request: web.Request) -> web.Response:
        async with request.app[pool_key].acquire() as conn:
            org_id, _user_id = await caller(conn, request)
            rows = await members.page(
                conn, org_id, where=members.MemberFilter(), after_id=None, limit=101
            )
        return _json([dict(row) for row in rows[:100]])

    async def organization(request: web.Request) -> web.Response:
        async with request.app[pool_key].acquire() as conn:
            if floor:
                org = dict(await organizations.by_slug(conn, request.match_info["org"]) or {})
            else:
                token = request.headers["Authorization"].partition(" ")[2]
                found = await access.by_token(conn, token_hash(token), request.match_info["org"])
                assert found is not None and found.org is not None
                org = found.org
        return _json(org)

    async def compliance(request: web.Request) -> web.Response:
        async with request.app[pool_key].acquire() as conn:
            org_id, user_id = await caller(conn, request)
            count = await counts.count_noncompliant(conn, org_id, except_user_id=user_id)
            rows = await members.page(
                conn, org_id, where=members.NONCOMPLIANT, after_id=None, limit=101
            )
        return _json({"count": count, "members": [dict(row) for row in rows[:100]]})

    async def run_status(request: web.Request) -> web.Response:
        async with request.app[pool_key].acquire() as conn:
            org_id, _user_id = await caller(conn, request)
            run = await runs.get_run(conn, int(request.match_info["run"]), organization_id=org_id)
            assert run is not None
            emails = await runs.email_counts(conn, run["id"])
        return _json({**dict(run), "emails": emails})

    app.cleanup_ctx.append(pool_ctx)
    prefix = "/api/0/organizations/{org}/"
    app.router.add_get(prefix + "members/", members_page)
    app.router.add_get(prefix, organization)
    app.router.add_get(prefix + "2fa-compliance/", compliance)
    app.router.add_get(prefix + "2fa-enforcements/{run}/", run_status)
    app.router.add_get("/healthz", lambda _request: _json({"ok": True}))
    return app


# The measurement.


async def prepare(count: int) -> tuple[str, int]:
    """The database, seeded; returns (the owner's API token, the run's id)."""
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'drop database if exists "{DB}" with (force)')
    await admin.execute(f'create database "{DB}"')
    await admin.close()
    conn = await connect(DSN)
    try:
        await migrate(conn)
        seeded = await seed(
            conn, Settings(environment="development"), slug=SLUG, count=count, enrolled=0.7
        )
        token = new_token()
        await users.create_token(conn, user_id=seeded.owner_id, token_hash=token_hash(token))
        run = await runs.insert(
            conn, seeded.organization_id, Actor(user_id=seeded.owner_id, label="owner")
        )
        assert run is not None
        await conn.execute("vacuum analyze")
        return token, run["id"]
    finally:
        await conn.close()


async def wait_up(base: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"server at {base} exited with {process.returncode}")
            try:
                async with session.get(f"{base}/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"server at {base} did not start")


def start_web(port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "ENVIRONMENT": "development",
        "DATABASE_URL": DSN,
        "REDIS_URL": REDIS_URL,
        "REDIS_NAMESPACE": f"require2fa-bench-api-{port}",
        "PORT": str(port),
        "LOG_FORMAT": "json",
    }
    command = [str(Path(sys.executable).with_name("require2fa")), "web"]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_bare(port: int, *, floor: bool) -> subprocess.Popen[bytes]:
    command = [sys.executable, __file__, "--bare", str(port), "--database-url", DSN]
    if floor:
        command.append("--floor")
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def cpu_seconds(pid: int) -> float:
    """The user and system CPU time process `pid` has used so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(url: str, token: str, connections: int, seconds: int, pid: int) -> dict[str, Any]:
    """One `wrk` run against the server of process `pid`: req/s, p99, errors, and the server's
    CPU time per request (user and system, in µs)."""
    cpu_before = cpu_seconds(pid)
    output = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s"]
        + ["-H", f"Authorization: Bearer {token}", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    cpu = cpu_seconds(pid) - cpu_before
    requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s|m)\b", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    return {
        "rps": round(rps, 1),
        "p99_ms": round(float(p99.group(1)) * _UNITS[p99.group(2)], 1) if p99 else None,
        "errors": (int(non_2xx.group(1)) if non_2xx else 0)
        + (sum(int(n) for n in socket_errors.groups()) if socket_errors else 0),
        "cpu_us_per_request": round(cpu * 1e6 / requests, 1) if requests else None,
    }


async def drained(conn: asyncpg.Connection) -> None:
    """Waits (up to a minute) until the statements of the requests wrk left behind have ended,
    so that they do not count against the next measurement."""
    for _ in range(600):
        busy = await conn.fetchval(
            """select count(*) from pg_stat_activity
               where datname = current_database() and state = 'active'
                 and pid <> pg_backend_pid()"""
        )
        if busy == 0:
            return
        await asyncio.sleep(0.1)


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One side's rounds: req/s over them all (rounds are of equal length), the median p99."""
    p99s = sorted(run["p99_ms"] for run in runs if run["p99_ms"] is not None)
    cpus = [run["cpu_us_per_request"] for run in runs if run["cpu_us_per_request"] is not None]
    return {
        "rps": round(statistics.mean(run["rps"] for run in runs), 1),
        "p99_ms": p99s[len(p99s) // 2] if p99s else None,
        "errors": sum(run["errors"] for run in runs),
        "rounds_rps": [run["rps"] for run in runs],
        "cpu_us_per_request": statistics.median(cpus) if cpus else None,
    }


async def measure(count: int, seconds: int, connections: list[int], rounds: int) -> dict[str, Any]:
    token, run_id = await prepare(count)
    sides = ("floor", "bound", "app")
    ports = {name: free_port() for name in sides}
    servers = {
        "floor": start_bare(ports["floor"], floor=True),
        "bound": start_bare(ports["bound"], floor=False),
        "app": start_web(ports["app"]),
    }
    watch = await asyncpg.connect(DSN)  # held from the start: connections may run short later
    try:
        for name, process in servers.items():
            await wait_up(f"http://127.0.0.1:{ports[name]}", process)
        # The compliance count last: the slowest, it leaves the most work behind when wrk stops.
        paths = {
            "members_page": f"/api/0/organizations/{SLUG}/members/?per_page=100",
            "organization": f"/api/0/organizations/{SLUG}/",
            "run_status": f"/api/0/organizations/{SLUG}/2fa-enforcements/{run_id}/",
            "compliance": f"/api/0/organizations/{SLUG}/2fa-compliance/",
        }
        results: dict[str, Any] = {}
        for endpoint, path in paths.items():
            for conns in connections:
                runs_of: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
                for round_no in range(rounds):
                    shift = round_no % len(sides)
                    for name in sides[shift:] + sides[:shift]:
                        runs_of[name].append(
                            await asyncio.to_thread(
                                wrk,
                                f"http://127.0.0.1:{ports[name]}{path}",
                                token,
                                conns,
                                seconds,
                                servers[name].pid,
                            )
                        )
                        await drained(watch)
                figures: dict[str, Any] = {name: _summary(each) for name, each in runs_of.items()}
                for key, side in (("ratio", "bound"), ("floor_ratio", "floor")):
                    rate = figures[side]["rps"]
                    figures[key] = round(figures["app"]["rps"] / rate, 2) if rate else None
                    figures[f"round_{key}s"] = [
                        round(app["rps"] / other["rps"], 2) if other["rps"] else None
                        for other, app in zip(runs_of[side], runs_of["app"], strict=True)
                    ]
                results[f"{endpoint}@{conns}"] = figures
        return {
            "members": count + 1,
            "seconds_each": seconds,
            "rounds": rounds,
            "wrk": "-t2 --latency, bearer token",
            "pool_size": POOL_SIZE,
            "cpus": os.cpu_count(),
            "results": results,
        }
    finally:
        await watch.close()
        for process in servers.values():
            process.terminate()
            process.wait(timeout=30)
        admin = await asyncpg.connect(ADMIN_DSN)
        await admin.execute(f'drop database if exists "{DB}" with (force)')
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", default="50,200")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    parser.add_argument("--floor", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        web.run_app(
            bare_app(args.database_url, floor=args.floor),
            host="127.0.0.1",
            port=args.bare,
            print=None,
        )
        return
    logs.configure("text")  # logs on stderr; stdout carries only the JSON
    connections = [int(n) for n in args.connections.split(",")]
    print(
        json.dumps(
            asyncio.run(measure(args.members, args.seconds, connections, args.rounds)), indent=2
        )
    )


if __name__ == "__main__":
    main()
