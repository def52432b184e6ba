"""Making members pending for 2FA: the one use case behind every removal.

A run's batch, an owner's 2FA reset, an exemption lifted and an exemption lapsing all call
`make_pending` (a reset is a batch of one). It makes each member's fresh rejoin token and the
Mandatory email's context, then `db.removals.make_pending` writes, in one statement of the
caller's transaction, the member rows (kept with role, teams and settings; reason `2fa` or
`2fa-level`), the `member.pending` entries and the outbox rows. Waking the email dispatcher
after the commit is the caller's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from db import removals
from db.audit import Actor
from db.removals import Candidate
from require2fa import email_contexts
from require2fa.security import new_tokens, token_hash

__all__ = ["Candidate", "Organization", "make_pending", "one"]


@dataclass(frozen=True)
class Organization:
    """What a removal needs of the organization, read under its lock (FOR SHARE)."""

    id: int
    name: str
    slug: str
    level: str  # its requirement level
    now: datetime  # the transaction's time: the removal's, and where the window starts
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
