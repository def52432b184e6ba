-- Enforcement on a date (CONTRACT §9 `enforceAt`). Turning the requirement on with a date writes
-- a `scheduled` run and sets `organizations.enforce_at`; the requirement itself
-- (`require_2fa`) stays off, so nobody is removed or blocked before then. At `enforce_at` the
-- clock's `enforcement.scheduled` job turns it on and makes the same run `queued`, once (an
-- UPDATE … WHERE status = 'scheduled'). Turning the requirement off before then cancels it.
alter table enforcement_runs drop constraint enforcement_runs_status_check;
alter table enforcement_runs
    add constraint enforcement_runs_status_check
        check (status in ('scheduled', 'queued', 'running', 'completed', 'cancelled', 'failed')),
    add column enforce_at timestamptz,
    -- The countdown reminders sent so far: the smallest stage (14, 7 or 1 days before) done.
    add column countdown_done smallint;
-- At most one scheduled run per organization (and at most one queued or running, as before).
create unique index enforcement_runs_one_scheduled on enforcement_runs (organization_id)
    where status = 'scheduled';
create index enforcement_runs_due on enforcement_runs (enforce_at) where status = 'scheduled';

-- What every page needs for the banner: the organization's coming deadline, if any.
alter table organizations add column enforce_at timestamptz;
