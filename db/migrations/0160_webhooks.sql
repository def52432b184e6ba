-- Webhooks: an organization's own systems hear about each of its audit events.
--
-- A subscription names a URL, the events it wants ('{*}': every event) and a secret that signs
-- each body. The secret must be usable for signing, so it is stored encrypted (Fernet, key
-- derived from SECRET_KEY for the purpose "webhook-secret"), not hashed.
create table webhooks (
    id               bigint generated always as identity primary key,
    organization_id  bigint not null references organizations on delete cascade,
    url              text not null check (length(url) between 1 and 2048),
    events           text[] not null check (cardinality(events) between 1 and 100),
    secret_encrypted bytea not null,
    created_by       bigint references users on delete set null,
    created_at       timestamptz not null default now()
);
create index webhooks_org on webhooks (organization_id, id);

-- The webhook outbox: one row per (audit event, matching webhook), written by the trigger below
-- in the transaction of the event, delivered by `jobs.webhooks`. The body is built from the
-- audit entry at send time (the entry never changes), so a row carries no copy of it.
-- `id` is the X-Require2FA-Delivery header: stable across retries, for deduplication.
create table webhook_deliveries (
    id              bigint generated always as identity primary key,
    webhook_id      bigint not null references webhooks on delete cascade,
    audit_log_id    bigint not null,
    event           text not null,
    status          text not null default 'queued'
                    check (status in ('queued', 'sending', 'delivered', 'failed')),
    attempts        integer not null default 0,
    next_attempt_at timestamptz not null default now(),
    claimed_until   timestamptz,
    last_status     integer,                          -- HTTP status of the last answer
    last_body       text,                             -- its first bytes
    last_error      text,                             -- why the last attempt did not deliver
    created_at      timestamptz not null default now(),
    delivered_at    timestamptz
);
create index webhook_deliveries_due on webhook_deliveries (next_attempt_at)
    where status in ('queued', 'sending');
create index webhook_deliveries_webhook on webhook_deliveries (webhook_id, id desc);

-- Every write path of audit_log (one entry from the API, a thousand `member.pending` entries from
-- one enforcement batch statement, the purge's set-based `member.remove`) fans out here, set-based,
-- in the writer's transaction. An organization without webhooks costs one probe of an empty
-- index; nothing at all while no organization has one. `pg_notify` is delivered at commit (never
-- for a rolled-back event), once per transaction, and wakes the dispatchers; the sweeper
-- catches whatever a missed notification leaves.
create function audit_log_webhook_deliveries() returns trigger language plpgsql as $$
begin
    perform 1 from webhooks limit 1;
    if not found then
        return null;
    end if;
    insert into webhook_deliveries (webhook_id, audit_log_id, event)
    select w.id, n.id, n.event
      from new_rows n
      join webhooks w on w.organization_id = n.organization_id
     where '*' = any (w.events) or n.event = any (w.events)
     order by n.id, w.id;
    if found then
        perform pg_notify('webhook_deliveries', '');
    end if;
    return null;
end $$;

create trigger audit_log_webhook_deliveries after insert on audit_log
    referencing new table as new_rows
    for each statement execute function audit_log_webhook_deliveries();
