"""An organization's enforcement runs as pages (owners, managers): the history, and one run with
progress bars for its removals (members checked, removed) and its emails (queued, sent), kept
live by `static/run.js` polling the run's API (`GET …/2fa-enforcements/{id}/`) until every email
is sent and the run has ended. Owners cancel a running run by turning the requirement off (the
settings page's form, with its confirmation). Reads only, through `require2fa.rollout`."""

from __future__ import annotations

from aiohttp import web

from api.access import MANAGERS
from api.connection import request_pool
from api.errors import path_id
from api.pages.base import html_errors, org_page, render
from api.pagination import page_args, split_page
from require2fa import organizations, rollout

PER_PAGE = 25
ENDED = ("completed", "cancelled", "failed")


def progress(found: rollout.Run) -> dict[str, object]:
    """What a run's page shows and `run.js` keeps up to date: members checked of the total,
    removed, emails sent of queued, and whether there is anything left to wait for."""
    run = found.run
    queued, sent = found.emails
    checked = run["removed"] + run["skipped"]
    return {
        "total": run["total"],
        "counted": run["batches_total"] is not None,
        "checked": checked,
        "removed": run["removed"],
        "queued": queued,
        "sent": sent,
        "live": run["status"] not in ENDED or sent < queued,
    }


@html_errors
async def runs_page(request: web.Request) -> web.StreamResponse:
    """The organization's runs, newest first, with what each removed and emailed."""
    access = await org_page(request, roles=MANAGERS)
    cursor, per_page = page_args(request, default=PER_PAGE)
    pool = await request_pool(request)
    found = await rollout.runs_page(pool, access.org["id"], before_id=cursor, limit=per_page + 1)
    found, next_cursor = split_page(found, per_page)
    return await render(
        request,
        "runs.html",
        org=access.org,
        role=access.role,
        orgs=await organizations.of_user(pool, access.auth.user_id),
        section="runs",
        runs=[(item.run, progress(item)) for item in found],
        cursor=cursor,
        next_cursor=next_cursor,
    )


@html_errors
async def run_page(request: web.Request) -> web.StreamResponse:
    """One run: status, progress bars for removals and emails, and (owners, while it is under
    way) Cancel, which turns the requirement off through the settings page."""
    access = await org_page(request, roles=MANAGERS)
    run_id = path_id(request, "run_id", not_found=rollout.RUN_NOT_FOUND)
    pool = await request_pool(request)
    found = await rollout.run(pool, access.org["id"], run_id)
    return await render(
        request,
        "run.html",
        org=access.org,
        role=access.role,
        orgs=await organizations.of_user(pool, access.auth.user_id),
        section="runs",
        run=found.run,
        progress=progress(found),
        can_cancel=access.role == "owner"
        and found.run["status"] in ("scheduled", "queued", "running")
        and access.org["require_2fa"],
    )
