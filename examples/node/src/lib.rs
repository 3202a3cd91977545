//! A real host for `bft-upgrade`: one OS process per replica, guardian and
//! installer, talking over authenticated TCP on loopback, each replica
//! group's operations ordered by AlephBFT, every role's state durable in
//! redb.
//!
//! Modules, in the order a message travels:
//! - [`config`]: the cluster's topology and keys (`cluster.json`, `keys/`);
//! - [`frame`]: what travels inside an authenticated frame (the core's wire
//!   types, encoded with `bft_upgrade::wire`);
//! - [`transport`]: length-prefixed frames, a signed handshake per
//!   connection and ChaCha20-Poly1305 with per-direction counters;
//! - [`store`]: redb, one database per process, as the core's host layer
//!   `Store`;
//! - [`outbound`]: the host layer's `Transport` over this network;
//! - [`ordering`]: the AlephBFT glue (keychain, network, data provider,
//!   finalization handler, unit backup);
//! - [`app`]: the replicated application's code, a WebAssembly module
//!   (`wasmi`) that upgrades replace;
//! - [`replica`], [`guardian`], [`installer`], [`deployer`]: the processes;
//! - [`cluster`]: the local launcher, the scenario and the database check.

pub mod app;
pub mod cluster;
pub mod config;
pub mod deployer;
pub mod frame;
pub mod guardian;
pub mod hosts;
pub mod installer;
pub mod metrics;
pub mod ordering;
pub mod outbound;
pub mod replica;
pub mod store;
pub mod transport;

/// Wall-clock milliseconds since the Unix epoch: the `Instant` every role
/// gets. The core saves deadlines with each role's state and requires the
/// host's clock to go on counting across restarts; Unix time does, where a
/// process-local monotonic clock (`std::time::Instant`) would start over
/// and leave stored deadlines meaningless.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The core's `Instant` for now.
pub fn now() -> bft_upgrade::step::Instant {
    bft_upgrade::step::Instant(now_ms())
}

/// Logging to stderr with `tracing`; `RUST_LOG` overrides the default.
pub fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal();
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).try_init();
}
