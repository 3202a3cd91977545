//! What a simulated deployment is made of: its shape, its faults, its
//! workload.

#[allow(clippy::wildcard_imports)]
use super::*;

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
    /// Groups (of `groups`) where it also rotates one replica's key: a
    /// membership upgrade. Upgrades over such a group start only once the
    /// ones before them there have finished (as a careful deployer does), so
    /// no piece crosses the change.
    pub rotates: Vec<usize>,
    /// Groups (of `groups`) whose membership it resizes, by a number of
    /// replicas: fresh keys appended at the end (they join by state
    /// transfer once it commits), or the last replicas dropped (they
    /// leave). Never below the group's first size, so the Byzantine
    /// replicas a run places (within the first membership's `f`) stay
    /// within `f`. Gated like [`rotates`](Self::rotates).
    pub resizes: Vec<(usize, i8)>,
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
    /// Out-degree of the diffusion overlay ([`crate::overlay`]) added to
    /// every group's neighbors (not to its calls), and along which guardians
    /// are shared; 0: none, neighbors are the call graph and group `i`
    /// shares guardians with groups `i ± 1..`.
    pub overlay: usize,
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
                rotates: vec![],
                resizes: vec![],
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
            overlay: 0,
            isolated: vec![],
            tight_installers: false,
        }
    }
}
