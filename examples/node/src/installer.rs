//! `node install <bundle>`: one installer driving one upgrade to its
//! outcome, through the core's host layer (`InstallerHost` over redb): a
//! killed installer restarted with the same id resumes from its last
//! checkpoint.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use bft_upgrade::host::{InstallerHost, InstallerReport, Outbound, Transport};
use bft_upgrade::installer::{Finishing, GroupProgress, Installer, InstallerEffect, InstallerOptions};
use bft_upgrade::step::Peer;
use bft_upgrade::wire::{GroupId, Message, Operation, Outcome, Piece, Refusal, UpgradeId};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::config::{hex, key_path, Cluster, Secrets};
use crate::deployer::{has_deployer, load_bundle, open_deployer};
use crate::frame::Frame;
use crate::outbound::NetOut;
use crate::store::Store;
use crate::transport::{Net, Policy};

/// The installer role for up to 64 groups.
pub type NodeInstaller = Installer<64, 1024>;

/// What `run` is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `node install`: drive the upgrade to its outcome.
    Install,
    /// `node abort`: the deployer aborts its upgrade in flight, which is
    /// sound only once some group refused the piece for good (then that
    /// group never releases `s_g` and `τ` can never be assembled). The
    /// installer runs until that refusal shows, or the upgrade decides
    /// anyway (every group accepted it: nothing to abort).
    Abort,
}

/// Runs installer `id` on the bundle at `path` until every group it
/// finishes through acknowledged and more than `f` replicas of every group
/// report the outcome, or `timeout` passes. On the deployer's host (`dir`
/// holds the deployer's record) the outcome is recorded there, so the next
/// `node deploy` chains on it.
///
/// # Errors
/// On configuration or storage errors, on timeout, and when a group
/// refuses the piece for good (a stale bundle: only `node abort` finishes
/// it then).
pub async fn run(dir: &Path, id: u32, path: &Path, timeout: Duration, mode: Mode) -> Result<Outcome> {
    let started = std::time::Instant::now();
    let cluster = Arc::new(Cluster::load(dir)?);
    let me = Peer::Installer(id);
    let secrets = Secrets::load(&key_path(dir, me))?;
    let bundle = load_bundle(path)?;
    let upgrade = bundle.header.upgrade;
    let name = hex(&upgrade.0);
    // A bundle of a finished upgrade installs again at no harm: the groups
    // answer with its outcome at once. Only the upgrade in flight can be
    // aborted.
    if mode == Mode::Abort {
        if !has_deployer(dir) {
            bail!("only the deployer's host can abort (no deployer record in {})", dir.display());
        }
        let host = open_deployer(dir, &cluster)?;
        match host.last() {
            _ if host.pending() == Some(upgrade) => {}
            Some((u, o)) if u == upgrade => bail!("upgrade {name} already finished: {o:?}"),
            _ => bail!("upgrade {name} is not the deployer's upgrade in flight"),
        }
    }
    let pieces = bundle.pieces.clone();
    let store = Store::open(&dir.join("data").join(format!("installer-{id}")).join("state.redb"))?;
    let options = InstallerOptions::default().retry_ms(cluster.retry_ms).finishing(Finishing::Diffusion { grace: 0 });
    // An abort runs its own installer record: it must see the refusals
    // again, which an install's record has already reported.
    let key = match mode {
        Mode::Install => format!("installer/{name}"),
        Mode::Abort => format!("abort/{name}"),
    };
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
    let mut out = NetOut { net: &net, cluster: &cluster, payloads: Some(dir) };
    let mut report = host.start(crate::now(), &mut out).map_err(|e| anyhow!("{e}"))?;
    let mut refused: Vec<(GroupId, Refusal)> = Vec::new();
    let mut shipped = std::collections::BTreeSet::new();
    loop {
        log(&report);
        for e in &report.effects {
            if let InstallerEffect::Refused { group, reason } = e {
                if reason.is_permanent() && host.role().decided().is_none() {
                    refused.push((*group, *reason));
                }
            }
        }
        if let Some((group, reason)) = refused.first() {
            if mode == Mode::Install {
                bail!(
                    "group {} refused the piece for good ({reason:?}): the bundle is stale; the deployer drops it with `node abort {}`",
                    group.0,
                    path.display()
                );
            }
            // Abort once every group has either refused or accepted (then
            // it holds the piece and takes `c`).
            let settled = pieces.iter().map(|p| p.header.group).all(|g| {
                refused.iter().any(|(r, _)| *r == g)
                    || matches!(host.role().progress(g), Some(GroupProgress::Accepted | GroupProgress::Rejected))
            });
            if settled {
                break;
            }
        }
        if host.role().is_done() {
            break;
        }
        if started.elapsed() > timeout {
            bail!("installer timed out after {timeout:?}");
        }
        let wait = host.deadline().map_or(200, |d| d.0.saturating_sub(crate::now_ms())).min(200);
        report = tokio::select! {
            Some((peer, frame)) = in_rx.recv() => {
                let Frame::Msg(Message::Answer(answer)) = frame else { continue };
                // Late answers to an earlier install under the same id (its
                // submissions ordered after it ended) are nobody's fault.
                if answer.upgrade != upgrade {
                    continue;
                }
                match host.answer(crate::now(), peer, &answer, &mut out) {
                    Ok(r) => {
                        // Only an answer moves its group's progress.
                        if let Peer::Replica { group, .. } = peer {
                            ship_payload(dir, &net, &cluster, &pieces, &host, group, &mut shipped);
                        }
                        r
                    }
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
    }
    let outcome = if let Some((_, reason)) = refused.first() {
        let refusing: Vec<GroupId> = refused.iter().map(|(g, _)| *g).collect();
        deployer_abort(
            dir,
            &cluster,
            &net,
            upgrade,
            *reason,
            &pieces,
            &refusing,
            timeout.saturating_sub(started.elapsed()),
        )
        .await?;
        Outcome::Aborted
    } else {
        let (outcome, code) = host.role().decided().ok_or_else(|| anyhow!("done without an outcome"))?;
        if has_deployer(dir) {
            let mut d = open_deployer(dir, &cluster)?;
            if d.pending() == Some(upgrade) {
                d.finished(upgrade, outcome, code).map_err(|e| anyhow!("deployer record: {e}"))?;
            }
        }
        if mode == Mode::Abort {
            bail!("upgrade {name} was not refused by any group: it {outcome:?}, which the deployer cannot undo");
        }
        settle(dir, &cluster, upgrade, timeout.saturating_sub(started.elapsed())).await?;
        outcome
    };
    info!(upgrade = ?upgrade, ?outcome, elapsed_ms = started.elapsed().as_millis() as u64, "installer done");
    retire(dir, &cluster, &net, upgrade);
    // Let the last frames leave before the process ends.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(outcome)
}

/// Sends `group`, once it accepted its piece (it holds it now), the sealed
/// payload of its new version, read from the deployer's files here, once:
/// so replicas on other hosts than the deployer's have it when the group
/// commits. Ciphertext only; a replica takes it under the digest its piece
/// signed. Without the files (an installer away from the deployer) the
/// replicas read their own copies or ask their peers.
fn ship_payload(
    dir: &Path,
    net: &Arc<Net>,
    cluster: &Cluster,
    pieces: &[Piece],
    host: &InstallerHost<Store, 64, 1024>,
    group: GroupId,
    shipped: &mut std::collections::BTreeSet<GroupId>,
) {
    let held = matches!(host.role().progress(group), Some(GroupProgress::Accepted | GroupProgress::Finished));
    if !held || shipped.contains(&group) {
        return;
    }
    let Some(piece) = pieces.iter().find(|p| p.header.group == group) else { return };
    shipped.insert(group);
    let upgrade = piece.header.upgrade;
    let Ok(sealed) = std::fs::read(crate::deployer::payload_path(dir, upgrade, group)) else { return };
    if sealed.len() + 1024 > crate::transport::MAX_FRAME {
        warn!(group = group.0, len = sealed.len(), "a payload is too big for one frame: not shipped");
        return;
    }
    let frame = Frame::Payload { digest: piece.header.payload.digest, sealed };
    for replica in cluster.replicas_of(group) {
        net.send(replica, &frame);
    }
}

/// How many finished upgrades each install retires again at the guardians.
/// A guardian down when an upgrade's retirement went out (killed in the
/// middle of the install) keeps that upgrade's records, and a record that
/// released a share is never dropped to make room: a 500-upgrade soak
/// stalled at upgrade 261 on a guardian whose 64 records all held such
/// releases. Sent again with the next installs, the retirement reaches it
/// once it is back.
pub const RETIRE_AGAIN: usize = 16;

/// Every group finished `upgrade`, so the guardians may forget it (their
/// slots would otherwise fill after a few dozen upgrades). Only the
/// deployer can say so; its key is here when the deployer runs the install.
/// Its last [`RETIRE_AGAIN`] finished upgrades (`deployer/finished.json`)
/// are retired again with it.
fn retire(dir: &Path, cluster: &Cluster, net: &Arc<Net>, upgrade: UpgradeId) {
    let path = dir.join("deployer").join("finished.json");
    let mut recent: Vec<String> =
        std::fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
    recent.retain(|u| *u != hex(&upgrade.0));
    recent.push(hex(&upgrade.0));
    let excess = recent.len().saturating_sub(RETIRE_AGAIN);
    recent.drain(..excess);
    let tmp = path.with_extension("tmp");
    let written = serde_json::to_vec(&recent)
        .map_err(anyhow::Error::from)
        .and_then(|b| Ok(std::fs::write(&tmp, b)?))
        .and_then(|()| Ok(std::fs::rename(&tmp, &path)?));
    if let Err(e) = written {
        warn!("{}: finished upgrades not recorded: {e}", path.display());
    }
    let deployer = match crate::deployer::load_deployer(dir, cluster) {
        Ok(d) => d,
        Err(e) => return warn!("guardians not told to retire the upgrade: {e}"),
    };
    let ids = recent.iter().filter_map(|u| crate::config::unhex(u).ok()?.try_into().ok()).map(UpgradeId);
    for id in ids {
        match deployer.retirement(id) {
            Ok(retirement) => {
                for g in &cluster.guardians {
                    net.send(Peer::Guardian(g.id), &Frame::Retire(retirement));
                }
            }
            Err(e) => warn!(upgrade = ?id, "guardians not told to retire the upgrade: {e:?}"),
        }
    }
}

/// Waits until more than `f` replicas of every group report `upgrade`'s
/// outcome (so a correct one has it, and the group's next piece chains on
/// it).
async fn settle(dir: &Path, cluster: &Cluster, upgrade: UpgradeId, within: Duration) -> Result<()> {
    let late = |behind| anyhow!("decided, but groups {behind:?} have not reported the outcome in time");
    poll_groups(dir, cluster, upgrade, (within, Duration::from_millis(200)), |_, o| o.is_some(), || {}, late).await?;
    Ok(())
}

/// Asks every replica for its status until `done` holds for every group
/// and its outcome of `upgrade` (as more than `f` replicas report it), calling
/// `retry` before each further round `every` later. Returns the last
/// statuses.
///
/// # Errors
/// `late(groups still behind)` once `within` passed; a failed query.
async fn poll_groups(
    dir: &Path,
    cluster: &Cluster,
    upgrade: UpgradeId,
    (within, every): (Duration, Duration),
    done: impl Fn(GroupId, Option<Outcome>) -> bool,
    mut retry: impl FnMut(),
    late: impl FnOnce(Vec<u32>) -> anyhow::Error,
) -> Result<Vec<crate::frame::Status>> {
    let until = std::time::Instant::now() + within;
    loop {
        let statuses = crate::cluster::query(dir, Duration::from_secs(2)).await?;
        let behind: Vec<u32> = crate::cluster::outcomes(cluster, &statuses, upgrade)
            .into_iter()
            .filter(|(g, o)| !done(*g, *o))
            .map(|(g, _)| g.0)
            .collect();
        if behind.is_empty() {
            return Ok(statuses);
        }
        if std::time::Instant::now() > until {
            return Err(late(behind));
        }
        tokio::time::sleep(every).await;
        retry();
    }
}

/// The deployer's own abort, once group(s) `refusing` refused the piece
/// for good: every group gets its piece and then `AbortInstall(c)`, again
/// each retry (the two submissions may be ordered either way round), until
/// every other group reports the abort; the record then moves those groups
/// to `c` and learns where the refusing groups are.
#[allow(clippy::too_many_arguments)]
async fn deployer_abort(
    dir: &Path,
    cluster: &Arc<Cluster>,
    net: &Arc<Net>,
    upgrade: UpgradeId,
    reason: Refusal,
    pieces: &[Piece],
    refusing: &[GroupId],
    within: Duration,
) -> Result<()> {
    let mut d = open_deployer(dir, cluster)?;
    let abort = d.abort(upgrade, reason).map_err(|e| anyhow!("abort: {e}"))?;
    let mut out = NetOut { net, cluster, payloads: Some(dir) };
    let held: Vec<GroupId> = pieces.iter().map(|p| p.header.group).filter(|g| !refusing.contains(g)).collect();
    let mut submit = || {
        for piece in pieces.iter().filter(|p| held.contains(&p.header.group)) {
            let group = piece.header.group;
            out.deliver(Outbound::Submit { group, op: Box::new(Operation::PrepareInstall(piece.clone())) });
            out.deliver(Outbound::Submit { group, op: Box::new(abort.clone()) });
        }
    };
    submit();
    // A refusing group never holds the piece: done as it is.
    let every = Duration::from_millis(cluster.retry_ms.max(200));
    let aborted = |g: GroupId, o: Option<Outcome>| !held.contains(&g) || o == Some(Outcome::Aborted);
    let late = |behind| anyhow!("groups {behind:?} have not reported the abort in time");
    let statuses = poll_groups(dir, cluster, upgrade, (within, every), aborted, submit, late).await?;
    d.aborted(upgrade, &held).map_err(|e| anyhow!("deployer record: {e}"))?;
    for (g, code) in crate::cluster::version_codes(cluster, &statuses) {
        if refusing.contains(&g) {
            d.learned(g, &code).map_err(|e| anyhow!("deployer record: {e}"))?;
        }
    }
    Ok(())
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
