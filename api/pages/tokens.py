"""The account's API tokens page: create one (sudo; the token shown this once), list them with
when each was last used, revoke one. It calls what `POST|GET|DELETE api-tokens/` call
(`require2fa.tokens`)."""

from __future__ import annotations

from aiohttp import web

from api.auth import require_sudo
from api.connection import request_pool
from api.errors import path_id
from api.pages.base import (
    html_errors,
    read_form,
    redirect_with_notice,
    render,
    signed_in,
    take_notice,
)
from require2fa import tokens

PATH = "/account/tokens/"


async def _tokens(
    request: web.Request, *, status: int = 200, created: tuple[str, str] | None = None
) -> web.Response:
    auth = await signed_in(request)
    return await render(
        request,
        "tokens.html",
        status=status,
        tokens=await tokens.listed(await request_pool(request), auth.user_id),
        created=created,
        notice=None if created else await take_notice(request),
    )


@html_errors
async def tokens_page(request: web.Request) -> web.StreamResponse:
    """The signed-in person's API tokens: names, created, last used."""
    return await _tokens(request)


@html_errors
async def create_token_page(request: web.Request) -> web.StreamResponse:
    """Creates an API token (a recent re-authentication, asked in place); answers the page with
    the token shown this once."""
    form = await read_form(request)
    auth = await signed_in(request)
    await require_sudo(request)
    name = form.get("name", "").strip()[:200]
    _token_id, token = await tokens.create(await request_pool(request), auth.user_id, name=name)
    return await _tokens(request, status=201, created=(name, token))


@html_errors
async def revoke_token_page(request: web.Request) -> web.StreamResponse:
    """Revokes one of the person's tokens; it stops working at once."""
    await read_form(request)
    auth = await signed_in(request)
    token_id = path_id(request, "id", not_found=tokens.NOT_FOUND)
    await tokens.revoke(await request_pool(request), auth.user_id, token_id)
    raise await redirect_with_notice(PATH, request, "The token was revoked; it no longer works.")
