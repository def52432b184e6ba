"""Invitation links: look at one, accept it, or have it sent again."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
from aiohttp import web

from api.access import MANAGERS, OrgAccess
from api.auth import actor, authenticate, require_user
from api.errors import api_error, path_id
from api.keys import PG, SETTINGS
from api.serializers import serialize_member
from db import audit, members, outbox, users
from require2fa.security import new_token, token_hash, token_matches

INVALID = "Invalid invite code"
EXPIRED = "This invitation has expired"


async def _pending_member(conn: asyncpg.Connection, request: web.Request) -> asyncpg.Record:
    """The pending member the link names, locked; 400 for any bad link, 410 once expired."""
    try:
        member_id = path_id(request, "member_id")
    except web.HTTPException:
        raise api_error(400, INVALID) from None
    row = await members.for_accept(conn, member_id)
    if row is None or not token_matches(request.match_info["token"], row["token_hash"]):
        raise api_error(400, INVALID)
    if members.is_expired(row, datetime.now(UTC)):
        raise api_error(410, EXPIRED)
    return row


async def get_invite(request: web.Request) -> web.Response:
    """What accepting this link still needs: signing in, setting up 2FA."""
    auth = await authenticate(request)
    async with request.app[PG].acquire() as conn, conn.transaction():
        row = await _pending_member(conn, request)
        existing = False
        has2fa = False
        if auth is not None and not auth.half_signed_in:
            existing = await members.of_user(conn, row["organization_id"], auth.user_id) is not None
            has2fa = await users.has_2fa(conn, auth.user_id)
    signed_in = auth is not None and not auth.half_signed_in
    return web.json_response(
        {
            "orgSlug": row["org_slug"],
            "orgName": row["org_name"],
            "email": row["email"],
            "role": row["role"],
            "needsAuthentication": not signed_in,
            "needs2fa": bool(row["require_2fa"]) and not has2fa,
            "existingMember": existing,
            "pendingReason": row["pending_reason"],
            "reinstateBy": row["reinstate_by"].isoformat() if row["reinstate_by"] else None,
        }
    )


async def accept_invite(request: web.Request) -> web.Response:
    """Joins the signed-in user to the member row (role, teams, settings kept); `member.accept`."""
    auth = await require_user(request)
    async with request.app[PG].acquire() as conn, conn.transaction():
        row = await _pending_member(conn, request)
        if await members.of_user(conn, row["organization_id"], auth.user_id) is not None:
            raise api_error(409, "You are already a member of this organization.")
        if row["require_2fa"] and not await users.has_2fa(conn, auth.user_id):
            raise api_error(
                403,
                "This organization requires two-factor authentication; set it up first.",
                code="2fa-required",
            )
        try:
            await members.reinstate(conn, row["id"], user_id=auth.user_id, email=auth.user["email"])
        except asyncpg.UniqueViolationError:
            raise api_error(409, "Another membership already uses your email.") from None
        await audit.record(
            conn,
            organization_id=row["organization_id"],
            event="member.accept",
            actor=actor(request, auth),
            target_member_id=row["id"],
            target_user_id=auth.user_id,
            data={"email": auth.user["email"], "role": row["role"], "via": row["pending_reason"]},
        )
    return web.json_response({"orgSlug": row["org_slug"], "memberId": str(row["id"])})


async def reinvite(request: web.Request, access: OrgAccess, member_id: int) -> web.Response:
    """Sends a pending member's email again with a fresh link (the old one stops working)."""
    access.require_role(*MANAGERS)
    settings = request.app[SETTINGS]
    org = access.org
    token = new_token()
    async with request.app[PG].acquire() as conn, conn.transaction():
        row = await members.get(conn, org["id"], member_id)
        if row is None:
            raise api_error(404, "The requested member does not exist.")
        if row["user_id"] is not None:
            raise api_error(409, "This member has already joined.")
        await conn.execute(
            "update members set token_hash = $2 where id = $1", row["id"], token_hash(token)
        )
        template = "removed_for_2fa" if row["pending_reason"] == "2fa" else "invite"
        context = {
            "org_name": org["name"],
            "org_slug": org["slug"],
            "accept_url": f"{settings.base_url}/accept/{row['id']}/{token}/",
            "inviter": access.auth.user["name"] or access.auth.user["email"],
            "reinstate_by": row["reinstate_by"].isoformat() if row["reinstate_by"] else None,
        }
        await outbox.enqueue(
            conn,
            template=template,
            to=row["email"],
            context=context,
            dedupe_key=f"reinvite:{row['id']}:{token_hash(token).hex()[:16]}",
            organization_id=org["id"],
            member_id=row["id"],
        )
        await audit.record(
            conn,
            organization_id=org["id"],
            event="member.reinvite",
            actor=actor(request, access.auth),
            target_member_id=row["id"],
            data={"email": row["email"], "reason": row["pending_reason"]},
        )
        updated = await members.get(conn, org["id"], row["id"])
    assert updated is not None
    return web.json_response(serialize_member(updated))
