"""An organization's members page: the 2FA column, the pending badge, and (owners, managers)
Resend, Reset 2FA and exemptions. It calls what the API calls (`require2fa.members`,
`invitations.resend` and `owner_tools` through `api.org_actions`), so a page allows, refuses and
writes exactly what the matching API call does."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
from aiohttp import web

from api import org_actions
from api.access import MANAGERS, OrgAccess, member_id
from api.connection import request_pool
from api.errors import status_of
from api.pages.base import html_errors, org_page, org_url, read_form, render
from api.pagination import page_args, split_page
from require2fa import members, organizations
from require2fa.errors import DomainError, NotFound, TooMany

PER_PAGE = 50


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
    where = members.parse_query(query)
    cursor, per_page = page_args(request, default=PER_PAGE)
    org_id = access.org["id"]
    pool = await request_pool(request)
    rows = await members.listed(pool, org_id, where=where, after_id=cursor, limit=per_page + 1)
    orgs = await organizations.of_user(pool, access.auth.user_id)
    resent = request.query.get("resent", "")
    if resent.isdigit() and len(resent) < 19:
        try:
            row = await members.get(pool, org_id, int(resent))
        except NotFound:
            pass
        else:
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
    access = await org_page(request)
    return await _members(request, access)


@html_errors
async def resend_page(request: web.Request) -> web.StreamResponse:
    """Sends a pending member's email again (`require2fa.invitations.resend`, as the API does;
    owners, managers; a fresh link, `member.reinvite`, the outbox row; rate limited, a 429 is
    said on the page)."""
    await read_form(request)
    access = await org_page(request)
    which = member_id(request)
    try:
        await org_actions.resend(request, access, which)
    except TooMany as refused:
        response = await _members(request, access, status=429, error=refused.detail)
        response.headers["Retry-After"] = str(max(1, refused.retry_after))
        return response
    raise web.HTTPSeeOther(f"{org_url(access, 'members/')}?resent={which}")


@html_errors
async def reset_2fa_page(request: web.Request) -> web.StreamResponse:
    """Resets a member's 2FA through the API's use case (owners): a confirm step first, then
    `require2fa.owner_tools.reset_member_2fa`; a refusal (409: in another organization) is said
    on the members page."""
    posted = await read_form(request)
    access = await org_page(request)
    which = member_id(request)
    row = await members.get(await request_pool(request), access.org["id"], which)
    if posted.get("confirmed") != "yes":
        return await _members(request, access, confirm_reset=row)
    await org_actions.confirm_if_owner(request, access)
    try:
        result = await org_actions.reset_2fa(request, access, which)
    except DomainError as refused:
        return await _members(request, access, status=status_of(refused), error=refused.detail)
    notice = f"The two-factor authentication of {row['email']} was reset."
    if result.removed:
        notice += " They were removed until they set it up again, and emailed a link back in."
    return await _members(request, access, notice=notice)


@html_errors
async def exempt_page(request: web.Request) -> web.StreamResponse:
    """Exempts a member until a date (end of that day, UTC) for a reason, or lifts it (`lift`),
    through the API's use case (owners); a refusal is said on the members page."""
    posted = await read_form(request)
    access = await org_page(request)
    which = member_id(request)
    until: datetime | None = None
    reason = posted.get("reason", "")[:200]
    if posted.get("lift") != "yes":
        try:
            day = datetime.strptime(posted.get("until", "")[:10], "%Y-%m-%d")
        except ValueError:
            return await _members(request, access, status=400, error="Choose the end date.")
        until = day.replace(hour=23, minute=59, second=59, tzinfo=UTC)
    await org_actions.confirm_if_owner(request, access)
    try:
        result = await org_actions.set_exemption(request, access, which, reason=reason, until=until)
    except DomainError as refused:
        return await _members(request, access, status=status_of(refused), error=refused.detail)
    email = result.member["email"]
    notice = (
        f"{email} is exempt from two-factor authentication until {until:%Y-%m-%d}."
        if until is not None
        else f"The exemption of {email} was lifted."
    )
    if result.removed:
        notice += " Without two-factor authentication, they were removed and emailed a link back."
    return await _members(request, access, notice=notice)
