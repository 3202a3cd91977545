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
    // version byte, the 16-byte upgrade id, the group (3) and the deployer (9).
    let bytes = to_bytes(&samples::piece());
    assert_eq!(&bytes[17..21], &[3, 9, 0xac, 0x02]);
    let mut overlong = bytes[..19].to_vec();
    overlong.extend_from_slice(&[0xac, 0x82, 0x00]);
    overlong.extend_from_slice(&bytes[21..]);
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

/// role_installer (fuzz): an answer the installer throws out as unsolicited
/// (from a peer that is not the replica it names) came back as a step with
/// no deadline, while the installer still had one. A host that re-arms its
/// timer from every step's deadline (the `Step` contract: "when to call
/// `handle_timeout` next, if ever") would never call it again: one spoofed
/// answer stalls the installer. The same holds for an answer naming a group
/// the upgrade does not cover.
#[test]
fn fuzz_role_installer_unsolicited_answer_keeps_the_deadline() {
    use bft_upgrade::installer::{DefaultInstaller, InstallerOptions};
    use bft_upgrade::step::{FaultKind, Instant, Peer};
    use bft_upgrade::wire::{Answer, GroupId, Reply};

    let header = samples::upgrade_header();
    let groups = [(samples::GROUP, 1), (GroupId(samples::GROUP.0 + 1), 1)];
    let mut installer = DefaultInstaller::new(7, header.clone(), &groups, InstallerOptions::default().retry_ms(100))
        .expect("installer");
    let _ = installer.start(Instant(1_000));
    assert!(installer.deadline().is_some());
    let piece = samples::piece();
    for (from, group) in [
        // In replica 0's name, from someone else.
        (Peer::Installer(99), samples::GROUP),
        // From the replica it names, of a group outside the upgrade.
        (Peer::Replica { group: GroupId(77), index: 0 }, GroupId(77)),
    ] {
        let answer = Answer { upgrade: header.upgrade, group, replica: 0, reply: Reply::Unknown };
        let mut piece = piece.clone();
        piece.header.group = group;
        let step = installer.handle_answer(Instant(1_010), from, &answer, &piece).expect("the right piece");
        assert_eq!(step.faults.first().map(|f| f.kind), Some(FaultKind::Unsolicited));
        assert_eq!(step.deadline, installer.deadline(), "the step dropped the installer's deadline");
    }
}

/// role_group (fuzz target's invariants: "version = number of `Apply`
/// effects", "a transaction aborted is restarted"): a response whose codes
/// commit many held pieces overflowed the step. `on_response` pushes
/// `AbortTransaction`, one `Apply` per committed piece, then
/// `RestartTransaction`, into a step of `MAX_STEP_EFFECTS` effects (then 8)
/// while an attachment carries up to `MAX_ATTACHED` (8) codes, and ignored
/// the failed pushes: with 7 commits the restart was lost (the transaction
/// stayed aborted), with 8 an `Apply` too (the replica counted the upgrade
/// as committed and advanced its version and chain, but the host was never
/// told to install the payload).
#[test]
fn fuzz_role_group_response_committing_eight_pieces_keeps_every_effect() {
    use bft_upgrade::crypto::{Binding, Code, DeployerKey, PayloadSealer, ReplicaSecretKey, CHUNK_TAG_LEN};
    use bft_upgrade::deployer::{Deployer, GroupTarget, UpgradePlan};
    use bft_upgrade::group::{AuthorizedDeployer, GroupConfig, GroupEffect, GroupReplica, Neighbor, TxnId, Verdict};
    use bft_upgrade::step::{Instant, Peer};
    use bft_upgrade::wire::{
        Attachment, DeployerId, Finish, GroupId, Membership, Operation, Outcome, Reply, ResourceId, MAX_ATTACHED,
    };
    use rand_core::SeedableRng;

    let mut rng = chacha20::ChaCha20Rng::from_seed([8; 32]);
    let keys: Vec<ReplicaSecretKey> = (0..4).map(|_| ReplicaSecretKey::random(&mut rng)).collect();
    let pks: Vec<_> = keys.iter().map(ReplicaSecretKey::public_key).collect();
    let (me, neighbor) = (GroupId(1), GroupId(2));
    let membership = Membership::new(me, &pks).expect("membership");
    let deployer = Deployer::new(DeployerId(1), DeployerKey::random(&mut rng));
    let genesis = Code::from_bytes([0xA0; 32]);
    let authorized = AuthorizedDeployer { id: deployer.id(), key: deployer.public_key(), genesis: genesis.clone() };
    let config = GroupConfig {
        membership: membership.clone(),
        deployers: heapless::Vec::from_slice(&[authorized]).expect("one"),
        neighbors: heapless::Vec::from_slice(&[Neighbor { group: neighbor, f: 1 }]).expect("one"),
        retry_ms: 100,
        proactive: false,
        guardians: None,
        sequencer: None,
    };
    let mut replica = GroupReplica::new(config, 0).expect("replica");

    // MAX_ATTACHED upgrades on unrelated resources, all accepted here.
    let mut codes = Attachment::new();
    let groups = [me, neighbor];
    for i in 0..MAX_ATTACHED as u32 {
        let plan = UpgradePlan::new(&mut rng, deployer.id(), u64::from(i) + 1, &groups).expect("plan");
        let upgrade = plan.header().upgrade;
        let key = plan.group_key(me).expect("in plan");
        let mut sealer = PayloadSealer::new(&key, &Binding::group(upgrade, me), 64).expect("chunk size");
        let mut buf = [0u8; 64 + CHUNK_TAG_LEN];
        sealer.seal_chunk(&mut buf, 8, true).expect("seal");
        let payload = sealer.finish().expect("sealed");
        let resources = [ResourceId(i)];
        let target = GroupTarget {
            membership: &membership,
            resources: &resources,
            prev_version: &genesis,
            guardians: None,
            payload,
            next: None,
        };
        let op = Operation::PrepareInstall(plan.piece(&deployer, &target).expect("piece"));
        let step = replica.handle_ordered(Instant(1), Peer::Installer(1), &op, &keys[0], |_| Verdict::Accept);
        assert!(step.messages.iter().any(|m| matches!(&m.message, bft_upgrade::wire::Message::Answer(a)
            if matches!(a.reply, Reply::Accepted(_)))));
        codes.push(Finish { upgrade, outcome: Outcome::Committed, code: plan.trigger_code().clone() }).expect("room");
    }

    // The response to a transaction's call carries all their trigger codes.
    let step = replica.on_response(Instant(2), TxnId(5), neighbor, &codes);
    let applies = step.effects.iter().filter(|e| matches!(e, GroupEffect::Apply { .. })).count();
    assert_eq!(replica.version(), MAX_ATTACHED as u64, "every piece committed");
    assert_eq!(applies, MAX_ATTACHED, "{} commits, but the host is told to apply {applies}", MAX_ATTACHED);
    assert!(
        step.effects.iter().any(|e| matches!(e, GroupEffect::RestartTransaction(TxnId(5)))),
        "the transaction is aborted and never restarted"
    );
}
