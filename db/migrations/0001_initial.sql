-- The whole data model. Sized for organizations of a million members: every list is walked by
-- keyset on an index, every per-member lookup is an index probe.

create table users (
    id            bigint generated always as identity primary key,
    email         text not null check (email = lower(email) and position('@' in email) > 1),
    name          text not null default '',
    password_hash text,                              -- argon2id; null: cannot sign in by password
    is_superuser  boolean not null default false,
    created_at    timestamptz not null default now()
);
create unique index users_email on users (email);

create table api_tokens (
    id           bigint generated always as identity primary key,
    user_id      bigint not null references users on delete cascade,
    token_hash   bytea not null unique,             -- sha256 of the token; the token is shown once
    name         text not null default '',
    created_at   timestamptz not null default now(),
    last_used_at timestamptz
);
create index api_tokens_user on api_tokens (user_id);

-- One row per factor. `totp` and `sms` rows count for has2fa once confirmed; `recovery` never does.
create table authenticators (
    id               bigint generated always as identity primary key,
    user_id          bigint not null references users on delete cascade,
    type             text not null check (type in ('totp', 'sms', 'recovery')),
    name             text not null default '',
    secret_encrypted bytea,                          -- totp: Fernet(secret), key derived from SECRET_KEY
    phone            text,                           -- sms: E.164
    last_used_step   bigint,                         -- totp: last accepted time step (replay guard)
    confirmed_at     timestamptz,
    created_at       timestamptz not null default now(),
    last_used_at     timestamptz
);
create index authenticators_user on authenticators (user_id);
-- The has2fa probe used by enforcement and the member filters.
create index authenticators_second_factor on authenticators (user_id)
    where confirmed_at is not null and type in ('totp', 'sms');
create unique index authenticators_one_recovery on authenticators (user_id) where type = 'recovery';

create table recovery_codes (
    authenticator_id bigint not null references authenticators on delete cascade,
    code_hash        bytea not null,
    used_at          timestamptz,
    primary key (authenticator_id, code_hash)
);

create table organizations (
    id          bigint generated always as identity primary key,
    slug        text not null unique check (slug ~ '^[a-z0-9][a-z0-9-]{0,49}$'),
    name        text not null check (length(name) between 1 and 200),
    require_2fa boolean not null default false,
    sso_enabled boolean not null default false,
    created_at  timestamptz not null default now()
);

create table teams (
    id              bigint generated always as identity primary key,
    organization_id bigint not null references organizations on delete cascade,
    slug            text not null check (slug ~ '^[a-z0-9][a-z0-9-]{0,49}$'),
    name            text not null,
    created_at      timestamptz not null default now(),
    unique (organization_id, slug)
);

-- A member is active when user_id is set. A pending member has user_id null and a
-- pending_reason: 'invite' (invited, not yet joined) or '2fa' (removed for having no second
-- factor; role, teams and settings are kept so that rejoining restores them).
create table members (
    id                 bigint generated always as identity primary key,
    organization_id    bigint not null references organizations on delete cascade,
    user_id            bigint references users on delete cascade,
    email              text not null check (email = lower(email)),
    role               text not null check (role in ('owner', 'manager', 'admin', 'member', 'billing')),
    settings           jsonb not null default '{}' check (jsonb_typeof(settings) = 'object'),
    token_hash         bytea,                        -- sha256 of the invite/rejoin token
    pending_reason     text check (pending_reason in ('invite', '2fa')),
    reinstate_by       timestamptz,                  -- the link works until then
    removed_at         timestamptz,                  -- when enforcement removed the member
    removed_by_run     bigint,                       -- the enforcement run that removed them
    expiry_reminded_at timestamptz,                  -- the "expires soon" email was queued
    invited_by         bigint references users on delete set null,
    created_at         timestamptz not null default now(),
    check ((user_id is null) = (pending_reason is not null))
);
create unique index members_org_user on members (organization_id, user_id);
create unique index members_org_email on members (organization_id, email);
create index members_user on members (user_id) where user_id is not null;
create index members_pending_2fa on members (reinstate_by) where pending_reason = '2fa';

create table member_teams (
    member_id bigint not null references members on delete cascade,
    team_id   bigint not null references teams on delete cascade,
    primary key (member_id, team_id)
);
create index member_teams_team on member_teams (team_id);

-- Append-only: rows are never updated or deleted (a trigger refuses it). No foreign keys to
-- members or users so that history outlives what it describes.
create table audit_log (
    id               bigint generated always as identity primary key,
    organization_id  bigint not null,
    event            text not null,
    actor_user_id    bigint,
    actor_token_id   bigint,
    actor_label      text not null default '',
    target_member_id bigint,
    target_user_id   bigint,
    ip_address       inet,
    data             jsonb not null default '{}',
    created_at       timestamptz not null default now()
);
create index audit_log_org on audit_log (organization_id, id desc);
create index audit_log_org_event on audit_log (organization_id, event, id desc);

create function audit_log_append_only() returns trigger language plpgsql as $$
begin
    raise exception 'audit_log is append-only';
end $$;
create trigger audit_log_append_only before update or delete on audit_log
    for each row execute function audit_log_append_only();

-- A run of the require-2FA enforcement over one organization.
create table enforcement_runs (
    id              bigint generated always as identity primary key,
    organization_id bigint not null references organizations on delete cascade,
    actor_user_id   bigint references users on delete set null,
    status          text not null default 'queued'
                    check (status in ('queued', 'running', 'completed', 'cancelled', 'failed')),
    total           bigint not null default 0,
    removed         bigint not null default 0,
    skipped         bigint not null default 0,
    batches_total   integer,                         -- known once the coordinator has planned them
    batches_done    integer not null default 0,
    error           text,
    created_at      timestamptz not null default now(),
    started_at      timestamptz,
    finished_at     timestamptz,
    updated_at      timestamptz not null default now()
);
create index enforcement_runs_org on enforcement_runs (organization_id, id desc);
-- At most one run at a time per organization.
create unique index enforcement_runs_one_active on enforcement_runs (organization_id)
    where status in ('queued', 'running');

-- The batches a run was cut into: [first_member_id, last_member_id] by member id.
create table enforcement_batches (
    run_id          bigint not null references enforcement_runs on delete cascade,
    batch_no        integer not null,
    first_member_id bigint not null,
    last_member_id  bigint not null,
    done_at         timestamptz,
    enqueued_at     timestamptz,
    primary key (run_id, batch_no)
);
create index enforcement_batches_open on enforcement_batches (run_id) where done_at is null;

-- Transactional outbox: rows are written in the transaction of the event that causes them and
-- delivered by the email dispatcher. `dedupe_key` makes "once per event" a constraint.
create table email_outbox (
    id              bigint generated always as identity primary key,
    template        text not null,
    to_address      text not null,
    context         jsonb not null default '{}',
    dedupe_key      text not null unique,
    message_id      text not null unique,
    status          text not null default 'queued' check (status in ('queued', 'sending', 'sent', 'failed')),
    attempts        integer not null default 0,
    next_attempt_at timestamptz not null default now(),
    claimed_until   timestamptz,
    last_error      text,
    organization_id bigint,
    member_id       bigint,
    enforcement_id  bigint,
    created_at      timestamptz not null default now(),
    sent_at         timestamptz
);
create index email_outbox_due on email_outbox (next_attempt_at) where status in ('queued', 'sending');
create index email_outbox_enforcement on email_outbox (enforcement_id, status)
    where enforcement_id is not null;
