//! Durable state in redb: one database file per process.
//!
//! Every write is one transaction committed with redb's default
//! `Durability::Immediate` (fsync before `commit` returns); the processes
//! write before they send the messages that depend on what they wrote.

use std::path::Path;

use anyhow::Result;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

/// Named blobs: the role's state, the application's state.
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Request ids already executed (replicas).
pub const SEEN: TableDefinition<&[u8; 32], ()> = TableDefinition::new("seen");
/// Pieces ordered here, by upgrade id, while the role holds their upgrade
/// (replicas forward them to guardians).
pub const PIECES: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new("pieces");
/// A guardian's release log: (upgrade, group, kind) → wall-clock ms, one
/// row per kind ever released; written in the same transaction as the
/// state that records the release.
pub const RELEASES: TableDefinition<(&[u8; 16], u32, u8), u64> = TableDefinition::new("releases");

/// A release-log row: upgrade, group, kind (0 secret, 1 cancel), when.
pub type Release = ([u8; 16], u32, u8, u64);

/// One process's database.
pub struct Store {
    db: Database,
}

/// One write: everything in it becomes durable together.
pub struct Batch<'a> {
    txn: redb::WriteTransaction,
    _store: &'a Store,
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
        {
            txn.open_table(META)?;
            txn.open_table(SEEN)?;
            txn.open_table(PIECES)?;
            txn.open_table(RELEASES)?;
        }
        txn.commit()?;
        Ok(Self { db })
    }

    /// A named blob.
    ///
    /// # Errors
    /// On database errors.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(META)?;
        Ok(t.get(key)?.map(|v| v.value().to_vec()))
    }

    /// Every executed request id.
    ///
    /// # Errors
    /// On database errors.
    pub fn seen(&self) -> Result<Vec<[u8; 32]>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(SEEN)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (k, _) = row?;
            out.push(*k.value());
        }
        Ok(out)
    }

    /// A stored piece.
    ///
    /// # Errors
    /// On database errors.
    pub fn piece(&self, upgrade: &[u8; 16]) -> Result<Option<Vec<u8>>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(PIECES)?;
        Ok(t.get(upgrade)?.map(|v| v.value().to_vec()))
    }

    /// The release log.
    ///
    /// # Errors
    /// On database errors.
    pub fn releases(&self) -> Result<Vec<Release>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(RELEASES)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (k, v) = row?;
            let (u, g, kind) = k.value();
            out.push((*u, g, kind, v.value()));
        }
        Ok(out)
    }

    /// Starts a write.
    ///
    /// # Errors
    /// On database errors.
    pub fn batch(&self) -> Result<Batch<'_>> {
        Ok(Batch { txn: self.db.begin_write()?, _store: self })
    }
}

impl Batch<'_> {
    /// Sets a named blob.
    ///
    /// # Errors
    /// On database errors.
    pub fn put(&mut self, key: &str, value: &[u8]) -> Result<()> {
        self.txn.open_table(META)?.insert(key, value)?;
        Ok(())
    }

    /// Records executed request ids.
    ///
    /// # Errors
    /// On database errors.
    pub fn seen(&mut self, ids: &[[u8; 32]]) -> Result<()> {
        let mut t = self.txn.open_table(SEEN)?;
        for id in ids {
            t.insert(id, ())?;
        }
        Ok(())
    }

    /// Stores a piece.
    ///
    /// # Errors
    /// On database errors.
    pub fn piece(&mut self, upgrade: &[u8; 16], bytes: &[u8]) -> Result<()> {
        self.txn.open_table(PIECES)?.insert(upgrade, bytes)?;
        Ok(())
    }

    /// Keeps only the pieces whose upgrade `keep` accepts.
    ///
    /// # Errors
    /// On database errors.
    pub fn retain_pieces(&mut self, mut keep: impl FnMut(&[u8; 16]) -> bool) -> Result<()> {
        self.txn.open_table(PIECES)?.retain(|u, _| keep(u))?;
        Ok(())
    }

    /// Appends to the release log.
    ///
    /// # Errors
    /// On database errors.
    pub fn release(&mut self, upgrade: &[u8; 16], group: u32, kind: u8, at_ms: u64) -> Result<()> {
        self.txn.open_table(RELEASES)?.insert((upgrade, group, kind), at_ms)?;
        Ok(())
    }

    /// Commits durably (fsync before returning).
    ///
    /// # Errors
    /// On database errors; nothing is written then.
    pub fn commit(self) -> Result<()> {
        self.txn.commit()?;
        Ok(())
    }
}
