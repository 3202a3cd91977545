//! What every role returns: the [`Step`] contract, time and peers.
//!
//! A role never sends, stores, sleeps or draws randomness. Each entry point
//! takes the current [`Instant`] and one input and returns a `#[must_use]`
//! [`Step`]: messages to send (each with its destination), effects for the
//! host, faults observed from peers, and the role's next deadline. The host
//! carries out the step, and calls the role's `handle_timeout` once the
//! deadline has passed.

use heapless::Vec;
use serde::{Deserialize, Serialize};

use crate::error::CapacityError;
use crate::wire::{GroupId, Message, UpgradeId};

/// A point in the host's monotonic time, in milliseconds; the crate never
/// reads a clock. Deadlines are saved with a role's state, so the clock must
/// go on counting across the host's restarts (e.g. Unix time in ms, or a
/// monotonic clock plus a persisted offset), never restart from zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Instant(pub u64);

impl Instant {
    /// `self + ms`, saturating.
    #[must_use]
    pub const fn after(self, ms: u64) -> Self {
        Self(self.0.saturating_add(ms))
    }
}

/// Who a message goes to or comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Peer {
    /// One replica of a group (0-based index in the membership).
    Replica {
        /// The group.
        group: GroupId,
        /// The replica's index.
        index: u8,
    },
    /// A group as a whole: the host submits the message to the group's
    /// ordering, so every correct replica executes it at the same point.
    Group(GroupId),
    /// An installer.
    Installer(u32),
    /// A guardian.
    Guardian(u32),
    /// An external client.
    Client(u32),
    /// A deployer: named in faults only (a signed piece whose box for this
    /// party is bad is its builder's fault, not its forwarder's).
    Deployer(crate::ids::DeployerId),
}

/// A misbehaving peer, as a role observed it. Processing goes on; the host
/// may log, count or act on faults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Fault {
    /// Who misbehaved (as far as the role can tell).
    pub peer: Peer,
    /// The upgrade concerned, if any.
    pub upgrade: Option<UpgradeId>,
    /// What it did.
    pub kind: FaultKind,
}

/// The kinds of misbehaviour roles report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum FaultKind {
    /// A share that does not match the piece's digest map.
    ForgedShare,
    /// A code that does not match its digest.
    WrongCode,
    /// A piece whose signature, signer or group does not check out.
    ForgedPiece,
    /// A replica answered with both kinds of share for one piece.
    BothKinds,
    /// A party's own box in a signed piece does not open or its shares do
    /// not match the digests: reported against the
    /// [`Peer::Deployer`] that signed the piece.
    BadBox,
    /// A piece signed by a deployer carries an order sequence number the
    /// group's sequencer did not sign for it: reported against the
    /// [`Peer::Deployer`].
    Unsequenced,
    /// An answer that contradicts an earlier one from the same peer.
    Equivocation,
    /// An answer for something never asked, or from outside the group.
    Unsolicited,
    /// A [`Retirement`](crate::wire::Retirement) not signed by the
    /// deployer its upgrade id names.
    ForgedRetirement,
}

/// Upper bound on the messages one step may carry: 32, or more where one
/// input must answer that many at once: a replica asks every guardian and
/// answers the operation's origin (`MAX_SHARES + 1`); a guardian whose
/// release became durable answers every replica that asked
/// (`MAX_REPLICAS`), and forwards an outcome to every group it guards
/// (`MAX_GUARDED`).
pub const MAX_STEP_MESSAGES: usize =
    max(max(crate::capacity::MAX_SHARES.saturating_add(1), crate::capacity::MAX_GUARDED), 32);

const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}
/// Upper bound on the effects one step may carry: enough for the largest
/// step, a response that finishes [`MAX_ATTACHED`](crate::wire::MAX_ATTACHED)
/// pieces between aborting and restarting its transaction.
pub const MAX_STEP_EFFECTS: usize = crate::wire::MAX_ATTACHED + 2;
/// Upper bound on the faults one step may carry (further ones are counted).
pub const MAX_STEP_FAULTS: usize = 8;

/// A message and where it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// Destination.
    pub to: Peer,
    /// The message.
    pub message: Message,
}

/// The output of one call into a role.
///
/// Bounded: one input never yields more than [`MAX_STEP_MESSAGES`]
/// messages or [`MAX_STEP_EFFECTS`] effects. Faults beyond
/// [`MAX_STEP_FAULTS`] are counted in `faults_dropped`.
#[must_use = "a step holds messages to send and effects to carry out"]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step<E> {
    /// Messages to send.
    pub messages: Vec<Outgoing, MAX_STEP_MESSAGES>,
    /// Effects for the host, in order.
    pub effects: Vec<E, MAX_STEP_EFFECTS>,
    /// Peers observed misbehaving.
    pub faults: Vec<Fault, MAX_STEP_FAULTS>,
    /// Faults observed beyond the step's capacity.
    pub faults_dropped: u32,
    /// Messages or effects that did not fit. Always 0: every entry point's
    /// outputs are bounded by the step's capacities (each bound is stated
    /// where the output is made), and outputs that may exceed one step stay
    /// due in the role instead. Tests and fuzz targets check it, so a wrong
    /// bound shows up as a count, never as a silent loss.
    pub lost: u32,
    /// When to call the role's `handle_timeout` next, if ever.
    pub deadline: Option<Instant>,
}

impl<E> Default for Step<E> {
    fn default() -> Self {
        Self {
            messages: Vec::new(),
            effects: Vec::new(),
            faults: Vec::new(),
            faults_dropped: 0,
            lost: 0,
            deadline: None,
        }
    }
}

impl<E> Step<E> {
    /// An empty step.
    pub fn new() -> Self {
        Self::default()
    }

    pub(crate) fn send(&mut self, to: Peer, message: Message) -> Result<(), CapacityError> {
        self.messages.push(Outgoing { to, message }).map_err(|_| CapacityError::Output)
    }

    pub(crate) fn effect(&mut self, effect: E) -> Result<(), CapacityError> {
        self.effects.push(effect).map_err(|_| CapacityError::Output)
    }

    /// Adds a message the step has room for by construction (see `lost`).
    pub(crate) fn emit(&mut self, to: Peer, message: Message) {
        if self.send(to, message).is_err() {
            debug_assert!(false, "a step bound is wrong: message lost");
            self.lost = self.lost.saturating_add(1);
        }
    }

    /// Adds an effect the step has room for by construction (see `lost`).
    pub(crate) fn emit_effect(&mut self, effect: E) {
        if self.effect(effect).is_err() {
            debug_assert!(false, "a step bound is wrong: effect lost");
            self.lost = self.lost.saturating_add(1);
        }
    }

    /// Room left for messages.
    pub(crate) fn room(&self) -> usize {
        MAX_STEP_MESSAGES.saturating_sub(self.messages.len())
    }

    pub(crate) fn fault(&mut self, peer: Peer, upgrade: Option<UpgradeId>, kind: FaultKind) {
        if self.faults.push(Fault { peer, upgrade, kind }).is_err() {
            self.faults_dropped = self.faults_dropped.saturating_add(1);
        }
    }

    /// Whether the step carries nothing but perhaps a deadline.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty() && self.effects.is_empty() && self.faults.is_empty()
    }
}
