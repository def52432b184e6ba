"""Enforcement metrics, read from the database at scrape time."""

from __future__ import annotations

from typing import Any

import asyncpg

from db.runs import STATUSES

BATCH_SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


async def metrics(conn: asyncpg.Connection) -> dict[str, Any]:
    """Runs by status, members removed in total, and the batch-duration histogram."""
    by_status = await conn.fetch("select status, count(*) as n from enforcement_runs group by 1")
    removed = await conn.fetchval("select coalesce(sum(removed), 0) from enforcement_runs")
    buckets = ", ".join(
        f"count(*) filter (where seconds <= {bound})" for bound in BATCH_SECONDS_BUCKETS
    )
    row = await conn.fetchrow(
        f"""select {buckets}, count(*), coalesce(sum(seconds), 0)
            from enforcement_batches where seconds is not null"""
    )
    assert row is not None
    values = list(row.values())
    return {
        "runs": {status: 0 for status in STATUSES} | {r["status"]: r["n"] for r in by_status},
        "removed": int(removed),
        "batch_buckets": list(zip(BATCH_SECONDS_BUCKETS, values[:-2], strict=True)),
        "batch_count": values[-2],
        "batch_sum": float(values[-1]),
    }
