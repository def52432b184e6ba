"""An organization's webhooks page (owners): the webhooks with their latest deliveries (status,
attempts, the receiver's last answer), adding one (the secret shown once) and deleting one. It
calls what the API calls (`webhooks.subscribe` and `unsubscribe` through `api.org_actions`,
`webhooks.listed` and `deliveries`)."""

from __future__ import annotations

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
    await read_form(request)
    access = await org_page(request, roles=OWNERS)
    webhook_id = path_id(request, "webhook_id", not_found=webhooks.NOT_FOUND)
    hook = await webhooks.get(
        await request_pool(request), organization_id=access.org["id"], webhook_id=webhook_id
    )
    await org_actions.delete_webhook(request, access, webhook_id)
    notice = f"The webhook to {hook['url']} was deleted."
    raise await redirect_with_notice(org_url(access, "webhooks/"), request, notice)
