"""Changing an organization's settings: its name, single sign-on, and the requirement itself
with its level (`require2fa.compliance.LEVELS`) and its date.

A change is one value (`SettingsChange`, parsed by `api.bodies.OrganizationUpdate` from the API's
body and from the settings page's form alike). `plan` says, from the organization as it is, what
the change needs (`Needs`: an owner, a recent re-authentication, the owner's own factors meeting
the level) and what it causes (`Plan`: `org.edit` entries, a run started or cancelled, a schedule
created, replaced or cancelled); `change_organization` checks the needs and carries it out in one
transaction, and the settings page asks the same plan whether to confirm first (`would_remove`).

The rules: only an owner changes the requirement, its level, its date or SSO; the owner must
meet the level themselves; the requirement cannot be turned on while SSO is on, and turning SSO on
while it is required turns the requirement off (the identity provider enforces 2FA then): that is
the flag-only `ssoEnabled`; an identity provider configured through `require2fa.single_sign_on`
refuses nothing (its `mfa` mode says whether its MFA counts, `compliance.idp_mfa_sql`); a change
that loosens the requirement (off, a lower level, a scheduled date cancelled or postponed) needs a
recent re-authentication. Turning the requirement on, or raising its level while it is on, writes
a `queued` enforcement run that the caller's adapter sends to the workers once the transaction
commits (`started`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Literal

import asyncpg

from db import audit, organizations, runs, schedule, users
from db.audit import Actor
from require2fa import compliance, reauth, removal, rollout
from require2fa.errors import Invalid, NotAllowed, NotFound
from require2fa.requirement import Requirement, Scope, check_teams

ENFORCE_AT_NEEDS_ON = "enforceAt goes with turning the requirement on."
ENFORCE_AT_PAST = "The date to require two-factor authentication must be in the future."
ENFORCE_AT_TOO_LATE = "The date to require two-factor authentication is at most a year ahead."
NEEDS_PERSONAL_2FA = "Cannot require two-factor authentication without personal two-factor enabled."
NOT_WITH_SSO = "Cannot require two-factor authentication with SSO enabled"
OWNERS_ONLY = "Only an owner can change two-factor authentication or single sign-on settings."
MANAGERS_ONLY = "Only owners and managers can rename the organization."
# Codes of the refusals that the settings page tells apart.
PERSONAL_2FA_MISSING = "personal-2fa-missing"
SSO_ENABLED = "sso-enabled"
LEVEL_NOT_MET = "level-not-met"

# Who may change a setting (`SettingsChange`'s field metadata), strictest first, with the refusal.
_WHO = {
    "owner": (("owner",), "owners-only", OWNERS_ONLY),
    "manager": (("owner", "manager"), "managers-only", MANAGERS_ONLY),
}


def _setting(who: Literal["owner", "manager"]) -> Any:
    return field(default=None, metadata={"who": who})


@dataclass(frozen=True)
class SettingsChange:
    """One change to an organization's settings, as asked; None leaves a setting as it is.
    A new setting is one field here (with who may change it) and its rule in `plan`."""

    name: str | None = _setting("manager")
    require_2fa: bool | None = _setting("owner")
    level: str | None = _setting("owner")  # one of `compliance.LEVELS`
    enforce_at: datetime | None = _setting("owner")  # with require_2fa: from then on
    sso_enabled: bool | None = _setting("owner")
    scope: Scope | None = _setting("owner")  # whom it applies to (`requirement.EVERYONE`: all)
    action: str | None = _setting("owner")  # one of `compliance.ACTIONS`
    reason: str | None = field(default=None, metadata={"who": None})  # why: in `org.edit`

    def __post_init__(self) -> None:
        if self.action is not None and self.action not in compliance.ACTIONS:
            raise Invalid(
                "unknown-action", f"The action must be one of: {', '.join(compliance.ACTIONS)}."
            )
        if self.level is not None and self.level not in compliance.LEVELS:
            raise Invalid(
                "unknown-level", f"The level must be one of: {', '.join(compliance.LEVELS)}."
            )
        if self.enforce_at is not None and not self.require_2fa:
            raise Invalid("enforce-at-needs-on", ENFORCE_AT_NEEDS_ON)

    @property
    def empty(self) -> bool:
        """Whether it asks for nothing at all."""
        return all(getattr(self, f.name) is None for f in fields(self) if f.metadata["who"])

    def who(self) -> frozenset[str]:
        """Who may make it: the `_WHO` of each setting it changes."""
        return frozenset(
            f.metadata["who"]
            for f in fields(self)
            if f.metadata["who"] and getattr(self, f.name) is not None
        )


@dataclass(frozen=True)
class Needs:
    """What a change needs from the one who makes it."""

    who: frozenset[str]  # keys of `_WHO`: the roles that may make it
    reauthenticated: bool  # a recent re-authentication (`reauth`): it loosens the requirement
    own_level: str | None  # the actor's own factors must meet this level


@dataclass(frozen=True)
class Plan:
    """What a change needs and what it causes, judged from the organization as it is."""

    change: SettingsChange
    needs: Needs
    refusal: Invalid | None  # a rule of the product forbids it, whoever asks
    after: Requirement
    sso_enabled: bool
    edits: dict[str, Any]  # the `org.edit` data of the name, SSO, the level, scope and action
    schedule: Literal["create", "replace", "cancel"] | None
    run: Literal["start", "restart", "cancel", "current"] | None

    @property
    def turns_on(self) -> bool:
        """Whether it turns the requirement on, now or on a date."""
        return self.run == "start" or self.schedule in ("create", "replace")

    @property
    def confirm(self) -> bool:
        """Whether people should see first how many members it would remove (`would_remove`):
        it turns the requirement on or raises its level."""
        return self.turns_on or self.run == "restart"


def plan(org: Mapping[str, Any], change: SettingsChange) -> Plan:
    """What `change` needs and causes for `org` (a row of `organizations`); reads nothing."""
    before = Requirement.of(org)
    sso = org["sso_enabled"] if change.sso_enabled is None else change.sso_enabled
    level = compliance.level_of(change.level or before.level)
    scope = before.scope if change.scope is None else change.scope
    action = change.action or before.action
    asked = before.required if change.require_2fa is None else change.require_2fa
    # Asking for the requirement (turning it on, or choosing its level while it stays on)
    # needs the owner's own factors to meet the level, and no SSO.
    asks = bool(change.require_2fa) or (change.level is not None and asked)
    refusal = Invalid(SSO_ENABLED, NOT_WITH_SSO) if asks and sso else None
    required = asked and not sso  # single sign-on takes over: the identity provider enforces 2FA
    # On a date: the requirement stays off until then; a scheduled run waits for it.
    on_a_date = required and change.enforce_at is not None and not before.required
    new_schedule: Literal["create", "replace", "cancel"] | None = None
    if on_a_date:
        new_schedule = "replace" if before.enforce_at else "create"
        after = Requirement(False, level, change.enforce_at, scope=scope, action=action)
    else:
        if before.enforce_at and not before.required and (change.require_2fa is not None or sso):
            new_schedule = "cancel"
        after = Requirement(
            required, level, None if new_schedule else before.enforce_at, scope=scope, action=action
        )
    run: Literal["start", "restart", "cancel", "current"] | None = None
    if after.required != before.required:
        run = "start" if after.required else "cancel"
    elif after.raised_from(before):
        run = "restart"  # the run under way judged members by the old level, scope or action
    elif after.required and change.require_2fa:
        run = "current"
    edits: dict[str, Any] = {}
    if change.name is not None and change.name != org["name"]:
        edits["name"] = f"to {change.name}"
    if sso != org["sso_enabled"]:
        edits["sso_enabled"] = f"to {sso}"
    if level != before.level:
        edits["require_2fa_level"] = f"to {level}"
    edits.update(after.edits(before))
    needs = Needs(
        who=change.who(),
        reauthenticated=after.looser_than(before),
        own_level=level if asks else None,
    )
    return Plan(
        change=change,
        needs=needs,
        refusal=refusal,
        after=after,
        sso_enabled=sso,
        edits=edits,
        schedule=new_schedule,
        run=run,
    )


@dataclass(frozen=True)
class Change:
    """The outcome of `change_organization`."""

    org: asyncpg.Record
    run: asyncpg.Record | None  # the run this change started, or the one already under way
    started: bool  # a new run was written: send its coordinator once the transaction commits


async def apply_change(
    pool: asyncpg.Pool,
    org: asyncpg.Record,
    asked: SettingsChange,
    *,
    actor: Actor,
    role: str,
    recently_authenticated: bool,
) -> Change:
    """`change_organization` in a transaction of its own (the API's PUT and the settings page);
    a run it writes `queued` is announced to the workers at commit (`jobs.wakeup`)."""
    async with pool.acquire() as conn, conn.transaction():
        change = await change_organization(
            conn,
            asked,
            organization_id=org["id"],
            actor=actor,
            role=role,
            recently_authenticated=recently_authenticated,
        )
    return change


async def change_organization(
    conn: asyncpg.Connection,
    change: SettingsChange,
    *,
    organization_id: int,
    actor: Actor,
    role: str,
    recently_authenticated: bool = False,
) -> Change:
    """Applies `change` in the caller's transaction, with its `org.edit` entries, under the
    organization's row lock (then the actor's user's, while their factors are judged). Raises a
    `DomainError` when the rules forbid it (`check`).

    Turning require-2FA on writes a `queued` run; turning it on while it is on starts nothing and
    returns the run under way (or the latest one). Turning it off, or turning SSO on while it is
    required, cancels the run under way. Raising the level while it is required starts a run as
    turning it on does (a run under way is cancelled and replaced, so that the members it passed
    are judged again); lowering it starts nothing. With `enforce_at`, turning it on writes a
    `scheduled` run instead and the requirement stays off until then (`db.schedule`); any later
    choice about the requirement (off, on now, another date) or SSO turned on replaces it.
    """
    org = await organizations.lock(conn, organization_id)
    if org is None:
        raise NotFound("not-found", "The requested organization does not exist.")
    await check_teams(conn, organization_id, change.scope)
    planned = plan(org, change)
    if planned.needs.own_level is not None and actor.user_id is not None:
        # The same lock as deleting a factor: the owner cannot lose their last factor while
        # requiring 2FA (the order is organization, then users, as in a batch).
        await users.lock(conn, [actor.user_id])
    await check(
        conn, planned, actor=actor, role=role, recently_authenticated=recently_authenticated
    )
    return await _carry_out(conn, org, planned, actor)


async def check(
    conn: asyncpg.Connection,
    planned: Plan,
    *,
    actor: Actor,
    role: str,
    recently_authenticated: bool,
) -> None:
    """Raises a `DomainError` when the rules forbid the planned change, in this order: its date,
    who asks, a recent re-authentication, SSO, the asker's own factors. Changes nothing."""
    if planned.change.enforce_at is not None:
        await _check_enforce_at(conn, planned.change.enforce_at)
    for who, (roles, code, sentence) in _WHO.items():
        if who in planned.needs.who and role not in roles:
            raise NotAllowed(code, sentence)
    if planned.needs.reauthenticated and not recently_authenticated:
        raise reauth.required()
    if planned.refusal is not None:
        raise planned.refusal
    if planned.needs.own_level is not None:
        await _check_actor_meets(conn, actor, planned.needs.own_level)


async def precheck(
    pool: asyncpg.Pool, org: asyncpg.Record, change: SettingsChange, *, actor: Actor, role: str
) -> Plan:
    """The plan of `change`, after `check` on a connection of its own (the settings page, before
    its confirm step; the re-authentication is asked when the confirmed form is sent)."""
    planned = plan(org, change)
    async with pool.acquire() as conn:
        await check_teams(conn, org["id"], change.scope)
        await check(conn, planned, actor=actor, role=role, recently_authenticated=True)
    return planned


async def would_remove(
    pool: asyncpg.Pool, org: asyncpg.Record, planned: Plan, *, actor: Actor, limit: int
) -> rollout.Noncompliant:
    """Who the planned change would remove, or block (`rollout.noncompliant` at its level and
    in its scope, the actor left out): the count, and the first `limit` of them by name."""
    scope = planned.after.scope
    found = await rollout.noncompliant(
        pool,
        org["id"],
        except_user_id=actor.user_id,
        after_id=None,
        limit=limit + 1,
        level=planned.after.level,
        scope=(scope.roles, scope.teams),
    )
    rows = [row for row in found.rows if row["user_id"] != actor.user_id][:limit]
    return rollout.Noncompliant(count=found.count, rows=rows)


async def _carry_out(
    conn: asyncpg.Connection, org: asyncpg.Record, planned: Plan, actor: Actor
) -> Change:
    """Writes what `planned` causes: the settings, the `org.edit` entries, the schedule, the run."""
    organization_id = org["id"]
    after = planned.after
    if planned.edits or after.required != org["require_2fa"]:
        org = await organizations.update_settings(
            conn,
            organization_id,
            name=planned.change.name,
            sso_enabled=planned.sso_enabled,
            require_2fa=after.required,
            level=after.level,
            scope=(list(after.scope.roles) or None, list(after.scope.teams) or None),
            action=after.action,
        )
        # Off, a lower level or a narrower scope: the blocked whom it no longer holds are in.
        await removal.unblock_released(conn, actor=actor, organization_id=organization_id)
    if planned.edits:
        await _audit(conn, org, actor, planned.edits)
    if planned.schedule in ("replace", "cancel"):
        await schedule.cancel(conn, organization_id)
        if planned.schedule == "cancel" and planned.run is None:  # not for a run now: off
            data = {"require_2fa": "to False", "schedule": "cancelled", **_why(planned)}
            await _audit(conn, org, actor, data)
    if planned.schedule in ("create", "replace") and after.enforce_at is not None:
        run = await schedule.create(conn, organization_id, actor=actor, enforce_at=after.enforce_at)
        data = {"require_2fa": "to True", "enforce_at": after.enforce_at.isoformat()}
        await _audit(conn, org, actor, data)
        return Change(org=await organizations.get(conn, organization_id), run=run, started=False)
    if planned.schedule is not None:
        org = await organizations.get(conn, organization_id)
    if planned.run is None or planned.run == "current":
        run = await runs.current_run(conn, organization_id) if planned.run else None
        return Change(org=org, run=run, started=False)
    if planned.run != "restart":  # turned on or off
        await _audit(conn, org, actor, {"require_2fa": f"to {after.required}", **_why(planned)})
    if planned.run != "start":
        await runs.cancel_active(conn, organization_id)
    if planned.run == "cancel":
        return Change(org=org, run=None, started=False)
    run = await runs.insert(conn, organization_id, actor)
    if run is None:  # a run left under way while it was off; let that one finish the work
        return Change(org=org, run=await runs.current_run(conn, organization_id), started=False)
    return Change(org=org, run=run, started=True)


def _why(planned: Plan) -> dict[str, str]:
    return {"reason": planned.change.reason} if planned.change.reason else {}


async def _audit(
    conn: asyncpg.Connection, org: asyncpg.Record, actor: Actor, data: dict[str, str]
) -> None:
    await audit.record(conn, organization_id=org["id"], event="org.edit", actor=actor, data=data)


async def _check_enforce_at(conn: asyncpg.Connection, enforce_at: datetime) -> None:
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
