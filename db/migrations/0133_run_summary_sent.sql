-- When the run's summary email to the owners was queued: a run that ends `failed` (in the
-- sweeper) gets its summary from the next sweep, once.
alter table enforcement_runs add column summary_queued_at timestamptz;
