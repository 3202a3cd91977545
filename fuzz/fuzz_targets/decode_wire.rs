//! Every public wire type (and every role's persisted state) from arbitrary
//! bytes: byte 0 picks the type, the rest is decoded as one value of it.
//! Decoding never panics, whatever decodes re-encodes to the very same bytes
//! (the encoding is canonical and `encoded_len` is exact), and the cheap
//! methods on a decoded value do not panic either.

#![no_main]

use bft_upgrade::client::Client;
use bft_upgrade::crypto::{PayloadRef, PublicKey, SealedBox, Share, Signature};
use bft_upgrade::group::GroupReplica;
use bft_upgrade::guardian::Guardian;
use bft_upgrade::installer::DefaultInstaller;
use bft_upgrade::wire::{
    decode, encode, encoded_len, Answer, Attachment, ClientCall, ClientReply, Custody, Finish, GuardianEntry,
    GuardianSet, Membership, Message, NextMembership, Operation, OrderKey, Piece, PieceHeader, ReplicaEntry, Reply,
    Retirement, Token, UpgradeHeader,
};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;

#[path = "../common/tags.rs"]
mod tags;
use serde::Serialize;

/// Decodes `bytes` as a `T`; if it decodes, it must re-encode to `bytes`.
fn round_trip<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    let value: T = decode(bytes).ok()?;
    let len = encoded_len(&value);
    assert_eq!(len, bytes.len(), "encoded_len differs from the decoded length");
    let mut buf = vec![0u8; len];
    let out = encode(&value, &mut buf).expect("a decoded value re-encodes into its encoded_len");
    assert_eq!(out, bytes, "decode accepted a non-canonical encoding");
    // One byte short is never enough room.
    if len > 0 {
        let mut short = vec![0u8; len - 1];
        assert!(encode(&value, &mut short).is_err(), "encoded into fewer bytes than encoded_len");
    }
    Some(value)
}

/// The P-256 base point: a valid key for the verify paths.
const BASE_POINT: [u8; 33] = [
    0x03, 0x6b, 0x17, 0xd1, 0xf2, 0xe1, 0x2c, 0x42, 0x47, 0xf8, 0xbc, 0xe6, 0xe5, 0x63, 0xa4, 0x40, 0xf2, 0x77, 0x03,
    0x7d, 0x81, 0x2d, 0xeb, 0x33, 0xa0, 0xf4, 0xa1, 0x39, 0x45, 0xd8, 0x98, 0xc2, 0x96,
];

fuzz_target!(|data: &[u8]| {
    let Some((&tag, bytes)) = data.split_first() else {
        return;
    };
    match tag % tags::COUNT {
        tags::PIECE => {
            if let Some(p) = round_trip::<Piece>(bytes) {
                let _ = p.verify(&PublicKey::from_compressed(BASE_POINT));
                let _ = p.header.order_key();
            }
        }
        tags::PIECE_HEADER => {
            if let Some(h) = round_trip::<PieceHeader>(bytes) {
                let _ = h.digest();
                let _ = h.conflicts_with(&h.resources);
                let _ = h.payload.plaintext_len();
            }
        }
        tags::OPERATION => {
            let _ = round_trip::<Operation>(bytes);
        }
        tags::MESSAGE => {
            let _ = round_trip::<Message>(bytes);
        }
        tags::ANSWER => {
            let _ = round_trip::<Answer>(bytes);
        }
        tags::REPLY => {
            let _ = round_trip::<Reply>(bytes);
        }
        tags::FINISH => {
            if let Some(f) = round_trip::<Finish>(bytes) {
                let _ = Finish::try_from(Operation::from(f));
            }
        }
        tags::UPGRADE_HEADER => {
            let _ = round_trip::<UpgradeHeader>(bytes);
        }
        tags::CLIENT_CALL => {
            let _ = round_trip::<ClientCall>(bytes);
        }
        tags::CLIENT_REPLY => {
            let _ = round_trip::<ClientReply>(bytes);
        }
        tags::ATTACHMENT => {
            let _ = round_trip::<Attachment>(bytes);
        }
        tags::MEMBERSHIP => {
            if let Some(m) = round_trip::<Membership>(bytes) {
                let _ = (m.digest(), m.is_well_formed(), m.threshold(), m.n());
            }
        }
        tags::GUARDIAN_SET => {
            if let Some(s) = round_trip::<GuardianSet>(bytes) {
                let _ = (s.is_well_formed(), s.threshold());
            }
        }
        tags::PAYLOAD_REF => {
            if let Some(r) = round_trip::<PayloadRef>(bytes) {
                let _ = r.plaintext_len();
            }
        }
        tags::ORDER_KEY => {
            let _ = round_trip::<OrderKey>(bytes);
        }
        tags::CUSTODY => {
            let _ = round_trip::<Custody>(bytes);
        }
        tags::NEXT_MEMBERSHIP => {
            if let Some(next) = round_trip::<NextMembership>(bytes) {
                let _ = (next.digest(), next.follows(&next.membership), next.membership.is_well_formed());
            }
        }
        tags::REPLICA_ENTRY => {
            let _ = round_trip::<ReplicaEntry>(bytes);
        }
        tags::GUARDIAN_ENTRY => {
            let _ = round_trip::<GuardianEntry>(bytes);
        }
        tags::SHARE => {
            let _ = round_trip::<Share>(bytes);
        }
        tags::PUBLIC_KEY => {
            if let Some(k) = round_trip::<PublicKey>(bytes) {
                let _ = k.to_compressed();
            }
        }
        tags::SIGNATURE => {
            if let Some(s) = round_trip::<Signature>(bytes) {
                let _ = s.verify(&PublicKey::from_compressed(BASE_POINT), &Default::default());
            }
        }
        tags::RETIREMENT => {
            if let Some(r) = round_trip::<Retirement>(bytes) {
                let _ = r.verify(&PublicKey::from_compressed(BASE_POINT));
            }
        }
        tags::SEALED_BOX_AND_TOKEN => {
            let _ = round_trip::<(SealedBox, Token)>(bytes);
        }
        // Persisted role state: a host restores it from its own storage,
        // but a corrupted store must still be a decode error, not a panic.
        tags::GROUP_REPLICA => {
            if let Some(mut r) = round_trip::<GroupReplica>(bytes) {
                let _ = (r.deadline(), r.version(), r.group());
                let _ = r.handle_timeout(bft_upgrade::step::Instant(u64::MAX));
            }
        }
        tags::INSTALLER => {
            if let Some(mut i) = round_trip::<DefaultInstaller>(bytes) {
                let _ = (i.deadline(), i.decided().is_some(), i.is_done());
                let _ = i.handle_timeout(bft_upgrade::step::Instant(u64::MAX));
            }
        }
        _ => {
            if tag & 0x80 == 0 {
                let _ = round_trip::<Guardian<8>>(bytes);
            } else if let Some(c) = round_trip::<Client<8>>(bytes) {
                let _ = c.call(bft_upgrade::wire::GroupId(1));
            }
        }
    }
});
