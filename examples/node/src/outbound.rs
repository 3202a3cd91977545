//! The host layer's outbound items on this node's network: a submission
//! goes to every replica of the group (each puts it into AlephBFT; the
//! ordered copies are deduplicated by request id), everything else to its
//! one peer.

use std::path::Path;
use std::sync::Arc;

use bft_upgrade::host::{Outbound, Transport};
use bft_upgrade::step::Peer;
use bft_upgrade::wire::Operation;

use crate::config::Cluster;
use crate::frame::{self, Body, Frame};
use crate::transport::Net;

/// [`Transport`] over [`Net`].
pub struct NetOut<'a> {
    /// The network.
    pub net: &'a Arc<Net>,
    /// The cluster (for a group's replicas).
    pub cluster: &'a Cluster,
    /// The cluster directory where the deployer's sealed payloads are (an
    /// installer on the deployer's host): each prepare carries its group's
    /// payload, for the group's verdict on it.
    pub payloads: Option<&'a Path>,
}

/// Sealed payloads a prepare carries, at most (larger ones go on their
/// own, unvalidated).
pub const MAX_CARRIED: usize = 256 * 1024;

impl Transport for NetOut<'_> {
    fn deliver(&mut self, out: Outbound) {
        match out {
            Outbound::Send { to, message } => self.net.send(to, &Frame::Msg(message)),
            Outbound::Submit { group, op } => {
                let sealed = match (&*op, self.payloads) {
                    (Operation::PrepareInstall(piece), Some(dir)) => {
                        let path = crate::deployer::payload_path(dir, piece.header.upgrade, group);
                        std::fs::read(path).ok().filter(|s| s.len() <= MAX_CARRIED)
                    }
                    _ => None,
                };
                let body = match sealed {
                    Some(sealed) => Body::Prepare { op: *op, sealed },
                    None => Body::Op(*op),
                };
                let nonce = frame::random_u64();
                for peer in self.cluster.replicas_of(group) {
                    self.net.send(peer, &Frame::Submit { nonce, body: body.clone() });
                }
            }
            Outbound::Piece { guardian, piece } => self.net.send(Peer::Guardian(guardian), &Frame::Piece(*piece)),
        }
    }
}
