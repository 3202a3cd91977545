//! Tests written for mutants that `cargo mutants` found surviving the rest
//! of the suite (see MUTANTS.md). Each checks the code against a value
//! computed here, independently of the function under test.

use bft_upgrade::crypto::{
    self, open_box, reconstruct, Binding, Code, DeployerKey, Domain, PayloadRef, ReplicaSecretKey, Share, ShareKind,
};
use bft_upgrade::deployer::{Deployer, GroupTarget, UpgradePlan};
use bft_upgrade::error::CryptoError;
use bft_upgrade::wire::{Custody, DeployerId, GroupId, Membership, UpgradeId, GUARDIAN_INDEX_BASE};
use chacha20::ChaCha20Rng;
use rand_core::SeedableRng;

mod support;
use support::fixture::{group_keys, guardian_set, one_group_piece};

/// Byte-wise XOR, written out here rather than through `Code::xor_assign`.
fn xor_bytes(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    core::array::from_fn(|i| a[i] ^ b[i])
}

fn payload() -> PayloadRef {
    PayloadRef { ciphertext_len: 16, chunk_size: 64, digest: Default::default() }
}

/// `xor_assign` is XOR: bits set in both operands clear (OR or AND would
/// keep or drop them), and XOR-ing the same code twice restores the start.
#[test]
fn xor_assign_is_bytewise_xor() {
    let a: [u8; 32] = core::array::from_fn(|i| (i as u8).wrapping_mul(37) ^ 0xa5);
    let b: [u8; 32] = core::array::from_fn(|i| (i as u8).wrapping_mul(101).wrapping_add(7));
    for (x, y) in [(a, b), ([0xff; 32], [0xff; 32]), ([0xf0; 32], [0x3c; 32]), ([0; 32], a)] {
        let mut code = Code::from_bytes(x);
        code.xor_assign(&Code::from_bytes(y));
        assert_eq!(code.expose(), &xor_bytes(&x, &y));
        code.xor_assign(&Code::from_bytes(y));
        assert_eq!(code.expose(), &x);
    }
}

/// The deployer's `τ` is the byte-wise XOR of the groups' `s_g`, each
/// rebuilt here from `f + 1` shares opened from its piece, and `D(τ)` in
/// the header is the digest of that XOR.
#[test]
fn trigger_code_is_xor_of_group_secrets() {
    let mut rng = ChaCha20Rng::from_seed([77; 32]);
    let deployer = Deployer::new(DeployerId(3), DeployerKey::random(&mut rng));
    // Several groups of several sizes, so secrets with overlapping bits are
    // all but certain (an OR of five random 256-bit values is not their XOR).
    let sizes = [4usize, 7, 4, 10, 4];
    let groups: Vec<(Membership, Vec<ReplicaSecretKey>)> = sizes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let keys: Vec<_> = (0..*n).map(|_| ReplicaSecretKey::random(&mut rng)).collect();
            let pks: Vec<_> = keys.iter().map(|k| k.public_key()).collect();
            (Membership::new(GroupId(20 + i as u32), &pks).unwrap(), keys)
        })
        .collect();
    let ids: Vec<GroupId> = groups.iter().map(|(m, _)| m.group).collect();
    let plan = UpgradePlan::new(&mut rng, deployer.id(), 9, &ids).unwrap();
    let genesis = Code::default();

    let mut expected = [0u8; 32];
    for (m, keys) in &groups {
        let target = GroupTarget {
            membership: m,
            resources: &[],
            prev_version: &genesis,
            guardians: None,
            payload: payload(),
            next: None,
        };
        let piece = plan.piece(&deployer, &target).unwrap();
        let k = m.threshold();
        // The last f + 1 replicas, so the rebuild does not lean on share 1.
        let shares: Vec<Share> =
            (keys.len() - k..keys.len()).map(|i| piece.open_for(i, &keys[i]).unwrap().secret_share.clone()).collect();
        let s_g: [u8; 32] = reconstruct(&shares).unwrap().to_bytes().into();
        expected = xor_bytes(&expected, &s_g);
    }
    assert_eq!(plan.trigger_code().expose(), &expected);
    let upgrade = plan.header().upgrade;
    assert_eq!(
        plan.header().trigger_digest,
        crypto::digest(Domain::Trigger, &Binding::upgrade(upgrade), &expected),
        "D(τ) must be the digest of the XOR"
    );
}

/// `Binding::offset(k)` adds `k` to the index and keeps the rest.
#[test]
fn offset_adds_to_the_index() {
    let base = Binding::group(UpgradeId([6; 16]), GroupId(11)).at(GUARDIAN_INDEX_BASE);
    for k in [0u16, 1, 2, 5, 64] {
        let b = base.offset(k);
        assert_eq!(b, Binding { index: GUARDIAN_INDEX_BASE + k, ..base }, "offset {k}");
    }
    assert_eq!(Binding::group(UpgradeId([6; 16]), GroupId(11)).at(5).offset(3).index, 8);
    // Saturating, as documented: no wrap into the replica indices.
    assert_eq!(base.at(u16::MAX - 1).offset(5).index, u16::MAX);
}

/// A share's digest is `D(x || y)` bound at the base binding's index plus
/// the share index, computed here directly; two indices under one binding
/// give two digests, also for the same value.
#[test]
fn share_digest_is_bound_at_base_plus_index() {
    let y = [0x42u8; 32];
    for base in [
        Binding::group(UpgradeId([1; 16]), GroupId(2)),
        Binding::group(UpgradeId([1; 16]), GroupId(2)).at(GUARDIAN_INDEX_BASE),
    ] {
        for (kind, domain) in [(ShareKind::Secret, Domain::SecretShare), (ShareKind::Cancel, Domain::CancelShare)] {
            for x in [1u8, 2, 3, 17] {
                let share = Share::new(x, y);
                let direct = crypto::digest(
                    domain,
                    &Binding { index: base.index + u16::from(x), ..base },
                    share.to_bytes().as_slice(),
                );
                assert_eq!(share.digest(kind, &base), direct, "kind {kind:?} share {x} base {}", base.index);
                // Not the digest at the base index itself.
                assert_ne!(share.digest(kind, &base), crypto::digest(domain, &base, share.to_bytes().as_slice()));
            }
            assert_ne!(Share::new(1, y).digest(kind, &base), Share::new(2, y).digest(kind, &base));
        }
    }
}

/// In guardian custody, guardian `k`'s box is sealed at
/// `GUARDIAN_INDEX_BASE + k` (opened here with `open_box` at that binding,
/// built directly) and not at the base binding or another guardian's index;
/// its share digests are bound the same way; the boxes all differ.
#[test]
fn guardian_boxes_and_digests_are_bound_per_index() {
    let mut rng = ChaCha20Rng::from_seed([31; 32]);
    let (_, membership) = group_keys(&mut rng, GroupId(4), 4);
    let (guardian_keys, set) = guardian_set(&mut rng, 50..54);
    let deployer = Deployer::new(DeployerId(1), DeployerKey::random(&mut rng));
    let piece = one_group_piece(&mut rng, &deployer, 1, &membership, Some(&set), &Code::default());
    let h = &piece.header;
    let Custody::Guardians { guardians, .. } = &h.custody else { panic!("guardian custody") };
    let group = Binding::group(h.upgrade, h.group);
    let base = Binding { index: GUARDIAN_INDEX_BASE, ..group };
    assert_eq!(h.guardian_binding(), base);

    for (i, (entry, key)) in guardians.iter().zip(&guardian_keys).enumerate() {
        let x = u8::try_from(i + 1).unwrap();
        let at = Binding { index: GUARDIAN_INDEX_BASE + u16::from(x), ..group };
        let contents = open_box(key, &h.ephemeral, &at, &entry.sealed).unwrap();
        assert_eq!(open_box(key, &h.ephemeral, &base, &entry.sealed).err(), Some(CryptoError::OpenFailed));
        let other = Binding { index: GUARDIAN_INDEX_BASE + u16::from(x) + 1, ..group };
        assert_eq!(open_box(key, &h.ephemeral, &other, &entry.sealed).err(), Some(CryptoError::OpenFailed));
        // The shares' digests, bound at the same index, computed directly.
        let s = Share::new(x, contents.first);
        let c = Share::new(x, contents.second);
        assert_eq!(entry.secret_share, crypto::digest(Domain::SecretShare, &at, s.to_bytes().as_slice()));
        assert_eq!(entry.cancel_share, crypto::digest(Domain::CancelShare, &at, c.to_bytes().as_slice()));
        // The piece's own opener agrees.
        let (s2, c2) = piece.open_guardian(i, key).unwrap();
        assert_eq!((s2, c2), (s, c));
    }
    for (i, a) in guardians.iter().enumerate() {
        for b in guardians.iter().skip(i + 1) {
            assert_ne!(a.sealed, b.sealed);
            assert_ne!(a.secret_share, b.secret_share);
            assert_ne!(a.cancel_share, b.cancel_share);
        }
    }
}

/// `VersionChain` at capacity: groups it already tracks advance again
/// (they take no new room), a new group is refused and leaves the chain
/// as it was.
#[test]
fn version_chain_capacity_counts_only_new_groups() {
    use bft_upgrade::deployer::VersionChain;
    use bft_upgrade::error::CapacityError;
    use bft_upgrade::wire::Outcome;

    let mut rng = ChaCha20Rng::from_seed([12; 32]);
    let genesis = Code::from_bytes([3; 32]);

    // One slot, one group, advanced twice.
    let mut one: VersionChain<1> = VersionChain::new(genesis.clone());
    let g1 = [GroupId(1)];
    let p1 = UpgradePlan::new(&mut rng, DeployerId(1), 1, &g1).unwrap();
    one.advance(&p1, Outcome::Committed).unwrap();
    assert_eq!(one.prev(GroupId(1)), p1.trigger_code());
    let p2 = UpgradePlan::new(&mut rng, DeployerId(1), 2, &g1).unwrap();
    one.advance(&p2, Outcome::Aborted).unwrap();
    assert_eq!(one.prev(GroupId(1)), p2.cancel_code());

    // Two slots full: the same two groups again are fine, a third is not.
    let mut two: VersionChain<2> = VersionChain::new(genesis.clone());
    let g12 = [GroupId(1), GroupId(2)];
    let p3 = UpgradePlan::new(&mut rng, DeployerId(1), 3, &g12).unwrap();
    two.advance(&p3, Outcome::Committed).unwrap();
    let p4 = UpgradePlan::new(&mut rng, DeployerId(1), 4, &g12).unwrap();
    two.advance(&p4, Outcome::Committed).unwrap();
    let g3 = [GroupId(3)];
    let p5 = UpgradePlan::new(&mut rng, DeployerId(1), 5, &g3).unwrap();
    assert_eq!(two.advance(&p5, Outcome::Committed), Err(CapacityError::Groups));
    assert_eq!(two.prev(GroupId(3)), &genesis, "a refused advance tracks nothing");
    assert_eq!(two.prev(GroupId(1)), p4.trigger_code());
    assert_eq!(two.prev(GroupId(2)), p4.trigger_code());
    // One tracked and one new group: one new slot needed, none free.
    let g23 = [GroupId(2), GroupId(3)];
    let p6 = UpgradePlan::new(&mut rng, DeployerId(1), 6, &g23).unwrap();
    assert_eq!(two.advance(&p6, Outcome::Aborted), Err(CapacityError::Groups));
    assert_eq!(two.prev(GroupId(2)), p4.trigger_code(), "unchanged after a refusal");
}

/// `Signature::to_bytes` is `r || s` as the wire encodes the signature,
/// and `from_bytes` of it is the same signature, which still verifies.
#[test]
fn signature_bytes_round_trip() {
    use bft_upgrade::crypto::Signature;
    use bft_upgrade::wire;

    let mut rng = ChaCha20Rng::from_seed([13; 32]);
    let key = DeployerKey::random(&mut rng);
    let d1 = crypto::digest(Domain::PieceHeader, &Binding::upgrade(UpgradeId([1; 16])), b"one");
    let d2 = crypto::digest(Domain::PieceHeader, &Binding::upgrade(UpgradeId([1; 16])), b"two");
    let (s1, s2) = (key.sign(&d1).unwrap(), key.sign(&d2).unwrap());
    for (sig, d) in [(s1, d1), (s2, d2)] {
        let bytes = sig.to_bytes();
        let mut buf = [0u8; 65];
        assert_eq!(&bytes[..], &wire::encode(&sig, &mut buf).unwrap()[1..], "r || s, as encoded");
        let back = Signature::from_bytes(&bytes);
        assert_eq!(back, sig);
        back.verify(&key.public_key(), &d).unwrap();
    }
    assert_ne!(s1.to_bytes(), s2.to_bytes());
}

/// `SealedBox::flip_bit` (the tamper tests' helper) flips one bit for each
/// index below 112, in a different byte for each, and wraps modulo 112: so
/// a loop over 0..112 tampers with every byte of the box.
#[test]
fn flip_bit_reaches_every_bit() {
    let mut rng = ChaCha20Rng::from_seed([14; 32]);
    let key = ReplicaSecretKey::random(&mut rng);
    let sealer = crypto::BoxSealer::new(&mut rng);
    let contents = crypto::BoxContents { first: [1; 32], second: [2; 32], third: [3; 32] };
    let sealed = sealer.seal(&key.public_key(), &Binding::upgrade(UpgradeId([2; 16])), &contents).unwrap();
    let flipped: Vec<_> = (0..112)
        .map(|i| {
            let mut t = sealed.clone();
            t.flip_bit(i);
            assert_ne!(t, sealed, "index {i}");
            let mut twice = t.clone();
            twice.flip_bit(i);
            assert_eq!(twice, sealed, "index {i} flipped back");
            let mut wrapped = sealed.clone();
            wrapped.flip_bit(i + 112);
            assert_eq!(wrapped, t, "index {i} modulo 112");
            t
        })
        .collect();
    for (i, a) in flipped.iter().enumerate() {
        for b in &flipped[i + 1..] {
            assert_ne!(a, b, "two indices flip the same bit");
        }
    }
}
