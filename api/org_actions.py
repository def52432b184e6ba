"""What the JSON handlers and the pages both do to an organization: take who is asking from the
request, call the one domain function, wake the workers. Each adapter then renders its answer."""

from __future__ import annotations

from datetime import datetime

import asyncpg
from aiohttp import web

from api.access import MANAGERS, OrgAccess
from api.auth import actor, recently_authenticated
from api.connection import request_pool
from api.dispatch import send_coordinator
from api.keys import REDIS, SETTINGS
from jobs import email as email_jobs
from require2fa import invitations, organization_settings


async def change_settings(
    request: web.Request,
    access: OrgAccess,
    *,
    name: str | None = None,
    require_2fa: bool | None = None,
    sso_enabled: bool | None = None,
    enforce_at: datetime | None = None,
    level: str | None = None,
) -> organization_settings.Change:
    """`organization_settings.apply_change` as the caller; a run it starts goes to the workers."""
    return await organization_settings.apply_change(
        await request_pool(request),
        access.org,
        actor=actor(request, access.auth),
        role=access.role,
        recently_authenticated=await recently_authenticated(request, access.auth),
        start_run=send_coordinator,
        name=name,
        require_2fa=require_2fa,
        sso_enabled=sso_enabled,
        enforce_at=enforce_at,
        level=level,
    )


async def resend(request: web.Request, access: OrgAccess, member_id: int) -> asyncpg.Record:
    """`invitations.resend` (owners, managers; rate limited) as the caller, then wakes the
    email dispatcher."""
    access.require_role(*MANAGERS)
    row = await invitations.resend(
        await request_pool(request),
        request.app[REDIS],
        request.app[SETTINGS],
        org=access.org,
        member_id=member_id,
        inviter=access.auth.user["name"] or access.auth.user["email"],
        actor=actor(request, access.auth),
    )
    await email_jobs.kick()
    return row
