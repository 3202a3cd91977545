//! The fixed world the role targets share, built once per process: keys,
//! memberships, guardian sets, and a handful of genuine upgrades whose pieces
//! exist in both custodies, with every replica's opened box, token and every
//! guardian's shares precomputed.
//!
//! Building it costs a few hundred P-256 operations; every fuzz input then
//! reuses it. [`FxCrypto`] serves the signature check and box opening of the
//! genuine pieces from it (exactly what the real checks return) and does the
//! real checks for anything else, so mutated pieces still meet the real code.
//!
//! The fuzzer picks values through small `arbitrary` enums ([`CodePick`],
//! [`PeerPick`], [`PiecePick`], ...) that mostly point into the fixture, so
//! it reaches the genuine flows quickly and also tries the wrong ones.

#![allow(dead_code)] // each target uses a different part

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use bft_upgrade::crypto::{
    reconstruct, Binding, Code, DeployerKey, GroupKey, PayloadSealer, PublicKey, ReplicaSecretKey, Share, ShareKind,
    CHUNK_TAG_LEN,
};
use bft_upgrade::deployer::{Deployer, GroupTarget, UpgradePlan};
use bft_upgrade::error::CryptoError;
use bft_upgrade::group::PieceCrypto;
use bft_upgrade::step::Peer;
use bft_upgrade::wire::{
    self, Custody, DeployerId, Finish, GroupId, GuardianSet, Membership, Opened, Outcome, Piece, ResourceId, Token,
    UpgradeHeader, UpgradeId,
};
use chacha20::ChaCha20Rng;
use p256::elliptic_curve::ff::PrimeField;
use rand_core::SeedableRng;

/// The fixture's groups: ids 1 and 2, four replicas each (`f = 1`).
pub const GROUPS: [GroupId; 2] = [GroupId(1), GroupId(2)];
/// Replicas per group.
pub const N: usize = 4;
/// Each group's guardians, in share order (`F = 1`); 12..=14 guard both.
pub const GUARDIANS: [[u32; 4]; 2] = [[11, 12, 13, 14], [12, 13, 14, 15]];
/// Every guardian id; guardian `id` has key `guardian_keys[id - 11]`.
pub const GUARDIAN_IDS: [u32; 5] = [11, 12, 13, 14, 15];
/// The fixture's deployers.
pub const DEPLOYERS: [DeployerId; 2] = [DeployerId(1), DeployerId(2)];

/// What a piece's previous version code is built on.
#[derive(Clone, Copy)]
enum Prev {
    Genesis,
    Trigger(usize),
    Cancel(usize),
}

/// (deployer, order seq, groups, resources, previous version)
type Spec = (usize, u64, &'static [usize], &'static [u32], Prev);

/// The upgrades: two conflicting ones on deployer 1's genesis, an
/// independent one-group one, two chained after the first (one on its `τ`,
/// one on its `c`), one by the second deployer, and six more independent
/// ones, so that eight unrelated pieces (as many as one attachment carries
/// codes) can be held and finished at once.
const SPECS: [Spec; 12] = [
    (0, 1, &[0, 1], &[1], Prev::Genesis),
    (0, 2, &[0, 1], &[1, 2], Prev::Genesis),
    (0, 3, &[0], &[3], Prev::Genesis),
    (0, 4, &[0, 1], &[3], Prev::Trigger(0)),
    (0, 5, &[0, 1], &[4], Prev::Cancel(0)),
    (1, 1, &[0, 1], &[1], Prev::Genesis),
    (0, 6, &[0], &[5], Prev::Genesis),
    (0, 7, &[0, 1], &[6], Prev::Genesis),
    (0, 8, &[0], &[7], Prev::Genesis),
    (1, 2, &[0], &[8], Prev::Genesis),
    (1, 3, &[0, 1], &[9], Prev::Genesis),
    (1, 4, &[0], &[10], Prev::Genesis),
];

/// One genuine upgrade.
pub struct UpgradeFx {
    pub header: UpgradeHeader,
    pub deployer: usize,
    /// Indices into [`GROUPS`] it covers.
    pub groups: Vec<usize>,
    pub trigger: Code,
    pub cancel: Code,
    /// Per group index: the piece in replica custody (if covered).
    pub replica_pieces: Vec<Option<Piece>>,
    /// Per group index: the piece in guardian custody (if covered).
    pub guarded_pieces: Vec<Option<Piece>>,
    /// Per group index, per replica: the opened box (replica custody).
    pub opened: Vec<Vec<Opened>>,
    /// Per group index, per replica: `k_g` and the token (guardian custody).
    pub tokens: Vec<Vec<(GroupKey, Token)>>,
    /// Per group index, per guardian position: its two shares.
    pub guardian_shares: Vec<Vec<(Share, Share)>>,
    /// Per group index: `s_g` (all zeros where not covered).
    pub s_g: Vec<Code>,
}

impl UpgradeFx {
    pub fn id(&self) -> UpgradeId {
        self.header.upgrade
    }

    /// The piece for group index `gi` (or the first covered group).
    pub fn piece(&self, gi: usize, guarded: bool) -> &Piece {
        let list = if guarded { &self.guarded_pieces } else { &self.replica_pieces };
        list.get(gi).and_then(Option::as_ref).or_else(|| list.iter().flatten().next()).expect("covers a group")
    }
}

pub struct Fixture {
    pub deployer_keys: Vec<DeployerKey>,
    pub deployer_pubs: Vec<PublicKey>,
    pub genesis: Vec<Code>,
    /// Per group index, per replica.
    pub replica_keys: Vec<Vec<ReplicaSecretKey>>,
    pub memberships: Vec<Membership>,
    /// Guardian `id`'s key is at `id - 11`.
    pub guardian_keys: Vec<ReplicaSecretKey>,
    /// Per group index.
    pub guardian_sets: Vec<GuardianSet>,
    pub upgrades: Vec<UpgradeFx>,
}

/// The fixture, built on first use.
pub fn fixture() -> &'static Fixture {
    static FX: OnceLock<Fixture> = OnceLock::new();
    FX.get_or_init(build)
}

fn scalar_key(i: u8) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[31] = i;
    k[0] = 0x10;
    k
}

fn build() -> Fixture {
    let mut rng = ChaCha20Rng::from_seed([0x5e; 32]);
    let deployer_keys: Vec<DeployerKey> =
        (0..2u8).map(|i| DeployerKey::from_bytes(&scalar_key(200 + i)).expect("scalar")).collect();
    let deployers: Vec<Deployer> =
        deployer_keys.iter().zip(DEPLOYERS).map(|(k, id)| Deployer::new(id, k.clone())).collect();
    let deployer_pubs = deployer_keys.iter().map(DeployerKey::public_key).collect();
    let genesis: Vec<Code> = (0..2u8).map(|i| Code::from_bytes([0xA0 + i; 32])).collect();
    let replica_keys: Vec<Vec<ReplicaSecretKey>> = (0..2u8)
        .map(|g| (0..N as u8).map(|r| ReplicaSecretKey::from_bytes(&scalar_key(1 + g * 16 + r)).expect("k")).collect())
        .collect();
    let memberships: Vec<Membership> = replica_keys
        .iter()
        .zip(GROUPS)
        .map(|(keys, id)| {
            let pks: Vec<PublicKey> = keys.iter().map(ReplicaSecretKey::public_key).collect();
            Membership::new(id, &pks).expect("membership")
        })
        .collect();
    let guardian_keys: Vec<ReplicaSecretKey> =
        GUARDIAN_IDS.iter().map(|id| ReplicaSecretKey::from_bytes(&scalar_key(100 + *id as u8)).expect("k")).collect();
    let guardian_sets: Vec<GuardianSet> = GUARDIANS
        .iter()
        .map(|ids| {
            let members: Vec<(u32, PublicKey)> =
                ids.iter().map(|id| (*id, guardian_keys[(*id - 11) as usize].public_key())).collect();
            GuardianSet::new(&members).expect("guardian set")
        })
        .collect();

    let mut upgrades: Vec<UpgradeFx> = Vec::new();
    for (deployer, seq, groups, resources, prev) in SPECS {
        let ids: Vec<GroupId> = groups.iter().map(|gi| GROUPS[*gi]).collect();
        let plan = UpgradePlan::new(&mut rng, deployers[deployer].id(), seq, &ids).expect("plan");
        let prev_code = match prev {
            Prev::Genesis => genesis[deployer].clone(),
            Prev::Trigger(u) => upgrades[u].trigger.clone(),
            Prev::Cancel(u) => upgrades[u].cancel.clone(),
        };
        let resources: Vec<ResourceId> = resources.iter().map(|r| ResourceId(*r)).collect();
        let mut fx = UpgradeFx {
            header: plan.header().clone(),
            deployer,
            groups: groups.to_vec(),
            trigger: plan.trigger_code().clone(),
            cancel: plan.cancel_code().clone(),
            replica_pieces: vec![None, None],
            guarded_pieces: vec![None, None],
            opened: vec![vec![], vec![]],
            tokens: vec![vec![], vec![]],
            guardian_shares: vec![vec![], vec![]],
            s_g: vec![Code::default(), Code::default()],
        };
        for &gi in groups {
            let m = &memberships[gi];
            let key = plan.group_key(m.group).expect("group in plan");
            let binding = Binding::group(plan.header().upgrade, m.group);
            let mut sealer = PayloadSealer::new(&key, &binding, 64).expect("chunk size");
            let mut buf = [0u8; 64 + CHUNK_TAG_LEN];
            let _ = sealer.seal_chunk(&mut buf, 10, true).expect("seal");
            let payload = sealer.finish().expect("finish");
            for guarded in [false, true] {
                let target = GroupTarget {
                    membership: m,
                    resources: &resources,
                    prev_version: &prev_code,
                    guardians: guarded.then_some(&guardian_sets[gi]),
                    payload,
                    next: None,
                };
                let piece = plan.piece(&deployers[deployer], &target).expect("piece");
                if guarded {
                    fx.tokens[gi] = (0..N).map(|r| piece.open_token(r, &replica_keys[gi][r]).expect("token")).collect();
                    fx.guardian_shares[gi] = GUARDIANS[gi]
                        .iter()
                        .enumerate()
                        .map(|(k, id)| piece.open_guardian(k, &guardian_keys[(*id - 11) as usize]).expect("shares"))
                        .collect();
                    fx.guarded_pieces[gi] = Some(piece);
                } else {
                    fx.opened[gi] = (0..N).map(|r| piece.open_for(r, &replica_keys[gi][r]).expect("box")).collect();
                    let shares: Vec<Share> = fx.opened[gi].iter().map(|o| o.secret_share.clone()).collect();
                    let s = reconstruct(&shares[..usize::from(m.f) + 1]).expect("s_g");
                    fx.s_g[gi] = Code::from_bytes(s.to_repr().into());
                    fx.replica_pieces[gi] = Some(piece);
                }
            }
        }
        upgrades.push(fx);
    }
    Fixture { deployer_keys, deployer_pubs, genesis, replica_keys, memberships, guardian_keys, guardian_sets, upgrades }
}

impl Fixture {
    pub fn upgrade(&self, pick: u8) -> &UpgradeFx {
        &self.upgrades[usize::from(pick) % self.upgrades.len()]
    }

    pub fn guardian_key(&self, id: u32) -> Option<&ReplicaSecretKey> {
        id.checked_sub(11).and_then(|i| self.guardian_keys.get(i as usize))
    }

    /// The genuine upgrade, group index and custody of `piece`, if it is
    /// byte for byte one of the fixture's pieces.
    pub fn genuine(&self, piece: &Piece) -> Option<(&UpgradeFx, usize, bool)> {
        let u = self.upgrades.iter().find(|u| u.id() == piece.header.upgrade)?;
        let gi = GROUPS.iter().position(|g| *g == piece.header.group)?;
        if u.replica_pieces[gi].as_ref() == Some(piece) {
            Some((u, gi, false))
        } else if u.guarded_pieces[gi].as_ref() == Some(piece) {
            Some((u, gi, true))
        } else {
            None
        }
    }
}

/// Whose key an [`FxCrypto`] holds.
#[derive(Clone, Copy)]
pub enum Holder {
    Replica { group: usize, index: usize },
    Guardian { id: u32 },
}

/// [`PieceCrypto`] from the fixture for genuine pieces, real otherwise.
pub struct FxCrypto<'a> {
    pub fx: &'static Fixture,
    pub key: &'a ReplicaSecretKey,
    pub holder: Holder,
}

impl PieceCrypto for FxCrypto<'_> {
    fn verify(&mut self, piece: &Piece, signer: &PublicKey) -> bool {
        if let Some((u, _, _)) = self.fx.genuine(piece) {
            if self.fx.deployer_pubs[u.deployer] == *signer {
                return true;
            }
        }
        piece.verify(signer).is_ok()
    }

    fn open(&mut self, piece: &Piece, index: usize) -> Result<Opened, CryptoError> {
        match (self.fx.genuine(piece), self.holder) {
            (Some((u, gi, false)), Holder::Replica { group, index: me }) if gi == group && me == index => {
                Ok(u.opened[gi][index].clone())
            }
            _ => piece.open_for(index, self.key),
        }
    }

    fn open_token(&mut self, piece: &Piece, index: usize) -> Result<(GroupKey, Token), CryptoError> {
        match (self.fx.genuine(piece), self.holder) {
            (Some((u, gi, true)), Holder::Replica { group, index: me }) if gi == group && me == index => {
                Ok(u.tokens[gi][index].clone())
            }
            _ => piece.open_token(index, self.key),
        }
    }

    fn open_guardian(&mut self, piece: &Piece, index: usize) -> Result<(Share, Share), CryptoError> {
        match (self.fx.genuine(piece), self.holder) {
            (Some((u, gi, true)), Holder::Guardian { id }) if GUARDIANS[gi].get(index) == Some(&id) => {
                Ok(u.guardian_shares[gi][index].clone())
            }
            _ => piece.open_guardian(index, self.key),
        }
    }
}

// ---------------------------------------------------------------------------
// Picks: small arbitrary values that mostly point into the fixture.
// ---------------------------------------------------------------------------

/// A group id: one of the fixture's (or the neighbors 3 and 0), or any.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum GroupPick {
    Known(u8),
    Any(u32),
}

impl GroupPick {
    pub fn id(self) -> GroupId {
        match self {
            Self::Known(i) => GroupId(u32::from(i % 4)),
            Self::Any(g) => GroupId(g),
        }
    }
}

/// A peer.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum PeerPick {
    Replica { group: GroupPick, index: u8 },
    Group(GroupPick),
    Installer(u8),
    Guardian(u8),
    Client(u8),
}

impl PeerPick {
    pub fn peer(self) -> Peer {
        match self {
            Self::Replica { group, index } => Peer::Replica { group: group.id(), index: index % 8 },
            Self::Group(g) => Peer::Group(g.id()),
            Self::Installer(i) => Peer::Installer(u32::from(i % 4)),
            Self::Guardian(i) => Peer::Guardian(10 + u32::from(i % 8)),
            Self::Client(i) => Peer::Client(u32::from(i % 4)),
        }
    }
}

/// An upgrade id: a genuine one or any.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum UpgradePick {
    Known(u8),
    Any([u8; 16]),
}

impl UpgradePick {
    pub fn id(self, fx: &Fixture) -> UpgradeId {
        match self {
            Self::Known(i) => fx.upgrade(i).id(),
            Self::Any(b) => UpgradeId(b),
        }
    }
}

/// A 32-byte code.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum CodePick {
    Trigger(u8),
    Cancel(u8),
    /// `s_g` of (upgrade, group index).
    Secret(u8, u8),
    Genesis(u8),
    Any([u8; 32]),
}

impl CodePick {
    pub fn code(self, fx: &Fixture) -> Code {
        match self {
            Self::Trigger(u) => fx.upgrade(u).trigger.clone(),
            Self::Cancel(u) => fx.upgrade(u).cancel.clone(),
            Self::Secret(u, g) => fx.upgrade(u).s_g[usize::from(g % 2)].clone(),
            Self::Genesis(d) => fx.genesis[usize::from(d % 2)].clone(),
            Self::Any(b) => Code::from_bytes(b),
        }
    }
}

/// A share: a genuine replica or guardian share of the fixture, or any.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum SharePick {
    /// (upgrade, group index, replica, kind is secret)
    Replica(u8, u8, u8, bool),
    /// (upgrade, group index, guardian position, kind is secret)
    Guardian(u8, u8, u8, bool),
    Any(u8, [u8; 32]),
}

impl SharePick {
    pub fn share(self, fx: &Fixture) -> Share {
        match self {
            Self::Replica(u, g, r, secret) => {
                let u = fx.upgrade(u);
                let gi = usize::from(g % 2);
                let gi = if u.groups.contains(&gi) { gi } else { u.groups[0] };
                let o = &u.opened[gi][usize::from(r) % N];
                if secret {
                    o.secret_share.clone()
                } else {
                    o.cancel_share.clone()
                }
            }
            Self::Guardian(u, g, k, secret) => {
                let u = fx.upgrade(u);
                let gi = usize::from(g % 2);
                let gi = if u.groups.contains(&gi) { gi } else { u.groups[0] };
                let (s, c) = &u.guardian_shares[gi][usize::from(k) % 4];
                if secret {
                    s.clone()
                } else {
                    c.clone()
                }
            }
            Self::Any(x, y) => Share::new(x, y),
        }
    }
}

/// A code to piggyback or carry.
#[derive(Arbitrary, Debug, Clone)]
pub enum DiffusedPick {
    /// A fixture upgrade's genuine outcome: its id with its `τ` or `c`.
    Genuine { upgrade: u8, committed: bool },
    /// Any combination.
    Any { upgrade: UpgradePick, committed: bool, code: CodePick },
}

impl DiffusedPick {
    pub fn diffused(&self, fx: &Fixture) -> Finish {
        let outcome = |committed: bool| if committed { Outcome::Committed } else { Outcome::Aborted };
        match self {
            Self::Genuine { upgrade, committed } => {
                let u = fx.upgrade(*upgrade);
                let code = if *committed { u.trigger.clone() } else { u.cancel.clone() };
                Finish { upgrade: u.id(), outcome: outcome(*committed), code }
            }
            Self::Any { upgrade, committed, code } => {
                Finish { upgrade: upgrade.id(fx), outcome: outcome(*committed), code: code.code(fx) }
            }
        }
    }
}

/// At most [`wire::MAX_ATTACHED`] of `picks`, as an attachment.
pub fn attachment(fx: &Fixture, picks: &[DiffusedPick]) -> wire::Attachment {
    let mut out = wire::Attachment::new();
    for p in picks.iter().take(wire::MAX_ATTACHED) {
        let _ = out.push(p.diffused(fx));
    }
    out
}

/// A structured change to a piece (then, optionally, signed again by a
/// fixture deployer: an authentic but unusual piece).
#[derive(Arbitrary, Debug, Clone)]
pub enum Edit {
    Upgrade(UpgradePick),
    Group(GroupPick),
    Deployer(u8),
    OrderSeq(u64),
    PrevVersion(CodePick),
    F(u8),
    Resources(Vec<u16>),
    DropReplica(u8),
    DuplicateReplica(u8),
    SwapReplicas(u8, u8),
    FlipBox(u8, u8),
    ShareDigests(u8, [u8; 4]),
    ToReplicaCustody,
    GuardianF(u8),
    DropGuardian(u8),
    RenameGuardian(u8, u8),
    Ephemeral([u8; 33]),
    TriggerDigest(u8),
    CancelDigest(u8),
    Payload(u64, u32),
}

impl Edit {
    fn apply(&self, fx: &Fixture, piece: &mut Piece) {
        let h = &mut piece.header;
        match self {
            Self::Upgrade(u) => h.upgrade = u.id(fx),
            Self::Group(g) => h.group = g.id(),
            Self::Deployer(d) => h.deployer = DeployerId(u32::from(d % 4)),
            Self::OrderSeq(s) => h.order_seq = *s,
            Self::PrevVersion(c) => h.prev_version = c.code(fx),
            Self::F(f) => h.f = f % 4,
            Self::Resources(rs) => {
                h.resources.clear();
                for r in rs.iter().take(wire::MAX_RESOURCES) {
                    let _ = h.resources.push(ResourceId(u32::from(*r % 12)));
                }
            }
            Self::DropReplica(i) => {
                if !h.replicas.is_empty() {
                    let i = usize::from(*i) % h.replicas.len();
                    h.replicas.remove(i);
                }
            }
            Self::DuplicateReplica(i) => {
                if let Some(e) = h.replicas.get(usize::from(*i) % h.replicas.len().max(1)).cloned() {
                    let _ = h.replicas.push(e);
                }
            }
            Self::SwapReplicas(a, b) => {
                let n = h.replicas.len().max(1);
                let (a, b) = (usize::from(*a) % n, usize::from(*b) % n);
                if a < h.replicas.len() && b < h.replicas.len() {
                    h.replicas.swap(a, b);
                }
            }
            Self::FlipBox(i, bit) => {
                let n = h.replicas.len().max(1);
                if let Some(e) = h.replicas.get_mut(usize::from(*i) % n) {
                    e.sealed.flip_bit(usize::from(*bit));
                }
            }
            Self::ShareDigests(i, x) => {
                let n = h.replicas.len().max(1);
                if let Some(e) = h.replicas.get_mut(usize::from(*i) % n) {
                    e.secret_share.0[..4].copy_from_slice(x);
                    e.cancel_share.0[28..].copy_from_slice(x);
                }
            }
            Self::ToReplicaCustody => h.custody = Custody::Replicas,
            Self::GuardianF(f) => {
                if let Custody::Guardians { f: gf, .. } = &mut h.custody {
                    *gf = f % 6;
                }
            }
            Self::DropGuardian(i) => {
                if let Custody::Guardians { guardians, .. } = &mut h.custody {
                    if !guardians.is_empty() {
                        let i = usize::from(*i) % guardians.len();
                        guardians.remove(i);
                    }
                }
            }
            Self::RenameGuardian(i, id) => {
                if let Custody::Guardians { guardians, .. } = &mut h.custody {
                    let n = guardians.len().max(1);
                    if let Some(g) = guardians.get_mut(usize::from(*i) % n) {
                        g.guardian = 10 + u32::from(id % 8);
                    }
                }
            }
            Self::Ephemeral(b) => h.ephemeral = PublicKey::from_compressed(*b),
            Self::TriggerDigest(u) => h.trigger_digest = fx.upgrade(*u).header.trigger_digest,
            Self::CancelDigest(u) => h.cancel_digest = fx.upgrade(*u).header.cancel_digest,
            Self::Payload(len, chunk) => {
                h.payload.ciphertext_len = *len;
                h.payload.chunk_size = *chunk;
            }
        }
    }
}

/// A piece: genuine, structurally edited (signed again or not), bit-flipped
/// in its encoding, or decoded from raw bytes.
#[derive(Arbitrary, Debug, Clone)]
pub enum PiecePick {
    Genuine { upgrade: u8, group: u8, guarded: bool },
    Edited { upgrade: u8, group: u8, guarded: bool, edits: Vec<Edit>, resign: Option<u8> },
    Flipped { upgrade: u8, group: u8, guarded: bool, flips: Vec<(u16, u8)> },
    Raw(Vec<u8>),
}

impl PiecePick {
    /// The piece, or `None` when the bytes do not decode.
    pub fn piece(&self, fx: &Fixture) -> Option<Piece> {
        match self {
            Self::Genuine { upgrade, group, guarded } => {
                Some(fx.upgrade(*upgrade).piece(usize::from(group % 2), *guarded).clone())
            }
            Self::Edited { upgrade, group, guarded, edits, resign } => {
                let mut p = fx.upgrade(*upgrade).piece(usize::from(group % 2), *guarded).clone();
                for e in edits.iter().take(8) {
                    e.apply(fx, &mut p);
                }
                if let Some(d) = resign {
                    let key = &fx.deployer_keys[usize::from(d % 2)];
                    p.signature = key.sign(&p.header.digest()).expect("sign");
                }
                Some(p)
            }
            Self::Flipped { upgrade, group, guarded, flips } => {
                let p = fx.upgrade(*upgrade).piece(usize::from(group % 2), *guarded);
                let mut bytes = to_bytes(p);
                for (at, x) in flips.iter().take(8) {
                    let i = usize::from(*at) % bytes.len();
                    bytes[i] ^= x;
                }
                wire::decode(&bytes).ok()
            }
            Self::Raw(bytes) => wire::decode(bytes).ok(),
        }
    }
}

/// Encodes a value into a vector of exactly its length.
pub fn to_bytes<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let mut buf = vec![0u8; wire::encoded_len(value)];
    let len = wire::encode(value, &mut buf).expect("encoded_len is enough").len();
    buf.truncate(len);
    buf
}

/// Serializes a role's state and restores it; the restored state must
/// encode to the very same bytes.
pub fn restore<T: serde::Serialize + serde::de::DeserializeOwned>(role: &T) -> T {
    let bytes = to_bytes(role);
    let back: T = wire::decode(&bytes).expect("a role's own state decodes");
    assert_eq!(to_bytes(&back), bytes, "restored state re-encodes differently");
    back
}

/// Which kind a share answer releases.
pub fn kind_bit(kind: ShareKind) -> u8 {
    match kind {
        ShareKind::Secret => 1,
        ShareKind::Cancel => 2,
    }
}
