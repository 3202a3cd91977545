//! `node install <bundle>`: one installer driving one upgrade to its
//! outcome. Its state is committed to redb before every step's messages go
//! out, so a killed installer restarted with the same id resumes.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use bft_upgrade::installer::{Finishing, Installer, InstallerEffect, InstallerOptions};
use bft_upgrade::step::{Peer, Step};
use bft_upgrade::wire::{Message, Operation, Outcome};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::config::{hex, key_path, Cluster, Secrets};
use crate::deployer::Bundle;
use crate::frame::{self, Body, Frame};
use crate::guardian::send_messages;
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
    let bundle = Bundle::load(path)?;
    let upgrade = bundle.header.upgrade;
    let store = Store::open(&dir.join("data").join(format!("installer-{id}")).join("state.redb"))?;
    let key = format!("installer-{}", hex(&upgrade.0));
    let mut role: Box<NodeInstaller> = match store.get(&key)? {
        Some(b) => {
            info!(upgrade = ?upgrade, "installer resuming from its database");
            postcard::from_bytes(&b).context("stored installer state")?
        }
        None => Box::new(
            Installer::new(
                id,
                bundle.header.clone(),
                &bundle.groups,
                InstallerOptions::default().retry_ms(cluster.retry_ms).finishing(Finishing::Diffusion { grace: 3 }),
            )
            .map_err(|e| anyhow!("installer: {e:?}"))?,
        ),
    };
    let policy: Policy = Arc::new(|peer, frame| match (peer, frame) {
        (Peer::Replica { .. }, Frame::Msg(Message::Answer(_))) => Ok(()),
        _ => Err(format!("an installer takes only answers from replicas, not this from {peer:?}")),
    });
    let (in_tx, mut in_rx) = mpsc::channel(8192);
    let net = Net::new(me, secrets.sign_key.clone(), cluster.clone(), in_tx, policy);
    let step = role.start(crate::now());
    let mut outcome = None;
    carry(&store, &key, &net, &cluster, &bundle, &role, step, &mut outcome)?;
    while !role.is_done() {
        if started.elapsed() > timeout {
            return Err(anyhow!("installer timed out after {timeout:?}"));
        }
        let wait = role.deadline().map_or(200, |d| d.0.saturating_sub(crate::now_ms())).min(200);
        let step = tokio::select! {
            Some((peer, frame)) = in_rx.recv() => {
                let Frame::Msg(Message::Answer(answer)) = frame else { continue };
                let Some(piece) = bundle.piece(answer.group) else { continue };
                match role.handle_answer(crate::now(), peer, &answer, piece) {
                    Ok(step) => step,
                    Err(e) => {
                        warn!(?peer, "answer not taken: {e:?}");
                        continue;
                    }
                }
            }
            () = tokio::time::sleep(Duration::from_millis(wait)) => role.handle_timeout(crate::now()),
        };
        carry(&store, &key, &net, &cluster, &bundle, &role, step, &mut outcome)?;
    }
    let outcome = outcome.or(role.decided().map(|(o, _)| o)).ok_or_else(|| anyhow!("done without an outcome"))?;
    info!(upgrade = ?upgrade, ?outcome, elapsed_ms = started.elapsed().as_millis() as u64, "installer done");
    // Let the last frames leave before the process ends.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(outcome)
}

#[allow(clippy::too_many_arguments)]
fn carry(
    store: &Store,
    key: &str,
    net: &Arc<Net>,
    cluster: &Cluster,
    bundle: &Bundle,
    role: &NodeInstaller,
    step: Step<InstallerEffect>,
    outcome: &mut Option<Outcome>,
) -> Result<()> {
    for fault in &step.faults {
        warn!(?fault, "peer fault");
    }
    let mut batch = store.batch()?;
    batch.put(key, &postcard::to_allocvec(role)?)?;
    batch.commit()?;
    for effect in &step.effects {
        match effect {
            InstallerEffect::SendPrepare { group } => {
                let Some(piece) = bundle.piece(*group) else { continue };
                let body = Body::Op(Operation::PrepareInstall(piece.clone()));
                let nonce = frame::random_u64();
                for peer in cluster.replicas_of(*group) {
                    net.send(peer, &Frame::Submit { nonce, body: body.clone() });
                }
            }
            InstallerEffect::Decided(o) => {
                info!(outcome = ?o, "decided");
                *outcome = Some(*o);
            }
            InstallerEffect::Refused { group, reason } => warn!(group = group.0, ?reason, "group refused the piece"),
            InstallerEffect::Done => info!("every group it finishes through acknowledged"),
        }
    }
    send_messages(net, cluster, step.messages);
    Ok(())
}
