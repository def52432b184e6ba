"""The email's link, `/accept/{member_id}/{token}/`: what rejoining still needs, and the
"Rejoin" button (`require2fa.invitations`, through `api.invite_session` as the API does)."""

from __future__ import annotations

from aiohttp import web

from api import invite_session
from api.pages.base import html_errors, read_form, render
from require2fa import compliance


@html_errors
async def accept_page(request: web.Request) -> web.StreamResponse:
    """What rejoining still needs, with links; remembers the link in the session. A POST (the
    "Rejoin" button) joins and goes to the organization."""
    if request.method == "POST":
        await read_form(request)
        joined = await invite_session.accept(request)
        raise web.HTTPSeeOther(joined["redirect"])
    invite = await invite_session.look(request)
    return await render(
        request,
        "accept.html",
        invite=invite,
        here=request.path,
        needs=compliance.needs(invite["require2FALevel"]),
    )
