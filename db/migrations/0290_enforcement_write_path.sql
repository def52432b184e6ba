-- What each removal writes, made cheaper (issue 29). Measured with EXPLAIN ANALYZE on one batch
-- of 1,000 members (503 removed):
--
-- 1. The maintained counts of 0150 looked up the users of the moved memberships with a hash join
--    that read the whole `users` table (a sequential scan per statement: 17 ms of an 89 ms batch
--    with 24k users, and proportionally more on a larger deployment), because the planner
--    guesses the transition tables' sizes. They now fetch exactly those users by primary key.
--
-- 2. `email_outbox.message_id` loses its unique index. The Message-ID is a hash of the row's
--    dedupe key (`db.outbox.message_id`, `MESSAGE_ID_SQL`), which is unique already, and no
--    statement looks a row up by it; the index only cost each insert a probe and an entry at a
--    random place of a random-keyed tree (a page of its own, and a full-page image after each
--    checkpoint).

alter table email_outbox drop constraint email_outbox_message_id_key;

-- The users of `ids`, locked FOR SHARE in id order (see 0150 on why the mask is read under the
-- lock), with their masks: a probe of the primary key each.
create function factor_masks_locked(ids bigint[]) returns table (user_id bigint, factor_mask smallint)
    language sql volatile as $$
    select u.id, u.factor_mask from users u
     where u.id = any(ids)
     order by u.id
       for share of u
$$;

create or replace function members_factor_counts_insert() returns trigger language plpgsql as $$
begin
    insert into member_factor_counts as c (organization_id, factor_mask, slot, members)
    select n.organization_id, l.factor_mask, pg_backend_pid() % 64, count(*)
      from new_rows n
      join factor_masks_locked(array(select distinct n2.user_id from new_rows n2
                                      where n2.user_id is not null)) l on l.user_id = n.user_id
     group by n.organization_id, l.factor_mask
     order by n.organization_id, l.factor_mask
    on conflict (organization_id, factor_mask, slot)
        do update set members = c.members + excluded.members;
    return null;
end $$;

create or replace function members_factor_counts_delete() returns trigger language plpgsql as $$
begin
    insert into member_factor_counts as c (organization_id, factor_mask, slot, members)
    select o.organization_id, l.factor_mask, pg_backend_pid() % 64, -count(*)
      from old_rows o
      join factor_masks_locked(array(select distinct o2.user_id from old_rows o2
                                      where o2.user_id is not null)) l on l.user_id = o.user_id
     where exists (select 1 from organizations g where g.id = o.organization_id)
     group by o.organization_id, l.factor_mask
     order by o.organization_id, l.factor_mask
    on conflict (organization_id, factor_mask, slot)
        do update set members = c.members + excluded.members;
    return null;
end $$;

create or replace function members_factor_counts_update() returns trigger language plpgsql as $$
begin
    with moved as materialized (
        select o.organization_id, o.user_id, -1 as delta
          from old_rows o join new_rows n on n.id = o.id
         where (o.organization_id, o.user_id) is distinct from (n.organization_id, n.user_id)
           and o.user_id is not null
        union all
        select n.organization_id, n.user_id, 1
          from old_rows o join new_rows n on n.id = o.id
         where (o.organization_id, o.user_id) is distinct from (n.organization_id, n.user_id)
           and n.user_id is not null
    )
    insert into member_factor_counts as c (organization_id, factor_mask, slot, members)
    select d.organization_id, l.factor_mask, pg_backend_pid() % 64, sum(d.delta)
      from moved d
      join factor_masks_locked(array(select distinct m.user_id from moved m)) l
        on l.user_id = d.user_id
     group by d.organization_id, l.factor_mask
    having sum(d.delta) <> 0
     order by d.organization_id, l.factor_mask
    on conflict (organization_id, factor_mask, slot)
        do update set members = c.members + excluded.members;
    return null;
end $$;
