-- Security keys and passkeys (WebAuthn): a fourth factor type. A `webauthn` row holds the
-- credential's id (as the authenticator gave it), its COSE public key, and the signature counter
-- last seen (an assertion whose counter does not go forward is refused). Nothing secret is stored:
-- the private key never leaves the authenticator.
alter table authenticators drop constraint authenticators_type_check;
alter table authenticators add constraint authenticators_type_check
    check (type in ('totp', 'sms', 'webauthn', 'recovery'));

alter table authenticators
    add column credential_id bytea,
    add column public_key    bytea,
    add column sign_count    bigint,
    add column transports    text[];

-- A credential belongs to one account: the same key registered twice is refused.
create unique index authenticators_credential on authenticators (credential_id)
    where credential_id is not null;

-- The has2fa probe covers the new kind: the predicate is `require2fa.compliance.INDEX_PREDICATE`
-- (tests/test_compliance.py compares them).
drop index authenticators_second_factor;
create index authenticators_second_factor on authenticators (user_id)
    where confirmed_at is not null and type in ('totp', 'sms', 'webauthn');
