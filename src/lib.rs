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
//! # A whole deployment in one process
//!
//! Three groups of four replicas, a deployer and an installer, through the
//! host layer (`std` feature): an upgrade that commits and diffuses, then
//! one that a group rejects and that aborts everywhere. This is
//! `examples/embed.rs` (`cargo run --example embed`).
//!
#![cfg_attr(feature = "std", doc = concat!("```\n", include_str!("../examples/embed.rs"), "\n```\n"))]
#![cfg_attr(not(feature = "std"), doc = "(With the `std` feature, the example is shown here.)\n")]
//!
//! # Driving a replica
//!
//! A host embeds one [`GroupReplica`](group::GroupReplica) per replica and
//! loops:
//!
//! 1. **Order.** Put every [`Operation`](wire::Operation) addressed to the
//!    group (a `PrepareInstall` from an installer, a `CommitInstall` or
//!    `AbortInstall` from an installer, a neighbor group or a guardian)
//!    through the group's Byzantine agreement, authenticating who submitted
//!    it: the origin is part of what the replicas execute.
//! 2. **Execute.** In the agreed order, call
//!    [`handle_ordered`](group::GroupReplica::handle_ordered) with the
//!    operation's origin, this replica's key and the application's
//!    deterministic verdict on the piece.
//! 3. **Piggyback.** When the replicated application calls another group,
//!    attach [`take_attachment`](group::GroupReplica::take_attachment); when
//!    a request arrives, call [`on_request`](group::GroupReplica::on_request)
//!    before executing it; when a response arrives, call
//!    [`on_response`](group::GroupReplica::on_response) (Figure 2).
//! 4. **Persist.** Write the role's state (serde/postcard; it holds this
//!    replica's shares, so store it as a key deserves) and keep the piece
//!    of every upgrade in [`held_upgrades`](group::GroupReplica::held_upgrades)
//!    (guardians may ask for it). Nothing of the step may leave before.
//! 5. **Carry out the step.** Send each message (a message to
//!    [`Peer::Group`](step::Peer::Group) is a submission to that group's
//!    ordering), perform each effect in order (apply or discard a payload,
//!    forward a piece, abort and restart a transaction), log the faults.
//! 6. **Wait.** Feed messages from other parties to
//!    [`handle_message`](group::GroupReplica::handle_message) and call
//!    [`handle_timeout`](group::GroupReplica::handle_timeout) when the
//!    step's deadline passes.
//!
//! With the `std` feature, the [`host`] module does steps 4 and 5 (and the
//! same for guardians and installers) over a store and a transport the host
//! supplies; the simulator and `examples/node` both use it.
//!
//! The other roles follow the same shape: the [`deployer`] builds an
//! upgrade's codes and signed pieces, an [`installer`] drives one upgrade to
//! its outcome, a [`guardian`] holds a group's shares so that not even a
//! compromised group gets both codes, a [`client`] carries codes between
//! groups it calls, and (with `std`) [`sim`] runs whole deployments under
//! Byzantine faults.
//!
//! # Three kinds of bad
//!
//! Misuse of the API is an `Err` ([`error::MisuseError`]); a peer that
//! misbehaves is a [`Fault`](step::Fault) in the step and processing goes on;
//! bytes that do not decode are a [`DecodeError`](error::DecodeError) from
//! [`wire::decode`]. Bad input leaves state unchanged and never panics.

#[cfg(any(test, feature = "std"))]
extern crate std;

/// The `heapless` whose `Vec`s appear in configurations and messages.
pub use heapless;
/// The `rand_core` this crate's APIs take generators from (`CryptoRng`):
/// pass a generator built on this version, e.g. `chacha20::ChaCha20Rng`
/// (with its `rng` feature) seeded from the operating system. Generators
/// from other `rand_core` versions (such as `rand` 0.8's `thread_rng()`) do
/// not implement its traits.
pub use rand_core;

pub mod capacity;
pub mod client;
pub mod crypto;
pub mod deployer;
pub mod error;
pub mod group;
pub mod guardian;
#[cfg(feature = "std")]
pub mod host;
pub mod ids;
pub mod installer;
pub mod overlay;
/// The names of the planted bugs; they act only with `planted-bugs`.
pub mod planted;
#[doc = include_str!("../docs/protocol.md")]
pub mod protocol {}
#[cfg(feature = "std")]
pub mod sim;
pub mod step;
pub mod wire;
