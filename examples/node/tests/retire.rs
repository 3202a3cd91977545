//! Issue 16, found by the 500-upgrade soak: a guardian that missed an
//! upgrade's retirement (it was down when the installer sent it) kept that
//! upgrade's records for good, and records that released a share are never
//! dropped to make room, so after enough such misses every new piece was
//! refused ("every record holds a release") and installs stalled at upgrade
//! 261. Each install now retires the last finished upgrades again.

mod common;

use std::time::{Duration, Instant};

use common::{deploy, install, run, stdout, TempCluster};

/// Each guardian's records held, from `cluster status`.
fn held(c: &TempCluster) -> Vec<u32> {
    let status = stdout(&run(&["cluster", "status"], c));
    let line = status.lines().find(|l| l.starts_with("guardians")).unwrap_or_default().to_string();
    let counts: Vec<u32> = line
        .split(';')
        .filter_map(|part| part.split_whitespace().rev().nth(3)?.split('/').next()?.parse().ok())
        .collect();
    assert_eq!(counts.len(), 4, "{line}");
    counts
}

#[test]
fn a_retirement_a_guardian_missed_reaches_it_with_the_next_install() {
    let c = TempCluster::new("retire", &["--groups", "1", "--guardians", "4"]);
    assert!(run(&["cluster", "up"], &c).status.success());
    // The first upgrade is installed where the deployer's key is not: no
    // guardian is told to retire it, as if all were down at the end.
    let bundle = deploy(&c, "application v2");
    let key = c.path().join("keys").join("deployer.key");
    let away = c.path().join("deployer.key.away");
    std::fs::rename(&key, &away).unwrap();
    assert!(install(&c, &bundle).starts_with("Committed"));
    std::fs::rename(&away, &key).unwrap();
    let before = held(&c);
    assert!(before.iter().all(|h| *h >= 1), "the guardians forgot an unretired upgrade: {before:?}");

    // The next install retires it too.
    assert!(install(&c, &deploy(&c, "application v3")).starts_with("Committed"));
    let started = Instant::now();
    loop {
        let now = held(&c);
        if now.iter().all(|h| *h == 0) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "records still held after the next install: {now:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(run(&["cluster", "down"], &c).status.success());
}
