//! An external `Client` that tracks at most four groups, fed up to 64
//! arbitrary `ClientReply`s (any group, version, status and codes), calls
//! and serialize-restore.
//!
//! After every input:
//! - the version it reports for a group never goes down, and is the largest
//!   version any recorded reply carried for it;
//! - a reply for a fifth group is an `Err` that changes nothing;
//! - a call carries at most `MAX_ATTACHED` codes, no upgrade twice, every
//!   one learned from some reply, and the client's view of the group;
//! - the event says `MustRefresh` exactly for `TooOld` replies.

#![no_main]

#[path = "../common/mod.rs"]
mod common;

use std::collections::{HashMap, HashSet};

use arbitrary::Arbitrary;
use bft_upgrade::client::{Client, ClientEvent};
use bft_upgrade::wire::{ClientReply, ClientStatus, GroupId, UpgradeId, MAX_ATTACHED};
use common::{attachment, fixture, to_bytes, DiffusedPick, GroupPick};
use libfuzzer_sys::fuzz_target;

const MAX_INPUTS: usize = 64;
const GROUPS: usize = 4;

#[derive(Arbitrary, Debug)]
enum Op {
    Reply { group: GroupPick, version: u64, too_old: bool, codes: Vec<DiffusedPick> },
    Call { group: GroupPick },
    Restore,
}

fuzz_target!(|ops: Vec<Op>| {
    let fx = fixture();
    let mut client: Client<GROUPS> = Client::new(9);
    let mut seen: HashMap<GroupId, u64> = HashMap::new();
    let mut learned: HashSet<UpgradeId> = HashSet::new();
    for op in ops.iter().take(MAX_INPUTS) {
        match op {
            Op::Reply { group, version, too_old, codes } => {
                let status = if *too_old { ClientStatus::TooOld } else { ClientStatus::Current };
                let reply = ClientReply { group: group.id(), version: *version, status, codes: attachment(fx, codes) };
                let before = to_bytes(&client);
                match client.on_reply(&reply) {
                    Ok(event) => {
                        assert_eq!(event == ClientEvent::MustRefresh, *too_old);
                        let v = seen.entry(reply.group).or_default();
                        *v = (*v).max(reply.version);
                        learned.extend(reply.codes.iter().map(|d| d.upgrade));
                    }
                    Err(_) => {
                        assert!(!seen.contains_key(&reply.group) && seen.len() == GROUPS, "an Err with room left");
                        assert_eq!(to_bytes(&client), before, "an Err changed the client");
                    }
                }
            }
            Op::Call { group } => {
                let call = client.call(group.id());
                assert_eq!(call.client, 9);
                assert_eq!(call.seen, seen.get(&group.id()).copied().unwrap_or(0));
                assert!(call.codes.len() <= MAX_ATTACHED);
                let ids: HashSet<UpgradeId> = call.codes.iter().map(|d| d.upgrade).collect();
                assert_eq!(ids.len(), call.codes.len(), "an upgrade carried twice");
                assert!(ids.is_subset(&learned), "a code the client never learned");
            }
            Op::Restore => client = common::restore(&client),
        }
        for (g, v) in &seen {
            assert_eq!(client.seen(*g), *v, "the client's view of {g:?} is not the largest version it saw");
        }
    }
});
