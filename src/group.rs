//! The group role: one instance per replica (paper sections 4.1–4.4,
//! Figures 2 and 3; [installation](crate::protocol#installation-section-4) and [conflicts](crate::protocol#conflicts-and-replays-section-44-figure-3)).
//!
//! A [`GroupReplica`] has two halves:
//! - the **deterministic** half, driven only by the group's ordered
//!   operations ([`GroupReplica::handle_ordered`], and the Figure 2 calls
//!   [`on_request`](GroupReplica::on_request),
//!   [`on_response`](GroupReplica::on_response) and
//!   [`take_attachment`](GroupReplica::take_attachment), which the host makes
//!   from the replicated application's execution): the sets `A` and `C`, the
//!   version codes, the outcomes. Every correct replica holds the same;
//! - the **per-replica** half: the replica's opened box (its shares and
//!   `k_g`), and its proactive-diffusion timers.
//!
//! # What the embedder must do
//! - Run [`Operation`]s through the group's agreement and call
//!   `handle_ordered` on every replica in the agreed order, with the same
//!   validation verdict everywhere (the `validate` callback must be a
//!   deterministic function of the header and the replicated state).
//! - Send every [`Outgoing`](crate::step::Outgoing) message; a message to
//!   [`Peer::Group`] is a submission to that group's ordering.
//! - Feed answers from other groups' replicas to `handle_message`, and call
//!   `handle_timeout` when the step's deadline passes.
//! - Carry out effects in order: [`GroupEffect::Apply`] installs the payload
//!   (open it with [`PayloadOpener`](crate::crypto::PayloadOpener)).
//! - Persist the role with serde; the state holds this replica's shares and
//!   `k_g`, so store it as carefully as the replica's key.
//!
//! One group of one replica (`f = 0`): a prepare releases its share of
//! `s_g` (with one group, `s_g = τ`), and `CommitInstall(τ)` applies it.
//!
//! ```
//! use bft_upgrade::crypto::{Code, DeployerKey, PayloadRef, ReplicaSecretKey};
//! use bft_upgrade::deployer::{Deployer, GroupTarget, UpgradePlan};
//! use bft_upgrade::group::{AuthorizedDeployer, GroupConfig, GroupEffect, GroupReplica, Verdict};
//! use bft_upgrade::rand_core::SeedableRng;
//! use bft_upgrade::step::{Instant, Peer};
//! use bft_upgrade::wire::{DeployerId, GroupId, Membership, Message, Operation, Reply, ResourceId};
//!
//! let mut rng = chacha20::ChaCha20Rng::from_seed([2; 32]);
//! let deployer = Deployer::new(DeployerId(1), DeployerKey::random(&mut rng));
//! let key = ReplicaSecretKey::random(&mut rng);
//! let membership = Membership::new(GroupId(1), &[key.public_key()]).unwrap();
//! let genesis = Code::from_bytes([0; 32]);
//! let mut config = GroupConfig {
//!     membership: membership.clone(),
//!     deployers: Default::default(),
//!     neighbors: Default::default(),
//!     retry_ms: 100,
//!     proactive: false,
//!     guardians: None,
//!     sequencer: None,
//! };
//! let authorized = AuthorizedDeployer { id: deployer.id(), key: deployer.public_key(), genesis: genesis.clone() };
//! config.deployers.push(authorized).unwrap();
//! let mut replica = GroupReplica::new(config, 0).unwrap();
//!
//! let plan = UpgradePlan::new(&mut rng, deployer.id(), 1, &[GroupId(1)]).unwrap();
//! let target = GroupTarget {
//!     membership: &membership,
//!     resources: &[ResourceId(1)],
//!     prev_version: &genesis,
//!     guardians: None,
//!     payload: PayloadRef::default(),
//!     next: None,
//! };
//! let piece = plan.piece(&deployer, &target).unwrap();
//! let installer = Peer::Installer(1);
//! let step = replica.handle_ordered(Instant(0), installer, &Operation::PrepareInstall(piece), &key, |_| Verdict::Accept);
//! assert!(matches!(&step.messages[0].message, Message::Answer(a) if matches!(a.reply, Reply::Accepted(_))));
//!
//! let commit = Operation::commit_install(plan.header().upgrade, plan.trigger_code().clone());
//! let step = replica.handle_ordered(Instant(1), installer, &commit, &key, |_| Verdict::Accept);
//! assert!(matches!(step.effects[0], GroupEffect::Apply { .. }));
//! assert_eq!(replica.version(), 1);
//! ```

use heapless::{Deque, Vec};
use serde::{Deserialize, Serialize};

use p256::elliptic_curve::ff::PrimeField;

pub use crate::wire::{GuardianIds, NextMembership, PieceCrypto, WithKey};

use crate::planted::Planted;

use crate::crypto::{
    reconstruct, Binding, Code, Digest, GroupKey, PayloadRef, PublicKey, ReplicaSecretKey, Share, ShareKind,
};
use crate::error::{CapacityError, MisuseError};
use crate::step::{FaultKind, Instant, Peer, Step};
use crate::wire::{
    Answer, Attachment, ClientCall, ClientReply, ClientStatus, Custody, DeployerId, Finish, GroupId, GuardianSet,
    Membership, Message, Operation, OrderKey, Outcome, Piece, PieceHeader, Refusal, Reply, ResourceId, Token,
    UpgradeId, GUARDIAN_INDEX_BASE, MAX_ATTACHED, MAX_GUARDIANS, MAX_RESOURCES,
};

pub use crate::capacity::{HISTORY, MAX_DIFFUSING, MAX_IN_FLIGHT, MAX_NEIGHBORS};
/// The most deployers a group authorizes.
pub const MAX_DEPLOYERS: usize = 4;
/// Outcomes a replica keeps due for its guardians: a step finishes at most
/// `MAX_ATTACHED`, and each `handle_timeout` tells more.
const TELLING: usize = if HISTORY > MAX_ATTACHED { HISTORY } else { MAX_ATTACHED };

/// A deployer a group accepts pieces from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizedDeployer {
    /// Its identifier, as pieces name it.
    pub id: DeployerId,
    /// Its ECDSA P-256 key.
    pub key: PublicKey,
    /// The genesis version code of its chain at this group.
    pub genesis: Code,
}

/// A neighbor group: one a transaction here calls, or that calls here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Neighbor {
    /// The group.
    pub group: GroupId,
    /// Its fault bound: `f + 1` answers from it are trusted.
    pub f: u8,
}

/// A group's configuration, identical on all its replicas.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupConfig {
    /// The group's membership.
    pub membership: Membership,
    /// Deployers whose pieces it accepts.
    pub deployers: Vec<AuthorizedDeployer, MAX_DEPLOYERS>,
    /// Groups it diffuses codes to.
    pub neighbors: Vec<Neighbor, MAX_NEIGHBORS>,
    /// Whether replicas call `CommitInstall`/`AbortInstall` on neighbors
    /// proactively (section 4.3), besides piggybacking codes. (Before
    /// `retry_ms` only in the planted format change.)
    #[cfg(feature = "planted-format-change")]
    pub proactive: bool,
    /// First retry interval of proactive diffusion, in ms (doubles up to
    /// 16 times this).
    pub retry_ms: u64,
    /// Whether replicas call `CommitInstall`/`AbortInstall` on neighbors
    /// proactively (section 4.3), besides piggybacking codes.
    #[cfg(not(feature = "planted-format-change"))]
    pub proactive: bool,
    /// The group's guardians (section 7), if its pieces are in guardian
    /// custody; pieces must then list exactly these, in this order.
    pub guardians: Option<GuardianIds>,
    /// The sequencer whose signature every piece's order sequence number
    /// needs ([`Sequencer`](crate::deployer::Sequencer)); `None` lets each
    /// deployer pick its own.
    pub sequencer: Option<PublicKey>,
}

impl Neighbor {
    /// The neighbor `membership` describes (its `f` taken from it, so it
    /// is computed in one place).
    pub fn of(membership: &Membership) -> Self {
        Self { group: membership.group, f: membership.f }
    }
}

impl GroupConfig {
    /// A configuration for `membership` with nothing else yet: no
    /// deployer, no neighbor, replica custody, proactive diffusion on, and
    /// `retry_ms` as the first diffusion retry. Add the rest with the
    /// `with_*` methods.
    pub fn new(membership: Membership, retry_ms: u64) -> Self {
        Self {
            membership,
            deployers: Vec::new(),
            neighbors: Vec::new(),
            retry_ms,
            proactive: true,
            guardians: None,
            sequencer: None,
        }
    }

    /// Authorizes a deployer.
    ///
    /// # Errors
    /// [`CapacityError::Deployers`] beyond [`MAX_DEPLOYERS`].
    pub fn with_deployer(mut self, deployer: AuthorizedDeployer) -> Result<Self, CapacityError> {
        self.deployers.push(deployer).map_err(|_| CapacityError::Deployers)?;
        Ok(self)
    }

    /// Adds a neighbor group (see [`Neighbor::of`]).
    ///
    /// # Errors
    /// [`CapacityError::Neighbors`] beyond [`MAX_NEIGHBORS`].
    pub fn with_neighbor(mut self, neighbor: Neighbor) -> Result<Self, CapacityError> {
        self.neighbors.push(neighbor).map_err(|_| CapacityError::Neighbors)?;
        Ok(self)
    }

    /// Puts the group's pieces in the custody of `guardians` (the set its
    /// deployers build pieces with).
    pub fn with_guardians(mut self, guardians: &GuardianSet) -> Self {
        let mut ids = Vec::new();
        for (id, _) in &guardians.members {
            // A set holds at most MAX_GUARDIANS members, as `ids` does.
            let _ = ids.push(*id);
        }
        self.guardians = Some(GuardianIds { f: guardians.f, ids });
        self
    }

    /// Whether replicas diffuse outcomes proactively (default: yes).
    pub fn proactive(mut self, proactive: bool) -> Self {
        self.proactive = proactive;
        self
    }

    /// Requires every piece's order sequence number to be signed by the
    /// sequencer with `key` ([`Refusal::Unsequenced`] otherwise).
    pub fn with_sequencer(mut self, key: PublicKey) -> Self {
        self.sequencer = Some(key);
        self
    }
}

/// The application's verdict on a piece ([prepare](crate::protocol#installation-section-4)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The group can take this piece.
    Accept,
    /// It cannot: release the `c` share.
    Reject,
}

/// A transaction of the replicated application, as the host names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TxnId(pub u64);

/// What a group step asks the host to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupEffect {
    /// Install the piece's payload, decrypting it with `key`. The payload is
    /// committed from this point of the ordered execution on.
    Apply {
        /// The upgrade.
        upgrade: UpgradeId,
        /// `k_g`, or `None` when this replica's box was bad (the host must
        /// then fetch the new state from its peers, as after a crash).
        key: Option<GroupKey>,
        /// The sealed payload to open.
        payload: PayloadRef,
        /// The upgrade changed the group's membership (and guardians):
        /// [`GroupReplica::config`] has the new ones. The host reconfigures
        /// its ordering, starts joining replicas by state transfer, and
        /// stops this one if it left ([`GroupReplica::is_member`]).
        reconfigured: bool,
    },
    /// The piece is gone (aborted or cancelled and aborted): drop its
    /// stored payload.
    Discard {
        /// The upgrade.
        upgrade: UpgradeId,
    },
    /// Guardian custody: send the piece of `upgrade` (as ordered) to
    /// `guardian`, or to every guardian it lists when `None`, with
    /// [`Guardian::handle_piece`](crate::guardian::Guardian::handle_piece).
    /// Only asked for pieces in
    /// [`held_upgrades`](GroupReplica::held_upgrades): a host may drop a
    /// piece once its upgrade has left them.
    ForwardPiece {
        /// The upgrade.
        upgrade: UpgradeId,
        /// One guardian, or all.
        guardian: Option<u32>,
    },
    /// Figure 2: abort this transaction (it saw a commit in a response)...
    AbortTransaction(TxnId),
    /// ...and restart it after the commits in this step.
    RestartTransaction(TxnId),
}

/// Status of a held piece in Figure 3's terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// In `A`, its `s_g` shares released.
    Released,
    /// In `A`, postponed: nothing released yet.
    Withheld,
    /// In `C`: its `c` shares are released.
    Cancelled,
}

/// This replica's own secrets of a piece.
#[derive(Clone, Serialize, Deserialize)]
// Held pieces are few and fixed in number; boxing is not available.
#[allow(clippy::large_enum_variant)]
enum Secrets {
    /// Replica custody: this replica's two shares.
    Shares { key: GroupKey, secret_share: Share, cancel_share: Share },
    /// Guardian custody: this replica's token, and the code it fetches from
    /// the guardians once the group decided.
    Guarded { key: GroupKey, token: Token, fetch: Option<Fetch> },
}

impl Secrets {
    fn key(&self) -> &GroupKey {
        match self {
            Self::Shares { key, .. } | Self::Guarded { key, .. } => key,
        }
    }
}

/// Guardian custody: a replica's fetch of one kind of code.
#[derive(Clone, Serialize, Deserialize)]
struct Fetch {
    kind: ShareKind,
    shares: Vec<Share, MAX_GUARDIANS>,
    code: Option<Code>,
    deadline: Instant,
    interval: u64,
}

/// Guardian custody: the piece's guardians and their share digests.
#[derive(Clone, Serialize, Deserialize)]
struct Guarded {
    f: u8,
    guardians: Vec<(u32, Digest, Digest), MAX_GUARDIANS>,
}

/// A piece in `A ∪ C`, as every correct replica of the group holds it.
#[derive(Clone, Serialize, Deserialize)]
struct HeldRecord {
    upgrade: UpgradeId,
    deployer: DeployerId,
    order: OrderKey,
    trigger_digest: Digest,
    cancel_digest: Digest,
    resources: Vec<ResourceId, MAX_RESOURCES>,
    payload: PayloadRef,
    status: Status,
    /// Guardian custody, if the piece is in it.
    guarded: Option<Guarded>,
    /// Digest of the membership the piece switches the group to, if any.
    next: Option<Digest>,
}

/// A held piece: the group's record of it and this replica's secrets
/// (`None` when this replica's box did not open). Encoded as the record's
/// fields followed by the secrets.
#[derive(Clone, Serialize, Deserialize)]
struct Held {
    record: HeldRecord,
    secrets: Option<Secrets>,
}

impl core::ops::Deref for Held {
    type Target = HeldRecord;
    fn deref(&self) -> &HeldRecord {
        &self.record
    }
}

impl core::ops::DerefMut for Held {
    fn deref_mut(&mut self) -> &mut HeldRecord {
        &mut self.record
    }
}

impl AsRef<HeldRecord> for Held {
    fn as_ref(&self) -> &HeldRecord {
        &self.record
    }
}

impl AsRef<HeldRecord> for HeldRecord {
    fn as_ref(&self) -> &HeldRecord {
        self
    }
}

impl HeldRecord {
    fn in_a(&self) -> bool {
        self.status != Status::Cancelled
    }

    fn conflicts(&self, other: &HeldRecord) -> bool {
        self.upgrade != other.upgrade && self.resources.iter().any(|r| other.resources.contains(r))
    }

    /// The digest a code for `outcome` must match.
    fn check(&self, outcome: Outcome, code: &Code) -> bool {
        outcome.check(self.upgrade, code, &self.trigger_digest, &self.cancel_digest).is_ok()
    }
}

/// The replicated part of a group replica's state: everything that is a
/// function of the group's ordered operations alone (the held pieces and
/// their status, the outcomes, the version chains and version, Figure 2's
/// outboxes), for the group's membership. It has a canonical encoding and
/// a [`digest`](Self::digest), equal at every correct replica that
/// executed the same operations.
///
/// A wiped, lagging or new replica installs it, from a source the host
/// trusts (`f + 1` peers with matching digests, or the engine's certified
/// checkpoint), with [`GroupReplica::transfer`].
#[derive(Clone, Serialize, Deserialize)]
pub struct ReplicatedState {
    membership: Membership,
    guardians: Option<GuardianIds>,
    shared: Shared<HeldRecord>,
}

impl ReplicatedState {
    /// Its digest ([`GroupReplica::replicated_digest`] of the replicas it
    /// was taken from).
    pub fn digest(&self) -> Digest {
        self.shared.digest(&self.membership.digest(), &self.guardians)
    }

    /// The group's membership it is at (a membership upgrade changes it).
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// The group version it is at.
    pub fn version(&self) -> u64 {
        self.shared.version
    }

    /// The upgrades whose pieces a replica installing it needs.
    pub fn held_upgrades(&self) -> impl Iterator<Item = UpgradeId> + '_ {
        self.shared.held.iter().map(|h| h.upgrade)
    }
}

/// The state every correct replica of a group shares, with the held pieces
/// as `H`: a replica's own [`Held`] (record and secrets) or, transferred,
/// the bare [`HeldRecord`].
#[derive(Clone, Serialize, Deserialize)]
struct Shared<H> {
    held: Vec<H, MAX_IN_FLIGHT>,
    finished: Deque<Finished, HISTORY>,
    /// Current version code per authorized deployer (config order).
    chains: Vec<Code, MAX_DEPLOYERS>,
    /// The group version: the number of commits so far.
    version: u64,
    /// Figure 2's `T_g'`: codes to piggyback, per neighbor (config order).
    outbox: Vec<Attachment, MAX_NEIGHBORS>,
    /// The membership the released piece that changes it switches to on
    /// commit (such pieces conflict: at most one is released).
    staged: Option<(UpgradeId, NextMembership)>,
    /// The membership before the last change: a piece built for it (in
    /// replica custody) is held and rejected rather than refused, so an
    /// upgrade that crossed the change can still abort.
    previous: Option<Previous>,
}

/// The membership a group had before its last change, as pieces name it.
#[derive(Clone, Copy, Serialize, Deserialize)]
struct Previous {
    members: Digest,
    f: u8,
    n: u8,
}

impl<H: AsRef<HeldRecord>> Shared<H> {
    /// The replicated digest: the membership and guardians in force (the
    /// rest of the configuration is fixed at construction) and this state,
    /// held pieces as their records (no replica's secrets).
    fn digest(&self, members: &Digest, guardians: &Option<GuardianIds>) -> Digest {
        let view = (
            members,
            guardians,
            Records(&self.held),
            &self.finished,
            &self.chains,
            self.version,
            &self.outbox,
            &self.staged,
            &self.previous,
        );
        let binding = Binding { upgrade: UpgradeId([0; 16]), group: GroupId::ALL, index: 0 };
        crate::wire::digest_encoding(crate::crypto::Domain::Replicated, &binding, &view)
    }
}

/// Held pieces encoded as their records (a replica's secrets left out).
struct Records<'a, H>(&'a [H]);

impl<H: AsRef<HeldRecord>> Serialize for Records<'_, H> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(AsRef::as_ref))
    }
}

/// A finished upgrade.
#[derive(Clone, Serialize, Deserialize)]
struct Finished {
    upgrade: UpgradeId,
    deployer: DeployerId,
    outcome: Outcome,
    code: Code,
    /// The group version after this outcome.
    version: u64,
}

/// A replica's proactive diffusion of one outcome to its neighbors.
#[derive(Clone, Serialize, Deserialize)]
struct Diffusion {
    upgrade: UpgradeId,
    outcome: Outcome,
    code: Code,
    /// Per neighbor (config order), the replicas that acknowledged. A
    /// sequence, not an array of [`MAX_NEIGHBORS`]: the stored encoding
    /// must not depend on the build's capacities.
    acks: Vec<u64, MAX_NEIGHBORS>,
    deadline: Instant,
    interval: u64,
}

/// An outcome some of the group's guardians have not been told yet: bit
/// `i` of `pending` stands for the configuration's `i`-th guardian.
#[derive(Clone, Serialize, Deserialize)]
struct Tell {
    diffused: Finish,
    pending: u64,
}

/// One replica of a group: the deterministic group object and this
/// replica's own part of it.
#[derive(Clone, Serialize, Deserialize)]
pub struct GroupReplica {
    /// The configuration in force: its membership and guardians change
    /// when a piece that changes them commits.
    config: GroupConfig,
    /// Cached digest of the membership, checked against every piece.
    members: Digest,
    me: u8,
    /// This replica's key when it joined: it is a member while the
    /// membership has it at index `me`.
    key: PublicKey,
    /// The replicated part (a function of the ordered operations alone).
    shared: Shared<Held>,
    // --- per replica ---
    diffusing: Vec<Diffusion, MAX_DIFFUSING>,
    /// Outcomes still to be told to some of the group's guardians (the
    /// step that finished them was full).
    telling: Vec<Tell, TELLING>,
    #[cfg(feature = "planted-bugs")]
    planted: crate::planted::Planted,
}

impl GroupReplica {
    /// Replica `me` (0-based index in the membership) of the group
    /// `config` describes.
    ///
    /// # Errors
    /// [`MisuseError::OutOfRange`] when `me` is not a member;
    /// [`MisuseError::BadArgument`] for an ill-formed membership or a zero
    /// retry interval.
    // Inlined, the role is built straight where the caller keeps it; a call
    // left two copies of it on the stack (firmware: +9 KiB, FOOTPRINT.md).
    #[inline(always)]
    pub fn new(config: GroupConfig, me: u8) -> Result<Self, MisuseError> {
        let Some(&key) = config.membership.replicas.get(usize::from(me)) else {
            return Err(MisuseError::OutOfRange);
        };
        if !config.membership.is_well_formed() || config.retry_ms == 0 {
            return Err(MisuseError::BadArgument);
        }
        let mut chains = Vec::new();
        for d in &config.deployers {
            chains.push(d.genesis.clone()).map_err(|_| CapacityError::Deployers)?;
        }
        let mut outbox = Vec::new();
        for _ in &config.neighbors {
            outbox.push(Attachment::new()).map_err(|_| CapacityError::Neighbors)?;
        }
        Ok(Self {
            members: config.membership.digest(),
            config,
            me,
            key,
            shared: Shared {
                held: Vec::new(),
                finished: Deque::new(),
                chains,
                version: 0,
                outbox,
                staged: None,
                previous: None,
            },
            diffusing: Vec::new(),
            telling: Vec::new(),
            #[cfg(feature = "planted-bugs")]
            planted: crate::planted::Planted::None,
        })
    }

    /// Plants a deliberate bug (tests of the checkers only).
    #[cfg(feature = "planted-bugs")]
    pub fn plant(&mut self, bug: crate::planted::Planted) {
        self.planted = bug;
    }

    /// The bug planted here, if any (tests of the checkers only).
    #[cfg(feature = "planted-bugs")]
    pub fn planted_bug(&self) -> crate::planted::Planted {
        self.planted
    }

    /// Whether `bug` is planted (never, without the feature).
    #[allow(clippy::unused_self)]
    #[inline(always)]
    fn planted(&self, bug: Planted) -> bool {
        #[cfg(feature = "planted-bugs")]
        return self.planted == bug;
        #[cfg(not(feature = "planted-bugs"))]
        {
            let _ = bug;
            false
        }
    }

    /// The configuration in force: the one the replica was built with,
    /// its membership and guardians as the last membership upgrade that
    /// committed here set them.
    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    /// Whether this replica is still a member: the membership in force has
    /// its key at its index. A replica that left (or whose key was rotated
    /// out) dropped its secrets and opens nothing more; its host stops it.
    pub fn is_member(&self) -> bool {
        self.config.membership.replicas.get(usize::from(self.me)) == Some(&self.key)
    }

    /// Whether this replica has the duties of the first `f + 1` (handing
    /// pieces and outcomes to guardians, proactive diffusion).
    fn on_duty(&self) -> bool {
        self.me <= self.config.membership.f && self.is_member()
    }

    /// The group's id.
    pub fn group(&self) -> GroupId {
        self.config.membership.group
    }

    /// This replica's index.
    pub fn index(&self) -> u8 {
        self.me
    }

    /// The group version (number of commits so far).
    pub fn version(&self) -> u64 {
        self.shared.version
    }

    /// The outcome of `upgrade` here, if it finished within the history.
    pub fn outcome(&self, upgrade: UpgradeId) -> Option<Outcome> {
        self.shared.finished.iter().find(|f| f.upgrade == upgrade).map(|f| f.outcome)
    }

    /// The Figure 3 status of `upgrade`'s piece, if it is held here and
    /// unfinished (for hosts' status displays and diagnosis).
    pub fn status(&self, upgrade: UpgradeId) -> Option<Status> {
        self.shared.held.iter().find(|h| h.upgrade == upgrade).map(|h| h.status)
    }

    /// Whether `upgrade` is held here and unfinished, and if so whether it
    /// is in `A` (`Some(true)`) or `C` (`Some(false)`).
    pub fn holds(&self, upgrade: UpgradeId) -> Option<bool> {
        self.shared.held.iter().find(|h| h.upgrade == upgrade).map(|h| h.in_a())
    }

    /// The unfinished upgrades held here (`A ∪ C`), each with whether it is
    /// in `A`. A host keeps the pieces of these, and only these, for
    /// [`GroupEffect::ForwardPiece`].
    pub fn held_upgrades(&self) -> impl Iterator<Item = (UpgradeId, bool)> + '_ {
        self.shared.held.iter().map(|h| (h.upgrade, h.in_a()))
    }

    /// The finished upgrades remembered here (the last [`HISTORY`]), oldest
    /// first: the upgrade, its outcome, and the group version after it.
    pub fn finished_upgrades(&self) -> impl Iterator<Item = (UpgradeId, Outcome, u64)> + '_ {
        self.shared.finished.iter().map(|f| (f.upgrade, f.outcome, f.version))
    }

    /// The digest of this replica's **replicated** state: everything that
    /// is a function of the group's ordered operations alone (the
    /// membership, the held pieces and their status, the outcomes, the
    /// version chains and version, Figure 2's outboxes), and nothing of
    /// this replica's own (its index, shares and tokens, guardian fetches,
    /// diffusion duty). Every correct replica of a group that executed the
    /// same operations has the same digest, so a BFT engine can put it in
    /// its checkpoints, and a replica whose digest differs from `f + 1`
    /// peers' has diverged.
    pub fn replicated_digest(&self) -> Digest {
        self.shared.digest(&self.members, &self.config.guardians)
    }

    /// A copy of this replica's replicated state, for a peer's
    /// [`transfer`](Self::transfer) (or a checkpoint).
    pub fn replicated(&self) -> ReplicatedState {
        let s = &self.shared;
        let mut chains = s.chains.clone();
        if self.planted(Planted::TransferShapeLost) {
            chains.pop();
        }
        ReplicatedState {
            membership: self.config.membership.clone(),
            guardians: self.config.guardians.clone(),
            shared: Shared {
                held: s.held.iter().map(|h| h.record.clone()).collect(),
                finished: s.finished.clone(),
                chains,
                version: s.version,
                outbox: s.outbox.clone(),
                staged: s.staged.clone(),
                previous: s.previous,
            },
        }
    }

    /// State transfer: replica `me` of `config`'s group, starting from
    /// `state` (which the host trusts: `f + 1` peers' matching digests, or
    /// a certified checkpoint) instead of from scratch. The membership and
    /// guardians come from `state` (a replica joining after a membership
    /// upgrade is `me` of the new membership); `config` gives the rest. Its own part is
    /// rebuilt by opening its boxes of the held pieces, which `pieces`
    /// supplies by upgrade id (from peers or installers; each is checked
    /// against the deployer's signature and the held record). A piece whose
    /// box does not open for this replica is reported as `BadBox` in the
    /// returned step, as when it was prepared, and the replica still
    /// follows the group's outcomes. It then carries on, answering with the
    /// shares it owes for the held pieces.
    ///
    /// # Errors
    /// As [`new`](Self::new); [`MisuseError::BadArgument`] for a state of
    /// another group, membership or configuration shape, or a held piece
    /// that `pieces` does not supply (or supplies forged or for another
    /// upgrade). Nothing is built then.
    pub fn transfer<'p>(
        config: GroupConfig,
        me: u8,
        state: &ReplicatedState,
        mut pieces: impl FnMut(UpgradeId) -> Option<&'p Piece>,
        crypto: &mut impl PieceCrypto,
    ) -> Result<(Self, Step<GroupEffect>), MisuseError> {
        if state.membership.group != config.membership.group {
            return Err(MisuseError::BadArgument);
        }
        let mut config = config;
        config.membership = state.membership.clone();
        config.guardians = state.guardians.clone();
        let mut replica = Self::new(config, me)?;
        let shape_matches = state.shared.chains.len() == replica.shared.chains.len()
            && state.shared.outbox.len() == replica.shared.outbox.len();
        if !shape_matches {
            return Err(MisuseError::BadArgument);
        }
        let mut step = Step::new();
        let mut held = Vec::new();
        for record in &state.shared.held {
            let piece = pieces(record.upgrade).ok_or(MisuseError::BadArgument)?;
            let h = &piece.header;
            let signer = replica.config.deployers.iter().find(|d| d.id == record.deployer);
            let genuine = h.upgrade == record.upgrade
                && h.group == state.membership.group
                && h.trigger_digest == record.trigger_digest
                && h.cancel_digest == record.cancel_digest
                && signer.is_some_and(|d| crypto.verify(piece, &d.key));
            if !genuine {
                return Err(MisuseError::BadArgument);
            }
            // A piece built for an earlier membership (held across a
            // change) has no box for a replica that joined since.
            let secrets = replica.open_own(&mut step, piece, crypto, h.members == replica.members);
            // At most MAX_IN_FLIGHT records, as `held` holds.
            let _ = held.push(Held { record: record.clone(), secrets });
        }
        let s = &state.shared;
        replica.shared = Shared {
            held,
            finished: s.finished.clone(),
            chains: s.chains.clone(),
            version: s.version,
            outbox: s.outbox.clone(),
            staged: s.staged.clone(),
            previous: s.previous,
        };
        Ok((replica, step))
    }

    /// This replica's current version code for `deployer`.
    pub fn version_code(&self, deployer: DeployerId) -> Option<&Code> {
        let slot = self.config.deployers.iter().position(|d| d.id == deployer)?;
        self.shared.chains.get(slot)
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next: the
    /// earliest of the proactive-diffusion retries, the guardian fetches
    /// still waiting for shares, and (at once) outcomes still to be told to
    /// guardians.
    pub fn deadline(&self) -> Option<Instant> {
        let fetches = self.shared.held.iter().filter_map(|h| match &h.secrets {
            Some(Secrets::Guarded { fetch: Some(f), .. }) if f.code.is_none() => Some(f.deadline),
            _ => None,
        });
        // An untold outcome is due at once: the host calls `handle_timeout`.
        let telling = self.telling.first().map(|_| Instant(0));
        self.diffusing.iter().map(|d| d.deadline).chain(fetches).chain(telling).min()
    }

    /// Executes one ordered operation from `origin`.
    ///
    /// `validate` is the application's verdict on a new, authentic piece;
    /// it must be deterministic (the same on every correct replica).
    ///
    /// A misbehaving origin (forged piece, wrong code) is a fault in the
    /// step; the operation then changes nothing.
    pub fn handle_ordered(
        &mut self,
        now: Instant,
        origin: Peer,
        op: &Operation,
        key: &ReplicaSecretKey,
        validate: impl FnOnce(&PieceHeader) -> Verdict,
    ) -> Step<GroupEffect> {
        self.handle_ordered_with(now, origin, op, &mut WithKey(key), validate)
    }

    /// [`handle_ordered`](Self::handle_ordered) with the piece's signature
    /// check and box opening done by `crypto`: a host may verify pieces
    /// before ordering them (in parallel, or once for many replicas in a
    /// test) and hand in the results.
    pub fn handle_ordered_with(
        &mut self,
        now: Instant,
        origin: Peer,
        op: &Operation,
        crypto: &mut impl PieceCrypto,
        validate: impl FnOnce(&PieceHeader) -> Verdict,
    ) -> Step<GroupEffect> {
        let mut step = Step::new();
        let (upgrade, reply) = match op {
            Operation::PrepareInstall(piece) => {
                let reply = self.prepare(&mut step, origin, piece, crypto, validate);
                if reply == Reply::Pending {
                    self.fetch(now, &mut step, piece.header.upgrade);
                }
                (piece.header.upgrade, reply)
            }
            Operation::Finish(Finish { upgrade, outcome, code }) => {
                (*upgrade, self.finish_op(now, &mut step, origin, *upgrade, *outcome, code))
            }
        };
        self.answer(&mut step, origin, upgrade, reply);
        step.deadline = self.deadline();
        step
    }

    /// Figure 2, `ReceiveRequest`: an application request from `from`
    /// carried `codes`. Commits (or aborts) the pieces they finish before
    /// the host executes the request. Call in the request's ordered
    /// execution, then [`take_attachment`](Self::take_attachment) for the
    /// response.
    ///
    /// This, [`on_response`](Self::on_response) and
    /// [`on_client_call`](Self::on_client_call) change the replica's state
    /// only by finishing pieces, and every finish is an `Apply` or
    /// `Discard` effect: a step without effects left the state as it was,
    /// so a host need not write it (the host layer relies on this).
    pub fn on_request(&mut self, now: Instant, from: GroupId, codes: &Attachment) -> Step<GroupEffect> {
        let mut step = Step::new();
        self.learn(now, &mut step, Some(from), codes);
        step.deadline = self.deadline();
        step
    }

    /// Figure 2, `MakeRequest` after the response: the response to
    /// transaction `txn`'s call to `from` carried `codes`. If they commit a
    /// piece held here, the step aborts `txn`, commits, and restarts `txn`.
    pub fn on_response(&mut self, now: Instant, txn: TxnId, from: GroupId, codes: &Attachment) -> Step<GroupEffect> {
        let mut step = Step::new();
        let commits = codes.iter().filter(|d| d.outcome == Outcome::Committed).any(|d| {
            self.shared.held.iter().any(|h| h.upgrade == d.upgrade && h.in_a() && h.check(d.outcome, &d.code))
        });
        // At most MAX_ATTACHED finishes between the abort and the restart:
        // MAX_STEP_EFFECTS holds them all.
        if commits {
            step.emit_effect(GroupEffect::AbortTransaction(txn));
        }
        self.learn(now, &mut step, Some(from), codes);
        if commits {
            step.emit_effect(GroupEffect::RestartTransaction(txn));
        }
        step.deadline = self.deadline();
        step
    }

    /// Section 4.3, external clients: a call from a client that carries
    /// its last-seen version of this group and codes from other groups.
    /// Commits what the codes finish *before* the host executes the call,
    /// then replies with this group's version and the trigger codes
    /// committed since the client's version (or [`ClientStatus::TooOld`]
    /// when they left the history).
    pub fn on_client_call(&mut self, now: Instant, call: &ClientCall) -> (Step<GroupEffect>, ClientReply) {
        let mut step = Step::new();
        self.learn(now, &mut step, None, &call.codes);
        let mut reply = ClientReply {
            group: self.group(),
            version: self.shared.version,
            status: ClientStatus::Current,
            codes: Attachment::new(),
        };
        if call.seen < self.shared.version {
            let since =
                self.shared.finished.iter().filter(|f| f.outcome == Outcome::Committed && f.version > call.seen);
            let mut expected = call.seen.saturating_add(1);
            for f in since {
                let item = Finish { upgrade: f.upgrade, outcome: f.outcome, code: f.code.clone() };
                if f.version != expected || reply.codes.push(item).is_err() {
                    reply.status = ClientStatus::TooOld;
                    break;
                }
                expected = expected.saturating_add(1);
            }
            if expected != self.shared.version.saturating_add(1) {
                reply.status = ClientStatus::TooOld;
            }
            if reply.status == ClientStatus::TooOld {
                reply.codes.clear();
            }
        }
        step.deadline = self.deadline();
        (step, reply)
    }

    /// Figure 2: the codes to piggyback on the next request or response to
    /// `to` (taken: the next call returns only newer ones). Deterministic.
    pub fn take_attachment(&mut self, to: GroupId) -> Attachment {
        match self.neighbor_slot(to).and_then(|i| self.shared.outbox.get_mut(i)) {
            Some(out) => core::mem::take(out),
            None => Attachment::new(),
        }
    }

    /// A message from another party: a neighbor replica's answer
    /// acknowledging proactive diffusion, a guardian's share
    /// (`GuardianShare`), or a guardian asking for the piece
    /// (`GuardianNeedsPiece`, answered with a `ForwardPiece` effect).
    /// Anything else is an `Unsolicited` fault.
    pub fn handle_message(&mut self, now: Instant, from: Peer, message: &Message) -> Step<GroupEffect> {
        let mut step = Step::new();
        match (from, message) {
            (Peer::Replica { group, index }, Message::Answer(a)) if a.group == group && a.replica == index => {
                let acked = matches!(a.reply, Reply::Finished(..) | Reply::Unknown);
                let slot = self.neighbor_slot(group);
                let ours = self.shared.finished.iter().any(|f| f.upgrade == a.upgrade);
                match (acked, slot, self.diffusing.iter_mut().find(|d| d.upgrade == a.upgrade)) {
                    (true, Some(slot), Some(d)) => {
                        if let (Some(bits), Some(bit)) = (d.acks.get_mut(slot), 1u64.checked_shl(u32::from(index))) {
                            *bits |= bit;
                        }
                    }
                    // A late or repeated acknowledgement from a neighbor,
                    // after the diffusion retired: the network's doing.
                    (true, Some(_), None) if ours => {}
                    _ => step.fault(from, Some(a.upgrade), FaultKind::Unsolicited),
                }
                self.retire_diffusions();
            }
            (Peer::Guardian(_), Message::GuardianShare { upgrade, group, kind, share }) if *group == self.group() => {
                self.guardian_share(&mut step, from, *upgrade, *kind, share);
            }
            (Peer::Guardian(id), Message::GuardianNeedsPiece { upgrade, group }) if *group == self.group() => {
                if self.shared.held.iter().any(|h| h.upgrade == *upgrade && h.guarded.is_some()) {
                    step.emit_effect(GroupEffect::ForwardPiece { upgrade: *upgrade, guardian: Some(id) });
                }
            }
            _ => step.fault(from, None, FaultKind::Unsolicited),
        }
        let _ = now;
        step.deadline = self.deadline();
        step
    }

    /// Proactive diffusion: resend `CommitInstall`/`AbortInstall` to the
    /// neighbors that have not acknowledged, with doubling intervals.
    ///
    /// At most one step's worth of messages goes out per call; if more are
    /// due, the returned deadline is `now` again.
    pub fn handle_timeout(&mut self, now: Instant) -> Step<GroupEffect> {
        let mut step = Step::new();
        self.tell_guardians(&mut step);
        self.refetch(now, &mut step);
        let cap = self.config.retry_ms.saturating_mul(16);
        let neighbors = &self.config.neighbors;
        'outer: for d in self.diffusing.iter_mut().filter(|d| d.deadline <= now) {
            let pending = neighbors.iter().zip(d.acks.iter()).filter(|(n, acks)| !acked(n, **acks));
            let mut sent_all = true;
            for (n, _) in pending {
                let op = Finish::new(d.upgrade, d.outcome, d.code.clone());
                if step.send(Peer::Group(n.group), Message::Submit(op)).is_err() {
                    sent_all = false;
                    break;
                }
            }
            if !sent_all {
                // Step full: the rest of this diffusion goes on the next call.
                break 'outer;
            }
            d.deadline = now.after(d.interval);
            d.interval = d.interval.saturating_mul(2).min(cap);
        }
        step.deadline = self.deadline();
        step
    }

    // ----- Figure 3: PrepareInstall -----

    fn prepare(
        &mut self,
        step: &mut Step<GroupEffect>,
        origin: Peer,
        piece: &Piece,
        crypto: &mut impl PieceCrypto,
        validate: impl FnOnce(&PieceHeader) -> Verdict,
    ) -> Reply {
        let h = &piece.header;
        // Before any lookup by upgrade id: the id must name the piece's
        // signer, so no deployer answers for another's upgrade.
        if h.upgrade.deployer() != h.deployer && !self.planted(Planted::SquattableIds) {
            step.fault(origin, Some(h.upgrade), FaultKind::ForgedPiece);
            return Reply::Refused(Refusal::ForeignUpgradeId);
        }
        // Rule 1: the outcome is known: answer with the code itself.
        if let Some(f) = self.shared.finished.iter().find(|f| f.upgrade == h.upgrade) {
            return Reply::Finished(f.outcome, f.code.clone());
        }
        // Rule 2: a piece we hold answers as before (idempotence); a
        // withheld one is re-examined by rule 4.
        if let Some(i) = self.shared.held.iter().position(|x| x.upgrade == h.upgrade) {
            // A change of membership is staged from the piece at hand when
            // it is released: it must be the change the group holds.
            let same = self.shared.held.get(i).is_some_and(|x| x.next == h.next.as_ref().map(NextMembership::digest));
            if !same {
                step.fault(origin, Some(h.upgrade), FaultKind::ForgedPiece);
            }
            return self.rule4_or_repeat(i, h.next.as_ref().filter(|_| same));
        }
        // A new piece: authentic, for us, and next in its deployer's chain?
        let (slot, stale) = match self.admit(piece, crypto) {
            Ok(admitted) => admitted,
            Err(refusal) => {
                if matches!(refusal, Refusal::BadSignature | Refusal::UnknownDeployer) {
                    step.fault(origin, Some(h.upgrade), FaultKind::ForgedPiece);
                }
                if refusal == Refusal::Unsequenced {
                    step.fault(Peer::Deployer(h.deployer), Some(h.upgrade), FaultKind::Unsequenced);
                }
                return Reply::Refused(refusal);
            }
        };
        if self.shared.held.is_full() {
            return Reply::Refused(Refusal::Busy);
        }
        let secrets = self.open_own(step, piece, crypto, !stale);
        let guarded = match &h.custody {
            Custody::Replicas => None,
            Custody::Guardians { f, guardians } => {
                let mut list = Vec::new();
                for g in guardians {
                    let _ = list.push((g.guardian, g.secret_share, g.cancel_share));
                }
                Some(Guarded { f: *f, guardians: list })
            }
        };
        let deployer = self.config.deployers.get(slot).map(|d| d.id).unwrap_or(h.deployer);
        let record = HeldRecord {
            upgrade: h.upgrade,
            deployer,
            order: h.order_key(),
            trigger_digest: h.trigger_digest,
            cancel_digest: h.cancel_digest,
            resources: h.resources.clone(),
            payload: h.payload,
            status: Status::Withheld,
            guarded,
            next: h.next.as_ref().map(NextMembership::digest),
        };
        let mut new = Held { record, secrets };
        // Built for the membership before the last change: it can never
        // commit here (its s_g shares belong to replicas that may have
        // left); into C, so that its upgrade aborts.
        if stale {
            new.status = Status::Cancelled;
            return self.insert(new, None);
        }
        // The application's own reason to reject: into C, release c.
        if validate(h) == Verdict::Reject {
            new.status = Status::Cancelled;
            return self.insert(new, None);
        }
        // Rule 3: a conflicting piece ordered before d: reject d at once.
        let earlier = self.shared.held.iter().any(|x| x.in_a() && x.conflicts(&new) && x.order < new.order);
        if earlier {
            new.status = Status::Cancelled;
            return self.insert(new, None);
        }
        // Rule 3, otherwise: d joins A withheld, and every withheld piece of
        // X(d) (all ordered after d, none released) is cancelled.
        for x in self.shared.held.iter_mut() {
            if x.status == Status::Withheld && x.conflicts(&new) {
                x.status = Status::Cancelled;
            }
        }
        if self.shared.held.push(new).is_err() {
            return Reply::Refused(Refusal::Busy);
        }
        let i = self.shared.held.len().saturating_sub(1);
        self.rule4_or_repeat(i, h.next.as_ref())
    }

    /// This replica's secrets of `piece`: its box opened (a bad box is the
    /// deployer's fault, reported if `blame`, and leaves `None`; a replica
    /// that left opens nothing). A piece built for an earlier membership
    /// has no box for a replica that joined since: no blame then.
    fn open_own(
        &self,
        step: &mut Step<GroupEffect>,
        piece: &Piece,
        crypto: &mut impl PieceCrypto,
        blame: bool,
    ) -> Option<Secrets> {
        if !self.is_member() {
            return None;
        }
        let h = &piece.header;
        let index = usize::from(self.me);
        let opened = match &h.custody {
            Custody::Replicas => crypto.open(piece, index).map(|o| Secrets::Shares {
                key: o.key.clone(),
                secret_share: o.secret_share.clone(),
                cancel_share: o.cancel_share.clone(),
            }),
            Custody::Guardians { .. } => {
                crypto.open_token(piece, index).map(|(key, token)| Secrets::Guarded { key, token, fetch: None })
            }
        };
        match opened {
            Ok(s) => Some(s),
            Err(_) => {
                if blame {
                    step.fault(Peer::Deployer(h.deployer), Some(h.upgrade), FaultKind::BadBox);
                }
                None
            }
        }
    }

    /// Checks a new piece: group, signer, signature, membership, version
    /// chain. Returns the deployer's slot in the configuration, and whether
    /// the piece was built for the previous membership (`stale`).
    fn admit(&self, piece: &Piece, crypto: &mut impl PieceCrypto) -> Result<(usize, bool), Refusal> {
        let h = &piece.header;
        if h.group != self.group() {
            return Err(Refusal::WrongGroup);
        }
        let slot = self.config.deployers.iter().position(|d| d.id == h.deployer).ok_or(Refusal::UnknownDeployer)?;
        let signer = self.config.deployers.get(slot).ok_or(Refusal::UnknownDeployer)?;
        if !crypto.verify(piece, &signer.key) {
            return Err(Refusal::BadSignature);
        }
        if let Some(sequencer) = &self.config.sequencer {
            let digest = crate::crypto::sequence_digest(h.upgrade, h.order_seq);
            if h.sequence.is_none_or(|s| s.verify(sequencer, &digest).is_err()) {
                return Err(Refusal::Unsequenced);
            }
        }
        let m = &self.config.membership;
        let stale = self.shared.previous.is_some_and(|p| {
            p.members == h.members
                && p.f == h.f
                && usize::from(p.n) == h.replicas.len()
                && h.custody == Custody::Replicas
        });
        let current = h.members == self.members && h.f == m.f && h.replicas.len() == m.n();
        if !current && !stale {
            return Err(Refusal::WrongMembership);
        }
        let custody_matches = match (&h.custody, &self.config.guardians) {
            (Custody::Replicas, None) => true,
            (Custody::Guardians { f, guardians }, Some(ids)) => {
                *f == ids.f
                    && guardians.len() == ids.ids.len()
                    && guardians.iter().zip(ids.ids.iter()).all(|(g, id)| g.guardian == *id)
            }
            _ => false,
        };
        if !custody_matches && !stale {
            return Err(Refusal::WrongMembership);
        }
        if let Some(next) = h.next.as_ref().filter(|_| !stale) {
            if !next.follows(m) || !h.resources.contains(&ResourceId::MEMBERSHIP) {
                return Err(Refusal::BadMembership);
            }
        }
        // Section 4.4: the previous version code must be the current one.
        if self.shared.chains.get(slot) == Some(&h.prev_version) || self.planted(Planted::SkipVersionCheck) {
            return Ok((slot, stale));
        }
        let ours = |f: &&Finished| f.deployer == h.deployer;
        if h.prev_version == signer.genesis
            || self.shared.finished.iter().filter(ours).any(|f| f.code == h.prev_version)
        {
            return Err(Refusal::Replayed);
        }
        let other_chain = self.shared.chains.iter().enumerate().any(|(i, c)| i != slot && *c == h.prev_version)
            || self.config.deployers.iter().any(|d| d.id != h.deployer && d.genesis == h.prev_version)
            || self.shared.finished.iter().any(|f| f.deployer != h.deployer && f.code == h.prev_version);
        if other_chain {
            return Err(Refusal::WrongChain);
        }
        Err(Refusal::OutOfOrder)
    }

    fn insert(&mut self, new: Held, next: Option<&NextMembership>) -> Reply {
        if self.shared.held.push(new).is_err() {
            return Reply::Refused(Refusal::Busy);
        }
        self.rule4_or_repeat(self.shared.held.len().saturating_sub(1), next)
    }

    /// Rule 2 (repeat the released share) and rule 4 (a withheld piece is
    /// released once no piece of `X(d)` is released). `next` is the
    /// piece's change of membership, staged as it is released (a held
    /// change without it stays withheld).
    fn rule4_or_repeat(&mut self, i: usize, next: Option<&NextMembership>) -> Reply {
        let Some(d) = self.shared.held.get(i) else {
            return Reply::Refused(Refusal::Busy);
        };
        if d.status == Status::Withheld {
            let blocked = self.shared.held.iter().any(|x| x.status == Status::Released && x.conflicts(d))
                && !self.planted(Planted::NoPostponement);
            if blocked {
                return Reply::Conflict;
            }
            if d.next.is_some() {
                let Some(next) = next else { return Reply::Conflict };
                self.shared.staged = Some((d.upgrade, next.clone()));
            }
            if let Some(d) = self.shared.held.get_mut(i) {
                d.status = Status::Released;
            }
        }
        let Some(d) = self.shared.held.get(i) else {
            return Reply::Refused(Refusal::Busy);
        };
        let kind = if d.status == Status::Cancelled { ShareKind::Cancel } else { ShareKind::Secret };
        match &d.secrets {
            None => Reply::NoShare,
            Some(Secrets::Shares { cancel_share, .. }) if kind == ShareKind::Cancel => {
                Reply::Rejected(cancel_share.clone())
            }
            Some(Secrets::Shares { secret_share, .. }) => Reply::Accepted(secret_share.clone()),
            // Guardian custody: the code itself once fetched, else the
            // caller starts (or continues) the fetch.
            Some(Secrets::Guarded { fetch: Some(Fetch { kind: k, code: Some(code), .. }), .. }) if *k == kind => {
                Reply::Code(kind, code.clone())
            }
            Some(Secrets::Guarded { .. }) => Reply::Pending,
        }
    }

    /// Guardian custody: after a decision, ask the guardians for the
    /// decided kind (once; retries come from `handle_timeout`).
    fn fetch(&mut self, now: Instant, step: &mut Step<GroupEffect>, upgrade: UpgradeId) {
        let (me, duty, retry) = (self.me, self.on_duty(), self.config.retry_ms);
        let group = self.group();
        let Some(d) = self.shared.held.iter_mut().find(|h| h.upgrade == upgrade) else { return };
        let kind = match d.status {
            Status::Released => ShareKind::Secret,
            Status::Cancelled => ShareKind::Cancel,
            Status::Withheld => return,
        };
        let (Some(g), Some(Secrets::Guarded { token, fetch, .. })) = (&d.record.guarded, &mut d.secrets) else {
            return;
        };
        if fetch.is_some() {
            return;
        }
        *fetch = Some(Fetch { kind, shares: Vec::new(), code: None, deadline: now.after(retry), interval: retry });
        // The first f + 1 replicas hand the piece to the guardians: one of
        // them is correct. A prepare's step holds nothing else but its
        // answer: MAX_GUARDIANS requests and the answer fit
        // MAX_STEP_MESSAGES (MAX_SHARES + 1 or more).
        if duty {
            step.emit_effect(GroupEffect::ForwardPiece { upgrade, guardian: None });
        }
        for (id, _, _) in &g.guardians {
            let request = Message::GuardianRequest { upgrade, group, replica: me, kind, token: token.clone() };
            step.emit(Peer::Guardian(*id), request);
        }
    }

    /// Guardian custody: ask again the guardians whose shares are missing.
    fn refetch(&mut self, now: Instant, step: &mut Step<GroupEffect>) {
        let (me, group, cap) = (self.me, self.group(), self.config.retry_ms.saturating_mul(16));
        for d in self.shared.held.iter_mut() {
            let upgrade = d.upgrade;
            let (Some(g), Some(Secrets::Guarded { token, fetch: Some(fetch), .. })) =
                (&d.record.guarded, &mut d.secrets)
            else {
                continue;
            };
            if fetch.code.is_some() || fetch.deadline > now {
                continue;
            }
            for (i, (id, _, _)) in g.guardians.iter().enumerate() {
                let answered = fetch.shares.iter().any(|s| usize::from(s.index()) == i.saturating_add(1));
                let kind = fetch.kind;
                let request = Message::GuardianRequest { upgrade, group, replica: me, kind, token: token.clone() };
                if !answered && step.send(Peer::Guardian(*id), request).is_err() {
                    return;
                }
            }
            fetch.deadline = now.after(fetch.interval);
            fetch.interval = fetch.interval.saturating_mul(2).min(cap);
        }
    }

    /// Guardian custody: a guardian's share; at the threshold of valid ones
    /// ([`guardian_threshold`](crate::wire::guardian_threshold)) the
    /// code is rebuilt (and a `c` checked against `D(c)`).
    fn guardian_share(
        &mut self,
        step: &mut Step<GroupEffect>,
        from: Peer,
        upgrade: UpgradeId,
        kind: ShareKind,
        share: &Share,
    ) {
        let group = self.group();
        let Some(d) = self.shared.held.iter_mut().find(|h| h.upgrade == upgrade) else { return };
        let binding = Binding::group(upgrade, group).at(GUARDIAN_INDEX_BASE);
        let (trigger_digest, cancel_digest) = (d.trigger_digest, d.cancel_digest);
        let (Some(g), Some(Secrets::Guarded { fetch: Some(fetch), .. })) = (&d.record.guarded, &mut d.secrets) else {
            return;
        };
        if fetch.kind != kind || fetch.code.is_some() {
            return;
        }
        let index = usize::from(share.index());
        let entry = index.checked_sub(1).and_then(|i| g.guardians.get(i));
        let valid = entry.is_some_and(|(id, s, c)| {
            let expected = if kind == ShareKind::Secret { s } else { c };
            from == Peer::Guardian(*id) && share.digest(kind, &binding) == *expected
        });
        if !valid {
            step.fault(from, Some(upgrade), FaultKind::ForgedShare);
            return;
        }
        if fetch.shares.iter().any(|x| x.index() == share.index()) {
            return;
        }
        // One share per guardian of the piece: at most MAX_GUARDIANS.
        if fetch.shares.push(share.clone()).is_err() {
            return;
        }
        let k = crate::wire::guardian_threshold(g.guardians.len(), g.f);
        if fetch.shares.len() < k {
            return;
        }
        let Ok(secret) = reconstruct(fetch.shares.get(..k).unwrap_or(&[])) else { return };
        let code = Code::from_bytes(secret.to_repr().into());
        if kind == ShareKind::Cancel && Outcome::Aborted.check(upgrade, &code, &trigger_digest, &cancel_digest).is_err()
        {
            return;
        }
        fetch.code = Some(code);
    }

    // ----- Figure 3: CommitInstall / AbortInstall -----

    fn finish_op(
        &mut self,
        now: Instant,
        step: &mut Step<GroupEffect>,
        origin: Peer,
        upgrade: UpgradeId,
        outcome: Outcome,
        code: &Code,
    ) -> Reply {
        if let Some(f) = self.shared.finished.iter().find(|f| f.upgrade == upgrade) {
            return Reply::Finished(f.outcome, f.code.clone());
        }
        let Some(d) = self.shared.held.iter().find(|h| h.upgrade == upgrade) else {
            // A code for a piece we do not hold is ignored (section 4.3).
            return Reply::Unknown;
        };
        let skip = outcome == Outcome::Committed && self.planted(Planted::SkipTriggerCheck);
        if !d.check(outcome, code) && !skip {
            step.fault(origin, Some(upgrade), FaultKind::WrongCode);
            return Reply::Unknown;
        }
        self.finish(now, step, upgrade, outcome, code);
        match self.shared.finished.iter().find(|f| f.upgrade == upgrade) {
            Some(f) => Reply::Finished(f.outcome, f.code.clone()),
            None => Reply::Unknown,
        }
    }

    /// Commits or aborts a held piece whose code checked out.
    fn finish(
        &mut self,
        now: Instant,
        step: &mut Step<GroupEffect>,
        upgrade: UpgradeId,
        outcome: Outcome,
        code: &Code,
    ) {
        let Some(i) = self.shared.held.iter().position(|h| h.upgrade == upgrade) else {
            return;
        };
        // Only a released piece commits: τ needs this group's s_g, which it
        // released only for that piece. A piece whose c shares went out (or
        // that is withheld) never commits here, whatever code arrives.
        if outcome == Outcome::Committed && self.shared.held.get(i).is_some_and(|d| d.status != Status::Released) {
            return;
        }
        let d = self.shared.held.swap_remove(i);
        let staged = match &self.shared.staged {
            Some((u, _)) if *u == upgrade => self.shared.staged.take().map(|(_, next)| next),
            _ => None,
        };
        if outcome == Outcome::Committed {
            // CommitInstall: every piece of X(d) moves to C.
            for x in self.shared.held.iter_mut() {
                if x.conflicts(&d) {
                    x.status = Status::Cancelled;
                }
            }
            self.shared.version = self.shared.version.saturating_add(1);
            if self.planted(Planted::DivergentVersion) && usize::from(self.me) + 1 == self.config.membership.n() {
                self.shared.version = self.shared.version.saturating_add(1);
            }
            let reconfigured = staged.is_some();
            let ignores =
                self.planted(Planted::MembershipIgnored) && usize::from(self.me) + 1 == self.config.membership.n();
            if let Some(next) = staged.filter(|_| !ignores) {
                self.reconfigure(next);
            }
            // One effect a finish, at most MAX_ATTACHED finishes a step.
            step.emit_effect(GroupEffect::Apply {
                upgrade,
                key: d.secrets.as_ref().map(|s| s.key().clone()),
                payload: d.payload,
                reconfigured,
            });
        } else {
            step.emit_effect(GroupEffect::Discard { upgrade });
        }
        if let Some(slot) = self.config.deployers.iter().position(|x| x.id == d.deployer) {
            if let Some(chain) = self.shared.chains.get_mut(slot) {
                *chain = code.clone();
            }
        }
        if self.shared.finished.is_full() {
            let _ = self.shared.finished.pop_front();
        }
        let _ = self.shared.finished.push_back(Finished {
            upgrade,
            deployer: d.deployer,
            outcome,
            code: code.clone(),
            version: self.shared.version,
        });
        // Section 5: tell the guardians, which forward to the other groups
        // they guard (the first f + 1 replicas, so one is correct).
        if let Some(g) = &d.guarded {
            if self.on_duty() {
                let all = u64::MAX.checked_shr(64u32.saturating_sub(g.guardians.len() as u32)).unwrap_or(0);
                let tell = Tell { diffused: Finish { upgrade, outcome, code: code.clone() }, pending: all };
                if self.telling.is_full() {
                    // Only a host that lets TELLING outcomes go untold,
                    // never calling `handle_timeout` when due, gets here;
                    // the installer still finishes every group.
                    self.telling.remove(0);
                    step.lost = step.lost.saturating_add(1);
                }
                if self.telling.push(tell).is_err() {
                    step.lost = step.lost.saturating_add(1);
                }
                self.tell_guardians(step);
            }
        }
        self.diffuse(now, upgrade, outcome, code);
    }

    /// A membership upgrade committed: the membership and guardians switch.
    /// A replica that left drops its secrets and duties.
    fn reconfigure(&mut self, next: NextMembership) {
        let m = &self.config.membership;
        self.shared.previous = u8::try_from(m.n()).ok().map(|n| Previous { members: self.members, f: m.f, n });
        self.config.membership = next.membership;
        self.config.guardians = next.guardians;
        self.members = self.config.membership.digest();
        if !self.is_member() {
            for h in self.shared.held.iter_mut() {
                h.secrets = None;
            }
            self.diffusing.clear();
            self.telling.clear();
        }
    }

    /// Sends `Learned` to each guardian not yet told, as far as the step
    /// has room, always leaving one message of room for the answer the
    /// step may still owe an operation's origin; the rest stays due (see
    /// `deadline`).
    fn tell_guardians(&mut self, step: &mut Step<GroupEffect>) {
        let (group, ids) = (self.group(), self.config.guardians.as_ref().map_or(&[][..], |g| g.ids.as_slice()));
        'tells: for t in self.telling.iter_mut() {
            for (i, id) in ids.iter().enumerate().take(64) {
                let bit = 1u64 << i;
                if t.pending & bit == 0 {
                    continue;
                }
                if step.room() <= 1 {
                    break 'tells;
                }
                let msg = Message::Learned { group, diffused: t.diffused.clone() };
                if step.send(Peer::Guardian(*id), msg).is_err() {
                    break 'tells;
                }
                t.pending &= !bit;
            }
        }
        self.telling.retain(|t| t.pending != 0);
    }

    /// Queues the code for every neighbor (Figure 2's `T_g'`; a finish
    /// learned from a neighbor's codes drops the echo to that neighbor
    /// afterwards) and, on the first `f + 1` replicas, starts proactive
    /// diffusion.
    fn diffuse(&mut self, now: Instant, upgrade: UpgradeId, outcome: Outcome, code: &Code) {
        let item = Finish { upgrade, outcome, code: code.clone() };
        for out in self.shared.outbox.iter_mut() {
            if out.iter().any(|x| x.upgrade == upgrade) {
                continue;
            }
            if out.is_full() {
                // Proactive diffusion still carries what falls out here.
                out.remove(0);
            }
            let _ = out.push(item.clone());
        }
        if !self.config.proactive || !self.on_duty() || self.config.neighbors.is_empty() {
            return;
        }
        if self.diffusing.is_full() {
            // The oldest diffusion has had its tries; piggybacking goes on.
            self.diffusing.remove(0);
        }
        let mut acks = Vec::new();
        // One slot per neighbor: the configuration holds at most
        // MAX_NEIGHBORS, so this cannot fail.
        let _ = acks.resize(self.config.neighbors.len(), 0);
        let _ = self.diffusing.push(Diffusion {
            upgrade,
            outcome,
            code: code.clone(),
            acks,
            deadline: now,
            interval: self.config.retry_ms,
        });
    }

    fn retire_diffusions(&mut self) {
        let neighbors = &self.config.neighbors;
        self.diffusing.retain(|d| neighbors.iter().zip(d.acks.iter()).any(|(n, a)| !acked(n, *a)));
    }

    /// Figure 2's `R_new`: codes for pieces held in `A` and not finished.
    fn learn(&mut self, now: Instant, step: &mut Step<GroupEffect>, from: Option<GroupId>, codes: &Attachment) {
        for c in codes.iter().take(MAX_ATTACHED) {
            let fresh = self.shared.held.iter().any(|h| h.upgrade == c.upgrade && h.check(c.outcome, &c.code));
            if fresh {
                self.finish(now, step, c.upgrade, c.outcome, &c.code);
                // Figure 2 forwards R_new to every neighbor but the sender;
                // `finish` queued it for all, so drop the echo to `from`.
                if let Some(out) = from.and_then(|g| self.neighbor_slot(g)).and_then(|i| self.shared.outbox.get_mut(i))
                {
                    out.retain(|x| x.upgrade != c.upgrade);
                }
            }
        }
    }

    fn neighbor_slot(&self, group: GroupId) -> Option<usize> {
        self.config.neighbors.iter().position(|n| n.group == group)
    }

    fn answer(&self, step: &mut Step<GroupEffect>, origin: Peer, upgrade: UpgradeId, reply: Reply) {
        // A guardian submits only outcomes it forwards (section 5) and
        // waits for no answer.
        if matches!(origin, Peer::Guardian(_)) {
            return;
        }
        let answer = Answer { upgrade, group: self.group(), replica: self.me, reply };
        // `tell_guardians` leaves this message its room.
        step.emit(origin, Message::Answer(answer));
    }
}

/// Whether `f + 1` distinct replicas of neighbor `n` acknowledged.
fn acked(n: &Neighbor, acks: u64) -> bool {
    acks.count_ones() > u32::from(n.f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::ReplicaSecretKey;
    use crate::step::MAX_STEP_MESSAGES;
    use chacha20::ChaCha20Rng;
    use rand_core::SeedableRng;

    /// A replica of a 4-replica group with 16 guardians (`F = 5`).
    fn guarded_replica() -> GroupReplica {
        let mut rng = ChaCha20Rng::from_seed([3; 32]);
        let keys: heapless::Vec<PublicKey, 4> =
            (0..4).map(|_| ReplicaSecretKey::random(&mut rng).public_key()).collect();
        let config = GroupConfig {
            membership: Membership::new(GroupId(1), &keys).unwrap(),
            deployers: Vec::new(),
            neighbors: Vec::new(),
            retry_ms: 10,
            proactive: false,
            guardians: Some(GuardianIds { f: 5, ids: (100..116).collect() }),
            sequencer: None,
        };
        GroupReplica::new(config, 0).unwrap()
    }

    /// Outcomes that do not fit one step reach every guardian on the
    /// following `handle_timeout` calls, which `deadline` makes due.
    #[test]
    fn untold_guardians_are_told_later() {
        let mut r = guarded_replica();
        let n = MAX_STEP_MESSAGES / 16 + 1;
        let mut step = Step::new();
        for u in 0..n {
            let diffused =
                Finish { upgrade: UpgradeId([u as u8; 16]), outcome: Outcome::Committed, code: Code([7; 32]) };
            // The first outcome's first guardian was told already: the
            // tells then split an outcome across the two steps.
            let pending = if u == 0 { 0xFFFE } else { 0xFFFF };
            assert!(r.telling.push(Tell { diffused, pending }).is_ok());
        }
        r.tell_guardians(&mut step);
        // One message of room stays free for an answer.
        assert_eq!(step.messages.len(), MAX_STEP_MESSAGES - 1);
        assert_eq!(r.deadline(), Some(Instant(0)));
        let mut told: std::vec::Vec<(UpgradeId, Peer)> = step
            .messages
            .iter()
            .filter_map(|m| match &m.message {
                Message::Learned { diffused, .. } => Some((diffused.upgrade, m.to)),
                _ => None,
            })
            .collect();
        let later = r.handle_timeout(Instant(5));
        told.extend(later.messages.iter().filter_map(|m| match &m.message {
            Message::Learned { diffused, .. } => Some((diffused.upgrade, m.to)),
            _ => None,
        }));
        told.sort_by_key(|(u, p)| (u.0, std::format!("{p:?}")));
        let all = told.len();
        told.dedup();
        assert_eq!(told.len(), n * 16 - 1, "every guardian told of every outcome it had not heard");
        assert_eq!(all, told.len(), "no guardian told of one outcome twice");
        assert!(!told.contains(&(UpgradeId([0; 16]), Peer::Guardian(100))), "a told guardian told again");
        assert_eq!(later.deadline, None);
        assert_eq!(r.deadline(), None);
    }
}
