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
/// Known to fail: at seed 2 a rival upgrade is refused `OutOfOrder` at one
/// of its groups (chained on a code that group never reached), stays
/// released at the other, and withholds a conflicting owed upgrade there
/// forever; nothing aborts it (no deployer withdraw yet). Kept as the
/// failing test the fix must turn green:
/// `cargo test --release --features std --test swarm -- --ignored`.
#[test]
#[ignore = "known liveness failure in long runs with guardians (issue 16 finding): needs the deployer's withdraw"]
fn long_runs_with_guardians_stay_live() {
    let swarm = Swarm { upgrades: 300, ..Swarm::long() };
    assert_eq!(sweep(swarm, 0..4), (0, 0));
}
