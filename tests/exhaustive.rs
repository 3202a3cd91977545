//! Exhaustive exploration of Figure 3 over the crate's real group code
//! (issue 5; PROTOCOL.md section 5).
//!
//! # The model
//!
//! - Every group has one replica (`n = 1`, `f = 0`): one [`GroupReplica`]
//!   per group, no neighbors, no proactive diffusion. A released share of
//!   kind `K` from group `g` is then `g`'s whole part of that code.
//! - Every upgrade comes from its own deployer (the groups authorize
//!   [`MAX_DEPLOYERS`]), built on that deployer's genesis code, so version
//!   chains never order two upgrades; only conflicts and order keys do.
//! - The installers are one pool of knowledge (any number of colluding
//!   installers): per upgrade, which groups' `s_g` were released
//!   (`Reply::Accepted`), whether `c` was (`Reply::Rejected`), and whether a
//!   `Reply::Finished` handed over `τ` or `c`. They may call, on any group,
//!   in any order: `PrepareInstall` of any piece (also other groups'
//!   pieces), `CommitInstall(τ)` once `τ` is known (every `s_g` released,
//!   or `τ` seen), `AbortInstall(c)` once `c` is known.
//! - A global state is every group's serialized `GroupReplica` (postcard,
//!   [`wire::encode`]) and the installers' knowledge. Serialized group
//!   states are interned per group (exact bytes to a dense id), so a global
//!   state packs exactly into a `u64` and the visited set is exact: no hash
//!   collisions to argue about.
//! - Transitions run the real [`GroupReplica::handle_ordered_with`] on the
//!   state decoded with [`wire::decode`], then re-encode. A group's next
//!   state and reply depend only on its own bytes, the operation and the
//!   verdict (no clock: nothing time-driven is configured), so first every
//!   group's states are closed under every call (commits and aborts as if
//!   their codes were known, a superset of what the search meets), each
//!   `(group state, call)` executed once and memoized; the search then
//!   composes those. The direct mode re-executes the group code on every
//!   call of the search and must find the same graph
//!   ([`memoized_and_direct_exploration_agree`]). Signature checks and box
//!   openings are done once per piece at setup ([`Cached`]).
//!
//! # Checked in every reachable state
//!
//! 1. never both: no upgrade has both `τ` (every `s_g`) and `c`
//!    reconstructible from released shares, nor known at all (and a
//!    `Finished` answer never reveals a code not already known);
//! 2. atomicity: no upgrade committed at one group and aborted at another;
//! 3. order: two upgrades committed at two groups where they conflict are
//!    committed in the same order at both (the per-group commit order is
//!    derived from the group's own state as it is first reached, and
//!    checked to be a function of the serialized state). Opposite orders at
//!    a group where the two pieces do not conflict (disjoint resources, so
//!    they commute) are reachable when the upgrades conflict elsewhere;
//!    they are counted and the first is printed, not failed;
//! 4. no stuck state: if some upgrade is unfinished at a group holding a
//!    piece of it, some call changes the state; so every terminal state has
//!    every piece finished, with one outcome per upgrade everywhere;
//! 5. progress: every state-changing call strictly increases a bounded
//!    measure (pieces held, cancelled, finished; knowledge), so the graph is
//!    acyclic, every run of calls ends in a terminal state, and by 4 every
//!    upgrade finishes everywhere.
//!
//! Negative controls show the checks can fail: a fabricated knowledge
//! state, a compromised (forked) group that answers two histories, and
//! installers deaf to rejections, each caught with a shortest trace.
//!
//! # Sizes (release, one core)
//!
//! Three groups and three mutually conflicting upgrades: 893,847 states
//! in under a second; every world of the acceptance runs by default, in a
//! few seconds all told. `#[ignore]`d: the same world with the group code
//! run on every call (31.5 million runs, about ten minutes, same graph),
//! and four groups with three upgrades (74.7 million states, over two
//! minutes and 2.5 GB). State counts depend on what a
//! state records: here exactly the groups' serialized states and what the
//! installers can use (released `s_g` per group, `c`), with replies
//! delivered at once (a reply in flight only delays knowledge, and a
//! repeated `PrepareInstall` answers the same again).
//!
//! Run with `cargo test --release --features std --test exhaustive --
//! --nocapture` (add `--ignored` for the largest world).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Instant as Clock;

use bft_upgrade::crypto::{
    reconstruct, Binding, Code, DeployerKey, GroupKey, PayloadSealer, PublicKey, ReplicaSecretKey, Share, ShareKind,
    CHUNK_TAG_LEN,
};
use bft_upgrade::deployer::{Deployer, GroupTarget, UpgradePlan};
use bft_upgrade::error::CryptoError;
use bft_upgrade::group::{
    AuthorizedDeployer, GroupConfig, GroupEffect, GroupReplica, PieceCrypto, Verdict, MAX_DEPLOYERS,
};
use bft_upgrade::step::{Instant, Peer};
use bft_upgrade::wire::{
    self, DeployerId, GroupId, Membership, Message, Opened, Operation, Outcome, Piece, PieceHeader, Refusal, Reply,
    ResourceId, Token, UpgradeId,
};
use chacha20::ChaCha20Rng;
use rand_core::SeedableRng;

// =====================================================================
// Worlds
// =====================================================================

/// The most group instances (slots) and upgrades a state holds.
const MAX_SLOTS: usize = 4;
const MAX_UPGRADES: usize = 4;
/// Bits of one upgrade's knowledge in a packed state.
const KNOW_BITS: u32 = 7;

/// Knowledge bits of one upgrade: bit `g` (< 4) is `s_g` released by group
/// `g`; then `c` released as a share, `τ` and `c` seen in a `Finished`.
const C_SHARE: u8 = 1 << 4;
const TAU_SEEN: u8 = 1 << 5;
const C_SEEN: u8 = 1 << 6;

/// The only time the groups see (nothing here is time-driven).
const NOW: Instant = Instant(1_000);
/// The installers' address.
const ORIGIN: Peer = Peer::Installer(1);

/// A deliberately broken environment, for the negative controls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flaw {
    /// None: correct groups, installers keep everything they learn.
    None,
    /// The group with this index is compromised: it runs two copies of its
    /// state and installers may talk to either (equivocation).
    Forked(usize),
    /// Installers throw away `Rejected` shares (never learn `c`).
    DeafToRejections,
}

/// One upgrade: its order key's sequence number and, per group, the
/// resources of its piece there (`None`: no piece for that group).
#[derive(Clone)]
struct UpgradeSpec {
    seq: u64,
    pieces: Vec<Option<Vec<u32>>>,
}

/// A world to explore.
#[derive(Clone)]
struct Spec {
    name: &'static str,
    groups: usize,
    upgrades: Vec<UpgradeSpec>,
    /// `(upgrade, group)` pairs whose piece the application rejects.
    rejects: Vec<(usize, usize)>,
    flaw: Flaw,
}

impl Spec {
    /// `res[u][g]`: the resources of upgrade `u`'s piece for group `g`.
    fn new(name: &'static str, groups: usize, seqs: &[u64], res: &[&[Option<&[u32]>]]) -> Self {
        assert_eq!(seqs.len(), res.len());
        let upgrades = seqs
            .iter()
            .zip(res)
            .map(|(seq, r)| {
                assert_eq!(r.len(), groups);
                UpgradeSpec { seq: *seq, pieces: r.iter().map(|p| p.map(<[u32]>::to_vec)).collect() }
            })
            .collect();
        Self { name, groups, upgrades, rejects: Vec::new(), flaw: Flaw::None }
    }

    /// `upgrades` upgrades over all `groups` groups, every piece naming
    /// resource 1 (mutually conflicting everywhere), order `1, 2, ...`.
    fn all_conflicting(name: &'static str, groups: usize, upgrades: usize) -> Self {
        let row: Vec<Option<&[u32]>> = vec![Some(&[1]); groups];
        let res: Vec<&[Option<&[u32]>]> = vec![&row[..]; upgrades];
        let seqs: Vec<u64> = (1..=upgrades as u64).collect();
        Self::new(name, groups, &seqs, &res)
    }

    fn rejecting(mut self, upgrade: usize, group: usize) -> Self {
        self.rejects.push((upgrade, group));
        self
    }

    fn with_flaw(mut self, flaw: Flaw) -> Self {
        self.flaw = flaw;
        self
    }

    /// Whether `u` and `v` both have pieces at `g` and those conflict.
    fn conflict_at(&self, u: usize, v: usize, g: usize) -> bool {
        match (&self.upgrades[u].pieces[g], &self.upgrades[v].pieces[g]) {
            (Some(a), Some(b)) => a.iter().any(|r| b.contains(r)),
            _ => false,
        }
    }
}

// =====================================================================
// Material: keys, pieces, codes, and the crypto cache
// =====================================================================

/// One call an installer can make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Call {
    /// `PrepareInstall` of piece `p` (index into `Model::pieces`).
    Prepare(usize),
    /// `CommitInstall(u, τ_u)`.
    Commit(usize),
    /// `AbortInstall(u, c_u)`.
    Abort(usize),
}

struct PieceMat {
    upgrade: usize,
    group: usize,
    piece: Piece,
    /// What the group's replica finds in its box (computed once).
    opened: Result<Opened, CryptoError>,
    /// The signer's key (the signature was verified once at setup).
    signer: PublicKey,
    /// `s_g`, rebuilt from the opened share.
    secret: Code,
}

struct UpgradeMat {
    id: UpgradeId,
    trigger: Code,
    cancel: Code,
    /// Knowledge bits of its groups' `s_g`.
    full: u8,
}

/// The model checker's material: the groups, keys, upgrades, pieces and
/// calls of one world to explore.
struct Model {
    spec: Spec,
    gids: Vec<GroupId>,
    keys: Vec<ReplicaSecretKey>,
    /// Serialized fresh `GroupReplica` per group.
    initial: Vec<Vec<u8>>,
    ups: Vec<UpgradeMat>,
    pieces: Vec<PieceMat>,
    /// Every call and its operation, in a fixed order.
    calls: Vec<(Call, Operation)>,
    /// Slot (group instance) to group index.
    slots: Vec<usize>,
}

impl Model {
    fn build(spec: Spec) -> Self {
        assert!(spec.groups <= 4 && spec.upgrades.len() <= MAX_UPGRADES.min(MAX_DEPLOYERS));
        let mut rng = ChaCha20Rng::from_seed([0x5e; 32]);
        let deployers: Vec<Deployer> = (0..MAX_DEPLOYERS as u32)
            .map(|i| Deployer::new(DeployerId(i + 1), DeployerKey::random(&mut rng)))
            .collect();
        let genesis: Vec<Code> = (0..MAX_DEPLOYERS as u8).map(|i| Code::from_bytes([0xA0 ^ i; 32])).collect();
        let keys: Vec<ReplicaSecretKey> = (0..spec.groups).map(|_| ReplicaSecretKey::random(&mut rng)).collect();
        let gids: Vec<GroupId> = (0..spec.groups).map(|g| GroupId(g as u32 + 1)).collect();
        let memberships: Vec<Membership> =
            gids.iter().zip(&keys).map(|(g, k)| Membership::new(*g, &[k.public_key()]).unwrap()).collect();

        let mut initial = Vec::new();
        for m in &memberships {
            let mut ds = heapless::Vec::new();
            for (d, genesis) in deployers.iter().zip(&genesis) {
                ds.push(AuthorizedDeployer { id: d.id(), key: d.public_key(), genesis: genesis.clone() }).unwrap();
            }
            let config = GroupConfig {
                membership: m.clone(),
                deployers: ds,
                neighbors: heapless::Vec::new(),
                retry_ms: 100,
                proactive: false,
                guardians: None,
                sequencer: None,
            };
            initial.push(encode(&GroupReplica::new(config, 0).unwrap()));
        }

        let mut ups = Vec::new();
        let mut pieces = Vec::new();
        for (u, us) in spec.upgrades.iter().enumerate() {
            let groups: Vec<usize> = (0..spec.groups).filter(|g| us.pieces[*g].is_some()).collect();
            let ids: Vec<GroupId> = groups.iter().map(|g| gids[*g]).collect();
            let plan = UpgradePlan::new(&mut rng, deployers[u].id(), us.seq, &ids).unwrap();
            let id = plan.header().upgrade;
            let mut tau = Code::default();
            for &g in &groups {
                let resources: Vec<ResourceId> =
                    us.pieces[g].as_ref().unwrap().iter().copied().map(ResourceId).collect();
                let payload = {
                    let key = plan.group_key(gids[g]).unwrap();
                    let mut sealer = PayloadSealer::new(&key, &Binding::group(id, gids[g]), 64).unwrap();
                    let mut buf = [0u8; 64 + CHUNK_TAG_LEN];
                    buf[..8].copy_from_slice(b"payload!");
                    let _ = sealer.seal_chunk(&mut buf, 8, true).unwrap();
                    sealer.finish().unwrap()
                };
                let target = GroupTarget {
                    membership: &memberships[g],
                    resources: &resources,
                    prev_version: &genesis[u],
                    guardians: None,
                    payload,
                    next: None,
                };
                let piece = plan.piece(&deployers[u], &target).unwrap();
                // The two costly checks, once per piece.
                let signer = deployers[u].public_key();
                assert!(piece.verify(&signer).is_ok());
                let opened = piece.open_for(0, &keys[g]);
                let o = opened.as_ref().expect("the box opens");
                assert!(piece.share_is_valid(ShareKind::Secret, &o.secret_share));
                assert!(piece.share_is_valid(ShareKind::Cancel, &o.cancel_share));
                assert_eq!(rebuild(&o.cancel_share), *plan.cancel_code());
                let secret = rebuild(&o.secret_share);
                tau.xor_assign(&secret);
                pieces.push(PieceMat { upgrade: u, group: g, piece, opened, signer, secret });
            }
            // With f = 0 a group's one share is its whole s_g, and the s_g
            // of all the upgrade's groups make τ.
            assert_eq!(tau, *plan.trigger_code());
            let full = groups.iter().fold(0u8, |m, g| m | 1 << g);
            ups.push(UpgradeMat { id, trigger: plan.trigger_code().clone(), cancel: plan.cancel_code().clone(), full });
        }

        let mut calls = Vec::new();
        for (p, pm) in pieces.iter().enumerate() {
            calls.push((Call::Prepare(p), Operation::PrepareInstall(pm.piece.clone())));
        }
        for (u, um) in ups.iter().enumerate() {
            calls.push((Call::Commit(u), Operation::commit_install(um.id, um.trigger.clone())));
        }
        for (u, um) in ups.iter().enumerate() {
            calls.push((Call::Abort(u), Operation::abort_install(um.id, um.cancel.clone())));
        }

        let mut slots: Vec<usize> = (0..spec.groups).collect();
        if let Flaw::Forked(g) = spec.flaw {
            slots.push(g);
        }
        assert!(slots.len() <= MAX_SLOTS);
        Self { spec, gids, keys, initial, ups, pieces, calls, slots }
    }

    fn upgrade_index(&self, id: UpgradeId) -> usize {
        self.ups.iter().position(|u| u.id == id).expect("known upgrade")
    }

    fn group_index(&self, id: GroupId) -> usize {
        self.gids.iter().position(|g| *g == id).expect("known group")
    }

    /// The application's verdict: deterministic in the header.
    fn verdict(&self, h: &PieceHeader) -> Verdict {
        let key = (self.upgrade_index(h.upgrade), self.group_index(h.group));
        if self.spec.rejects.contains(&key) {
            Verdict::Reject
        } else {
            Verdict::Accept
        }
    }

    fn call_upgrade(&self, call: Call) -> usize {
        match call {
            Call::Prepare(p) => self.pieces[p].upgrade,
            Call::Commit(u) | Call::Abort(u) => u,
        }
    }

    fn label(&self, slot: usize, call: Call) -> String {
        let g = self.slots[slot];
        let at = if slot == g { format!("g{g}") } else { format!("g{g}'") };
        match call {
            Call::Prepare(p) => {
                let pm = &self.pieces[p];
                format!("PrepareInstall(U{} piece of g{}) at {at}", pm.upgrade, pm.group)
            }
            Call::Commit(u) => format!("CommitInstall(U{u}, tau) at {at}"),
            Call::Abort(u) => format!("AbortInstall(U{u}, c) at {at}"),
        }
    }
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let mut buf = vec![0u8; wire::encoded_len(value)];
    let n = wire::encode(value, &mut buf).unwrap().len();
    buf.truncate(n);
    buf
}

fn rebuild(share: &Share) -> Code {
    Code::from_bytes(reconstruct(std::slice::from_ref(share)).unwrap().to_bytes().into())
}

/// [`PieceCrypto`] from the setup's results: exact answers for the genuine
/// pieces under their genuine signer, real checks for anything else.
struct Cached<'w> {
    world: &'w Model,
    hits: u64,
    misses: u64,
}

impl Model {
    fn genuine(&self, piece: &Piece) -> Option<&PieceMat> {
        self.pieces.iter().find(|p| p.piece == *piece)
    }
}

impl PieceCrypto for Cached<'_> {
    fn verify(&mut self, piece: &Piece, signer: &PublicKey) -> bool {
        if self.world.genuine(piece).is_some_and(|p| p.signer == *signer) {
            self.hits += 1;
            return true;
        }
        self.misses += 1;
        piece.verify(signer).is_ok()
    }

    fn open(&mut self, piece: &Piece, index: usize) -> Result<Opened, CryptoError> {
        if index == 0 {
            if let Some(p) = self.world.genuine(piece) {
                self.hits += 1;
                return p.opened.clone();
            }
        }
        self.misses += 1;
        let g = self.world.group_index(piece.header.group);
        piece.open_for(index, &self.world.keys[g])
    }

    // Every piece here is in replica custody: these are never needed, and
    // a call counts as a miss.
    fn open_token(&mut self, piece: &Piece, index: usize) -> Result<(GroupKey, Token), CryptoError> {
        self.misses += 1;
        let g = self.world.group_index(piece.header.group);
        piece.open_token(index, &self.world.keys[g])
    }

    fn open_guardian(&mut self, _piece: &Piece, _index: usize) -> Result<(Share, Share), CryptoError> {
        self.misses += 1;
        Err(CryptoError::OpenFailed)
    }
}

// =====================================================================
// Group states: interning, what they show, and memoized transitions
// =====================================================================

/// Where an upgrade stands at one group, as the public API shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Loc {
    Absent,
    InA,
    InC,
    Committed,
    Aborted,
}

impl Loc {
    fn rank(self) -> u32 {
        match self {
            Loc::Absent => 0,
            Loc::InA => 1,
            Loc::InC => 2,
            Loc::Committed | Loc::Aborted => 3,
        }
    }

    fn finished(self) -> bool {
        matches!(self, Loc::Committed | Loc::Aborted)
    }
}

/// What the explorer reads off a group state.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Meta {
    loc: Vec<Loc>,
    /// Upgrades in the order they committed here.
    commits: Vec<u8>,
}

/// The reply to a call, reduced to what matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    Accepted,
    Rejected,
    Conflict,
    Finished(Outcome),
    Refused(Refusal),
    Unknown,
    NoShare,
    Pending,
}

#[derive(Clone, Copy)]
struct Trans {
    next: u32,
    answer: Answer,
}

/// One group's interned states.
struct Locals {
    bytes: Vec<Vec<u8>>,
    ids: HashMap<Vec<u8>, u32>,
    meta: Vec<Meta>,
    /// `memo[id * calls + call]`.
    memo: Vec<Option<Trans>>,
}

impl Locals {
    fn intern(&mut self, bytes: Vec<u8>, meta: Meta, calls: usize) -> u32 {
        if let Some(&id) = self.ids.get(&bytes) {
            // The commit order is a function of the serialized state.
            assert_eq!(self.meta[id as usize], meta, "one group state reached with two histories");
            return id;
        }
        let id = u32::try_from(self.bytes.len()).unwrap();
        self.ids.insert(bytes.clone(), id);
        self.bytes.push(bytes);
        self.meta.push(meta);
        self.memo.resize(self.memo.len() + calls, None);
        id
    }
}

/// A global state: every slot's group-state id and the installers'
/// knowledge per upgrade.
#[derive(Clone, Copy, PartialEq, Eq)]
struct State {
    ids: [u32; MAX_SLOTS],
    know: [u8; MAX_UPGRADES],
}

/// How a [`State`] packs into a `u64`: each slot's group-state id in
/// `id_bits` bits (enough for every state the group can reach by any calls),
/// then 7 bits of knowledge per upgrade.
#[derive(Clone, Copy, Debug)]
struct Layout {
    id_bits: u32,
    slots: usize,
    upgrades: usize,
}

impl Layout {
    fn new(max_states: usize, slots: usize, upgrades: usize) -> Self {
        let id_bits = usize::BITS - max_states.saturating_sub(1).leading_zeros();
        let id_bits = id_bits.max(1);
        let bits = id_bits as usize * slots + KNOW_BITS as usize * upgrades;
        assert!(bits <= 64, "a state needs {bits} bits: world too large for u64 keys");
        Self { id_bits, slots, upgrades }
    }

    fn pack(&self, s: &State) -> u64 {
        let mut x = 0u64;
        for &id in &s.ids[..self.slots] {
            assert!(id >> self.id_bits == 0, "a group state outside the closure");
            x = x << self.id_bits | u64::from(id);
        }
        for &k in &s.know[..self.upgrades] {
            x = x << KNOW_BITS | u64::from(k);
        }
        x
    }

    fn unpack(&self, mut x: u64) -> State {
        let mut s = State { ids: [0; MAX_SLOTS], know: [0; MAX_UPGRADES] };
        for k in s.know[..self.upgrades].iter_mut().rev() {
            *k = (x & ((1 << KNOW_BITS) - 1)) as u8;
            x >>= KNOW_BITS;
        }
        for id in s.ids[..self.slots].iter_mut().rev() {
            *id = (x & ((1 << self.id_bits) - 1)) as u32;
            x >>= self.id_bits;
        }
        s
    }
}

/// splitmix64's finalizer over a `u64` key (keys are ours: no adversary).
#[derive(Default)]
struct Mix(u64);

impl Hasher for Mix {
    fn finish(&self) -> u64 {
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn write(&mut self, bytes: &[u8]) {
        for c in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..c.len()].copy_from_slice(c);
            self.write_u64(u64::from_le_bytes(b));
        }
    }

    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0 ^ x).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29);
    }
}

/// A property that failed, with a shortest trace to it.
#[derive(Debug)]
struct Violation {
    kind: &'static str,
    detail: String,
    trace: Vec<String>,
}

/// What an exploration found.
#[derive(Debug, Default)]
struct Report {
    name: &'static str,
    states: usize,
    /// State-changing calls (edges of the state graph).
    edges: u64,
    /// Calls evaluated (changing or not).
    calls: u64,
    /// BFS depth: the longest shortest run.
    depth: usize,
    terminal: usize,
    /// Terminal states per outcome vector (`C`/`A` per upgrade).
    outcomes: BTreeMap<String, usize>,
    /// Real executions of `handle_ordered_with`: closing the group states
    /// under every call, then during the search (none when memoized).
    closure_executions: u64,
    search_executions: u64,
    /// Per group: states it reaches under any sequence of calls, and those
    /// that occur in reachable global states.
    group_states: Vec<usize>,
    group_states_used: Vec<usize>,
    /// Bits of a packed global state.
    key_bits: u32,
    crypto_hits: u64,
    crypto_misses: u64,
    /// States where two upgrades that conflict somewhere committed in
    /// different orders at two groups where they do not both conflict.
    benign_reorders: usize,
    /// A shortest trace to the first benign reorder, if any.
    benign_trace: Vec<String>,
    /// Terminal states where some upgrade committed.
    terminal_with_commit: usize,
    /// Time closing the group states (running the group code), and in all.
    closure_seconds: f64,
    seconds: f64,
    violation: Option<Violation>,
}

struct Explorer<'w> {
    w: &'w Model,
    memo: bool,
    locals: Vec<Locals>,
    crypto: Cached<'w>,
    executions: u64,
}

impl<'w> Explorer<'w> {
    fn new(w: &'w Model, memo: bool) -> Self {
        let mut locals = Vec::new();
        for bytes in &w.initial {
            let mut l = Locals { bytes: Vec::new(), ids: HashMap::new(), meta: Vec::new(), memo: Vec::new() };
            let meta = Meta { loc: vec![Loc::Absent; w.ups.len()], commits: Vec::new() };
            assert_eq!(l.intern(bytes.clone(), meta, w.calls.len()), 0);
            locals.push(l);
        }
        Self { w, memo, locals, crypto: Cached { world: w, hits: 0, misses: 0 }, executions: 0 }
    }

    fn meta(&self, slot: usize, id: u32) -> &Meta {
        &self.locals[self.w.slots[slot]].meta[id as usize]
    }

    /// Runs call `c` on state `id` of group `g` (or recalls its result).
    fn run(&mut self, g: usize, id: u32, c: usize) -> Trans {
        if self.memo {
            if let Some(t) = self.locals[g].memo[id as usize * self.w.calls.len() + c] {
                return t;
            }
        }
        self.execute(g, id, c)
    }

    /// Runs call `c` on state `id` of group `g` with the real group code.
    /// Kept out of line: a `GroupReplica` and a `Step` make a large frame,
    /// which `run`'s fast path should not pay for.
    #[inline(never)]
    fn execute(&mut self, g: usize, id: u32, c: usize) -> Trans {
        let w = self.w;
        let n = w.calls.len();
        self.executions += 1;
        let mut r: GroupReplica = wire::decode(&self.locals[g].bytes[id as usize]).expect("state decodes");
        let (call, op) = &w.calls[c];
        let step = r.handle_ordered_with(NOW, ORIGIN, op, &mut self.crypto, |h| w.verdict(h));
        let u = w.call_upgrade(*call);
        assert!(step.faults.is_empty(), "{}: faults {:?}", w.label(g, *call), step.faults);
        assert_eq!(step.messages.len(), 1, "{}", w.label(g, *call));
        assert_eq!(step.messages[0].to, ORIGIN);
        let Message::Answer(a) = &step.messages[0].message else { panic!("not an answer") };
        assert_eq!((a.upgrade, a.group, a.replica), (w.ups[u].id, w.gids[g], 0));
        let answer = self.check_reply(g, u, &a.reply);
        for e in &step.effects {
            match e {
                GroupEffect::Apply { upgrade, key, .. } => {
                    assert!(*call == Call::Commit(u) && *upgrade == w.ups[u].id && key.is_some())
                }
                GroupEffect::Discard { upgrade } => assert!(*call == Call::Abort(u) && *upgrade == w.ups[u].id),
                other => panic!("unexpected effect {other:?}"),
            }
        }
        let parent = self.locals[g].meta[id as usize].clone();
        let mut meta = Meta { loc: Vec::new(), commits: parent.commits.clone() };
        for (v, um) in w.ups.iter().enumerate() {
            let loc = match (r.outcome(um.id), r.holds(um.id)) {
                (Some(Outcome::Committed), _) => Loc::Committed,
                (Some(Outcome::Aborted), _) => Loc::Aborted,
                (None, Some(true)) => Loc::InA,
                (None, Some(false)) => Loc::InC,
                (None, None) => Loc::Absent,
            };
            if loc == Loc::Committed && parent.loc[v] != Loc::Committed {
                assert_eq!(*call, Call::Commit(v));
                meta.commits.push(v as u8);
            }
            meta.loc.push(loc);
        }
        assert_eq!(r.version(), meta.commits.len() as u64);
        let next = self.locals[g].intern(encode(&r), meta, n);
        let t = Trans { next, answer };
        if self.memo {
            self.locals[g].memo[id as usize * n + c] = Some(t);
        }
        t
    }

    /// Checks a reply's shares and codes are the genuine ones.
    fn check_reply(&self, g: usize, u: usize, reply: &Reply) -> Answer {
        let w = self.w;
        let piece = || w.pieces.iter().find(|p| p.upgrade == u && p.group == g).expect("a piece here");
        match reply {
            Reply::Accepted(share) => {
                let p = piece();
                assert!(p.piece.share_is_valid(ShareKind::Secret, share));
                assert_eq!(rebuild(share), p.secret);
                Answer::Accepted
            }
            Reply::Rejected(share) => {
                assert!(piece().piece.share_is_valid(ShareKind::Cancel, share));
                assert_eq!(rebuild(share), w.ups[u].cancel);
                Answer::Rejected
            }
            Reply::Finished(outcome, code) => {
                let want = match outcome {
                    Outcome::Committed => &w.ups[u].trigger,
                    Outcome::Aborted => &w.ups[u].cancel,
                };
                assert_eq!(code, want);
                Answer::Finished(*outcome)
            }
            // Guardian custody's forms of the same answers.
            Reply::Code(ShareKind::Secret, code) => {
                assert_eq!(*code, piece().secret);
                Answer::Accepted
            }
            Reply::Code(ShareKind::Cancel, code) => {
                assert_eq!(*code, w.ups[u].cancel);
                Answer::Rejected
            }
            Reply::Pending => Answer::Pending,
            Reply::Conflict => Answer::Conflict,
            Reply::Refused(r) => Answer::Refused(*r),
            Reply::Unknown => Answer::Unknown,
            Reply::NoShare => Answer::NoShare,
        }
    }

    fn tau_known(&self, u: usize, k: u8) -> bool {
        let full = self.w.ups[u].full;
        k & full == full || k & TAU_SEEN != 0
    }

    fn c_known(k: u8) -> bool {
        k & (C_SHARE | C_SEEN) != 0
    }

    /// Whether `call` is one the installers can make with knowledge `know`.
    fn enabled(&self, call: Call, know: &[u8; MAX_UPGRADES]) -> bool {
        match call {
            Call::Prepare(_) => true,
            Call::Commit(u) => self.tau_known(u, know[u]),
            Call::Abort(u) => Self::c_known(know[u]),
        }
    }

    /// What the installers know after `answer` from group `g` to `call`.
    /// A code in a `Finished` answer counts only if it was not known.
    fn learn(&self, know: &mut [u8; MAX_UPGRADES], g: usize, call: Call, answer: Answer) {
        let u = self.w.call_upgrade(call);
        match answer {
            Answer::Accepted => know[u] |= 1 << g,
            Answer::Rejected if self.w.spec.flaw != Flaw::DeafToRejections => know[u] |= C_SHARE,
            Answer::Finished(Outcome::Committed) if !self.tau_known(u, know[u]) => know[u] |= TAU_SEEN,
            Answer::Finished(Outcome::Aborted) if !Self::c_known(know[u]) => know[u] |= C_SEEN,
            _ => {}
        }
    }

    /// Closes every group's states under every call (commits and aborts
    /// as if their codes were known): a superset of what the search meets,
    /// which sizes the packed state and, memoized, runs all the group code
    /// the search needs.
    fn close_groups(&mut self) {
        for g in 0..self.w.spec.groups {
            let mut id = 0;
            while id < self.locals[g].bytes.len() {
                for c in 0..self.w.calls.len() {
                    let _ = self.run(g, id as u32, c);
                }
                id += 1;
            }
        }
    }

    fn slots(&self) -> usize {
        self.w.slots.len()
    }

    /// Invariants 1-3 of one state; `Some` names a violation.
    fn check_state(&self, s: &State, benign: &mut bool) -> Option<(&'static str, String)> {
        let w = self.w;
        for (u, um) in w.ups.iter().enumerate() {
            let k = s.know[u];
            if k & um.full == um.full && k & C_SHARE != 0 {
                return Some(("never both", format!("U{u}: every s_g and c released as shares")));
            }
            if self.tau_known(u, k) && Self::c_known(k) {
                return Some(("never both", format!("U{u}: tau and c both known")));
            }
        }
        for u in 0..w.ups.len() {
            let locs = (0..self.slots()).map(|i| self.meta(i, s.ids[i]).loc[u]);
            let (mut c, mut a) = (false, false);
            for l in locs {
                c |= l == Loc::Committed;
                a |= l == Loc::Aborted;
            }
            if c && a {
                return Some(("atomicity", format!("U{u} committed at one group, aborted at another")));
            }
        }
        for u in 0..w.ups.len() {
            for v in u + 1..w.ups.len() {
                if !(0..w.spec.groups).any(|g| w.spec.conflict_at(u, v, g)) {
                    continue;
                }
                let mut orders = Vec::new();
                for i in 0..self.slots() {
                    let commits = &self.meta(i, s.ids[i]).commits;
                    let pos = |x: usize| commits.iter().position(|c| usize::from(*c) == x);
                    if let (Some(pu), Some(pv)) = (pos(u), pos(v)) {
                        orders.push((w.slots[i], pu < pv));
                    }
                }
                for (a, oa) in &orders {
                    for (b, ob) in &orders {
                        if oa != ob {
                            if w.spec.conflict_at(u, v, *a) && w.spec.conflict_at(u, v, *b) {
                                return Some((
                                    "commit order",
                                    format!("U{u}, U{v} committed in opposite orders at g{a} and g{b}"),
                                ));
                            }
                            *benign = true;
                        }
                    }
                }
            }
        }
        None
    }

    /// Whether every piece is finished at every slot (with one outcome per
    /// upgrade everywhere), and the outcome vector.
    fn terminal_outcomes(&self, s: &State) -> Result<String, String> {
        let w = self.w;
        let mut out = String::new();
        for (u, us) in w.spec.upgrades.iter().enumerate() {
            let mut outcome = None;
            for i in 0..self.slots() {
                let g = w.slots[i];
                let loc = self.meta(i, s.ids[i]).loc[u];
                if us.pieces[g].is_none() {
                    if loc != Loc::Absent {
                        return Err(format!("U{u} held at g{g}, which it has no piece for"));
                    }
                    continue;
                }
                if !loc.finished() {
                    return Err(format!("U{u} unfinished at g{g} ({loc:?})"));
                }
                if outcome.is_some_and(|o| o != loc) {
                    return Err(format!("U{u} finished differently across groups"));
                }
                outcome = Some(loc);
            }
            out.push(if outcome == Some(Loc::Committed) { 'C' } else { 'A' });
        }
        Ok(out)
    }

    /// The progress measure: strictly up on every state change.
    fn potential(&self, s: &State) -> u32 {
        let groups: u32 =
            (0..self.slots()).map(|i| self.meta(i, s.ids[i]).loc.iter().map(|l| l.rank()).sum::<u32>()).sum();
        groups + s.know.iter().map(|k| k.count_ones()).sum::<u32>()
    }

    fn initial(&self) -> State {
        State { ids: [0; MAX_SLOTS], know: [0; MAX_UPGRADES] }
    }

    /// Replays the calls `path` from the initial state, for a trace.
    fn trace(&mut self, path: &[(usize, usize)]) -> Vec<String> {
        let mut s = self.initial();
        let mut lines = Vec::new();
        for &(slot, c) in path {
            let call = self.w.calls[c].0;
            let g = self.w.slots[slot];
            let t = self.run(g, s.ids[slot], c);
            s.ids[slot] = t.next;
            self.learn(&mut s.know, g, call, t.answer);
            lines.push(format!("{} -> {:?}", self.w.label(slot, call), t.answer));
        }
        lines
    }

    /// The calls from the initial state to state `at` of the search.
    fn path(parent: &[u32], via: &[u8], n: usize, at: usize) -> Vec<(usize, usize)> {
        let mut path = Vec::new();
        let mut i = at;
        while parent[i] != u32::MAX {
            path.push((usize::from(via[i]) / n, usize::from(via[i]) % n));
            i = parent[i] as usize;
        }
        path.reverse();
        path
    }

    /// Breadth-first search over every reachable state.
    fn explore(mut self) -> Report {
        let clock = Clock::now();
        let w = self.w;
        let n = w.calls.len();
        let forked = matches!(w.spec.flaw, Flaw::Forked(_));
        let mut report = Report { name: w.spec.name, ..Report::default() };

        self.close_groups();
        report.closure_seconds = clock.elapsed().as_secs_f64();
        report.closure_executions = self.executions;
        report.group_states = self.locals.iter().map(|l| l.bytes.len()).collect();
        let max_states = report.group_states.iter().copied().max().unwrap_or(1);
        let layout = Layout::new(max_states, self.slots(), w.ups.len());
        report.key_bits = layout.id_bits * self.slots() as u32 + KNOW_BITS * w.ups.len() as u32;
        assert!(self.slots() * n <= 256, "calls must fit a byte");
        let mut used: Vec<Vec<bool>> = self.locals.iter().map(|l| vec![false; l.bytes.len()]).collect();

        // The queue is `states[head..]`; `states`, `parent` and `via` keep
        // every state's first predecessor for traces.
        let mut visited: HashSet<u64, BuildHasherDefault<Mix>> = HashSet::default();
        let mut states: Vec<u64> = Vec::new();
        let mut parent: Vec<u32> = Vec::new();
        let mut via: Vec<u8> = Vec::new();
        let init = layout.pack(&self.initial());
        visited.insert(init);
        states.push(init);
        parent.push(u32::MAX);
        via.push(0);
        let (mut head, mut level_end) = (0usize, 1usize);
        let mut found: Option<(usize, &'static str, String)> = None;
        let mut first_benign = None;
        while head < states.len() {
            if head == level_end {
                report.depth += 1;
                level_end = states.len();
            }
            let s = layout.unpack(states[head]);
            for slot in 0..self.slots() {
                used[w.slots[slot]][s.ids[slot] as usize] = true;
            }
            let mut benign = false;
            if let Some((kind, detail)) = self.check_state(&s, &mut benign) {
                found = Some((head, kind, detail));
                break;
            }
            if benign {
                report.benign_reorders += 1;
                first_benign = first_benign.or(Some(head));
            }
            let mut changed = false;
            let pot = self.potential(&s);
            for slot in 0..self.slots() {
                let g = w.slots[slot];
                for c in 0..n {
                    let call = w.calls[c].0;
                    if !self.enabled(call, &s.know) {
                        continue;
                    }
                    report.calls += 1;
                    let t = self.run(g, s.ids[slot], c);
                    let mut next = s;
                    next.ids[slot] = t.next;
                    self.learn(&mut next.know, g, call, t.answer);
                    if next == s {
                        continue;
                    }
                    if w.spec.flaw == Flaw::None && matches!(t.answer, Answer::Finished(_)) {
                        let u = w.call_upgrade(call);
                        assert_eq!(
                            next.know[u],
                            s.know[u],
                            "a Finished reply revealed a code: {}",
                            w.label(slot, call)
                        );
                    }
                    if !forked {
                        assert!(self.potential(&next) > pot, "a change without progress: {}", w.label(slot, call));
                    }
                    changed = true;
                    report.edges += 1;
                    let packed = layout.pack(&next);
                    if visited.insert(packed) {
                        states.push(packed);
                        parent.push(u32::try_from(head).unwrap());
                        via.push((slot * n + c) as u8);
                    }
                }
            }
            if !changed {
                report.terminal += 1;
                // A compromised group owes no one termination.
                if !forked {
                    match self.terminal_outcomes(&s) {
                        Ok(v) => {
                            report.terminal_with_commit += usize::from(v.contains('C'));
                            *report.outcomes.entry(v).or_default() += 1;
                        }
                        Err(detail) => {
                            found = Some((head, "stuck", detail));
                            break;
                        }
                    }
                }
            }
            head += 1;
        }
        report.states = states.len();
        report.seconds = clock.elapsed().as_secs_f64();
        report.search_executions = self.executions - report.closure_executions;
        report.group_states_used = used.iter().map(|u| u.iter().filter(|x| **x).count()).collect();
        report.crypto_hits = self.crypto.hits;
        report.crypto_misses = self.crypto.misses;
        if let Some(at) = first_benign {
            let path = Self::path(&parent, &via, n, at);
            report.benign_trace = self.trace(&path);
        }
        if let Some((at, kind, detail)) = found {
            let path = Self::path(&parent, &via, n, at);
            let trace = self.trace(&path);
            report.violation = Some(Violation { kind, detail, trace });
        }
        report
    }
}

// =====================================================================
// Running worlds
// =====================================================================

/// Peak resident memory of this process, from /proc (Linux), in MiB.
fn peak_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kb| kb / 1024)
}

fn explore(spec: Spec, memo: bool) -> Report {
    let world = Model::build(spec);
    Explorer::new(&world, memo).explore()
}

fn show(r: &Report) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "{}: {} states ({} terminal), {} edges, {} calls evaluated, depth {}, {:.2} s, peak RSS {} MiB\n  \
         terminal outcomes {:?}\n  group states {:?} (closure), {:?} (in reachable states), {}-bit keys; \
         group code runs: {} closing ({:.2} s), {} searching; crypto cache {} hits, {} misses\n  \
         {} states with reorders at groups where the pair does not conflict",
        r.name,
        r.states,
        r.terminal,
        r.edges,
        r.calls,
        r.depth,
        r.seconds,
        peak_mib().map_or_else(|| "?".to_string(), |m| m.to_string()),
        r.outcomes,
        r.group_states,
        r.group_states_used,
        r.key_bits,
        r.closure_executions,
        r.closure_seconds,
        r.search_executions,
        r.crypto_hits,
        r.crypto_misses,
        r.benign_reorders,
    );
    if !r.benign_trace.is_empty() {
        let _ = write!(s, "; the first:");
        for (i, line) in r.benign_trace.iter().enumerate() {
            let _ = write!(s, "\n    {:2}. {line}", i + 1);
        }
    }
    if let Some(v) = &r.violation {
        let _ = write!(s, "\n  VIOLATION ({}): {}", v.kind, v.detail);
        for (i, line) in v.trace.iter().enumerate() {
            let _ = write!(s, "\n    {:2}. {line}", i + 1);
        }
    }
    s
}

/// Explores a world of correct groups and asserts every property.
fn check(spec: Spec, at_least: usize) -> Report {
    let r = explore(spec, true);
    println!("{}", show(&r));
    assert!(r.violation.is_none(), "{}", show(&r));
    assert!(r.states >= at_least, "{}: only {} states", r.name, r.states);
    assert_eq!(r.crypto_misses, 0, "every signature check and box opening came from the cache");
    assert!(r.terminal > 0 && r.outcomes.values().sum::<usize>() == r.terminal);
    r
}

/// With every piece accepted, some upgrade always commits: an upgrade is
/// only ever cancelled in favour of one that is (or was) released.
fn assert_some_commit(r: &Report) {
    assert_eq!(r.terminal_with_commit, r.terminal, "{}: a terminal state where nothing committed", r.name);
}

// =====================================================================
// Worlds of correct groups
// =====================================================================

const R1: Option<&[u32]> = Some(&[1]);
const R2: Option<&[u32]> = Some(&[2]);
const R3: Option<&[u32]> = Some(&[3]);

#[test]
fn two_groups_two_upgrades_conflicting_at_both() {
    let r = check(Spec::all_conflicting("2 groups x 2 upgrades, conflicting at both", 2, 2), 50);
    assert_some_commit(&r);
    // Both orders of commitment are reachable, and sequential commits too.
    for v in ["CC", "CA", "AC"] {
        assert!(r.outcomes.contains_key(v), "{v} unreachable: {:?}", r.outcomes);
    }
}

#[test]
fn two_groups_two_upgrades_conflicting_at_one() {
    let spec = Spec::new("2 groups x 2 upgrades, conflicting at g0 only", 2, &[1, 2], &[&[R1, R2], &[R1, R3]]);
    let r = check(spec, 50);
    assert_some_commit(&r);
    assert!(r.outcomes.contains_key("CC"));
}

#[test]
fn two_groups_two_upgrades_same_sequence_number() {
    // Equal sequence numbers: the upgrade ids break the tie.
    let r = check(Spec::new("2 groups x 2 upgrades, equal seq", 2, &[7, 7], &[&[R1, R1], &[R1, R1]]), 50);
    assert_some_commit(&r);
}

#[test]
fn three_groups_two_upgrades_conflicting_everywhere() {
    let r = check(Spec::all_conflicting("3 groups x 2 upgrades, conflicting everywhere", 3, 2), 500);
    assert_some_commit(&r);
}

#[test]
fn three_groups_two_upgrades_conflicting_at_some() {
    let spec =
        Spec::new("3 groups x 2 upgrades, conflicting at g0 and g2", 3, &[2, 1], &[&[R1, R2, R1], &[R1, R3, R1]]);
    let r = check(spec, 500);
    assert_some_commit(&r);
}

#[test]
fn two_groups_three_upgrades_mutually_conflicting() {
    let r = check(Spec::all_conflicting("2 groups x 3 upgrades, mutually conflicting", 2, 3), 1_000);
    assert_some_commit(&r);
}

#[test]
fn two_groups_three_upgrades_conflict_chain() {
    // U0-U1 conflict at g0, U1-U2 at g1, U0 and U2 nowhere.
    let spec = Spec::new(
        "2 groups x 3 upgrades, chain U0-U1 at g0, U1-U2 at g1",
        2,
        &[3, 1, 2],
        &[&[Some(&[1]), Some(&[5])], &[Some(&[1]), Some(&[2])], &[Some(&[6]), Some(&[2])]],
    );
    let r = check(spec, 1_000);
    assert_some_commit(&r);
}

#[test]
fn three_groups_three_upgrades_cyclic_overlap() {
    // Each upgrade covers two of three groups; each pair meets (and
    // conflicts) at one group: the shape of the crossed-release deadlock.
    let spec = Spec::new(
        "3 groups x 3 upgrades over two groups each, pairwise conflicting",
        3,
        &[1, 2, 3],
        &[&[R1, R1, None], &[None, R1, R1], &[R1, None, R1]],
    );
    let r = check(spec, 1_000);
    assert_some_commit(&r);
}

/// The largest world of the acceptance: three groups, three mutually
/// conflicting upgrades (under a second in release).
#[test]
fn three_groups_three_upgrades_mutually_conflicting() {
    let r = check(Spec::all_conflicting("3 groups x 3 upgrades, mutually conflicting", 3, 3), 500_000);
    assert_some_commit(&r);
    assert!(r.outcomes.contains_key("CCC"), "all three committing one after another is reachable");
}

/// Beyond the acceptance: four upgrades over two groups.
#[test]
fn two_groups_four_upgrades_mutually_conflicting() {
    let r = check(Spec::all_conflicting("2 groups x 4 upgrades, mutually conflicting", 2, 4), 500_000);
    assert_some_commit(&r);
}

/// Beyond the acceptance: two upgrades over four groups.
#[test]
fn four_groups_two_upgrades_mutually_conflicting() {
    let r = check(Spec::all_conflicting("4 groups x 2 upgrades, mutually conflicting", 4, 2), 10_000);
    assert_some_commit(&r);
}

/// The acceptance's largest world again, with the group code run on every
/// one of its 31.5 million calls instead of memoized: the same graph.
#[test]
#[ignore = "runs the group code 31.5 million times: about ten minutes in release"]
fn three_groups_three_upgrades_direct() {
    let spec = Spec::all_conflicting("3 groups x 3 upgrades, direct", 3, 3);
    let memo = explore(spec.clone(), true);
    let direct = explore(spec, false);
    println!("{}\n{}", show(&memo), show(&direct));
    assert!(memo.violation.is_none() && direct.violation.is_none());
    assert_eq!(
        (memo.states, memo.edges, memo.terminal, &memo.outcomes),
        (direct.states, direct.edges, direct.terminal, &direct.outcomes)
    );
    assert_eq!(direct.search_executions, direct.calls);
}

/// The largest world explored: three mutually conflicting upgrades over
/// four groups, 74.7 million states (minutes and gigabytes).
#[test]
#[ignore = "tens of millions of states: minutes and a few GB in release"]
fn four_groups_three_upgrades_mutually_conflicting() {
    let r = check(Spec::all_conflicting("4 groups x 3 upgrades, mutually conflicting", 4, 3), 10_000_000);
    assert_some_commit(&r);
}

// =====================================================================
// Cross-checks and negative controls
// =====================================================================

/// The memoized exploration finds exactly what re-executing the group code
/// on every transition finds.
#[test]
fn memoized_and_direct_exploration_agree() {
    for spec in [
        Spec::all_conflicting("2x2 direct", 2, 2),
        Spec::new("2x2 one conflict direct", 2, &[1, 2], &[&[R1, R2], &[R1, R3]]),
        Spec::all_conflicting("2x2 direct, g1 rejects U0", 2, 2).rejecting(0, 1),
    ] {
        let memo = explore(spec.clone(), true);
        let direct = explore(spec, false);
        println!("{}\n{}", show(&memo), show(&direct));
        assert!(memo.violation.is_none() && direct.violation.is_none());
        assert_eq!(
            (memo.states, memo.edges, memo.terminal, &memo.outcomes),
            (direct.states, direct.edges, direct.terminal, &direct.outcomes)
        );
        assert_eq!(memo.search_executions, 0, "memoized: the closure ran all the group code needed");
        assert_eq!(direct.search_executions, direct.calls, "direct: the group code ran on every call");
    }
}

/// One group's application rejects U0: every terminal state has U0
/// aborted everywhere (and U1 free to commit).
#[test]
fn a_rejecting_group_aborts_the_upgrade_everywhere() {
    for spec in [
        Spec::all_conflicting("2x2, g1 rejects U0", 2, 2).rejecting(0, 1),
        Spec::all_conflicting("3x2, g2 rejects U1", 3, 2).rejecting(1, 2),
        Spec::all_conflicting("2x3, g0 rejects U0", 2, 3).rejecting(0, 0),
    ] {
        let rejected = spec.rejects[0].0;
        let r = check(spec, 10);
        for v in r.outcomes.keys() {
            assert_eq!(v.as_bytes()[rejected], b'A', "{}: {v}", r.name);
        }
        assert!(r.outcomes.keys().any(|v| v.contains('C')), "{}: nothing else ever commits", r.name);
    }
}

/// The state checks themselves, on fabricated knowledge and group states
/// (metadata as the search would read it off two groups).
#[test]
fn state_checks_fire_on_fabricated_states() {
    let world = Model::build(Spec::all_conflicting("fabricated", 2, 2));
    let mut ex = Explorer::new(&world, true);
    let kind = |ex: &Explorer<'_>, s: &State| ex.check_state(s, &mut false).map(|v| v.0);
    let mut s = ex.initial();
    assert_eq!(kind(&ex, &s), None);
    s.know[1] = 0b11; // both s_g of U1: τ
    assert_eq!(kind(&ex, &s), None);
    s.know[1] |= C_SHARE; // and c
    assert_eq!(kind(&ex, &s), Some("never both"));
    s.know[1] = 0b01 | TAU_SEEN | C_SHARE;
    assert_eq!(kind(&ex, &s), Some("never both"));

    // Fabricated group states 1, 2 and 3 (metadata only).
    use Loc::{Aborted, Committed};
    let both = |commits: Vec<u8>| Meta { loc: vec![Committed, Committed], commits };
    ex.locals[0].meta.push(both(vec![0, 1]));
    ex.locals[1].meta.push(both(vec![0, 1]));
    ex.locals[1].meta.push(both(vec![1, 0]));
    ex.locals[1].meta.push(Meta { loc: vec![Aborted, Committed], commits: vec![1] });
    let mut s = ex.initial();
    s.ids[..2].copy_from_slice(&[1, 1]);
    assert_eq!(kind(&ex, &s), None);
    s.ids[1] = 2;
    assert_eq!(kind(&ex, &s), Some("commit order"));
    s.ids[1] = 3;
    assert_eq!(kind(&ex, &s), Some("atomicity"));
}

/// A compromised group (two copies of its state, installers free to talk
/// to either) breaks never-both, and the explorer finds how.
#[test]
fn a_forked_group_is_caught_releasing_both() {
    let spec = Spec::all_conflicting("2x2, g0 forked", 2, 2).with_flaw(Flaw::Forked(0));
    let r = explore(spec, true);
    println!("{}", show(&r));
    let v = r.violation.expect("the fork must be caught");
    assert_eq!(v.kind, "never both");
    assert!(v.trace.iter().any(|l| l.contains("g0'")), "the trace uses the second copy");
}

/// Installers that drop `Rejected` shares can leave a piece cancelled and
/// nobody able to abort it: the stuck-state check finds such a state.
#[test]
fn installers_deaf_to_rejections_get_stuck() {
    let spec = Spec::all_conflicting("2x2, installers deaf to rejections", 2, 2).with_flaw(Flaw::DeafToRejections);
    let r = explore(spec, true);
    println!("{}", show(&r));
    let v = r.violation.expect("a stuck state must be found");
    assert_eq!(v.kind, "stuck");
    assert!(v.trace.iter().any(|l| l.ends_with("-> Rejected")));
}
