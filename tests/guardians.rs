//! Guardians (paper section 5, PROTOCOL.md section 7) in whole deployments.

use bft_upgrade::sim::{ByzantineGuardian, ByzantineReplica, NetworkFaults, Report, SimConfig, World};
use bft_upgrade::wire::Outcome;

fn guarded(seed: u64, groups: usize, guardians: usize) -> SimConfig {
    let mut cfg = SimConfig::simple(seed, groups, 4);
    cfg.guardians = guardians;
    cfg
}

fn run(cfg: SimConfig) -> Report {
    let seed = cfg.seed;
    let r = World::new(cfg).run();
    assert!(r.violation.is_none(), "seed {seed}: {:?}", r.violation);
    assert!(r.liveness.is_none(), "seed {seed}: {:?}", r.liveness);
    r
}

#[test]
fn guardian_custody_commits_and_aborts() {
    let r = run(guarded(1, 4, 4));
    assert_eq!(r.outcomes, vec![Some(Outcome::Committed)]);
    let mut cfg = guarded(2, 4, 4);
    cfg.upgrades[0].rejected_by = vec![2];
    assert_eq!(run(cfg).outcomes, vec![Some(Outcome::Aborted)]);
}

#[test]
fn guardians_with_faults() {
    for seed in 0..20u64 {
        let mut cfg = guarded(seed, 5, 4);
        cfg.installers = 2;
        cfg.network = NetworkFaults { drop: 0.2, duplicate: 0.1, jitter_ms: 40 };
        cfg.fault_phase_ms = 3_000;
        cfg.byzantine = vec![(0, 1, ByzantineReplica::Garbage), (2, 3, ByzantineReplica::ForgeShares)];
        cfg.byzantine_guardians = vec![(1, ByzantineGuardian::LeakBoth), (5, ByzantineGuardian::Forge)];
        cfg.crashes = true;
        if seed % 2 == 0 {
            cfg.upgrades[0].rejected_by = vec![3];
        }
        run(cfg);
    }
}

/// A compromised group (every replica Byzantine: asks for both kinds,
/// forges, replays) with up to F Byzantine guardians per group can never
/// make correct groups disagree, over 1,000 seeds.
#[test]
fn compromised_group_cannot_split_with_guardians() {
    let mut finished = 0;
    for seed in 0..1000u64 {
        let mut cfg = guarded(seed, 4, 4);
        cfg.compromised = vec![(seed % 4) as usize];
        // Pool indices 0, 4, ...: every group's window of 4 holds one.
        cfg.byzantine_guardians = vec![(
            0,
            [ByzantineGuardian::LeakBoth, ByzantineGuardian::Forge, ByzantineGuardian::Silent][seed as usize % 3],
        )];
        cfg.byzantine_guardians.push((4, ByzantineGuardian::LeakBoth));
        cfg.byzantine_installers = 1;
        cfg.network = NetworkFaults { drop: 0.05, duplicate: 0.1, jitter_ms: 20 };
        cfg.fault_phase_ms = 500;
        cfg.deadline_ms = 5_000;
        if seed % 3 == 0 {
            cfg.upgrades[0].rejected_by = vec![((seed / 3) % 4) as usize];
        }
        let r = World::new(cfg).run();
        assert!(r.violation.is_none(), "seed {seed}: {:?}", r.violation);
        finished += usize::from(r.outcomes[0].is_some());
    }
    println!("finished at every correct group in {finished} of 1000 runs");
}

/// The same scenario without guardians breaks safety: a compromised group
/// releases both kinds, so both codes can be rebuilt. The check can fail.
#[test]
fn compromised_group_splits_without_guardians() {
    let mut found = 0;
    for seed in 0..20u64 {
        let mut cfg = SimConfig::simple(seed, 4, 4);
        cfg.compromised = vec![(seed % 4) as usize];
        cfg.deadline_ms = 5_000;
        let r = World::new(cfg).run();
        found += usize::from(r.violation.is_some());
    }
    assert_eq!(found, 20, "every run without guardians must be caught");
}

/// Section 7's hardening: one faulty replica of a correct group asking for
/// the c shares first does not make the guardians release them, and the
/// upgrade still commits.
#[test]
fn one_faulty_replica_cannot_force_an_abort() {
    for seed in 0..50u64 {
        let mut cfg = guarded(seed, 4, 4);
        // Replica 0 of every group asks for both kinds at once.
        cfg.byzantine = (0..4).map(|g| (g, 0u8, ByzantineReplica::Compromised)).collect();
        let r = run(cfg);
        assert_eq!(r.outcomes, vec![Some(Outcome::Committed)], "seed {seed}");
    }
}

/// Guardian crashes at any point: restored from what was durably written,
/// never both kinds (checked after every event by the simulator).
#[test]
fn guardian_crashes_keep_one_kind() {
    for seed in 0..100u64 {
        let mut cfg = guarded(seed, 4, 4);
        cfg.crashes = true;
        cfg.fault_phase_ms = 400;
        cfg.compromised = vec![(seed % 4) as usize];
        cfg.deadline_ms = 5_000;
        let r = World::new(cfg).run();
        assert!(r.violation.is_none(), "seed {seed}: {:?}", r.violation);
        assert!(r.metrics.restarts > 0);
    }
}

/// Forwarding: with an installer that commits only one group and no
/// application traffic or proactive calls, guardians shared between groups
/// carry the code to the others.
#[test]
fn guardians_forward_codes() {
    for seed in 0..10u64 {
        let mut cfg = guarded(seed, 6, 4);
        cfg.finish_all = false;
        cfg.proactive = false;
        cfg.app_interval_ms = None;
        let r = run(cfg);
        assert_eq!(r.outcomes, vec![Some(Outcome::Committed)], "seed {seed}");
    }
}
