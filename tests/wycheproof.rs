//! Project Wycheproof's P-256 vectors through the crate's own wrappers.
//!
//! - ECDSA P-256 with SHA-256, DER and IEEE P1363 (`r || s`) signatures:
//!   [`Signature::verify`] over the SHA-256 prehash of the message, with the
//!   public key parsed by [`PublicKey::from_sec1`] from its uncompressed
//!   point. A DER signature is parsed here, strictly (minimal lengths and
//!   integers, no trailing bytes); one that does not parse is a rejection.
//! - ECDH P-256, with the peer key as a SEC1 point and as an X.509
//!   `SubjectPublicKeyInfo` for a named P-256 curve: [`shared_secret`] with
//!   [`ReplicaSecretKey::from_bytes`]. A key that does not parse (or names
//!   anything but P-256) is a rejection.
//!
//! Every "valid" vector must be accepted (with the expected shared secret),
//! every "invalid" one rejected; "acceptable" ones may go either way and are
//! counted.

use bft_upgrade::crypto::{shared_secret, Digest, PublicKey, ReplicaSecretKey, Signature};
use sha2::{Digest as _, Sha256};
use wycheproof::TestResult;

#[derive(Default, Debug)]
struct Counts {
    valid_passed: usize,
    invalid_rejected: usize,
    acceptable_passed: usize,
    acceptable_rejected: usize,
    failures: Vec<String>,
}

impl Counts {
    fn record(&mut self, set: &str, id: usize, comment: &str, expected: TestResult, accepted: bool) {
        match (expected, accepted) {
            (TestResult::Valid, true) => self.valid_passed += 1,
            (TestResult::Invalid, false) => self.invalid_rejected += 1,
            (TestResult::Acceptable, true) => self.acceptable_passed += 1,
            (TestResult::Acceptable, false) => self.acceptable_rejected += 1,
            (e, a) => self.failures.push(format!("{set} #{id} ({comment}): expected {e:?}, accepted = {a}")),
        }
    }

    fn finish(self, what: &str) {
        println!(
            "{what}: {} valid accepted, {} invalid rejected, {} acceptable ({} accepted, {} rejected)",
            self.valid_passed,
            self.invalid_rejected,
            self.acceptable_passed + self.acceptable_rejected,
            self.acceptable_passed,
            self.acceptable_rejected
        );
        assert!(self.failures.is_empty(), "{what}: {} mismatches:\n{}", self.failures.len(), self.failures.join("\n"));
        assert!(self.valid_passed > 0 && self.invalid_rejected > 0, "{what}: no vectors ran");
    }
}

// ---- strict DER --------------------------------------------------------------

/// A DER length: short form, or long form with the fewest bytes.
fn der_len(bytes: &[u8]) -> Option<(usize, &[u8])> {
    let (&first, rest) = bytes.split_first()?;
    match first {
        0..=0x7f => Some((usize::from(first), rest)),
        0x81 => {
            let (&len, rest) = rest.split_first()?;
            (len >= 0x80).then_some((usize::from(len), rest))
        }
        0x82 => {
            let (hi, rest) = rest.split_first_chunk::<2>()?;
            let len = usize::from(u16::from_be_bytes(*hi));
            (len >= 0x100).then_some((len, rest))
        }
        _ => None,
    }
}

/// A DER element with tag `tag`: its contents and what follows.
fn der_element(bytes: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = bytes.split_first()?;
    if t != tag {
        return None;
    }
    let (len, rest) = der_len(rest)?;
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// A non-negative, minimally encoded INTEGER of at most 32 bytes of
/// magnitude, left-padded to 32 bytes.
fn der_uint(bytes: &[u8]) -> Option<([u8; 32], &[u8])> {
    let (content, rest) = der_element(bytes, 0x02)?;
    let (&first, tail) = content.split_first()?;
    if first & 0x80 != 0 {
        return None; // negative
    }
    let magnitude = if first == 0 {
        if tail.first().is_some_and(|b| b & 0x80 == 0) {
            return None; // a leading zero that was not needed
        }
        tail
    } else {
        content
    };
    if magnitude.len() > 32 {
        return None;
    }
    let mut out = [0u8; 32];
    out[32 - magnitude.len()..].copy_from_slice(magnitude);
    Some((out, rest))
}

/// `SEQUENCE { INTEGER r, INTEGER s }` in strict DER, as `r || s`.
fn der_signature(der: &[u8]) -> Option<[u8; 64]> {
    let (body, trailing) = der_element(der, 0x30)?;
    if !trailing.is_empty() {
        return None;
    }
    let (r, body) = der_uint(body)?;
    let (s, body) = der_uint(body)?;
    if !body.is_empty() {
        return None;
    }
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(&r);
    out[32..].copy_from_slice(&s);
    Some(out)
}

/// The point inside a `SubjectPublicKeyInfo` for `id-ecPublicKey` on the
/// named curve P-256 (`prime256v1`); anything else (explicit parameters,
/// other curves, malformed DER) is `None`.
fn spki_point(der: &[u8]) -> Option<&[u8]> {
    // SEQUENCE { SEQUENCE { OID 1.2.840.10045.2.1, OID 1.2.840.10045.3.1.7 } BIT STRING }
    const ALGORITHM: [u8; 21] = [
        0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d,
        0x03, 0x01, 0x07,
    ];
    let (body, trailing) = der_element(der, 0x30)?;
    if !trailing.is_empty() {
        return None;
    }
    let rest = body.strip_prefix(&ALGORITHM[..])?;
    let (bits, rest) = der_element(rest, 0x03)?;
    if !rest.is_empty() {
        return None;
    }
    // No unused bits in a point's bit string.
    bits.strip_prefix(&[0u8][..])
}

// ---- ECDSA -------------------------------------------------------------------

fn ecdsa(name: wycheproof::ecdsa::TestName, p1363: bool) -> Counts {
    let set = wycheproof::ecdsa::TestSet::load(name).expect("the vectors load");
    let label = format!("{name:?}");
    let mut counts = Counts::default();
    for group in &set.test_groups {
        let key = PublicKey::from_sec1(&group.key.key);
        for test in &group.tests {
            let digest = Digest(Sha256::digest(&test.msg[..]).into());
            let sig = if p1363 { <[u8; 64]>::try_from(&test.sig[..]).ok() } else { der_signature(&test.sig) };
            let accepted = match (&key, sig) {
                (Ok(key), Some(sig)) => Signature::from_bytes(&sig).verify(key, &digest).is_ok(),
                _ => false,
            };
            // The key's compressed form (how the crate carries keys) must
            // give the same answer.
            if let (Ok(key), Some(sig)) = (&key, sig) {
                let again = PublicKey::from_sec1(&key.to_compressed()).expect("a key's compressed form parses");
                assert_eq!(Signature::from_bytes(&sig).verify(&again, &digest).is_ok(), accepted);
            }
            counts.record(&label, test.tc_id, &test.comment, test.result, accepted);
        }
    }
    counts
}

#[test]
fn ecdsa_p256_sha256_der() {
    ecdsa(wycheproof::ecdsa::TestName::EcdsaSecp256r1Sha256, false).finish("ECDSA P-256 SHA-256 (DER)");
}

#[test]
fn ecdsa_p256_sha256_p1363() {
    ecdsa(wycheproof::ecdsa::TestName::EcdsaSecp256r1Sha256P1363, true).finish("ECDSA P-256 SHA-256 (P1363)");
}

// ---- ECDH --------------------------------------------------------------------

/// The private key as 32 big-endian bytes: leading zeros trimmed, then
/// left-padded; `None` if it is longer than 32 bytes of magnitude.
fn private_key(bytes: &[u8]) -> Option<[u8; 32]> {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    let magnitude = &bytes[start..];
    if magnitude.len() > 32 {
        return None;
    }
    let mut out = [0u8; 32];
    out[32 - magnitude.len()..].copy_from_slice(magnitude);
    Some(out)
}

fn ecdh(name: wycheproof::ecdh::TestName, spki: bool) -> Counts {
    let set = wycheproof::ecdh::TestSet::load(name).expect("the vectors load");
    let label = format!("{name:?}");
    let mut counts = Counts::default();
    for group in &set.test_groups {
        for test in &group.tests {
            let point = if spki { spki_point(&test.public_key) } else { Some(&test.public_key[..]) };
            let public = point.and_then(|p| PublicKey::from_sec1(p).ok());
            let secret = private_key(&test.private_key).and_then(|k| ReplicaSecretKey::from_bytes(&k).ok());
            let shared = match (&secret, &public) {
                (Some(k), Some(p)) => shared_secret(k, p).ok(),
                _ => None,
            };
            let accepted = match &shared {
                Some(s) if s.as_slice() == &test.shared_secret[..] => true,
                Some(_) if test.result != TestResult::Invalid => {
                    counts.failures.push(format!("{label} #{}: wrong shared secret", test.tc_id));
                    continue;
                }
                Some(_) => true,
                None => false,
            };
            counts.record(&label, test.tc_id, &test.comment, test.result, accepted);
        }
    }
    counts
}

#[test]
fn ecdh_p256_sec1_points() {
    ecdh(wycheproof::ecdh::TestName::EcdhSecp256r1Ecpoint, false).finish("ECDH P-256 (SEC1 points)");
}

#[test]
fn ecdh_p256_spki() {
    ecdh(wycheproof::ecdh::TestName::EcdhSecp256r1, true).finish("ECDH P-256 (SubjectPublicKeyInfo)");
}

// ---- the parser itself ---------------------------------------------------------

#[test]
fn der_parser_is_strict() {
    // r = 1, s = 2.
    let good = [0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x02];
    let sig = der_signature(&good).expect("parses");
    assert_eq!((sig[31], sig[63]), (1, 2));
    // Long-form length where short form fits; a needless leading zero; a
    // negative integer; a trailing byte; a wrong tag.
    assert!(der_signature(&[0x30, 0x81, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x02]).is_none());
    assert!(der_signature(&[0x30, 0x07, 0x02, 0x02, 0x00, 0x01, 0x02, 0x01, 0x02]).is_none());
    assert!(der_signature(&[0x30, 0x06, 0x02, 0x01, 0x81, 0x02, 0x01, 0x02]).is_none());
    assert!(der_signature(&[0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x02, 0x00]).is_none());
    assert!(der_signature(&[0x31, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x02]).is_none());
    assert_eq!(private_key(&[0, 0, 5]).map(|k| k[31]), Some(5));
    assert!(private_key(&[1; 33]).is_none());
}
