"""Benchmark: the compliance report over HTTP against PostgreSQL's own COPY of the same select.

    .venv/bin/python bench/report.py [--sizes 100000,1000000]

Seeds one organization per size with `commands.seed` (half of the members with a factor), starts
a `require2fa web` process, then for each size, smallest first:
- the bound: `COPY (db.report.REPORT_SQL) TO STDOUT (FORMAT csv, HEADER)` read by asyncpg into
  a sink that only counts, in this process;
- the report: `GET …/2fa-compliance/?format=csv` from the web process, read by an aiohttp client
  that only counts; the web process's resident memory is sampled every 20 ms meanwhile.
Pass: the report's rows per second are at least half the bound's, and the web process's peak
resident memory while streaming the largest organization is within 50 MB of its peak while
streaming the smallest (memory does not grow with the organization).
Prints one JSON object. Uses the PostgreSQL at DATABASE_URL (default 127.0.0.1:5432); the database
it creates is dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import aiohttp
import asyncpg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from commands.devstack import free_port, with_database  # noqa: E402
from commands.seed import seed  # noqa: E402
from db import report  # noqa: E402
from db.migrate import migrate  # noqa: E402
from db.pool import connect  # noqa: E402
from require2fa import logs  # noqa: E402
from require2fa.security import new_token, token_hash  # noqa: E402
from require2fa.settings import Settings  # noqa: E402

ADMIN_DSN = os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
DB = "require2fa_bench_report"
DSN = with_database(ADMIN_DSN, DB)
FLAT_MB = 50  # "flat": the peak at the largest size within this of the peak at the smallest
MIN_RATIO = 0.5


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    """A process's resident set (or `VmHWM`, its peak so far) in kB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for process {pid}")


async def prepare(sizes: list[int]) -> dict[int, tuple[str, int, str]]:
    """One organization per size; returns {size: (slug, organization id, owner's API token)}."""
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'drop database if exists "{DB}" with (force)')
    await admin.execute(f'create database "{DB}"')
    await admin.close()
    conn = await connect(DSN)
    await migrate(conn)
    settings = Settings(environment="development")
    orgs = {}
    for size in sizes:
        slug = f"report-{size}"
        seeded = await seed(conn, settings, slug=slug, count=size, enrolled=0.5)
        token = new_token()
        await conn.execute(
            "insert into api_tokens (user_id, token_hash, name) values ($1, $2, 'bench')",
            seeded.owner_id,
            token_hash(token),
        )
        orgs[size] = (slug, seeded.organization_id, token)
    await conn.execute("vacuum analyze")
    await conn.close()
    return orgs


async def bound(organization_id: int) -> tuple[int, float]:
    """COPY of the report's select, counted; (data rows, seconds)."""
    conn = await connect(DSN)
    lines = 0

    async def count(chunk: bytes) -> None:
        nonlocal lines
        lines += chunk.count(b"\n")

    try:
        started = time.perf_counter()
        await report.copy_report(conn, organization_id, count)
        return lines - 1, time.perf_counter() - started
    finally:
        await conn.close()


async def over_http(
    session: aiohttp.ClientSession, url: str, token: str, pid: int
) -> tuple[int, float, int]:
    """The report over HTTP, counted; (data rows, seconds, peak RSS of the web process in kB)."""
    peak = rss_kb(pid)
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_kb(pid))
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample())
    lines = 0
    started = time.perf_counter()
    async with session.get(
        url, params={"format": "csv"}, headers={"Authorization": f"Bearer {token}"}
    ) as response:
        if response.status != 200:
            raise RuntimeError(f"the report answered {response.status}")
        async for chunk in response.content.iter_any():
            lines += chunk.count(b"\n")
    seconds = time.perf_counter() - started
    done.set()
    await sampler
    return lines - 1, seconds, max(peak, rss_kb(pid))


async def start_web(port: int) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "ENVIRONMENT": "development",
        "DATABASE_URL": DSN,
        "REDIS_URL": REDIS_URL,
        "REDIS_NAMESPACE": "require2fa-bench-report",
        "PORT": str(port),
        "LOG_FORMAT": "json",
    }
    return await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("require2fa")),
        "web",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def wait_up(session: aiohttp.ClientSession, base: str) -> None:
    for _ in range(300):
        try:
            async with session.get(f"{base}/healthz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("the web process did not come up")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()
    logs.configure("text")  # logs on stderr; stdout carries only the JSON
    sizes = sorted(int(size) for size in args.sizes.split(","))

    started = time.perf_counter()
    orgs = await prepare(sizes)
    setup_seconds = time.perf_counter() - started
    port = free_port()
    web = await start_web(port)
    base = f"http://127.0.0.1:{port}"
    results = []
    try:
        async with aiohttp.ClientSession() as session:
            await wait_up(session, base)
            smallest = orgs[sizes[0]]
            warm_url = f"{base}/api/0/organizations/{smallest[0]}/2fa-compliance/"
            await over_http(session, warm_url, smallest[2], web.pid)  # warm the pool, imports
            idle_kb = rss_kb(web.pid)
            for size in sizes:
                slug, org_id, token = orgs[size]
                copy_rows, copy_seconds = await bound(org_id)
                url = f"{base}/api/0/organizations/{slug}/2fa-compliance/"
                rows, seconds, peak_kb = await over_http(session, url, token, web.pid)
                assert rows == copy_rows, (rows, copy_rows)
                ratio = (rows / seconds) / (copy_rows / copy_seconds)
                results.append(
                    {
                        "members": rows,
                        "copy_seconds": round(copy_seconds, 2),
                        "copy_rows_per_second": round(copy_rows / copy_seconds),
                        "http_seconds": round(seconds, 2),
                        "http_rows_per_second": round(rows / seconds),
                        "http_over_copy": round(ratio, 2),
                        "web_peak_rss_mb": round(peak_kb / 1024, 1),
                    }
                )
    finally:
        web.terminate()
        await web.wait()
        if not args.keep:
            admin = await asyncpg.connect(ADMIN_DSN)
            await admin.execute(f'drop database if exists "{DB}" with (force)')
            await admin.close()

    growth_mb = results[-1]["web_peak_rss_mb"] - results[0]["web_peak_rss_mb"]
    fast_enough = all(item["http_over_copy"] >= MIN_RATIO for item in results)
    flat = growth_mb <= FLAT_MB
    print(
        json.dumps(
            {
                "benchmark": "report",
                "sizes": results,
                "web_idle_rss_mb": round(idle_kb / 1024, 1),
                "web_peak_rss_growth_mb": round(growth_mb, 1),
                "bound": {"http_over_copy_at_least": MIN_RATIO, "rss_growth_mb_at_most": FLAT_MB},
                "pass": fast_enough and flat,
                "setup_seconds": round(setup_seconds, 1),
            },
            indent=2,
        )
    )
    if not (fast_enough and flat):
        sys.exit(1)


if __name__ == "__main__":
    asyncio.run(main())
