-- The organization's single sign-on mode beside its other settings: `sso_mfa` is the `mfa` of
-- its `sso_configs` row (`local` or `idp`), null without one. Kept by the trigger below in the
-- transaction that saves or deletes the configuration, so that every statement and page that
-- reads the organization row knows whether SSO is configured and whether the identity
-- provider's MFA counts (`require2fa.compliance.idp_mfa_sql`), without a join of its own.
-- `ssoEnabled` is `sso_enabled or sso_mfa is not null`; `sso_enabled` stays the flag-only form.

alter table organizations
    add column sso_mfa text check (sso_mfa in ('local', 'idp'));

update organizations o set sso_mfa = c.mfa from sso_configs c where c.organization_id = o.id;

create function sso_configs_mode() returns trigger language plpgsql as $$
begin
    if tg_op = 'DELETE' then
        update organizations set sso_mfa = null where id = old.organization_id;
        return old;
    end if;
    update organizations set sso_mfa = new.mfa
     where id = new.organization_id and sso_mfa is distinct from new.mfa;
    return new;
end $$;

create trigger sso_configs_mode after insert or update of mfa or delete on sso_configs
    for each row execute function sso_configs_mode();

-- The requirement's probe of a member's latest sign-in through the identity provider.
create index sso_identities_user on sso_identities (user_id, organization_id, last_sign_in_at desc);
