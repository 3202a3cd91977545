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
use bft_upgrade::crypto::{Binding, Digest, GroupKey, PayloadRef, ReplicaSecretKey};
use bft_upgrade::group::{
    AuthorizedDeployer, GroupConfig, GroupEffect, GroupReplica, GuardianIds, Neighbor, TxnId, Verdict,
};
use bft_upgrade::host::{open_payload, payload_key, stored_replica, Batch, ReplicaHost, ReplicaReport, Store as _};
use bft_upgrade::step::Peer;
use bft_upgrade::wire::{DeployerId, GroupId, Outcome, UpgradeId};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::config::{hex, key_path, max_faulty, public_key, Cluster, Secrets};
use crate::frame::{self, Body, Envelope, Frame, Status, UpgradeStatus};
use crate::ordering::{self, Keys, Queue, Router, Session, SessionParams};
use crate::outbound::NetOut;
use crate::store::Store;
use crate::transport::{Net, Policy};

mod transfer;

pub use transfer::FRESH;

/// A call from another group: (group, txn, is response).
type CallKey = (u32, u64, bool);

/// What a replica's database says: its version and each upgrade's outcome.
pub type StoredState = (u64, Vec<(UpgradeId, Option<Outcome>)>);

/// The replicated application: a ring of groups calling each other, and
/// the installed payload. Deterministic: every correct replica holds the
/// same after the same ordered operations.
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
    /// This group's calls in flight: txn → callee.
    pending: BTreeMap<u64, u32>,
}

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
            app: record(store, APP)?,
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
    };
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
                    for item in again {
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
                if past > max_faulty(n) {
                    warn!(group, index, epoch = host.epoch, past, "left behind: peers are past every session kept for this replica; rejoining by state transfer");
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
            if self.seen.values().any(|s| s.contains(&id)) {
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
            Body::Tick { txn } => {
                if matches!(env.origin, Peer::Replica { group, .. } if group == self.group) {
                    // Upgrading: the call is the group's (its record stays in
                    // step with the peers'), but this replica makes none
                    // from a version it no longer serves.
                    let sent = out.frames.len();
                    self.call(txn, out);
                    if !self.pending.is_empty() {
                        out.frames.truncate(sent);
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
            Body::Request { from, txn, codes } => {
                if !self.vote(env.origin, from, txn, false, &codes) {
                    return;
                }
                let report = self.replica.request(now, from, &codes);
                self.carry(report, "piggyback on a request", out);
                let back = self.replica.attachment(from);
                // Upgrading: a typed answer, not old-version service.
                let frame = match self.pending.first() {
                    Some(p) => Frame::Upgrading { group: self.group, txn, upgrade: p.upgrade },
                    None => Frame::Submit { nonce: txn, body: Body::Response { from: self.group, txn, codes: back } },
                };
                for peer in self.cluster.replicas_of(from) {
                    out.frames.push((peer, frame.clone()));
                }
            }
            Body::Response { from, txn, codes } => {
                if !self.vote(env.origin, from, txn, true, &codes) || self.app.pending.get(&txn) != Some(&from.0) {
                    return;
                }
                self.app.pending.remove(&txn);
                let report = self.replica.response(now, TxnId(txn), from, &codes);
                let restart = report.effects.iter().any(|e| matches!(e, GroupEffect::RestartTransaction(_)));
                self.carry(report, "piggyback on a response", out);
                if restart {
                    // Figure 2: the transaction runs again on the new version.
                    self.call(txn.wrapping_add(1 << 40), out);
                } else {
                    self.app.calls += 1;
                }
            }
        }
    }

    /// `f + 1` matching copies from distinct replicas of `from` decide.
    fn vote(
        &mut self,
        origin: Peer,
        from: GroupId,
        txn: u64,
        response: bool,
        codes: &bft_upgrade::wire::Attachment,
    ) -> bool {
        let Peer::Replica { group, index } = origin else { return false };
        if group != from || index >= 64 {
            return false;
        }
        let key = (from.0, txn, response);
        if self.app.done.contains(&key) {
            return false;
        }
        let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(frame::encode(codes)).into();
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

    /// Transaction `txn` calls the next neighbor (Figure 2, MakeRequest).
    fn call(&mut self, txn: u64, out: &mut Out) {
        let neighbors = &self.cluster.group(self.group.0).map(|g| g.neighbors.clone()).unwrap_or_default();
        let Some(callee) = neighbors.get((txn % neighbors.len().max(1) as u64) as usize).copied() else { return };
        let codes = self.replica.attachment(GroupId(callee));
        self.app.pending.insert(txn, callee);
        while self.app.pending.len() > 1024 {
            self.app.pending.pop_first();
        }
        let body = Body::Request { from: self.group, txn, codes };
        for peer in self.cluster.replicas_of(GroupId(callee)) {
            out.frames.push((peer, Frame::Submit { nonce: txn, body: body.clone() }));
        }
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
            self.app.payload = String::from_utf8_lossy(&plain).into_owned();
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
        let mut net = NetOut { net: &self.net, cluster: &self.cluster };
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
            payload: self.app.payload.clone(),
            upgrading: self.pending.iter().map(|p| p.upgrade).collect(),
            callees_upgrading: self.callees_upgrading,
            upgrades: upgrades(role, &self.app),
            epoch: self.epoch,
            units_left: self.session_units.saturating_sub(self.units),
        }
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
/// replica stopped): the role's version and each upgrade's outcome.
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
    let app: App = store.get(APP)?.map(|b| postcard::from_bytes(&b)).transpose()?.unwrap_or_default();
    let outcomes = upgrades(&role, &app).into_iter().map(|u| (u.upgrade, u.outcome)).collect();
    Ok(Some((role.version(), outcomes)))
}
