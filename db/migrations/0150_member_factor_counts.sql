-- The compliance count of an organization, maintained (issue 15): how many of its active members
-- have each combination of factor kinds, so that "who would a run remove now" is a sum of a few
-- rows whatever the organization's size, instead of a probe per member.
--
-- A user's *factor mask* is the bitwise OR of `factor_bit(type)` over their confirmed factors:
-- bit i stands for `require2fa.compliance.FACTOR_KINDS[i]` (recovery codes and unconfirmed
-- factors are 0). A member meets a level when `factor_mask & level bits <> 0`, the bits of the
-- kinds the level accepts (`compliance.level_bits`); tests/test_compliance.py compares
-- `factor_bit` with `compliance.factor_bit`. Exemptions lapse with time, so they are not stored
-- here: the count subtracts the organization's exempt members (a few, on an index) when it reads.
--
-- Kept by triggers, in the transaction of whatever writes: statement-level with transition tables
-- on `members` and `authenticators` (an enforcement batch, the purge and the seed's COPY each
-- cost one set-based statement, not one call per row), a row trigger before a user is deleted.
-- They fire even under `session_replication_role = replica` (the seed's bulk load), because they
-- keep derived data true rather than check it.
--
-- Concurrency: every change of a member's contribution happens under a lock on the member's
-- user row: FOR SHARE when a membership appears or goes (members), FOR NO KEY UPDATE when the
-- user's factors change (authenticators); the mask is read after the lock, so it is the one that
-- the last committed change wrote. Enrollment and enforcement already lock the user FOR UPDATE
-- (`db.users.lock`), so this adds no wait to them. Each backend adds to its own slot row
-- (`pg_backend_pid() % 64`), so two batches of one run never queue on one counter row; the
-- count is the sum over the slots.

create function factor_bit(kind text) returns smallint
    language sql immutable parallel safe
    as $$ select (case kind when 'totp' then 1 when 'sms' then 2 when 'webauthn' then 4
                  else 0 end)::smallint $$;

alter table users add column factor_mask smallint not null default 0;

create table member_factor_counts (
    organization_id bigint not null references organizations on delete cascade,
    factor_mask     smallint not null,
    slot            smallint not null,                -- pg_backend_pid() % 64 of the writer
    members         bigint not null,                  -- may be negative in one slot; sums hold
    primary key (organization_id, factor_mask, slot)
);

-- The exempt members of one organization, for the count's correction.
create index members_org_exempt on members (organization_id, exempt_2fa_until)
    where exempt_2fa_until is not null and user_id is not null;

-- Every membership and mask from scratch: the back-fill below, and after a TRUNCATE.
create function member_factor_counts_rebuild() returns void language plpgsql as $$
begin
    update users u set factor_mask = f.mask
      from (select a.user_id, bit_or(factor_bit(a.type))::smallint as mask
              from authenticators a where a.confirmed_at is not null
             group by a.user_id) f
     where u.id = f.user_id and u.factor_mask <> f.mask;
    update users u set factor_mask = 0
     where u.factor_mask <> 0
       and not exists (select 1 from authenticators a
                        where a.user_id = u.id and a.confirmed_at is not null
                          and factor_bit(a.type) <> 0);
    delete from member_factor_counts;
    insert into member_factor_counts (organization_id, factor_mask, slot, members)
    select m.organization_id, u.factor_mask, 0, count(*)
      from members m join users u on u.id = m.user_id
     group by m.organization_id, u.factor_mask;
end $$;

-- A user's mask from their factors, for the users in `ids`: locks them (id order), recomputes,
-- writes the masks that changed and moves each of their memberships from the old mask's row to
-- the new one's. Called by the authenticators triggers with the users whose factors changed.
create function factor_masks_refresh(ids bigint[]) returns void language plpgsql as $$
begin
    perform 1 from users u where u.id = any(ids) order by u.id for no key update of u;
    with fresh as (
        select u.id, u.factor_mask as old_mask, coalesce(f.mask, 0)::smallint as new_mask
          from users u
          left join (select a.user_id, bit_or(factor_bit(a.type)) as mask
                       from authenticators a
                      where a.user_id = any(ids) and a.confirmed_at is not null
                      group by a.user_id) f on f.user_id = u.id
         where u.id = any(ids)
    ), changed as (
        update users u set factor_mask = f.new_mask
          from fresh f
         where u.id = f.id and f.new_mask <> f.old_mask
        returning u.id, f.old_mask, f.new_mask
    ), moves as (
        select m.organization_id, c.old_mask as factor_mask, -1 as delta
          from changed c join members m on m.user_id = c.id
        union all
        select m.organization_id, c.new_mask, 1
          from changed c join members m on m.user_id = c.id
    )
    insert into member_factor_counts as c (organization_id, factor_mask, slot, members)
    select organization_id, factor_mask, pg_backend_pid() % 64, sum(delta)
      from moves
     group by organization_id, factor_mask
    having sum(delta) <> 0
     order by organization_id, factor_mask
    on conflict (organization_id, factor_mask, slot)
        do update set members = c.members + excluded.members;
end $$;

create function authenticators_factor_masks_insert() returns trigger language plpgsql as $$
begin
    perform factor_masks_refresh(array(
        select distinct n.user_id from new_rows n
         where n.confirmed_at is not null and factor_bit(n.type) <> 0));
    return null;
end $$;

create function authenticators_factor_masks_delete() returns trigger language plpgsql as $$
begin
    perform factor_masks_refresh(array(
        select distinct o.user_id from old_rows o
         where o.confirmed_at is not null and factor_bit(o.type) <> 0));
    return null;
end $$;

-- Most updates touch only a factor's use (last_used_at, sign_count): nothing to refresh.
create function authenticators_factor_masks_update() returns trigger language plpgsql as $$
declare
    ids bigint[];
begin
    select array_agg(distinct x.user_id) into ids
      from old_rows o
      join new_rows n on n.id = o.id
     cross join lateral (values (o.user_id), (n.user_id)) x(user_id)
     where (o.user_id, o.type, o.confirmed_at is null)
           is distinct from (n.user_id, n.type, n.confirmed_at is null);
    if ids is not null then
        perform factor_masks_refresh(ids);
    end if;
    return null;
end $$;

-- Memberships that appear: +1 on the row of their user's mask.
create function members_factor_counts_insert() returns trigger language plpgsql as $$
begin
    -- FOR SHARE returns the newest version of a user row that a concurrent transaction
    -- changed: the mask read here is the one that holds while we hold the lock.
    with locked as (
        select n.organization_id, u.factor_mask
          from new_rows n join users u on u.id = n.user_id
         order by u.id
           for share of u
    )
    insert into member_factor_counts as c (organization_id, factor_mask, slot, members)
    select organization_id, factor_mask, pg_backend_pid() % 64, count(*)
      from locked
     group by organization_id, factor_mask
     order by organization_id, factor_mask
    on conflict (organization_id, factor_mask, slot)
        do update set members = c.members + excluded.members;
    return null;
end $$;

-- Memberships that go: -1. Pending rows (the purge) count for nothing; an organization or a
-- user deleted in this transaction is left out (the cascade empties the organization's rows;
-- `users_factor_counts_delete` took the user's memberships out before the user went).
create function members_factor_counts_delete() returns trigger language plpgsql as $$
begin
    with locked as (
        select o.organization_id, u.factor_mask
          from old_rows o join users u on u.id = o.user_id
         where o.user_id is not null
         order by u.id
           for share of u
    )
    insert into member_factor_counts as c (organization_id, factor_mask, slot, members)
    select l.organization_id, l.factor_mask, pg_backend_pid() % 64, -count(*)
      from locked l
     where exists (select 1 from organizations g where g.id = l.organization_id)
     group by l.organization_id, l.factor_mask
     order by l.organization_id, l.factor_mask
    on conflict (organization_id, factor_mask, slot)
        do update set members = c.members + excluded.members;
    return null;
end $$;

-- A membership that changes hands: enforcement removes (user_id set to null), accepting an
-- invitation or rejoining gives it a user. Updates of anything else move nothing.
create function members_factor_counts_update() returns trigger language plpgsql as $$
begin
    with moved as (
        select o.organization_id, o.user_id, -1 as delta
          from old_rows o join new_rows n on n.id = o.id
         where (o.organization_id, o.user_id) is distinct from (n.organization_id, n.user_id)
           and o.user_id is not null
        union all
        select n.organization_id, n.user_id, 1
          from old_rows o join new_rows n on n.id = o.id
         where (o.organization_id, o.user_id) is distinct from (n.organization_id, n.user_id)
           and n.user_id is not null
    ), locked as (
        select d.organization_id, u.factor_mask, d.delta
          from moved d join users u on u.id = d.user_id
         order by u.id
           for share of u
    )
    insert into member_factor_counts as c (organization_id, factor_mask, slot, members)
    select organization_id, factor_mask, pg_backend_pid() % 64, sum(delta)
      from locked
     group by organization_id, factor_mask
    having sum(delta) <> 0
     order by organization_id, factor_mask
    on conflict (organization_id, factor_mask, slot)
        do update set members = c.members + excluded.members;
    return null;
end $$;

-- A user about to be deleted: their memberships leave the counts now, while their mask is known
-- (the cascade that deletes the memberships runs after the user row is gone).
create function users_factor_counts_delete() returns trigger language plpgsql as $$
begin
    insert into member_factor_counts as c (organization_id, factor_mask, slot, members)
    select m.organization_id, old.factor_mask, pg_backend_pid() % 64, -count(*)
      from members m
     where m.user_id = old.id
     group by m.organization_id
     order by m.organization_id
    on conflict (organization_id, factor_mask, slot)
        do update set members = c.members + excluded.members;
    return old;
end $$;

create function member_factor_counts_truncated() returns trigger language plpgsql as $$
begin
    perform member_factor_counts_rebuild();
    return null;
end $$;

-- Writes wait for the back-fill rather than slip between it and the triggers.
lock table users, members, authenticators in share row exclusive mode;

create trigger authenticators_factor_masks_insert after insert on authenticators
    referencing new table as new_rows
    for each statement execute function authenticators_factor_masks_insert();
create trigger authenticators_factor_masks_update after update on authenticators
    referencing old table as old_rows new table as new_rows
    for each statement execute function authenticators_factor_masks_update();
create trigger authenticators_factor_masks_delete after delete on authenticators
    referencing old table as old_rows
    for each statement execute function authenticators_factor_masks_delete();
create trigger members_factor_counts_insert after insert on members
    referencing new table as new_rows
    for each statement execute function members_factor_counts_insert();
create trigger members_factor_counts_update after update on members
    referencing old table as old_rows new table as new_rows
    for each statement execute function members_factor_counts_update();
create trigger members_factor_counts_delete after delete on members
    referencing old table as old_rows
    for each statement execute function members_factor_counts_delete();
create trigger users_factor_counts_delete before delete on users
    for each row execute function users_factor_counts_delete();
create trigger members_factor_counts_truncated after truncate on members
    for each statement execute function member_factor_counts_truncated();
create trigger authenticators_factor_masks_truncated after truncate on authenticators
    for each statement execute function member_factor_counts_truncated();

alter table authenticators enable always trigger authenticators_factor_masks_insert,
    enable always trigger authenticators_factor_masks_update,
    enable always trigger authenticators_factor_masks_delete,
    enable always trigger authenticators_factor_masks_truncated;
alter table members enable always trigger members_factor_counts_insert,
    enable always trigger members_factor_counts_update,
    enable always trigger members_factor_counts_delete,
    enable always trigger members_factor_counts_truncated;
alter table users enable always trigger users_factor_counts_delete;

select member_factor_counts_rebuild();
