//! Payloads between files (any `Read`/`Write`) and the chunked AEAD.

use std::io::{self, Read, Write};
use std::vec;

use crate::crypto::{Binding, GroupKey, PayloadChecker, PayloadOpener, PayloadRef, PayloadSealer, CHUNK_TAG_LEN};
use crate::error::{CryptoError, MisuseError};

/// The chunk size [`seal_payload`] callers use unless they have a reason
/// (a flash page, a transfer unit): 64 KiB.
pub const DEFAULT_CHUNK: u32 = 64 * 1024;

/// Why a payload did not seal or open.
#[derive(Debug)]
pub enum PayloadError {
    /// Reading or writing failed.
    Io(io::Error),
    /// The stream is not the one the reference describes: short, long,
    /// tampered, or under another key or binding.
    Crypto(CryptoError),
    /// A chunk size outside 64 B..=16 MiB.
    Misuse(MisuseError),
}

impl core::fmt::Display for PayloadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Io(e) => write!(f, "payload I/O: {e}"),
            Self::Crypto(e) => write!(f, "payload: {e}"),
            Self::Misuse(e) => write!(f, "payload: {e}"),
        }
    }
}

impl std::error::Error for PayloadError {}

impl From<io::Error> for PayloadError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn fill(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut at = 0;
    while let Some(rest) = buf.get_mut(at..).filter(|r| !r.is_empty()) {
        match input.read(rest) {
            Ok(0) => break,
            Ok(n) => at = at.saturating_add(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(at)
}

/// Seals everything `plain` yields under `key` and `binding` (the
/// deployer's side, with [`UpgradePlan::group_key`](crate::deployer::UpgradePlan::group_key)
/// and [`Binding::group`]) into `sealed`, in chunks of `chunk_size`;
/// returns the reference for the group's piece.
///
/// # Errors
/// [`PayloadError::Misuse`] for a chunk size out of range;
/// [`PayloadError::Io`] when reading or writing fails.
pub fn seal_payload(
    key: &GroupKey,
    binding: &Binding,
    chunk_size: u32,
    plain: &mut impl Read,
    sealed: &mut impl Write,
) -> Result<PayloadRef, PayloadError> {
    let mut sealer = PayloadSealer::new(key, binding, chunk_size).map_err(PayloadError::Misuse)?;
    let size = chunk_size as usize;
    let mut cur = vec![0u8; size.saturating_add(CHUNK_TAG_LEN)];
    let mut next = vec![0u8; size.saturating_add(CHUNK_TAG_LEN)];
    let mut len = fill(plain, cur.get_mut(..size).unwrap_or_default())?;
    loop {
        // A chunk is the last when nothing follows it (a full last chunk
        // is allowed).
        let more = if len == size { fill(plain, next.get_mut(..size).unwrap_or_default())? } else { 0 };
        let last = more == 0;
        let out = sealer.seal_chunk(&mut cur, len, last).map_err(PayloadError::Misuse)?;
        sealed.write_all(out)?;
        if last {
            break;
        }
        core::mem::swap(&mut cur, &mut next);
        len = more;
    }
    sealer.finish().map_err(PayloadError::Misuse)
}

/// Checks, without the key, that `sealed` holds exactly the payload a piece
/// names (its length and digest): what a host, a payload server or an
/// installer runs before storing or serving a blob.
///
/// # Errors
/// [`PayloadError::Crypto`] when it does not; [`PayloadError::Io`] when
/// reading fails.
pub fn check_payload(binding: &Binding, payload: &PayloadRef, sealed: &mut impl Read) -> Result<(), PayloadError> {
    let mut check = PayloadChecker::new(binding, payload);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = fill(sealed, &mut buf)?;
        check.update(buf.get(..n).unwrap_or_default());
        if n < buf.len() {
            break;
        }
    }
    check.finish().map_err(PayloadError::Crypto)
}

/// The record name a host stores a sealed payload under: its signed
/// digest, so one blob serves every piece that names it and a blob is
/// checked against the name it is found by.
pub fn payload_key(payload: &PayloadRef) -> std::string::String {
    std::format!("payload/{}", super::hex(&payload.digest.0))
}

/// Opens the sealed payload `payload` from `sealed` into `plain` (a
/// replica's side, on `Apply` with its `key`); returns the plaintext
/// length.
///
/// Plaintext reaches `plain` before the whole stream is checked: write it
/// somewhere inactive (a staging file, the other flash slot) and act on it
/// only once this returns `Ok`.
///
/// # Errors
/// [`PayloadError::Crypto`] when the stream is not the one `payload`
/// describes; [`PayloadError::Io`] when reading or writing fails.
pub fn open_payload(
    key: &GroupKey,
    binding: &Binding,
    payload: &PayloadRef,
    sealed: &mut impl Read,
    plain: &mut impl Write,
) -> Result<u64, PayloadError> {
    let mut opener = PayloadOpener::new(key, binding, payload).map_err(PayloadError::Crypto)?;
    let mut buf = vec![0u8; (payload.chunk_size as usize).saturating_add(CHUNK_TAG_LEN)];
    let mut total = 0u64;
    while let Some(len) = opener.next_chunk_len() {
        let chunk = buf.get_mut(..len).ok_or(PayloadError::Crypto(CryptoError::PayloadStream))?;
        if fill(sealed, chunk)? != len {
            return Err(PayloadError::Crypto(CryptoError::PayloadStream));
        }
        let body = opener.open_chunk(chunk).map_err(PayloadError::Crypto)?;
        plain.write_all(body)?;
        total = total.saturating_add(body.len() as u64);
    }
    // Bytes past the stream's end are not part of it.
    if fill(sealed, buf.get_mut(..1).unwrap_or_default())? != 0 {
        return Err(PayloadError::Crypto(CryptoError::PayloadStream));
    }
    opener.finish().map_err(PayloadError::Crypto)?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{GroupId, UpgradeId};
    use std::vec::Vec;

    fn binding() -> Binding {
        Binding::group(UpgradeId([2; 16]), GroupId(5))
    }

    #[test]
    fn round_trips_at_every_length_around_the_chunk_size() {
        let key = GroupKey([9; 32]);
        for len in [0usize, 1, 63, 64, 65, 127, 128, 129, 1000] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let mut sealed = Vec::new();
            let r = seal_payload(&key, &binding(), 64, &mut &data[..], &mut sealed).unwrap();
            assert_eq!(r.ciphertext_len, sealed.len() as u64);
            assert_eq!(r.plaintext_len().unwrap(), len as u64);
            let mut plain = Vec::new();
            assert_eq!(open_payload(&key, &binding(), &r, &mut &sealed[..], &mut plain).unwrap(), len as u64);
            assert_eq!(plain, data);
        }
    }

    #[test]
    fn a_short_long_or_altered_stream_is_refused() {
        let key = GroupKey([9; 32]);
        let data = [5u8; 300];
        let mut sealed = Vec::new();
        let r = seal_payload(&key, &binding(), 64, &mut &data[..], &mut sealed).unwrap();
        let open = |bytes: &[u8]| open_payload(&key, &binding(), &r, &mut &bytes[..], &mut Vec::new());
        assert!(matches!(open(&sealed[..sealed.len() - 1]), Err(PayloadError::Crypto(_))));
        let mut long = sealed.clone();
        long.push(0);
        assert!(matches!(open(&long), Err(PayloadError::Crypto(CryptoError::PayloadStream))));
        let mut bad = sealed.clone();
        bad[100] ^= 1;
        assert!(matches!(open(&bad), Err(PayloadError::Crypto(_))));
        let other = Binding::group(UpgradeId([2; 16]), GroupId(6));
        assert!(open_payload(&key, &other, &r, &mut &sealed[..], &mut Vec::new()).is_err());
    }

    #[test]
    fn a_stored_payload_is_checked_without_the_key() {
        let key = GroupKey([9; 32]);
        let data = [3u8; 1000];
        let mut sealed = Vec::new();
        let r = seal_payload(&key, &binding(), 64, &mut &data[..], &mut sealed).unwrap();
        check_payload(&binding(), &r, &mut &sealed[..]).unwrap();
        let mut bad = sealed.clone();
        bad[500] ^= 0x80;
        assert!(matches!(
            check_payload(&binding(), &r, &mut &bad[..]),
            Err(PayloadError::Crypto(CryptoError::CodeMismatch))
        ));
        let short = &sealed[..sealed.len() - 1];
        assert!(matches!(
            check_payload(&binding(), &r, &mut &short[..]),
            Err(PayloadError::Crypto(CryptoError::PayloadStream))
        ));
        // Under another binding the same bytes are another payload.
        let other = Binding::group(UpgradeId([2; 16]), GroupId(6));
        assert!(check_payload(&other, &r, &mut &sealed[..]).is_err());
        // The name is the digest, in hex.
        let name = payload_key(&r);
        assert_eq!(name.len(), "payload/".len() + 64);
        assert!(name.ends_with(&super::super::hex(&r.digest.0)));
    }

    #[test]
    fn a_chunk_size_out_of_range_is_misuse() {
        let r = seal_payload(&GroupKey([1; 32]), &binding(), 8, &mut &[1u8][..], &mut Vec::new());
        assert!(matches!(r, Err(PayloadError::Misuse(MisuseError::BadArgument))));
    }
}
