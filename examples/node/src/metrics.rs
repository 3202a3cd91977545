//! Each process's counters on a loopback HTTP port, in the Prometheus text
//! format (`metrics` and `metrics-exporter-prometheus`): scrape
//! `http://<metrics address>/metrics` (any path answers), the address being
//! the process's `metrics` entry in `cluster.json`.

use std::net::SocketAddr;

use anyhow::{anyhow, Result};
use metrics_exporter_prometheus::PrometheusBuilder;

/// Serves this process's counters at `addr` (none: not served), every
/// series labelled with `labels` (which process it is).
///
/// # Errors
/// When the exporter cannot be installed (its port is taken).
pub fn serve(addr: Option<SocketAddr>, labels: &[(&'static str, String)]) -> Result<()> {
    let Some(addr) = addr else { return Ok(()) };
    let mut builder = PrometheusBuilder::new().with_http_listener(addr);
    for (key, value) in labels {
        builder = builder.add_global_label(*key, value.clone());
    }
    builder.install().map_err(|e| anyhow!("serving metrics on {addr}: {e}"))
}

/// Sets a gauge.
pub fn gauge(name: &'static str, value: u64) {
    metrics::gauge!(name).set(value as f64);
}

/// Sets a counter to a total this process keeps itself.
pub fn total(name: &'static str, value: u64) {
    metrics::counter!(name).absolute(value);
}

/// Adds one to a counter.
pub fn count(name: &'static str) {
    metrics::counter!(name).increment(1);
}
