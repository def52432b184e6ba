-- Retention (issue 30): sent and failed email rows and finished webhook deliveries are deleted
-- after OUTBOX_RETENTION, oldest first, in small batches; these indexes find them.
create index email_outbox_done on email_outbox ((coalesce(sent_at, created_at)))
    where status in ('sent', 'failed');
create index webhook_deliveries_done on webhook_deliveries ((coalesce(delivered_at, created_at)))
    where status in ('delivered', 'failed');

-- A run's email counts outlive its email rows: the prune that deletes them adds them here in
-- the same statement, and `db.outbox.counts_for_enforcements` adds these to what is left.
alter table enforcement_runs
    add column emails_pruned      integer not null default 0,
    add column emails_pruned_sent integer not null default 0;
