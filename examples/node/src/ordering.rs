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
//! - [`Session`]: one AlephBFT session (rounds are 16-bit, so a group
//!   changes sessions before they run out; [`Router`] hands each session
//!   its consensus frames).
//! - [`Finalized`]: the `FinalizationHandler`; it hands each ordered unit's
//!   data to the replica's main loop.
//! - [`Backup`]: the unit backup AlephBFT needs to restart without
//!   equivocating, as length-prefixed records in a file, synced per unit; a
//!   record cut short by a crash is dropped on load.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
use tracing::{error, warn};

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
/// for replica `me` of `group` (of `n`) in session `epoch`; `rx` receives
/// the consensus frames of that session the transport accepted from the
/// group's replicas.
pub struct GroupNetwork {
    pub net: Arc<Net>,
    pub epoch: u64,
    pub group: GroupId,
    pub me: u8,
    pub n: u8,
    pub rx: mpsc::Receiver<Vec<u8>>,
}

#[async_trait::async_trait]
impl aleph_bft::Network<Data> for GroupNetwork {
    fn send(&self, data: Data, recipient: Recipient) {
        let frame = Frame::Consensus { epoch: self.epoch, data: data.encode() };
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

/// The most envelopes a session's provider remembers having proposed (for
/// re-queuing at a session change).
const PROPOSED_LIMIT: usize = 4096;

/// AlephBFT's data provider: a batch of queued envelopes per unit, empty
/// when nothing is queued (every unit carries data, so the number of
/// finalized batches bounds the session's rounds, which is what the
/// session change counts). A session that only serves laggards proposes
/// nothing.
pub struct Provider {
    queue: Queue,
    serving_only: Arc<AtomicBool>,
    proposed: Arc<Mutex<VecDeque<Vec<u8>>>>,
}

#[async_trait::async_trait]
impl DataProvider for Provider {
    type Output = Batch;

    async fn get_data(&mut self) -> Option<Batch> {
        if self.serving_only.load(Ordering::Relaxed) {
            return None;
        }
        let mut q = self.queue.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut batch: Vec<Vec<u8>> = Vec::new();
        let mut size = 0;
        while let Some(front) = q.front() {
            if !batch.is_empty() && size + front.len() > UNIT_BYTES {
                break;
            }
            size += front.len();
            batch.extend(q.pop_front());
        }
        drop(q);
        let mut proposed = self.proposed.lock().unwrap_or_else(|e| e.into_inner());
        for item in &batch {
            proposed.push_back(item.clone());
        }
        while proposed.len() > PROPOSED_LIMIT {
            proposed.pop_front();
        }
        Some(crate::frame::encode(&batch))
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
///
/// AlephBFT saves every unit it loaded again as it rebuilds its DAG at
/// start; those records are in the file already and are not appended a
/// second time (the file used to grow by its whole size at each restart).
pub struct Backup {
    file: File,
    pending: Vec<u8>,
    loaded: HashSet<[u8; 32]>,
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
        let mut loaded = HashSet::new();
        let mut at = 0usize;
        while let Some(len) = raw.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize) {
            let Some(body) = raw.get(at + 4..at + 4 + len) else { break };
            units.extend_from_slice(body);
            loaded.insert(Sha256::digest(body).into());
            at += 4 + len;
        }
        if at != raw.len() {
            warn!(kept = at, dropped = raw.len() - at, "unit backup: a torn last record is cut off");
            file.set_len(at as u64)?;
        }
        file.seek(SeekFrom::Start(at as u64))?;
        Ok((Self { file, pending: Vec::new(), loaded }, futures::io::Cursor::new(units)))
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
        let digest: [u8; 32] = Sha256::digest(&this.pending).into();
        if this.loaded.remove(&digest) {
            // Re-saved at start: the file has it.
            this.pending.clear();
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
    // Rounds are 16-bit. The group changes sessions long before the limit
    // (`--session-rounds`), which stays at its maximum: an ended session
    // keeps creating (empty) units while it serves replicas still in it,
    // and AlephBFT ends a session that reaches the limit.
    let max_round = u16::MAX - 1;
    aleph_bft::create_config(NodeCount(n), NodeIndex(me), session, max_round, delays, Duration::ZERO)
        .map_err(|_| anyhow::anyhow!("AlephBFT refused the configuration"))
}

/// The AlephBFT session id of `group`'s session `epoch`: never the same
/// twice (epoch 0 is the group id, as before sessions changed).
pub fn session_id(group: GroupId, epoch: u64) -> u64 {
    u64::from(group.0) | (epoch << 32)
}

/// Where replica data directory `data` keeps session `epoch`'s unit backup.
pub fn backup_path(data: &Path, epoch: u64) -> PathBuf {
    if epoch == 0 {
        data.join("units.bin")
    } else {
        data.join(format!("units-{epoch}.bin"))
    }
}

/// Consensus frames by session: the transport's reader hands each to its
/// session's AlephBFT network and notes which replicas were heard in it,
/// and the newest session each replica was heard in at all.
#[derive(Clone, Default)]
pub struct Router(Arc<Mutex<Routes>>);

#[derive(Default)]
struct Routes {
    sessions: BTreeMap<u64, Route>,
    newest: BTreeMap<u8, u64>,
}

/// A session's consensus inbox, and the replicas heard in it (a bit each).
type Route = (mpsc::Sender<Vec<u8>>, Arc<AtomicU64>);

impl Router {
    fn lock(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands `data` from replica `from` to session `epoch`, if it runs here.
    pub fn route(&self, epoch: u64, from: u8, data: Vec<u8>) {
        let mut routes = self.lock();
        let newest = routes.newest.entry(from).or_default();
        *newest = (*newest).max(epoch);
        if let Some((tx, heard)) = routes.sessions.get(&epoch) {
            heard.fetch_or(1u64 << (from % 64), Ordering::Relaxed);
            let _ = tx.try_send(data);
        }
    }

    /// How many replicas were heard in a session later than `epoch`.
    pub fn ahead_of(&self, epoch: u64) -> usize {
        self.lock().newest.values().filter(|e| **e > epoch).count()
    }
}

/// What every session of one replica shares.
pub struct SessionParams {
    /// The network.
    pub net: Arc<Net>,
    /// The group.
    pub group: GroupId,
    /// This replica's index.
    pub me: u8,
    /// The group's size.
    pub n: usize,
    /// The keychain.
    pub keys: Keys,
    /// The replica's data directory (unit backups).
    pub data: PathBuf,
    /// AlephBFT's unit creation delay.
    pub unit_delay_ms: u64,
    /// Submissions to propose.
    pub queue: Queue,
    /// Consensus frames by session.
    pub router: Router,
}

/// One running AlephBFT session.
pub struct Session {
    /// Its epoch.
    pub epoch: u64,
    exit: Option<futures::channel::oneshot::Sender<()>>,
    /// Set by `stop`, so that the session's end is not reported as a fault.
    stopped: Arc<AtomicBool>,
    serving_only: Arc<AtomicBool>,
    proposed: Arc<Mutex<VecDeque<Vec<u8>>>>,
    heard: Arc<AtomicU64>,
}

impl Session {
    /// Starts session `epoch` from its backup; its ordered batches come out
    /// of the returned receiver.
    ///
    /// # Errors
    /// When the backup cannot be opened or AlephBFT refuses the
    /// configuration.
    pub fn start(p: &SessionParams, epoch: u64) -> anyhow::Result<(Self, mpsc::UnboundedReceiver<Batch>)> {
        let (cons_tx, cons_rx) = mpsc::channel(8192);
        let heard = Arc::new(AtomicU64::new(0));
        let serving_only = Arc::new(AtomicBool::new(false));
        let proposed = Arc::new(Mutex::new(VecDeque::new()));
        let (fin_tx, fin_rx) = mpsc::unbounded_channel();
        let (backup, saved) = Backup::open(&backup_path(&p.data, epoch))?;
        let provider =
            Provider { queue: p.queue.clone(), serving_only: serving_only.clone(), proposed: proposed.clone() };
        let io = aleph_bft::LocalIO::new(provider, Finalized(fin_tx), backup, saved);
        let network = GroupNetwork { net: p.net.clone(), epoch, group: p.group, me: p.me, n: p.n as u8, rx: cons_rx };
        let (exit_tx, exit_rx) = futures::channel::oneshot::channel();
        let terminator = aleph_bft::Terminator::create_root(exit_rx, "AlephBFT-member");
        let config = config(p.n, usize::from(p.me), session_id(p.group, epoch), p.unit_delay_ms)?;
        p.router.lock().sessions.insert(epoch, (cons_tx, heard.clone()));
        let stopped = Arc::new(AtomicBool::new(false));
        let (watch, keys, group) = (stopped.clone(), p.keys.clone(), p.group);
        tokio::spawn(async move {
            aleph_bft::run_session(config, io, network, keys, Spawner, terminator).await;
            // Only `stop` ends a session on purpose: one that ends by itself
            // (its round limit, a dead task) orders nothing more, so say so
            // loudly instead of looking healthy.
            if !watch.load(Ordering::Relaxed) {
                error!(group = group.0, epoch, "AlephBFT session ended by itself: nothing more is ordered in it");
            }
        });
        Ok((Self { epoch, exit: Some(exit_tx), stopped, serving_only, proposed, heard }, fin_rx))
    }

    /// From now on the session proposes nothing and its batches are
    /// ignored; it keeps running for replicas still catching up in it.
    /// Returns what it proposed that may not have been ordered, to be
    /// proposed again in the next session.
    pub fn retire(&self) -> Vec<Vec<u8>> {
        self.serving_only.store(true, Ordering::Relaxed);
        self.proposed.lock().unwrap_or_else(|e| e.into_inner()).drain(..).collect()
    }

    /// Whether every other replica of the group was heard in this session.
    pub fn heard_all(&self, n: usize, me: u8) -> bool {
        let heard = self.heard.load(Ordering::Relaxed);
        (0..n.min(64) as u8).filter(|i| *i != me).all(|i| heard & (1 << i) != 0)
    }

    /// Stops the session and deletes its backup.
    pub fn stop(mut self, p: &SessionParams) {
        self.stopped.store(true, Ordering::Relaxed);
        if let Some(exit) = self.exit.take() {
            let _ = exit.send(());
        }
        // Its network stays open while AlephBFT winds down (a closed one
        // makes every task log an error).
        let route = p.router.lock().sessions.remove(&self.epoch);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(route);
        });
        let path = backup_path(&p.data, self.epoch);
        if let Err(e) = std::fs::remove_file(&path) {
            warn!(path = %path.display(), "old session's backup not removed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::AsyncWriteExt;

    fn save(backup: &mut Backup, unit: &[u8]) {
        futures::executor::block_on(async {
            backup.write_all(unit).await.unwrap();
            backup.flush().await.unwrap();
        });
    }

    #[test]
    fn units_saved_again_after_a_restart_are_not_appended_twice() {
        let dir = std::env::temp_dir().join(format!("bftup-backup-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("units.bin");
        let _ = std::fs::remove_file(&path);
        let units: [&[u8]; 3] = [b"unit one", b"unit two", b"unit three"];
        let (mut b, saved) = Backup::open(&path).unwrap();
        assert!(saved.into_inner().is_empty());
        for u in units {
            save(&mut b, u);
        }
        drop(b);
        let size = std::fs::metadata(&path).unwrap().len();
        assert_eq!(size, units.iter().map(|u| 4 + u.len() as u64).sum::<u64>());
        // Restarted: AlephBFT gets the units back and saves each again as
        // it rebuilds its DAG, then a new one.
        for restart in 0..3 {
            let (mut b, saved) = Backup::open(&path).unwrap();
            assert_eq!(saved.into_inner(), units.concat(), "restart {restart}");
            for u in units {
                save(&mut b, u);
            }
            drop(b);
            assert_eq!(std::fs::metadata(&path).unwrap().len(), size, "restart {restart} grew the backup");
        }
        let (mut b, _) = Backup::open(&path).unwrap();
        save(&mut b, b"unit four");
        drop(b);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), size + 4 + 9);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
