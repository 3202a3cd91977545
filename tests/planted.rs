//! The checkers can fail: each planted bug is found by some seed within
//! 10,000 runs, and replaying that seed reproduces it.
//!
//! `cargo test --release --features planted-bugs --test planted`
#![cfg(feature = "planted-bugs")]

use bft_upgrade::planted::Planted;
use bft_upgrade::sim::{FaultMode, Swarm, World};

/// The first seed whose run the checkers flag, and what they said.
fn find(swarm: Swarm, bug: Planted) -> (u64, String) {
    for seed in 0..10_000u64 {
        let mut cfg = swarm.config(seed);
        cfg.planted = bug;
        let r = World::new(cfg).run();
        if let Some(v) = r.violation {
            // Replaying the seed reproduces the same violation.
            let mut again = swarm.config(seed);
            again.planted = bug;
            let r2 = World::new(again).run();
            assert_eq!(r2.violation.as_ref(), Some(&v), "{bug:?}: seed {seed} does not replay");
            assert_eq!(r2.trace_digest, r.trace_digest);
            return (seed, v.what);
        }
    }
    panic!("{bug:?} not found in 10,000 seeds");
}

fn check(swarm: Swarm, bug: Planted) {
    let (seed, what) = find(swarm, bug);
    println!("{bug:?}: found by seed {seed}: {what}");
}

#[test]
fn replica_releasing_both_kinds() {
    check(Swarm { guardians: 0, ..Swarm::default() }, Planted::ReleasesBoth);
}

#[test]
fn group_skipping_the_trigger_check() {
    check(Swarm { guardians: 0, faults: FaultMode::Byzantine, ..Swarm::default() }, Planted::SkipTriggerCheck);
}

#[test]
fn group_skipping_the_version_check() {
    check(Swarm::default(), Planted::SkipVersionCheck);
}

#[test]
fn installer_committing_with_a_missing_group() {
    check(Swarm::default(), Planted::CommitWithMissingGroup);
}

#[test]
fn guardian_forgetting_its_release() {
    check(Swarm { faults: FaultMode::Compromised, ..Swarm::default() }, Planted::GuardianForgets);
}

#[test]
fn figure3_without_postponement() {
    check(Swarm { guardians: 0, faults: FaultMode::Network, ..Swarm::default() }, Planted::NoPostponement);
}

/// Without a planted bug, the same swarms are clean on the first seeds.
#[test]
fn no_bug_no_violation() {
    for swarm in [Swarm::default(), Swarm { guardians: 0, faults: FaultMode::Byzantine, ..Swarm::default() }] {
        for seed in 0..10 {
            assert!(World::new(swarm.config(seed)).run().violation.is_none());
        }
    }
}
