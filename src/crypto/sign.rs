//! ECDSA P-256 over piece-header digests.
//!
//! The deployer signs the domain-separated SHA-256 digest of a piece header
//! (a prehash), so the header never has to sit in one buffer to be signed or
//! verified: it is hashed as it is encoded.

use p256::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use p256::ecdsa::{SigningKey, VerifyingKey};
use p256::elliptic_curve::Generate;
use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{Digest, PublicKey};
use crate::error::CryptoError;

/// An ECDSA P-256 signature, `r || s`.
/// The default (all zeros) verifies nothing: a value to decode into.
#[derive(Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Signature {
    r: [u8; 32],
    s: [u8; 32],
}

impl Signature {
    /// From the 64-byte `r || s` encoding (checked on verification).
    pub fn from_bytes(bytes: &[u8; 64]) -> Self {
        let mut r = [0u8; 32];
        let mut s = [0u8; 32];
        let (a, b) = bytes.split_at(32);
        r.copy_from_slice(a);
        s.copy_from_slice(b);
        Self { r, s }
    }

    /// The 64-byte `r || s` encoding.
    pub fn to_bytes(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        let (a, b) = out.split_at_mut(32);
        a.copy_from_slice(&self.r);
        b.copy_from_slice(&self.s);
        out
    }

    /// Verifies this signature over `prehash` under `signer`.
    ///
    /// # Errors
    /// [`CryptoError::InvalidPublicKey`] when `signer` is not a point;
    /// [`CryptoError::BadSignature`] when the signature is malformed or does
    /// not verify.
    pub fn verify(&self, signer: &PublicKey, prehash: &Digest) -> Result<(), CryptoError> {
        let vk = VerifyingKey::from_sec1_bytes(&signer.to_compressed()).map_err(|_| CryptoError::InvalidPublicKey)?;
        let sig = p256::ecdsa::Signature::from_scalars(self.r, self.s).map_err(|_| CryptoError::BadSignature)?;
        vk.verify_prehash(&prehash.0, &sig).map_err(|_| CryptoError::BadSignature)
    }
}

impl core::fmt::Debug for Signature {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Signature(..)")
    }
}

/// A deployer's signing key. Zeroized on drop (by `p256`); no `Debug` bytes.
#[derive(Clone)]
pub struct DeployerKey(SigningKey);

impl DeployerKey {
    /// A fresh random key.
    pub fn random<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        Self(SigningKey::generate_from_rng(rng))
    }

    /// From the 32-byte big-endian scalar.
    ///
    /// # Errors
    /// [`CryptoError::InvalidSecretKey`] for zero or a value not below the
    /// group order.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, CryptoError> {
        SigningKey::from_bytes(&(*bytes).into()).map(Self).map_err(|_| CryptoError::InvalidSecretKey)
    }

    /// The 32-byte big-endian scalar, for the host's key storage.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes().into())
    }

    /// The public key that groups' configurations authorize.
    pub fn public_key(&self) -> PublicKey {
        PublicKey::from_point(&p256::PublicKey::from(self.0.verifying_key()))
    }

    /// Signs a prehashed digest (RFC 6979 deterministic nonce).
    ///
    /// # Errors
    /// [`CryptoError::BadSignature`] if signing fails (it does not for a
    /// valid key; kept so no path panics).
    pub fn sign(&self, prehash: &Digest) -> Result<Signature, CryptoError> {
        let sig: p256::ecdsa::Signature = self.0.sign_prehash(&prehash.0).map_err(|_| CryptoError::BadSignature)?;
        let (r, s) = sig.split_bytes();
        Ok(Signature { r: r.into(), s: s.into() })
    }
}

// The inner `SigningKey` zeroizes itself on drop.
impl zeroize::ZeroizeOnDrop for DeployerKey {}

impl core::fmt::Debug for DeployerKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("DeployerKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chacha20::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn sign_verify_and_tamper() {
        let mut rng = ChaCha20Rng::from_seed([3; 32]);
        let k = DeployerKey::random(&mut rng);
        let other = DeployerKey::random(&mut rng);
        let d = Digest([5; 32]);
        let sig = k.sign(&d).unwrap();
        assert!(sig.verify(&k.public_key(), &d).is_ok());
        assert_eq!(sig.verify(&other.public_key(), &d), Err(CryptoError::BadSignature));
        let mut d2 = d;
        d2.0[0] ^= 1;
        assert_eq!(sig.verify(&k.public_key(), &d2), Err(CryptoError::BadSignature));
        let mut bytes = sig.to_bytes();
        for i in 0..64 {
            bytes[i] ^= 0x80;
            assert!(Signature::from_bytes(&bytes).verify(&k.public_key(), &d).is_err());
            bytes[i] ^= 0x80;
        }
        assert!(Signature::from_bytes(&[0; 64]).verify(&k.public_key(), &d).is_err());
    }
}
