-- How often the sweeper has sent a batch again. A batch that never finishes (a bug, data the
-- statement cannot handle) ends its run as `failed` after a bounded number of re-sends, instead of
-- keeping the run, and the organization's one-active-run slot, busy forever.
alter table enforcement_batches add column resends integer not null default 0;
