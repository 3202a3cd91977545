//! The deployer: builds an upgrade's codes and its signed pieces.
//!
//! The deployer is trusted for its own upgrades ([codes](crate::protocol#codes)). It
//! draws a fresh cancellation code `c` and, per group, a group secret `s_g`
//! and a payload key `k_g`; the trigger code is `τ = ⊕ s_g`. Every piece
//! carries `D(τ)` and `D(c)`, the group's shares of `s_g` and `c` (threshold
//! `f + 1`) with their digests, and `k_g`, all sealed per replica.
//!
//! The per-group secrets are derived from one master seed drawn from the
//! host's CSPRNG (ChaCha20 keyed by the seed, one stream per group id), so a
//! plan for 10,000 groups needs no per-group memory and a piece rebuilt for
//! the same group carries the same secrets and shares. `c` and each piece's
//! ephemeral sealing key come from the same seed, and signatures are
//! deterministic (RFC 6979), so a plan is saved as a small [`SavedPlan`] and a
//! deployer restarted from it rebuilds every piece
//! byte-identically, advances its [`VersionChain`] or aborts
//! ([`UpgradePlan::abort`]).
//!
//! ```
//! use bft_upgrade::crypto::{Binding, Code, DeployerKey, PayloadSealer, ReplicaSecretKey, CHUNK_TAG_LEN};
//! use bft_upgrade::deployer::{Deployer, GroupTarget, UpgradePlan};
//! use bft_upgrade::rand_core::SeedableRng;
//! use bft_upgrade::wire::{DeployerId, GroupId, Membership, Operation, ResourceId};
//!
//! let mut rng = chacha20::ChaCha20Rng::from_seed([1; 32]);
//! let deployer = Deployer::new(DeployerId(1), DeployerKey::random(&mut rng));
//! let keys: Vec<_> = (0..4).map(|_| ReplicaSecretKey::random(&mut rng).public_key()).collect();
//! let membership = Membership::new(GroupId(1), &keys).unwrap();
//!
//! // τ and c for one group; the upgrade id names the deployer.
//! let groups = [GroupId(1)];
//! let plan = UpgradePlan::new(&mut rng, deployer.id(), 1, &groups).unwrap();
//! assert_eq!(plan.header().upgrade.deployer(), DeployerId(1));
//!
//! // The group's payload, sealed under k_g (one short chunk here).
//! let key = plan.group_key(GroupId(1)).unwrap();
//! let binding = Binding::group(plan.header().upgrade, GroupId(1));
//! let mut sealer = PayloadSealer::new(&key, &binding, 64).unwrap();
//! let mut buf = [0u8; 64 + CHUNK_TAG_LEN];
//! buf[..5].copy_from_slice(b"v2.0!");
//! let ciphertext = sealer.seal_chunk(&mut buf, 5, true).unwrap().to_vec();
//! let payload = sealer.finish().unwrap();
//! assert_eq!(payload.ciphertext_len, ciphertext.len() as u64);
//!
//! // The signed piece Δ_g, built on the group's current version code.
//! let genesis = Code::from_bytes([0; 32]);
//! let target = GroupTarget {
//!     membership: &membership,
//!     resources: &[ResourceId(1)],
//!     prev_version: &genesis,
//!     guardians: None,
//!     payload,
//!     next: None,
//! };
//! let piece = plan.piece(&deployer, &target).unwrap();
//! assert_eq!(piece.header.group, GroupId(1));
//!
//! // Saved (secret!) and restored after a restart: the same piece, and the
//! // operation that aborts the upgrade.
//! let saved = plan.saved();
//! let restored = UpgradePlan::restore(&saved, &groups).unwrap();
//! assert_eq!(restored.piece(&deployer, &target).unwrap(), piece);
//! assert_eq!(restored.abort(), Operation::abort_install(plan.header().upgrade, plan.cancel_code().clone()));
//! ```

use chacha20::ChaCha20Rng;
use heapless::Vec;
use p256::elliptic_curve::Generate;
use p256::Scalar;
use rand_core::{CryptoRng, Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::crypto::{
    self, BoxContents, BoxSealer, Code, DeployerKey, Digest, Domain, GroupKey, PayloadRef, PublicKey, ShareKind,
    Signature,
};
use crate::error::{CapacityError, MisuseError};
use crate::wire::{
    Custody, DeployerId, GroupId, GuardianEntry, GuardianSet, Membership, NextMembership, Operation, OrderKey, Outcome,
    Piece, PieceHeader, ReplicaEntry, ResourceId, Retirement, Token, UpgradeHeader, UpgradeId, MAX_RESOURCES,
};

/// The master seed's stream for `c`: above every group's stream (group ids
/// are 32-bit).
const CANCEL_STREAM: u64 = 1 << 32;

/// A deployer: its identifier in the groups' configurations and its key.
pub struct Deployer {
    id: DeployerId,
    key: DeployerKey,
}

impl Deployer {
    /// A deployer with identifier `id` signing with `key`.
    pub fn new(id: DeployerId, key: DeployerKey) -> Self {
        Self { id, key }
    }

    /// The deployer's identifier.
    pub fn id(&self) -> DeployerId {
        self.id
    }

    /// The public key groups must authorize for [`id`](Self::id).
    pub fn public_key(&self) -> PublicKey {
        self.key.public_key()
    }

    /// Its word that its `upgrade` finished at every group it covers, for
    /// the guardians to forget it ([`Retirement`]). Give it only once the
    /// upgrade's installer is `Done` (or every group's outcome is known
    /// otherwise): a guardian that forgets an upgrade some group has not
    /// finished could later release the other kind for it.
    ///
    /// # Errors
    /// [`MisuseError::BadArgument`] for another deployer's upgrade;
    /// [`MisuseError::Crypto`] if signing fails.
    pub fn retirement(&self, upgrade: UpgradeId) -> Result<Retirement, MisuseError> {
        if upgrade.deployer() != self.id {
            return Err(MisuseError::BadArgument);
        }
        let signature = self.key.sign(&crypto::retirement_digest(upgrade))?;
        Ok(Retirement { upgrade, signature })
    }
}

/// What the deployer needs to know of one group to build its piece.
#[derive(Clone, Debug)]
pub struct GroupTarget<'a> {
    /// The group's membership (id, `f`, replica keys).
    pub membership: &'a Membership,
    /// The resources the piece changes.
    pub resources: &'a [ResourceId],
    /// This deployer's current version code at the group (section 4.4).
    pub prev_version: &'a Code,
    /// The group's guardians, for guardian custody (section 7); `None`
    /// gives the shares to the replicas.
    pub guardians: Option<&'a GuardianSet>,
    /// The group's sealed payload, from a [`PayloadSealer`](crate::crypto::PayloadSealer)
    /// keyed with [`UpgradePlan::group_key`].
    pub payload: PayloadRef,
    /// The membership the upgrade switches the group to, if it changes it
    /// (the piece then also lists [`ResourceId::MEMBERSHIP`]).
    pub next: Option<&'a NextMembership>,
}

impl<'a> GroupTarget<'a> {
    /// The group's membership once the upgrade has `outcome` there: the
    /// one later pieces must be built for.
    pub fn membership_after(&self, outcome: Outcome) -> &'a Membership {
        match (outcome, self.next) {
            (Outcome::Committed, Some(next)) => &next.membership,
            _ => self.membership,
        }
    }
}

/// One upgrade `Δ` over a fixed, ordered set of groups: its codes and the
/// means to build each group's piece.
///
/// It borrows its group list (a plan for 10,000 groups holds no per-group
/// memory); to survive a restart, store [`saved`](Self::saved) and the group
/// list, and [`restore`](Self::restore) from them.
pub struct UpgradePlan<'g> {
    header: UpgradeHeader,
    deployer: DeployerId,
    groups: &'g [GroupId],
    master: Zeroizing<[u8; 32]>,
    trigger: Code,
    cancel: Zeroizing<Scalar>,
    cancel_code: Code,
    sequence: Option<Signature>,
}

/// The per-group secrets, drawn in a fixed order from the group's stream.
struct GroupSecrets {
    secret: Zeroizing<Scalar>,
    key: GroupKey,
    rng: ChaCha20Rng,
}

impl<'g> UpgradePlan<'g> {
    /// Draws the upgrade id (naming `deployer`, the only one that can sign
    /// its pieces), the master seed and `c`, and computes `τ` over
    /// `groups`, which must be strictly increasing (no group twice: a group
    /// listed twice would cancel its own secret out of `τ`).
    ///
    /// # Errors
    /// [`MisuseError::BadArgument`] for an empty or unsorted group list;
    /// [`CapacityError::Groups`] for more than `u32::MAX` groups.
    pub fn new<R: CryptoRng + ?Sized>(
        rng: &mut R,
        deployer: DeployerId,
        order_seq: u64,
        groups: &'g [GroupId],
    ) -> Result<Self, MisuseError> {
        let mut random = [0u8; 12];
        rng.fill_bytes(&mut random);
        let mut master = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(master.as_mut_slice());
        Self::build(UpgradeId::new(deployer, random), order_seq, master, groups)
    }

    /// The plan [`saved`](Self::saved) earlier, over the same `groups`.
    ///
    /// # Errors
    /// [`MisuseError::BadArgument`] for an empty or unsorted group list, or
    /// one that is not the list the plan was made for (its `τ` differs).
    pub fn restore(saved: &SavedPlan, groups: &'g [GroupId]) -> Result<Self, MisuseError> {
        let mut plan = Self::build(saved.upgrade, saved.order_seq, Zeroizing::new(saved.master), groups)?;
        if plan.header.trigger_digest != saved.trigger_digest {
            return Err(MisuseError::BadArgument);
        }
        plan.sequence = saved.sequence;
        Ok(plan)
    }

    /// What to store (durably, and as secret as a signing key: it yields
    /// `τ` and `c`) to [`restore`](Self::restore) this plan after a restart.
    pub fn saved(&self) -> SavedPlan {
        SavedPlan {
            upgrade: self.header.upgrade,
            order_seq: self.header.order.seq,
            trigger_digest: self.header.trigger_digest,
            sequence: self.sequence,
            master: *self.master,
        }
    }

    /// Takes `ticket`'s order sequence number and its signature, for
    /// groups configured with a sequencer. Call it before building pieces
    /// (and before [`saved`](Self::saved)); `τ` and `c` do not change.
    ///
    /// # Errors
    /// [`MisuseError::BadArgument`] for a ticket issued for another
    /// upgrade.
    pub fn sequenced(&mut self, ticket: &Ticket) -> Result<(), MisuseError> {
        if ticket.upgrade != self.header.upgrade {
            return Err(MisuseError::BadArgument);
        }
        self.header.order.seq = ticket.seq;
        self.sequence = Some(ticket.signature);
        Ok(())
    }

    fn build(
        upgrade: UpgradeId,
        order_seq: u64,
        master: Zeroizing<[u8; 32]>,
        groups: &'g [GroupId],
    ) -> Result<Self, MisuseError> {
        if groups.is_empty() || !groups.windows(2).all(|w| matches!(w, [a, b] if a < b)) {
            return Err(MisuseError::BadArgument);
        }
        let count = u32::try_from(groups.len()).map_err(|_| CapacityError::Groups)?;
        let mut cancel_rng = ChaCha20Rng::from_seed(*master);
        cancel_rng.set_stream(CANCEL_STREAM);
        let cancel = Zeroizing::new(Scalar::generate_from_rng(&mut cancel_rng));
        let cancel_code = Code(cancel.to_bytes().into());
        let mut plan = Self {
            header: UpgradeHeader {
                upgrade,
                order: OrderKey { seq: order_seq, upgrade },
                trigger_digest: crypto::Digest::default(),
                cancel_digest: cancel_code.digest(Domain::Cancel, &crypto::Binding::upgrade(upgrade)),
                groups: count,
            },
            deployer: upgrade.deployer(),
            groups,
            master,
            trigger: Code::default(),
            cancel,
            cancel_code,
            sequence: None,
        };
        let mut trigger = Code::default();
        for g in groups {
            trigger.xor_assign(&plan.secrets(*g).secret_code());
        }
        plan.header.trigger_digest = trigger.digest(Domain::Trigger, &crypto::Binding::upgrade(upgrade));
        plan.trigger = trigger;
        Ok(plan)
    }

    /// The groups the plan covers, in increasing order.
    pub fn groups(&self) -> &'g [GroupId] {
        self.groups
    }

    /// `CommitInstall(τ)`, for any group of the plan.
    pub fn commit(&self) -> Operation {
        Operation::commit_install(self.header.upgrade, self.trigger.clone())
    }

    /// `AbortInstall(c)`: how the deployer aborts its own upgrade.
    ///
    /// Sound only once `τ` can never be assembled: some group refused the
    /// piece for good (built on a version code the group never had, or
    /// under an id it already held), so that group never releases its
    /// `s_g`. Before that, an installer may already hold `τ`, and `c` given
    /// out by the deployer would split the outcome; installers earn `c`
    /// from shares a group released instead of `s_g`, the deployer has to
    /// know it the same way. Submit it to every group of the plan, each
    /// time after the group's piece, as installers do: a group that never
    /// held the piece cannot check `c` and ignores it, and its version code
    /// (the deployer's [`VersionChain`] entry for it) stays where it was.
    pub fn abort(&self) -> Operation {
        Operation::abort_install(self.header.upgrade, self.cancel_code.clone())
    }

    /// The code the plan finishes with at every group for `outcome`.
    pub fn code(&self, outcome: Outcome) -> &Code {
        match outcome {
            Outcome::Committed => &self.trigger,
            Outcome::Aborted => &self.cancel_code,
        }
    }

    /// The public header installers read.
    pub fn header(&self) -> &UpgradeHeader {
        &self.header
    }

    /// The trigger code `τ` (the deployer may keep it).
    pub fn trigger_code(&self) -> &Code {
        &self.trigger
    }

    /// The cancellation code `c` (the deployer may keep it).
    pub fn cancel_code(&self) -> &Code {
        &self.cancel_code
    }

    /// The payload key `k_g` of `group`, to seal its payload with.
    ///
    /// # Errors
    /// [`MisuseError::OutOfRange`] for a group not in the plan.
    pub fn group_key(&self, group: GroupId) -> Result<GroupKey, MisuseError> {
        self.check_group(group)?;
        Ok(self.secrets(group).key)
    }

    /// Builds and signs the piece `Δ_g` for `target`'s group.
    ///
    /// # Errors
    /// [`MisuseError::OutOfRange`] for a group not in the plan;
    /// [`MisuseError::BadArgument`] for another deployer than the plan's,
    /// or a membership whose `f` does not fit its `n`;
    /// [`CapacityError::Resources`] for too many resources;
    /// [`MisuseError::Crypto`] for a replica key that is not a point.
    ///
    /// The piece is a function of the plan and `target` alone: building it
    /// again (after a restart too) gives the same bytes.
    pub fn piece(&self, deployer: &Deployer, target: &GroupTarget<'_>) -> Result<Piece, MisuseError> {
        let m = target.membership;
        self.check_group(m.group)?;
        if deployer.id != self.deployer || !m.is_well_formed() || target.next.is_some_and(|n| !n.follows(m)) {
            return Err(MisuseError::BadArgument);
        }
        let mut resources: Vec<ResourceId, MAX_RESOURCES> =
            Vec::from_slice(target.resources).map_err(|_| CapacityError::Resources)?;
        if target.next.is_some() && !resources.contains(&ResourceId::MEMBERSHIP) {
            resources.push(ResourceId::MEMBERSHIP).map_err(|_| CapacityError::Resources)?;
        }
        let GroupSecrets { secret, key, rng: mut group_rng } = self.secrets(m.group);
        let upgrade = self.header.upgrade;
        let binding = crypto::Binding::group(upgrade, m.group);
        let mut ephemeral_rng = ChaCha20Rng::from_seed(*self.ephemeral_seed(target, &binding));
        let sealer = BoxSealer::new(&mut ephemeral_rng);
        let mut replicas = Vec::new();
        let custody = match target.guardians {
            None => {
                // Replica custody: each replica's box holds k_g and its two
                // shares, threshold f + 1.
                let (k, n) = (m.threshold(), m.n());
                let secret_shares = crypto::split(&secret, k, n, &mut group_rng)?;
                let cancel_shares = crypto::split(&self.cancel, k, n, &mut group_rng)?;
                for ((pk, s), c) in m.replicas.iter().zip(secret_shares.iter()).zip(cancel_shares.iter()) {
                    let at = binding.at(u16::from(s.index()));
                    let contents = BoxContents { first: key.0, second: *s.value(), third: *c.value() };
                    let entry = ReplicaEntry {
                        sealed: sealer.seal(pk, &at, &contents)?,
                        secret_share: s.digest(ShareKind::Secret, &binding),
                        cancel_share: c.digest(ShareKind::Cancel, &binding),
                    };
                    replicas.push(entry).map_err(|_| CapacityError::Replicas)?;
                }
                Custody::Replicas
            }
            Some(set) => {
                // Guardian custody: shares of the guardian threshold go to the
                // guardians; each replica gets k_g and a membership token.
                if !set.is_well_formed() {
                    return Err(MisuseError::BadArgument);
                }
                let (k, n) = (set.threshold(), set.members.len());
                let secret_shares = crypto::split(&secret, k, n, &mut group_rng)?;
                let cancel_shares = crypto::split(&self.cancel, k, n, &mut group_rng)?;
                let gb = binding.at(crate::wire::GUARDIAN_INDEX_BASE);
                let mut guardians = Vec::new();
                for (((id, pk), s), c) in set.members.iter().zip(secret_shares.iter()).zip(cancel_shares.iter()) {
                    let at = gb.offset(u16::from(s.index()));
                    let contents = BoxContents { first: *s.value(), second: *c.value(), third: [0; 32] };
                    let entry = GuardianEntry {
                        guardian: *id,
                        sealed: sealer.seal(pk, &at, &contents)?,
                        secret_share: s.digest(ShareKind::Secret, &gb),
                        cancel_share: c.digest(ShareKind::Cancel, &gb),
                    };
                    guardians.push(entry).map_err(|_| CapacityError::Replicas)?;
                }
                for (i, pk) in m.replicas.iter().enumerate() {
                    let x = u16::try_from(i.saturating_add(1)).map_err(|_| CapacityError::Replicas)?;
                    let at = binding.at(x);
                    let mut token = Token([0; 32]);
                    group_rng.fill_bytes(&mut token.0);
                    let contents = BoxContents { first: key.0, second: token.0, third: [0; 32] };
                    let entry = ReplicaEntry {
                        sealed: sealer.seal(pk, &at, &contents)?,
                        secret_share: token.digest(&at),
                        cancel_share: crypto::Digest::default(),
                    };
                    replicas.push(entry).map_err(|_| CapacityError::Replicas)?;
                }
                Custody::Guardians { f: set.f, guardians }
            }
        };
        let header = PieceHeader {
            upgrade,
            group: m.group,
            deployer: deployer.id,
            order_seq: self.header.order.seq,
            sequence: self.sequence,
            trigger_digest: self.header.trigger_digest,
            cancel_digest: self.header.cancel_digest,
            prev_version: target.prev_version.clone(),
            members: m.digest(),
            f: m.f,
            resources,
            payload: target.payload,
            ephemeral: sealer.ephemeral_public(),
            replicas,
            custody,
            next: target.next.cloned(),
        };
        let signature = deployer.key.sign(&header.digest())?;
        Ok(Piece { header, signature })
    }

    /// [`piece`](Self::piece) for every target, built on every core of the
    /// current rayon pool (install a pool of your own to choose how many),
    /// results in `targets`' order. Each piece is a function of the plan
    /// and its target alone, so the bytes are those of the sequential build.
    ///
    /// ```
    /// # use bft_upgrade::crypto::{Code, DeployerKey, ReplicaSecretKey};
    /// # use bft_upgrade::deployer::{Deployer, GroupTarget, UpgradePlan};
    /// # use bft_upgrade::wire::{DeployerId, GroupId, Membership, ResourceId};
    /// # use chacha20::ChaCha20Rng;
    /// # use rand_core::SeedableRng;
    /// # let mut rng = ChaCha20Rng::from_seed([1; 32]);
    /// let memberships: Vec<Membership> = (1..=8)
    ///     .map(|g| {
    ///         let keys: Vec<_> = (0..4).map(|_| ReplicaSecretKey::random(&mut rng).public_key()).collect();
    ///         Membership::new(GroupId(g), &keys).unwrap()
    ///     })
    ///     .collect();
    /// let ids: Vec<GroupId> = memberships.iter().map(|m| m.group).collect();
    /// let deployer = Deployer::new(DeployerId(1), DeployerKey::random(&mut rng));
    /// let plan = UpgradePlan::new(&mut rng, deployer.id(), 1, &ids).unwrap();
    /// let genesis = Code::from_bytes([7; 32]);
    /// let targets: Vec<GroupTarget> = memberships
    ///     .iter()
    ///     .map(|m| GroupTarget {
    ///         membership: m,
    ///         resources: &[ResourceId(1)],
    ///         prev_version: &genesis,
    ///         guardians: None,
    ///         payload: Default::default(),
    ///         next: None,
    ///     })
    ///     .collect();
    /// let pieces = plan.pieces(&deployer, &targets);
    /// assert_eq!(pieces.len(), 8);
    /// assert_eq!(pieces[3].as_ref().unwrap(), &plan.piece(&deployer, &targets[3]).unwrap());
    /// ```
    #[cfg(feature = "std")]
    pub fn pieces(
        &self,
        deployer: &Deployer,
        targets: &[GroupTarget<'_>],
    ) -> std::vec::Vec<Result<Piece, MisuseError>> {
        use rayon::prelude::*;
        targets.par_iter().map(|target| self.piece(deployer, target)).collect()
    }

    /// The seed of the piece's ephemeral key: from the master seed and
    /// everything the boxes are sealed for, so that one ephemeral key never
    /// seals different contents to the same recipient and binding (a piece
    /// rebuilt for another membership or custody gets another key).
    fn ephemeral_seed(&self, target: &GroupTarget<'_>, binding: &crypto::Binding) -> Zeroizing<[u8; 32]> {
        let m = target.membership;
        let mut h = crypto::Hasher::new(Domain::Ephemeral, binding);
        h.update(&m.digest().0);
        h.update(&[m.f]);
        h.update(&target.prev_version.0);
        for r in target.resources {
            h.update(&r.0.to_le_bytes());
        }
        h.update(&target.payload.ciphertext_len.to_le_bytes());
        h.update(&target.payload.chunk_size.to_le_bytes());
        h.update(&target.payload.digest.0);
        match target.guardians {
            None => h.update(&[0]),
            Some(set) => {
                h.update(&[1, set.f]);
                for (id, pk) in &set.members {
                    h.update(&id.to_le_bytes());
                    h.update(&pk.to_compressed());
                }
            }
        }
        match target.next {
            None => h.update(&[0]),
            Some(next) => {
                h.update(&[1]);
                h.update(&next.digest().0);
            }
        }
        crypto::derive_seed(Domain::Ephemeral, &self.master, &h.finish())
    }

    fn check_group(&self, group: GroupId) -> Result<(), MisuseError> {
        self.groups.binary_search(&group).map(|_| ()).map_err(|_| MisuseError::OutOfRange)
    }

    /// The group's secrets: its stream of the master seed, drawn in order
    /// `s_g`, `k_g`, then the share polynomials (left in the returned rng).
    fn secrets(&self, group: GroupId) -> GroupSecrets {
        let mut rng = ChaCha20Rng::from_seed(*self.master);
        rng.set_stream(u64::from(group.0));
        let secret = Zeroizing::new(Scalar::generate_from_rng(&mut rng));
        let mut key = GroupKey([0; 32]);
        rng.fill_bytes(&mut key.0);
        GroupSecrets { secret, key, rng }
    }
}

/// A plan as its deployer stores it: the upgrade id, the order sequence,
/// `D(τ)` (to check the group list on restore) and the master seed.
///
/// The master seed yields `τ` and `c`: store it like the deployer's signing
/// key. It is zeroized on drop and never printed by `Debug`.
#[derive(Clone, Serialize, Deserialize)]
pub struct SavedPlan {
    /// The upgrade.
    pub upgrade: UpgradeId,
    /// The order key's sequence number.
    pub order_seq: u64,
    /// `D(τ)` over the plan's groups.
    pub trigger_digest: Digest,
    /// The sequencer's signature, if the plan was
    /// [`sequenced`](UpgradePlan::sequenced).
    pub sequence: Option<Signature>,
    master: [u8; 32],
}

/// The central service that hands out order sequence numbers (section 4.4's
/// first remedy against a selfish sub-deployer that always picks 0): groups
/// configured with its key
/// ([`GroupConfig::with_sequencer`](crate::group::GroupConfig::with_sequencer))
/// refuse a piece whose sequence number it did not sign for that upgrade.
///
/// Its state is the next number: persist [`next`](Self::next) before a
/// ticket leaves, so a restart never issues a number twice.
pub struct Sequencer {
    key: DeployerKey,
    next: u64,
}

/// A sequence number signed for one upgrade.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    /// The upgrade it was issued for.
    pub upgrade: UpgradeId,
    /// Its order sequence number.
    pub seq: u64,
    /// The sequencer's signature of [`crypto::sequence_digest`].
    pub signature: Signature,
}

impl Sequencer {
    /// A sequencer signing with `key` whose next number is `next`.
    pub fn new(key: DeployerKey, next: u64) -> Self {
        Self { key, next }
    }

    /// The key groups are configured with.
    pub fn public_key(&self) -> PublicKey {
        self.key.public_key()
    }

    /// The number the next ticket gets.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// Issues the next number to `upgrade`.
    ///
    /// # Errors
    /// [`MisuseError::OutOfRange`] once the numbers are exhausted;
    /// [`MisuseError::Crypto`] if signing fails. The sequencer is then
    /// unchanged.
    pub fn issue(&mut self, upgrade: UpgradeId) -> Result<Ticket, MisuseError> {
        let seq = self.next;
        let next = seq.checked_add(1).ok_or(MisuseError::OutOfRange)?;
        let signature = self.key.sign(&crypto::sequence_digest(upgrade, seq))?;
        self.next = next;
        Ok(Ticket { upgrade, seq, signature })
    }
}

impl core::fmt::Debug for SavedPlan {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SavedPlan")
            .field("upgrade", &self.upgrade)
            .field("order_seq", &self.order_seq)
            .finish_non_exhaustive()
    }
}

impl Drop for SavedPlan {
    fn drop(&mut self) {
        self.master.zeroize();
    }
}

impl GroupSecrets {
    fn secret_code(&self) -> Code {
        Code(self.secret.to_bytes().into())
    }
}

/// A deployer's version codes at the groups it upgrades (section 4.4): the
/// code each group expects as the next piece's previous version code.
///
/// Start from the genesis code the groups' configurations hold; after each
/// upgrade finishes, [`advance`](Self::advance) every group it covered to
/// `τ` (committed) or `c` (aborted).
///
/// It serializes, so a deployer stores it with its plans.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VersionChain<const G: usize> {
    genesis: Code,
    codes: Vec<(GroupId, Code), G>,
}

impl<const G: usize> VersionChain<G> {
    /// A chain where every group is at `genesis`.
    pub fn new(genesis: Code) -> Self {
        Self { genesis, codes: Vec::new() }
    }

    /// The previous version code for `group`'s next piece.
    pub fn prev(&self, group: GroupId) -> &Code {
        self.codes.iter().find(|(g, _)| *g == group).map_or(&self.genesis, |(_, c)| c)
    }

    /// Records that `plan` finished with `outcome` at every one of its
    /// groups (after a deployer's abort, [`record`](Self::record) only the
    /// groups that held the piece: the others never saw `c`).
    ///
    /// # Errors
    /// [`CapacityError::Groups`] when more than `G` groups would be
    /// tracked; the chain is then unchanged.
    pub fn advance(&mut self, plan: &UpgradePlan<'_>, outcome: Outcome) -> Result<(), CapacityError> {
        let code = plan.code(outcome);
        let new = plan.groups.iter().filter(|g| !self.codes.iter().any(|(x, _)| x == *g)).count();
        if self.codes.len().saturating_add(new) > G {
            return Err(CapacityError::Groups);
        }
        for g in plan.groups {
            self.record(*g, code)?;
        }
        Ok(())
    }

    /// Records `code` as `group`'s current version code.
    ///
    /// # Errors
    /// [`CapacityError::Groups`] when more than `G` groups would be
    /// tracked; the chain is then unchanged.
    pub fn record(&mut self, group: GroupId, code: &Code) -> Result<(), CapacityError> {
        match self.codes.iter_mut().find(|(x, _)| *x == group) {
            Some((_, c)) => *c = code.clone(),
            None => self.codes.push((group, code.clone())).map_err(|_| CapacityError::Groups)?,
        }
        Ok(())
    }
}
