//! Issue 16, "a version without its software": a group whose payload file
//! is truncated commits the upgrade (atomicity is the core's business) but
//! no replica reports the new version or serves a call under it until the
//! payload opens under its signed digest; callers get a typed `Upgrading`
//! answer meanwhile. A replica that was down while its group committed,
//! and finds the deployer's files gone, fetches the payload from a peer.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bft_upgrade_node::cluster::{self, Proc};
use common::{deploy, install, restart, run, stdout, TempCluster};

/// Group `g`'s line of `cluster status` (`--wait` or not).
fn line(c: &TempCluster, g: u32, wait: bool) -> String {
    let args: &[&str] = if wait { &["cluster", "status", "--wait"] } else { &["cluster", "status"] };
    let status = stdout(&run(args, c));
    status.lines().find(|l| l.starts_with(&format!("{g} "))).unwrap_or_default().to_string()
}

/// Polls group `g`'s status line until `ok` holds, for up to 30 s.
fn until(c: &TempCluster, g: u32, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let started = Instant::now();
    loop {
        let l = line(c, g, false);
        if ok(&l) {
            return l;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "group {g} never {what}: {l}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The one payload file `deploy` wrote for group `g` under `payloads/`
/// that is not among `before`.
fn new_payload(c: &TempCluster, g: u32, before: &[PathBuf]) -> PathBuf {
    let dirs = std::fs::read_dir(c.path().join("payloads")).unwrap();
    let files: Vec<PathBuf> = dirs
        .map(|d| d.unwrap().path().join(format!("g{g}.bin")))
        .filter(|p| p.exists() && !before.contains(p))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

#[test]
fn payload_missing_or_truncated_is_fetched_before_the_version_is_served() {
    let c = TempCluster::new("payload", &["--groups", "3", "--app-interval-ms", "40"]);
    assert!(run(&["cluster", "up"], &c).status.success());

    // A truncated payload at group 1: the upgrade commits everywhere, yet
    // group 1's replicas stay at version 0, each one upgrading.
    let bundle = deploy(&c, "application v2");
    let file = new_payload(&c, 1, &[]);
    let good = std::fs::read(&file).unwrap();
    std::fs::write(&file, &good[..good.len() / 2]).unwrap();
    assert!(install(&c, &bundle).starts_with("Committed"));
    let one =
        until(&c, 1, "showed every replica upgrading", |l| (0..4).all(|i| l.contains(&format!("r{i} v0 upgrading"))));
    assert!(one.contains("committed at 4/4") && !one.contains("application v2"), "{one}");
    assert_eq!(one.split_whitespace().nth(2), Some("0"), "the version served: {one}");
    let two = until(&c, 2, "served version 1", |l| l.split_whitespace().nth(2) == Some("1"));
    assert!(two.contains("application v2"), "{two}");
    // Callers of group 1 hear a typed answer, not old-version service.
    let started = Instant::now();
    while !(1..=3)
        .flat_map(|g| (0..4).map(move |i| (g, i)))
        .any(|(g, i)| c.log(&format!("replica-{g}-{i}")).contains("callee upgrading"))
    {
        assert!(started.elapsed() < Duration::from_secs(30), "no caller heard that group 1 is upgrading");
        std::thread::sleep(Duration::from_millis(300));
    }

    // The deployer writes the file again: group 1 applies it and serves
    // the new version, nobody upgrading any more.
    std::fs::write(&file, &good).unwrap();
    // Each replica looks again on its own second: wait for all four.
    let one = until(&c, 1, "applied the payload at every replica", |l| {
        l.split_whitespace().nth(2) == Some("1") && !l.contains("upgrading")
    });
    assert!(one.contains("application v2") && one.split_whitespace().nth(3) == Some("-"), "{one}");

    // A replica down while its group commits, the deployer's files gone
    // when it comes back: it applies the payload a peer kept.
    assert!(cluster::kill(c.path(), Proc::Replica(2, 3)), "replica-2-3 was not running");
    let bundle = deploy(&c, "application v3");
    assert!(install(&c, &bundle).starts_with("Committed"));
    std::fs::remove_dir_all(c.path().join("payloads")).unwrap();
    let mut child = restart(&c, Proc::Replica(2, 3));
    let two = line(&c, 2, true);
    assert!(two.contains("application v3"), "{two}");
    assert_eq!(two.split_whitespace().nth(2), Some("2"), "{two}");
    assert_eq!(two.split_whitespace().nth(3), Some("-"), "a replica is behind or upgrading: {two}");
    let log = c.log("replica-2-3");
    assert!(log.contains("payload applied") && log.contains("a peer"), "replica-2-3 did not fetch from a peer");

    assert!(run(&["cluster", "down"], &c).status.success());
    let _ = child.wait();
    std::thread::sleep(Duration::from_millis(300));
    assert!(run(&["cluster", "check"], &c).status.success(), "the databases show a violation");
}
