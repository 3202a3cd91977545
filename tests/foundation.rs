//! Acceptance of the foundation: bundles, boxes, shares, codes, tampering
//! and the chunked payload.

use bft_upgrade::crypto::{
    reconstruct, Binding, Code, DeployerKey, Domain, GroupKey, PayloadOpener, PayloadRef, PayloadSealer,
    ReplicaSecretKey, Share, ShareKind, CHUNK_TAG_LEN,
};
use bft_upgrade::deployer::{Deployer, GroupTarget, UpgradePlan};
use bft_upgrade::error::{CryptoError, DecodeError};
use bft_upgrade::wire::{self, DeployerId, GroupId, Membership, Piece, ResourceId};
use chacha20::ChaCha20Rng;
use rand_core::SeedableRng;

struct Group {
    membership: Membership,
    keys: Vec<ReplicaSecretKey>,
}

fn group(rng: &mut ChaCha20Rng, id: u32, n: usize) -> Group {
    let keys: Vec<_> = (0..n).map(|_| ReplicaSecretKey::random(rng)).collect();
    let pks: Vec<_> = keys.iter().map(|k| k.public_key()).collect();
    Group { membership: Membership::new(GroupId(id), &pks).unwrap(), keys }
}

fn seal_small_payload(plan: &UpgradePlan<'_>, g: GroupId, data: &[u8]) -> PayloadRef {
    let key = plan.group_key(g).unwrap();
    let mut s = PayloadSealer::new(&key, &Binding::group(plan.header().upgrade, g), 1024).unwrap();
    let mut buf = vec![0u8; 1024 + CHUNK_TAG_LEN];
    buf[..data.len()].copy_from_slice(data);
    s.seal_chunk(&mut buf, data.len(), true).unwrap();
    s.finish().unwrap()
}

struct Built {
    groups: Vec<Group>,
    pieces: Vec<Piece>,
    trigger: Code,
    cancel: Code,
    deployer: Deployer,
}

fn build(sizes: &[usize]) -> Built {
    let mut rng = ChaCha20Rng::from_seed([42; 32]);
    let deployer = Deployer::new(DeployerId(1), DeployerKey::random(&mut rng));
    let groups: Vec<Group> = sizes.iter().enumerate().map(|(i, n)| group(&mut rng, 10 + i as u32, *n)).collect();
    let ids: Vec<GroupId> = groups.iter().map(|g| g.membership.group).collect();
    let plan = UpgradePlan::new(&mut rng, deployer.id(), 1, &ids).unwrap();
    let genesis = Code::from_bytes([0; 32]);
    let pieces = groups
        .iter()
        .map(|g| {
            let payload = seal_small_payload(&plan, g.membership.group, b"new code");
            let target = GroupTarget {
                membership: &g.membership,
                resources: &[ResourceId(1)],
                prev_version: &genesis,
                guardians: None,
                payload,
                next: None,
            };
            plan.piece(&deployer, &target).unwrap()
        })
        .collect();
    Built { groups, pieces, trigger: plan.trigger_code().clone(), cancel: plan.cancel_code().clone(), deployer }
}

#[test]
fn bundle_boxes_shares_and_codes() {
    let mut sizes = vec![4; 8];
    sizes.push(16);
    let b = build(&sizes);
    let upgrade = b.pieces[0].header.upgrade;
    let mut xor = Code::default();
    for (g, piece) in b.groups.iter().zip(&b.pieces) {
        piece.verify(&b.deployer.public_key()).unwrap();
        let h = &piece.header;
        b.trigger.check(Domain::Trigger, &Binding::upgrade(upgrade), &h.trigger_digest).unwrap();
        b.cancel.check(Domain::Cancel, &Binding::upgrade(upgrade), &h.cancel_digest).unwrap();
        let n = g.keys.len();
        let k = g.membership.threshold();
        let mut secret_shares: Vec<Share> = Vec::new();
        let mut cancel_shares: Vec<Share> = Vec::new();
        for (i, key) in g.keys.iter().enumerate() {
            // Each replica opens exactly its own box.
            for j in 0..n {
                let r = piece.open_for(j, key);
                assert_eq!(r.is_ok(), i == j, "replica {i} box {j}");
            }
            let opened = piece.open_for(i, key).unwrap();
            assert!(piece.share_is_valid(ShareKind::Secret, &opened.secret_share));
            assert!(!piece.share_is_valid(ShareKind::Cancel, &opened.secret_share));
            secret_shares.push(opened.secret_share.clone());
            cancel_shares.push(opened.cancel_share.clone());
        }
        // Any f+1 rebuild s_g and c; fewer do not.
        let s_g = reconstruct(&secret_shares[n - k..]).unwrap();
        assert_eq!(reconstruct(&secret_shares[..k]).unwrap(), s_g);
        let c = reconstruct(&cancel_shares[..k]).unwrap();
        assert_eq!(Code::from_bytes(c.to_bytes().into()), b.cancel);
        if k > 1 {
            assert_ne!(reconstruct(&secret_shares[..k - 1]).unwrap(), s_g);
            assert_ne!(Code::from_bytes(reconstruct(&cancel_shares[1..k]).unwrap().to_bytes().into()), b.cancel);
        }
        xor.xor_assign(&Code::from_bytes(s_g.to_bytes().into()));
    }
    assert_eq!(xor, b.trigger);
}

#[test]
fn tampering_any_byte_is_detected() {
    let b = build(&[4]);
    let piece = &b.pieces[0];
    let pk = b.deployer.public_key();
    let len = wire::encoded_len(piece);
    let mut buf = vec![0u8; len];
    let bytes = wire::encode(piece, &mut buf).unwrap().to_vec();
    let mut detected = 0usize;
    for i in 0..bytes.len() {
        let mut t = bytes.clone();
        t[i] ^= 0x01;
        match wire::decode::<Piece>(&t) {
            Err(_) => detected += 1,
            Ok(p) => {
                assert!(p.verify(&pk).is_err(), "byte {i} tampered undetected");
                detected += 1;
            }
        }
    }
    assert_eq!(detected, bytes.len());

    // A box opened with another replica's key fails; a box moved to another
    // slot fails for its owner.
    let g = &b.groups[0];
    assert_eq!(piece.open_for(0, &g.keys[1]).err(), Some(CryptoError::OpenFailed));
    let mut swapped = piece.clone();
    swapped.header.replicas.swap(0, 1);
    assert!(swapped.open_for(1, &g.keys[0]).is_err());

    // A forged share fails the digest map.
    let opened = piece.open_for(0, &g.keys[0]).unwrap();
    let mut y = *opened.secret_share.value();
    y[31] ^= 1;
    assert!(!piece.share_is_valid(ShareKind::Secret, &Share::new(1, y)));
    assert!(!piece.share_is_valid(ShareKind::Secret, &Share::new(2, *opened.secret_share.value())));
    assert!(!piece.share_is_valid(ShareKind::Secret, &Share::new(0, y)));
    assert!(!piece.share_is_valid(ShareKind::Secret, &Share::new(200, y)));

    // A piece signed by an unknown key is rejected.
    let mut rng = ChaCha20Rng::from_seed([1; 32]);
    let stranger = DeployerKey::random(&mut rng);
    assert_eq!(piece.verify(&stranger.public_key()), Err(CryptoError::BadSignature));
}

#[test]
fn canonical_round_trip_and_bad_bytes() {
    let b = build(&[7]);
    let piece = &b.pieces[0];
    let mut buf = vec![0u8; wire::encoded_len(piece)];
    let bytes = wire::encode(piece, &mut buf).unwrap().to_vec();
    let back: Piece = wire::decode(&bytes).unwrap();
    assert_eq!(&back, piece);
    let mut again = vec![0u8; bytes.len()];
    assert_eq!(wire::encode(&back, &mut again).unwrap(), &bytes[..]);
    for cut in [0, 1, 10, bytes.len() / 2, bytes.len() - 1] {
        assert!(wire::decode::<Piece>(&bytes[..cut]).is_err());
    }
    let mut extra = bytes.clone();
    extra.push(0);
    assert_eq!(wire::decode::<Piece>(&extra), Err(DecodeError::TrailingBytes));
}

#[test]
fn plan_misuse_is_an_error() {
    let mut rng = ChaCha20Rng::from_seed([5; 32]);
    assert!(UpgradePlan::new(&mut rng, DeployerId(1), 0, &[]).is_err());
    assert!(UpgradePlan::new(&mut rng, DeployerId(1), 0, &[GroupId(2), GroupId(1)]).is_err());
    assert!(UpgradePlan::new(&mut rng, DeployerId(1), 0, &[GroupId(1), GroupId(1)]).is_err());
    let plan = UpgradePlan::new(&mut rng, DeployerId(1), 0, &[GroupId(1)]).unwrap();
    assert!(plan.group_key(GroupId(2)).is_err());
    let deployer = Deployer::new(DeployerId(1), DeployerKey::random(&mut rng));
    let g = group(&mut rng, 2, 4);
    let genesis = Code::default();
    let target = GroupTarget {
        membership: &g.membership,
        resources: &[],
        prev_version: &genesis,
        guardians: None,
        payload: PayloadRef { ciphertext_len: 16, chunk_size: 64, digest: Default::default() },
        next: None,
    };
    assert!(plan.piece(&deployer, &target).is_err());
    let too_many: Vec<ResourceId> = (0..17).map(ResourceId).collect();
    let g1 = group(&mut rng, 1, 4);
    let target = GroupTarget { membership: &g1.membership, resources: &too_many, ..target };
    assert!(plan.piece(&deployer, &target).is_err());
}

/// A 64 MiB payload seals and opens through a 4 KiB buffer; truncation,
/// chunk swap and chunk replay are each detected.
#[test]
fn large_payload_through_small_buffer() {
    const TOTAL: usize = 64 << 20;
    const BUF: usize = 4096;
    const CHUNK: usize = BUF - CHUNK_TAG_LEN;
    let key = GroupKey::from_bytes([9; 32]);
    let binding = Binding::group(bft_upgrade::wire::UpgradeId([3; 16]), GroupId(1));
    let mut sealer = PayloadSealer::new(&key, &binding, CHUNK as u32).unwrap();
    // The sealed stream is kept only to replay it; the sealer and opener
    // themselves hold one 4 KiB buffer.
    let mut sealed: Vec<u8> = Vec::with_capacity(TOTAL + TOTAL / CHUNK * CHUNK_TAG_LEN + BUF);
    let mut buf = [0u8; BUF];
    let mut produced = 0usize;
    let byte_at = |i: usize| (i.wrapping_mul(2_654_435_761) >> 13) as u8;
    loop {
        let len = CHUNK.min(TOTAL - produced);
        for (j, b) in buf[..len].iter_mut().enumerate() {
            *b = byte_at(produced + j);
        }
        produced += len;
        let last = produced == TOTAL;
        sealed.extend_from_slice(sealer.seal_chunk(&mut buf, len, last).unwrap());
        if last {
            break;
        }
    }
    let r = sealer.finish().unwrap();
    assert_eq!(r.plaintext_len().unwrap(), TOTAL as u64);
    assert_eq!(r.ciphertext_len, sealed.len() as u64);

    let open_all = |stream: &[u8], r: &PayloadRef| -> Result<usize, CryptoError> {
        let mut o = PayloadOpener::new(&key, &binding, r)?;
        let mut pos = 0usize;
        let mut plain = 0usize;
        let mut buf = [0u8; BUF];
        while let Some(n) = o.next_chunk_len() {
            let src = stream.get(pos..pos + n).ok_or(CryptoError::PayloadStream)?;
            buf[..n].copy_from_slice(src);
            let p = o.open_chunk(&mut buf[..n])?;
            for (j, b) in p.iter().enumerate() {
                assert_eq!(*b, byte_at(plain + j));
            }
            plain += p.len();
            pos += n;
        }
        o.finish()?;
        Ok(plain)
    };
    assert_eq!(open_all(&sealed, &r).unwrap(), TOTAL);

    // Truncation: the stream ends early (the reference still says the full
    // length), and a reference shortened to a chunk boundary.
    assert!(open_all(&sealed[..sealed.len() - BUF], &r).is_err());
    let mut short = r;
    short.ciphertext_len -= BUF as u64 * 3;
    assert!(open_all(&sealed, &short).is_err());
    // Swap chunks 5 and 6.
    let mut swapped = sealed.clone();
    let (a, b) = swapped.split_at_mut(6 * BUF);
    a[5 * BUF..].swap_with_slice(&mut b[..BUF]);
    assert_eq!(open_all(&swapped, &r), Err(CryptoError::OpenFailed));
    // Replay chunk 7 in place of chunk 8.
    let mut replayed = sealed.clone();
    replayed.copy_within(7 * BUF..8 * BUF, 8 * BUF);
    assert_eq!(open_all(&replayed, &r), Err(CryptoError::OpenFailed));
}
