//! The scaling report (issue 9, parts 2 and 3): one upgrade over 10, 100,
//! 1,000 and 10,000 groups of 4 replicas, in the simulator and with the
//! roles timed directly; the criterion results of `benches/protocol.rs` read
//! back from `target/criterion`; baselines beside them. Writes
//! `BENCHMARKS.md` and `benchmarks.json` at the repository root.
//!
//! ```sh
//! cargo bench --bench protocol                                   # micro-benchmarks first
//! cargo run --release --example scale             # then this
//! cargo run --release --example scale -- --groups 10,100 --out /tmp/x   # quick look
//! cargo run --release --example scale -- --json   # the JSON on stdout too
//! ```
//!
//! `benches/full.sh` runs both and passes the criterion run's duration in.
//!
//! Options: `--groups 10,100,1000,10000`; `--modes piggyback,proactive,both,guardians`;
//! `--out DIR` (where the two files go; default the repository root);
//! `--no-write`; `--json`; `--criterion DIR` (default `target/criterion`);
//! `--criterion-seconds N`; `--budget-ms N`, the wall time a simulator run
//! may be predicted to take before it is skipped (default 900,000).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant as Clock};

use bft_upgrade::crypto::{Code, DeployerKey, PayloadRef, PublicKey, ReplicaSecretKey};
use bft_upgrade::deployer::{Deployer, GroupTarget, UpgradePlan};
use bft_upgrade::installer::{Finishing, Installer, InstallerOptions};

/// The scaling runs measure diffusion: the installer commits through one
/// group and leaves the rest to diffusion for as long as a run may take.
fn diffusion() -> InstallerOptions {
    InstallerOptions::default().finishing(Finishing::Diffusion { grace: u32::MAX })
}
use bft_upgrade::sim::{Report, SimConfig, World};
use bft_upgrade::step::{Instant, Peer};
use bft_upgrade::wire::{
    self, Answer, DeployerId, Finish, GroupId, Membership, Message, Outcome, Piece, Reply, ResourceId, UpgradeId,
};
use chacha20::ChaCha20Rng;
use cpu_time::{ProcessTime, ThreadTime};
use rand_core::SeedableRng;
use serde_json::{json, Map, Value};

#[path = "../benches/common/mod.rs"]
mod common;
use common::small_payload;

/// Replicas per group in every scaling run.
const N: usize = 4;
/// `f` of a group of `N`.
const F: usize = (N - 1) / 3;
/// Application call interval of the piggyback runs, ms.
const APP_INTERVAL_MS: u64 = 20;
/// Out-degree of the diffusion overlay the scaling runs use by default.
const OVERLAY: usize = 3;
/// The simulator's seed and material seed.
const SEED: u64 = 9;
/// ECDSA P-256 signature (`r || s`) and a one-byte signer index.
const SIG_BYTES: usize = 64;
const SIGNER_INDEX_BYTES: usize = 1;
/// Our commit path carries one 32-byte trigger code.
const CODE_BYTES: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Mode {
    Piggyback,
    Proactive,
    Both,
    Guardians,
}

impl Mode {
    const ALL: [Mode; 4] = [Mode::Piggyback, Mode::Proactive, Mode::Both, Mode::Guardians];

    fn name(self) -> &'static str {
        match self {
            Mode::Piggyback => "piggyback",
            Mode::Proactive => "proactive",
            Mode::Both => "both",
            Mode::Guardians => "guardians",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Mode::Piggyback => "piggyback only (application call every 20 ms per group, no proactive calls)",
            Mode::Proactive => "proactive only (no application traffic)",
            Mode::Both => "piggyback and proactive",
            Mode::Guardians => "guardians only (4 per group, shared along the overlay, or the ring without one; no piggyback, no proactive)",
        }
    }

    fn parse(s: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.name() == s)
    }
}

struct Args {
    groups: Vec<usize>,
    modes: Vec<Mode>,
    out: PathBuf,
    write: bool,
    json_stdout: bool,
    criterion: PathBuf,
    criterion_seconds: Option<u64>,
    budget_ms: u64,
    /// Out-degree of the diffusion overlay (`bft_upgrade::overlay`); 0: the
    /// ring alone.
    overlay: usize,
    /// Whether `--groups` / `--modes` were given.
    groups_given: bool,
    modes_given: bool,
    /// `--million-run PATH`: only the million-replica runs, written to PATH.
    million_run: Option<PathBuf>,
    /// `--million PATH`: a million-replica result to fold into the report.
    million: Option<PathBuf>,
    /// `--million-one MODE GROUPS`: one run of `--million-run`, in its own
    /// process.
    million_one: Option<(Mode, usize)>,
}

fn args() -> Args {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let mut a = Args {
        groups: vec![10, 100, 1_000, 10_000],
        modes: Mode::ALL.to_vec(),
        out: root,
        write: true,
        json_stdout: false,
        criterion: target.join("criterion"),
        criterion_seconds: None,
        budget_ms: 900_000,
        overlay: OVERLAY,
        groups_given: false,
        modes_given: false,
        million_run: None,
        million: None,
        million_one: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| usage(&format!("{arg} needs a value")));
        match arg.as_str() {
            "--groups" => {
                a.groups = value().split(',').map(|s| s.parse().unwrap_or_else(|_| usage("bad --groups"))).collect();
                a.groups_given = true;
            }
            "--modes" => {
                a.modes = value().split(',').map(|s| Mode::parse(s).unwrap_or_else(|| usage("bad --modes"))).collect();
                a.modes_given = true;
            }
            "--million-run" => a.million_run = Some(PathBuf::from(value())),
            "--million" => a.million = Some(PathBuf::from(value())),
            "--million-one" => {
                let mode = Mode::parse(&value()).unwrap_or_else(|| usage("bad --million-one mode"));
                let groups = value().parse().unwrap_or_else(|_| usage("bad --million-one groups"));
                a.million_one = Some((mode, groups));
            }
            "--out" => a.out = PathBuf::from(value()),
            "--no-write" => a.write = false,
            "--json" => a.json_stdout = true,
            "--criterion" => a.criterion = PathBuf::from(value()),
            "--criterion-seconds" => a.criterion_seconds = value().parse().ok(),
            "--budget-ms" => a.budget_ms = value().parse().unwrap_or_else(|_| usage("bad --budget-ms")),
            "--overlay" => a.overlay = value().parse().unwrap_or_else(|_| usage("bad --overlay")),
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    a
}

fn usage(msg: &str) -> ! {
    if !msg.is_empty() {
        eprintln!("scale: {msg}");
    }
    eprintln!(
        "usage: scale [--groups 10,100,1000,10000] [--modes piggyback,proactive,both,guardians] [--out DIR] \
         [--no-write] [--json] [--criterion DIR] [--criterion-seconds N] [--budget-ms N] [--overlay D] \
         [--million FILE]\n       scale --million-run FILE [--groups 10,250000] [--modes proactive,guardians]"
    );
    std::process::exit(2)
}

fn main() {
    // Installers for 16,384 and 262,144 groups (about 4.7 and 75 MB) are
    // built by value before boxing: give the work a deep stack.
    let worker = std::thread::Builder::new().stack_size(1 << 30).spawn(run).expect("thread");
    worker.join().expect("scale run");
}

// ----- the roles, timed directly ------------------------------------------

/// Deployer and installer CPU for one upgrade over `groups` groups.
struct Cpu {
    groups: usize,
    keygen: Duration,
    plan: Duration,
    pieces: Duration,
    /// The sequential pieces by the wall clock, and the same pieces built
    /// by `UpgradePlan::pieces` on `threads` threads.
    pieces_wall: Duration,
    parallel_wall: Duration,
    threads: usize,
    payload_seal: Duration,
    box_opening: Duration,
    installer: Duration,
    decided: bool,
    piece_bytes: usize,
}

impl Cpu {
    fn deployer(&self) -> Duration {
        self.plan + self.pieces
    }
    fn deployer_per_replica_us(&self) -> f64 {
        us(self.deployer()) / (self.groups * N) as f64
    }
    fn parallel_speedup(&self) -> f64 {
        self.pieces_wall.as_secs_f64() / self.parallel_wall.as_secs_f64().max(1e-9)
    }
    fn installer_per_group_us(&self) -> f64 {
        us(self.installer) / self.groups as f64
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn cpu(groups: usize) -> Cpu {
    let mut rng = ChaCha20Rng::from_seed([groups as u8; 32]);
    let t = ThreadTime::now();
    let keys: Vec<Vec<ReplicaSecretKey>> =
        (0..groups).map(|_| (0..N).map(|_| ReplicaSecretKey::random(&mut rng)).collect()).collect();
    let memberships: Vec<Membership> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let pks: Vec<PublicKey> = k.iter().map(ReplicaSecretKey::public_key).collect();
            Membership::new(GroupId(i as u32 + 1), &pks).expect("membership")
        })
        .collect();
    let keygen = t.elapsed();
    let deployer = Deployer::new(DeployerId(1), DeployerKey::random(&mut rng));
    let ids: Vec<GroupId> = memberships.iter().map(|m| m.group).collect();
    let genesis = Code::from_bytes([1; 32]);

    let t = ThreadTime::now();
    let plan = UpgradePlan::new(&mut rng, deployer.id(), 1, &ids).expect("plan");
    let plan_time = t.elapsed();
    let t = ThreadTime::now();
    let payloads: Vec<PayloadRef> = ids.iter().map(|g| small_payload(&plan, *g)).collect();
    let payload_seal = t.elapsed();
    let resources = [ResourceId(1)];
    let targets: Vec<GroupTarget> = memberships
        .iter()
        .zip(&payloads)
        .map(|(m, payload)| GroupTarget {
            membership: m,
            resources: &resources,
            prev_version: &genesis,
            guardians: None,
            payload: *payload,
            next: None,
        })
        .collect();
    let t = ThreadTime::now();
    let wall = Clock::now();
    let pieces: Vec<Piece> = targets.iter().map(|target| plan.piece(&deployer, target).expect("piece")).collect();
    let pieces_wall = wall.elapsed();
    let pieces_time = t.elapsed();
    // The same pieces on every core, wall clock against wall clock.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
    let wall = Clock::now();
    let parallel = pool.install(|| plan.pieces(&deployer, &targets));
    let parallel_wall = wall.elapsed();
    assert!(
        parallel.iter().map(Result::as_ref).eq(pieces.iter().map(Ok)),
        "parallel pieces differ from the sequential ones"
    );
    drop(parallel);
    let piece_bytes = wire::encoded_len(&pieces[0]);

    // Every replica's genuine answer, as a fault-free run delivers them.
    let t = ThreadTime::now();
    let answers: Vec<Vec<(Peer, Answer)>> = pieces
        .iter()
        .zip(&keys)
        .map(|(p, ks)| {
            let h = &p.header;
            (0..N)
                .map(|i| {
                    let opened = p.open_for(i, &ks[i]).expect("open");
                    let reply = Reply::Accepted(opened.secret_share);
                    let from = Peer::Replica { group: h.group, index: i as u8 };
                    (from, Answer { upgrade: h.upgrade, group: h.group, replica: i as u8, reply })
                })
                .collect()
        })
        .collect();
    let box_opening = t.elapsed();

    let list: Vec<(GroupId, u8)> = memberships.iter().map(|m| (m.group, m.f)).collect();
    let header = plan.header().clone();
    let (installer, decided) = if groups <= 256 {
        let mut i = Box::new(Installer::<256, 4096>::new(1, header, &list, diffusion()).expect("installer"));
        time_installer(&mut i, &answers, &pieces)
    } else if groups <= 16_384 {
        let mut i = Box::new(Installer::<16384, 32768>::new(1, header, &list, diffusion()).expect("installer"));
        time_installer(&mut i, &answers, &pieces)
    } else {
        let mut i = Box::new(Installer::<262_144, 524_288>::new(1, header, &list, diffusion()).expect("installer"));
        time_installer(&mut i, &answers, &pieces)
    };
    Cpu {
        groups,
        keygen,
        plan: plan_time,
        pieces: pieces_time,
        pieces_wall,
        parallel_wall,
        threads,
        payload_seal,
        box_opening,
        installer,
        decided,
        piece_bytes,
    }
}

/// Times `handle_answer` over every answer, group by group.
fn time_installer<const G: usize, const P: usize>(
    installer: &mut Installer<G, P>,
    answers: &[Vec<(Peer, Answer)>],
    pieces: &[Piece],
) -> (Duration, bool) {
    let t = ThreadTime::now();
    for (group, piece) in answers.iter().zip(pieces) {
        for (from, a) in group {
            let step = installer.handle_answer(Instant(0), *from, a, piece).expect("answer");
            let _ = std::hint::black_box(step);
        }
    }
    let elapsed = t.elapsed();
    (elapsed, matches!(installer.decided(), Some((Outcome::Committed, _))))
}

// ----- the simulator --------------------------------------------------------

struct SimRun {
    groups: usize,
    mode: Mode,
    /// `None`: not run, with the reason.
    report: Result<Report, String>,
    setup: Duration,
    run: Duration,
}

impl SimRun {
    fn ok(&self) -> Option<&Report> {
        self.report.as_ref().ok().filter(|r| r.violation.is_none() && r.liveness.is_none())
    }
    fn messages_per_replica(&self) -> Option<f64> {
        self.ok().map(|r| (r.metrics.replica_messages + r.metrics.installer_messages) as f64 / r.replicas as f64)
    }
    fn bytes_per_replica(&self) -> Option<f64> {
        self.ok().map(|r| (r.metrics.replica_bytes + r.metrics.installer_bytes) as f64 / r.replicas as f64)
    }
}

/// `drain_until`: keep the run going until this virtual time, so messages
/// still in flight at full commit are counted (through the "fault phase",
/// which with a perfect network injects nothing, or, with application
/// traffic, as the deadline); `None` stops at full commit.
fn sim_config(groups: usize, mode: Mode, drain_until: Option<u64>, overlay: usize) -> SimConfig {
    let mut cfg = SimConfig::simple(SEED, groups, N);
    cfg.material_seed = SEED;
    // Calls on a ring: every group calls two neighbors, whatever the count.
    cfg.extra_edges = 0;
    // Codes also follow the overlay, and guardians are shared along it.
    cfg.overlay = overlay;
    // The installer commits through one group; diffusion does the rest.
    cfg.finish_all = false;
    match mode {
        Mode::Piggyback => {
            cfg.proactive = false;
            cfg.app_interval_ms = Some(APP_INTERVAL_MS);
        }
        Mode::Proactive => {
            cfg.proactive = true;
            cfg.app_interval_ms = None;
        }
        Mode::Both => {
            cfg.proactive = true;
            cfg.app_interval_ms = Some(APP_INTERVAL_MS);
        }
        Mode::Guardians => {
            cfg.proactive = false;
            cfg.app_interval_ms = None;
            cfg.guardians = 4;
        }
    }
    // Diffusion around a ring takes time linear in its length.
    cfg.deadline_ms = 120_000 + 100 * groups as u64;
    cfg.max_events = u64::MAX;
    match (mode, drain_until) {
        // Application traffic never stops: the run ends at the deadline.
        (Mode::Both, Some(t)) => {
            cfg.fault_phase_ms = t;
            cfg.deadline_ms = t;
        }
        (_, Some(t)) => cfg.fault_phase_ms = t,
        (_, None) => {}
    }
    cfg
}

/// How long each mode's run goes on after full commit. Proactive and
/// guardian runs go to quiescence (acknowledgements, retries and guardian
/// forwarding all counted); piggyback-only diffusion sends no message of
/// its own, so it stops at full commit; with both, application traffic never
/// stops, so it runs to one second past the proactive run's full commit.
fn drain(mode: Mode, proactive_finish: Option<u64>) -> Option<u64> {
    match mode {
        Mode::Proactive | Mode::Guardians => Some(u64::MAX),
        Mode::Piggyback => None,
        Mode::Both => proactive_finish.map(|t| t + 1_000),
    }
}

/// Predicted wall time of a run, from the run of the same mode at the
/// largest smaller group count: events grow with `G` (or `G²` with
/// application traffic around a ring, whose diffusion time is linear in
/// `G`); the simulator's per-event checks read one group, so per-event work
/// is taken as flat.
fn predict_ms(prev: Option<&SimRun>, groups: usize) -> Option<f64> {
    let p = prev?;
    let scale = groups as f64 / p.groups as f64;
    let events = if matches!(p.mode, Mode::Piggyback | Mode::Both) { scale * scale } else { scale };
    Some(p.run.as_secs_f64() * 1e3 * events)
}

fn simulate(groups: usize, mode: Mode, prev: Option<&SimRun>, args: &Args, drain_until: Option<u64>) -> SimRun {
    let budget_ms = args.budget_ms;
    if let Some(ms) = predict_ms(prev, groups) {
        if ms > budget_ms as f64 {
            let p = prev.expect("predicted from a run");
            let reason = format!(
                "not run: predicted {:.0} min of CPU time, over the budget of {:.0} min (the {} groups run took {:.1} s; events grow as G{})",
                ms / 6e4,
                budget_ms as f64 / 6e4,
                p.groups,
                p.run.as_secs_f64(),
                if matches!(mode, Mode::Piggyback | Mode::Both) { "²" } else { "" },
            );
            return SimRun { groups, mode, report: Err(reason), setup: Duration::ZERO, run: Duration::ZERO };
        }
    }
    // The world's keys and pieces are built on every core: their CPU time is
    // the process's, not this thread's.
    let t = ProcessTime::now();
    let world = World::new(sim_config(groups, mode, drain_until, args.overlay));
    let setup = t.elapsed();
    let t = ThreadTime::now();
    let report = world.run();
    let run = t.elapsed();
    SimRun { groups, mode, report: Ok(report), setup, run }
}

/// The §3.3 two-phase-commit baseline (`sim::twopc`) on the same workload
/// as the piggyback runs (same groups, application calls every 20 ms, 5 ms
/// links, the same piece size): messages, bytes, lock window, availability.
struct TwoPhase {
    time_to_install_ms: Option<u64>,
    messages_per_replica: f64,
    bytes_per_replica: f64,
    lock_window_ms: u64,
    availability: Option<f64>,
}

fn two_phase(groups: usize, piece_bytes: usize) -> TwoPhase {
    let r = bft_upgrade::sim::twopc::run(&sim_config(groups, Mode::Piggyback, None, 0), piece_bytes as u64);
    TwoPhase {
        time_to_install_ms: r.time_to_install_ms,
        messages_per_replica: r.messages_per_replica,
        bytes_per_replica: r.bytes_per_replica,
        lock_window_ms: r.lock_window_ms,
        availability: r.availability,
    }
}

/// Share of application transactions in the install window that were not
/// aborted (Figure 2 restarts count as unavailable), from the simulator.
fn availability(run: &SimRun) -> Option<f64> {
    run.ok().and_then(|r| r.availability)
}

// ----- the signature-collection straw man --------------------------------

/// Bytes one group receives on the commit path when every group's commit is
/// certified by `2f + 1` ECDSA signatures (each with its signer's index) and
/// that certificate is forwarded to every other group.
fn sigcollect_bytes_per_group(groups: usize) -> usize {
    (groups - 1) * (2 * F + 1) * (SIG_BYTES + SIGNER_INDEX_BYTES)
}

/// Our commit message on the wire: `Submit(CommitInstall { upgrade, τ })`.
fn commit_message_bytes() -> usize {
    let op = Finish::commit_install(UpgradeId([0xAB; 16]), Code::from_bytes([0xCD; 32]));
    wire::encoded_len(&Message::Submit(op))
}

// ----- criterion results ----------------------------------------------------

/// Median times (ns) by criterion full id, from `new/` under `dir`.
fn criterion_results(dir: &Path) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if !p.is_dir() {
                continue;
            }
            if p.file_name().is_some_and(|n| n == "new") {
                let read = |f: &str| {
                    std::fs::read_to_string(p.join(f)).ok().and_then(|s| serde_json::from_str::<Value>(&s).ok())
                };
                if let (Some(b), Some(est)) = (read("benchmark.json"), read("estimates.json")) {
                    let id = b["full_id"].as_str().map(str::to_owned);
                    let median = est["median"]["point_estimate"].as_f64();
                    if let (Some(id), Some(m)) = (id, median) {
                        out.insert(id, m);
                    }
                }
            } else {
                stack.push(p);
            }
        }
    }
    out
}

/// Criterion's medians with the ratios the goals speak of.
struct Micro {
    t: BTreeMap<String, f64>,
}

impl Micro {
    fn get(&self, id: &str) -> Option<f64> {
        self.t.get(id).copied()
    }
    fn ratio(&self, a: &str, b: &str) -> Option<f64> {
        Some(self.get(a)? / self.get(b)?)
    }
    fn replica_over_floor(&self, n: usize) -> Option<f64> {
        self.ratio(&format!("replica/path/{n}"), "floor/replica_open")
    }
    fn deployer_over_floor(&self, n: usize) -> Option<f64> {
        Some(self.get(&format!("deployer/bundle/{n}"))? / n as f64 / self.get("floor/deployer_seal")?)
    }
    fn shamir(&self, op: &str, n: usize) -> Option<f64> {
        self.ratio(&format!("shamir_{op}/ours/{n}"), &format!("shamir_{op}/vsss/{n}"))
    }
    /// Our throughput over raw AEAD's: their time over ours.
    fn payload(&self, chunk: usize) -> Option<f64> {
        self.ratio(&format!("payload_open/raw_aead/{chunk}"), &format!("payload_open/ours/{chunk}"))
    }
    /// Throughput over the opener's floor: SHA-256 of the ciphertext plus
    /// the AEAD open, measured in the same run.
    fn payload_floor(&self, chunk: usize) -> Option<f64> {
        self.ratio(&format!("payload_open/hash_plus_aead/{chunk}"), &format!("payload_open/ours/{chunk}"))
    }
}

// ----- machine and date -----------------------------------------------------

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().next().and_then(|l| l.split_whitespace().nth(1)).and_then(|k| k.parse::<f64>().ok()))
        .map_or_else(String::new, |kb| format!(", {:.0} GiB", kb / 1048576.0));
    format!("{cpu}, {cores} cores{mem}, {} {}", std::env::consts::OS, std::env::consts::ARCH)
}

fn rustc() -> String {
    std::process::Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map_or_else(|| "unknown rustc".into(), |s| s.trim().to_owned())
}

/// Today's UTC date, `YYYY-MM-DD` (civil-from-days, H. Hinnant).
fn date() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The 1-, 5- and 15-minute load averages.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// Peak resident memory of this process so far, MiB.
fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

// ----- a million replicas ------------------------------------------------------

/// The group count of the million-replica runs (issue 18 §2): 250,000
/// groups of 4.
const MILLION_GROUPS: usize = 250_000;

/// `--million-run PATH`: one upgrade at 10 and at 250,000 groups in each
/// mode (proactive, guardians), each run's wall time, CPU time and peak
/// memory, written to PATH for the main run (`--million PATH`) to report.
/// `benches/full.sh` builds it with capacities that fit groups of 4; the
/// 10-group runs are the same build's baseline for the time-to-install
/// ratio and the per-replica messages.
fn million_run(args: &Args, path: &Path) {
    let groups = if args.groups_given { args.groups.clone() } else { vec![10, MILLION_GROUPS] };
    let modes = if args.modes_given { args.modes.clone() } else { vec![Mode::Proactive, Mode::Guardians] };
    let exe = std::env::current_exe().expect("this program's path");
    let mut runs = Vec::new();
    for &mode in &modes {
        for &g in &groups {
            // Each run in a process of its own: its peak memory is its own,
            // not what an earlier run left the allocator holding.
            let child = std::process::Command::new(&exe)
                .args(["--million-one", mode.name(), &g.to_string(), "--overlay", &args.overlay.to_string()])
                .stderr(std::process::Stdio::inherit())
                .output()
                .expect("run this program");
            let line = String::from_utf8_lossy(&child.stdout);
            let run: Value = match serde_json::from_str(line.trim()) {
                Ok(v) if child.status.success() => v,
                _ => json!({ "mode": mode.name(), "groups": g, "replicas": g * N,
                             "liveness": format!("the run's process failed: {}", child.status) }),
            };
            runs.push(run);
        }
    }
    use bft_upgrade::capacity as c;
    let out = json!({
        "machine": machine(),
        "date": date(),
        "rustc": rustc(),
        "overlay": args.overlay,
        "capacities": {
            "MAX_REPLICAS": c::MAX_REPLICAS, "MAX_GUARDIANS": c::MAX_GUARDIANS, "MAX_RESOURCES": c::MAX_RESOURCES,
            "MAX_IN_FLIGHT": c::MAX_IN_FLIGHT, "HISTORY": c::HISTORY, "MAX_NEIGHBORS": c::MAX_NEIGHBORS,
            "MAX_ATTACHED": c::MAX_ATTACHED, "MAX_DIFFUSING": c::MAX_DIFFUSING, "MAX_GUARDED": c::MAX_GUARDED,
        },
        "runs": runs,
    });
    let text = serde_json::to_string_pretty(&out).expect("json") + "\n";
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).expect("million-run output directory");
    }
    std::fs::write(path, text).expect("write the million-run result");
    eprintln!("wrote {}", path.display());
}

/// `--million-one MODE GROUPS`: one run of [`million_run`], printed as one
/// line of JSON.
fn million_one(args: &Args, mode: Mode, g: usize) {
    let wall = Clock::now();
    let r = simulate(g, mode, None, args, drain(mode, None));
    let wall = wall.elapsed();
    let peak = peak_rss_mib();
    let rep = r.report.as_ref().ok();
    eprintln!(
        "million G={g} {}: wall {:.1} s (setup {:.1} s, run {:.1} s CPU), peak {:.0} MiB, {} events, \
         finished at {:?} ms, msgs/replica {:.2}{}{}",
        mode.name(),
        wall.as_secs_f64(),
        r.setup.as_secs_f64(),
        r.run.as_secs_f64(),
        peak.unwrap_or(f64::NAN),
        rep.map_or(0, |x| x.metrics.events),
        rep.and_then(|x| x.finished_at_ms),
        r.messages_per_replica().unwrap_or(f64::NAN),
        rep.and_then(|x| x.violation.as_ref()).map_or(String::new(), |v| format!(", VIOLATION {v:?}")),
        rep.and_then(|x| x.liveness.as_ref()).map_or(String::new(), |l| format!(", LIVENESS {l}")),
    );
    let run = json!({
        "mode": mode.name(),
        "groups": g,
        "replicas": g * N,
        "wall_s": wall.as_secs_f64(),
        "setup_cpu_s": r.setup.as_secs_f64(),
        "run_cpu_s": r.run.as_secs_f64(),
        "peak_rss_mib": num(peak),
        "events": rep.map(|x| x.metrics.events),
        "finished_at_ms": rep.and_then(|x| x.finished_at_ms),
        "messages_per_replica": num(r.messages_per_replica()),
        "bytes_per_replica": num(r.bytes_per_replica()),
        "violation": rep.and_then(|x| x.violation.as_ref().map(|v| v.what.clone())),
        "liveness": rep.and_then(|x| x.liveness.clone()),
    });
    println!("{run}");
}

/// One run of a million-run result.
struct MillionRun {
    mode: Mode,
    groups: usize,
    wall_s: f64,
    peak_mib: Option<f64>,
    finished_at_ms: Option<u64>,
    messages_per_replica: Option<f64>,
    events: Option<u64>,
    /// A violation or a liveness failure, if any.
    failed: Option<String>,
}

/// A million-run result read back (`--million PATH`).
struct Million {
    raw: Value,
    runs: Vec<MillionRun>,
}

impl Million {
    fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let raw: Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let runs = raw["runs"]
            .as_array()
            .ok_or_else(|| format!("{}: no runs", path.display()))?
            .iter()
            .filter_map(|r| {
                Some(MillionRun {
                    mode: Mode::parse(r["mode"].as_str()?)?,
                    groups: usize::try_from(r["groups"].as_u64()?).ok()?,
                    wall_s: r["wall_s"].as_f64()?,
                    peak_mib: r["peak_rss_mib"].as_f64(),
                    finished_at_ms: r["finished_at_ms"].as_u64(),
                    messages_per_replica: r["messages_per_replica"].as_f64(),
                    events: r["events"].as_u64(),
                    failed: r["violation"].as_str().or_else(|| r["liveness"].as_str()).map(str::to_owned),
                })
            })
            .collect();
        Ok(Self { raw, runs })
    }

    fn run(&self, groups: usize, mode: Mode) -> Option<&MillionRun> {
        self.runs.iter().find(|r| r.groups == groups && r.mode == mode && r.failed.is_none())
    }

    /// The 250,000-group runs that finished clean.
    fn big(&self) -> impl Iterator<Item = &MillionRun> {
        self.runs.iter().filter(|r| r.groups == MILLION_GROUPS && r.failed.is_none())
    }

    /// Time to full commit at 250,000 groups over 10, in `mode`.
    fn ratio(&self, mode: Mode) -> Option<f64> {
        let base = self.run(10, mode)?.finished_at_ms? as f64;
        Some(self.run(MILLION_GROUPS, mode)?.finished_at_ms? as f64 / base)
    }

    /// The largest relative deviation of messages per replica at 250,000
    /// groups from 10 groups, over the modes.
    fn flatness(&self) -> Option<f64> {
        self.big()
            .filter_map(|r| Some((r.messages_per_replica? / self.run(10, r.mode)?.messages_per_replica? - 1.0).abs()))
            .reduce(f64::max)
    }

    /// The worst 250,000-group run: most peak memory (GiB), longest wall
    /// time (s); `None` unless every mode that ran got that far clean.
    fn worst(&self) -> Option<(f64, f64)> {
        let all: Vec<&MillionRun> = self.runs.iter().filter(|r| r.groups == MILLION_GROUPS).collect();
        if all.is_empty() || all.iter().any(|r| r.failed.is_some()) {
            return None;
        }
        let peak = all.iter().map(|r| r.peak_mib.map(|m| m / 1024.0)).try_fold(0.0f64, |w, p| p.map(|p| w.max(p)))?;
        Some((peak, all.iter().map(|r| r.wall_s).fold(0.0, f64::max)))
    }
}

// ----- the run ----------------------------------------------------------------

fn run() {
    let args = args();
    if let Some((mode, groups)) = args.million_one {
        million_one(&args, mode, groups);
        return;
    }
    if let Some(path) = &args.million_run {
        million_run(&args, path);
        return;
    }
    let million = args.million.as_deref().map(|p| Million::read(p).unwrap_or_else(|e| usage(&e)));
    let started = Clock::now();
    let load_start = loadavg();
    let micro = Micro { t: criterion_results(&args.criterion) };
    eprintln!("criterion results read: {} from {}", micro.t.len(), args.criterion.display());

    let mut cpus = Vec::new();
    for &g in &args.groups {
        let c = cpu(g);
        eprintln!(
            "cpu G={g}: deployer {:.2} s ({:.1} µs/replica), installer {:.3} s ({:.1} µs/group), decided {}",
            c.deployer().as_secs_f64(),
            c.deployer_per_replica_us(),
            c.installer.as_secs_f64(),
            c.installer_per_group_us(),
            c.decided
        );
        cpus.push(c);
    }

    let mut runs: Vec<SimRun> = Vec::new();
    let mut peak = BTreeMap::new();
    for &g in &args.groups {
        // Proactive first: the run with both diffusions drains to its time.
        let mut order = args.modes.clone();
        order.sort_by_key(|m| *m != Mode::Proactive);
        for mode in order {
            let prev = runs.iter().rfind(|r| r.mode == mode && r.report.is_ok());
            let proactive_finish = runs
                .iter()
                .find(|r| r.groups == g && r.mode == Mode::Proactive)
                .and_then(|r| r.report.as_ref().ok())
                .and_then(|r| r.finished_at_ms);
            let r = simulate(g, mode, prev, &args, drain(mode, proactive_finish));
            match &r.report {
                Ok(rep) => eprintln!(
                    "sim G={g} {}: setup {:.1} s, run {:.1} s, {} events, finished at {:?} ms, msgs/replica {:.2}, \
                     bytes/replica {:.0}{}{}",
                    mode.name(),
                    r.setup.as_secs_f64(),
                    r.run.as_secs_f64(),
                    rep.metrics.events,
                    rep.finished_at_ms,
                    r.messages_per_replica().unwrap_or(f64::NAN),
                    r.bytes_per_replica().unwrap_or(f64::NAN),
                    rep.violation.as_ref().map_or(String::new(), |v| format!(", VIOLATION {v:?}")),
                    rep.liveness.as_ref().map_or(String::new(), |l| format!(", LIVENESS {l}")),
                ),
                Err(why) => eprintln!("sim G={g} {}: {why}", mode.name()),
            }
            runs.push(r);
        }
        if let Some(p) = peak_rss_mib() {
            peak.insert(g, p);
        }
    }

    let mut twopc = BTreeMap::new();
    for &g in &args.groups {
        let piece = cpus.iter().find(|c| c.groups == g).map_or(988, |c| c.piece_bytes);
        let t = two_phase(g, piece);
        eprintln!(
            "2pc G={g}: install {:?} ms, lock window {} ms, availability {:?}, msgs/replica {:.2}",
            t.time_to_install_ms, t.lock_window_ms, t.availability, t.messages_per_replica
        );
        twopc.insert(g, t);
    }

    let elapsed = started.elapsed();
    let load = (load_start, loadavg());
    let ctx = Context {
        args: &args,
        micro: &micro,
        cpus: &cpus,
        runs: &runs,
        twopc: &twopc,
        peak: &peak,
        million: million.as_ref(),
        elapsed,
        load,
    };
    let json = ctx.json();
    let text = serde_json::to_string_pretty(&json).expect("json") + "\n";
    let md = ctx.markdown();
    if args.json_stdout {
        print!("{text}");
    } else {
        print!("{md}");
    }
    if args.write {
        std::fs::create_dir_all(&args.out).expect("output directory");
        std::fs::write(args.out.join("benchmarks.json"), &text).expect("write benchmarks.json");
        std::fs::write(args.out.join("BENCHMARKS.md"), &md).expect("write BENCHMARKS.md");
        eprintln!(
            "wrote {} and {}",
            args.out.join("BENCHMARKS.md").display(),
            args.out.join("benchmarks.json").display()
        );
    }
}

struct Context<'a> {
    args: &'a Args,
    micro: &'a Micro,
    cpus: &'a [Cpu],
    runs: &'a [SimRun],
    twopc: &'a BTreeMap<usize, TwoPhase>,
    peak: &'a BTreeMap<usize, f64>,
    /// The million-replica runs, from their own build (`--million`).
    million: Option<&'a Million>,
    elapsed: Duration,
    /// Load averages at the start and the end of this program.
    load: (String, String),
}

fn num(x: Option<f64>) -> Value {
    x.filter(|v| v.is_finite()).map_or(Value::Null, |v| json!((v * 1e4).round() / 1e4))
}

/// `x` as a factor, or "n/a".
fn fx(x: Option<f64>) -> String {
    x.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.3}×"))
}

fn ns(x: Option<f64>) -> String {
    match x {
        None => "n/a".to_owned(),
        Some(v) if v >= 1e6 => format!("{:.2} ms", v / 1e6),
        Some(v) if v >= 1e3 => format!("{:.2} µs", v / 1e3),
        Some(v) => format!("{v:.0} ns"),
    }
}

impl Context<'_> {
    /// The headline diffusion mode for the per-replica series.
    const HEADLINE: Mode = Mode::Proactive;

    fn run(&self, groups: usize, mode: Mode) -> Option<&SimRun> {
        self.runs.iter().find(|r| r.groups == groups && r.mode == mode)
    }

    fn series(&self, mode: Mode, f: impl Fn(&SimRun) -> Option<f64>) -> Value {
        let mut m = Map::new();
        for &g in &self.args.groups {
            m.insert((g * N).to_string(), num(self.run(g, mode).and_then(&f)));
        }
        Value::Object(m)
    }

    /// Largest relative deviation from the smallest run's value.
    fn flatness(&self, mode: Mode, f: impl Fn(&SimRun) -> Option<f64>) -> Option<(f64, usize)> {
        let vals: Vec<(usize, f64)> =
            self.args.groups.iter().filter_map(|g| self.run(*g, mode).and_then(&f).map(|v| (*g, v))).collect();
        let (_, base) = *vals.first()?;
        let dev = vals.iter().map(|(_, v)| (v / base - 1.0).abs()).fold(0.0, f64::max);
        Some((dev, vals.last()?.0 * N))
    }

    /// Time to full commit at the largest run of `mode` over the time at
    /// 10 groups, with that largest group count.
    /// The million-replica runs' ratio (their own build, at 250,000 groups
    /// over 10) where they went further than this run's groups.
    fn install_time_ratio(&self, mode: Mode) -> Option<(f64, usize)> {
        let at = |g: usize| self.run(g, mode).and_then(SimRun::ok).and_then(|r| r.finished_at_ms);
        let here = at(10).and_then(|base| {
            let (g, t) = self.args.groups.iter().filter_map(|&g| at(g).map(|t| (g, t))).max_by_key(|(g, _)| *g)?;
            Some((t as f64 / base as f64, g))
        });
        let million = self.million.and_then(|m| m.ratio(mode)).map(|r| (r, MILLION_GROUPS));
        match (here, million) {
            (Some(h), Some(m)) if h.1 >= m.1 => Some(h),
            (_, Some(m)) => Some(m),
            (h, None) => h,
        }
    }

    /// Issue 18's install-time goal, for the modes it names: the ratio at
    /// 250,000 groups (the worse mode), if both ran that far.
    fn install_time_ratio_250k(&self) -> Option<f64> {
        [Mode::Proactive, Mode::Guardians]
            .iter()
            .map(|&m| self.install_time_ratio(m).filter(|(_, g)| *g == 250_000).map(|(r, _)| r))
            .try_fold(0.0f64, |worst, r| r.map(|r| worst.max(r)))
    }

    /// The group count the availability keys speak of: 1,000, or the
    /// largest run below it.
    fn availability_groups(&self) -> usize {
        self.args.groups.iter().copied().filter(|g| *g <= 1_000).max().unwrap_or(0)
    }

    /// The deployer run the parallel-speedup goal speaks of: the largest.
    fn parallel(&self) -> Option<&Cpu> {
        self.cpus.iter().max_by_key(|c| c.groups)
    }

    fn sigcollect_over_ours(&self, groups: usize) -> f64 {
        sigcollect_bytes_per_group(groups) as f64 / CODE_BYTES as f64
    }

    fn json(&self) -> Value {
        let m = self.micro;
        let by_n = |f: &dyn Fn(usize) -> Option<f64>, sizes: &[usize]| {
            Value::Object(sizes.iter().map(|n| (n.to_string(), num(f(*n)))).collect())
        };
        let mut modes = Map::new();
        for &mode in &self.args.modes {
            let per_g: Map<String, Value> = self
                .args
                .groups
                .iter()
                .map(|&g| {
                    let r = self.run(g, mode);
                    let rep = r.and_then(|r| r.report.as_ref().ok());
                    let v = json!({
                        "groups": g,
                        "replicas": g * N,
                        "ran": rep.is_some(),
                        "skipped": r.and_then(|r| r.report.as_ref().err()),
                        "messages_per_replica": num(r.and_then(SimRun::messages_per_replica)),
                        "bytes_per_replica": num(r.and_then(SimRun::bytes_per_replica)),
                        "finished_at_ms": rep.and_then(|x| x.finished_at_ms),
                        "violation": rep.and_then(|x| x.violation.as_ref().map(|v| v.what.clone())),
                        "liveness": rep.and_then(|x| x.liveness.clone()),
                        "events": rep.map(|x| x.metrics.events),
                        "replica_messages": rep.map(|x| x.metrics.replica_messages),
                        "installer_messages": rep.map(|x| x.metrics.installer_messages),
                        "replica_bytes": rep.map(|x| x.metrics.replica_bytes),
                        "installer_bytes": rep.map(|x| x.metrics.installer_bytes),
                        "txns_completed": rep.map(|x| x.metrics.txns_completed),
                        "txns_restarted": rep.map(|x| x.metrics.txns_restarted),
                        "availability": num(r.and_then(availability)),
                        "setup_s": r.filter(|_| rep.is_some()).map(|r| r.setup.as_secs_f64()),
                        "run_s": r.filter(|_| rep.is_some()).map(|r| r.run.as_secs_f64()),
                    });
                    ((g * N).to_string(), v)
                })
                .collect();
            modes.insert(mode.name().to_owned(), Value::Object(per_g));
        }
        let cpu: Map<String, Value> = self
            .cpus
            .iter()
            .map(|c| {
                let v = json!({
                    "groups": c.groups,
                    "deployer_s": c.deployer().as_secs_f64(),
                    "deployer_per_replica_us": num(Some(c.deployer_per_replica_us())),
                    "deployer_per_replica_over_floor": num(m.get("floor/deployer_seal").map(|f| c.deployer_per_replica_us() * 1e3 / f)),
                    "installer_s": c.installer.as_secs_f64(),
                    "installer_per_group_us": num(Some(c.installer_per_group_us())),
                    "installer_decided": c.decided,
                    "payload_seal_s": c.payload_seal.as_secs_f64(),
                    "keygen_s": c.keygen.as_secs_f64(),
                    "box_opening_s": c.box_opening.as_secs_f64(),
                    "piece_bytes": c.piece_bytes,
                    "pieces_sequential_wall_s": c.pieces_wall.as_secs_f64(),
                    "pieces_parallel_wall_s": c.parallel_wall.as_secs_f64(),
                    "pieces_parallel_threads": c.threads,
                    "deployer_parallel_speedup": num(Some(c.parallel_speedup())),
                });
                ((c.groups * N).to_string(), v)
            })
            .collect();
        let two_pc: Map<String, Value> = self
            .twopc
            .iter()
            .map(|(g, t)| {
                let v = json!({
                    "time_to_install_ms": t.time_to_install_ms,
                    "messages_per_replica": num(Some(t.messages_per_replica)),
                    "bytes_per_replica": num(Some(t.bytes_per_replica)),
                    "lock_window_ms": t.lock_window_ms,
                    "availability": num(t.availability),
                });
                ((g * N).to_string(), v)
            })
            .collect();
        let sig: Map<String, Value> = self
            .args
            .groups
            .iter()
            .map(|&g| {
                let v = json!({
                    "sigcollect_bytes_per_group": sigcollect_bytes_per_group(g),
                    "ours_code_bytes": CODE_BYTES,
                    "ours_commit_message_bytes": commit_message_bytes(),
                    "sigcollect_over_ours": num(Some(self.sigcollect_over_ours(g))),
                });
                (g.to_string(), v)
            })
            .collect();
        let at = self.availability_groups();
        let avail_2pc = self.twopc.get(&at).and_then(|t| t.availability);
        let avail_ours = self.run(at, Mode::Both).and_then(availability);
        json!({
            "machine": machine(),
            "date": date(),
            "rustc": rustc(),
            "replica_path_over_floor": num(m.replica_over_floor(4)),
            "replica_path_over_floor_by_n": by_n(&|n| m.replica_over_floor(n), &[4, 16, 64]),
            "deployer_per_replica_over_floor": num(m.deployer_over_floor(4)),
            "deployer_per_replica_over_floor_by_n": by_n(&|n| m.deployer_over_floor(n), &[4, 16, 64]),
            "messages_per_replica": self.series(Self::HEADLINE, SimRun::messages_per_replica),
            "bytes_per_replica": self.series(Self::HEADLINE, SimRun::bytes_per_replica),
            "per_replica_series_mode": Self::HEADLINE.name(),
            "commit_bytes_sigcollect_over_ours": num(Some(self.sigcollect_over_ours(1_000))),
            "availability_diffusing": num(avail_ours),
            "availability_2pc": num(avail_2pc),
            "availability_groups": at,
            "availability_diffusing_mode": Mode::Both.name(),
            "shamir_split_vs_vsss": by_n(&|n| m.shamir("split", n), &[4, 16, 64, 100]),
            "shamir_reconstruct_vs_vsss": by_n(&|n| m.shamir("reconstruct", n), &[4, 16, 64, 100]),
            "payload_open_over_raw_aead": num(m.payload(65536)),
            "diffusion_overlay_degree": self.args.overlay,
            "install_time_ratio_250k_over_10": num(self.install_time_ratio_250k()),
            "sim_million_peak_gib": num(self.million.and_then(Million::worst).map(|w| w.0)),
            "sim_million_run_s": num(self.million.and_then(Million::worst).map(|w| w.1)),
            "sim_million_messages_per_replica_deviation": num(self.million.and_then(Million::flatness)),
            "sim_million": self.million.map_or(Value::Null, |m| m.raw.clone()),
            "install_time_ratio_largest_over_10_by_mode": Value::Object(
                Mode::ALL
                    .iter()
                    .filter_map(|&mode| {
                        let (r, g) = self.install_time_ratio(mode)?;
                        Some((mode.name().to_owned(), json!({ "groups": g, "ratio": num(Some(r)) })))
                    })
                    .collect()
            ),
            "deployer_parallel_speedup": num(self.parallel().map(Cpu::parallel_speedup)),
            "deployer_parallel_groups": self.parallel().map(|c| c.groups),
            "deployer_parallel_threads": self.parallel().map(|c| c.threads),
            "payload_open_over_raw_aead_by_chunk": by_n(&|c| m.payload(c), &[4096, 65536]),
            "payload_open_over_hash_plus_aead": num(m.payload_floor(65536)),
            "payload_open_over_hash_plus_aead_by_chunk": by_n(&|c| m.payload_floor(c), &[4096, 65536]),
            "criterion_median_ns": Value::Object(m.t.iter().map(|(k, v)| (k.clone(), num(Some(*v)))).collect()),
            "cpu": Value::Object(cpu),
            "sim": Value::Object(modes),
            "two_phase_commit": Value::Object(two_pc),
            "signature_collection": Value::Object(sig),
            "peak_rss_mib": Value::Object(self.peak.iter().map(|(g, p)| ((g * N).to_string(), num(Some(*p)))).collect()),
            "scale_run_s": self.elapsed.as_secs_f64(),
            "load_average": { "start": self.load.0, "end": self.load.1 },
            "criterion_run_s": self.args.criterion_seconds,
        })
    }

    /// The million-replica section: its build's capacities and each run.
    fn million_markdown(&self, w: &mut String, m: &Million) {
        let _ = writeln!(w, "## A million replicas\n");
        let caps = m.raw["capacities"]
            .as_object()
            .map(|c| c.iter().map(|(k, v)| format!("{k} = {v}")).collect::<Vec<_>>().join(", "))
            .unwrap_or_default();
        let _ = writeln!(
            w,
            "One upgrade over 250,000 groups of {N} (1,000,000 replicas), and the same build at 10 groups for the \
             ratios, in the world above (overlay of degree {}), from its own build of the crate at capacities that \
             fit groups of {N} (`benches/full.sh`: {caps}), on {} ({}). Wall time is the whole run, building the \
             world's material included; each run is a process of its own, and peak memory is its peak resident \
             set.\n",
            m.raw["overlay"],
            m.raw["machine"].as_str().unwrap_or("?"),
            m.raw["date"].as_str().unwrap_or("?"),
        );
        let _ = writeln!(
            w,
            "| mode | groups | replicas | wall time | peak memory | time to full commit | messages / replica | events |"
        );
        let _ = writeln!(w, "|---|---|---|---|---|---|---|---|");
        for r in &m.runs {
            let _ = writeln!(
                w,
                "| {} | {} | {} | {:.1} s | {} | {}{} | {} | {} |",
                r.mode.name(),
                r.groups,
                r.groups * N,
                r.wall_s,
                r.peak_mib.map_or_else(|| "n/a".to_owned(), |p| format!("{:.2} GiB", p / 1024.0)),
                r.finished_at_ms.map_or_else(|| "—".to_owned(), |t| format!("{t} ms")),
                r.failed.as_ref().map_or_else(String::new, |f| format!(" ({f})")),
                r.messages_per_replica.map_or_else(|| "n/a".to_owned(), |x| format!("{x:.2}")),
                r.events.map_or_else(|| "n/a".to_owned(), |e| e.to_string()),
            );
        }
        let _ = writeln!(w);
        for mode in [Mode::Proactive, Mode::Guardians] {
            if let Some(r) = m.ratio(mode) {
                let _ = writeln!(w, "- {}: time to full commit at 250,000 groups over 10 groups {r:.2}×", mode.name());
            }
        }
        let _ = writeln!(w);
    }

    fn markdown(&self) -> String {
        let m = self.micro;
        let mut s = String::new();
        let w = &mut s;
        let _ = writeln!(w, "# Benchmarks\n");
        let _ = writeln!(
            w,
            "Generated by `examples/scale.rs` (`benches/full.sh` runs the criterion benchmarks, then it); do not \
             edit by hand. Raw numbers: `benchmarks.json`.\n"
        );
        let _ = writeln!(w, "- Machine: {}", machine());
        let _ = writeln!(w, "- Date: {}", date());
        let _ = writeln!(w, "- Toolchain: {}", rustc());
        let crit = self.args.criterion_seconds.map_or_else(|| "not timed".to_owned(), |t| format!("{t} s"));
        let _ = writeln!(
            w,
            "- Run time: criterion {crit}; this program {:.0} s (simulator runs, direct role timings, material)",
            self.elapsed.as_secs_f64()
        );
        let _ = writeln!(
            w,
            "- Times are per-thread CPU time (`CLOCK_THREAD_CPUTIME_ID`): criterion medians of \
             `cargo bench --bench protocol` (release profile) and direct timings of single-threaded code here. \
             The machine is shared (load average {} at this program's start, {} at its end), so CPU time rather \
             than wall time; contention for caches and execution units still shows in it.\n",
            self.load.0, self.load.1
        );

        // ---- goals
        let _ = writeln!(w, "## Goals\n");
        let _ = writeln!(w, "| goal | target | measured | status |");
        let _ = writeln!(w, "|---|---|---|---|");
        let status = |v: Option<f64>, ok: &dyn Fn(f64) -> bool, miss: &dyn Fn(f64) -> String| match v {
            None => "not measured".to_owned(),
            Some(x) if ok(x) => "met".to_owned(),
            Some(x) => format!("missed: {}", miss(x)),
        };
        let over = |limit: f64| move |x: f64| format!("{:.1}% over", (x / limit - 1.0) * 100.0);
        let rp = m.replica_over_floor(4);
        let _ = writeln!(
            w,
            "| replica path (n = 4) over its crypto floor | ≤ 1.25× | {} | {} |",
            fx(rp),
            status(rp, &|x| x <= 1.25, &over(1.25))
        );
        let dp = m.deployer_over_floor(4);
        let _ = writeln!(
            w,
            "| deployer per replica (n = 4) over ECDH + HKDF + AEAD seal | ≤ 1.1× | {} | {} |",
            fx(dp),
            status(dp, &|x| x <= 1.1, &over(1.1))
        );
        for (what, f) in [
            ("messages", SimRun::messages_per_replica as fn(&SimRun) -> Option<f64>),
            ("bytes", SimRun::bytes_per_replica as fn(&SimRun) -> Option<f64>),
        ] {
            for &mode in &self.args.modes {
                let flat = self.flatness(mode, f);
                let v = flat.map(|(d, _)| d);
                let upto = flat.map_or(0, |(_, r)| r);
                let _ = writeln!(
                    w,
                    "| {what} per replica flat, {} ({} to {upto} replicas) | within ±10% | {} | {} |",
                    mode.name(),
                    self.args.groups.first().map_or(0, |g| g * N),
                    v.map_or_else(|| "n/a".to_owned(), |d| format!("largest deviation {:.1}%", d * 100.0)),
                    match flat {
                        Some((d, r)) if r < 40_000 && d <= 0.1 =>
                            format!("met up to {r} replicas (larger runs not made)"),
                        _ => status(v, &|d| d <= 0.1, &|d| format!("{:.1}% deviation", d * 100.0)),
                    }
                );
            }
        }
        for mode in [Mode::Proactive, Mode::Guardians] {
            let ratio = self.install_time_ratio(mode);
            let _ = writeln!(
                w,
                "| time to install, {}, at 250,000 groups over 10 groups (overlay of degree {}) | ≤ 3× | {} | {} |",
                mode.name(),
                self.args.overlay,
                ratio.map_or_else(|| "n/a".to_owned(), |(r, g)| format!("{r:.2}× at {g} groups")),
                match ratio {
                    Some((r, g)) if g < 250_000 && r <= 3.0 => format!("met up to {g} groups (larger runs not made)"),
                    Some((_, g)) if g < 250_000 => format!("missed already at {g} groups"),
                    _ => status(ratio.map(|(r, _)| r), &|r| r <= 3.0, &|r| format!("{r:.2}×")),
                }
            );
        }
        let worst = self.million.and_then(Million::worst);
        let _ = writeln!(
            w,
            "| a million replicas (250,000 groups × {N}) in the simulator, per mode: wall time | ≤ 30 min | {} | {} |",
            worst.map_or_else(|| "n/a".to_owned(), |(_, t)| format!("{:.1} min (longest mode)", t / 60.0)),
            status(worst.map(|w| w.1), &|t| t <= 1800.0, &|t| format!("{:.1} min", t / 60.0))
        );
        let _ = writeln!(
            w,
            "| a million replicas: peak resident memory | ≤ 16 GiB | {} | {} |",
            worst.map_or_else(|| "n/a".to_owned(), |(p, _)| format!("{p:.2} GiB (largest mode)")),
            status(worst.map(|w| w.0), &|p| p <= 16.0, &|p| format!("{p:.2} GiB"))
        );
        let flat = self.million.and_then(Million::flatness);
        let _ = writeln!(
            w,
            "| a million replicas: messages per replica against 40 replicas (same build) | within ±10% | {} | {} |",
            flat.map_or_else(|| "n/a".to_owned(), |d| format!("largest deviation {:.1}%", d * 100.0)),
            status(flat, &|d| d <= 0.1, &|d| format!("{:.1}% deviation", d * 100.0))
        );
        let sc = self.sigcollect_over_ours(1_000);
        let _ = writeln!(
            w,
            "| commit-path bytes per group vs signature collection, 1,000 groups | ≥ 10× fewer | {sc:.0}× fewer (32-byte \
             code); {:.0}× fewer counting our whole commit message ({} bytes) | met |",
            sigcollect_bytes_per_group(1_000) as f64 / commit_message_bytes() as f64,
            commit_message_bytes()
        );
        let at = self.availability_groups();
        let ours = self.run(at, Mode::Both).and_then(availability);
        let theirs = self.twopc.get(&at).and_then(|t| t.availability);
        let _ = writeln!(
            w,
            "| application availability during the install ({at} groups, piggyback and proactive), where 2PC blocks \
             | ≥ 99% | ours {}, 2PC {} | {} |",
            ours.map_or_else(|| "n/a".to_owned(), |a| format!("{:.2}%", a * 100.0)),
            theirs.map_or_else(|| "n/a".to_owned(), |a| format!("{:.2}%", a * 100.0)),
            status(ours, &|a| a >= 0.99, &|a| format!("{:.2} points below 99%", (0.99 - a) * 100.0))
        );
        let par = self.parallel();
        let speedup = par.map(Cpu::parallel_speedup);
        let _ = writeln!(
            w,
            "| deployer pieces on every core over one core (wall clock, {} groups, {} threads) | ≥ 1.8× on 2 cores | \
             {} | {} |",
            par.map_or(0, |c| c.groups),
            par.map_or(0, |c| c.threads),
            speedup.map_or_else(|| "n/a".to_owned(), |x| format!("{x:.2}×")),
            match par {
                Some(c) if c.threads < 2 => "not measurable: one core".to_owned(),
                _ => status(speedup, &|x| x >= 1.8, &|x| format!("{:.1}% below 1.8×", (1.0 - x / 1.8) * 100.0)),
            }
        );
        for op in ["split", "reconstruct"] {
            let vals: Vec<(usize, f64)> =
                [4, 16, 64].iter().filter_map(|n| m.shamir(op, *n).map(|v| (*n, v))).collect();
            let worst = vals.iter().map(|(_, v)| *v).fold(None, |a: Option<f64>, v| Some(a.map_or(v, |a| a.max(v))));
            let list = vals.iter().map(|(n, v)| format!("n={n}: {v:.3}×")).collect::<Vec<_>>().join(", ");
            let _ = writeln!(
                w,
                "| Shamir {op}, our time over vsss-rs (same field, n, k) | ≤ 1× | {} | {} |",
                if list.is_empty() { "n/a".to_owned() } else { list },
                status(worst, &|x| x <= 1.0, &|x| format!("worst {:.1}% slower", (x - 1.0) * 100.0))
            );
        }
        let po = m.payload_floor(65536);
        let _ = writeln!(
            w,
            "| payload open throughput over its floor, SHA-256 of the ciphertext + ChaCha20-Poly1305 open (64 KiB \
             chunks; {} over the AEAD alone) | ≥ 0.95× | {} | {} |\n",
            fx(m.payload(65536)),
            fx(po),
            status(po, &|x| x >= 0.95, &|x| format!("{:.1}% below 0.95×", (1.0 - x / 0.95) * 100.0))
        );

        // ---- micro
        let _ = writeln!(w, "## Micro-benchmarks (criterion)\n");
        let _ = writeln!(w, "| benchmark | median | derived |");
        let _ = writeln!(w, "|---|---|---|");
        for (id, t) in &m.t {
            let derived = if let Some(n) = id.strip_prefix("deployer/bundle/").and_then(|n| n.parse::<f64>().ok()) {
                format!("{} per replica", ns(Some(t / n)))
            } else if let Some(n) = id.strip_prefix("installer/group/").and_then(|n| n.parse::<f64>().ok()) {
                format!("{} per answer", ns(Some(t / n)))
            } else if id.starts_with("payload_open/") {
                format!("{:.0} MiB/s", (1u64 << 20) as f64 / (t / 1e9) / 1048576.0)
            } else {
                String::new()
            };
            let _ = writeln!(w, "| `{id}` | {} | {derived} |", ns(Some(*t)));
        }
        if m.t.is_empty() {
            let _ = writeln!(w, "| (no criterion results found: run `cargo bench --bench protocol` first) | | |");
        }
        let _ = writeln!(w);
        let _ = writeln!(w, "Ratios by size:\n");
        let _ = writeln!(w, "| n | replica path / floor | deployer per replica / floor | Shamir split ours/vsss | Shamir reconstruct ours/vsss |");
        let _ = writeln!(w, "|---|---|---|---|---|");
        for n in [4, 16, 64, 100] {
            let _ = writeln!(
                w,
                "| {n} | {} | {} | {} | {} |",
                fx(m.replica_over_floor(n)),
                fx(m.deployer_over_floor(n)),
                fx(m.shamir("split", n)),
                fx(m.shamir("reconstruct", n))
            );
        }
        let _ = writeln!(
            w,
            "\nShamir at n = 100: ours splits at most `MAX_SHARES` = 64 shares (groups of at most 64 replicas), so \
             only vsss-rs is measured there.\n"
        );
        self.gap(w);

        // ---- cpu
        let _ = writeln!(w, "## Deployer and installer CPU per upgrade (groups of {N})\n");
        let _ = writeln!(
            w,
            "Timed directly: the deployer's `UpgradePlan::new` plus `piece()` for every group (payload sealing \
             apart), and the installer's `handle_answer` over every replica's genuine answer, group by group.\n"
        );
        let _ = writeln!(
            w,
            "| groups | replicas | deployer total | deployer per replica | over floor | pieces, wall, 1 thread → all \
             threads | installer total | installer per group | payload seal (32 B each) | piece bytes |"
        );
        let _ = writeln!(w, "|---|---|---|---|---|---|---|---|---|---|");
        for c in self.cpus {
            let floor = m.get("floor/deployer_seal");
            let _ = writeln!(
                w,
                "| {} | {} | {:.3} s | {:.1} µs | {} | {:.3} s → {:.3} s on {} ({:.2}×) | {:.3} s | {:.1} µs | {:.3} s | {} |",
                c.groups,
                c.groups * N,
                c.deployer().as_secs_f64(),
                c.deployer_per_replica_us(),
                fx(floor.map(|f| c.deployer_per_replica_us() * 1e3 / f)),
                c.pieces_wall.as_secs_f64(),
                c.parallel_wall.as_secs_f64(),
                c.threads,
                c.parallel_speedup(),
                c.installer.as_secs_f64(),
                c.installer_per_group_us(),
                c.payload_seal.as_secs_f64(),
                c.piece_bytes
            );
        }
        let _ = writeln!(w);

        // ---- sim
        let _ = writeln!(w, "## One upgrade in the simulator\n");
        let _ = writeln!(
            w,
            "Groups of {N} calling each other on a ring (`extra_edges = 0`: two neighbors each), codes diffusing \
             also along the overlay of degree {} (`bft_upgrade::overlay`: group i passes them to groups d·i + r \
             mod G, and guardians are shared along it; 0: the ring alone), one correct installer that prepares \
             every group and commits through one (`finish_all = false`), 5 ms links, no faults, seed {SEED}. \
             Messages and bytes count everything replicas, installers and guardians send (pieces included; codes \
             piggybacked on application messages ride on traffic the simulator does not count). Virtual time is \
             `Report::finished_at_ms`: every replica of every group has committed. Setup is the CPU time, on \
             every core, of building the keys, pieces and world; run is the CPU time of the event loop (one \
             thread).\n",
            self.args.overlay
        );
        for &mode in &self.args.modes {
            let _ = writeln!(w, "### {}\n", mode.describe());
            let _ = writeln!(
                w,
                "| groups | replicas | messages / replica | bytes / replica | time to full commit | events | setup | run |"
            );
            let _ = writeln!(w, "|---|---|---|---|---|---|---|---|");
            for &g in &self.args.groups {
                let Some(r) = self.run(g, mode) else { continue };
                match &r.report {
                    Ok(rep) => {
                        let bad = rep
                            .violation
                            .as_ref()
                            .map(|v| format!(" (violation: {})", v.what))
                            .or_else(|| rep.liveness.as_ref().map(|l| format!(" (unfinished: {l})")))
                            .unwrap_or_default();
                        let _ = writeln!(
                            w,
                            "| {g} | {} | {:.2} | {:.0} | {}{bad} | {} | {:.1} s | {:.1} s |",
                            g * N,
                            r.messages_per_replica().unwrap_or(f64::NAN),
                            r.bytes_per_replica().unwrap_or(f64::NAN),
                            rep.finished_at_ms.map_or_else(|| "—".to_owned(), |t| format!("{t} ms")),
                            rep.metrics.events,
                            r.setup.as_secs_f64(),
                            r.run.as_secs_f64()
                        );
                    }
                    Err(why) => {
                        let _ = writeln!(w, "| {g} | {} | — | — | {why} | | | |", g * N);
                    }
                }
            }
            let _ = writeln!(w);
        }
        if !self.peak.is_empty() {
            let list: Vec<String> = self.peak.iter().map(|(g, p)| format!("{:.0} MiB after {g} groups", p)).collect();
            let _ = writeln!(w, "Peak resident memory of the program: {}.\n", list.join(", "));
        }

        if let Some(m) = self.million {
            self.million_markdown(w, m);
        }

        // ---- baselines
        let _ = writeln!(w, "## Baselines\n");
        let _ = writeln!(w, "### Two-phase commit (PROTOCOL.md section 9, the paper's section 3.3)\n");
        let _ = writeln!(
            w,
            "`sim::twopc` on the piggyback runs' workload (same groups, application calls every {APP_INTERVAL_MS} ms \
             from every group, 5 ms links, a {}-byte piece): a coordinator prepares every group (each locks), \
             collects `f + 1` votes from each, then commits every group. An application transaction is blocked when \
             its group or its callee is locked. Beside it, the diffusing install's availability on its own runs \
             (transactions aborted and restarted by Figure 2 count as unavailable).\n",
            self.cpus.first().map_or(988, |c| c.piece_bytes)
        );
        let _ = writeln!(
            w,
            "| groups | 2PC time to install | 2PC messages / replica | 2PC bytes / replica | 2PC lock window | 2PC \
             availability | ours, piggyback | ours, both |"
        );
        let _ = writeln!(w, "|---|---|---|---|---|---|---|---|");
        let pct = |a: Option<f64>| a.map_or_else(|| "n/a".to_owned(), |a| format!("{:.2}%", a * 100.0));
        for (g, t) in self.twopc {
            let _ = writeln!(
                w,
                "| {g} | {} | {:.2} | {:.0} | {} ms | {} | {} | {} |",
                t.time_to_install_ms.map_or_else(|| "—".to_owned(), |t| format!("{t} ms")),
                t.messages_per_replica,
                t.bytes_per_replica,
                t.lock_window_ms,
                pct(t.availability),
                pct(self.run(*g, Mode::Piggyback).and_then(availability)),
                pct(self.run(*g, Mode::Both).and_then(availability)),
            );
        }
        let _ = writeln!(w);
        let _ = writeln!(w, "### Signature collection (straw man)\n");
        let _ = writeln!(
            w,
            "Each group certifies its commit with `2f + 1` ECDSA P-256 signatures (64 bytes `r || s` plus a \
             {SIGNER_INDEX_BYTES}-byte signer index each) and forwards the certificate to every other group, so \
             each group receives, on the commit path,\n\n    bytes per group = (G − 1) · (2f + 1) · (64 + \
             {SIGNER_INDEX_BYTES})\n\n(upgrade ids and framing not counted, in the straw man's favor). Ours carries \
             one 32-byte trigger code per group (the whole `Submit(CommitInstall)` message is {} bytes). With f = {F}:\n",
            commit_message_bytes()
        );
        let _ = writeln!(w, "| groups | signature collection, bytes per group | ours (code) | ratio |");
        let _ = writeln!(w, "|---|---|---|---|");
        for &g in &self.args.groups {
            let _ = writeln!(
                w,
                "| {g} | {} | {CODE_BYTES} | {:.0}× |",
                sigcollect_bytes_per_group(g),
                self.sigcollect_over_ours(g)
            );
        }
        if !self.args.groups.contains(&1_000) {
            let _ = writeln!(
                w,
                "| 1000 | {} | {CODE_BYTES} | {:.0}× |",
                sigcollect_bytes_per_group(1_000),
                self.sigcollect_over_ours(1_000)
            );
        }
        let _ = writeln!(w);
        s
    }

    /// What dominates where a goal is missed: a cost model from the
    /// measured parts, and what `perf record` on the benchmark shows.
    fn misses(&self, w: &mut String) {
        let m = self.micro;
        let _ = writeln!(w, "### What dominates the misses\n");
        if let (Some(fl), Some(dec)) = (m.get("floor/deployer_seal"), m.get("diag/sec1_decompress")) {
            let dp = m.deployer_over_floor(4);
            if dp.is_some_and(|x| x > 1.1) {
                let measured: Vec<String> =
                    [4usize, 16, 64].iter().map(|n| format!("n = {n}: {}", fx(m.deployer_over_floor(*n)))).collect();
                let _ = writeln!(
                    w,
                    "- **Deployer.** Per piece it draws an ephemeral key and signs the header (two fixed-base \
                     multiplications, shared by the n replicas), and decompresses each replica's key ({}, {:.1}% of \
                     the floor) before its ECDH; {}. With `std` the crate builds p256's precomputed generator \
                     tables, which make the fixed-base part small: a miss here means they are off or slow on this \
                     machine.",
                    ns(Some(dec)),
                    dec / fl * 100.0,
                    measured.join("; ")
                );
            }
        }
        let worst_split = [4usize, 16, 64].iter().filter_map(|n| m.shamir("split", *n)).fold(0.0, f64::max);
        if worst_split > 1.0 {
            let _ = writeln!(
                w,
                "- **Shamir split.** Both evaluate the polynomial by Horner's rule with k - 1 multiplications per \
                 share; ours also returns its shares in a 64-slot vector by value and converts each to bytes. \
                 n = 4: {}, n = 16: {}, n = 64: {} of vsss-rs.",
                fx(m.shamir("split", 4)),
                fx(m.shamir("split", 16)),
                fx(m.shamir("split", 64))
            );
        }
        if let (Some(po), Some(o), Some(f)) =
            (m.payload_floor(65536), m.get("payload_open/ours/65536"), m.get("payload_open/hash_plus_aead/65536"))
        {
            if po < 0.95 {
                let _ = writeln!(
                    w,
                    "- **Payload open.** {} per MiB against {} for SHA-256 plus the AEAD open of the same bytes: \
                     the opener's own work (stream nonces, copying the hasher per chunk so a chunk that fails to \
                     open leaves it unchanged) costs {:.1}%.",
                    ns(Some(o)),
                    ns(Some(f)),
                    (o / f - 1.0) * 100.0
                );
            }
        }
        if let (Some(small), Some(large)) = (self.cpus.first(), self.cpus.last()) {
            // Not a goal of its own, but it should stay flat: the installer
            // finds an answer's group by binary search over its sorted slots.
            let growth = large.installer_per_group_us() / small.installer_per_group_us();
            if large.groups >= 10 * small.groups && growth > 1.25 {
                let _ = writeln!(
                    w,
                    "- **Installer per group** ({:.1} µs at {} groups, {:.1} µs at {}) grows with the number of \
                     groups although `handle_answer` finds the answer's group by binary search: profile it.",
                    small.installer_per_group_us(),
                    small.groups,
                    large.installer_per_group_us(),
                    large.groups
                );
            }
        }
        let _ = writeln!(w);
    }

    /// The replica path's and the deployer's distance from their floors,
    /// split into the parts the `diag` benchmarks measure.
    fn gap(&self, w: &mut String) {
        let m = self.micro;
        let (Some(path), Some(floor)) = (m.get("replica/path/4"), m.get("floor/replica_open")) else { return };
        let _ = writeln!(w, "### Where the replica path's time goes (n = 4)\n");
        let vk = m.get("diag/verifying_key_from_sec1");
        let dec = m.get("diag/sec1_decompress");
        let hd = m.get("diag/piece_header_digest/4");
        let explained = vk.unwrap_or(0.0) + dec.unwrap_or(0.0) + hd.unwrap_or(0.0);
        let _ = writeln!(w, "| part | time | share of the gap |");
        let _ = writeln!(w, "|---|---|---|");
        let gap = path - floor;
        let pct = |x: Option<f64>| x.map_or_else(|| "n/a".to_owned(), |v| format!("{:.0}%", v / gap * 100.0));
        let _ = writeln!(w, "| path (`replica/path/4`) | {} | |", ns(Some(path)));
        let _ = writeln!(w, "| floor (`floor/replica_open`) | {} | |", ns(Some(floor)));
        let _ = writeln!(w, "| gap | {} | 100% |", ns(Some(gap)));
        let _ = writeln!(
            w,
            "| deployer key parsed from SEC1 on every verify (`diag/verifying_key_from_sec1`) | {} | {} |",
            ns(vk),
            pct(vk)
        );
        let _ = writeln!(
            w,
            "| ephemeral key decompressed for ECDH (`diag/sec1_decompress`) | {} | {} |",
            ns(dec),
            pct(dec)
        );
        let _ = writeln!(
            w,
            "| piece header digest, SHA-256 of the encoded header (`diag/piece_header_digest/4`) | {} | {} |",
            ns(hd),
            pct(hd)
        );
        let _ = writeln!(
            w,
            "| rest (share and code digests, replica state, step building) | {} | {} |\n",
            ns(Some(gap - explained)),
            pct(Some(gap - explained))
        );
        self.misses(w);
        if let (Some(b), Some(fl), Some(dec)) = (m.get("deployer/bundle/4"), m.get("floor/deployer_seal"), dec) {
            let per = b / 4.0;
            let _ = writeln!(
                w,
                "Deployer, n = 4: {} per replica against a floor of {}; each replica's key is decompressed from \
                 its 33-byte SEC1 form for the ECDH ({}), and per piece one ephemeral key, one ECDSA signature and \
                 the header digest are shared by only {N} replicas.\n",
                ns(Some(per)),
                ns(Some(fl)),
                ns(Some(dec))
            );
        }
    }
}
