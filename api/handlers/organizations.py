"""Organizations and teams, and the organization's security settings (require 2FA, SSO)."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, Field

from api import org_actions
from api.access import MANAGERS, org_access
from api.auth import require_user
from api.bodies import OrganizationUpdate
from api.connection import request_pool
from api.errors import parse_body
from api.jsonio import json_response
from api.serializers import serialize_org, serialize_run_brief, serialize_team
from require2fa import organizations as organizations_domain
from require2fa.organizations import SLUG


class OrganizationIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    slug: str | None = Field(default=None, pattern=SLUG)


class TeamIn(BaseModel):
    slug: str | None = Field(default=None, pattern=SLUG)
    name: str = Field(min_length=1, max_length=200)


async def create_organization(request: web.Request) -> web.Response:
    """Creates an organization with the caller as its owner."""
    auth = await require_user(request)
    body = await parse_body(request, OrganizationIn)
    org = await organizations_domain.create_organization(
        await request_pool(request),
        name=body.name,
        slug=body.slug,
        owner_id=auth.user_id,
        owner_email=auth.user["email"],
    )
    return json_response(serialize_org(org, role="owner"), status=201)


async def list_organizations(request: web.Request) -> web.Response:
    """The caller's organizations."""
    auth = await require_user(request)
    rows = await organizations_domain.of_user(await request_pool(request), auth.user_id)
    return json_response([serialize_org(row, role=row["role"]) for row in rows])


async def get_organization(request: web.Request) -> web.Response:
    access = await org_access(request)
    return json_response(serialize_org(access.org, role=access.role))


async def update_organization(request: web.Request) -> web.Response:
    """Renames, or (owners) turns require-2FA or SSO on or off, sets its level or date; writes
    `org.edit`, and turning require-2FA on writes an enforcement run (or a scheduled one) and
    sends its coordinator after the commit."""
    access = await org_access(request)
    body = await parse_body(request, OrganizationUpdate)
    change = await org_actions.change_settings(request, access, body.change())
    brief = serialize_run_brief(change.run) if change.run else None
    return json_response(serialize_org(change.org, role=access.role, enforcement=brief))


async def create_team(request: web.Request) -> web.Response:
    """Creates a team (owners, managers, admins)."""
    access = await org_access(request, roles=(*MANAGERS, "admin"))
    body = await parse_body(request, TeamIn)
    team = await organizations_domain.create_team(
        await request_pool(request),
        organization_id=access.org["id"],
        name=body.name,
        slug=body.slug,
    )
    return json_response(serialize_team(team), status=201)


async def list_teams(request: web.Request) -> web.Response:
    access = await org_access(request)
    rows = await organizations_domain.teams(await request_pool(request), access.org["id"])
    return json_response([serialize_team(row) for row in rows])
