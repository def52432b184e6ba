-- Accept links are secrets (issue 10, point 4). New outbox rows keep them sealed
-- (`accept_url_sealed`, AES-GCM under a key derived from SECRET_KEY); rows written before this
-- kept them in the clear. Those already sent need theirs no more: the expiry reminder of such a
-- member mints a fresh link. Rows still to send keep theirs until sent (db/outbox.mark_sent
-- drops it then).
update email_outbox
   set context = context - 'accept_url'
 where status <> 'queued' and status <> 'sending' and context ? 'accept_url';
