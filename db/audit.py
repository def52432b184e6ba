"""The append-only audit log; its event names are `EVENTS`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

EVENTS = (
    "org.edit",
    "member.invite",
    "member.accept",
    "member.pending",
    "member.reinvite",
    "member.remove",
    "member.edit",
    "member.2fa-reset",
    "member.2fa-exempt",
    "member.blocked",
    "member.unblocked",
    "webhook.create",
    "webhook.delete",
    "webhook.edit",
    "webhook.rotate-secret",
    # A receiver answered 410 Gone: its webhook was turned off (actor: the system).
    "webhook.disable",
    "org.sso-edit",
    "member.sso-link",
    # The deployment's own upkeep (`require2fa.retention`), under no organization.
    "maintenance",
)


@dataclass(frozen=True)
class Actor:
    """Who did it: a user (through a session or one of their API tokens), or the system."""

    user_id: int | None = None
    token_id: int | None = None
    label: str = ""
    ip_address: str | None = None


SYSTEM = Actor(label="require2fa")


# The one statement head that writes audit entries. Set-based statements elsewhere in `db/`
# take theirs from `insert_sql`, with a `select` (or `values`) of these columns in this order.
COLUMNS = (
    "organization_id, event, actor_user_id, actor_token_id, actor_label, target_member_id,"
    " target_user_id, ip_address, data, created_at"
)


def insert_sql(rows_sql: str) -> str:
    """`insert into audit_log` of `rows_sql` (a `select` or `values` giving `COLUMNS`; the
    entries are append-only). Append `returning …` as needed."""
    return f"insert into audit_log ({COLUMNS})\n{rows_sql}"


_RECORD_SQL = (
    insert_sql("values ($1, $2, $3, $4, $5, $6, $7, $8::inet, $9, now())") + " returning id"
)


async def record(
    conn: asyncpg.Connection,
    *,
    organization_id: int | None,
    event: str,
    actor: Actor,
    target_member_id: int | None = None,
    target_user_id: int | None = None,
    data: dict[str, Any] | None = None,
) -> int:
    assert event in EVENTS, event
    return await conn.fetchval(
        _RECORD_SQL,
        organization_id,
        event,
        actor.user_id,
        actor.token_id,
        actor.label,
        target_member_id,
        target_user_id,
        actor.ip_address,
        data or {},
    )


_RECORD_MANY_SQL = insert_sql(
    "select $1, $2, $3, $4, $5, t.member_id, null, $6::inet, t.data, now()"
    " from unnest($7::bigint[], $8::jsonb[]) as t(member_id, data)"
)


async def record_many(
    conn: asyncpg.Connection,
    *,
    organization_id: int,
    event: str,
    actor: Actor,
    entries: Sequence[tuple[int, dict[str, Any]]],
) -> None:
    """`record` of one event by one actor on many members (`(member id, data)` each), in one
    statement."""
    assert event in EVENTS, event
    await conn.execute(
        _RECORD_MANY_SQL,
        organization_id,
        event,
        actor.user_id,
        actor.token_id,
        actor.label,
        actor.ip_address,
        [member_id for member_id, _ in entries],
        [data for _, data in entries],
    )


async def page(
    conn: asyncpg.Connection,
    *,
    organization_id: int,
    event: str | None,
    before_id: int | None,
    limit: int,
    actor: str | None = None,
    target: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[asyncpg.Record]:
    """Newest first, keyset on id; of `event`, an actor whose email, name or label holds
    `actor`, a target email holding `target`, written in [`since`, `until`), when given."""
    return await conn.fetch(
        """select l.*, u.email as actor_email, u.name as actor_name
           from audit_log l left join users u on u.id = l.actor_user_id
           where l.organization_id = $1
             and ($2::text is null or l.event = $2)
             and ($3::bigint is null or l.id < $3)
             and ($5::text is null or u.email ilike '%' || $5 || '%'
                  or coalesce(u.name, '') ilike '%' || $5 || '%'
                  or l.actor_label ilike '%' || $5 || '%')
             and ($6::text is null or l.data->>'email' ilike '%' || $6 || '%')
             and ($7::timestamptz is null or l.created_at >= $7)
             and ($8::timestamptz is null or l.created_at < $8)
           order by l.id desc
           limit $4""",
        organization_id,
        event,
        before_id,
        limit,
        actor,
        target,
        since,
        until,
    )
