//! Issue 16, wedge 5: a replica whose database is deleted comes back by
//! state transfer (a checkpoint `f + 1` peers agree on, taken at a session
//! change its request caused) instead of restarting at version 0 behind
//! AlephBFT's "backup state behind unit collection state"; the next
//! upgrade commits at all four replicas of its group.

mod common;

use std::time::{Duration, Instant};

use bft_upgrade_node::cluster::{self, Proc};
use common::{deploy, install, restart, run, stdout, TempCluster};

fn upgrade(c: &TempCluster, text: &str) {
    assert!(install(c, &deploy(c, text)).starts_with("Committed"), "install of {text} failed");
}

#[test]
fn rejoin_a_wiped_replica_by_state_transfer_and_commit_the_next_upgrade_everywhere() {
    let c = TempCluster::new("rejoin", &["--groups", "2", "--app-interval-ms", "40"]);
    assert!(run(&["cluster", "up"], &c).status.success());
    upgrade(&c, "application v2");

    // Replica 3 of group 1 loses its disk.
    assert!(cluster::kill(c.path(), Proc::Replica(1, 3)), "replica-1-3 was not running");
    std::thread::sleep(Duration::from_millis(300));
    std::fs::remove_dir_all(c.path().join("data").join("replica-1-3")).unwrap();
    let mut child = restart(&c, Proc::Replica(1, 3));
    let started = Instant::now();
    while !c.log("replica-1-3").contains("rejoined by state transfer") {
        assert!(started.elapsed() < Duration::from_secs(60), "replica-1-3 never rejoined");
        std::thread::sleep(Duration::from_millis(300));
    }

    // The next upgrade commits at all four, the rejoined one included, on
    // the version its group is at.
    upgrade(&c, "application v3");
    let status = stdout(&run(&["cluster", "status", "--wait"], &c));
    let line = status.lines().find(|l| l.starts_with("1 ")).unwrap_or_default();
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields.get(2), Some(&"2"), "group 1's version: {line}");
    assert_eq!(fields.get(3), Some(&"-"), "a replica is behind or silent: {line}");
    assert!(line.contains("committed at 4/4") && line.contains("application v3"), "{line}");
    let log = c.log("replica-1-3");
    assert!(!log.contains("Backup state behind"), "replica-1-3 ran a session from an empty backup");

    // Wiped again soon after: it rejoins again, and each peer changed
    // sessions once per rejoin (late copies of a request change nothing).
    assert!(cluster::kill(c.path(), Proc::Replica(1, 3)));
    let _ = child.wait();
    std::fs::remove_dir_all(c.path().join("data").join("replica-1-3")).unwrap();
    child = restart(&c, Proc::Replica(1, 3));
    let started = Instant::now();
    while c.log("replica-1-3").matches("rejoined by state transfer").count() < 2 {
        assert!(started.elapsed() < Duration::from_secs(90), "replica-1-3 never rejoined a second time");
        std::thread::sleep(Duration::from_millis(300));
    }
    upgrade(&c, "application v4");
    let line = stdout(&run(&["cluster", "status", "--wait"], &c))
        .lines()
        .find(|l| l.starts_with("1 "))
        .unwrap_or_default()
        .to_string();
    assert!(line.contains("committed at 4/4") && line.split_whitespace().nth(3) == Some("-"), "{line}");
    std::thread::sleep(Duration::from_secs(3));
    for i in 0..3 {
        let changes = c.log(&format!("replica-1-{i}")).matches("session ended for a rejoining replica").count();
        assert_eq!(changes, 2, "replica-1-{i} changed sessions {changes} times for 2 rejoins");
    }

    assert!(run(&["cluster", "down"], &c).status.success());
    let _ = child.wait();
    std::thread::sleep(Duration::from_millis(300));
    assert!(run(&["cluster", "check"], &c).status.success(), "the databases show a violation");
}
