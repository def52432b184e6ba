-- Phone numbers at rest (issue 25, point 12): `phone` holds the number sealed under a key derived
-- from SECRET_KEY (`sealed:` and AES-GCM, `require2fa.sms.seal_phone`), `phone_hint` the masked
-- form every list and page shows, so that only sending a code opens the number. The database
-- cannot seal (the key is not in it): rows written before this stay readable as they are and
-- are sealed by the application the next time a code is sent to them.
alter table authenticators add column phone_hint text;
update authenticators
   set phone_hint = left(phone, 2) || repeat('*', greatest(0, length(phone) - 6)) || right(phone, 4)
 where phone is not null;
