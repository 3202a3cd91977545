//! Swarm testing: each seed enables a random subset of faults at random
//! intensities, over a fixed workload.
//!
//! The workload (groups, upgrades) depends only on the [`Swarm`] shape, so
//! every seed of one shape shares its key material; the seed picks the
//! faults, the graph, the schedule and the network.

use std::sync::OnceLock;
use std::vec;
use std::vec::Vec;

use chacha20::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

use super::world::{ByzantineGuardian, ByzantineReplica, NetworkFaults, SimConfig, UpgradeSpec};

/// Which faults a swarm may enable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultMode {
    /// None: a perfect run.
    None,
    /// Loss, duplication, reordering, crashes.
    Network,
    /// Byzantine replicas (up to `f` a group), installers and guardians (up
    /// to `F` a group), plus the network faults.
    Byzantine,
    /// A compromised group (every replica Byzantine) in every run, plus the
    /// Byzantine faults. Without guardians this breaks safety, which is why
    /// guardians exist.
    Compromised,
    /// Everything; compromised groups only when guardians are on.
    All,
}

/// The shape of a swarm: what stays fixed across seeds.
#[derive(Clone, Copy, Debug)]
pub struct Swarm {
    /// Groups.
    pub groups: usize,
    /// Replicas per group.
    pub replicas: usize,
    /// Guardians per group (0: replica custody).
    pub guardians: usize,
    /// Correct installers per upgrade.
    pub installers: usize,
    /// Which faults may be enabled.
    pub faults: FaultMode,
    /// Byzantine replicas may also race, lie repeatedly, replay and mutate
    /// ([`ByzantineReplica::HOSTILE`]).
    pub hostile: bool,
    /// Each seed draws its own deployment from [`Swarm::templates`]
    /// (`groups`, `replicas` and `guardians` are then ignored), with its own
    /// call graph, installer count and flags.
    pub shapes: bool,
    /// Upgrades per run, chained on each deployer's version codes (0: the
    /// built-in workload of [`Swarm::workload`]).
    pub upgrades: usize,
}

impl Default for Swarm {
    /// The simulator's built-in deployment: 12 groups of 4 with 4 guardians
    /// each, 3 installers, every fault on.
    fn default() -> Self {
        Self {
            groups: 12,
            replicas: 4,
            guardians: 4,
            installers: 3,
            faults: FaultMode::All,
            hostile: true,
            shapes: false,
            upgrades: 0,
        }
    }
}

/// When the fault phase ends, ms.
const FAULT_PHASE_MS: u64 = 3_000;

/// Shape templates: a fixed set, so key material is built a bounded number
/// of times however many seeds run.
const TEMPLATES: usize = 32;
/// Replicas per seed at most, to keep each seed within a time bound.
const MAX_REPLICAS_PER_SEED: usize = 600;
/// Replicas times (1 + guardians per group) at most: in guardian custody
/// every replica asks every guardian, again on every retry.
const MAX_GUARDED_WORK: usize = 1_600;
/// Upgrades of the long mode (`--long`).
pub const LONG_UPGRADES: usize = 48;
/// Start spacing of successive upgrades in a chained workload, ms.
const SPACING_MS: u64 = 150;

/// A deployment shape: group sizes, guardians per group, and the workload.
#[derive(Clone, Debug)]
pub struct Template {
    /// Replicas of each group.
    pub sizes: Vec<usize>,
    /// Guardians per group (0: replica custody).
    pub guardians: usize,
    /// The upgrades.
    pub upgrades: Vec<UpgradeSpec>,
}

fn rng_for(seed: u64, tag: &[u8]) -> ChaCha20Rng {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&seed.to_le_bytes());
    s[8..8 + tag.len()].copy_from_slice(tag);
    ChaCha20Rng::from_seed(s)
}

fn below(rng: &mut ChaCha20Rng, n: usize) -> usize {
    if n == 0 {
        0
    } else {
        (rng.next_u64() % n as u64) as usize
    }
}

/// Order keys of rivals start here, after every main upgrade's.
const RIVAL_SEQ: u64 = 1 << 32;

/// `count` upgrades over `groups` groups, each deployer's chained on its
/// version codes with predictable outcomes (the material predicts each
/// chain): deployers 0 and 1 run main chains on resources of their own,
/// some rejected at one group; deployer 2 runs rivals, each conflicting
/// with the latest main upgrade at a shared group and rejected at another
/// (so it always aborts, and the main one waits behind it at most);
/// deployer 3 replays stale pieces that every group refuses.
pub fn chained_workload(groups: usize, count: usize, seed: u64) -> Vec<UpgradeSpec> {
    let mut rng = rng_for(seed ^ groups as u64, b"workload");
    let mut out: Vec<UpgradeSpec> = Vec::new();
    let mut last_main: Option<usize> = None;
    for k in 0..count {
        let seq = k as u64 + 1;
        let start_ms = k as u64 * SPACING_MS;
        let span = |rng: &mut ChaCha20Rng| -> Vec<usize> {
            if groups == 1 || rng.next_u32().is_multiple_of(3) {
                (0..groups).collect()
            } else {
                let a = below(rng, groups);
                let len = 1 + below(rng, groups);
                let mut v: Vec<usize> = (0..len).map(|i| (a + i) % groups).collect();
                v.sort_unstable();
                v
            }
        };
        let spec = match k % 8 {
            4 if last_main.is_some() => {
                let m = &out[last_main.unwrap_or(0)];
                let shared = m.groups[below(&mut rng, m.groups.len())];
                let other = (shared + 1 + below(&mut rng, groups.max(2) - 1)) % groups;
                let mut g = vec![shared, other];
                g.sort_unstable();
                g.dedup();
                let rejected = if g.len() == 1 { shared } else { other };
                UpgradeSpec {
                    groups: g,
                    resources: m.resources.clone(),
                    rejected_by: vec![rejected],
                    // Ordered after every main upgrade: at the shared group
                    // a rival can delay a later main piece (rule 4) but
                    // never get it rejected (rule 3), so the main chains'
                    // outcomes stay predictable (seed 66 of --long).
                    order_seq: RIVAL_SEQ + seq,
                    start_ms: m.start_ms + 20,
                    deployer: 2,
                    chained: true,
                    rotates: vec![],
                    resizes: vec![],
                }
            }
            7 => {
                let g = span(&mut rng);
                UpgradeSpec {
                    groups: g.into_iter().take(2).collect(),
                    resources: vec![300],
                    rejected_by: vec![],
                    order_seq: seq,
                    start_ms,
                    deployer: 3,
                    chained: false,
                    rotates: vec![],
                    resizes: vec![],
                }
            }
            _ => {
                let deployer = k % 2;
                let g = span(&mut rng);
                let rejected_by =
                    if rng.next_u32().is_multiple_of(4) { vec![g[below(&mut rng, g.len())]] } else { vec![] };
                // Some main upgrades also rotate a key at their first group.
                let rotates = if k % 8 == 2 && rejected_by.is_empty() { vec![g[0]] } else { vec![] };
                last_main = Some(out.len());
                UpgradeSpec {
                    groups: g,
                    resources: vec![100 + deployer as u32],
                    rejected_by,
                    order_seq: seq,
                    start_ms,
                    deployer,
                    chained: true,
                    rotates,
                    resizes: vec![],
                }
            }
        };
        out.push(spec);
    }
    out
}

impl Swarm {
    /// The shape swarm: every seed its own deployment, hostile replicas.
    pub fn shapes() -> Self {
        Self { shapes: true, hostile: true, ..Self::default() }
    }

    /// The long mode: [`LONG_UPGRADES`] successive upgrades per run on the
    /// built-in shape, hostile replicas.
    pub fn long() -> Self {
        Self { upgrades: LONG_UPGRADES, hostile: true, ..Self::default() }
    }

    /// The fixed set of shape templates, drawn once from a fixed seed: a
    /// few corner cases first (one replica; 64 replicas with 16 guardians;
    /// 200 groups; groups of 64), then random ones. At most
    /// `MAX_REPLICAS_PER_SEED` (600) replicas each.
    pub fn templates() -> &'static [Template] {
        static T: OnceLock<Vec<Template>> = OnceLock::new();
        T.get_or_init(|| {
            let mut rng = rng_for(0x5eed, b"shapes");
            let mut out = Vec::new();
            let fixed: [(Vec<usize>, usize); 7] = [
                (vec![1], 0),
                (vec![1], 4),
                (vec![64], 16),
                (vec![3; 200], 0),
                (vec![4; 64], 4),
                (vec![64; 9], 0),
                (vec![1, 64, 4, 7], 1),
            ];
            for (sizes, guardians) in fixed {
                out.push((sizes, guardians));
            }
            while out.len() < TEMPLATES {
                let guardians = if below(&mut rng, 5) < 2 { 0 } else { 1 + below(&mut rng, 16) };
                let total = MAX_REPLICAS_PER_SEED.min(MAX_GUARDED_WORK / (1 + guardians));
                let groups = match below(&mut rng, 10) {
                    0..=2 => 1 + below(&mut rng, 8),
                    3..=6 => 9 + below(&mut rng, 32),
                    _ => 41 + below(&mut rng, 160),
                }
                .min(total);
                let max = (total / groups).clamp(1, 64);
                let sizes: Vec<usize> = match below(&mut rng, 3) {
                    // 3f + 1 everywhere.
                    0 => vec![3 * below(&mut rng, max.div_ceil(3)) + 1; groups],
                    1 => vec![1 + below(&mut rng, max); groups],
                    _ => (0..groups).map(|_| 1 + below(&mut rng, max)).collect(),
                };
                out.push((sizes, guardians));
            }
            out.into_iter()
                .enumerate()
                .map(|(i, (sizes, guardians))| {
                    let g = sizes.len();
                    let upgrades = if i % 2 == 0 {
                        Swarm { groups: g, ..Swarm::default() }.workload()
                    } else {
                        chained_workload(g, 3 + i % 6, i as u64)
                    };
                    Template { sizes, guardians, upgrades }
                })
                .collect()
        })
    }

    /// The template seed `seed` runs in the shape swarm.
    pub fn template_of(seed: u64) -> usize {
        (rng_for(seed, b"template").next_u64() % TEMPLATES as u64) as usize
    }

    /// The workload: an upgrade all groups accept; its successor, which one
    /// group rejects; two upgrades of other deployers that conflict where
    /// they overlap; a replayed (stale) piece that every group refuses; and
    /// a membership upgrade that rotates one key at every group; two groups
    /// grown by three replicas, shrunk back, and upgraded once more.
    pub fn workload(&self) -> Vec<UpgradeSpec> {
        let g = self.groups;
        let all: Vec<usize> = (0..g).collect();
        let spec = |groups: Vec<usize>, resources: Vec<u32>, seq, deployer, start_ms| UpgradeSpec {
            groups,
            resources,
            rejected_by: vec![],
            order_seq: seq,
            start_ms,
            deployer,
            chained: true,
            rotates: vec![],
            resizes: vec![],
        };
        let mut out = vec![spec(all.clone(), vec![1], 1, 0, 0)];
        let mut second = spec(all, vec![1], 2, 0, 1_000);
        second.rejected_by = vec![g / 2];
        out.push(second);
        if g >= 2 {
            let half = g / 2 + 1;
            out.push(spec((0..half).collect(), vec![7, 8], 3, 1, 200));
            out.push(spec((g.saturating_sub(half)..g).collect(), vec![7, 9], 4, 2, 200));
            let mut stale = spec(vec![0, g - 1], vec![20], 5, 3, 500);
            stale.chained = false;
            out.push(stale);
        }
        // A membership upgrade on deployer 0's predictable chain: one key
        // rotated at every group (in replica custody), once the upgrades
        // before it there have finished.
        let mut rotation = spec((0..g).collect(), vec![30], 6, 0, 1_200);
        rotation.rotates = (0..g).collect();
        out.push(rotation);
        // Resizes: groups 0 and g/2 grow by three replicas (who join by
        // state transfer), an upgrade over every group, built for the grown
        // memberships, shrinks them back (the three leave), and one more is
        // built for the shrunk ones.
        let mut resized = vec![0, g / 2];
        resized.dedup();
        let mut grow = spec(resized.clone(), vec![31], 7, 0, 1_400);
        grow.resizes = resized.iter().map(|gi| (*gi, 3)).collect();
        out.push(grow);
        let mut shrink = spec((0..g).collect(), vec![32], 8, 0, 1_600);
        shrink.resizes = resized.iter().map(|gi| (*gi, -3)).collect();
        out.push(shrink);
        out.push(spec(resized, vec![33], 9, 0, 1_800));
        out
    }

    /// The configuration of run `seed`: the workload plus the faults the
    /// seed enables.
    pub fn config(&self, seed: u64) -> SimConfig {
        let (sizes, guardians, workload) = if self.shapes {
            let t = &Self::templates()[Self::template_of(seed)];
            (t.sizes.clone(), t.guardians, t.upgrades.clone())
        } else if self.upgrades > 0 {
            (vec![self.replicas; self.groups], self.guardians, chained_workload(self.groups, self.upgrades, 0))
        } else {
            (vec![self.replicas; self.groups], self.guardians, self.workload())
        };
        let groups = sizes.len();
        let mut cfg = SimConfig::simple(seed, groups, self.replicas);
        cfg.group_sizes = sizes.clone();
        let mut s = [0u8; 32];
        s[..8].copy_from_slice(&seed.to_le_bytes());
        s[8..13].copy_from_slice(b"swarm");
        let mut rng = ChaCha20Rng::from_seed(s);
        let coin = |rng: &mut ChaCha20Rng| rng.next_u32().is_multiple_of(2);
        let unit = |rng: &mut ChaCha20Rng| (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;

        cfg.upgrades = workload;
        cfg.installers = self.installers;
        cfg.guardians = guardians;
        cfg.finish_all = coin(&mut rng);
        cfg.proactive = !coin(&mut rng) || !cfg.finish_all;
        cfg.app_interval_ms = Some(5 + rng.next_u64() % 40);
        cfg.clients = (rng.next_u32() % 3) as usize;
        cfg.extra_edges = groups / 2;
        cfg.fault_phase_ms = FAULT_PHASE_MS;
        cfg.deadline_ms = 30_000;
        cfg.max_events = 3_000_000;

        let network = self.faults != FaultMode::None;
        let byzantine = matches!(self.faults, FaultMode::Byzantine | FaultMode::Compromised | FaultMode::All);
        if network && coin(&mut rng) {
            cfg.network = NetworkFaults {
                drop: unit(&mut rng) * 0.3,
                duplicate: unit(&mut rng) * 0.2,
                jitter_ms: rng.next_u64() % 100,
            };
        }
        cfg.crashes = network && coin(&mut rng);
        if byzantine && coin(&mut rng) {
            for (gi, n) in sizes.iter().enumerate() {
                let f = (n.saturating_sub(1) / 3) as u64;
                let count = if f == 0 { 0 } else { rng.next_u64() % (f + 1) };
                for k in 0..count {
                    let menu: &[ByzantineReplica] =
                        if self.hostile { &ByzantineReplica::EVERY } else { &ByzantineReplica::ALL };
                    let b = menu[(rng.next_u64() % menu.len() as u64) as usize];
                    // Distinct indices: k-th from a random start.
                    let start = rng.next_u64() as usize % n;
                    let ri = (start + k as usize * 7) % n;
                    if !cfg.byzantine.iter().any(|(g, r, _)| *g == gi && usize::from(*r) == ri) {
                        cfg.byzantine.push((gi, ri as u8, b));
                    }
                }
            }
        }
        if byzantine && coin(&mut rng) {
            cfg.byzantine_installers = 1 + (rng.next_u32() % 2) as usize;
        }
        if byzantine && guardians > 0 && coin(&mut rng) {
            // Group i guards with pool i..i+k; pool indices a multiple of k
            // put at most one Byzantine guardian in any group's window, and
            // F >= 1 when k >= 4.
            let k = guardians;
            let pool = groups + k - 1;
            let kinds = [ByzantineGuardian::LeakBoth, ByzantineGuardian::Forge, ByzantineGuardian::Silent];
            if (k - 1) / 3 >= 1 {
                for idx in (0..pool).step_by(k) {
                    if coin(&mut rng) {
                        cfg.byzantine_guardians.push((idx, kinds[(rng.next_u32() % 3) as usize]));
                    }
                }
            }
        }
        let compromised = match self.faults {
            FaultMode::Compromised => true,
            FaultMode::All => guardians > 0 && coin(&mut rng),
            _ => false,
        };
        // Long runs keep out compromised groups: their upgrades are never
        // retired at the guardians, which then fill up (not owed anyway).
        // Any number of guardians, 3F + 1 or more: the threshold
        // (`wire::guardian_threshold`) keeps two quorums meeting in a
        // correct guardian (with 2F + 1 kept for more, seeds 44 and 203 of
        // the shapes swarm rebuilt both codes at a compromised group).
        if compromised && groups >= 2 && self.upgrades == 0 {
            let g = rng.next_u64() as usize % groups;
            cfg.compromised = vec![g];
            cfg.byzantine.retain(|(bg, _, _)| *bg != g);
        }
        if self.shapes {
            self.shape_options(seed, &mut cfg);
        }
        if self.upgrades > 0 || self.shapes {
            self.scale_limits(&mut cfg);
        }
        cfg
    }

    /// What the shape swarm varies beyond the template, from a stream of
    /// its own (so the other modes' draws stay as they were).
    fn shape_options(&self, seed: u64, cfg: &mut SimConfig) {
        let mut rng = rng_for(seed, b"shape");
        let groups = cfg.group_sizes.len();
        cfg.tight_installers = true;
        cfg.installers = 1 + below(&mut rng, 3);
        cfg.finish_all = rng.next_u32().is_multiple_of(2);
        cfg.proactive = rng.next_u32().is_multiple_of(2);
        // Application traffic per group thins out with the group count, so
        // a seed's cost stays bounded.
        if rng.next_u32().is_multiple_of(3) {
            cfg.app_interval_ms = None;
        } else if let Some(every) = &mut cfg.app_interval_ms {
            *every *= 1 + groups as u64 / 12;
        }
        cfg.client_interval_ms *= 1 + groups as u64 / 12;
        // The call graph: a ring plus chords (as always), chords alone
        // (components), or either with isolated groups.
        let graph = below(&mut rng, 4);
        cfg.ring = graph.is_multiple_of(2);
        cfg.extra_edges = match graph {
            0 | 2 => groups / 2,
            _ => below(&mut rng, groups + 1),
        };
        if graph >= 2 && groups > 1 {
            for _ in 0..1 + below(&mut rng, 3.min(groups)) {
                let g = below(&mut rng, groups);
                if !cfg.isolated.contains(&g) {
                    cfg.isolated.push(g);
                }
            }
        }
        // Up to F Byzantine guardians in every set: pool indices whose
        // residue mod k is below the count put exactly that many in each
        // window of k.
        let k = cfg.guardians;
        let f = k.saturating_sub(1) / 3;
        if !cfg.byzantine_guardians.is_empty() && f > 1 {
            let count = 1 + below(&mut rng, f);
            let kinds = [ByzantineGuardian::LeakBoth, ByzantineGuardian::Forge, ByzantineGuardian::Silent];
            cfg.byzantine_guardians = (0..groups + k - 1)
                .filter(|i| i % k < count)
                .map(|i| (i, kinds[below(&mut rng, kinds.len())]))
                .collect();
        }
        // A third of the shapes diffuse along an overlay too (its own
        // draws). Not with guardians, whose Byzantine placement above
        // assumes ring windows; the world keeps isolated groups out of the
        // overlay, and shapes with them stay without one as first drawn.
        let mut drawn = rng_for(seed, b"overlay");
        if cfg.guardians == 0 && cfg.isolated.is_empty() && drawn.next_u32().is_multiple_of(3) {
            cfg.overlay = 2 + below(&mut drawn, 3);
        }
    }

    /// Deadlines and event limits that grow with the deployment and the
    /// workload.
    fn scale_limits(&self, cfg: &mut SimConfig) {
        let replicas: usize = cfg.group_sizes.iter().sum();
        let last = cfg.upgrades.iter().map(|u| u.start_ms).max().unwrap_or(0);
        cfg.fault_phase_ms = FAULT_PHASE_MS.max(last * 3 / 5);
        cfg.deadline_ms = if self.shapes { 20_000 } else { 30_000 } + last * 2;
        let work = (replicas.max(48) as u64) * (cfg.upgrades.len().max(5) as u64);
        cfg.max_events = (3_000_000 * work / (48 * 5)).clamp(3_000_000, 12_000_000);
    }
}
