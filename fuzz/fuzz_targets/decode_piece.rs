//! Arbitrary bytes as an upgrade piece: decoding never panics, whatever
//! decodes is canonical (re-encodes to the very same bytes), decoding in
//! place agrees with decoding by value, and hashing and verifying a decoded
//! piece never panic either.

#![no_main]

use bft_upgrade::crypto::PublicKey;
use bft_upgrade::wire::{decode, decode_into, encode, encoded_len, Piece};
use libfuzzer_sys::fuzz_target;

/// The P-256 base point, compressed: the public key of the secret scalar 1,
/// which signs the checked-in seeds (`tests/fuzz_seeds.rs`), so both the
/// accepting and the rejecting ends of verification are reached.
const BASE_POINT: [u8; 33] = [
    0x03, 0x6b, 0x17, 0xd1, 0xf2, 0xe1, 0x2c, 0x42, 0x47, 0xf8, 0xbc, 0xe6, 0xe5, 0x63, 0xa4, 0x40, 0xf2, 0x77, 0x03,
    0x7d, 0x81, 0x2d, 0xeb, 0x33, 0xa0, 0xf4, 0xa1, 0x39, 0x45, 0xd8, 0x98, 0xc2, 0x96,
];

fuzz_target!(|data: &[u8]| {
    // In-place decoding accepts exactly what decoding by value accepts.
    let mut place = Piece::default();
    let in_place = decode_into(data, &mut place);
    let Ok(piece) = decode::<Piece>(data) else {
        assert!(in_place.is_err(), "decode_into accepted what decode refused");
        return;
    };
    assert!(in_place.is_ok(), "decode_into refused what decode accepted");
    assert_eq!(place, piece, "decode_into built another piece");
    let mut buf = vec![0u8; encoded_len(&piece)];
    let bytes = encode(&piece, &mut buf).expect("a decoded piece re-encodes into its encoded_len");
    assert_eq!(bytes, data, "decode accepted a non-canonical encoding");

    let _ = piece.header.digest();
    let _ = piece.verify(&PublicKey::from_compressed(BASE_POINT));
});
