-- Wake-ups after commit: the database announces each committed change that asks for a message,
-- and `jobs.wakeup` (one listening connection per worker process) sends that message.
-- `pg_notify` is delivered when the transaction commits, never for one rolled back, and the
-- notifications of one transaction on one channel with the same payload are delivered once.
-- A notification nobody hears (no worker listening, a connection lost) loses nothing: each
-- listener looks once when it (re)connects, and the sweepers find the rest within a minute.
--
-- Channels: `email_outbox` (rows written: `email.dispatch`), `webhook_deliveries` (written by
-- the audit trigger of 0160: `webhooks.dispatch`), `enforcement_runs` (a run became `queued`:
-- `enforcement.coordinate`, once per run, claimed through `coordinator_sent_at`).

-- When a listener claimed the run's coordinator (null: nobody yet). The sweeper does not read
-- it: a queued run that stays queued is sent again whoever claimed it.
alter table enforcement_runs add column coordinator_sent_at timestamptz;

-- Set-based: one notification per statement that inserted rows (none for `on conflict do
-- nothing` that inserted nothing), however many rows it wrote.
create function email_outbox_notify() returns trigger language plpgsql as $$
begin
    perform 1 from new_rows limit 1;
    if found then
        perform pg_notify('email_outbox', '');
    end if;
    return null;
end $$;

create trigger email_outbox_notify after insert on email_outbox
    referencing new table as new_rows
    for each statement execute function email_outbox_notify();

-- A run is written `queued` (the switch) or becomes `queued` (a scheduled run whose time has
-- come). Row-level with a WHEN clause: the many other updates of a run (its counters, once per
-- batch) do not call the function at all.
create function enforcement_runs_notify() returns trigger language plpgsql as $$
begin
    perform pg_notify('enforcement_runs', '');
    return null;
end $$;

create trigger enforcement_runs_queued after insert on enforcement_runs
    for each row when (new.status = 'queued')
    execute function enforcement_runs_notify();

create trigger enforcement_runs_requeued after update of status on enforcement_runs
    for each row when (new.status = 'queued' and old.status is distinct from 'queued')
    execute function enforcement_runs_notify();
