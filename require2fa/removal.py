"""Making members pending or blocked for 2FA: the one use case behind every removal and block.

A run's batch, an owner's 2FA reset, an exemption lifted and an exemption lapsing all call
`make_pending` (a reset is a batch of one). It makes each member's fresh rejoin token and the
Mandatory email's context, then `db.removals.make_pending` writes, in one statement of the
caller's transaction, the member rows (kept with role, teams and settings; reason `2fa` or
`2fa-level`), the `member.pending` entries and the outbox rows. Waking the email dispatcher
after the commit is the caller's.

A run acts on its candidates by the organization's action (`enforce`): `remove` is
`make_pending`; `block` is `block`, which keeps the member active and marks them blocked, with
their `member.blocked` entries and one "Action required" email per run in the same statement.
`unblock_released` lets back in, in the caller's transaction, the blocked members whom the
requirement no longer holds (a factor added, the scope narrowed, the level lowered, it turned
off).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from db import removals
from db.audit import Actor
from db.removals import Candidate
from require2fa import compliance, email_contexts
from require2fa.security import new_tokens, token_hash

__all__ = [
    "Candidate",
    "Organization",
    "block",
    "enforce",
    "make_pending",
    "one",
    "unblock_released",
]

unblock_released = removals.unblock_released


@dataclass(frozen=True)
class Organization:
    """What a removal needs of the organization, read under its lock (FOR SHARE)."""

    id: int
    name: str
    slug: str
    level: str  # its requirement level
    now: datetime  # the transaction's time: the removal's, and where the window starts
    action: str = compliance.DEFAULT_ACTION  # what a run does: `remove` or `block`
    sso_idp: bool = False  # its identity provider's MFA counts: the email says so


def one(member: asyncpg.Record) -> tuple[list[Candidate], tuple[int, int]]:
    """An active member row as a batch of one: (candidates, member range)."""
    return [Candidate(member["id"], member["user_id"], member["email"])], (
        member["id"],
        member["id"],
    )


async def make_pending(
    conn: asyncpg.Connection,
    *,
    organization: Organization,
    found: Sequence[Candidate],
    dedupe_keys: Sequence[str],
    actor: Actor,
    member_range: tuple[int, int],
    base_url: str,
    secret_key: str,
    reinstatement_window: timedelta,
    run_id: int | None = None,
    event_reason: str | None = None,
) -> tuple[int, int]:
    """Makes pending those of `found` (with their Mandatory emails' dedupe keys, in the same
    order) who still do not meet the requirement: member rows, `member.pending` entries (reason
    `event_reason`, else the member's: `2fa` or `2fa-level`) and outbox rows, in the caller's
    transaction. Returns (made pending, members within `member_range`).

    Call with the organization held FOR SHARE and the candidates' users locked, in the order of
    `db.batches`.
    """
    tokens = new_tokens(len(found))
    reinstate_by = organization.now + reinstatement_window
    contexts = email_contexts.removed_for_2fa_each(
        [(c.member_id, c.email, token) for c, token in zip(found, tokens, strict=True)],
        base_url=base_url,
        secret_key=secret_key,
        org_name=organization.name,
        org_slug=organization.slug,
        reinstate_by=reinstate_by,
        level=organization.level,
        sso_idp=organization.sso_idp,
    )
    return await removals.make_pending(
        conn,
        organization_id=organization.id,
        level=organization.level,
        found=found,
        pending=removals.Pending(
            token_hashes=[token_hash(token) for token in tokens],
            contexts=contexts,
            dedupe_keys=list(dedupe_keys),
        ),
        actor=actor,
        now=organization.now,
        reinstate_by=reinstate_by,
        member_range=member_range,
        run_id=run_id,
        event_reason=event_reason,
    )


async def block(
    conn: asyncpg.Connection,
    *,
    organization: Organization,
    found: Sequence[Candidate],
    dedupe_keys: Sequence[str],
    actor: Actor,
    member_range: tuple[int, int],
    base_url: str,
    run_id: int | None = None,
) -> tuple[int, int]:
    """Blocks in place those of `found` who still do not meet the requirement and are not
    blocked yet: member rows (role, teams, settings untouched), `member.blocked` entries and one
    "Action required" email each (`dedupe_keys`, in the order of `found`), in the caller's
    transaction. Returns (blocked, members within `member_range`). The same locks as
    `make_pending`."""
    return await removals.block(
        conn,
        organization_id=organization.id,
        level=organization.level,
        found=found,
        context=email_contexts.blocked_for_2fa(
            base_url=base_url,
            org_name=organization.name,
            org_slug=organization.slug,
            level=organization.level,
        ),
        dedupe_keys=dedupe_keys,
        actor=actor,
        now=organization.now,
        member_range=member_range,
        run_id=run_id,
    )


async def enforce(
    conn: asyncpg.Connection,
    *,
    organization: Organization,
    found: Sequence[Candidate],
    actor: Actor,
    member_range: tuple[int, int],
    base_url: str,
    secret_key: str,
    reinstatement_window: timedelta,
    run_id: int | None = None,
    keys: Sequence[str] | None = None,
    event_reason: str | None = None,
) -> tuple[int, int]:
    """The organization's action on `found` (`make_pending` with the Mandatory email, or
    `block`), in the caller's transaction: a run's batch, or a member at once (an owner's
    reset, an exemption lifted or lapsing). Each email's dedupe key is `removed:{key}` or
    `blocked:{key}`, `keys` in the order of `found` (a run's: `{run}:{member}`). Returns (acted
    on, members in range)."""
    suffixes = list(keys) if keys is not None else [f"{run_id}:{c.member_id}" for c in found]
    if organization.action == "block":
        return await block(
            conn,
            organization=organization,
            found=found,
            dedupe_keys=[f"blocked:{key}" for key in suffixes],
            actor=actor,
            member_range=member_range,
            base_url=base_url,
            run_id=run_id,
        )
    return await make_pending(
        conn,
        organization=organization,
        found=found,
        dedupe_keys=[f"removed:{key}" for key in suffixes],
        actor=actor,
        member_range=member_range,
        base_url=base_url,
        secret_key=secret_key,
        reinstatement_window=reinstatement_window,
        run_id=run_id,
        event_reason=event_reason,
    )
