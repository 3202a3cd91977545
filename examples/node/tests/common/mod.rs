//! Shared by the integration tests: a cluster in a temporary directory,
//! stopped on drop (also when the test fails).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The built `node` binary.
pub fn node() -> Command {
    Command::new(env!("CARGO_BIN_EXE_node"))
}

/// Runs `node <args> --dir <cluster>`, echoing what it printed (shown when
/// the test fails).
pub fn run(args: &[&str], c: &TempCluster) -> std::process::Output {
    let out = node().args(args).arg("--dir").arg(c.path()).output().unwrap();
    eprintln!(
        "$ node {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `node deploy --text <text>`: the bundle's path.
pub fn deploy(c: &TempCluster, text: &str) -> String {
    let out = run(&["deploy", "--text", text], c);
    assert!(out.status.success(), "deploy failed");
    stdout(&out)
}

/// `node install <bundle>` (90 s at most): what it printed.
pub fn install(c: &TempCluster, bundle: &str) -> String {
    let out = run(&["install", bundle, "--timeout-s", "90"], c);
    assert!(out.status.success(), "install failed");
    stdout(&out)
}

/// What a command printed on stdout, trimmed.
pub fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A cluster directory whose processes are all killed when dropped.
pub struct TempCluster {
    pub dir: PathBuf,
}

impl TempCluster {
    pub fn new(name: &str, args: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!("bftup-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let status = node().arg("init").arg("--dir").arg(&dir).args(args).status().unwrap();
        assert!(status.success(), "node init failed");
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join("logs").join(format!("{name}.log"))).unwrap_or_default()
    }
}

/// Starts `p` (a replica or guardian) again as `node cluster up` did: its
/// configuration file, its log (appended), its pid file for `down`.
pub fn restart(c: &TempCluster, p: bft_upgrade_node::cluster::Proc) -> std::process::Child {
    use bft_upgrade_node::cluster::Proc;
    use std::os::unix::process::CommandExt;
    let role = match p {
        Proc::Replica(..) => "replica",
        Proc::Guardian(_) => "guardian",
        Proc::Installer(_) => panic!("installers are started by `node install`"),
    };
    let log = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(c.path().join("logs").join(format!("{}.log", p.name())))
        .unwrap();
    let child = node()
        .arg(role)
        .arg("--config")
        .arg(c.path().canonicalize().unwrap().join(format!("{}.json", p.name())))
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .process_group(0)
        .spawn()
        .unwrap();
    std::fs::write(c.path().join("pids").join(format!("{}.pid", p.name())), child.id().to_string()).unwrap();
    child
}

impl Drop for TempCluster {
    fn drop(&mut self) {
        let _ = node().args(["cluster", "down", "--dir"]).arg(&self.dir).status();
        std::thread::sleep(Duration::from_millis(200));
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("logs kept in {}", self.dir.display());
        }
    }
}

/// The parties of 2 groups x 4 replicas with 4 guardians each (a pool of
/// 5), one installer, one client and the deployer, by name (the per-host
/// tests make each one's keys with `node keygen`).
pub fn parties() -> Vec<String> {
    let mut all: Vec<String> = (1..=2).flat_map(|g| (0..4).map(move |i| format!("replica-{g}-{i}"))).collect();
    all.extend((1..=5).map(|k| format!("guardian-{k}")));
    all.extend(["installer-1", "client-1", "deployer"].map(String::from));
    all
}

/// Whether `party` is a process that listens (a replica or a guardian).
pub fn listens(party: &str) -> bool {
    party.starts_with("replica") || party.starts_with("guardian")
}

/// Starts the replica or guardian `party` with `node` (`cmd`, which may
/// wrap it) from the configuration `keygen` wrote in `dir`, logging to
/// `dir/<party>.log`.
pub fn start_party(mut cmd: Command, dir: &Path, party: &str) -> std::process::Child {
    let log = std::fs::File::create(dir.join(format!("{party}.log"))).unwrap();
    cmd.arg(party.split('-').next().unwrap())
        .arg("--config")
        .arg(dir.join(format!("{party}.json")))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}
