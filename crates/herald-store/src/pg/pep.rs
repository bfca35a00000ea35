//! PEP (XEP-0163) nodes and items on PostgreSQL, with the bounds enforced inside the write
//! transaction under the owner's lock, so concurrent publishes cannot pass them together.

use postgres::Transaction;

use super::{limit, lock, to_usize, PgStore};
use crate::error::{Result, StoreError};
use crate::pep::{PepItem, PepLimits, PepPublish, PepStore};

fn node_count(tx: &mut Transaction<'_>, owner: &str) -> Result<usize> {
    let n: i64 = tx
        .query_one(
            "SELECT COUNT(*) FROM pep_nodes WHERE account = $1",
            &[&owner],
        )?
        .try_get(0)?;
    to_usize(n)
}

fn bytes(tx: &mut Transaction<'_>, owner: &str) -> Result<u64> {
    let n: i64 = tx
        .query_one(
            "SELECT COALESCE(SUM(octet_length(xml)), 0)::BIGINT FROM pep_items WHERE account = $1",
            &[&owner],
        )?
        .try_get(0)?;
    Ok(u64::try_from(n).unwrap_or(0))
}

fn node_exists(tx: &mut Transaction<'_>, owner: &str, node: &str) -> Result<bool> {
    Ok(tx
        .query_opt(
            "SELECT 1 FROM pep_nodes WHERE account = $1 AND node = $2",
            &[&owner, &node],
        )?
        .is_some())
}

/// Drops all but the newest `keep` items of the node; the dropped ids, oldest first.
fn trim(tx: &mut Transaction<'_>, owner: &str, node: &str, keep: usize) -> Result<Vec<String>> {
    let rows = tx.query(
        "SELECT id FROM pep_items WHERE account = $1 AND node = $2
         ORDER BY seq DESC OFFSET $3",
        &[&owner, &node, &limit(keep)],
    )?;
    let mut dropped = rows
        .iter()
        .map(|r| Ok(r.try_get(0)?))
        .collect::<Result<Vec<String>>>()?;
    if !dropped.is_empty() {
        tx.execute(
            "DELETE FROM pep_items WHERE account = $1 AND node = $2 AND id = ANY($3)",
            &[&owner, &node, &dropped],
        )?;
    }
    dropped.reverse();
    Ok(dropped)
}

fn item_row(r: &postgres::Row) -> Result<(i64, PepItem)> {
    Ok((
        r.try_get(0)?,
        PepItem {
            id: r.try_get(1)?,
            xml: r.try_get(2)?,
        },
    ))
}

impl PepStore for PgStore {
    fn pep_nodes(&self, owner: &str) -> Result<Vec<(String, String)>> {
        self.read(|tx| {
            tx.query(
                "SELECT node, config FROM pep_nodes WHERE account = $1 ORDER BY node COLLATE \"C\"",
                &[&owner],
            )?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
        })
    }

    fn pep_node(&self, owner: &str, node: &str) -> Result<Option<String>> {
        self.read(|tx| {
            tx.query_opt(
                "SELECT config FROM pep_nodes WHERE account = $1 AND node = $2",
                &[&owner, &node],
            )?
            .map(|r| Ok(r.try_get(0)?))
            .transpose()
        })
    }

    fn pep_create(&self, owner: &str, node: &str, config: &str, max_nodes: usize) -> Result<bool> {
        self.write(|tx| {
            lock(tx, "pep", owner)?;
            if node_exists(tx, owner, node)? {
                return Ok(false);
            }
            if node_count(tx, owner)? >= max_nodes {
                return Err(StoreError::QuotaExceeded);
            }
            tx.execute(
                "INSERT INTO pep_nodes (account, node, config) VALUES ($1, $2, $3)",
                &[&owner, &node, &config],
            )?;
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
            lock(tx, "pep", owner)?;
            let n = tx.execute(
                "UPDATE pep_nodes SET config = $3 WHERE account = $1 AND node = $2",
                &[&owner, &node, &config],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound);
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
            lock(tx, "pep", owner)?;
            let mut created = false;
            if !node_exists(tx, owner, node)? {
                let Some(config) = create else {
                    return Ok(PepPublish::NoNode);
                };
                if node_count(tx, owner)? >= limits.max_nodes {
                    return Ok(PepPublish::TooManyNodes);
                }
                tx.execute(
                    "INSERT INTO pep_nodes (account, node, config) VALUES ($1, $2, $3)",
                    &[&owner, &node, &config],
                )?;
                created = true;
            }
            let Some(item) = item else {
                return Ok(PepPublish::Stored {
                    created,
                    dropped: Vec::new(),
                });
            };
            tx.execute(
                "DELETE FROM pep_items WHERE account = $1 AND node = $2 AND id = $3",
                &[&owner, &node, &item.id],
            )?;
            tx.execute(
                "INSERT INTO pep_items (account, node, id, seq, xml)
                 SELECT $1, $2, $3, COALESCE(MAX(seq), 0) + 1, $4
                 FROM pep_items WHERE account = $1 AND node = $2",
                &[&owner, &node, &item.id, &item.xml],
            )?;
            let dropped = trim(tx, owner, node, keep)?;
            // Checked after the replacement and the trim: a publish that replaces or pushes
            // out an item of the same size always fits.
            if bytes(tx, owner)? > limits.max_bytes {
                return Err(StoreError::QuotaExceeded);
            }
            Ok(PepPublish::Stored { created, dropped })
        })
        .or_else(|e| match e {
            // The error rolled the transaction back: nothing was written.
            StoreError::QuotaExceeded => Ok(PepPublish::OverQuota),
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
            // Newest first, then reversed: the page is the newest `max`, in publish order.
            let mut out = if ids.is_empty() {
                tx.query(
                    "SELECT seq, id, xml FROM pep_items WHERE account = $1 AND node = $2
                     ORDER BY seq DESC LIMIT $3",
                    &[&owner, &node, &max.map(limit)],
                )?
                .iter()
                .map(item_row)
                .collect::<Result<Vec<_>>>()?
            } else {
                let mut found = tx
                    .query(
                        "SELECT seq, id, xml FROM pep_items
                         WHERE account = $1 AND node = $2 AND id = ANY($3)
                         ORDER BY seq DESC",
                        &[&owner, &node, &ids],
                    )?
                    .iter()
                    .map(item_row)
                    .collect::<Result<Vec<_>>>()?;
                if let Some(m) = max {
                    found.truncate(m);
                }
                found
            };
            out.reverse();
            Ok(out.into_iter().map(|(_, i)| i).collect())
        })
    }

    fn pep_retract(&self, owner: &str, node: &str, ids: &[String]) -> Result<Vec<String>> {
        self.write(|tx| {
            let mut gone = Vec::new();
            for id in ids {
                let n = tx.execute(
                    "DELETE FROM pep_items WHERE account = $1 AND node = $2 AND id = $3",
                    &[&owner, &node, id],
                )?;
                if n > 0 {
                    gone.push(id.clone());
                }
            }
            Ok(gone)
        })
    }

    fn pep_purge(&self, owner: &str, node: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "DELETE FROM pep_items WHERE account = $1 AND node = $2",
                &[&owner, &node],
            )?;
            Ok(())
        })
    }

    fn pep_delete(&self, owner: &str, node: &str) -> Result<bool> {
        self.write(|tx| {
            tx.execute(
                "DELETE FROM pep_items WHERE account = $1 AND node = $2",
                &[&owner, &node],
            )?;
            let n = tx.execute(
                "DELETE FROM pep_nodes WHERE account = $1 AND node = $2",
                &[&owner, &node],
            )?;
            Ok(n > 0)
        })
    }

    fn pep_bytes(&self, owner: &str) -> Result<u64> {
        self.read(|tx| bytes(tx, owner))
    }
}
