//! Replays, conflicts and versions (paper 4.3–4.4, PROTOCOL.md 5–6) in whole
//! deployments.

use bft_upgrade::sim::{NetworkFaults, SimConfig, UpgradeSpec};
use bft_upgrade::wire::Outcome;

mod support;
use support::run;

fn spec(groups: Vec<usize>, resources: Vec<u32>, seq: u64, deployer: usize) -> UpgradeSpec {
    UpgradeSpec {
        groups,
        resources,
        rejected_by: vec![],
        order_seq: seq,
        start_ms: 0,
        deployer,
        chained: true,
        rotates: vec![],
        resizes: vec![],
    }
}

/// Two upgrades U1 ≺ U2 sharing a resource at some groups, launched at once
/// by different installers, over 1,000 seeds of network interleavings: no
/// split outcome, no deadlock (one commits), no livelock (bounded events).
#[test]
fn two_conflicting_upgrades_1000_seeds() {
    let mut committed = [0u32; 2];
    for seed in 0..1000u64 {
        let mut cfg = SimConfig::simple(seed, 4, 4);
        cfg.upgrades = vec![spec(vec![0, 1, 2], vec![7, 1], 1, 0), spec(vec![1, 2, 3], vec![7, 2], 2, 1)];
        cfg.installers = 1 + (seed % 2) as usize;
        cfg.network = NetworkFaults { drop: 0.05, duplicate: 0.1, jitter_ms: 30 };
        cfg.fault_phase_ms = 1_000;
        cfg.max_events = 200_000;
        let r = run(cfg);
        assert!(r.outcomes.iter().all(Option::is_some), "seed {seed}: {:?}", r.outcomes);
        assert!(r.outcomes.contains(&Some(Outcome::Committed)), "seed {seed}: deadlock, none committed");
        for (i, o) in r.outcomes.iter().enumerate() {
            committed[i] += u32::from(*o == Some(Outcome::Committed));
        }
    }
    println!("commits over 1000 seeds: U1 {}, U2 {}", committed[0], committed[1]);
}

#[test]
fn three_mutually_conflicting_upgrades() {
    for seed in 0..300u64 {
        let mut cfg = SimConfig::simple(seed, 3, 4);
        cfg.upgrades = vec![
            spec(vec![0, 1, 2], vec![1], 3, 0),
            spec(vec![0, 1, 2], vec![1], 1, 1),
            spec(vec![0, 1, 2], vec![1], 2, 2),
        ];
        cfg.installers = 2;
        cfg.network = NetworkFaults { drop: 0.05, duplicate: 0.1, jitter_ms: 40 };
        cfg.fault_phase_ms = 1_000;
        cfg.max_events = 300_000;
        let r = run(cfg);
        assert!(r.outcomes.iter().all(Option::is_some), "seed {seed}: {:?}", r.outcomes);
        let commits = r.outcomes.iter().filter(|o| **o == Some(Outcome::Committed)).count();
        // They all conflict everywhere: exactly one can commit.
        assert_eq!(commits, 1, "seed {seed}: {:?}", r.outcomes);
    }
}

#[test]
fn non_conflicting_upgrades_both_commit() {
    for seed in 0..50u64 {
        let mut cfg = SimConfig::simple(seed, 4, 4);
        cfg.upgrades = vec![spec(vec![0, 1, 2, 3], vec![1], 1, 0), spec(vec![0, 1, 2, 3], vec![2], 2, 1)];
        cfg.network = NetworkFaults { drop: 0.1, duplicate: 0.1, jitter_ms: 30 };
        cfg.fault_phase_ms = 1_000;
        assert_eq!(run(cfg).outcomes, vec![Some(Outcome::Committed); 2], "seed {seed}");
    }
}

/// A deployer's chain: U1, then U2 built on U1's code, then U3 rejected by
/// one group and U4 built on U3's cancellation code; a stale piece of
/// another deployer is refused everywhere and never finishes anywhere.
#[test]
fn version_chains_across_successive_upgrades() {
    let mut cfg = SimConfig::simple(4, 4, 4);
    let mut u3 = spec(vec![0, 1, 2], vec![1], 3, 0);
    u3.rejected_by = vec![1];
    u3.start_ms = 2_000;
    let mut u2 = spec(vec![0, 1, 2, 3], vec![1], 2, 0);
    u2.start_ms = 1_000;
    let mut u4 = spec(vec![0, 1], vec![1], 4, 0);
    u4.start_ms = 3_000;
    let mut stale = spec(vec![2, 3], vec![9], 5, 1);
    stale.chained = false;
    cfg.upgrades = vec![spec(vec![0, 1, 2, 3], vec![1], 1, 0), u2, u3, u4, stale];
    cfg.deadline_ms = 30_000;
    let r = run(cfg);
    assert_eq!(
        r.outcomes,
        vec![
            Some(Outcome::Committed),
            Some(Outcome::Committed),
            Some(Outcome::Aborted),
            Some(Outcome::Committed),
            None
        ]
    );
}

/// Successive upgrades started before their predecessor finished: the
/// groups refuse them out of order until it has, and the installers'
/// retries carry them through.
#[test]
fn chained_upgrades_started_early_still_finish() {
    for seed in 0..30u64 {
        let mut cfg = SimConfig::simple(seed, 5, 4);
        cfg.upgrades = (0..4).map(|i| spec(vec![0, 1, 2, 3, 4], vec![1], i + 1, 0)).collect();
        cfg.network = NetworkFaults { drop: 0.1, duplicate: 0.1, jitter_ms: 30 };
        cfg.fault_phase_ms = 2_000;
        cfg.deadline_ms = 60_000;
        assert_eq!(run(cfg).outcomes, vec![Some(Outcome::Committed); 4], "seed {seed}");
    }
}

/// External clients calling committed and not-yet-committed groups never
/// see the old version after the new (checked by the simulator on every
/// call).
#[test]
fn clients_are_linearizable() {
    let mut calls = 0;
    for seed in 0..100u64 {
        let mut cfg = SimConfig::simple(seed, 8, 4);
        cfg.finish_all = false;
        cfg.proactive = seed % 2 == 0;
        cfg.clients = 4;
        cfg.client_interval_ms = 2;
        cfg.upgrades = (0..3)
            .map(|i| {
                let mut u = spec((0..8).collect(), vec![1], i + 1, 0);
                u.start_ms = i * 300;
                u
            })
            .collect();
        cfg.deadline_ms = 60_000;
        let r = run(cfg);
        calls += r.metrics.client_calls;
    }
    assert!(calls > 1_000);
}
