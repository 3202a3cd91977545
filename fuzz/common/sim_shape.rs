//! The `sim` target's input: a deployment's shape, read by `arbitrary`,
//! and the `SimConfig` it stands for (shared with `examples/sim_replay.rs`).

use arbitrary::Arbitrary;
use bft_upgrade::sim::{ByzantineGuardian, ByzantineReplica, NetworkFaults, SimConfig, UpgradeSpec};

#[derive(Arbitrary, Debug)]
pub struct Shape {
    seed: u64,
    /// Replicas per group, 1 to 7 each; 2 to 4 groups.
    sizes: [u8; 4],
    groups: u8,
    upgrades: [Upgrade; 2],
    two_upgrades: bool,
    guardians: bool,
    installers: u8,
    byzantine_installers: u8,
    finish_all: bool,
    /// (group, replica, behavior); kept only while the group has room.
    byzantine: Vec<(u8, u8, u8)>,
    /// Drop and duplicate in percent (at most 40 and 30), jitter in ms.
    drop: u8,
    duplicate: u8,
    jitter: u8,
    crashes: bool,
    restart_every_event: bool,
    app_interval: Option<u8>,
    proactive: bool,
    retry: u8,
    fault_phase: u8,
    installer_death: Option<u8>,
    clients: u8,
    /// Groups with every replica Byzantine (only with guardians).
    compromised: Vec<u8>,
    /// Byzantine guardians (only with guardians): (first, behavior), and a
    /// second one four places on, so no group has two.
    byzantine_guardians: Option<(u8, u8, Option<u8>)>,
}

#[derive(Arbitrary, Debug)]
pub struct Upgrade {
    /// Bit i: covers group i (none: group 0).
    groups: u8,
    resources: u8,
    rejected_by: u8,
    order_seq: u8,
    start: u8,
    deployer: u8,
    stale: bool,
}

const REPLICA_BEHAVIORS: [ByzantineReplica; 6] = ByzantineReplica::ALL;
const GUARDIAN_BEHAVIORS: [ByzantineGuardian; 3] =
    [ByzantineGuardian::Silent, ByzantineGuardian::LeakBoth, ByzantineGuardian::Forge];

pub fn config(s: &Shape) -> SimConfig {
    let groups = 2 + usize::from(s.groups % 3);
    let mut cfg = SimConfig::simple(s.seed, groups, 4);
    cfg.group_sizes = s.sizes[..groups].iter().map(|n| 1 + usize::from(n % 7)).collect();
    let count = if s.two_upgrades { 2 } else { 1 };
    cfg.upgrades = s.upgrades[..count]
        .iter()
        .map(|u| {
            let mut covered: Vec<usize> = (0..groups).filter(|g| u.groups & (1 << g) != 0).collect();
            if covered.is_empty() {
                covered.push(0);
            }
            UpgradeSpec {
                rejected_by: covered.iter().copied().filter(|g| u.rejected_by & (1 << g) != 0).collect(),
                groups: covered,
                resources: (0..3).filter(|r| u.resources & (1 << r) != 0).collect(),
                order_seq: u64::from(u.order_seq % 4),
                start_ms: u64::from(u.start % 4) * 50,
                deployer: usize::from(u.deployer % 2),
                chained: !u.stale,
                rotates: vec![],
                resizes: vec![],
            }
        })
        .collect();
    cfg.guardians = if s.guardians { 4 } else { 0 };
    cfg.installers = 1 + usize::from(s.installers % 2);
    cfg.byzantine_installers = usize::from(s.byzantine_installers % 2);
    cfg.finish_all = s.finish_all;
    for (g, r, b) in s.byzantine.iter().take(8) {
        let gi = usize::from(*g) % groups;
        let n = cfg.group_sizes[gi];
        let f = (n - 1) / 3;
        let ri = *r % n as u8;
        let here = cfg.byzantine.iter().filter(|(x, _, _)| *x == gi).count();
        let taken = cfg.byzantine.iter().any(|(x, y, _)| *x == gi && *y == ri);
        if here < f && !taken {
            cfg.byzantine.push((gi, ri, REPLICA_BEHAVIORS[usize::from(*b) % REPLICA_BEHAVIORS.len()]));
        }
    }
    cfg.network = NetworkFaults {
        drop: f64::from(s.drop % 41) / 100.0,
        duplicate: f64::from(s.duplicate % 31) / 100.0,
        jitter_ms: u64::from(s.jitter % 60),
    };
    cfg.crashes = s.crashes;
    cfg.restart_every_event = s.restart_every_event;
    cfg.app_interval_ms = s.app_interval.map(|a| 20 + u64::from(a % 80));
    cfg.proactive = s.proactive;
    cfg.retry_ms = 50 + u64::from(s.retry % 200);
    cfg.fault_phase_ms = u64::from(s.fault_phase) * 4;
    cfg.installer_death_ms = s.installer_death.map(|t| u64::from(t) * 4);
    cfg.clients = usize::from(s.clients % 3);
    cfg.client_interval_ms = 30;
    if s.guardians {
        for g in s.compromised.iter().take(2) {
            let gi = usize::from(*g) % groups;
            if !cfg.compromised.contains(&gi) {
                cfg.compromised.push(gi);
            }
        }
        // Group i's guardians are pool indices i..i + 4: one Byzantine
        // index, and optionally another four places on, leave at most one
        // in every group's window.
        let pool = groups + 3;
        if let Some((first, b1, second)) = s.byzantine_guardians {
            let k = usize::from(first) % pool;
            cfg.byzantine_guardians.push((k, GUARDIAN_BEHAVIORS[usize::from(b1) % 3]));
            if let Some(b2) = second {
                if k + 4 < pool {
                    cfg.byzantine_guardians.push((k + 4, GUARDIAN_BEHAVIORS[usize::from(b2) % 3]));
                }
            }
        }
    }
    // Small runs: well under a second each (tens of ms typically; at most
    // 2,000 events of about 0.05 ms, two or three times that under the
    // sanitizer). Safety is checked after every event, so a short calm
    // phase after the faults is enough.
    cfg.deadline_ms = cfg.fault_phase_ms + 600;
    cfg.max_events = 2_000;
    cfg
}
