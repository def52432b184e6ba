-- OpenID Connect single sign-on: one identity provider per organization, and who signed in
-- through it (require2fa/sso.py is the relying party).

create table sso_configs (
    organization_id     bigint primary key references organizations (id) on delete cascade,
    issuer              text not null check (issuer ~ '^https?://'),
    client_id           text not null check (length(client_id) between 1 and 500),
    -- A Fernet token under the key derived from SECRET_KEY for "sso-client-secret", as TOTP
    -- secrets are stored (require2fa/sso.py encrypts and decrypts it).
    client_secret_encrypted bytea not null,
    mfa                 text not null default 'local' check (mfa in ('local', 'idp')),
    -- The provider's `.well-known/openid-configuration`, read when the configuration was saved.
    metadata            jsonb not null,
    metadata_fetched_at timestamptz not null default now(),
    created_at          timestamptz not null default now(),
    updated_at          timestamptz not null default now()
);

-- A person at the provider (`iss`, `sub`) linked to one user, with what their latest sign-in
-- asserted: the second factor it counts under `mfa = 'idp'` (require2fa.compliance.idp_mfa_meets).
create table sso_identities (
    id              bigint generated always as identity primary key,
    issuer          text not null,
    sub             text not null,
    user_id         bigint not null references users (id) on delete cascade,
    organization_id bigint not null references organizations (id) on delete cascade,
    last_sign_in_at timestamptz not null default now(),
    amr             text[] not null default '{}',
    acr             text,
    auth_time       timestamptz,
    created_at      timestamptz not null default now(),
    unique (issuer, sub)
);

create index sso_identities_member on sso_identities (organization_id, user_id);
