//! Private XML storage (XEP-0049): per user, one serialized element per (element name,
//! namespace), as the owner set it.
//!
//! This module must not parse the XML or decide which namespaces are allowed (the server
//! does); it keeps the items and enforces the count bound atomically.

use rusqlite::params;
use rusqlite::OptionalExtension;

use crate::error::{Result, StoreError};
use crate::sqlite::{to_usize, Store};

/// One private item: the key and its serialized element.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrivateItem {
    /// The element's name.
    pub name: String,
    /// The element's namespace.
    pub ns: String,
    /// The element as serialized XML.
    pub xml: String,
}

/// Per-user private XML storage.
pub trait PrivateStore {
    /// The stored element with this name and namespace, if any.
    fn private_item(&self, user: &str, name: &str, ns: &str) -> Result<Option<String>>;
    /// Stores (replaces) items in one transaction. [`StoreError::QuotaExceeded`], with
    /// nothing written, if the user would then hold more than `max` items (replacing
    /// existing ones never fails, even beyond `max`).
    fn set_private_items(&self, user: &str, items: &[PrivateItem], max: usize) -> Result<()>;
    /// How many items the user holds.
    fn private_count(&self, user: &str) -> Result<usize>;
}

impl PrivateStore for Store {
    fn private_item(&self, user: &str, name: &str, ns: &str) -> Result<Option<String>> {
        self.read(|tx| {
            Ok(tx
                .prepare_cached(
                    "SELECT xml FROM private_items WHERE account = ?1 AND ns = ?2 AND name = ?3",
                )?
                .query_row(params![user, ns, name], |r| r.get(0))
                .optional()?)
        })
    }

    fn set_private_items(&self, user: &str, items: &[PrivateItem], max: usize) -> Result<()> {
        self.write(|tx| {
            let count = |tx: &rusqlite::Transaction<'_>| -> Result<usize> {
                let n: i64 = tx
                    .prepare_cached("SELECT COUNT(*) FROM private_items WHERE account = ?1")?
                    .query_row([user], |r| r.get(0))?;
                to_usize(n)
            };
            let before = count(tx)?;
            let mut stmt = tx.prepare_cached(
                "INSERT INTO private_items (account, name, ns, xml) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (account, ns, name) DO UPDATE SET xml = excluded.xml",
            )?;
            for it in items {
                stmt.execute(params![user, it.name, it.ns, it.xml])?;
            }
            // Counted inside the write transaction, so two sets cannot pass the bound
            // together; the error rolls the inserts back.
            let after = count(tx)?;
            if after > before && after > max {
                return Err(StoreError::QuotaExceeded);
            }
            Ok(())
        })
    }

    fn private_count(&self, user: &str) -> Result<usize> {
        self.read(|tx| {
            let n: i64 = tx
                .prepare_cached("SELECT COUNT(*) FROM private_items WHERE account = ?1")?
                .query_row([user], |r| r.get(0))?;
            to_usize(n)
        })
    }
}
