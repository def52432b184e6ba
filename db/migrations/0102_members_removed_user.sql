-- A rejoin link (a member removed for 2FA) gives the membership back to the account it was
-- taken from, and to no other (issue 10, point 5): the pending row remembers that user.
-- No foreign key: a deleted user leaves an id that no account has, so the link then works for
-- nobody rather than for anybody.
alter table members add column removed_user_id bigint;

-- Rows removed before this column existed: the user their newest `member.pending` entry names
-- (one pass over the audit log, joined once).
update members m
   set removed_user_id = p.target_user_id
  from (select distinct on (target_member_id) target_member_id, target_user_id
          from audit_log
         where event = 'member.pending' and target_member_id is not null
         order by target_member_id, id desc) p
 where p.target_member_id = m.id and m.pending_reason = '2fa' and m.user_id is null;
