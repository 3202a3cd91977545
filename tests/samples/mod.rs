//! Deterministic sample values shared by the wire tests and the fuzz seed
//! generator. Nothing here is random: the same bytes come out every run.

#![allow(dead_code)] // each test crate uses a different part

use bft_upgrade::crypto::{
    Binding, Code, DeployerKey, Digest, GroupKey, PayloadRef, PayloadSealer, PublicKey, SealedBox, CHUNK_TAG_LEN,
};
use bft_upgrade::wire::{
    decode, encode, encoded_len, DeployerId, GroupId, OrderKey, Piece, PieceHeader, ReplicaEntry, ResourceId,
    UpgradeHeader, UpgradeId, MAX_REPLICAS, MAX_RESOURCES,
};

/// The upgrade and group every sample belongs to.
pub const UPGRADE: UpgradeId = UpgradeId([1; 16]);
/// See [`UPGRADE`].
pub const GROUP: GroupId = GroupId(3);
/// The payload key of the sample payload.
pub const PAYLOAD_KEY: [u8; 32] = [7; 32];
/// Plaintext bytes per chunk of the sample payload (the smallest allowed).
pub const CHUNK_SIZE: u32 = 64;

/// The deployer key that signs the sample piece: the secret scalar 1, whose
/// public key is the P-256 base point (the fixed key of the `decode_piece`
/// fuzz target).
pub fn deployer_key() -> DeployerKey {
    let mut scalar = [0u8; 32];
    scalar[31] = 1;
    DeployerKey::from_bytes(&scalar).expect("1 is a valid scalar")
}

/// The binding of the sample piece's group values.
pub fn binding() -> Binding {
    Binding::group(UPGRADE, GROUP)
}

/// Encodes any wire value into a vector of exactly its encoded length.
pub fn to_bytes<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let mut buf = vec![0u8; encoded_len(value)];
    let len = encode(value, &mut buf).expect("encoded_len is enough").len();
    buf.truncate(len);
    buf
}

/// A sealed 150-byte payload (three chunks: 64, 64 and 22 plaintext bytes)
/// under [`PAYLOAD_KEY`] and [`binding`]: its reference and its ciphertext
/// chunks in order.
pub fn sealed_payload() -> (PayloadRef, Vec<Vec<u8>>) {
    let plain: Vec<u8> = (0..150u8).collect();
    let mut sealer =
        PayloadSealer::new(&GroupKey::from_bytes(PAYLOAD_KEY), &binding(), CHUNK_SIZE).expect("valid chunk size");
    let mut chunks = Vec::new();
    let parts: Vec<&[u8]> = plain.chunks(CHUNK_SIZE as usize).collect();
    for (i, part) in parts.iter().enumerate() {
        let mut buf = vec![0u8; CHUNK_SIZE as usize + CHUNK_TAG_LEN];
        buf[..part.len()].copy_from_slice(part);
        let sealed = sealer.seal_chunk(&mut buf, part.len(), i + 1 == parts.len()).expect("seal");
        chunks.push(sealed.to_vec());
    }
    (sealer.finish().expect("last chunk sealed"), chunks)
}

/// A box whose 112 bytes are a fixed pattern (boxes are opaque to decoding).
pub fn sealed_box(seed: u8) -> SealedBox {
    let mut bytes = vec![bft_upgrade::wire::FORMAT_VERSION];
    bytes.extend((0..112u8).map(|i| i.wrapping_mul(31).wrapping_add(seed)));
    decode(&bytes).expect("any 112 bytes are a box")
}

/// The number of replicas in the sample piece (`n = 4`, `f = 1`).
pub const REPLICAS: usize = 4;

/// A well-formed piece header for a four-replica group.
pub fn piece_header() -> PieceHeader {
    let (payload, _) = sealed_payload();
    let mut ephemeral_scalar = [0u8; 32];
    ephemeral_scalar[31] = 2;
    let ephemeral = DeployerKey::from_bytes(&ephemeral_scalar).expect("2 is a valid scalar").public_key();
    let mut header = PieceHeader {
        upgrade: UPGRADE,
        group: GROUP,
        deployer: DeployerId(9),
        order_seq: 300,
        sequence: None,
        trigger_digest: Digest([0x11; 32]),
        cancel_digest: Digest([0x22; 32]),
        prev_version: Code::from_bytes([0x33; 32]),
        members: Digest([0x44; 32]),
        f: 1,
        resources: heapless::Vec::new(),
        payload,
        ephemeral,
        replicas: heapless::Vec::new(),
        custody: bft_upgrade::wire::Custody::Replicas,
        next: None,
    };
    header.resources.extend_from_slice(&[ResourceId(1), ResourceId(500)]).expect("capacity");
    for i in 0..REPLICAS as u8 {
        let entry = ReplicaEntry {
            sealed: sealed_box(i),
            secret_share: Digest([0x50 + i; 32]),
            cancel_share: Digest([0x60 + i; 32]),
        };
        header.replicas.push(entry).expect("capacity");
    }
    header
}

/// [`piece_header`], signed by [`deployer_key`].
pub fn piece() -> Piece {
    let header = piece_header();
    let signature = deployer_key().sign(&header.digest()).expect("sign");
    Piece { header, signature }
}

/// [`piece`] grown to capacity: `MAX_REPLICAS` replicas (copies of the
/// first entry) and `MAX_RESOURCES` resources, signed again. The largest
/// piece the codec accepts.
pub fn full_piece() -> Piece {
    let mut header = piece_header();
    let entry = header.replicas[0].clone();
    while header.replicas.push(entry.clone()).is_ok() {}
    let mut next = 1000;
    while header.resources.push(ResourceId(next)).is_ok() {
        next += 1;
    }
    assert_eq!(header.replicas.len(), MAX_REPLICAS);
    assert_eq!(header.resources.len(), MAX_RESOURCES);
    let signature = deployer_key().sign(&header.digest()).expect("sign");
    Piece { header, signature }
}

/// The public key that verifies [`piece`] and [`full_piece`].
pub fn deployer_public() -> PublicKey {
    deployer_key().public_key()
}

/// The order key of the sample piece.
pub fn order_key() -> OrderKey {
    piece_header().order_key()
}

/// A public upgrade header matching the sample piece.
pub fn upgrade_header() -> UpgradeHeader {
    let h = piece_header();
    UpgradeHeader {
        upgrade: h.upgrade,
        order: h.order_key(),
        trigger_digest: h.trigger_digest,
        cancel_digest: h.cancel_digest,
        groups: 2,
    }
}
