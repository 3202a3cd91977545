//! Thin, typed wrappers over RustCrypto primitives.
//!
//! Nothing here is a hand-rolled primitive: digests are `sha2`, sharing uses
//! `p256`'s scalar field, encryption is `p256` ECDH + `hkdf` +
//! `chacha20poly1305`, signatures are `p256` ECDSA. What this module adds is
//! the binding: every digest and key carries a domain label, the upgrade id,
//! the group id and an index, so a value made for one place cannot be used
//! in another.

mod ecies;
mod payload;
mod shamir;
mod sign;

pub use ecies::{open_box, shared_secret, BoxContents, BoxSealer, ReplicaSecretKey, SealedBox, BOX_TAG_LEN};
pub use payload::{GroupKey, PayloadChecker, PayloadOpener, PayloadRef, PayloadSealer, CHUNK_TAG_LEN};
pub use shamir::{reconstruct, split, Share, ShareKind, MAX_SHARES};
pub use sign::{DeployerKey, Signature};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use subtle::{Choice, ConstantTimeEq};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::CryptoError;
use crate::ids::{GroupId, UpgradeId};

/// Domain-separation labels: one per use of SHA-256 or HKDF in the crate.
///
/// The label is hashed first, length-prefixed, so no two domains can produce
/// the same input bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Domain {
    /// `D(τ)`: digest of the trigger code.
    Trigger,
    /// `D(c)`: digest of the cancellation code.
    Cancel,
    /// `D(a_r)` of a share of the group secret `s_g`.
    SecretShare,
    /// `D(a_r)` of a share of the cancellation code `c`.
    CancelShare,
    /// The signed digest of a piece header.
    PieceHeader,
    /// The digest of a group's membership (its replica keys, in order).
    Members,
    /// HKDF info for a per-replica box key.
    BoxKey,
    /// HKDF info for the payload key derived from `k_g`.
    PayloadKey,
    /// Digest of a sealed payload's ciphertext.
    Payload,
    /// Digest of a membership token handed to guardians.
    Token,
    /// A sequencer's signed (sequence, upgrade, deployer) triple.
    Sequence,
    /// A group replica's replicated state (the part every correct replica
    /// of the group shares).
    Replicated,
    /// HKDF info for a piece's ephemeral sealing key, derived from the
    /// plan's master seed and everything the piece seals for.
    Ephemeral,
    /// The digest a group keeps of a piece's next membership.
    NextMembership,
    /// A deployer's signed word that an upgrade finished everywhere.
    Retirement,
}

impl Domain {
    const fn label(self) -> &'static [u8] {
        match self {
            Self::Trigger => b"bft-upgrade/v1/trigger",
            Self::Cancel => b"bft-upgrade/v1/cancel",
            Self::SecretShare => b"bft-upgrade/v1/secret-share",
            Self::CancelShare => b"bft-upgrade/v1/cancel-share",
            Self::PieceHeader => b"bft-upgrade/v1/piece-header",
            Self::Members => b"bft-upgrade/v1/members",
            Self::BoxKey => b"bft-upgrade/v1/box-key",
            Self::PayloadKey => b"bft-upgrade/v1/payload-key",
            Self::Payload => b"bft-upgrade/v1/payload",
            Self::Token => b"bft-upgrade/v1/token",
            Self::Ephemeral => b"bft-upgrade/v1/ephemeral",
            Self::Sequence => b"bft-upgrade/v1/sequence",
            Self::Replicated => b"bft-upgrade/v1/replicated",
            Self::NextMembership => b"bft-upgrade/v1/next-membership",
            Self::Retirement => b"bft-upgrade/v1/retirement",
        }
    }
}

/// Where a digest or key belongs: the upgrade, the group and an index (a
/// share or replica index; `0` where there is none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binding {
    /// The upgrade.
    pub upgrade: UpgradeId,
    /// The group, or [`GroupId::ALL`] for values common to every group.
    pub group: GroupId,
    /// The share or replica index.
    pub index: u16,
}

impl Binding {
    /// A binding for a value common to the whole upgrade (`D(τ)`, `D(c)`).
    pub const fn upgrade(upgrade: UpgradeId) -> Self {
        Self { upgrade, group: GroupId::ALL, index: 0 }
    }

    /// A binding for a value of one group.
    pub const fn group(upgrade: UpgradeId, group: GroupId) -> Self {
        Self { upgrade, group, index: 0 }
    }

    /// The same binding with another index.
    #[must_use]
    pub const fn at(self, index: u16) -> Self {
        Self { index, ..self }
    }

    /// The same binding with `k` added to its index (share and box `k`
    /// under a base binding).
    #[must_use]
    pub const fn offset(self, k: u16) -> Self {
        Self { index: self.index.saturating_add(k), ..self }
    }

    /// The bytes hashed after the domain label.
    fn encode(&self) -> [u8; 22] {
        let mut out = [0u8; 22];
        let (u, rest) = out.split_at_mut(16);
        u.copy_from_slice(&self.upgrade.0);
        let (g, i) = rest.split_at_mut(4);
        g.copy_from_slice(&self.group.0.to_be_bytes());
        i.copy_from_slice(&self.index.to_be_bytes());
        out
    }
}

/// A streaming, domain-separated SHA-256: `D(label, binding, data...)`.
#[derive(Clone)]
pub(crate) struct Hasher(Sha256);

impl Hasher {
    pub(crate) fn new(domain: Domain, binding: &Binding) -> Self {
        let mut h = Sha256::new();
        let label = domain.label();
        // Labels are short constants; the length fits a byte.
        h.update([u8::try_from(label.len()).unwrap_or(u8::MAX)]);
        h.update(label);
        h.update(binding.encode());
        Self(h)
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    pub(crate) fn finish(self) -> Digest {
        Digest(self.0.finalize().into())
    }
}

/// 32 bytes of key material from the secret `ikm` for `context` (HKDF-SHA256
/// salted with the domain label).
pub(crate) fn derive_seed(domain: Domain, ikm: &[u8; 32], context: &Digest) -> zeroize::Zeroizing<[u8; 32]> {
    let mut out = zeroize::Zeroizing::new([0u8; 32]);
    let hk = hkdf::Hkdf::<Sha256>::new(Some(domain.label()), ikm);
    // 32 bytes are far below HKDF-SHA256's 8160-byte limit.
    let _ = hk.expand(&context.0, out.as_mut_slice());
    out
}

/// What a sequencer signs for `upgrade`: its order sequence number `seq`
/// and the deployer the id names (section 4.4's endorsed sequence numbers).
pub fn sequence_digest(upgrade: UpgradeId, seq: u64) -> Digest {
    let mut h = Hasher::new(Domain::Sequence, &Binding::upgrade(upgrade));
    h.update(&seq.to_le_bytes());
    h.update(&upgrade.deployer().0.to_le_bytes());
    h.finish()
}

/// What a deployer signs to retire `upgrade`
/// ([`Retirement`](crate::wire::Retirement)): the upgrade and the deployer
/// its id names.
pub fn retirement_digest(upgrade: UpgradeId) -> Digest {
    let mut h = Hasher::new(Domain::Retirement, &Binding::upgrade(upgrade));
    h.update(&upgrade.deployer().0.to_le_bytes());
    h.finish()
}

/// `D(x)`: the domain-separated SHA-256 of `data` under `binding`.
pub fn digest(domain: Domain, binding: &Binding, data: &[u8]) -> Digest {
    let mut h = Hasher::new(domain, binding);
    h.update(data);
    h.finish()
}

/// A 32-byte SHA-256 digest. Equality is constant time.
#[derive(Clone, Copy, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Digest(pub [u8; 32]);

/// Constant-time equality of two 32-byte strings, a 64-bit word at a time
/// (subtle's per-element barrier makes byte-wise comparison 8× slower).
fn ct_eq_32(a: &[u8; 32], b: &[u8; 32]) -> Choice {
    let word = |c: &[u8]| {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        u64::from_le_bytes(w)
    };
    a.chunks_exact(8).zip(b.chunks_exact(8)).fold(Choice::from(1), |acc, (x, y)| acc & word(x).ct_eq(&word(y)))
}

impl ConstantTimeEq for Digest {
    fn ct_eq(&self, other: &Self) -> Choice {
        ct_eq_32(&self.0, &other.0)
    }
}

impl PartialEq for Digest {
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other).into()
    }
}

impl Eq for Digest {}

impl core::fmt::Debug for Digest {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Digests are public; a short prefix is enough to tell them apart.
        let [a, b, c, d, ..] = self.0;
        write!(f, "Digest({a:02x}{b:02x}{c:02x}{d:02x}..)")
    }
}

/// A 32-byte code: a trigger code `τ`, a cancellation code `c`, a group
/// secret `s_g` or a version code.
///
/// Codes are secrets until their outcome is known, so they are zeroized on
/// drop, compared in constant time and never printed.
#[derive(Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop, Default)]
pub struct Code(pub(crate) [u8; 32]);

impl Code {
    /// Wraps raw bytes (e.g. a genesis version code from configuration).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw bytes. Handle with care: this is a secret until its outcome
    /// is public.
    pub const fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// `self ^= other`, byte by byte (how `τ` is built from the `s_g`).
    pub fn xor_assign(&mut self, other: &Code) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a ^= *b;
        }
    }

    /// The code's digest under `domain` and `binding`.
    pub fn digest(&self, domain: Domain, binding: &Binding) -> Digest {
        digest(domain, binding, &self.0)
    }

    /// Checks the code against an expected digest, in constant time.
    ///
    /// # Errors
    /// [`CryptoError::CodeMismatch`] when the digest differs.
    pub fn check(&self, domain: Domain, binding: &Binding, expected: &Digest) -> Result<(), CryptoError> {
        if bool::from(self.digest(domain, binding).ct_eq(expected)) {
            Ok(())
        } else {
            Err(CryptoError::CodeMismatch)
        }
    }
}

impl ConstantTimeEq for Code {
    fn ct_eq(&self, other: &Self) -> Choice {
        ct_eq_32(&self.0, &other.0)
    }
}

impl PartialEq for Code {
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other).into()
    }
}

impl Eq for Code {}

impl core::fmt::Debug for Code {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Code(<redacted>)")
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for Code {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(f, "Code(<redacted>)")
    }
}

/// A compressed SEC1 P-256 public key (33 bytes), as carried on the wire.
///
/// It is validated when used, not when decoded, so decoding stays cheap and
/// canonical; every use returns [`CryptoError::InvalidPublicKey`] for bytes
/// that are not a point.
/// The default (all zeros) is no valid key: a value to decode into.
#[derive(Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PublicKey {
    tag: u8,
    x: [u8; 32],
}

impl PublicKey {
    /// From 33 bytes of compressed SEC1 encoding (not checked here).
    pub fn from_compressed(bytes: [u8; 33]) -> Self {
        let [tag, x @ ..] = bytes;
        Self { tag, x }
    }

    /// The 33 bytes of compressed SEC1 encoding.
    pub fn to_compressed(&self) -> [u8; 33] {
        let mut out = [0u8; 33];
        let (t, x) = out.split_at_mut(1);
        t.copy_from_slice(&[self.tag]);
        x.copy_from_slice(&self.x);
        out
    }

    /// Parses any SEC1 encoding (compressed or not) and keeps it compressed.
    ///
    /// # Errors
    /// [`CryptoError::InvalidPublicKey`] when the bytes are not a point.
    pub fn from_sec1(bytes: &[u8]) -> Result<Self, CryptoError> {
        let pk = p256::PublicKey::from_sec1_bytes(bytes).map_err(|_| CryptoError::InvalidPublicKey)?;
        Ok(Self::from_point(&pk))
    }

    pub(crate) fn from_point(pk: &p256::PublicKey) -> Self {
        use p256::elliptic_curve::sec1::ToSec1Point;
        let point = pk.to_sec1_point(true);
        let mut bytes = [0u8; 33];
        let src = point.as_bytes();
        if let Some(dst) = bytes.get_mut(..src.len()) {
            dst.copy_from_slice(src);
        }
        Self::from_compressed(bytes)
    }

    pub(crate) fn to_point(self) -> Result<p256::PublicKey, CryptoError> {
        p256::PublicKey::from_sec1_bytes(&self.to_compressed()).map_err(|_| CryptoError::InvalidPublicKey)
    }
}

impl core::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let [a, b, c, ..] = self.x;
        write!(f, "PublicKey({:02x}:{a:02x}{b:02x}{c:02x}..)", self.tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_separate() {
        let b = Binding::group(UpgradeId([1; 16]), GroupId(7));
        let x = [9u8; 32];
        assert_ne!(digest(Domain::Trigger, &b, &x), digest(Domain::Cancel, &b, &x));
        assert_ne!(digest(Domain::Trigger, &b, &x), digest(Domain::Trigger, &b.at(1), &x));
        assert_ne!(
            digest(Domain::Trigger, &b, &x),
            digest(Domain::Trigger, &Binding::group(UpgradeId([1; 16]), GroupId(8)), &x)
        );
    }

    #[test]
    fn word_wise_equality_sees_every_byte() {
        let a = [0x5au8; 32];
        assert!(bool::from(ct_eq_32(&a, &a)));
        for i in 0..32 {
            for bit in 0..8 {
                let mut b = a;
                b[i] ^= 1 << bit;
                assert!(!bool::from(ct_eq_32(&a, &b)), "byte {i} bit {bit}");
                assert_ne!(Code(a), Code(b));
                assert_ne!(Digest(a), Digest(b));
            }
        }
    }

    #[test]
    fn code_check_is_exact() {
        let b = Binding::upgrade(UpgradeId([3; 16]));
        let code = Code([5; 32]);
        let d = code.digest(Domain::Trigger, &b);
        assert!(code.check(Domain::Trigger, &b, &d).is_ok());
        let mut other = code.clone();
        other.0[31] ^= 1;
        assert_eq!(other.check(Domain::Trigger, &b, &d), Err(CryptoError::CodeMismatch));
        assert_eq!(std::format!("{code:?}"), "Code(<redacted>)");
    }
}
