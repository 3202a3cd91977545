//! The checkers can fail: each planted bug is found by some seed within
//! 10,000 runs, as the kind of failure it must cause, and replaying that
//! seed reproduces it.
//!
//! `cargo test --release --features planted-bugs --test planted`
#![cfg(feature = "planted-bugs")]

use bft_upgrade::planted::Planted;
use bft_upgrade::sim::{FaultMode, Swarm, ViolationKind, World};

/// What a planted bug must make the checkers report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// A safety violation of this kind.
    Safety(ViolationKind),
    /// A safety violation of one of these kinds: one fault that shows in
    /// several ways, whichever checker sees it first.
    SafetyAmong(&'static [ViolationKind]),
    /// A liveness failure and no safety violation: an owed upgrade left
    /// unfinished after the heal phase.
    Liveness,
    /// A liveness failure, or, where a checker catches the cause first, a
    /// safety violation of this kind.
    LivenessOr(ViolationKind),
}

/// The first seed whose run fails as `expect` says; fails the test if a
/// run fails another way first, or no seed within 10,000 finds the bug.
fn find(swarm: Swarm, bug: Planted, expect: Expect) -> (u64, String) {
    for seed in 0..10_000u64 {
        let mut cfg = swarm.config(seed);
        cfg.planted = bug;
        let r = World::new(cfg).run();
        let found = match (expect, &r.violation, &r.liveness) {
            (Expect::Safety(kind), Some(v), _) => {
                assert_eq!(v.kind, kind, "{bug:?}: seed {seed} broke {:?}, not {kind:?}: {}", v.kind, v.what);
                v.what.clone()
            }
            (Expect::SafetyAmong(kinds), Some(v), _) => {
                assert!(
                    kinds.contains(&v.kind),
                    "{bug:?}: seed {seed} broke {:?}, not one of {kinds:?}: {}",
                    v.kind,
                    v.what
                );
                v.what.clone()
            }
            (Expect::LivenessOr(kind), Some(v), _) if v.kind == kind => v.what.clone(),
            (Expect::Liveness | Expect::LivenessOr(_), Some(v), _) => {
                panic!("{bug:?} must cost liveness; seed {seed}: {v:?}")
            }
            (Expect::Liveness | Expect::LivenessOr(_), None, Some(l)) => l.clone(),
            _ => continue,
        };
        // The bug did it: the same seed without it is clean.
        let clean = World::new(swarm.config(seed)).run();
        assert!(
            clean.violation.is_none() && clean.liveness.is_none(),
            "{bug:?}: seed {seed} fails without the bug too: {:?} {:?}",
            clean.violation,
            clean.liveness
        );
        // Replaying the seed reproduces the same run.
        let mut again = swarm.config(seed);
        again.planted = bug;
        let r2 = World::new(again).run();
        assert_eq!(r2.trace_digest, r.trace_digest, "{bug:?}: seed {seed} does not replay");
        assert_eq!(r2.violation, r.violation);
        assert_eq!(r2.liveness, r.liveness);
        return (seed, found);
    }
    panic!("{bug:?} not found in 10,000 seeds");
}

fn check(swarm: Swarm, bug: Planted, expect: Expect) {
    let (seed, what) = find(swarm, bug, expect);
    println!("{bug:?}: found by seed {seed} as {expect:?}: {}", what.chars().take(300).collect::<String>());
}

#[test]
fn replica_releasing_both_kinds() {
    check(Swarm { guardians: 0, ..Swarm::default() }, Planted::ReleasesBoth, Expect::Safety(ViolationKind::BothKinds));
}

#[test]
fn group_skipping_the_trigger_check() {
    let swarm = Swarm { guardians: 0, faults: FaultMode::Byzantine, ..Swarm::default() };
    // A group that commits on a bogus trigger splits the outcome: the split
    // checker sees it once the other groups finish, a client that called
    // the committed group and then one still without it sees it earlier.
    let split = &[ViolationKind::SplitOutcome, ViolationKind::ClientOrder];
    check(swarm, Planted::SkipTriggerCheck, Expect::SafetyAmong(split));
}

#[test]
fn group_skipping_the_version_check() {
    check(Swarm::default(), Planted::SkipVersionCheck, Expect::Safety(ViolationKind::Replay));
}

#[test]
fn installer_committing_with_a_missing_group() {
    check(Swarm::default(), Planted::CommitWithMissingGroup, Expect::Safety(ViolationKind::EarlyCommit));
}

#[test]
fn guardian_forgetting_its_release() {
    let swarm = Swarm { faults: FaultMode::Compromised, ..Swarm::default() };
    check(swarm, Planted::GuardianForgets, Expect::Safety(ViolationKind::BothCodes));
}

#[test]
fn figure3_without_postponement() {
    let swarm = Swarm { guardians: 0, faults: FaultMode::Network, ..Swarm::default() };
    check(swarm, Planted::NoPostponement, Expect::Safety(ViolationKind::BothKinds));
}

/// Class 1: candidate poisoning. Counting every value a replica sends lets
/// one racing or duplicating replica make `f + 1` for a bogus `s_g`, or
/// overflow the `2f` entries the pool budgets for the group.
#[test]
fn installer_counting_every_value() {
    let expect = Expect::LivenessOr(ViolationKind::LostOutput);
    check(Swarm { hostile: true, ..Swarm::default() }, Planted::VotesPerMessage, expect);
}

/// Class 2: share-pool starvation, at the smallest pools deployments
/// declare.
#[test]
fn installer_pool_under_budget() {
    check(Swarm::shapes(), Planted::PoolHalfBudget, Expect::Liveness);
}

/// Class 3: upgrade-id squatting by another authorized deployer. In
/// guardian custody the group holds the squatted piece, which no guardian
/// takes, so the genuine upgrade is stuck behind it there (and its chain's
/// later upgrades too): a liveness failure. In replica custody the group
/// releases shares of the squatted upgrade off its deployer's chain, which
/// the replay checker catches first.
#[test]
fn group_taking_a_squatted_upgrade_id() {
    check(Swarm::long(), Planted::SquattableIds, Expect::LivenessOr(ViolationKind::Replay));
}

/// Class 4: "done" after one group, with groups diffusion cannot reach.
#[test]
fn installer_done_after_one_group() {
    check(Swarm::shapes(), Planted::DoneAfterOneGroup, Expect::Liveness);
}

/// Class 5: outputs lost past a full step instead of kept due.
#[test]
fn installer_sweep_ignoring_room() {
    check(Swarm::default(), Planted::SweepIgnoresRoom, Expect::Safety(ViolationKind::LostOutput));
}

/// Issue 15's checker: one replica's replicated state drifting from its
/// peers' (here its version) is caught right after the operation.
#[test]
fn replica_diverging_from_its_group() {
    check(Swarm::default(), Planted::DivergentVersion, Expect::Safety(ViolationKind::Diverged));
}

/// A replica that keeps its old membership when a membership upgrade
/// commits has diverged from its group.
#[test]
fn replica_ignoring_a_membership_change() {
    let swarm = Swarm { guardians: 0, ..Swarm::default() };
    check(swarm, Planted::MembershipIgnored, Expect::Safety(ViolationKind::Diverged));
}

/// A replicated state that cannot be installed leaves a wiped replica
/// unable to rejoin: the state-transfer checker says so.
#[test]
fn state_transfer_from_a_broken_source() {
    check(Swarm::default(), Planted::TransferShapeLost, Expect::Safety(ViolationKind::StateTransfer));
}

/// Without a planted bug, the same swarms are clean on the first seeds.
#[test]
fn no_bug_no_violation() {
    for swarm in
        [Swarm::default(), Swarm { guardians: 0, faults: FaultMode::Byzantine, ..Swarm::default() }, Swarm::shapes()]
    {
        for seed in 0..10 {
            let r = World::new(swarm.config(seed)).run();
            assert!(r.violation.is_none() && r.liveness.is_none(), "seed {seed}: {:?} {:?}", r.violation, r.liveness);
        }
    }
}
