-- Exemptions from the requirement, for bots and service accounts (CONTRACT §9): while
-- `exempt_2fa_until` is in the future the member is never removed or blocked for 2FA
-- (`require2fa.compliance.compliant_sql(..., exempt_until_sql="m.exempt_2fa_until")`).
-- An exemption lasts at most a year; `exempt_2fa_by` is the user who granted it.
alter table members
    add column exempt_2fa_until  timestamptz,
    add column exempt_2fa_reason text check (length(exempt_2fa_reason) <= 200),
    add column exempt_2fa_by     bigint references users on delete set null,
    add column exempt_2fa_by_label text not null default '',
    add constraint members_exemption_whole
        check ((exempt_2fa_until is null) = (exempt_2fa_reason is null));

-- The sweep that finds lapsed exemptions, and `is:exempt`, look only at the few exempt members.
create index members_exempt_2fa on members (exempt_2fa_until) where exempt_2fa_until is not null;
