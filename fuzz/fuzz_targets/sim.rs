//! Whole deployments in the simulator, shaped by the fuzzer: 2 to 4 groups
//! of 1 to 7 replicas, one or two upgrades (any groups, resources, order,
//! deployer, chained or stale, rejections), replica or guardian custody (4
//! guardians per group), and every fault the model allows: at most `f`
//! Byzantine replicas per group, Byzantine installers, a lossy, duplicating,
//! reordering network, crashes and restarts, a dying installer, application
//! traffic and external clients; with guardians also compromised groups and
//! at most `F = 1` Byzantine guardian per group.
//!
//! The simulator's safety checker runs after every event: the run must end
//! with no violation (liveness is not asserted: the fault budget and the
//! deadline are the fuzzer's).

#![no_main]

use bft_upgrade::sim::World;
use libfuzzer_sys::fuzz_target;

#[path = "../common/sim_shape.rs"]
mod sim_shape;

fuzz_target!(|s: sim_shape::Shape| {
    let cfg = sim_shape::config(&s);
    let report = World::new(cfg.clone()).run();
    assert!(report.violation.is_none(), "{:?}\nin {cfg:#?}", report.violation);
});
