"""Changing an organization's settings: its name, single sign-on, and the requirement itself
with its level (`require2fa.compliance.LEVELS`).

The rules: only an owner changes the requirement, its level or SSO; the owner must meet the level
themselves; the requirement cannot be turned on while SSO is on, and turning SSO on while it is
required turns the requirement off (the identity provider enforces 2FA then); lowering the level
needs a recent re-authentication. Every change is audited (`org.edit`); turning the requirement
on, or raising its level while it is on, writes a `queued` enforcement run that the caller's
adapter sends to the workers once the transaction commits (`started`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from db import audit, organizations, runs, schedule, users
from db.audit import Actor
from require2fa import compliance, reauth
from require2fa.errors import Invalid, NotAllowed, NotFound, NotSignedIn

ENFORCE_AT_NEEDS_ON = "enforceAt goes with turning the requirement on."
ENFORCE_AT_PAST = "The date to require two-factor authentication must be in the future."
ENFORCE_AT_TOO_LATE = "The date to require two-factor authentication is at most a year ahead."
NEEDS_PERSONAL_2FA = "Cannot require two-factor authentication without personal two-factor enabled."
NOT_WITH_SSO = "Cannot require two-factor authentication with SSO enabled"
OWNERS_ONLY = "Only an owner can change two-factor authentication or single sign-on settings."
# Codes of the refusals that the settings page tells apart.
PERSONAL_2FA_MISSING = "personal-2fa-missing"
SSO_ENABLED = "sso-enabled"
LEVEL_NOT_MET = "level-not-met"
LOWERING_NEEDS_SUDO = "Lowering the requirement level needs a recent re-authentication."


@dataclass(frozen=True)
class Change:
    """The outcome of `change_organization`."""

    org: asyncpg.Record
    run: asyncpg.Record | None  # the run this change started, or the one already under way
    started: bool  # a new run was written: send its coordinator once the transaction commits


async def apply_change(
    pool: asyncpg.Pool,
    org: asyncpg.Record,
    *,
    actor: Actor,
    role: str,
    recently_authenticated: bool,
    start_run: Callable[[int], Awaitable[None]],
    name: str | None = None,
    require_2fa: bool | None = None,
    sso_enabled: bool | None = None,
    enforce_at: datetime | None = None,
    level: str | None = None,
) -> Change:
    """`change_organization` in a transaction of its own (the API's PUT and the settings page);
    `start_run(run_id)` sends a new run to the workers once it is committed.

    An owner turning the requirement off (directly, or by turning SSO on) or lowering its level
    must have re-authenticated recently (`reauth`); others get their refusal from the rules."""
    turns_off = org["require_2fa"] and (require_2fa is False or bool(sso_enabled))
    lowers = level is not None and compliance.is_stricter(org["require_2fa_level"], level)
    if (turns_off or lowers) and role == "owner" and not recently_authenticated:
        raise NotSignedIn(reauth.REQUIRED_CODE, reauth.REQUIRED_DETAIL)
    async with pool.acquire() as conn, conn.transaction():
        change = await change_organization(
            conn,
            organization_id=org["id"],
            actor=actor,
            role=role,
            name=name,
            require_2fa=require_2fa,
            sso_enabled=sso_enabled,
            enforce_at=enforce_at,
            level=level,
            recently_authenticated=True,  # an owner's was checked above
        )
    if change.started and change.run is not None:
        await start_run(change.run["id"])
    return change


async def change_organization(
    conn: asyncpg.Connection,
    *,
    organization_id: int,
    actor: Actor,
    role: str,
    name: str | None = None,
    require_2fa: bool | None = None,
    sso_enabled: bool | None = None,
    enforce_at: datetime | None = None,
    level: str | None = None,
    recently_authenticated: bool = False,  # lowering the level needs it (the adapter knows)
) -> Change:
    """Applies a settings change in the caller's transaction, with its `org.edit` entries.

    Turning require-2FA on writes a `queued` run; turning it on while it is on starts nothing and
    returns the run under way (or the latest one). Turning it off, or turning SSO on while it is
    required, cancels the run under way. Raising the level while it is required starts a run as
    turning it on does (a run under way is cancelled and replaced, so that the members it passed
    are judged again); lowering it starts nothing. Raises a `DomainError` when the rules forbid
    the change.

    With `enforce_at`, turning it on writes a `scheduled` run instead and the requirement stays
    off until then (`db.schedule`; `org.edit` carries `enforce_at`). Any later choice about the
    requirement (off, on now, another date) or SSO turned on replaces the schedule.
    """
    org = await organizations.lock(conn, organization_id)
    if org is None:
        raise NotFound("not-found", "The requested organization does not exist.")
    if (require_2fa or level is not None) and actor.user_id is not None:
        # The same lock as deleting a factor: the owner cannot lose their last factor while
        # turning the requirement on (the order is organization, then users, as in a batch).
        await users.lock(conn, [actor.user_id])
    await check(
        conn,
        org,
        actor=actor,
        role=role,
        name=name,
        require_2fa=require_2fa,
        sso_enabled=sso_enabled,
        enforce_at=enforce_at,
        level=level,
        recently_authenticated=recently_authenticated,
    )
    new_sso = org["sso_enabled"] if sso_enabled is None else sso_enabled
    new_require = org["require_2fa"] if require_2fa is None else require_2fa
    if new_sso and new_require:
        new_require = False  # single sign-on takes over: the identity provider enforces 2FA
    # On a date: the requirement stays off until then; a scheduled run waits for it.
    on_a_date = bool(new_require and enforce_at is not None and not org["require_2fa"])
    if on_a_date:
        new_require = False
    old_level = org["require_2fa_level"]
    new_level = old_level if level is None else compliance.level_of(level)
    # A stricter level while the requirement stays on removes whoever no longer meets it.
    raised = org["require_2fa"] and new_require and compliance.is_stricter(new_level, old_level)

    edits = _edits(org, name=name, sso_enabled=new_sso, level=new_level)
    was_required = org["require_2fa"]
    if edits or new_require != was_required:
        org = await organizations.update_settings(
            conn,
            organization_id,
            name=name,
            sso_enabled=new_sso,
            require_2fa=new_require,
            level=new_level,
        )
    if edits:
        await audit.record(
            conn, organization_id=organization_id, event="org.edit", actor=actor, data=edits
        )
    if not was_required and (require_2fa is not None or new_sso):
        scheduled = await _replace_schedule(
            conn,
            organization_id,
            actor=actor,
            enforce_at=enforce_at if on_a_date else None,
            turned_off=not require_2fa or new_sso,
        )
        org = await organizations.get(conn, organization_id)
        if scheduled is not None:
            return Change(org=org, run=scheduled, started=False)
    if new_require == was_required and not raised:
        run = await runs.current_run(conn, organization_id) if require_2fa else None
        return Change(org=org, run=run, started=False)
    return await _requirement_changed(
        conn,
        org,
        actor=actor,
        required=new_require,
        turned=new_require != was_required,
        raised=raised,
    )


def _edits(
    org: asyncpg.Record, *, name: str | None, sso_enabled: bool, level: str
) -> dict[str, str]:
    """The `org.edit` data of a change to the name, SSO or the level."""
    edits: dict[str, str] = {}
    if name is not None and name != org["name"]:
        edits["name"] = f"to {name}"
    if sso_enabled != org["sso_enabled"]:
        edits["sso_enabled"] = f"to {sso_enabled}"
    if level != org["require_2fa_level"]:
        edits["require_2fa_level"] = f"to {level}"
    return edits


async def _requirement_changed(
    conn: asyncpg.Connection,
    org: asyncpg.Record,
    *,
    actor: Actor,
    required: bool,
    turned: bool,
    raised: bool,
) -> Change:
    """The requirement was turned on or off (`required` says which) or its level raised: audits
    the switch, cancels the run under way or writes a new one."""
    organization_id = org["id"]
    new_require = required
    if turned:
        await audit.record(
            conn,
            organization_id=organization_id,
            event="org.edit",
            actor=actor,
            data={"require_2fa": f"to {new_require}"},
        )
    if not new_require:
        await runs.cancel_active(conn, organization_id)
        return Change(org=org, run=None, started=False)
    if raised:
        # The run under way judged members by the old level: a new one goes over all of them.
        await runs.cancel_active(conn, organization_id)
    run = await runs.insert(conn, organization_id, actor)
    if run is None:  # a run left under way while it was off; let that one finish the work
        return Change(org=org, run=await runs.current_run(conn, organization_id), started=False)
    return Change(org=org, run=run, started=True)


async def _replace_schedule(
    conn: asyncpg.Connection,
    organization_id: int,
    *,
    actor: Actor,
    enforce_at: datetime | None,
    turned_off: bool,
) -> asyncpg.Record | None:
    """Cancels the scheduled run, if any (audited as turning it off when `turned_off`), and
    schedules the new one for `enforce_at`, when given; returns the new scheduled run."""
    if await schedule.scheduled_run(conn, organization_id) is not None:
        await schedule.cancel(conn, organization_id)
        if turned_off:
            await audit.record(
                conn,
                organization_id=organization_id,
                event="org.edit",
                actor=actor,
                data={"require_2fa": "to False"},
            )
    if enforce_at is None:
        return None
    run = await schedule.create(conn, organization_id, actor=actor, enforce_at=enforce_at)
    await audit.record(
        conn,
        organization_id=organization_id,
        event="org.edit",
        actor=actor,
        data={"require_2fa": "to True", "enforce_at": enforce_at.isoformat()},
    )
    return run


async def check(
    conn: asyncpg.Connection,
    org: asyncpg.Record,
    *,
    actor: Actor,
    role: str,
    name: str | None = None,
    require_2fa: bool | None = None,
    sso_enabled: bool | None = None,
    enforce_at: datetime | None = None,
    level: str | None = None,
    recently_authenticated: bool = True,
) -> None:
    """Raises a `DomainError` when the rules forbid the change; changes nothing (the settings page
    asks it before its confirm step, `change_organization` again under the row lock)."""
    if enforce_at is not None:
        await _check_enforce_at(conn, enforce_at, require_2fa)
    if (
        require_2fa is not None or sso_enabled is not None or level is not None
    ) and role != "owner":
        raise NotAllowed("owners-only", OWNERS_ONLY)
    if name is not None and role not in ("owner", "manager"):
        raise NotAllowed("managers-only", "Only owners and managers can rename the organization.")
    if level is not None and level not in compliance.LEVELS:
        raise Invalid("unknown-level", f"The level must be one of: {', '.join(compliance.LEVELS)}.")
    new_sso = org["sso_enabled"] if sso_enabled is None else sso_enabled
    new_level = org["require_2fa_level"] if level is None else level
    if compliance.is_stricter(org["require_2fa_level"], new_level) and not recently_authenticated:
        raise NotSignedIn("sudo-required", LOWERING_NEEDS_SUDO)
    required = org["require_2fa"] if require_2fa is None else require_2fa
    if require_2fa or (required and level is not None):
        if new_sso:
            raise Invalid(SSO_ENABLED, NOT_WITH_SSO)
        await _check_actor_meets(conn, actor, new_level)


async def _check_enforce_at(
    conn: asyncpg.Connection, enforce_at: datetime, require_2fa: bool | None
) -> None:
    if not require_2fa:
        raise Invalid("enforce-at-needs-on", ENFORCE_AT_NEEDS_ON)
    now = await conn.fetchval("select now()")
    if enforce_at <= now:
        raise Invalid("enforce-at-past", ENFORCE_AT_PAST)
    if enforce_at > now + schedule.MAX_AHEAD:
        raise Invalid("enforce-at-too-late", ENFORCE_AT_TOO_LATE)


async def _check_actor_meets(conn: asyncpg.Connection, actor: Actor, level: str) -> None:
    """The one who requires 2FA at `level` has a second factor, and one that meets the level."""
    if actor.user_id is None or not await users.has_2fa(conn, actor.user_id):
        raise Invalid(PERSONAL_2FA_MISSING, NEEDS_PERSONAL_2FA)
    if not await users.has_2fa(conn, actor.user_id, level):
        raise Invalid(
            LEVEL_NOT_MET,
            "Cannot require this level without meeting it yourself: set up"
            f" {compliance.needs(level)}.",
        )


async def precheck(pool: asyncpg.Pool, org: asyncpg.Record, *, actor: Actor, **change: Any) -> None:
    """`check` on a connection of its own (the settings page, before its confirm step)."""
    async with pool.acquire() as conn:
        await check(conn, org, actor=actor, **change)
