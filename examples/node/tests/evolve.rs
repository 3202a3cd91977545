//! Issue 17: the application evolves. The node's transaction logic is a
//! WebAssembly module; an upgrade whose payload is the next module changes
//! the call's interface on both sides (a new argument in `pay`'s results
//! and in `serve`'s parameters) and installs while every group keeps
//! calling its neighbors. From every call recorded, none ran with caller
//! and callee on different module versions, and no money was made or lost.
//! A module that does not validate is every group's `Reject`: the upgrade
//! aborts and the old module keeps running.

mod common;

use std::time::Duration;

use bft_upgrade_node::cluster;
use common::{calls, install, module, rate, run, stdout, wait_for_module, TempCluster};

#[test]
fn an_interface_changing_module_installs_under_load_without_mixing_versions() {
    let c = TempCluster::new("evolve", &["--groups", "3", "--app-interval-ms", "20"]);
    assert!(run(&["cluster", "up"], &c).status.success());
    wait_for_module(&c, 3, 4, 1);

    // Before: the shipped module, calls flowing.
    let start = calls(&c);
    std::thread::sleep(Duration::from_secs(5));
    let before = calls(&c);
    assert!(before.1 > start.1, "no application calls before the install");

    // During: the interface-changing upgrade.
    let out = run(&["deploy", "--module", &module("bank-v2")], &c);
    assert!(out.status.success(), "deploy failed");
    let bundle = stdout(&out);
    let v2 = std::path::Path::new(&bundle).file_stem().unwrap().to_str().unwrap().to_string();
    let begun = calls(&c);
    assert!(install(&c, &bundle).starts_with("Committed"));
    let ended = calls(&c);
    wait_for_module(&c, 3, 4, 2);
    std::thread::sleep(Duration::from_secs(5));
    let after = calls(&c);
    let (b, d, a) = (rate(start, before), rate(begun, ended), rate(ended, after));
    eprintln!(
        "calls/s before {b:.1}, during the install ({:.1} s) {d:.1} ({:.0} %), after {a:.1}",
        ended.0.duration_since(begun.0).as_secs_f64(),
        100.0 * d / b
    );
    assert!(ended.1 > begun.1, "no call completed during the install");
    assert!(after.1 > ended.1, "no call completed after the install");

    // A module that does not validate: the deployer's own check refuses
    // it; deployed anyway, every group rejects its piece.
    let refused = run(&["deploy", "--module", &module("bank-invalid")], &c);
    assert!(!refused.status.success(), "the deployer took a module without `serve`");
    let out = run(&["deploy", "--module", &module("bank-invalid"), "--unchecked"], &c);
    assert!(out.status.success(), "deploy --unchecked failed");
    assert!(install(&c, &stdout(&out)).starts_with("Aborted"));
    wait_for_module(&c, 3, 4, 2);
    let status = stdout(&run(&["cluster", "status", "--wait"], &c));
    for g in 1..=3 {
        let line = status.lines().find(|l| l.starts_with(&format!("{g} "))).unwrap_or_default();
        assert!(line.contains("aborted at 4/4") && line.contains(" v2 "), "group {g}: {line}");
    }

    assert!(run(&["cluster", "down"], &c).status.success());
    std::thread::sleep(Duration::from_millis(300));
    // Every replica committed v2 (and none the rejected one).
    let check = bft_upgrade_node::cluster::check(c.path(), Some(cluster::parse_upgrade(&v2).unwrap())).unwrap();
    let app = check.app.clone().expect("every group's application read");
    eprintln!("{}", app.line());
    assert!(check.violations.is_empty(), "{:?}", check.violations);
    assert_eq!(app.mixed(), 0);
    // Both versions served calls, each only with its own kind.
    assert!(app.served.get(&(1, 1)).is_some_and(|n| *n > 0), "{}", app.line());
    assert!(app.served.get(&(2, 2)).is_some_and(|n| *n > 0), "{}", app.line());
    assert_eq!(app.balances + app.uncredited + app.limbo, app.total, "{}", app.line());
    // The command line says the same.
    let out = run(&["cluster", "check", "--upgrade", &v2], &c);
    assert!(out.status.success() && stdout(&out).contains("mixed versions 0"));
}
