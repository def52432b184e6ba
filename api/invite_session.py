"""The invitation link a browser looked at last, kept in its session: a person who then sets up
2FA is joined as soon as the enrollment is confirmed, without coming back to the link
(CONTRACT §1.4). The join itself is `require2fa.invitations.join_remembered`."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp_session import Session, get_session

from api.keys import PG
from require2fa import invitations

# Session key of the link last looked at: {"memberId": int, "token": str}.
SESSION_KEY = "invite"


def remember(session: Session, member_id: int, token: str) -> None:
    session[SESSION_KEY] = {"memberId": member_id, "token": token}


def forget(session: Session, member_id: int | None = None) -> None:
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


async def join_from_session(request: web.Request, user_id: int) -> dict[str, Any] | None:
    """Joins `user_id` through the link remembered in the session, if there is one and it is
    still good; writes `member.accept`. Returns `{"orgSlug", "memberId", "redirect"}`, or None.

    Called by the 2FA enrollment after its transaction has committed. A link that turned out
    bad (used, replaced, expired) is forgotten; one that only lacks 2FA is kept for later.
    """
    session = await get_session(request)
    remembered = session.get(SESSION_KEY)
    if not isinstance(remembered, dict):
        return None
    outcome = await invitations.join_remembered(
        request.app[PG],
        user_id=user_id,
        member_id=remembered.get("memberId"),
        token=remembered.get("token"),
        ip_address=request.remote,
    )
    if not outcome.keep:
        forget(session)
    return outcome.joined
