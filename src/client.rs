//! The external client role (paper section 4.3; see [versions for external clients](crate::protocol#versions-for-external-clients-section-43)).
//!
//! A client outside the upgrading groups could otherwise call a group that
//! committed an upgrade and then one that has not yet, and see the old
//! version after the new. So it remembers, per group, the last version it
//! saw, and the trigger codes it learned; it passes both with every call,
//! and the called group commits what those codes finish before executing the
//! call. A group whose version is newer than the client's returns the codes
//! committed since, which the client carries on to the next groups.
//!
//! ```
//! use bft_upgrade::client::{Client, ClientEvent};
//! use bft_upgrade::wire::{Attachment, ClientReply, ClientStatus, GroupId};
//!
//! let mut client: Client<8> = Client::new(1);
//! let call = client.call(GroupId(5));
//! assert_eq!(call.seen, 0);
//! // The group executes the call with `GroupReplica::on_client_call`
//! // and replies with its version (and the codes committed since `seen`).
//! let reply = ClientReply { group: GroupId(5), version: 3, status: ClientStatus::Current, codes: Attachment::new() };
//! assert_eq!(client.on_reply(&reply).unwrap(), ClientEvent::Current);
//! assert_eq!(client.seen(GroupId(5)), 3);
//! ```

use heapless::{Deque, Vec};
use serde::{Deserialize, Serialize};

use crate::error::{CapacityError, MisuseError};
use crate::wire::{Attachment, ClientCall, ClientReply, ClientStatus, Finish, GroupId, MAX_ATTACHED};

/// What a reply means for the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientEvent {
    /// The client is up to date with the group.
    Current,
    /// The group's history no longer reaches back to the client's version:
    /// the client must refresh (start a new session) before relying on
    /// order across groups. Its view of this group is reset to the group's
    /// current version.
    MustRefresh,
}

/// An external client that calls at most `G` distinct groups.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Client<const G: usize> {
    id: u32,
    seen: Vec<(GroupId, u64), G>,
    /// The most recent codes learned, oldest first.
    codes: Deque<Finish, MAX_ATTACHED>,
}

impl<const G: usize> Client<G> {
    /// A client `id` that has seen nothing yet.
    pub fn new(id: u32) -> Self {
        Self { id, seen: Vec::new(), codes: Deque::new() }
    }

    /// The version of `group` the client last saw (0: never called it).
    pub fn seen(&self, group: GroupId) -> u64 {
        self.seen.iter().find(|(g, _)| *g == group).map_or(0, |(_, v)| *v)
    }

    /// The call to make to `group`: the version seen there and the codes to
    /// forward.
    pub fn call(&self, group: GroupId) -> ClientCall {
        let mut codes = Attachment::new();
        for c in self.codes.iter() {
            let _ = codes.push(c.clone());
        }
        ClientCall { client: self.id, seen: self.seen(group), codes }
    }

    /// Takes in a group's reply.
    ///
    /// # Errors
    /// [`MisuseError::Capacity`] ([`CapacityError::Groups`]) when the
    /// client already tracks `G` groups and this is a new one: the host
    /// called more groups than the client was declared for. The reply is
    /// then not recorded and the client is unchanged.
    pub fn on_reply(&mut self, reply: &ClientReply) -> Result<ClientEvent, MisuseError> {
        let slot = match self.seen.iter().position(|(g, _)| *g == reply.group) {
            Some(i) => i,
            None => {
                self.seen.push((reply.group, 0)).map_err(|_| MisuseError::Capacity(CapacityError::Groups))?;
                self.seen.len().saturating_sub(1)
            }
        };
        if let Some((_, v)) = self.seen.get_mut(slot) {
            // Versions only move forward in the client's view.
            *v = (*v).max(reply.version);
        }
        for c in reply.codes.iter() {
            if self.codes.iter().any(|k| k.upgrade == c.upgrade) {
                continue;
            }
            if self.codes.is_full() {
                let _ = self.codes.pop_front();
            }
            let _ = self.codes.push_back(c.clone());
        }
        Ok(match reply.status {
            ClientStatus::Current => ClientEvent::Current,
            ClientStatus::TooOld => ClientEvent::MustRefresh,
        })
    }
}
