//! The world: the event loop and the roles' state (configuration in
//! `config`, routing in `route`, the adversary in `adversary` and
//! `hostile`, the checkers and the report in `check`).

mod adversary;
mod check;
mod config;
mod hostile;
mod route;
mod transfer;

pub use check::{Metrics, Report, Violation, ViolationKind};
pub use config::{ByzantineGuardian, ByzantineReplica, NetworkFaults, SimConfig, UpgradeSpec};

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
    self, Answer, Attachment, Finish, GroupId, Membership, Message, Operation, Outcome, Piece, Reply, UpgradeHeader,
    UpgradeId,
};
use std::sync::Arc;

/// The installer type the simulator runs, in the smallest size that holds
/// the upgrade's groups.
pub enum SimInstaller {
    /// Up to 64 groups, 512 pooled shares: the crate's `DefaultInstaller`,
    /// the smallest size; runs with `tight_installers` use it when it fits.
    Tiny(SimInstallerHost<64, 512>),
    /// Up to 256 groups.
    Small(SimInstallerHost<256, 4096>),
    /// Up to 16,384 groups (the scaling runs).
    Large(SimInstallerHost<16384, 32768>),
    /// Up to 262,144 groups of up to 4 replicas (the 250,000-group runs).
    Huge(SimInstallerHost<262_144, 524_288>),
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
            SimInstaller::Huge($i) => $e,
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
        } else if groups.len() <= 16_384 && need <= 32_768 {
            Self::Large(hosted(id, bundle, options))
        } else {
            Self::Huge(hosted(id, bundle, options))
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
    fn progress(&self, group: GroupId) -> Option<crate::installer::GroupProgress> {
        each!(self, i => i.role().progress(group))
    }
    fn store_writes(&self) -> u64 {
        each!(self, i => i.store().commits())
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
    /// Wiped: its store is gone and it takes no input until it rejoins by
    /// state transfer.
    down: bool,
    /// Not in the group's membership: a slot a resize has not filled yet,
    /// or a replica a resize dropped (both also `down`). The checkers owe
    /// it nothing and count it in no fault budget.
    gone: bool,
    /// A slot a resize just filled: the `f` of the membership that admitted
    /// it. Its replica catches up from that membership's members (as
    /// joiners do in reconfiguration), which vouch with `f + 1` of theirs.
    joining: Option<u8>,
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
            let present = || g.replicas.iter().filter(|r| !r.gone);
            left += present().count();
            compromised |= g.replicas.iter().all(|r| r.byz == Some(ByzantineReplica::Compromised));
            if g.correct {
                unfinished += present().filter(|r| r.byz.is_none()).count();
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
    pieces: BTreeMap<GroupId, Arc<Piece>>,
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
    /// A correct replica loses its store (at most `f` a group at a time,
    /// counted with its Byzantine replicas).
    Wipe { group: usize, replica: usize },
    /// The wiped replica rejoins by state transfer from `f + 1` peers.
    Rejoin { group: usize, replica: usize },
    /// An external client calls a group.
    ClientCall { client: usize, group: usize },
    /// A replica's host hands a piece to a guardian.
    PieceToGuardian { guardian: usize, piece: Arc<Piece>, from: Peer },
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
    /// Per group and replica index: which of the group's material keys the
    /// replica holds now (a key rotation moves it on).
    key_at: Vec<Vec<usize>>,
    /// Per upgrade: (upgrade, group) pairs that must have finished at the
    /// group's correct replicas before its installers start (no piece
    /// crosses a change of membership).
    gates: Vec<Vec<(usize, usize)>>,
    /// Per upgrade: whether its installers started (its bundle is out).
    started: Vec<bool>,
}

struct GuardianSlot {
    /// The guardian, through the host layer, over an in-memory store.
    host: SimGuardianHost,
    config: GuardianConfig,
    byz: Option<ByzantineGuardian>,
}

/// Records of the small guardian: a world whose guardians each guard at
/// most this many (upgrade, group) pairs runs them at this size (a
/// million-replica world has a quarter of a million of them).
const SMALL_GUARDIAN: usize = 8;

/// Records of the large guardian, for every other world.
const LARGE_GUARDIAN: usize = 64;

/// A guardian as the simulator hosts it, at the smallest size that holds
/// the records its world can give it.
enum SimGuardianHost {
    // Both boxed: a slot would be the size of its largest variant.
    Small(Box<GuardianHost<MemStore, SMALL_GUARDIAN>>),
    Large(Box<GuardianHost<MemStore, LARGE_GUARDIAN>>),
}

/// Calls the same method on either size.
macro_rules! each_guardian {
    ($self:expr, $h:ident => $e:expr) => {
        match $self {
            SimGuardianHost::Small($h) => $e,
            SimGuardianHost::Large($h) => $e,
        }
    };
}

impl SimGuardianHost {
    /// A fresh guardian for `config`, sized for `records` (upgrade, group)
    /// pairs.
    fn open(config: &GuardianConfig, records: usize) -> Self {
        if records <= SMALL_GUARDIAN {
            Self::Small(Box::new(
                GuardianHost::open(MemStore::default(), || Guardian::new(config.clone())).expect("memory store"),
            ))
        } else {
            Self::Large(Box::new(
                GuardianHost::open(MemStore::default(), || Guardian::new(config.clone())).expect("memory store"),
            ))
        }
    }
    /// Crash and restart from what the host wrote.
    fn reopen(&mut self, config: GuardianConfig) {
        each_guardian!(self, h => h.reopen(|| Guardian::new(config)).expect("own state decodes"));
    }
    #[cfg(feature = "planted-bugs")]
    fn plant(&mut self, bug: crate::planted::Planted) {
        each_guardian!(self, h => h.plant(bug));
    }
    fn piece_with(
        &mut self,
        now: Instant,
        from: Peer,
        piece: &Piece,
        crypto: &mut impl crate::wire::PieceCrypto,
        out: &mut Vec<Outbound>,
    ) -> crate::host::GuardianReport {
        each_guardian!(self, h => h.piece_with(now, from, piece, crypto, out).expect("memory store"))
    }
    fn message(
        &mut self,
        now: Instant,
        from: Peer,
        message: &Message,
        out: &mut Vec<Outbound>,
    ) -> crate::host::GuardianReport {
        each_guardian!(self, h => h.message(now, from, message, out).expect("memory store"))
    }
    fn follow(&mut self, group: GroupId, members: crate::crypto::Digest) {
        each_guardian!(self, h => h.follow(group, members).expect("memory store"));
    }
    fn retirement(
        &mut self,
        now: Instant,
        from: Peer,
        retirement: &crate::wire::Retirement,
    ) -> crate::host::GuardianReport {
        each_guardian!(self, h => h.retirement(now, from, retirement).expect("memory store"))
    }
    fn commits(&self) -> u64 {
        each_guardian!(self, h => h.store().commits())
    }
    fn config(&self) -> &GuardianConfig {
        each_guardian!(self, h => h.role().config())
    }
    fn holds(&self, upgrade: UpgradeId, group: GroupId) -> bool {
        each_guardian!(self, h => h.role().holds(upgrade, group))
    }
    fn released(&self, upgrade: UpgradeId, group: GroupId) -> Option<crate::crypto::ShareKind> {
        each_guardian!(self, h => h.role().released(upgrade, group))
    }
}

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

        let material = Material::get(cfg.material_seed, &cfg.group_sizes, &cfg.upgrades, cfg.guardians, cfg.overlay);

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
                sequencer: None,
            };
            for ((id, key), gen) in material.deployers.iter().zip(&material.genesis) {
                let _ = config.deployers.push(AuthorizedDeployer { id: *id, key: *key, genesis: gen.clone() });
            }
            // Calls go to the call graph's neighbors; codes also follow
            // the overlay, as far as the capacity allows, except to and
            // from isolated groups (no neighbors at all, as above).
            let isolated = |k: &usize| cfg.isolated.contains(k);
            let overlay = crate::overlay::targets(gi, g, if isolated(&gi) { 0 } else { cfg.overlay })
                .filter(|t| !neighbors[gi].contains(t) && !isolated(t));
            for nb in neighbors[gi].iter().copied().chain(overlay) {
                let _ = config.neighbors.push(Neighbor { group: memberships[nb].group, f: memberships[nb].f });
            }
            let f = membership.f;
            let mut byz_here: Vec<(usize, u8, ByzantineReplica)> =
                cfg.byzantine.iter().filter(|(bg, _, _)| *bg == gi).copied().collect();
            // Slots past the first membership wait, gone, for a resize to
            // bring their replica in (by state transfer).
            let slots = material.slots[gi];
            if cfg.compromised.contains(&gi) {
                byz_here = (0..slots).map(|ri| (gi, ri as u8, ByzantineReplica::Compromised)).collect();
            }
            let correct = byz_here.iter().filter(|(_, r, _)| usize::from(*r) < n).count() <= usize::from(f);
            let replicas = (0..slots)
                .map(|ri| Replica {
                    // A slot not yet in the membership holds replica 0's
                    // start until it joins (it takes no input meanwhile).
                    host: ReplicaHost::open(MemStore::default(), || {
                        GroupReplica::new(config.clone(), if ri < n { ri as u8 } else { 0 })
                    })
                    .expect("valid config"),
                    byz: byz_here.iter().find(|(_, r, _)| usize::from(*r) == ri).map(|(_, _, b)| *b),
                    released: BTreeMap::new(),
                    finished: BTreeMap::new(),
                    scheduled: None,
                    counted_correct: false,
                    down: ri >= n,
                    gone: ri >= n,
                    joining: None,
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
                // A record per (upgrade, group) it guards, at most.
                let host = SimGuardianHost::open(&config, config.groups.len().saturating_mul(cfg.upgrades.len()));
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
        // Nor to one chained, at some group, on an upgrade owed nothing: its
        // piece there waits for an outcome that may never come.
        for ui in 0..upgrades.len() {
            let spec = &cfg.upgrades[ui];
            let behind = spec.chained
                && spec.groups.iter().any(|g| {
                    (0..ui)
                        .rev()
                        .find(|&p| {
                            let before = &cfg.upgrades[p];
                            before.chained && before.deployer == spec.deployer && before.groups.contains(g)
                        })
                        .is_some_and(|p| !upgrades[p].valid)
                });
            if behind {
                upgrades[ui].valid = false;
            }
        }

        // Installers: correct ones first, then Byzantine ones.
        let mut installers = Vec::new();
        let mut next_id = 1u32;
        for (ui, b) in upgrades.iter().enumerate() {
            // Each group's `f` as its piece was built (a resize changes it).
            let f_of = |gi: usize| b.pieces.get(&memberships[gi].group).map_or(memberships[gi].f, |p| p.header.f);
            let list: Vec<(GroupId, u8)> = b.groups.iter().map(|gi| (memberships[*gi].group, f_of(*gi))).collect();
            let mut list = list;
            list.sort();
            list.dedup();
            let bundle = Bundle {
                header: b.header.clone(),
                groups: list,
                pieces: b.pieces.values().map(|p| (**p).clone()).collect(),
            };
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

        let gates = transfer::gates(&cfg.upgrades, &material.rotations, &mut upgrades);
        let key_at = built_groups
            .iter()
            .map(|g| (0..g.replicas.len()).map(|ri| if g.replicas[ri].gone { 0 } else { ri }).collect())
            .collect();
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
            key_at,
            started: vec![false; gates.len()],
            gates,
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
                // A third of the replica crashes lose the disk as well.
                let event = match who {
                    Who::Replica(group, replica) if world.rng.next_u32().is_multiple_of(3) => {
                        Event::Wipe { group, replica }
                    }
                    _ => Event::Restart { who },
                };
                world.push(at, event);
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
            | Planted::SquattableIds
            | Planted::DivergentVersion
            | Planted::MembershipIgnored
            | Planted::TransferShapeLost => {
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
                if !self.gate_open(upgrade) {
                    if self.now < self.cfg.deadline_ms {
                        self.push(self.now + transfer::GATE_RETRY_MS, Event::Start { upgrade });
                    }
                    return;
                }
                self.started[upgrade] = true;
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
            Event::Wipe { group, replica } => self.wipe(group, replica),
            Event::Rejoin { group, replica } => self.rejoin(group, replica),
            Event::ClientCall { client, group } => self.client_call(client, group),
            Event::PieceToGuardian { guardian, piece, from } => {
                let slot = &mut self.guardians[guardian];
                let key = &self.material.guardian_keys[guardian];
                let mut crypto = Cached { material: &self.material, key };
                let mut out = Vec::new();
                let report = slot.host.piece_with(Instant(self.now), from, &piece, &mut crypto, &mut out);
                self.route_guardian(guardian, &report.faults, out);
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
                let mut changed = false;
                for ri in 0..self.groups[callee].replicas.len() {
                    if self.groups[callee].replicas[ri].down {
                        continue;
                    }
                    let report = self.groups[callee].replicas[ri].host.request(Instant(self.now), from, &codes);
                    changed |= !report.effects.is_empty();
                    self.route_group(callee, ri, report, None);
                }
                // A piggyback changes a replica only by finishing, which is
                // an effect (`GroupReplica::on_request`); the next check
                // would see any other change.
                if changed {
                    self.check_replicated(callee);
                }
                let back = self.take_attachment(callee, caller);
                let delay = self.cfg.latency_ms;
                self.push(self.now + delay, Event::AppResponse { caller, callee, txn, codes: Box::new(back) });
            }
            Event::AppResponse { caller, callee, txn, codes } => {
                let from = self.groups[callee].id;
                let mut restarted = false;
                let mut changed = false;
                for ri in 0..self.groups[caller].replicas.len() {
                    if self.groups[caller].replicas[ri].down {
                        continue;
                    }
                    let report =
                        self.groups[caller].replicas[ri].host.response(Instant(self.now), TxnId(txn), from, &codes);
                    restarted |= report.effects.iter().any(|e| matches!(e, GroupEffect::RestartTransaction(_)));
                    changed |= !report.effects.is_empty();
                    self.route_group(caller, ri, report, None);
                }
                if changed {
                    self.check_replicated(caller);
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
        let mut changed = false;
        for ri in 0..self.groups[gi].replicas.len() {
            if self.groups[gi].replicas[ri].down {
                continue;
            }
            let (report, reply) = self.groups[gi].replicas[ri].host.client_call(Instant(self.now), &call);
            if chosen.is_none() && self.groups[gi].replicas[ri].byz.is_none() {
                chosen = Some(reply);
            }
            changed |= !report.effects.is_empty();
            self.route_group(gi, ri, report, None);
        }
        if changed {
            self.check_replicated(gi);
        }
        let Some(reply) = chosen else { return };
        if self.groups[gi].correct && self.violation.is_none() {
            let g = &self.groups[gi];
            for d in call.codes.iter().filter(|d| d.outcome == Outcome::Committed) {
                let covers = self.upgrades.iter().any(|b| b.header.upgrade == d.upgrade && b.groups.contains(&gi));
                let behind =
                    g.replicas.iter().any(|r| r.byz.is_none() && !r.down && !r.finished.contains_key(&d.upgrade));
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
        let mut changed = false;
        for r in self.groups[group].replicas.iter_mut().filter(|r| !r.down) {
            let a = r.host.attachment(to_id);
            r.host.flush(Batch::new(), &mut Vec::new()).expect("memory store");
            // Taking an empty attachment changes nothing.
            changed |= !a.is_empty();
            if chosen.is_none() && r.byz.is_none() {
                chosen = Some(a);
            }
        }
        if changed {
            self.check_replicated(group);
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
                if self.groups[gi].replicas.get(ri).is_none_or(|r| r.down) {
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
                let report = self.guardians[k].host.message(Instant(self.now), from, &message, &mut out);
                self.route_guardian(k, &report.faults, out);
            }
            (Peer::Installer(id), Message::Answer(answer)) => {
                let Some(ii) = self.installers.iter().position(|i| i.role.peer() == Peer::Installer(id) && !i.dead)
                else {
                    return;
                };
                // Nobody runs an installer before its upgrade starts.
                if !self.started[self.installers[ii].upgrade] {
                    return;
                }
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
            if r.down {
                continue;
            }
            let verdict = if reject { Verdict::Reject } else { Verdict::Accept };
            let mut crypto = Cached { material: &self.material, key: &self.material.keys[gi][self.key_at[gi][ri]] };
            let report = r.host.ordered_with(Instant(self.now), origin, op, &mut crypto, |_| verdict);
            self.route_group(gi, ri, report, Some(op));
        }
        self.check_replicated(gi);
    }

    fn timer(&mut self, who: Who) {
        let now = Instant(self.now);
        match who {
            Who::Replica(gi, ri) => {
                let r = &mut self.groups[gi].replicas[ri];
                r.scheduled = None;
                if r.down {
                    return;
                }
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
                slot.host.reopen(slot.config.clone());
            }
            Who::Replica(gi, ri) => {
                // A replica restarts from its host's last flush.
                let r = &mut self.groups[gi].replicas[ri];
                if r.down {
                    return;
                }
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
                // A restarted installer carries on at its saved deadline;
                // one whose upgrade has not started waits for its start.
                let d = if self.started[slot.upgrade] { slot.role.deadline() } else { None };
                self.schedule(who, d);
            }
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
                Operation::Finish(Finish { upgrade, outcome, code }) => {
                    out.hash.update(code.expose());
                    let kind = if *outcome == Outcome::Committed { "commit" } else { "abort" };
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
}
