//! `node install <bundle>`: one installer driving one upgrade to its
//! outcome, through the core's host layer (`InstallerHost` over redb): a
//! killed installer restarted with the same id resumes from its last
//! checkpoint.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Result};
use bft_upgrade::host::{InstallerHost, InstallerReport};
use bft_upgrade::installer::{Finishing, Installer, InstallerEffect, InstallerOptions};
use bft_upgrade::step::Peer;
use bft_upgrade::wire::{Message, Outcome};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::config::{hex, key_path, Cluster, Secrets};
use crate::deployer::load_bundle;
use crate::frame::Frame;
use crate::outbound::NetOut;
use crate::store::Store;
use crate::transport::{Net, Policy};

/// The installer role for up to 64 groups.
pub type NodeInstaller = Installer<64, 1024>;

/// Runs installer `id` on the bundle at `path` until every group it
/// finishes through acknowledged, or `timeout` passes.
///
/// # Errors
/// On configuration or storage errors, or on timeout.
pub async fn run(dir: &Path, id: u32, path: &Path, timeout: Duration) -> Result<Outcome> {
    let started = std::time::Instant::now();
    let cluster = Arc::new(Cluster::load(dir)?);
    let me = Peer::Installer(id);
    let secrets = Secrets::load(&key_path(dir, me))?;
    let bundle = load_bundle(path)?;
    let upgrade = bundle.header.upgrade;
    let store = Store::open(&dir.join("data").join(format!("installer-{id}")).join("state.redb"))?;
    let options = InstallerOptions::default().retry_ms(cluster.retry_ms).finishing(Finishing::Diffusion { grace: 3 });
    let key = format!("installer/{}", hex(&upgrade.0));
    let mut host: InstallerHost<Store, 64, 1024> = InstallerHost::open(store, &key, bundle, |b| {
        NodeInstaller::new(id, b.header.clone(), &b.groups, options).map(Box::new)
    })
    .map_err(|e| anyhow!("installer: {e}"))?;
    let policy: Policy = Arc::new(|peer, frame| match (peer, frame) {
        (Peer::Replica { .. }, Frame::Msg(Message::Answer(_))) => Ok(()),
        _ => Err(format!("an installer takes only answers from replicas, not this from {peer:?}")),
    });
    let (in_tx, mut in_rx) = mpsc::channel(8192);
    let net = Net::new(me, secrets.sign_key.clone(), cluster.clone(), in_tx, policy);
    let mut out = NetOut { net: &net, cluster: &cluster };
    let report = host.start(crate::now(), &mut out).map_err(|e| anyhow!("{e}"))?;
    log(&report);
    while !host.role().is_done() {
        if started.elapsed() > timeout {
            return Err(anyhow!("installer timed out after {timeout:?}"));
        }
        let wait = host.deadline().map_or(200, |d| d.0.saturating_sub(crate::now_ms())).min(200);
        let report = tokio::select! {
            Some((peer, frame)) = in_rx.recv() => {
                let Frame::Msg(Message::Answer(answer)) = frame else { continue };
                match host.answer(crate::now(), peer, &answer, &mut out) {
                    Ok(r) => r,
                    Err(bft_upgrade::host::HostError::Misuse(e)) => {
                        warn!(?peer, "answer not taken: {e:?}");
                        continue;
                    }
                    Err(e) => return Err(anyhow!("installer store: {e}")),
                }
            }
            () = tokio::time::sleep(Duration::from_millis(wait)) => {
                host.timeout(crate::now(), &mut out).map_err(|e| anyhow!("{e}"))?
            }
        };
        log(&report);
    }
    let outcome = host.role().decided().map(|(o, _)| o).ok_or_else(|| anyhow!("done without an outcome"))?;
    info!(upgrade = ?upgrade, ?outcome, elapsed_ms = started.elapsed().as_millis() as u64, "installer done");
    // Done: every group acknowledged, so the guardians may forget the
    // upgrade (their slots would otherwise fill after a few dozen
    // upgrades). Only the deployer can say so; its key is here when the
    // deployer runs the install.
    match crate::deployer::load_deployer(dir, &cluster)
        .and_then(|d| d.retirement(upgrade).map_err(|e| anyhow!("{e:?}")))
    {
        Ok(retirement) => {
            for g in &cluster.guardians {
                net.send(Peer::Guardian(g.id), &Frame::Retire(retirement));
            }
        }
        Err(e) => warn!("guardians not told to retire the upgrade: {e}"),
    }
    // Let the last frames leave before the process ends.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(outcome)
}

fn log(report: &InstallerReport) {
    for fault in &report.faults.faults {
        warn!(?fault, "peer fault");
    }
    for effect in &report.effects {
        match effect {
            InstallerEffect::Decided(o) => info!(outcome = ?o, "decided"),
            InstallerEffect::Refused { group, reason } => warn!(group = group.0, ?reason, "group refused the piece"),
            InstallerEffect::Done => info!("every group it finishes through acknowledged"),
            InstallerEffect::SendPrepare { .. } => {}
        }
    }
}
