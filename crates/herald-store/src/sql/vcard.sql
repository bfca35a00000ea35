-- Role: vcard (XEP-0054 vcard-temp). One vCard per account, as the serialized XML the owner
-- set, with the SHA-1 of its decoded PHOTO (XEP-0153) computed by the server at set time, so
-- the avatar hash every presence needs is read without parsing the vCard.
CREATE TABLE vcards (
    account     TEXT PRIMARY KEY NOT NULL,
    xml         TEXT NOT NULL,
    photo_hash  TEXT
) WITHOUT ROWID;
