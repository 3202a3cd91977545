//! What the role-level tests build by hand: keys, memberships, guardian
//! sets, one-group pieces and group configurations.

use bft_upgrade::crypto::{Code, PayloadRef, ReplicaSecretKey};
use bft_upgrade::deployer::{Deployer, GroupTarget, UpgradePlan};
use bft_upgrade::group::{AuthorizedDeployer, GroupConfig};
use bft_upgrade::wire::{GroupId, GuardianSet, Membership, Piece, ResourceId};
use chacha20::ChaCha20Rng;

/// `n` fresh replica keys and the membership of `group` they make.
pub fn group_keys(rng: &mut ChaCha20Rng, group: GroupId, n: usize) -> (Vec<ReplicaSecretKey>, Membership) {
    let keys: Vec<ReplicaSecretKey> = (0..n).map(|_| ReplicaSecretKey::random(rng)).collect();
    let pks: Vec<_> = keys.iter().map(|k| k.public_key()).collect();
    let membership = Membership::new(group, &pks).unwrap();
    (keys, membership)
}

/// Guardians `ids` with fresh keys, and the set they make.
pub fn guardian_set(rng: &mut ChaCha20Rng, ids: impl IntoIterator<Item = u32>) -> (Vec<ReplicaSecretKey>, GuardianSet) {
    let ids: Vec<u32> = ids.into_iter().collect();
    let keys: Vec<ReplicaSecretKey> = ids.iter().map(|_| ReplicaSecretKey::random(rng)).collect();
    let members: Vec<(u32, _)> = ids.iter().zip(&keys).map(|(id, k)| (*id, k.public_key())).collect();
    (keys, GuardianSet::new(&members).unwrap())
}

/// A payload reference for pieces whose payload no test opens.
pub fn no_payload() -> PayloadRef {
    PayloadRef { ciphertext_len: 16, chunk_size: 64, digest: Default::default() }
}

/// The piece of a fresh one-group upgrade (`seq`, no resources, on
/// `prev`) by `deployer` for `membership`, in the custody of `guardians`
/// or, without them, of the replicas.
pub fn one_group_piece(
    rng: &mut ChaCha20Rng,
    deployer: &Deployer,
    seq: u64,
    membership: &Membership,
    guardians: Option<&GuardianSet>,
    prev: &Code,
) -> Piece {
    let groups = [membership.group];
    let plan = UpgradePlan::new(rng, deployer.id(), seq, &groups).unwrap();
    let target = GroupTarget {
        membership,
        resources: &[] as &[ResourceId],
        prev_version: prev,
        guardians,
        payload: no_payload(),
        next: None,
    };
    plan.piece(deployer, &target).unwrap()
}

/// `membership`'s group with `deployer` authorized at `genesis`, no
/// neighbors, no proactive diffusion, a 100 ms retry, and `guardians`.
pub fn config(
    membership: &Membership,
    deployer: &Deployer,
    genesis: &Code,
    guardians: Option<&GuardianSet>,
) -> GroupConfig {
    let me = AuthorizedDeployer { id: deployer.id(), key: deployer.public_key(), genesis: genesis.clone() };
    let config = GroupConfig::new(membership.clone(), 100).with_deployer(me).unwrap().proactive(false);
    match guardians {
        Some(set) => config.with_guardians(set),
        None => config,
    }
}
