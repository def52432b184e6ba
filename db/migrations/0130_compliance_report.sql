-- The compliance report (`GET …/2fa-compliance/?format=csv`, `require2fa report`) is streamed
-- by PostgreSQL's COPY. A cell that a spreadsheet would read as a formula (it starts with =, +,
-- -, @, a tab or a carriage return) gets a leading apostrophe, so that a member's name cannot
-- run in the owner's spreadsheet (OWASP "CSV injection"). A SQL function, so it is inlined.
create function csv_cell(value text) returns text
    language sql immutable parallel safe
    as $$ select case when value ~ '^[-=+@\t\r]' then '''' || value else value end $$;

-- When a member was last sent the "will require two-factor authentication" reminder (the
-- members list's `lastRemindedAt`, the report's "last reminded").
alter table members add column last_reminded_at timestamptz;
