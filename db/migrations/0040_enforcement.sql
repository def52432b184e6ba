-- Enforcement runs remember who turned the requirement on (user or API token, and from where), so
-- that every `member.pending` entry a batch writes names the same actor as the `org.edit` entry.
alter table enforcement_runs
    add column actor_token_id bigint,
    add column actor_label    text not null default '',
    add column actor_ip       inet;

-- What each batch did, kept for the run's progress and the batch-duration metric.
alter table enforcement_batches
    add column removed integer,
    add column skipped integer,
    add column seconds real;                         -- wall time of the batch's transaction

-- The sweeper's scan: runs that may need driving.
create index enforcement_runs_active on enforcement_runs (status, updated_at)
    where status in ('queued', 'running');

-- An organization's members in id order: the coordinator cuts batches along it and the members
-- list pages through it (the primary key alone mixes every organization's members).
create index members_org_id on members (organization_id, id);
