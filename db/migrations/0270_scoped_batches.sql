-- A run of a scoped requirement (`require2FAScope`) is cut into batches of the scope's members
-- only: each such batch lists its members' ids, in id order (`first_member_id` and
-- `last_member_id` are the first and the last of them). Null for a run of everyone, whose
-- batches cover every member in their id range. `db.planning.plan` writes it.
alter table enforcement_batches add column member_ids bigint[];
