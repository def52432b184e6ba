-- The audit log's pages go newest first by (created_at, id), and their cursors carry both, so
-- that a page reads the month partitions its times fall in and no others (`db.audit.page`).
-- These indexes replace the ones by id: on each month partition, an organization's entries
-- (of one event) in time order. Building them holds writes to the audit log for as long as it
-- takes (a share lock on each partition), as 0190 did.
create index audit_log_org_time on audit_log (organization_id, created_at, id);
create index audit_log_org_event_time on audit_log (organization_id, event, created_at, id);
drop index audit_log_org;
drop index audit_log_org_event;
