-- Two lanes of email and a fair share of bulk between organizations (issue 24).
--
-- `lane`: 0 transactional (a person waits for it), 1 bulk; written with the row from
-- `require2fa.email_classes` (`db.outbox.insert_sql`). `fair_seq`: a bulk row's start tag in
-- start-time fair queuing: an organization's rows follow its last queued row or the queue's
-- virtual time, whichever is later, so a later organization's rows interleave with an earlier
-- one's backlog instead of queueing behind it. Transactional rows keep 0 (first come, by id).
alter table email_outbox
    add column lane smallint not null default 1 check (lane in (0, 1)),
    add column fair_seq bigint not null default 0;

update email_outbox set lane = 0
 where template in ('invite', 'security_notice', 'enforcement_summary')
   and status in ('queued', 'sending');

-- The claim: transactional first, then bulk by start tag.
create index email_outbox_lanes on email_outbox (lane, fair_seq, id)
    where status in ('queued', 'sending');
-- An organization's last queued bulk row, read when its next rows are written.
create index email_outbox_fair_org on email_outbox (organization_id, fair_seq)
    where status in ('queued', 'sending') and lane = 1;

-- The queue's virtual time: the start tag of the latest bulk row claimed. One row.
create table email_fair_clock (
    id    boolean primary key default true check (id),
    vtime bigint not null default 0
);
insert into email_fair_clock default values;
