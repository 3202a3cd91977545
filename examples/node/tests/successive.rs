//! Issue 16, wedge 1: upgrades installed back to back the way an operator
//! runs them (`node install "$(node deploy …)"`), each chained on the
//! deployer's own record and committing at every group; a second deploy
//! while one is in flight and a stale bundle each fail at once in one line,
//! a finished bundle reports its outcome at once, and the deployer aborts
//! the stale one.

mod common;

use std::time::{Duration, Instant};

use common::{deploy, install, run, stdout, TempCluster};

/// Fails within `within`, with a one-line error containing `what`.
fn fails(c: &TempCluster, args: &[&str], what: &str, within: Duration) {
    let started = Instant::now();
    let out = run(args, c);
    assert!(!out.status.success(), "node {args:?} succeeded");
    assert!(started.elapsed() < within, "node {args:?} took {:?} to fail", started.elapsed());
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or_default();
    assert!(last.starts_with("Error: ") && last.contains(what), "{err}");
}

#[test]
fn successive_upgrades_chain_on_the_deployers_record_and_a_stale_bundle_is_aborted() {
    let c = TempCluster::new("successive", &["--groups", "3", "--guardians", "4"]);
    let state = c.path().join("deployer").join("state.redb");
    let backup = c.path().join("deployer-backup.redb");
    assert!(run(&["cluster", "up"], &c).status.success());

    // One upgrade in flight at a time: its successor would chain on a code
    // nobody knows yet.
    let first = deploy(&c, "application v2");
    fails(&c, &["deploy", "--text", "application v3"], "still in flight", Duration::from_secs(10));
    let mut bundles = vec![first];
    assert!(install(&c, &bundles[0]).starts_with("Committed"));
    for i in 3..=4 {
        if i == 4 {
            std::fs::copy(&state, &backup).unwrap();
        }
        let bundle = deploy(&c, &format!("application v{i}"));
        // Back to back: `install` returns only once every group reported
        // the outcome, so the next deploy is never ahead of a group.
        assert!(install(&c, &bundle).starts_with("Committed"), "upgrade {i}");
        bundles.push(bundle);
    }
    let status = stdout(&run(&["cluster", "status", "--wait"], &c));
    for g in 1..=3 {
        let line = status.lines().find(|l| l.starts_with(&format!("{g} "))).unwrap_or_default();
        assert!(line.contains(" 3 ") && line.contains("committed at 4/4"), "group {g}: {line}");
        assert_eq!(line.split_whitespace().nth(3), Some("-"), "a replica is behind: {line}");
    }
    // Every guardian answers, holding a record per group and upgrade it
    // has not been told to forget.
    let guardians = status.lines().find(|l| l.starts_with("guardians ")).unwrap_or_default();
    let answered = guardians.split_whitespace().nth(1).and_then(|a| a.split_once('/'));
    assert!(matches!(answered, Some((up, all)) if up == all && up != "0"), "{status}");
    assert!(
        guardians.contains(" 1 ") && guardians.contains("/64 held") && !guardians.contains("silent"),
        "{guardians}"
    );
    // A finished upgrade's bundle: the groups answer with its outcome at
    // once; the deployer cannot abort it.
    let started = Instant::now();
    assert!(install(&c, &bundles[0]).starts_with("Committed"));
    assert!(started.elapsed() < Duration::from_secs(10), "a finished bundle took {:?}", started.elapsed());
    fails(&c, &["abort", &bundles[2], "--timeout-s", "60"], "already finished", Duration::from_secs(10));

    // The deployer's record restored from a backup one upgrade old: its
    // next pieces chain on superseded codes, every group refuses them for
    // good, `install` says so at once, and `abort` drops the upgrade and
    // learns where the groups are.
    std::fs::copy(&backup, &state).unwrap();
    let stale = deploy(&c, "application v5");
    fails(&c, &["install", &stale, "--timeout-s", "90"], "refused the piece for good", Duration::from_secs(30));
    let aborted = run(&["abort", &stale, "--timeout-s", "60"], &c);
    assert!(aborted.status.success(), "abort failed");
    assert!(stdout(&aborted).starts_with("Aborted"));
    // Nothing in flight now, and the chain is where the groups are.
    let next = deploy(&c, "application v6");
    assert!(install(&c, &next).starts_with("Committed"));
    // An upgrade every group accepted cannot be aborted by its deployer.
    let last = deploy(&c, "application v7");
    fails(&c, &["abort", &last, "--timeout-s", "60"], "cannot undo", Duration::from_secs(60));
    let status = stdout(&run(&["cluster", "status", "--wait"], &c));
    for g in 1..=3 {
        let line = status.lines().find(|l| l.starts_with(&format!("{g} "))).unwrap_or_default();
        assert!(line.contains(" 5 ") && line.contains("committed at 4/4"), "group {g}: {line}");
    }

    assert!(run(&["cluster", "down"], &c).status.success());
    std::thread::sleep(Duration::from_millis(300));
    let check = run(&["cluster", "check"], &c);
    assert!(check.status.success(), "the databases show a violation");
}
