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

/// Every replica's status, as `node cluster status` asks for it.
pub fn statuses(c: &TempCluster) -> Vec<bft_upgrade_node::frame::Status> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(bft_upgrade_node::cluster::query(c.path(), Duration::from_secs(2))).unwrap()
}

/// Application calls completed so far, cluster-wide (each group's most
/// advanced replica), and when that was read.
pub fn calls(c: &TempCluster) -> (std::time::Instant, u64) {
    let s = statuses(c);
    let mut groups: std::collections::BTreeMap<u32, u64> = std::collections::BTreeMap::new();
    for x in &s {
        let e = groups.entry(x.group.0).or_default();
        *e = (*e).max(x.app_calls);
    }
    (std::time::Instant::now(), groups.values().sum())
}

/// Calls per second between two [`calls`] readings.
pub fn rate(from: (std::time::Instant, u64), to: (std::time::Instant, u64)) -> f64 {
    to.1.saturating_sub(from.1) as f64 / to.0.duration_since(from.0).as_secs_f64().max(1e-3)
}

/// A module shipped in `modules/`.
pub fn module(name: &str) -> String {
    format!("{}/modules/{name}.wat", env!("CARGO_MANIFEST_DIR"))
}

/// Polls until every group's replicas all run module `version` (60 s at
/// most).
pub fn wait_for_module(c: &TempCluster, groups: usize, replicas: usize, version: u64) {
    let started = std::time::Instant::now();
    loop {
        let s = statuses(c);
        if s.len() == groups * replicas && s.iter().all(|x| x.app.module == version && x.upgrading.is_empty()) {
            return;
        }
        let seen: Vec<(u32, u8, u64)> = s.iter().map(|x| (x.group.0, x.index, x.app.module)).collect();
        assert!(started.elapsed() < Duration::from_secs(60), "not every replica runs module v{version}: {seen:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}
