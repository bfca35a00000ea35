//! vCards (XEP-0054) and their XEP-0153 photo hashes on PostgreSQL.

use super::PgStore;
use crate::error::Result;
use crate::vcard::{StoredVcard, VcardStore};

impl VcardStore for PgStore {
    fn vcard(&self, user: &str) -> Result<Option<StoredVcard>> {
        self.read(|tx| {
            tx.query_opt(
                "SELECT xml, photo_hash FROM vcards WHERE account = $1",
                &[&user],
            )?
            .map(|r| {
                Ok(StoredVcard {
                    xml: r.try_get(0)?,
                    photo_hash: r.try_get(1)?,
                })
            })
            .transpose()
        })
    }

    fn vcard_photo_hash(&self, user: &str) -> Result<Option<Option<String>>> {
        self.read(|tx| {
            tx.query_opt("SELECT photo_hash FROM vcards WHERE account = $1", &[&user])?
                .map(|r| Ok(r.try_get::<_, Option<String>>(0)?))
                .transpose()
        })
    }

    fn set_vcard(&self, user: &str, vcard: &StoredVcard) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO vcards (account, xml, photo_hash) VALUES ($1, $2, $3)
                 ON CONFLICT (account) DO UPDATE SET xml = excluded.xml,
                     photo_hash = excluded.photo_hash",
                &[&user, &vcard.xml, &vcard.photo_hash],
            )?;
            Ok(())
        })
    }

    fn accounts_with_vcard(&self) -> Result<Vec<String>> {
        self.read(|tx| {
            tx.query("SELECT account FROM vcards", &[])?
                .iter()
                .map(|r| Ok(r.try_get(0)?))
                .collect()
        })
    }
}
