#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects,
        clippy::unreachable
    )
)]
//! Atomic, diffusing upgrade installation across many Byzantine-fault-
//! tolerant replica groups, after Thorvaldsson and Goldman, "Dynamic
//! Evolution in a Survivable Application Infrastructure".
//!
//! Every correct group installs an upgrade or none does; installers are
//! untrusted; a group's secret can only be rebuilt once `f + 1` of its
//! replicas agree to release it; and the commit diffuses from group to group
//! on application traffic, so no global halt is needed.
//!
//! The crate is sans-IO, `no_std` and allocation-free: each role is a plain
//! struct whose methods take the current time and one input and return a
//! [`Step`](step::Step) of messages, effects, faults and a deadline.
//!
//! # Driving a replica
//!
//! A host embeds one [`GroupReplica`](group::GroupReplica) per replica and
//! loops:
//!
//! 1. **Order.** Put every [`Operation`](wire::Operation) addressed to the
//!    group (a `PrepareInstall` from an installer, a `CommitInstall` or
//!    `AbortInstall` from an installer or a neighbor group) through the
//!    group's Byzantine agreement.
//! 2. **Execute.** In the agreed order, call
//!    [`handle_ordered`](group::GroupReplica::handle_ordered) with the
//!    operation's origin, this replica's key and the application's
//!    deterministic verdict on the piece.
//! 3. **Piggyback.** When the replicated application calls another group,
//!    attach [`take_attachment`](group::GroupReplica::take_attachment); when
//!    a request arrives, call [`on_request`](group::GroupReplica::on_request)
//!    before executing it; when a response arrives, call
//!    [`on_response`](group::GroupReplica::on_response) (Figure 2).
//! 4. **Carry out the step.** Send each message (a message to
//!    [`Peer::Group`](step::Peer::Group) is a submission to that group's
//!    ordering), perform each effect in order (apply or discard a payload,
//!    abort and restart a transaction), log the faults.
//! 5. **Wait.** Feed messages from other replicas to
//!    [`handle_message`](group::GroupReplica::handle_message) and call
//!    [`handle_timeout`](group::GroupReplica::handle_timeout) when the
//!    step's deadline passes.
//! 6. **Persist.** The role serializes with serde/postcard; store it with
//!    the care a key deserves (it holds this replica's shares).
//!
//! The other roles follow the same shape: the [`deployer`] builds an
//! upgrade's codes and signed pieces, an [`installer`] drives one upgrade to
//! its outcome, and (with the `std` feature) [`sim`] runs whole deployments
//! under Byzantine faults.
//!
//! # Three kinds of bad
//!
//! Misuse of the API is an `Err` ([`error::MisuseError`]); a peer that
//! misbehaves is a [`Fault`](step::Fault) in the step and processing goes on;
//! bytes that do not decode are a [`DecodeError`](error::DecodeError) from
//! [`wire::decode`]. Bad input leaves state unchanged and never panics.

#[cfg(any(test, feature = "std"))]
extern crate std;

pub mod capacity;
pub mod client;
pub mod crypto;
pub mod deployer;
pub mod error;
pub mod group;
pub mod guardian;
pub mod installer;
/// The names of the planted bugs; they act only with `planted-bugs`.
pub mod planted;
#[cfg(feature = "std")]
pub mod sim;
pub mod step;
pub mod wire;
