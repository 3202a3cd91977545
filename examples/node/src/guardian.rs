//! `node guardian`: one guardian, holding shares for the groups it guards.
//!
//! On the core's `GuardianEffect::Persist` the guardian's state and a row
//! of the release log are committed to redb in one transaction; only then
//! is `persisted` called and the shares sent.

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use bft_upgrade::crypto::ShareKind;
use bft_upgrade::guardian::{GuardedGroup, Guardian, GuardianConfig, GuardianEffect};
use bft_upgrade::step::{Peer, Step};
use bft_upgrade::wire::{DeployerId, GroupId, Message, Operation};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::config::{key_path, public_key, Cluster, Secrets};
use crate::frame::{self, Body, Frame};
use crate::store::Store;
use crate::transport::{Net, Policy};

/// The guardian role with room for 64 (upgrade, group) records.
pub type NodeGuardian = Guardian<64>;

/// The release log's code for a kind.
pub fn kind_code(kind: ShareKind) -> u8 {
    match kind {
        ShareKind::Secret => 0,
        ShareKind::Cancel => 1,
    }
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
    let store = Store::open(&dir.join("data").join(format!("guardian-{id}")).join("state.redb"))?;
    let mut role: NodeGuardian = match store.get("role")? {
        Some(b) => postcard::from_bytes(&b).context("stored guardian state")?,
        None => {
            let mut config = GuardianConfig { id, deployers: heapless::Vec::new(), groups: heapless::Vec::new() };
            let _ = config.deployers.push((DeployerId(cluster.deployer_id), public_key(&cluster.deployer_key)?));
            for g in cluster.groups.iter().filter(|g| g.guardians.contains(&id)) {
                let members = cluster.membership(g.id)?.digest();
                config
                    .groups
                    .push(GuardedGroup { group: GroupId(g.id), members })
                    .map_err(|_| anyhow!("too many groups"))?;
            }
            Guardian::new(config)
        }
    };
    info!(id, "guardian starting from its database");
    let policy: Policy = Arc::new(|peer, frame| match (peer, frame) {
        (Peer::Replica { .. }, Frame::Msg(_) | Frame::Piece(_)) => Ok(()),
        _ => Err(format!("a guardian takes only messages and pieces from replicas, not this from {peer:?}")),
    });
    let (in_tx, mut in_rx) = mpsc::channel(8192);
    let net = Net::new(me, secrets.sign_key.clone(), cluster.clone(), in_tx, policy);
    net.listen(TcpListener::bind(addr).await.with_context(|| format!("listening on {addr}"))?);
    while let Some((peer, frame)) = in_rx.recv().await {
        let now = crate::now();
        let step = match frame {
            Frame::Piece(piece) => match role.handle_piece(now, peer, &piece, &secrets.box_key) {
                Ok(step) => step,
                Err(e) => {
                    warn!(?peer, "piece not kept: {e:?}");
                    continue;
                }
            },
            Frame::Msg(message) => role.handle_message(now, peer, &message),
            _ => continue,
        };
        carry(&store, &net, &cluster, &mut role, step)?;
    }
    Ok(())
}

/// Writes, then sends: the state and, for each `Persist`, a release-log
/// row are committed in one transaction before `persisted` lets the shares
/// out.
fn carry(
    store: &Store,
    net: &Arc<Net>,
    cluster: &Cluster,
    role: &mut NodeGuardian,
    step: Step<GuardianEffect>,
) -> Result<()> {
    for fault in &step.faults {
        warn!(?fault, "peer fault");
    }
    let mut batch = store.batch()?;
    batch.put("role", &postcard::to_allocvec(role)?)?;
    for GuardianEffect::Persist { upgrade, group, kind } in &step.effects {
        batch.release(&upgrade.0, group.0, kind_code(*kind), crate::now_ms())?;
    }
    batch.commit()?;
    send_messages(net, cluster, step.messages);
    for GuardianEffect::Persist { upgrade, group, kind } in step.effects {
        info!(upgrade = ?upgrade, group = group.0, ?kind, "release written; shares go out");
        let after = role.persisted(crate::now(), upgrade, group);
        send_messages(net, cluster, after.messages);
    }
    Ok(())
}

/// Sends a step's messages; a message to a group is a submission to its
/// ordering.
pub fn send_messages(
    net: &Arc<Net>,
    cluster: &Cluster,
    messages: impl IntoIterator<Item = bft_upgrade::step::Outgoing>,
) {
    for m in messages {
        match (m.to, m.message) {
            (Peer::Group(g), Message::Submit(op)) => {
                let body = Body::Op(Operation::from(op));
                let nonce = frame::random_u64();
                for peer in cluster.replicas_of(g) {
                    net.send(peer, &Frame::Submit { nonce, body: body.clone() });
                }
            }
            (to, message) => net.send(to, &Frame::Msg(message)),
        }
    }
}
