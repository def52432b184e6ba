"""An organization's audit log as a page (owners, managers): each entry in words
(`require2fa.audit_log.describe`), filtered by event, actor, target and a date range, paged
newest first, and the same selection as CSV (`audit_log.export`, the same sentences)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aiohttp import web

from api.access import MANAGERS
from api.connection import request_pool
from api.errors import api_error
from api.jsonio import plain
from api.pages.base import html_errors, org_page, render
from api.pagination import per_page_arg, split_page
from api.serializers import serialize_entry
from require2fa import audit_log, organizations

PER_PAGE = 50
FILTER_KEYS = ("event", "actor", "target", "from", "to")


def _day(text: str, field: str) -> datetime | None:
    """The start (UTC) of a `YYYY-MM-DD` day from the form; None when empty; a 400 otherwise."""
    if not text:
        return None
    try:
        return datetime.strptime(text[:10], "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise api_error(400, f"The {field} date must be a day (YYYY-MM-DD).") from None


def _filter(request: web.Request) -> tuple[audit_log.AuditFilter, dict[str, str]]:
    """The selection `?event=&actor=&target=&from=&to=` asks for (`to` counts its whole day),
    and the form's values as they were typed."""
    shown = {key: request.query.get(key, "")[:200].strip() for key in FILTER_KEYS}
    until = _day(shown["to"], "end")
    where = audit_log.AuditFilter(
        event=shown["event"] or None,
        actor=shown["actor"] or None,
        target=shown["target"] or None,
        since=_day(shown["from"], "start"),
        until=until + timedelta(days=1) if until else None,
    )
    return where, shown


@html_errors
async def audit_log_page(request: web.Request) -> web.StreamResponse:
    """The audit log in words, newest first, filtered; cursor paging (owners, managers)."""
    access = await org_page(request, roles=MANAGERS)
    where, shown = _filter(request)
    cursor = request.query.get("cursor", "")
    per_page = per_page_arg(request, default=PER_PAGE)
    pool = await request_pool(request)
    rows = await audit_log.page(
        pool,
        access.org["id"],
        cursor=audit_log.parse_cursor(cursor),
        limit=per_page + 1,
        where=where,
    )
    rows, next_cursor = split_page(
        rows, per_page, lambda row: audit_log.cursor_text(audit_log.cursor_of(row))
    )
    filters = {key: value for key, value in shown.items() if value}
    return await render(
        request,
        "audit_log.html",
        org=access.org,
        role=access.role,
        orgs=await organizations.of_user(pool, access.auth.user_id),
        section="audit",
        entries=[(plain(serialize_entry(row)), audit_log.describe(row)) for row in rows],
        options=audit_log.EVENTS,
        event=where.event,
        shown=shown,
        filters=filters,
        cursor=cursor,
        next_cursor=next_cursor,
    )


@html_errors
async def audit_log_csv(request: web.Request) -> web.StreamResponse:
    """The entries the page's filters select, every one of them, as CSV (owners, managers)."""
    access = await org_page(request, roles=MANAGERS)
    where, _shown = _filter(request)
    if where.event is not None and where.event not in audit_log.EVENTS:
        raise api_error(400, f"Unknown event: {where.event[:100]}")
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="{access.org["slug"]}-audit-log.csv"',
            "Cache-Control": "no-store",
        }
    )
    response.enable_chunked_encoding()
    await response.prepare(request)
    await audit_log.export(await request_pool(request), access.org["id"], where, response.write)
    await response.write_eof()
    return response
