//! Chunked payload encryption (STREAM-style), for payloads larger than RAM.
//!
//! The payload is cut into chunks of `chunk_size` plaintext bytes (the last
//! one may be shorter, even empty); each is sealed with ChaCha20-Poly1305
//! under a key derived from `k_g`, with the nonce `index (8 bytes, BE) ||
//! 0 0 0 || last-flag`. A truncated, reordered, replayed or spliced stream
//! fails: the index and the last flag are authenticated. The piece carries
//! the ciphertext length, the chunk size and the ciphertext's digest, so a
//! host or installer can check the blob it stores without the key.
//!
//! Both ends work in a buffer the caller provides, one chunk at a time:
//! memory use does not depend on the payload's size.

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag};
use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::{Binding, Digest, Domain, Hasher};
use crate::error::{CryptoError, MisuseError};

/// Length of each chunk's authentication tag.
pub const CHUNK_TAG_LEN: usize = 16;

/// The smallest and largest plaintext chunk sizes accepted.
const CHUNK_SIZE_RANGE: core::ops::RangeInclusive<u32> = 64..=(1 << 24);

/// The symmetric key `k_g` of one group's piece. Zeroized on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupKey(pub(crate) [u8; 32]);

impl GroupKey {
    /// Wraps raw key bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    fn cipher(&self, binding: &Binding) -> Result<ChaCha20Poly1305, CryptoError> {
        let hk = Hkdf::<Sha256>::new(Some(Domain::PayloadKey.label()), &self.0);
        let mut key = Zeroizing::new([0u8; 32]);
        hk.expand(&binding.encode(), key.as_mut_slice()).map_err(|_| CryptoError::OpenFailed)?;
        Ok(ChaCha20Poly1305::new(&Key::from(*key)))
    }
}

impl core::fmt::Debug for GroupKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("GroupKey(<redacted>)")
    }
}

/// What a piece says about its sealed payload.
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PayloadRef {
    /// Total ciphertext length in bytes (chunks plus their tags).
    pub ciphertext_len: u64,
    /// Plaintext bytes per chunk (all chunks but the last).
    pub chunk_size: u32,
    /// Digest of the whole ciphertext.
    pub digest: Digest,
}

impl PayloadRef {
    /// The number of chunks, and the ciphertext length of the last one.
    fn layout(&self) -> Result<(u64, u64), CryptoError> {
        if !CHUNK_SIZE_RANGE.contains(&self.chunk_size) {
            return Err(CryptoError::PayloadStream);
        }
        let full = u64::from(self.chunk_size).saturating_add(CHUNK_TAG_LEN as u64);
        let len = self.ciphertext_len;
        if len < CHUNK_TAG_LEN as u64 {
            return Err(CryptoError::PayloadStream);
        }
        // Every chunk but the last is `full` bytes; the last is 16..=full.
        let chunks = len.div_ceil(full);
        let last = len.saturating_sub(chunks.saturating_sub(1).saturating_mul(full));
        if last < CHUNK_TAG_LEN as u64 {
            return Err(CryptoError::PayloadStream);
        }
        Ok((chunks, last))
    }

    /// The plaintext length this reference describes.
    ///
    /// # Errors
    /// [`CryptoError::PayloadStream`] for an impossible layout.
    pub fn plaintext_len(&self) -> Result<u64, CryptoError> {
        let (chunks, _) = self.layout()?;
        Ok(self.ciphertext_len.saturating_sub(chunks.saturating_mul(CHUNK_TAG_LEN as u64)))
    }
}

fn nonce(index: u64, last: bool) -> Nonce {
    let mut n = [0u8; 12];
    let (i, rest) = n.split_at_mut(8);
    i.copy_from_slice(&index.to_be_bytes());
    if let Some(flag) = rest.last_mut() {
        *flag = u8::from(last);
    }
    Nonce::from(n)
}

/// A host's check of a sealed payload it stores, against the reference a
/// signed piece carries, without the key: the ciphertext's length and
/// digest. Feed the bytes in any slices.
///
/// ```
/// use bft_upgrade::crypto::{Binding, GroupKey, PayloadChecker, PayloadSealer, CHUNK_TAG_LEN};
/// use bft_upgrade::wire::{GroupId, UpgradeId};
///
/// let binding = Binding::group(UpgradeId([1; 16]), GroupId(2));
/// let mut sealer = PayloadSealer::new(&GroupKey::from_bytes([3; 32]), &binding, 64).unwrap();
/// let mut buf = [7u8; 10 + CHUNK_TAG_LEN];
/// let sealed = sealer.seal_chunk(&mut buf, 10, true).unwrap().to_vec();
/// let payload = sealer.finish().unwrap();
///
/// let mut check = PayloadChecker::new(&binding, &payload);
/// check.update(&sealed[..5]);
/// check.update(&sealed[5..]);
/// assert!(check.finish().is_ok());
/// let mut check = PayloadChecker::new(&binding, &payload);
/// check.update(&sealed[1..]);
/// assert!(check.finish().is_err());
/// ```
pub struct PayloadChecker {
    hasher: Hasher,
    expected: PayloadRef,
    seen: u64,
}

impl PayloadChecker {
    /// Starts checking a stored payload of the piece bound to `binding`
    /// ([`Binding::group`] of its upgrade and group) against `payload`.
    pub fn new(binding: &Binding, payload: &PayloadRef) -> Self {
        Self { hasher: Hasher::new(Domain::Payload, binding), expected: *payload, seen: 0 }
    }

    /// The next ciphertext bytes.
    pub fn update(&mut self, ciphertext: &[u8]) {
        self.hasher.update(ciphertext);
        self.seen = self.seen.saturating_add(ciphertext.len() as u64);
    }

    /// Whether the bytes were exactly the payload the piece names.
    ///
    /// # Errors
    /// [`CryptoError::PayloadStream`] for another length;
    /// [`CryptoError::CodeMismatch`] for another digest.
    pub fn finish(self) -> Result<(), CryptoError> {
        if self.seen != self.expected.ciphertext_len {
            return Err(CryptoError::PayloadStream);
        }
        if self.hasher.finish() == self.expected.digest {
            Ok(())
        } else {
            Err(CryptoError::CodeMismatch)
        }
    }
}

/// The deployer's side: seals a payload chunk by chunk.
pub struct PayloadSealer {
    cipher: ChaCha20Poly1305,
    hasher: Hasher,
    chunk_size: u32,
    next: u64,
    written: u64,
    done: bool,
}

impl PayloadSealer {
    /// Starts sealing under `key`, bound to `binding` (upgrade and group).
    ///
    /// # Errors
    /// [`MisuseError::BadArgument`] for a chunk size outside 64 B..=16 MiB.
    pub fn new(key: &GroupKey, binding: &Binding, chunk_size: u32) -> Result<Self, MisuseError> {
        if !CHUNK_SIZE_RANGE.contains(&chunk_size) {
            return Err(MisuseError::BadArgument);
        }
        Ok(Self {
            cipher: key.cipher(binding)?,
            hasher: Hasher::new(Domain::Payload, binding),
            chunk_size,
            next: 0,
            written: 0,
            done: false,
        })
    }

    /// Seals the chunk held in `buf[..len]`, in place; returns the ciphertext
    /// (`len + 16` bytes of `buf`) to write out. Every chunk but the last
    /// must hold exactly `chunk_size` bytes.
    ///
    /// # Errors
    /// [`MisuseError::WrongState`] after the last chunk;
    /// [`MisuseError::BadArgument`] for a wrong length or a buffer without
    /// room for the tag.
    pub fn seal_chunk<'b>(&mut self, buf: &'b mut [u8], len: usize, last: bool) -> Result<&'b [u8], MisuseError> {
        if self.done {
            return Err(MisuseError::WrongState);
        }
        let size = self.chunk_size as usize;
        if len > size || (!last && len != size) {
            return Err(MisuseError::BadArgument);
        }
        let total = len.checked_add(CHUNK_TAG_LEN).ok_or(MisuseError::BadArgument)?;
        let out = buf.get_mut(..total).ok_or(MisuseError::BadArgument)?;
        let (body, tag_slot) = out.split_at_mut(len);
        let tag = self
            .cipher
            .encrypt_inout_detached(&nonce(self.next, last), &[], body.into())
            .map_err(|_| MisuseError::BadArgument)?;
        tag_slot.copy_from_slice(&tag);
        self.hasher.update(out);
        self.next = self.next.checked_add(1).ok_or(MisuseError::WrongState)?;
        self.written = self.written.saturating_add(total as u64);
        self.done = last;
        Ok(out)
    }

    /// Ends the stream and returns the reference for the piece.
    ///
    /// # Errors
    /// [`MisuseError::WrongState`] if no last chunk was sealed.
    pub fn finish(self) -> Result<PayloadRef, MisuseError> {
        if !self.done {
            return Err(MisuseError::WrongState);
        }
        Ok(PayloadRef { ciphertext_len: self.written, chunk_size: self.chunk_size, digest: self.hasher.finish() })
    }
}

/// A replica's side: opens a payload chunk by chunk.
///
/// Plaintext comes out before the whole stream is checked: stage it (e.g. in
/// an inactive flash slot) and act on it only after [`finish`](Self::finish)
/// succeeds.
pub struct PayloadOpener {
    cipher: ChaCha20Poly1305,
    hasher: Hasher,
    expected: Digest,
    full: u64,
    chunks: u64,
    last_len: u64,
    next: u64,
}

impl PayloadOpener {
    /// Starts opening the payload `payload` under `key` and `binding`.
    ///
    /// # Errors
    /// [`CryptoError::PayloadStream`] for an impossible layout.
    pub fn new(key: &GroupKey, binding: &Binding, payload: &PayloadRef) -> Result<Self, CryptoError> {
        let (chunks, last_len) = payload.layout()?;
        Ok(Self {
            cipher: key.cipher(binding)?,
            hasher: Hasher::new(Domain::Payload, binding),
            expected: payload.digest,
            full: u64::from(payload.chunk_size).saturating_add(CHUNK_TAG_LEN as u64),
            chunks,
            last_len,
            next: 0,
        })
    }

    /// How many ciphertext bytes the next chunk has, or `None` when all were
    /// opened. Read exactly that many into the buffer for
    /// [`open_chunk`](Self::open_chunk).
    pub fn next_chunk_len(&self) -> Option<usize> {
        if self.next >= self.chunks {
            return None;
        }
        let len = if self.next.saturating_add(1) == self.chunks { self.last_len } else { self.full };
        usize::try_from(len).ok()
    }

    /// Opens the next chunk held in `buf` (exactly
    /// [`next_chunk_len`](Self::next_chunk_len) bytes) in place and returns
    /// its plaintext.
    ///
    /// # Errors
    /// [`CryptoError::PayloadStream`] for a chunk past the end or of the
    /// wrong length; [`CryptoError::OpenFailed`] for a chunk that is not the
    /// expected one at this position (tampered, swapped, replayed).
    pub fn open_chunk<'b>(&mut self, buf: &'b mut [u8]) -> Result<&'b [u8], CryptoError> {
        let want = self.next_chunk_len().ok_or(CryptoError::PayloadStream)?;
        if buf.len() != want {
            return Err(CryptoError::PayloadStream);
        }
        let last = self.next.saturating_add(1) == self.chunks;
        // Hash the ciphertext before it is overwritten by the plaintext.
        let mut hasher = self.hasher.clone();
        hasher.update(buf);
        let body_len = want.checked_sub(CHUNK_TAG_LEN).ok_or(CryptoError::PayloadStream)?;
        let (body, tag) = buf.split_at_mut(body_len);
        let tag = Tag::try_from(&*tag).map_err(|_| CryptoError::PayloadStream)?;
        self.cipher
            .decrypt_inout_detached(&nonce(self.next, last), &[], body.into(), &tag)
            .map_err(|_| CryptoError::OpenFailed)?;
        self.hasher = hasher;
        self.next = self.next.saturating_add(1);
        Ok(body)
    }

    /// Checks that every chunk was opened and the ciphertext digest matches.
    ///
    /// # Errors
    /// [`CryptoError::PayloadStream`] when chunks are missing;
    /// [`CryptoError::CodeMismatch`] when the digest differs from the piece's.
    pub fn finish(self) -> Result<(), CryptoError> {
        if self.next != self.chunks {
            return Err(CryptoError::PayloadStream);
        }
        if self.hasher.finish() == self.expected {
            Ok(())
        } else {
            Err(CryptoError::CodeMismatch)
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::ids::{GroupId, UpgradeId};
    use std::vec::Vec;

    fn binding() -> Binding {
        Binding::group(UpgradeId([1; 16]), GroupId(3))
    }

    fn seal(data: &[u8], chunk: u32) -> (Vec<Vec<u8>>, PayloadRef) {
        let key = GroupKey([7; 32]);
        let mut s = PayloadSealer::new(&key, &binding(), chunk).unwrap();
        let mut out = Vec::new();
        let mut buf = std::vec![0u8; chunk as usize + CHUNK_TAG_LEN];
        let mut pieces: Vec<&[u8]> = data.chunks(chunk as usize).collect();
        if pieces.is_empty() || data.len().is_multiple_of(chunk as usize) {
            pieces.push(&[]);
        }
        let n = pieces.len();
        for (i, p) in pieces.into_iter().enumerate() {
            buf[..p.len()].copy_from_slice(p);
            out.push(s.seal_chunk(&mut buf, p.len(), i + 1 == n).unwrap().to_vec());
        }
        (out, s.finish().unwrap())
    }

    fn open(chunks: &[Vec<u8>], r: &PayloadRef) -> Result<Vec<u8>, CryptoError> {
        let mut o = PayloadOpener::new(&GroupKey([7; 32]), &binding(), r)?;
        let mut plain = Vec::new();
        for c in chunks {
            let mut b = c.clone();
            plain.extend_from_slice(o.open_chunk(&mut b)?);
        }
        o.finish()?;
        Ok(plain)
    }

    #[test]
    fn round_trip_sizes() {
        for len in [0usize, 1, 63, 64, 65, 200, 640] {
            let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let (chunks, r) = seal(&data, 64);
            assert_eq!(r.plaintext_len().unwrap(), len as u64);
            assert_eq!(open(&chunks, &r).unwrap(), data);
        }
    }

    #[test]
    fn truncation_swap_replay_tamper() {
        let data: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let (chunks, r) = seal(&data, 64);
        // truncation: drop the last chunk
        assert!(open(&chunks[..chunks.len() - 1], &r).is_err());
        // swap two chunks
        let mut swapped = chunks.clone();
        swapped.swap(1, 2);
        assert_eq!(open(&swapped, &r), Err(CryptoError::OpenFailed));
        // replay chunk 0 in place of chunk 1
        let mut replayed = chunks.clone();
        replayed[1] = chunks[0].clone();
        assert_eq!(open(&replayed, &r), Err(CryptoError::OpenFailed));
        // flip a byte
        let mut t = chunks.clone();
        t[3][5] ^= 1;
        assert_eq!(open(&t, &r), Err(CryptoError::OpenFailed));
        // a truncated reference that ends on a non-last chunk
        let mut short = r;
        short.ciphertext_len -= chunks.last().unwrap().len() as u64;
        assert!(open(&chunks[..chunks.len() - 1], &short).is_err());
        // wrong key
        let mut o = PayloadOpener::new(&GroupKey([8; 32]), &binding(), &r).unwrap();
        let mut b = chunks[0].clone();
        assert_eq!(o.open_chunk(&mut b).err(), Some(CryptoError::OpenFailed));
    }

    #[test]
    fn bad_layouts_rejected() {
        let d = Digest([0; 32]);
        for (len, cs) in [(0u64, 64u32), (15, 64), (64 + 16 + 5, 64), (100, 10), (100, u32::MAX)] {
            let r = PayloadRef { ciphertext_len: len, chunk_size: cs, digest: d };
            assert!(PayloadOpener::new(&GroupKey([0; 32]), &binding(), &r).is_err(), "{len} {cs}");
        }
    }
}
