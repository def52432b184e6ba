"""An organization's admin pages: Security & Privacy (the require-2FA switch and its run's
progress, and the webhooks), the members (2FA column, pending badge, Resend) and the audit log.

They call what the API calls (`organization_settings.apply_change`, `invitations.resend`,
`api.access.org_access`, `members.parse_query`, the `db` queries), so a page allows, refuses and
writes exactly what the matching API call does. The plumbing (rendering, HTML errors, the
same-origin check on forms) is `api.pages.views`'.
"""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
from aiohttp import web

from api import org_actions
from api.access import MANAGERS, OrgAccess, org_access
from api.auth import actor, require_sudo
from api.connection import connection
from api.dispatch import send_reminders
from api.errors import api_error, path_id, status_of
from api.handlers import members as member_api
from api.handlers import webhooks as webhook_api
from api.handlers.audit import audit_page, serialize_entry
from api.keys import SETTINGS
from api.pages.base import detail, html_errors, read_form, render, signed_in
from api.pagination import page_args, split_page
from db import audit, counts, members, organizations, runs
from db import webhooks as webhook_rows
from jobs import email as email_jobs
from require2fa import compliance, links, organization_settings, owner_tools, reauth
from require2fa.errors import DomainError, Invalid, NotAllowed, NotSignedIn, TooMany

PER_PAGE = 50
PREVIEW = 10  # members named in the confirm dialog; the rest are a link away
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
    await signed_in(request)
    return await org_access(request, roles=roles)


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
    created: webhook_api.webhooks.Created | None = None,
    webhook_error: str | None = None,
    webhook_form: dict[str, object] | None = None,
    confirm_level: str | None = None,
    turning_on: bool = True,
) -> web.Response:
    org = access.org
    run, emails, blocked, hooks = None, (0, 0), None, []
    async with connection(request) as conn:
        orgs = await organizations.for_user(conn, access.auth.user_id)
        if access.role == "owner":
            hooks = [
                webhook_api.serialize_webhook(row)
                for row in await webhook_rows.list_for(conn, org["id"])
            ]
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
        webhook_events=audit.EVENTS,
        created=webhook_api.serialize_webhook(created.webhook) if created else None,
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
        async with connection(request) as conn:
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
            # The count and the first names that `2fa-compliance` answers, at the level being
            # chosen (the acting owner, who has 2FA anyway, left out).
            count = await counts.count_noncompliant(
                conn,
                org["id"],
                except_user_id=access.auth.user_id,
                level=level or org["require_2fa_level"],
            )
            first = []
            if level in (None, org["require_2fa_level"]):  # names at the organization's level
                first = await members.page(
                    conn,
                    access.org["id"],
                    where=members.NONCOMPLIANT,
                    after_id=None,
                    limit=PREVIEW + 1,
                )
        preview = [row for row in first if row["user_id"] != access.auth.user_id][:PREVIEW]
        return await _settings(
            request,
            access,
            confirm=count,
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
    raise web.HTTPSeeOther(_org_url(access, "settings/"))


@html_errors
async def reminders_page(request: web.Request) -> web.StreamResponse:
    """ "Send reminders" (owners, managers): what `POST …/2fa-reminders/` does (the
    `enforcement.queue_reminders` message: today's reminder to each member without 2FA, once a
    day each); back on the settings page with a notice."""
    await read_form(request)
    access = await _access(request, roles=MANAGERS)
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
            webhook_error=detail(exc),
            webhook_form={"url": url[:2048], "events": chosen, "scope": form.get("scope")},
        )
    return await _settings(request, access, status=201, created=created)


@html_errors
async def webhook_delete_page(request: web.Request) -> web.StreamResponse:
    """Deletes a webhook through the API's `delete` (owners; `webhook.delete`)."""
    await read_form(request)
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
    notice: str | None = None,
    confirm_reset: asyncpg.Record | None = None,
) -> web.Response:
    query = request.query.get("query", "")[:200]
    where = member_api.parse_query(query)
    cursor, per_page = page_args(request, default=PER_PAGE)
    org_id = access.org["id"]
    async with connection(request) as conn:
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
        can_reset=access.role == "owner",
        me=access.auth.user_id,
        confirm_reset=confirm_reset,
        notice=notice,
        error=error,
    )


@html_errors
async def members_page(request: web.Request) -> web.StreamResponse:
    """Members with their 2FA state; pending ones with why and until when, and (owners,
    managers) a Resend button. `?query=` filters as the API's does; cursor paging."""
    access = await _access(request)
    return await _members(request, access)


@html_errors
async def resend_page(request: web.Request) -> web.StreamResponse:
    """Sends a pending member's email again (`require2fa.invitations.resend`, as the API does;
    owners, managers; a fresh link, `member.reinvite`, the outbox row; rate limited, a 429 is
    said on the page)."""
    await read_form(request)
    access = await _access(request)
    member_id = member_api.member_id(request)
    try:
        await org_actions.resend(request, access, member_id)
    except TooMany as refused:
        response = await _members(request, access, status=429, error=refused.detail)
        response.headers["Retry-After"] = str(max(1, refused.retry_after))
        return response
    raise web.HTTPSeeOther(f"{_org_url(access, 'members/')}?resent={member_id}")


@html_errors
async def reset_2fa_page(request: web.Request) -> web.StreamResponse:
    """Resets a member's 2FA through the API's use case (owners): a confirm step first, then
    `require2fa.owner_tools.reset_member_2fa`; a refusal (409: in another organization) is said
    on the members page."""
    form = await read_form(request)
    access = await _access(request)
    member_id = member_api.member_id(request)
    async with connection(request) as conn:
        row = await members.get(conn, access.org["id"], member_id)
    if row is None:
        raise api_error(404, "The requested member does not exist.")
    if form.get("confirmed") != "yes":
        return await _members(request, access, confirm_reset=row)
    if access.role == "owner":  # anyone else gets the use case's refusal
        await require_sudo(request)
    settings = request.app[SETTINGS]
    async with connection(request) as conn, conn.transaction():
        try:
            result = await owner_tools.reset_member_2fa(
                conn,
                organization_id=access.org["id"],
                member_id=member_id,
                actor=actor(request, access.auth),
                actor_role=access.role,
                base_url=settings.base_url,
                secret_key=settings.secret_key,
                reinstatement_window=settings.reinstatement_window,
            )
        except DomainError as refused:
            return await _members(request, access, status=status_of(refused), error=refused.detail)
    await email_jobs.kick()
    notice = f"The two-factor authentication of {row['email']} was reset."
    if result.removed:
        notice += " They were removed until they set it up again, and emailed a link back in."
    return await _members(request, access, notice=notice)


@html_errors
async def exempt_page(request: web.Request) -> web.StreamResponse:
    """Exempts a member until a date (end of that day, UTC) for a reason, or lifts it (`lift`),
    through the API's use case (owners); a refusal is said on the members page."""
    form = await read_form(request)
    access = await _access(request)
    member_id = member_api.member_id(request)
    until: datetime | None = None
    reason = form.get("reason", "")[:200]
    if form.get("lift") != "yes":
        try:
            day = datetime.strptime(form.get("until", "")[:10], "%Y-%m-%d")
        except ValueError:
            return await _members(request, access, status=400, error="Choose the end date.")
        until = day.replace(hour=23, minute=59, second=59, tzinfo=UTC)
    if access.role == "owner":  # anyone else gets the use case's refusal
        await require_sudo(request)
    settings = request.app[SETTINGS]
    async with connection(request) as conn, conn.transaction():
        try:
            result = await owner_tools.set_exemption(
                conn,
                organization_id=access.org["id"],
                member_id=member_id,
                actor=actor(request, access.auth),
                actor_role=access.role,
                reason=reason,
                until=until,
                base_url=settings.base_url,
                secret_key=settings.secret_key,
                reinstatement_window=settings.reinstatement_window,
            )
        except DomainError as refused:
            return await _members(request, access, status=status_of(refused), error=refused.detail)
    if result.removed:
        await email_jobs.kick()
    email = result.member["email"]
    notice = (
        f"{email} is exempt from two-factor authentication until {until:%Y-%m-%d}."
        if until is not None
        else f"The exemption of {email} was lifted."
    )
    if result.removed:
        notice += " Without two-factor authentication, they were removed and emailed a link back."
    return await _members(request, access, notice=notice)


# --- Audit log --------------------------------------------------------------------------------


@html_errors
async def audit_log_page(request: web.Request) -> web.StreamResponse:
    """The audit log, newest first, of one event or all; cursor paging (owners, managers)."""
    access = await _access(request, roles=MANAGERS)
    found = await audit_page(request, access, per_page=PER_PAGE)
    async with connection(request) as conn:
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
