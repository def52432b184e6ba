"""Members: invite, list, get, update, remove."""

from __future__ import annotations

from typing import cast

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from api import org_actions
from api.access import MANAGERS, OrgAccess, member_id, org_access
from api.auth import actor
from api.bodies import InviteIn
from api.connection import connection, request_pool
from api.errors import api_error, parse_body
from api.jsonio import json_response
from api.limits import MemberSettings, TeamSlugs
from api.pagination import link_header, page_args, split_page
from api.serializers import serialize_member
from api.shapes import FactorType, Reset2fa
from require2fa import members
from require2fa.errors import Invalid

Role = members.Role


class ExemptionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=200)
    until: AwareDatetime


class MemberUpdate(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    role: Role | None = None
    teams: TeamSlugs | None = None
    settings: MemberSettings = None
    reinvite: bool | None = None
    # `{"reason", "until"}` exempts (owners), `null` lifts the exemption; absent: unchanged.
    exempt_2fa: ExemptionIn | None = Field(default=None, alias="exempt2FA")


async def list_members(request: web.Request) -> web.Response:
    access = await org_access(request)
    where = members.parse_query(request.query.get("query", ""))
    cursor, per_page = page_args(request)
    async with connection(request) as conn:  # the one that authenticated the request
        rows = await members.listed(
            conn, access.org["id"], where=where, after_id=cursor, limit=per_page + 1
        )
    rows, next_cursor = split_page(rows, per_page)
    response = json_response([serialize_member(row) for row in rows])
    response.headers["Link"] = link_header(request, next_cursor=next_cursor)
    return response


async def invite_member(request: web.Request) -> web.Response:
    """Invites by email (capped per account and organization, `require2fa.caps`): writes the
    pending member, its teams, `member.invite` and the email."""
    access = await org_access(request, roles=MANAGERS)
    body = await parse_body(request, InviteIn)
    row = await org_actions.invite(
        request, access, email=str(body.email), role=body.role, teams=body.teams
    )
    return json_response(serialize_member(row), status=201)


async def get_member(request: web.Request) -> web.Response:
    access = await org_access(request)
    row = await members.get(await request_pool(request), access.org["id"], member_id(request))
    return json_response(serialize_member(row))


async def update_member(request: web.Request) -> web.Response:
    """Role and teams (owners, managers) or one's own settings; writes `member.edit`."""
    access = await org_access(request)
    body = await parse_body(request, MemberUpdate)
    if body.reinvite:
        return await reinvite(request, access, member_id(request))
    if "exempt_2fa" in body.model_fields_set:
        return await exempt(request, access, body)
    updated = await members.update(
        await request_pool(request),
        access.org["id"],
        member_id(request),
        role=body.role,
        teams=body.teams,
        settings=body.settings,
        actor_role=access.role,
        actor=actor(request, access.auth),
    )
    return json_response(serialize_member(updated))


async def reinvite(request: web.Request, access: OrgAccess, member_id: int) -> web.Response:
    """Sends a pending member's email again with a fresh link (owners, managers; rate limited);
    `require2fa.invitations.resend`."""
    row = await org_actions.resend(request, access, member_id)
    return json_response(serialize_member(row))


async def delete_member(request: web.Request) -> web.Response:
    """Removes a member (owners, managers; anyone may leave); writes `member.remove`."""
    access = await org_access(request)
    await members.remove(
        await request_pool(request),
        access.org["id"],
        member_id(request),
        actor_role=access.role,
        actor=actor(request, access.auth),
    )
    return web.Response(status=204)


async def reset_2fa(request: web.Request) -> web.Response:
    """Resets a member's two-factor authentication (owners): deletes their factors and recovery
    codes, writes `member.2fa-reset`, queues a `Security notice`; where the organization
    requires 2FA the member is removed at once (`member.pending`, the Mandatory email).
    409 for a member whose account belongs to another organization too. An owner needs a
    recent re-authentication (`require_sudo`); anyone else gets the use case's 403."""
    access = await org_access(request)
    await org_actions.confirm_if_owner(request, access)
    result = await org_actions.reset_2fa(request, access, member_id(request))
    body: Reset2fa = {
        "member": serialize_member(result.member),
        "deletedFactors": cast(list[FactorType], result.deleted),
        "removed": result.removed,
    }
    return json_response(body)


async def exempt(request: web.Request, access: OrgAccess, body: MemberUpdate) -> web.Response:
    """`{"exempt2FA": {reason, until}}` exempts the member from the requirement until then (at
    most a year; owners), `{"exempt2FA": null}` lifts it; writes `member.2fa-exempt`. Lifted from
    a member without 2FA where it is required, the member is removed at once (the usual email).
    Only with `exempt2FA` alone: an exemption is not mixed with other changes."""
    if body.model_fields_set - {"exempt_2fa"}:
        raise api_error(400, "Change exempt2FA on its own, without other fields.")
    await org_actions.confirm_if_owner(request, access)
    exemption = body.exempt_2fa
    try:
        result = await org_actions.set_exemption(
            request,
            access,
            member_id(request),
            reason=exemption.reason if exemption else None,
            until=exemption.until if exemption else None,
        )
    except Invalid as refused:
        field = "exempt2FA.reason" if refused.code == "reason-needed" else "exempt2FA.until"
        raise api_error(400, "Invalid request.", errors={field: [refused.detail]}) from None
    return json_response(serialize_member(result.member))
