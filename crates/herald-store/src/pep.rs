//! PEP (XEP-0163): each account's nodes, their configuration and their items.
//!
//! The configuration is opaque text here (the server serializes it); items are a node-unique
//! id and the payload's XML, kept in publish order. This module enforces the bounds it is
//! given (nodes per account, items per node, bytes per account) inside the write
//! transaction, so concurrent publishes cannot pass them together; it must not parse XML
//! or decide who may read a node.

use rusqlite::{params, OptionalExtension, Transaction};

use crate::error::Result;
use crate::sqlite::{to_usize, Store};

/// A stored item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PepItem {
    /// The item id (unique within its node).
    pub id: String,
    /// The payload as XML text.
    pub xml: String,
}

/// The bounds a publish is checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PepLimits {
    /// Most nodes one account may have (a publish that would create one more is refused).
    pub max_nodes: usize,
    /// Most bytes of item XML one account may store across its nodes.
    pub max_bytes: u64,
}

/// What a publish did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PepPublish {
    /// Stored. `created`: the node did not exist and was created with the given
    /// configuration; `dropped`: ids of the oldest items removed to keep `keep`.
    Stored {
        /// The node was created by this publish.
        created: bool,
        /// Items dropped beyond `keep`, oldest first.
        dropped: Vec<String>,
    },
    /// The account already has `max_nodes` nodes; nothing written.
    TooManyNodes,
    /// The account's items would exceed `max_bytes`; nothing written.
    OverQuota,
    /// The node does not exist and no configuration was given to create it.
    NoNode,
}

/// Per-account PEP nodes.
pub trait PepStore {
    /// The account's nodes with their configuration, by node name.
    fn pep_nodes(&self, owner: &str) -> Result<Vec<(String, String)>>;
    /// One node's configuration.
    fn pep_node(&self, owner: &str, node: &str) -> Result<Option<String>>;
    /// Creates a node. `Ok(false)` if it already exists (nothing changed);
    /// [`crate::StoreError::QuotaExceeded`] if the account has `max_nodes` already.
    fn pep_create(&self, owner: &str, node: &str, config: &str, max_nodes: usize) -> Result<bool>;
    /// Replaces a node's configuration and keeps only its `keep` newest items; the ids
    /// dropped, oldest first. [`crate::StoreError::NotFound`] if there is no such node.
    fn pep_configure(
        &self,
        owner: &str,
        node: &str,
        config: &str,
        keep: usize,
    ) -> Result<Vec<String>>;
    /// Stores `item` as the newest of `node` (replacing an item with the same id), creating
    /// the node with `create` if it does not exist, then keeps only the `keep` newest items.
    /// `item` None stores nothing (a node that does not persist items) but still creates.
    fn pep_publish(
        &self,
        owner: &str,
        node: &str,
        create: Option<&str>,
        item: Option<&PepItem>,
        keep: usize,
        limits: PepLimits,
    ) -> Result<PepPublish>;
    /// Items of a node, oldest first: those with the given ids (all if `ids` is empty), at
    /// most the `max` newest of them.
    fn pep_items(
        &self,
        owner: &str,
        node: &str,
        ids: &[String],
        max: Option<usize>,
    ) -> Result<Vec<PepItem>>;
    /// Removes items by id; the ids that were there.
    fn pep_retract(&self, owner: &str, node: &str, ids: &[String]) -> Result<Vec<String>>;
    /// Removes every item of a node.
    fn pep_purge(&self, owner: &str, node: &str) -> Result<()>;
    /// Removes a node and its items; whether it existed.
    fn pep_delete(&self, owner: &str, node: &str) -> Result<bool>;
    /// Bytes of item XML the account stores.
    fn pep_bytes(&self, owner: &str) -> Result<u64>;
}

fn node_count(tx: &Transaction<'_>, owner: &str) -> Result<usize> {
    let n: i64 = tx
        .prepare_cached("SELECT COUNT(*) FROM pep_nodes WHERE account = ?1")?
        .query_row([owner], |r| r.get(0))?;
    to_usize(n)
}

fn bytes(tx: &Transaction<'_>, owner: &str) -> Result<u64> {
    let n: i64 = tx
        .prepare_cached(
            "SELECT COALESCE(SUM(length(CAST(xml AS BLOB))), 0) FROM pep_items WHERE account = ?1",
        )?
        .query_row([owner], |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

fn trim(tx: &Transaction<'_>, owner: &str, node: &str, keep: usize) -> Result<Vec<String>> {
    let keep = i64::try_from(keep).unwrap_or(i64::MAX);
    let dropped: Vec<String> = {
        let mut st = tx.prepare_cached(
            "SELECT id FROM pep_items WHERE account = ?1 AND node = ?2
             ORDER BY seq DESC LIMIT -1 OFFSET ?3",
        )?;
        let rows = st.query_map(params![owner, node, keep], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<Vec<String>>>()?
    };
    let mut del =
        tx.prepare_cached("DELETE FROM pep_items WHERE account = ?1 AND node = ?2 AND id = ?3")?;
    for id in &dropped {
        del.execute(params![owner, node, id])?;
    }
    let mut dropped = dropped;
    dropped.reverse();
    Ok(dropped)
}

impl PepStore for Store {
    fn pep_nodes(&self, owner: &str) -> Result<Vec<(String, String)>> {
        self.read(|tx| {
            let mut st = tx.prepare_cached(
                "SELECT node, config FROM pep_nodes WHERE account = ?1 ORDER BY node",
            )?;
            let rows = st.query_map([owner], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<rusqlite::Result<Vec<(String, String)>>>()?)
        })
    }

    fn pep_node(&self, owner: &str, node: &str) -> Result<Option<String>> {
        self.read(|tx| {
            Ok(tx
                .prepare_cached("SELECT config FROM pep_nodes WHERE account = ?1 AND node = ?2")?
                .query_row(params![owner, node], |r| r.get(0))
                .optional()?)
        })
    }

    fn pep_create(&self, owner: &str, node: &str, config: &str, max_nodes: usize) -> Result<bool> {
        self.write(|tx| {
            let exists = tx
                .prepare_cached("SELECT 1 FROM pep_nodes WHERE account = ?1 AND node = ?2")?
                .exists(params![owner, node])?;
            if exists {
                return Ok(false);
            }
            if node_count(tx, owner)? >= max_nodes {
                return Err(crate::StoreError::QuotaExceeded);
            }
            tx.prepare_cached("INSERT INTO pep_nodes (account, node, config) VALUES (?1, ?2, ?3)")?
                .execute(params![owner, node, config])?;
            Ok(true)
        })
    }

    fn pep_configure(
        &self,
        owner: &str,
        node: &str,
        config: &str,
        keep: usize,
    ) -> Result<Vec<String>> {
        self.write(|tx| {
            let n = tx
                .prepare_cached(
                    "UPDATE pep_nodes SET config = ?3 WHERE account = ?1 AND node = ?2",
                )?
                .execute(params![owner, node, config])?;
            if n == 0 {
                return Err(crate::StoreError::NotFound);
            }
            trim(tx, owner, node, keep)
        })
    }

    fn pep_publish(
        &self,
        owner: &str,
        node: &str,
        create: Option<&str>,
        item: Option<&PepItem>,
        keep: usize,
        limits: PepLimits,
    ) -> Result<PepPublish> {
        self.write(|tx| {
            let exists = tx
                .prepare_cached("SELECT 1 FROM pep_nodes WHERE account = ?1 AND node = ?2")?
                .exists(params![owner, node])?;
            let mut created = false;
            if !exists {
                let Some(config) = create else {
                    return Ok(PepPublish::NoNode);
                };
                if node_count(tx, owner)? >= limits.max_nodes {
                    return Ok(PepPublish::TooManyNodes);
                }
                tx.prepare_cached(
                    "INSERT INTO pep_nodes (account, node, config) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![owner, node, config])?;
                created = true;
            }
            let Some(item) = item else {
                return Ok(PepPublish::Stored {
                    created,
                    dropped: Vec::new(),
                });
            };
            tx.prepare_cached("DELETE FROM pep_items WHERE account = ?1 AND node = ?2 AND id = ?3")?
                .execute(params![owner, node, item.id])?;
            let seq: i64 = tx
                .prepare_cached(
                    "SELECT COALESCE(MAX(seq), 0) + 1 FROM pep_items WHERE account = ?1 AND node = ?2",
                )?
                .query_row(params![owner, node], |r| r.get(0))?;
            tx.prepare_cached(
                "INSERT INTO pep_items (account, node, id, seq, xml) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![owner, node, item.id, seq, item.xml])?;
            let dropped = trim(tx, owner, node, keep)?;
            // Checked after the replacement and the trim: a publish that replaces or pushes
            // out an item of the same size always fits.
            if bytes(tx, owner)? > limits.max_bytes {
                return Err(crate::StoreError::QuotaExceeded);
            }
            Ok(PepPublish::Stored { created, dropped })
        })
        .or_else(|e| match e {
            // The error rolled the transaction back: nothing was written.
            crate::StoreError::QuotaExceeded => Ok(PepPublish::OverQuota),
            e => Err(e),
        })
    }

    fn pep_items(
        &self,
        owner: &str,
        node: &str,
        ids: &[String],
        max: Option<usize>,
    ) -> Result<Vec<PepItem>> {
        self.read(|tx| {
            let mut out: Vec<(i64, PepItem)> = Vec::new();
            if ids.is_empty() {
                let limit = max.map_or(-1, |m| i64::try_from(m).unwrap_or(i64::MAX));
                let mut st = tx.prepare_cached(
                    "SELECT seq, id, xml FROM pep_items WHERE account = ?1 AND node = ?2
                     ORDER BY seq DESC LIMIT ?3",
                )?;
                let rows = st.query_map(params![owner, node, limit], |r| {
                    Ok((
                        r.get(0)?,
                        PepItem {
                            id: r.get(1)?,
                            xml: r.get(2)?,
                        },
                    ))
                })?;
                out = rows.collect::<rusqlite::Result<Vec<_>>>()?;
            } else {
                let mut st = tx.prepare_cached(
                    "SELECT seq, id, xml FROM pep_items WHERE account = ?1 AND node = ?2 AND id = ?3",
                )?;
                for id in ids {
                    if let Some(row) = st
                        .query_row(params![owner, node, id], |r| {
                            Ok((
                                r.get(0)?,
                                PepItem {
                                    id: r.get(1)?,
                                    xml: r.get(2)?,
                                },
                            ))
                        })
                        .optional()?
                    {
                        out.push(row);
                    }
                }
                out.sort_by_key(|(seq, _)| std::cmp::Reverse(*seq));
                if let Some(m) = max {
                    out.truncate(m);
                }
            }
            out.reverse();
            Ok(out.into_iter().map(|(_, i)| i).collect())
        })
    }

    fn pep_retract(&self, owner: &str, node: &str, ids: &[String]) -> Result<Vec<String>> {
        self.write(|tx| {
            let mut st = tx.prepare_cached(
                "DELETE FROM pep_items WHERE account = ?1 AND node = ?2 AND id = ?3",
            )?;
            let mut gone = Vec::new();
            for id in ids {
                if st.execute(params![owner, node, id])? > 0 {
                    gone.push(id.clone());
                }
            }
            Ok(gone)
        })
    }

    fn pep_purge(&self, owner: &str, node: &str) -> Result<()> {
        self.write(|tx| {
            tx.prepare_cached("DELETE FROM pep_items WHERE account = ?1 AND node = ?2")?
                .execute(params![owner, node])?;
            Ok(())
        })
    }

    fn pep_delete(&self, owner: &str, node: &str) -> Result<bool> {
        self.write(|tx| {
            tx.prepare_cached("DELETE FROM pep_items WHERE account = ?1 AND node = ?2")?
                .execute(params![owner, node])?;
            let n = tx
                .prepare_cached("DELETE FROM pep_nodes WHERE account = ?1 AND node = ?2")?
                .execute(params![owner, node])?;
            Ok(n > 0)
        })
    }

    fn pep_bytes(&self, owner: &str) -> Result<u64> {
        self.read(|tx| bytes(tx, owner))
    }
}
