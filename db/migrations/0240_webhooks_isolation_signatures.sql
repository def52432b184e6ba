-- Webhooks, third round (CONTRACT §10): a webhook can be turned off (by its owner, or by its
-- receiver answering 410 Gone), its secret rotated with a 24-hour overlap, and pinged; the
-- dispatch claims a few rows per webhook so one webhook's backlog never fills a dispatch.

-- `active`: only active webhooks get deliveries and have theirs claimed.
-- `previous_secret_*`: the secret replaced by the last rotation, still signing until `until`.
alter table webhooks
    add column active boolean not null default true,
    add column previous_secret_encrypted bytea,
    add column previous_secret_until timestamptz;

-- A ping is a delivery of no audit entry.
alter table webhook_deliveries alter column audit_log_id drop not null;
alter table webhook_deliveries add constraint webhook_deliveries_ping_or_audit
    check (audit_log_id is not null or event = 'ping');

-- The claim reads each webhook's first due rows (a lateral probe per webhook) and counts its
-- rows in flight (a small index: only rows being sent are in it).
create index webhook_deliveries_webhook_due on webhook_deliveries (webhook_id, next_attempt_at, id)
    where status in ('queued', 'sending');
create index webhook_deliveries_sending on webhook_deliveries (webhook_id)
    where status = 'sending';

create or replace function audit_log_webhook_deliveries() returns trigger language plpgsql as $$
begin
    perform 1 from webhooks limit 1;
    if not found then
        return null;
    end if;
    insert into webhook_deliveries (webhook_id, audit_log_id, event)
    select w.id, n.id, n.event
      from new_rows n
      join webhooks w on w.organization_id = n.organization_id
     where w.active and ('*' = any (w.events) or n.event = any (w.events))
     order by n.id, w.id;
    if found then
        perform pg_notify('webhook_deliveries', '');
    end if;
    return null;
end $$;
