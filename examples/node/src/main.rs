//! `node`: the command line of the bft-upgrade real host.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bft_upgrade_node::cluster::{self, Scenario};
use bft_upgrade_node::config::Cluster;
use bft_upgrade_node::deployer::{self, Shape};
use bft_upgrade_node::hosts::{self, Party};
use bft_upgrade_node::installer::Mode;
use bft_upgrade_node::{guardian, installer, replica};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "node", about = "bft-upgrade over AlephBFT, TCP and redb: replicas, guardians, installers, deployer")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Args, Clone)]
struct ShapeArgs {
    /// Groups.
    #[arg(long, default_value_t = 3)]
    groups: usize,
    /// Replicas per group.
    #[arg(long, default_value_t = 4)]
    replicas: usize,
    /// Guardians per group (0: shares in replica custody).
    #[arg(long, default_value_t = 4)]
    guardians: usize,
    #[command(flatten)]
    timing: TimingArgs,
}

/// How fast a cluster runs: the parts of its configuration that are not
/// its parties.
#[derive(Args, Clone)]
struct TimingArgs {
    /// AlephBFT unit creation delay.
    #[arg(long, default_value_t = 100)]
    unit_delay_ms: u64,
    /// How often each group's application calls a neighbor (0: never).
    #[arg(long, default_value_t = 500)]
    app_interval_ms: u64,
    /// Turn proactive diffusion off (codes then spread by piggybacking on
    /// application calls and through guardians only).
    #[arg(long)]
    no_proactive: bool,
    /// Rounds after which a group changes its AlephBFT session (20 to
    /// 60,000; AlephBFT's rounds are 16-bit and a session cannot outlive
    /// 65,534).
    #[arg(long, default_value_t = bft_upgrade_node::config::DEFAULT_SESSION_ROUNDS,
          value_parser = clap::value_parser!(u16).range(20..=60_000))]
    session_rounds: u16,
}

impl TimingArgs {
    fn shape(&self, groups: usize, replicas: usize, guardians: usize) -> Shape {
        Shape {
            groups,
            replicas,
            guardians,
            unit_delay_ms: self.unit_delay_ms,
            app_interval_ms: self.app_interval_ms,
            proactive: !self.no_proactive,
            session_rounds: self.session_rounds,
        }
    }
}

impl ShapeArgs {
    fn shape(&self) -> Shape {
        self.timing.shape(self.groups, self.replicas, self.guardians)
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Write a new cluster (topology and keys) into a directory.
    Init {
        /// The cluster directory.
        #[arg(long)]
        dir: PathBuf,
        #[command(flatten)]
        shape: ShapeArgs,
    },
    /// Make one party's keys on its own host: writes its secret key into
    /// the directory (with a replica's data directory, and a replica's or
    /// guardian's process configuration) and prints its public line, for
    /// `node assemble`. Nothing secret is printed.
    Keygen {
        /// This host's cluster directory.
        #[arg(long)]
        dir: PathBuf,
        /// replica-G-I, guardian-K, installer-K, client-K or deployer.
        #[arg(long)]
        party: Party,
        /// Where a replica or guardian listens (an address its peers reach).
        #[arg(long)]
        addr: Option<std::net::SocketAddr>,
        /// Where a replica or guardian serves its counters.
        #[arg(long)]
        metrics: Option<std::net::SocketAddr>,
    },
    /// Write `cluster.json` from every party's public line (files of
    /// `node keygen` output; `-` reads standard input). The file holds no
    /// secret: copy it into every host's cluster directory.
    Assemble {
        /// The cluster directory to write it in.
        #[arg(long)]
        dir: PathBuf,
        /// Guardians per group (0: shares in replica custody).
        #[arg(long, default_value_t = 4)]
        guardians: usize,
        #[command(flatten)]
        timing: TimingArgs,
        /// Files of public lines.
        #[arg(required = true)]
        public: Vec<PathBuf>,
    },
    /// Run one replica.
    Replica {
        /// Its configuration file (written by `node cluster up`).
        #[arg(long)]
        config: PathBuf,
    },
    /// Run one guardian.
    Guardian {
        /// Its configuration file (written by `node cluster up`).
        #[arg(long)]
        config: PathBuf,
    },
    /// Build an upgrade over every group, chained on the deployer's record
    /// (no running cluster needed): prints the bundle's path.
    Deploy {
        /// The cluster directory.
        #[arg(long)]
        dir: PathBuf,
        /// The new payload's text.
        #[arg(long, default_value = "application v2")]
        text: String,
        /// Install the application's next module instead: WebAssembly text
        /// (`.wat`, compiled here) or binary (`.wasm`).
        #[arg(long, conflicts_with = "text")]
        module: Option<PathBuf>,
        /// Deploy the module even if it does not validate here (each group
        /// then refuses it: the upgrade aborts).
        #[arg(long, requires = "module")]
        unchecked: bool,
    },
    /// Install an upgrade from its bundle; exits once decided, acknowledged
    /// and reported by every group.
    Install {
        /// The bundle file (from `node deploy`).
        bundle: PathBuf,
        /// The cluster directory.
        #[arg(long)]
        dir: PathBuf,
        /// The installer's id (1..=3).
        #[arg(long, default_value_t = 1)]
        id: u32,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout_s: u64,
    },
    /// Abort the deployer's upgrade in flight (on the deployer's host). Sound
    /// only once some group refused its piece for good (a stale bundle):
    /// until then an installer may assemble the trigger code, so the
    /// command drives the upgrade and refuses if it decides instead.
    Abort {
        /// The bundle file (from `node deploy`).
        bundle: PathBuf,
        /// The cluster directory.
        #[arg(long)]
        dir: PathBuf,
        /// The installer id it answers as (1..=3).
        #[arg(long, default_value_t = 1)]
        id: u32,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 120)]
        timeout_s: u64,
    },
    /// Run a local cluster.
    Cluster {
        #[command(subcommand)]
        command: ClusterCmd,
    },
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// Start every replica and guardian (writing the cluster first if the
    /// directory has none).
    Up {
        /// The cluster directory.
        #[arg(long)]
        dir: PathBuf,
        #[command(flatten)]
        shape: ShapeArgs,
    },
    /// Stop every process of the cluster.
    Down {
        /// The cluster directory.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Each group's version and latest upgrade.
    Status {
        /// The cluster directory.
        #[arg(long)]
        dir: PathBuf,
        /// First wait (up to a minute) until every replica answers and has
        /// finished every upgrade it saw and applied its payload, at its
        /// group's highest version.
        #[arg(long)]
        wait: bool,
    },
    /// Every second, each group's module version and application calls
    /// per second (availability through an install).
    Watch {
        /// The cluster directory.
        #[arg(long)]
        dir: PathBuf,
        /// Milliseconds between lines.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
        /// Stop after this many lines (default: until interrupted).
        #[arg(long)]
        count: Option<u64>,
    },
    /// Read the databases of a stopped cluster and check the run.
    Check {
        /// The cluster directory.
        #[arg(long)]
        dir: PathBuf,
        /// Every replica must have committed this upgrade (hex id).
        #[arg(long)]
        upgrade: Option<String>,
    },
    /// Up, deploy, install while killing one replica per group and the
    /// installer, restart them, print every group's state, down, check.
    Scenario {
        /// The cluster directory (a fresh one is written if empty).
        #[arg(long)]
        dir: PathBuf,
        #[command(flatten)]
        shape: ShapeArgs,
        /// Do not kill anything (timing runs).
        #[arg(long)]
        no_kills: bool,
        /// Milliseconds after the installer starts to kill.
        #[arg(long, default_value_t = 700)]
        kill_after_ms: u64,
        /// Bound on the whole run.
        #[arg(long, default_value_t = 240)]
        timeout_s: u64,
        /// Leave the cluster running afterwards (no check).
        #[arg(long)]
        keep: bool,
    },
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}

fn ensure_cluster(dir: &std::path::Path, shape: &ShapeArgs) -> Result<()> {
    if !dir.join("cluster.json").exists() {
        deployer::init(dir, &shape.shape())?;
        println!("wrote a cluster of {} groups x {} replicas into {}", shape.groups, shape.replicas, dir.display());
    }
    Ok(())
}

/// Every error ends the process with one line (its causes joined by `: `)
/// and exit status 1, backtraces or not; a usage error is one line and
/// exit status 2.
fn main() -> std::process::ExitCode {
    use clap::error::ErrorKind;
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) =>
        {
            e.exit()
        }
        Err(e) => {
            // A usage error in one line too: clap's text without its usage
            // and help hints, its lines joined.
            let text = e.render().to_string();
            let lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
            let what: Vec<&str> =
                lines.take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more")).collect();
            eprintln!("{}", what.join(" "));
            return std::process::ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// A replica's default log filter: AlephBFT's warnings are shown (its
/// "Maximum round reached" was once hidden, and a group stopped ordering
/// with nothing in the logs).
const REPLICA_LOG: &str = "info,AlephBFT=warn";

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Init { dir, shape } => {
            deployer::init(&dir, &shape.shape())?;
            println!("{}", dir.join("cluster.json").display());
        }
        Cmd::Keygen { dir, party, addr, metrics } => {
            println!("{}", serde_json::to_string(&hosts::keygen(&dir, party, addr, metrics)?)?);
        }
        Cmd::Assemble { dir, guardians, timing, public } => {
            let mut parties = Vec::new();
            for path in &public {
                let text = if path.as_os_str() == "-" {
                    std::io::read_to_string(std::io::stdin())?
                } else {
                    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
                };
                parties.extend(hosts::read_public(&text, &path.display().to_string())?);
            }
            if dir.join("cluster.json").exists() {
                bail!("{} already holds a cluster", dir.display());
            }
            std::fs::create_dir_all(&dir)?;
            let cluster = hosts::assemble(&parties, &timing.shape(0, 0, guardians))?;
            cluster.save(&dir)?;
            println!("{}", dir.join("cluster.json").display());
        }
        Cmd::Replica { config } => {
            bft_upgrade_node::init_logging(REPLICA_LOG);
            let c = cluster::ProcessConfig::load(&config)?;
            let Some(group) = c.group else { bail!("a replica's configuration names its group") };
            runtime()?.block_on(replica::run(&c.cluster, group, u8::try_from(c.id)?))?;
        }
        Cmd::Guardian { config } => {
            bft_upgrade_node::init_logging("info");
            let c = cluster::ProcessConfig::load(&config)?;
            runtime()?.block_on(guardian::run(&c.cluster, c.id))?;
        }
        Cmd::Deploy { dir, text, module, unchecked } => {
            bft_upgrade_node::init_logging("warn");
            let path = match module {
                None => deployer::deploy(&dir, &text)?,
                Some(file) => {
                    let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
                    let bytes = if bft_upgrade_node::app::is_module(&bytes) {
                        bytes
                    } else {
                        let text =
                            String::from_utf8(bytes).with_context(|| format!("{} is not text", file.display()))?;
                        bft_upgrade_node::app::compile(&text)
                            .with_context(|| format!("compiling {}", file.display()))?
                    };
                    if !unchecked {
                        bft_upgrade_node::app::Program::new(&bytes)
                            .with_context(|| format!("{} is not a bank module", file.display()))?;
                    }
                    deployer::deploy_content(&dir, deployer::Content::Module(&bytes))?
                }
            };
            println!("{}", path.display());
        }
        Cmd::Install { bundle, dir, id, timeout_s } => install(&dir, id, &bundle, timeout_s, Mode::Install)?,
        Cmd::Abort { bundle, dir, id, timeout_s } => install(&dir, id, &bundle, timeout_s, Mode::Abort)?,
        Cmd::Cluster { command } => cluster_cmd(command)?,
    }
    Ok(())
}

/// `node install` and `node abort`: an installer run, its outcome printed.
fn install(dir: &std::path::Path, id: u32, bundle: &std::path::Path, timeout_s: u64, mode: Mode) -> Result<()> {
    bft_upgrade_node::init_logging("info");
    let started = std::time::Instant::now();
    let outcome = runtime()?.block_on(installer::run(dir, id, bundle, Duration::from_secs(timeout_s), mode))?;
    println!("{outcome:?} in {} ms", started.elapsed().as_millis());
    Ok(())
}

fn cluster_cmd(command: ClusterCmd) -> Result<()> {
    bft_upgrade_node::init_logging("warn");
    match command {
        ClusterCmd::Up { dir, shape } => {
            ensure_cluster(&dir, &shape)?;
            runtime()?.block_on(cluster::up(&dir, Duration::from_secs(60)))?;
            println!("cluster up in {} (logs in {})", dir.display(), dir.join("logs").display());
        }
        ClusterCmd::Down { dir } => println!("stopped {} processes", cluster::down(&dir)),
        ClusterCmd::Status { dir, wait } => {
            let cluster = Cluster::load(&dir)?;
            let total: usize = cluster.groups.iter().map(|g| g.replicas.len()).sum();
            let rt = runtime()?;
            let until = std::time::Instant::now() + Duration::from_secs(60);
            let statuses = loop {
                let statuses = rt.block_on(cluster::query(&dir, Duration::from_secs(2)))?;
                // And no replica behind its group's highest version: one
                // that just restarted has not seen the last upgrade yet.
                let top = |g| statuses.iter().filter(|s| s.group == g).map(|s| s.version).max();
                let settled = statuses.len() == total
                    && statuses.iter().all(|s| {
                        s.upgrading.is_empty()
                            && s.upgrades.iter().all(|u| u.outcome.is_some())
                            && Some(s.version) == top(s.group)
                    });
                if !wait || settled || std::time::Instant::now() > until {
                    break statuses;
                }
                std::thread::sleep(Duration::from_millis(250));
            };
            cluster::print_status(&cluster, &statuses);
            let guardians = rt.block_on(cluster::query_guardians(&dir, Duration::from_secs(2)))?;
            println!("{}", cluster::guardian_line(&cluster, &guardians));
        }
        ClusterCmd::Watch { dir, interval_ms, count } => {
            runtime()?.block_on(cluster::watch(&dir, Duration::from_millis(interval_ms.max(100)), count))?;
        }
        ClusterCmd::Check { dir, upgrade } => {
            let upgrade = upgrade.map(|u| cluster::parse_upgrade(&u)).transpose()?;
            report(&cluster::check(&dir, upgrade)?)?;
        }
        ClusterCmd::Scenario { dir, shape, no_kills, kill_after_ms, timeout_s, keep } => {
            ensure_cluster(&dir, &shape)?;
            let rt = runtime()?;
            let s = Scenario {
                kills: !no_kills,
                kill_after: Duration::from_millis(kill_after_ms),
                down_for: Duration::from_millis(1500),
                timeout: Duration::from_secs(timeout_s),
            };
            let result = rt.block_on(async {
                cluster::up(&dir, Duration::from_secs(90)).await?;
                cluster::scenario(&dir, &s).await
            });
            if keep && result.is_ok() {
                return result.map(|(_, t)| println!("install to last group's commit: {} ms", t.as_millis()));
            }
            let stopped = cluster::down(&dir);
            let (upgrade, elapsed) = result?;
            println!("install to last group's commit: {} ms", elapsed.as_millis());
            println!("stopped {stopped} processes; checking the databases");
            // Give the killed processes' file locks a moment to go.
            std::thread::sleep(Duration::from_millis(300));
            report(&cluster::check(&dir, Some(upgrade))?)?;
        }
    }
    Ok(())
}

fn report(c: &cluster::Check) -> Result<()> {
    for (g, committed, n) in &c.groups {
        println!("database check: group {g}: {committed}/{n} replicas committed");
    }
    println!("database check: {} guardian release records read", c.releases);
    if let Some(app) = &c.app {
        println!("database check: {}", app.line());
    }
    for v in &c.violations {
        println!("VIOLATION: {v}");
    }
    if !c.violations.is_empty() {
        bail!("{} violations", c.violations.len());
    }
    println!("database check: every group committed, no guardian released both kinds, no call mixed module versions, no money made or lost");
    Ok(())
}
