-- The email domains an organization's identity provider signs in (issue 26): the sign-in
-- page's entry takes an email address and leads to the organization that lists its domain.
-- A domain belongs to at most one organization (the primary key; a second claim is a 409,
-- `require2fa.single_sign_on.save_config`), is stored lower-case, and goes with the
-- configuration it routes to. Claiming a domain only routes: the callback still links only a
-- member of that organization with that email, verified by the provider.
create table sso_domains (
    domain          text primary key
                    check (domain = lower(domain) and domain ~ '^[a-z0-9.-]+\.[a-z0-9-]+$'),
    organization_id bigint not null references sso_configs (organization_id) on delete cascade,
    created_at      timestamptz not null default now()
);

create index sso_domains_organization on sso_domains (organization_id);
