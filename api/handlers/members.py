"""Members: invite, list, get, update, remove."""

from __future__ import annotations

from typing import Literal

import asyncpg
from aiohttp import web
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from api import org_actions
from api.access import MANAGERS, OrgAccess, org_access
from api.auth import actor, require_sudo
from api.connection import connection
from api.errors import api_error, parse_body, path_id
from api.jsonio import json_response
from api.keys import SETTINGS
from api.limits import Email, MemberSettings, TeamSlugs
from api.pagination import link_header, page_args, split_page
from api.serializers import serialize_member
from db import audit, members, organizations, outbox
from db.members import MemberFilter
from jobs import email as email_jobs
from require2fa import email_contexts, owner_tools
from require2fa.errors import Invalid
from require2fa.security import new_token, token_hash

Role = Literal["owner", "manager", "admin", "member", "billing"]
ROLES: tuple[str, ...] = Role.__args__  # type: ignore[attr-defined]


class InviteIn(BaseModel):
    email: Email
    role: Role = "member"
    teams: TeamSlugs = Field(default_factory=list)


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


def parse_query(text: str) -> MemberFilter:
    """`has2fa:false is:pending role:admin alice` → a filter; unknown keys are a 400."""
    has2fa = pending = role = None
    exempt: bool | None = None
    words: list[str] = []
    for term in text.split():
        key, sep, value = term.partition(":")
        if not sep:
            words.append(term)
        elif key == "has2fa" and value in ("true", "false"):
            has2fa = value == "true"
        elif key == "is" and value in ("pending", "active"):
            pending = value == "pending"
        elif key == "is" and value == "exempt":
            exempt = True
        elif key == "is" and value == "noncompliant":  # who a run now would remove
            has2fa, pending, exempt = False, False, False
        elif key == "role" and value in ROLES:
            role = value
        else:
            raise api_error(400, f"Unknown search term {term!r}.")
    return MemberFilter(
        has2fa=has2fa, pending=pending, role=role, text=" ".join(words) or None, exempt=exempt
    )


def member_id(request: web.Request) -> int:
    return path_id(request, "member_id", not_found="The requested member does not exist.")


async def resolve_teams(conn: asyncpg.Connection, org_id: int, slugs: list[str]) -> list[int]:
    found = await organizations.team_ids(conn, org_id, slugs)
    missing = sorted(set(slugs) - found.keys())
    if missing:
        raise api_error(400, "Invalid request.", errors={"teams": [f"Unknown team: {missing[0]}"]})
    return list(found.values())


def check_grant(access: OrgAccess, role: str) -> None:
    """Managers may hand out any role but owner."""
    if role == "owner" and access.role != "owner":
        raise api_error(403, "Only an owner can grant the owner role.")


async def keep_an_owner(conn: asyncpg.Connection, leaving: asyncpg.Record) -> None:
    """409 when `leaving` (about to lose the owner role or go) is the organization's last owner."""
    if leaving["role"] != "owner" or leaving["user_id"] is None:
        return
    if await members.lock_owners(conn, leaving["organization_id"]) <= 1:
        raise api_error(409, "An organization needs at least one owner.")


async def list_members(request: web.Request) -> web.Response:
    access = await org_access(request)
    where = parse_query(request.query.get("query", ""))
    cursor, per_page = page_args(request)
    async with connection(request) as conn:
        rows = await members.page(
            conn, access.org["id"], where=where, after_id=cursor, limit=per_page + 1
        )
    rows, next_cursor = split_page(rows, per_page)
    response = json_response([serialize_member(row) for row in rows])
    response.headers["Link"] = link_header(request, next_cursor=next_cursor)
    return response


async def invite_member(request: web.Request) -> web.Response:
    """Invites by email: writes the pending member, its teams, `member.invite` and the email."""
    access = await org_access(request, roles=MANAGERS)
    body = await parse_body(request, InviteIn)
    check_grant(access, body.role)
    settings = request.app[SETTINGS]
    token = new_token()
    org = access.org
    async with connection(request) as conn, conn.transaction():
        team_ids = await resolve_teams(conn, org["id"], body.teams)
        new_id = await members.insert_pending(
            conn,
            organization_id=org["id"],
            email=str(body.email),
            role=body.role,
            token_hash=token_hash(token),
            invited_by=access.auth.user_id,
        )
        if new_id is None:
            raise api_error(409, "This email is already a member or invited.")
        await members.set_teams(conn, new_id, team_ids)
        await audit.record(
            conn,
            organization_id=org["id"],
            event="member.invite",
            actor=actor(request, access.auth),
            target_member_id=new_id,
            data={"email": str(body.email).lower(), "role": body.role, "teams": body.teams},
        )
        await outbox.enqueue(
            conn,
            template="invite",
            to=str(body.email).lower(),
            context=email_contexts.invite(
                base_url=settings.base_url,
                secret_key=settings.secret_key,
                org_name=org["name"],
                org_slug=org["slug"],
                inviter=access.auth.user["name"] or access.auth.user["email"],
                member_id=new_id,
                token=token,
            ),
            dedupe_key=f"invite:{new_id}:{token_hash(token).hex()[:16]}",
            organization_id=org["id"],
            member_id=new_id,
        )
        row = await members.get(conn, org["id"], new_id)
    assert row is not None
    await email_jobs.kick()
    return json_response(serialize_member(row), status=201)


async def get_member(request: web.Request) -> web.Response:
    access = await org_access(request)
    async with connection(request) as conn:
        row = await members.get(conn, access.org["id"], member_id(request))
    if row is None:
        raise api_error(404, "The requested member does not exist.")
    return json_response(serialize_member(row))


async def update_member(request: web.Request) -> web.Response:
    """Role and teams (owners, managers) or one's own settings; writes `member.edit`."""
    access = await org_access(request)
    body = await parse_body(request, MemberUpdate)
    if body.reinvite:
        return await reinvite(request, access, member_id(request))
    if "exempt_2fa" in body.model_fields_set:
        return await exempt(request, access, body)
    org_id = access.org["id"]
    async with connection(request) as conn, conn.transaction():
        row = await members.get(conn, org_id, member_id(request))
        if row is None:
            raise api_error(404, "The requested member does not exist.")
        is_self = row["user_id"] == access.auth.user_id
        if body.settings is not None and not is_self:
            raise api_error(403, "Only the member can change their own notification settings.")
        if body.role is not None or body.teams is not None:
            access.require_role(*MANAGERS)
            if row["role"] == "owner" and access.role != "owner":
                raise api_error(403, "Only an owner can change an owner.")
        if body.role is not None:
            check_grant(access, body.role)
            if body.role != "owner":
                await keep_an_owner(conn, row)
        await members.update(conn, row["id"], role=body.role, settings=body.settings)
        if body.teams is not None:
            await members.set_teams(conn, row["id"], await resolve_teams(conn, org_id, body.teams))
        changed = body.model_dump(exclude_none=True, exclude={"reinvite", "exempt_2fa"})
        await audit.record(
            conn,
            organization_id=org_id,
            event="member.edit",
            actor=actor(request, access.auth),
            target_member_id=row["id"],
            target_user_id=row["user_id"],
            data={"email": row["email"], **changed},
        )
        updated = await members.get(conn, org_id, row["id"])
    assert updated is not None
    return json_response(serialize_member(updated))


async def reinvite(request: web.Request, access: OrgAccess, member_id: int) -> web.Response:
    """Sends a pending member's email again with a fresh link (owners, managers; rate limited);
    `require2fa.invitations.resend`."""
    row = await org_actions.resend(request, access, member_id)
    return json_response(serialize_member(row))


async def delete_member(request: web.Request) -> web.Response:
    """Removes a member (owners, managers; anyone may leave); writes `member.remove`."""
    access = await org_access(request)
    org_id = access.org["id"]
    async with connection(request) as conn, conn.transaction():
        row = await members.get(conn, org_id, member_id(request))
        if row is None:
            raise api_error(404, "The requested member does not exist.")
        if row["user_id"] != access.auth.user_id:
            access.require_role(*MANAGERS)
            if row["role"] == "owner" and access.role != "owner":
                raise api_error(403, "Only an owner can remove an owner.")
        await keep_an_owner(conn, row)
        await members.delete(conn, row["id"])
        await audit.record(
            conn,
            organization_id=org_id,
            event="member.remove",
            actor=actor(request, access.auth),
            target_member_id=row["id"],
            target_user_id=row["user_id"],
            data={"email": row["email"], "role": row["role"]},
        )
    return web.Response(status=204)


async def reset_2fa(request: web.Request) -> web.Response:
    """Resets a member's two-factor authentication (owners): deletes their factors and recovery
    codes, writes `member.2fa-reset`, queues a `Security notice`; where the organization
    requires 2FA the member is removed at once (`member.pending`, the Mandatory email).
    409 for a member whose account belongs to another organization too. An owner needs a
    recent re-authentication (`require_sudo`); anyone else gets the use case's 403."""
    access = await org_access(request)
    if access.role == "owner":
        await require_sudo(request)
    settings = request.app[SETTINGS]
    async with connection(request) as conn, conn.transaction():
        result = await owner_tools.reset_member_2fa(
            conn,
            organization_id=access.org["id"],
            member_id=member_id(request),
            actor=actor(request, access.auth),
            actor_role=access.role,
            base_url=settings.base_url,
            secret_key=settings.secret_key,
            reinstatement_window=settings.reinstatement_window,
        )
    await email_jobs.kick()
    return json_response(
        {
            "member": serialize_member(result.member),
            "deletedFactors": result.deleted,
            "removed": result.removed,
        }
    )


async def exempt(request: web.Request, access: OrgAccess, body: MemberUpdate) -> web.Response:
    """`{"exempt2FA": {reason, until}}` exempts the member from the requirement until then (at
    most a year; owners), `{"exempt2FA": null}` lifts it; writes `member.2fa-exempt`. Lifted from
    a member without 2FA where it is required, the member is removed at once (the usual email).
    Only with `exempt2FA` alone: an exemption is not mixed with other changes."""
    if body.model_fields_set - {"exempt_2fa"}:
        raise api_error(400, "Change exempt2FA on its own, without other fields.")
    if access.role == "owner":  # anyone else gets the use case's 403
        await require_sudo(request)
    settings = request.app[SETTINGS]
    exemption = body.exempt_2fa
    async with connection(request) as conn, conn.transaction():
        try:
            result = await owner_tools.set_exemption(
                conn,
                organization_id=access.org["id"],
                member_id=member_id(request),
                actor=actor(request, access.auth),
                actor_role=access.role,
                reason=exemption.reason if exemption else None,
                until=exemption.until if exemption else None,
                base_url=settings.base_url,
                secret_key=settings.secret_key,
                reinstatement_window=settings.reinstatement_window,
            )
        except Invalid as refused:
            field = "exempt2FA.reason" if refused.code == "reason-needed" else "exempt2FA.until"
            raise api_error(400, "Invalid request.", errors={field: [refused.detail]}) from None
    if result.removed:
        await email_jobs.kick()
    return json_response(serialize_member(result.member))
