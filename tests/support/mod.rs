//! What the simulator-driven acceptance tests share.

// Each test crate uses its own part of this module.
#![allow(dead_code)]

use bft_upgrade::sim::{Report, SimConfig, World};

pub mod cluster;
pub mod fixture;

/// Runs a deployment and fails the test, naming the seed, on a safety
/// violation or an unfinished upgrade.
pub fn run(cfg: SimConfig) -> Report {
    let seed = cfg.seed;
    let r = World::new(cfg).run();
    assert!(r.violation.is_none(), "seed {seed}: {:?}", r.violation);
    assert!(r.liveness.is_none(), "seed {seed}: {:?}", r.liveness);
    r
}
