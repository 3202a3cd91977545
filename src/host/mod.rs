//! The host layer (`std` feature): what every host of the roles does,
//! written once.
//!
//! The roles are sans-IO state machines. Around each one a host still has
//! to route its steps (a message to [`Peer::Group`] is a submission to that
//! group's ordering; `ForwardPiece` and `SendPrepare` name a piece the host
//! must find), persist its state before any message that depends on it
//! leaves, keep the pieces guardians may ask for, and move payloads between
//! files and the crate's chunked encryption. This module does all of it
//! over two small traits the host implements:
//!
//! - [`Store`]: named records, read one at a time and written in atomic
//!   batches (redb, sled, a file per record, or [`MemStore`]);
//! - [`Transport`]: delivery of [`Outbound`] items: a message to one party,
//!   or an operation to one group's ordering (its replicas, a sequencer, a
//!   mempool: the engine decides).
//!
//! Time is a value passed in, as to the roles; there are no threads and no
//! sockets here. Each wrapper ([`ReplicaHost`], [`GuardianHost`],
//! [`InstallerHost`], [`DeployerHost`]) owns its role and its store, so the order "write,
//! then send" is enforced by the type, not left to prose: outbound items
//! reach the transport only from a call that has committed the state they
//! depend on.
//!
//! The simulator ([`crate::sim`]) and `examples/node` both drive the roles
//! through these wrappers: the simulator with a [`MemStore`] and its seeded
//! network (a crash drops the wrapper and reopens it from the store), the
//! node with redb, TCP and AlephBFT.
//!
//! ```
//! use bft_upgrade::host::{Batch, MemStore, Store};
//!
//! let mut store = MemStore::default();
//! let mut batch = Batch::new();
//! batch.put("a", vec![1]);
//! batch.put("b", vec![2]);
//! store.commit(batch).unwrap();
//! assert_eq!(store.get("a").unwrap(), Some(vec![1]));
//! assert_eq!(store.list("").unwrap(), vec!["a".to_string(), "b".to_string()]);
//! ```

/// The store accessors every wrapper has: `store`, `store_mut`,
/// `into_store`.
macro_rules! store_accessors {
    () => {
        /// The store.
        pub fn store(&self) -> &S {
            &self.store
        }

        /// The store, for the host's own reads and writes outside the
        /// role's (and for tests). Writes that must be atomic with the
        /// role's go in the wrapper's batch.
        pub fn store_mut(&mut self) -> &mut S {
            &mut self.store
        }

        /// Gives the store back (after a crash, open a new wrapper on it).
        pub fn into_store(self) -> S {
            self.store
        }
    };
}

mod deployer;
mod guardian;
mod installer;
mod payload;
mod replica;

use std::boxed::Box;
use std::collections::BTreeMap;
use std::string::{String, ToString};
use std::vec::Vec;

use crate::error::{DecodeError, MisuseError};
use crate::step::{Fault, Outgoing, Peer};
use crate::wire::{self, GroupId, Message, Operation, Piece, UpgradeHeader};

pub use deployer::DeployerHost;
pub use guardian::{releases, GuardianHost, GuardianReport, Release};
pub use installer::{InstallerHost, InstallerReport, LOG_MIN};
pub use payload::{check_payload, open_payload, payload_key, seal_payload, PayloadError, DEFAULT_CHUNK};
pub use replica::{stored_replica, ReplicaHost, ReplicaReport};

/// Durable named records, written in atomic batches.
///
/// A host implements it over its database. `commit` must be atomic (every
/// write of the batch or none) and durable when it returns: the wrappers
/// send what depends on a batch only after `commit` returned `Ok`.
pub trait Store {
    /// The store's error.
    type Error: core::fmt::Debug;
    /// The record named `key`, if any.
    ///
    /// # Errors
    /// When the store cannot be read.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Self::Error>;
    /// The names of the records starting with `prefix`, in order.
    ///
    /// # Errors
    /// When the store cannot be read.
    fn list(&self, prefix: &str) -> Result<Vec<String>, Self::Error>;
    /// Writes every entry of `batch`, atomically and durably.
    ///
    /// # Errors
    /// When the write fails; nothing of the batch is written then.
    fn commit(&mut self, batch: Batch) -> Result<(), Self::Error>;
}

/// Writes to commit together: puts and deletes, applied in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    writes: Vec<(String, Option<Vec<u8>>)>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the record `key` to `value`.
    pub fn put(&mut self, key: impl Into<String>, value: Vec<u8>) {
        self.writes.push((key.into(), Some(value)));
    }

    /// Deletes the record `key` (nothing if there is none).
    pub fn delete(&mut self, key: impl Into<String>) {
        self.writes.push((key.into(), None));
    }

    /// Appends every write of `other`, after this batch's.
    pub fn extend(&mut self, other: Batch) {
        self.writes.extend(other.writes);
    }

    /// Whether the batch writes nothing.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// The writes, in order: `(key, Some(value))` puts, `(key, None)`
    /// deletes.
    pub fn writes(&self) -> &[(String, Option<Vec<u8>>)] {
        &self.writes
    }

    /// The writes, by value.
    pub fn into_writes(self) -> Vec<(String, Option<Vec<u8>>)> {
        self.writes
    }
}

/// A [`Store`] in memory: for tests, the simulator, and hosts whose state
/// lives elsewhere. Never fails.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemStore {
    records: BTreeMap<String, Vec<u8>>,
    commits: u64,
}

impl MemStore {
    /// Batches committed so far.
    pub fn commits(&self) -> u64 {
        self.commits
    }

    /// Bytes held, keys and values.
    pub fn bytes(&self) -> usize {
        self.records.iter().map(|(k, v)| k.len().saturating_add(v.len())).sum()
    }
}

impl Store for MemStore {
    type Error = core::convert::Infallible;

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Self::Error> {
        Ok(self.records.get(key).cloned())
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, Self::Error> {
        Ok(self
            .records
            .range(prefix.to_string()..)
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(prefix))
            .cloned()
            .collect())
    }

    fn commit(&mut self, batch: Batch) -> Result<(), Self::Error> {
        for (key, value) in batch.writes {
            match value {
                Some(v) => {
                    self.records.insert(key, v);
                }
                None => {
                    self.records.remove(&key);
                }
            }
        }
        self.commits = self.commits.saturating_add(1);
        Ok(())
    }
}

/// What a host must deliver once the state it depends on is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outbound {
    /// A message to one party over the host's authenticated transport.
    Send {
        /// The destination (a replica, guardian, installer or client).
        to: Peer,
        /// The message.
        message: Message,
    },
    /// An operation for `group`'s ordering. The group executes it with this
    /// host's identity as the origin, so the ordering must authenticate the
    /// submitter (e.g. a signed envelope checked before execution).
    Submit {
        /// The group.
        group: GroupId,
        /// The operation (boxed: a prepare holds a whole piece).
        op: Box<Operation>,
    },
    /// A piece for guardian `guardian` (guardian custody: the replica's
    /// host forwards it, the guardian's host calls
    /// [`GuardianHost::piece`]).
    Piece {
        /// The guardian's id.
        guardian: u32,
        /// The piece, as the group ordered it (boxed: pieces are large).
        piece: Box<Piece>,
    },
}

/// Where [`Outbound`] items go: the host's network and ordering
/// submission. A `Vec<Outbound>` collects them (tests, the simulator).
pub trait Transport {
    /// Delivers one item (best effort: the roles retry what matters).
    fn deliver(&mut self, out: Outbound);
}

impl Transport for Vec<Outbound> {
    fn deliver(&mut self, out: Outbound) {
        self.push(out);
    }
}

/// Routes a step's messages: a `Submit` to a group goes to its ordering,
/// anything else to its peer.
pub fn route(messages: &[Outgoing], transport: &mut impl Transport) {
    for m in messages {
        transport.deliver(match (m.to, &m.message) {
            (Peer::Group(group), Message::Submit(op)) => {
                Outbound::Submit { group, op: Box::new(Operation::from(op.clone())) }
            }
            (to, message) => Outbound::Send { to, message: message.clone() },
        });
    }
}

/// What went wrong in a wrapper: its store, or a stored record that does
/// not decode (a corrupt or foreign database), or misuse of a role.
#[derive(Debug)]
pub enum HostError<E> {
    /// The store failed; nothing of the step was sent.
    Store(E),
    /// A stored record does not decode.
    Corrupt {
        /// The record's name.
        key: String,
        /// Why.
        error: DecodeError,
    },
    /// A record that must be there is not (a store wiped under the host).
    Missing {
        /// The record's name.
        key: String,
    },
    /// The role refused the call.
    Misuse(MisuseError),
}

impl<E: core::fmt::Debug> core::fmt::Display for HostError<E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Store(e) => write!(f, "store: {e:?}"),
            Self::Corrupt { key, error } => write!(f, "stored record {key:?} does not decode: {error}"),
            Self::Missing { key } => write!(f, "stored record {key:?} is missing"),
            Self::Misuse(e) => write!(f, "{e}"),
        }
    }
}

impl<E: core::fmt::Debug> std::error::Error for HostError<E> {}

impl<E> From<MisuseError> for HostError<E> {
    fn from(e: MisuseError) -> Self {
        Self::Misuse(e)
    }
}

/// A record's bytes (postcard, as [`wire::encode`]), in one pass into a
/// buffer that grows until the value fits, then shrinks to it: a store
/// may keep the value as it is (the simulator's holds a million of them).
pub(crate) fn to_bytes<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let mut buf = std::vec![0u8; 4096];
    loop {
        if let Ok(used) = wire::encode(value, &mut buf) {
            let len = used.len();
            buf.truncate(len);
            buf.shrink_to_fit();
            return buf;
        }
        if buf.len() >= 1 << 26 {
            break;
        }
        buf.resize(buf.len().saturating_mul(4), 0);
    }
    // Larger than 64 MiB: size it first.
    buf.resize(wire::encoded_len(value), 0);
    let len = wire::encode(value, &mut buf).map(|b| b.len()).unwrap_or(0);
    buf.truncate(len);
    buf
}

/// Reads and decodes the record `key`, if any.
pub(crate) fn load<T, S: Store>(store: &S, key: &str) -> Result<Option<T>, HostError<S::Error>>
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    match store.get(key).map_err(HostError::Store)? {
        None => Ok(None),
        Some(bytes) => wire::decode(&bytes).map(Some).map_err(|error| HostError::Corrupt { key: key.into(), error }),
    }
}

/// Lower-case hex, for record names.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use core::fmt::Write;
    let mut s = String::with_capacity(bytes.len().saturating_mul(2));
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Faults a step reported, for the host's log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// The faults.
    pub faults: Vec<Fault>,
    /// How many more the step observed than it could carry.
    pub dropped: u32,
}

/// An upgrade as an installer gets it: the public header and every group's
/// signed piece. Public: it holds no secret (boxes are sealed to replicas
/// and guardians).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Bundle {
    /// The public header.
    pub header: UpgradeHeader,
    /// The groups with their `f`, in the installer's order.
    pub groups: Vec<(GroupId, u8)>,
    /// One signed piece per group.
    pub pieces: Vec<Piece>,
}

impl Bundle {
    /// The piece for `group`.
    pub fn piece(&self, group: GroupId) -> Option<&Piece> {
        self.pieces.iter().find(|p| p.header.group == group)
    }
}

/// The 16 bytes a 32-digit lower- or upper-case hex string spells.
pub(crate) fn unhex16(s: &str) -> Option<[u8; 16]> {
    let mut out = [0u8; 16];
    if s.len() != 32 || !s.is_ascii() {
        return None;
    }
    for (i, b) in out.iter_mut().enumerate() {
        let at = i.checked_mul(2)?;
        *b = u8::from_str_radix(s.get(at..at.checked_add(2)?)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::to_bytes;
    use crate::wire;

    /// A record holds its bytes and no more: a store may keep the vector
    /// as it is, a million of them in the simulator.
    #[test]
    fn a_record_is_exactly_its_encoding() {
        for value in [std::vec![7u8; 3], std::vec![1u8; 5000]] {
            let bytes = to_bytes(&value);
            assert_eq!(bytes.len(), wire::encoded_len(&value));
            assert_eq!(bytes.capacity(), bytes.len());
        }
    }
}
