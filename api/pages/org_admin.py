"""An organization's admin pages: Security & Privacy (the require-2FA switch and its run's
progress, and the webhooks) and the audit log. The members pages are `api.pages.org_members`.

They call what the API calls (`organization_settings.apply_change` and `webhooks` through
`api.org_actions`, `api.access.org_access`, `require2fa.audit_log`), so a page allows, refuses
and writes exactly what the matching API call does. The plumbing (rendering, HTML errors, the
same-origin check on forms) is `api.pages.base`'.
"""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
from aiohttp import web

from api import org_actions
from api.access import MANAGERS, OrgAccess
from api.auth import actor
from api.connection import request_pool
from api.dispatch import send_reminders
from api.errors import path_id, status_of
from api.jsonio import plain
from api.keys import SETTINGS
from api.pages.base import html_errors, org_page, org_url, read_form, render
from api.serializers import serialize_entry, serialize_webhook
from require2fa import (
    audit_log,
    compliance,
    organization_settings,
    organizations,
    reauth,
    rollout,
    webhooks,
)
from require2fa.errors import DomainError, Invalid, NotAllowed, NotSignedIn

PER_PAGE = 50
PREVIEW = 10  # members named in the confirm dialog; the rest are a link away
LEVEL_LABELS = {
    "any": "Any second factor (app, key or phone)",
    "secure": "Secure: an authenticator app or a security key, no text messages",
    "phishing-resistant": "Phishing-resistant: security keys and passkeys only",
}


# --- Security & Privacy -----------------------------------------------------------------------


async def _settings(
    request: web.Request,
    access: OrgAccess,
    *,
    status: int = 200,
    error: str | None = None,
    confirm: int | None = None,
    notice: str | None = None,
    preview: list[asyncpg.Record] | None = None,
    created: webhooks.Created | None = None,
    webhook_error: str | None = None,
    webhook_form: dict[str, object] | None = None,
    confirm_level: str | None = None,
    turning_on: bool = True,
) -> web.Response:
    org = access.org
    run, emails, blocked, hooks = None, (0, 0), None, []
    pool = await request_pool(request)
    orgs = await organizations.of_user(pool, access.auth.user_id)
    if access.role == "owner":
        hooks = plain([serialize_webhook(row) for row in await webhooks.listed(pool, org["id"])])
    if access.role in MANAGERS:
        current = await rollout.current_run(pool, org["id"])
        if current is not None:
            run, emails = current.run, current.emails
    if access.role == "owner" and not org["require_2fa"]:
        try:
            await organization_settings.precheck(
                pool, org, actor=actor(request, access.auth), role=access.role, require_2fa=True
            )
        except DomainError as refused:
            blocked = refused.detail
    return await render(
        request,
        "settings.html",
        status=status,
        org=org,
        role=access.role,
        orgs=orgs,
        section="settings",
        error=error if error != blocked else None,
        blocked=blocked,
        blocked_2fa=blocked == organization_settings.NEEDS_PERSONAL_2FA,
        confirm=confirm,
        preview=preview or [],
        notice=notice,
        can_remind=access.role in MANAGERS,
        confirm_level=confirm_level or org["require_2fa_level"],
        turning_on=turning_on,
        levels=LEVEL_LABELS,
        run=run,
        emails=emails,
        window_days=request.app[SETTINGS].reinstatement_window.days,
        webhooks=hooks,
        webhook_events=audit_log.EVENTS,
        created=plain(serialize_webhook(created.webhook)) if created else None,
        secret=created.secret if created else None,
        webhook_error=webhook_error,
        webhook_form=webhook_form or {"url": "", "events": [], "scope": "all"},
    )


@html_errors
async def settings_page(request: web.Request) -> web.StreamResponse:
    """The require-2FA switch (owners). Turning it on first answers a confirm dialog with the
    number of members it would remove; confirmed, it goes through
    `organization_settings.apply_change` (the run, `org.edit`, the coordinator) and comes back
    here to the run's progress."""
    form = await read_form(request) if request.method == "POST" else None
    access = await org_page(request)
    if form is None:
        return await _settings(request, access)
    choice = form.get("require2FA")
    level = form.get("require2FALevel") or None
    if level is not None and level not in compliance.LEVELS:
        return await _settings(request, access, status=400, error="Choose a requirement level.")
    if choice not in ("on", "off") and not (choice is None and level is not None):
        return await _settings(
            request, access, status=400, error="Choose to turn the requirement on or off."
        )
    org = access.org
    require = None if choice is None else choice == "on"
    turning_on = bool(require) and not org["require_2fa"]
    raising = (
        org["require_2fa"]
        and require is not False
        and compliance.is_stricter(level, org["require_2fa_level"])
    )
    if (turning_on or raising) and form.get("confirmed") != "yes":
        pool = await request_pool(request)
        try:
            await organization_settings.precheck(
                pool,
                org,
                actor=actor(request, access.auth),
                role=access.role,
                require_2fa=True if turning_on else None,
                level=level,
            )
        except DomainError as refused:
            return await _settings(request, access, status=status_of(refused), error=refused.detail)
        # The count and the first names that `2fa-compliance` answers, at the level being
        # chosen (the acting owner, who has 2FA anyway, left out); names only at the
        # organization's own level.
        found = await rollout.noncompliant(
            pool,
            org["id"],
            except_user_id=access.auth.user_id,
            after_id=None,
            limit=PREVIEW + 1,
            level=level or org["require_2fa_level"],
            names=level in (None, org["require_2fa_level"]),
        )
        preview = [row for row in found.rows if row["user_id"] != access.auth.user_id][:PREVIEW]
        return await _settings(
            request,
            access,
            confirm=found.count,
            preview=preview,
            confirm_level=level,
            turning_on=turning_on,
        )
    enforce_at = None
    if require and form.get("when") == "date":
        enforce_at = _enforce_at(form.get("enforceAt", ""))
        if enforce_at is None:
            return await _settings(
                request, access, status=400, error="Choose the date and time (UTC) to start."
            )
    try:
        await org_actions.change_settings(
            request, access, require_2fa=require, enforce_at=enforce_at, level=level
        )
    except (Invalid, NotAllowed, NotSignedIn) as refused:
        if refused.code == reauth.REQUIRED_CODE:
            raise  # the page asks for the password or a code, then goes on
        return await _settings(request, access, status=status_of(refused), error=refused.detail)
    raise web.HTTPSeeOther(org_url(access, "settings/"))


@html_errors
async def reminders_page(request: web.Request) -> web.StreamResponse:
    """ "Send reminders" (owners, managers): what `POST …/2fa-reminders/` does (the
    `enforcement.queue_reminders` message: today's reminder to each member without 2FA, once a
    day each); back on the settings page with a notice."""
    await read_form(request)
    access = await org_page(request, roles=MANAGERS)
    await send_reminders(access.org["id"], access.auth.user_id)
    return await _settings(
        request,
        access,
        notice="Reminders are being sent to every member without two-factor authentication"
        " (at most one a day each).",
    )


def _enforce_at(value: str) -> datetime | None:
    """The form's `datetime-local` value, read as UTC (the page says so); None when it is not
    a date and time."""
    try:
        moment = datetime.fromisoformat(value.strip()[:40])
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


# --- Webhooks ---------------------------------------------------------------------------------


@html_errors
async def webhook_create_page(request: web.Request) -> web.StreamResponse:
    """Subscribes a URL from the settings page through the API's `create` (owners; the URL's
    checks, `webhook.create`); answers the page with the secret shown this once."""
    form = await read_form(request)
    access = await org_page(request, roles=("owner",))
    chosen = [e for e in (await request.post()).getall("events", []) if isinstance(e, str)]
    events = chosen if form.get("scope") == "some" else ["*"]
    url = form.get("url", "")
    try:
        created = await org_actions.create_webhook(request, access, url=url, events=events)
    except Invalid as refused:
        return await _settings(
            request,
            access,
            status=400,
            webhook_error=refused.detail,
            webhook_form={"url": url[:2048], "events": chosen, "scope": form.get("scope")},
        )
    return await _settings(request, access, status=201, created=created)


@html_errors
async def webhook_delete_page(request: web.Request) -> web.StreamResponse:
    """Deletes a webhook through the API's `delete` (owners; `webhook.delete`)."""
    await read_form(request)
    access = await org_page(request, roles=("owner",))
    webhook_id = path_id(request, "webhook_id", not_found=webhooks.NOT_FOUND)
    await org_actions.delete_webhook(request, access, webhook_id)
    raise web.HTTPSeeOther(org_url(access, "settings/") + "#webhooks")


# --- Audit log --------------------------------------------------------------------------------


@html_errors
async def audit_log_page(request: web.Request) -> web.StreamResponse:
    """The audit log, newest first, of one event or all; cursor paging (owners, managers)."""
    access = await org_page(request, roles=MANAGERS)
    found = await org_actions.audit_page(request, access, per_page=PER_PAGE)
    orgs = await organizations.of_user(await request_pool(request), access.auth.user_id)
    return await render(
        request,
        "audit_log.html",
        org=access.org,
        role=access.role,
        orgs=orgs,
        section="audit",
        entries=plain([serialize_entry(row) for row in found.rows]),
        options=audit_log.EVENTS,
        event=found.event,
        cursor=found.cursor,
        next_cursor=found.next_cursor,
    )
