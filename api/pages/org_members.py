"""An organization's members page: the 2FA column, the pending and blocked badges, who must
meet the requirement when the organization scopes it, the total and pages in both directions,
and (owners, managers) Invite, Change role, Remove, Resend (one member or every pending
member), Reset 2FA and exemptions. It calls what the API calls (`require2fa.members`,
`invitations` and `owner_tools` through `api.org_actions`), so a page allows, refuses and
writes exactly what the matching API call does.

Every action answers with a redirect back to the same filtered page (the form's `back` field,
its `query`, `cursor` and `before` kept) with a notice (Post/Redirect/Get); a refusal is said in
place, on the page the form was sent from.
"""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
from aiohttp import web
from pydantic import ValidationError

from api import org_actions
from api.access import MANAGERS, OrgAccess, member_id
from api.auth import actor
from api.bodies import InviteIn
from api.connection import request_pool
from api.errors import status_of
from api.pages.base import (
    html_errors,
    kept_query,
    org_page,
    org_url,
    read_form,
    redirect_with_notice,
    render,
    take_notice,
    with_wait,
)
from api.pagination import page_args
from require2fa import members, organizations
from require2fa.errors import DomainError, TooMany
from require2fa.requirement import Scope

PER_PAGE = 50
PAGE_KEYS = ("query", "cursor", "before", "per_page")  # what a redirect after an action keeps


async def _members(
    request: web.Request,
    access: OrgAccess,
    *,
    status: int = 200,
    error: str | None = None,
    confirm_reset: asyncpg.Record | None = None,
    confirm_remove: asyncpg.Record | None = None,
    invite_form: dict[str, object] | None = None,
    back: str | None = None,
) -> web.Response:
    query = request.query.get("query", "")[:200]
    where = members.parse_query(query)
    cursor, per_page = page_args(request, default=PER_PAGE)
    before = _id(request.query.get("before", ""))
    org_id = access.org["id"]
    pool = await request_pool(request)
    rows = await members.listed(
        pool,
        org_id,
        where=where,
        after_id=None if before else cursor,
        before_id=before,
        limit=per_page + 1,
    )
    if before is not None:  # walking back: the extra row is the first one
        has_previous, has_next = len(rows) > per_page, True
        rows = rows[-per_page:]
    else:
        has_previous, has_next = cursor is not None, len(rows) > per_page
        rows = rows[:per_page]
    manager = access.role in MANAGERS
    return await render(
        request,
        "members.html",
        status=status,
        org=access.org,
        role=access.role,
        orgs=await organizations.of_user(pool, access.auth.user_id),
        section="members",
        scope=Scope.of(access.org),
        rows=rows,
        total=await members.counted(pool, org_id, where=where),
        pending_total=await members.counted(pool, org_id, where=members.PENDING) if manager else 0,
        query=query,
        page_query={"query": query, **({"per_page": per_page} if per_page != PER_PAGE else {})},
        back=kept_query(request.query_string if back is None else back, PAGE_KEYS),
        previous_before=rows[0]["id"] if rows and has_previous else None,
        next_cursor=rows[-1]["id"] if rows and has_next else None,
        can_manage=manager,
        can_reset=access.role == "owner",
        roles=members.ROLES if access.role == "owner" else members.ROLES[1:],
        teams=await organizations.teams(pool, org_id) if manager else [],
        me=access.auth.user_id,
        confirm_reset=confirm_reset,
        confirm_remove=confirm_remove,
        invite_form=invite_form or {"email": "", "role": "member", "teams": []},
        notice=None if error else await take_notice(request),
        error=error,
    )


def _id(text: str) -> int | None:
    return int(text) if text.isdigit() and len(text) < 19 else None


def _back(access: OrgAccess, form: dict[str, str]) -> str:
    """The members page the form was sent from (its filter and page), from its `back` field."""
    return org_url(access, "members/") + kept_query(form.get("back", ""), PAGE_KEYS)


@html_errors
async def members_page(request: web.Request) -> web.StreamResponse:
    """Members with their 2FA state and the total; pending ones with why and until when, and
    (owners, managers) the actions. `?query=` filters as the API's does; cursor paging."""
    access = await org_page(request)
    return await _members(request, access)


@html_errors
async def invite_page(request: web.Request) -> web.StreamResponse:
    """Invites an email with a role and teams (`members.invite`, as the API does: the pending
    member, `member.invite`, the "Join" email in the outbox)."""
    form = await read_form(request)
    access = await org_page(request)
    teams = [t for t in (await request.post()).getall("teams", []) if isinstance(t, str)]
    shown: dict[str, object] = {
        "email": form.get("email", "")[:320],
        "role": form.get("role"),
        "teams": teams,
    }
    try:
        body = InviteIn.model_validate(
            {"email": form.get("email", ""), "role": form.get("role", "member"), "teams": teams}
        )
    except ValidationError as err:
        field = str(err.errors()[0]["loc"][0])
        message = "Enter an email address." if field == "email" else f"Choose a valid {field}."
        return await _members(request, access, status=400, error=message, invite_form=shown)
    try:
        await org_actions.invite(
            request, access, email=str(body.email), role=body.role, teams=body.teams
        )
    except DomainError as refused:
        status = status_of(refused)
        response = await _members(
            request, access, status=status, error=refused.detail, invite_form=shown
        )
        return with_wait(response, refused)
    notice = f"{str(body.email).lower()} was invited as {body.role} and emailed a link to join."
    raise await redirect_with_notice(_back(access, form), request, notice)


@html_errors
async def role_page(request: web.Request) -> web.StreamResponse:
    """Changes a member's role (`members.update`, as the API does; `member.edit`)."""
    form = await read_form(request)
    access = await org_page(request)
    role = form.get("role", "")
    if role not in members.ROLES:
        return await _members(request, access, status=400, error="Choose a role.")
    try:
        row = await members.update(
            await request_pool(request),
            access.org["id"],
            member_id(request),
            role=role,
            teams=None,
            settings=None,
            actor_role=access.role,
            actor=actor(request, access.auth),
        )
    except DomainError as refused:
        return await _members(request, access, status=status_of(refused), error=refused.detail)
    notice = f"{row['email']} is now {role}."
    raise await redirect_with_notice(_back(access, form), request, notice)


@html_errors
async def remove_page(request: web.Request) -> web.StreamResponse:
    """Removes a member after a confirm step (`members.remove`, as the API does;
    `member.remove`); never the last owner."""
    form = await read_form(request)
    access = await org_page(request)
    which = member_id(request)
    pool = await request_pool(request)
    row = await members.get(pool, access.org["id"], which)
    if form.get("confirmed") != "yes":
        return await _members(request, access, confirm_remove=row, back=form.get("back", ""))
    try:
        await members.remove(
            pool, access.org["id"], which, actor_role=access.role, actor=actor(request, access.auth)
        )
    except DomainError as refused:
        return await _members(request, access, status=status_of(refused), error=refused.detail)
    notice = f"{row['email']} was removed from {access.org['name']}."
    raise await redirect_with_notice(_back(access, form), request, notice)


async def _limited(request: web.Request, access: OrgAccess, refused: TooMany) -> web.Response:
    return with_wait(await _members(request, access, status=429, error=refused.detail), refused)


@html_errors
async def resend_page(request: web.Request) -> web.StreamResponse:
    """Sends a pending member's email again (`require2fa.invitations.resend`, as the API does;
    owners, managers; a fresh link, `member.reinvite`, the outbox row; rate limited, a 429 is
    said on the page)."""
    form = await read_form(request)
    access = await org_page(request)
    try:
        row = await org_actions.resend(request, access, member_id(request))
    except TooMany as refused:
        return await _limited(request, access, refused)
    notice = f"The email was sent again to {row['email']}."
    raise await redirect_with_notice(_back(access, form), request, notice)


@html_errors
async def resend_all_page(request: web.Request) -> web.StreamResponse:
    """Sends every pending member's email again at once (`invitations.resend_all`; owners,
    managers; fresh links, `member.reinvite` each, the outbox rows; rate limited per
    organization)."""
    form = await read_form(request)
    access = await org_page(request)
    try:
        sent = await org_actions.resend_all(request, access)
    except TooMany as refused:
        return await _limited(request, access, refused)
    notice = (
        f"The email was sent again to {sent} pending member{'' if sent == 1 else 's'}."
        if sent
        else "No pending member has a link to send again."
    )
    raise await redirect_with_notice(_back(access, form), request, notice)


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
        return await _members(request, access, confirm_reset=row, back=posted.get("back", ""))
    await org_actions.confirm_if_owner(request, access)
    try:
        result = await org_actions.reset_2fa(request, access, which)
    except DomainError as refused:
        return await _members(request, access, status=status_of(refused), error=refused.detail)
    notice = f"The two-factor authentication of {row['email']} was reset."
    if result.removed:
        notice += " They were removed until they set it up again, and emailed a link back in."
    raise await redirect_with_notice(_back(access, posted), request, notice)


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
    raise await redirect_with_notice(_back(access, posted), request, notice)
