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

use super::world::UpgradeSpec;
use crate::crypto::CHUNK_TAG_LEN;
use crate::crypto::{Binding, Code, DeployerKey, PayloadRef, PayloadSealer, PublicKey, ReplicaSecretKey};
use crate::deployer::{Deployer, GroupTarget, UpgradePlan};
use crate::error::CryptoError;
use crate::group::PieceCrypto;
use crate::wire::{DeployerId, GroupId, Membership, Opened, Piece, ResourceId, UpgradeHeader, UpgradeId};

/// How many deployers every simulated group authorizes.
pub(crate) const DEPLOYERS: usize = 4;

/// One upgrade's bundle.
pub(crate) struct Bundle {
    pub(crate) header: UpgradeHeader,
    pub(crate) pieces: BTreeMap<GroupId, Piece>,
    pub(crate) trigger: Code,
    pub(crate) cancel: Code,
}

/// Everything cryptographic about a deployment shape.
pub(crate) struct Material {
    pub(crate) deployers: Vec<(DeployerId, PublicKey)>,
    pub(crate) genesis: Vec<Code>,
    pub(crate) keys: Vec<Vec<ReplicaSecretKey>>,
    pub(crate) memberships: Vec<Membership>,
    pub(crate) bundles: Vec<Bundle>,
    /// Each replica's opened box of each genuine piece.
    opened: BTreeMap<(UpgradeId, GroupId, usize), Result<Opened, CryptoError>>,
}

impl Material {
    /// The material for this shape, built on first use.
    pub(crate) fn get(seed: u64, sizes: &[usize], upgrades: &[UpgradeSpec]) -> Arc<Material> {
        static CACHE: OnceLock<Mutex<BTreeMap<String, Arc<Material>>>> = OnceLock::new();
        let key = format!("{seed}/{sizes:?}/{upgrades:?}");
        let cache = CACHE.get_or_init(|| Mutex::new(BTreeMap::new()));
        if let Some(m) = cache.lock().map(|c| c.get(&key).cloned()).ok().flatten() {
            return m;
        }
        let built = Arc::new(Self::build(seed, sizes, upgrades));
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

    fn build(seed: u64, sizes: &[usize], upgrades: &[UpgradeSpec]) -> Self {
        let mut s = [0u8; 32];
        s[..8].copy_from_slice(&seed.to_le_bytes());
        s[8..16].copy_from_slice(b"material");
        let mut rng = ChaCha20Rng::from_seed(s);
        let deployers: Vec<Deployer> =
            (0..DEPLOYERS as u32).map(|i| Deployer::new(DeployerId(i + 1), DeployerKey::random(&mut rng))).collect();
        let genesis: Vec<Code> = (0..DEPLOYERS as u8).map(|i| Code::from_bytes([i + 1; 32])).collect();
        let mut keys = Vec::new();
        let mut memberships = Vec::new();
        for (gi, n) in sizes.iter().enumerate() {
            let k: Vec<ReplicaSecretKey> = (0..*n).map(|_| ReplicaSecretKey::random(&mut rng)).collect();
            let pks: Vec<_> = k.iter().map(|k| k.public_key()).collect();
            memberships.push(Membership::new(GroupId(gi as u32 + 1), &pks).expect("group size within capacity"));
            keys.push(k);
        }

        // Chained upgrades of one deployer follow each other: each piece's
        // previous version code is the code the deployer's previous upgrade
        // over the group finished with, predicted from the spec (no group
        // rejects: τ; else c). Conflicting upgrades should be the last of
        // their deployer's chain, since their outcome is not predictable.
        let mut chain: Vec<Vec<Code>> = (0..DEPLOYERS).map(|d| vec![genesis[d].clone(); sizes.len()]).collect();
        let mut bundles = Vec::new();
        for spec in upgrades {
            let mut ids: Vec<GroupId> = spec.groups.iter().map(|gi| memberships[*gi].group).collect();
            ids.sort();
            ids.dedup();
            let plan = UpgradePlan::new(&mut rng, spec.order_seq, &ids).expect("valid plan");
            let deployer = &deployers[spec.deployer];
            let mut pieces = BTreeMap::new();
            let stale = Code::from_bytes([0xEE; 32]);
            for gi in &spec.groups {
                let m = &memberships[*gi];
                let payload = seal_payload(&plan, m.group);
                let prev = if spec.chained { &chain[spec.deployer][*gi] } else { &stale };
                let resources: Vec<ResourceId> = spec.resources.iter().map(|r| ResourceId(*r)).collect();
                let target = GroupTarget { membership: m, resources: &resources, prev_version: prev, payload };
                pieces.insert(m.group, plan.piece(deployer, &mut rng, &target).expect("piece"));
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
        let mut opened = BTreeMap::new();
        for b in &bundles {
            for (g, piece) in &b.pieces {
                let gi = g.0 as usize - 1;
                for (ri, key) in keys[gi].iter().enumerate() {
                    opened.insert((b.header.upgrade, *g, ri), piece.open_for(ri, key));
                }
            }
        }
        Self {
            deployers: deployers.iter().map(|d| (d.id(), d.public_key())).collect(),
            genesis,
            keys,
            memberships,
            bundles,
            opened,
        }
    }

    /// The genuine piece of `upgrade` for `group`, if there is one.
    fn genuine(&self, upgrade: UpgradeId, group: GroupId) -> Option<&Piece> {
        self.bundles.iter().find(|b| b.header.upgrade == upgrade).and_then(|b| b.pieces.get(&group))
    }
}

/// [`PieceCrypto`] served from the material: exact answers for genuine
/// pieces, real checks for anything else.
pub(crate) struct Cached<'m> {
    pub(crate) material: &'m Material,
    pub(crate) group: usize,
    pub(crate) replica: usize,
}

impl PieceCrypto for Cached<'_> {
    fn verify(&mut self, piece: &Piece, signer: &PublicKey) -> bool {
        let h = &piece.header;
        let genuine = self.material.genuine(h.upgrade, h.group).is_some_and(|g| g == piece);
        let deployer_key = self.material.deployers.iter().find(|(id, _)| *id == h.deployer).map(|(_, k)| k);
        if genuine && deployer_key == Some(signer) {
            return true;
        }
        piece.verify(signer).is_ok()
    }

    fn open(&mut self, piece: &Piece, index: usize) -> Result<Opened, CryptoError> {
        let h = &piece.header;
        if self.material.genuine(h.upgrade, h.group).is_some_and(|g| g == piece) {
            if let Some(r) = self.material.opened.get(&(h.upgrade, h.group, index)) {
                return r.clone();
            }
        }
        piece.open_for(index, &self.material.keys[self.group][self.replica])
    }
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
