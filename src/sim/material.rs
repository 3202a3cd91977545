//! Key material and bundles, built once per configuration shape.
//!
//! Keys, pieces and their verification are by far the costliest part of a
//! run (P-256 arithmetic). They depend only on the deployment's shape (group
//! sizes, upgrades) and a material seed, not on the run's seed, which drives
//! the schedule, the faults and the graph. So they are built once per shape
//! and shared by every run in the process, with each replica's signature
//! check and box opening computed once and served from a cache that checks
//! the piece is byte-for-byte the genuine one (anything else is verified for
//! real).

use std::collections::BTreeMap;
use std::format;
use std::string::String;
use std::sync::{Arc, Mutex, OnceLock};
use std::vec;
use std::vec::Vec;

use chacha20::ChaCha20Rng;
use rand_core::SeedableRng;
use rayon::prelude::*;

use super::world::UpgradeSpec;
use crate::crypto::CHUNK_TAG_LEN;
use crate::crypto::{Binding, Code, DeployerKey, PayloadRef, PayloadSealer, PublicKey, ReplicaSecretKey};
use crate::crypto::{GroupKey, Share};
use crate::deployer::{Deployer, GroupTarget, UpgradePlan};
use crate::error::CryptoError;
use crate::group::PieceCrypto;
use crate::wire::{
    DeployerId, GroupId, GuardianSet, Membership, Opened, Piece, ResourceId, Token, UpgradeHeader, UpgradeId,
};

/// Targets whose pieces are built together, on every core.
const PIECE_CHUNK: usize = 4096;

/// How many deployers every simulated group authorizes.
pub(crate) const DEPLOYERS: usize = 4;

/// One upgrade's bundle.
pub(crate) struct Bundle {
    pub(crate) header: UpgradeHeader,
    /// Shared with the worlds built from it, and with the pieces in flight
    /// to guardians: a million-replica world holds each piece once.
    pub(crate) pieces: BTreeMap<GroupId, Arc<Piece>>,
    pub(crate) trigger: Code,
    pub(crate) cancel: Code,
}

/// (upgrade, group, replica or guardian index).
type Slot = (UpgradeId, GroupId, usize);

/// Everything cryptographic about a deployment shape.
pub(crate) struct Material {
    pub(crate) deployers: Vec<(DeployerId, PublicKey)>,
    /// Their signing keys (a Byzantine installer borrows one to squat).
    pub(crate) deployer_keys: Vec<DeployerKey>,
    pub(crate) genesis: Vec<Code>,
    /// Per group, its replicas' keys: the first `n` in index order, then
    /// the keys rotations bring in.
    pub(crate) keys: Vec<Vec<ReplicaSecretKey>>,
    /// Each group's first membership.
    pub(crate) memberships: Vec<Membership>,
    /// (upgrade index, group index) of every membership change (key
    /// rotation or resize) the pieces carry.
    pub(crate) rotations: std::collections::BTreeSet<(usize, usize)>,
    /// Per group, the most replicas any of its memberships has: the
    /// replica slots a world keeps for it.
    pub(crate) slots: Vec<usize>,
    pub(crate) bundles: Vec<Bundle>,
    /// Guardian keys (a pool shared by the groups), and each group's set.
    pub(crate) guardian_keys: Vec<ReplicaSecretKey>,
    pub(crate) guardian_sets: Vec<Option<GuardianSet>>,
    /// Each replica's opened box of each genuine piece, computed the first
    /// time a replica opens it (many boxes are never opened in a run: groups
    /// the schedule never reaches, replicas that crash or lie).
    opened: Memo<Result<Opened, CryptoError>>,
    tokens: Memo<Result<(GroupKey, Token), CryptoError>>,
    guardian_shares: Memo<Result<(Share, Share), CryptoError>>,
}

/// Results computed once per slot, shared by every run of the shape.
struct Memo<T>(Mutex<BTreeMap<Slot, T>>);

impl<T: Clone> Memo<T> {
    fn new() -> Self {
        Self(Mutex::new(BTreeMap::new()))
    }

    fn get_or(&self, at: Slot, compute: impl FnOnce() -> T) -> T {
        if let Some(r) = self.0.lock().ok().and_then(|m| m.get(&at).cloned()) {
            return r;
        }
        let r = compute();
        if let Ok(mut m) = self.0.lock() {
            m.insert(at, r.clone());
        }
        r
    }
}

/// The pool indices of group `gi`'s `per_group` guardians (sorted). Without
/// an overlay, `gi..gi + per_group`: neighbouring groups share guardians,
/// so forwarding has paths along the ring. With one, group `gi`'s own
/// guardian `gi` and those of its overlay targets (each guardian forwards
/// a code to the groups it guards, so a code takes overlay hops), then
/// `gi + 1..` to make up the count.
fn guardians_of(gi: usize, groups: usize, per_group: usize, overlay: usize) -> Vec<usize> {
    let mut set: Vec<usize> = core::iter::once(gi)
        .chain(crate::overlay::targets(gi, groups, overlay))
        .chain(gi + 1..gi + per_group)
        .fold(Vec::new(), |mut v, k| {
            if !v.contains(&k) {
                v.push(k);
            }
            v
        });
    set.truncate(per_group);
    set.sort_unstable();
    set
}

impl Material {
    /// The material for this shape, built on first use.
    pub(crate) fn get(
        seed: u64,
        sizes: &[usize],
        upgrades: &[UpgradeSpec],
        guardians: usize,
        overlay: usize,
    ) -> Arc<Material> {
        static CACHE: OnceLock<Mutex<BTreeMap<String, Arc<Material>>>> = OnceLock::new();
        let key = format!("{seed}/{sizes:?}/{upgrades:?}/{guardians}/{overlay}");
        let cache = CACHE.get_or_init(|| Mutex::new(BTreeMap::new()));
        if let Some(m) = cache.lock().map(|c| c.get(&key).cloned()).ok().flatten() {
            return m;
        }
        let built = Arc::new(Self::build(seed, sizes, upgrades, guardians, overlay));
        if let Ok(mut c) = cache.lock() {
            // Shapes used once (e.g. scaling runs) are not worth keeping
            // alongside many others.
            if c.len() > 64 {
                c.clear();
            }
            c.insert(key, built.clone());
        }
        built
    }

    fn build(seed: u64, sizes: &[usize], upgrades: &[UpgradeSpec], per_group: usize, overlay: usize) -> Self {
        Self::build_in(seed, sizes, upgrades, per_group, overlay, PIECE_CHUNK)
    }

    /// [`build`](Self::build), `chunk` targets' pieces at a time.
    fn build_in(
        seed: u64,
        sizes: &[usize],
        upgrades: &[UpgradeSpec],
        per_group: usize,
        overlay: usize,
        chunk: usize,
    ) -> Self {
        let mut s = [0u8; 32];
        s[..8].copy_from_slice(&seed.to_le_bytes());
        s[8..16].copy_from_slice(b"material");
        let mut rng = ChaCha20Rng::from_seed(s);
        let deployer_keys: Vec<DeployerKey> = (0..DEPLOYERS).map(|_| DeployerKey::random(&mut rng)).collect();
        let deployers: Vec<Deployer> =
            deployer_keys.iter().zip(1..).map(|(k, i)| Deployer::new(DeployerId(i), k.clone())).collect();
        let genesis: Vec<Code> = (0..DEPLOYERS as u8).map(|i| Code::from_bytes([i + 1; 32])).collect();
        // Secret keys are drawn in order from the one rng; the point
        // multiplications (public keys, pieces) run on every core, so the
        // material is the same whatever the number of cores.
        let mut keys: Vec<Vec<ReplicaSecretKey>> =
            sizes.iter().map(|n| (0..*n).map(|_| ReplicaSecretKey::random(&mut rng)).collect()).collect();
        let memberships: Vec<Membership> = keys
            .par_iter()
            .enumerate()
            .map(|(gi, k)| {
                let pks: Vec<_> = k.iter().map(|k| k.public_key()).collect();
                Membership::new(GroupId(gi as u32 + 1), &pks).expect("group size within capacity")
            })
            .collect();

        // Guardians: a pool of G + per_group - 1 (see `guardians_of`).
        let pool = if per_group == 0 { 0 } else { sizes.len() + per_group - 1 };
        let guardian_keys: Vec<ReplicaSecretKey> = (0..pool).map(|_| ReplicaSecretKey::random(&mut rng)).collect();
        let guardian_public: Vec<PublicKey> = guardian_keys.par_iter().map(ReplicaSecretKey::public_key).collect();
        let guardian_sets: Vec<Option<GuardianSet>> = (0..sizes.len())
            .into_par_iter()
            .map(|gi| {
                (per_group > 0).then(|| {
                    let members: Vec<(u32, PublicKey)> = guardians_of(gi, sizes.len(), per_group, overlay)
                        .into_iter()
                        .map(|k| (k as u32 + 1, guardian_public[k]))
                        .collect();
                    GuardianSet::new(&members).expect("guardian count within capacity")
                })
            })
            .collect();

        // Chained upgrades of one deployer follow each other: each piece's
        // previous version code is the code the deployer's previous upgrade
        // over the group finished with, predicted from the spec (no group
        // rejects: τ; else c). Conflicting upgrades should be the last of
        // their deployer's chain, since their outcome is not predictable.
        let mut chain: Vec<Vec<Code>> = (0..DEPLOYERS).map(|d| vec![genesis[d].clone(); sizes.len()]).collect();
        // Each group's membership as the upgrades before leave it (a key
        // rotation predicted to commit changes it for the pieces after).
        let mut current = memberships.clone();
        let mut rotations = std::collections::BTreeSet::new();
        let mut slots = sizes.to_vec();
        let mut bundles = Vec::new();
        for (ui, spec) in upgrades.iter().enumerate() {
            let mut ids: Vec<GroupId> = spec.groups.iter().map(|gi| memberships[*gi].group).collect();
            ids.sort();
            ids.dedup();
            let deployer = &deployers[spec.deployer];
            let plan = UpgradePlan::new(&mut rng, deployer.id(), spec.order_seq, &ids).expect("valid plan");
            let stale = Code::from_bytes([0xEE; 32]);
            let commits = spec.chained && spec.rejected_by.is_empty();
            let resources: Vec<ResourceId> = spec.resources.iter().map(|r| ResourceId(*r)).collect();
            // Chunk by chunk: first, in order, everything that draws from
            // the rng or that a later target of the same upgrade depends on
            // (a group listed twice sees its first rotation); then the
            // chunk's pieces, in parallel. Chunks keep the pieces waiting to
            // be shared to a few thousand (a million-replica world is near
            // its memory goal).
            let mut pieces = BTreeMap::new();
            for chunk in spec.groups.chunks(chunk) {
                let mut owned = Vec::with_capacity(chunk.len());
                for gi in chunk {
                    let m = current[*gi].clone();
                    let payload = seal_payload(&plan, m.group);
                    let prev = if spec.chained { chain[spec.deployer][*gi].clone() } else { stale.clone() };
                    // A rotation of one key, where the group is in replica
                    // custody and big enough to keep f + 1 + f' replicas.
                    let nth = rotations.iter().filter(|(_, g)| g == gi).count();
                    let custody = guardian_sets[*gi].as_ref().map(|set| crate::wire::GuardianIds {
                        f: set.f,
                        ids: set.members.iter().map(|(id, _)| *id).collect(),
                    });
                    let resize = spec.resizes.iter().find(|(g, _)| g == gi).map(|(_, by)| *by);
                    let next = match resize {
                        Some(by) if spec.chained => resize_to(&mut rng, &mut keys[*gi], &m, sizes[*gi], by, custody),
                        _ => (spec.rotates.contains(gi) && spec.chained)
                            .then(|| rotate(&mut rng, &mut keys[*gi], &m, nth, custody))
                            .flatten(),
                    };
                    if let Some(next) = &next {
                        rotations.insert((ui, *gi));
                        slots[*gi] = slots[*gi].max(next.membership.n());
                        if commits {
                            current[*gi] = next.membership.clone();
                        }
                    }
                    owned.push((*gi, m, prev, payload, next));
                }
                let targets: Vec<GroupTarget<'_>> = owned
                    .iter()
                    .map(|(gi, m, prev, payload, next)| GroupTarget {
                        membership: m,
                        resources: &resources,
                        prev_version: prev,
                        guardians: guardian_sets[*gi].as_ref(),
                        payload: *payload,
                        next: next.as_ref(),
                    })
                    .collect();
                for (piece, target) in plan.pieces(deployer, &targets).into_iter().zip(&targets) {
                    // A group listed twice keeps its last piece.
                    pieces.insert(target.membership.group, Arc::new(piece.expect("piece")));
                }
            }
            if spec.chained {
                let code = if spec.rejected_by.is_empty() { plan.trigger_code() } else { plan.cancel_code() };
                for gi in &spec.groups {
                    chain[spec.deployer][*gi] = code.clone();
                }
            }
            bundles.push(Bundle {
                header: plan.header().clone(),
                pieces,
                trigger: plan.trigger_code().clone(),
                cancel: plan.cancel_code().clone(),
            });
        }
        Self {
            deployers: deployers.iter().map(|d| (d.id(), d.public_key())).collect(),
            deployer_keys,
            genesis,
            keys,
            memberships,
            rotations,
            slots,
            bundles,
            guardian_keys,
            guardian_sets,
            opened: Memo::new(),
            tokens: Memo::new(),
            guardian_shares: Memo::new(),
        }
    }

    /// The genuine piece of `upgrade` for `group`, if there is one.
    fn genuine(&self, upgrade: UpgradeId, group: GroupId) -> Option<&Piece> {
        self.bundles.iter().find(|b| b.header.upgrade == upgrade).and_then(|b| b.pieces.get(&group)).map(|p| &**p)
    }
}

/// [`PieceCrypto`] served from the material: exact answers for genuine
/// pieces, real checks (with `key`) for anything else.
pub(crate) struct Cached<'m> {
    pub(crate) material: &'m Material,
    pub(crate) key: &'m ReplicaSecretKey,
}

impl Cached<'_> {
    fn genuine(&self, piece: &Piece) -> bool {
        self.material.genuine(piece.header.upgrade, piece.header.group).is_some_and(|g| g == piece)
    }
}

impl PieceCrypto for Cached<'_> {
    fn verify(&mut self, piece: &Piece, signer: &PublicKey) -> bool {
        let h = &piece.header;
        let deployer_key = self.material.deployers.iter().find(|(id, _)| *id == h.deployer).map(|(_, k)| k);
        if self.genuine(piece) && deployer_key == Some(signer) {
            return true;
        }
        piece.verify(signer).is_ok()
    }

    fn open(&mut self, piece: &Piece, index: usize) -> Result<Opened, CryptoError> {
        let h = &piece.header;
        if self.genuine(piece) && self.key_is_replica(h.group, index) {
            return self.material.opened.get_or((h.upgrade, h.group, index), || piece.open_for(index, self.key));
        }
        piece.open_for(index, self.key)
    }

    fn open_token(&mut self, piece: &Piece, index: usize) -> Result<(GroupKey, Token), CryptoError> {
        let h = &piece.header;
        if self.genuine(piece) && self.key_is_replica(h.group, index) {
            return self.material.tokens.get_or((h.upgrade, h.group, index), || piece.open_token(index, self.key));
        }
        piece.open_token(index, self.key)
    }

    fn open_guardian(&mut self, piece: &Piece, index: usize) -> Result<(Share, Share), CryptoError> {
        let h = &piece.header;
        let set = self.material.guardian_sets.get((h.group.0 as usize).wrapping_sub(1)).and_then(Option::as_ref);
        let ours = set
            .and_then(|s| s.members.get(index))
            .is_some_and(|(id, _)| std::ptr::eq(self.key, &self.material.guardian_keys[*id as usize - 1]));
        if ours && self.genuine(piece) {
            let at = (h.upgrade, h.group, index);
            return self.material.guardian_shares.get_or(at, || piece.open_guardian(index, self.key));
        }
        piece.open_guardian(index, self.key)
    }
}

impl Cached<'_> {
    /// Whether `key` is replica `index` of `group`: the cache answers only
    /// for the very key it was computed with.
    fn key_is_replica(&self, group: GroupId, index: usize) -> bool {
        let keys = self.material.keys.get((group.0 as usize).wrapping_sub(1));
        keys.and_then(|k| k.get(index)).is_some_and(|k| std::ptr::eq(self.key, k))
    }
}

/// The membership `m` with the key of replica `nth % n` replaced by a fresh
/// one (appended to the group's `keys`), if `m` can take it; the group's
/// custody stays as it is.
fn rotate(
    rng: &mut ChaCha20Rng,
    keys: &mut Vec<ReplicaSecretKey>,
    m: &Membership,
    nth: usize,
    guardians: Option<crate::wire::GuardianIds>,
) -> Option<crate::wire::NextMembership> {
    let key = ReplicaSecretKey::random(rng);
    let mut pks = m.replicas.clone();
    *pks.get_mut(nth % m.n())? = key.public_key();
    let next = crate::wire::NextMembership { membership: Membership { replicas: pks, ..m.clone() }, guardians };
    if !next.follows(m) {
        return None;
    }
    keys.push(key);
    Some(next)
}

/// The membership `m` resized by `by` replicas: fresh keys appended (and
/// pushed to the group's `keys`) or the last ones dropped, never below
/// `first` replicas; `None` if that changes nothing or `m` cannot take it.
fn resize_to(
    rng: &mut ChaCha20Rng,
    keys: &mut Vec<ReplicaSecretKey>,
    m: &Membership,
    first: usize,
    by: i8,
    guardians: Option<crate::wire::GuardianIds>,
) -> Option<crate::wire::NextMembership> {
    let n = m.n().checked_add_signed(isize::from(by))?.max(first);
    let mut pks: Vec<_> = m.replicas.iter().take(n).copied().collect();
    let fresh: Vec<ReplicaSecretKey> = (m.n()..n).map(|_| ReplicaSecretKey::random(rng)).collect();
    pks.extend(fresh.iter().map(ReplicaSecretKey::public_key));
    let membership = Membership::new(m.group, &pks).ok()?;
    let next = crate::wire::NextMembership { membership, guardians };
    if n == m.n() || !next.follows(m) {
        return None;
    }
    keys.extend(fresh);
    Some(next)
}

/// Seals a small payload for a group with the plan's `k_g`.
fn seal_payload(plan: &UpgradePlan<'_>, group: GroupId) -> PayloadRef {
    let key = plan.group_key(group).expect("group in plan");
    let binding = Binding::group(plan.header().upgrade, group);
    let mut sealer = PayloadSealer::new(&key, &binding, 256).expect("chunk size");
    let mut buf = [0u8; 256 + CHUNK_TAG_LEN];
    let text = format!("payload for group {}", group.0);
    buf[..text.len()].copy_from_slice(text.as_bytes());
    let _ = sealer.seal_chunk(&mut buf, text.len(), true).expect("seal");
    sealer.finish().expect("finish")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys and pieces are built on every core, the rng drawn in order:
    /// one thread or several, in chunks of any size, the material is byte
    /// for byte the same (rotations, resizes, guardian custody and a group
    /// listed twice included).
    #[test]
    fn the_same_material_on_one_core_or_many() {
        let mut upgrades = super::super::swarm::chained_workload(6, 12, 3);
        upgrades[0].resizes = vec![(upgrades[0].groups[0], 1)];
        let twice = upgrades[2].groups[0];
        upgrades[2].groups.push(twice);
        upgrades[2].rotates = vec![twice];
        let sizes = [4, 4, 7, 4, 5, 4];
        let build = |threads: usize, chunk: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
            pool.install(|| Material::build_in(5, &sizes, &upgrades, 4, 2, chunk))
        };
        let (one, many) = (build(1, PIECE_CHUNK), build(4, 1));
        assert!(one.rotations.iter().any(|(ui, _)| *ui > 0), "the workload rotates keys");
        assert_eq!(one.memberships, many.memberships);
        assert_eq!(one.guardian_sets, many.guardian_sets);
        assert_eq!(one.slots, many.slots);
        assert_eq!(one.bundles.len(), upgrades.len());
        for (a, b) in one.bundles.iter().zip(&many.bundles) {
            assert_eq!(a.header, b.header);
            assert!(!a.pieces.is_empty());
            assert_eq!(a.pieces, b.pieces);
        }
        let public = |m: &Material| -> Vec<Vec<PublicKey>> {
            m.keys.iter().map(|k| k.iter().map(ReplicaSecretKey::public_key).collect()).collect()
        };
        assert_eq!(public(&one), public(&many));
    }
}
