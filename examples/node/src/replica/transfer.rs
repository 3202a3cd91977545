//! State transfer for a wiped replica (issue 16, wedge 5), and for one left
//! behind.
//!
//! A replica whose database is gone (no stored role and no `fresh` marker,
//! which `init` leaves for a replica that has never run) must neither start
//! over at version 0 nor run an AlephBFT session it may already have made
//! units in: a second, different unit for a round it filled before is
//! equivocation. So it asks its group, through the ordered log, to end the
//! session ([`Body::Rejoin`]); at that batch every correct replica writes a
//! [`Checkpoint`] of the state there. The wiped replica installs the
//! checkpoint that `f + 1` peers sent byte for byte (one of them is
//! correct), rebuilds its own part from it (its boxes of the held pieces,
//! through the host layer's `ReplicaHost::rejoin`) and starts the session
//! that batch opened: a session created after its request, so one it never
//! ran.
//!
//! A replica whose session more than `f` peers have left for good (they
//! keep `OLD_SESSIONS` ended ones running) can never finish it, and takes
//! the same way back with its database: the checkpoint is its own ordered
//! log further on. A rejoin is recorded before it starts, so a replica that
//! stops in the middle resumes the same one.

use std::collections::BTreeMap;

use anyhow::{anyhow, Context, Result};
use bft_upgrade::crypto::Digest;
use bft_upgrade::group::ReplicatedState;
use bft_upgrade::host::{Batch, ReplicaHost, Store as _};
use bft_upgrade::step::Peer;
use bft_upgrade::wire::{GroupId, Piece, WithKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::{group_config, seen_key, App, APP, PENDING, REJOINS, SEEN, SESSION};
use crate::config::{max_faulty, Cluster, Secrets};
use crate::frame::{random_u64, Body, Frame};
use crate::store::Store;
use crate::transport::Net;

/// The marker `init` leaves in a replica's data directory: this replica
/// has never run, so an empty database is its genesis, not a wipe. The
/// replica removes it once its database holds its role.
pub const FRESH: &str = "fresh";

/// The record a replica keeps of the checkpoint replica `index`'s latest
/// rejoin request made: `checkpoint/<index>`, its tag and encoding.
pub(super) fn checkpoint_key(index: u8) -> String {
    format!("checkpoint/{index:02x}")
}

/// The state of a group at the batch that ended a session for a rejoin: the
/// same bytes at every correct replica.
#[derive(Serialize, Deserialize)]
pub(super) struct Checkpoint {
    /// The session that batch opened.
    pub epoch: u64,
    /// The core's replicated part.
    pub state: ReplicatedState,
    /// The application (without the host's wall-clock notes).
    pub app: App,
    /// Ids executed in the session that ended: copies of a submission may
    /// straddle the change, and must be skipped there too.
    pub seen: Vec<[u8; 32]>,
    /// The pieces of the upgrades the group holds.
    pub pieces: Vec<Piece>,
    /// Per replica, its latest rejoin request executed (tag, and the
    /// session it opened): late copies must not end a session here either.
    pub rejoins: BTreeMap<u8, (u64, u64)>,
}

/// The tag of the rejoin request this database is being rebuilt for,
/// written before the request is sent and deleted once the checkpoint is
/// installed: a replica that stops in between resumes that rejoin.
const REJOINING: &str = "rejoining";

/// Whether `store` holds a rejoin not finished: the replica stopped in
/// the middle of one.
///
/// # Errors
/// When `store` cannot be read.
pub(super) fn rejoining(store: &Store) -> Result<bool> {
    Ok(store.get(REJOINING)?.is_some())
}

/// Asks the group to end its session for this replica (or resumes the
/// request `store` records) and waits until `f + 1` peers sent the same
/// checkpoint; installs it in `store`, over what it held.
///
/// # Errors
/// When the checkpoint does not decode or install, or `store` fails.
pub(super) async fn rejoin(
    store: Store,
    cluster: &Cluster,
    me: (GroupId, u8),
    secrets: &Secrets,
    net: &std::sync::Arc<Net>,
    frames: &mut mpsc::Receiver<(Peer, Frame)>,
) -> Result<ReplicaHost<Store>> {
    let (group, index) = me;
    let n = cluster.group(group.0)?.replicas.len();
    let need = max_faulty(n) + 1;
    let mut store = store;
    // A rejoin this database began and did not finish (a crash before the
    // role was written) goes on with its tag: the peers' checkpoint for it
    // is still good, since this replica never ran the session it opens, and
    // a new request would wait `REJOIN_GAP` batches there. Otherwise a new
    // tag, larger at each wipe (the host's clock), so that peers can tell a
    // late copy of an earlier request from this one.
    let (tag, resumed) = match store.get(REJOINING)? {
        Some(b) => (postcard::from_bytes(&b).context("stored rejoin tag")?, true),
        None => {
            let tag = u64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos())?;
            let mut batch = Batch::new();
            batch.put(REJOINING, postcard::to_allocvec(&tag)?);
            store.commit(batch)?;
            (tag, false)
        }
    };
    let peers: Vec<Peer> =
        cluster.replicas_of(group).into_iter().filter(|p| *p != Peer::Replica { group, index }).collect();
    warn!(group = group.0, index, tag, resumed, "rejoining by state transfer");
    let mut answers: BTreeMap<u8, (Digest, Vec<u8>)> = BTreeMap::new();
    let mut again = tokio::time::interval(std::time::Duration::from_secs(1));
    let bytes = loop {
        tokio::select! {
            _ = again.tick() => {
                for peer in &peers {
                    let body = Body::Rejoin { tag };
                    net.send(*peer, &Frame::Submit { nonce: random_u64(), body });
                    net.send(*peer, &Frame::CheckpointRequest { tag });
                }
            }
            Some((peer, frame)) = frames.recv() => {
                let (Peer::Replica { group: g, index: i }, Frame::Checkpoint { tag: t, bytes }) = (peer, frame) else {
                    continue;
                };
                if g != group || t != tag {
                    continue;
                }
                answers.insert(i, (Digest(Sha256::digest(&bytes).into()), bytes));
                let agreed = answers.values().find(|(d, _)| answers.values().filter(|(e, _)| e == d).count() >= need);
                if let Some((_, bytes)) = agreed {
                    break bytes.clone();
                }
            }
        }
    };
    let cp: Checkpoint = postcard::from_bytes(&bytes).context("a checkpoint f + 1 peers sent")?;
    // The application and the session first: a crash before the role is
    // written leaves no role, so the next start rejoins again.
    let mut batch = Batch::new();
    // A replica left behind drops what it had: the checkpoint's state
    // follows from it (the same ordered log, further on).
    for key in store.list(SEEN)?.into_iter().chain(store.list(PENDING)?) {
        batch.delete(key);
    }
    batch.put(APP, postcard::to_allocvec(&cp.app)?);
    let ended = cp.epoch.saturating_sub(1);
    for id in &cp.seen {
        batch.put(seen_key(ended, id), Vec::new());
    }
    batch.put(SESSION, postcard::to_allocvec(&cp.epoch)?);
    batch.put(REJOINS, postcard::to_allocvec(&cp.rejoins)?);
    store.commit(batch)?;
    let config = group_config(cluster, group.0)?;
    let mut crypto = WithKey(&secrets.box_key);
    let (replica, report) = ReplicaHost::rejoin(store, config, index, &cp.state, &cp.pieces, &mut crypto)
        .map_err(|e| anyhow!("installing the checkpoint: {e}"))?;
    for fault in &report.faults.faults {
        warn!(?fault, "found while rejoining");
    }
    let mut done = Batch::new();
    done.delete(REJOINING);
    let mut replica = replica;
    replica.store_mut().commit(done)?;
    info!(
        group = group.0,
        index,
        epoch = cp.epoch,
        version = replica.role().version(),
        "rejoined by state transfer from {need} matching checkpoints"
    );
    Ok(replica)
}
