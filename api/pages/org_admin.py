"""An organization's admin pages: Security & Privacy (the require-2FA switch and its run's
progress, and the webhooks), the members (2FA column, pending badge, Resend) and the audit log.

They go through the API's own functions (`api.access.org_access`, `organizations.apply_change`,
`invites.reinvite`, `members.parse_query`, the `db` queries), so a page allows, refuses and
writes exactly what the matching API call does. The plumbing (rendering, HTML errors, the
same-origin check on forms) is `api.pages.views`'.
"""

from __future__ import annotations

from aiohttp import web

from api.access import MANAGERS, OrgAccess, org_access
from api.auth import actor
from api.errors import path_id
from api.handlers import invites
from api.handlers import members as member_api
from api.handlers import organizations as org_api
from api.handlers import webhooks as webhook_api
from api.handlers.audit import audit_page, serialize_entry
from api.keys import PG, SETTINGS
from api.pages.views import _detail, _form, _html_errors, _signed_in, render
from api.pagination import page_args, split_page
from db import audit, enforcement, members, organizations
from db import webhooks as webhook_rows
from require2fa import links

PER_PAGE = 50


def _org_url(access: OrgAccess, section: str = "") -> str:
    return links.organization_path(access.org["slug"], section)


async def _access(request: web.Request, *, roles: tuple[str, ...] | None = None) -> OrgAccess:
    """The signed-in person's view of the organization (a sign-in redirect when there is none;
    the API's 404, 401 `2fa-required` and 403, as pages)."""
    await _signed_in(request)
    return await org_access(request, roles=roles)


# --- Security & Privacy -----------------------------------------------------------------------


async def _settings(
    request: web.Request,
    access: OrgAccess,
    *,
    status: int = 200,
    error: str | None = None,
    confirm: int | None = None,
    created: webhook_api.webhooks.Created | None = None,
    webhook_error: str | None = None,
    webhook_form: dict[str, object] | None = None,
) -> web.Response:
    org = access.org
    run, emails, blocked, hooks = None, (0, 0), None, []
    async with request.app[PG].acquire() as conn:
        orgs = await organizations.for_user(conn, access.auth.user_id)
        if access.role == "owner":
            hooks = [
                webhook_api.serialize_webhook(row)
                for row in await webhook_rows.list_for(conn, org["id"])
            ]
        if access.role in MANAGERS:
            run = await enforcement.current_run(conn, org["id"])
            if run is not None:
                emails = await enforcement.email_counts(conn, run["id"])
        if access.role == "owner" and not org["require_2fa"]:
            try:
                await enforcement.check(
                    conn,
                    org,
                    actor=actor(request, access.auth),
                    role=access.role,
                    require_2fa=True,
                )
            except enforcement.Refused as refused:
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
        blocked_2fa=blocked == enforcement.NEEDS_PERSONAL_2FA,
        confirm=confirm,
        run=run,
        emails=emails,
        window_days=request.app[SETTINGS].reinstatement_window.days,
        webhooks=hooks,
        webhook_events=audit.EVENTS,
        created=webhook_api.serialize_webhook(created.webhook) if created else None,
        secret=created.secret if created else None,
        webhook_error=webhook_error,
        webhook_form=webhook_form or {"url": "", "events": [], "scope": "all"},
    )


@_html_errors
async def settings_page(request: web.Request) -> web.StreamResponse:
    """The require-2FA switch (owners). Turning it on first answers a confirm dialog with the
    number of members it would remove; confirmed, it goes through `apply_change` (the run,
    `org.edit`, the coordinator) and comes back here to the run's progress."""
    form = await _form(request) if request.method == "POST" else None
    access = await _access(request)
    if form is None:
        return await _settings(request, access)
    choice = form.get("require2FA")
    if choice not in ("on", "off"):
        return await _settings(
            request, access, status=400, error="Choose to turn the requirement on or off."
        )
    require = choice == "on"
    if require and not access.org["require_2fa"] and form.get("confirmed") != "yes":
        async with request.app[PG].acquire() as conn:
            try:
                await enforcement.check(
                    conn,
                    access.org,
                    actor=actor(request, access.auth),
                    role=access.role,
                    require_2fa=True,
                )
            except enforcement.Refused as refused:
                return await _settings(request, access, status=refused.status, error=refused.detail)
            # The count that `2fa-compliance` answers.
            count = await enforcement.count_noncompliant(
                conn, access.org["id"], except_user_id=access.auth.user_id
            )
        return await _settings(request, access, confirm=count)
    try:
        await org_api.apply_change(request, access, require_2fa=require)
    except web.HTTPException as exc:
        if exc.status not in (400, 403):
            raise
        return await _settings(request, access, status=exc.status, error=_detail(exc))
    raise web.HTTPSeeOther(_org_url(access, "settings/"))


# --- Webhooks ---------------------------------------------------------------------------------


@_html_errors
async def webhook_create_page(request: web.Request) -> web.StreamResponse:
    """Subscribes a URL from the settings page through the API's `create` (owners; the URL's
    checks, `webhook.create`); answers the page with the secret shown this once."""
    form = await _form(request)
    access = await _access(request, roles=("owner",))
    chosen = [e for e in (await request.post()).getall("events", []) if isinstance(e, str)]
    events = chosen if form.get("scope") == "some" else ["*"]
    url = form.get("url", "")
    try:
        created = await webhook_api.create(request, access, url=url, events=events)
    except web.HTTPException as exc:
        if exc.status != 400:
            raise
        return await _settings(
            request,
            access,
            status=400,
            webhook_error=_detail(exc),
            webhook_form={"url": url[:2048], "events": chosen, "scope": form.get("scope")},
        )
    return await _settings(request, access, status=201, created=created)


@_html_errors
async def webhook_delete_page(request: web.Request) -> web.StreamResponse:
    """Deletes a webhook through the API's `delete` (owners; `webhook.delete`)."""
    await _form(request)
    access = await _access(request, roles=("owner",))
    webhook_id = path_id(request, "webhook_id", not_found=webhook_api.NOT_FOUND)
    await webhook_api.delete(request, access, webhook_id)
    raise web.HTTPSeeOther(_org_url(access, "settings/") + "#webhooks")


# --- Members ----------------------------------------------------------------------------------


async def _members(
    request: web.Request,
    access: OrgAccess,
    *,
    status: int = 200,
    error: str | None = None,
) -> web.Response:
    query = request.query.get("query", "")[:200]
    where = member_api.parse_query(query)
    cursor, per_page = page_args(request, default=PER_PAGE)
    org_id = access.org["id"]
    notice = None
    async with request.app[PG].acquire() as conn:
        rows = await members.page(conn, org_id, where=where, after_id=cursor, limit=per_page + 1)
        orgs = await organizations.for_user(conn, access.auth.user_id)
        resent = request.query.get("resent", "")
        if resent.isdigit() and len(resent) < 19:
            row = await members.get(conn, org_id, int(resent))
            if row is not None:
                notice = f"The email was sent again to {row['email']}."
    rows, next_cursor = split_page(rows, per_page)
    return await render(
        request,
        "members.html",
        status=status,
        org=access.org,
        role=access.role,
        orgs=orgs,
        section="members",
        rows=rows,
        query=query,
        cursor=cursor,
        next_cursor=next_cursor,
        can_resend=access.role in MANAGERS,
        notice=notice,
        error=error,
    )


@_html_errors
async def members_page(request: web.Request) -> web.StreamResponse:
    """Members with their 2FA state; pending ones with why and until when, and (owners,
    managers) a Resend button. `?query=` filters as the API's does; cursor paging."""
    access = await _access(request)
    return await _members(request, access)


@_html_errors
async def resend_page(request: web.Request) -> web.StreamResponse:
    """Sends a pending member's email again through the API's `reinvite` (owners, managers; a
    fresh link, `member.reinvite`, the outbox row; rate limited, a 429 is said on the page)."""
    await _form(request)
    access = await _access(request)
    member_id = member_api.member_id(request)
    try:
        await invites.reinvite(request, access, member_id)
    except web.HTTPException as exc:
        if exc.status != 429:
            raise
        response = await _members(request, access, status=429, error=_detail(exc))
        response.headers["Retry-After"] = exc.headers["Retry-After"]
        return response
    raise web.HTTPSeeOther(f"{_org_url(access, 'members/')}?resent={member_id}")


# --- Audit log --------------------------------------------------------------------------------


@_html_errors
async def audit_log_page(request: web.Request) -> web.StreamResponse:
    """The audit log, newest first, of one event or all; cursor paging (owners, managers)."""
    access = await _access(request, roles=MANAGERS)
    found = await audit_page(request, access, per_page=PER_PAGE)
    async with request.app[PG].acquire() as conn:
        orgs = await organizations.for_user(conn, access.auth.user_id)
    return await render(
        request,
        "audit_log.html",
        org=access.org,
        role=access.role,
        orgs=orgs,
        section="audit",
        entries=[serialize_entry(row) for row in found.rows],
        options=audit.EVENTS,
        event=found.event,
        cursor=found.cursor,
        next_cursor=found.next_cursor,
    )
