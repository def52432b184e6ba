"""The email outbox: rows written in the caller's transaction (the event's), delivered by
`jobs.email`, which claims due rows, marks them sent, retries or fails them."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from db import claims
from require2fa import email_classes

TEMPLATES = tuple(email_classes.CLASS_OF)


def message_id(dedupe_key: str, domain: str = "require2fa") -> str:
    """A Message-ID that is the same for every attempt at the same event's email."""
    digest = hashlib.sha256(dedupe_key.encode()).hexdigest()[:32]
    return f"<{digest}@{domain}>"


# `message_id` as SQL, for outbox rows written by one set-based statement
# (tests/jobs/test_enforcement.py checks that both give the same id).
MESSAGE_ID_SQL = (
    "'<' || left(encode(sha256(convert_to({key}, 'UTF8')), 'hex'), 32) || '@require2fa>'"
)


# The one statement head that writes outbox rows. Set-based statements elsewhere in `db/` take
# their rows from `insert_sql`, with a `select` (or `values`) of these columns in this order.
COLUMNS = (
    "template, to_address, context, dedupe_key, message_id, organization_id, member_id,"
    " enforcement_id"
)

# Each row's lane (`require2fa.email_classes`) and, for bulk, its start tag: after the
# organization's last queued bulk row or the queue's virtual time (the start tag of the latest
# bulk row claimed), whichever is later, plus the row's rank among the organization's rows of
# this statement. One probe of a small index per organization in the statement; nothing is
# locked, so writers of the same organization never wait on each other (rows of two concurrent
# statements of one organization may share tags: they alternate with each other then, and with
# the other organizations' rows as one). `tags` is materialized: inlined into the join, it was
# worked out again for every row (a scan of `r` and a probe each: quadratic in the rows).
_FAIR_INSERT = f"""
with r as (
    select s.template::text, s.to_address::text, s.context::jsonb, s.dedupe_key::text,
           s.message_id::text, s.organization_id::bigint, s.member_id::bigint,
           s.enforcement_id::bigint, {email_classes.lane_sql("s.template::text")} as lane,
           row_number() over () as ordinal
      from ({{rows}}) as s({COLUMNS})),
tags as materialized (
    select o.organization_id,
           greatest((select vtime from email_fair_clock),
                    (select max(q.fair_seq) from email_outbox q
                      where q.organization_id = o.organization_id
                        and q.lane = {email_classes.BULK_LANE}
                        and q.status in ('queued', 'sending'))) as after
      from (select distinct organization_id from r
             where lane = {email_classes.BULK_LANE}) o)
insert into email_outbox ({COLUMNS}, lane, fair_seq)
select r.template, r.to_address, r.context, r.dedupe_key, r.message_id, r.organization_id,
       r.member_id, r.enforcement_id, r.lane,
       case when r.lane = {email_classes.BULK_LANE} then
           t.after + row_number() over (partition by r.organization_id, r.lane
                                            order by r.ordinal)
       else 0 end
  from r left join tags t on coalesce(t.organization_id, 0) = coalesce(r.organization_id, 0)
on conflict (dedupe_key) do nothing"""


def insert_sql(rows_sql: str) -> str:
    """`insert into email_outbox` of `rows_sql` (a `select` or `values` giving `COLUMNS`, with
    types that say themselves), each row in its lane with its fair share's start tag; a row
    whose dedupe key is taken already is skipped. Append `returning …` as needed."""
    return _FAIR_INSERT.replace("{rows}", rows_sql)


_ENQUEUE_SQL = (
    insert_sql(
        "values ($1::text, $2::text, $3::jsonb, $4::text, $5::text, $6::bigint, $7::bigint,"
        " $8::bigint)"
    )
    + " returning id"
)

# Many rows at once: one array per column of `COLUMNS` but the Message-ID, made from the key.
_ENQUEUE_MANY_SQL = f"""
with added as (
    {
    insert_sql(
        "select r.template, r.to_address, r.context, r.dedupe_key, "
        + MESSAGE_ID_SQL.format(key="r.dedupe_key")
        + ", r.organization_id, r.member_id, r.enforcement_id"
        " from unnest($1::text[], $2::text[], $3::jsonb[], $4::text[], $5::bigint[],"
        " $6::bigint[], $7::bigint[])"
        " as r(template, to_address, context, dedupe_key, organization_id, member_id,"
        " enforcement_id)"
    )
}
    returning 1)
select count(*) from added
"""


async def enqueue(
    conn: asyncpg.Connection,
    *,
    template: str,
    to: str,
    context: dict[str, Any],
    dedupe_key: str,
    organization_id: int | None = None,
    member_id: int | None = None,
    enforcement_id: int | None = None,
) -> int | None:
    """Queue one email; a second call with the same `dedupe_key` queues nothing (returns None)."""
    assert template in TEMPLATES, template
    return await conn.fetchval(
        _ENQUEUE_SQL,
        template,
        to,
        context,
        dedupe_key,
        message_id(dedupe_key),
        organization_id,
        member_id,
        enforcement_id,
    )


@dataclass(frozen=True)
class Email:
    """One outbox row for `enqueue_many`."""

    template: str
    to: str
    context: dict[str, Any]
    dedupe_key: str
    organization_id: int | None = None
    member_id: int | None = None
    enforcement_id: int | None = None


async def enqueue_many(conn: asyncpg.Connection, emails: Sequence[Email]) -> int:
    """`enqueue` of each email, in one statement; returns how many were new (a dedupe key
    taken already queues nothing)."""
    if not emails:
        return 0
    assert all(email.template in TEMPLATES for email in emails)
    return await conn.fetchval(
        _ENQUEUE_MANY_SQL,
        [e.template for e in emails],
        [e.to for e in emails],
        [e.context for e in emails],
        [e.dedupe_key for e in emails],
        [e.organization_id for e in emails],
        [e.member_id for e in emails],
        [e.enforcement_id for e in emails],
    )


# --- Delivery ------------------------------------------------------------------------------
#
# Claimed under a lease, put back when it lapses (`db.claims`): transactional rows first, then
# bulk in start-tag order (index `email_outbox_lanes`).
_QUEUE = claims.Queue("email_outbox", order="lane, fair_seq, id")

# The claim (`claim`): `$1` rows at most, a lease of `$2`.
CLAIM_SQL = (
    _QUEUE.claimed_sql()
    + f""",
            clocked as (
                update email_fair_clock c set vtime = greatest(c.vtime, m.seq)
                  from (select max(fair_seq) as seq from claimed
                         where lane = {email_classes.BULK_LANE}) m
                 where m.seq is not null)
            select id, template, to_address, context, message_id, attempts, lane
              from claimed order by lane, fair_seq, id"""
)

# Retrying stops this long after the row was written; the row is then marked failed.
GIVE_UP_AFTER = timedelta(days=1)


async def claim(conn: asyncpg.Connection, *, limit: int, lease: timedelta) -> list[asyncpg.Record]:
    """Take up to `limit` due rows for this worker until `lease` runs out; counts an attempt.
    Transactional rows come first, then bulk rows fairly between organizations; the queue's
    virtual time moves to the latest bulk row claimed.

    Rows another transaction is claiming are skipped, so concurrent dispatchers never share a row.
    """
    return await conn.fetch(
        CLAIM_SQL,
        limit,
        lease,
    )


async def renew_claims(
    conn: asyncpg.Connection, rows: Sequence[tuple[int, int]], *, lease: timedelta
) -> list[int]:
    """Extends by `lease` the claims on (id, attempts) rows that this claim still holds (same
    `attempts`, still `sending`); returns their ids. A row missing from the answer was sent,
    recorded, or lapsed and claimed by another dispatcher: it is no longer this claim's."""
    if not rows:
        return []
    ids, attempts = zip(*rows, strict=True)
    renewed = await conn.fetch(
        """update email_outbox o
              set claimed_until = now() + $3::interval
             from unnest($1::bigint[], $2::int[]) as r(id, attempts)
            where o.id = r.id and o.attempts = r.attempts and o.status = 'sending'
        returning o.id""",
        list(ids),
        list(attempts),
        lease,
    )
    return [row["id"] for row in renewed]


async def mark_sent(conn: asyncpg.Connection, ids: Sequence[int]) -> int:
    """The SMTP server accepted these rows' messages. Their context (the sealed link inside, and
    a link in the clear on a row written before migration 0105) is wiped: what stays is what a
    run counts, the Message-ID and the dedupe key."""
    result = await conn.execute(
        """update email_outbox
              set status = 'sent', sent_at = now(), claimed_until = null, last_error = null,
                  context = '{}'::jsonb
            where id = any($1::bigint[]) and status in ('queued', 'sending')""",
        list(ids),
    )
    return int(result.split()[-1])


async def mark_retry(conn: asyncpg.Connection, rows: Sequence[tuple[int, int, float, str]]) -> int:
    """Put (id, attempts, delay_seconds, error) rows back in the queue for a later attempt.

    Only rows still held by that claim (same `attempts`) change. A row older than
    `GIVE_UP_AFTER` is marked failed instead, keeping the last error.
    """
    if not rows:
        return 0
    ids, attempts, delays, errors = zip(*rows, strict=True)
    result = await conn.execute(
        """update email_outbox o
              set status = case when now() - o.created_at >= $5::interval
                                then 'failed' else 'queued' end,
                  next_attempt_at = now() + make_interval(secs => r.delay),
                  claimed_until = null,
                  last_error = case when now() - o.created_at >= $5::interval
                                    then 'gave up after ' || o.attempts || ' attempts: ' || r.error
                                    else r.error end
             from unnest($1::bigint[], $2::int[], $3::float8[], $4::text[])
                  as r(id, attempts, delay, error)
            where o.id = r.id and o.attempts = r.attempts and o.status = 'sending'""",
        list(ids),
        list(attempts),
        list(delays),
        list(errors),
        GIVE_UP_AFTER,
    )
    return int(result.split()[-1])


async def mark_failed(conn: asyncpg.Connection, rows: Sequence[tuple[int, int, str]]) -> int:
    """(id, attempts, error) rows will never be delivered: the server refused them for good."""
    if not rows:
        return 0
    ids, attempts, errors = zip(*rows, strict=True)
    result = await conn.execute(
        """update email_outbox o
              set status = 'failed', claimed_until = null, last_error = r.error
             from unnest($1::bigint[], $2::int[], $3::text[]) as r(id, attempts, error)
            where o.id = r.id and o.attempts = r.attempts and o.status = 'sending'""",
        list(ids),
        list(attempts),
        list(errors),
    )
    return int(result.split()[-1])


release_lapsed = _QUEUE.release_lapsed
any_due = _QUEUE.any_due


async def next_due_at(conn: asyncpg.Connection) -> datetime | None:
    """When the next row becomes due: the earliest queued row (a retry), or the earliest claim
    to end. A live dispatcher renews its claims, so that wake-up finds nothing; a dead one's
    claims are due again then, without waiting for the sweeper."""
    return await conn.fetchval(
        """select least(
                  (select min(next_attempt_at) from email_outbox where status = 'queued'),
                  (select min(claimed_until) from email_outbox where status = 'sending'))"""
    )


async def counts_for_enforcement(conn: asyncpg.Connection, enforcement_id: int) -> tuple[int, int]:
    """(emails queued in total, emails sent) for one enforcement run."""
    return (await counts_for_enforcements(conn, [enforcement_id]))[enforcement_id]


async def counts_for_enforcements(
    conn: asyncpg.Connection, enforcement_ids: list[int]
) -> dict[int, tuple[int, int]]:
    """`counts_for_enforcement` of each run, in one statement; (0, 0) for a run without emails.
    Rows deleted by retention (`db.retention.prune_emails`) count through the run's
    `emails_pruned` counters, which the same statement that deleted them raised."""
    rows = await conn.fetch(
        """select ids.id as enforcement_id,
                  coalesce(r.emails_pruned, 0) + coalesce(e.queued, 0) as queued,
                  coalesce(r.emails_pruned_sent, 0) + coalesce(e.sent, 0) as sent
             from unnest($1::bigint[]) as ids(id)
             left join enforcement_runs r on r.id = ids.id
             left join (select enforcement_id, count(*) as queued,
                               count(*) filter (where status = 'sent') as sent
                          from email_outbox
                         where enforcement_id = any($1::bigint[])
                         group by enforcement_id) e on e.enforcement_id = ids.id""",
        enforcement_ids,
    )
    found = {row["enforcement_id"]: (int(row["queued"]), int(row["sent"])) for row in rows}
    return {run_id: found.get(run_id, (0, 0)) for run_id in enforcement_ids}


async def backlog(conn: asyncpg.Connection) -> tuple[int, float]:
    """(emails not yet sent, the oldest one's age in seconds): two index scans of
    `email_outbox_pending_since`."""
    row = await conn.fetchrow(
        """select (select count(*) from email_outbox where status in ('queued', 'sending'))
                      as pending,
                  extract(epoch from now() - (select min(created_at) from email_outbox
                                               where status in ('queued', 'sending')))
                      as oldest"""
    )
    assert row is not None
    return int(row["pending"]), float(row["oldest"] or 0.0)
