"""An organization's single sign-on settings page (`/organizations/{org}/settings/sso/`): the
identity provider's issuer, client id and secret, the `mfa` mode, the email domains whose
addresses the sign-in page leads to it, and the redirect URI to paste into the provider. It
saves and deletes through what the API calls (`api.org_actions.save_sso`, `delete_sso`: owners,
with the inline re-authentication step), so the page refuses and audits exactly what
`PUT|DELETE organizations/{org}/sso/` do."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from api import org_actions
from api.access import MANAGERS, OrgAccess
from api.bodies import SsoIn
from api.connection import request_pool
from api.errors import status_of
from api.jsonio import plain
from api.keys import SETTINGS
from api.pages.base import html_errors, org_page, org_url, read_form, render
from api.serializers import serialize_sso_config
from require2fa import organizations, single_sign_on
from require2fa.errors import Conflict, Invalid, NotAllowed

DOMAIN_SEPARATORS = re.compile(r"[\s,;]+")
MFA_LABELS = {
    "local": "Members set up their own second factor here",
    "idp": "The identity provider's MFA counts (its sign-in asserts it, within 30 days)",
}


async def _page(
    request: web.Request,
    access: OrgAccess,
    *,
    status: int = 200,
    error: str | None = None,
    notice: str | None = None,
    form: dict[str, Any] | None = None,
) -> web.Response:
    pool = await request_pool(request)
    base_url = request.app[SETTINGS].base_url
    row = await single_sign_on.get_config(pool, access.org["id"])
    config = plain(serialize_sso_config(row, base_url=base_url)) if row is not None else None
    if form is None and config is not None:
        form = {**config, "domains": ", ".join(config["domains"])}
    return await render(
        request,
        "sso_settings.html",
        status=status,
        org=access.org,
        role=access.role,
        orgs=await organizations.of_user(pool, access.auth.user_id),
        section="settings",
        config=config,
        form=form or {"issuer": "", "clientId": "", "mfa": "local", "domains": ""},
        redirect_uri=single_sign_on.redirect_uri(base_url),
        modes=MFA_LABELS,
        error=error,
        notice=notice,
    )


@html_errors
async def sso_settings_page(request: web.Request) -> web.StreamResponse:
    """The form (owners and managers see it; owners save): reads the provider's discovery
    document, stores the secret encrypted, audits `org.sso-edit`."""
    form = await read_form(request) if request.method == "POST" else None
    access = await org_page(request, roles=MANAGERS)
    if form is None:
        return await _page(request, access)
    shown = {key: form.get(key, "")[:2000] for key in ("issuer", "clientId", "mfa", "domains")}
    try:
        body = SsoIn(
            issuer=form.get("issuer", ""),
            clientId=form.get("clientId", ""),
            clientSecret=form.get("clientSecret") or None,
            mfa=form.get("mfa", "local"),  # type: ignore[arg-type]
            # Separated by commas, spaces or lines; an empty field lists none.
            domains=[d for d in DOMAIN_SEPARATORS.split(form.get("domains", "")) if d],
        )
    except ValidationError:
        return await _page(
            request,
            access,
            status=400,
            error="Enter the issuer, the client id and (the first time) the client secret.",
            form=shown,
        )
    try:
        await org_actions.save_sso(
            request,
            access,
            issuer=body.issuer,
            client_id=body.client_id,
            client_secret=body.client_secret,
            mfa=body.mfa,
            domains=body.domains,
        )
    except (Conflict, Invalid, NotAllowed) as refused:
        return await _page(
            request, access, status=status_of(refused), error=refused.detail, form=shown
        )
    return await _page(request, access, notice="Single sign-on is saved.")


@html_errors
async def sso_delete_page(request: web.Request) -> web.StreamResponse:
    """Deletes the identity provider (owners; `org.sso-edit`)."""
    await read_form(request)
    access = await org_page(request, roles=MANAGERS)
    await org_actions.delete_sso(request, access)
    raise web.HTTPSeeOther(org_url(access, "settings/sso/"))
