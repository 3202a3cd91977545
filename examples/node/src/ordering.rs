//! The AlephBFT glue: what a group's replicas need to order operations
//! with `aleph-bft`.
//!
//! - [`Keys`]: AlephBFT's `Keychain`/`MultiKeychain` with ECDSA P-256 (the
//!   replicas' transport keys, through the core's `DeployerKey` and
//!   `Signature`); a multisignature is a set of `2f + 1` valid signatures.
//! - [`GroupNetwork`]: AlephBFT's `Network` over the authenticated
//!   connections ([`Frame::Consensus`]).
//! - [`Provider`]: the `DataProvider`; it drains the queue of submissions
//!   this replica received into one unit's data.
//! - [`Finalized`]: the `FinalizationHandler`; it hands each ordered unit's
//!   data to the replica's main loop.
//! - [`Backup`]: the unit backup AlephBFT needs to restart without
//!   equivocating, as length-prefixed records in a file, synced per unit; a
//!   record cut short by a crash is dropped on load.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use aleph_bft::{
    DataProvider, FinalizationHandler, Hasher, Index, Keychain, MultiKeychain, NetworkData, NodeCount, NodeIndex,
    PartialMultisignature, Recipient, SignatureSet, SpawnHandle, TaskHandle,
};
use bft_upgrade::crypto::{DeployerKey, Digest, PublicKey, Signature};
use bft_upgrade::step::Peer;
use bft_upgrade::wire::GroupId;
use parity_scale_codec::{Decode, Encode};
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;
use tracing::warn;

use crate::frame::Frame;
use crate::transport::Net;

/// SHA-256 for unit hashes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sha;

impl Hasher for Sha {
    type Hash = [u8; 32];
    fn hash(s: &[u8]) -> [u8; 32] {
        Sha256::digest(s).into()
    }
}

/// An ECDSA P-256 signature (`r || s`) as AlephBFT carries it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Encode, Decode)]
pub struct Sig(pub [u8; 64]);

/// A replica's keychain for its group's AlephBFT session: replica `index`
/// signing with `key`; `members` are the group's transport keys in
/// membership order.
#[derive(Clone)]
pub struct Keys {
    pub index: NodeIndex,
    pub key: Arc<DeployerKey>,
    pub members: Arc<Vec<PublicKey>>,
}

fn prehash(msg: &[u8]) -> Digest {
    let mut h = Sha256::new();
    h.update(b"bft-upgrade-node/alephbft/v1");
    h.update(msg);
    Digest(h.finalize().into())
}

impl Index for Keys {
    fn index(&self) -> NodeIndex {
        self.index
    }
}

impl Keychain for Keys {
    type Signature = Sig;

    fn node_count(&self) -> NodeCount {
        NodeCount(self.members.len())
    }

    fn sign(&self, msg: &[u8]) -> Sig {
        // Signing with a valid key does not fail; an all-zero signature
        // would simply not verify anywhere.
        Sig(self.key.sign(&prehash(msg)).map(|s| s.to_bytes()).unwrap_or([0; 64]))
    }

    fn verify(&self, msg: &[u8], sgn: &Sig, index: NodeIndex) -> bool {
        self.members.get(index.0).is_some_and(|pk| Signature::from_bytes(&sgn.0).verify(pk, &prehash(msg)).is_ok())
    }
}

impl MultiKeychain for Keys {
    type PartialMultisignature = SignatureSet<Sig>;

    fn bootstrap_multi(&self, signature: &Sig, index: NodeIndex) -> SignatureSet<Sig> {
        SignatureSet::with_size(self.node_count()).add_signature(signature, index)
    }

    fn is_complete(&self, msg: &[u8], partial: &SignatureSet<Sig>) -> bool {
        let valid = partial.iter().filter(|(i, s)| self.verify(msg, s, *i)).count();
        NodeCount(valid) >= self.node_count().consensus_threshold()
    }
}

/// The data a unit carries: the wire encoding of a batch of envelopes.
pub type Batch = Vec<u8>;

/// AlephBFT's network data for this host.
pub type Data = NetworkData<Sha, Batch, Sig, SignatureSet<Sig>>;

/// AlephBFT's network: consensus frames to and from the group's replicas,
/// for replica `me` of `group` (of `n`); `rx` receives the consensus frames
/// the transport accepted from the group's replicas.
pub struct GroupNetwork {
    pub net: Arc<Net>,
    pub group: GroupId,
    pub me: u8,
    pub n: u8,
    pub rx: mpsc::Receiver<Vec<u8>>,
}

#[async_trait::async_trait]
impl aleph_bft::Network<Data> for GroupNetwork {
    fn send(&self, data: Data, recipient: Recipient) {
        let frame = Frame::Consensus(data.encode());
        match recipient {
            Recipient::Everyone => {
                for i in (0..self.n).filter(|i| *i != self.me) {
                    self.net.send(Peer::Replica { group: self.group, index: i }, &frame);
                }
            }
            Recipient::Node(i) => {
                if let Ok(index) = u8::try_from(i.0) {
                    self.net.send(Peer::Replica { group: self.group, index }, &frame);
                }
            }
        }
    }

    async fn next_event(&mut self) -> Option<Data> {
        loop {
            let bytes = self.rx.recv().await?;
            match Data::decode(&mut bytes.as_slice()) {
                Ok(d) => return Some(d),
                // The transport decoded it once already (its policy), so
                // this does not happen; keep going if it does.
                Err(e) => warn!("undecodable consensus data: {e}"),
            }
        }
    }
}

/// Whether `bytes` decode as AlephBFT network data (the transport's policy
/// closes a connection that sends anything else).
pub fn is_consensus_data(bytes: &[u8]) -> bool {
    let mut input = bytes;
    Data::decode(&mut input).is_ok() && input.is_empty()
}

/// Submissions this replica received and has not proposed yet.
#[derive(Clone, Default)]
pub struct Queue(Arc<Mutex<VecDeque<Vec<u8>>>>);

/// The most submissions queued (more are dropped; submitters retry).
const QUEUE_LIMIT: usize = 10_000;
/// The most bytes one unit's data carries.
const UNIT_BYTES: usize = 256 * 1024;

impl Queue {
    /// Queues one encoded envelope.
    pub fn push(&self, envelope: Vec<u8>) -> bool {
        let mut q = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() >= QUEUE_LIMIT {
            return false;
        }
        q.push_back(envelope);
        true
    }
}

/// AlephBFT's data provider: a batch of queued envelopes per unit.
pub struct Provider(pub Queue);

#[async_trait::async_trait]
impl DataProvider for Provider {
    type Output = Batch;

    async fn get_data(&mut self) -> Option<Batch> {
        let mut q = (self.0).0.lock().unwrap_or_else(|e| e.into_inner());
        let mut batch: Vec<Vec<u8>> = Vec::new();
        let mut size = 0;
        while let Some(front) = q.front() {
            if !batch.is_empty() && size + front.len() > UNIT_BYTES {
                break;
            }
            size += front.len();
            batch.extend(q.pop_front());
        }
        (!batch.is_empty()).then(|| crate::frame::encode(&batch))
    }
}

/// AlephBFT's finalization handler: ordered data to the main loop.
pub struct Finalized(pub mpsc::UnboundedSender<Batch>);

impl FinalizationHandler<Batch> for Finalized {
    fn data_finalized(&mut self, data: Batch) {
        let _ = self.0.send(data);
    }
}

/// Tasks on the tokio runtime.
#[derive(Clone)]
pub struct Spawner;

impl SpawnHandle for Spawner {
    fn spawn(&self, _name: &'static str, task: impl futures::Future<Output = ()> + Send + 'static) {
        tokio::spawn(task);
    }

    fn spawn_essential(
        &self,
        _name: &'static str,
        task: impl futures::Future<Output = ()> + Send + 'static,
    ) -> TaskHandle {
        let handle = tokio::spawn(task);
        Box::pin(async move { handle.await.map_err(|_| ()) })
    }
}

/// AlephBFT's unit backup in a file: each `write_all` + `flush` of a unit
/// becomes one record (4-byte length, bytes), written and synced before
/// AlephBFT uses the unit.
pub struct Backup {
    file: File,
    pending: Vec<u8>,
}

impl Backup {
    /// Opens the backup at `path`: returns the writer (appending) and the
    /// saved units for AlephBFT's loader. A torn last record is cut off.
    ///
    /// # Errors
    /// On I/O errors.
    pub fn open(path: &Path) -> std::io::Result<(Self, futures::io::Cursor<Vec<u8>>)> {
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        let mut raw = Vec::new();
        file.read_to_end(&mut raw)?;
        let mut units = Vec::new();
        let mut at = 0usize;
        while let Some(len) = raw.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize) {
            let Some(body) = raw.get(at + 4..at + 4 + len) else { break };
            units.extend_from_slice(body);
            at += 4 + len;
        }
        if at != raw.len() {
            warn!(kept = at, dropped = raw.len() - at, "unit backup: a torn last record is cut off");
            file.set_len(at as u64)?;
        }
        file.seek(SeekFrom::Start(at as u64))?;
        Ok((Self { file, pending: Vec::new() }, futures::io::Cursor::new(units)))
    }
}

impl futures::AsyncWrite for Backup {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.get_mut().pending.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.pending.is_empty() {
            return Poll::Ready(Ok(()));
        }
        let mut record = (this.pending.len() as u32).to_be_bytes().to_vec();
        record.extend_from_slice(&this.pending);
        this.pending.clear();
        let result = this.file.write_all(&record).and_then(|()| this.file.sync_data());
        Poll::Ready(result)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.poll_flush(cx)
    }
}

/// AlephBFT's timing for a small local cluster: a unit every
/// `unit_delay_ms`, prompt re-requests of missing units (a restarted
/// replica catches up quickly).
///
/// # Errors
/// When AlephBFT refuses the configuration.
pub fn config(n: usize, me: usize, session: u64, unit_delay_ms: u64) -> anyhow::Result<aleph_bft::Config> {
    let mut delays = aleph_bft::default_delay_config();
    delays.tick_interval = Duration::from_millis(10);
    let unit = Duration::from_millis(unit_delay_ms);
    delays.unit_creation_delay = Arc::new(move |t| if t == 0 { Duration::from_millis(100) } else { unit });
    delays.unit_rebroadcast_interval_min = Duration::from_millis(2000);
    delays.unit_rebroadcast_interval_max = Duration::from_millis(3000);
    delays.parent_request_delay = Arc::new(|_| Duration::from_millis(300));
    delays.newest_request_delay = Arc::new(|_| Duration::from_millis(500));
    // Round is a u16: at one unit per `unit_delay_ms` a session lasts
    // about 65,000 units (1.8 hours at 100 ms).
    let max_round = u16::MAX - 1;
    aleph_bft::create_config(NodeCount(n), NodeIndex(me), session, max_round, delays, Duration::ZERO)
        .map_err(|_| anyhow::anyhow!("AlephBFT refused the configuration"))
}
