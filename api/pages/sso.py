"""Signing in through an organization's identity provider (OpenID Connect, `require2fa.sso`;
the use cases in `require2fa.single_sign_on`).

`GET /auth/sso/{org}/` keeps a fresh `state`, `nonce` and PKCE verifier in this browser's
server-side session and redirects to the provider; `GET /auth/sso/callback/` takes them out of
the session (once: a replayed callback finds nothing to match), verifies the answer and starts
a signed-in session as the password sign-in does (`api.auth.sign_in`), recording the
provider's `amr`, `acr` and `auth_time` in it.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp_session import get_session

from api.auth import sign_in
from api.connection import connection, request_pool
from api.keys import SETTINGS, SSO_KEYS
from api.pages.base import LOGIN, html_errors, render
from require2fa import single_sign_on, sso
from require2fa.errors import Invalid

FLOW_KEY = "sso_flow"  # the sign-in under way: state, nonce, verifier, organization
SIGNED_IN_KEY = "sso"  # what the provider asserted at this session's sign-in


@html_errors
async def sso_choose_page(request: web.Request) -> web.StreamResponse:
    """The sign-in page's "identity provider" form (an organization's slug, or an email address
    at a domain it lists): a page naming the organization, with the link that starts its
    sign-in (a link, not a redirect: the form's `form-action 'self'` would stop the browser at
    the provider's address). 404 page without a provider."""
    async with connection(request) as conn:
        found = await single_sign_on.provider_for_entry(
            conn, request.query.get("org", ""), secret_key=request.app[SETTINGS].secret_key
        )
    if found is None:
        raise web.HTTPSeeOther(LOGIN)
    return await render(
        request, "sso_continue.html", org_name=found.org_name, start=f"/auth/sso/{found.org_slug}/"
    )


@html_errors
async def sso_start_page(request: web.Request) -> web.StreamResponse:
    """Starts a sign-in at the organization's identity provider; writes the flow into the
    session. 404 page when the organization has none."""
    settings = request.app[SETTINGS]
    async with connection(request) as conn:
        found = await single_sign_on.provider(
            conn, request.match_info["org"], secret_key=settings.secret_key
        )
    started = sso.authorization_request(
        found.config, single_sign_on.redirect_uri(settings.base_url)
    )
    session = await get_session(request)
    session[FLOW_KEY] = {
        "org": found.org_slug,
        "state": started.state,
        "nonce": started.nonce,
        "verifier": started.code_verifier,
    }
    raise web.HTTPSeeOther(started.url)


@html_errors
async def sso_callback_page(request: web.Request) -> web.StreamResponse:
    """Finishes the sign-in the session started: verifies the provider's answer, links the
    member on a first sign-in (`member.sso-link`), records what was asserted, and signs in
    (half signed in when the user's own second factor is still owed)."""
    settings = request.app[SETTINGS]
    session = await get_session(request)
    flow: Any = session.pop(FLOW_KEY, None)  # one use, whatever comes next
    if not isinstance(flow, dict):
        raise Invalid(
            "sso-state",
            "This sign-in does not belong to this browser session; start the sign-in again.",
        )
    async with connection(request) as conn:
        found = await single_sign_on.provider(conn, flow["org"], secret_key=settings.secret_key)
    claims = await sso.finish(
        found.config,
        dict(request.query),
        flow["state"],
        flow["nonce"],
        flow["verifier"],
        single_sign_on.redirect_uri(settings.base_url),
        keys=request.app[SSO_KEYS],
    )
    done = await single_sign_on.sign_in(
        await request_pool(request), found, claims, ip_address=request.remote
    )
    await sign_in(request, done.user["id"], half=done.needs_second_factor)
    session = await get_session(request)
    session[SIGNED_IN_KEY] = single_sign_on.session_record(claims, found.org_slug)
    if done.needs_second_factor:
        raise web.HTTPSeeOther(f"{LOGIN}?next={done.redirect}")
    raise web.HTTPSeeOther(done.redirect)
