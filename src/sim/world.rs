//! The world: configuration, event loop, adversary and checkers.

mod hostile;

use std::boxed::Box;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::format;
use std::string::String;
use std::vec;
use std::vec::Vec;

use chacha20::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

use super::material::{Cached, Material};
use crate::client::{Client, ClientEvent};
use crate::crypto::ShareKind;
use crate::crypto::{Code, Share};
use crate::group::{AuthorizedDeployer, GroupConfig, GroupEffect, GroupReplica, Neighbor, TxnId, Verdict};
use crate::group::{GuardianIds, PieceCrypto};
use crate::guardian::{GuardedGroup, Guardian, GuardianConfig};
use crate::host::{Batch, ReplicaReport};
use crate::host::{Bundle, Faults, GuardianHost, InstallerHost, InstallerReport, MemStore, Outbound, ReplicaHost};
use crate::installer::{pool_needed, Finishing, Installer, InstallerEffect, InstallerOptions};
use crate::planted::Planted;
use crate::step::{Instant, Peer};
use crate::wire::Custody;
use crate::wire::{
    self, Answer, Attachment, GroupId, Membership, Message, Operation, Outcome, Piece, Reply, UpgradeHeader, UpgradeId,
};
use std::sync::Arc;

/// The installer type the simulator runs (up to 256 groups per upgrade).
pub enum SimInstaller {
    /// Up to 64 groups, 512 pooled shares: the crate's `DefaultInstaller`,
    /// the smallest size; runs with `tight_installers` use it when it fits.
    Tiny(SimInstallerHost<64, 512>),
    /// Up to 256 groups.
    Small(SimInstallerHost<256, 4096>),
    /// Up to 16,384 groups (the scaling runs).
    Large(SimInstallerHost<16384, 32768>),
}

/// An installer as the simulator hosts it: through the host layer, over
/// an in-memory store (a restart reopens it from its last checkpoint).
pub type SimInstallerHost<const G: usize, const P: usize> = InstallerHost<MemStore, G, P>;

/// The record name of the simulator's installers' checkpoints.
const INSTALLER_KEY: &str = "installer";

/// Calls the same method on either size.
macro_rules! each {
    ($self:expr, $i:ident => $e:expr) => {
        match $self {
            SimInstaller::Tiny($i) => $e,
            SimInstaller::Small($i) => $e,
            SimInstaller::Large($i) => $e,
        }
    };
}

impl SimInstaller {
    /// An installer of the upgrade over `groups`; with `tight`, at the
    /// smallest capacity the deployment declares (its pool is exactly what
    /// the groups need, in the smallest type that holds them), so anything
    /// that overflows the pool shows.
    fn new(id: u32, bundle: Bundle, finish_all: bool, retry_ms: u64, tight: bool) -> Self {
        let groups = &bundle.groups;
        let finishing =
            if finish_all { Finishing::EveryGroup } else { Finishing::Diffusion { grace: DIFFUSION_GRACE } };
        let need = pool_needed(groups);
        let mut options = InstallerOptions::default().retry_ms(retry_ms).finishing(finishing);
        if tight {
            options = options.share_pool(need);
        }
        // Each size is built in a frame of its own: a frame sized for the
        // large one would overflow test threads' stacks.
        if tight && groups.len() <= 64 && need <= 512 {
            Self::Tiny(hosted(id, bundle, options))
        } else if groups.len() <= 256 && need <= 4096 {
            Self::Small(hosted(id, bundle, options))
        } else {
            Self::Large(hosted(id, bundle, options))
        }
    }
    fn peer(&self) -> Peer {
        each!(self, i => i.role().peer())
    }
    fn start(&mut self, now: Instant, out: &mut Vec<Outbound>) -> InstallerReport {
        each!(self, i => i.start(now, out).expect("memory store"))
    }
    fn handle_timeout(&mut self, now: Instant, out: &mut Vec<Outbound>) -> InstallerReport {
        each!(self, i => i.timeout(now, out).expect("memory store"))
    }
    fn handle_answer(
        &mut self,
        now: Instant,
        from: Peer,
        answer: &Answer,
        out: &mut Vec<Outbound>,
    ) -> Result<InstallerReport, crate::host::HostError<core::convert::Infallible>> {
        each!(self, i => i.answer(now, from, answer, out))
    }
    fn is_done(&self) -> bool {
        each!(self, i => i.role().is_done())
    }
    fn decided(&self) -> Option<(Outcome, &Code)> {
        each!(self, i => i.role().decided())
    }
    fn deadline(&self) -> Option<Instant> {
        each!(self, i => i.deadline())
    }
    /// Crash and restart from the last checkpoint in the store.
    fn restore(&mut self) {
        each!(self, i => i.reopen().expect("own checkpoint reads back"))
    }
}

/// Sweeps an installer that commits through one group leaves to diffusion
/// before it sends the outcome to every group still silent.
pub const DIFFUSION_GRACE: u32 = 5;

#[inline(never)]
fn hosted<const G: usize, const P: usize>(
    id: u32,
    bundle: Bundle,
    options: InstallerOptions,
) -> SimInstallerHost<G, P> {
    InstallerHost::open(MemStore::default(), INSTALLER_KEY, bundle, |b| boxed(id, b, options)).expect("installer")
}

#[inline(never)]
fn boxed<const G: usize, const P: usize>(
    id: u32,
    bundle: &Bundle,
    options: InstallerOptions,
) -> Result<Box<Installer<G, P>>, crate::error::MisuseError> {
    Installer::new(id, bundle.header.clone(), &bundle.groups, options).map(Box::new)
}

/// How a Byzantine replica misbehaves. It runs the real group code; the
/// adversary rewrites what it sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByzantineReplica {
    /// Sends nothing.
    Silent,
    /// Replaces every share it releases with random bytes.
    ForgeShares,
    /// Releases both kinds of share for every piece it is asked about.
    BothKinds,
    /// Answers every prepare with its `c` share, whatever the group decided.
    WrongDecision,
    /// Answers the origin honestly and every other installer with the other
    /// kind of share.
    Equivocate,
    /// Sends random bytes instead of its messages.
    Garbage,
    /// A member of a compromised group: releases both kinds of share, and
    /// in guardian custody asks the guardians for both kinds.
    Compromised,
    /// Races the correct replicas: with every answer, first (early) sends
    /// every installer of the upgrade several distinct bogus values of both
    /// kinds (in guardian custody, more bogus `Code(Secret, …)` values than
    /// an installer tracks), then the honest answer, then another lie.
    Racer,
    /// Replays genuine answers and codes seen on the wire (other replicas,
    /// upgrades and groups), as its own and verbatim, to every installer of
    /// the upgrade and to neighbour groups.
    Replayer,
    /// ByzzFuzz-style: takes each real outgoing message and alters one
    /// field (value, kind, index, upgrade id), duplicates it, or sends it
    /// early or late.
    Mutator,
}

/// How a Byzantine guardian misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByzantineGuardian {
    /// Answers nothing.
    Silent,
    /// Answers every request at once with the share asked for, whatever it
    /// released before, with no token check and no durable record.
    LeakBoth,
    /// Answers with random share values.
    Forge,
}

impl ByzantineReplica {
    /// Every behavior, for seeded choice.
    pub const ALL: [ByzantineReplica; 6] = [
        ByzantineReplica::Silent,
        ByzantineReplica::ForgeShares,
        ByzantineReplica::BothKinds,
        ByzantineReplica::WrongDecision,
        ByzantineReplica::Equivocate,
        ByzantineReplica::Garbage,
    ];

    /// The behaviors that race, lie repeatedly, replay and mutate.
    pub const HOSTILE: [ByzantineReplica; 3] =
        [ByzantineReplica::Racer, ByzantineReplica::Replayer, ByzantineReplica::Mutator];

    /// [`ALL`](Self::ALL) and [`HOSTILE`](Self::HOSTILE), for seeded choice.
    pub const EVERY: [ByzantineReplica; 9] = [
        ByzantineReplica::Silent,
        ByzantineReplica::ForgeShares,
        ByzantineReplica::BothKinds,
        ByzantineReplica::WrongDecision,
        ByzantineReplica::Equivocate,
        ByzantineReplica::Garbage,
        ByzantineReplica::Racer,
        ByzantineReplica::Replayer,
        ByzantineReplica::Mutator,
    ];
}

/// Network faults during the fault phase.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NetworkFaults {
    /// Probability a message is dropped.
    pub drop: f64,
    /// Probability a message is delivered twice.
    pub duplicate: f64,
    /// Extra random delay, up to this many ms (reorders messages).
    pub jitter_ms: u64,
}

impl NetworkFaults {
    /// A perfect network.
    pub const NONE: NetworkFaults = NetworkFaults { drop: 0.0, duplicate: 0.0, jitter_ms: 0 };
}

/// One upgrade of the workload.
#[derive(Clone, Debug)]
pub struct UpgradeSpec {
    /// Indices of the groups it covers.
    pub groups: Vec<usize>,
    /// Resources each piece names.
    pub resources: Vec<u32>,
    /// Groups whose application rejects their piece.
    pub rejected_by: Vec<usize>,
    /// Order key sequence number.
    pub order_seq: u64,
    /// When its installers start, in ms.
    pub start_ms: u64,
    /// Which deployer (0 to 3) builds it.
    pub deployer: usize,
    /// Whether its pieces are built on its deployer's chain (false: a stale
    /// version code, so every group refuses it).
    pub chained: bool,
}

/// The simulator's configuration. Everything random follows from `seed`.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The seed.
    pub seed: u64,
    /// Replicas per group.
    pub group_sizes: Vec<usize>,
    /// Random neighbor edges on top of a ring.
    pub extra_edges: usize,
    /// Correct installers per upgrade.
    pub installers: usize,
    /// Byzantine installers per upgrade (besides the correct ones).
    pub byzantine_installers: usize,
    /// Whether installers send the commit to every group (else to one).
    pub finish_all: bool,
    /// The upgrades.
    pub upgrades: Vec<UpgradeSpec>,
    /// Byzantine replicas: (group index, replica index, behavior).
    pub byzantine: Vec<(usize, u8, ByzantineReplica)>,
    /// Network faults in the fault phase.
    pub network: NetworkFaults,
    /// Base one-way delay, ms.
    pub latency_ms: u64,
    /// Crash-and-restore roles from their serialized state in the fault
    /// phase.
    pub crashes: bool,
    /// Application transactions: each group calls a random neighbor every
    /// this many ms (piggyback diffusion and Figure 2).
    pub app_interval_ms: Option<u64>,
    /// Proactive diffusion on.
    pub proactive: bool,
    /// Retry interval of installers and proactive diffusion, ms.
    pub retry_ms: u64,
    /// End of the fault phase, ms.
    pub fault_phase_ms: u64,
    /// Liveness bound: every upgrade finished everywhere by this time, ms.
    pub deadline_ms: u64,
    /// Give up after this many events (livelock guard).
    pub max_events: u64,
    /// Serialize, drop and restore the role that handled each event, after
    /// every event.
    pub restart_every_event: bool,
    /// The first correct installer of every upgrade stops for good at this
    /// time (ms): an installer that crashes halfway and never returns.
    pub installer_death_ms: Option<u64>,
    /// External clients; each calls a random group every
    /// `client_interval_ms`.
    pub clients: usize,
    /// Interval between a client's calls, ms.
    pub client_interval_ms: u64,
    /// Print every event as it is handled (for replaying one seed).
    pub print_trace: bool,
    /// Guardians per group (0: replica custody). Groups share guardians
    /// from a pool: group `i` uses guardians `i..i + guardians`.
    pub guardians: usize,
    /// Byzantine guardians: (pool index, behavior).
    pub byzantine_guardians: Vec<(usize, ByzantineGuardian)>,
    /// Groups whose replicas are all Byzantine (compromised groups).
    pub compromised: Vec<usize>,
    /// A deliberate bug, to show the checkers find it (the bugs inside the
    /// roles need the `planted-bugs` feature).
    pub planted: Planted,
    /// Seed of the keys and bundles. Material depends only on this and the
    /// shape (group sizes, upgrades), not on `seed`, so runs of one shape
    /// share it and the crypto stays out of each run's cost.
    pub material_seed: u64,
    /// Whether the neighbor graph starts from a ring (else only the random
    /// edges: disconnected components are likely).
    pub ring: bool,
    /// Groups with no neighbors at all (isolated in the call graph).
    pub isolated: Vec<usize>,
    /// Installers at the smallest capacity that fits their upgrade, so a
    /// share pool that fills up shows as a liveness failure.
    pub tight_installers: bool,
}

impl SimConfig {
    /// A fault-free world of `groups` groups of `n` replicas with one
    /// upgrade over all of them and one installer.
    pub fn simple(seed: u64, groups: usize, n: usize) -> Self {
        Self {
            seed,
            group_sizes: vec![n; groups],
            extra_edges: groups / 2,
            installers: 1,
            byzantine_installers: 0,
            finish_all: true,
            upgrades: vec![UpgradeSpec {
                groups: (0..groups).collect(),
                resources: vec![1],
                rejected_by: vec![],
                order_seq: 1,
                start_ms: 0,
                deployer: 0,
                chained: true,
            }],
            byzantine: vec![],
            network: NetworkFaults::NONE,
            latency_ms: 5,
            crashes: false,
            app_interval_ms: None,
            proactive: true,
            retry_ms: 200,
            fault_phase_ms: 0,
            deadline_ms: 120_000,
            max_events: 5_000_000,
            restart_every_event: false,
            installer_death_ms: None,
            clients: 0,
            client_interval_ms: 10,
            print_trace: false,
            material_seed: 0,
            guardians: 0,
            byzantine_guardians: vec![],
            compromised: vec![],
            planted: Planted::None,
            ring: true,
            isolated: vec![],
            tight_installers: false,
        }
    }
}

/// A safety violation found by the checker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Virtual time, ms.
    pub at_ms: u64,
    /// Which property broke.
    pub kind: ViolationKind,
    /// What broke, in words.
    pub what: String,
}

/// The property a [`Violation`] breaks ([what holds](crate::protocol#what-holds), and the
/// crate's own promises).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViolationKind {
    /// A correct group committed while another aborted.
    SplitOutcome,
    /// A correct group released both kinds of share for one piece.
    BothKinds,
    /// Both the trigger and the cancellation code can be rebuilt.
    BothCodes,
    /// A correct replica released shares of a piece not built on its
    /// deployer's current version code (a replay).
    Replay,
    /// A correct installer decided to commit before every group accepted.
    EarlyCommit,
    /// A client saw a group older than one it saw before (section 4.3).
    ClientOrder,
    /// A role's step lost an output it had decided (`Step::lost`).
    LostOutput,
}

/// Message and work counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metrics {
    /// Messages sent by replicas.
    pub replica_messages: u64,
    /// Bytes sent by replicas.
    pub replica_bytes: u64,
    /// Messages sent by installers (including pieces).
    pub installer_messages: u64,
    /// Bytes sent by installers.
    pub installer_bytes: u64,
    /// Messages dropped by the network.
    pub dropped: u64,
    /// Messages duplicated by the network.
    pub duplicated: u64,
    /// Messages that did not decode (garbage).
    pub undecodable: u64,
    /// Faults reported by roles.
    pub faults_reported: u64,
    /// Application transactions completed.
    pub txns_completed: u64,
    /// Transactions aborted and restarted by Figure 2.
    pub txns_restarted: u64,
    /// Events processed.
    pub events: u64,
    /// Role restarts: each reopens the role from its host-layer store.
    pub restarts: u64,
    /// Batches the roles' host layers committed to their stores.
    pub store_writes: u64,
    /// External client calls.
    pub client_calls: u64,
    /// Client calls answered "too old: refresh".
    pub client_refreshes: u64,
}

/// The result of one run.
#[derive(Clone, Debug)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// The first safety violation, if any.
    pub violation: Option<Violation>,
    /// Liveness failure: what was unfinished at the deadline.
    pub liveness: Option<String>,
    /// Per upgrade: the outcome at correct groups (`None`: unfinished or
    /// refused everywhere).
    pub outcomes: Vec<Option<Outcome>>,
    /// Virtual time when every upgrade had finished at every correct group.
    pub finished_at_ms: Option<u64>,
    /// Counters.
    pub metrics: Metrics,
    /// Digest of the run's trace (same seed, same digest).
    pub trace_digest: [u8; 32],
    /// Share of application transactions in the install window (first
    /// start to full finish) that completed without being aborted; `None`
    /// without application traffic in the window.
    pub availability: Option<f64>,
    /// Encoded size of the first upgrade's first piece, bytes.
    pub piece_bytes: u64,
    /// Faults injected: Byzantine replicas, installers and guardians,
    /// compromised groups, crashes, dropped and duplicated messages.
    pub faults_injected: u64,
    /// Number of replicas.
    pub replicas: usize,
}

struct Replica {
    /// The replica, through the host layer, over an in-memory store.
    host: ReplicaHost<MemStore>,
    byz: Option<ByzantineReplica>,
    /// Per upgrade: kinds of share this replica released (secret, cancel).
    released: BTreeMap<UpgradeId, (bool, bool)>,
    /// Per upgrade: the outcome this replica applied.
    finished: BTreeMap<UpgradeId, Outcome>,
    scheduled: Option<Instant>,
    /// Planted bug: misbehaves, yet the checkers count it as correct.
    counted_correct: bool,
}

impl Replica {
    /// Whether the checkers hold this replica to the protocol.
    fn correct(&self) -> bool {
        self.byz.is_none() || self.counted_correct
    }
}

struct Group {
    id: GroupId,
    f: u8,
    replicas: Vec<Replica>,
    neighbors: Vec<usize>,
    correct: bool,
}

struct InstallerSlot {
    upgrade: usize,
    role: SimInstaller,
    byzantine: bool,
    dead: bool,
    scheduled: Option<Instant>,
}

/// What the checkers know of one upgrade, kept up to date event by event
/// so that a check costs one group's replicas, not the whole system's.
struct Tally {
    /// Per group index: whether the upgrade has a piece there.
    member: Vec<bool>,
    /// How many groups it has.
    groups: usize,
    /// A correct replica of a correct group that committed / aborted.
    committed: Option<(GroupId, usize)>,
    aborted: Option<(GroupId, usize)>,
    /// Groups where the adversary can rebuild `s_g` / `c`.
    tau_at: BTreeSet<usize>,
    c_at: BTreeSet<usize>,
    /// Replicas (correct, in correct groups) that have not finished it.
    unfinished: usize,
    /// Whether there are any such replicas at all.
    watched: bool,
    /// Replicas of any kind, in its groups, that have not finished it: at
    /// zero the host retires it at the guardians.
    left: usize,
    /// Whether it covers a compromised group (never retired then).
    compromised: bool,
}

impl Tally {
    fn new(b: &Built, groups: &[Group]) -> Self {
        let mut member = vec![false; groups.len()];
        let mut unfinished = 0;
        let mut left = 0;
        let mut compromised = false;
        for gi in &b.groups {
            member[*gi] = true;
            let g = &groups[*gi];
            left += g.replicas.len();
            compromised |= g.replicas.iter().all(|r| r.byz == Some(ByzantineReplica::Compromised));
            if g.correct {
                unfinished += g.replicas.iter().filter(|r| r.byz.is_none()).count();
            }
        }
        Self {
            member,
            groups: b.groups.len(),
            committed: None,
            aborted: None,
            tau_at: BTreeSet::new(),
            c_at: BTreeSet::new(),
            unfinished,
            watched: unfinished > 0,
            left,
            compromised,
        }
    }

    /// Every correct replica of every correct group finished it.
    fn finished(&self) -> bool {
        self.watched && self.unfinished == 0
    }
}

struct Built {
    header: UpgradeHeader,
    pieces: BTreeMap<GroupId, Piece>,
    groups: Vec<usize>,
    rejected_by: Vec<usize>,
    trigger: Code,
    cancel: Code,
    /// Whether some correct group would accept and chain it.
    valid: bool,
}

#[derive(Debug)]
enum Event {
    /// Bytes of a [`Message`] on the wire.
    Net { from: Peer, to: Peer, bytes: Vec<u8> },
    /// An operation reaches a group's ordering.
    Submit { group: usize, origin: Peer, op: Box<Operation> },
    /// A role's deadline.
    Timer { who: Who },
    /// An upgrade's installers start.
    Start { upgrade: usize },
    /// A group's transaction calls a neighbor.
    AppCall { caller: usize, callee: usize, txn: u64 },
    /// The call arrives at the callee.
    AppRequest { caller: usize, callee: usize, txn: u64, codes: Box<Attachment> },
    /// The response arrives at the caller.
    AppResponse { caller: usize, callee: usize, txn: u64, codes: Box<Attachment> },
    /// A role crashes and restarts from its serialized state.
    Restart { who: Who },
    /// An external client calls a group.
    ClientCall { client: usize, group: usize },
    /// A replica's host hands a piece to a guardian.
    PieceToGuardian { guardian: usize, piece: Box<Piece>, from: Peer },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Replica(usize, usize),
    Installer(usize),
    Guardian(usize),
}

/// A trace line being formatted: hashed piece by piece, kept only when
/// it is to be printed.
struct TraceLine<'a> {
    hash: &'a mut sha2::Sha256,
    text: Option<String>,
}

impl core::fmt::Write for TraceLine<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        sha2::Digest::update(self.hash, s.as_bytes());
        if let Some(t) = &mut self.text {
            t.push_str(s);
        }
        Ok(())
    }
}

struct Queued {
    at: u64,
    seq: u64,
    event: Event,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        // Min-heap on (time, sequence).
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// A simulated deployment.
pub struct World {
    cfg: SimConfig,
    rng: ChaCha20Rng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Queued>,
    groups: Vec<Group>,
    upgrades: Vec<Built>,
    installers: Vec<InstallerSlot>,
    metrics: Metrics,
    trace: sha2::Sha256,
    violation: Option<Violation>,
    finished_at: Option<u64>,
    next_txn: u64,
    /// Open transactions: txn → (caller, callee).
    txns: BTreeMap<u64, (usize, usize)>,
    clients: Vec<Client<64>>,
    material: Arc<Material>,
    guardians: Vec<GuardianSlot>,
    /// Whether anything the checkers read changed since they last ran.
    dirty: bool,
    /// (upgrade, group) pairs whose safety state changed since the
    /// checkers last ran: only these are looked at again.
    to_check: BTreeSet<(usize, usize)>,
    /// Per upgrade: what the checkers have seen so far.
    tallies: Vec<Tally>,
    /// Per group: share indices of its Byzantine guardians.
    byz_guardians: Vec<BTreeSet<u8>>,
    /// Application transactions as they ended: (time, completed without
    /// abort).
    txn_log: Vec<(u64, bool)>,
    /// Guardian shares that reached Byzantine hands: (upgrade, group,
    /// kind) → guardian share indices.
    leaked: BTreeMap<(UpgradeId, GroupId, bool), BTreeSet<u8>>,
    /// Genuine messages correct replicas sent (answers, codes), for
    /// Byzantine replicas to replay: a small store, overwritten at random.
    genuine: Vec<Message>,
    /// Whether the event limit cut the run short.
    out_of_events: bool,
    /// Whether some replica replays (only then is `genuine` kept).
    replaying: bool,
}

struct GuardianSlot {
    /// The guardian, through the host layer, over an in-memory store.
    host: GuardianHost<MemStore, 64>,
    config: GuardianConfig,
    byz: Option<ByzantineGuardian>,
}

/// The guardian type the simulator runs.
pub type SimGuardian = Guardian<64>;

/// Uniform float in [0, 1) from the world's rng.
fn unit(rng: &mut ChaCha20Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

fn below(rng: &mut ChaCha20Rng, n: usize) -> usize {
    if n == 0 {
        0
    } else {
        (rng.next_u64() % n as u64) as usize
    }
}

impl World {
    /// Builds the world: keys, groups, deployers, bundles and installers.
    ///
    /// # Panics
    /// On an inconsistent configuration (the simulator is a test tool).
    pub fn new(cfg: SimConfig) -> Self {
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&cfg.seed.to_le_bytes());
        seed[8..16].copy_from_slice(b"bftupsim");
        let mut rng = ChaCha20Rng::from_seed(seed);

        let material = Material::get(cfg.material_seed, &cfg.group_sizes, &cfg.upgrades, cfg.guardians);

        // Neighbor graph: a ring plus random extra edges.
        let g = cfg.group_sizes.len();
        let mut edges: BTreeSet<(usize, usize)> = BTreeSet::new();
        if g > 1 && cfg.ring {
            for i in 0..g {
                let j = (i + 1) % g;
                edges.insert((i.min(j), i.max(j)));
            }
        }
        for _ in 0..cfg.extra_edges {
            let (a, b) = (below(&mut rng, g), below(&mut rng, g));
            if a != b {
                edges.insert((a.min(b), a.max(b)));
            }
        }
        edges.retain(|(a, b)| !cfg.isolated.contains(a) && !cfg.isolated.contains(b));
        let mut neighbors: Vec<Vec<usize>> = vec![vec![]; g];
        for (a, b) in &edges {
            if neighbors[*a].len() < crate::group::MAX_NEIGHBORS && neighbors[*b].len() < crate::group::MAX_NEIGHBORS {
                neighbors[*a].push(*b);
                neighbors[*b].push(*a);
            }
        }

        let memberships = material.memberships.clone();
        let groups: Vec<(GroupId, usize, Membership)> =
            memberships.iter().map(|m| (m.group, m.n(), m.clone())).collect();
        let mut built_groups = Vec::new();
        for (gi, (id, n, membership)) in groups.into_iter().enumerate() {
            let mut config = GroupConfig {
                membership: membership.clone(),
                deployers: heapless::Vec::new(),
                neighbors: heapless::Vec::new(),
                retry_ms: cfg.retry_ms,
                proactive: cfg.proactive,
                guardians: material.guardian_sets[gi]
                    .as_ref()
                    .map(|set| GuardianIds { f: set.f, ids: set.members.iter().map(|(id, _)| *id).collect() }),
            };
            for ((id, key), gen) in material.deployers.iter().zip(&material.genesis) {
                let _ = config.deployers.push(AuthorizedDeployer { id: *id, key: *key, genesis: gen.clone() });
            }
            for nb in &neighbors[gi] {
                let _ = config.neighbors.push(Neighbor { group: memberships[*nb].group, f: memberships[*nb].f });
            }
            let f = membership.f;
            let mut byz_here: Vec<(usize, u8, ByzantineReplica)> =
                cfg.byzantine.iter().filter(|(bg, _, _)| *bg == gi).copied().collect();
            if cfg.compromised.contains(&gi) {
                byz_here = (0..n).map(|ri| (gi, ri as u8, ByzantineReplica::Compromised)).collect();
            }
            let correct = byz_here.len() <= usize::from(f);
            let replicas = (0..n)
                .map(|ri| Replica {
                    host: ReplicaHost::open(MemStore::default(), || GroupReplica::new(config.clone(), ri as u8))
                        .expect("valid config"),
                    byz: byz_here.iter().find(|(_, r, _)| usize::from(*r) == ri).map(|(_, _, b)| *b),
                    released: BTreeMap::new(),
                    finished: BTreeMap::new(),
                    scheduled: None,
                    counted_correct: false,
                })
                .collect();
            built_groups.push(Group { id, f, replicas, neighbors: neighbors[gi].clone(), correct });
        }

        let guardians: Vec<GuardianSlot> = (0..material.guardian_keys.len())
            .map(|k| {
                let id = k as u32 + 1;
                let mut config = GuardianConfig {
                    id,
                    deployers: material.deployers.iter().copied().collect(),
                    groups: heapless::Vec::new(),
                };
                for (gi, set) in material.guardian_sets.iter().enumerate() {
                    if set.as_ref().is_some_and(|s| s.members.iter().any(|(g, _)| *g == id)) {
                        let members = material.memberships[gi].digest();
                        let _ = config.groups.push(GuardedGroup { group: material.memberships[gi].group, members });
                    }
                }
                let byz = cfg.byzantine_guardians.iter().find(|(i, _)| *i == k).map(|(_, b)| *b);
                let host =
                    GuardianHost::open(MemStore::default(), || SimGuardian::new(config.clone())).expect("memory store");
                GuardianSlot { host, config, byz }
            })
            .collect();
        let upgrades: Vec<Built> = cfg
            .upgrades
            .iter()
            .zip(&material.bundles)
            .map(|(spec, b)| Built {
                header: b.header.clone(),
                pieces: b.pieces.clone(),
                groups: spec.groups.clone(),
                rejected_by: spec.rejected_by.clone(),
                trigger: b.trigger.clone(),
                cancel: b.cancel.clone(),
                // Liveness is owed only where every group is correct: a
                // compromised group can withhold its secret forever.
                valid: spec.chained && !spec.groups.iter().any(|g| cfg.compromised.contains(g)),
            })
            .collect();
        // Nor to an upgrade that conflicts, at some group, with one that a
        // compromised group can stall: it may wait behind it forever.
        let stalled: Vec<usize> =
            (0..upgrades.len()).filter(|u| !upgrades[*u].valid && cfg.upgrades[*u].chained).collect();
        let mut upgrades = upgrades;
        for (ui, built) in upgrades.iter_mut().enumerate() {
            let blocked = stalled.iter().any(|s| {
                *s != ui
                    && cfg.upgrades[*s].groups.iter().any(|g| cfg.upgrades[ui].groups.contains(g))
                    && cfg.upgrades[*s].resources.iter().any(|r| cfg.upgrades[ui].resources.contains(r))
            });
            if blocked {
                built.valid = false;
            }
        }

        // Installers: correct ones first, then Byzantine ones.
        let mut installers = Vec::new();
        let mut next_id = 1u32;
        for (ui, b) in upgrades.iter().enumerate() {
            let list: Vec<(GroupId, u8)> =
                b.groups.iter().map(|gi| (memberships[*gi].group, memberships[*gi].f)).collect();
            let mut list = list;
            list.sort();
            list.dedup();
            let bundle =
                Bundle { header: b.header.clone(), groups: list, pieces: b.pieces.values().cloned().collect() };
            for k in 0..cfg.installers + cfg.byzantine_installers {
                let tight = cfg.tight_installers;
                let role = SimInstaller::new(next_id, bundle.clone(), cfg.finish_all, cfg.retry_ms, tight);
                installers.push(InstallerSlot {
                    upgrade: ui,
                    role,
                    byzantine: k >= cfg.installers,
                    dead: false,
                    scheduled: None,
                });
                next_id += 1;
            }
        }

        let to_check =
            upgrades.iter().enumerate().flat_map(|(ui, b)| b.groups.iter().map(move |gi| (ui, *gi))).collect();
        let tallies = upgrades.iter().map(|b| Tally::new(b, &built_groups)).collect();
        let mut world = World {
            rng,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            groups: built_groups,
            upgrades,
            installers,
            metrics: Metrics::default(),
            trace: <sha2::Sha256 as sha2::Digest>::new(),
            violation: None,
            finished_at: None,
            next_txn: 1,
            txns: BTreeMap::new(),
            clients: (0..cfg.clients).map(|i| Client::new(i as u32 + 1)).collect(),
            material,
            guardians,
            leaked: BTreeMap::new(),
            txn_log: Vec::new(),
            dirty: true,
            to_check,
            tallies,
            byz_guardians: Vec::new(),
            genuine: Vec::new(),
            out_of_events: false,
            replaying: cfg.byzantine.iter().any(|(_, _, b)| *b == ByzantineReplica::Replayer),
            cfg,
        };
        for client in 0..world.clients.len() {
            let group = below(&mut world.rng, world.groups.len());
            let at = below(&mut world.rng, world.cfg.client_interval_ms as usize + 1) as u64;
            world.push(at, Event::ClientCall { client, group });
        }
        world.plant();
        world.byz_guardians = world
            .material
            .guardian_sets
            .iter()
            .map(|set| {
                set.iter()
                    .flat_map(|s| s.members.iter().enumerate())
                    .filter(|(_, (id, _))| world.guardians[*id as usize - 1].byz.is_some())
                    .map(|(i, _)| i as u8 + 1)
                    .collect()
            })
            .collect();
        for (ui, spec) in world.cfg.upgrades.clone().iter().enumerate() {
            world.push(spec.start_ms, Event::Start { upgrade: ui });
        }
        if let Some(every) = world.cfg.app_interval_ms {
            for gi in 0..world.groups.len() {
                let jitter = below(&mut world.rng, every as usize + 1) as u64;
                world.schedule_call(gi, jitter);
            }
        }
        if world.cfg.crashes {
            let count = 4 + world.groups.len();
            for _ in 0..count {
                let at = below(&mut world.rng, world.cfg.fault_phase_ms.max(1) as usize) as u64;
                let who = if !world.guardians.is_empty() && world.rng.next_u32().is_multiple_of(3) {
                    Who::Guardian(below(&mut world.rng, world.guardians.len()))
                } else if world.installers.is_empty() || world.rng.next_u32().is_multiple_of(2) {
                    let gi = below(&mut world.rng, world.groups.len());
                    Who::Replica(gi, below(&mut world.rng, world.groups[gi].replicas.len()))
                } else {
                    Who::Installer(below(&mut world.rng, world.installers.len()))
                };
                world.push(at, Event::Restart { who });
            }
        }
        world
    }

    /// Plants the configured bug.
    fn plant(&mut self) {
        let bug = self.cfg.planted;
        match bug {
            Planted::None => {}
            #[cfg(feature = "planted-bugs")]
            Planted::GuardianForgets => {
                for g in &mut self.guardians {
                    g.host.plant(bug);
                }
            }
            Planted::ReleasesBoth => {
                if let Some(r) = self.groups.first_mut().and_then(|g| g.replicas.last_mut()) {
                    r.byz = Some(ByzantineReplica::BothKinds);
                    r.counted_correct = true;
                }
            }
            #[cfg(feature = "planted-bugs")]
            Planted::SkipTriggerCheck
            | Planted::SkipVersionCheck
            | Planted::NoPostponement
            | Planted::SquattableIds => {
                for r in self.groups.iter_mut().flat_map(|g| g.replicas.iter_mut()) {
                    r.host.plant(bug);
                    r.host.flush(Batch::new(), &mut Vec::new()).expect("memory store");
                }
            }
            #[cfg(feature = "planted-bugs")]
            Planted::CommitWithMissingGroup
            | Planted::VotesPerMessage
            | Planted::PoolHalfBudget
            | Planted::DoneAfterOneGroup
            | Planted::SweepIgnoresRoom => {
                for i in self.installers.iter_mut().filter(|i| !i.byzantine) {
                    each!(&mut i.role, x => x.plant(bug)).expect("memory store");
                }
            }
            #[cfg(not(feature = "planted-bugs"))]
            _ => panic!("planting {bug:?} needs the `planted-bugs` feature"),
        }
    }

    fn push(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Queued { at, seq: self.seq, event });
    }

    fn faulty_network(&self) -> bool {
        self.now < self.cfg.fault_phase_ms
    }

    fn schedule_call(&mut self, caller: usize, delay: u64) {
        let nbs = &self.groups[caller].neighbors;
        if nbs.is_empty() {
            return;
        }
        let callee = nbs[below(&mut self.rng, nbs.len())];
        let txn = self.next_txn;
        self.next_txn += 1;
        self.push(self.now + delay, Event::AppCall { caller, callee, txn });
    }

    /// Sends a message over the (possibly faulty) network.
    fn send(&mut self, from: Peer, to: Peer, message: &Message) {
        let mut buf = vec![0u8; wire::encoded_len(message)];
        let n = wire::encode(message, &mut buf).expect("sized buffer").len();
        buf.truncate(n);
        self.send_bytes(from, to, buf);
    }

    /// Counts one message of `len` bytes sent by `from`.
    fn count(&mut self, from: Peer, len: u64) {
        match from {
            Peer::Replica { .. } => {
                self.metrics.replica_messages += 1;
                self.metrics.replica_bytes += len;
            }
            _ => {
                self.metrics.installer_messages += 1;
                self.metrics.installer_bytes += len;
            }
        }
    }

    fn send_bytes(&mut self, from: Peer, to: Peer, bytes: Vec<u8>) {
        self.count(from, bytes.len() as u64);
        let faulty = self.faulty_network();
        let net = self.cfg.network;
        if faulty && unit(&mut self.rng) < net.drop {
            self.metrics.dropped += 1;
            return;
        }
        let copies = if faulty && unit(&mut self.rng) < net.duplicate {
            self.metrics.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let jitter =
                if faulty && net.jitter_ms > 0 { below(&mut self.rng, net.jitter_ms as usize + 1) as u64 } else { 0 };
            let at = self.now + self.cfg.latency_ms + jitter;
            self.push(at, Event::Net { from, to, bytes: bytes.clone() });
        }
    }

    /// Submits an operation to a group's ordering, over the network.
    fn submit(&mut self, origin: Peer, group: usize, op: Operation) {
        self.count(origin, wire::encoded_len(&op) as u64);
        let faulty = self.faulty_network();
        if faulty && unit(&mut self.rng) < self.cfg.network.drop {
            self.metrics.dropped += 1;
            return;
        }
        let jitter = if faulty { below(&mut self.rng, self.cfg.network.jitter_ms as usize + 1) as u64 } else { 0 };
        let at = self.now + self.cfg.latency_ms + jitter;
        self.push(at, Event::Submit { group, origin, op: Box::new(op) });
    }

    fn group_index(&self, id: GroupId) -> Option<usize> {
        (id.0 as usize).checked_sub(1).filter(|i| *i < self.groups.len())
    }

    /// Runs to the end: the fault phase, then liveness until everything
    /// finished or the deadline passed.
    pub fn run(mut self) -> Report {
        while let Some(q) = self.queue.pop() {
            if q.at > self.cfg.deadline_ms {
                break;
            }
            if self.metrics.events >= self.cfg.max_events {
                self.out_of_events = true;
                break;
            }
            self.now = q.at;
            self.metrics.events += 1;
            self.handle(q.event);
            if !self.dirty {
                continue;
            }
            self.dirty = false;
            if self.violation.is_none() {
                let to_check = core::mem::take(&mut self.to_check);
                for (ui, gi) in to_check {
                    self.check_safety(ui, gi);
                    if self.violation.is_some() {
                        break;
                    }
                }
            }
            if self.violation.is_some() {
                break;
            }
            if self.finished_at.is_none() && self.all_finished() {
                self.finished_at = Some(self.now);
            }
            if self.finished_at.is_some()
                && self.now >= self.cfg.fault_phase_ms
                && self.settled()
                && self.installers_idle()
            {
                break;
            }
        }
        self.report()
    }

    /// Whether every upgrade that can finish (not stale) has, at every
    /// correct group: runs go on to their deadline while a compromised group
    /// stalls one.
    fn settled(&self) -> bool {
        (0..self.upgrades.len()).all(|ui| !self.cfg.upgrades[ui].chained || self.tallies[ui].finished())
    }

    fn installers_idle(&self) -> bool {
        self.installers
            .iter()
            .filter(|i| !i.byzantine && !i.dead)
            .all(|i| i.role.is_done() || i.role.decided().is_none())
            && self.upgrades.iter().enumerate().all(|(ui, _)| self.tallies[ui].finished() || !self.upgrades[ui].valid)
    }

    fn handle(&mut self, event: Event) {
        self.trace_event(&event);
        if let Some(t) = self.cfg.installer_death_ms {
            if self.now >= t {
                for ui in 0..self.upgrades.len() {
                    if let Some(slot) = self.installers.iter_mut().find(|i| i.upgrade == ui && !i.byzantine) {
                        slot.dead = true;
                    }
                }
            }
        }
        let touched = if self.cfg.restart_every_event { self.touched(&event) } else { Vec::new() };
        self.dispatch(event);
        if self.cfg.restart_every_event {
            for who in touched {
                self.restart(who);
            }
        }
    }

    /// The roles an event runs, for restart-after-every-event.
    fn touched(&self, event: &Event) -> Vec<Who> {
        let group = |gi: usize| (0..self.groups[gi].replicas.len()).map(move |ri| Who::Replica(gi, ri));
        match event {
            Event::Net { to: Peer::Replica { group: g, index }, .. } => {
                self.group_index(*g).map(|gi| Who::Replica(gi, usize::from(*index))).into_iter().collect()
            }
            Event::Net { to: Peer::Group(g), .. } => self.group_index(*g).map(group).into_iter().flatten().collect(),
            Event::Net { to: Peer::Installer(id), .. } => self
                .installers
                .iter()
                .position(|i| i.role.peer() == Peer::Installer(*id))
                .map(Who::Installer)
                .into_iter()
                .collect(),
            Event::Submit { group: gi, .. } | Event::ClientCall { group: gi, .. } => group(*gi).collect(),
            Event::Timer { who } => vec![*who],
            _ => vec![],
        }
    }

    fn dispatch(&mut self, event: Event) {
        match event {
            Event::Start { upgrade } => {
                for ii in 0..self.installers.len() {
                    if self.installers[ii].upgrade == upgrade && !self.installers[ii].dead {
                        let now = Instant(self.now);
                        let mut out = Vec::new();
                        let report = self.installers[ii].role.start(now, &mut out);
                        self.route_installer(ii, report, out);
                    }
                }
            }
            Event::Net { from, to, bytes } => self.deliver(from, to, &bytes),
            Event::Submit { group, origin, op } => self.execute(group, origin, &op),
            Event::Timer { who } => self.timer(who),
            Event::Restart { who } => self.restart(who),
            Event::ClientCall { client, group } => self.client_call(client, group),
            Event::PieceToGuardian { guardian, piece, from } => {
                let slot = &mut self.guardians[guardian];
                let key = &self.material.guardian_keys[guardian];
                let mut crypto = Cached { material: &self.material, key };
                let mut out = Vec::new();
                if let Ok(faults) = slot.host.piece_with(Instant(self.now), from, &piece, &mut crypto, &mut out) {
                    self.route_guardian(guardian, &faults, out);
                }
            }
            Event::AppCall { caller, callee, txn } => {
                // MakeRequest: the caller's replicas take T_callee.
                let codes = self.take_attachment(caller, callee);
                self.txns.insert(txn, (caller, callee));
                let delay = self.cfg.latency_ms;
                self.push(self.now + delay, Event::AppRequest { caller, callee, txn, codes: Box::new(codes) });
            }
            Event::AppRequest { caller, callee, txn, codes } => {
                // ReceiveRequest at the callee, in its ordered execution.
                let from = self.groups[caller].id;
                for ri in 0..self.groups[callee].replicas.len() {
                    let report = self.groups[callee].replicas[ri].host.request(Instant(self.now), from, &codes);
                    self.route_group(callee, ri, report, None);
                }
                let back = self.take_attachment(callee, caller);
                let delay = self.cfg.latency_ms;
                self.push(self.now + delay, Event::AppResponse { caller, callee, txn, codes: Box::new(back) });
            }
            Event::AppResponse { caller, callee, txn, codes } => {
                let from = self.groups[callee].id;
                let mut restarted = false;
                for ri in 0..self.groups[caller].replicas.len() {
                    let report =
                        self.groups[caller].replicas[ri].host.response(Instant(self.now), TxnId(txn), from, &codes);
                    restarted |= report.effects.iter().any(|e| matches!(e, GroupEffect::RestartTransaction(_)));
                    self.route_group(caller, ri, report, None);
                }
                self.txns.remove(&txn);
                if restarted {
                    self.metrics.txns_restarted += 1;
                    self.txn_log.push((self.now, false));
                    // Figure 2: the transaction restarts on the new version.
                    let t = self.next_txn;
                    self.next_txn += 1;
                    self.push(self.now, Event::AppCall { caller, callee, txn: t });
                } else {
                    self.metrics.txns_completed += 1;
                    self.txn_log.push((self.now, true));
                    if let Some(every) = self.cfg.app_interval_ms {
                        if self.now < self.cfg.deadline_ms {
                            self.schedule_call(caller, every);
                        }
                    }
                }
            }
        }
    }

    /// An external client's call (section 4.3), executed in the group's
    /// order; then the linearizability check: the group's state must
    /// include every commit whose code the client carried.
    fn client_call(&mut self, client: usize, gi: usize) {
        self.metrics.client_calls += 1;
        let call = self.clients[client].call(self.groups[gi].id);
        let mut chosen = None;
        for ri in 0..self.groups[gi].replicas.len() {
            let (report, reply) = self.groups[gi].replicas[ri].host.client_call(Instant(self.now), &call);
            if chosen.is_none() && self.groups[gi].replicas[ri].byz.is_none() {
                chosen = Some(reply);
            }
            self.route_group(gi, ri, report, None);
        }
        let Some(reply) = chosen else { return };
        if self.groups[gi].correct && self.violation.is_none() {
            let g = &self.groups[gi];
            for d in call.codes.iter().filter(|d| d.outcome == Outcome::Committed) {
                let covers = self.upgrades.iter().any(|b| b.header.upgrade == d.upgrade && b.groups.contains(&gi));
                let behind = g.replicas.iter().any(|r| r.byz.is_none() && !r.finished.contains_key(&d.upgrade));
                if covers && behind {
                    self.violation = Some(Violation {
                        at_ms: self.now,
                        kind: ViolationKind::ClientOrder,
                        what: format!(
                            "client {client} saw {:?} committed, then group {:?} without it",
                            d.upgrade, g.id
                        ),
                    });
                }
            }
            if reply.version < call.seen {
                self.violation = Some(Violation {
                    at_ms: self.now,
                    kind: ViolationKind::ClientOrder,
                    what: format!("client {client} saw version {} of {:?} after {}", reply.version, g.id, call.seen),
                });
            }
        }
        if let Ok(ClientEvent::MustRefresh) = self.clients[client].on_reply(&reply) {
            self.metrics.client_refreshes += 1;
        }
        if self.now < self.cfg.deadline_ms {
            let next = below(&mut self.rng, self.groups.len());
            let at = self.now + self.cfg.client_interval_ms;
            self.push(at, Event::ClientCall { client, group: next });
        }
    }

    /// The attachment every replica of `group` takes for `to`; the correct
    /// replicas agree on it (deterministic state), so the first correct
    /// replica's is the group's.
    fn take_attachment(&mut self, group: usize, to: usize) -> Attachment {
        let to_id = self.groups[to].id;
        let mut chosen = None;
        for r in self.groups[group].replicas.iter_mut() {
            let a = r.host.attachment(to_id);
            r.host.flush(Batch::new(), &mut Vec::new()).expect("memory store");
            if chosen.is_none() && r.byz.is_none() {
                chosen = Some(a);
            }
        }
        chosen.unwrap_or_default()
    }

    fn deliver(&mut self, from: Peer, to: Peer, bytes: &[u8]) {
        let Ok(message) = wire::decode::<Message>(bytes) else {
            self.metrics.undecodable += 1;
            return;
        };
        match (to, message) {
            (Peer::Group(g), Message::Submit(op)) => {
                if let Some(gi) = self.group_index(g) {
                    self.execute(gi, from, &Operation::from(op));
                }
            }
            (Peer::Replica { group, index }, message) => {
                let Some(gi) = self.group_index(group) else { return };
                let ri = usize::from(index);
                if ri >= self.groups[gi].replicas.len() {
                    return;
                }
                let report = self.groups[gi].replicas[ri].host.message(Instant(self.now), from, &message);
                self.route_group(gi, ri, report, None);
            }
            (Peer::Guardian(id), message) => {
                let Some(k) = (id as usize).checked_sub(1).filter(|k| *k < self.guardians.len()) else { return };
                if let Some(b) = self.guardians[k].byz {
                    self.byzantine_guardian(k, b, from, &message);
                    return;
                }
                let mut out = Vec::new();
                let faults =
                    self.guardians[k].host.message(Instant(self.now), from, &message, &mut out).expect("memory store");
                self.route_guardian(k, &faults, out);
            }
            (Peer::Installer(id), Message::Answer(answer)) => {
                let Some(ii) = self.installers.iter().position(|i| i.role.peer() == Peer::Installer(id) && !i.dead)
                else {
                    return;
                };
                let mut out = Vec::new();
                let report = self.installers[ii].role.handle_answer(Instant(self.now), from, &answer, &mut out);
                if let Ok(report) = report {
                    self.route_installer(ii, report, out);
                }
            }
            _ => {}
        }
    }

    /// The ordering stand-in: every replica of the group executes `op` now,
    /// in the same order as every other operation.
    fn execute(&mut self, gi: usize, origin: Peer, op: &Operation) {
        let reject = match op {
            Operation::PrepareInstall(p) => {
                self.upgrades.iter().any(|b| b.header.upgrade == p.header.upgrade && b.rejected_by.contains(&gi))
            }
            _ => false,
        };
        for ri in 0..self.groups[gi].replicas.len() {
            let r = &mut self.groups[gi].replicas[ri];
            let verdict = if reject { Verdict::Reject } else { Verdict::Accept };
            let mut crypto = Cached { material: &self.material, key: &self.material.keys[gi][ri] };
            let report = r.host.ordered_with(Instant(self.now), origin, op, &mut crypto, |_| verdict);
            self.route_group(gi, ri, report, Some(op));
        }
    }

    fn timer(&mut self, who: Who) {
        let now = Instant(self.now);
        match who {
            Who::Replica(gi, ri) => {
                let r = &mut self.groups[gi].replicas[ri];
                r.scheduled = None;
                if r.host.deadline().is_some_and(|d| d <= now) {
                    let report = r.host.timeout(now);
                    self.route_group(gi, ri, report, None);
                } else {
                    let d = r.host.deadline();
                    self.schedule(who, d);
                }
            }
            Who::Guardian(_) => {}
            Who::Installer(ii) => {
                self.installers[ii].scheduled = None;
                if self.installers[ii].dead {
                    return;
                }
                let mut out = Vec::new();
                let report = self.installers[ii].role.handle_timeout(now, &mut out);
                self.route_installer(ii, report, out);
                // A Byzantine installer adds its own moves once per sweep.
                if self.installers[ii].byzantine && self.faulty_network() {
                    self.byzantine_installer(ii);
                }
            }
        }
    }

    fn schedule(&mut self, who: Who, deadline: Option<Instant>) {
        let Some(d) = deadline else { return };
        let slot = match who {
            Who::Replica(gi, ri) => &mut self.groups[gi].replicas[ri].scheduled,
            Who::Installer(ii) => &mut self.installers[ii].scheduled,
            Who::Guardian(_) => return,
        };
        if slot.is_some_and(|s| s <= d) {
            return;
        }
        *slot = Some(d);
        let at = d.0.max(self.now);
        self.push(at, Event::Timer { who });
    }

    /// Crash and restart from serialized state.
    fn restart(&mut self, who: Who) {
        self.metrics.restarts += 1;
        match who {
            Who::Guardian(k) => {
                // A guardian restarts from what its host wrote, and loses
                // whatever it had not.
                let slot = &mut self.guardians[k];
                let config = slot.config.clone();
                slot.host.reopen(|| SimGuardian::new(config)).expect("own state decodes");
            }
            Who::Replica(gi, ri) => {
                // A replica restarts from its host's last flush.
                let r = &mut self.groups[gi].replicas[ri];
                r.host.reopen().expect("own state decodes");
                r.scheduled = None;
                let d = r.host.deadline();
                self.schedule(who, d);
            }
            Who::Installer(ii) => {
                let slot = &mut self.installers[ii];
                if slot.dead {
                    return;
                }
                slot.role.restore();
                slot.scheduled = None;
                // A restarted installer carries on at its saved deadline.
                let d = slot.role.deadline();
                self.schedule(who, d);
            }
        }
    }

    /// Carries out a replica's step, through the adversary if Byzantine.
    /// Every role runs the real code, so every step must keep what it
    /// decided: a lost output is this crate's bug, whoever's step it is.
    fn check_lost(&mut self, lost: u32, who: impl FnOnce() -> String) {
        if lost > 0 {
            let what = format!("{}'s step lost {lost} output(s) it had decided", who());
            self.flag(ViolationKind::LostOutput, what);
        }
    }

    /// Carries out what a replica's inputs produced: the host layer
    /// writes the replica's state, then hands over its outbound items,
    /// which go through the adversary if the replica is Byzantine.
    fn route_group(&mut self, gi: usize, ri: usize, report: ReplicaReport, op: Option<&Operation>) {
        self.check_lost(report.lost, || format!("replica {ri} of group {gi}"));
        let mut out = Vec::new();
        self.groups[gi].replicas[ri].host.flush(Batch::new(), &mut out).expect("memory store");
        self.dirty |= !report.effects.is_empty()
            || out.iter().any(|o| matches!(o, Outbound::Send { message: Message::Answer(_), .. }));
        self.note_faults(&report.faults);
        let me = Peer::Replica { group: self.groups[gi].id, index: ri as u8 };
        let byz = self.groups[gi].replicas[ri].byz;
        for e in &report.effects {
            match e {
                GroupEffect::Apply { upgrade, .. } => self.note_finished(gi, ri, *upgrade, Outcome::Committed),
                GroupEffect::Discard { upgrade } => self.note_finished(gi, ri, *upgrade, Outcome::Aborted),
                _ => {}
            }
        }
        for item in out {
            let (to, message) = match item {
                Outbound::Piece { guardian, piece } => {
                    self.piece_to_guardian(me, guardian, *piece);
                    continue;
                }
                Outbound::Submit { group, op } => {
                    let Ok(small) = crate::wire::SmallOperation::try_from(*op) else { continue };
                    (Peer::Group(group), Message::Submit(small))
                }
                Outbound::Send { to, message } => (to, message),
            };
            if byz.is_none() && self.replaying {
                self.keep_genuine(&message);
            }
            if byz.is_none() {
                if let Message::Answer(a) = &message {
                    self.touch(a.upgrade, gi);
                    let entry = self.groups[gi].replicas[ri].released.entry(a.upgrade).or_default();
                    let releases = match a.reply {
                        Reply::Accepted(_) | Reply::Code(ShareKind::Secret, _) => {
                            entry.0 = true;
                            true
                        }
                        Reply::Rejected(_) | Reply::Code(ShareKind::Cancel, _) => {
                            entry.1 = true;
                            true
                        }
                        _ => false,
                    };
                    if releases {
                        self.check_chain(gi, ri, a.upgrade);
                    }
                }
            }
            match byz {
                None => self.send(me, to, &message),
                Some(b) => self.adversary(gi, ri, b, to, &message, op),
            }
        }
        let d = self.groups[gi].replicas[ri].host.deadline();
        self.schedule(Who::Replica(gi, ri), d);
    }

    fn note_faults(&mut self, faults: &Faults) {
        self.metrics.faults_reported += faults.faults.len() as u64 + u64::from(faults.dropped);
    }

    /// A replica's host sends `piece` to guardian `id`, over the lossy
    /// network.
    fn piece_to_guardian(&mut self, from: Peer, id: u32, piece: Piece) {
        let Some(k) = (id as usize).checked_sub(1).filter(|k| *k < self.guardians.len()) else { return };
        self.count(from, wire::encoded_len(&piece) as u64);
        if self.faulty_network() && unit(&mut self.rng) < self.cfg.network.drop {
            self.metrics.dropped += 1;
            return;
        }
        let at = self.now + self.cfg.latency_ms;
        self.push(at, Event::PieceToGuardian { guardian: k, piece: Box::new(piece), from });
    }

    /// A compromised replica's host sends the genuine piece of `upgrade`
    /// to every guardian of its group.
    fn forward_piece(&mut self, gi: usize, from: Peer, upgrade: UpgradeId) {
        let Some(ui) = self.upgrade_index(upgrade) else { return };
        let group = self.groups[gi].id;
        let Some(set) = self.material.guardian_sets[gi].clone() else { return };
        let Some(piece) = self.upgrades[ui].pieces.get(&group).cloned() else { return };
        for (id, _) in &set.members {
            self.piece_to_guardian(from, *id, piece.clone());
        }
    }

    /// Delivers what a guardian's host let out (after writing its state).
    fn route_guardian(&mut self, k: usize, faults: &Faults, out: Vec<Outbound>) {
        self.note_faults(faults);
        let me = Peer::Guardian(k as u32 + 1);
        for item in out {
            match item {
                Outbound::Submit { group, op } => {
                    if let Some(gi) = self.group_index(group) {
                        self.submit(me, gi, *op);
                    }
                }
                Outbound::Send { to, message } => {
                    self.note_leak(to, &message);
                    self.send(me, to, &message);
                }
                Outbound::Piece { .. } => {}
            }
        }
    }

    /// Records guardian shares that reach a Byzantine replica.
    fn note_leak(&mut self, to: Peer, message: &Message) {
        let (Peer::Replica { group, index }, Message::GuardianShare { upgrade, kind, share, .. }) = (to, message)
        else {
            return;
        };
        let Some(gi) = self.group_index(group) else { return };
        if self.groups[gi].replicas.get(usize::from(index)).is_some_and(|r| r.byz.is_some()) {
            self.dirty = true;
            self.touch(*upgrade, gi);
            let key = (*upgrade, group, *kind == ShareKind::Secret);
            self.leaked.entry(key).or_default().insert(share.index());
        }
    }

    /// A Byzantine guardian's answer to a message.
    fn byzantine_guardian(&mut self, k: usize, b: ByzantineGuardian, from: Peer, message: &Message) {
        let Message::GuardianRequest { upgrade, group, kind, .. } = message else { return };
        let me = Peer::Guardian(k as u32 + 1);
        let Some(gi) = self.group_index(*group) else { return };
        let Some(set) = &self.material.guardian_sets[gi] else { return };
        let Some(index) = set.members.iter().position(|(id, _)| *id == k as u32 + 1) else { return };
        let Some(piece) = self.upgrades.iter().find(|u| u.header.upgrade == *upgrade).and_then(|u| u.pieces.get(group))
        else {
            return;
        };
        let key = &self.material.guardian_keys[k];
        let Ok((s, c)) = (Cached { material: &self.material, key }).open_guardian(&piece.clone(), index) else {
            return;
        };
        let share = match (b, kind) {
            (ByzantineGuardian::Silent, _) => return,
            (ByzantineGuardian::LeakBoth, ShareKind::Secret) => s,
            (ByzantineGuardian::LeakBoth, ShareKind::Cancel) => c,
            (ByzantineGuardian::Forge, _) => {
                let mut y = [0u8; 32];
                self.rng.fill_bytes(&mut y);
                y[0] &= 0x7f;
                Share::new(s.index(), y)
            }
        };
        let msg = Message::GuardianShare { upgrade: *upgrade, group: *group, kind: *kind, share };
        self.send(me, from, &msg);
    }

    /// A Byzantine replica's rewrite of one outgoing message.
    fn adversary(
        &mut self,
        gi: usize,
        ri: usize,
        b: ByzantineReplica,
        to: Peer,
        message: &Message,
        op: Option<&Operation>,
    ) {
        let me = Peer::Replica { group: self.groups[gi].id, index: ri as u8 };
        let answer = match message {
            Message::Answer(a) => Some(a.clone()),
            _ => None,
        };
        // Its own two shares of the piece, if it can open its box.
        let shares = match op {
            Some(Operation::PrepareInstall(p)) => Cached { material: &self.material, key: &self.material.keys[gi][ri] }
                .open(p, ri)
                .ok()
                .map(|o| (o.secret_share, o.cancel_share)),
            _ => None,
        };
        let with = |a: &Answer, reply: Reply| Message::Answer(Answer { reply, ..a.clone() });
        if b == ByzantineReplica::Compromised {
            return self.compromised(gi, ri, to, message, op);
        }
        if ByzantineReplica::HOSTILE.contains(&b) {
            return self.hostile(gi, ri, b, to, message);
        }
        match (b, answer, shares) {
            (ByzantineReplica::Silent, _, _) | (ByzantineReplica::Compromised, _, _) => {}
            (ByzantineReplica::Garbage, _, _) => {
                let len = 1 + below(&mut self.rng, 200);
                let mut junk = vec![0u8; len];
                self.rng.fill_bytes(&mut junk);
                self.send_bytes(me, to, junk);
            }
            (ByzantineReplica::ForgeShares, Some(a), _) => {
                let forge = |rng: &mut ChaCha20Rng, s: &Share| {
                    let mut y = [0u8; 32];
                    rng.fill_bytes(&mut y);
                    y[0] &= 0x7f;
                    Share::new(s.index(), y)
                };
                let reply = match &a.reply {
                    Reply::Accepted(s) => Reply::Accepted(forge(&mut self.rng, s)),
                    Reply::Rejected(s) => Reply::Rejected(forge(&mut self.rng, s)),
                    r => r.clone(),
                };
                self.send(me, to, &with(&a, reply));
            }
            (ByzantineReplica::BothKinds, Some(a), Some((s, c))) => {
                if self.groups[gi].replicas[ri].counted_correct {
                    self.groups[gi].replicas[ri].released.insert(a.upgrade, (true, true));
                    self.dirty = true;
                    self.touch(a.upgrade, gi);
                }
                self.send(me, to, &with(&a, Reply::Accepted(s)));
                self.send(me, to, &with(&a, Reply::Rejected(c)));
            }
            (ByzantineReplica::WrongDecision, Some(a), Some((_, c))) => {
                self.send(me, to, &with(&a, Reply::Rejected(c)));
            }
            (ByzantineReplica::Equivocate, Some(a), Some((s, c))) => {
                self.send(me, to, message);
                let other = match a.reply {
                    Reply::Accepted(_) => Reply::Rejected(c),
                    _ => Reply::Accepted(s),
                };
                let peers: Vec<Peer> = self
                    .installers
                    .iter()
                    .filter(|i| self.upgrades[i.upgrade].header.upgrade == a.upgrade)
                    .map(|i| i.role.peer())
                    .filter(|p| *p != to)
                    .collect();
                for p in peers {
                    self.send(me, p, &with(&a, other.clone()));
                }
            }
            // Anything else it passes on as the honest code wrote it.
            _ => self.send(me, to, message),
        }
    }

    /// A replica of a compromised group: every kind of everything.
    fn compromised(&mut self, gi: usize, ri: usize, to: Peer, message: &Message, op: Option<&Operation>) {
        let me = Peer::Replica { group: self.groups[gi].id, index: ri as u8 };
        let group = self.groups[gi].id;
        let Some(Operation::PrepareInstall(p)) = op else {
            self.send(me, to, message);
            return;
        };
        let key = &self.material.keys[gi][ri];
        let mut crypto = Cached { material: &self.material, key };
        match &p.header.custody {
            Custody::Replicas => {
                let Ok(o) = crypto.open(p, ri) else { return };
                if let Message::Answer(a) = message {
                    for reply in [Reply::Accepted(o.secret_share.clone()), Reply::Rejected(o.cancel_share.clone())] {
                        self.send(me, to, &Message::Answer(Answer { reply, ..a.clone() }));
                    }
                }
            }
            Custody::Guardians { guardians, .. } => {
                let Ok((_, token)) = crypto.open_token(p, ri) else { return };
                let ids: Vec<u32> = guardians.iter().map(|g| g.guardian).collect();
                let upgrade = p.header.upgrade;
                if ri == 0 {
                    self.forward_piece(gi, me, upgrade);
                }
                for kind in [ShareKind::Secret, ShareKind::Cancel] {
                    for id in &ids {
                        let request =
                            Message::GuardianRequest { upgrade, group, replica: ri as u8, kind, token: token.clone() };
                        self.send(me, Peer::Guardian(*id), &request);
                    }
                }
                self.send(me, to, message);
            }
        }
    }

    fn route_installer(&mut self, ii: usize, report: InstallerReport, out: Vec<Outbound>) {
        self.check_lost(report.lost, || format!("installer {ii}"));
        self.note_faults(&report.faults);
        let me = self.installers[ii].role.peer();
        let ui = self.installers[ii].upgrade;
        let byz = self.installers[ii].byzantine;
        if !byz
            && report.effects.contains(&InstallerEffect::Decided(Outcome::Committed))
            && !self.upgrades[ui].groups.iter().all(|gi| self.rebuildable(ui, *gi).0)
        {
            // A correct installer commits only once every group released s_g.
            let what = format!(
                "installer {me:?} decided to commit {:?} before every group accepted",
                self.upgrades[ui].header.upgrade
            );
            self.flag(ViolationKind::EarlyCommit, what);
        }
        for item in out {
            match item {
                Outbound::Submit { group, op } => {
                    let Some(gi) = self.group_index(group) else { continue };
                    // A Byzantine installer floods its prepares.
                    let copies = if byz && matches!(*op, Operation::PrepareInstall(_)) { 3 } else { 1 };
                    for _ in 1..copies {
                        self.submit(me, gi, (*op).clone());
                    }
                    self.submit(me, gi, *op);
                }
                Outbound::Send { to, message } => self.send(me, to, &message),
                Outbound::Piece { .. } => {}
            }
        }
        let d = self.installers[ii].role.deadline();
        self.schedule(Who::Installer(ii), d);
    }

    /// A Byzantine installer's extra moves: wrong codes, replays of other
    /// upgrades' pieces, stray aborts and commits, and squatted pieces.
    fn byzantine_installer(&mut self, ii: usize) {
        let me = self.installers[ii].role.peer();
        let gi = below(&mut self.rng, self.groups.len());
        let ui = below(&mut self.rng, self.upgrades.len());
        let upgrade = self.upgrades[ui].header.upgrade;
        match self.rng.next_u32() % 5 {
            0 => {
                let mut junk = [0u8; 32];
                self.rng.fill_bytes(&mut junk);
                let code = Code::from_bytes(junk);
                let op = if self.rng.next_u32().is_multiple_of(2) {
                    Operation::CommitInstall { upgrade, code }
                } else {
                    Operation::AbortInstall { upgrade, code }
                };
                self.submit(me, gi, op);
            }
            1 => {
                // Replay some piece of some upgrade to its group.
                if let Some((g, p)) = self.upgrades[ui].pieces.iter().next() {
                    if let Some(target) = self.group_index(*g) {
                        let op = Operation::PrepareInstall(p.clone());
                        self.submit(me, target, op);
                    }
                }
            }
            2 => {
                // A piece sent to the wrong group.
                if let Some(p) = self.upgrades[ui].pieces.values().next() {
                    self.submit(me, gi, Operation::PrepareInstall(p.clone()));
                }
            }
            3 => self.squat(me, ui),
            _ => {}
        }
    }

    /// Upgrade-id squatting: the last authorized deployer (whose chain the
    /// workloads leave at genesis) signs, under its own name, a copy of a
    /// piece of upgrade `ui`, typically before the upgrade starts. Groups
    /// and guardians must refuse it: the id names another deployer.
    fn squat(&mut self, me: Peer, ui: usize) {
        let squatter = self.material.deployers.len() - 1;
        let (id, _) = self.material.deployers[squatter];
        let count = self.upgrades[ui].pieces.len();
        let pick = below(&mut self.rng, count);
        let Some((g, genuine)) = self.upgrades[ui].pieces.iter().nth(pick) else { return };
        if genuine.header.deployer == id {
            return;
        }
        let mut piece = genuine.clone();
        piece.header.deployer = id;
        piece.header.prev_version = self.material.genesis[squatter].clone();
        piece.signature =
            self.material.deployer_keys[squatter].sign(&piece.header.digest()).expect("a valid key signs");
        if let Some(target) = self.group_index(*g) {
            self.submit(me, target, Operation::PrepareInstall(piece));
        }
    }

    fn outcome_of(&self, ui: usize) -> Option<Outcome> {
        let b = &self.upgrades[ui];
        let mut out = None;
        for gi in &b.groups {
            let g = &self.groups[*gi];
            if !g.correct {
                continue;
            }
            for r in g.replicas.iter().filter(|r| r.byz.is_none()) {
                match r.finished.get(&b.header.upgrade) {
                    Some(o) => out = Some(*o),
                    None => return None,
                }
            }
        }
        out
    }

    fn all_finished(&self) -> bool {
        (0..self.upgrades.len()).all(|ui| !self.upgrades[ui].valid || self.tallies[ui].finished())
    }

    /// Marks upgrade `u` at group `gi` for the safety checkers.
    fn touch(&mut self, u: UpgradeId, gi: usize) {
        if let Some(ui) = self.upgrade_index(u) {
            if self.tallies[ui].member.get(gi).copied().unwrap_or(false) {
                self.to_check.insert((ui, gi));
            }
        }
    }

    fn upgrade_index(&self, u: UpgradeId) -> Option<usize> {
        self.upgrades.iter().position(|b| b.header.upgrade == u)
    }

    /// Records that replica `ri` of group `gi` finished `u` with `outcome`.
    fn note_finished(&mut self, gi: usize, ri: usize, u: UpgradeId, outcome: Outcome) {
        let r = &mut self.groups[gi].replicas[ri];
        let first = r.finished.insert(u, outcome).is_none();
        let counted = first && r.byz.is_none() && self.groups[gi].correct;
        let Some(ui) = self.upgrade_index(u) else { return };
        if !self.tallies[ui].member.get(gi).copied().unwrap_or(false) {
            return;
        }
        if counted {
            self.tallies[ui].unfinished -= 1;
        }
        if first {
            self.tallies[ui].left -= 1;
            if self.tallies[ui].left == 0 && !self.tallies[ui].compromised {
                self.retire(u);
            }
        }
        self.to_check.insert((ui, gi));
    }

    /// The host's duty once `u` finished at every replica of every group it
    /// covers: guardians forget its records (they hold at most 64, and a
    /// record that released a kind stays until retired). The durable copy
    /// is rewritten by the host layer.
    fn retire(&mut self, u: UpgradeId) {
        for slot in &mut self.guardians {
            slot.host.retire(u).expect("memory store");
        }
    }

    /// No replay (section 4.4): a correct replica releases shares only for
    /// a piece built on its deployer's current version code there.
    fn check_chain(&mut self, gi: usize, ri: usize, upgrade: UpgradeId) {
        let Some(piece) =
            self.upgrades.iter().find(|b| b.header.upgrade == upgrade).and_then(|b| b.pieces.get(&self.groups[gi].id))
        else {
            return;
        };
        let h = &piece.header;
        let current = self.groups[gi].replicas[ri].host.role().version_code(h.deployer);
        if current != Some(&h.prev_version) {
            let what = format!(
                "replica {ri} of {:?} released shares of {upgrade:?}, built on a stale version",
                self.groups[gi].id
            );
            self.flag(ViolationKind::Replay, what);
        }
    }

    /// What an adversary can rebuild at group `gi` of upgrade `ui`: (its
    /// `s_g`, hence its part of `τ`; `c`).
    ///
    /// Replica custody: shares correct replicas released, plus every share
    /// Byzantine replicas hold. Guardian custody: codes correct replicas
    /// released, or guardian shares in Byzantine hands (leaked by correct
    /// guardians to Byzantine replicas, or held by Byzantine guardians).
    /// Both only grow, so a group once found rebuildable stays so.
    fn rebuildable(&self, ui: usize, gi: usize) -> (bool, bool) {
        let u = self.upgrades[ui].header.upgrade;
        let g = &self.groups[gi];
        let released = |secret: bool| {
            g.replicas
                .iter()
                .filter(|r| r.correct())
                .any(|r| r.released.get(&u).is_some_and(|k| if secret { k.0 } else { k.1 }))
        };
        match &self.material.guardian_sets[gi] {
            None => {
                let byz = g.replicas.iter().filter(|r| r.byz.is_some()).count();
                let count = |secret: bool| {
                    g.replicas
                        .iter()
                        .filter(|r| r.byz.is_none())
                        .filter(|r| r.released.get(&u).is_some_and(|k| if secret { k.0 } else { k.1 }))
                        .count()
                        + byz
                };
                let k = usize::from(g.f) + 1;
                (count(true) >= k, count(false) >= k)
            }
            Some(set) => {
                let byz = &self.byz_guardians[gi];
                let public = |secret: bool| {
                    let leaked = self.leaked.get(&(u, g.id, secret)).map_or(0, |l| l.difference(byz).count());
                    byz.len() + leaked >= set.threshold()
                };
                (released(true) || public(true), released(false) || public(false))
            }
        }
    }

    fn flag(&mut self, kind: ViolationKind, what: String) {
        if self.violation.is_none() {
            self.violation = Some(Violation { at_ms: self.now, kind, what });
        }
    }

    /// The protocol's safety properties for upgrade `ui`, after every event that
    /// changed what it reads at group `gi`: the group's own state, then the
    /// upgrade's tallies over all groups.
    fn check_safety(&mut self, ui: usize, gi: usize) {
        let u = self.upgrades[ui].header.upgrade;
        let g = &self.groups[gi];
        let t = &mut self.tallies[ui];
        let mut kinds = (false, false);
        for (ri, r) in g.replicas.iter().enumerate().filter(|(_, r)| r.correct()) {
            match r.finished.get(&u) {
                Some(Outcome::Committed) if g.correct => t.committed = t.committed.or(Some((g.id, ri))),
                Some(Outcome::Aborted) if g.correct => t.aborted = t.aborted.or(Some((g.id, ri))),
                _ => {}
            }
            if let Some((s, c)) = r.released.get(&u) {
                kinds.0 |= *s;
                kinds.1 |= *c;
            }
        }
        if g.correct && kinds.0 && kinds.1 {
            let what = format!("correct group {:?} released both kinds of share for {u:?}", g.id);
            return self.flag(ViolationKind::BothKinds, what);
        }
        if let (Some(c), Some(a)) = (t.committed, t.aborted) {
            let what = format!("{u:?} committed at {c:?} but aborted at {a:?}");
            return self.flag(ViolationKind::SplitOutcome, what);
        }
        let (tau, c) = self.rebuildable(ui, gi);
        let t = &mut self.tallies[ui];
        if tau {
            t.tau_at.insert(gi);
        }
        if c {
            t.c_at.insert(gi);
        }
        if t.tau_at.len() == t.groups && !t.c_at.is_empty() {
            self.flag(
                ViolationKind::BothCodes,
                format!("both the trigger and the cancellation code of {u:?} can be rebuilt"),
            );
        }
    }

    /// Folds the event into the trace digest; with `--trace`-style
    /// printing on, also prints a one-line description.
    fn trace_event(&mut self, event: &Event) {
        use core::fmt::Write as _;
        use sha2::Digest as _;
        self.trace.update(self.now.to_le_bytes());
        // The line is hashed as it is formatted; a String only when printed.
        let mut out = TraceLine { hash: &mut self.trace, text: self.cfg.print_trace.then(String::new) };
        let _ = match event {
            // Message bytes are hashed as they are; pieces by their
            // signature (hashing whole headers here cost a tenth of a run).
            Event::Net { from, to, bytes } => {
                out.hash.update(bytes);
                write!(out, "net {from:?} -> {to:?} ({} bytes)", bytes.len())
            }
            Event::Submit { group, origin, op } => match &**op {
                Operation::PrepareInstall(p) => {
                    out.hash.update(p.signature.to_bytes());
                    write!(out, "order g{group} prepare {:?} from {origin:?}", p.header.upgrade)
                }
                Operation::CommitInstall { upgrade, code } | Operation::AbortInstall { upgrade, code } => {
                    out.hash.update(code.expose());
                    let kind = if matches!(**op, Operation::CommitInstall { .. }) { "commit" } else { "abort" };
                    write!(out, "order g{group} {kind} {upgrade:?} from {origin:?}")
                }
            },
            Event::AppRequest { caller, callee, txn, codes } | Event::AppResponse { caller, callee, txn, codes } => {
                write!(out, "app txn {txn} g{caller}<->g{callee} codes {}", codes.len())
            }
            other => write!(out, "{other:?}"),
        };
        if let Some(line) = out.text {
            std::println!("{:>8} ms  {line}", self.now);
        }
    }

    /// One stuck group of upgrade `ui`, for a liveness report: what its
    /// first correct replica holds, and each live correct installer's view.
    fn diagnose(&self, ui: usize, id: GroupId) -> String {
        let u = self.upgrades[ui].header.upgrade;
        let Some(gi) = self.group_index(id) else { return String::new() };
        let g = &self.groups[gi];
        let Some((ri, r)) = g.replicas.iter().enumerate().find(|(_, r)| r.byz.is_none()) else {
            return String::new();
        };
        let held = r.host.role().status(u);
        // What a prepare would answer now, on a copy.
        let answer = self.upgrades[ui].pieces.get(&id).map(|piece| {
            let mut copy = r.host.role().clone();
            let mut crypto = Cached { material: &self.material, key: &self.material.keys[gi][ri] };
            let op = Operation::PrepareInstall(piece.clone());
            let step =
                copy.handle_ordered_with(Instant(self.now), Peer::Installer(0), &op, &mut crypto, |_| Verdict::Accept);
            step.messages.iter().find_map(|m| match &m.message {
                Message::Answer(a) => Some(format!("{:?}", a.reply)),
                _ => None,
            })
        });
        let views: Vec<String> = self
            .installers
            .iter()
            .filter(|i| i.upgrade == ui && !i.byzantine && !i.dead)
            .map(|i| format!("{:?}", each!(&i.role, x => x.role().progress(id))))
            .collect();
        format!("g{}: {held:?}, a prepare now: {answer:?}, installers {}", id.0, views.join("/"))
    }

    fn report(self) -> Report {
        use sha2::Digest as _;
        let outcomes: Vec<Option<Outcome>> = (0..self.upgrades.len()).map(|ui| self.outcome_of(ui)).collect();
        let liveness = if self.violation.is_some() || self.all_finished() {
            None
        } else {
            let pending: Vec<String> = (0..self.upgrades.len())
                .filter(|ui| self.upgrades[*ui].valid && self.outcome_of(*ui).is_none())
                .map(|ui| {
                    let b = &self.upgrades[ui];
                    let stuck: Vec<u32> = b
                        .groups
                        .iter()
                        .filter(|gi| {
                            let g = &self.groups[**gi];
                            g.correct
                                && g.replicas
                                    .iter()
                                    .any(|r| r.byz.is_none() && !r.finished.contains_key(&b.header.upgrade))
                        })
                        .map(|gi| self.groups[*gi].id.0)
                        .collect();
                    let why: Vec<String> = stuck.iter().map(|g| self.diagnose(ui, GroupId(*g))).collect();
                    format!("upgrade #{ui} unfinished at groups {stuck:?} ({})", why.join(", "))
                })
                .collect();
            let cut = if self.out_of_events { " (event limit hit)" } else { "" };
            Some(format!("{}{cut}", pending.join("; ")))
        };
        let _ = (&self.upgrades.first().map(|b| (&b.trigger, &b.cancel)), &self.txns);
        let byz_replicas = self.groups.iter().flat_map(|g| &g.replicas).filter(|r| r.byz.is_some()).count();
        let byz_installers = self.installers.iter().filter(|i| i.byzantine).count();
        let byz_guardians = self.guardians.iter().filter(|g| g.byz.is_some()).count();
        let faults_injected = (byz_replicas + byz_installers + byz_guardians) as u64
            + self.metrics.restarts
            + self.metrics.dropped
            + self.metrics.duplicated;
        let start = self.cfg.upgrades.iter().map(|u| u.start_ms).min().unwrap_or(0);
        let end = self.finished_at.unwrap_or(self.now);
        let window: Vec<bool> =
            self.txn_log.iter().filter(|(t, _)| (start..=end).contains(t)).map(|(_, ok)| *ok).collect();
        let availability =
            (!window.is_empty()).then(|| window.iter().filter(|ok| **ok).count() as f64 / window.len() as f64);
        let piece_bytes =
            self.upgrades.first().and_then(|b| b.pieces.values().next()).map_or(0, wire::encoded_len) as u64;
        let mut metrics = self.metrics;
        metrics.store_writes =
            self.groups.iter().flat_map(|g| &g.replicas).map(|r| r.host.store().commits()).sum::<u64>()
                + self.guardians.iter().map(|g| g.host.store().commits()).sum::<u64>()
                + self.installers.iter().map(|i| each!(&i.role, x => x.store().commits())).sum::<u64>();
        Report {
            piece_bytes,
            availability,
            faults_injected,
            seed: self.cfg.seed,
            violation: self.violation,
            liveness,
            outcomes,
            finished_at_ms: self.finished_at,
            replicas: self.groups.iter().map(|g| g.replicas.len()).sum(),
            metrics,
            trace_digest: self.trace.finalize().into(),
        }
    }
}
