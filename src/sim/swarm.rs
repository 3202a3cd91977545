//! Swarm testing: each seed enables a random subset of faults at random
//! intensities, over a fixed workload.
//!
//! The workload (groups, upgrades) depends only on the [`Swarm`] shape, so
//! every seed of one shape shares its key material; the seed picks the
//! faults, the graph, the schedule and the network.

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
}

impl Default for Swarm {
    /// The simulator's built-in deployment: 12 groups of 4 with 4 guardians
    /// each, 3 installers, every fault on.
    fn default() -> Self {
        Self { groups: 12, replicas: 4, guardians: 4, installers: 3, faults: FaultMode::All, hostile: false }
    }
}

/// When the fault phase ends, ms.
const FAULT_PHASE_MS: u64 = 3_000;

impl Swarm {
    /// The workload: an upgrade all groups accept; its successor, which one
    /// group rejects; two upgrades of other deployers that conflict where
    /// they overlap; and a replayed (stale) piece that every group refuses.
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
        out
    }

    /// The configuration of run `seed`: the workload plus the faults the
    /// seed enables.
    pub fn config(&self, seed: u64) -> SimConfig {
        let mut cfg = SimConfig::simple(seed, self.groups, self.replicas);
        let mut s = [0u8; 32];
        s[..8].copy_from_slice(&seed.to_le_bytes());
        s[8..13].copy_from_slice(b"swarm");
        let mut rng = ChaCha20Rng::from_seed(s);
        let coin = |rng: &mut ChaCha20Rng| rng.next_u32().is_multiple_of(2);
        let unit = |rng: &mut ChaCha20Rng| (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;

        cfg.upgrades = self.workload();
        cfg.installers = self.installers;
        cfg.guardians = self.guardians;
        cfg.finish_all = coin(&mut rng);
        cfg.proactive = !coin(&mut rng) || !cfg.finish_all;
        cfg.app_interval_ms = Some(5 + rng.next_u64() % 40);
        cfg.clients = (rng.next_u32() % 3) as usize;
        cfg.extra_edges = self.groups / 2;
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
            let f = (self.replicas.saturating_sub(1) / 3) as u64;
            for gi in 0..self.groups {
                let count = if f == 0 { 0 } else { rng.next_u64() % (f + 1) };
                for k in 0..count {
                    let menu: &[ByzantineReplica] =
                        if self.hostile { &ByzantineReplica::EVERY } else { &ByzantineReplica::ALL };
                    let b = menu[(rng.next_u64() % menu.len() as u64) as usize];
                    // Distinct indices: k-th from a random start.
                    let start = rng.next_u64() as usize % self.replicas;
                    let ri = (start + k as usize * 7) % self.replicas;
                    if !cfg.byzantine.iter().any(|(g, r, _)| *g == gi && usize::from(*r) == ri) {
                        cfg.byzantine.push((gi, ri as u8, b));
                    }
                }
            }
        }
        if byzantine && coin(&mut rng) {
            cfg.byzantine_installers = 1 + (rng.next_u32() % 2) as usize;
        }
        if byzantine && self.guardians > 0 && coin(&mut rng) {
            // Group i guards with pool i..i+k; pool indices a multiple of k
            // put at most one Byzantine guardian in any group's window, and
            // F >= 1 when k >= 4.
            let k = self.guardians;
            let pool = self.groups + k - 1;
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
            FaultMode::All => self.guardians > 0 && coin(&mut rng),
            _ => false,
        };
        if compromised && self.groups >= 2 {
            let g = rng.next_u64() as usize % self.groups;
            cfg.compromised = vec![g];
            cfg.byzantine.retain(|(bg, _, _)| *bg != g);
        }
        cfg
    }
}
