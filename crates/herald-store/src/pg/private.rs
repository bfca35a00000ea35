//! Private XML storage (XEP-0049) on PostgreSQL, bounded per account.

use super::{lock, to_usize, PgStore};
use crate::error::{Result, StoreError};
use crate::private::{PrivateItem, PrivateStore};

fn count(tx: &mut postgres::Transaction<'_>, user: &str) -> Result<usize> {
    let n: i64 = tx
        .query_one(
            "SELECT COUNT(*) FROM private_items WHERE account = $1",
            &[&user],
        )?
        .try_get(0)?;
    to_usize(n)
}

impl PrivateStore for PgStore {
    fn private_item(&self, user: &str, name: &str, ns: &str) -> Result<Option<String>> {
        self.read(|tx| {
            tx.query_opt(
                "SELECT xml FROM private_items WHERE account = $1 AND ns = $2 AND name = $3",
                &[&user, &ns, &name],
            )?
            .map(|r| Ok(r.try_get(0)?))
            .transpose()
        })
    }

    fn set_private_items(&self, user: &str, items: &[PrivateItem], max: usize) -> Result<()> {
        self.write(|tx| {
            // Counted under the user's lock, so concurrent sets cannot pass the bound together.
            lock(tx, "private", user)?;
            let before = count(tx, user)?;
            for it in items {
                tx.execute(
                    "INSERT INTO private_items (account, name, ns, xml) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (account, ns, name) DO UPDATE SET xml = excluded.xml",
                    &[&user, &it.name, &it.ns, &it.xml],
                )?;
            }
            let after = count(tx, user)?;
            if after > before && after > max {
                return Err(StoreError::QuotaExceeded);
            }
            Ok(())
        })
    }

    fn private_count(&self, user: &str) -> Result<usize> {
        self.read(|tx| count(tx, user))
    }
}
