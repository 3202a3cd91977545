//! Whole deployments under Byzantine faults, in-process, seed by seed.
//!
//! `cargo run --release --example simulate` runs the built-in deployment
//! (12 groups of 4 replicas, 4 guardians each, 3 installers, every fault on)
//! over a few hundred seeds, checks safety after every event and liveness at
//! the end of each run, runs the paper's two-phase-commit baseline beside
//! it, and prints a summary. `--seed S --trace` replays one run.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use bft_upgrade::capacity;
use bft_upgrade::planted::Planted;
use bft_upgrade::sim::{twopc, FaultMode, Report, Swarm, World};
use bft_upgrade::wire::Outcome;
use clap::builder::RangedU64ValueParser;
use clap::error::ErrorKind;
use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Faults {
    None,
    Network,
    Byzantine,
    Compromised,
    All,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Protocol {
    Diffusing,
    #[value(name = "2pc")]
    TwoPc,
    Both,
}

/// The most groups a world may have here: what `SimInstaller::Large` in
/// `src/sim/world.rs` holds (the 250,000-group `Huge` one, about 75 MB built
/// by value, is left to `examples/scale.rs` and its 1 GiB stack).
const MAX_GROUPS: usize = 16_384;
/// Above this many groups the simulator builds its large installers (about
/// 4.7 MB each, built and restored by value): the workers need deep stacks.
const SMALL_GROUPS: usize = 256;
/// The most guardians a group may have. A guardian of the simulator guards
/// up to that many neighbouring groups, so it is bounded by both capacities.
const MAX_GUARDIANS: usize =
    if capacity::MAX_GUARDIANS < capacity::MAX_GUARDED { capacity::MAX_GUARDIANS } else { capacity::MAX_GUARDED };
/// The most correct installers per upgrade (a bound of this tool: each one
/// holds its own state for every group).
const MAX_INSTALLERS: usize = 64;
/// The most worker threads.
const MAX_THREADS: usize = 256;

/// A parser for a count in `min..=max`: out of range is a one-line usage
/// error naming the flag and its bounds.
fn count(min: usize, max: usize) -> RangedU64ValueParser<usize> {
    RangedU64ValueParser::new().range(min as u64..=max as u64)
}

/// Simulate bft-upgrade deployments under Byzantine faults.
///
/// A batch runs the seeds first, first + 1, ... for --runs runs, and stops
/// after seed 18446744073709551615 (u64::MAX): a range that would pass it
/// runs fewer seeds (the summary's run count says how many, and a note on
/// stderr says so). A value out of bounds is refused with one line on stderr
/// and exit code 2.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Replay this one seed.
    #[arg(long)]
    seed: Option<u64>,
    /// First seed of a batch.
    #[arg(long, default_value_t = 0)]
    first: u64,
    /// Number of runs: seeds first..first+runs, stopping after u64::MAX (0:
    /// none, an empty summary).
    #[arg(long, default_value_t = 300)]
    runs: u64,
    #[arg(
        long,
        default_value_t = 12,
        value_parser = count(1, MAX_GROUPS),
        help = format!("Groups, 1 to {MAX_GROUPS} (above {SMALL_GROUPS}, runs are slow and take gigabytes)"),
    )]
    groups: usize,
    #[arg(
        long,
        default_value_t = 4,
        value_parser = count(1, capacity::MAX_REPLICAS),
        help = format!("Replicas per group, 1 to {}", capacity::MAX_REPLICAS),
    )]
    replicas: usize,
    #[arg(
        long,
        default_value_t = 4,
        value_parser = count(0, MAX_GUARDIANS),
        help = format!(
            "Guardians per group, 0 (off) to {MAX_GUARDIANS} (F = (n - 1) / 3; shares have threshold \
             floor((n + F) / 2) + 1)"
        ),
    )]
    guardians: usize,
    #[arg(
        long,
        default_value_t = 3,
        value_parser = count(1, MAX_INSTALLERS),
        help = format!("Correct installers per upgrade, 1 to {MAX_INSTALLERS}"),
    )]
    installers: usize,
    /// Which faults the seeds may enable.
    #[arg(long, value_enum, default_value_t = Faults::All)]
    faults: Faults,
    /// Which protocols to run.
    #[arg(long, value_enum, default_value_t = Protocol::Both)]
    protocol: Protocol,
    /// Runs of the side-by-side comparison with two-phase commit (the first
    /// upgrade of the workload alone, on the first runs of the batch).
    #[arg(long, default_value_t = 50)]
    compare: u64,
    /// Print every event of a replayed seed.
    #[arg(long)]
    trace: bool,
    /// One JSON object on stdout instead of the table.
    #[arg(long)]
    json: bool,
    #[arg(
        long,
        value_parser = count(1, MAX_THREADS),
        help = format!("Worker threads, 1 to {MAX_THREADS} (default: the machine's cores)"),
    )]
    threads: Option<usize>,
    /// Plant a deliberate bug to watch the checkers find it (the bugs inside
    /// roles need `--features planted-bugs`).
    #[arg(long, value_enum)]
    plant: Option<Plant>,
    /// Byzantine replicas only from the original fixed menu (silence,
    /// forged shares, both kinds, wrong decisions, equivocation, garbage):
    /// by default they may also race, lie repeatedly, replay genuine values
    /// and mutate real messages.
    #[arg(long)]
    tame: bool,
    /// Each seed draws its own deployment (group sizes 1 to 64, 1 to 200
    /// groups, 0 to 16 guardians, call graphs with isolated groups, tight
    /// installers, proactive and finish-all on or off); not with --tame.
    /// --groups, --replicas and --guardians are then ignored.
    #[arg(long)]
    shapes: bool,
    /// Many successive upgrades per run (48), chained on each deployer's
    /// version codes; not with --tame.
    #[arg(long)]
    long: bool,
    /// Upgrades per run, chained (0: the built-in workload; --long: 48).
    #[arg(long)]
    upgrades: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Plant {
    ReleasesBoth,
    SkipTriggerCheck,
    SkipVersionCheck,
    CommitWithMissingGroup,
    GuardianForgets,
    NoPostponement,
}

impl Plant {
    fn bug(self) -> Planted {
        match self {
            Plant::ReleasesBoth => Planted::ReleasesBoth,
            Plant::SkipTriggerCheck => Planted::SkipTriggerCheck,
            Plant::SkipVersionCheck => Planted::SkipVersionCheck,
            Plant::CommitWithMissingGroup => Planted::CommitWithMissingGroup,
            Plant::GuardianForgets => Planted::GuardianForgets,
            Plant::NoPostponement => Planted::NoPostponement,
        }
    }

    /// Whether the bug lives inside a role (and so needs the feature).
    fn in_role(self) -> bool {
        !matches!(self, Plant::ReleasesBoth | Plant::GuardianForgets)
    }
}

impl Args {
    fn swarm(&self) -> Swarm {
        let faults = match self.faults {
            Faults::None => FaultMode::None,
            Faults::Network => FaultMode::Network,
            Faults::Byzantine => FaultMode::Byzantine,
            Faults::Compromised => FaultMode::Compromised,
            Faults::All => FaultMode::All,
        };
        Swarm {
            groups: self.groups,
            replicas: self.replicas,
            guardians: self.guardians,
            installers: self.installers,
            faults,
            hostile: !self.tame || self.shapes || self.long,
            shapes: self.shapes,
            upgrades: self.upgrades.unwrap_or(if self.long { bft_upgrade::sim::LONG_UPGRADES } else { 0 }),
        }
    }

    fn config(&self, seed: u64) -> bft_upgrade::sim::SimConfig {
        let mut cfg = self.swarm().config(seed);
        if let Some(p) = self.plant {
            cfg.planted = p.bug();
        }
        cfg
    }

    fn replay(&self, seed: u64) -> String {
        let (features, plant) = match self.plant {
            Some(p) => (
                if p.in_role() { " --features planted-bugs" } else { "" },
                format!(" --plant {}", p.to_possible_value().map_or(String::new(), |v| v.get_name().to_string())),
            ),
            None => ("", String::new()),
        };
        format!(
            "cargo run --release{features} --example simulate -- --seed {seed} --groups {} --replicas {} --guardians {} \
             --installers {} --faults {}{plant}{} --trace",
            self.groups,
            self.replicas,
            self.guardians,
            self.installers,
            self.faults.to_possible_value().map_or("all".into(), |v| v.get_name().to_string()),
            self.mode_flags(),
        )
    }

    /// The flags beyond the shape that a replay needs.
    fn mode_flags(&self) -> String {
        let mut out = String::new();
        if self.tame && !self.shapes && !self.long {
            out.push_str(" --tame");
        }
        if self.shapes {
            out.push_str(" --shapes");
        }
        if self.long {
            out.push_str(" --long");
        }
        if let Some(n) = self.upgrades {
            out.push_str(&format!(" --upgrades {n}"));
        }
        out
    }
}

/// Per-protocol averages.
#[derive(Default, Debug)]
struct Side {
    runs: u64,
    messages_per_replica: f64,
    bytes_per_replica: f64,
    time_to_install_ms: f64,
    installed: u64,
    availability: f64,
    availability_runs: u64,
    lock_window_ms: f64,
}

impl Side {
    fn add(&mut self, messages: f64, bytes: f64, time: Option<u64>, availability: Option<f64>, lock: u64) {
        self.runs += 1;
        self.messages_per_replica += messages;
        self.bytes_per_replica += bytes;
        if let Some(t) = time {
            self.time_to_install_ms += t as f64;
            self.installed += 1;
        }
        if let Some(a) = availability {
            self.availability += a;
            self.availability_runs += 1;
        }
        self.lock_window_ms += lock as f64;
    }

    fn mean(&self, total: f64) -> f64 {
        if self.runs == 0 {
            0.0
        } else {
            total / self.runs as f64
        }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "runs": self.runs,
            "messages_per_replica": self.mean(self.messages_per_replica),
            "bytes_per_replica": self.mean(self.bytes_per_replica),
            "virtual_time_to_install": if self.installed == 0 { 0.0 } else { self.time_to_install_ms / self.installed as f64 },
            "availability": if self.availability_runs == 0 { 1.0 } else { self.availability / self.availability_runs as f64 },
            "lock_window_ms": self.mean(self.lock_window_ms),
        })
    }
}

#[derive(Default)]
struct Totals {
    runs: u64,
    violations: Vec<(u64, String)>,
    liveness: Vec<(u64, String)>,
    committed: u64,
    aborted: u64,
    faults: u64,
    wipes: u64,
    rotations: u64,
    joined: u64,
    left: u64,
    diffusing: Side,
    two_pc: Side,
}

/// Parses the command line; a usage error is one line on stderr and exit
/// code 2 (help and version print as usual).
fn parse() -> Result<Args, ExitCode> {
    match Args::try_parse() {
        Ok(args) => Ok(args),
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => e.exit(),
        Err(e) => {
            // clap renders the error, a tip or two, the usage and a pointer
            // to --help over several lines: keep the error and its tips.
            let text = e.render().to_string();
            let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
            let first = lines.next().unwrap_or("error: bad arguments");
            let tips: Vec<&str> = lines.filter(|l| l.starts_with("tip:")).collect();
            if tips.is_empty() {
                eprintln!("{first}");
            } else {
                eprintln!("{first} ({})", tips.join("; "));
            }
            Err(ExitCode::from(2))
        }
    }
}

/// The stack of a thread that runs worlds: deep enough for the large
/// installers, which are built and restored by value.
fn stack_size(groups: usize) -> usize {
    if groups > SMALL_GROUPS {
        256 << 20
    } else {
        16 << 20
    }
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(args) => args,
        Err(code) => return code,
    };
    let swarm = args.swarm();
    if args.plant.is_some_and(Plant::in_role) && !cfg!(feature = "planted-bugs") {
        eprintln!("error: this planted bug lives inside a role: add --features planted-bugs");
        return ExitCode::from(2);
    }
    if let Some(seed) = args.seed {
        let stack = stack_size(args.groups);
        return std::thread::scope(|scope| {
            let worker =
                std::thread::Builder::new().stack_size(stack).spawn_scoped(scope, || replay(&args, swarm, seed));
            match worker.map(|w| w.join()) {
                Ok(Ok(code)) => code,
                Ok(Err(panic)) => std::panic::resume_unwind(panic),
                Err(e) => {
                    eprintln!("error: cannot start the replay thread: {e}");
                    ExitCode::FAILURE
                }
            }
        });
    }
    // Run `index` of the batch is seed `first + index`; the batch stops
    // after u64::MAX.
    let runs = args.runs.min((u64::MAX - args.first).saturating_add(1));
    if runs < args.runs {
        eprintln!("note: the batch stops after seed {}: {runs} of {} runs", u64::MAX, args.runs);
    }
    let started = Instant::now();
    let totals = Mutex::new(Totals::default());
    let next = AtomicU64::new(0);
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    // No more threads than runs.
    let threads = threads.min(MAX_THREADS).min(usize::try_from(runs).unwrap_or(usize::MAX));
    let progress = (!args.json && std::io::stderr().is_terminal() && runs > 20).then(|| {
        let bar = indicatif::ProgressBar::new(runs);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} runs ({per_sec})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    // Each worker takes the next index below `runs`, never counting past it.
    let take = || next.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |i| (i < runs).then(|| i + 1));
    let work = || {
        while let Ok(index) = take() {
            let Some(seed) = args.first.checked_add(index) else {
                break;
            };
            let cfg = args.config(seed);
            let diffusing = (args.protocol != Protocol::TwoPc).then(|| World::new(cfg.clone()).run());
            // Side by side: the first upgrade alone, both protocols.
            let compare = (index < args.compare).then(|| {
                let mut one = cfg.clone();
                one.upgrades.truncate(1);
                // One correct installer, as 2PC has one coordinator.
                one.installers = 1;
                one.byzantine_installers = 0;
                one.compromised.clear();
                one.byzantine_guardians.clear();
                let ours = (args.protocol != Protocol::TwoPc).then(|| World::new(one.clone()).run());
                let piece = ours.as_ref().map_or(12_000, |r| r.piece_bytes);
                let theirs = (args.protocol != Protocol::Diffusing).then(|| twopc::run(&one, piece));
                (ours, theirs)
            });
            let mut t = totals.lock().unwrap_or_else(|e| e.into_inner());
            t.runs += 1;
            if let Some(r) = &diffusing {
                record(&mut t, seed, r);
            }
            if let Some((ours, theirs)) = compare {
                if let Some(r) = ours {
                    let start = 0;
                    t.diffusing.add(
                        (r.metrics.replica_messages + r.metrics.installer_messages) as f64 / r.replicas as f64,
                        (r.metrics.replica_bytes + r.metrics.installer_bytes) as f64 / r.replicas as f64,
                        r.finished_at_ms.map(|f| f.saturating_sub(start)),
                        r.availability,
                        0,
                    );
                }
                if let Some(b) = theirs {
                    t.two_pc.add(
                        b.messages_per_replica,
                        b.bytes_per_replica,
                        b.time_to_install_ms,
                        b.availability,
                        b.lock_window_ms,
                    );
                }
            }
            drop(t);
            if let Some(bar) = &progress {
                bar.inc(1);
            }
        }
    };
    let stack = stack_size(args.groups);
    let started_threads = std::thread::scope(|scope| {
        let mut started_threads = 0;
        for _ in 0..threads {
            match std::thread::Builder::new().stack_size(stack).spawn_scoped(scope, work) {
                Ok(_) => started_threads += 1,
                Err(e) => {
                    eprintln!("note: cannot start a worker thread: {e}");
                    break;
                }
            }
        }
        started_threads
    });
    if started_threads == 0 && runs > 0 {
        eprintln!("error: no worker thread started");
        return ExitCode::FAILURE;
    }
    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }
    let mut t = totals.into_inner().unwrap_or_else(|e| e.into_inner());
    t.violations.sort();
    t.liveness.sort();
    let elapsed = started.elapsed();
    if args.json {
        let json = serde_json::json!({
            "runs": t.runs,
            "seed_first": args.first,
            "safety_violations": t.violations.len(),
            "liveness_failures": t.liveness.len(),
            "upgrades_committed": t.committed,
            "upgrades_aborted": t.aborted,
            "faults_injected": t.faults,
            "replicas_wiped": t.wipes,
            "keys_rotated": t.rotations,
            "replicas_joined": t.joined,
            "replicas_left": t.left,
            "diffusing": t.diffusing.json(),
            "2pc": t.two_pc.json(),
            "seconds": elapsed.as_secs_f64(),
            "failing_seeds": t.violations.iter().chain(&t.liveness).map(|(s, _)| *s).collect::<Vec<_>>(),
        });
        println!("{json}");
    } else {
        print_table(&args, &t, elapsed.as_secs_f64());
    }
    let failures = t.violations.iter().chain(&t.liveness);
    let mut failed = false;
    for (seed, what) in failures.take(5) {
        failed = true;
        eprintln!("seed {seed}: {what}\n  replay: {}", args.replay(*seed));
    }
    if failed || !t.violations.is_empty() || !t.liveness.is_empty() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn record(t: &mut Totals, seed: u64, r: &Report) {
    t.faults += r.faults_injected;
    t.wipes += r.metrics.wipes;
    t.rotations += r.metrics.rotations;
    t.joined += r.metrics.joined;
    t.left += r.metrics.left;
    for o in r.outcomes.iter().flatten() {
        match o {
            Outcome::Committed => t.committed += 1,
            Outcome::Aborted => t.aborted += 1,
        }
    }
    if let Some(v) = &r.violation {
        t.violations.push((seed, format!("safety violation at {} ms: {}", v.at_ms, v.what)));
    }
    if let Some(l) = &r.liveness {
        t.liveness.push((seed, format!("liveness failure: {l}")));
    }
}

fn replay(args: &Args, _swarm: Swarm, seed: u64) -> ExitCode {
    let mut cfg = args.config(seed);
    cfg.print_trace = args.trace;
    if args.shapes {
        println!(
            "seed {seed}: shape template {}, group sizes {:?}, {} guardians each",
            Swarm::template_of(seed),
            cfg.group_sizes,
            cfg.guardians
        );
        println!(
            "  installers {} (tight {}), finish_all {}, proactive {}, ring {}, extra edges {}, isolated {:?}",
            cfg.installers,
            cfg.tight_installers,
            cfg.finish_all,
            cfg.proactive,
            cfg.ring,
            cfg.extra_edges,
            cfg.isolated
        );
    } else {
        println!(
            "seed {seed}: {} groups of {} replicas, {} guardians each",
            args.groups, args.replicas, args.guardians
        );
    }
    println!("  {} upgrades", cfg.upgrades.len());
    println!("  byzantine replicas {:?}", cfg.byzantine);
    println!("  byzantine guardians {:?}, compromised groups {:?}", cfg.byzantine_guardians, cfg.compromised);
    println!("  network {:?}, crashes {}, byzantine installers {}", cfg.network, cfg.crashes, cfg.byzantine_installers);
    let r = World::new(cfg).run();
    println!("outcomes {:?}", r.outcomes);
    println!("finished at {:?} ms; {:?}", r.finished_at_ms, r.metrics);
    println!("trace digest {}", r.trace_digest.iter().map(|b| format!("{b:02x}")).collect::<String>());
    match (&r.violation, &r.liveness) {
        (None, None) => {
            println!("ok: no safety violation, every owed upgrade finished");
            ExitCode::SUCCESS
        }
        (v, l) => {
            if let Some(v) = v {
                println!("SAFETY VIOLATION at {} ms: {}", v.at_ms, v.what);
            }
            if let Some(l) = l {
                println!("LIVENESS FAILURE: {l}");
            }
            ExitCode::FAILURE
        }
    }
}

fn print_table(args: &Args, t: &Totals, seconds: f64) {
    let d = t.diffusing.json();
    let p = t.two_pc.json();
    if args.shapes {
        println!(
            "bft-upgrade simulation: shape swarm ({} templates), {} installers, faults {:?}{}",
            Swarm::templates().len(),
            args.installers,
            args.faults,
            args.mode_flags()
        );
    } else {
        println!(
            "bft-upgrade simulation: {} groups × {} replicas, {} guardians/group, {} installers, faults {:?}{}",
            args.groups,
            args.replicas,
            args.guardians,
            args.installers,
            args.faults,
            args.mode_flags()
        );
    }
    println!();
    let seeds = match t.runs.checked_sub(1) {
        None => "no seeds".to_string(),
        Some(last) => format!("seeds {}..={}", args.first, args.first.saturating_add(last)),
    };
    println!("  runs                      {:>10}   ({seeds}, {seconds:.1} s)", t.runs);
    println!("  upgrades committed        {:>10}", t.committed);
    println!("  upgrades aborted          {:>10}", t.aborted);
    println!("  faults injected           {:>10}", t.faults);
    println!("  replicas wiped, rejoined  {:>10}", t.wipes);
    println!("  keys rotated (membership) {:>10}", t.rotations);
    println!("  replicas joined, left     {:>10} {}", t.joined, t.left);
    println!("  safety violations         {:>10}", t.violations.len());
    println!("  liveness failures         {:>10}", t.liveness.len());
    println!();
    println!("  one upgrade, side by side ({} runs)   diffusing        2PC", t.diffusing.runs.max(t.two_pc.runs));
    let row = |name: &str, key: &str, unit: &str| {
        let f = |v: &serde_json::Value| v[key].as_f64().unwrap_or(0.0);
        println!("  {name:<34} {:>10.2}{unit} {:>10.2}{unit}", f(&d), f(&p));
    };
    row("messages per replica", "messages_per_replica", "  ");
    row("bytes per replica", "bytes_per_replica", "  ");
    row("virtual time to install (ms)", "virtual_time_to_install", "  ");
    row("application availability (0..1)", "availability", "  ");
    row("longest lock window (ms)", "lock_window_ms", "  ");
}
