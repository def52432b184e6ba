"""An organization's webhooks page (owners): the webhooks with their latest deliveries (status,
attempts, the receiver's last answer), adding one (the secret shown once), pinging one,
redelivering a delivery, turning one off or on again and deleting one. It calls what the API
calls (`webhooks.subscribe`, `ping`, `redeliver`, `change` and `unsubscribe` through
`api.org_actions`, `webhooks.listed` and `deliveries`); each form ends in a redirect back to
the page with a notice."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from api import org_actions
from api.access import OrgAccess
from api.connection import request_pool
from api.errors import path_id
from api.jsonio import plain
from api.pages.base import (
    html_errors,
    org_page,
    org_url,
    read_form,
    redirect_with_notice,
    render,
    take_notice,
)
from api.serializers import serialize_delivery, serialize_webhook
from require2fa import audit_log, organizations, webhooks
from require2fa.errors import Invalid

OWNERS = ("owner",)
DELIVERIES = 10  # the latest of each webhook shown; the API pages through the rest


async def _webhooks(
    request: web.Request,
    access: OrgAccess,
    *,
    status: int = 200,
    created: webhooks.Created | None = None,
    error: str | None = None,
    form: dict[str, object] | None = None,
) -> web.Response:
    pool = await request_pool(request)
    hooks = []
    for row in await webhooks.listed(pool, access.org["id"]):  # at most 20 per organization
        found = await webhooks.deliveries(pool, row["id"], before_id=None, limit=DELIVERIES)
        hooks.append(
            {
                **plain(serialize_webhook(row)),
                "deliveries": plain([serialize_delivery(item) for item in found]),
            }
        )
    return await render(
        request,
        "webhooks.html",
        status=status,
        org=access.org,
        role=access.role,
        orgs=await organizations.of_user(pool, access.auth.user_id),
        section="webhooks",
        webhooks=hooks,
        events=audit_log.EVENTS,
        created=plain(serialize_webhook(created.webhook)) if created else None,
        secret=created.secret if created else None,
        error=error,
        notice=None if error or created else await take_notice(request),
        form=form or {"url": "", "events": [], "scope": "all"},
    )


@html_errors
async def webhooks_page(request: web.Request) -> web.StreamResponse:
    """The organization's webhooks and their latest deliveries (owners)."""
    access = await org_page(request, roles=OWNERS)
    return await _webhooks(request, access)


@html_errors
async def webhook_create_page(request: web.Request) -> web.StreamResponse:
    """Subscribes a URL through the API's use case (owners; sudo; the URL's checks,
    `webhook.create`); answers the page with the secret shown this once."""
    form = await read_form(request)
    access = await org_page(request, roles=OWNERS)
    chosen = [e for e in (await request.post()).getall("events", []) if isinstance(e, str)]
    events = chosen if form.get("scope") == "some" else ["*"]
    url = form.get("url", "")
    try:
        created = await org_actions.create_webhook(request, access, url=url, events=events)
    except Invalid as refused:
        shown: dict[str, object] = {"url": url[:2048], "events": chosen, "scope": form.get("scope")}
        return await _webhooks(request, access, status=400, error=refused.detail, form=shown)
    return await _webhooks(request, access, status=201, created=created)


@html_errors
async def webhook_delete_page(request: web.Request) -> web.StreamResponse:
    """Deletes a webhook through the API's use case (owners; `webhook.delete`)."""
    access, _, hook = await _posted_webhook(request)
    await org_actions.delete_webhook(request, access, hook["id"])
    notice = f"The webhook to {hook['url']} was deleted."
    raise await redirect_with_notice(org_url(access, "webhooks/"), request, notice)


async def _posted_webhook(request: web.Request) -> tuple[OrgAccess, dict[str, str], asyncpg.Record]:
    """The form (same origin), the owner's access and the webhook the path names (404 when it is
    not the organization's)."""
    form = await read_form(request)
    access = await org_page(request, roles=OWNERS)
    webhook_id = path_id(request, "webhook_id", not_found=webhooks.NOT_FOUND)
    hook = await webhooks.get(
        await request_pool(request), organization_id=access.org["id"], webhook_id=webhook_id
    )
    return access, form, hook


@html_errors
async def webhook_ping_page(request: web.Request) -> web.StreamResponse:
    """Queues a `ping` delivery to the webhook through the API's use case (owners; 409 page when
    the webhook is off)."""
    access, _, hook = await _posted_webhook(request)
    await org_actions.ping_webhook(request, access, hook["id"])
    notice = f"A ping to {hook['url']} was queued; it shows below once sent."
    raise await redirect_with_notice(org_url(access, "webhooks/"), request, notice)


@html_errors
async def webhook_redeliver_page(request: web.Request) -> web.StreamResponse:
    """Queues one of the webhook's deliveries again, with its id, through the API's use case
    (owners; 404 page for a delivery of another webhook, 409 when the webhook is off)."""
    access, _, hook = await _posted_webhook(request)
    delivery_id = path_id(request, "delivery_id", not_found=webhooks.DELIVERY_NOT_FOUND)
    await org_actions.redeliver_webhook(request, access, hook["id"], delivery_id)
    notice = f"The delivery to {hook['url']} was queued again."
    raise await redirect_with_notice(org_url(access, "webhooks/"), request, notice)


@html_errors
async def webhook_active_page(request: web.Request) -> web.StreamResponse:
    """Turns the webhook off (its pending deliveries fail) or on again through the API's use
    case (owners; `webhook.edit`); the form's `active` is `true` or `false`."""
    access, form, hook = await _posted_webhook(request)
    if form.get("active") not in ("true", "false"):
        raise Invalid("invalid-form", "Choose whether the webhook is on or off.")
    active = form["active"] == "true"
    await org_actions.change_webhook(
        request, access, hook["id"], url=None, events=None, active=active
    )
    state = "on again" if active else "off: nothing is sent to it until it is turned on"
    notice = f"The webhook to {hook['url']} is {state}."
    raise await redirect_with_notice(org_url(access, "webhooks/"), request, notice)
