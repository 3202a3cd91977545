//! `node guardian`: one guardian, holding shares for the groups it guards,
//! driven through the core's host layer (`GuardianHost` over redb): a
//! release is committed with its release-log row before the shares leave.

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, Result};
use bft_upgrade::guardian::{GuardedGroup, Guardian, GuardianConfig};
use bft_upgrade::host::GuardianHost;
use bft_upgrade::step::Peer;
use bft_upgrade::wire::{DeployerId, GroupId};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::config::{key_path, public_key, Cluster, Secrets};
use crate::frame::{Frame, GuardianStatus};
use crate::outbound::NetOut;
use crate::store::Store;
use crate::transport::{Net, Policy};

/// The guardian role with room for 64 (upgrade, group) records.
pub type NodeGuardian = Guardian<64>;

/// Where guardian `id` keeps its database.
pub fn db_path(dir: &Path, id: u32) -> std::path::PathBuf {
    dir.join("data").join(format!("guardian-{id}")).join("state.redb")
}

fn config(cluster: &Cluster, id: u32) -> Result<GuardianConfig> {
    let mut config = GuardianConfig { id, deployers: heapless::Vec::new(), groups: heapless::Vec::new() };
    config
        .deployers
        .push((DeployerId(cluster.deployer_id), public_key(&cluster.deployer_key)?))
        .map_err(|_| anyhow!("too many deployers"))?;
    for g in cluster.groups.iter().filter(|g| g.guardians.contains(&id)) {
        let members = cluster.membership(g.id)?.digest();
        config.groups.push(GuardedGroup { group: GroupId(g.id), members }).map_err(|_| anyhow!("too many groups"))?;
    }
    Ok(config)
}

fn status(role: &NodeGuardian) -> GuardianStatus {
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    GuardianStatus {
        id: role.config().id,
        held: count(role.held()),
        capacity: count(NodeGuardian::CAPACITY),
        releases: count(role.releases()),
    }
}

/// The status as counters, for the Prometheus endpoint.
fn export(role: &NodeGuardian) {
    let s = status(role);
    crate::metrics::gauge("bftup_guardian_held", u64::from(s.held));
    crate::metrics::gauge("bftup_guardian_capacity", u64::from(s.capacity));
    crate::metrics::gauge("bftup_guardian_releases", u64::from(s.releases));
}

/// Runs guardian `id` of the cluster in `dir` until killed.
///
/// # Errors
/// On configuration, storage or listening errors.
pub async fn run(dir: &Path, id: u32) -> Result<()> {
    let cluster = Arc::new(Cluster::load(dir)?);
    let me = Peer::Guardian(id);
    let secrets = Secrets::load(&key_path(dir, me))?;
    let addr = cluster.guardian(id)?.addr;
    crate::metrics::serve(cluster.guardian(id)?.metrics, &[("guardian", id.to_string())])?;
    let fresh = config(&cluster, id)?;
    let mut host = GuardianHost::open(Store::open(&db_path(dir, id))?, || NodeGuardian::new(fresh))
        .map_err(|e| anyhow!("guardian state: {e}"))?;
    tracing::info!(id, "guardian starting from its database");
    export(host.role());
    let policy: Policy = Arc::new(|peer, frame| match (peer, frame) {
        (Peer::Replica { .. }, Frame::Msg(_) | Frame::Piece(_)) => Ok(()),
        // Its signature is checked by the role, whoever relays it.
        (Peer::Installer(_), Frame::Retire(_)) => Ok(()),
        (Peer::Client(_), Frame::StatusRequest) => Ok(()),
        _ => Err(format!("a guardian takes only messages and pieces from replicas, not this from {peer:?}")),
    });
    let (in_tx, mut in_rx) = mpsc::channel(8192);
    let net = Net::new(me, secrets.sign_key.clone(), cluster.clone(), in_tx, policy);
    net.listen(TcpListener::bind(addr).await.map_err(|e| anyhow!("listening on {addr}: {e}"))?);
    let mut out = NetOut { net: &net, cluster: &cluster, payloads: None };
    while let Some((peer, frame)) = in_rx.recv().await {
        let now = crate::now();
        let report = match frame {
            Frame::Piece(piece) => host.piece(now, peer, &piece, &secrets.box_key, &mut out),
            Frame::Msg(message) => host.message(now, peer, &message, &mut out),
            Frame::Retire(retirement) => {
                let report = host.retirement(now, peer, &retirement);
                if report.as_ref().is_ok_and(|r| r.faults.faults.is_empty()) {
                    info!(upgrade = ?retirement.upgrade, "retired by the deployer");
                }
                report
            }
            Frame::StatusRequest => {
                net.send(peer, &Frame::GuardianStatus(status(host.role())));
                continue;
            }
            _ => continue,
        }
        .map_err(|e| anyhow!("guardian store: {e}"))?;
        for fault in &report.faults.faults {
            warn!(?fault, "peer fault");
            crate::metrics::count("bftup_peer_faults_total");
        }
        export(host.role());
        for (upgrade, group) in &report.busy {
            crate::metrics::count("bftup_guardian_pieces_not_kept_total");
            warn!(upgrade = ?upgrade, group = group.0, "every record holds a release: piece not kept");
        }
    }
    Ok(())
}
