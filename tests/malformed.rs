//! The regression file of malformed inputs.
//!
//! Every input here once was, or plausibly could be, a way to make the codec
//! or a role misbehave. Each case asserts a *typed* error: bad bytes are a
//! [`DecodeError`] at the wire boundary (or a `CryptoError` where a decoded
//! value is checked on use), never a panic. A panic is a bug in us, never
//! bad input.
//!
//! When a fuzz target finds a crash, add its bytes here as a new test (see
//! `fuzz/README.md`), with a line on what was wrong, before fixing it.

mod samples;

use bft_upgrade::crypto::{GroupKey, PayloadOpener, PayloadRef, PublicKey};
use bft_upgrade::error::{CryptoError, DecodeError};
use bft_upgrade::wire::{decode, OrderKey, Piece, PieceHeader, UpgradeHeader, MAX_REPLICAS};

use samples::to_bytes;

/// The encoding of the sample piece with its replica list cut out: every
/// byte before the replica count, and every byte after the (empty) list.
///
/// The count is found, not assumed at a fixed offset: it is the first byte
/// where the encodings of the piece with no replica and with one differ.
fn piece_around_replica_count() -> (Vec<u8>, Vec<u8>) {
    let mut piece = samples::piece();
    let first = piece.header.replicas[0].clone();
    piece.header.replicas.clear();
    let empty = to_bytes(&piece);
    piece.header.replicas.push(first).expect("capacity");
    let one = to_bytes(&piece);
    let at = empty.iter().zip(&one).position(|(a, b)| a != b).expect("the encodings differ");
    assert_eq!((empty[at], one[at]), (0, 1), "the replica count");
    (empty[..at].to_vec(), empty[at + 1..].to_vec())
}

fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

#[test]
fn empty_input_is_truncated_for_every_type() {
    assert_eq!(decode::<Piece>(&[]), Err(DecodeError::Truncated));
    assert_eq!(decode::<PieceHeader>(&[]), Err(DecodeError::Truncated));
    assert_eq!(decode::<UpgradeHeader>(&[]), Err(DecodeError::Truncated));
    assert_eq!(decode::<OrderKey>(&[]), Err(DecodeError::Truncated));
    assert_eq!(decode::<PayloadRef>(&[]), Err(DecodeError::Truncated));
}

#[test]
fn huge_replica_count_with_nothing_behind_it_is_truncated() {
    // Claims 2^32 - 1 replicas; the decoder must not trust (or allocate for)
    // the count, and runs out of input at the first entry.
    let (mut bytes, _) = piece_around_replica_count();
    bytes.extend_from_slice(&varint(u64::from(u32::MAX)));
    assert_eq!(decode::<Piece>(&bytes), Err(DecodeError::Truncated));
}

#[test]
fn huge_replica_count_with_entries_behind_it_is_over_capacity() {
    // Claims 2^32 - 1 replicas and really carries one more than fit: the
    // decoder stops at the capacity, not at the end of the input.
    let (head, after) = piece_around_replica_count();
    let entry = to_bytes(&samples::piece().header.replicas[0]);
    let mut bytes = head;
    bytes.extend_from_slice(&varint(u64::from(u32::MAX)));
    for _ in 0..=MAX_REPLICAS {
        bytes.extend_from_slice(&entry);
    }
    bytes.extend_from_slice(&after);
    assert_eq!(decode::<Piece>(&bytes), Err(DecodeError::OverCapacity));
}

#[test]
fn replica_count_that_overflows_a_varint_is_malformed() {
    // Eleven continuation bytes: no u64 (let alone usize count) is that long.
    let (mut bytes, after) = piece_around_replica_count();
    bytes.extend_from_slice(&[0xff; 11]);
    bytes.extend_from_slice(&after);
    assert_eq!(decode::<Piece>(&bytes), Err(DecodeError::Malformed));
}

#[test]
fn every_truncation_of_a_piece_is_truncated() {
    let bytes = to_bytes(&samples::piece());
    for len in 0..bytes.len() {
        assert_eq!(
            decode::<Piece>(&bytes[..len]),
            Err(DecodeError::Truncated),
            "piece cut to {len} of {} bytes",
            bytes.len()
        );
    }
}

#[test]
fn a_byte_after_a_piece_is_trailing() {
    let mut bytes = to_bytes(&samples::piece());
    bytes.push(0);
    assert_eq!(decode::<Piece>(&bytes), Err(DecodeError::TrailingBytes));
}

#[test]
fn overlong_varint_is_non_canonical() {
    // The sample's order_seq is 300, canonically 0xac 0x02, right after the
    // 16-byte upgrade id, the group (3) and the deployer (9).
    let bytes = to_bytes(&samples::piece());
    assert_eq!(&bytes[16..20], &[3, 9, 0xac, 0x02]);
    let mut overlong = bytes[..18].to_vec();
    overlong.extend_from_slice(&[0xac, 0x82, 0x00]);
    overlong.extend_from_slice(&bytes[20..]);
    assert_eq!(decode::<Piece>(&overlong), Err(DecodeError::NonCanonical));
}

#[test]
fn invalid_keys_decode_but_fail_verification() {
    // Keys are validated on use, so a piece carrying junk keys decodes and
    // every check on it is a typed crypto error.
    let mut piece = samples::piece();
    piece.header.ephemeral = PublicKey::from_compressed([0; 33]);
    let decoded: Piece = decode(&to_bytes(&piece)).expect("junk keys decode");
    assert_eq!(decoded.verify(&decoded.header.ephemeral), Err(CryptoError::InvalidPublicKey));
    // The header changed under the signature.
    assert_eq!(decoded.verify(&samples::deployer_public()), Err(CryptoError::BadSignature));
}

#[test]
fn impossible_payload_layouts_are_refused_by_the_opener() {
    let (good, _) = samples::sealed_payload();
    let key = GroupKey::from_bytes(samples::PAYLOAD_KEY);
    for (ciphertext_len, chunk_size) in [(0, 64), (15, 64), (good.ciphertext_len, 0), (good.ciphertext_len, u32::MAX)] {
        let r = PayloadRef { ciphertext_len, chunk_size, ..good };
        // The reference itself is well-formed bytes...
        assert_eq!(decode::<PayloadRef>(&to_bytes(&r)), Ok(r));
        // ...but describes no stream the opener will read.
        assert_eq!(
            PayloadOpener::new(&key, &samples::binding(), &r).err(),
            Some(CryptoError::PayloadStream),
            "{ciphertext_len} bytes in chunks of {chunk_size}"
        );
    }
}
