//! Issue 18 §1: with the diffusion overlay (`bft_upgrade::overlay`), an
//! outcome committed at one group reaches every group in a number of hops
//! logarithmic in the number of groups, though the groups call each other
//! only around a ring; without it, diffusion walks the ring. Times are the
//! simulator's virtual time (5 ms links), not the machine's.

use bft_upgrade::overlay;
use bft_upgrade::sim::{NetworkFaults, SimConfig};
use bft_upgrade::wire::Outcome;

mod support;
use support::run;

const GROUPS: usize = 300;

/// One upgrade over `GROUPS` groups calling each other on a ring; the
/// installer commits through one group and leaves the rest to diffusion.
fn ring(overlay: usize, guardians: usize) -> SimConfig {
    let mut cfg = SimConfig::simple(9, GROUPS, 4);
    cfg.extra_edges = 0;
    cfg.finish_all = false;
    cfg.proactive = guardians == 0;
    cfg.guardians = guardians;
    cfg.overlay = overlay;
    cfg.deadline_ms = 120_000;
    cfg
}

/// Runs `cfg` on a thread with a deep stack: the simulator builds an
/// installer for hundreds of groups by value.
fn deep(cfg: SimConfig) -> bft_upgrade::sim::Report {
    std::thread::Builder::new().stack_size(1 << 28).spawn(move || run(cfg)).expect("thread").join().expect("run")
}

/// Virtual time at which every replica had committed.
fn finished(cfg: SimConfig) -> u64 {
    let r = deep(cfg);
    assert_eq!(r.outcomes, vec![Some(Outcome::Committed)]);
    let t = r.finished_at_ms.expect("every replica committed");
    eprintln!("finished at {t} ms");
    t
}

#[test]
fn overlay_proactive_diffusion_takes_logarithmic_hops() {
    let hops = u64::from(overlay::max_hops(GROUPS, 3));
    assert_eq!(hops, 6);
    let with = finished(ring(3, 0));
    // Prepare and the first commit (three links), then one link a hop.
    assert!(with <= 5 * (3 + hops), "overlay: {with} ms for {hops} hops");
    // The ring alone: the far side is GROUPS / 2 hops away.
    let without = finished(ring(0, 0));
    assert!(without >= 5 * (GROUPS as u64 / 2), "ring: {without} ms");
}

#[test]
fn overlay_guardians_shared_along_it_forward_in_logarithmic_hops() {
    let with = finished(ring(3, 4));
    let without = finished(ring(0, 4));
    // Along the ring, each guardian reaches 4 consecutive groups: at least
    // GROUPS / 8 guardian hops of two links each to the far side.
    assert!(without >= 2 * 5 * (GROUPS as u64 / 8), "ring: {without} ms");
    // Along the overlay, six hops of two links on top of what ten groups
    // need (235 ms in BENCHMARKS.md's run: retries while guardians are
    // asked for shares).
    assert!(with <= 300, "overlay: {with} ms");
}

#[test]
fn overlay_with_a_lossy_network_stays_safe_and_live() {
    for seed in 0..6u64 {
        for guardians in [0, 4] {
            let mut cfg = ring(3, guardians);
            cfg.seed = seed;
            cfg.group_sizes = vec![4; 40];
            cfg.upgrades[0].groups = (0..40).collect();
            cfg.installers = 2;
            cfg.network = NetworkFaults { drop: 0.2, duplicate: 0.1, jitter_ms: 40 };
            cfg.fault_phase_ms = 3_000;
            deep(cfg);
        }
    }
}
