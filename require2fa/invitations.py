"""Invitation links: which member a link names, joining through it, and sending it again.

A link is `/accept/{member_id}/{token}/` (`require2fa.links`); the member row keeps only the
token's hash. A person joins the same member row (its role, teams and settings) once signed in,
with a second factor that meets the organization's level when it requires one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from db import audit, maintenance, members, outbox, users
from db.audit import Actor
from require2fa import compliance, email_contexts, links, ratelimit
from require2fa.errors import (
    Conflict,
    DomainError,
    Gone,
    Invalid,
    NotAllowed,
    NotFound,
    TooMany,
)
from require2fa.security import new_token, token_hash, token_matches
from require2fa.settings import Settings

INVALID = "Invalid invite code"
EXPIRED = "This invitation has expired"
# Resending a member's email: a few times an hour is plenty and keeps inboxes from flooding.
# Keyed by (organization, member) and counted once the member is known to be the organization's.
REINVITE_LIMIT = ratelimit.Limit("member-reinvite", 5, 3600)
# Looking at or accepting links, per client address: guessing is hopeless (256-bit tokens) and
# this keeps it so; a person's whole way back in takes a handful.
# Resending to every pending member at once (the members page's one action): per organization.
RESEND_ALL_LIMIT = ratelimit.Limit("member-reinvite-all", 3, 3600)
ACCEPT_LIMIT = ratelimit.Limit("accept-invite", 60, 900)
# What a presented token is compared with when the member is unknown or holds no token, so that
# every bad link costs the same work (one hash, one comparison) whatever made it bad.
_NO_TOKEN = token_hash(new_token())


async def count_look(redis: aioredis.Redis, namespace: str, address: str | None) -> None:
    """Counts one look at (or acceptance of) a link from `address`; `TooMany` once over."""
    verdict = await ratelimit.hit(redis, namespace, ACCEPT_LIMIT, address or "-")
    if not verdict.allowed:
        raise TooMany(
            "accept-limited",
            "Too many invitation links tried from your address",
            retry_after=verdict.retry_after,
        )


async def pending_member(conn: asyncpg.Connection, member_id: int, token: str) -> asyncpg.Record:
    """The pending member a link names, locked; `Invalid` for any bad link, `Gone` once expired.

    A purged member's genuine link (its tombstone keeps the token hash) is expired too, not
    invalid; a tampered one stays invalid.
    """
    # The same statements and one comparison for an unknown member, a used link and a wrong
    # token: how long the answer takes says nothing about which it was.
    row = await members.for_accept(conn, member_id)
    purged = await maintenance.purged_link(conn, member_id)
    source = row if row is not None else purged
    stored = source["token_hash"] if source is not None else None
    matches = token_matches(token, stored or _NO_TOKEN) and stored is not None
    if row is None:
        if purged is not None and matches:
            raise Gone("invite-expired", EXPIRED)
        raise Invalid("invite-invalid", INVALID)
    if row["user_id"] is not None or not matches:
        raise Invalid("invite-invalid", INVALID)
    if members.is_expired(row, datetime.now(UTC)):
        raise Gone("invite-expired", EXPIRED)
    return row


async def join(
    conn: asyncpg.Connection, row: asyncpg.Record, user: asyncpg.Record, who: Actor
) -> dict[str, Any]:
    """Gives the member row `row` the user back (role, teams and settings are the row's own);
    writes `member.accept`. The caller holds the row and user locks, inside a transaction.
    `{"orgSlug", "memberId", "redirect"}`."""
    try:
        async with conn.transaction():
            await members.reinstate(conn, row["id"], user_id=user["id"], email=user["email"])
    except asyncpg.UniqueViolationError:
        raise Conflict("email-taken", "Another membership already uses your email.") from None
    await audit.record(
        conn,
        organization_id=row["organization_id"],
        event="member.accept",
        actor=who,
        target_member_id=row["id"],
        target_user_id=user["id"],
        data={"email": user["email"], "role": row["role"], "via": row["pending_reason"]},
    )
    return {
        "orgSlug": row["org_slug"],
        "memberId": str(row["id"]),
        "redirect": links.organization_path(row["org_slug"]),
    }


def requires_2fa(row: asyncpg.Record) -> bool:
    """Whether the organization of the pending member `row` (`members.for_accept`) requires
    2FA of them: it is required and their role or teams are in its scope."""
    return bool(row["require_2fa"]) and compliance.in_scope(
        row["role"],
        row["team_slugs"],
        row["require_2fa_scope_roles"],
        row["require_2fa_scope_teams"],
    )


async def check_claimant(conn: asyncpg.Connection, row: asyncpg.Record, user_id: int) -> None:
    """Who may take the member row a link names: a rejoin link (a member removed for 2FA) only
    the account it was taken from; an invitation only an account whose email is the invited one
    (case aside; issue 25, point 2: else a link opened in a browser signed into another account,
    maybe by a forged sign-in, would hand that account the role). `NotAllowed` for anyone else.
    A removed member's row carries their own email, so their rejoin link passes both checks."""
    removed = row["removed_user_id"]
    if row["pending_reason"] == "2fa" and removed is not None and removed != user_id:
        raise NotAllowed(
            "invite-other-account",
            f"This link gives {row['email']} back its membership of {row['org_name']}; only the"
            " account it was removed from can use it. Sign in as that account to rejoin.",
        )
    user = await users.by_id(conn, user_id)
    email = user["email"] if user is not None else ""
    if email.lower() != row["email"].lower():
        raise NotAllowed(
            "invite-other-email",
            f"This invitation was sent to {row['email']}; you are signed in as {email}."
            f" Sign in as {row['email']} (or create that account) to accept it.",
        )


class NeedsSecondFactor(NotAllowed):
    """Joining an organization that requires a second factor the person does not have yet
    (at its `level`)."""

    def __init__(self, level: str) -> None:
        super().__init__(
            "2fa-required",
            "This organization requires two-factor authentication with"
            f" {compliance.needs(level)}; set it up first.",
        )
        self.level = level


async def look(
    pool: asyncpg.Pool, member_id: int, token: str, *, user_id: int | None
) -> dict[str, Any]:
    """What accepting the link still needs, for the person signed in as `user_id` (None when
    nobody is): `{"orgSlug", "orgName", "email", "role", "needsAuthentication", "needs2fa",
    "require2FALevel", "existingMember", "pendingReason", "reinstateBy"}`. `Invalid` for a bad
    link, `Gone` once expired, `NotAllowed` for a rejoin link of another account."""
    async with pool.acquire() as conn, conn.transaction():
        row = await pending_member(conn, member_id, token)
        existing = False
        has2fa = False
        if user_id is not None:
            await check_claimant(conn, row, user_id)
            existing = await members.of_user(conn, row["organization_id"], user_id) is not None
            has2fa = await users.has_2fa(
                conn, user_id, row["require_2fa_level"], organization_id=row["organization_id"]
            )
    return {
        "orgSlug": row["org_slug"],
        "orgName": row["org_name"],
        "email": row["email"],
        "role": row["role"],
        "needsAuthentication": user_id is None,
        "needs2fa": requires_2fa(row) and not has2fa,
        "require2FALevel": row["require_2fa_level"],
        "existingMember": existing,
        "pendingReason": row["pending_reason"],
        "reinstateBy": row["reinstate_by"].isoformat() if row["reinstate_by"] else None,
    }


async def accept(
    pool: asyncpg.Pool, member_id: int, token: str, *, user: asyncpg.Record, who: Actor
) -> dict[str, Any]:
    """Joins `user` to the member row the link names (`join`): `Conflict` when they are a
    member already, `NeedsSecondFactor` without the factor the organization requires, and the
    link's refusals (`pending_member`, `check_claimant`)."""
    async with pool.acquire() as conn, conn.transaction():
        # The user first, then the member: the order enrollment (then join) takes them in.
        await users.lock(conn, [user["id"]])
        row = await pending_member(conn, member_id, token)
        await check_claimant(conn, row, user["id"])
        if await members.of_user(conn, row["organization_id"], user["id"]) is not None:
            raise Conflict("already-member", "You are already a member of this organization.")
        if requires_2fa(row) and not await users.has_2fa(
            conn, user["id"], row["require_2fa_level"], organization_id=row["organization_id"]
        ):
            raise NeedsSecondFactor(row["require_2fa_level"])
        return await join(conn, row, user, who)


@dataclass(frozen=True)
class Remembered:
    """What a remembered link offers once a 2FA enrollment has committed: the "Join {org}" step
    (`{"orgSlug", "orgName", "email", "memberId", "pendingReason"}`), or None; `keep` when the
    link is still good for later (the step offered, or it only lacks the factor required)."""

    step: dict[str, Any] | None
    keep: bool = False


async def remembered_step(
    pool: asyncpg.Pool, *, user_id: int, member_id: object, token: object
) -> Remembered:
    """The explicit "Join {org}" step that a link a browser remembered leads to, if it is still
    good for `user_id`. Joins nothing: the person joins by pressing Join on the link's page."""
    if not isinstance(member_id, int) or not isinstance(token, str):
        return Remembered(None)
    try:
        async with pool.acquire() as conn, conn.transaction():
            row = await pending_member(conn, member_id, token)
            await check_claimant(conn, row, user_id)
            if await members.of_user(conn, row["organization_id"], user_id):
                return Remembered(None)
            if requires_2fa(row) and not await users.has_2fa(
                conn, user_id, row["require_2fa_level"], organization_id=row["organization_id"]
            ):
                return Remembered(None, keep=True)
    except DomainError:
        return Remembered(None)
    step = {
        "orgSlug": row["org_slug"],
        "orgName": row["org_name"],
        "email": row["email"],
        "memberId": str(row["id"]),
        "pendingReason": row["pending_reason"],
    }
    return Remembered(step, keep=True)


async def resend(
    pool: asyncpg.Pool,
    redis: aioredis.Redis,
    settings: Settings,
    *,
    org: asyncpg.Record,
    member_id: int,
    inviter: str,
    actor: Actor,
) -> asyncpg.Record:
    """Sends a pending member's email again with a fresh link, so the old one stops working;
    `reinstate_by` stays counted from the removal. Rate limited per (organization, member),
    counted once the member is found in `org` (nobody spends another organization's allowance);
    `member.reinvite`. The member row as it is now; the email's commit wakes the
    dispatcher."""
    token = new_token()
    async with pool.acquire() as conn, conn.transaction():
        # Locked first, so that an accept or the purge committing meanwhile is seen, not raced.
        await members.lock(conn, member_id)
        row = await members.get(conn, org["id"], member_id)
        if row is None:
            raise NotFound("member-not-found", "The requested member does not exist.")
        verdict = await ratelimit.hit(
            redis, settings.redis_namespace, REINVITE_LIMIT, f"{org['id']}:{member_id}"
        )
        if not verdict.allowed:
            raise TooMany(
                "reinvite-limited",
                "This member was sent too many emails",
                retry_after=verdict.retry_after,
            )
        if row["user_id"] is not None:
            raise Conflict("member-joined", "This member has already joined.")
        if members.is_expired(row, datetime.now(UTC)):
            raise Gone("invite-expired", EXPIRED)
        await members.set_token_hash(conn, row["id"], token_hash(token))
        template, context = _email(settings, org, row, token, inviter)
        await outbox.enqueue(
            conn,
            template=template,
            to=row["email"],
            context=context,
            dedupe_key=f"reinvite:{row['id']}:{token_hash(token).hex()[:16]}",
            organization_id=org["id"],
            member_id=row["id"],
        )
        await audit.record(
            conn,
            organization_id=org["id"],
            event="member.reinvite",
            actor=actor,
            target_member_id=row["id"],
            data={"email": row["email"], "reason": row["pending_reason"]},
        )
        updated = await members.get(conn, org["id"], row["id"])
    assert updated is not None
    return updated


async def resend_all(
    pool: asyncpg.Pool,
    redis: aioredis.Redis,
    settings: Settings,
    *,
    org: asyncpg.Record,
    inviter: str,
    actor: Actor,
) -> int:
    """`resend` to every pending member of `org` whose link has not expired, at once: fresh
    links, the outbox rows and the `member.reinvite` entries in one transaction. Rate limited
    per organization (`TooMany`); how many were sent. The caller wakes the outbox."""
    verdict = await ratelimit.hit(redis, settings.redis_namespace, RESEND_ALL_LIMIT, str(org["id"]))
    if not verdict.allowed:
        raise TooMany(
            "reinvite-all-limited",
            "The pending members were sent their emails again a short while ago",
            retry_after=verdict.retry_after,
        )
    async with pool.acquire() as conn, conn.transaction():
        rows = await members.resendable(conn, org["id"])
        tokens = [new_token() for _ in rows]
        hashes = [token_hash(token) for token in tokens]
        await members.set_token_hashes(conn, [row["id"] for row in rows], hashes)
        emails = []
        for row, token, hashed in zip(rows, tokens, hashes, strict=True):
            template, context = _email(settings, org, row, token, inviter)
            emails.append(
                outbox.Email(
                    template=template,
                    to=row["email"],
                    context=context,
                    dedupe_key=f"reinvite:{row['id']}:{hashed.hex()[:16]}",
                    organization_id=org["id"],
                    member_id=row["id"],
                )
            )
        await outbox.enqueue_many(conn, emails)
        await audit.record_many(
            conn,
            organization_id=org["id"],
            event="member.reinvite",
            actor=actor,
            entries=[
                (row["id"], {"email": row["email"], "reason": row["pending_reason"]})
                for row in rows
            ],
        )
    return len(rows)


def _email(
    settings: Settings, org: asyncpg.Record, row: asyncpg.Record, token: str, inviter: str
) -> tuple[str, dict[str, Any]]:
    """The email a resend sends: the 2FA email again for a member removed for it, else the
    invitation."""
    if row["pending_reason"] == "2fa":
        return "removed_for_2fa", email_contexts.removed_for_2fa(
            base_url=settings.base_url,
            secret_key=settings.secret_key,
            org_name=org["name"],
            org_slug=org["slug"],
            member_id=row["id"],
            member_email=row["email"],
            token=token,
            reinstate_by=row["reinstate_by"],
            level=org["require_2fa_level"],
        )
    return "invite", email_contexts.invite(
        base_url=settings.base_url,
        secret_key=settings.secret_key,
        org_name=org["name"],
        org_slug=org["slug"],
        inviter=inviter,
        member_id=row["id"],
        token=token,
    )
