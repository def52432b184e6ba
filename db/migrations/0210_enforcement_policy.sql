-- The enforcement policy (CONTRACT §10, "Enforcement policy"): whom the requirement applies to
-- and what a run does to a member who does not meet it.
--
-- Scope: both arrays null means everyone (the default). Otherwise a member is in scope when
-- their role is one of `require_2fa_scope_roles` or they belong to one of the teams
-- `require_2fa_scope_teams` (slugs of this organization's teams, which are never renamed); `require2fa.compliance.in_scope_sql`
-- renders the condition, `require2fa.compliance.in_scope` checks it in Python. An empty array
-- is stored as null, so "none of the two" can only mean everyone.
alter table organizations
    add column require_2fa_scope_roles text[],
    add column require_2fa_scope_teams text[],
    add column require_2fa_action text not null default 'remove'
        check (require_2fa_action in ('remove', 'block'));

-- Blocked in place: the member stays active (user, role, teams and settings untouched) and is
-- refused by the ongoing check until they meet the requirement; `blocked_by_run` is the run that
-- blocked them (the dedupe key of their one email per run). No window, no purge.
alter table members
    add column blocked_at     timestamptz,
    add column blocked_by_run bigint references enforcement_runs on delete set null,
    add constraint members_blocked_active check (blocked_at is null or user_id is not null);

-- `is:blocked`, and unblocking the few blocked members of an organization.
create index members_blocked on members (organization_id, id) where blocked_at is not null;
