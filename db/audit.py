"""The append-only audit log; its event names are `EVENTS`."""

from __future__ import annotations

from dataclasses import dataclass
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
    "webhook.create",
    "webhook.delete",
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


# The page's statements: one with the event and one without, and no `$n is null or …` branch,
# so that the plan the first executions make is good for every parameter. PostgreSQL then keeps
# one generic plan per connection instead of planning every month partition of the audit log
# again on each page (planning grew with the months kept: bench/history.py).
_PAGE_SQL = """select l.*, u.email as actor_email, u.name as actor_name
  from audit_log l left join users u on u.id = l.actor_user_id
 where l.organization_id = $1 and l.id < $2 {event}
 order by l.id desc
 limit $3"""
_PAGE_ALL_SQL = _PAGE_SQL.format(event="")
_PAGE_EVENT_SQL = _PAGE_SQL.format(event="and l.event = $4")
_NO_CURSOR = 2**63 - 1  # above every id


async def page(
    conn: asyncpg.Connection,
    *,
    organization_id: int,
    event: str | None,
    before_id: int | None,
    limit: int,
) -> list[asyncpg.Record]:
    """Newest first, keyset on id."""
    cursor = _NO_CURSOR if before_id is None else before_id
    if event is None:
        return await conn.fetch(_PAGE_ALL_SQL, organization_id, cursor, limit)
    return await conn.fetch(_PAGE_EVENT_SQL, organization_id, cursor, limit, event)
