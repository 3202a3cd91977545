//! The wire format: identifiers, the upgrade piece and every message.
//!
//! Every type here derives serde and is encoded with postcard. [`decode`]
//! is the only way bytes become typed values: it checks every length and
//! count against the crate's capacities (bounded `heapless` collections
//! refuse more), rejects trailing bytes, and rejects any input that does not
//! re-encode to the same bytes, so the encoding is canonical.

use heapless::Vec;
use postcard::ser_flavors::Flavor;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::crypto::{
    open_box, Binding, Code, Digest, Domain, GroupKey, Hasher, PayloadRef, PublicKey, ReplicaSecretKey, SealedBox,
    Share, ShareKind, Signature,
};
use crate::error::{CapacityError, CryptoError, DecodeError, EncodeError};

pub use crate::capacity::{MAX_ATTACHED, MAX_GUARDIANS, MAX_REPLICAS, MAX_RESOURCES};

pub use crate::ids::{DeployerId, GroupId, ResourceId, UpgradeId};

/// The total order `≺` on upgrades: a sequence number, then the upgrade id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct OrderKey {
    /// Compared first.
    pub seq: u64,
    /// Breaks ties.
    pub upgrade: UpgradeId,
}

/// A group's membership as deployers and the group itself agree on it:
/// its replicas' public keys in index order and its fault bound `f`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Membership {
    /// The group.
    pub group: GroupId,
    /// The fault bound: at most `f` faulty replicas, `3f + 1 <= n`.
    pub f: u8,
    /// Replica public keys; replica `i` (0-based) gets share index `i + 1`.
    pub replicas: Vec<PublicKey, MAX_REPLICAS>,
}

impl Membership {
    /// A membership of `replicas` with the largest `f` they tolerate.
    ///
    /// # Errors
    /// [`CapacityError::Replicas`] for an empty set or more than
    /// [`MAX_REPLICAS`].
    pub fn new(group: GroupId, replicas: &[PublicKey]) -> Result<Self, CapacityError> {
        let replicas = Vec::from_slice(replicas).map_err(|_| CapacityError::Replicas)?;
        let n = replicas.len();
        if n == 0 {
            return Err(CapacityError::Replicas);
        }
        let f = u8::try_from(n.saturating_sub(1) / 3).map_err(|_| CapacityError::Replicas)?;
        Ok(Self { group, f, replicas })
    }

    /// The number of replicas.
    pub fn n(&self) -> usize {
        self.replicas.len()
    }

    /// The share threshold `f + 1`.
    pub fn threshold(&self) -> usize {
        usize::from(self.f).saturating_add(1)
    }

    /// Whether `f` is consistent with `n` (`n >= 3f + 1`, `n >= 1`).
    pub fn is_well_formed(&self) -> bool {
        let n = self.n();
        n >= 1 && usize::from(self.f).saturating_mul(3) < n
    }

    /// The digest a piece carries to say which membership it was built for.
    pub fn digest(&self) -> Digest {
        let mut h = Hasher::new(Domain::Members, &Binding::group(UpgradeId::default(), self.group));
        h.update(&[self.f]);
        for key in &self.replicas {
            h.update(&key.to_compressed());
        }
        h.finish()
    }
}

/// A group's guardians as its configuration names them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct GuardianIds {
    /// `F`: guardians that may be faulty (threshold [`guardian_threshold`]).
    pub f: u8,
    /// Guardian ids, in share order.
    pub ids: Vec<u32, MAX_GUARDIANS>,
}

/// The membership a piece switches its group to when the upgrade commits
/// there (adding replicas is an upgrade, paper section 3.2), with the
/// custody later pieces must use.
///
/// Replicas keep their index: at an index below both sizes a key is kept
/// or replaced (a rotation: the old holder leaves, the new one joins by
/// state transfer), indices past the new size leave, indices past the old
/// size join. Pieces built for the old membership that are still held
/// finish with the old replicas' shares, so a change must keep at least
/// `f + 1 + f'` replicas (`f` now, `f'` after): [`follows`](Self::follows).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct NextMembership {
    /// The replicas and `f` after the change.
    pub membership: Membership,
    /// The guardians later pieces go to (`None`: replica custody).
    pub guardians: Option<GuardianIds>,
}

impl NextMembership {
    /// Whether a group now at `current` may switch to this: the same group,
    /// well formed, distinct keys, and gradual (at least `f + 1 + f'`
    /// replicas kept at their index, so the `f + 1` shares of a piece built
    /// for `current` still come from correct replicas).
    pub fn follows(&self, current: &Membership) -> bool {
        let next = &self.membership;
        let kept = current.replicas.iter().zip(next.replicas.iter()).filter(|(a, b)| a == b).count();
        let needed = usize::from(current.f).saturating_add(1).saturating_add(usize::from(next.f));
        let distinct = next
            .replicas
            .iter()
            .enumerate()
            .all(|(i, a)| next.replicas.iter().skip(i.saturating_add(1)).all(|b| a != b));
        let guardians_ok = self.guardians.as_ref().is_none_or(|g| {
            let n = g.ids.len();
            n >= 1 && usize::from(g.f).saturating_mul(3) < n
        });
        next.group == current.group && next.is_well_formed() && distinct && kept >= needed && guardians_ok
    }

    /// The digest a held piece keeps of it, to recognise the same change
    /// when the piece comes again.
    pub fn digest(&self) -> Digest {
        digest_encoding(Domain::NextMembership, &Binding::group(UpgradeId::default(), self.membership.group), self)
    }
}

/// The share threshold of `n` guardians of which `f` may be faulty: the
/// least `t` with `2t > n + f`, that is `⌊(n + f) / 2⌋ + 1` (`2F + 1` for the
/// paper's `n = 3F + 1`).
///
/// Why: correct guardians release one kind each, but a compromised group
/// may ask different ones for different kinds. Both codes are rebuilt only
/// if `f` plus the correct guardians that chose each kind reach `t` twice,
/// which needs `2t ≤ n + f`. With `2F + 1` kept for more than `3F + 1`
/// guardians (6 guardians, `F = 1`: two disjoint quorums of 3), a
/// compromised group could rebuild both. And `t ≤ n − f` for `n ≥ 3f + 1`,
/// so the correct guardians alone always reach it.
pub const fn guardian_threshold(n: usize, f: u8) -> usize {
    (n.saturating_add(f as usize) / 2).saturating_add(1)
}

/// A group's guardians (section 7): `3F + 1` or more hosts, each with an
/// address (its id) and a P-256 key; shares have threshold
/// [`guardian_threshold`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct GuardianSet {
    /// `F`: guardians that may be faulty.
    pub f: u8,
    /// Guardian ids and keys, in share order.
    pub members: Vec<(u32, PublicKey), MAX_GUARDIANS>,
}

impl GuardianSet {
    /// A set of `members` with the largest `F` they tolerate.
    ///
    /// # Errors
    /// [`CapacityError::Replicas`] for an empty set or more than
    /// [`MAX_GUARDIANS`].
    pub fn new(members: &[(u32, PublicKey)]) -> Result<Self, CapacityError> {
        let members = Vec::from_slice(members).map_err(|_| CapacityError::Replicas)?;
        if members.is_empty() {
            return Err(CapacityError::Replicas);
        }
        let f = u8::try_from(members.len().saturating_sub(1) / 3).map_err(|_| CapacityError::Replicas)?;
        Ok(Self { f, members })
    }

    /// The share threshold, [`guardian_threshold`] (`2F + 1` for
    /// `3F + 1` guardians).
    pub fn threshold(&self) -> usize {
        guardian_threshold(self.members.len(), self.f)
    }

    /// Whether `3F + 1 <= n` and ids are distinct.
    pub fn is_well_formed(&self) -> bool {
        let n = self.members.len();
        let distinct = self
            .members
            .iter()
            .enumerate()
            .all(|(i, (a, _))| self.members.iter().skip(i.saturating_add(1)).all(|(b, _)| a != b));
        n >= 1 && usize::from(self.f).saturating_mul(3) < n && distinct
    }
}

/// What a piece holds for one replica: its sealed box and the digests of
/// its two shares, so peers and installers can throw out forged shares.
#[derive(Default, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ReplicaEntry {
    /// `k_g`, the `s_g` share and the `c` share, sealed to the replica.
    pub sealed: SealedBox,
    /// `D(a_r)` of the replica's `s_g` share.
    pub secret_share: Digest,
    /// `D(a_r)` of the replica's `c` share.
    pub cancel_share: Digest,
}

/// The signed part of an upgrade piece `Δ_g`.
#[derive(Default, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PieceHeader {
    /// The upgrade.
    pub upgrade: UpgradeId,
    /// The group this piece is for.
    pub group: GroupId,
    /// The deployer that signed it.
    pub deployer: DeployerId,
    /// First half of the order key `≺` (the second is `upgrade`).
    pub order_seq: u64,
    /// The sequencer's signature of `order_seq` for `upgrade`
    /// ([`crypto::sequence_digest`](crate::crypto::sequence_digest)), for
    /// groups configured with a sequencer; `None` elsewhere.
    pub sequence: Option<Signature>,
    /// `D(τ)`.
    pub trigger_digest: Digest,
    /// `D(c)`.
    pub cancel_digest: Digest,
    /// The deployer's previous version code at this group (section 4.4).
    pub prev_version: Code,
    /// Digest of the group's membership the deployer built this piece for.
    pub members: Digest,
    /// The group's fault bound; shares have threshold `f + 1`.
    pub f: u8,
    /// The resources this piece changes.
    pub resources: Vec<ResourceId, MAX_RESOURCES>,
    /// The sealed payload this piece installs.
    pub payload: PayloadRef,
    /// The piece's ephemeral ECDH key.
    pub ephemeral: PublicKey,
    /// One entry per replica, in membership order.
    pub replicas: Vec<ReplicaEntry, MAX_REPLICAS>,
    /// Who holds the shares of `s_g` and `c`.
    pub custody: Custody,
    /// The membership the group switches to if this upgrade commits there
    /// (its resources then include [`ResourceId::MEMBERSHIP`]).
    pub next: Option<NextMembership>,
}

/// Who holds a group's shares ([codes](crate::protocol#codes), [guardians](crate::protocol#guardians-section-5)).
#[derive(Default, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
// The piece is one fixed-size value; there is no heap to box into.
#[allow(clippy::large_enum_variant)]
pub enum Custody {
    /// The replicas themselves: each box holds `k_g` and the replica's two
    /// shares (threshold `f + 1`).
    #[default]
    Replicas,
    /// `3F + 1` or more guardians (threshold [`guardian_threshold`]:
    /// `2F + 1` for `3F + 1`). Each replica's box holds
    /// `k_g` and a membership token; its entry's `secret_share` digest is
    /// the token's digest and its `cancel_share` digest is all zeros.
    Guardians {
        /// `F`: guardians that may be faulty.
        f: u8,
        /// One entry per guardian.
        guardians: Vec<GuardianEntry, MAX_GUARDIANS>,
    },
}

/// What a piece holds for one guardian: its address, its sealed shares and
/// their digests.
#[derive(Default, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct GuardianEntry {
    /// The guardian's address (its id).
    pub guardian: u32,
    /// Its `s_g` share and `c` share, sealed to its key.
    pub sealed: SealedBox,
    /// `D(s_g^k)`.
    pub secret_share: Digest,
    /// `D(c^k)`.
    pub cancel_share: Digest,
}

/// A replica's membership token in guardian custody: it proves to a
/// guardian that the request comes from that replica. Secret until used.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
pub struct Token(pub [u8; 32]);

impl Token {
    /// The digest a piece lists for this token.
    pub fn digest(&self, binding: &Binding) -> Digest {
        crate::crypto::digest(Domain::Token, binding, &self.0)
    }
}

impl core::fmt::Debug for Token {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for Token {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(f, "Token(<redacted>)")
    }
}

impl PieceHeader {
    /// The order key of this piece's upgrade.
    pub fn order_key(&self) -> OrderKey {
        OrderKey { seq: self.order_seq, upgrade: self.upgrade }
    }

    /// The binding of this piece's group-level values.
    pub fn binding(&self) -> Binding {
        Binding::group(self.upgrade, self.group)
    }

    /// The digest the deployer signs: domain-separated SHA-256 of the
    /// header's canonical encoding, hashed as it is encoded.
    pub fn digest(&self) -> Digest {
        let hasher = Hasher::new(Domain::PieceHeader, &self.binding());
        match postcard::serialize_with_flavor(self, HashFlavor::new(hasher)) {
            Ok(d) => d,
            // Encoding into a hash cannot fail; a fixed value that no
            // signature covers keeps this path panic-free.
            Err(_) => Digest([0; 32]),
        }
    }

    /// The binding of guardian shares and boxes: the group's, offset so
    /// guardian indices never meet replica indices.
    pub fn guardian_binding(&self) -> Binding {
        Binding::group(self.upgrade, self.group).at(GUARDIAN_INDEX_BASE)
    }

    /// Whether this piece conflicts with `other` (their resource sets meet).
    pub fn conflicts_with(&self, other: &[ResourceId]) -> bool {
        self.resources.iter().any(|r| other.contains(r))
    }
}

/// Guardian `k` (1-based) is bound at index `GUARDIAN_INDEX_BASE + k`, apart
/// from replica indices (at most 64).
pub const GUARDIAN_INDEX_BASE: u16 = 0x100;

/// An upgrade piece `Δ_g`: header and the deployer's signature over it.
#[derive(Default, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Piece {
    /// The signed header.
    pub header: PieceHeader,
    /// ECDSA P-256 over [`PieceHeader::digest`].
    pub signature: Signature,
}

impl Piece {
    /// Verifies the deployer's signature.
    ///
    /// # Errors
    /// [`CryptoError::BadSignature`] or [`CryptoError::InvalidPublicKey`].
    pub fn verify(&self, deployer: &PublicKey) -> Result<(), CryptoError> {
        self.signature.verify(deployer, &self.header.digest())
    }
}

/// What a replica finds in its own box of a piece.
#[derive(Clone)]
pub struct Opened {
    /// The payload key `k_g`.
    pub key: GroupKey,
    /// The replica's share of `s_g`.
    pub secret_share: Share,
    /// The replica's share of `c`.
    pub cancel_share: Share,
}

// Every field (`GroupKey`, `Share`) zeroizes itself on drop.
impl zeroize::ZeroizeOnDrop for Opened {}

impl Piece {
    /// Opens replica `index`'s (0-based) box with its key and checks both
    /// shares against the piece's digest map.
    ///
    /// # Errors
    /// [`CryptoError::OpenFailed`] when the box is not this replica's or
    /// was tampered with; [`CryptoError::BadShare`] when a share does not
    /// match its digest (a deployer bug: the signed piece is inconsistent).
    pub fn open_for(&self, index: usize, key: &ReplicaSecretKey) -> Result<Opened, CryptoError> {
        let h = &self.header;
        if h.custody != Custody::Replicas {
            return Err(CryptoError::OpenFailed);
        }
        let entry = h.replicas.get(index).ok_or(CryptoError::OpenFailed)?;
        let x = u8::try_from(index.saturating_add(1)).map_err(|_| CryptoError::OpenFailed)?;
        let binding = h.binding();
        let contents = open_box(key, &h.ephemeral, &binding.at(u16::from(x)), &entry.sealed)?;
        let opened = Opened {
            key: GroupKey::from_bytes(contents.first),
            secret_share: Share::new(x, contents.second),
            cancel_share: Share::new(x, contents.third),
        };
        if opened.secret_share.digest(ShareKind::Secret, &binding) != entry.secret_share
            || opened.cancel_share.digest(ShareKind::Cancel, &binding) != entry.cancel_share
        {
            return Err(CryptoError::BadShare);
        }
        Ok(opened)
    }

    /// In guardian custody: opens replica `index`'s box for `k_g` and its
    /// token, checked against the token digest.
    ///
    /// # Errors
    /// [`CryptoError::OpenFailed`] for a box that is not this replica's or
    /// a piece in replica custody; [`CryptoError::BadShare`] for a token
    /// that does not match its digest.
    pub fn open_token(&self, index: usize, key: &ReplicaSecretKey) -> Result<(GroupKey, Token), CryptoError> {
        let h = &self.header;
        if h.custody == Custody::Replicas {
            return Err(CryptoError::OpenFailed);
        }
        let entry = h.replicas.get(index).ok_or(CryptoError::OpenFailed)?;
        let x = u16::try_from(index.saturating_add(1)).map_err(|_| CryptoError::OpenFailed)?;
        let binding = h.binding().at(x);
        let contents = open_box(key, &h.ephemeral, &binding, &entry.sealed)?;
        let token = Token(contents.second);
        if token.digest(&binding) != entry.secret_share {
            return Err(CryptoError::BadShare);
        }
        Ok((GroupKey::from_bytes(contents.first), token))
    }

    /// In guardian custody: opens guardian entry `index`'s box with the
    /// guardian's key and checks both shares against their digests.
    ///
    /// # Errors
    /// As [`open_for`](Self::open_for).
    pub fn open_guardian(&self, index: usize, key: &ReplicaSecretKey) -> Result<(Share, Share), CryptoError> {
        let h = &self.header;
        let Custody::Guardians { guardians, .. } = &h.custody else {
            return Err(CryptoError::OpenFailed);
        };
        let entry = guardians.get(index).ok_or(CryptoError::OpenFailed)?;
        let x = u8::try_from(index.saturating_add(1)).map_err(|_| CryptoError::OpenFailed)?;
        let binding = h.guardian_binding();
        let contents = open_box(key, &h.ephemeral, &binding.offset(u16::from(x)), &entry.sealed)?;
        let (s, c) = (Share::new(x, contents.first), Share::new(x, contents.second));
        if s.digest(ShareKind::Secret, &binding) != entry.secret_share
            || c.digest(ShareKind::Cancel, &binding) != entry.cancel_share
        {
            return Err(CryptoError::BadShare);
        }
        Ok((s, c))
    }

    /// Whether `share` is guardian `share.index()`'s genuine `kind` share.
    pub fn guardian_share_is_valid(&self, kind: ShareKind, share: &Share) -> bool {
        let Custody::Guardians { guardians, .. } = &self.header.custody else {
            return false;
        };
        let index = usize::from(share.index());
        let Some(entry) = index.checked_sub(1).and_then(|i| guardians.get(i)) else {
            return false;
        };
        let expected = match kind {
            ShareKind::Secret => &entry.secret_share,
            ShareKind::Cancel => &entry.cancel_share,
        };
        share.digest(kind, &self.header.guardian_binding()) == *expected
    }

    /// Whether `share` is the genuine `kind` share of its index, per the
    /// piece's digest map.
    pub fn share_is_valid(&self, kind: ShareKind, share: &Share) -> bool {
        let index = usize::from(share.index());
        let Some(entry) = index.checked_sub(1).and_then(|i| self.header.replicas.get(i)) else {
            return false;
        };
        let expected = match kind {
            ShareKind::Secret => &entry.secret_share,
            ShareKind::Cancel => &entry.cancel_share,
        };
        share.digest(kind, &self.header.binding()) == *expected
    }
}

/// The costly checks of a new piece: the deployer's signature and the
/// receiver's box. [`WithKey`] does them directly; a host may substitute
/// results it computed earlier (e.g. before ordering), which must be exactly
/// what `Piece::verify` and `Piece::open_for` would return.
pub trait PieceCrypto {
    /// Whether `piece` verifies under `signer`.
    fn verify(&mut self, piece: &Piece, signer: &PublicKey) -> bool;
    /// Opens replica `index`'s box of `piece`.
    ///
    /// # Errors
    /// As [`Piece::open_for`].
    fn open(&mut self, piece: &Piece, index: usize) -> Result<Opened, CryptoError>;
    /// Opens replica `index`'s box of a piece in guardian custody.
    ///
    /// # Errors
    /// As [`Piece::open_token`].
    fn open_token(&mut self, piece: &Piece, index: usize) -> Result<(GroupKey, Token), CryptoError>;
    /// Opens guardian entry `index`'s box (for a guardian).
    ///
    /// # Errors
    /// As [`Piece::open_guardian`].
    fn open_guardian(&mut self, piece: &Piece, index: usize) -> Result<(Share, Share), CryptoError>;
}

/// [`PieceCrypto`] done on the spot with the replica's key.
pub struct WithKey<'k>(pub &'k ReplicaSecretKey);

impl PieceCrypto for WithKey<'_> {
    fn verify(&mut self, piece: &Piece, signer: &PublicKey) -> bool {
        piece.verify(signer).is_ok()
    }

    fn open(&mut self, piece: &Piece, index: usize) -> Result<Opened, CryptoError> {
        piece.open_for(index, self.0)
    }

    fn open_token(&mut self, piece: &Piece, index: usize) -> Result<(GroupKey, Token), CryptoError> {
        piece.open_token(index, self.0)
    }

    fn open_guardian(&mut self, piece: &Piece, index: usize) -> Result<(Share, Share), CryptoError> {
        piece.open_guardian(index, self.0)
    }
}

/// The public header of an upgrade, which installers read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct UpgradeHeader {
    /// The upgrade.
    pub upgrade: UpgradeId,
    /// Its order key.
    pub order: OrderKey,
    /// `D(τ)`.
    pub trigger_digest: Digest,
    /// `D(c)`.
    pub cancel_digest: Digest,
    /// How many groups (pieces) the upgrade has.
    pub groups: u32,
}

/// An ordered operation of a group's upgrade object. The host runs these
/// through its Byzantine agreement and hands them, in the agreed order, to
/// every replica's [`GroupReplica`](crate::group::GroupReplica).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
// No heap to box the piece in; operations are handled one at a time.
#[allow(clippy::large_enum_variant)]
pub enum Operation {
    /// `PrepareInstall(Δ_g)`.
    PrepareInstall(Piece),
    /// `CommitInstall(τ)` or `AbortInstall(c)`.
    Finish(Finish),
}

impl Operation {
    /// `CommitInstall(τ)`.
    pub fn commit_install(upgrade: UpgradeId, trigger: Code) -> Self {
        Self::Finish(Finish::commit_install(upgrade, trigger))
    }

    /// `AbortInstall(c)`.
    pub fn abort_install(upgrade: UpgradeId, cancel: Code) -> Self {
        Self::Finish(Finish::abort_install(upgrade, cancel))
    }
}

/// An operation that is not a finish (`PrepareInstall`) has no such form.
impl TryFrom<Operation> for Finish {
    type Error = Operation;
    fn try_from(op: Operation) -> Result<Self, Operation> {
        match op {
            Operation::Finish(f) => Ok(f),
            other => Err(other),
        }
    }
}

impl From<Finish> for Operation {
    fn from(f: Finish) -> Self {
        Self::Finish(f)
    }
}

/// Whether a code commits or aborts its upgrade.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Outcome {
    /// Committed with the trigger code `τ`.
    Committed,
    /// Aborted with the cancellation code `c`.
    Aborted,
}

impl Outcome {
    /// Whether `code` finishes `upgrade` this way: `τ` against the
    /// trigger digest, `c` against the cancellation digest (both as the
    /// piece and the header carry them). Every role checks an outcome's
    /// code here, in constant time.
    ///
    /// # Errors
    /// [`CryptoError::CodeMismatch`] when it does not.
    pub fn check(
        self,
        upgrade: UpgradeId,
        code: &Code,
        trigger_digest: &Digest,
        cancel_digest: &Digest,
    ) -> Result<(), CryptoError> {
        let binding = Binding::upgrade(upgrade);
        match self {
            Outcome::Committed => code.check(Domain::Trigger, &binding, trigger_digest),
            Outcome::Aborted => code.check(Domain::Cancel, &binding, cancel_digest),
        }
    }
}

/// An upgrade's outcome and its code: the one form of the paper's
/// `CommitInstall(τ)` and `AbortInstall(c)`, whether ordered at a group
/// ([`Operation::Finish`]), submitted in a message ([`Message::Submit`]),
/// piggybacked on application messages or forwarded by clients and
/// guardians. [`Outcome::check`] says whether the code is the right one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Finish {
    /// The upgrade.
    pub upgrade: UpgradeId,
    /// Committed (with `τ`) or aborted (with `c`).
    pub outcome: Outcome,
    /// The code itself.
    pub code: Code,
}

impl Finish {
    /// `upgrade` finished with `outcome` and `code`.
    pub fn new(upgrade: UpgradeId, outcome: Outcome, code: Code) -> Self {
        Self { upgrade, outcome, code }
    }

    /// `CommitInstall(τ)`.
    pub fn commit_install(upgrade: UpgradeId, trigger: Code) -> Self {
        Self::new(upgrade, Outcome::Committed, trigger)
    }

    /// `AbortInstall(c)`.
    pub fn abort_install(upgrade: UpgradeId, cancel: Code) -> Self {
        Self::new(upgrade, Outcome::Aborted, cancel)
    }
}

/// The codes a group attaches to one application request or response.
pub type Attachment = Vec<Finish, MAX_ATTACHED>;

/// Why a group refused a piece without releasing any share.
///
/// A refusal releases nothing, so it is always safe; only a piece the group
/// *decided* on (accepted, rejected or postponed) gets shares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Refusal {
    /// The piece is for another group.
    WrongGroup,
    /// The piece's upgrade id names another deployer than its signer
    /// (see [`UpgradeId`]).
    ForeignUpgradeId,
    /// The signer is not an authorized deployer of this group.
    UnknownDeployer,
    /// The signature does not verify.
    BadSignature,
    /// The piece was built for another membership (keys, `n` or `f`).
    WrongMembership,
    /// The piece's previous version code is an older code of its deployer's
    /// chain here: a replay of a piece that has been superseded.
    Replayed,
    /// The piece's previous version code is not (yet) known here: it was
    /// built on a predecessor that has not finished at this group.
    OutOfOrder,
    /// The piece's previous version code belongs to another deployer's chain.
    WrongChain,
    /// The group holds as many unfinished pieces as it can; retry later.
    Busy,
    /// The group has a sequencer, and the piece's order sequence number is
    /// not signed by it for this upgrade.
    Unsequenced,
    /// The piece's next membership is not one the group can switch to
    /// ([`NextMembership::follows`]), or the piece does not list
    /// [`ResourceId::MEMBERSHIP`].
    BadMembership,
}

impl Refusal {
    /// Whether the group refuses this piece in every state it can still
    /// reach. A group's version code, chain and membership only move
    /// forward, so a piece built on another code, chain, membership or
    /// signer stays refused; only [`Busy`](Self::Busy) (slots free up) and
    /// [`OutOfOrder`](Self::OutOfOrder) (the predecessor may still finish)
    /// can change. A permanent refusal by more than `f` replicas means the
    /// group never releases its `s_g` for the upgrade, which is what makes
    /// a deployer's own abort sound.
    pub const fn is_permanent(self) -> bool {
        !matches!(self, Self::Busy | Self::OutOfOrder)
    }
}

/// A replica's reply to an operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Reply {
    /// *accept*: the replica's share of `s_g`.
    Accepted(Share),
    /// *reject*: the replica's share of `c`.
    Rejected(Share),
    /// *conflict*: postponed behind a conflicting piece; retry later.
    Conflict,
    /// The upgrade's outcome is known here: the code itself.
    Finished(Outcome, Code),
    /// The piece was refused; nothing was released.
    Refused(Refusal),
    /// The group holds no piece of this upgrade (for commit and abort).
    Unknown,
    /// The group accepted, but this replica cannot release its share (its
    /// own box in the piece is bad).
    NoShare,
    /// Guardian custody: decided, and the replica is fetching the code from
    /// the guardians; ask again.
    Pending,
    /// Guardian custody: the group's rebuilt `s_g` (`Secret`, accept) or
    /// `c` (`Cancel`, reject).
    Code(ShareKind, Code),
}

/// A replica's answer to an operation's origin.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Answer {
    /// The upgrade.
    pub upgrade: UpgradeId,
    /// The answering replica's group.
    pub group: GroupId,
    /// The answering replica's index.
    pub replica: u8,
    /// The reply.
    pub reply: Reply,
}

/// A point-to-point message between roles.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Message {
    /// An operation for the receiving group to order (proactive diffusion
    /// and installers' commits and aborts; `PrepareInstall` travels as an
    /// [`Operation`] too, but installers send it through the host since the
    /// host holds the pieces).
    Submit(Finish),
    /// A replica's answer.
    Answer(Answer),
    /// Guardian custody: a replica asks a guardian for its `kind` share,
    /// proving membership with its token.
    GuardianRequest {
        /// The upgrade.
        upgrade: UpgradeId,
        /// The replica's group.
        group: GroupId,
        /// The replica's index.
        replica: u8,
        /// Which share.
        kind: ShareKind,
        /// The replica's token from its box.
        token: Token,
    },
    /// A guardian's share, to a replica that asked.
    GuardianShare {
        /// The upgrade.
        upgrade: UpgradeId,
        /// The group.
        group: GroupId,
        /// Which share.
        kind: ShareKind,
        /// The share (its index is the guardian's, 1-based).
        share: Share,
    },
    /// A guardian does not hold the piece yet: the replica's host should
    /// send it (see `GroupEffect::ForwardPiece`).
    GuardianNeedsPiece {
        /// The upgrade.
        upgrade: UpgradeId,
        /// The group.
        group: GroupId,
    },
    /// A group's replica tells its guardians the outcome, for them to
    /// forward to the other groups they guard (section 5).
    Learned {
        /// The group that finished.
        group: GroupId,
        /// The outcome and its code.
        diffused: Finish,
    },
}

/// An external client's call to a group, as far as versions go (section
/// 4.3): the group version it last saw there and the trigger codes it
/// carries from other groups.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ClientCall {
    /// The client.
    pub client: u32,
    /// The version of the called group the client last saw (0: never).
    pub seen: u64,
    /// Codes the client learned elsewhere, newest last.
    pub codes: Attachment,
}

/// Whether a group could bring a client up to date.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ClientStatus {
    /// The reply carries every trigger code since the client's version.
    Current,
    /// The client is further behind than the group's history: it must
    /// refresh (start a new session) before relying on cross-group order.
    TooOld,
}

/// A deployer's signed word that `upgrade` has finished at every group it
/// covers (its installer reported
/// [`Done`](crate::installer::InstallerEffect::Done), which needs `f + 1`
/// acknowledgements from each group). Guardians forget their records of
/// the upgrade on this word alone
/// ([`Guardian::handle_retirement`](crate::guardian::Guardian::handle_retirement)):
/// once every group finished, a share of either kind changes no group's
/// outcome, and a replayed piece is refused by every group (its previous
/// version code is no longer current). Build it with
/// [`Deployer::retirement`](crate::deployer::Deployer::retirement).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Retirement {
    /// The upgrade, which names its deployer.
    pub upgrade: UpgradeId,
    /// That deployer's signature of
    /// [`retirement_digest`](crate::crypto::retirement_digest).
    pub signature: Signature,
}

impl Retirement {
    /// Whether `key` signed it.
    ///
    /// # Errors
    /// [`CryptoError::BadSignature`] otherwise.
    pub fn verify(&self, key: &PublicKey) -> Result<(), CryptoError> {
        self.signature.verify(key, &crate::crypto::retirement_digest(self.upgrade))
    }
}

/// A group's reply to a client call: its version and the trigger codes
/// committed since the version the client carried.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ClientReply {
    /// The group.
    pub group: GroupId,
    /// Its version after executing the call.
    pub version: u64,
    /// Whether `codes` is complete.
    pub status: ClientStatus,
    /// Trigger codes committed since the client's version, oldest first.
    pub codes: Attachment,
}

/// The format version [`encode`] writes first and [`decode`] checks: the
/// version of every encoding this crate defines, on the wire and in
/// stored role state alike.
///
/// Format 1 is frozen: `tests/fixtures/format-1/` holds values encoded by
/// it, which every later release must decode (the policy is in the
/// README). A change to any encoding (a field added, removed, retyped or
/// moved, a variant reordered) is a new format version.
pub const FORMAT_VERSION: u8 = 1;

/// Encodes `value` into `buf` and returns the bytes written: the
/// [`FORMAT_VERSION`] byte, then the value's postcard encoding.
///
/// # Errors
/// [`EncodeError::BufferTooSmall`] when `buf` is too small (see
/// [`encoded_len`]).
pub fn encode<'b, T: Serialize>(value: &T, buf: &'b mut [u8]) -> Result<&'b mut [u8], EncodeError> {
    let Some((version, body)) = buf.split_first_mut() else {
        return Err(EncodeError::BufferTooSmall);
    };
    *version = FORMAT_VERSION;
    let len = postcard::to_slice(value, body)
        .map_err(|e| match e {
            postcard::Error::SerializeBufferFull => EncodeError::BufferTooSmall,
            _ => EncodeError::Unencodable,
        })?
        .len();
    buf.get_mut(..len.saturating_add(1)).ok_or(EncodeError::BufferTooSmall)
}

/// The encoded length of `value`, its version byte included.
pub fn encoded_len<T: Serialize>(value: &T) -> usize {
    postcard::serialize_with_flavor(value, postcard::ser_flavors::Size::default())
        .map_or(usize::MAX, |n: usize| n.saturating_add(1))
}

/// The body after the version byte, if the version is one this build reads.
fn body(bytes: &[u8]) -> Result<&[u8], DecodeError> {
    match bytes.split_first() {
        None => Err(DecodeError::Truncated),
        Some((&FORMAT_VERSION, body)) => Ok(body),
        Some((&version, _)) => Err(DecodeError::UnknownVersion { version }),
    }
}

/// Decodes exactly one canonical `T` from `bytes`.
///
/// # Errors
/// [`DecodeError::UnknownVersion`] unless the bytes start with a format
/// version this build reads; a [`DecodeError`] for truncated,
/// over-capacity, malformed, trailing or non-canonical input.
pub fn decode<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let bytes = body(bytes)?;
    let (value, rest): (T, &[u8]) = postcard::take_from_bytes(bytes).map_err(DecodeError::from)?;
    whole_and_canonical(&value, bytes, rest)?;
    Ok(value)
}

/// Decodes exactly one canonical `T` from `bytes` into `place`, building
/// it where it lies instead of returning it: a piece returned by value is
/// copied through every level of the decoder, which on firmware costs five
/// or six pieces of stack; decoded in place it costs about one.
///
/// On error `place` holds some valid value (partly overwritten), so decode
/// into a scratch value, never into state that must survive bad input.
///
/// # Errors
/// As [`decode`].
pub fn decode_into<T: Serialize + DeserializeOwned>(bytes: &[u8], place: &mut T) -> Result<(), DecodeError> {
    let bytes = body(bytes)?;
    let mut de = postcard::Deserializer::from_bytes(bytes);
    T::deserialize_in_place(&mut de, place).map_err(DecodeError::from)?;
    let rest = de.finalize().map_err(DecodeError::from)?;
    whole_and_canonical(&*place, bytes, rest)
}

/// What [`decode`] and [`decode_into`] ask of a decoded `value`: it used
/// all of `bytes` (nothing is `rest`) and re-encodes to exactly them.
fn whole_and_canonical<T: Serialize>(value: &T, bytes: &[u8], rest: &[u8]) -> Result<(), DecodeError> {
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes);
    }
    match postcard::serialize_with_flavor(value, CompareFlavor { expected: bytes, pos: 0 }) {
        Ok(true) => Ok(()),
        _ => Err(DecodeError::NonCanonical),
    }
}

/// A postcard output that feeds a [`Hasher`].
/// A postcard output that hashes what it is given, a block at a time
/// (postcard hands byte arrays over one byte per call).
struct HashFlavor {
    hasher: Hasher,
    buf: [u8; 64],
    len: usize,
}

impl HashFlavor {
    fn new(hasher: Hasher) -> Self {
        Self { hasher, buf: [0; 64], len: 0 }
    }

    fn drain(&mut self) {
        self.hasher.update(self.buf.get(..self.len).unwrap_or_default());
        self.len = 0;
    }
}

/// The domain-separated SHA-256 of `value`'s canonical encoding, hashed as
/// it is encoded (no buffer).
pub(crate) fn digest_encoding<T: Serialize + ?Sized>(domain: Domain, binding: &Binding, value: &T) -> Digest {
    match postcard::serialize_with_flavor(value, HashFlavor::new(Hasher::new(domain, binding))) {
        Ok(d) => d,
        // Encoding into a hash cannot fail (every type here encodes).
        Err(_) => Digest([0; 32]),
    }
}

impl Flavor for HashFlavor {
    type Output = Digest;

    #[inline]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        if self.len == self.buf.len() {
            self.drain();
        }
        if let Some(b) = self.buf.get_mut(self.len) {
            *b = data;
            self.len = self.len.saturating_add(1);
        }
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.drain();
        self.hasher.update(data);
        Ok(())
    }

    fn finalize(mut self) -> postcard::Result<Digest> {
        self.drain();
        Ok(self.hasher.finish())
    }
}

/// A postcard output that compares against expected bytes instead of
/// storing them: the canonicity check needs no buffer.
struct CompareFlavor<'a> {
    expected: &'a [u8],
    pos: usize,
}

impl Flavor for CompareFlavor<'_> {
    type Output = bool;

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.try_extend(&[data])
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        let end = self.pos.checked_add(data.len()).ok_or(postcard::Error::SerializeBufferFull)?;
        match self.expected.get(self.pos..end) {
            Some(slice) if slice == data => {
                self.pos = end;
                Ok(())
            }
            _ => Err(postcard::Error::SerializeBufferFull),
        }
    }

    fn finalize(self) -> postcard::Result<bool> {
        Ok(self.pos == self.expected.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_reject_junk() {
        let k = OrderKey { seq: 300, upgrade: UpgradeId([9; 16]) };
        let mut buf = [0u8; 64];
        let bytes = encode(&k, &mut buf).unwrap().to_vec();
        assert_eq!(decode::<OrderKey>(&bytes).unwrap(), k);
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(decode::<OrderKey>(&trailing), Err(DecodeError::TrailingBytes));
        assert_eq!(decode::<OrderKey>(&bytes[..3]), Err(DecodeError::Truncated));
        // An overlong varint for seq = 300 (0xac 0x02) as 0xac 0x82 0x00.
        let mut overlong = std::vec![FORMAT_VERSION, 0xac, 0x82, 0x00];
        overlong.extend_from_slice(&[9; 16]);
        assert_eq!(decode::<OrderKey>(&overlong), Err(DecodeError::NonCanonical));
    }

    /// Every encoding starts with the format version; any other leading
    /// byte is refused as an unknown version before a byte of the value is
    /// read, by value and in place, and nothing is an empty encoding.
    #[test]
    fn the_format_version_leads_and_is_checked() {
        let k = OrderKey { seq: 300, upgrade: UpgradeId([9; 16]) };
        let mut buf = [0u8; 64];
        let bytes = encode(&k, &mut buf).unwrap().to_vec();
        assert_eq!(bytes[0], 1);
        assert_eq!(&bytes[1..3], &[0xac, 0x02], "then the value, postcard-encoded");
        assert_eq!(encoded_len(&k), bytes.len());
        for version in [0u8, 2, 0xff] {
            let mut other = bytes.clone();
            other[0] = version;
            assert_eq!(decode::<OrderKey>(&other), Err(DecodeError::UnknownVersion { version }));
            let mut place = k;
            assert_eq!(decode_into(&other, &mut place), Err(DecodeError::UnknownVersion { version }));
        }
        assert_eq!(decode::<OrderKey>(&[]), Err(DecodeError::Truncated));
        assert_eq!(encode(&k, &mut []), Err(EncodeError::BufferTooSmall));
        assert_eq!(encode(&k, &mut buf[..bytes.len() - 1]), Err(EncodeError::BufferTooSmall));
    }

    /// Two quorums of `t` among `n` guardians share more than `f` of them
    /// (so a correct one), and the `n - f` correct ones reach `t`, for every
    /// size up to the capacity and every `F` it tolerates.
    #[test]
    fn guardian_threshold_keeps_quorums_meeting() {
        assert_eq!(guardian_threshold(4, 1), 3);
        assert_eq!(guardian_threshold(16, 5), 11);
        assert_eq!(guardian_threshold(6, 1), 4, "2F + 1 = 3 would let two quorums of 6 miss each other");
        for n in 1..=64usize {
            for f in 0..=((n - 1) / 3) as u8 {
                let t = guardian_threshold(n, f);
                assert!(2 * t > n + usize::from(f), "n {n} f {f}: quorums of {t} need not meet in a correct one");
                assert!(t <= n - usize::from(f), "n {n} f {f}: correct guardians cannot reach {t}");
            }
        }
    }

    #[test]
    fn over_capacity_is_refused() {
        // A resource list claiming 17 entries.
        let mut bytes = std::vec![FORMAT_VERSION, 17u8];
        bytes.extend(core::iter::repeat_n(1u8, 17));
        assert_eq!(decode::<Vec<ResourceId, MAX_RESOURCES>>(&bytes), Err(DecodeError::OverCapacity));
        bytes[1] = 16;
        bytes.pop();
        assert_eq!(decode::<Vec<ResourceId, MAX_RESOURCES>>(&bytes).unwrap().len(), 16);
    }
}
