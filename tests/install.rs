//! Acceptance of the group and installer roles, through the simulator:
//! whole upgrades under faults, with safety checked after every event.

use bft_upgrade::sim::{ByzantineReplica, NetworkFaults, SimConfig, World};
use bft_upgrade::wire::Outcome;

mod support;
use support::run;

fn sizes(groups: usize, n: usize) -> Vec<usize> {
    vec![n; groups]
}

#[test]
fn all_accept_commits_over_1_2_8_50_groups() {
    for groups in [1, 2, 8, 50] {
        let r = run(SimConfig::simple(groups as u64, groups, 4));
        assert_eq!(r.outcomes, vec![Some(Outcome::Committed)], "{groups} groups");
    }
}

#[test]
fn mixed_group_sizes_commit() {
    let mut cfg = SimConfig::simple(7, 5, 4);
    cfg.group_sizes = vec![1, 4, 7, 16, 4];
    let r = run(cfg);
    assert_eq!(r.outcomes, vec![Some(Outcome::Committed)]);
}

#[test]
fn one_group_rejecting_aborts_everywhere() {
    for groups in [1, 3, 8] {
        let mut cfg = SimConfig::simple(11, groups, 4);
        cfg.upgrades[0].rejected_by = vec![groups - 1];
        let r = run(cfg);
        assert_eq!(r.outcomes, vec![Some(Outcome::Aborted)], "{groups} groups");
    }
}

#[test]
fn concurrent_installers_1_3_10() {
    for installers in [1, 3, 10] {
        for reject in [false, true] {
            let mut cfg = SimConfig::simple(installers as u64, 6, 4);
            cfg.installers = installers;
            if reject {
                cfg.upgrades[0].rejected_by = vec![2];
            }
            let want = if reject { Outcome::Aborted } else { Outcome::Committed };
            assert_eq!(run(cfg).outcomes, vec![Some(want)], "{installers} installers, reject {reject}");
        }
    }
}

#[test]
fn byzantine_replicas_up_to_f_each_behavior() {
    for (i, b) in ByzantineReplica::ALL.iter().enumerate() {
        for reject in [false, true] {
            let mut cfg = SimConfig::simple(100 + i as u64, 6, 7);
            cfg.installers = 2;
            // f = 2 of 7 in every group; behaviours from the list.
            cfg.byzantine = (0..6).flat_map(|g| [(g, 1u8, *b), (g, 5u8, ByzantineReplica::ALL[(i + g) % 6])]).collect();
            if reject {
                cfg.upgrades[0].rejected_by = vec![3];
            }
            let want = if reject { Outcome::Aborted } else { Outcome::Committed };
            let r = run(cfg);
            assert_eq!(r.outcomes, vec![Some(want)], "{b:?} reject {reject}");
        }
    }
}

#[test]
fn lossy_network_then_heal() {
    for seed in 0..20u64 {
        let mut cfg = SimConfig::simple(seed, 8, 4);
        cfg.installers = 2;
        cfg.network = NetworkFaults { drop: 0.3, duplicate: 0.2, jitter_ms: 80 };
        cfg.fault_phase_ms = 5_000;
        if seed % 3 == 0 {
            cfg.upgrades[0].rejected_by = vec![(seed as usize) % 8];
        }
        let r = run(cfg);
        assert!(r.outcomes[0].is_some(), "seed {seed}");
        assert!(r.metrics.dropped > 0, "seed {seed}: the network dropped nothing");
    }
}

#[test]
fn installer_crash_and_restart_from_state() {
    for seed in 0..10u64 {
        let mut cfg = SimConfig::simple(seed, 6, 4);
        cfg.crashes = true;
        cfg.fault_phase_ms = 2_000;
        cfg.network = NetworkFaults { drop: 0.1, duplicate: 0.1, jitter_ms: 30 };
        let r = run(cfg);
        assert!(r.metrics.restarts > 0);
        assert_eq!(r.outcomes, vec![Some(Outcome::Committed)]);
    }
}

#[test]
fn installer_dying_halfway_is_covered_by_another() {
    for seed in 0..10u64 {
        let mut cfg = SimConfig::simple(seed, 6, 4);
        cfg.installers = 2;
        cfg.installer_death_ms = Some(7);
        assert_eq!(run(cfg).outcomes, vec![Some(Outcome::Committed)], "seed {seed}");
    }
}

#[test]
fn every_role_restored_after_every_event() {
    for reject in [false, true] {
        let mut cfg = SimConfig::simple(3, 3, 4);
        cfg.restart_every_event = true;
        cfg.installers = 2;
        cfg.network = NetworkFaults { drop: 0.1, duplicate: 0.1, jitter_ms: 20 };
        cfg.fault_phase_ms = 1_000;
        if reject {
            cfg.upgrades[0].rejected_by = vec![1];
        }
        let r = run(cfg);
        assert!(r.metrics.restarts > 50, "{}", r.metrics.restarts);
        assert!(r.outcomes[0].is_some());
    }
}

/// One installer commits through one group only; the code reaches every
/// other group by piggybacking alone, then by proactive calls alone.
#[test]
fn diffusion_piggyback_only_and_proactive_only() {
    for (proactive, app) in [(false, Some(20)), (true, None)] {
        let mut cfg = SimConfig::simple(5, 12, 4);
        cfg.finish_all = false;
        cfg.proactive = proactive;
        cfg.app_interval_ms = app;
        cfg.extra_edges = 2;
        let r = run(cfg);
        assert_eq!(r.outcomes, vec![Some(Outcome::Committed)], "proactive {proactive}");
        if app.is_some() {
            assert!(r.metrics.txns_completed > 0);
        }
    }
    // And without either, no code reaches the other groups by diffusion:
    // the installer itself sends τ to every group still silent once its
    // grace sweeps are over, so every group still finishes, only later.
    let mut cfg = SimConfig::simple(5, 12, 4);
    cfg.finish_all = false;
    cfg.proactive = false;
    cfg.deadline_ms = 20_000;
    let r = run(cfg.clone());
    assert_eq!(r.outcomes, vec![Some(Outcome::Committed)]);
    let grace_ms = u64::from(bft_upgrade::sim::DIFFUSION_GRACE) * cfg.retry_ms;
    assert!(r.finished_at_ms.is_some_and(|t| t >= grace_ms), "{:?} before the grace sweeps", r.finished_at_ms);
}

/// Figure 2 in a whole deployment: transactions that learn τ from a
/// response are aborted and restarted.
#[test]
fn figure2_restarts_happen() {
    let mut restarted = 0;
    for seed in 0..5 {
        let mut cfg = SimConfig::simple(seed, 10, 4);
        cfg.finish_all = false;
        cfg.proactive = false;
        cfg.app_interval_ms = Some(3);
        let r = run(cfg);
        restarted += r.metrics.txns_restarted;
    }
    assert!(restarted > 0);
}

/// O(n·G) messages: the per-replica count does not grow with G.
#[test]
fn messages_per_replica_flat_in_groups() {
    let per_replica = |groups: usize| {
        let mut cfg = SimConfig::simple(9, groups, 4);
        cfg.extra_edges = 0; // a ring: the same degree everywhere
        let r = run(cfg);
        let msgs = r.metrics.replica_messages + r.metrics.installer_messages;
        msgs as f64 / r.replicas as f64
    };
    let small = per_replica(10);
    let large = per_replica(200);
    println!("messages per replica: G=10 {small:.2}, G=200 {large:.2}");
    assert!(large <= small * 1.1, "per-replica messages grew: {small} -> {large}");
}

#[test]
fn same_seed_same_trace() {
    let mk = || {
        let mut cfg = SimConfig::simple(77, 6, 4);
        cfg.network = NetworkFaults { drop: 0.2, duplicate: 0.2, jitter_ms: 50 };
        cfg.fault_phase_ms = 3_000;
        cfg.byzantine = vec![(1, 0, ByzantineReplica::Garbage), (2, 3, ByzantineReplica::BothKinds)];
        cfg.app_interval_ms = Some(15);
        World::new(cfg).run()
    };
    let (a, b) = (mk(), mk());
    assert_eq!(a.trace_digest, b.trace_digest);
    assert_eq!(a.metrics, b.metrics);
    let mut other = SimConfig::simple(78, 6, 4);
    other.network = NetworkFaults { drop: 0.2, duplicate: 0.2, jitter_ms: 50 };
    other.fault_phase_ms = 3_000;
    assert_ne!(World::new(other).run().trace_digest, a.trace_digest);
    let _ = sizes(1, 1);
}

#[test]
fn byzantine_faults_are_reported() {
    let mut cfg = SimConfig::simple(1, 4, 4);
    cfg.byzantine = vec![
        (0, 0, ByzantineReplica::ForgeShares),
        (1, 2, ByzantineReplica::BothKinds),
        (2, 1, ByzantineReplica::Garbage),
    ];
    let r = run(cfg);
    println!("{:?}", r.metrics);
    assert!(r.metrics.faults_reported > 0);
    assert!(r.metrics.undecodable > 0);
}
