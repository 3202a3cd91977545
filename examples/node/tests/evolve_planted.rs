//! Issue 17's acceptance: the application's checks can fail. Each planted
//! bug (`--features planted`, chosen with `BFTUP_PLANTED` in every replica)
//! breaks what the protocol promises the application, and `cluster check`
//! names the violation from the recorded calls and the accounts.

mod common;

use std::time::Duration;

use common::{install, module, run, stdout, wait_for_module, TempCluster};

/// Installs the interface-changing module under load with `bug` planted in
/// every replica, and returns what the database check found.
fn violations_with(bug: &str) -> Vec<String> {
    let c =
        TempCluster::new(&format!("planted-{bug}"), &["--groups", "3", "--guardians", "0", "--app-interval-ms", "20"]);
    let up = common::node().args(["cluster", "up", "--dir"]).arg(c.path()).env("BFTUP_PLANTED", bug).output().unwrap();
    assert!(up.status.success(), "cluster up failed");
    wait_for_module(&c, 3, 4, 1);
    std::thread::sleep(Duration::from_secs(2));
    let out = run(&["deploy", "--module", &module("bank-v2")], &c);
    assert!(out.status.success(), "deploy failed");
    assert!(install(&c, &stdout(&out)).starts_with("Committed"));
    wait_for_module(&c, 3, 4, 2);
    std::thread::sleep(Duration::from_secs(2));
    assert!(c.log("replica-1-0").contains("running with a planted bug"));
    assert!(run(&["cluster", "down"], &c).status.success());
    std::thread::sleep(Duration::from_millis(300));
    let check = bft_upgrade_node::cluster::check(c.path(), None).unwrap();
    eprintln!("{}", check.app.as_ref().map(|a| a.line()).unwrap_or_default());
    // The command line fails on it too.
    assert!(!run(&["cluster", "check"], &c).status.success(), "cluster check passed a planted bug");
    check.violations
}

#[test]
fn a_callee_that_serves_callers_at_another_version_mixes_versions() {
    let v = violations_with("no-version-check");
    assert!(v.iter().any(|x| x.contains("calls ran between different module versions")), "{v:?}");
}

#[test]
fn a_caller_that_skips_figure_2s_abort_and_restart_loses_money() {
    let v = violations_with("no-restart");
    assert!(v.iter().any(|x| x.starts_with("money lost")), "{v:?}");
    assert!(!v.iter().any(|x| x.contains("module versions")), "{v:?}");
}
