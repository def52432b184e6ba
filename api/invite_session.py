"""The invitation link a browser looked at last, kept in its session: a person who then sets up
2FA is offered the explicit "Join {org}" step of that link once the enrollment is confirmed
(docs/BEHAVIOUR.md). Nothing joins without the person pressing Join on the link's page: a link
opened by mistake (or planted by someone else) must not join its organization on its own.
The step is `require2fa.invitations.remembered_step`."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp_session import Session, get_session

from api.auth import actor, authenticate, require_user
from api.connection import request_pool
from api.errors import MAX_ID
from api.keys import REDIS, SETTINGS
from require2fa import invitations, links
from require2fa.errors import Invalid
from require2fa.security import seal, unseal

# Session key of the link last looked at: {"memberId": int, "tokenSealed": str}. The token is a
# secret kept in a database row (the session's): sealed under a key derived from SECRET_KEY.
SESSION_KEY = "invite"
_PURPOSE = "session-invite-token"


def remember(session: Session, member_id: int, token: str, secret_key: str) -> None:
    session[SESSION_KEY] = {"memberId": member_id, "tokenSealed": seal(secret_key, _PURPOSE, token)}


def remembered(session: Session, secret_key: str) -> tuple[int, str] | None:
    """(member id, token) of the link the session remembers, or None."""
    held = session.get(SESSION_KEY)
    if not isinstance(held, dict):
        return None
    member_id, sealed = held.get("memberId"), held.get("tokenSealed")
    if not isinstance(member_id, int) or not isinstance(sealed, str):
        return None
    try:
        return member_id, unseal(secret_key, _PURPOSE, sealed)
    except ValueError:
        return None


def forget(session: Session, member_id: int | None = None) -> None:
    """Drops the remembered link (only if it is `member_id`'s, when given)."""
    held = session.get(SESSION_KEY)
    if held is None:
        return
    if member_id is None or not isinstance(held, dict) or held.get("memberId") == member_id:
        del session[SESSION_KEY]


async def step_from_session(request: web.Request, user_id: int) -> dict[str, Any] | None:
    """The "Join {org}" step of the link remembered in the session, if there is one and it is
    still good for `user_id`: `{"orgSlug", "orgName", "email", "memberId", "pendingReason",
    "acceptPath"}` (the link's page, where Join is pressed), or None. Joins nothing.

    Called by the 2FA enrollment after its transaction has committed. A link that turned out
    bad (used, replaced, expired, another account's) is forgotten.
    """
    session = await get_session(request)
    held = remembered(session, request.app[SETTINGS].secret_key)
    if held is None:
        return None
    outcome = await invitations.remembered_step(
        await request_pool(request), user_id=user_id, member_id=held[0], token=held[1]
    )
    if not outcome.keep:
        forget(session)
    if outcome.step is None:
        return None
    return {**outcome.step, "acceptPath": links.accept_path(*held)}


# --- Looking at and accepting the link in the path (the API and the accept page) -------------


def _link(request: web.Request) -> tuple[int, str]:
    """(member id, token) of the link in the path; `Invalid` when the id cannot be one."""
    try:
        member_id = int(request.match_info["member_id"])
    except ValueError:
        member_id = 0
    if not 0 < member_id <= MAX_ID:
        raise Invalid("invite-invalid", invitations.INVALID)
    return member_id, request.match_info["token"]


async def _count(request: web.Request) -> None:
    """Counts the look (or acceptance) against the client's address: `TooMany` once over."""
    settings = request.app[SETTINGS]
    await invitations.count_look(request.app[REDIS], settings.redis_namespace, request.remote)


async def look(request: web.Request) -> dict[str, Any]:
    """`invitations.look` for the link in the path and the caller; a browser's session (signed
    in or not, as opposed to a program holding an API token) remembers the link."""
    auth = await authenticate(request)
    await _count(request)
    member_id, token = _link(request)
    signed_in = auth is not None and not auth.half_signed_in
    found = await invitations.look(
        await request_pool(request),
        member_id,
        token,
        user_id=auth.user_id if auth is not None and signed_in else None,
    )
    if auth is None or auth.token_id is None:
        remember(await get_session(request), member_id, token, request.app[SETTINGS].secret_key)
    return found


async def accept(request: web.Request) -> dict[str, Any]:
    """`invitations.accept` for the link in the path, as the signed-in caller; the session
    forgets the link. `{"orgSlug", "memberId", "redirect"}`."""
    auth = await require_user(request)
    await _count(request)
    member_id, token = _link(request)
    joined = await invitations.accept(
        await request_pool(request), member_id, token, user=auth.user, who=actor(request, auth)
    )
    forget(await get_session(request), member_id)
    return joined
