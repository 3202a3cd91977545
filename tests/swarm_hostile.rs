//! The hostile proving ground: racing, lying, replaying and mutating
//! replicas; every seed its own deployment shape; many upgrades per run.
//! Safety and liveness must hold everywhere: before the liveness fixes,
//! these modes found 54, 43 and 33 failing seeds of 300, 300 and 100.

use bft_upgrade::sim::{Swarm, World};

fn sweep(name: &str, swarm: Swarm, seeds: std::ops::Range<u64>) -> (usize, usize) {
    let (mut violations, mut liveness) = (0, 0);
    for seed in seeds {
        let r = World::new(swarm.config(seed)).run();
        if let Some(v) = &r.violation {
            eprintln!("{name} seed {seed}: SAFETY {v:?}");
            violations += 1;
        }
        if let Some(l) = &r.liveness {
            eprintln!("{name} seed {seed}: liveness: {l}");
            liveness += 1;
        }
    }
    eprintln!("{name}: {violations} safety violations, {liveness} liveness failures");
    (violations, liveness)
}

#[test]
fn hostile_default_shape_is_safe_and_live() {
    let (violations, liveness) = sweep("hostile", Swarm { hostile: true, ..Swarm::default() }, 0..30);
    assert_eq!(violations, 0);
    assert_eq!(liveness, 0);
}

#[test]
fn shape_swarm_is_safe_and_live() {
    let (violations, liveness) = sweep("shapes", Swarm::shapes(), 0..30);
    assert_eq!(violations, 0);
    assert_eq!(liveness, 0);
}

#[test]
fn long_runs_are_safe_and_live() {
    let (violations, liveness) = sweep("long", Swarm::long(), 0..12);
    assert_eq!(violations, 0);
    assert_eq!(liveness, 0);
}

/// Same seed, same run: the shape swarm and the long mode stay
/// deterministic.
#[test]
fn hostile_modes_replay() {
    for swarm in [Swarm::shapes(), Swarm::long()] {
        for seed in [3, 7] {
            let a = World::new(swarm.config(seed)).run();
            let b = World::new(swarm.config(seed)).run();
            assert_eq!(a.trace_digest, b.trace_digest, "seed {seed}");
        }
    }
}
