"""Owners' tools for one member's two-factor authentication: reset it, or exempt the member from
the requirement for a while (and what happens when an exemption lapses).

Use cases called by the API, the pages and the CLI alike. They work in the caller's
transaction and raise `require2fa.errors` (a code and a sentence) that each adapter maps once.

Locks follow the order of `db.batches`: the organization (FOR SHARE, as a batch takes it:
turning the requirement off or on waits for us and we for it), then the user (`db.users.lock`,
shared with enrollment and with the batches), then the member row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from db import audit, authenticators, members, outbox, sessions, users
from db.audit import Actor
from require2fa import compliance, email_contexts, removal
from require2fa.errors import Conflict, Invalid, NotAllowed, NotFound

OWNERS_ONLY = "Only an owner can reset a member's two-factor authentication."
NOT_YOURSELF = (
    "You cannot reset your own two-factor authentication; manage it on your security page."
)
NOT_ACTIVE = "This member has not joined yet: there is no two-factor authentication to reset."
IN_ANOTHER_ORG = (
    "This member's account also belongs to another organization (as a member, or removed for "
    "2FA and able to rejoin), so its two-factor "
    "authentication is not this organization's to reset; only the member can change it."
)
SUPERUSER = (
    "This member's account is a superuser's: its two-factor authentication cannot be reset here."
)

# The organization as a removal needs it, held FOR SHARE as a batch holds it (`db.batches`).
_ORGANIZATION_SQL = """select id, name, slug, require_2fa, require_2fa_level, require_2fa_action,
                             require_2fa_scope_roles, require_2fa_scope_teams, sso_mfa,
                             now() as now
                       from organizations where id = $1 for share"""


@dataclass(frozen=True)
class ResetResult:
    member: asyncpg.Record  # the member row after the reset
    deleted: list[str]  # the kinds of the factors deleted, one per factor
    removed: bool  # the organization requires 2FA: the member was made pending at once


async def reset_member_2fa(
    conn: asyncpg.Connection,
    *,
    organization_id: int,
    member_id: int,
    actor: Actor,
    actor_role: str,
    base_url: str,
    secret_key: str,
    reinstatement_window: timedelta,
) -> ResetResult:
    """Deletes the member's factors and recovery codes, ends their sessions and API tokens,
    writes `member.2fa-reset` and queues a `Security notice`; where the organization requires
    2FA, also removes the member as a batch of one (`require2fa.removal.make_pending`: pending
    row, `member.pending` with reason `2fa-reset`, the Mandatory email), unless an exemption of
    theirs lasts.

    Only for an active member whose user belongs to no other organization (their factors guard
    those too) and is no superuser. Call inside a transaction; its commit announces the outbox
    rows to the dispatchers (docs/ARCHITECTURE.md, "Wake-ups after commit").
    """
    if actor_role != "owner":
        raise NotAllowed("owners-only", OWNERS_ONLY)
    org = await conn.fetchrow(_ORGANIZATION_SQL, organization_id)
    if org is None:
        raise NotFound("not-found", "The requested organization does not exist.")
    row = await members.get(conn, organization_id, member_id)
    if row is None:
        raise NotFound("not-found", "The requested member does not exist.")
    user_id = row["user_id"]
    if user_id is None:
        raise Conflict("not-joined", NOT_ACTIVE)
    if user_id == actor.user_id:
        raise Conflict("not-yourself", NOT_YOURSELF)
    await users.lock(conn, [user_id])
    await members.lock(conn, member_id)
    row = await members.get(conn, organization_id, member_id)  # as of the locks
    if row is None or row["user_id"] != user_id:
        raise Conflict("changed-meanwhile", "This member changed meanwhile; look again.")
    user = await users.by_id(conn, user_id)
    assert user is not None
    if user["is_superuser"]:
        raise Conflict("superuser", SUPERUSER)
    if await members.other_organizations(conn, user_id, organization_id):
        raise Conflict("in-another-organization", IN_ANOTHER_ORG)

    deleted = await authenticators.delete_all(conn, user_id)
    # Whoever holds a session or an API token of theirs (maybe whoever took the factor) is
    # signed out: a token signs in as the user as a session does (issue 25, point 4).
    await sessions.end_others(conn, user_id, None)
    await authenticators.revoke_tokens(conn, user_id)
    entry = await audit.record(
        conn,
        organization_id=organization_id,
        event="member.2fa-reset",
        actor=actor,
        target_member_id=member_id,
        target_user_id=user_id,
        data={"email": row["email"], "factors": deleted},
    )
    removed = False
    if org["require_2fa"]:
        removed = await _make_pending(
            conn,
            org,
            row,
            actor,
            key=f"reset:{entry}",
            event_reason="2fa-reset",
            base_url=base_url,
            secret_key=secret_key,
            reinstatement_window=reinstatement_window,
        )
    await outbox.enqueue(
        conn,
        template="security_notice",
        to=user["email"],
        context=email_contexts.security_notice_reset(
            base_url=base_url, org_name=org["name"], actor=actor.label, removed=removed
        ),
        dedupe_key=f"security:reset:{entry}",
        organization_id=organization_id,
        member_id=member_id,
    )
    after = await members.get(conn, organization_id, member_id)
    assert after is not None
    return ResetResult(member=after, deleted=deleted, removed=removed)


async def _make_pending(
    conn: asyncpg.Connection,
    org: asyncpg.Record,
    row: asyncpg.Record,
    actor: Actor,
    *,
    key: str,
    event_reason: str | None = None,
    base_url: str,
    secret_key: str,
    reinstatement_window: timedelta,
) -> bool:
    """The member as a batch of one of `require2fa.removal.enforce` (by the organization's
    action: pending, with `member.pending` and the Mandatory email; or blocked, with
    `member.blocked` and its email) if it is in the requirement's scope and still does not
    meet it; whether it was made pending. Call with the member's user and row locked."""
    scope = (org["require_2fa_scope_roles"], org["require_2fa_scope_teams"])
    if not compliance.in_scope(row["role"], row["team_slugs"], *scope):
        return False
    found, member_range = removal.one(row)
    made, _ = await removal.enforce(
        conn,
        organization=removal.Organization(
            id=org["id"],
            name=org["name"],
            slug=org["slug"],
            level=org["require_2fa_level"],
            now=org["now"],
            action=org["require_2fa_action"],
            sso_idp=org["sso_mfa"] == "idp",
        ),
        found=found,
        keys=[key],
        actor=actor,
        member_range=member_range,
        base_url=base_url,
        secret_key=secret_key,
        reinstatement_window=reinstatement_window,
        event_reason=event_reason,
    )
    return made == 1 and org["require_2fa_action"] == "remove"


# --- Exemptions ----------------------------------------------------------------------------

MAX_EXEMPTION = timedelta(days=365)
EXEMPT_OWNERS_ONLY = "Only an owner can exempt a member from two-factor authentication."
EXEMPT_NOT_ACTIVE = "This member has not joined yet: only members can be exempted."
UNTIL_PAST = "The exemption must end in the future."
UNTIL_TOO_LATE = "An exemption lasts at most a year."
REASON_NEEDED = "Say why this member is exempt (for example: CI bot)."


@dataclass(frozen=True)
class ExemptResult:
    member: asyncpg.Record  # the member row afterwards
    removed: bool  # the exemption was lifted from a member who does not meet the requirement


async def set_exemption(
    conn: asyncpg.Connection,
    *,
    organization_id: int,
    member_id: int,
    actor: Actor,
    actor_role: str,
    reason: str | None,
    until: datetime | None,
    base_url: str,
    secret_key: str,
    reinstatement_window: timedelta,
) -> ExemptResult:
    """Exempts an active member from the requirement until `until` (at most a year ahead) for
    `reason`, or (`until` None) lifts the exemption; writes `member.2fa-exempt`.

    While it lasts the member is never removed or blocked for 2FA. Lifted from a member who has
    no second factor in an organization that requires it, the member is treated as anyone else
    at once: removed (`member.pending`, the Mandatory email). In the caller's transaction.
    """
    if actor_role != "owner":
        raise NotAllowed("owners-only", EXEMPT_OWNERS_ONLY)
    org = await conn.fetchrow(_ORGANIZATION_SQL, organization_id)
    if org is None:
        raise NotFound("not-found", "The requested organization does not exist.")
    if until is not None:
        reason = (reason or "").strip()
        if not reason:
            raise Invalid("reason-needed", REASON_NEEDED)
        if until.tzinfo is None:
            until = until.replace(tzinfo=UTC)
        if until <= org["now"]:
            raise Invalid("until-past", UNTIL_PAST)
        if until > org["now"] + MAX_EXEMPTION:
            raise Invalid("until-too-late", UNTIL_TOO_LATE)
    row = await members.get(conn, organization_id, member_id)
    if row is None:
        raise NotFound("not-found", "The requested member does not exist.")
    if row["user_id"] is None:
        raise Conflict("not-joined", EXEMPT_NOT_ACTIVE)
    await users.lock(conn, [row["user_id"]])
    await members.lock(conn, member_id)
    row = await members.get(conn, organization_id, member_id)
    if row is None or row["user_id"] is None:
        raise Conflict("changed-meanwhile", "This member changed meanwhile; look again.")
    await members.set_exemption(
        conn, member_id, until=until, reason=reason if until else None, by=actor
    )
    data: dict[str, object] = {"email": row["email"]}
    data["exempt2FA"] = (
        {"reason": reason, "until": until.isoformat()} if until is not None else None
    )
    entry = await audit.record(
        conn,
        organization_id=organization_id,
        event="member.2fa-exempt",
        actor=actor,
        target_member_id=member_id,
        target_user_id=row["user_id"],
        data=data,
    )
    removed = False
    if until is None and org["require_2fa"]:
        removed = await _make_pending(
            conn,
            org,
            row,
            actor,
            key=f"exempt:{entry}",
            base_url=base_url,
            secret_key=secret_key,
            reinstatement_window=reinstatement_window,
        )
    after = await members.get(conn, organization_id, member_id)
    assert after is not None
    return ExemptResult(member=after, removed=removed)


LAPSE_BATCH = 500


async def lapse_exemptions(
    conn: asyncpg.Connection, *, base_url: str, secret_key: str, reinstatement_window: timedelta
) -> tuple[int, int]:
    """Ends the exemptions whose time has come: each lapsed member is treated like anyone else
    (where the organization requires 2FA and the member has no second factor: removed, with
    `member.pending` and the Mandatory email), the exemption cleared, `member.2fa-exempt` with
    `lapsed`. Batches of one transaction each; two sweeps at once skip each other's rows.
    Returns (lapsed, removed)."""
    lapsed = removed = 0
    while True:
        async with conn.transaction():
            due = await members.lapsed_exemptions(conn, limit=LAPSE_BATCH)
            done = 0
            for item in due:
                outcome = await _lapse_one(
                    conn,
                    item,
                    base_url=base_url,
                    secret_key=secret_key,
                    reinstatement_window=reinstatement_window,
                )
                if outcome is not None:
                    done += 1
                    removed += outcome
        lapsed += done
        if done == 0:  # nothing due, or every row changed under us (the next sweep looks again)
            break
    return lapsed, removed


async def _lapse_one(
    conn: asyncpg.Connection,
    item: asyncpg.Record,
    *,
    base_url: str,
    secret_key: str,
    reinstatement_window: timedelta,
) -> int | None:
    """Ends one lapsed exemption; 1 when the member was removed, 0 when not, None when the row
    changed meanwhile (another sweep took it, or an owner re-granted or lifted it)."""
    org = await conn.fetchrow(_ORGANIZATION_SQL, item["organization_id"])
    if item["user_id"] is not None:
        await users.lock(conn, [item["user_id"]])
    await members.lock(conn, item["id"])
    row = await members.get(conn, item["organization_id"], item["id"])
    if (
        org is None
        or row is None
        or row["user_id"] != item["user_id"]
        or row["exempt_2fa_until"] != item["exempt_2fa_until"]
    ):
        return None
    await members.set_exemption(conn, row["id"], until=None, reason=None, by=None)
    entry = await audit.record(
        conn,
        organization_id=org["id"],
        event="member.2fa-exempt",
        actor=audit.SYSTEM,
        target_member_id=row["id"],
        target_user_id=row["user_id"],
        data={
            "email": row["email"],
            "exempt2FA": None,
            "lapsed": row["exempt_2fa_until"].isoformat(),
        },
    )
    if row["user_id"] is None or not org["require_2fa"]:
        return 0
    removed = await _make_pending(
        conn,
        org,
        row,
        audit.SYSTEM,
        key=f"lapsed:{entry}",
        base_url=base_url,
        secret_key=secret_key,
        reinstatement_window=reinstatement_window,
    )
    return int(removed)
