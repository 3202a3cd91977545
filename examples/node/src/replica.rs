//! `node replica`: one replica of one group.
//!
//! Submissions (from installers, other groups' replicas, guardians and this
//! group's own application) go into AlephBFT's data provider; ordered
//! batches come back from its finalization handler, are deduplicated by
//! request id and executed on the core's `GroupReplica`, through the host
//! layer's `ReplicaHost`, and on the application. After each batch the
//! host layer commits the role, its pieces (dropping those of upgrades it
//! no longer holds), the application and the executed ids to redb in one
//! transaction, and only then do the batch's messages go out.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aleph_bft::NodeIndex;
use anyhow::{anyhow, Context, Result};
use bft_upgrade::crypto::{Binding, Digest, GroupKey, PayloadRef, PublicKey, ReplicaSecretKey, Share};
use bft_upgrade::error::CryptoError;
use bft_upgrade::group::{
    AuthorizedDeployer, GroupConfig, GroupEffect, GroupReplica, GuardianIds, Neighbor, TxnId, Verdict,
};
use bft_upgrade::host::{open_payload, payload_key, stored_replica, Batch, ReplicaHost, ReplicaReport, Store as _};
use bft_upgrade::step::Peer;
use bft_upgrade::wire::{
    Attachment, DeployerId, GroupId, Opened, Outcome, Piece, PieceCrypto, PieceHeader, Token, UpgradeId,
};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::app::Program;
use crate::config::{hex, key_path, max_faulty, public_key, Cluster, Secrets};
use crate::frame::{self, Answer, AppStatus, Body, Envelope, Frame, Status, UpgradeStatus};
use crate::ordering::{self, Keys, Queue, Router, Session, SessionParams};
use crate::outbound::NetOut;
use crate::store::Store;
use crate::transport::{Net, Policy};

mod transfer;

pub use transfer::FRESH;

/// A call from another group: (group, txn, is response).
type CallKey = (u32, u64, bool);

/// What a replica's database says: its version, each upgrade's outcome,
/// its application and how many operations it executed.
pub type StoredState = (u64, Vec<(UpgradeId, Option<Outcome>)>, Ledger, u64);

/// A group's application as the check reads it: its status, its calls in
/// flight (txn, callee, amount) and the calls it served most recently
/// (caller, txn).
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    /// The status.
    pub app: AppStatus,
    /// Calls in flight.
    pub escrow: Vec<(u64, u32, i64)>,
    /// Calls served, most recent last.
    pub credited: Vec<(u32, u64)>,
}

/// The replicated application: a ring of groups calling each other (the
/// bank of [`crate::app`]: each transaction pays a neighbor), the module
/// it runs and the installed payload. Deterministic: every correct replica
/// holds the same after the same ordered operations.
#[derive(Clone, Default, Serialize, Deserialize)]
struct App {
    executed: u64,
    calls: u64,
    payload: String,
    /// Host information the core does not have, for the finished upgrades
    /// it remembers (`finished_upgrades`, pruned to them): when each
    /// finished here (wall-clock ms) and which call finished it (an ordered
    /// operation or a piggyback). The rest of the status comes from the core.
    finished: Vec<(UpgradeId, u64, String)>,
    /// Requests and responses from other groups wait for `f + 1` matching
    /// copies from distinct replicas: (group, txn, is response) → (digest
    /// of the body, replicas that sent it).
    votes: BTreeMap<CallKey, Vec<([u8; 32], u64)>>,
    done: BTreeSet<CallKey>,
    /// This group's calls in flight: txn → callee (kept as they are
    /// ordered, whatever module runs).
    pending: BTreeMap<u64, u32>,
    /// Transactions refused by a callee at another version, each waiting
    /// for this group to reach a version (the callee's, when it is ahead)
    /// to run again on it, at a tick.
    parked: VecDeque<(u64, u64)>,
    /// The running module (WebAssembly bytes) and its interface version.
    module: Vec<u8>,
    module_version: u64,
    /// The group's account, and what its calls in flight paid: txn →
    /// amount (kept as the module runs them).
    balance: i64,
    escrow: BTreeMap<u64, (u32, i64)>,
    /// The calls this group served most recently (caller, txn), for the
    /// check to tell which calls in flight the callee has credited
    /// (more than any caller keeps in flight).
    credited: VecDeque<(u32, u64)>,
    limbo: i64,
    /// Calls served, by (caller's module, this module) version.
    served: BTreeMap<(u64, u64), u64>,
    refused: u64,
    restarted: u64,
    failed: u64,
    /// The application's part of operations ordered while a committed
    /// payload is missing here, with the group version they were ordered
    /// at: each runs once the module of that version is applied.
    deferred: VecDeque<(u64, AppOp)>,
}

/// The application record of builds before the module (no account, no
/// module): read once, then written as an [`App`] running version 1.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct AppBefore {
    executed: u64,
    calls: u64,
    payload: String,
    finished: Vec<(UpgradeId, u64, String)>,
    votes: BTreeMap<CallKey, Vec<([u8; 32], u64)>>,
    done: BTreeSet<CallKey>,
    pending: BTreeMap<u64, u32>,
}

impl App {
    /// The stored record, in this build's form or an earlier one's (a
    /// database from before the module starts on the shipped one).
    fn read(store: &Store) -> Result<Self> {
        let Some(bytes) = store.get(APP)? else { return Ok(Self::default()) };
        if let Ok(app) = postcard::from_bytes::<App>(&bytes) {
            return Ok(app);
        }
        let old: AppBefore = postcard::from_bytes(&bytes).context("stored application")?;
        Ok(Self {
            executed: old.executed,
            calls: old.calls,
            payload: old.payload,
            finished: old.finished,
            votes: old.votes,
            done: old.done,
            pending: old.pending,
            ..Self::default()
        })
    }
}

/// The application's part of an ordered operation: what needs the module.
/// Everything the module does not decide (which calls are in flight, the
/// core's Figure 2 steps, the codes piggybacked) happens when the
/// operation is ordered, at every replica alike.
#[derive(Clone, Serialize, Deserialize)]
enum AppOp {
    /// Transaction `txn` calls `callee` with these codes, started at group
    /// version `version`.
    Call { txn: u64, callee: u32, codes: Attachment, version: u64 },
    /// Group `from`'s call `txn`, answered with `back`; refused (with this
    /// group's version) when the caller was at another version.
    Serve { from: GroupId, txn: u64, back: Attachment, refuse: Option<u64>, module: u64, amount: i64, args: Vec<i64> },
    /// The answer to this group's call `txn`; a refused transaction whose
    /// answer brought a commit runs again as `again` (Figure 2).
    Answer { txn: u64, answer: Answer, again: Option<AgainCall> },
    /// Call `txn` dropped unanswered (more than [`MAX_CALLS`] in flight).
    Lost { txn: u64 },
    /// A refused transaction runs again.
    Again(AgainCall),
}

/// A restarted transaction's new call.
#[derive(Clone, Serialize, Deserialize)]
struct AgainCall {
    txn: u64,
    callee: u32,
    codes: Attachment,
    version: u64,
}

/// Calls a group keeps in flight; beyond, the oldest is dropped.
const MAX_CALLS: usize = 1024;

/// Served calls a group remembers for the check: more than its neighbors
/// keep in flight together.
const MAX_CREDITED: usize = 8 * MAX_CALLS;

/// Refused transactions a group keeps to run again; beyond, the oldest is
/// given up.
const MAX_PARKED: usize = 256;

/// Ordered application operations a replica without a committed module
/// defers; beyond, it rejoins by state transfer.
const MAX_DEFERRED: usize = 4096;

/// What a batch of inputs sends besides the role's own messages (the
/// application's calls), and what the application changed; all of it
/// after the write.
#[derive(Default)]
struct Out {
    frames: Vec<(Peer, Frame)>,
    /// Executed ids, with the session they were executed in.
    ids: Vec<(u64, [u8; 32])>,
    dirty: bool,
    /// Executed ids to delete (epoch, id).
    forget: Vec<(u64, [u8; 32])>,
    /// Other records to write (`Some`) or delete (`None`) with the batch.
    records: Vec<(String, Option<Vec<u8>>)>,
}

/// A committed upgrade whose payload this replica has not applied: what it
/// needs to open the payload once it has the bytes. Stored (the key with
/// it, like the role's own shares) until applied.
#[derive(Serialize, Deserialize)]
struct Pending {
    /// The group version the upgrade brought (orders the records).
    version: u64,
    upgrade: UpgradeId,
    key: GroupKey,
    payload: PayloadRef,
}

/// The application's record, the executed ids' prefix (then the session's
/// epoch, 16 hex digits, and the id) and the current session's epoch in the
/// store.
const APP: &str = "app";
const SEEN: &str = "seen/";
const SESSION: &str = "session";
/// Committed upgrades whose payload is not applied yet: `pending/<version
/// as 16 hex digits>`, a [`Pending`].
const PENDING: &str = "pending/";
/// The signed digests of the sealed payloads this replica keeps for its
/// peers (under [`payload_key`]), oldest first.
const KEPT: &str = "payloads-kept";
/// How many applied payloads a replica keeps for peers that lack them: its
/// current version's and the one before.
const KEEP_PAYLOADS: usize = 2;

/// Per replica of the group, the tag of its latest rejoin request executed
/// (replicated: it decides which requests end a session).
const REJOINS: &str = "rejoins";

/// Batches a replica's rejoin request waits after the session change its
/// previous one made: a faulty replica changes its group's sessions at most
/// this often, well below what a lagging replica keeps up through
/// ([`OLD_SESSIONS`] ended sessions).
const REJOIN_GAP: u64 = 1000;

fn pending_key(version: u64) -> String {
    format!("{PENDING}{version:016x}")
}

/// The record a sealed payload with signed digest `digest` is kept under.
fn kept_key(digest: Digest) -> String {
    payload_key(&PayloadRef { digest, ..PayloadRef::default() })
}

/// Ended AlephBFT sessions a replica keeps serving for replicas still in
/// them (one down for longer than this many sessions needs state
/// transfer).
pub const OLD_SESSIONS: usize = 3;

/// An executed id's record: `seen/<epoch>/<id>`.
fn seen_key(epoch: u64, id: &[u8; 32]) -> String {
    format!("{SEEN}{epoch:016x}/{}", hex(id))
}

/// The epoch and id of an executed id's record (records of builds before
/// sessions changed have no epoch: 0).
fn parse_seen(key: &str) -> Option<(u64, [u8; 32])> {
    let rest = key.strip_prefix(SEEN)?;
    let (epoch, id) = match rest.split_once('/') {
        Some((e, id)) => (u64::from_str_radix(e, 16).ok()?, id),
        None => (0, rest),
    };
    Some((epoch, crate::config::unhex(id).ok()?.try_into().ok()?))
}

struct Host {
    dir: PathBuf,
    me: Peer,
    group: GroupId,
    index: u8,
    deployer: DeployerId,
    replica: ReplicaHost<Store>,
    app: App,
    /// Executed ids by session: this session's and the last one's (a
    /// submission's copies may straddle a session change); older ones are
    /// dropped with the change, so storage is bounded per session.
    seen: BTreeMap<u64, HashSet<[u8; 32]>>,
    /// The AlephBFT session: its epoch, the batches finalized in it (not
    /// stored: a restarted replica counts them again as AlephBFT replays
    /// the session from its backup), and the count that ends it.
    epoch: u64,
    units: u64,
    session_units: u64,
    /// Set by the batch that ended the session.
    rotated: bool,
    key: ReplicaSecretKey,
    net: Arc<Net>,
    cluster: Arc<Cluster>,
    queue: Queue,
    /// Committed upgrades whose payload is not applied yet, oldest first
    /// (they apply in order).
    pending: Vec<Pending>,
    /// Digests of the sealed payloads kept for peers, oldest first.
    kept: Vec<Digest>,
    /// `Upgrading` answers received from callees.
    callees_upgrading: u64,
    /// Per replica of the group, its latest rejoin request executed: the
    /// tag and the session that request opened.
    rejoins: BTreeMap<u8, (u64, u64)>,
    /// Set by a rejoin request in this batch: the session ends with it.
    force: Option<(u8, u64)>,
    /// Sealed payloads installers shipped for held upgrades, by digest
    /// (not stored: after a restart the file or the peers serve).
    offered: Vec<(Digest, Vec<u8>)>,
    /// The running module, compiled from `app.module`.
    program: Program,
    /// Set when more application operations wait for a missing module than
    /// [`MAX_DEFERRED`]: the replica rejoins by state transfer.
    overflowed: bool,
    /// A deliberate bug, for the tests that show the checks catch it.
    planted: Planted,
}

/// [`WithKey`](bft_upgrade::wire::WithKey) that notes the payload key of
/// each box it opens, for the validation verdict.
struct Noting<'k> {
    key: &'k ReplicaSecretKey,
    seen: &'k std::cell::RefCell<Option<GroupKey>>,
}

impl PieceCrypto for Noting<'_> {
    fn verify(&mut self, piece: &Piece, signer: &PublicKey) -> bool {
        piece.verify(signer).is_ok()
    }

    fn open(&mut self, piece: &Piece, index: usize) -> Result<Opened, CryptoError> {
        let opened = piece.open_for(index, self.key)?;
        *self.seen.borrow_mut() = Some(opened.key.clone());
        Ok(opened)
    }

    fn open_token(&mut self, piece: &Piece, index: usize) -> Result<(GroupKey, Token), CryptoError> {
        let (key, token) = piece.open_token(index, self.key)?;
        *self.seen.borrow_mut() = Some(key.clone());
        Ok((key, token))
    }

    fn open_guardian(&mut self, piece: &Piece, index: usize) -> Result<(Share, Share), CryptoError> {
        piece.open_guardian(index, self.key)
    }
}

/// A group's verdict on a piece from the sealed payload its prepare
/// carried: bytes that open under the signed digest with the group's key
/// and are a module that does not validate are `Reject`; anything else
/// gives no reason to refuse (bytes that are not the signed payload say
/// nothing about it: its availability is the commit's business).
fn verdict(key: &GroupKey, h: &PieceHeader, sealed: &[u8]) -> Verdict {
    let mut plain = Vec::new();
    let binding = Binding::group(h.upgrade, h.group);
    if open_payload(key, &binding, &h.payload, &mut &sealed[..], &mut plain).is_err() {
        return Verdict::Accept;
    }
    if crate::app::is_module(&plain) {
        if let Err(e) = Program::new(&plain) {
            warn!(upgrade = ?h.upgrade, "the module this piece installs does not validate: rejected: {e:#}");
            return Verdict::Reject;
        }
    }
    Verdict::Accept
}

/// A deliberate bug in the replica (`BFTUP_PLANTED`, read only in builds
/// with the `planted` feature), for the tests that show the application's
/// checks find it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Planted {
    /// No bug.
    None,
    /// A callee serves a caller at another group version (the check of
    /// section 4.3 skipped): calls mix versions.
    NoVersionCheck,
    /// A caller whose call was refused neither aborts the transaction (its
    /// money back) nor restarts it (Figure 2's abort-and-restart skipped):
    /// money is lost.
    NoRestart,
}

impl Planted {
    fn from_env() -> Self {
        if !cfg!(feature = "planted") {
            return Self::None;
        }
        match std::env::var("BFTUP_PLANTED").as_deref() {
            Ok("no-version-check") => Self::NoVersionCheck,
            Ok("no-restart") => Self::NoRestart,
            _ => Self::None,
        }
    }
}

fn group_config(cluster: &Cluster, group: u32) -> Result<GroupConfig> {
    let g = cluster.group(group)?;
    let mut deployers = heapless::Vec::new();
    let _ = deployers.push(AuthorizedDeployer {
        id: DeployerId(cluster.deployer_id),
        key: public_key(&cluster.deployer_key)?,
        genesis: cluster.genesis_code()?,
    });
    let mut neighbors = heapless::Vec::new();
    for n in &g.neighbors {
        let f = max_faulty(cluster.group(*n)?.replicas.len()) as u8;
        neighbors.push(Neighbor { group: GroupId(*n), f }).map_err(|_| anyhow!("too many neighbors"))?;
    }
    let guardians = if g.guardians.is_empty() {
        None
    } else {
        let ids = heapless::Vec::from_slice(&g.guardians).map_err(|_| anyhow!("too many guardians"))?;
        Some(GuardianIds { f: max_faulty(g.guardians.len()) as u8, ids })
    };
    Ok(GroupConfig {
        membership: cluster.membership(group)?,
        deployers,
        neighbors,
        retry_ms: cluster.retry_ms,
        proactive: cluster.proactive,
        guardians,
        sequencer: None,
    })
}

/// How a replica starts: from its database, or by state transfer (wiped,
/// left behind, or in the middle of either when it stopped).
// Built once per start and consumed at once: its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Start {
    Opened(ReplicaHost<Store>),
    Rejoin(Store),
}

/// What a replica's database holds besides the role.
struct Loaded {
    app: App,
    seen: BTreeMap<u64, HashSet<[u8; 32]>>,
    epoch: u64,
    pending: Vec<Pending>,
    kept: Vec<Digest>,
    rejoins: BTreeMap<u8, (u64, u64)>,
}

/// The record under `key`, or `T`'s default where there is none.
fn record<T: serde::de::DeserializeOwned + Default>(store: &Store, key: &str) -> Result<T> {
    match store.get(key)? {
        Some(b) => postcard::from_bytes(&b).with_context(|| format!("stored {key}")),
        None => Ok(T::default()),
    }
}

impl Loaded {
    fn read(store: &Store) -> Result<Self> {
        let mut seen: BTreeMap<u64, HashSet<[u8; 32]>> = BTreeMap::new();
        for (epoch, id) in store.list(SEEN)?.iter().filter_map(|k| parse_seen(k)) {
            seen.entry(epoch).or_default().insert(id);
        }
        let mut pending = Vec::new();
        for key in store.list(PENDING)? {
            let bytes = store.get(&key)?.ok_or_else(|| anyhow!("{key} listed, not stored"))?;
            pending.push(postcard::from_bytes::<Pending>(&bytes).with_context(|| format!("stored {key}"))?);
        }
        pending.sort_by_key(|p| p.version);
        Ok(Self {
            app: App::read(store)?,
            seen,
            epoch: record(store, SESSION)?,
            pending,
            kept: record(store, KEPT)?,
            rejoins: record(store, REJOINS)?,
        })
    }
}

/// Runs replica `index` of `group` of the cluster in `dir` until killed.
///
/// # Errors
/// On configuration, storage or listening errors.
pub async fn run(dir: &Path, group: u32, index: u8) -> Result<()> {
    let cluster = Arc::new(Cluster::load(dir)?);
    let gid = GroupId(group);
    let me = Peer::Replica { group: gid, index };
    let secrets = Secrets::load(&key_path(dir, me))?;
    let info = cluster.group(group)?.clone();
    let n = info.replicas.len();
    let addr = info.replicas.get(usize::from(index)).ok_or_else(|| anyhow!("no replica {index}"))?.addr;
    let labels = [("group", group.to_string()), ("replica", index.to_string())];
    crate::metrics::serve(info.replicas.get(usize::from(index)).and_then(|r| r.metrics), &labels)?;
    let data = dir.join("data").join(format!("replica-{group}-{index}"));
    let store = Store::open(&data.join("state.redb"))?;
    // No role and no marker from `init`: the database was lost, so this
    // replica rejoins by state transfer once the transport is up; so does
    // one stopped in the middle of a rejoin.
    let stored = stored_replica(&store).map_err(|e| anyhow!("{e}"))?.is_some();
    let wiped = !stored && !data.join(FRESH).exists();
    if stored {
        let _ = std::fs::remove_file(data.join(FRESH));
    }
    let config = group_config(&cluster, group)?;
    let mut start = if wiped {
        warn!(group, index, "no database: rejoining by state transfer");
        Start::Rejoin(store)
    } else if transfer::rejoining(&store)? {
        Start::Rejoin(store)
    } else {
        Start::Opened(ReplicaHost::open(store, || GroupReplica::new(config, index)).map_err(|e| anyhow!("{e}"))?)
    };

    // The transport: who may send what.
    let policy: Policy = Arc::new(move |peer, frame| match frame {
        Frame::Consensus { data: bytes, .. } => match peer {
            Peer::Replica { group: g, index: i } if g == gid && i != index && usize::from(i) < n => {
                if ordering::is_consensus_data(bytes) {
                    Ok(())
                } else {
                    Err("undecodable consensus data".into())
                }
            }
            _ => Err(format!("consensus traffic from {peer:?}, not a replica of this group")),
        },
        Frame::Msg(_) | Frame::Submit { .. } => Ok(()),
        Frame::StatusRequest if matches!(peer, Peer::Client(_)) => Ok(()),
        // Installers ship sealed payloads ahead of the commit.
        Frame::Payload { .. } if matches!(peer, Peer::Installer(_)) => Ok(()),
        Frame::PayloadRequest(_)
        | Frame::Payload { .. }
        | Frame::CheckpointRequest { .. }
        | Frame::Checkpoint { .. } => match peer {
            Peer::Replica { group: g, index: i } if g == gid && i != index && usize::from(i) < n => Ok(()),
            _ => Err(format!("payload or checkpoint traffic from {peer:?}, not a replica of this group")),
        },
        Frame::Upgrading { group: g, .. } => match peer {
            Peer::Replica { group: from, .. } if from == *g => Ok(()),
            _ => Err(format!("an upgrading answer from {peer:?} for another group")),
        },
        other => Err(format!("{} frames are not taken by a replica from {peer:?}", kind(other))),
    });
    let (in_tx, mut in_rx) = mpsc::channel(8192);
    let net = Net::new(me, secrets.sign_key.clone(), cluster.clone(), in_tx, policy);
    let listener = TcpListener::bind(addr).await.with_context(|| format!("listening on {addr}"))?;
    net.listen(listener);

    // AlephBFT: consensus frames to their session, the rest to the main
    // loop.
    let router = Router::default();
    let (main_tx, mut main_rx) = mpsc::channel(8192);
    let routes = router.clone();
    tokio::spawn(async move {
        while let Some((peer, frame)) = in_rx.recv().await {
            match (peer, frame) {
                (Peer::Replica { index, .. }, Frame::Consensus { epoch, data }) => routes.route(epoch, index, data),
                (_, Frame::Consensus { .. }) => {}
                (peer, other) => {
                    let _ = main_tx.try_send((peer, other));
                }
            }
        }
    });
    let members = info.replicas.iter().map(|r| public_key(&r.sign_key)).collect::<Result<Vec<_>>>()?;
    let keys = Keys {
        index: NodeIndex(usize::from(index)),
        key: Arc::new(secrets.sign_key.clone()),
        members: Arc::new(members),
    };
    let queue = Queue::default();
    let params = SessionParams {
        net: net.clone(),
        group: gid,
        me: index,
        n,
        keys,
        data: data.clone(),
        unit_delay_ms: cluster.unit_delay_ms,
        queue: queue.clone(),
        router: router.clone(),
    };
    // A session ends once `(f + 1) * session_rounds` batches are
    // finalized: every round holds at least `f + 1` correct replicas'
    // units, each with a batch, so by then no more than `session_rounds`
    // rounds (plus the few not yet finalized) have passed, well short of
    // AlephBFT's limit (`ordering::config`).
    let session_units = (max_faulty(n) as u64 + 1) * u64::from(cluster.session_rounds);
    let serving =
        Serving { dir: dir.to_path_buf(), cluster: cluster.clone(), box_key: secrets.box_key.clone(), session_units };
    loop {
        let replica = match start {
            Start::Opened(replica) => replica,
            Start::Rejoin(store) => {
                transfer::rejoin(store, &cluster, (gid, index), &secrets, &net, &mut main_rx).await?
            }
        };
        let loaded = Loaded::read(replica.store())?;
        let store = serve(&serving, &params, replica, loaded, &mut main_rx).await?;
        start = Start::Rejoin(store);
    }
}

/// What [`serve`] needs from [`run`] besides the sessions' parameters.
struct Serving {
    dir: PathBuf,
    cluster: Arc<Cluster>,
    box_key: ReplicaSecretKey,
    session_units: u64,
}

/// Serves as replica `p.me` from `replica` and `loaded` until it is left
/// behind: more than `f` peers are past every session this replica could
/// still finish with them (they keep [`OLD_SESSIONS`] ended ones), so its
/// own can never end; it then stops its sessions and hands its store back
/// for state transfer.
async fn serve(
    s: &Serving,
    p: &SessionParams,
    replica: ReplicaHost<Store>,
    loaded: Loaded,
    frames: &mut mpsc::Receiver<(Peer, Frame)>,
) -> Result<Store> {
    let (group, index, n, cluster) = (p.group.0, p.me, p.n, &s.cluster);
    let epoch = loaded.epoch;
    info!(
        group,
        index,
        version = replica.role().version(),
        executed = loaded.app.executed,
        epoch,
        "replica starting from its database"
    );
    let (mut current, mut fin_rx) = Session::start(p, epoch)?;
    // Ended sessions keep running (proposing nothing) for replicas that
    // have not finished them yet, if their backups are still here; older
    // backups go.
    let mut previous: VecDeque<Session> = VecDeque::new();
    let kept = epoch.saturating_sub(OLD_SESSIONS as u64);
    for e in kept..epoch {
        if ordering::backup_path(&p.data, e).exists() {
            let (old, _) = Session::start(p, e)?;
            old.retire();
            previous.push_back(old);
        }
    }
    for e in 0..kept {
        let _ = std::fs::remove_file(ordering::backup_path(&p.data, e));
    }
    info!(group, index, epoch, "AlephBFT session started");

    // A fresh database: the module the node ships with, and the group's
    // opening balance (the same at every replica).
    let mut loaded = loaded;
    if loaded.app.module.is_empty() {
        loaded.app.module = crate::app::compile(crate::app::BANK_V1)?;
        loaded.app.balance = crate::app::INITIAL_BALANCE;
    }
    let program = Program::new(&loaded.app.module).context("the stored module")?;
    loaded.app.module_version = program.version();
    let mut host = Host {
        dir: s.dir.clone(),
        me: Peer::Replica { group: p.group, index },
        group: p.group,
        index,
        deployer: DeployerId(cluster.deployer_id),
        replica,
        app: loaded.app,
        seen: loaded.seen,
        epoch,
        units: 0,
        session_units: s.session_units,
        rotated: false,
        key: s.box_key.clone(),
        net: p.net.clone(),
        cluster: cluster.clone(),
        queue: p.queue.clone(),
        pending: loaded.pending,
        kept: loaded.kept,
        callees_upgrading: 0,
        rejoins: loaded.rejoins,
        force: None,
        offered: Vec::new(),
        program,
        overflowed: false,
        planted: Planted::from_env(),
    };
    if host.planted != Planted::None {
        warn!(group, index, planted = ?host.planted, "running with a planted bug");
    }
    if let Some(p) = host.pending.first() {
        warn!(group, index, upgrade = ?p.upgrade, "starting upgrading: a committed payload is not applied yet");
    }
    let interval = Duration::from_millis(cluster.app_interval_ms.max(1));
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut housekeeping = tokio::time::interval(Duration::from_secs(1));
    loop {
        let deadline = host.replica.deadline();
        let sleep = async move {
            match deadline {
                Some(d) => tokio::time::sleep(Duration::from_millis(d.0.saturating_sub(crate::now_ms()))).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(batch) = fin_rx.recv() => {
                host.on_batch(&batch)?;
                if std::mem::take(&mut host.rotated) {
                    // The batch that ended session `e` is written with epoch
                    // `e + 1`: start it, keep `e` for laggards (dropping
                    // `e - 1`), and propose again what `e` may not have
                    // ordered.
                    while previous.len() >= OLD_SESSIONS {
                        if let Some(old) = previous.pop_front() {
                            warn!(group, index, epoch = old.epoch, "AlephBFT session stopped with a replica not yet past it");
                            old.stop(p);
                        }
                    }
                    let again = current.retire();
                    let (next, rx) = Session::start(p, host.epoch)?;
                    previous.push_back(std::mem::replace(&mut current, next));
                    fin_rx = rx;
                    // Only what the ended session did not order: a copy
                    // proposed again after being executed would come back
                    // every session, and once its first execution's session
                    // was dropped from the executed ids it ran again.
                    for item in again.into_iter().filter(|i| !host.executed(i)) {
                        host.queue.push(item);
                    }
                    info!(group, index, epoch = host.epoch, "AlephBFT session changed");
                }
            }
            _ = housekeeping.tick() => {
                host.export();
                // A payload still missing: look again (the file, then peers).
                if !host.pending.is_empty() {
                    let mut out = Out::default();
                    host.apply_pending(None, &mut out);
                    host.finish(out)?;
                }
                // Ended sessions go once every other replica was heard in
                // the current one.
                if current.heard_all(n, index) {
                    for old in previous.drain(..) {
                        info!(group, index, epoch = old.epoch, "ended AlephBFT session stopped: every replica moved on");
                        old.stop(p);
                    }
                }
                let past = p.router.ahead_of(host.epoch + OLD_SESSIONS as u64);
                if past > max_faulty(n) || host.overflowed {
                    warn!(group, index, epoch = host.epoch, past, overflowed = host.overflowed, "left behind: peers are past every session kept for this replica, or its deferred operations overflowed; rejoining by state transfer");
                    current.stop(p);
                    for old in previous.drain(..) {
                        old.stop(p);
                    }
                    return Ok(host.replica.into_store());
                }
            }
            Some((peer, frame)) = frames.recv() => host.on_frame(peer, frame)?,
            () = sleep => {
                let report = host.replica.timeout(crate::now());
                let mut out = Out::default();
                host.carry(report, "timeout", &mut out);
                host.finish(out)?;
            }
            _ = tick.tick(), if cluster.app_interval_ms > 0 => host.on_tick(),
        }
    }
}

fn kind(frame: &Frame) -> &'static str {
    match frame {
        Frame::Consensus { .. } => "consensus",
        Frame::Msg(_) => "message",
        Frame::Submit { .. } => "submit",
        Frame::Piece(_) => "piece",
        Frame::Retire(_) => "retirement",
        Frame::StatusRequest => "status request",
        Frame::Status(_) => "status",
        Frame::GuardianStatus(_) => "guardian status",
        Frame::PayloadRequest(_) => "payload request",
        Frame::Payload { .. } => "payload",
        Frame::Upgrading { .. } => "upgrading answer",
        Frame::CheckpointRequest { .. } => "checkpoint request",
        Frame::Checkpoint { .. } => "checkpoint",
    }
}

fn f_of(cluster: &Cluster, group: GroupId) -> u8 {
    cluster.group(group.0).map_or(0, |g| max_faulty(g.replicas.len()) as u8)
}

impl Host {
    /// An ordered batch: execute each new envelope once, in order.
    fn on_batch(&mut self, batch: &[u8]) -> Result<()> {
        // Every correct replica skips the same bytes.
        let items: Vec<Vec<u8>> = match frame::decode(batch) {
            Ok(e) => e,
            Err(e) => {
                warn!("an ordered unit's data does not decode ({e}): skipped");
                return Ok(());
            }
        };
        let mut out = Out::default();
        for item in items {
            let env: Envelope = match frame::decode(&item) {
                Ok(env) => env,
                Err(e) => {
                    warn!("an ordered submission does not decode ({e}): skipped");
                    continue;
                }
            };
            let id = env.id();
            if let Some(first) = self.seen.iter().find(|(_, s)| s.contains(&id)).map(|(e, _)| *e) {
                // A late copy: it stays known for as long as copies come
                // (recorded in this session too, so dropping its first
                // session's ids does not make the next copy new).
                if first < self.epoch && self.seen.entry(self.epoch).or_default().insert(id) {
                    out.ids.push((self.epoch, id));
                }
                continue;
            }
            self.seen.entry(self.epoch).or_default().insert(id);
            out.ids.push((self.epoch, id));
            self.app.executed += 1;
            self.execute(env, &mut out);
        }
        self.units += 1;
        if self.units >= self.session_units || self.force.is_some() {
            self.next_session(&mut out);
        }
        self.finish(out)
    }

    /// Whether the encoded envelope `item` was executed (in this session or
    /// the last).
    fn executed(&self, item: &[u8]) -> bool {
        let id: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(item).into();
        self.seen.values().any(|s| s.contains(&id))
    }

    /// The session ends here, at the same batch at every correct replica:
    /// the next epoch is written with this batch, and executed ids older
    /// than the session that just ended are dropped.
    fn next_session(&mut self, out: &mut Out) {
        let ended = self.epoch;
        self.epoch += 1;
        self.units = 0;
        self.rotated = true;
        let old: Vec<u64> = self.seen.range(..ended).map(|(e, _)| *e).collect();
        for e in old {
            if let Some(ids) = self.seen.remove(&e) {
                out.forget.extend(ids.into_iter().map(|id| (e, id)));
            }
        }
        if let Some((index, tag)) = self.force.take() {
            self.checkpoint(index, tag, out);
        }
    }

    /// The checkpoint replica `index`'s rejoin request `tag` asked for,
    /// written with this batch: the state the session `self.epoch` starts
    /// from, identical at every correct replica.
    fn checkpoint(&mut self, index: u8, tag: u64, out: &mut Out) {
        // Behind its own group's module: its application state is not the
        // one to rejoin from (the `f + 1` others' are).
        if !self.pending.is_empty() || !self.app.deferred.is_empty() {
            warn!(index, tag, "checkpoint not written: a committed module is missing here");
            return;
        }
        let role = self.replica.role();
        let state = role.replicated();
        let pieces = state.held_upgrades().filter_map(|u| self.replica.piece(u).ok().flatten()).collect();
        // Wall-clock notes differ between replicas.
        let app = App { finished: Vec::new(), ..self.app.clone() };
        let mut seen: Vec<[u8; 32]> =
            self.seen.get(&(self.epoch - 1)).map(|s| s.iter().copied().collect()).unwrap_or_default();
        seen.sort_unstable();
        let rejoins = self.rejoins.clone();
        let cp = transfer::Checkpoint { epoch: self.epoch, state, app, seen, pieces, rejoins };
        match postcard::to_allocvec(&cp).and_then(|bytes| postcard::to_allocvec(&(tag, bytes))) {
            Ok(record) => out.records.push((transfer::checkpoint_key(index), Some(record))),
            Err(e) => warn!(index, "checkpoint not written: {e}"),
        }
        info!(index, tag, epoch = self.epoch, "session ended for a rejoining replica: checkpoint written");
    }

    fn execute(&mut self, env: Envelope, out: &mut Out) {
        let now = crate::now();
        match env.body {
            Body::Op(op) => {
                let report = self.replica.ordered(now, env.origin, &op, &self.key, |_| Verdict::Accept);
                let via = format!("ordered operation from {:?}", env.origin);
                self.carry(report, &via, out);
            }
            Body::Prepare { op, sealed } => {
                // The core asks for the verdict after opening this
                // replica's box: the payload key it held decides whether the
                // carried bytes are the signed payload, and a module among
                // them that does not validate is this group's `Reject`
                // (the same at every replica: the same ordered bytes, the
                // same key).
                let seen = std::cell::RefCell::new(None);
                let mut crypto = Noting { key: &self.key, seen: &seen };
                let validate = |h: &PieceHeader| match seen.borrow().as_ref() {
                    Some(key) => verdict(key, h, &sealed),
                    None => Verdict::Accept,
                };
                let report = self.replica.ordered_with(now, env.origin, &op, &mut crypto, validate);
                let via = format!("ordered operation from {:?}", env.origin);
                self.carry(report, &via, out);
            }
            Body::Tick { txn } => {
                if matches!(env.origin, Peer::Replica { group, .. } if group == self.group) {
                    // Refused transactions whose version came run again
                    // first (Figure 2's restart, once the commit is here).
                    let version = self.replica.role().version();
                    while let Some(i) = self.app.parked.iter().position(|(v, _)| *v <= version) {
                        let Some((_, old)) = self.app.parked.remove(i) else { break };
                        if let Some(AppOp::Call { txn, callee, codes, version }) =
                            self.start_call(old.wrapping_add(1 << 40), out)
                        {
                            self.app_op(AppOp::Again(AgainCall { txn, callee, codes, version }), out);
                        }
                    }
                    if let Some(op) = self.start_call(txn, out) {
                        self.app_op(op, out);
                    }
                }
            }
            Body::Rejoin { tag } => {
                if let Peer::Replica { group, index } = env.origin {
                    // Only a newer request (tags grow with each restart: a
                    // late copy of an older one changes nothing), and not
                    // within `REJOIN_GAP` batches of the session change the
                    // replica's last request made (a faulty one cannot keep
                    // its group changing sessions, stranding replicas that
                    // lag).
                    let last = self.rejoins.get(&index).copied();
                    let newer = last.is_none_or(|(t, e)| tag > t && (e < self.epoch || self.units >= REJOIN_GAP));
                    if group == self.group && index != self.index && newer {
                        self.rejoins.insert(index, (tag, self.epoch + 1));
                        self.force = Some((index, tag));
                        out.records.push((
                            REJOINS.to_string(),
                            Some(postcard::to_allocvec(&self.rejoins).unwrap_or_default()),
                        ));
                    }
                }
            }
            Body::Request { .. } | Body::Response { .. } => self.call_or_answer(env, out),
        }
    }

    /// A request from another group, or a response to this group's call,
    /// decided by `f + 1` matching copies: the core's Figure 2 step now,
    /// the module's part as [`AppOp`]s.
    fn call_or_answer(&mut self, env: Envelope, out: &mut Out) {
        let now = crate::now();
        let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(frame::encode(&env.body)).into();
        match env.body {
            Body::Request { from, txn, codes, version, module, amount, args } => {
                if !self.vote(env.origin, from, txn, false, digest) {
                    return;
                }
                let report = self.replica.request(now, from, &codes);
                self.carry(report, "piggyback on a request", out);
                let back = self.replica.attachment(from);
                // Section 4.3: a caller at another version is not served.
                let here = self.replica.role().version();
                let refuse = (version != here && self.planted != Planted::NoVersionCheck).then_some(here);
                if let Some(p) = self.pending.first() {
                    // Upgrading: a typed answer now; the call is served once
                    // the module is here.
                    let frame = Frame::Upgrading { group: self.group, txn, upgrade: p.upgrade };
                    for peer in self.cluster.replicas_of(from) {
                        out.frames.push((peer, frame.clone()));
                    }
                }
                self.app_op(AppOp::Serve { from, txn, back, refuse, module, amount, args }, out);
            }
            Body::Response { from, txn, codes, answer } => {
                if !self.vote(env.origin, from, txn, true, digest) || self.app.pending.get(&txn) != Some(&from.0) {
                    return;
                }
                self.app.pending.remove(&txn);
                let report = self.replica.response(now, TxnId(txn), from, &codes);
                let restart = report.effects.iter().any(|e| matches!(e, GroupEffect::RestartTransaction(_)));
                self.carry(report, "piggyback on a response", out);
                // Figure 2: a refused transaction that learned of a commit
                // runs again on the new version (a served one cannot be
                // undone at the callee, and the versions matched there).
                let again = match answer {
                    Answer::Refused { .. } if self.planted == Planted::NoRestart => None,
                    Answer::Refused { .. } if restart => {
                        self.start_call(txn.wrapping_add(1 << 40), out).and_then(|op| match op {
                            AppOp::Call { txn, callee, codes, version } => {
                                Some(AgainCall { txn, callee, codes, version })
                            }
                            _ => None,
                        })
                    }
                    // No commit came with it: this group runs it again once
                    // at the callee's version (a callee behind catches up
                    // meanwhile).
                    Answer::Refused { version } => {
                        let here = self.replica.role().version();
                        if self.app.parked.len() >= MAX_PARKED {
                            self.app.parked.pop_front();
                        }
                        self.app.parked.push_back((version.max(here), txn));
                        None
                    }
                    _ => None,
                };
                self.app_op(AppOp::Answer { txn, answer, again }, out);
            }
            _ => {}
        }
    }

    /// The ordered half of starting transaction `txn` (Figure 2,
    /// MakeRequest): its callee, the call in flight, the codes for it. The
    /// oldest call in flight is dropped to make room, its money in limbo.
    fn start_call(&mut self, txn: u64, out: &mut Out) -> Option<AppOp> {
        let neighbors = self.cluster.group(self.group.0).map(|g| g.neighbors.clone()).unwrap_or_default();
        let callee = neighbors.get((txn % neighbors.len().max(1) as u64) as usize).copied()?;
        // A transaction runs once at a time: a second start of one still
        // in flight would pay again over its escrow.
        if self.app.pending.contains_key(&txn) {
            warn!(txn, "a transaction still in flight was started again: ignored");
            return None;
        }
        if self.app.pending.len() >= MAX_CALLS {
            if let Some((old, _)) = self.app.pending.pop_first() {
                self.app_op(AppOp::Lost { txn: old }, out);
            }
        }
        self.app.pending.insert(txn, callee);
        let codes = self.replica.attachment(GroupId(callee));
        Some(AppOp::Call { txn, callee, codes, version: self.replica.role().version() })
    }

    /// Runs the module's part of an operation now, or defers it while a
    /// committed module is missing here (the operations after it wait too,
    /// in order).
    fn app_op(&mut self, op: AppOp, out: &mut Out) {
        out.dirty = true;
        if self.pending.is_empty() && self.app.deferred.is_empty() {
            self.run_op(op, out);
            return;
        }
        if self.app.deferred.len() >= MAX_DEFERRED {
            if !self.overflowed {
                warn!(
                    deferred = self.app.deferred.len(),
                    "a committed module is missing for too long: rejoining by state transfer"
                );
            }
            self.overflowed = true;
            return;
        }
        self.app.deferred.push_back((self.replica.role().version(), op));
    }

    /// Runs the deferred operations whose version's module is applied.
    fn run_deferred(&mut self, out: &mut Out) {
        let applied = self.replica.role().version().saturating_sub(self.pending.len() as u64);
        while self.app.deferred.front().is_some_and(|(v, _)| *v <= applied) {
            if let Some((_, op)) = self.app.deferred.pop_front() {
                self.run_op(op, out);
            }
        }
    }

    /// The module's part of an operation.
    fn run_op(&mut self, op: AppOp, out: &mut Out) {
        let module = self.app.module_version;
        match op {
            AppOp::Call { txn, callee, codes, version } => self.send_call(txn, callee, codes, version, out),
            AppOp::Serve { from, txn, back, refuse, module: caller, amount, args } => {
                let answer = match refuse {
                    Some(version) => Answer::Refused { version },
                    None => {
                        *self.app.served.entry((caller, module)).or_default() += 1;
                        match self.program.serve(self.app.balance, amount, &args) {
                            Ok(balance) => {
                                self.app.balance = balance;
                                self.app.credited.push_back((from.0, txn));
                                while self.app.credited.len() > MAX_CREDITED {
                                    self.app.credited.pop_front();
                                }
                                Answer::Served { module }
                            }
                            Err(e) => {
                                warn!(from = from.0, txn, "call failed: {e}");
                                Answer::Failed { module }
                            }
                        }
                    }
                };
                let body = Body::Response { from: self.group, txn, codes: back, answer };
                for peer in self.cluster.replicas_of(from) {
                    out.frames.push((peer, Frame::Submit { nonce: txn, body: body.clone() }));
                }
            }
            AppOp::Answer { txn, answer, again } => {
                let paid = self.app.escrow.remove(&txn).map_or(0, |(_, a)| a);
                match answer {
                    Answer::Served { .. } => self.app.calls += 1,
                    // The planted bug: the abort skipped, the money kept
                    // as if the call went through.
                    Answer::Refused { .. } if self.planted == Planted::NoRestart => self.app.calls += 1,
                    Answer::Refused { .. } => {
                        self.app.balance += paid;
                        self.app.refused += 1;
                    }
                    Answer::Failed { .. } => {
                        self.app.balance += paid;
                        self.app.failed += 1;
                    }
                }
                if let Some(a) = again {
                    self.app.restarted += 1;
                    self.send_call(a.txn, a.callee, a.codes, a.version, out);
                }
            }
            AppOp::Again(a) => {
                self.app.restarted += 1;
                self.send_call(a.txn, a.callee, a.codes, a.version, out);
            }
            AppOp::Lost { txn } => {
                let paid = self.app.escrow.remove(&txn).map_or(0, |(_, a)| a);
                self.app.limbo += paid;
            }
        }
    }

    /// Pays and sends call `txn` to `callee`'s replicas.
    fn send_call(&mut self, txn: u64, callee: u32, codes: Attachment, version: u64, out: &mut Out) {
        let (amount, args) = match self.program.pay(txn, self.app.balance) {
            Ok(paid) => paid,
            Err(e) => {
                // No call goes out: the one in flight is dropped when it
                // is the oldest, with nothing paid.
                warn!(txn, "the module did not pay: {e}");
                self.app.failed += 1;
                return;
            }
        };
        self.app.balance -= amount;
        self.app.escrow.insert(txn, (callee, amount));
        let body =
            Body::Request { from: self.group, txn, codes, version, module: self.app.module_version, amount, args };
        for peer in self.cluster.replicas_of(GroupId(callee)) {
            out.frames.push((peer, Frame::Submit { nonce: txn, body: body.clone() }));
        }
    }

    /// `f + 1` matching copies from distinct replicas of `from` decide.
    /// `f + 1` matching copies from distinct replicas of `from` decide.
    fn vote(&mut self, origin: Peer, from: GroupId, txn: u64, response: bool, digest: [u8; 32]) -> bool {
        let Peer::Replica { group, index } = origin else { return false };
        if group != from || index >= 64 {
            return false;
        }
        let key = (from.0, txn, response);
        if self.app.done.contains(&key) {
            return false;
        }
        let entry = self.app.votes.entry(key).or_default();
        let i = match entry.iter().position(|(d, _)| *d == digest) {
            Some(i) => i,
            None => {
                entry.push((digest, 0));
                entry.len() - 1
            }
        };
        entry[i].1 |= 1 << index;
        if entry[i].1.count_ones() <= u32::from(f_of(&self.cluster, from)) {
            return false;
        }
        self.app.votes.remove(&key);
        self.app.done.insert(key);
        // Bounded memory: forget the oldest decided calls.
        while self.app.done.len() > 4096 {
            self.app.done.pop_first();
        }
        while self.app.votes.len() > 4096 {
            self.app.votes.pop_first();
        }
        true
    }

    /// Carries out the application's part of a step now (the host layer
    /// sends the role's messages and forwards pieces at the next flush).
    fn carry(&mut self, report: ReplicaReport, via: &str, out: &mut Out) {
        out.dirty = true;
        for fault in &report.faults.faults {
            warn!(?fault, "peer fault");
            crate::metrics::count("bftup_peer_faults_total");
        }
        for effect in report.effects {
            match effect {
                GroupEffect::Apply { upgrade, key, payload, .. } => {
                    crate::metrics::count("bftup_upgrades_committed_total");
                    self.finished(upgrade, via);
                    let version = self.replica.role().version();
                    info!(upgrade = ?upgrade, version, via, "committed");
                    match key {
                        Some(key) => {
                            let p = Pending { version, upgrade, key, payload };
                            out.records
                                .push((pending_key(version), Some(postcard::to_allocvec(&p).unwrap_or_default())));
                            self.pending.push(p);
                            self.apply_pending(None, out);
                        }
                        None => self.app.payload = "<this replica's box was bad: state transfer needed>".into(),
                    }
                }
                GroupEffect::Discard { upgrade } => {
                    crate::metrics::count("bftup_upgrades_aborted_total");
                    self.finished(upgrade, via);
                    info!(upgrade = ?upgrade, via, "aborted");
                }
                GroupEffect::AbortTransaction(t) => info!(txn = t.0, "transaction aborted: it saw a commit"),
                GroupEffect::RestartTransaction(t) => info!(txn = t.0, "transaction restarted on the new version"),
                GroupEffect::ForwardPiece { .. } => {}
            }
        }
    }

    /// Records when and how `upgrade` finished; the core has its outcome.
    fn finished(&mut self, upgrade: UpgradeId, via: &str) {
        self.app.finished.push((upgrade, crate::now_ms(), via.to_string()));
        let role = self.replica.role();
        self.app.finished.retain(|f| role.finished_upgrades().any(|(u, _, _)| u == f.0));
    }

    /// Applies the committed payloads not applied yet, oldest first, as
    /// far as their sealed bytes are at hand: `offered` (from a peer), this
    /// replica's own copy, or the deployer's file. Each must open under the
    /// digest its signed piece names. The first one missing is asked of
    /// the group's other replicas; the replica stays upgrading meanwhile.
    fn apply_pending(&mut self, offered: Option<(Digest, &[u8])>, out: &mut Out) {
        while let Some(p) = self.pending.first() {
            let mut sources: Vec<(&str, Vec<u8>)> = Vec::new();
            if let Some((_, sealed)) = offered.filter(|(d, _)| *d == p.payload.digest) {
                sources.push(("a peer", sealed.to_vec()));
            }
            if let Some(i) = self.offered.iter().position(|(d, _)| *d == p.payload.digest) {
                sources.push(("an installer", self.offered.swap_remove(i).1));
            }
            if let Ok(Some(sealed)) = self.replica.store().get(&kept_key(p.payload.digest)) {
                sources.push(("this replica's copy", sealed));
            }
            let path = crate::deployer::payload_path(&self.dir, p.upgrade, self.group);
            if let Ok(sealed) = std::fs::read(&path) {
                sources.push(("the deployer's file", sealed));
            }
            let binding = Binding::group(p.upgrade, self.group);
            let opened = sources.into_iter().find_map(|(from, sealed)| {
                let mut plain = Vec::new();
                match open_payload(&p.key, &binding, &p.payload, &mut &sealed[..], &mut plain) {
                    Ok(_) => Some((from, sealed, plain)),
                    Err(e) => {
                        warn!(upgrade = ?p.upgrade, from, "payload does not open: {e}");
                        None
                    }
                }
            });
            let Some((from, sealed, plain)) = opened else {
                warn!(upgrade = ?p.upgrade, path = %path.display(), "payload unavailable: upgrading until it is fetched");
                for peer in self.cluster.replicas_of(self.group).into_iter().filter(|r| *r != self.me) {
                    out.frames.push((peer, Frame::PayloadRequest(p.payload.digest)));
                }
                return;
            };
            let p = self.pending.remove(0);
            self.install(&plain);
            out.dirty = true;
            out.records.push((pending_key(p.version), None));
            if !self.kept.contains(&p.payload.digest) {
                out.records.push((kept_key(p.payload.digest), Some(sealed)));
                self.kept.push(p.payload.digest);
                while self.kept.len() > KEEP_PAYLOADS {
                    let old = self.kept.remove(0);
                    out.records.push((kept_key(old), None));
                }
                out.records.push((KEPT.to_string(), Some(postcard::to_allocvec(&self.kept).unwrap_or_default())));
            }
            info!(upgrade = ?p.upgrade, version = p.version, from, payload = %self.app.payload, "payload applied");
            // What was ordered meanwhile runs now, on this version.
            self.run_deferred(out);
        }
    }

    /// Installs a committed payload's plaintext: a module replaces the
    /// running one, its state transformation run first (before any call
    /// under the new version); anything else is the payload's text. A
    /// module that does not validate or whose transformation traps leaves
    /// the old one running, at every replica alike.
    fn install(&mut self, plain: &[u8]) {
        if !crate::app::is_module(plain) {
            self.app.payload = String::from_utf8_lossy(plain).into_owned();
            return;
        }
        let next = Program::new(plain).and_then(|p| p.migrate(self.app.balance).map(|b| (p, b)));
        match next {
            Ok((program, balance)) => {
                info!(from = self.app.module_version, to = program.version(), balance, "module installed");
                self.app.balance = balance;
                self.app.module = plain.to_vec();
                self.app.module_version = program.version();
                self.app.payload = format!("bank module v{} ({} bytes)", program.version(), plain.len());
                self.program = program;
            }
            Err(e) => {
                warn!(module = self.app.module_version, "the committed module does not run, the old one stays: {e:#}");
                self.app.payload = format!("bank module v{} (a committed module did not run)", self.app.module_version);
            }
        }
    }

    /// Writes what the inputs changed, durably and in one transaction
    /// with the role (the host layer's flush), then sends.
    fn finish(&mut self, out: Out) -> Result<()> {
        let mut app = Batch::new();
        for (key, value) in out.records {
            match value {
                Some(v) => app.put(key, v),
                None => app.delete(key),
            }
        }
        if out.dirty || !out.ids.is_empty() {
            app.put(APP, postcard::to_allocvec(&self.app)?);
            for (epoch, id) in &out.ids {
                app.put(seen_key(*epoch, id), Vec::new());
            }
        }
        if self.rotated {
            app.put(SESSION, postcard::to_allocvec(&self.epoch)?);
            for (e, id) in &out.forget {
                // Both spellings: records from before sessions changed
                // have no epoch.
                app.delete(seen_key(*e, id));
                if *e == 0 {
                    app.delete(format!("{SEEN}{}", hex(id)));
                }
            }
        }
        let mut net = NetOut { net: &self.net, cluster: &self.cluster, payloads: None };
        self.replica.flush(app, &mut net).map_err(|e| anyhow!("replica store: {e}"))?;
        for (peer, frame) in &out.frames {
            self.net.send(*peer, frame);
        }
        Ok(())
    }

    fn on_frame(&mut self, peer: Peer, frame: Frame) -> Result<()> {
        match frame {
            Frame::Submit { nonce, body } => {
                let env = Envelope { origin: peer, nonce, body };
                if !self.queue.push(frame::encode(&env)) {
                    warn!(?peer, "submission queue full: dropped");
                }
            }
            Frame::Msg(message) => {
                let report = self.replica.message(crate::now(), peer, &message);
                let mut out = Out::default();
                self.carry(report, "message", &mut out);
                self.finish(out)?;
            }
            Frame::StatusRequest => {
                let status = self.status();
                self.net.send(peer, &Frame::Status(status));
            }
            Frame::PayloadRequest(digest) => {
                // Only what this replica applied itself, checked then.
                if let Ok(Some(sealed)) = self.replica.store().get(&kept_key(digest)) {
                    if sealed.len() + 1024 > crate::transport::MAX_FRAME {
                        warn!(?peer, len = sealed.len(), "a kept payload is too big for one frame: not sent");
                    } else {
                        self.net.send(peer, &Frame::Payload { digest, sealed });
                    }
                }
            }
            Frame::Payload { digest, sealed } if self.pending.first().is_some_and(|p| p.payload.digest == digest) => {
                let mut out = Out::default();
                self.apply_pending(Some((digest, &sealed)), &mut out);
                self.finish(out)?;
            }
            Frame::Payload { digest, sealed } if matches!(peer, Peer::Installer(_)) => {
                // Ahead of the commit: kept (in memory) only for an upgrade
                // this replica holds, one copy each.
                let role = self.replica.role();
                let held: Vec<Digest> = role
                    .replicated()
                    .held_upgrades()
                    .filter_map(|u| self.replica.piece(u).ok().flatten())
                    .map(|p| p.header.payload.digest)
                    .collect();
                self.offered.retain(|(d, _)| held.contains(d) && *d != digest);
                if held.contains(&digest) {
                    self.offered.push((digest, sealed));
                }
            }
            Frame::CheckpointRequest { tag } => {
                let Peer::Replica { index, .. } = peer else { return Ok(()) };
                if let Ok(Some(record)) = self.replica.store().get(&transfer::checkpoint_key(index)) {
                    match postcard::from_bytes::<(u64, Vec<u8>)>(&record) {
                        Ok((t, bytes)) if t == tag => self.net.send(peer, &Frame::Checkpoint { tag, bytes }),
                        Ok(_) => {}
                        Err(e) => warn!(index, "stored checkpoint does not decode: {e}"),
                    }
                }
            }
            Frame::Upgrading { group, txn, upgrade } => {
                self.callees_upgrading += 1;
                info!(?peer, group = group.0, txn, upgrade = ?upgrade, "callee upgrading: call not served");
            }
            _ => {}
        }
        Ok(())
    }

    fn on_tick(&mut self) {
        let n = self.cluster.group(self.group.0).map_or(1, |g| g.replicas.len()) as u64;
        let slot = crate::now_ms() / self.cluster.app_interval_ms.max(1);
        // One replica a slot starts the group's next transaction.
        if slot % n == u64::from(self.index) {
            let env = Envelope { origin: self.me, nonce: slot, body: Body::Tick { txn: slot } };
            let _ = self.queue.push(frame::encode(&env));
        }
    }

    /// The status as counters, for the Prometheus endpoint.
    fn export(&self) {
        use crate::metrics::{gauge, total};
        let s = self.status();
        gauge("bftup_version", s.version);
        gauge("bftup_upgrading", s.upgrading.len() as u64);
        gauge("bftup_upgrades_held", s.upgrades.iter().filter(|u| u.outcome.is_none()).count() as u64);
        gauge("bftup_session_epoch", s.epoch);
        gauge("bftup_session_units_left", s.units_left);
        total("bftup_executed_operations_total", s.executed);
        total("bftup_app_calls_total", s.app_calls);
        total("bftup_callees_upgrading_total", s.callees_upgrading);
    }

    fn status(&self) -> Status {
        let role = self.replica.role();
        Status {
            group: self.group,
            index: self.index,
            version: role.version().saturating_sub(self.pending.len() as u64),
            version_code: role.version_code(self.deployer).cloned(),
            executed: self.app.executed,
            app_calls: self.app.calls,
            app: app_status(&self.app),
            payload: self.app.payload.clone(),
            upgrading: self.pending.iter().map(|p| p.upgrade).collect(),
            callees_upgrading: self.callees_upgrading,
            upgrades: upgrades(role, &self.app),
            epoch: self.epoch,
            units_left: self.session_units.saturating_sub(self.units),
        }
    }
}

/// The application's part of a replica's status.
fn app_status(app: &App) -> AppStatus {
    AppStatus {
        module: app.module_version,
        balance: app.balance,
        escrow: app.escrow.values().map(|(_, a)| a).sum(),
        limbo: app.limbo,
        served: app.served.iter().map(|((c, m), k)| (*c, *m, *k)).collect(),
        refused: app.refused,
        restarted: app.restarted,
        failed: app.failed,
        deferred: app.deferred.len() as u64,
    }
}

/// The upgrades a replica reports, from the core: the finished ones it
/// remembers (oldest first, with the host's when and how), then the ones it
/// holds unfinished.
fn upgrades(role: &GroupReplica, app: &App) -> Vec<UpgradeStatus> {
    let finished = role.finished_upgrades().map(|(upgrade, outcome, _)| {
        let (finished_at_ms, via) =
            app.finished.iter().find(|f| f.0 == upgrade).map_or((0, String::new()), |f| (f.1, f.2.clone()));
        UpgradeStatus { upgrade, outcome: Some(outcome), held: None, finished_at_ms, via }
    });
    let held = role.held_upgrades().map(|(upgrade, in_a)| UpgradeStatus {
        upgrade,
        outcome: None,
        held: Some(in_a),
        finished_at_ms: 0,
        via: String::new(),
    });
    finished.chain(held).collect()
}

/// A replica's state as its database holds it (for the checker, with the
/// replica stopped): the role's version, each upgrade's outcome, the
/// application and the operations executed.
///
/// # Errors
/// When the database cannot be opened or read.
pub fn read_state(dir: &Path, group: u32, index: u8) -> Result<Option<StoredState>> {
    let path = dir.join("data").join(format!("replica-{group}-{index}")).join("state.redb");
    if !path.exists() {
        return Ok(None);
    }
    let store = Store::open(&path)?;
    let Some(role) = stored_replica(&store).map_err(|e| anyhow!("{e}"))? else { return Ok(None) };
    let app = App::read(&store)?;
    let outcomes = upgrades(&role, &app).into_iter().map(|u| (u.upgrade, u.outcome)).collect();
    let ledger = Ledger {
        app: app_status(&app),
        escrow: app.escrow.iter().map(|(t, (g, a))| (*t, *g, *a)).collect(),
        credited: app.credited.iter().copied().collect(),
    };
    Ok(Some((role.version(), outcomes, ledger, app.executed)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_application_record_from_before_the_module_reads_as_version_one() {
        let dir = std::env::temp_dir().join(format!("bftup-app-record-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut store = Store::open(&dir.join("state.redb")).unwrap();
        let old = AppBefore {
            executed: 7,
            calls: 3,
            payload: "application v2".into(),
            finished: Vec::new(),
            votes: BTreeMap::new(),
            done: [(2, 5, true)].into_iter().collect(),
            pending: [(9, 2)].into_iter().collect(),
        };
        let mut batch = Batch::new();
        batch.put(APP, postcard::to_allocvec(&old).unwrap());
        store.commit(batch).unwrap();
        let app = App::read(&store).unwrap();
        assert_eq!((app.executed, app.calls, app.payload.as_str()), (7, 3, "application v2"));
        assert!(app.done.contains(&(2, 5, true)) && app.pending.get(&9) == Some(&2));
        // No module yet: the replica starts the shipped one.
        assert!(app.module.is_empty() && app.escrow.is_empty());
        // This build's own record reads back as it is.
        let mut batch = Batch::new();
        let now = App { balance: 42, module_version: 2, ..app };
        batch.put(APP, postcard::to_allocvec(&now).unwrap());
        store.commit(batch).unwrap();
        assert_eq!(App::read(&store).unwrap().balance, 42);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
