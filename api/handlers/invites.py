"""Invitation links: look at one, accept it (`require2fa.invitations`).

Looking at a valid link remembers it in the session (`api.invite_session`), so that a person who
then sets up 2FA (CONTRACT §1.4) is led back to it; joining is always the explicit POST. A rejoin
link (removed for 2FA) answers 403 to any signed-in account but the one it was removed from.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp_session import get_session

from api import invite_session
from api.auth import actor, authenticate, require_user
from api.connection import connection
from api.errors import api_error, path_id
from api.jsonio import json_response
from api.keys import REDIS, SETTINGS
from db import members, users
from require2fa import compliance, invitations

INVALID = invitations.INVALID
EXPIRED = invitations.EXPIRED


def _link_member_id(request: web.Request) -> int:
    try:
        return path_id(request, "member_id")
    except web.HTTPException:
        raise api_error(400, INVALID) from None


async def _count(request: web.Request) -> None:
    """Counts the look (or acceptance) against the client's address: 429 once over."""
    settings = request.app[SETTINGS]
    await invitations.count_look(request.app[REDIS], settings.redis_namespace, request.remote)


async def get_invite(request: web.Request) -> web.Response:
    """What accepting this link still needs (signing in, setting up 2FA); remembers the link in
    the session for the join after enrolling."""
    return json_response(await look(request))


async def look(request: web.Request) -> dict[str, Any]:
    """The link in the path (`member_id`, `token`) as `get_invite` describes it; a browser's
    session remembers it. 400 for a bad link, 410 once expired (JSON errors)."""
    auth = await authenticate(request)
    await _count(request)
    member_id = _link_member_id(request)
    token = request.match_info["token"]
    async with connection(request) as conn, conn.transaction():
        row = await invitations.pending_member(conn, member_id, token)
        existing = False
        has2fa = False
        if auth is not None and not auth.half_signed_in:
            invitations.check_claimant(row, auth.user_id)
            existing = await members.of_user(conn, row["organization_id"], auth.user_id) is not None
            has2fa = await users.has_2fa(conn, auth.user_id, row["require_2fa_level"])
    if auth is None or auth.token_id is None:
        # A browser (signed in or not) rather than a program holding an API token.
        invite_session.remember(
            await get_session(request), row["id"], token, request.app[SETTINGS].secret_key
        )
    signed_in = auth is not None and not auth.half_signed_in
    return {
        "orgSlug": row["org_slug"],
        "orgName": row["org_name"],
        "email": row["email"],
        "role": row["role"],
        "needsAuthentication": not signed_in,
        "needs2fa": bool(row["require_2fa"]) and not has2fa,
        "require2FALevel": row["require_2fa_level"],
        "existingMember": existing,
        "pendingReason": row["pending_reason"],
        "reinstateBy": row["reinstate_by"].isoformat() if row["reinstate_by"] else None,
    }


async def accept_invite(request: web.Request) -> web.Response:
    """Joins the signed-in user to the member row (role, teams, settings kept); `member.accept`."""
    return json_response(await accept(request))


async def accept(request: web.Request) -> dict[str, Any]:
    """What `accept_invite` does for the link in the path; `{"orgSlug", "memberId",
    "redirect"}`. Errors are JSON `HTTPException`s (401, 400, 403, 409, 410)."""
    auth = await require_user(request)
    await _count(request)
    member_id = _link_member_id(request)
    async with connection(request) as conn, conn.transaction():
        # The user first, then the member: the order enrollment (then join) takes them in.
        await users.lock(conn, [auth.user_id])
        row = await invitations.pending_member(conn, member_id, request.match_info["token"])
        invitations.check_claimant(row, auth.user_id)
        if await members.of_user(conn, row["organization_id"], auth.user_id) is not None:
            raise api_error(409, "You are already a member of this organization.")
        if row["require_2fa"] and not await users.has_2fa(
            conn, auth.user_id, row["require_2fa_level"]
        ):
            raise api_error(
                403,
                "This organization requires two-factor authentication with"
                f" {compliance.needs(row['require_2fa_level'])}; set it up first.",
                code="2fa-required",
                require2FALevel=row["require_2fa_level"],
            )
        joined = await invitations.join(conn, row, auth.user, actor(request, auth))
    invite_session.forget(await get_session(request), member_id)
    return joined
