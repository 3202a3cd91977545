//! Issue 16: every replica and guardian serves its counters on its own
//! loopback port in the Prometheus text format, and they move with the
//! cluster (an upgrade commits: the version and the commit counter say so).

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bft_upgrade_node::config::Cluster;
use common::{deploy, install, run, TempCluster};

fn scrape(addr: SocketAddr) -> Option<String> {
    let mut response = ureq::get(format!("http://{addr}/metrics")).call().ok()?;
    response.body_mut().read_to_string().ok()
}

/// Scrapes `addr` until the text holds every line of `want`, for up to 30 s.
fn until(addr: SocketAddr, want: &[String]) -> String {
    let started = Instant::now();
    loop {
        let text = scrape(addr).unwrap_or_default();
        if want.iter().all(|w| text.lines().any(|l| l == w)) {
            return text;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{addr} never showed {want:?}:\n{text}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn metrics_every_process_serves_prometheus_counters_that_follow_an_upgrade() {
    let c = TempCluster::new("metrics", &["--groups", "2", "--guardians", "2"]);
    assert!(run(&["cluster", "up"], &c).status.success());
    let cluster = Cluster::load(c.path()).unwrap();
    let replica = cluster.groups[0].replicas[0].metrics.expect("init gives each replica a metrics port");
    let guardian = cluster.guardians[0].metrics.expect("init gives each guardian a metrics port");
    until(replica, &[r#"bftup_version{group="1",replica="0"} 0"#.to_string()]);
    assert!(install(&c, &deploy(&c, "application v2")).starts_with("Committed"));
    let text = until(
        replica,
        &[
            r#"bftup_version{group="1",replica="0"} 1"#.to_string(),
            r#"bftup_upgrades_committed_total{group="1",replica="0"} 1"#.to_string(),
            r#"bftup_upgrading{group="1",replica="0"} 0"#.to_string(),
        ],
    );
    assert!(text.contains("# TYPE bftup_executed_operations_total counter"), "{text}");
    until(guardian, &[r#"bftup_guardian_capacity{guardian="1"} 64"#.to_string()]);
    assert!(run(&["cluster", "down"], &c).status.success());
}
