//! vCards (XEP-0054 vcard-temp): one per user, kept as the XML the owner set, with the avatar
//! hash (XEP-0153) the server computed from it.
//!
//! This module must not parse the vCard or compute the hash: the server validates what it
//! stores and hands the hash in; here it is only made durable and found again.

use rusqlite::params;
use rusqlite::OptionalExtension;

use crate::error::Result;
use crate::sqlite::Store;

/// A stored vCard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredVcard {
    /// The `<vCard xmlns='vcard-temp'/>` element as serialized XML.
    pub xml: String,
    /// Hex SHA-1 of the decoded PHOTO/BINVAL, `None` when the vCard has no photo.
    pub photo_hash: Option<String>,
}

/// Per-user vCards.
pub trait VcardStore {
    /// The user's vCard, `None` if none was ever set.
    fn vcard(&self, user: &str) -> Result<Option<StoredVcard>>;
    /// Only the avatar hash: `None` if no vCard is stored, `Some(None)` for one without photo.
    fn vcard_photo_hash(&self, user: &str) -> Result<Option<Option<String>>>;
    /// Stores (replaces) the user's vCard. Size bounds are the caller's (it refuses before).
    fn set_vcard(&self, user: &str, vcard: &StoredVcard) -> Result<()>;
    /// Every account with a stored vCard (read once at start, so presence of the others
    /// needs no lookup).
    fn accounts_with_vcard(&self) -> Result<Vec<String>>;
}

impl VcardStore for Store {
    fn vcard(&self, user: &str) -> Result<Option<StoredVcard>> {
        self.read(|tx| {
            Ok(tx
                .prepare_cached("SELECT xml, photo_hash FROM vcards WHERE account = ?1")?
                .query_row([user], |r| {
                    Ok(StoredVcard {
                        xml: r.get(0)?,
                        photo_hash: r.get(1)?,
                    })
                })
                .optional()?)
        })
    }

    fn vcard_photo_hash(&self, user: &str) -> Result<Option<Option<String>>> {
        self.read(|tx| {
            Ok(tx
                .prepare_cached("SELECT photo_hash FROM vcards WHERE account = ?1")?
                .query_row([user], |r| r.get::<_, Option<String>>(0))
                .optional()?)
        })
    }

    fn set_vcard(&self, user: &str, vcard: &StoredVcard) -> Result<()> {
        self.write(|tx| {
            tx.prepare_cached(
                "INSERT INTO vcards (account, xml, photo_hash) VALUES (?1, ?2, ?3)
                 ON CONFLICT (account) DO UPDATE SET xml = excluded.xml,
                     photo_hash = excluded.photo_hash",
            )?
            .execute(params![user, vcard.xml, vcard.photo_hash])?;
            Ok(())
        })
    }

    fn accounts_with_vcard(&self) -> Result<Vec<String>> {
        self.read(|tx| {
            let mut stmt = tx.prepare("SELECT account FROM vcards")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
        })
    }
}
