-- The requirement level of an organization (require2fa.compliance.LEVELS): which factor kinds
-- satisfy its requirement. `any` is what the requirement meant before levels existed.
alter table organizations
    add column require_2fa_level text not null default 'any'
        check (require_2fa_level in ('any', 'secure', 'phishing-resistant'));

-- Why enforcement took a member out (shown as `pendingReason`): `2fa` for no second factor at
-- all, `2fa-level` for factors that do not meet the organization's level. The pending record
-- itself stays `pending_reason = '2fa'`, so the window, the purge, the reminders and rejoining
-- treat both alike.
alter table members add column removal_reason text;
