-- The audit log, partitioned by month on `created_at` (issue 30), so that expiry
-- (`AUDIT_RETENTION`) drops whole months instead of deleting millions of rows.
--
-- The existing table is renamed, a partitioned one takes its name with the same columns,
-- defaults and identity, every row is copied with its id, and the id sequence continues where
-- the old one stood. The primary key becomes (id, created_at): a partitioned table's unique
-- keys must contain the partition key. Ids stay unique, being drawn from one sequence.
-- `organization_id` may now be null: an entry about the deployment itself (`maintenance`)
-- belongs to no organization, and no organization's log or webhooks see it.
lock table audit_log in access exclusive mode;

drop trigger audit_log_webhook_deliveries on audit_log;
drop trigger audit_log_append_only on audit_log;
alter table audit_log rename to audit_log_unpartitioned;
alter index audit_log_pkey rename to audit_log_unpartitioned_pkey;
alter index audit_log_org rename to audit_log_unpartitioned_org;
alter index audit_log_org_event rename to audit_log_unpartitioned_org_event;
alter sequence audit_log_id_seq rename to audit_log_unpartitioned_id_seq;

create table audit_log (
    id               bigint generated always as identity,
    organization_id  bigint,
    event            text not null,
    actor_user_id    bigint,
    actor_token_id   bigint,
    actor_label      text not null default '',
    target_member_id bigint,
    target_user_id   bigint,
    ip_address       inet,
    data             jsonb not null default '{}',
    created_at       timestamptz not null default now(),
    primary key (id, created_at)
) partition by range (created_at);
create index audit_log_org on audit_log (organization_id, id desc);
create index audit_log_org_event on audit_log (organization_id, event, id desc);

-- A safety net: an entry whose month has no partition yet (the clock creates them ahead) lands
-- here rather than failing its transaction. It is never dropped by expiry.
create table audit_log_default partition of audit_log default;

-- Months are UTC months; a partition is named audit_log_YYYY_MM.
--
-- Creates the partitions of the months from the one holding `since` through `ahead` months
-- after the current one, those that are missing; returns the names created. A month whose
-- entries already fell into the default partition is left there (with a warning).
create function audit_log_add_partitions(since timestamptz, ahead integer)
returns setof text language plpgsql as $$
declare
    month timestamp := date_trunc('month', least(since, now()) at time zone 'UTC');
    last_month timestamp := date_trunc('month', now() at time zone 'UTC')
                            + make_interval(months => ahead);
    name text;
begin
    while month <= last_month loop
        name := 'audit_log_' || to_char(month, 'YYYY_MM');
        if to_regclass(name) is null then
            begin
                execute format('create table %I partition of audit_log for values from (%L) to (%L)',
                               name, month at time zone 'UTC',
                               (month + interval '1 month') at time zone 'UTC');
                return next name;
            exception when check_violation then
                raise warning 'audit_log_default holds entries of %; % not created', month, name;
            end;
        end if;
        month := month + interval '1 month';
    end loop;
end $$;

-- The month partitions that end at or before `cutoff`, oldest first, with their first instant.
create function audit_log_partitions_before(cutoff timestamptz)
returns table (name text, month timestamptz) language sql stable as $$
    select c.relname::text, to_timestamp(right(c.relname, 7), 'YYYY_MM') at time zone 'UTC'
      from pg_inherits i join pg_class c on c.oid = i.inhrelid
     where i.inhparent = 'audit_log'::regclass and c.relname ~ '^audit_log_\d{4}_\d{2}$'
       and (to_timestamp(right(c.relname, 7), 'YYYY_MM') at time zone 'UTC')
           + interval '1 month' <= cutoff
     order by 2
$$;

-- Drops the partition of the month starting at `month` (one `audit_log_partitions_before`
-- gave); returns how many entries it held, or null when there is no such partition.
create function audit_log_drop_partition(month timestamptz)
returns bigint language plpgsql as $$
declare
    part text := 'audit_log_' || to_char(month at time zone 'UTC', 'YYYY_MM');
    entries bigint;
begin
    if not exists (select 1 from audit_log_partitions_before('infinity') p where p.name = part) then
        return null;
    end if;
    execute format('select count(*) from %I', part) into entries;
    execute format('drop table %I', part);
    return entries;
end $$;

select audit_log_add_partitions(coalesce(min(created_at), now()), 1) from audit_log_unpartitioned;

insert into audit_log (id, organization_id, event, actor_user_id, actor_token_id, actor_label,
                       target_member_id, target_user_id, ip_address, data, created_at)
     overriding system value
select id, organization_id, event, actor_user_id, actor_token_id, actor_label,
       target_member_id, target_user_id, ip_address, data, created_at
  from audit_log_unpartitioned;

select setval(pg_get_serial_sequence('audit_log', 'id'), s.last_value, s.is_called)
  from audit_log_unpartitioned_id_seq s;

drop table audit_log_unpartitioned;

create trigger audit_log_append_only before update or delete on audit_log
    for each row execute function audit_log_append_only();
create trigger audit_log_webhook_deliveries after insert on audit_log
    referencing new table as new_rows
    for each statement execute function audit_log_webhook_deliveries();
