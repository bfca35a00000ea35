-- Role: muc, version 2 (PostgreSQL). A persistent room's vCard (XEP-0486 room avatar), as the
-- XML an owner set; NULL when none was set.
ALTER TABLE muc_rooms ADD COLUMN vcard TEXT;
