"""Retention (issue 30): a sent email keeps no link, finished rows go after OUTBOX_RETENTION,
the audit log's old months are dropped whole, and none of it changes what a person reads
(a run's counts, the audit log's pages)."""

from __future__ import annotations

import re
from datetime import timedelta

import asyncpg

from db import outbox, runs
from db.audit import Actor
from jobs import email as email_jobs
from jobs.enforcement import coordinate_run, remove_batch_now
from require2fa import email_contexts, retention
from tests.factories import add_member, create_org, create_user, link_in, token_for
from tests.jobs.test_enforcement import start_run

DAY = timedelta(days=1)
KEEP = dict(outbox_retention=30 * DAY, audit_retention=400 * DAY)


async def fetch(pool: asyncpg.Pool, sql: str, *args: object) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return await conn.fetch(sql, *args)


async def email_row(pool, key: str, *, status: str, age: timedelta, enforcement_id=None) -> int:
    """An outbox row in `status`, finished (or written) `age` ago."""
    async with pool.acquire() as conn:
        row_id = await outbox.enqueue(
            conn,
            template="security_notice",
            to=f"{key}@example.com",
            context={"action": "added", "factor": "totp", "factor_name": "Phone"},
            dedupe_key=key,
            enforcement_id=enforcement_id,
        )
        await conn.execute(
            """update email_outbox set status = $2, created_at = now() - $3::interval,
                      sent_at = case when $2 = 'sent' then now() - $3::interval end
                where id = $1""",
            row_id,
            status,
            age,
        )
    assert row_id is not None
    return row_id


# --- What a sent row keeps -----------------------------------------------------------------


async def test_a_sent_emails_context_is_gone(pool, redis, settings, mailbox) -> None:
    link = "http://testserver/accept/7/secret-token/"
    sealed = email_contexts.seal_link(settings.secret_key, link)
    async with pool.acquire() as conn:
        for n in range(2):
            await outbox.enqueue(
                conn,
                template="invite",
                to=f"invited{n}@example.com",
                context={
                    "org_name": "Acme",
                    "org_slug": "acme",
                    "inviter": "Ada",
                    email_contexts.SEALED_LINK: sealed,
                },
                dedupe_key=f"invite:{n}",
            )
        await conn.execute(
            "update email_outbox set next_attempt_at = now() + interval '1 hour' "
            "where dedupe_key = 'invite:1'"
        )

    report = await email_jobs.dispatch(pool, redis, settings)

    assert report.sent == 1
    assert link in mailbox.messages[0].get_body(("plain",)).get_content()
    sent, waiting = await fetch(pool, "select * from email_outbox order by dedupe_key")
    assert (sent["status"], sent["context"]) == ("sent", {})
    assert sent["message_id"] == outbox.message_id("invite:0") == mailbox.messages[0]["Message-ID"]
    assert waiting["status"] == "queued" and link_in(waiting["context"]) == link


# --- The outbox, webhook deliveries and sessions past retention ------------------------------


async def test_rows_past_retention_are_pruned_and_rows_inside_it_are_not(pool) -> None:
    owner = await create_user(pool, "owner@example.com", has2fa=True)
    org = await create_org(pool, "acme", owner["id"])
    old_sent = await email_row(pool, "old-sent", status="sent", age=31 * DAY)
    old_failed = await email_row(pool, "old-failed", status="failed", age=31 * DAY)
    kept = [
        await email_row(pool, "new-sent", status="sent", age=29 * DAY),
        await email_row(pool, "old-queued", status="queued", age=31 * DAY),
    ]
    async with pool.acquire() as conn:
        webhook = await conn.fetchval(
            """insert into webhooks (organization_id, url, events, secret_encrypted)
               values ($1, 'https://hooks.example/', '{*}', '\\x00') returning id""",
            org["id"],
        )
        deliveries = await conn.fetch(
            """insert into webhook_deliveries (webhook_id, audit_log_id, event, status,
                                               created_at, delivered_at)
               select $1, n, 'member.edit', s, now() - make_interval(days => age),
                      case when s = 'delivered' then now() - make_interval(days => age) end
                 from unnest(array['delivered', 'failed', 'delivered', 'queued'],
                             array[31, 31, 29, 31]) with ordinality
                      as t(s, age, n)
               returning id""",
            webhook,
        )
        await conn.execute(
            """insert into sessions (key_hash, user_id, data, expires_at)
               values ('\\x01', $1, '{}', now() - interval '1 hour'),
                      ('\\x02', $1, '{}', now() + interval '1 hour')""",
            owner["id"],
        )

    preview = await retention.prune(pool, **KEEP, dry_run=True)
    assert (preview.emails, preview.deliveries, preview.sessions) == (2, 2, 1)
    assert len(await fetch(pool, "select id from email_outbox")) == 4

    done = await retention.prune(pool, **KEEP, batch_size=1)

    assert (done.emails, done.deliveries, done.sessions, done.lock_timeouts) == (2, 2, 1, 0)
    left = {row["id"] for row in await fetch(pool, "select id from email_outbox")}
    assert left == set(kept) and not left & {old_sent, old_failed}
    left_deliveries = [row["id"] for row in await fetch(pool, "select id from webhook_deliveries")]
    assert left_deliveries == sorted(row["id"] for row in deliveries[2:])
    assert [row["key_hash"] for row in await fetch(pool, "select key_hash from sessions")] == [
        b"\x02"
    ]
    (entry,) = await fetch(pool, "select * from audit_log where event = 'maintenance'")
    assert entry["organization_id"] is None and entry["actor_label"] == "require2fa"
    assert entry["data"]["emails"] == 2 and entry["data"]["deliveries"] == 2
    assert entry["data"]["sessions"] == 1

    again = await retention.prune(pool, **KEEP)
    assert (again.emails, again.deliveries, again.sessions) == (0, 0, 0)


async def test_pruning_during_a_run_changes_no_count_of_the_run(pool, settings) -> None:
    owner = await create_user(pool, "owner@example.com", has2fa=True)
    org = await create_org(pool, "acme", owner["id"])
    for n in range(5):
        await add_member(pool, org["id"], await create_user(pool, f"user{n}@example.com"))
    run_id = await start_run(pool, org["id"], owner)
    await coordinate_run(pool, run_id, batch_size=2, send=lambda *args: None)
    first, *rest = [
        row["batch_no"]
        for row in await fetch(
            pool, "select batch_no from enforcement_batches where run_id = $1 order by 1", run_id
        )
    ]
    await remove_batch_now(pool, settings, run_id, first)
    # The first batch's emails went out long ago, as if the run had been stuck since.
    async with pool.acquire() as conn:
        await conn.execute(
            """update email_outbox set status = 'sent', sent_at = now() - interval '31 days'
                where enforcement_id = $1""",
            run_id,
        )
        before = await runs.email_counts(conn, run_id)
    assert before[0] == before[1] > 0

    done = await retention.prune(pool, **KEEP)

    assert done.emails == before[0]
    async with pool.acquire() as conn:
        assert await runs.email_counts(conn, run_id) == before
    for batch_no in rest:
        await remove_batch_now(pool, settings, run_id, batch_no)
    async with pool.acquire() as conn:
        run = await conn.fetchrow("select * from enforcement_runs where id = $1", run_id)
        queued, sent = await runs.email_counts(conn, run_id)
    assert run["status"] == "completed" and run["removed"] == 5
    assert (queued, sent) == (5, before[1])


# --- The audit log's months -----------------------------------------------------------------


def next_cursor(link: str) -> str | None:
    match = re.search(r'rel="next"; results="true"; cursor="([^"]+)"', link)
    return match.group(1) if match else None


async def test_a_partition_drop_leaves_the_audit_apis_cursors_working(client, pool) -> None:
    owner = await create_user(pool, "owner@example.com", has2fa=True)
    org = await create_org(pool, "acme", owner["id"])
    actor = Actor(user_id=owner["id"], label="owner@example.com")
    ids: dict[int, list[int]] = {}
    async with pool.acquire() as conn:
        await conn.execute("select audit_log_add_partitions(now() - interval '16 months', 0)")
        for months_ago in (15, 2, 0):
            ids[months_ago] = [
                await conn.fetchval(
                    """insert into audit_log (organization_id, event, actor_user_id, actor_label,
                                              created_at)
                       values ($1, 'member.edit', $2, $3, now() - make_interval(months => $4))
                       returning id""",
                    org["id"],
                    actor.user_id,
                    actor.label,
                    months_ago,
                )
                for _ in range(3)
            ]
    headers = await token_for(pool, owner["id"])
    url = "/api/0/organizations/acme/audit-logs/?per_page=4"
    first = await client.get(url, headers=headers)
    cursor = next_cursor(first.headers["Link"])
    assert [int(r["id"]) for r in (await first.json())["rows"]] == (ids[0][::-1] + ids[2][::-1])[:4]

    done = await retention.prune(pool, **KEEP)

    assert len(done.audit_months_dropped) >= 1 and done.audit_entries >= 3
    second = await client.get(f"{url}&cursor={cursor}", headers=headers)
    assert second.status == 200
    assert [int(r["id"]) for r in (await second.json())["rows"]] == ids[2][::-1][1:]
    assert next_cursor(second.headers["Link"]) is None
    # A cursor into a month that is gone answers the empty rest of the log.
    gone = await client.get(f"{url}&cursor={ids[15][-1]}", headers=headers)
    assert gone.status == 200 and (await gone.json())["rows"] == []
    # The months ahead exist, and the next entry's id follows the last one.
    async with pool.acquire() as conn:
        ahead = await conn.fetchval(
            """select count(*) from audit_log_partitions_before(
                   date_trunc('month', now()) + interval '3 months')
                where month > now()"""
        )
        new_id = await conn.fetchval(
            "insert into audit_log (organization_id, event) values ($1, 'member.edit') "
            "returning id",
            org["id"],
        )
    assert ahead == retention.MONTHS_AHEAD
    assert new_id > max(ids[0])


async def test_zero_audit_retention_keeps_every_month(pool) -> None:
    async with pool.acquire() as conn:
        await conn.execute("select audit_log_add_partitions(now() - interval '30 months', 0)")
        await conn.execute(
            "insert into audit_log (organization_id, event, created_at) "
            "values (1, 'member.edit', now() - interval '29 months')"
        )

    done = await retention.prune(pool, outbox_retention=30 * DAY, audit_retention=timedelta(0))

    assert done.audit_months_dropped == []
    assert len(await fetch(pool, "select id from audit_log where event = 'member.edit'")) == 1
