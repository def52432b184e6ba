"""An organization's members as its owners and managers (and each member) change them: the
search language of the members list, inviting, changing a role, teams or one's own settings,
removing. Resending a member's email is `require2fa.invitations`; resetting a member's 2FA and
exemptions are `require2fa.owner_tools`.

Roles: managers may do what owners do to members, but only an owner may grant the owner role or
change or remove an owner, and an organization keeps at least one owner.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import asyncpg

from db import audit, members, organizations, outbox
from db.audit import Actor
from db.members import MemberFilter
from db.pool import Source, using
from require2fa import compliance, email_contexts
from require2fa.errors import Conflict, Invalid, NotAllowed, NotFound
from require2fa.security import new_token, token_hash
from require2fa.settings import Settings

Role = Literal["owner", "manager", "admin", "member", "billing"]
ROLES: tuple[str, ...] = get_args(Role)
MANAGERS = ("owner", "manager")
NOT_FOUND = "The requested member does not exist."
PENDING = MemberFilter(pending=True)  # invited or removed, not joined (again) yet


def parse_query(text: str) -> MemberFilter:
    """`has2fa:false is:pending role:admin alice` → a filter; unknown keys are `Invalid`."""
    has2fa = pending = role = None
    exempt: bool | None = None
    blocked: bool | None = None
    words: list[str] = []
    for term in text.split():
        key, sep, value = term.partition(":")
        if not sep:
            words.append(term)
        elif key == "has2fa" and value in ("true", "false"):
            has2fa = value == "true"
        elif key == "is" and value in ("pending", "active"):
            pending = value == "pending"
        elif key == "is" and value == "exempt":
            exempt = True
        elif key == "is" and value == "blocked":  # blocked in place until they comply
            blocked = True
        elif key == "is" and value == "noncompliant":  # who a run now would remove
            has2fa, pending, exempt = False, False, False
        elif key == "role" and value in ROLES:
            role = value
        else:
            raise Invalid("unknown-search-term", f"Unknown search term {term!r}.")
    return MemberFilter(
        has2fa=has2fa,
        pending=pending,
        role=role,
        text=" ".join(words) or None,
        exempt=exempt,
        blocked=blocked,
    )


async def _teams(conn: asyncpg.Connection, org_id: int, slugs: list[str]) -> list[int]:
    found = await organizations.team_ids(conn, org_id, slugs)
    missing = sorted(set(slugs) - found.keys())
    if missing:
        raise Invalid("unknown-team", f"Unknown team: {missing[0]}", field="teams")
    return list(found.values())


OWN_SETTINGS_ONLY = "Only the member can change their own notification settings."


def _require_manager(role: str) -> None:
    if role not in MANAGERS:
        raise NotAllowed("managers-only", "You do not have permission to perform this action.")


def _check_grant(actor_role: str, role: str) -> None:
    """Managers may hand out any role but owner."""
    if role == "owner" and actor_role != "owner":
        raise NotAllowed("owners-only", "Only an owner can grant the owner role.")


async def _keep_an_owner(conn: asyncpg.Connection, leaving: asyncpg.Record) -> None:
    """`Conflict` when `leaving` (about to lose the owner role or go) is the last owner."""
    if leaving["role"] != "owner" or leaving["user_id"] is None:
        return
    if await members.lock_owners(conn, leaving["organization_id"]) <= 1:
        raise Conflict("last-owner", "An organization needs at least one owner.")


async def get(pool: asyncpg.Pool, org_id: int, member_id: int) -> asyncpg.Record:
    """One member of the organization; `NotFound`."""
    async with pool.acquire() as conn:
        row = await members.get(conn, org_id, member_id)
    if row is None:
        raise NotFound("member-not-found", NOT_FOUND)
    return row


async def listed(
    source: Source,
    org_id: int,
    *,
    where: MemberFilter,
    after_id: int | None,
    limit: int,
    before_id: int | None = None,
) -> list[asyncpg.Record]:
    """A page of the organization's members that `where` selects, by id after `after_id` (or
    the page just before `before_id`)."""
    async with using(source) as conn:
        return await members.page(
            conn, org_id, where=where, after_id=after_id, limit=limit, before_id=before_id
        )


async def counted(source: Source, org_id: int, *, where: MemberFilter) -> int:
    """How many of the organization's members `where` selects."""
    async with using(source) as conn:
        return await members.count(conn, org_id, where=where)


async def invite(
    pool: asyncpg.Pool,
    settings: Settings,
    org: asyncpg.Record,
    *,
    email: str,
    role: str,
    teams: list[str],
    inviter: str,
    actor_role: str,
    actor: Actor,
) -> asyncpg.Record:
    """Invites `email` (owners, managers): writes the pending member, its teams,
    `member.invite` and the "Join {org}" email (wake the dispatcher). `Conflict` when the
    email is a member or invited already."""
    _require_manager(actor_role)
    _check_grant(actor_role, role)
    token = new_token()
    email = email.lower()
    async with pool.acquire() as conn, conn.transaction():
        team_ids = await _teams(conn, org["id"], teams)
        new_id = await members.insert_pending(
            conn,
            organization_id=org["id"],
            email=email,
            role=role,
            token_hash=token_hash(token),
            invited_by=actor.user_id,
        )
        if new_id is None:
            raise Conflict("already-invited", "This email is already a member or invited.")
        await members.set_teams(conn, new_id, team_ids)
        await audit.record(
            conn,
            organization_id=org["id"],
            event="member.invite",
            actor=actor,
            target_member_id=new_id,
            data={"email": email, "role": role, "teams": teams},
        )
        await outbox.enqueue(
            conn,
            template="invite",
            to=email,
            context=email_contexts.invite(
                base_url=settings.base_url,
                secret_key=settings.secret_key,
                org_name=org["name"],
                org_slug=org["slug"],
                inviter=inviter,
                member_id=new_id,
                token=token,
            ),
            dedupe_key=f"invite:{new_id}:{token_hash(token).hex()[:16]}",
            organization_id=org["id"],
            member_id=new_id,
        )
        row = await members.get(conn, org["id"], new_id)
    assert row is not None
    return row


async def update(
    pool: asyncpg.Pool,
    org_id: int,
    member_id: int,
    *,
    role: str | None,
    teams: list[str] | None,
    settings: dict[str, Any] | None,
    actor_role: str,
    actor: Actor,
) -> asyncpg.Record:
    """Changes a member's role and teams (owners, managers; an owner's by owners only) or the
    caller's own notification settings (a plain member may only touch their own row); writes
    `member.edit` with what changed, nothing at all when nothing does. The member as it is now.

    A change that moves an active member into the scope of a requirement that is on while they
    do not meet it is refused (`Conflict`, `INTO_SCOPE`), rather than removing or blocking them
    as a side effect of an edit: the one who edits learns why, the member is not cut off by a
    change of role, and every removal or block stays a run's (or an owner's reset) with its
    audit entry and email. Once they have set up 2FA the same change goes through."""
    async with pool.acquire() as conn, conn.transaction():
        row = await members.get(conn, org_id, member_id)
        if row is None:
            raise NotFound("member-not-found", NOT_FOUND)
        is_self = row["user_id"] == actor.user_id
        if not is_self and (actor_role not in MANAGERS or settings is not None):
            raise NotAllowed("own-settings-only", OWN_SETTINGS_ONLY)
        if role is not None or teams is not None:
            _require_manager(actor_role)
            if row["role"] == "owner" and actor_role != "owner":
                raise NotAllowed("owners-only", "Only an owner can change an owner.")
        if role is not None:
            _check_grant(actor_role, role)
            if role != "owner":
                await _keep_an_owner(conn, row)
        team_ids = await _teams(conn, org_id, teams) if teams is not None else None
        # What the request changes; a write that changes nothing records nothing (no audit entry,
        # so no webhook delivery either).
        changed = {
            key: value
            for key, value, now in (
                ("role", role, row["role"]),
                ("teams", sorted(set(teams)) if teams is not None else None, row["team_slugs"]),
                ("settings", settings, row["settings"]),
            )
            if value is not None and value != now
        }
        if not changed:
            return row
        await members.update(
            conn,
            row["id"],
            role=role if "role" in changed else None,
            settings=settings if "settings" in changed else None,
        )
        if team_ids is not None and "teams" in changed:
            await members.set_teams(conn, row["id"], team_ids)
        await audit.record(
            conn,
            organization_id=org_id,
            event="member.edit",
            actor=actor,
            target_member_id=row["id"],
            target_user_id=row["user_id"],
            data={"email": row["email"], **changed},
        )
        updated = await members.get(conn, org_id, row["id"])
        assert updated is not None
        if role is not None or teams is not None:
            await _refuse_into_scope(conn, org_id, row, updated)
    return updated


INTO_SCOPE = (
    "{email} does not have two-factor authentication with {needs}, which {org} requires of"
    " that role or team; they must set it up before this change."
)


async def _refuse_into_scope(
    conn: asyncpg.Connection, org_id: int, before: asyncpg.Record, after: asyncpg.Record
) -> None:
    """`Conflict` when the edit moved an active member who does not meet the requirement (no
    exemption either) into its scope while it is on; the caller's transaction rolls back."""
    org = await organizations.get(conn, org_id)
    scope = (org["require_2fa_scope_roles"], org["require_2fa_scope_teams"])
    if (
        not org["require_2fa"]
        or after["user_id"] is None
        or after["meets_level"]
        or after["exempt_2fa"]
        or compliance.in_scope(before["role"], before["team_slugs"], *scope)
        or not compliance.in_scope(after["role"], after["team_slugs"], *scope)
    ):
        return
    raise Conflict(
        "2fa-required-in-scope",
        INTO_SCOPE.format(
            email=after["email"], needs=compliance.needs(org["require_2fa_level"]), org=org["name"]
        ),
    )


async def remove(
    pool: asyncpg.Pool, org_id: int, member_id: int, *, actor_role: str, actor: Actor
) -> None:
    """Removes a member (owners, managers; an owner by owners only; anyone may leave), never
    the last owner; writes `member.remove`."""
    async with pool.acquire() as conn, conn.transaction():
        row = await members.get(conn, org_id, member_id)
        if row is None:
            raise NotFound("member-not-found", NOT_FOUND)
        if row["user_id"] != actor.user_id:
            _require_manager(actor_role)
            if row["role"] == "owner" and actor_role != "owner":
                raise NotAllowed("owners-only", "Only an owner can remove an owner.")
        await _keep_an_owner(conn, row)
        await members.delete(conn, row["id"])
        await audit.record(
            conn,
            organization_id=org_id,
            event="member.remove",
            actor=actor,
            target_member_id=row["id"],
            target_user_id=row["user_id"],
            data={"email": row["email"], "role": row["role"]},
        )
