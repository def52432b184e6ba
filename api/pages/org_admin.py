"""An organization's admin pages: Security & Privacy (the require-2FA switch and its run's
progress), the members (2FA column, pending badge, Resend) and the audit log.

They go through the API's own functions (`api.access.org_access`, `organizations.apply_change`,
`invites.reinvite`, `members.parse_query`, the `db` queries), so a page allows, refuses and
writes exactly what the matching API call does. The plumbing (rendering, HTML errors, the
same-origin check on forms) is `api.pages.views`'.
"""

from __future__ import annotations

from aiohttp import web

from api.access import MANAGERS, OrgAccess, org_access
from api.auth import actor
from api.errors import status_of
from api.handlers import invites
from api.handlers import members as member_api
from api.handlers import organizations as org_api
from api.handlers.audit import audit_page, serialize_entry
from api.keys import PG, SETTINGS
from api.pages.views import _detail, _form, _html_errors, _signed_in, render
from api.pagination import page_args, split_page
from db import audit, counts, members, organizations, runs
from require2fa import compliance, links, organization_settings
from require2fa.errors import DomainError, Invalid, NotAllowed, NotSignedIn

PER_PAGE = 50
LEVEL_LABELS = {
    "any": "Any second factor (app, key or phone)",
    "secure": "Secure: an authenticator app or a security key, no text messages",
    "phishing-resistant": "Phishing-resistant: security keys and passkeys only",
}


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
    confirm_level: str | None = None,
    turning_on: bool = True,
) -> web.Response:
    org = access.org
    run, emails, blocked = None, (0, 0), None
    async with request.app[PG].acquire() as conn:
        orgs = await organizations.for_user(conn, access.auth.user_id)
        if access.role in MANAGERS:
            run = await runs.current_run(conn, org["id"])
            if run is not None:
                emails = await runs.email_counts(conn, run["id"])
        if access.role == "owner" and not org["require_2fa"]:
            try:
                await organization_settings.check(
                    conn,
                    org,
                    actor=actor(request, access.auth),
                    role=access.role,
                    require_2fa=True,
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
        confirm_level=confirm_level or org["require_2fa_level"],
        turning_on=turning_on,
        levels=LEVEL_LABELS,
        run=run,
        emails=emails,
        window_days=request.app[SETTINGS].reinstatement_window.days,
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
        async with request.app[PG].acquire() as conn:
            try:
                await organization_settings.check(
                    conn,
                    org,
                    actor=actor(request, access.auth),
                    role=access.role,
                    require_2fa=True if turning_on else None,
                    level=level,
                )
            except DomainError as refused:
                return await _settings(
                    request, access, status=status_of(refused), error=refused.detail
                )
            # The count that `2fa-compliance` answers, at the level being chosen.
            count = await counts.count_noncompliant(
                conn,
                org["id"],
                except_user_id=access.auth.user_id,
                level=level or org["require_2fa_level"],
            )
        return await _settings(
            request, access, confirm=count, confirm_level=level, turning_on=turning_on
        )
    try:
        await org_api.apply_change(request, access, require_2fa=require, level=level)
    except (Invalid, NotAllowed, NotSignedIn) as refused:
        return await _settings(request, access, status=status_of(refused), error=refused.detail)
    raise web.HTTPSeeOther(_org_url(access, "settings/"))


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
