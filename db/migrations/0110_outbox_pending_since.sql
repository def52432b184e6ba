-- /metrics reads the outbox backlog (count and oldest) at each scrape: an index of the unsent
-- rows by age answers both without touching the sent ones.
create index if not exists email_outbox_pending_since on email_outbox (created_at)
    where status in ('queued', 'sending');
