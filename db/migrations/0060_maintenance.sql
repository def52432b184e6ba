-- Links of purged members. The purge deletes a pending member whose reinstatement window has
-- passed; its link must then say "expired" (410) rather than "invalid" (400), and only for the
-- genuine token, so we keep the member id and the token hash. No foreign keys: the member is gone.
create table purged_members (
    member_id       bigint primary key,
    organization_id bigint not null,
    token_hash      bytea,
    reinstate_by    timestamptz,
    purged_at       timestamptz not null default now()
);

-- The expiry reminder looks up the newest link emailed to a member.
create index email_outbox_member on email_outbox (member_id, id desc) where member_id is not null;

