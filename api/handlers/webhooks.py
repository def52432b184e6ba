"""An organization's webhooks and their deliveries (docs/BEHAVIOUR.md, Webhooks), for owners
(`require2fa.webhooks`)."""

from __future__ import annotations

import asyncpg
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from api import org_actions
from api.access import OrgAccess, org_access
from api.connection import request_pool
from api.errors import parse_body, path_id
from api.jsonio import json_response
from api.pagination import link_header, page_args, split_page
from api.serializers import serialize_delivery, serialize_webhook
from require2fa import webhooks

OWNERS = ("owner",)
NOT_FOUND = webhooks.NOT_FOUND


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=webhooks.MAX_URL)
    events: list[str] = Field(
        default_factory=lambda: [webhooks.ALL_EVENTS], min_length=1, max_length=webhooks.MAX_EVENTS
    )


class WebhookChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, min_length=1, max_length=webhooks.MAX_URL)
    events: list[str] | None = Field(default=None, min_length=1, max_length=webhooks.MAX_EVENTS)
    active: bool | None = None


async def create_webhook(request: web.Request) -> web.Response:
    """Subscribes a URL to audit events (owners); answers the secret once; audits
    `webhook.create`."""
    access = await org_access(request, roles=OWNERS)
    body = await parse_body(request, WebhookIn)
    created = await org_actions.create_webhook(request, access, url=body.url, events=body.events)
    return json_response(serialize_webhook(created.webhook, secret=created.secret), status=201)


async def list_webhooks(request: web.Request) -> web.Response:
    """The organization's webhooks (owners), without their secrets."""
    access = await org_access(request, roles=OWNERS)
    rows = await webhooks.listed(await request_pool(request), access.org["id"])
    return json_response([serialize_webhook(row) for row in rows])


async def _webhook(request: web.Request, access: OrgAccess) -> asyncpg.Record:
    webhook_id = path_id(request, "webhook_id", not_found=NOT_FOUND)
    return await webhooks.get(
        await request_pool(request), organization_id=access.org["id"], webhook_id=webhook_id
    )


async def get_webhook(request: web.Request) -> web.Response:
    """One webhook (owners), without its secret."""
    access = await org_access(request, roles=OWNERS)
    return json_response(serialize_webhook(await _webhook(request, access)))


async def update_webhook(request: web.Request) -> web.Response:
    """Changes a webhook's URL (after a recent re-authentication), events, or whether it is on
    (owners; turning it on again allowed); audits `webhook.edit`."""
    access = await org_access(request, roles=OWNERS)
    webhook_id = path_id(request, "webhook_id", not_found=NOT_FOUND)
    body = await parse_body(request, WebhookChange)
    row = await org_actions.change_webhook(
        request, access, webhook_id, url=body.url, events=body.events, active=body.active
    )
    return json_response(serialize_webhook(row))


async def rotate_secret(request: web.Request) -> web.Response:
    """A new secret for a webhook, shown once (owners; recent re-authentication); the old one
    signs beside it for 24 hours; audits `webhook.rotate-secret`."""
    access = await org_access(request, roles=OWNERS)
    webhook_id = path_id(request, "webhook_id", not_found=NOT_FOUND)
    secret = await org_actions.rotate_webhook_secret(request, access, webhook_id)
    return json_response({"secret": secret})


async def ping_webhook(request: web.Request) -> web.Response:
    """Queues a `ping` delivery to the webhook (owners); 202 with its id."""
    access = await org_access(request, roles=OWNERS)
    webhook_id = path_id(request, "webhook_id", not_found=NOT_FOUND)
    delivery_id = await org_actions.ping_webhook(request, access, webhook_id)
    return json_response({"id": str(delivery_id)}, status=202)


async def redeliver(request: web.Request) -> web.Response:
    """Queues one of the webhook's deliveries again, with its id (owners); 202."""
    access = await org_access(request, roles=OWNERS)
    webhook_id = path_id(request, "webhook_id", not_found=NOT_FOUND)
    delivery_id = path_id(request, "delivery_id", not_found=webhooks.DELIVERY_NOT_FOUND)
    await org_actions.redeliver_webhook(request, access, webhook_id, delivery_id)
    return json_response({"id": str(delivery_id)}, status=202)


async def delete_webhook(request: web.Request) -> web.Response:
    """Deletes a webhook and its deliveries, sent or not (owners); audits `webhook.delete`."""
    access = await org_access(request, roles=OWNERS)
    webhook_id = path_id(request, "webhook_id", not_found=NOT_FOUND)
    await org_actions.delete_webhook(request, access, webhook_id)
    return web.Response(status=204)


async def list_deliveries(request: web.Request) -> web.Response:
    """A webhook's deliveries, newest first (owners): status, attempts, the last answer's
    status and first bytes; cursor-paginated (`Link`)."""
    access = await org_access(request, roles=OWNERS)
    webhook = await _webhook(request, access)
    cursor, limit = page_args(request, default=100)
    rows = await webhooks.deliveries(
        await request_pool(request), webhook["id"], before_id=cursor, limit=limit + 1
    )
    rows, next_cursor = split_page(rows, limit)
    response = json_response([serialize_delivery(row) for row in rows])
    response.headers["Link"] = link_header(request, next_cursor=next_cursor)
    return response
