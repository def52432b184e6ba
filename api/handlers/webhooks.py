"""An organization's webhooks and their deliveries (CONTRACT §9), for owners."""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from api.access import OrgAccess, org_access
from api.auth import actor, require_sudo
from api.connection import connection
from api.errors import api_error, parse_body, path_id
from api.jsonio import json_response
from api.keys import SETTINGS
from api.pagination import link_header, page_args, split_page
from db import webhooks as queries
from require2fa import webhooks

OWNERS = ("owner",)
NOT_FOUND = "The requested webhook does not exist."


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=webhooks.MAX_URL)
    events: list[str] = Field(
        default_factory=lambda: [webhooks.ALL_EVENTS], min_length=1, max_length=webhooks.MAX_EVENTS
    )


def serialize_webhook(row: asyncpg.Record, **extra: Any) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "url": row["url"],
        "events": list(row["events"]),
        "dateCreated": row["created_at"].isoformat(),
        **extra,
    }


def serialize_delivery(row: asyncpg.Record) -> dict[str, Any]:
    last = None
    if row["last_status"] is not None:
        last = {"status": row["last_status"], "body": row["last_body"] or ""}
    return {
        "id": str(row["id"]),
        "event": row["event"],
        "auditLogId": str(row["audit_log_id"]),
        "status": row["status"],
        "attempts": row["attempts"],
        "lastResponse": last,
        "lastError": row["last_error"],
        "dateCreated": row["created_at"].isoformat(),
        "nextAttemptAt": (
            row["next_attempt_at"].isoformat() if row["status"] in ("queued", "sending") else None
        ),
        "deliveredAt": row["delivered_at"].isoformat() if row["delivered_at"] else None,
    }


def invalid(err: webhooks.Invalid) -> web.HTTPException:
    return api_error(400, str(err), errors={err.field: [str(err)]})


async def create(
    request: web.Request, access: OrgAccess, *, url: str, events: list[str]
) -> webhooks.Created:
    """`webhooks.create` for the API and the settings page: the URL checked (and, outside
    development, resolved) before its transaction; `webhook.create` audited. Needs a recent
    re-authentication in a cookie session (`require_sudo`)."""
    await require_sudo(request)
    settings = request.app[SETTINGS]
    try:
        checked = webhooks.check_url(url, settings)
        await webhooks.check_destination(checked, settings)
        async with connection(request) as conn, conn.transaction():
            return await webhooks.create(
                conn,
                organization_id=access.org["id"],
                url=checked,
                events=events,
                actor=actor(request, access.auth),
                settings=settings,
            )
    except webhooks.Invalid as err:
        raise invalid(err) from None


async def delete(request: web.Request, access: OrgAccess, webhook_id: int) -> None:
    """`webhooks.delete` (the webhook, its deliveries, `webhook.delete`), or 404."""
    async with connection(request) as conn, conn.transaction():
        deleted = await webhooks.delete(
            conn,
            organization_id=access.org["id"],
            webhook_id=webhook_id,
            actor=actor(request, access.auth),
        )
    if not deleted:
        raise api_error(404, NOT_FOUND)


async def create_webhook(request: web.Request) -> web.Response:
    """Subscribes a URL to audit events (owners); answers the secret once; audits
    `webhook.create`."""
    access = await org_access(request, roles=OWNERS)
    body = await parse_body(request, WebhookIn)
    created = await create(request, access, url=body.url, events=body.events)
    return json_response(serialize_webhook(created.webhook, secret=created.secret), status=201)


async def list_webhooks(request: web.Request) -> web.Response:
    """The organization's webhooks (owners), without their secrets."""
    access = await org_access(request, roles=OWNERS)
    async with connection(request) as conn:
        rows = await queries.list_for(conn, access.org["id"])
    return json_response([serialize_webhook(row) for row in rows])


async def _webhook(request: web.Request, access: OrgAccess) -> asyncpg.Record:
    webhook_id = path_id(request, "webhook_id", not_found=NOT_FOUND)
    async with connection(request) as conn:
        row = await queries.get(conn, organization_id=access.org["id"], webhook_id=webhook_id)
    if row is None:
        raise api_error(404, NOT_FOUND)
    return row


async def get_webhook(request: web.Request) -> web.Response:
    """One webhook (owners), without its secret."""
    access = await org_access(request, roles=OWNERS)
    return json_response(serialize_webhook(await _webhook(request, access)))


async def delete_webhook(request: web.Request) -> web.Response:
    """Deletes a webhook and its deliveries, sent or not (owners); audits `webhook.delete`."""
    access = await org_access(request, roles=OWNERS)
    await delete(request, access, path_id(request, "webhook_id", not_found=NOT_FOUND))
    return web.Response(status=204)


async def list_deliveries(request: web.Request) -> web.Response:
    """A webhook's deliveries, newest first (owners): status, attempts, the last answer's
    status and first bytes; cursor-paginated (`Link`)."""
    access = await org_access(request, roles=OWNERS)
    webhook = await _webhook(request, access)
    cursor, limit = page_args(request, default=100)
    async with connection(request) as conn:
        rows = await queries.deliveries_page(conn, webhook["id"], before_id=cursor, limit=limit + 1)
    rows, next_cursor = split_page(rows, limit)
    response = json_response([serialize_delivery(row) for row in rows])
    response.headers["Link"] = link_header(request, next_cursor=next_cursor)
    return response
