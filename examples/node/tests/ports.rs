//! Issue 16, port clash: `init` gives every process of a cluster its own
//! ports (transport and metrics), and `cluster up` fails loudly, naming the process, when one of
//! them cannot start (before, `up` waited for replicas only and reported
//! success with a guardian dead).

mod common;

use std::collections::BTreeSet;
use std::net::TcpListener;

use bft_upgrade_node::config::Cluster;
use common::{node, TempCluster};

#[test]
fn init_gives_every_process_of_a_cluster_its_own_port() {
    for round in 0..10 {
        let c = TempCluster::new(&format!("ports-{round}"), &["--groups", "10", "--guardians", "4"]);
        let cluster = Cluster::load(c.path()).unwrap();
        let mut addrs: Vec<_> = cluster.groups.iter().flat_map(|g| g.replicas.iter().map(|r| r.addr)).collect();
        addrs.extend(cluster.guardians.iter().map(|g| g.addr));
        // Each one's metrics endpoint too.
        addrs.extend(cluster.groups.iter().flat_map(|g| g.replicas.iter().filter_map(|r| r.metrics)));
        addrs.extend(cluster.guardians.iter().filter_map(|g| g.metrics));
        let distinct: BTreeSet<_> = addrs.iter().collect();
        assert_eq!(distinct.len(), addrs.len(), "round {round}: two ports clash");
        assert_eq!(addrs.len(), 2 * (40 + 13));
        assert!(addrs.iter().all(|a| a.ip().is_loopback()));
    }
}

#[test]
fn cluster_up_names_a_guardian_that_cannot_bind_its_port() {
    let c = TempCluster::new("clash", &[]);
    let cluster = Cluster::load(c.path()).unwrap();
    let taken = cluster.guardians[0].addr;
    let squatter = TcpListener::bind(taken).expect("the guardian's port is free before up");
    let out = node().args(["cluster", "up", "--dir"]).arg(c.path()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("{}{err}", String::from_utf8_lossy(&out.stdout));
    assert!(!out.status.success(), "cluster up reported success with guardian 1 dead");
    let last = err.lines().last().unwrap_or_default();
    assert!(last.starts_with("Error: guardian-1 exited"), "{err}");
    assert!(last.contains(&taken.to_string()), "the error names the port: {last}");
    drop(squatter);
}
