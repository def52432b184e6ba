"""Organizations and teams, and the organization's security settings (require 2FA, SSO)."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime
from typing import Literal

import asyncpg
import structlog
from aiohttp import web
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from api.access import MANAGERS, OrgAccess, org_access
from api.auth import Auth, actor, require_sudo, require_user
from api.errors import api_error, parse_body
from api.keys import PG
from api.serializers import serialize_org, serialize_run, serialize_team
from db import members, organizations
from require2fa import compliance, organization_settings

log = structlog.get_logger(__name__)

SLUG = r"^[a-z0-9][a-z0-9-]{0,49}$"


class OrganizationIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    slug: str | None = Field(default=None, pattern=SLUG)


class OrganizationUpdate(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    require_2fa: bool | None = Field(default=None, alias="require2FA")
    require_2fa_level: Literal["any", "secure", "phishing-resistant"] | None = Field(
        default=None, alias="require2FALevel"
    )
    sso_enabled: bool | None = Field(default=None, alias="ssoEnabled")
    # With require2FA true: enforce from then on (ISO 8601 with its offset, at most a year ahead).
    enforce_at: AwareDatetime | None = Field(default=None, alias="enforceAt")


class TeamIn(BaseModel):
    slug: str | None = Field(default=None, pattern=SLUG)
    name: str = Field(min_length=1, max_length=200)


def slugify(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:50]
    if not slug:
        raise api_error(400, "Invalid request.", errors={"slug": ["Choose a slug."]})
    return slug


# Path segments of pages under /organizations/ that an organization's slug must not take.
RESERVED_SLUGS = frozenset({"new"})


async def new_organization(
    request: web.Request, auth: Auth, body: OrganizationIn
) -> asyncpg.Record:
    """Creates an organization with `auth`'s user as its owner (the API's POST and the New
    organization page); 400 for a reserved slug, 409 for a taken one."""
    slug = body.slug or slugify(body.name)
    if slug in RESERVED_SLUGS:
        raise api_error(400, "Invalid request.", errors={"slug": ["This slug is reserved."]})
    async with request.app[PG].acquire() as conn, conn.transaction():
        org = await organizations.create(conn, slug=slug, name=body.name)
        if org is None:
            raise api_error(409, "An organization with this slug already exists.")
        await members.insert_active(
            conn,
            organization_id=org["id"],
            user_id=auth.user_id,
            email=auth.user["email"],
            role="owner",
        )
    log.info("organization created", organization=org["slug"], user_id=auth.user_id)
    return org


async def create_organization(request: web.Request) -> web.Response:
    """Creates an organization with the caller as its owner."""
    auth = await require_user(request)
    body = await parse_body(request, OrganizationIn)
    org = await new_organization(request, auth, body)
    return web.json_response(serialize_org(org, role="owner"), status=201)


async def list_organizations(request: web.Request) -> web.Response:
    """The caller's organizations."""
    auth = await require_user(request)
    async with request.app[PG].acquire() as conn:
        rows = await organizations.for_user(conn, auth.user_id)
    return web.json_response([serialize_org(row, role=row["role"]) for row in rows])


async def get_organization(request: web.Request) -> web.Response:
    access = await org_access(request)
    return web.json_response(serialize_org(access.org, role=access.role))


async def update_organization(request: web.Request) -> web.Response:
    """Renames, or (owners) turns require-2FA or SSO on or off; writes `org.edit`, and turning
    require-2FA on writes an enforcement run and sends its coordinator after the commit."""
    access = await org_access(request)
    body = await parse_body(request, OrganizationUpdate)
    change = await apply_change(
        request,
        access,
        name=body.name,
        require_2fa=body.require_2fa,
        sso_enabled=body.sso_enabled,
        enforce_at=body.enforce_at,
        level=body.require_2fa_level,
    )
    extra = {"enforcement": serialize_run(change.run, brief=True)} if change.run else {}
    return web.json_response(serialize_org(change.org, role=access.role, **extra))


async def apply_change(
    request: web.Request,
    access: OrgAccess,
    *,
    name: str | None = None,
    require_2fa: bool | None = None,
    sso_enabled: bool | None = None,
    enforce_at: datetime | None = None,
    level: str | None = None,
) -> organization_settings.Change:
    """`organization_settings.change_organization` in its own transaction (the API's PUT and
    the settings page); a refusal is a `DomainError`; a new run's coordinator is sent after
    the commit.
    Turning the requirement off (directly, or by turning SSO on) or lowering its level needs a
    recent re-authentication of the owner (`require_sudo`)."""
    turns_off = access.org["require_2fa"] and (require_2fa is False or bool(sso_enabled))
    lowers = level is not None and compliance.is_stricter(access.org["require_2fa_level"], level)
    if (turns_off or lowers) and access.role == "owner":  # others get their 403 from the rules
        await require_sudo(request)
    async with request.app[PG].acquire() as conn, conn.transaction():
        change = await organization_settings.change_organization(
            conn,
            organization_id=access.org["id"],
            actor=actor(request, access.auth),
            role=access.role,
            name=name,
            require_2fa=require_2fa,
            sso_enabled=sso_enabled,
            enforce_at=enforce_at,
            level=level,
            # An owner who lowers the level got past `require_sudo` above.
            recently_authenticated=True,
        )
    if change.started and change.run is not None:
        await send_coordinator(change.run["id"])
    return change


async def send_coordinator(run_id: int) -> None:
    """Sends `enforcement.coordinate` for a committed run. If Redis is unreachable the run stays
    queued and `enforcement.sweep` sends it later; the answer does not wait for that."""
    from jobs.enforcement import coordinate

    try:
        await asyncio.to_thread(coordinate.send, run_id)
    except Exception:  # the run is committed; the sweeper sends it again
        log.exception("enforcement.coordinate_not_sent", run_id=run_id)


async def create_team(request: web.Request) -> web.Response:
    """Creates a team (owners, managers, admins)."""
    access = await org_access(request, roles=(*MANAGERS, "admin"))
    body = await parse_body(request, TeamIn)
    async with request.app[PG].acquire() as conn:
        team = await organizations.create_team(
            conn,
            organization_id=access.org["id"],
            slug=body.slug or slugify(body.name),
            name=body.name,
        )
    if team is None:
        raise api_error(409, "A team with this slug already exists.")
    return web.json_response(serialize_team(team), status=201)


async def list_teams(request: web.Request) -> web.Response:
    access = await org_access(request)
    async with request.app[PG].acquire() as conn:
        rows = await organizations.teams(conn, access.org["id"])
    return web.json_response([serialize_team(row) for row in rows])
