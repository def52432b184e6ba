"""What the JSON handlers and the pages both do to an organization: take who is asking from the
request, call the one domain function. Each adapter then renders its answer; the messages the
committed change causes are sent by `jobs.wakeup`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from aiohttp import web

from api.access import MANAGERS, OrgAccess
from api.auth import actor, recently_authenticated, require_sudo
from api.connection import request_pool
from api.keys import REDIS, SETTINGS
from api.pagination import per_page_arg, split_page
from require2fa import (
    audit_log,
    caps,
    invitations,
    members,
    organization_settings,
    owner_tools,
    single_sign_on,
    webhooks,
)


async def change_settings(
    request: web.Request, access: OrgAccess, change: organization_settings.SettingsChange
) -> organization_settings.Change:
    """`organization_settings.apply_change` as the caller (`org.edit`, a run or a schedule); a
    run it starts is announced to the workers at its commit."""
    return await organization_settings.apply_change(
        await request_pool(request),
        access.org,
        change,
        actor=actor(request, access.auth),
        role=access.role,
        recently_authenticated=await recently_authenticated(request, access.auth),
    )


async def invite(
    request: web.Request, access: OrgAccess, *, email: str, role: str, teams: list[str]
) -> asyncpg.Record:
    """`members.invite` as the caller, counted first against the invitation caps per account and
    organization (`caps.count_invitation`, `TooMany`): the pending member, its teams,
    `member.invite` and the email, announced at commit."""
    await caps.count_invitation(
        request.app[REDIS],
        request.app[SETTINGS],
        organization_id=access.org["id"],
        user_id=access.auth.user_id,
    )
    return await members.invite(
        await request_pool(request),
        request.app[SETTINGS],
        access.org,
        email=email,
        role=role,
        teams=teams,
        inviter=access.auth.user["name"] or access.auth.user["email"],
        actor_role=access.role,
        actor=actor(request, access.auth),
    )


async def resend(request: web.Request, access: OrgAccess, member_id: int) -> asyncpg.Record:
    """`invitations.resend` (owners, managers; rate limited) as the caller; the email it queues
    is announced at commit."""
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
    return row


async def resend_all(request: web.Request, access: OrgAccess) -> int:
    """`invitations.resend_all` (owners, managers; rate limited per organization) as the
    caller: how many emails were queued."""
    access.require_role(*MANAGERS)
    return await invitations.resend_all(
        await request_pool(request),
        request.app[REDIS],
        request.app[SETTINGS],
        org=access.org,
        inviter=access.auth.user["name"] or access.auth.user["email"],
        actor=actor(request, access.auth),
    )


async def confirm_if_owner(request: web.Request, access: OrgAccess) -> None:
    """An owner resetting or exempting a member needs a recent re-authentication
    (`require_sudo`); anyone else gets the use case's 403 instead."""
    if access.role == "owner":
        await require_sudo(request)


def _on_member(request: web.Request, access: OrgAccess, member_id: int) -> dict[str, Any]:
    """What an owner tool takes about the member, the caller and the settings."""
    settings = request.app[SETTINGS]
    return {
        "organization_id": access.org["id"],
        "member_id": member_id,
        "actor": actor(request, access.auth),
        "actor_role": access.role,
        "base_url": settings.base_url,
        "secret_key": settings.secret_key,
        "reinstatement_window": settings.reinstatement_window,
    }


async def reset_2fa(
    request: web.Request, access: OrgAccess, member_id: int
) -> owner_tools.ResetResult:
    """`owner_tools.reset_member_2fa` as the caller (after `confirm_if_owner`); the emails it
    queues are announced at commit."""
    pool = await request_pool(request)
    async with pool.acquire() as conn, conn.transaction():
        result = await owner_tools.reset_member_2fa(conn, **_on_member(request, access, member_id))
    return result


async def set_exemption(
    request: web.Request,
    access: OrgAccess,
    member_id: int,
    *,
    reason: str | None,
    until: datetime | None,
) -> owner_tools.ExemptResult:
    """`owner_tools.set_exemption` as the caller (after `confirm_if_owner`); the Mandatory
    email of a member it removed is announced at commit."""
    pool = await request_pool(request)
    async with pool.acquire() as conn, conn.transaction():
        result = await owner_tools.set_exemption(
            conn, **_on_member(request, access, member_id), reason=reason, until=until
        )
    return result


async def create_webhook(
    request: web.Request, access: OrgAccess, *, url: str, events: list[str]
) -> webhooks.Created:
    """`webhooks.subscribe` as the caller, after a recent re-authentication (`require_sudo`)."""
    await require_sudo(request)
    return await webhooks.subscribe(
        await request_pool(request),
        request.app[SETTINGS],
        organization_id=access.org["id"],
        url=url,
        events=events,
        actor=actor(request, access.auth),
    )


async def change_webhook(
    request: web.Request,
    access: OrgAccess,
    webhook_id: int,
    *,
    url: str | None,
    events: list[str] | None,
    active: bool | None,
) -> asyncpg.Record:
    """`webhooks.change` as the caller; a new URL (where the events go) needs a recent
    re-authentication like creating a webhook."""
    if url is not None:
        await require_sudo(request)
    return await webhooks.change(
        await request_pool(request),
        request.app[SETTINGS],
        organization_id=access.org["id"],
        webhook_id=webhook_id,
        url=url,
        events=events,
        active=active,
        actor=actor(request, access.auth),
    )


async def rotate_webhook_secret(request: web.Request, access: OrgAccess, webhook_id: int) -> str:
    """`webhooks.rotate_secret` as the caller, after a recent re-authentication."""
    await require_sudo(request)
    return await webhooks.rotate_secret(
        await request_pool(request),
        request.app[SETTINGS],
        organization_id=access.org["id"],
        webhook_id=webhook_id,
        actor=actor(request, access.auth),
    )


async def ping_webhook(request: web.Request, access: OrgAccess, webhook_id: int) -> int:
    """`webhooks.ping` for the caller's organization: the id of the `ping` delivery it queues."""
    return await webhooks.ping(
        await request_pool(request), organization_id=access.org["id"], webhook_id=webhook_id
    )


async def redeliver_webhook(
    request: web.Request, access: OrgAccess, webhook_id: int, delivery_id: int
) -> None:
    """`webhooks.redeliver` for the caller's organization: that delivery is due again now."""
    await webhooks.redeliver(
        await request_pool(request),
        organization_id=access.org["id"],
        webhook_id=webhook_id,
        delivery_id=delivery_id,
    )


async def delete_webhook(request: web.Request, access: OrgAccess, webhook_id: int) -> None:
    """`webhooks.unsubscribe` as the caller."""
    await webhooks.unsubscribe(
        await request_pool(request),
        organization_id=access.org["id"],
        webhook_id=webhook_id,
        actor=actor(request, access.auth),
    )


async def save_sso(
    request: web.Request,
    access: OrgAccess,
    *,
    issuer: str,
    client_id: str,
    client_secret: str | None,
    mfa: str,
    domains: list[str] | None,
) -> asyncpg.Record:
    """`single_sign_on.save_config` as the caller (an owner after `require_sudo`)."""
    await confirm_if_owner(request, access)
    settings = request.app[SETTINGS]
    return await single_sign_on.save_config(
        await request_pool(request),
        organization_id=access.org["id"],
        actor=actor(request, access.auth),
        role=access.role,
        issuer=issuer,
        client_id=client_id,
        client_secret=client_secret,
        mfa=mfa,
        domains=domains,
        secret_key=settings.secret_key,
        development=settings.development,
    )


async def delete_sso(request: web.Request, access: OrgAccess) -> None:
    """`single_sign_on.delete_config` as the caller (an owner after `require_sudo`)."""
    await confirm_if_owner(request, access)
    await single_sign_on.delete_config(
        await request_pool(request),
        organization_id=access.org["id"],
        actor=actor(request, access.auth),
        role=access.role,
    )


@dataclass(frozen=True)
class AuditPage:
    event: str | None
    rows: list[asyncpg.Record]
    next_cursor: str | None


async def audit_page(request: web.Request, access: OrgAccess, *, per_page: int = 100) -> AuditPage:
    """The entries that `?event=`, `?cursor=` and `?per_page=` ask for, newest first (the API);
    `audit_log.page`."""
    event = request.query.get("event") or None
    cursor = audit_log.parse_cursor(request.query.get("cursor", ""))
    limit = per_page_arg(request, default=per_page)
    rows = await audit_log.page(
        await request_pool(request),
        access.org["id"],
        cursor=cursor,
        limit=limit + 1,
        where=audit_log.AuditFilter(event=event),
    )
    rows, next_cursor = split_page(rows, limit, _audit_cursor)
    return AuditPage(event=event, rows=rows, next_cursor=next_cursor)


def _audit_cursor(row: asyncpg.Record) -> str:
    return audit_log.cursor_text(audit_log.cursor_of(row))
