//! Issue 17, across hosts: every party's keys are made in its own host's
//! directory by `node keygen`, which prints the public half only; `node
//! assemble` writes `cluster.json` from those lines. No host's directory
//! holds another party's secret, no secret is printed or assembled, bad
//! input is one line and a non-zero exit, and the cluster runs from the
//! hosts' directories and installs an upgrade.

mod common;

use std::path::{Path, PathBuf};

use common::{listens, node, parties, start_party, stdout, TempCluster};

fn keygen(dir: &Path, party: &str, ports: &mut Vec<std::net::TcpListener>) -> String {
    let mut cmd = node();
    cmd.args(["keygen", "--party", party, "--dir"]).arg(dir);
    if listens(party) {
        for flag in ["--addr", "--metrics"] {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            cmd.args([flag, &l.local_addr().unwrap().to_string()]);
            ports.push(l);
        }
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "keygen {party}: {}", String::from_utf8_lossy(&out.stderr));
    stdout(&out)
}

fn fails(args: &[&str], dir: &Path) -> String {
    let out = node().args(args).arg("--dir").arg(dir).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert!(!out.status.success(), "node {args:?} succeeded");
    assert_eq!(err.lines().count(), 1, "node {args:?}: {err}");
    err
}

#[test]
fn keys_are_made_on_their_hosts_and_only_public_halves_are_assembled() {
    let root = std::env::temp_dir().join(format!("bftup-hosts-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    // A host per group, one for the guardians, one for the deployer, its
    // installer and the operator's client.
    let host = |party: &str| -> PathBuf {
        let name = match party.split('-').collect::<Vec<_>>()[..] {
            ["replica", g, _] => format!("group-{g}"),
            ["guardian", _] => "guardians".into(),
            _ => "deployer".into(),
        };
        root.join(name)
    };
    let mut ports = Vec::new();
    let mut public = String::new();
    for p in parties() {
        public.push_str(&keygen(&host(&p), &p, &mut ports));
        public.push('\n');
    }
    drop(ports);
    let deployer = root.join("deployer");
    std::fs::write(deployer.join("public.txt"), &public).unwrap();

    // Each host holds its own parties' keys and nothing else.
    for p in parties() {
        let name = if p == "deployer" { "deployer.key".to_string() } else { format!("{p}.key") };
        for other in ["group-1", "group-2", "guardians", "deployer"] {
            let there = root.join(other).join("keys").join(&name).exists();
            assert_eq!(there, host(&p) == root.join(other), "{name} in {other}");
        }
    }
    // Bad input: one line each, non-zero, nothing written.
    assert!(
        fails(&["keygen", "--party", "replica-1-0", "--addr", "127.0.0.1:1"], &root.join("group-1")).contains("exists")
    );
    assert!(fails(&["keygen", "--party", "replica-3-0"], &root.join("group-1")).contains("address"));
    assert!(fails(&["keygen", "--party", "relay-1"], &root.join("group-1")).contains("not a party"));
    assert!(fails(&["keygen", "--party", "installer-2", "--addr", "127.0.0.1:1"], &deployer).contains("no address"));
    let twice = root.join("twice.txt");
    std::fs::write(&twice, format!("{public}{}\n", public.lines().next().unwrap())).unwrap();
    assert!(fails(&["assemble", twice.to_str().unwrap()], &root.join("bad")).contains("named twice"));
    let gap = root.join("gap.txt");
    std::fs::write(&gap, public.lines().filter(|l| !l.contains("guardian-2")).collect::<Vec<_>>().join("\n")).unwrap();
    assert!(fails(&["assemble", gap.to_str().unwrap()], &root.join("bad")).contains("guardian 2 is missing"));
    assert!(!root.join("bad").join("cluster.json").exists());

    let out = node()
        .args(["assemble", "--guardians", "4", "--dir"])
        .arg(&deployer)
        .arg(deployer.join("public.txt"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cluster = bft_upgrade_node::config::Cluster::load(&deployer).unwrap();
    assert_eq!((cluster.groups.len(), cluster.guardians.len()), (2, 5));
    assert_eq!(cluster.groups[1].guardians, vec![2, 3, 4, 5]);
    // No secret is in what was printed or assembled.
    let assembled = std::fs::read_to_string(deployer.join("cluster.json")).unwrap();
    for p in parties() {
        let name = if p == "deployer" { "deployer.key".to_string() } else { format!("{p}.key") };
        let secret = std::fs::read_to_string(host(&p).join("keys").join(name)).unwrap();
        for half in [&secret[..64], &secret[secret.len() - 64..]] {
            assert!(!public.contains(half) && !assembled.contains(half), "{p}'s secret leaked");
        }
    }

    // The hosts run it: the public `cluster.json` copied to each, every
    // process started from its own host's directory. The deployer's sealed
    // payloads reach the replicas' hosts with the installer (ciphertext:
    // it opens only under the key the commit releases).
    let mut procs = Procs(Vec::new());
    for other in ["group-1", "group-2", "guardians"] {
        std::fs::copy(deployer.join("cluster.json"), root.join(other).join("cluster.json")).unwrap();
    }
    for p in parties().iter().filter(|p| listens(p)) {
        procs.0.push(start_party(node(), &host(p), p));
    }
    let at = |dir: &Path, args: &[&str]| {
        let out = node().args(args).arg("--dir").arg(dir).output().unwrap();
        eprintln!("$ node {args:?}\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        out
    };
    let bundle = stdout(&at(&deployer, &["deploy", "--text", "application v2"]));
    std::thread::sleep(std::time::Duration::from_secs(1));
    let install = at(&deployer, &["install", &bundle, "--timeout-s", "90"]);
    assert!(stdout(&install).starts_with("Committed"), "the install across hosts did not commit");
    let status = stdout(&at(&deployer, &["cluster", "status", "--wait"]));
    for g in 1..=2 {
        let line = status.lines().find(|l| l.starts_with(&format!("{g} "))).unwrap_or_default();
        assert!(line.contains("committed at 4/4") && line.contains("application v2"), "{line}");
    }
    drop(procs);
    let logs: String = parties()
        .iter()
        .filter(|p| p.starts_with("replica"))
        .map(|p| std::fs::read_to_string(host(p).join(format!("{p}.log"))).unwrap_or_default())
        .collect();
    assert!(logs.contains(r#"from="an installer""#), "no replica applied the payload the installer shipped");
    assert!(!root.join("group-1").join("payloads").exists(), "a payload file was on a replica's host");
    std::fs::remove_dir_all(&root).unwrap();
}

/// The processes a test started, killed when it ends (also on failure).
struct Procs(Vec<std::process::Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Every party made by `keygen` in one directory and assembled: the
/// cluster comes up and installs an upgrade, as one from `init` does.
#[test]
fn a_cluster_assembled_from_keygen_lines_installs_an_upgrade() {
    let c = TempCluster { dir: std::env::temp_dir().join(format!("bftup-assembled-{}", std::process::id())) };
    let _ = std::fs::remove_dir_all(&c.dir);
    let mut ports = Vec::new();
    let public: Vec<String> = parties().iter().map(|p| keygen(&c.dir, p, &mut ports)).collect();
    drop(ports);
    std::fs::write(c.dir.join("public.txt"), public.join("\n")).unwrap();
    let out = node().args(["assemble", "--dir"]).arg(&c.dir).arg(c.dir.join("public.txt")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(common::run(&["cluster", "up"], &c).status.success());
    let outcome = common::install(&c, &common::deploy(&c, "application v2"));
    assert!(outcome.starts_with("Committed"), "{outcome}");
}
