"""Invitation links: look at one, accept it (`require2fa.invitations`, through
`api.invite_session`).

Looking at a valid link remembers it in the session (`api.invite_session`), so that a person who
then sets up 2FA is led back to it; joining is always the explicit POST. A rejoin
link (removed for 2FA) answers 403 to any signed-in account but the one it was removed from.
"""

from __future__ import annotations

from aiohttp import web

from api import invite_session
from api.errors import api_error
from api.jsonio import json_response
from api.shapes import Invite, Joined, checked
from require2fa.invitations import NeedsSecondFactor


async def get_invite(request: web.Request) -> web.Response:
    """What accepting this link still needs (signing in, setting up 2FA); remembers the link in
    the session for the join after enrolling."""
    return json_response(checked(Invite, await invite_session.look(request)))


async def accept_invite(request: web.Request) -> web.Response:
    """Joins the signed-in user to the member row (role, teams, settings kept); `member.accept`."""
    try:
        joined = await invite_session.accept(request)
    except NeedsSecondFactor as refused:
        raise api_error(
            403, refused.detail, code=refused.code, require2FALevel=refused.level
        ) from None
    return json_response(checked(Joined, joined))
