-- Sessions live here (issue 10): the browser's cookie holds only a random key, this table keeps
-- its SHA-256 (so a copy of the database cannot be replayed as a cookie) and what the session
-- knows (who signed in, how far, when they last proved who they are). Deleting a row ends the
-- session for good: a saved copy of the cookie then finds nothing.
create table sessions (
    id           bigint generated always as identity primary key,
    key_hash     bytea not null unique,
    user_id      bigint references users (id) on delete cascade,
    data         jsonb not null default '{}',
    created_at   timestamptz not null default now(),
    last_seen_at timestamptz not null default now(),
    expires_at   timestamptz not null,
    ip_address   text,
    user_agent   text
);

-- A user's sessions (listing them, ending the others on a password change or factor removal).
create index sessions_user on sessions (user_id) where user_id is not null;
-- The purge of sessions past their expiry.
create index sessions_expiry on sessions (expires_at);
