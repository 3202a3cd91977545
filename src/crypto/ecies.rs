//! Encryption to one replica (or guardian): ECIES over P-256.
//!
//! One ephemeral key per piece; per recipient one ECDH, HKDF-SHA256 to a
//! box key bound to the upgrade, group, recipient index and ephemeral key,
//! and one ChaCha20-Poly1305 box. Each box key is used once, so the nonce is
//! fixed at zero.

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag};
use hkdf::Hkdf;
use p256::ecdh::EphemeralSecret;
use p256::elliptic_curve::Generate;
use p256::NonZeroScalar;
use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::{Binding, Domain, PublicKey};
use crate::error::CryptoError;

/// Length of a box's authentication tag.
pub const BOX_TAG_LEN: usize = 16;

/// What a box holds: three 32-byte secrets.
///
/// In replica custody: the payload key `k_g`, the replica's share of `s_g`
/// and its share of `c` (as share values; the share index is the recipient
/// index). In guardian custody a replica's box holds `k_g` and its
/// membership token, and a guardian's box its two shares.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct BoxContents {
    /// First slot (`k_g`, or a guardian's `s_g` share).
    pub first: [u8; 32],
    /// Second slot.
    pub second: [u8; 32],
    /// Third slot.
    pub third: [u8; 32],
}

impl core::fmt::Debug for BoxContents {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("BoxContents(<redacted>)")
    }
}

/// An AEAD box: 96 bytes of ciphertext and a 16-byte tag.
#[derive(Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SealedBox {
    ct: [[u8; 32]; 3],
    tag: [u8; BOX_TAG_LEN],
}

impl core::fmt::Debug for SealedBox {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SealedBox(..)")
    }
}

impl SealedBox {
    /// Flips one bit of the ciphertext or tag (`index` modulo 112); for tests
    /// of tamper detection.
    #[doc(hidden)]
    pub fn flip_bit(&mut self, index: usize) {
        let i = index % 112;
        let byte = if i < 96 {
            self.ct.get_mut(i / 32).and_then(|c| c.get_mut(i % 32))
        } else {
            self.tag.get_mut(i.saturating_sub(96))
        };
        if let Some(b) = byte {
            *b ^= 1;
        }
    }
}

/// A replica's (or guardian's) P-256 secret key.
///
/// Zeroized on drop; it has no `Debug` output of its bytes.
#[derive(Clone)]
pub struct ReplicaSecretKey(NonZeroScalar);

impl ReplicaSecretKey {
    /// A fresh random key.
    pub fn random<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        Self(NonZeroScalar::generate_from_rng(rng))
    }

    /// From the 32-byte big-endian scalar.
    ///
    /// # Errors
    /// [`CryptoError::InvalidSecretKey`] for zero or a value not below the
    /// group order.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, CryptoError> {
        let s = p256::SecretKey::from_bytes(&(*bytes).into()).map_err(|_| CryptoError::InvalidSecretKey)?;
        Ok(Self(s.to_nonzero_scalar()))
    }

    /// The 32-byte big-endian scalar, for the host's key storage.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes().into())
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey::from_point(&p256::PublicKey::from_secret_scalar(&self.0))
    }
}

impl Drop for ReplicaSecretKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl ZeroizeOnDrop for ReplicaSecretKey {}

impl core::fmt::Debug for ReplicaSecretKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("ReplicaSecretKey(<redacted>)")
    }
}

/// The deployer's side: one ephemeral key, many boxes.
pub struct BoxSealer {
    ephemeral: EphemeralSecret,
    public: PublicKey,
}

impl BoxSealer {
    /// Draws the piece's ephemeral key.
    pub fn new<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let ephemeral = EphemeralSecret::generate_from_rng(rng);
        let public = PublicKey::from_point(&ephemeral.public_key());
        Self { ephemeral, public }
    }

    /// The ephemeral public key, which goes into the piece.
    pub fn ephemeral_public(&self) -> PublicKey {
        self.public
    }

    /// Seals `contents` to `recipient` under `binding` (upgrade, group,
    /// recipient index, and the domain's label through the key derivation).
    ///
    /// # Errors
    /// [`CryptoError::InvalidPublicKey`] when `recipient` is not a point.
    pub fn seal(
        &self,
        recipient: &PublicKey,
        binding: &Binding,
        contents: &BoxContents,
    ) -> Result<SealedBox, CryptoError> {
        let shared = self.ephemeral.diffie_hellman(&recipient.to_point()?);
        let cipher = box_cipher(shared.raw_secret_bytes(), &self.public, binding)?;
        let mut buf = Zeroizing::new([0u8; 96]);
        for (dst, src) in buf.chunks_mut(32).zip([&contents.first, &contents.second, &contents.third]) {
            dst.copy_from_slice(src);
        }
        let aad = binding.encode();
        let tag = cipher
            .encrypt_inout_detached(&Nonce::default(), &aad, buf.as_mut_slice().into())
            .map_err(|_| CryptoError::OpenFailed)?;
        let mut ct = [[0u8; 32]; 3];
        for (dst, src) in ct.iter_mut().zip(buf.chunks(32)) {
            dst.copy_from_slice(src);
        }
        Ok(SealedBox { ct, tag: tag.into() })
    }
}

/// P-256 ECDH: the x-coordinate of `key · public`, the input of every box
/// key derivation.
///
/// # Errors
/// [`CryptoError::InvalidPublicKey`] when `public` is not a point on P-256
/// (off the curve, the identity, or not a valid encoding).
pub fn shared_secret(key: &ReplicaSecretKey, public: &PublicKey) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
    let shared = p256::ecdh::diffie_hellman(key.0, public.to_point()?.as_affine());
    Ok(Zeroizing::new((*shared.raw_secret_bytes()).into()))
}

/// Opens a box sealed to `key` under `ephemeral` and `binding`.
///
/// # Errors
/// [`CryptoError::InvalidPublicKey`] for a bad ephemeral key;
/// [`CryptoError::OpenFailed`] for a box that is not ours, tampered with,
/// or bound to another upgrade, group or index.
pub fn open_box(
    key: &ReplicaSecretKey,
    ephemeral: &PublicKey,
    binding: &Binding,
    sealed: &SealedBox,
) -> Result<BoxContents, CryptoError> {
    let shared = shared_secret(key, ephemeral)?;
    let cipher = box_cipher(shared.as_slice(), ephemeral, binding)?;
    let mut buf = Zeroizing::new([0u8; 96]);
    for (dst, src) in buf.chunks_mut(32).zip(sealed.ct.iter()) {
        dst.copy_from_slice(src);
    }
    let aad = binding.encode();
    cipher
        .decrypt_inout_detached(&Nonce::default(), &aad, buf.as_mut_slice().into(), &Tag::from(sealed.tag))
        .map_err(|_| CryptoError::OpenFailed)?;
    let mut out = BoxContents { first: [0; 32], second: [0; 32], third: [0; 32] };
    for (dst, src) in [&mut out.first, &mut out.second, &mut out.third].into_iter().zip(buf.chunks(32)) {
        dst.copy_from_slice(src);
    }
    Ok(out)
}

fn box_cipher(shared_x: &[u8], ephemeral: &PublicKey, binding: &Binding) -> Result<ChaCha20Poly1305, CryptoError> {
    let hk = Hkdf::<Sha256>::new(Some(Domain::BoxKey.label()), shared_x);
    let mut key = Zeroizing::new([0u8; 32]);
    hk.expand_multi_info(&[&binding.encode(), &ephemeral.to_compressed()], key.as_mut_slice())
        .map_err(|_| CryptoError::OpenFailed)?;
    Ok(ChaCha20Poly1305::new(&Key::from(*key)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{GroupId, UpgradeId};
    use chacha20::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn contents() -> BoxContents {
        BoxContents { first: [1; 32], second: [2; 32], third: [3; 32] }
    }

    #[test]
    fn round_trip_and_binding() {
        let mut rng = ChaCha20Rng::from_seed([1; 32]);
        let alice = ReplicaSecretKey::random(&mut rng);
        let bob = ReplicaSecretKey::random(&mut rng);
        let sealer = BoxSealer::new(&mut rng);
        let b = Binding::group(UpgradeId([4; 16]), GroupId(2)).at(1);
        let sealed = sealer.seal(&alice.public_key(), &b, &contents()).unwrap();
        let eph = sealer.ephemeral_public();
        assert_eq!(open_box(&alice, &eph, &b, &sealed).unwrap(), contents());
        assert_eq!(open_box(&bob, &eph, &b, &sealed), Err(CryptoError::OpenFailed));
        assert_eq!(open_box(&alice, &eph, &b.at(2), &sealed), Err(CryptoError::OpenFailed));
        for i in 0..112 {
            let mut t = sealed.clone();
            t.flip_bit(i);
            assert_eq!(open_box(&alice, &eph, &b, &t), Err(CryptoError::OpenFailed), "bit {i}");
        }
    }

    #[test]
    fn key_bytes_round_trip() {
        let mut rng = ChaCha20Rng::from_seed([2; 32]);
        let k = ReplicaSecretKey::random(&mut rng);
        let k2 = ReplicaSecretKey::from_bytes(&k.to_bytes()).unwrap();
        assert_eq!(k.public_key(), k2.public_key());
        assert!(ReplicaSecretKey::from_bytes(&[0; 32]).is_err());
        assert!(ReplicaSecretKey::from_bytes(&[0xff; 32]).is_err());
    }
}
