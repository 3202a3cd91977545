//! Issue 16, wedges 3 and 4: AlephBFT's rounds are 16-bit, so a group
//! changes sessions before they run out, at the same ordered batch at
//! every replica. With a round limit of 40 (set by `init --session-rounds`,
//! not by editing code) a cluster goes through many sessions while
//! upgrades install back to back and one replica is killed for a few
//! sessions; every upgrade commits everywhere, the killed replica catches
//! up through the sessions it missed, and what each replica stores stays
//! bounded: the unit backups of at most a few sessions, and the executed
//! ids of the last two.

mod common;

use std::time::Duration;

use bft_upgrade::host::Store as _;
use bft_upgrade_node::cluster::{self, Proc};
use bft_upgrade_node::store::Store;
use common::{restart, run, stdout, TempCluster};

#[test]
fn sessions_change_under_installs_and_a_restart_and_storage_stays_bounded() {
    let c = TempCluster::new("sessions", &["--groups", "3", "--guardians", "4", "--session-rounds", "40"]);
    assert!(run(&["cluster", "up"], &c).status.success());
    let victim = Proc::Replica(2, 1);
    let mut restarted = None;
    for i in 1..=6 {
        if i == 3 {
            assert!(cluster::kill(c.path(), victim), "the replica was running");
        }
        let deploy = run(&["deploy", "--text", &format!("application v{}", i + 1)], &c);
        assert!(deploy.status.success());
        let install = run(&["install", &stdout(&deploy), "--timeout-s", "90"], &c);
        assert!(install.status.success() && stdout(&install).starts_with("Committed"), "upgrade {i}");
        if i == 4 {
            restarted = Some(restart(&c, victim));
        }
    }
    assert!(restarted.is_some());
    let status = stdout(&run(&["cluster", "status", "--wait"], &c));
    let mut epochs = Vec::new();
    for g in 1..=3 {
        let line = status.lines().find(|l| l.starts_with(&format!("{g} "))).unwrap_or_default();
        assert!(line.contains(" 6 ") && line.contains("committed at 4/4"), "group {g}: {line}");
        // group, replicas, version, behind, session, ...
        assert_eq!(line.split_whitespace().nth(3), Some("-"), "a replica is behind: {line}");
        let session = line.split_whitespace().nth(4).unwrap_or_default();
        epochs.push(session.split('/').next().and_then(|e| e.parse::<u64>().ok()).unwrap_or(0));
    }
    assert!(epochs.iter().all(|e| *e >= 4), "sessions changed too rarely: {epochs:?}\n{status}");
    let log = c.log("replica-2-1");
    assert!(log.contains("AlephBFT session changed"), "the restarted replica never changed sessions");

    assert!(run(&["cluster", "down"], &c).status.success());
    std::thread::sleep(Duration::from_millis(300));
    for g in 1..=3u32 {
        for r in 0..4u8 {
            let data = c.path().join("data").join(format!("replica-{g}-{r}"));
            let backups = std::fs::read_dir(&data)
                .unwrap()
                .filter(|e| e.as_ref().is_ok_and(|e| e.file_name().to_string_lossy().starts_with("units")))
                .count();
            assert!(backups <= 4, "replica {g}/{r} keeps {backups} unit backups");
            let store = Store::open(&data.join("state.redb")).unwrap();
            let epoch: u64 = postcard::from_bytes(&store.get("session").unwrap().unwrap()).unwrap();
            assert!(epoch >= 3, "replica {g}/{r} is in session {epoch}");
            for key in store.list("seen/").unwrap() {
                let e = key.split('/').nth(1).and_then(|e| u64::from_str_radix(e, 16).ok());
                assert!(e.is_some_and(|e| e + 1 >= epoch), "replica {g}/{r} in session {epoch} still keeps {key}");
            }
        }
    }
    let check = run(&["cluster", "check"], &c);
    assert!(check.status.success(), "the databases show a violation");
}
