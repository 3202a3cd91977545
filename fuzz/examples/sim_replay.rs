//! Replays `sim` fuzz inputs outside libFuzzer: prints each input's
//! `SimConfig` (ready to paste into a regression test), the report's
//! violation, the events run and the time taken.
//!
//! ```text
//! cargo run --release --manifest-path fuzz/Cargo.toml --example sim_replay -- fuzz/artifacts/sim/crash-<sha1>
//! ```
//!
//! A directory argument replays every file in it (quietly: one line each).

#[path = "../common/sim_shape.rs"]
mod sim_shape;

use std::path::Path;
use std::time::Instant;

use arbitrary::{Arbitrary, Unstructured};
use bft_upgrade::sim::World;

fn replay(path: &Path, verbose: bool) {
    let bytes = std::fs::read(path).expect("read the input");
    let Ok(shape) = sim_shape::Shape::arbitrary_take_rest(Unstructured::new(&bytes)) else {
        println!("{}: not a shape", path.display());
        return;
    };
    let cfg = sim_shape::config(&shape);
    if verbose {
        println!("{cfg:#?}");
    }
    let start = Instant::now();
    let report = World::new(cfg.clone()).run();
    let took = start.elapsed();
    println!(
        "{}: {} groups, {} upgrades, guardians {}: {} events in {:.1} ms, violation: {:?}",
        path.display(),
        cfg.group_sizes.len(),
        cfg.upgrades.len(),
        cfg.guardians,
        report.metrics.events,
        took.as_secs_f64() * 1e3,
        report.violation
    );
}

fn main() {
    for arg in std::env::args().skip(1) {
        let path = Path::new(&arg);
        if path.is_dir() {
            let mut entries: Vec<_> = std::fs::read_dir(path).expect("read the directory").flatten().collect();
            entries.sort_by_key(|e| e.path());
            for e in entries {
                replay(&e.path(), false);
            }
        } else {
            replay(path, true);
        }
    }
}
