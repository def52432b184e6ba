"""Invitation links: look at one, accept it, join through it after enrolling, have it sent again.

A link is `/accept/{member_id}/{token}/`; the member row keeps only the token's hash. Looking at a
valid link remembers it in the session, so that a person who then sets up 2FA (CONTRACT §1.4) is
joined as soon as the enrollment is confirmed, without coming back to the link.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiohttp import web
from aiohttp_session import Session, get_session

from api.access import MANAGERS, OrgAccess
from api.auth import actor, authenticate, require_user
from api.errors import api_error, path_id, rate_limited
from api.keys import PG, REDIS, SETTINGS
from api.serializers import serialize_member
from db import audit, maintenance, members, outbox, users
from db.audit import Actor
from jobs import email as email_jobs
from require2fa import compliance, email_contexts, links, ratelimit
from require2fa.security import new_token, token_hash, token_matches

INVALID = "Invalid invite code"
EXPIRED = "This invitation has expired"
# Session key of the link last looked at: {"memberId": int, "token": str}.
SESSION_KEY = "invite"
# Resending a member's email: a few times an hour is plenty and keeps inboxes from flooding.
REINVITE_LIMIT = ratelimit.Limit("member-reinvite", 5, 3600)


def _link_member_id(request: web.Request) -> int:
    try:
        return path_id(request, "member_id")
    except web.HTTPException:
        raise api_error(400, INVALID) from None


async def _pending_member(conn: asyncpg.Connection, member_id: int, token: str) -> asyncpg.Record:
    """The pending member a link names, locked; 400 for any bad link, 410 once expired.

    A purged member's genuine link (its tombstone keeps the token hash) is expired too, not
    invalid; a tampered one stays invalid.
    """
    row = await members.for_accept(conn, member_id)
    if row is None:
        purged = await maintenance.purged_link(conn, member_id)
        if purged is not None and token_matches(token, purged["token_hash"]):
            raise api_error(410, EXPIRED)
        raise api_error(400, INVALID)
    if row["user_id"] is not None or not token_matches(token, row["token_hash"]):
        raise api_error(400, INVALID)
    if members.is_expired(row, datetime.now(UTC)):
        raise api_error(410, EXPIRED)
    return row


async def _join(
    conn: asyncpg.Connection, row: asyncpg.Record, user: asyncpg.Record, who: Actor
) -> dict[str, Any]:
    """Gives the member row `row` the user back (role, teams and settings are the row's own);
    writes `member.accept`. The caller holds the row and user locks, inside a transaction."""
    try:
        async with conn.transaction():
            await members.reinstate(conn, row["id"], user_id=user["id"], email=user["email"])
    except asyncpg.UniqueViolationError:
        raise api_error(409, "Another membership already uses your email.") from None
    await audit.record(
        conn,
        organization_id=row["organization_id"],
        event="member.accept",
        actor=who,
        target_member_id=row["id"],
        target_user_id=user["id"],
        data={"email": user["email"], "role": row["role"], "via": row["pending_reason"]},
    )
    return {
        "orgSlug": row["org_slug"],
        "memberId": str(row["id"]),
        "redirect": links.organization_path(row["org_slug"]),
    }


def _forget(session: Session, member_id: int | None = None) -> None:
    """Drops the remembered link (only if it is `member_id`'s, when given)."""
    remembered = session.get(SESSION_KEY)
    if remembered is None:
        return
    if (
        member_id is None
        or not isinstance(remembered, dict)
        or remembered.get("memberId") == member_id
    ):
        del session[SESSION_KEY]


async def get_invite(request: web.Request) -> web.Response:
    """What accepting this link still needs (signing in, setting up 2FA); remembers the link in
    the session for the join after enrolling."""
    return web.json_response(await look(request))


async def look(request: web.Request) -> dict[str, Any]:
    """The link in the path (`member_id`, `token`) as `get_invite` describes it; a browser's
    session remembers it. 400 for a bad link, 410 once expired (JSON errors)."""
    auth = await authenticate(request)
    member_id = _link_member_id(request)
    token = request.match_info["token"]
    async with request.app[PG].acquire() as conn, conn.transaction():
        row = await _pending_member(conn, member_id, token)
        existing = False
        has2fa = False
        if auth is not None and not auth.half_signed_in:
            existing = await members.of_user(conn, row["organization_id"], auth.user_id) is not None
            has2fa = await users.has_2fa(conn, auth.user_id, row["require_2fa_level"])
    if auth is None or auth.token_id is None:
        # A browser (signed in or not) rather than a program holding an API token.
        session = await get_session(request)
        session[SESSION_KEY] = {"memberId": row["id"], "token": token}
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
    return web.json_response(await accept(request))


async def accept(request: web.Request) -> dict[str, Any]:
    """What `accept_invite` does for the link in the path; `{"orgSlug", "memberId",
    "redirect"}`. Errors are JSON `HTTPException`s (401, 400, 403, 409, 410)."""
    auth = await require_user(request)
    member_id = _link_member_id(request)
    async with request.app[PG].acquire() as conn, conn.transaction():
        # The user first, then the member: the order enrollment (then join) takes them in.
        await users.lock(conn, [auth.user_id])
        row = await _pending_member(conn, member_id, request.match_info["token"])
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
        joined = await _join(conn, row, auth.user, actor(request, auth))
    _forget(await get_session(request), member_id)
    return joined


async def join_from_session(
    request: web.Request, conn_or_pool: asyncpg.Connection | asyncpg.Pool, user_id: int
) -> dict[str, Any] | None:
    """Joins `user_id` through the link remembered in the session, if there is one and it is
    still good; writes `member.accept`. Returns `{"orgSlug", "memberId", "redirect"}`, or None.

    Called by the 2FA enrollment after its transaction has committed. A link that turned out
    bad (used, replaced, expired) is forgotten; one that only lacks 2FA is kept for later.
    """
    session = await get_session(request)
    remembered = session.get(SESSION_KEY)
    if not isinstance(remembered, dict):
        return None
    if isinstance(conn_or_pool, asyncpg.Pool):
        async with conn_or_pool.acquire() as conn:
            return await _join_remembered(request, session, conn, user_id, remembered)
    return await _join_remembered(request, session, conn_or_pool, user_id, remembered)


async def _join_remembered(
    request: web.Request,
    session: Session,
    conn: asyncpg.Connection,
    user_id: int,
    remembered: dict[str, Any],
) -> dict[str, Any] | None:
    member_id, token = remembered.get("memberId"), remembered.get("token")
    if not isinstance(member_id, int) or not isinstance(token, str):
        _forget(session)
        return None
    try:
        async with conn.transaction():
            await users.lock(conn, [user_id])
            user = await users.by_id(conn, user_id)
            row = await _pending_member(conn, member_id, token)
            if user is None or await members.of_user(conn, row["organization_id"], user_id):
                _forget(session)
                return None
            if row["require_2fa"] and not await users.has_2fa(
                conn, user_id, row["require_2fa_level"]
            ):
                return None
            who = Actor(user_id=user_id, label=user["email"], ip_address=request.remote)
            joined = await _join(conn, row, user, who)
    except web.HTTPException:
        _forget(session)
        return None
    _forget(session)
    return joined


async def reinvite(request: web.Request, access: OrgAccess, member_id: int) -> web.Response:
    """Sends a pending member's email again with a fresh link, so the old one stops working;
    `reinstate_by` stays counted from the removal. Rate limited per member; `member.reinvite`."""
    access.require_role(*MANAGERS)
    settings = request.app[SETTINGS]
    verdict = await ratelimit.hit(
        request.app[REDIS], settings.redis_namespace, REINVITE_LIMIT, f"member:{member_id}"
    )
    if not verdict.allowed:
        raise rate_limited(verdict.retry_after, "This member was sent too many emails; try later.")
    org = access.org
    token = new_token()
    async with request.app[PG].acquire() as conn, conn.transaction():
        # Locked first, so that an accept or the purge committing meanwhile is seen, not raced.
        await members.lock(conn, member_id)
        row = await members.get(conn, org["id"], member_id)
        if row is None:
            raise api_error(404, "The requested member does not exist.")
        if row["user_id"] is not None:
            raise api_error(409, "This member has already joined.")
        if members.is_expired(row, datetime.now(UTC)):
            raise api_error(410, EXPIRED)
        await conn.execute(
            "update members set token_hash = $2 where id = $1", row["id"], token_hash(token)
        )
        if row["pending_reason"] == "2fa":
            template = "removed_for_2fa"
            context = email_contexts.removed_for_2fa(
                base_url=settings.base_url,
                org_name=org["name"],
                org_slug=org["slug"],
                member_id=row["id"],
                member_email=row["email"],
                token=token,
                reinstate_by=row["reinstate_by"],
                level=org["require_2fa_level"],
            )
        else:
            template = "invite"
            context = email_contexts.invite(
                base_url=settings.base_url,
                org_name=org["name"],
                org_slug=org["slug"],
                inviter=access.auth.user["name"] or access.auth.user["email"],
                member_id=row["id"],
                token=token,
            )
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
    await email_jobs.kick()
    return web.json_response(serialize_member(updated))
