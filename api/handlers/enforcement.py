"""Seeing enforcement: who would be removed, the runs' progress, reminders."""

from __future__ import annotations

import asyncio

import structlog
from aiohttp import web

from api import dispatch
from api.access import MANAGERS, OrgAccess, org_access
from api.connection import connection, request_pool
from api.errors import api_error, path_id
from api.jsonio import json_response
from api.pagination import link_header, page_args, split_page
from api.serializers import serialize_member, serialize_run
from api.shapes import Accepted, Compliance
from require2fa import rollout

log = structlog.get_logger(__name__)


def _run_id(request: web.Request) -> int:
    return path_id(request, "enforcement_id", not_found=rollout.RUN_NOT_FOUND)


async def compliance(request: web.Request) -> web.StreamResponse:
    """Who would lose access if two-factor authentication were required now (owners, managers):
    `{count, members}`, the members cursor-paginated by id; `?format=csv` streams the report of
    every member instead (`compliance_csv`)."""
    access = await org_access(request, roles=MANAGERS)
    fmt = request.query.get("format", "json")
    # Checked for either format: the CSV has every member, but a bad value is still a 400.
    cursor, per_page = page_args(request)
    if fmt == "csv":
        return await compliance_csv(request, access)
    if fmt != "json":
        raise api_error(400, "format must be json or csv.")
    org_id = access.org["id"]
    # Only the owner asking is left out (they must have 2FA to turn it on anyway); a manager
    # without 2FA who asks would be removed by the run, so is counted and listed.
    acting_owner = access.auth.user_id if access.role == "owner" else None
    async with connection(request) as conn:  # the one that authenticated the request
        found = await rollout.noncompliant(
            conn, org_id, except_user_id=acting_owner, after_id=cursor, limit=per_page + 1
        )
    rows, next_cursor = split_page(found.rows, per_page)
    body: Compliance = {
        "count": found.count,
        "members": [serialize_member(r) for r in rows if r["user_id"] != acting_owner],
    }
    response = json_response(body)
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

    async def start() -> None:
        await response.prepare(request)

    try:
        await rollout.stream_report(
            await request_pool(request), access.org["id"], response.write, start=start
        )
    except (asyncio.CancelledError, ConnectionResetError):
        # The reader went away mid-report; there is nobody left to answer.
        log.info("report.reader_gone", organization_id=access.org["id"])
        raise
    await response.write_eof()
    return response


async def list_enforcements(request: web.Request) -> web.Response:
    """The organization's enforcement runs, newest first (owners, managers)."""
    access = await org_access(request, roles=MANAGERS)
    cursor, per_page = page_args(request, default=25)
    async with connection(request) as conn:
        found = await rollout.runs_page(
            conn, access.org["id"], before_id=cursor, limit=per_page + 1
        )
    found, next_cursor = split_page(found, per_page)
    body = [serialize_run(each.run, emails=each.emails) for each in found]
    response = json_response(body)
    response.headers["Link"] = link_header(request, next_cursor=next_cursor)
    return response


async def get_enforcement(request: web.Request) -> web.Response:
    """One run's live progress: counters, and the emails it queued and sent (owners, managers)."""
    access = await org_access(request, roles=MANAGERS)
    run_id = _run_id(request)
    async with connection(request) as conn:
        found = await rollout.run(conn, access.org["id"], run_id)
    return json_response(serialize_run(found.run, emails=found.emails))


async def send_reminders(request: web.Request) -> web.Response:
    """Sends `enforcement.queue_reminders`, which queues a "will require two-factor
    authentication" email for every active member without 2FA, once per member per day (owners,
    managers). Answers 202 at once: at a million members the queueing takes seconds."""
    access = await org_access(request, roles=MANAGERS)
    await dispatch.send_reminders(access.org["id"], access.auth.user_id)
    body: Accepted = {
        "detail": "Reminders are being sent to every member without two-factor authentication."
    }
    return json_response(body, status=202)
