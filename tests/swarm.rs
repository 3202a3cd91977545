//! The swarm: every fault mode over many seeds, with the checkers after
//! every event (the simulate example runs the same at scale).

use bft_upgrade::sim::{FaultMode, Swarm, World};

fn sweep(swarm: Swarm, seeds: std::ops::Range<u64>) -> (usize, usize) {
    let (mut violations, mut liveness) = (0, 0);
    for seed in seeds {
        let r = World::new(swarm.config(seed)).run();
        if let Some(v) = &r.violation {
            eprintln!("seed {seed}: {v:?}");
            violations += 1;
        }
        if let Some(l) = &r.liveness {
            eprintln!("seed {seed}: liveness: {l}");
            liveness += 1;
        }
    }
    (violations, liveness)
}

#[test]
fn default_swarm_is_safe_and_live() {
    let swarm = Swarm::default();
    assert_eq!(sweep(swarm, 0..60), (0, 0));
}

#[test]
fn replica_custody_byzantine_swarm() {
    let swarm = Swarm { guardians: 0, faults: FaultMode::Byzantine, ..Swarm::default() };
    assert_eq!(sweep(swarm, 0..60), (0, 0));
}

/// Without guardians a compromised group breaks safety, and the checker
/// says so; with guardians the same seeds are safe.
#[test]
fn compromised_needs_guardians() {
    let without = Swarm { guardians: 0, faults: FaultMode::Compromised, ..Swarm::default() };
    let (v, _) = sweep(without, 0..20);
    assert!(v > 0, "no violation found without guardians");
    let with = Swarm { guardians: 4, faults: FaultMode::Compromised, ..Swarm::default() };
    assert_eq!(sweep(with, 0..20).0, 0);
}

/// Hundreds of successive upgrades with guardians (issue 16's long runs).
/// Known to fail, at seeds 0 and 2 (re-diagnosed in issue 18's session 16):
/// the workload's pieces are built before the run, on the memberships and
/// chains the material predicts, across deployers. When a predicted key
/// rotation of a main chain has not committed by the time a rival's piece
/// arrives, the group refuses the rival for good (`WrongMembership`); the
/// rival stays released at its other group, where a main upgrade then
/// waits behind it (rule 4); later rivals chained on it are `OutOfOrder`,
/// and the cycle spreads. Guardian capacity is not the cause (the same
/// seeds fail with 1,024-record guardians). The sound remedy exists in the
/// library, the deployer's own abort on a permanent refusal
/// (`host::DeployerHost::abort`), but the simulator has no deployer that
/// reacts at run time and rebuilds later pieces from the outcome. Kept as
/// the failing test that work must turn green:
/// `cargo test --release --features std --test swarm -- --ignored`.
#[test]
#[ignore = "known liveness failure in long runs with guardians (issue 16 finding): needs a run-time deployer in the simulator"]
fn long_runs_with_guardians_stay_live() {
    let swarm = Swarm { upgrades: 300, ..Swarm::long() };
    assert_eq!(sweep(swarm, 0..4), (0, 0));
}
