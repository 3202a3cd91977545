//! Durable state in redb, as the core's host layer wants it: one database
//! file per process, one table of named records, every
//! [`Batch`](bft_upgrade::host::Batch) one write transaction committed with
//! redb's default `Durability::Immediate` (fsync before `commit` returns).
//! The host layer sends what depends on a batch only after that.

use std::path::Path;

use anyhow::Result;
use bft_upgrade::host::Batch;
use redb::{Database, ReadableDatabase, TableDefinition};

/// Every record, by name (the host layer's names, and the application's).
const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records");

/// One process's database.
pub struct Store {
    db: Database,
}

impl Store {
    /// Opens (or creates) the database at `path`.
    ///
    /// # Errors
    /// On I/O errors or a database another process holds.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let db = Database::create(path)?;
        let txn = db.begin_write()?;
        txn.open_table(RECORDS)?;
        txn.commit()?;
        Ok(Self { db })
    }
}

impl bft_upgrade::host::Store for Store {
    type Error = anyhow::Error;

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(RECORDS)?;
        Ok(t.get(key)?.map(|v| v.value().to_vec()))
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(RECORDS)?;
        let mut out = Vec::new();
        for row in t.range(prefix..)? {
            let (k, _) = row?;
            let k = k.value();
            if !k.starts_with(prefix) {
                break;
            }
            out.push(k.to_string());
        }
        Ok(out)
    }

    fn commit(&mut self, batch: Batch) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut t = txn.open_table(RECORDS)?;
            for (key, value) in batch.writes() {
                match value {
                    Some(v) => {
                        t.insert(key.as_str(), v.as_slice())?;
                    }
                    None => {
                        t.remove(key.as_str())?;
                    }
                }
            }
        }
        txn.commit()?;
        Ok(())
    }
}
