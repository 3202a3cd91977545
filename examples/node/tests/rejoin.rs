//! Issue 16, wedge 5: a replica whose database is deleted comes back by
//! state transfer (a checkpoint `f + 1` peers agree on, taken at a session
//! change its request caused) instead of restarting at version 0 behind
//! AlephBFT's "backup state behind unit collection state"; the next
//! upgrade commits at all four replicas of its group.

mod common;

use std::time::{Duration, Instant};

use bft_upgrade_node::cluster::{self, Proc};
use common::{deploy, install, restart, run, stdout, TempCluster};

const REJOINED: &str = "rejoined by state transfer";

fn upgrade(c: &TempCluster, text: &str) {
    assert!(install(c, &deploy(c, text)).starts_with("Committed"), "install of {text} failed");
}

fn wait_for(what: &str, limit: Duration, done: impl Fn() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn signal(c: &TempCluster, p: Proc, sig: &str) {
    let pid = std::fs::read_to_string(c.path().join("pids").join(format!("{}.pid", p.name()))).unwrap();
    assert!(std::process::Command::new("kill").args([sig, pid.trim()]).status().unwrap().success());
}

/// Replica 3 of group 1 loses its disk (`old` is its process, if the test
/// started it) and starts again.
fn wipe(c: &TempCluster, old: Option<std::process::Child>) -> std::process::Child {
    assert!(cluster::kill(c.path(), Proc::Replica(1, 3)), "replica-1-3 was not running");
    if let Some(mut old) = old {
        let _ = old.wait();
    }
    std::thread::sleep(Duration::from_millis(300));
    std::fs::remove_dir_all(c.path().join("data").join("replica-1-3")).unwrap();
    restart(c, Proc::Replica(1, 3))
}

/// Group 1's line of `cluster status --wait`, asserted committed at all
/// four replicas with none behind or silent; its fields.
fn settled(c: &TempCluster) -> Vec<String> {
    let status = stdout(&run(&["cluster", "status", "--wait"], c));
    let line = status.lines().find(|l| l.starts_with("1 ")).unwrap_or_default();
    let fields: Vec<String> = line.split_whitespace().map(str::to_string).collect();
    assert_eq!(fields.get(3).map(String::as_str), Some("-"), "a replica is behind or silent: {line}");
    assert!(line.contains("committed at 4/4"), "{line}");
    fields
}

/// Each peer of replica 1-3 ended `n` sessions for its rejoins.
fn sessions_ended_for_rejoins(c: &TempCluster, n: usize) {
    for i in 0..3 {
        let changes = c.log(&format!("replica-1-{i}")).matches("session ended for a rejoining replica").count();
        assert_eq!(changes, n, "replica-1-{i} changed sessions {changes} times for {n} rejoins");
    }
}

fn down_and_check(c: &TempCluster, child: Option<std::process::Child>) {
    assert!(run(&["cluster", "down"], c).status.success());
    if let Some(mut child) = child {
        let _ = child.wait();
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(run(&["cluster", "check"], c).status.success(), "the databases show a violation");
}

#[test]
fn rejoin_a_wiped_replica_by_state_transfer_and_commit_the_next_upgrade_everywhere() {
    let c = TempCluster::new("rejoin", &["--groups", "2", "--app-interval-ms", "40"]);
    assert!(run(&["cluster", "up"], &c).status.success());
    upgrade(&c, "application v2");

    // Replica 3 of group 1 loses its disk.
    let child = wipe(&c, None);
    wait_for("replica-1-3 rejoins", Duration::from_secs(60), || c.log("replica-1-3").contains(REJOINED));

    // The next upgrade commits at all four, the rejoined one included, on
    // the version its group is at.
    upgrade(&c, "application v3");
    let fields = settled(&c);
    assert_eq!(fields.get(2).map(String::as_str), Some("2"), "group 1's version: {fields:?}");
    assert!(fields.join(" ").contains("application v3"), "{fields:?}");
    let log = c.log("replica-1-3");
    assert!(!log.contains("Backup state behind"), "replica-1-3 ran a session from an empty backup");

    // Wiped again soon after: it rejoins again, and each peer changed
    // sessions once per rejoin (late copies of a request change nothing).
    let child = wipe(&c, Some(child));
    wait_for("replica-1-3 rejoins a second time", Duration::from_secs(90), || {
        c.log("replica-1-3").matches(REJOINED).count() >= 2
    });
    upgrade(&c, "application v4");
    settled(&c);
    std::thread::sleep(Duration::from_secs(3));
    sessions_ended_for_rejoins(&c, 2);
    down_and_check(&c, Some(child));
}

/// Killed in the middle of its rejoin (its request ordered and the
/// checkpoint written at every peer, not yet installed here), a replica
/// restarts into the same rejoin: it asks for that checkpoint again. A
/// fresh request would need a second session change, which the peers
/// refuse for `REJOIN_GAP` batches; the soak's install stalled behind
/// such a replica when another of its group was killed meanwhile.
#[test]
fn a_replica_killed_while_rejoining_resumes_the_same_rejoin() {
    let c = TempCluster::new("rejoin-crash", &["--groups", "1", "--app-interval-ms", "40"]);
    assert!(run(&["cluster", "up"], &c).status.success());
    upgrade(&c, "application v2");
    let mut child = wipe(&c, None);

    // Its request is out (it goes at once); stop it before the checkpoint
    // comes back, and kill it once every peer has written one.
    wait_for("replica-1-3 asks to rejoin", Duration::from_secs(20), || c.log("replica-1-3").contains("no database"));
    std::thread::sleep(Duration::from_millis(150));
    signal(&c, Proc::Replica(1, 3), "-STOP");
    let written = |i: u8| c.log(&format!("replica-1-{i}")).contains("checkpoint written index=3");
    wait_for("every peer writes the checkpoint", Duration::from_secs(30), || (0..3).all(written));
    assert!(
        !c.log("replica-1-3").contains(REJOINED),
        "replica-1-3 had rejoined before it was stopped: nothing was tested"
    );
    child.kill().unwrap();
    let _ = child.wait();
    let child = restart(&c, Proc::Replica(1, 3));
    wait_for("replica-1-3 rejoins after the restart", Duration::from_secs(90), || {
        c.log("replica-1-3").contains(REJOINED)
    });
    assert!(c.log("replica-1-3").contains("resumed=true"), "the restart made a new request");
    upgrade(&c, "application v3");
    settled(&c);
    sessions_ended_for_rejoins(&c, 1);
    down_and_check(&c, Some(child));
}

/// A replica paused while its peers change sessions more often than they
/// keep ended ones can never finish its own session: no quorum runs it any
/// more. Once more than `f` peers are past every session they keep for it,
/// it rejoins by state transfer from its existing database and serves
/// again (it used to stay behind for good, and the next kill in its group
/// stalled the group: the 500-upgrade soak's stall).
#[test]
fn a_replica_left_behind_by_session_changes_rejoins_by_state_transfer() {
    let c = TempCluster::new("left-behind", &["--groups", "1", "--app-interval-ms", "40", "--session-rounds", "20"]);
    assert!(run(&["cluster", "up"], &c).status.success());
    upgrade(&c, "application v2");
    signal(&c, Proc::Replica(1, 3), "-STOP");
    let changes = || c.log("replica-1-0").matches("AlephBFT session changed").count();
    let before = changes();
    let past = bft_upgrade_node::replica::OLD_SESSIONS + 2;
    wait_for("the peers change sessions", Duration::from_secs(90), || changes() >= before + past);
    upgrade(&c, "application v3");
    signal(&c, Proc::Replica(1, 3), "-CONT");
    wait_for("replica-1-3 rejoins", Duration::from_secs(60), || c.log("replica-1-3").contains(REJOINED));
    assert!(c.log("replica-1-3").contains("left behind"));
    upgrade(&c, "application v4");
    let fields = settled(&c);
    assert_eq!(fields.get(2).map(String::as_str), Some("3"), "group 1's version: {fields:?}");
    down_and_check(&c, None);
}
