//! The local launcher (`node cluster up|down|status|check|scenario`): starts
//! every replica and guardian of a cluster as its own process on loopback,
//! stops them, asks replicas for their status, checks the databases after a
//! run, and runs the kill/restart scenario.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bft_upgrade::crypto::Code;
use bft_upgrade::step::Peer;
use bft_upgrade::wire::{GroupId, Outcome, UpgradeId};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::config::{hex, key_path, max_faulty, Cluster, Secrets};
use crate::frame::{Frame, GuardianStatus, Status};
use crate::store::Store;
use crate::transport::{Net, Policy};

/// A process's configuration file (`node replica --config`, `node guardian
/// --config`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProcessConfig {
    /// The cluster directory.
    pub cluster: PathBuf,
    /// The group (replicas).
    pub group: Option<u32>,
    /// The replica index or the guardian id.
    pub id: u32,
}

impl ProcessConfig {
    /// Reads a process configuration.
    ///
    /// # Errors
    /// When the file is missing or malformed.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Ok(serde_json::from_str(&text)?)
    }

    /// Writes the configuration of the replica or guardian `name` of the
    /// cluster in `dir` (canonical) to `dir/<name>.json`; returns the path.
    ///
    /// # Errors
    /// On I/O errors.
    pub fn write(dir: &Path, name: &str, group: Option<u32>, id: u32) -> Result<PathBuf> {
        let path = dir.join(format!("{name}.json"));
        let config = Self { cluster: dir.to_path_buf(), group, id };
        std::fs::write(&path, serde_json::to_string_pretty(&config)?)?;
        Ok(path)
    }
}

/// A process of the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proc {
    /// Replica (group, index).
    Replica(u32, u8),
    /// Guardian id.
    Guardian(u32),
    /// Installer id.
    Installer(u32),
}

impl Proc {
    /// Its name in file names.
    pub fn name(&self) -> String {
        match self {
            Proc::Replica(g, i) => format!("replica-{g}-{i}"),
            Proc::Guardian(k) => format!("guardian-{k}"),
            Proc::Installer(k) => format!("installer-{k}"),
        }
    }
}

fn exe() -> Result<PathBuf> {
    Ok(std::env::current_exe()?)
}

/// Every long-running process of the cluster.
pub fn processes(cluster: &Cluster) -> Vec<Proc> {
    let mut out = Vec::new();
    for g in &cluster.groups {
        for i in 0..g.replicas.len() {
            out.push(Proc::Replica(g.id, i as u8));
        }
    }
    for g in &cluster.guardians {
        out.push(Proc::Guardian(g.id));
    }
    out
}

/// Starts one process, detached in its own process group, logging to
/// `dir/logs/<name>.log`, its pid in `dir/pids/<name>.pid`.
///
/// # Errors
/// When the process cannot be started.
pub fn start(dir: &Path, p: Proc, extra: &[String]) -> Result<Child> {
    use std::os::unix::process::CommandExt;
    let dir = dir.canonicalize()?;
    std::fs::create_dir_all(dir.join("logs"))?;
    std::fs::create_dir_all(dir.join("pids"))?;
    let mut cmd = Command::new(exe()?);
    match p {
        Proc::Replica(g, i) => {
            let cfg = ProcessConfig::write(&dir, &p.name(), Some(g), u32::from(i))?;
            cmd.arg("replica").arg("--config").arg(cfg);
        }
        Proc::Guardian(k) => {
            let cfg = ProcessConfig::write(&dir, &p.name(), None, k)?;
            cmd.arg("guardian").arg("--config").arg(cfg);
        }
        Proc::Installer(k) => {
            cmd.arg("install").arg("--dir").arg(&dir).arg("--id").arg(k.to_string());
        }
    }
    cmd.args(extra);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("logs").join(format!("{}.log", p.name())))?;
    cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).process_group(0);
    let child = cmd.spawn().with_context(|| format!("starting {}", p.name()))?;
    std::fs::write(dir.join("pids").join(format!("{}.pid", p.name())), child.id().to_string())?;
    Ok(child)
}

/// SIGKILLs one process of this cluster by its pid file (only if that pid
/// still runs this cluster's binary on this cluster's directory).
pub fn kill(dir: &Path, p: Proc) -> bool {
    let pidfile = dir.join("pids").join(format!("{}.pid", p.name()));
    let Some(pid) = std::fs::read_to_string(&pidfile).ok().and_then(|s| s.trim().parse::<u32>().ok()) else {
        return false;
    };
    let _ = std::fs::remove_file(&pidfile);
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let ours = String::from_utf8_lossy(&cmdline).contains(&*dir.canonicalize().unwrap_or_default().to_string_lossy());
    if !ours {
        return false;
    }
    Command::new("kill").arg("-9").arg(pid.to_string()).status().is_ok_and(|s| s.success())
}

/// Asks every replica for its status and waits up to `wait` for them.
///
/// # Errors
/// When the client's key is missing.
pub async fn query(dir: &Path, wait: Duration) -> Result<Vec<Status>> {
    query_as(dir, 1, wait).await
}

/// [`query`] as operator client `client` (two commands running at once
/// use different clients).
///
/// # Errors
/// When the client's key is missing.
pub async fn query_as(dir: &Path, client: u32, wait: Duration) -> Result<Vec<Status>> {
    let cluster = Cluster::load(dir)?;
    let peers = cluster.groups.iter().flat_map(|g| cluster.replicas_of(GroupId(g.id))).collect();
    let answers = ask(dir, client, peers, wait).await?;
    Ok(answers.into_values().filter_map(|f| if let Frame::Status(s) = f { Some(s) } else { None }).collect())
}

/// Asks every guardian for its status and waits up to `wait` for them.
///
/// # Errors
/// When the client's key is missing.
pub async fn query_guardians(dir: &Path, wait: Duration) -> Result<Vec<GuardianStatus>> {
    let cluster = Cluster::load(dir)?;
    let peers = cluster.guardians.iter().map(|g| Peer::Guardian(g.id)).collect();
    let answers = ask(dir, 1, peers, wait).await?;
    Ok(answers.into_values().filter_map(|f| if let Frame::GuardianStatus(s) = f { Some(s) } else { None }).collect())
}

/// Sends `StatusRequest` to `peers` as the operator's client and takes
/// each one's first status answer, for up to `wait`.
async fn ask(dir: &Path, client: u32, peers: Vec<Peer>, wait: Duration) -> Result<BTreeMap<Peer, Frame>> {
    let cluster = Arc::new(Cluster::load(dir)?);
    let me = Peer::Client(client);
    let secrets = Secrets::load(&key_path(dir, me))?;
    let policy: Policy = Arc::new(|peer, frame| match (peer, frame) {
        (Peer::Replica { .. }, Frame::Status(_)) | (Peer::Guardian(_), Frame::GuardianStatus(_)) => Ok(()),
        _ => Err("a client takes only status answers".into()),
    });
    let (tx, mut rx) = mpsc::channel(1024);
    let net = Net::new(me, secrets.sign_key, cluster.clone(), tx, policy);
    for peer in &peers {
        net.send(*peer, &Frame::StatusRequest);
    }
    let mut out = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + wait;
    while out.len() < peers.len() {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((peer, frame))) if peers.contains(&peer) => {
                out.entry(peer).or_insert(frame);
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    Ok(out)
}

/// Each group's current version code, where more than `2f` replicas
/// agree: at least `f + 1` correct ones, and no other code can have as
/// many (a group caught between two codes, mid-commit, has none).
pub fn version_codes(cluster: &Cluster, statuses: &[Status]) -> Vec<(GroupId, Code)> {
    let mut out = Vec::new();
    for g in &cluster.groups {
        let f = max_faulty(g.replicas.len());
        let codes: Vec<&Code> =
            statuses.iter().filter(|s| s.group.0 == g.id).filter_map(|s| s.version_code.as_ref()).collect();
        if let Some(c) = codes.iter().find(|c| codes.iter().filter(|d| d.expose() == c.expose()).count() > 2 * f) {
            out.push((GroupId(g.id), (*c).clone()));
        }
    }
    out
}

/// Each group's outcome of `upgrade`, where more than `f` replicas report
/// it (so a correct one has: outcomes never differ between correct
/// replicas).
pub fn outcomes(cluster: &Cluster, statuses: &[Status], upgrade: UpgradeId) -> Vec<(GroupId, Option<Outcome>)> {
    cluster
        .groups
        .iter()
        .map(|g| {
            let f = max_faulty(g.replicas.len());
            let mine = statuses.iter().filter(|s| s.group.0 == g.id);
            let reported: Vec<Outcome> =
                mine.filter_map(|s| s.upgrades.iter().find(|u| u.upgrade == upgrade).and_then(|u| u.outcome)).collect();
            let agreed = [Outcome::Committed, Outcome::Aborted]
                .into_iter()
                .find(|o| reported.iter().filter(|r| *r == o).count() > f);
            (GroupId(g.id), agreed)
        })
        .collect()
}

/// Prints [`status_table`].
pub fn print_status(cluster: &Cluster, statuses: &[Status]) {
    print!("{}", status_table(cluster, statuses));
}

/// One line per group: replicas answering, the highest version, replicas
/// behind it or silent, the session, the latest upgrade and the payload.
pub fn status_table(cluster: &Cluster, statuses: &[Status]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<6} {:>8} {:>8} {:<16} {:>14}  {:<28} {:>6} {:>8}  payload",
        "group", "replicas", "version", "behind", "session", "latest upgrade", "module", "calls"
    );
    for g in &cluster.groups {
        let mine: Vec<&Status> = statuses.iter().filter(|s| s.group.0 == g.id).collect();
        let version = mine.iter().map(|s| s.version).max();
        let latest = mine.iter().filter_map(|s| s.upgrades.last()).max_by_key(|u| u.outcome.is_some());
        let state = match latest {
            None => "-".to_string(),
            Some(u) => {
                let count = mine
                    .iter()
                    .filter(|s| s.upgrades.iter().any(|x| x.upgrade == u.upgrade && x.outcome == u.outcome))
                    .count();
                let what = match u.outcome {
                    Some(Outcome::Committed) => "committed",
                    Some(Outcome::Aborted) => "aborted",
                    None => "in progress",
                };
                format!("{} {what} at {count}/{}", short(u.upgrade), g.replicas.len())
            }
        };
        // Each replica below the highest version, each upgrading one and
        // each silent one: the highest alone hides a replica that never
        // caught up.
        let behind: Vec<String> = (0..g.replicas.len())
            .filter_map(|i| match mine.iter().find(|s| usize::from(s.index) == i) {
                None => Some(format!("r{i} silent")),
                // Committed, not serving yet: its payload is on its way.
                Some(s) if !s.upgrading.is_empty() => Some(format!("r{i} v{} upgrading", s.version)),
                Some(s) if Some(s.version) < version => Some(format!("r{i} v{}", s.version)),
                Some(_) => None,
            })
            .collect();
        let behind = if behind.is_empty() { "-".to_string() } else { behind.join(", ") };
        let top = mine.iter().find(|s| Some(s.version) == version);
        let payload = top.map_or("", |s| s.payload.as_str());
        let module = top.map_or_else(|| "-".to_string(), |s| format!("v{}", s.app.module));
        let calls = mine.iter().map(|s| s.app_calls).max().unwrap_or(0);
        // No replica answered: unknown, not version 0.
        let version = version.map_or_else(|| "unknown".to_string(), |v| v.to_string());
        // The session most replicas are in, and the fewest units left in it.
        let epoch = mine.iter().map(|s| s.epoch).max().unwrap_or(0);
        let left = mine.iter().filter(|s| s.epoch == epoch).map(|s| s.units_left).min().unwrap_or(0);
        // A replica more sessions behind than its peers serve needs state
        // transfer.
        let stuck = mine.iter().filter(|s| s.epoch + (crate::replica::OLD_SESSIONS as u64) < epoch).count();
        let session = match (mine.is_empty(), stuck) {
            (true, _) => "-".to_string(),
            (false, 0) => format!("{epoch}/{left} left"),
            (false, k) => format!("{epoch}/{left} left, {k} stuck"),
        };
        let _ = writeln!(
            out,
            "{:<6} {:>5}/{:<2} {:>8} {:<16} {:>14}  {:<28} {:>6} {:>8}  {}",
            g.id,
            mine.len(),
            g.replicas.len(),
            version,
            behind,
            session,
            state,
            module,
            calls,
            payload
        );
    }
    out
}

/// Prints, every `interval` (`count` times, or until killed), each
/// group's module version and application calls per second since the last
/// line, and the cluster's: availability through an install as the paper
/// promises it. Asks as operator client 2 where there is one, so
/// `cluster status` (client 1) runs beside.
///
/// # Errors
/// When the client's key is missing.
pub async fn watch(dir: &Path, interval: Duration, count: Option<u64>) -> Result<()> {
    let cluster = Cluster::load(dir)?;
    let started = tokio::time::Instant::now();
    let mut last: Option<(tokio::time::Instant, BTreeMap<u32, u64>)> = None;
    let mut lines = 0;
    // Client 2 where its key is here (`init` makes three), else the only one.
    let client = if key_path(dir, Peer::Client(2)).exists() { 2 } else { 1 };
    while count.is_none_or(|c| lines < c) {
        let at = tokio::time::Instant::now();
        let statuses = query_as(dir, client, interval.min(Duration::from_secs(1))).await?;
        let calls: BTreeMap<u32, u64> = cluster
            .groups
            .iter()
            .map(|g| (g.id, statuses.iter().filter(|s| s.group.0 == g.id).map(|s| s.app_calls).max().unwrap_or(0)))
            .collect();
        if let Some((then, before)) = &last {
            let secs = at.duration_since(*then).as_secs_f64().max(1e-3);
            let mut line = format!("{:>7.1}s", at.duration_since(started).as_secs_f64());
            let mut total = 0.0;
            for g in &cluster.groups {
                let rate = calls[&g.id].saturating_sub(before.get(&g.id).copied().unwrap_or(0)) as f64 / secs;
                total += rate;
                let module = statuses.iter().filter(|s| s.group.0 == g.id).map(|s| s.app.module).max();
                let module = module.map_or_else(|| "v?".to_string(), |m| format!("v{m}"));
                line.push_str(&format!("  group {} {module} {rate:>6.1}/s", g.id));
            }
            println!("{line}  total {total:>7.1} calls/s");
            lines += 1;
        }
        last = Some((at, calls));
        tokio::time::sleep_until(at + interval).await;
    }
    Ok(())
}

/// One line for the guardians: each one's records held of its capacity
/// and how many of them released a kind, or that it did not answer.
pub fn guardian_line(cluster: &Cluster, guardians: &[GuardianStatus]) -> String {
    if cluster.guardians.is_empty() {
        return "guardians: none".to_string();
    }
    let each: Vec<String> = cluster
        .guardians
        .iter()
        .map(|g| match guardians.iter().find(|s| s.id == g.id) {
            None => format!("{} silent", g.id),
            Some(s) => format!("{} {}/{} held, {} released", g.id, s.held, s.capacity, s.releases),
        })
        .collect();
    let up = cluster.guardians.iter().filter(|g| guardians.iter().any(|s| s.id == g.id)).count();
    format!("guardians {up}/{} answer: {}", cluster.guardians.len(), each.join("; "))
}

/// An upgrade id, short: its first four random bytes (the four before
/// them name the deployer, the same in every upgrade of a cluster).
pub fn short(u: UpgradeId) -> String {
    hex(&u.0[4..8])
}

/// When each group committed `upgrade` (wall-clock ms): the time its
/// `(f + 1)`-th replica did, so at least one correct replica had.
pub fn commit_times(cluster: &Cluster, statuses: &[Status], upgrade: UpgradeId) -> Vec<(u32, Option<u64>)> {
    cluster
        .groups
        .iter()
        .map(|g| {
            let f = max_faulty(g.replicas.len());
            let mut times: Vec<u64> = statuses
                .iter()
                .filter(|s| s.group.0 == g.id)
                .filter_map(|s| {
                    s.upgrades.iter().find(|u| u.upgrade == upgrade && u.outcome == Some(Outcome::Committed))
                })
                .map(|u| u.finished_at_ms)
                .collect();
            times.sort();
            (g.id, times.get(f).copied())
        })
        .collect()
}

/// Starts every replica and guardian, and waits until every replica
/// answers and every process is still running a moment later.
///
/// # Errors
/// When a process cannot be started, exits (named, with the last line of
/// its log), or the replicas do not answer in time.
pub async fn up(dir: &Path, wait: Duration) -> Result<()> {
    let cluster = Cluster::load(dir)?;
    let mut children = Vec::new();
    for p in processes(&cluster) {
        children.push((p, start(dir, p, &[])?));
    }
    let total: usize = cluster.groups.iter().map(|g| g.replicas.len()).sum();
    let started = Instant::now();
    let mut answered_at = None;
    loop {
        for (p, child) in &mut children {
            if let Some(status) = child.try_wait()? {
                let log =
                    std::fs::read_to_string(dir.join("logs").join(format!("{}.log", p.name()))).unwrap_or_default();
                let last = log.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("(empty log)").trim();
                let name = p.name();
                // No half cluster: the others stop too.
                down(dir);
                bail!("{name} exited ({status}) while the cluster came up: {last}");
            }
        }
        // Guardians answer nobody: a moment after the replicas answer,
        // every process must still be alive (one that cannot bind its port
        // exits at once).
        if let Some(at) = answered_at {
            if Instant::now() >= at {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let s = query(dir, Duration::from_millis(800)).await?;
        if s.len() == total {
            answered_at = Some(Instant::now() + Duration::from_millis(700));
            continue;
        }
        if started.elapsed() > wait {
            bail!("only {} of {total} replicas answer after {wait:?}", s.len());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Stops every process of the cluster.
pub fn down(dir: &Path) -> usize {
    let Ok(cluster) = Cluster::load(dir) else { return 0 };
    let mut n = 0;
    for p in processes(&cluster).into_iter().chain((1..=3).map(Proc::Installer)) {
        n += usize::from(kill(dir, p));
    }
    n
}

/// What the databases say after a run.
#[derive(Debug, Default)]
pub struct Check {
    /// Problems found; empty means the run was correct.
    pub violations: Vec<String>,
    /// Per group: (replicas committed, replicas) for the checked upgrade.
    pub groups: Vec<(u32, usize, usize)>,
    /// Release-log rows read from the guardians.
    pub releases: usize,
    /// The application, when every group's state was read.
    pub app: Option<AppCheck>,
}

/// The application's checks over every group (each from the replica of
/// the group that executed the most: its state holds every operation that
/// any `f + 1` of its replicas executed, so a credit another group shows
/// has its debit there). Money moves from a caller's account into its
/// escrow, from there to the callee (served), or back (refused, failed);
/// so with no money made or lost, the accounts and the calls in flight the
/// callee has not credited hold the total exactly (up to what calls
/// dropped unanswered hold: the callee may have it).
#[derive(Debug, Clone, Default)]
pub struct AppCheck {
    /// Calls served, by (caller's module, callee's module) version.
    pub served: BTreeMap<(u64, u64), u64>,
    /// Σ accounts.
    pub balances: i64,
    /// Σ escrow and limbo: paid by calls not (yet) answered.
    pub in_flight: i64,
    /// Of that, the escrow of calls the callee has not credited.
    pub uncredited: i64,
    /// Paid by calls dropped unanswered.
    pub limbo: i64,
    /// What the groups started with together.
    pub total: i64,
    /// Refused, restarted and failed calls, summed.
    pub refused: u64,
    pub restarted: u64,
    pub failed: u64,
}

impl AppCheck {
    /// Sums the groups' applications.
    pub fn of(groups: &[(u32, crate::replica::Ledger)]) -> Self {
        let mut c = Self { total: crate::app::INITIAL_BALANCE * groups.len() as i64, ..Self::default() };
        let credited: BTreeMap<u32, std::collections::BTreeSet<(u32, u64)>> =
            groups.iter().map(|(g, l)| (*g, l.credited.iter().copied().collect())).collect();
        for (g, l) in groups {
            for (txn, callee, amount) in &l.escrow {
                if !credited.get(callee).is_some_and(|s| s.contains(&(*g, *txn))) {
                    c.uncredited += amount;
                }
            }
            c.limbo += l.app.limbo;
        }
        for a in groups.iter().map(|(_, l)| &l.app) {
            for (caller, callee, n) in &a.served {
                *c.served.entry((*caller, *callee)).or_default() += n;
            }
            c.balances += a.balance;
            c.in_flight += a.escrow + a.limbo;
            c.refused += a.refused;
            c.restarted += a.restarted;
            c.failed += a.failed;
        }
        c
    }

    /// Calls served with the caller and the callee on different module
    /// versions.
    pub fn mixed(&self) -> u64 {
        self.served.iter().filter(|((a, b), _)| a != b).map(|(_, n)| n).sum()
    }

    /// What is wrong: mixed versions, money made, money lost.
    pub fn violations(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.mixed() > 0 {
            let pairs: Vec<String> =
                self.served.iter().filter(|((a, b), _)| a != b).map(|((a, b), n)| format!("v{a}->v{b}: {n}")).collect();
            v.push(format!("{} calls ran between different module versions ({})", self.mixed(), pairs.join(", ")));
        }
        let held = self.balances + self.uncredited;
        if held > self.total {
            v.push(format!(
                "money made: the accounts hold {} and calls not credited yet {} of {}",
                self.balances, self.uncredited, self.total
            ));
        }
        if held + self.limbo < self.total {
            v.push(format!(
                "money lost: the accounts hold {}, calls not credited yet {} and calls dropped {} of {}",
                self.balances, self.uncredited, self.limbo, self.total
            ));
        }
        v
    }

    /// One line: calls by versions, accounts, in flight.
    pub fn line(&self) -> String {
        let pairs: Vec<String> = self.served.iter().map(|((a, b), n)| format!("v{a}->v{b} {n}")).collect();
        format!(
            "application: calls served {}; mixed versions {}; refused {}, restarted {}, failed {}; accounts {} + not credited {} (in flight {}) (total {})",
            if pairs.is_empty() { "none".to_string() } else { pairs.join(", ") },
            self.mixed(),
            self.refused,
            self.restarted,
            self.failed,
            self.balances,
            self.uncredited,
            self.in_flight,
            self.total
        )
    }
}

/// Reads every replica's and guardian's database (the processes must be
/// stopped): every replica of every group must have committed `upgrade`
/// (by default the latest upgrade), no group may have committed an upgrade another aborted,
/// no guardian may have released both kinds for one group and upgrade, and
/// no group may have had `2F + 1` releases of both kinds.
///
/// # Errors
/// When a database cannot be read.
pub fn check(dir: &Path, upgrade: Option<UpgradeId>) -> Result<Check> {
    let cluster = Cluster::load(dir)?;
    let mut out = Check::default();
    // Without an upgrade named, the latest one the first replica saw.
    let upgrade = match (upgrade, cluster.groups.first()) {
        (Some(u), _) => Some(u),
        (None, Some(g)) => {
            crate::replica::read_state(dir, g.id, 0)?.and_then(|(_, ups, _, _)| ups.last().map(|(u, _)| *u))
        }
        (None, None) => None,
    };
    let mut outcomes: BTreeMap<UpgradeId, Vec<(u32, Outcome)>> = BTreeMap::new();
    // Per group, the application of the replica that executed the most.
    let mut apps: Vec<(u32, crate::replica::Ledger)> = Vec::new();
    for g in &cluster.groups {
        let mut committed = 0;
        let mut furthest: Option<(u64, crate::replica::Ledger)> = None;
        for i in 0..g.replicas.len() {
            let state = crate::replica::read_state(dir, g.id, i as u8)?;
            let Some((_, ups, app, executed)) = state else {
                out.violations.push(format!("replica {}/{i} has no state", g.id));
                continue;
            };
            for (u, o) in &ups {
                if let Some(o) = o {
                    outcomes.entry(*u).or_default().push((g.id, *o));
                }
            }
            if upgrade.is_some_and(|want| ups.iter().any(|(u, o)| *u == want && *o == Some(Outcome::Committed))) {
                committed += 1;
            }
            if furthest.as_ref().is_none_or(|(e, _)| executed > *e) {
                furthest = Some((executed, app));
            }
        }
        apps.extend(furthest.map(|(_, app)| (g.id, app)));
        if let Some(want) = upgrade {
            if committed < g.replicas.len() {
                out.violations.push(format!(
                    "group {}: {committed}/{} replicas committed {}",
                    g.id,
                    g.replicas.len(),
                    short(want)
                ));
            }
        }
        out.groups.push((g.id, committed, g.replicas.len()));
    }
    if apps.len() == cluster.groups.len() {
        out.app = Some(AppCheck::of(&apps));
        out.violations.extend(out.app.as_ref().map(AppCheck::violations).unwrap_or_default());
    }
    for (u, list) in &outcomes {
        let c = list.iter().any(|(_, o)| *o == Outcome::Committed);
        let a = list.iter().any(|(_, o)| *o == Outcome::Aborted);
        if c && a {
            out.violations.push(format!("upgrade {} committed at one group and aborted at another", short(*u)));
        }
    }
    // Guardians: (upgrade, group) → kinds released, per guardian.
    let mut per_group: BTreeMap<([u8; 16], u32), [usize; 2]> = BTreeMap::new();
    for gd in &cluster.guardians {
        let path = dir.join("data").join(format!("guardian-{}", gd.id)).join("state.redb");
        if !path.exists() {
            continue;
        }
        let store = Store::open(&path)?;
        let mut mine: BTreeMap<([u8; 16], u32), [bool; 2]> = BTreeMap::new();
        for r in bft_upgrade::host::releases(&store).map_err(|e| anyhow!("guardian {}: {e}", gd.id))? {
            out.releases += 1;
            let kind = usize::from(r.kind == bft_upgrade::crypto::ShareKind::Cancel);
            if let Some(slot) = mine.entry((r.upgrade.0, r.group.0)).or_default().get_mut(kind) {
                *slot = true;
            }
        }
        for ((u, g), kinds) in mine {
            if kinds[0] && kinds[1] {
                out.violations.push(format!(
                    "guardian {} released both kinds for upgrade {} at group {g}",
                    gd.id,
                    hex(&u[..4])
                ));
            }
            let counts = per_group.entry((u, g)).or_default();
            counts[0] += usize::from(kinds[0]);
            counts[1] += usize::from(kinds[1]);
        }
    }
    for ((u, g), counts) in per_group {
        let k = cluster.group(g).map_or(0, |x| x.guardians.len());
        let threshold = 2 * max_faulty(k) + 1;
        if counts[0] >= threshold && counts[1] >= threshold {
            out.violations.push(format!("group {g}: both codes of upgrade {} could be rebuilt", hex(&u[..4])));
        }
    }
    Ok(out)
}

/// The scenario's knobs.
pub struct Scenario {
    /// Kill one replica per group and the installer mid-way.
    pub kills: bool,
    /// How long after the installer starts to kill.
    pub kill_after: Duration,
    /// How long the killed processes stay down.
    pub down_for: Duration,
    /// The whole run's bound.
    pub timeout: Duration,
}

/// Deploys an upgrade on the running cluster in `dir`, installs it with
/// installer 1 (killing one replica per group and the installer mid-way,
/// then restarting them), waits until every replica committed, and prints
/// each group's version and status. Returns the upgrade and the time from
/// starting the installer to the last group's commit.
///
/// # Errors
/// When a step fails or the run exceeds its bound.
pub async fn scenario(dir: &Path, s: &Scenario) -> Result<(UpgradeId, Duration)> {
    let cluster = Cluster::load(dir)?;
    let bundle_path = crate::deployer::deploy(dir, "application v2")?;
    let bundle = crate::deployer::load_bundle(&bundle_path)?;
    let upgrade = bundle.header.upgrade;
    println!("deployed upgrade {} over {} groups: {}", short(upgrade), bundle.groups.len(), bundle_path.display());
    let t0 = crate::now_ms();
    let started = Instant::now();
    let installer_args = [bundle_path.to_string_lossy().into_owned()];
    let mut installer = start(dir, Proc::Installer(1), &installer_args)?;
    if s.kills {
        tokio::time::sleep(s.kill_after).await;
        let mut killed = vec![Proc::Installer(1)];
        for g in &cluster.groups {
            killed.push(Proc::Replica(g.id, (g.id as usize % g.replicas.len()) as u8));
        }
        for p in &killed {
            let ok = kill(dir, *p);
            println!("SIGKILL {} ({})", p.name(), if ok { "killed" } else { "was not running" });
        }
        let _ = installer.wait();
        tokio::time::sleep(s.down_for).await;
        for p in &killed {
            let child = start(dir, *p, if matches!(p, Proc::Installer(_)) { &installer_args } else { &[] })?;
            if matches!(p, Proc::Installer(_)) {
                installer = child;
            }
            println!("restarted {}", p.name());
        }
    }
    let total: usize = cluster.groups.iter().map(|g| g.replicas.len()).sum();
    let last = loop {
        let statuses = query(dir, Duration::from_millis(1500)).await?;
        let done = statuses
            .iter()
            .filter(|st| st.upgrades.iter().any(|u| u.upgrade == upgrade && u.outcome == Some(Outcome::Committed)))
            .count();
        if done == total {
            print_status(&cluster, &statuses);
            let times = commit_times(&cluster, &statuses, upgrade);
            let last = times.iter().filter_map(|(_, t)| *t).max().unwrap_or(t0);
            for st in statuses.iter().filter(|st| st.index == 0) {
                if let Some(u) = st.upgrades.iter().find(|u| u.upgrade == upgrade) {
                    println!("group {} replica 0 committed via {}", st.group.0, u.via);
                }
            }
            break last;
        }
        if started.elapsed() > s.timeout {
            print_status(&cluster, &statuses);
            bail!("only {done}/{total} replicas committed after {:?}", s.timeout);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The installer finishes on its own once a group acknowledged.
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until {
        if installer.try_wait()?.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = kill(dir, Proc::Installer(1));
    let _ = installer.wait();
    Ok((upgrade, Duration::from_millis(last.saturating_sub(t0))))
}

/// Parses an upgrade id (32 hex digits).
///
/// # Errors
/// For bad hex.
pub fn parse_upgrade(s: &str) -> Result<UpgradeId> {
    let b: [u8; 16] = crate::config::unhex(s)?.try_into().map_err(|_| anyhow!("an upgrade id is 16 bytes"))?;
    Ok(UpgradeId(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deployer::{init, Shape};

    fn status(group: u32, index: u8, version: u64) -> Status {
        Status {
            group: GroupId(group),
            index,
            version,
            version_code: None,
            executed: 0,
            app_calls: 0,
            app: crate::frame::AppStatus::default(),
            payload: format!("v{version}"),
            upgrading: Vec::new(),
            callees_upgrading: 0,
            upgrades: Vec::new(),
            epoch: 2,
            units_left: 10,
        }
    }

    /// The table names each replica behind the group's highest version,
    /// each upgrading one and each silent one; the guardian line each silent guardian.
    #[test]
    fn status_names_replicas_behind_or_silent_and_silent_guardians() {
        let dir = std::env::temp_dir().join(format!("bftup-status-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let shape = Shape {
            groups: 2,
            replicas: 4,
            guardians: 2,
            unit_delay_ms: 50,
            app_interval_ms: 0,
            proactive: true,
            session_rounds: 100,
        };
        let cluster = init(&dir, &shape).unwrap();
        let mut upgrading = status(2, 3, 2);
        upgrading.upgrading.push(UpgradeId([7; 16]));
        let statuses = [status(1, 0, 3), status(1, 1, 3), status(1, 2, 1), status(2, 0, 3), status(2, 1, 3)]
            .into_iter()
            .chain([status(2, 2, 3), upgrading])
            .collect::<Vec<_>>();
        let table = status_table(&cluster, &statuses);
        let line = |g: u32| table.lines().find(|l| l.starts_with(&format!("{g} "))).unwrap().to_string();
        let one = line(1);
        assert!(one.contains(" 3/4 ") && one.contains(" 3 ") && one.contains("r2 v1, r3 silent"), "{one}");
        assert!(one.ends_with(" v3"), "the payload of the highest version: {one}");
        let two = line(2);
        assert!(two.contains(" 4/4 ") && two.contains("r3 v2 upgrading"), "{two}");
        let held = GuardianStatus { id: 1, held: 2, capacity: 64, releases: 1 };
        assert_eq!(
            guardian_line(&cluster, std::slice::from_ref(&held)),
            "guardians 1/3 answer: 1 2/64 held, 1 released; 2 silent; 3 silent"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
