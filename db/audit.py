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


# The page statement's clauses; each one present only when its filter is given, so that every
# combination is its own prepared statement whose bounds on `created_at` (the partition key)
# prune the month partitions at planning or at executor start, generic plan or not.
_PAGE_SELECT = """select l.*, u.email as actor_email, u.name as actor_name
  from audit_log l left join users u on u.id = l.actor_user_id
 where l.organization_id = $1"""
_PAGE_EVENT = "\n   and l.event = $3"
_PAGE_SINCE = "\n   and l.created_at >= $4"
_PAGE_BEFORE = "\n   and l.created_at <= $5 and (l.created_at, l.id) < ($5, $6)"
_PAGE_ACTOR = """
   and (u.email ilike '%' || $7 || '%' or coalesce(u.name, '') ilike '%' || $7 || '%'
        or l.actor_label ilike '%' || $7 || '%')"""
_PAGE_TARGET = "\n   and l.data->>'email' ilike '%' || $8 || '%'"
_PAGE_ORDER = "\n order by l.created_at desc, l.id desc\n limit $2"


def _page_sql(*, event: bool, since: bool, before: bool, actor: bool, target: bool) -> str:
    """The page statement for the filters given; the parameters it leaves out are still passed
    (typed by a cast of null), so that every form takes the same eight."""
    clauses = [
        _PAGE_EVENT if event else "\n   and $3::text is null",
        _PAGE_SINCE if since else "\n   and $4::timestamptz is null",
        _PAGE_BEFORE if before else "\n   and $5::timestamptz is null and $6::bigint is null",
        _PAGE_ACTOR if actor else "\n   and $7::text is null",
        _PAGE_TARGET if target else "\n   and $8::text is null",
    ]
    return _PAGE_SELECT + "".join(clauses) + _PAGE_ORDER


@dataclass(frozen=True)
class Position:
    """A place in an organization's log, newest first: the entries after it are those written
    before `created_at`, or at it with a smaller id."""

    created_at: datetime
    id: int


async def page(
    conn: asyncpg.Connection,
    *,
    organization_id: int,
    limit: int,
    event: str | None = None,
    since: datetime | None = None,
    before: Position | None = None,
    actor: str | None = None,
    target: str | None = None,
) -> list[asyncpg.Record]:
    """Up to `limit` entries, newest first by (`created_at`, id): after `before`, written at or
    after `since`, of `event`, by an actor whose email, name or label holds `actor`, on a target
    email holding `target` (each when given)."""
    sql = _page_sql(
        event=event is not None,
        since=since is not None,
        before=before is not None,
        actor=actor is not None,
        target=target is not None,
    )
    return await conn.fetch(
        sql,
        organization_id,
        limit,
        event,
        since,
        before.created_at if before else None,
        before.id if before else None,
        actor,
        target,
    )


async def position_of(
    conn: asyncpg.Connection, *, organization_id: int, entry_id: int
) -> Position | None:
    """The place of the organization's entry `entry_id` in its log; None when there is no such
    entry (never was, or its month was dropped)."""
    row = await conn.fetchrow(
        "select created_at, id from audit_log where id = $1 and organization_id = $2",
        entry_id,
        organization_id,
    )
    return Position(row["created_at"], row["id"]) if row else None
