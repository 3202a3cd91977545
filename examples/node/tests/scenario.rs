//! The kill/restart scenario end to end: 3 groups x 4 replicas with 4
//! guardians each; one replica per group and the installer are SIGKILLed
//! mid-install and restarted; every group must commit, and the databases,
//! read after the run, must show no guardian that released both kinds.

mod common;

use common::{node, TempCluster};

#[test]
fn kill_and_restart_mid_install() {
    let c = TempCluster::new("scenario", &[]);
    let out = node().args(["cluster", "scenario", "--timeout-s", "180", "--dir"]).arg(c.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the scenario failed");
    assert_eq!(stdout.matches("SIGKILL").count(), 4, "one replica per group and the installer");
    assert!(stdout.contains("every group committed, no guardian released both kinds"));
    assert_eq!(stdout.matches("database check: group").filter(|_| true).count(), 3);
    for g in 1..=3 {
        assert!(stdout.contains(&format!("database check: group {g}: 4/4 replicas committed")));
    }
}
