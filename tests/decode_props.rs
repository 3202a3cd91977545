//! Properties of the wire codec on arbitrary input.
//!
//! - `wire::decode` never panics, whatever the bytes (up to 16 KiB, more
//!   than the largest piece) and whatever the type asked for.
//! - Whatever decodes is canonical: it re-encodes to the very same bytes.
//! - Every value round-trips: `decode(encode(v)) == v`.
//!
//! Random bytes rarely get past the first fields of a piece, so besides
//! plain random input the tests mutate valid encodings (flip, overwrite,
//! insert, delete, truncate), which reaches every field's decoder.

mod samples;

use std::fmt::Debug;

use bft_upgrade::crypto::{Code, Digest, PayloadRef, PublicKey, SealedBox, Signature};
use bft_upgrade::wire::{
    decode, decode_into, Attachment, DeployerId, GroupId, Message, Operation, OrderKey, Piece, PieceHeader,
    ReplicaEntry, ResourceId, UpgradeHeader, UpgradeId, MAX_RESOURCES,
};
use proptest::collection::vec;
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde::Serialize;

use samples::to_bytes;

/// Enough for a few seconds in release; raise locally with PROPTEST_CASES.
const CASES: u32 = 2_000;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(CASES),
        ..ProptestConfig::default()
    }
}

/// If `bytes` decode as a `T`, they are exactly `T`'s encoding of the value.
fn assert_canonical<T>(bytes: &[u8]) -> Result<(), TestCaseError>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    if let Ok(value) = decode::<T>(bytes) {
        prop_assert_eq!(to_bytes(&value), bytes, "{:?} decoded from a non-canonical encoding", value);
    }
    Ok(())
}

/// `decode_into` accepts exactly what `decode` accepts and builds the same
/// value, whatever the place held before.
fn assert_in_place_agrees<T>(bytes: &[u8], mut place: T) -> Result<(), TestCaseError>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let by_value = decode::<T>(bytes);
    let in_place = decode_into(bytes, &mut place);
    prop_assert_eq!(by_value.is_ok(), in_place.is_ok(), "decode and decode_into disagree: {:?}", by_value.err());
    if let Ok(v) = by_value {
        prop_assert_eq!(v, place);
    }
    Ok(())
}

/// Decodes `bytes` as every top-level wire type checked here.
fn check_all(bytes: &[u8]) -> Result<(), TestCaseError> {
    assert_in_place_agrees::<Piece>(bytes, Piece::default())?;
    assert_in_place_agrees::<Piece>(bytes, samples::full_piece())?;
    assert_in_place_agrees::<PieceHeader>(bytes, samples::full_piece().header)?;
    assert_in_place_agrees::<Operation>(bytes, Operation::PrepareInstall(Piece::default()))?;
    assert_canonical::<Piece>(bytes)?;
    assert_canonical::<PieceHeader>(bytes)?;
    assert_canonical::<UpgradeHeader>(bytes)?;
    assert_canonical::<OrderKey>(bytes)?;
    assert_canonical::<PayloadRef>(bytes)?;
    // What crosses the network between roles and the host's ordering.
    assert_canonical::<Message>(bytes)?;
    assert_canonical::<Operation>(bytes)?;
    assert_canonical::<Attachment>(bytes)?;
    if let Ok(piece) = decode::<Piece>(bytes) {
        // Hashing and verifying what decoded must not panic either.
        let _ = piece.header.digest();
        let _ = piece.verify(&samples::deployer_public());
        let _ = piece.verify(&piece.header.ephemeral);
    }
    Ok(())
}

fn round_trip<T>(value: &T) -> Result<(), TestCaseError>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let bytes = to_bytes(value);
    prop_assert_eq!(&decode::<T>(&bytes).expect("an encoding decodes"), value);
    Ok(())
}

// ---- strategies -----------------------------------------------------------

/// Arbitrary bytes, mostly short (where the decoders' edges are), sometimes
/// up to 16 KiB.
fn arb_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => vec(any::<u8>(), 0..128),
        1 => vec(any::<u8>(), 0..=16 * 1024),
    ]
}

/// A varint as it may appear on the wire: a canonical encoding of any
/// value, or raw bytes (overlong, overflowing or unterminated).
fn arb_varint() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![any::<u64>().prop_map(|v| to_bytes(&v)), vec(any::<u8>(), 1..=11),]
}

/// Bytes shaped like an `OrderKey` (a varint, 16 bytes) or a `PayloadRef`
/// (two varints, 32 bytes), with tails often of the right length, so that a
/// good share of them decode.
fn near_small_value() -> impl Strategy<Value = Vec<u8>> {
    let tail =
        prop_oneof![2 => Just(16usize), 2 => Just(32usize), 1 => 14..=34usize].prop_flat_map(|n| vec(any::<u8>(), n));
    (arb_varint(), arb_varint(), tail, any::<bool>()).prop_map(|(a, b, tail, two)| {
        let mut out = a;
        if two {
            out.extend_from_slice(&b);
        }
        out.extend_from_slice(&tail);
        out
    })
}

fn arb_digest() -> impl Strategy<Value = Digest> {
    any::<[u8; 32]>().prop_map(Digest)
}

fn arb_upgrade_id() -> impl Strategy<Value = UpgradeId> {
    any::<[u8; 16]>().prop_map(UpgradeId)
}

fn arb_order_key() -> impl Strategy<Value = OrderKey> {
    (any::<u64>(), arb_upgrade_id()).prop_map(|(seq, upgrade)| OrderKey { seq, upgrade })
}

fn arb_payload_ref() -> impl Strategy<Value = PayloadRef> {
    (any::<u64>(), any::<u32>(), arb_digest()).prop_map(|(ciphertext_len, chunk_size, digest)| PayloadRef {
        ciphertext_len,
        chunk_size,
        digest,
    })
}

fn arb_upgrade_header() -> impl Strategy<Value = UpgradeHeader> {
    (arb_upgrade_id(), arb_order_key(), arb_digest(), arb_digest(), any::<u32>()).prop_map(
        |(upgrade, order, trigger_digest, cancel_digest, groups)| UpgradeHeader {
            upgrade,
            order,
            trigger_digest,
            cancel_digest,
            groups,
        },
    )
}

fn arb_sealed_box() -> impl Strategy<Value = SealedBox> {
    vec(any::<u8>(), 112).prop_map(|b| {
        let mut bytes = vec![bft_upgrade::wire::FORMAT_VERSION];
        bytes.extend(b);
        decode(&bytes).expect("any 112 bytes are a box")
    })
}

fn arb_public_key() -> impl Strategy<Value = PublicKey> {
    // Valid points and arbitrary bytes alike: keys are checked on use.
    prop_oneof![
        Just(samples::deployer_public()),
        vec(any::<u8>(), 33).prop_map(|b| PublicKey::from_compressed(b.try_into().expect("33 bytes"))),
    ]
}

fn arb_replica() -> impl Strategy<Value = ReplicaEntry> {
    (arb_sealed_box(), arb_digest(), arb_digest()).prop_map(|(sealed, secret_share, cancel_share)| ReplicaEntry {
        sealed,
        secret_share,
        cancel_share,
    })
}

/// Piece headers with up to `max_replicas` entries (full capacity is
/// covered by a deterministic test below, to keep the cases fast).
fn arb_piece_header(max_replicas: usize) -> impl Strategy<Value = PieceHeader> {
    let ids = (arb_upgrade_id(), any::<u32>(), any::<u32>(), any::<u64>(), any::<u8>());
    let digests = (arb_digest(), arb_digest(), any::<[u8; 32]>(), arb_digest());
    let lists = (
        vec(any::<u32>().prop_map(ResourceId), 0..=MAX_RESOURCES),
        arb_payload_ref(),
        arb_public_key(),
        vec(arb_replica(), 0..=max_replicas),
    );
    let next =
        proptest::option::of((vec(arb_public_key(), 1..=4), any::<u8>(), any::<u32>()).prop_map(|(keys, f, group)| {
            bft_upgrade::wire::NextMembership {
                membership: bft_upgrade::wire::Membership {
                    group: GroupId(group),
                    f,
                    replicas: heapless::Vec::from_slice(&keys).expect("within capacity"),
                },
                guardians: None,
            }
        }));
    (ids, digests, lists, next).prop_map(
        |(
            (upgrade, group, deployer, order_seq, f),
            (trigger, cancel, prev, members),
            (res, payload, eph, reps),
            next,
        )| {
            PieceHeader {
                upgrade,
                group: GroupId(group),
                deployer: DeployerId(deployer),
                order_seq,
                sequence: None,
                trigger_digest: trigger,
                cancel_digest: cancel,
                prev_version: Code::from_bytes(prev),
                members,
                f,
                resources: heapless::Vec::from_slice(&res).expect("within capacity"),
                payload,
                ephemeral: eph,
                replicas: heapless::Vec::from_slice(&reps).expect("within capacity"),
                custody: bft_upgrade::wire::Custody::Replicas,
                next,
            }
        },
    )
}

fn arb_piece() -> impl Strategy<Value = Piece> {
    (arb_piece_header(6), vec(any::<u8>(), 64)).prop_map(|(header, sig)| Piece {
        header,
        signature: Signature::from_bytes(&sig.try_into().expect("64 bytes")),
    })
}

/// One edit of a byte string; positions are taken modulo its length.
#[derive(Clone, Debug)]
enum Edit {
    Flip(usize, u8),
    Overwrite(usize, Vec<u8>),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
}

fn arb_edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 1..=u8::MAX).prop_map(|(i, x)| Edit::Flip(i, x)),
        (any::<usize>(), vec(any::<u8>(), 1..8)).prop_map(|(i, b)| Edit::Overwrite(i, b)),
        (any::<usize>(), vec(any::<u8>(), 1..8)).prop_map(|(i, b)| Edit::Insert(i, b)),
        (any::<usize>(), 1..8usize).prop_map(|(i, n)| Edit::Delete(i, n)),
        any::<usize>().prop_map(Edit::Truncate),
    ]
}

fn apply(bytes: &mut Vec<u8>, edit: &Edit) {
    let at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
    match edit {
        Edit::Flip(i, x) => {
            let i = at(*i, bytes.len());
            if let Some(b) = bytes.get_mut(i) {
                *b ^= x;
            }
        }
        Edit::Overwrite(i, with) => {
            let i = at(*i, bytes.len());
            for (dst, src) in bytes.iter_mut().skip(i).zip(with) {
                *dst = *src;
            }
        }
        Edit::Insert(i, with) => {
            let i = at(*i, bytes.len() + 1);
            bytes.splice(i..i, with.iter().copied());
        }
        Edit::Delete(i, n) => {
            let i = at(*i, bytes.len());
            let end = (i + n).min(bytes.len());
            bytes.drain(i..end);
        }
        Edit::Truncate(i) => {
            let i = at(*i, bytes.len() + 1);
            bytes.truncate(i);
        }
    }
}

/// The encoding of some valid wire value, then a few edits.
fn mutated_encoding() -> impl Strategy<Value = Vec<u8>> {
    let valid = prop_oneof![
        arb_piece().prop_map(|v| to_bytes(&v)),
        arb_piece().prop_map(|v| to_bytes(&Operation::PrepareInstall(v))),
        arb_piece_header(6).prop_map(|v| to_bytes(&v)),
        arb_upgrade_header().prop_map(|v| to_bytes(&v)),
        arb_order_key().prop_map(|v| to_bytes(&v)),
        arb_payload_ref().prop_map(|v| to_bytes(&v)),
    ];
    (valid, vec(arb_edit(), 1..4)).prop_map(|(mut bytes, edits)| {
        for edit in &edits {
            apply(&mut bytes, edit);
        }
        bytes
    })
}

// ---- properties -----------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_panic_and_decode_canonically(bytes in arb_bytes()) {
        check_all(&bytes)?;
    }

    #[test]
    fn small_values_from_near_valid_bytes_are_canonical(bytes in near_small_value()) {
        assert_canonical::<OrderKey>(&bytes)?;
        assert_canonical::<PayloadRef>(&bytes)?;
    }

    #[test]
    fn mutated_encodings_never_panic_and_decode_canonically(bytes in mutated_encoding()) {
        check_all(&bytes)?;
    }

    #[test]
    fn order_key_round_trips(k in arb_order_key()) {
        round_trip(&k)?;
    }

    #[test]
    fn payload_ref_round_trips(r in arb_payload_ref()) {
        round_trip(&r)?;
    }

    #[test]
    fn upgrade_header_round_trips(h in arb_upgrade_header()) {
        round_trip(&h)?;
    }

    #[test]
    fn piece_round_trips(p in arb_piece()) {
        round_trip(&p)?;
        round_trip(&p.header)?;
        assert_in_place_agrees(&to_bytes(&p), Piece::default())?;
        assert_in_place_agrees(&to_bytes(&p), samples::full_piece())?;
    }
}

#[test]
fn piece_at_full_capacity_round_trips() {
    let piece = samples::full_piece();
    let bytes = to_bytes(&piece);
    assert!(bytes.len() <= 16 * 1024, "the random inputs reach the largest piece");
    assert_eq!(decode::<Piece>(&bytes).expect("a full piece decodes"), piece);
    let mut place = Piece::default();
    decode_into(&bytes, &mut place).expect("a full piece decodes in place");
    assert_eq!(place, piece);
    // Trailing and truncated input fail in place as by value.
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(decode_into(&longer, &mut place).is_err());
    assert!(decode_into(&bytes[..bytes.len() - 1], &mut place).is_err());
}
