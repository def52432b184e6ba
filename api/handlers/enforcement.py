"""Seeing enforcement: who would be removed, the runs' progress, reminders, and its metrics."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiohttp import web
from prometheus_client.core import (
    REGISTRY,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from api.access import MANAGERS, OrgAccess, org_access
from api.errors import api_error, path_id
from api.handlers import health
from api.keys import PG
from api.pagination import link_header, page_args, split_page
from api.serializers import serialize_member
from db import counts, members, report, runs
from db import metrics as enforcement_metrics
from db.members import MemberFilter


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def serialize_run(
    run: asyncpg.Record, *, brief: bool = False, emails: tuple[int, int] | None = None
) -> dict[str, Any]:
    """An enforcement run; `brief` is the `{id, status}` that the organization's PUT answers."""
    if brief:
        return {"id": str(run["id"]), "status": run["status"]}
    queued, sent = emails or (0, 0)
    return {
        "id": str(run["id"]),
        "status": run["status"],
        "total": run["total"],
        "removed": run["removed"],
        "skipped": run["skipped"],
        "batchesTotal": run["batches_total"],
        "batchesDone": run["batches_done"],
        "emailsQueued": queued,
        "emailsSent": sent,
        "actor": {"id": _id(run["actor_user_id"]), "name": run["actor_label"]},
        "dateCreated": _iso(run["created_at"]),
        "startedAt": _iso(run["started_at"]),
        "finishedAt": _iso(run["finished_at"]),
        "error": run["error"],  # why a `failed` run stopped
    }


def _id(value: int | None) -> str | None:
    return str(value) if value is not None else None


def _run_id(request: web.Request) -> int:
    return path_id(request, "enforcement_id", not_found="The requested enforcement does not exist.")


async def compliance(request: web.Request) -> web.StreamResponse:
    """Who would lose access if two-factor authentication were required now (owners, managers):
    `{count, members}`, the members cursor-paginated by id; `?format=csv` streams the report of
    every member instead (`compliance_csv`)."""
    access = await org_access(request, roles=MANAGERS)
    fmt = request.query.get("format", "json")
    if fmt == "csv":
        return await compliance_csv(request, access)
    if fmt != "json":
        raise api_error(400, "format must be json or csv.")
    cursor, per_page = page_args(request)
    org_id = access.org["id"]
    async with request.app[PG].acquire() as conn:
        count = await counts.count_noncompliant(conn, org_id, except_user_id=access.auth.user_id)
        rows = await members.page(
            conn,
            org_id,
            where=MemberFilter(meets_level=False, pending=False),
            after_id=cursor,
            limit=per_page + 1,
        )
    rows, next_cursor = split_page(rows, per_page)
    body = {
        "count": count,
        "members": [serialize_member(r) for r in rows if r["user_id"] != access.auth.user_id],
    }
    response = web.json_response(body)
    response.headers["Link"] = link_header(request, next_cursor=next_cursor)
    return response


async def compliance_csv(request: web.Request, access: OrgAccess) -> web.StreamResponse:
    """The compliance report of every member as CSV, streamed as PostgreSQL writes it: the web
    process holds one chunk at a time, whatever the organization's size."""
    slug = access.org["slug"]
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="{slug}-2fa-compliance.csv"',
            "Cache-Control": "no-store",
        }
    )
    response.enable_chunked_encoding()
    async with request.app[PG].acquire() as conn:
        await response.prepare(request)
        await report.copy_report(conn, access.org["id"], response.write)
    await response.write_eof()
    return response


async def list_enforcements(request: web.Request) -> web.Response:
    """The organization's enforcement runs, newest first (owners, managers)."""
    access = await org_access(request, roles=MANAGERS)
    cursor, per_page = page_args(request, default=25)
    async with request.app[PG].acquire() as conn:
        found = await runs.runs_page(conn, access.org["id"], before_id=cursor, limit=per_page + 1)
        found, next_cursor = split_page(found, per_page)
        body = [
            serialize_run(run, emails=await runs.email_counts(conn, run["id"])) for run in found
        ]
    response = web.json_response(body)
    response.headers["Link"] = link_header(request, next_cursor=next_cursor)
    return response


async def get_enforcement(request: web.Request) -> web.Response:
    """One run's live progress: counters, and the emails it queued and sent (owners, managers)."""
    access = await org_access(request, roles=MANAGERS)
    async with request.app[PG].acquire() as conn:
        run = await runs.get_run(conn, _run_id(request), organization_id=access.org["id"])
        if run is None:
            raise api_error(404, "The requested enforcement does not exist.")
        emails = await runs.email_counts(conn, run["id"])
    return web.json_response(serialize_run(run, emails=emails))


async def send_reminders(request: web.Request) -> web.Response:
    """Sends `enforcement.queue_reminders`, which queues a "will require two-factor
    authentication" email for every active member without 2FA, once per member per day (owners,
    managers). Answers 202 at once: at a million members the queueing takes seconds."""
    from jobs.enforcement import queue_reminders

    access = await org_access(request, roles=MANAGERS)
    day = datetime.now(UTC).date().isoformat()
    await asyncio.to_thread(queue_reminders.send, access.org["id"], day, access.auth.user_id)
    return web.json_response(
        {"detail": "Reminders are being sent to every member without two-factor authentication."},
        status=202,
    )


# --- Metrics -----------------------------------------------------------------------------------


class EnforcementCollector(Collector):
    """Enforcement metrics read from the database at scrape time: the workers that do the work
    cannot be scraped, and the database is where the truth is anyway."""

    def __init__(self) -> None:
        self.values: dict[str, Any] | None = None

    def collect(self) -> Any:
        values = self.values
        if values is None:
            return
        runs = GaugeMetricFamily(
            "require2fa_enforcement_runs", "Enforcement runs by status.", labels=["status"]
        )
        for status, count in values["runs"].items():
            runs.add_metric([status], count)
        yield runs
        yield CounterMetricFamily(
            "require2fa_enforcement_members_removed",
            "Members removed for having no second factor.",
            value=values["removed"],
        )
        cumulative = [(str(bound), count) for bound, count in values["batch_buckets"]]
        yield HistogramMetricFamily(
            "require2fa_enforcement_batch_seconds",
            "Wall time of one enforcement batch's transaction.",
            buckets=[*cumulative, ("+Inf", values["batch_count"])],
            sum_value=values["batch_sum"],
        )


COLLECTOR = EnforcementCollector()
REGISTRY.register(COLLECTOR)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus metrics (the enforcement ones read from the database now)."""
    async with request.app[PG].acquire() as conn:
        COLLECTOR.values = await enforcement_metrics.metrics(conn)
    return await health.metrics(request)
