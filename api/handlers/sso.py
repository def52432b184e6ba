"""An organization's single sign-on configuration (`require2fa.single_sign_on`): owners save
and delete it (with a recent re-authentication), owners and managers read it (never the secret)."""

from __future__ import annotations

from aiohttp import web

from api import org_actions
from api.access import MANAGERS, org_access
from api.bodies import SsoIn
from api.connection import connection
from api.errors import api_error, parse_body
from api.jsonio import json_response
from api.keys import SETTINGS
from api.serializers import serialize_sso_config
from require2fa import single_sign_on


async def get_sso(request: web.Request) -> web.Response:
    """The organization's identity provider (owners, managers); 404 without one."""
    access = await org_access(request, roles=MANAGERS)
    async with connection(request) as conn:
        row = await single_sign_on.get_config(conn, access.org["id"])
    if row is None:
        raise api_error(404, single_sign_on.NOT_CONFIGURED)
    return json_response(serialize_sso_config(row, base_url=request.app[SETTINGS].base_url))


async def put_sso(request: web.Request) -> web.Response:
    """Saves the identity provider (owners; sudo) after reading its discovery document, with its
    email domains (409 when another organization lists one); audits `org.sso-edit`."""
    access = await org_access(request)
    body = await parse_body(request, SsoIn)
    row = await org_actions.save_sso(
        request,
        access,
        issuer=body.issuer,
        client_id=body.client_id,
        client_secret=body.client_secret,
        mfa=body.mfa,
        domains=body.domains,
    )
    return json_response(serialize_sso_config(row, base_url=request.app[SETTINGS].base_url))


async def delete_sso(request: web.Request) -> web.Response:
    """Deletes the identity provider (owners; sudo); audits `org.sso-edit`."""
    access = await org_access(request)
    await org_actions.delete_sso(request, access)
    return web.Response(status=204)
