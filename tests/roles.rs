//! Acceptance of the group and installer roles: Figure 3 (prepare, commit,
//! abort, conflicts), version chains, Figure 2 (piggybacked codes),
//! proactive diffusion, the installer, and persistence mid-scenario.
//!
//! Every scenario is driven by hand: the tests play the host, ordering each
//! operation on every replica of a group with [`order`] and routing answers.

use std::collections::{HashMap, HashSet, VecDeque};

use bft_upgrade::crypto::{
    reconstruct, Binding, Code, DeployerKey, GroupKey, PayloadOpener, PayloadRef, PayloadSealer, ReplicaSecretKey,
    Share, ShareKind, CHUNK_TAG_LEN,
};
use bft_upgrade::deployer::{Deployer, GroupTarget, UpgradePlan};
use bft_upgrade::error::{CapacityError, MisuseError};
use bft_upgrade::group::{
    AuthorizedDeployer, GroupConfig, GroupEffect, GroupReplica, Neighbor, TxnId, Verdict, HISTORY, MAX_IN_FLIGHT,
};
use bft_upgrade::installer::{DefaultInstaller, Finishing, GroupProgress, InstallerEffect, InstallerOptions};
use bft_upgrade::step::{Fault, FaultKind, Instant, Peer, Step, MAX_STEP_EFFECTS};
use bft_upgrade::wire::{
    self, Answer, Attachment, DeployerId, Finish, GroupId, Membership, Message, Operation, Outcome, Piece, Refusal,
    Reply, ResourceId, UpgradeHeader, UpgradeId,
};
use chacha20::ChaCha20Rng;
use rand_core::SeedableRng;
use serde::Serialize;

// =====================================================================
// Helpers
// =====================================================================

/// The time every single-instant scenario runs at.
const T0: Instant = Instant(1_000);
/// First proactive-diffusion / installer retry interval.
const RETRY: u64 = 100;
/// The origin of hand-made operations (an installer).
const ORIGIN: Peer = Peer::Installer(7);

/// One group's membership and its replicas' secret keys.
struct GroupKeys {
    membership: Membership,
    keys: Vec<ReplicaSecretKey>,
}

/// Groups, deployers (each with its genesis code) and the rng that made them.
struct Deployment {
    rng: ChaCha20Rng,
    deployers: Vec<Deployer>,
    /// Each deployer's signing key, for pieces tests sign by hand.
    signing: Vec<DeployerKey>,
    genesis: Vec<Code>,
    groups: Vec<GroupKeys>,
}

/// A group's sealed payload and the plaintext it holds.
struct Payload {
    group: GroupId,
    plain: Vec<u8>,
    sealed: Vec<u8>,
}

/// An upgrade as the deployer hands it out: header, codes, signed pieces
/// and each group's sealed payload.
struct Upgrade {
    header: UpgradeHeader,
    trigger: Code,
    cancel: Code,
    pieces: Vec<Piece>,
    payloads: Vec<Payload>,
}

impl Deployment {
    /// Groups of the given sizes (ids 100, 101, ...), one deployer.
    fn new(seed: u8, sizes: &[usize]) -> Self {
        Self::with_deployers(seed, sizes, 1)
    }

    /// Groups of the given sizes and `deployers` authorized deployers
    /// (ids 1, 2, ..., genesis codes all distinct).
    fn with_deployers(seed: u8, sizes: &[usize], deployers: u32) -> Self {
        let mut rng = ChaCha20Rng::from_seed([seed; 32]);
        let signing: Vec<DeployerKey> = (1..=deployers).map(|_| DeployerKey::random(&mut rng)).collect();
        let ds: Vec<Deployer> =
            signing.iter().zip(1..=deployers).map(|(k, i)| Deployer::new(DeployerId(i), k.clone())).collect();
        let genesis = (1..=deployers).map(|i| Code::from_bytes([0xA0 ^ i as u8; 32])).collect();
        let groups = sizes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let keys: Vec<_> = (0..*n).map(|_| ReplicaSecretKey::random(&mut rng)).collect();
                let pks: Vec<_> = keys.iter().map(|k| k.public_key()).collect();
                GroupKeys { membership: Membership::new(GroupId(100 + i as u32), &pks).unwrap(), keys }
            })
            .collect();
        Self { rng, deployers: ds, signing, genesis, groups }
    }

    fn gid(&self, g: usize) -> GroupId {
        self.groups[g].membership.group
    }

    fn f(&self, g: usize) -> u8 {
        self.groups[g].membership.f
    }

    fn n(&self, g: usize) -> usize {
        self.groups[g].membership.n()
    }

    fn keys(&self, g: usize) -> &[ReplicaSecretKey] {
        &self.groups[g].keys
    }

    fn deployer_id(&self, d: usize) -> DeployerId {
        self.deployers[d].id()
    }

    /// Group `g`'s configuration: every deployer authorized, `neighbors`
    /// (world indices) as its neighbors, retry interval [`RETRY`].
    fn config(&self, g: usize, neighbors: &[usize]) -> GroupConfig {
        let mut deployers = heapless::Vec::new();
        for (d, genesis) in self.deployers.iter().zip(&self.genesis) {
            deployers.push(AuthorizedDeployer { id: d.id(), key: d.public_key(), genesis: genesis.clone() }).unwrap();
        }
        let mut ns = heapless::Vec::new();
        for &n in neighbors {
            ns.push(Neighbor { group: self.gid(n), f: self.f(n) }).unwrap();
        }
        GroupConfig {
            membership: self.groups[g].membership.clone(),
            deployers,
            neighbors: ns,
            retry_ms: RETRY,
            proactive: true,
            guardians: None,
            sequencer: None,
        }
    }

    /// A fresh `GroupReplica` for every replica of group `g`.
    fn replicas(&self, g: usize, neighbors: &[usize]) -> Vec<GroupReplica> {
        let config = self.config(g, neighbors);
        (0..self.n(g)).map(|i| GroupReplica::new(config.clone(), i as u8).unwrap()).collect()
    }

    /// An upgrade by deployer 0 over `groups` (world indices), built on
    /// deployer 0's genesis code.
    fn upgrade(&mut self, seq: u64, groups: &[usize], resources: &[u32]) -> Upgrade {
        let prev = self.genesis[0].clone();
        self.upgrade_on(0, seq, groups, resources, &prev)
    }

    /// An upgrade by deployer `d` over `groups`, built on `prev`.
    fn upgrade_on(&mut self, d: usize, seq: u64, groups: &[usize], resources: &[u32], prev: &Code) -> Upgrade {
        let memberships: Vec<Membership> = groups.iter().map(|&g| self.groups[g].membership.clone()).collect();
        build(&mut self.rng, &self.deployers[d], seq, &memberships, resources, prev)
    }
}

/// Builds an upgrade signed by `signer` for `memberships`, every piece built
/// on `prev` and naming `resources`.
fn build(
    rng: &mut ChaCha20Rng,
    signer: &Deployer,
    seq: u64,
    memberships: &[Membership],
    resources: &[u32],
    prev: &Code,
) -> Upgrade {
    let mut ms: Vec<&Membership> = memberships.iter().collect();
    ms.sort_by_key(|m| m.group);
    let ids: Vec<GroupId> = ms.iter().map(|m| m.group).collect();
    let plan = UpgradePlan::new(rng, signer.id(), seq, &ids).unwrap();
    let upgrade = plan.header().upgrade;
    let resources: Vec<ResourceId> = resources.iter().copied().map(ResourceId).collect();
    let mut pieces = Vec::new();
    let mut payloads = Vec::new();
    for m in ms {
        // Three chunks of 64 bytes and a short last one.
        let plain: Vec<u8> = format!("payload of {upgrade:?} for group {} ", m.group.0).repeat(6).into_bytes();
        let key = plan.group_key(m.group).unwrap();
        let (payload, sealed) = seal(&key, upgrade, m.group, &plain);
        let target = GroupTarget {
            membership: m,
            resources: &resources,
            prev_version: prev,
            guardians: None,
            payload,
            next: None,
        };
        pieces.push(plan.piece(signer, &target).unwrap());
        payloads.push(Payload { group: m.group, plain, sealed });
    }
    Upgrade {
        header: plan.header().clone(),
        trigger: plan.trigger_code().clone(),
        cancel: plan.cancel_code().clone(),
        pieces,
        payloads,
    }
}

/// Seals `plain` in 64-byte chunks.
fn seal(key: &GroupKey, upgrade: UpgradeId, group: GroupId, plain: &[u8]) -> (PayloadRef, Vec<u8>) {
    const CHUNK: usize = 64;
    let mut s = PayloadSealer::new(key, &Binding::group(upgrade, group), CHUNK as u32).unwrap();
    let mut sealed = Vec::new();
    let chunks: Vec<&[u8]> = plain.chunks(CHUNK).collect();
    for (i, c) in chunks.iter().enumerate() {
        let mut buf = [0u8; CHUNK + CHUNK_TAG_LEN];
        buf[..c.len()].copy_from_slice(c);
        let last = i + 1 == chunks.len();
        sealed.extend_from_slice(s.seal_chunk(&mut buf, c.len(), last).unwrap());
    }
    (s.finish().unwrap(), sealed)
}

/// Opens a sealed payload chunk by chunk, as a host does after `Apply`.
fn open_payload(key: &GroupKey, upgrade: UpgradeId, group: GroupId, payload: &PayloadRef, sealed: &[u8]) -> Vec<u8> {
    let mut o = PayloadOpener::new(key, &Binding::group(upgrade, group), payload).unwrap();
    let mut plain = Vec::new();
    let mut pos = 0;
    while let Some(n) = o.next_chunk_len() {
        let mut buf = sealed[pos..pos + n].to_vec();
        plain.extend_from_slice(o.open_chunk(&mut buf).unwrap());
        pos += n;
    }
    o.finish().unwrap();
    assert_eq!(pos, sealed.len());
    plain
}

impl Upgrade {
    fn id(&self) -> UpgradeId {
        self.header.upgrade
    }

    fn piece(&self, g: GroupId) -> &Piece {
        self.pieces.iter().find(|p| p.header.group == g).expect("the upgrade has a piece for this group")
    }

    fn payload(&self, g: GroupId) -> &Payload {
        self.payloads.iter().find(|p| p.group == g).unwrap()
    }

    fn prepare(&self, g: GroupId) -> Operation {
        Operation::PrepareInstall(self.piece(g).clone())
    }

    fn commit(&self) -> Operation {
        self.commit_with(&self.trigger)
    }

    fn commit_with(&self, code: &Code) -> Operation {
        Operation::commit_install(self.id(), code.clone())
    }

    fn abort(&self) -> Operation {
        self.abort_with(&self.cancel)
    }

    fn abort_with(&self, code: &Code) -> Operation {
        Operation::abort_install(self.id(), code.clone())
    }

    fn diffused(&self, outcome: Outcome) -> Finish {
        let code = match outcome {
            Outcome::Committed => self.trigger.clone(),
            Outcome::Aborted => self.cancel.clone(),
        };
        Finish { upgrade: self.id(), outcome, code }
    }

    fn code(&self, outcome: Outcome) -> &Code {
        match outcome {
            Outcome::Committed => &self.trigger,
            Outcome::Aborted => &self.cancel,
        }
    }
}

/// Applies one ordered operation to every replica of a group (replica `i`
/// with `keys[i]`), all with the same verdict, at [`T0`].
fn order(
    replicas: &mut [GroupReplica],
    keys: &[ReplicaSecretKey],
    op: &Operation,
    origin: Peer,
    verdict: Verdict,
) -> Vec<Step<GroupEffect>> {
    order_at(T0, replicas, keys, op, origin, verdict)
}

/// [`order`] at `now`.
fn order_at(
    now: Instant,
    replicas: &mut [GroupReplica],
    keys: &[ReplicaSecretKey],
    op: &Operation,
    origin: Peer,
    verdict: Verdict,
) -> Vec<Step<GroupEffect>> {
    assert_eq!(replicas.len(), keys.len());
    replicas.iter_mut().zip(keys).map(|(r, k)| r.handle_ordered(now, origin, op, k, |_| verdict)).collect()
}

/// The answer of every replica, checking that each step holds exactly one
/// message: an answer to `origin` from that replica.
fn answers(steps: &[Step<GroupEffect>], origin: Peer) -> Vec<Answer> {
    steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            assert_eq!(s.messages.len(), 1, "replica {i}: {:?}", s.messages);
            assert_eq!(s.messages[0].to, origin, "replica {i}");
            let Message::Answer(a) = &s.messages[0].message else {
                panic!("replica {i} sent {:?}", s.messages[0].message)
            };
            assert_eq!(usize::from(a.replica), i);
            a.clone()
        })
        .collect()
}

/// The reply of every replica (see [`answers`]).
fn replies(steps: &[Step<GroupEffect>], origin: Peer) -> Vec<Reply> {
    answers(steps, origin).into_iter().map(|a| a.reply).collect()
}

/// Every fault of every step.
fn faults<E>(steps: &[Step<E>]) -> Vec<Fault> {
    steps.iter().flat_map(|s| s.faults.iter().copied()).collect()
}

/// Every effect of every step.
fn effects<E: Clone>(steps: &[Step<E>]) -> Vec<E> {
    steps.iter().flat_map(|s| s.effects.iter().cloned()).collect()
}

/// The canonical encoding of a role's state.
fn bytes<T: Serialize>(value: &T) -> Vec<u8> {
    let mut buf = vec![0u8; wire::encoded_len(value)];
    wire::encode(value, &mut buf).unwrap().to_vec()
}

/// Every replica's encoded state.
fn states(replicas: &[GroupReplica]) -> Vec<Vec<u8>> {
    replicas.iter().map(bytes).collect()
}

/// Serializes, drops and restores every replica.
fn restore_all(replicas: Vec<GroupReplica>) -> Vec<GroupReplica> {
    let saved = states(&replicas);
    drop(replicas);
    saved.iter().map(|b| wire::decode::<GroupReplica>(b).unwrap()).collect()
}

/// The code `f + 1` (or more) shares rebuild.
fn rebuild(shares: &[Share]) -> Code {
    Code::from_bytes(reconstruct(shares).unwrap().to_bytes().into())
}

/// `code` with one byte changed.
fn corrupt(code: &Code) -> Code {
    let mut b = *code.expose();
    b[7] ^= 0x40;
    Code::from_bytes(b)
}

/// Asserts every reply is `Accepted` with the replica's genuine secret
/// share and returns the shares.
fn expect_accepted(replies: &[Reply], piece: &Piece) -> Vec<Share> {
    replies
        .iter()
        .enumerate()
        .map(|(i, r)| match r {
            Reply::Accepted(s) => {
                assert_eq!(usize::from(s.index()), i + 1);
                assert!(piece.share_is_valid(ShareKind::Secret, s), "replica {i}");
                s.clone()
            }
            other => panic!("replica {i}: expected Accepted, got {other:?}"),
        })
        .collect()
}

/// Asserts every reply is `Rejected` with the replica's genuine `c` share
/// and returns the shares.
fn expect_rejected(replies: &[Reply], piece: &Piece) -> Vec<Share> {
    replies
        .iter()
        .enumerate()
        .map(|(i, r)| match r {
            Reply::Rejected(s) => {
                assert_eq!(usize::from(s.index()), i + 1);
                assert!(piece.share_is_valid(ShareKind::Cancel, s), "replica {i}");
                s.clone()
            }
            other => panic!("replica {i}: expected Rejected, got {other:?}"),
        })
        .collect()
}

/// Asserts every replica applied `up`'s piece of group `g`, with a key that
/// opens the payload to the deployer's plaintext.
fn expect_applied(steps: &[Step<GroupEffect>], up: &Upgrade, g: GroupId) {
    for (i, s) in steps.iter().enumerate() {
        assert_eq!(s.effects.len(), 1, "replica {i}: {:?}", s.effects);
        let GroupEffect::Apply { upgrade, key, payload, .. } = &s.effects[0] else {
            panic!("replica {i}: expected Apply, got {:?}", s.effects[0]);
        };
        assert_eq!(*upgrade, up.id());
        assert_eq!(payload, &up.piece(g).header.payload);
        let key = key.as_ref().expect("the replica's box opened");
        let p = up.payload(g);
        assert_eq!(open_payload(key, up.id(), g, payload, &p.sealed), p.plain);
    }
}

/// Asserts every replica discarded `up`.
fn expect_discarded(steps: &[Step<GroupEffect>], up: &Upgrade) {
    for s in steps {
        assert_eq!(s.effects.as_slice(), &[GroupEffect::Discard { upgrade: up.id() }]);
    }
}

/// Records every share each replica releases and fails the test the moment
/// one replica releases both kinds for one piece (PROTOCOL.md section 5,
/// "never both").
#[derive(Default)]
struct Ledger {
    released: HashMap<(GroupId, u8, UpgradeId), (bool, bool)>,
}

impl Ledger {
    fn record(&mut self, steps: &[Step<GroupEffect>]) {
        for s in steps {
            for out in &s.messages {
                let Message::Answer(a) = &out.message else {
                    continue;
                };
                let e = self.released.entry((a.group, a.replica, a.upgrade)).or_default();
                match a.reply {
                    Reply::Accepted(_) => e.0 = true,
                    Reply::Rejected(_) => e.1 = true,
                    _ => {}
                }
                assert!(
                    !(e.0 && e.1),
                    "replica {} of {:?} released both kinds of share for {:?}",
                    a.replica,
                    a.group,
                    a.upgrade
                );
            }
        }
    }

    /// [`order`], recorded.
    fn order(
        &mut self,
        replicas: &mut [GroupReplica],
        keys: &[ReplicaSecretKey],
        op: &Operation,
        verdict: Verdict,
    ) -> Vec<Step<GroupEffect>> {
        let steps = order(replicas, keys, op, ORIGIN, verdict);
        self.record(&steps);
        steps
    }
}

/// Feeds every answer in group steps to an installer, with `piece` (the
/// answering group's piece).
fn feed(
    inst: &mut DefaultInstaller,
    now: Instant,
    steps: &[Step<GroupEffect>],
    piece: &Piece,
) -> Vec<Step<InstallerEffect>> {
    let mut out = Vec::new();
    for s in steps {
        for m in &s.messages {
            let Message::Answer(a) = &m.message else {
                continue;
            };
            assert_eq!(m.to, inst.peer());
            let from = Peer::Replica { group: a.group, index: a.replica };
            out.push(inst.handle_answer(now, from, a, piece).unwrap());
        }
    }
    out
}

/// An installer's options: every group at once, or one group a sweep and
/// diffusion (the rest after three sweeps).
fn opts(finish_all: bool) -> InstallerOptions {
    let finishing = if finish_all { Finishing::EveryGroup } else { Finishing::Diffusion { grace: 3 } };
    InstallerOptions::default().retry_ms(RETRY).finishing(finishing)
}

/// The group list an installer takes: `(id, f)` per group.
fn installer_groups(w: &Deployment, groups: &[usize]) -> Vec<(GroupId, u8)> {
    groups.iter().map(|&g| (w.gid(g), w.f(g))).collect()
}

// =====================================================================
// 1–3. PrepareInstall: release, idempotence, rejection
// =====================================================================

mod prepare {
    use super::*;

    /// Every replica answers the origin with its genuine `s_g` share; `f+1`
    /// of them rebuild `s_g` and the `s_g` XOR to the plan's `τ`.
    #[test]
    fn valid_piece_releases_secret_shares_that_rebuild_tau() {
        let mut w = Deployment::new(1, &[4, 7, 1]);
        let up = w.upgrade(1, &[0, 1, 2], &[1]);
        let mut tau = Code::default();
        for g in 0..3 {
            let gid = w.gid(g);
            let mut reps = w.replicas(g, &[]);
            let steps = order(&mut reps, w.keys(g), &up.prepare(gid), ORIGIN, Verdict::Accept);
            for (i, (s, a)) in steps.iter().zip(answers(&steps, ORIGIN)).enumerate() {
                assert!(s.effects.is_empty(), "replica {i}: {:?}", s.effects);
                assert!(s.faults.is_empty(), "replica {i}: {:?}", s.faults);
                assert_eq!(s.deadline, None);
                assert_eq!((a.upgrade, a.group, usize::from(a.replica)), (up.id(), gid, i));
            }
            let piece = up.piece(gid);
            let shares = expect_accepted(&replies(&steps, ORIGIN), piece);
            for s in &shares {
                assert!(!piece.share_is_valid(ShareKind::Cancel, s));
            }
            for r in &reps {
                assert_eq!(r.holds(up.id()), Some(true));
                assert_eq!(r.outcome(up.id()), None);
                assert_eq!(r.version(), 0);
            }
            let k = usize::from(w.f(g)) + 1;
            let s_g = rebuild(&shares[..k]);
            assert_eq!(rebuild(&shares[shares.len() - k..]), s_g);
            tau.xor_assign(&s_g);
        }
        assert_eq!(tau, up.trigger);
    }

    /// The answer goes to whichever peer submitted the operation.
    #[test]
    fn answer_goes_to_the_origin() {
        let mut w = Deployment::new(2, &[4]);
        let up = w.upgrade(1, &[0], &[]);
        let gid = w.gid(0);
        for origin in [Peer::Installer(3), Peer::Client(9), Peer::Replica { group: GroupId(5), index: 2 }] {
            let mut reps = w.replicas(0, &[]);
            let steps = order(&mut reps, w.keys(0), &up.prepare(gid), origin, Verdict::Accept);
            expect_accepted(&replies(&steps, origin), up.piece(gid));
        }
    }

    /// Repeating a prepare returns the first answer, byte for byte, and
    /// leaves the serialized state byte-identical; the application's
    /// verdict is not asked again for a piece already decided.
    #[test]
    fn repeated_prepare_is_idempotent() {
        let mut w = Deployment::new(3, &[4]);
        let accepted = w.upgrade(1, &[0], &[1]);
        let rejected = w.upgrade(2, &[0], &[2]);
        let gid = w.gid(0);
        let mut reps = w.replicas(0, &[]);
        let first_a = order(&mut reps, w.keys(0), &accepted.prepare(gid), ORIGIN, Verdict::Accept);
        let first_r = order(&mut reps, w.keys(0), &rejected.prepare(gid), ORIGIN, Verdict::Reject);
        expect_accepted(&replies(&first_a, ORIGIN), accepted.piece(gid));
        expect_rejected(&replies(&first_r, ORIGIN), rejected.piece(gid));
        let before = states(&reps);
        for _ in 0..3 {
            for (up, first) in [(&accepted, &first_a), (&rejected, &first_r)] {
                let again: Vec<_> = reps
                    .iter_mut()
                    .zip(w.keys(0))
                    .map(|(r, k)| {
                        r.handle_ordered(T0, ORIGIN, &up.prepare(gid), k, |_| {
                            panic!("validate asked again for a piece already decided")
                        })
                    })
                    .collect();
                assert_eq!(&again, first);
                assert_eq!(states(&reps), before);
            }
        }
    }

    /// A finished piece answers a repeated prepare with its outcome and
    /// code (rule 1), and nothing changes.
    #[test]
    fn prepare_of_a_finished_piece_answers_the_code() {
        let mut w = Deployment::new(4, &[4]);
        let committed = w.upgrade(1, &[0], &[1]);
        let gid = w.gid(0);
        let mut reps = w.replicas(0, &[]);
        let _ = order(&mut reps, w.keys(0), &committed.prepare(gid), ORIGIN, Verdict::Accept);
        let _ = order(&mut reps, w.keys(0), &committed.commit(), ORIGIN, Verdict::Accept);
        let before = states(&reps);
        let steps = order(&mut reps, w.keys(0), &committed.prepare(gid), ORIGIN, Verdict::Reject);
        for r in replies(&steps, ORIGIN) {
            assert_eq!(r, Reply::Finished(Outcome::Committed, committed.trigger.clone()));
        }
        assert!(effects(&steps).is_empty());
        assert_eq!(states(&reps), before);

        // The same for an aborted piece (a fresh group: the chain moved).
        let mut w = Deployment::new(5, &[4]);
        let aborted = w.upgrade(1, &[0], &[1]);
        let mut reps = w.replicas(0, &[]);
        let _ = order(&mut reps, w.keys(0), &aborted.prepare(gid), ORIGIN, Verdict::Reject);
        let _ = order(&mut reps, w.keys(0), &aborted.abort(), ORIGIN, Verdict::Accept);
        let before = states(&reps);
        let steps = order(&mut reps, w.keys(0), &aborted.prepare(gid), ORIGIN, Verdict::Accept);
        for r in replies(&steps, ORIGIN) {
            assert_eq!(r, Reply::Finished(Outcome::Aborted, aborted.cancel.clone()));
        }
        assert_eq!(states(&reps), before);
    }

    /// The verdict `Reject` releases `c` shares; `f+1` of them rebuild `c`.
    #[test]
    fn reject_verdict_releases_cancel_shares() {
        let mut w = Deployment::new(6, &[7]);
        let up = w.upgrade(1, &[0], &[1]);
        let gid = w.gid(0);
        let mut reps = w.replicas(0, &[]);
        let steps = order(&mut reps, w.keys(0), &up.prepare(gid), ORIGIN, Verdict::Reject);
        assert!(faults(&steps).is_empty());
        assert!(effects(&steps).is_empty());
        let shares = expect_rejected(&replies(&steps, ORIGIN), up.piece(gid));
        for s in &shares {
            assert!(!up.piece(gid).share_is_valid(ShareKind::Secret, s));
        }
        let k = usize::from(w.f(0)) + 1;
        assert_eq!(rebuild(&shares[..k]), up.cancel);
        assert_eq!(rebuild(&shares[2..2 + k]), up.cancel);
        for r in &reps {
            assert_eq!(r.holds(up.id()), Some(false));
        }
    }

    /// Across repeated prepares, commits with wrong codes, aborts with
    /// wrong codes, a commit with the right `τ` on a rejected piece, and
    /// the final abort, no replica ever releases both kinds for one piece.
    #[test]
    fn never_both_kinds_for_one_piece() {
        for verdict in [Verdict::Accept, Verdict::Reject] {
            let mut w = Deployment::new(7, &[4]);
            let up = w.upgrade(1, &[0], &[1]);
            let gid = w.gid(0);
            let keys = w.keys(0);
            let mut reps = w.replicas(0, &[]);
            let mut ledger = Ledger::default();
            let first = ledger.order(&mut reps, keys, &up.prepare(gid), verdict);
            let first = replies(&first, ORIGIN);
            let flipped = match verdict {
                Verdict::Accept => Verdict::Reject,
                Verdict::Reject => Verdict::Accept,
            };
            for round in 0..3 {
                for v in [verdict, flipped] {
                    let s = ledger.order(&mut reps, keys, &up.prepare(gid), v);
                    assert_eq!(replies(&s, ORIGIN), first, "round {round}");
                }
                for op in [
                    up.commit_with(&corrupt(&up.trigger)),
                    up.commit_with(&up.cancel),
                    up.abort_with(&corrupt(&up.cancel)),
                    up.abort_with(&up.trigger),
                ] {
                    let s = ledger.order(&mut reps, keys, &op, verdict);
                    assert!(effects(&s).is_empty());
                    assert!(faults(&s).iter().all(|f| f.kind == FaultKind::WrongCode));
                    assert_eq!(faults(&s).len(), reps.len());
                }
            }
            if verdict == Verdict::Reject {
                // The c shares went out: even the genuine τ never commits it.
                let before = states(&reps);
                let s = ledger.order(&mut reps, keys, &up.commit(), verdict);
                assert!(effects(&s).is_empty(), "{:?}", effects(&s));
                for r in replies(&s, ORIGIN) {
                    assert!(!matches!(r, Reply::Finished(Outcome::Committed, _)), "{r:?}");
                }
                assert_eq!(states(&reps), before);
                let s = ledger.order(&mut reps, keys, &up.prepare(gid), verdict);
                assert_eq!(replies(&s, ORIGIN), first);
            }
            let s = ledger.order(&mut reps, keys, &up.abort(), verdict);
            expect_discarded(&s, &up);
            let s = ledger.order(&mut reps, keys, &up.prepare(gid), verdict);
            for r in replies(&s, ORIGIN) {
                assert_eq!(r, Reply::Finished(Outcome::Aborted, up.cancel.clone()));
            }
        }
    }

    /// At `MAX_IN_FLIGHT` unfinished pieces a new one is refused `Busy`
    /// with nothing changed; held pieces still answer, and a slot freed by
    /// a commit takes the next piece.
    #[test]
    fn full_group_refuses_busy() {
        let mut w = Deployment::new(8, &[1]);
        let gid = w.gid(0);
        let ups: Vec<Upgrade> = (0..=MAX_IN_FLIGHT as u64).map(|i| w.upgrade(i, &[0], &[i as u32])).collect();
        let mut reps = w.replicas(0, &[]);
        for up in &ups[..MAX_IN_FLIGHT] {
            let s = order(&mut reps, w.keys(0), &up.prepare(gid), ORIGIN, Verdict::Accept);
            expect_accepted(&replies(&s, ORIGIN), up.piece(gid));
        }
        let last = &ups[MAX_IN_FLIGHT];
        let before = states(&reps);
        let s = order(&mut reps, w.keys(0), &last.prepare(gid), ORIGIN, Verdict::Accept);
        assert_eq!(replies(&s, ORIGIN), vec![Reply::Refused(Refusal::Busy)]);
        assert_eq!(states(&reps), before);
        let s = order(&mut reps, w.keys(0), &ups[3].prepare(gid), ORIGIN, Verdict::Accept);
        expect_accepted(&replies(&s, ORIGIN), ups[3].piece(gid));
        let s = order(&mut reps, w.keys(0), &ups[3].commit(), ORIGIN, Verdict::Accept);
        expect_applied(&s, &ups[3], gid);
        // The freed slot takes a piece built on the new version code.
        let next = w.upgrade_on(0, 99, &[0], &[99], &ups[3].trigger);
        let s = order(&mut reps, w.keys(0), &next.prepare(gid), ORIGIN, Verdict::Accept);
        expect_accepted(&replies(&s, ORIGIN), next.piece(gid));
    }

    /// A signed piece whose boxes for replicas 2 and 3 are swapped (a
    /// deployer bug): those replicas report `BadBox` and answer `NoShare`;
    /// the others release valid shares; on commit the two get no key.
    #[test]
    fn bad_box_yields_no_share() {
        let mut w = Deployment::new(9, &[4]);
        let gid = w.gid(0);
        let key = DeployerKey::random(&mut w.rng);
        let signer = DeployerKey::from_bytes(&key.to_bytes()).unwrap();
        w.deployers[0] = Deployer::new(w.deployer_id(0), key);
        let mut up = w.upgrade(1, &[0], &[1]);
        up.pieces[0].header.replicas.swap(2, 3);
        up.pieces[0].signature = signer.sign(&up.pieces[0].header.digest()).unwrap();
        let piece = up.pieces[0].clone();
        let mut reps = w.replicas(0, &[]);
        let steps = order(&mut reps, w.keys(0), &up.prepare(gid), ORIGIN, Verdict::Accept);
        let r = replies(&steps, ORIGIN);
        expect_accepted(&r[..2], &piece);
        assert_eq!(r[2..], [Reply::NoShare, Reply::NoShare]);
        for (i, s) in steps.iter().enumerate() {
            let kinds: Vec<_> = s.faults.iter().map(|f| f.kind).collect();
            assert_eq!(kinds, if i < 2 { vec![] } else { vec![FaultKind::BadBox] }, "replica {i}");
            // The deployer who signed the piece, not the installer who
            // forwarded it, is at fault.
            assert!(s.faults.iter().all(|f| f.peer == Peer::Deployer(piece.header.deployer)), "replica {i}");
        }
        assert!(reps.iter().all(|r| r.holds(up.id()) == Some(true)));
        let again = order(&mut reps, w.keys(0), &up.prepare(gid), ORIGIN, Verdict::Accept);
        assert_eq!(replies(&again, ORIGIN), r);
        let steps = order(&mut reps, w.keys(0), &up.commit(), ORIGIN, Verdict::Accept);
        expect_applied(&steps[..2], &up, gid);
        for s in &steps[2..] {
            assert_eq!(
                s.effects.as_slice(),
                &[GroupEffect::Apply {
                    upgrade: up.id(),
                    key: None,
                    payload: piece.header.payload,
                    reconfigured: false
                }]
            );
        }
    }
}

// =====================================================================
// 4. CommitInstall and AbortInstall
// =====================================================================

mod finish {
    use super::*;

    /// The right `τ` commits: `Apply` with the key that opens the payload,
    /// outcome Committed, version + 1, version code τ, an answer with the
    /// code to the origin. A repeat answers the same and changes nothing.
    #[test]
    fn commit_with_tau_applies_the_payload() {
        let mut w = Deployment::new(10, &[4, 7]);
        let up = w.upgrade(1, &[0, 1], &[1]);
        let d = w.deployer_id(0);
        for g in 0..2 {
            let gid = w.gid(g);
            let mut reps = w.replicas(g, &[]);
            let _ = order(&mut reps, w.keys(g), &up.prepare(gid), ORIGIN, Verdict::Accept);
            assert_eq!(reps[0].version_code(d), Some(&w.genesis[0]));
            assert_eq!(reps[0].held_upgrades().collect::<Vec<_>>(), vec![(up.id(), true)]);
            assert_eq!(reps[0].finished_upgrades().count(), 0);
            let steps = order(&mut reps, w.keys(g), &up.commit(), ORIGIN, Verdict::Accept);
            assert!(faults(&steps).is_empty());
            expect_applied(&steps, &up, gid);
            for r in replies(&steps, ORIGIN) {
                assert_eq!(r, Reply::Finished(Outcome::Committed, up.trigger.clone()));
            }
            for r in &reps {
                assert_eq!(r.outcome(up.id()), Some(Outcome::Committed));
                assert_eq!(r.holds(up.id()), None);
                assert_eq!(r.version(), 1);
                assert_eq!(r.version_code(d), Some(&up.trigger));
                assert_eq!(r.held_upgrades().count(), 0);
                assert_eq!(r.finished_upgrades().collect::<Vec<_>>(), vec![(up.id(), Outcome::Committed, 1)]);
            }
            // A guardian forwarding the commit (section 5) gets no answer.
            let from_guardian = order(&mut reps, w.keys(g), &up.commit(), Peer::Guardian(9), Verdict::Accept);
            assert!(from_guardian.iter().all(|s| s.messages.is_empty() && s.faults.is_empty()));
            // Idempotent: the same answer, no effect, no change.
            let before = states(&reps);
            let again = order(&mut reps, w.keys(g), &up.commit(), ORIGIN, Verdict::Accept);
            assert!(effects(&again).is_empty());
            assert_eq!(replies(&again, ORIGIN), replies(&steps, ORIGIN));
            assert_eq!(states(&reps), before);
            // An abort after the commit answers with the commit.
            let late = order(&mut reps, w.keys(g), &up.abort(), ORIGIN, Verdict::Accept);
            assert!(effects(&late).is_empty());
            for r in replies(&late, ORIGIN) {
                assert_eq!(r, Reply::Finished(Outcome::Committed, up.trigger.clone()));
            }
            assert_eq!(states(&reps), before);
        }
    }

    /// A wrong code is the origin's fault and changes nothing; so is a code
    /// of the other kind (the digests are domain separated).
    #[test]
    fn wrong_code_is_a_fault_and_changes_nothing() {
        let mut w = Deployment::new(11, &[4]);
        let up = w.upgrade(1, &[0], &[1]);
        let gid = w.gid(0);
        let mut reps = w.replicas(0, &[]);
        let _ = order(&mut reps, w.keys(0), &up.prepare(gid), ORIGIN, Verdict::Accept);
        let before = states(&reps);
        for op in [
            up.commit_with(&corrupt(&up.trigger)),
            up.commit_with(&up.cancel),
            up.commit_with(&Code::default()),
            up.abort_with(&corrupt(&up.cancel)),
            up.abort_with(&up.trigger),
        ] {
            let steps = order(&mut reps, w.keys(0), &op, ORIGIN, Verdict::Accept);
            for s in &steps {
                assert!(s.effects.is_empty());
                assert_eq!(
                    s.faults.as_slice(),
                    &[Fault { peer: ORIGIN, upgrade: Some(up.id()), kind: FaultKind::WrongCode }]
                );
            }
            for r in replies(&steps, ORIGIN) {
                assert!(!matches!(r, Reply::Finished(..)), "{r:?}");
            }
            assert_eq!(states(&reps), before);
        }
        // The right code still works afterwards.
        let steps = order(&mut reps, w.keys(0), &up.commit(), ORIGIN, Verdict::Accept);
        expect_applied(&steps, &up, gid);
    }

    /// A code for an upgrade the group never held is ignored: `Unknown`,
    /// no fault (PROTOCOL.md 4: "a group that receives a trigger code it has
    /// no piece for ignores it").
    #[test]
    fn code_for_unknown_upgrade_is_ignored() {
        let mut w = Deployment::new(12, &[4, 4]);
        let held = w.upgrade(1, &[0], &[1]);
        let elsewhere = w.upgrade(2, &[1], &[1]);
        let gid = w.gid(0);
        let mut reps = w.replicas(0, &[]);
        let _ = order(&mut reps, w.keys(0), &held.prepare(gid), ORIGIN, Verdict::Accept);
        let before = states(&reps);
        for op in [elsewhere.commit(), elsewhere.abort(), elsewhere.commit_with(&corrupt(&elsewhere.trigger))] {
            let steps = order(&mut reps, w.keys(0), &op, ORIGIN, Verdict::Accept);
            assert!(faults(&steps).is_empty(), "{:?}", faults(&steps));
            assert!(effects(&steps).is_empty());
            for a in answers(&steps, ORIGIN) {
                assert_eq!((a.upgrade, a.reply), (elsewhere.id(), Reply::Unknown));
            }
            assert_eq!(states(&reps), before);
        }
    }

    /// `c` aborts: `Discard`, outcome Aborted, version unchanged, the
    /// deployer's version code becomes `c`; a later `τ` answers the abort.
    #[test]
    fn abort_with_c_discards() {
        for verdict in [Verdict::Accept, Verdict::Reject] {
            let mut w = Deployment::new(13, &[4]);
            let up = w.upgrade(1, &[0], &[1]);
            let d = w.deployer_id(0);
            let gid = w.gid(0);
            let mut reps = w.replicas(0, &[]);
            let _ = order(&mut reps, w.keys(0), &up.prepare(gid), ORIGIN, verdict);
            let steps = order(&mut reps, w.keys(0), &up.abort(), ORIGIN, Verdict::Accept);
            assert!(faults(&steps).is_empty());
            expect_discarded(&steps, &up);
            for r in replies(&steps, ORIGIN) {
                assert_eq!(r, Reply::Finished(Outcome::Aborted, up.cancel.clone()));
            }
            for r in &reps {
                assert_eq!(r.outcome(up.id()), Some(Outcome::Aborted));
                assert_eq!(r.holds(up.id()), None);
                assert_eq!(r.version(), 0);
                assert_eq!(r.version_code(d), Some(&up.cancel));
            }
            let before = states(&reps);
            for op in [up.commit(), up.abort()] {
                let late = order(&mut reps, w.keys(0), &op, ORIGIN, Verdict::Accept);
                assert!(effects(&late).is_empty());
                for r in replies(&late, ORIGIN) {
                    assert_eq!(r, Reply::Finished(Outcome::Aborted, up.cancel.clone()));
                }
                assert_eq!(states(&reps), before);
            }
        }
    }
}

// =====================================================================
// 5. Refusals: nothing released, nothing changed
// =====================================================================

mod refusals {
    use super::*;

    /// Orders `op` on every replica with a `validate` that must not be
    /// called, asserts every reply is `Refused(want)` and the state is
    /// unchanged, and returns the steps.
    fn refused(
        reps: &mut [GroupReplica],
        keys: &[ReplicaSecretKey],
        piece: &Piece,
        want: Refusal,
    ) -> Vec<Step<GroupEffect>> {
        let before = states(reps);
        let op = Operation::PrepareInstall(piece.clone());
        let steps: Vec<_> = reps
            .iter_mut()
            .zip(keys)
            .map(|(r, k)| r.handle_ordered(T0, ORIGIN, &op, k, |_| panic!("validate asked about a refused piece")))
            .collect();
        for a in answers(&steps, ORIGIN) {
            assert_eq!(a.upgrade, piece.header.upgrade);
            assert_eq!(a.reply, Reply::Refused(want));
        }
        assert!(effects(&steps).is_empty());
        assert_eq!(states(reps), before, "a refusal changed the state");
        for r in reps.iter() {
            assert_eq!(r.holds(piece.header.upgrade), None);
        }
        steps
    }

    fn forged_piece_faults(steps: &[Step<GroupEffect>], piece: &Piece) {
        for s in steps {
            assert_eq!(
                s.faults.as_slice(),
                &[Fault { peer: ORIGIN, upgrade: Some(piece.header.upgrade), kind: FaultKind::ForgedPiece }]
            );
        }
    }

    #[test]
    fn piece_for_another_group() {
        let mut w = Deployment::new(20, &[4, 4]);
        let up = w.upgrade(1, &[0, 1], &[1]);
        let mut reps = w.replicas(0, &[]);
        let _ = refused(&mut reps, w.keys(0), up.piece(w.gid(1)), Refusal::WrongGroup);
        // A piece for a group this one is not even in the plan of.
        let other = w.upgrade(2, &[1], &[1]);
        let _ = refused(&mut reps, w.keys(0), other.piece(w.gid(1)), Refusal::WrongGroup);
    }

    #[test]
    fn piece_signed_by_an_unknown_key() {
        let mut w = Deployment::new(21, &[4]);
        let m = w.groups[0].membership.clone();
        let genesis = w.genesis[0].clone();
        // Claims deployer 1 (authorized) but is signed with another key.
        let impostor = Deployer::new(w.deployer_id(0), DeployerKey::random(&mut w.rng));
        let forged = build(&mut w.rng, &impostor, 1, std::slice::from_ref(&m), &[1], &genesis);
        // Signed by a deployer the group does not know at all.
        let stranger = Deployer::new(DeployerId(77), DeployerKey::random(&mut w.rng));
        let unknown = build(&mut w.rng, &stranger, 1, std::slice::from_ref(&m), &[1], &genesis);
        // A genuine piece with its header changed after signing.
        let mut tampered = w.upgrade(1, &[0], &[1]).pieces[0].clone();
        tampered.header.resources.clear();

        let mut reps = w.replicas(0, &[]);
        let s = refused(&mut reps, w.keys(0), &forged.pieces[0], Refusal::BadSignature);
        forged_piece_faults(&s, &forged.pieces[0]);
        let s = refused(&mut reps, w.keys(0), &unknown.pieces[0], Refusal::UnknownDeployer);
        forged_piece_faults(&s, &unknown.pieces[0]);
        let s = refused(&mut reps, w.keys(0), &tampered, Refusal::BadSignature);
        forged_piece_faults(&s, &tampered);
    }

    #[test]
    fn piece_built_for_another_membership() {
        let mut w = Deployment::new(22, &[4]);
        let gid = w.gid(0);
        let genesis = w.genesis[0].clone();
        let real = w.groups[0].membership.clone();
        // Other keys under the same group id.
        let pks: Vec<_> = (0..4).map(|_| ReplicaSecretKey::random(&mut w.rng).public_key()).collect();
        let other_keys = Membership::new(gid, &pks).unwrap();
        // The first three replicas only (n = 3, f = 0).
        let fewer = Membership::new(gid, &real.replicas[..3]).unwrap();
        // The same keys with a smaller f.
        let mut smaller_f = real.clone();
        smaller_f.f = 0;
        let mut reps = w.replicas(0, &[]);
        for m in [other_keys, fewer, smaller_f] {
            let up = build(&mut w.rng, &w.deployers[0], 1, std::slice::from_ref(&m), &[1], &genesis);
            let s = refused(&mut reps, w.keys(0), &up.pieces[0], Refusal::WrongMembership);
            assert!(faults(&s).is_empty());
        }
    }

    /// A piece built on a version code its deployer's chain has moved past
    /// is `Replayed`; the finished piece itself answers with its code.
    #[test]
    fn stale_and_replayed_pieces() {
        let mut w = Deployment::new(23, &[4]);
        let gid = w.gid(0);
        let genesis = w.genesis[0].clone();
        let d1 = w.upgrade(1, &[0], &[1]);
        let d2 = w.upgrade_on(0, 2, &[0], &[1], &d1.trigger);
        // Built on genesis too, but arriving after d1 finished.
        let stale = w.upgrade_on(0, 3, &[0], &[2], &genesis);
        // Built on τ1, arriving after d2 finished.
        let stale2 = w.upgrade_on(0, 4, &[0], &[2], &d1.trigger);
        let mut reps = w.replicas(0, &[]);
        for up in [&d1, &d2] {
            let s = order(&mut reps, w.keys(0), &up.prepare(gid), ORIGIN, Verdict::Accept);
            expect_accepted(&replies(&s, ORIGIN), up.piece(gid));
            let s = order(&mut reps, w.keys(0), &up.commit(), ORIGIN, Verdict::Accept);
            expect_applied(&s, up, gid);
        }
        let _ = refused(&mut reps, w.keys(0), stale.piece(gid), Refusal::Replayed);
        let _ = refused(&mut reps, w.keys(0), stale2.piece(gid), Refusal::Replayed);
        // The replay of d1 itself: its outcome is still in the history, so
        // rule 1 answers with its code; nothing changes.
        let before = states(&reps);
        let s = order(&mut reps, w.keys(0), &d1.prepare(gid), ORIGIN, Verdict::Accept);
        for r in replies(&s, ORIGIN) {
            assert_eq!(r, Reply::Finished(Outcome::Committed, d1.trigger.clone()));
        }
        assert!(effects(&s).is_empty());
        assert_eq!(states(&reps), before);
    }

    /// Once a finished piece has left the bounded history, its replay is
    /// refused by the version chain.
    #[test]
    fn replay_after_the_history_window() {
        let mut w = Deployment::new(24, &[1]);
        let gid = w.gid(0);
        let mut reps = w.replicas(0, &[]);
        let mut prev = w.genesis[0].clone();
        let mut done = Vec::new();
        for seq in 0..(HISTORY as u64 + 2) {
            let up = w.upgrade_on(0, seq, &[0], &[1], &prev);
            let s = order(&mut reps, w.keys(0), &up.prepare(gid), ORIGIN, Verdict::Accept);
            expect_accepted(&replies(&s, ORIGIN), up.piece(gid));
            let s = order(&mut reps, w.keys(0), &up.commit(), ORIGIN, Verdict::Accept);
            expect_applied(&s, &up, gid);
            prev = up.trigger.clone();
            done.push(up);
        }
        assert_eq!(reps[0].outcome(done[0].id()), None, "d1 left the history");
        assert_eq!(reps[0].version(), HISTORY as u64 + 2);
        // d1 was built on genesis: recognizably an old code of the chain.
        let _ = refused(&mut reps, w.keys(0), done[0].piece(gid), Refusal::Replayed);
        // d2 was built on τ1, which the group no longer remembers: it is
        // refused all the same (the classification may differ).
        let before = states(&reps);
        let s = order(&mut reps, w.keys(0), &done[1].prepare(gid), ORIGIN, Verdict::Accept);
        for r in replies(&s, ORIGIN) {
            assert!(matches!(r, Reply::Refused(Refusal::Replayed | Refusal::OutOfOrder)), "{r:?}");
        }
        assert_eq!(states(&reps), before);
    }

    /// A piece built on a predecessor that has not finished here is
    /// `OutOfOrder`, and is taken once the predecessor commits.
    #[test]
    fn piece_ahead_of_its_predecessor() {
        let mut w = Deployment::new(25, &[4]);
        let gid = w.gid(0);
        let d1 = w.upgrade(1, &[0], &[1]);
        let d2 = w.upgrade_on(0, 2, &[0], &[2], &d1.trigger);
        let d2_on_abort = w.upgrade_on(0, 3, &[0], &[3], &d1.cancel);
        let mut reps = w.replicas(0, &[]);
        // d1 not seen at all.
        let _ = refused(&mut reps, w.keys(0), d2.piece(gid), Refusal::OutOfOrder);
        // d1 prepared, not finished.
        let _ = order(&mut reps, w.keys(0), &d1.prepare(gid), ORIGIN, Verdict::Accept);
        let _ = refused(&mut reps, w.keys(0), d2.piece(gid), Refusal::OutOfOrder);
        let _ = refused(&mut reps, w.keys(0), d2_on_abort.piece(gid), Refusal::OutOfOrder);
        let _ = order(&mut reps, w.keys(0), &d1.commit(), ORIGIN, Verdict::Accept);
        // Built on d1's abort, but d1 committed: never current here.
        let s = order(&mut reps, w.keys(0), &d2_on_abort.prepare(gid), ORIGIN, Verdict::Accept);
        for r in replies(&s, ORIGIN) {
            assert!(matches!(r, Reply::Refused(_)), "{r:?}");
        }
        let s = order(&mut reps, w.keys(0), &d2.prepare(gid), ORIGIN, Verdict::Accept);
        expect_accepted(&replies(&s, ORIGIN), d2.piece(gid));
    }

    /// With two deployers, a piece whose previous version code is the other
    /// deployer's (its genesis or its current code) is `WrongChain`.
    #[test]
    fn piece_on_another_deployers_chain() {
        let mut w = Deployment::with_deployers(26, &[4], 2);
        let gid = w.gid(0);
        let (g1, g2) = (w.genesis[0].clone(), w.genesis[1].clone());
        let on_g2 = w.upgrade_on(0, 1, &[0], &[1], &g2);
        let by_2 = w.upgrade_on(1, 2, &[0], &[2], &g2);
        let on_tau2 = w.upgrade_on(0, 3, &[0], &[3], &by_2.trigger);
        let by_2_on_g1 = w.upgrade_on(1, 4, &[0], &[4], &g1);
        let mut reps = w.replicas(0, &[]);
        let _ = refused(&mut reps, w.keys(0), on_g2.piece(gid), Refusal::WrongChain);
        let _ = refused(&mut reps, w.keys(0), by_2_on_g1.piece(gid), Refusal::WrongChain);
        let _ = order(&mut reps, w.keys(0), &by_2.prepare(gid), ORIGIN, Verdict::Accept);
        let s = order(&mut reps, w.keys(0), &by_2.commit(), ORIGIN, Verdict::Accept);
        expect_applied(&s, &by_2, gid);
        assert_eq!(reps[0].version_code(w.deployer_id(1)), Some(&by_2.trigger));
        assert_eq!(reps[0].version_code(w.deployer_id(0)), Some(&g1));
        let _ = refused(&mut reps, w.keys(0), on_tau2.piece(gid), Refusal::WrongChain);
        // Deployer 1's chain is untouched: a piece on g1 is still taken.
        let fine = w.upgrade_on(0, 5, &[0], &[5], &g1);
        let s = order(&mut reps, w.keys(0), &fine.prepare(gid), ORIGIN, Verdict::Accept);
        expect_accepted(&replies(&s, ORIGIN), fine.piece(gid));
    }

    /// With two deployers, a piece ahead of its predecessor on its own
    /// deployer's chain is still `OutOfOrder`: the other deployer's chain
    /// and genesis do not make it `WrongChain`.
    #[test]
    fn piece_ahead_with_two_deployers() {
        let mut w = Deployment::with_deployers(27, &[4], 2);
        let gid = w.gid(0);
        for d in 0..2 {
            let prev = w.genesis[d].clone();
            let first = w.upgrade_on(d, 1, &[0], &[1], &prev);
            let ahead = w.upgrade_on(d, 2, &[0], &[2], &first.trigger);
            let mut reps = w.replicas(0, &[]);
            let _ = refused(&mut reps, w.keys(0), ahead.piece(gid), Refusal::OutOfOrder);
        }
    }
}

// =====================================================================
// 6. Figure 3: conflicting pieces (PROTOCOL.md section 5, rules 1–4)
// =====================================================================

mod conflicts {
    use super::*;

    /// One group of four and a ledger; every piece below is deployer 0's,
    /// built on genesis (none finishes before the others are prepared).
    struct Bench {
        w: Deployment,
        reps: Vec<GroupReplica>,
        ledger: Ledger,
    }

    impl Bench {
        fn new(seed: u8) -> Self {
            let w = Deployment::new(seed, &[4]);
            let reps = w.replicas(0, &[]);
            Self { w, reps, ledger: Ledger::default() }
        }

        fn piece(&mut self, seq: u64, resources: &[u32]) -> Upgrade {
            self.w.upgrade(seq, &[0], resources)
        }

        fn run(&mut self, op: &Operation) -> Vec<Step<GroupEffect>> {
            let steps = self.ledger.order(&mut self.reps, self.w.keys(0), op, Verdict::Accept);
            assert!(faults(&steps).is_empty(), "{:?}", faults(&steps));
            steps
        }

        fn prepare(&mut self, up: &Upgrade) -> Vec<Reply> {
            let gid = self.w.gid(0);
            let steps = self.run(&up.prepare(gid));
            assert!(effects(&steps).is_empty());
            replies(&steps, ORIGIN)
        }

        fn accepted(&mut self, up: &Upgrade) {
            let r = self.prepare(up);
            expect_accepted(&r, up.piece(self.w.gid(0)));
        }

        fn rejected(&mut self, up: &Upgrade) {
            let r = self.prepare(up);
            expect_rejected(&r, up.piece(self.w.gid(0)));
        }

        /// Every replica answers `Conflict` and holds the piece in A; a retry
        /// while still blocked answers the same and changes nothing (the
        /// first call may change state: a new piece joins A).
        fn conflict(&mut self, up: &Upgrade) {
            let r = self.prepare(up);
            assert!(r.iter().all(|r| *r == Reply::Conflict), "{r:?}");
            assert_eq!(self.holds(up), Some(true));
            let before = states(&self.reps);
            let r = self.prepare(up);
            assert!(r.iter().all(|r| *r == Reply::Conflict), "{r:?}");
            assert_eq!(states(&self.reps), before);
        }

        fn commit(&mut self, up: &Upgrade) {
            let s = self.run(&up.commit());
            expect_applied(&s, up, self.w.gid(0));
        }

        fn abort(&mut self, up: &Upgrade) {
            let s = self.run(&up.abort());
            expect_discarded(&s, up);
        }

        /// What every replica says it holds (they must agree).
        fn holds(&self, up: &Upgrade) -> Option<bool> {
            let h = self.reps[0].holds(up.id());
            assert!(self.reps.iter().all(|r| r.holds(up.id()) == h));
            h
        }
    }

    /// (a) d1 ≺ d2, d1 prepared first: d2 is rejected at once.
    #[test]
    fn later_ordered_piece_is_rejected_at_once() {
        let mut b = Bench::new(30);
        let d1 = b.piece(1, &[7]);
        let d2 = b.piece(2, &[7, 8]);
        b.accepted(&d1);
        b.rejected(&d2);
        assert_eq!(b.holds(&d2), Some(false));
        // It stays rejected, whatever happens to d1.
        b.rejected(&d2);
        b.abort(&d1);
        b.rejected(&d2);
        b.abort(&d2);
    }

    /// Equal sequence numbers: the upgrade id breaks the tie.
    #[test]
    fn upgrade_id_breaks_ties() {
        let mut b = Bench::new(31);
        let x = b.piece(5, &[1]);
        let y = b.piece(5, &[1]);
        let (first, second) = if x.header.order < y.header.order { (x, y) } else { (y, x) };
        b.accepted(&first);
        b.rejected(&second);
    }

    /// (b) d2 ≺ d1, d1 released first: d2 is withheld (`Conflict`) until d1
    /// aborts; then a retry releases d2's secret share, and d2 commits.
    #[test]
    fn earlier_ordered_piece_waits_for_the_released_one_to_abort() {
        let mut b = Bench::new(32);
        let d1 = b.piece(2, &[7]);
        let d2 = b.piece(1, &[7]);
        b.accepted(&d1);
        b.conflict(&d2);
        // d1 is still released: retrying it repeats its share.
        b.accepted(&d1);
        b.abort(&d1);
        b.accepted(&d2);
        b.accepted(&d2);
        b.commit(&d2);
    }

    /// (c) If d1 commits instead, withheld d2 moves to C: a retry gets its
    /// `c` share, never its secret share.
    #[test]
    fn withheld_piece_is_cancelled_when_the_released_one_commits() {
        let mut b = Bench::new(33);
        let d1 = b.piece(2, &[7]);
        let d2 = b.piece(1, &[7]);
        b.accepted(&d1);
        b.conflict(&d2);
        b.commit(&d1);
        assert_eq!(b.holds(&d2), Some(false));
        b.rejected(&d2);
        b.rejected(&d2);
        // Its τ does not commit it now.
        let before = states(&b.reps);
        let s = b.run(&d2.commit());
        assert!(effects(&s).is_empty());
        assert_eq!(states(&b.reps), before);
        b.abort(&d2);
    }

    /// (d) A new, earlier-ordered piece cancels withheld later-ordered ones
    /// in the same call (they never had their secret out).
    #[test]
    fn earlier_newcomer_cancels_withheld_pieces() {
        let mut b = Bench::new(34);
        let d1 = b.piece(3, &[7]);
        let d2 = b.piece(2, &[7]);
        let d3 = b.piece(1, &[7]);
        b.accepted(&d1);
        b.conflict(&d2);
        assert_eq!(b.holds(&d2), Some(true));
        // d3 ≺ d2: d2 (withheld, conflicting) is cancelled right away; d3
        // itself is withheld behind released d1.
        b.conflict(&d3);
        assert_eq!(b.holds(&d2), Some(false));
        b.rejected(&d2);
        b.abort(&d1);
        b.accepted(&d3);
        b.rejected(&d2);
        b.commit(&d3);
        b.rejected(&d2);
    }

    /// A newcomer with nothing released in its way is released in the same
    /// call that cancels the withheld later-ordered pieces.
    #[test]
    fn newcomer_cancelling_and_released_in_one_call() {
        let mut b = Bench::new(35);
        let d1 = b.piece(3, &[1]);
        let d2 = b.piece(2, &[1, 2]);
        let d3 = b.piece(1, &[2]);
        b.accepted(&d1);
        b.conflict(&d2);
        // d3 conflicts with d2 only; d2 is withheld, so d3 cancels it and
        // is released at once.
        b.accepted(&d3);
        assert_eq!(b.holds(&d2), Some(false));
        b.rejected(&d2);
        b.commit(&d1);
        b.commit(&d3);
    }

    /// (e) Pieces whose resources do not meet are accepted concurrently;
    /// pieces with no resources conflict with nothing.
    #[test]
    fn non_conflicting_pieces_are_accepted_together() {
        let mut b = Bench::new(36);
        let d1 = b.piece(2, &[1, 2]);
        let d2 = b.piece(1, &[3, 4]);
        let d3 = b.piece(3, &[]);
        let d4 = b.piece(0, &[]);
        for up in [&d1, &d2, &d3, &d4] {
            b.accepted(up);
        }
        for up in [&d1, &d2, &d3, &d4] {
            b.accepted(up);
        }
        b.commit(&d2);
        b.commit(&d1);
        b.abort(&d3);
        b.commit(&d4);
        assert!(b.reps.iter().all(|r| r.version() == 3));
    }

    /// A piece rejected by the application sits in C, outside A: it blocks
    /// and rejects nothing.
    #[test]
    fn rejected_piece_blocks_nothing() {
        let mut b = Bench::new(37);
        let d1 = b.piece(1, &[7]);
        let d2 = b.piece(2, &[7]);
        let gid = b.w.gid(0);
        let s = b.ledger.order(&mut b.reps, b.w.keys(0), &d1.prepare(gid), Verdict::Reject);
        expect_rejected(&replies(&s, ORIGIN), d1.piece(gid));
        b.accepted(&d2);
        b.commit(&d2);
        b.rejected(&d1);
    }

    /// An aborted released piece unblocks only the pieces it blocked; a
    /// second released piece still blocks.
    #[test]
    fn withheld_until_every_conflicting_release_is_gone() {
        let mut b = Bench::new(38);
        let r1 = b.piece(5, &[1]);
        let r2 = b.piece(6, &[2]);
        let w = b.piece(1, &[1, 2]);
        b.accepted(&r1);
        b.accepted(&r2);
        b.conflict(&w);
        b.abort(&r1);
        b.conflict(&w);
        b.abort(&r2);
        b.accepted(&w);
        b.commit(&w);
    }

    /// Many interleavings of three mutually conflicting pieces: never both
    /// kinds per replica (the ledger), and at most one piece released at
    /// a time (a second `Accepted` is only ever a repeat).
    #[test]
    fn interleavings_never_release_both_or_two_conflicting() {
        // Operations: 0..3 prepare piece i; 3..6 commit piece i - 3 if it
        // was released, else abort it if it has its c share out.
        let (mut commits, mut aborts, mut conflicts) = (0, 0, 0);
        for seed in 0..40u8 {
            let mut b = Bench::new(100 + seed);
            let ups: Vec<Upgrade> = (0..3).map(|i| b.piece([2, 0, 1][i], &[9])).collect();
            let mut rng = ChaCha20Rng::from_seed([seed; 32]);
            let mut released: HashSet<usize> = HashSet::new();
            let mut finished: HashSet<usize> = HashSet::new();
            for _ in 0..30 {
                let x = rand_core::Rng::next_u32(&mut rng) as usize % 6;
                let i = x % 3;
                if finished.contains(&i) {
                    continue;
                }
                if x < 3 {
                    let r = b.prepare(&ups[i]);
                    let first = r[0].clone();
                    assert!(r.iter().all(|x| std::mem::discriminant(x) == std::mem::discriminant(&first)));
                    match first {
                        Reply::Accepted(_) => _ = released.insert(i),
                        Reply::Conflict => conflicts += 1,
                        _ => {}
                    }
                    let live: Vec<_> = released.iter().filter(|j| !finished.contains(j)).collect();
                    assert!(live.len() <= 1, "seed {seed}: two conflicting pieces released: {live:?}");
                } else if released.contains(&i) {
                    b.commit(&ups[i]);
                    finished.insert(i);
                    commits += 1;
                } else if b.holds(&ups[i]) == Some(false) {
                    b.abort(&ups[i]);
                    finished.insert(i);
                    aborts += 1;
                }
            }
        }
        assert!(commits > 10 && aborts > 10 && conflicts > 10, "{commits} {aborts} {conflicts}");
    }

    /// PROTOCOL.md section 5's deadlock: U0 ≺ U1 over groups A and B, U1
    /// released at A and U0 released at B. Rule 3 rejects U1 at B, its abort
    /// unblocks U0 at A, and U0 commits everywhere.
    #[test]
    fn crossed_releases_across_two_groups_resolve() {
        let mut w = Deployment::new(39, &[4, 4]);
        let u0 = w.upgrade(1, &[0, 1], &[5]);
        let u1 = w.upgrade(2, &[0, 1], &[5]);
        let (a, bb) = (w.gid(0), w.gid(1));
        let mut ra = w.replicas(0, &[]);
        let mut rb = w.replicas(1, &[]);
        let mut ledger = Ledger::default();
        let s = ledger.order(&mut ra, w.keys(0), &u1.prepare(a), Verdict::Accept);
        expect_accepted(&replies(&s, ORIGIN), u1.piece(a));
        let s = ledger.order(&mut rb, w.keys(1), &u0.prepare(bb), Verdict::Accept);
        let u0_b = expect_accepted(&replies(&s, ORIGIN), u0.piece(bb));
        let s = ledger.order(&mut ra, w.keys(0), &u0.prepare(a), Verdict::Accept);
        assert!(replies(&s, ORIGIN).iter().all(|r| *r == Reply::Conflict));
        let s = ledger.order(&mut rb, w.keys(1), &u1.prepare(bb), Verdict::Accept);
        let c1 = expect_rejected(&replies(&s, ORIGIN), u1.piece(bb));
        assert_eq!(rebuild(&c1[..2]), u1.cancel);
        for (reps, g) in [(&mut ra, 0), (&mut rb, 1)] {
            let s = ledger.order(reps, w.keys(g), &u1.abort(), Verdict::Accept);
            expect_discarded(&s, &u1);
        }
        let s = ledger.order(&mut ra, w.keys(0), &u0.prepare(a), Verdict::Accept);
        let u0_a = expect_accepted(&replies(&s, ORIGIN), u0.piece(a));
        let mut tau = rebuild(&u0_a[1..3]);
        tau.xor_assign(&rebuild(&u0_b[2..4]));
        assert_eq!(tau, u0.trigger);
        for (reps, g, gid) in [(&mut ra, 0, a), (&mut rb, 1, bb)] {
            let s = ledger.order(reps, w.keys(g), &u0.commit_with(&tau), Verdict::Accept);
            expect_applied(&s, &u0, gid);
        }
    }
}

// =====================================================================
// 7. Figure 2: codes piggybacked on application requests and responses
// =====================================================================

mod figure2 {
    use super::*;

    /// Three mutual neighbors A, B, C; the upgrade covers A and B, is
    /// prepared at both and committed at A.
    struct Triangle {
        w: Deployment,
        up: Upgrade,
        a: Vec<GroupReplica>,
        b: Vec<GroupReplica>,
        c: Vec<GroupReplica>,
    }

    fn triangle(seed: u8, outcome: Outcome) -> Triangle {
        let mut w = Deployment::new(seed, &[4, 4, 4]);
        let up = w.upgrade(1, &[0, 1], &[1]);
        let mut a = w.replicas(0, &[1, 2]);
        let mut b = w.replicas(1, &[0, 2]);
        let c = w.replicas(2, &[0, 1]);
        let _ = order(&mut a, w.keys(0), &up.prepare(w.gid(0)), ORIGIN, Verdict::Accept);
        let _ = order(&mut b, w.keys(1), &up.prepare(w.gid(1)), ORIGIN, Verdict::Accept);
        let op = match outcome {
            Outcome::Committed => up.commit(),
            Outcome::Aborted => up.abort(),
        };
        let _ = order(&mut a, w.keys(0), &op, ORIGIN, Verdict::Accept);
        Triangle { w, up, a, b, c }
    }

    fn attachment(items: &[Finish]) -> Attachment {
        let mut att = Attachment::new();
        for d in items {
            att.push(d.clone()).unwrap();
        }
        att
    }

    /// After a commit, the code is queued once for every neighbor; every
    /// replica of the group queues the same (it is deterministic).
    #[test]
    fn take_attachment_returns_the_code_once() {
        let mut t = triangle(40, Outcome::Committed);
        let (gb, gc) = (t.w.gid(1), t.w.gid(2));
        let want = attachment(&[t.up.diffused(Outcome::Committed)]);
        for r in &mut t.a {
            assert_eq!(r.take_attachment(gb), want);
            assert_eq!(r.take_attachment(gb), Attachment::new());
            assert_eq!(r.take_attachment(gc), want);
            assert_eq!(r.take_attachment(gc), Attachment::new());
            // Not a neighbor: nothing.
            assert_eq!(r.take_attachment(GroupId(999)), Attachment::new());
        }
    }

    /// A request carrying the code commits the prepared piece at the callee
    /// before the request executes; the callee forwards the code to its
    /// other neighbors, not back to the sender.
    #[test]
    fn on_request_with_the_code_commits() {
        let mut t = triangle(41, Outcome::Committed);
        let (ga, gb, gc) = (t.w.gid(0), t.w.gid(1), t.w.gid(2));
        let att = t.a[0].take_attachment(gb);
        let steps: Vec<_> = t.b.iter_mut().map(|r| r.on_request(T0, ga, &att)).collect();
        assert!(faults(&steps).is_empty());
        expect_applied(&steps, &t.up, gb);
        for r in &mut t.b {
            assert_eq!(r.outcome(t.up.id()), Some(Outcome::Committed));
            assert_eq!(r.version(), 1);
            assert_eq!(r.take_attachment(ga), Attachment::new(), "echoed back to the sender");
            assert_eq!(r.take_attachment(gc), attachment(&[t.up.diffused(Outcome::Committed)]));
        }
        // The same request again (or any later one) changes nothing.
        let before = states(&t.b);
        let steps: Vec<_> = t.b.iter_mut().map(|r| r.on_request(T0, ga, &att)).collect();
        assert!(effects(&steps).is_empty());
        assert_eq!(states(&t.b), before);
    }

    /// A group that holds no piece of the upgrade ignores its code; a code
    /// that does not match the digest is ignored too.
    #[test]
    fn on_request_ignores_unknown_and_wrong_codes() {
        let mut t = triangle(42, Outcome::Committed);
        let (ga, gc) = (t.w.gid(0), t.w.gid(2));
        let att = t.a[0].take_attachment(gc);
        let before = states(&t.c);
        let steps: Vec<_> = t.c.iter_mut().map(|r| r.on_request(T0, ga, &att)).collect();
        assert!(effects(&steps).is_empty());
        assert_eq!(states(&t.c), before);

        let mut bad = t.up.diffused(Outcome::Committed);
        bad.code = corrupt(&bad.code);
        let mut swapped = t.up.diffused(Outcome::Aborted);
        swapped.code = t.up.trigger.clone();
        let att = attachment(&[bad, swapped]);
        let before = states(&t.b);
        let steps: Vec<_> = t.b.iter_mut().map(|r| r.on_request(T0, ga, &att)).collect();
        assert!(effects(&steps).is_empty());
        let steps2: Vec<_> = t.b.iter_mut().map(|r| r.on_response(T0, TxnId(1), ga, &att)).collect();
        assert!(effects(&steps2).is_empty());
        assert_eq!(states(&t.b), before);
    }

    /// A response carrying a commit for a piece held here: the transaction
    /// is aborted, the piece committed, the transaction restarted, in that
    /// order.
    #[test]
    fn on_response_aborts_commits_restarts() {
        let mut t = triangle(43, Outcome::Committed);
        let (ga, gb) = (t.w.gid(0), t.w.gid(1));
        let att = t.a[1].take_attachment(gb);
        for (i, r) in t.b.iter_mut().enumerate() {
            let s = r.on_response(T0, TxnId(70 + i as u64), ga, &att);
            assert_eq!(s.effects.len(), 3, "{:?}", s.effects);
            assert_eq!(s.effects[0], GroupEffect::AbortTransaction(TxnId(70 + i as u64)));
            assert_eq!(s.effects[2], GroupEffect::RestartTransaction(TxnId(70 + i as u64)));
            let mid = Step { effects: heapless::Vec::from_slice(&s.effects[1..2]).unwrap(), ..Step::new() };
            expect_applied(&[mid], &t.up, gb);
            // Nothing new on the next response: the transaction goes on.
            let again = r.on_response(T0, TxnId(99), ga, &att);
            assert!(again.effects.is_empty());
        }
    }

    /// An abort code in a response discards the piece; the transaction saw
    /// no new version, so it is neither aborted nor restarted.
    #[test]
    fn on_response_with_an_abort_only_discards() {
        let mut t = triangle(44, Outcome::Aborted);
        let (ga, gb) = (t.w.gid(0), t.w.gid(1));
        let att = t.a[0].take_attachment(gb);
        assert_eq!(att, attachment(&[t.up.diffused(Outcome::Aborted)]));
        let steps: Vec<_> = t.b.iter_mut().map(|r| r.on_response(T0, TxnId(5), ga, &att)).collect();
        expect_discarded(&steps, &t.up);
        assert!(t.b.iter().all(|r| r.outcome(t.up.id()) == Some(Outcome::Aborted)));
    }
}

// =====================================================================
// 8. Proactive diffusion (PROTOCOL.md section 4, "proactively")
// =====================================================================

mod diffusion {
    use super::*;

    /// Groups A and B (n = 4, f = 1), neighbors; the upgrade covers both,
    /// is prepared at both and finished at A at T0.
    struct Pair {
        w: Deployment,
        up: Upgrade,
        a: Vec<GroupReplica>,
        b: Vec<GroupReplica>,
        commit_steps: Vec<Step<GroupEffect>>,
    }

    fn pair(seed: u8, outcome: Outcome, proactive: bool) -> Pair {
        let mut w = Deployment::new(seed, &[4, 4]);
        let up = w.upgrade(1, &[0, 1], &[1]);
        let mut cfg_a = w.config(0, &[1]);
        cfg_a.proactive = proactive;
        let mut a: Vec<_> = (0..4).map(|i| GroupReplica::new(cfg_a.clone(), i).unwrap()).collect();
        let mut b = w.replicas(1, &[0]);
        let _ = order(&mut a, w.keys(0), &up.prepare(w.gid(0)), ORIGIN, Verdict::Accept);
        let _ = order(&mut b, w.keys(1), &up.prepare(w.gid(1)), ORIGIN, Verdict::Accept);
        let op = match outcome {
            Outcome::Committed => up.commit(),
            Outcome::Aborted => up.abort(),
        };
        let commit_steps = order(&mut a, w.keys(0), &op, ORIGIN, Verdict::Accept);
        Pair { w, up, a, b, commit_steps }
    }

    fn submit(p: &Pair, outcome: Outcome) -> Message {
        Message::Submit(Finish::new(p.up.id(), outcome, p.up.code(outcome).clone()))
    }

    /// B's replicas' answers to a diffusion submitted by A's replica `i`.
    fn acks_from_b(p: &mut Pair, i: u8, outcome: Outcome) -> Vec<(Peer, Message)> {
        let origin = Peer::Replica { group: p.w.gid(0), index: i };
        let op = match outcome {
            Outcome::Committed => p.up.commit(),
            Outcome::Aborted => p.up.abort(),
        };
        let steps = order(&mut p.b, p.w.keys(1), &op, origin, Verdict::Accept);
        answers(&steps, origin)
            .into_iter()
            .map(|a| (Peer::Replica { group: a.group, index: a.replica }, Message::Answer(a)))
            .collect()
    }

    /// The first f + 1 replicas diffuse, with doubling retries capped at 16
    /// times the first interval, until f + 1 distinct replicas of the
    /// neighbor acknowledge; the others never diffuse.
    #[test]
    fn retries_with_backoff_until_f_plus_1_acks() {
        let mut p = pair(50, Outcome::Committed, true);
        let gb = p.w.gid(1);
        for (i, s) in p.commit_steps.iter().enumerate() {
            let want = if i <= 1 { Some(T0) } else { None };
            assert_eq!(s.deadline, want, "replica {i}");
            assert_eq!(p.a[i].deadline(), want, "replica {i}");
        }
        let expected =
            vec![bft_upgrade::step::Outgoing { to: Peer::Group(gb), message: submit(&p, Outcome::Committed) }];
        // Replica 0: sends at T0, then after 100, 200, 400, 800, 1600, 1600.
        let r0 = &mut p.a[0];
        let mut now = T0;
        let mut intervals = Vec::new();
        for _ in 0..7 {
            let s = r0.handle_timeout(now);
            assert_eq!(s.messages.to_vec(), expected);
            assert!(s.effects.is_empty() && s.faults.is_empty());
            let next = s.deadline.expect("still diffusing");
            assert!(next > now, "a reached deadline must move forward");
            assert_eq!(r0.deadline(), Some(next));
            // Before the deadline: nothing is resent.
            let early = r0.handle_timeout(Instant(next.0 - 1));
            assert!(early.messages.is_empty());
            assert_eq!(early.deadline, Some(next));
            intervals.push(next.0 - now.0);
            now = next;
        }
        assert_eq!(intervals, [100, 200, 400, 800, 1600, 1600, 1600]);
        // Replicas 2 and 3 (index > f) never diffuse.
        for r in &mut p.a[2..] {
            for t in [T0, T0.after(100), T0.after(10_000)] {
                let s = r.handle_timeout(t);
                assert!(s.messages.is_empty() && s.deadline.is_none());
            }
        }
        // Acks: one from B's replica 0 (twice: duplicates count once), then
        // one from replica 2 makes f + 1 = 2 distinct: retries stop.
        let acks = acks_from_b(&mut p, 0, Outcome::Committed);
        let r0 = &mut p.a[0];
        for _ in 0..2 {
            let s = r0.handle_message(now, acks[0].0, &acks[0].1);
            assert!(s.faults.is_empty(), "{:?}", s.faults);
            assert!(s.deadline.is_some());
        }
        let s = r0.handle_timeout(now.after(1600));
        assert_eq!(s.messages.to_vec(), expected, "one ack is not enough");
        let s = r0.handle_message(now, acks[2].0, &acks[2].1);
        assert!(s.faults.is_empty(), "{:?}", s.faults);
        assert_eq!(s.deadline, None);
        assert_eq!(r0.deadline(), None);
        let s = r0.handle_timeout(now.after(100_000));
        assert!(s.messages.is_empty() && s.deadline.is_none());
        // Replica 1 still diffuses until it hears acks of its own.
        let s = p.a[1].handle_timeout(T0);
        assert_eq!(s.messages.to_vec(), expected);
    }

    /// The diffused commit, ordered at the neighbor, commits it there: the
    /// acknowledgements are B's `Finished` answers.
    #[test]
    fn diffused_commit_commits_the_neighbor() {
        let mut p = pair(51, Outcome::Committed, true);
        let s = p.a[1].handle_timeout(T0);
        let Message::Submit(op) = &s.messages[0].message else { panic!("{:?}", s.messages) };
        let origin = Peer::Replica { group: p.w.gid(0), index: 1 };
        let steps = order(&mut p.b, p.w.keys(1), &Operation::from(op.clone()), origin, Verdict::Accept);
        expect_applied(&steps, &p.up, p.w.gid(1));
        let acks = answers(&steps, origin);
        for a in &acks {
            assert_eq!(a.reply, Reply::Finished(Outcome::Committed, p.up.trigger.clone()));
        }
        for a in &acks[..2] {
            let from = Peer::Replica { group: a.group, index: a.replica };
            let st = p.a[1].handle_message(T0, from, &Message::Answer(a.clone()));
            assert!(st.faults.is_empty());
        }
        assert_eq!(p.a[1].deadline(), None);
    }

    /// Aborts diffuse the same way, with `AbortInstall(c)`.
    #[test]
    fn aborts_diffuse_too() {
        let mut p = pair(52, Outcome::Aborted, true);
        let s = p.a[0].handle_timeout(T0);
        assert_eq!(s.messages.len(), 1);
        assert_eq!(s.messages[0].to, Peer::Group(p.w.gid(1)));
        assert_eq!(s.messages[0].message, submit(&p, Outcome::Aborted));
        let acks = acks_from_b(&mut p, 0, Outcome::Aborted);
        for (from, m) in &acks[..2] {
            let _ = p.a[0].handle_message(T0, *from, m);
        }
        assert_eq!(p.a[0].deadline(), None);
    }

    /// With `proactive` off, nothing is sent proactively; piggybacking
    /// still carries the code.
    #[test]
    fn proactive_off_only_piggybacks() {
        let mut p = pair(53, Outcome::Committed, false);
        let gb = p.w.gid(1);
        for (s, r) in p.commit_steps.iter().zip(&mut p.a) {
            assert_eq!(s.deadline, None);
            assert!(r.handle_timeout(T0.after(10_000)).messages.is_empty());
            assert_eq!(r.take_attachment(gb).len(), 1);
        }
    }

    /// Acks that are not acks: from a group that is not a neighbor, from a
    /// peer other than the answer's replica, for an upgrade not being
    /// diffused. Each is `Unsolicited` and counts for nothing.
    #[test]
    fn bogus_acks_are_unsolicited() {
        let mut p = pair(54, Outcome::Committed, true);
        let acks = acks_from_b(&mut p, 0, Outcome::Committed);
        let Message::Answer(a0) = acks[0].1.clone() else { unreachable!() };
        let r0 = &mut p.a[0];
        let stranger = Peer::Replica { group: GroupId(4242), index: 0 };
        let mut from_stranger = a0.clone();
        from_stranger.group = GroupId(4242);
        let mut other_upgrade = a0.clone();
        other_upgrade.upgrade = UpgradeId([0xEE; 16]);
        let impersonated = Peer::Replica { group: a0.group, index: 3 };
        for (from, a) in [
            (stranger, from_stranger),
            (impersonated, a0.clone()),
            (acks[1].0, {
                let mut x = other_upgrade.clone();
                x.replica = 1;
                x
            }),
            (Peer::Installer(3), a0.clone()),
        ] {
            let s = r0.handle_message(T0, from, &Message::Answer(a));
            assert_eq!(s.faults.len(), 1, "{from:?}");
            assert_eq!(s.faults[0].kind, FaultKind::Unsolicited);
            assert_eq!(s.faults[0].peer, from);
        }
        // None of them counted: two genuine acks are still needed.
        let s = r0.handle_message(T0, acks[1].0, &acks[1].1);
        assert!(s.deadline.is_some());
        let s = r0.handle_message(T0, acks[3].0, &acks[3].1);
        assert_eq!(s.deadline, None);
    }

    /// Every replica of the neighbor answers the diffusing replica, and the
    /// transport may duplicate or delay answers, so answers from correct
    /// replicas keep arriving after f + 1 of them retired the diffusion.
    /// They are not misbehaviour and must not be reported as faults.
    #[test]
    fn late_acks_after_retirement_are_not_faults() {
        let mut p = pair(55, Outcome::Committed, true);
        let acks = acks_from_b(&mut p, 0, Outcome::Committed);
        let r0 = &mut p.a[0];
        let mut all = Vec::new();
        for (from, m) in acks.iter().chain(acks.iter()) {
            all.extend(r0.handle_message(T0, *from, m).faults);
        }
        assert_eq!(r0.deadline(), None);
        assert!(all.is_empty(), "correct replicas reported: {all:?}");
    }
}

// =====================================================================
// 9. The installer, driven by hand
// =====================================================================

mod installer {
    use super::*;

    fn answer(group: GroupId, replica: u8, up: &Upgrade, reply: Reply) -> Answer {
        Answer { upgrade: up.id(), group, replica, reply }
    }

    fn from(group: GroupId, index: u8) -> Peer {
        Peer::Replica { group, index }
    }

    fn new_installer(w: &Deployment, up: &Upgrade, groups: &[usize], finish_all: bool) -> DefaultInstaller {
        DefaultInstaller::new(1, up.header.clone(), &installer_groups(w, groups), opts(finish_all)).unwrap()
    }

    /// Groups may come in any order (the installer sorts them to find an
    /// answer's group by binary search); a group listed twice is misuse.
    #[test]
    fn groups_in_any_order_but_once() {
        let mut w = Deployment::new(61, &[4, 4, 4, 4, 4]);
        let all = [0, 1, 2, 3, 4];
        let up = w.upgrade(1, &all, &[1]);
        let mut groups = installer_groups(&w, &all);
        groups.reverse();
        groups.swap(1, 3);
        let inst = DefaultInstaller::new(1, up.header.clone(), &groups, opts(false)).unwrap();
        for &g in &all {
            assert_eq!(inst.progress(w.gid(g)), Some(GroupProgress::Preparing));
        }
        assert_eq!(inst.progress(GroupId(7)), None);
        let mut twice = groups.clone();
        twice[4] = twice[0];
        assert_eq!(
            DefaultInstaller::new(1, up.header.clone(), &twice, opts(false)).err(),
            Some(MisuseError::BadArgument)
        );
    }

    /// `start` (and the sweeps it asks for at once) yields one
    /// `SendPrepare` per group, at most `MAX_STEP_EFFECTS` per step; f + 1
    /// valid shares from every group decide Committed, and the next sweep
    /// submits `CommitInstall(τ)` to one group; f + 1 `Finished` answers
    /// from it make the installer done.
    #[test]
    fn prepares_every_group_then_commits() {
        let sizes = [4, 1, 4, 1, 4, 1, 4, 1, 7, 1, 4];
        let mut w = Deployment::new(60, &sizes);
        let all: Vec<usize> = (0..sizes.len()).collect();
        let up = w.upgrade(1, &all, &[1]);
        let mut inst = new_installer(&w, &up, &all, false);
        assert_eq!(inst.deadline(), Some(Instant(0)));
        let mut asked = Vec::new();
        let mut step = inst.start(T0);
        let mut calls = 1;
        loop {
            assert!(step.messages.is_empty() && step.faults.is_empty());
            assert!(step.effects.len() <= MAX_STEP_EFFECTS);
            for e in &step.effects {
                let InstallerEffect::SendPrepare { group } = e else { panic!("{e:?}") };
                asked.push(*group);
            }
            if step.deadline != Some(T0) {
                break;
            }
            step = inst.handle_timeout(T0);
            calls += 1;
        }
        assert!(calls >= 2, "{} groups fit one step?", sizes.len());
        assert_eq!(step.deadline, Some(T0.after(RETRY)));
        let mut want: Vec<GroupId> = all.iter().map(|&g| w.gid(g)).collect();
        asked.sort();
        want.sort();
        assert_eq!(asked, want);

        let mut groups: Vec<Vec<GroupReplica>> = all.iter().map(|&g| w.replicas(g, &[])).collect();
        let mut decided = 0;
        for (g, reps) in groups.iter_mut().enumerate() {
            let gid = w.gid(g);
            assert_eq!(inst.progress(gid), Some(GroupProgress::Preparing));
            let steps = order(reps, w.keys(g), &up.prepare(gid), inst.peer(), Verdict::Accept);
            let out = feed(&mut inst, T0, &steps, up.piece(gid));
            assert!(faults(&out).is_empty(), "{:?}", faults(&out));
            for e in effects(&out) {
                assert_eq!(e, InstallerEffect::Decided(Outcome::Committed));
                decided += 1;
            }
            assert_eq!(inst.progress(gid), Some(GroupProgress::Accepted));
            if g + 1 < sizes.len() {
                assert_eq!(decided, 0);
                assert_eq!(inst.decided(), None);
                if g == 4 {
                    // A sweep now re-asks only the groups still preparing.
                    let mut resent = Vec::new();
                    let mut s = inst.handle_timeout(T0.after(RETRY));
                    loop {
                        resent.extend(s.effects.iter().cloned());
                        if s.deadline != Some(T0.after(RETRY)) {
                            break;
                        }
                        s = inst.handle_timeout(T0.after(RETRY));
                    }
                    let want: Vec<_> =
                        (5..sizes.len()).map(|g| InstallerEffect::SendPrepare { group: w.gid(g) }).collect();
                    assert_eq!(resent, want);
                }
            } else {
                assert_eq!(out.last().unwrap().deadline, Some(T0), "the commit goes out at once");
            }
        }
        assert_eq!(decided, 1);
        assert_eq!(inst.decided(), Some((Outcome::Committed, &up.trigger)));

        let s = inst.handle_timeout(T0);
        assert!(s.effects.is_empty());
        assert_eq!(s.messages.len(), 1, "{:?}", s.messages);
        let Peer::Group(target) = s.messages[0].to else { panic!("{:?}", s.messages[0].to) };
        assert_eq!(
            s.messages[0].message,
            Message::Submit(Finish { outcome: Outcome::Committed, upgrade: up.id(), code: up.trigger.clone() })
        );
        let first = all.iter().position(|&g| w.gid(g) == target).expect("a group of the upgrade");
        // Done only once every group acknowledged (diffusion, or the
        // installer itself after the grace sweeps, reaches the others).
        let rest = all.iter().filter(|&&g| g != first);
        for (i, &g) in std::iter::once(&first).chain(rest).enumerate() {
            let gid = w.gid(g);
            let steps = order(&mut groups[g], w.keys(g), &up.commit(), inst.peer(), Verdict::Accept);
            expect_applied(&steps, &up, gid);
            let out = feed(&mut inst, T0, &steps, up.piece(gid));
            assert_eq!(inst.progress(gid), Some(GroupProgress::Finished));
            if i + 1 < all.len() {
                assert!(effects(&out).is_empty() && !inst.is_done(), "done before group {g} finished");
            } else {
                assert_eq!(effects(&out), vec![InstallerEffect::Done]);
            }
        }
        assert!(inst.is_done());
        assert_eq!(inst.deadline(), None);
    }

    /// Groups acknowledging the commit in any order, the last slot first
    /// and the first slot last, across a restore: done exactly when every
    /// group has finished (the installer keeps only a hint of where the
    /// finished slots end, not stored).
    #[test]
    fn done_after_the_last_group_whatever_the_order_and_restores() {
        let sizes = [4, 1, 4, 7, 1, 4];
        let mut w = Deployment::new(61, &sizes);
        let all: Vec<usize> = (0..sizes.len()).collect();
        let up = w.upgrade(1, &all, &[1]);
        let mut inst = new_installer(&w, &up, &all, false);
        let mut step = inst.start(T0);
        while step.deadline == Some(T0) {
            step = inst.handle_timeout(T0);
        }
        let mut groups: Vec<Vec<GroupReplica>> = all.iter().map(|&g| w.replicas(g, &[])).collect();
        for (g, reps) in groups.iter_mut().enumerate() {
            let gid = w.gid(g);
            let steps = order(reps, w.keys(g), &up.prepare(gid), inst.peer(), Verdict::Accept);
            feed(&mut inst, T0, &steps, up.piece(gid));
        }
        assert_eq!(inst.decided(), Some((Outcome::Committed, &up.trigger)));
        // Slots are in group order: finish from the last slot to the first.
        let mut by_slot = all.clone();
        by_slot.sort_by_key(|&g| w.gid(g));
        for (i, &g) in by_slot.iter().rev().enumerate() {
            if i == 2 {
                let restored: DefaultInstaller = bft_upgrade::wire::decode(&bytes(&inst)).expect("own state");
                inst = restored;
            }
            let gid = w.gid(g);
            let steps = order(&mut groups[g], w.keys(g), &up.commit(), inst.peer(), Verdict::Accept);
            let out = feed(&mut inst, T0, &steps, up.piece(gid));
            assert_eq!(inst.progress(gid), Some(GroupProgress::Finished));
            if i + 1 < all.len() {
                assert!(effects(&out).is_empty() && !inst.is_done(), "done before slot {i} from the end finished");
            } else {
                assert_eq!(effects(&out), vec![InstallerEffect::Done]);
            }
        }
        assert!(inst.is_done());
    }

    /// A rebuilt `s_g` (guardian custody's answer) counts once f + 1
    /// replicas sent the same value: one replica's value, wrong or right,
    /// does not, and neither do two different values.
    #[test]
    fn rebuilt_secret_needs_f_plus_one_senders() {
        let mut w = Deployment::new(63, &[4]);
        let set = super::liveness::guardian_set(&mut w, 4);
        let up = super::liveness::build_guarded(&mut w, 0, 1, &[1], &set);
        let mut inst = new_installer(&w, &up, &[0], false);
        let _ = inst.start(T0);
        let gid = w.gid(0);
        let piece = up.piece(gid);
        // One group: its s_g is τ.
        let s_g = up.trigger.clone();
        let send = |inst: &mut DefaultInstaller, replica: u8, c: Code| {
            let a = answer(gid, replica, &up, Reply::Code(ShareKind::Secret, c));
            inst.handle_answer(T0, from(gid, replica), &a, piece).unwrap()
        };
        let _ = send(&mut inst, 0, corrupt(&s_g));
        let _ = send(&mut inst, 1, s_g.clone());
        let _ = send(&mut inst, 0, corrupt(&s_g));
        assert_eq!(inst.progress(gid), Some(GroupProgress::Preparing), "f values, or two different");
        let _ = send(&mut inst, 2, s_g.clone());
        assert_eq!(inst.progress(gid), Some(GroupProgress::Accepted));
        assert_eq!(inst.decided(), Some((Outcome::Committed, &up.trigger)));
        // In replica custody a rebuilt code is no answer: a fault.
        let mut w = Deployment::new(64, &[4]);
        let up = w.upgrade(1, &[0], &[1]);
        let mut inst = new_installer(&w, &up, &[0], false);
        let gid = w.gid(0);
        let a = answer(gid, 0, &up, Reply::Code(ShareKind::Secret, up.trigger.clone()));
        let s = inst.handle_answer(T0, from(gid, 0), &a, up.piece(gid)).unwrap();
        assert_eq!(s.faults.iter().map(|f| f.kind).collect::<Vec<_>>(), vec![FaultKind::Unsolicited]);
    }

    /// After the outcome, `Refused(Replayed)` from f + 1 replicas of a group
    /// means the group is past the piece: it counts as finished (and the
    /// installer is done once every group is); f such refusals, or
    /// `OutOfOrder`, do not.
    #[test]
    fn replayed_after_the_outcome_counts_as_finished() {
        let mut w = Deployment::new(62, &[4, 4]);
        let up = w.upgrade(1, &[0, 1], &[1]);
        let mut inst = new_installer(&w, &up, &[0, 1], false);
        let _ = inst.start(T0);
        for g in 0..2 {
            let gid = w.gid(g);
            let mut reps = w.replicas(g, &[]);
            let steps = order(&mut reps, w.keys(g), &up.prepare(gid), inst.peer(), Verdict::Accept);
            let _ = feed(&mut inst, T0, &steps, up.piece(gid));
        }
        assert_eq!(inst.decided(), Some((Outcome::Committed, &up.trigger)));
        let g0 = w.gid(0);
        let piece = up.piece(g0);
        let refuse = |inst: &mut DefaultInstaller, replica: u8, why: Refusal| {
            let a = answer(g0, replica, &up, Reply::Refused(why));
            inst.handle_answer(T0, from(g0, replica), &a, piece).unwrap()
        };
        let s = refuse(&mut inst, 0, Refusal::OutOfOrder);
        assert!(s.effects.is_empty() && !inst.is_done());
        let s = refuse(&mut inst, 1, Refusal::Replayed);
        assert!(s.effects.is_empty() && !inst.is_done(), "f = 1 refusals are not enough");
        let s = refuse(&mut inst, 2, Refusal::Replayed);
        assert!(s.effects.is_empty() && !inst.is_done(), "done only once every group finished");
        assert_eq!(inst.progress(g0), Some(GroupProgress::Finished));
        let g1 = w.gid(1);
        for r in 0..2u8 {
            let a = answer(g1, r, &up, Reply::Refused(Refusal::Replayed));
            let s = inst.handle_answer(T0, from(g1, r), &a, up.piece(g1)).unwrap();
            assert_eq!(s.effects.is_empty(), r == 0);
        }
        assert!(inst.is_done());
    }

    /// Forged shares, a share under another replica's index, a replica
    /// releasing both kinds, an impersonated answer: each is reported and
    /// none stops the installer.
    #[test]
    fn misbehaving_replicas_are_reported_and_survived() {
        let mut w = Deployment::new(61, &[4, 4]);
        let up = w.upgrade(1, &[0, 1], &[1]);
        let mut inst = new_installer(&w, &up, &[0, 1], false);
        let _ = inst.start(T0);
        let g0 = w.gid(0);
        let piece = up.piece(g0).clone();
        let opened: Vec<_> = (0..4).map(|i| piece.open_for(i, &w.keys(0)[i]).unwrap()).collect();
        let fault_of = |s: &Step<InstallerEffect>| s.faults.iter().map(|f| (f.peer, f.kind)).collect::<Vec<_>>();

        // Replica 0: its share with one byte flipped.
        let mut y = *opened[0].secret_share.value();
        y[5] ^= 1;
        let a = answer(g0, 0, &up, Reply::Accepted(Share::new(1, y)));
        let s = inst.handle_answer(T0, from(g0, 0), &a, &piece).unwrap();
        assert_eq!(fault_of(&s), [(from(g0, 0), FaultKind::ForgedShare)]);
        // Replica 1: replica 2's genuine share.
        let a = answer(g0, 1, &up, Reply::Accepted(opened[2].secret_share.clone()));
        let s = inst.handle_answer(T0, from(g0, 1), &a, &piece).unwrap();
        assert_eq!(fault_of(&s), [(from(g0, 1), FaultKind::ForgedShare)]);
        // A secret share presented as a c share.
        let a = answer(g0, 1, &up, Reply::Rejected(opened[1].secret_share.clone()));
        let s = inst.handle_answer(T0, from(g0, 1), &a, &piece).unwrap();
        assert_eq!(fault_of(&s), [(from(g0, 1), FaultKind::ForgedShare)]);
        // Someone else sending replica 3's answer.
        let a = answer(g0, 3, &up, Reply::Accepted(opened[3].secret_share.clone()));
        let s = inst.handle_answer(T0, Peer::Client(1), &a, &piece).unwrap();
        assert_eq!(fault_of(&s), [(Peer::Client(1), FaultKind::Unsolicited)]);
        assert_eq!(inst.progress(g0), Some(GroupProgress::Preparing));
        // Replica 2: genuine secret share, then its genuine c share.
        let a = answer(g0, 2, &up, Reply::Accepted(opened[2].secret_share.clone()));
        let s = inst.handle_answer(T0, from(g0, 2), &a, &piece).unwrap();
        assert!(s.faults.is_empty());
        let a = answer(g0, 2, &up, Reply::Rejected(opened[2].cancel_share.clone()));
        let s = inst.handle_answer(T0, from(g0, 2), &a, &piece).unwrap();
        assert_eq!(fault_of(&s), [(from(g0, 2), FaultKind::BothKinds)]);
        assert!(s.effects.is_empty());
        // Replica 3's genuine share: f + 1 = 2 valid secret shares.
        let a = answer(g0, 3, &up, Reply::Accepted(opened[3].secret_share.clone()));
        let s = inst.handle_answer(T0, from(g0, 3), &a, &piece).unwrap();
        assert!(s.faults.is_empty());
        assert_eq!(inst.progress(g0), Some(GroupProgress::Accepted));
        // The other group, honestly: committed with the right τ.
        let g1 = w.gid(1);
        let mut reps = w.replicas(1, &[]);
        let steps = order(&mut reps, w.keys(1), &up.prepare(g1), inst.peer(), Verdict::Accept);
        let out = feed(&mut inst, T0, &steps, up.piece(g1));
        assert!(faults(&out).is_empty());
        assert_eq!(effects(&out), vec![InstallerEffect::Decided(Outcome::Committed)]);
        assert_eq!(inst.decided(), Some((Outcome::Committed, &up.trigger)));
    }

    /// One group rejecting decides Aborted; the abort (with the piece
    /// before it) goes to every group; all of them finishing makes it done.
    #[test]
    fn one_group_rejecting_aborts() {
        let mut w = Deployment::new(62, &[4, 7, 1]);
        let up = w.upgrade(1, &[0, 1, 2], &[1]);
        let mut inst = new_installer(&w, &up, &[0, 1, 2], false);
        let _ = inst.start(T0);
        let mut groups: Vec<Vec<GroupReplica>> = (0..3).map(|g| w.replicas(g, &[])).collect();
        let verdicts = [Verdict::Accept, Verdict::Reject, Verdict::Accept];
        let mut decisions = Vec::new();
        for g in [0, 1, 2] {
            let gid = w.gid(g);
            let steps = order(&mut groups[g], w.keys(g), &up.prepare(gid), inst.peer(), verdicts[g]);
            let out = feed(&mut inst, T0, &steps, up.piece(gid));
            assert!(faults(&out).is_empty());
            decisions.extend(effects(&out));
        }
        assert_eq!(decisions, vec![InstallerEffect::Decided(Outcome::Aborted)]);
        assert_eq!(inst.decided(), Some((Outcome::Aborted, &up.cancel)));
        assert_eq!(inst.progress(w.gid(1)), Some(GroupProgress::Rejected));
        let s = inst.handle_timeout(T0);
        let abort = Message::Submit(Finish { outcome: Outcome::Aborted, upgrade: up.id(), code: up.cancel.clone() });
        for g in 0..3 {
            assert!(s.effects.contains(&InstallerEffect::SendPrepare { group: w.gid(g) }), "{:?}", s.effects);
            assert!(s.messages.iter().any(|m| m.to == Peer::Group(w.gid(g)) && m.message == abort));
        }
        for (g, reps) in groups.iter_mut().enumerate() {
            let gid = w.gid(g);
            assert!(!inst.is_done());
            let steps = order(reps, w.keys(g), &up.abort(), inst.peer(), Verdict::Accept);
            expect_discarded(&steps, &up);
            let out = feed(&mut inst, T0, &steps, up.piece(gid));
            assert!(faults(&out).is_empty());
        }
        assert!(inst.is_done());
    }

    /// A `Finished` answer is checked against the header's digests: a
    /// wrong code is a fault; the right one decides at once.
    #[test]
    fn finished_answers_are_checked() {
        let mut w = Deployment::new(63, &[4, 4]);
        let up = w.upgrade(1, &[0, 1], &[1]);
        let g0 = w.gid(0);
        let piece = up.piece(g0);
        for outcome in [Outcome::Committed, Outcome::Aborted] {
            let mut inst = new_installer(&w, &up, &[0, 1], false);
            let _ = inst.start(T0);
            let other = match outcome {
                Outcome::Committed => Outcome::Aborted,
                Outcome::Aborted => Outcome::Committed,
            };
            for bad in [
                Reply::Finished(outcome, corrupt(up.code(outcome))),
                Reply::Finished(other, up.code(outcome).clone()),
                Reply::Finished(outcome, Code::default()),
            ] {
                let s = inst.handle_answer(T0, from(g0, 1), &answer(g0, 1, &up, bad), piece).unwrap();
                assert_eq!(s.faults.len(), 1);
                assert_eq!(s.faults[0].kind, FaultKind::WrongCode);
                assert_eq!(s.faults[0].peer, from(g0, 1));
                assert!(s.effects.is_empty());
                assert_eq!(inst.decided(), None);
            }
            let good = answer(g0, 2, &up, Reply::Finished(outcome, up.code(outcome).clone()));
            let s = inst.handle_answer(T0, from(g0, 2), &good, piece).unwrap();
            assert!(s.faults.is_empty());
            assert_eq!(s.effects.as_slice(), &[InstallerEffect::Decided(outcome)]);
            assert_eq!(inst.decided(), Some((outcome, up.code(outcome))));
        }
    }

    /// A piece of another group or another upgrade is the host's mistake.
    #[test]
    fn answer_with_the_wrong_piece_is_an_error() {
        let mut w = Deployment::new(64, &[4, 4]);
        let up = w.upgrade(1, &[0, 1], &[1]);
        let other = w.upgrade(2, &[0, 1], &[1]);
        let mut inst = new_installer(&w, &up, &[0, 1], false);
        let _ = inst.start(T0);
        let (g0, g1) = (w.gid(0), w.gid(1));
        let a = answer(g0, 0, &up, Reply::Conflict);
        let before = bytes(&inst);
        assert_eq!(inst.handle_answer(T0, from(g0, 0), &a, up.piece(g1)).err(), Some(MisuseError::BadArgument));
        assert_eq!(inst.handle_answer(T0, from(g0, 0), &a, other.piece(g0)).err(), Some(MisuseError::BadArgument));
        assert_eq!(bytes(&inst), before);
    }

    /// f + 1 refusals from a group are reported once.
    #[test]
    fn refusals_are_reported_once() {
        let mut w = Deployment::new(65, &[4]);
        let stale = w.upgrade_on(0, 1, &[0], &[1], &Code::from_bytes([3; 32]));
        let mut inst = new_installer(&w, &stale, &[0], false);
        let _ = inst.start(T0);
        let g0 = w.gid(0);
        let mut reps = w.replicas(0, &[]);
        let steps = order(&mut reps, w.keys(0), &stale.prepare(g0), inst.peer(), Verdict::Accept);
        let out = feed(&mut inst, T0, &steps, stale.piece(g0));
        assert_eq!(effects(&out), vec![InstallerEffect::Refused { group: g0, reason: Refusal::OutOfOrder }]);
        assert_eq!(inst.decided(), None);
    }

    /// Serialize → drop → restore the installer mid-way; it carries on to
    /// the same decision, with the same steps, as one that never stopped.
    #[test]
    fn survives_a_restart_mid_way() {
        let mut w = Deployment::new(66, &[4, 4, 7]);
        let up = w.upgrade(1, &[0, 1, 2], &[1]);
        let mut inst = new_installer(&w, &up, &[0, 1, 2], true);
        let _ = inst.start(T0);
        let mut groups: Vec<Vec<GroupReplica>> = (0..3).map(|g| w.replicas(g, &[])).collect();
        let steps: Vec<_> = (0..3)
            .map(|g| order(&mut groups[g], w.keys(g), &up.prepare(w.gid(g)), inst.peer(), Verdict::Accept))
            .collect();
        // Group 0 fully, group 1 one share (pooled, not yet enough).
        let _ = feed(&mut inst, T0, &steps[0], up.piece(w.gid(0)));
        let _ = feed(&mut inst, T0, &steps[1][..1], up.piece(w.gid(1)));
        let reference = inst.clone();
        let saved = bytes(&inst);
        drop(inst);
        let mut restored: DefaultInstaller = wire::decode(&saved).unwrap();
        assert_eq!(bytes(&restored), saved);
        let mut reference = reference;
        for (g, st) in [(1, &steps[1][1..]), (2, &steps[2][..])] {
            let piece = up.piece(w.gid(g));
            assert_eq!(feed(&mut restored, T0, st, piece), feed(&mut reference, T0, st, piece));
        }
        assert_eq!(restored.decided(), Some((Outcome::Committed, &up.trigger)));
        assert_eq!(restored.handle_timeout(T0), reference.handle_timeout(T0));
        // Restart once more after the decision, before any acknowledgement.
        let mut again: DefaultInstaller = wire::decode(&bytes(&restored)).unwrap();
        let s = again.start(T0.after(5));
        assert_eq!(s.messages.len(), 3, "finish_all sends τ to every group");
        for (g, reps) in groups.iter_mut().enumerate() {
            let steps = order(reps, w.keys(g), &up.commit(), again.peer(), Verdict::Accept);
            expect_applied(&steps, &up, w.gid(g));
            let _ = feed(&mut again, T0.after(5), &steps, up.piece(w.gid(g)));
        }
        assert!(again.is_done());
    }

    /// After an abort the installer re-sends the piece before `c` to every
    /// group, and takes a refusal of the piece as "this group finished".
    /// That holds for `Replayed` (the chain moved past it), not for
    /// `OutOfOrder`: the group is *behind*, has not seen the piece, and
    /// ignores `c`. Here group A has not yet finished the predecessor P the
    /// upgrade U is built on, B rejects U. The installer must not be done
    /// while A has not acknowledged the abort: once P finishes at A, U's
    /// piece is accepted there and stays in A (blocking every later
    /// conflicting piece) with no installer left to send `c`.
    #[test]
    fn abort_is_not_done_while_a_group_is_behind() {
        let mut w = Deployment::new(67, &[4, 4]);
        let (ga, gb) = (w.gid(0), w.gid(1));
        let p = w.upgrade(1, &[0, 1], &[1]);
        let u = w.upgrade_on(0, 2, &[0, 1], &[1], &p.trigger);
        let mut a = w.replicas(0, &[]);
        let mut b = w.replicas(1, &[]);
        let _ = order(&mut b, w.keys(1), &p.prepare(gb), ORIGIN, Verdict::Accept);
        let _ = order(&mut b, w.keys(1), &p.commit(), ORIGIN, Verdict::Accept);

        let mut inst = new_installer(&w, &u, &[0, 1], false);
        let _ = inst.start(T0);
        let steps = order(&mut a, w.keys(0), &u.prepare(ga), inst.peer(), Verdict::Accept);
        let out = feed(&mut inst, T0, &steps, u.piece(ga));
        assert_eq!(effects(&out), vec![InstallerEffect::Refused { group: ga, reason: Refusal::OutOfOrder }]);
        let steps = order(&mut b, w.keys(1), &u.prepare(gb), inst.peer(), Verdict::Reject);
        let out = feed(&mut inst, T0, &steps, u.piece(gb));
        assert_eq!(effects(&out), vec![InstallerEffect::Decided(Outcome::Aborted)]);

        // The sweep: piece then c, to both groups, delivered in order.
        let s = inst.handle_timeout(T0);
        assert_eq!(s.messages.len(), 2);
        for (g, reps, gid) in [(0, &mut a, ga), (1, &mut b, gb)] {
            for op in [u.prepare(gid), u.abort()] {
                let steps = order(reps, w.keys(g), &op, inst.peer(), Verdict::Accept);
                let _ = feed(&mut inst, T0, &steps, u.piece(gid));
            }
        }
        assert!(b.iter().all(|r| r.outcome(u.id()) == Some(Outcome::Aborted)));
        assert!(a.iter().all(|r| r.outcome(u.id()).is_none() && r.holds(u.id()).is_none()));
        assert_ne!(inst.progress(ga), Some(GroupProgress::Finished), "A never acknowledged the abort");
        assert!(!inst.is_done(), "done while A has not finished U");
    }

    /// The same rule after a *commit* decision: refusals from an earlier
    /// sweep (group A was behind then), delivered late, as the transport
    /// may, are taken as A acknowledging the commit. With `finish_all` off
    /// the installer is then done before it ever sent `CommitInstall`, and
    /// no group has τ: nothing diffuses.
    #[test]
    fn late_refusals_do_not_finish_a_commit() {
        let mut w = Deployment::new(68, &[4, 4]);
        let (ga, gb) = (w.gid(0), w.gid(1));
        let p = w.upgrade(1, &[0, 1], &[1]);
        let u = w.upgrade_on(0, 2, &[0, 1], &[2], &p.trigger);
        let mut a = w.replicas(0, &[]);
        let mut b = w.replicas(1, &[]);
        let _ = order(&mut b, w.keys(1), &p.prepare(gb), ORIGIN, Verdict::Accept);
        let _ = order(&mut b, w.keys(1), &p.commit(), ORIGIN, Verdict::Accept);

        let mut inst = new_installer(&w, &u, &[0, 1], false);
        let _ = inst.start(T0);
        // First sweep: A is behind and refuses; those answers are delayed.
        let delayed = order(&mut a, w.keys(0), &u.prepare(ga), inst.peer(), Verdict::Accept);
        assert!(replies(&delayed, inst.peer()).iter().all(|r| *r == Reply::Refused(Refusal::OutOfOrder)));
        let steps = order(&mut b, w.keys(1), &u.prepare(gb), inst.peer(), Verdict::Accept);
        let _ = feed(&mut inst, T0, &steps, u.piece(gb));
        // P finishes at A; the next sweep's prepare is accepted there.
        let _ = order(&mut a, w.keys(0), &p.prepare(ga), ORIGIN, Verdict::Accept);
        let _ = order(&mut a, w.keys(0), &p.commit(), ORIGIN, Verdict::Accept);
        let now = T0.after(RETRY);
        let s = inst.handle_timeout(now);
        assert_eq!(s.effects.as_slice(), &[InstallerEffect::SendPrepare { group: ga }]);
        let steps = order(&mut a, w.keys(0), &u.prepare(ga), inst.peer(), Verdict::Accept);
        let out = feed(&mut inst, now, &steps, u.piece(ga));
        assert_eq!(effects(&out), vec![InstallerEffect::Decided(Outcome::Committed)]);
        // The delayed refusals arrive now.
        let _ = feed(&mut inst, now, &delayed, u.piece(ga));
        assert!(a.iter().chain(&b).all(|r| r.outcome(u.id()).is_none()), "nobody committed yet");
        assert!(!inst.is_done(), "done, though no group has received τ");
        let s = inst.handle_timeout(now);
        assert_eq!(s.messages.len(), 1, "the commit must still go out");
    }
}

// =====================================================================
// Whole upgrades through a hand-written network: installer, groups on a
// line of neighbors, proactive diffusion
// =====================================================================

mod end_to_end {
    use super::*;

    // Events are handled one at a time; boxing the piece buys nothing.
    #[allow(clippy::large_enum_variant)]
    enum Event {
        Order { g: usize, origin: Peer, op: Operation },
        ToInstaller(Answer),
        ToReplica { g: usize, index: u8, from: Peer, message: Message },
    }

    struct Net<'a> {
        w: &'a Deployment,
        up: &'a Upgrade,
        inst: DefaultInstaller,
        groups: Vec<Vec<GroupReplica>>,
        verdicts: Vec<Verdict>,
        queue: VecDeque<Event>,
        now: Instant,
        applied: HashMap<(usize, usize), usize>,
        discarded: HashMap<(usize, usize), usize>,
        faults: Vec<Fault>,
        decisions: Vec<Outcome>,
    }

    impl Net<'_> {
        fn idx(&self, gid: GroupId) -> usize {
            (0..self.groups.len()).find(|&g| self.w.gid(g) == gid).unwrap()
        }

        fn installer_step(&mut self, s: Step<InstallerEffect>) {
            self.faults.extend(s.faults.iter().copied());
            for e in &s.effects {
                match e {
                    InstallerEffect::SendPrepare { group } => {
                        let g = self.idx(*group);
                        let op = self.up.prepare(*group);
                        self.queue.push_back(Event::Order { g, origin: self.inst.peer(), op });
                    }
                    InstallerEffect::Decided(o) => self.decisions.push(*o),
                    InstallerEffect::Done => {}
                    other => panic!("{other:?}"),
                }
            }
            for m in &s.messages {
                let (Peer::Group(gid), Message::Submit(op)) = (m.to, &m.message) else { panic!("{m:?}") };
                let g = self.idx(gid);
                self.queue.push_back(Event::Order { g, origin: self.inst.peer(), op: op.clone().into() });
            }
        }

        fn group_step(&mut self, g: usize, i: usize, s: Step<GroupEffect>) {
            let me = Peer::Replica { group: self.w.gid(g), index: i as u8 };
            self.faults.extend(s.faults.iter().copied());
            for e in &s.effects {
                match e {
                    GroupEffect::Apply { upgrade, key, payload, .. } => {
                        assert_eq!(*upgrade, self.up.id());
                        let p = self.up.payload(self.w.gid(g));
                        let key = key.as_ref().unwrap();
                        assert_eq!(open_payload(key, *upgrade, p.group, payload, &p.sealed), p.plain);
                        *self.applied.entry((g, i)).or_default() += 1;
                    }
                    GroupEffect::Discard { .. } => *self.discarded.entry((g, i)).or_default() += 1,
                    other => panic!("{other:?}"),
                }
            }
            for m in &s.messages {
                match (m.to, &m.message) {
                    (Peer::Installer(_), Message::Answer(a)) => self.queue.push_back(Event::ToInstaller(a.clone())),
                    (Peer::Replica { group, index }, msg) => {
                        let g = self.idx(group);
                        self.queue.push_back(Event::ToReplica { g, index, from: me, message: msg.clone() });
                    }
                    (Peer::Group(gid), Message::Submit(op)) => {
                        let g = self.idx(gid);
                        self.queue.push_back(Event::Order { g, origin: me, op: op.clone().into() });
                    }
                    other => panic!("{other:?}"),
                }
            }
        }

        fn drain(&mut self) {
            while let Some(e) = self.queue.pop_front() {
                match e {
                    Event::Order { g, origin, op } => {
                        let steps =
                            order_at(self.now, &mut self.groups[g], self.w.keys(g), &op, origin, self.verdicts[g]);
                        for (i, s) in steps.into_iter().enumerate() {
                            self.group_step(g, i, s);
                        }
                    }
                    Event::ToInstaller(a) => {
                        let piece = self.up.piece(a.group);
                        let from = Peer::Replica { group: a.group, index: a.replica };
                        let s = self.inst.handle_answer(self.now, from, &a, piece).unwrap();
                        self.installer_step(s);
                    }
                    Event::ToReplica { g, index, from, message } => {
                        let s = self.groups[g][usize::from(index)].handle_message(self.now, from, &message);
                        self.group_step(g, usize::from(index), s);
                    }
                }
            }
        }

        fn next_deadline(&self) -> Option<Instant> {
            let replicas = self.groups.iter().flatten().filter_map(|r| r.deadline());
            replicas.chain(self.inst.deadline()).min()
        }

        fn run(&mut self) {
            let s = self.inst.start(self.now);
            self.installer_step(s);
            for _ in 0..500 {
                self.drain();
                let Some(next) = self.next_deadline() else { return };
                self.now = self.now.max(next);
                if self.inst.deadline().is_some_and(|d| d <= self.now) {
                    let s = self.inst.handle_timeout(self.now);
                    self.installer_step(s);
                }
                for g in 0..self.groups.len() {
                    for i in 0..self.groups[g].len() {
                        if self.groups[g][i].deadline().is_some_and(|d| d <= self.now) {
                            let s = self.groups[g][i].handle_timeout(self.now);
                            self.group_step(g, i, s);
                        }
                    }
                }
            }
            panic!("no quiescence after 500 rounds");
        }
    }

    /// Runs one upgrade over a line of groups `0 - 1 - ... - k`, the
    /// installer committing through one group, diffusion doing the rest.
    fn line(seed: u8, sizes: &[usize], reject: Option<usize>) {
        let mut w = Deployment::new(seed, sizes);
        let all: Vec<usize> = (0..sizes.len()).collect();
        let up = w.upgrade(1, &all, &[1]);
        let groups = all
            .iter()
            .map(|&g| {
                let ns: Vec<usize> =
                    [g.checked_sub(1), Some(g + 1).filter(|&n| n < sizes.len())].into_iter().flatten().collect();
                w.replicas(g, &ns)
            })
            .collect();
        let inst = DefaultInstaller::new(9, up.header.clone(), &installer_groups(&w, &all), opts(false)).unwrap();
        let verdicts = all.iter().map(|&g| if Some(g) == reject { Verdict::Reject } else { Verdict::Accept }).collect();
        let mut net = Net {
            w: &w,
            up: &up,
            inst,
            groups,
            verdicts,
            queue: VecDeque::new(),
            now: T0,
            applied: HashMap::new(),
            discarded: HashMap::new(),
            faults: Vec::new(),
            decisions: Vec::new(),
        };
        net.run();
        let want = if reject.is_some() { Outcome::Aborted } else { Outcome::Committed };
        assert_eq!(net.decisions, vec![want]);
        assert!(net.inst.is_done());
        for (g, reps) in net.groups.iter().enumerate() {
            for (i, r) in reps.iter().enumerate() {
                assert_eq!(r.outcome(up.id()), Some(want), "group {g} replica {i}");
                assert_eq!(r.deadline(), None);
                let (a, d) = (net.applied.get(&(g, i)), net.discarded.get(&(g, i)));
                match want {
                    Outcome::Committed => assert_eq!((a, d), (Some(&1), None)),
                    Outcome::Aborted => assert_eq!((a, d), (None, Some(&1))),
                }
            }
        }
        // Late acknowledgements of diffusion are reported as Unsolicited
        // (see diffusion::late_acks_after_retirement_are_not_faults); any
        // other fault is a failure here.
        let other: Vec<_> = net.faults.iter().filter(|f| f.kind != FaultKind::Unsolicited).collect();
        assert!(other.is_empty(), "{other:?}");
    }

    #[test]
    fn commit_spreads_along_a_line_of_groups() {
        line(70, &[4, 1, 4, 7, 4], None);
    }

    #[test]
    fn abort_reaches_every_group() {
        line(71, &[4, 1, 4, 7, 4], Some(3));
    }
}

// =====================================================================
// 10. Persistence: serialize → drop → restore mid-scenario
// =====================================================================

mod persistence {
    use super::*;

    /// Restored after prepare and before commit, the replicas still hold
    /// their shares and `k_g`: a repeat answers the same, and the commit
    /// applies a payload the restored key opens.
    #[test]
    fn restore_between_prepare_and_commit() {
        let mut w = Deployment::new(80, &[4, 7]);
        let up = w.upgrade(1, &[0, 1], &[1]);
        for g in 0..2 {
            let gid = w.gid(g);
            let mut reps = w.replicas(g, &[]);
            let first = order(&mut reps, w.keys(g), &up.prepare(gid), ORIGIN, Verdict::Accept);
            let saved = states(&reps);
            let mut reps = restore_all(reps);
            assert_eq!(states(&reps), saved);
            let again = order(&mut reps, w.keys(g), &up.prepare(gid), ORIGIN, Verdict::Accept);
            assert_eq!(again, first);
            let steps = order(&mut reps, w.keys(g), &up.commit(), ORIGIN, Verdict::Accept);
            expect_applied(&steps, &up, gid);
            assert!(reps.iter().all(|r| r.outcome(up.id()) == Some(Outcome::Committed)));
        }
    }

    /// Restored while a piece is withheld behind a released one: Figure 3's
    /// sets survive, and the scenario finishes as without the restart.
    #[test]
    fn restore_with_a_withheld_piece() {
        let mut w = Deployment::new(81, &[4]);
        let gid = w.gid(0);
        let d1 = w.upgrade(2, &[0], &[1]);
        let d2 = w.upgrade(1, &[0], &[1]);
        let mut ledger = Ledger::default();
        let mut reps = w.replicas(0, &[]);
        let _ = ledger.order(&mut reps, w.keys(0), &d1.prepare(gid), Verdict::Accept);
        let s = ledger.order(&mut reps, w.keys(0), &d2.prepare(gid), Verdict::Accept);
        assert!(replies(&s, ORIGIN).iter().all(|r| *r == Reply::Conflict));
        let mut reps = restore_all(reps);
        let s = ledger.order(&mut reps, w.keys(0), &d2.prepare(gid), Verdict::Accept);
        assert!(replies(&s, ORIGIN).iter().all(|r| *r == Reply::Conflict));
        let s = ledger.order(&mut reps, w.keys(0), &d1.abort(), Verdict::Accept);
        expect_discarded(&s, &d1);
        let mut reps = restore_all(reps);
        let s = ledger.order(&mut reps, w.keys(0), &d2.prepare(gid), Verdict::Accept);
        expect_accepted(&replies(&s, ORIGIN), d2.piece(gid));
        let mut reps = restore_all(reps);
        let s = ledger.order(&mut reps, w.keys(0), &d2.commit(), Verdict::Accept);
        expect_applied(&s, &d2, gid);
    }

    /// Restored mid-diffusion: the deadline, backoff and acks carry over;
    /// restored after the commit, attachments are still owed.
    #[test]
    fn restore_mid_diffusion() {
        let mut w = Deployment::new(82, &[4, 4]);
        let up = w.upgrade(1, &[0, 1], &[1]);
        let (ga, gb) = (w.gid(0), w.gid(1));
        let mut a = w.replicas(0, &[1]);
        let mut b = w.replicas(1, &[0]);
        let _ = order(&mut a, w.keys(0), &up.prepare(ga), ORIGIN, Verdict::Accept);
        let _ = order(&mut b, w.keys(1), &up.prepare(gb), ORIGIN, Verdict::Accept);
        let _ = order(&mut a, w.keys(0), &up.commit(), ORIGIN, Verdict::Accept);
        let s = a[0].handle_timeout(T0);
        assert_eq!(s.deadline, Some(T0.after(RETRY)));
        let mut a = restore_all(a);
        assert_eq!(a[0].deadline(), Some(T0.after(RETRY)));
        assert_eq!(a[0].take_attachment(gb).len(), 1);
        let s = a[0].handle_timeout(T0.after(RETRY));
        assert_eq!(s.messages.len(), 1);
        assert_eq!(s.deadline, Some(T0.after(3 * RETRY)), "the backoff survived the restart");
        let origin = Peer::Replica { group: ga, index: 0 };
        let steps = order(&mut b, w.keys(1), &up.commit(), origin, Verdict::Accept);
        let acks = answers(&steps, origin);
        let s = a[0].handle_message(T0, origin_of(&acks[0]), &Message::Answer(acks[0].clone()));
        assert!(s.deadline.is_some());
        let mut a = restore_all(a);
        let s = a[0].handle_message(T0, origin_of(&acks[1]), &Message::Answer(acks[1].clone()));
        assert_eq!(s.deadline, None, "the first ack survived the restart");
    }

    fn origin_of(a: &Answer) -> Peer {
        Peer::Replica { group: a.group, index: a.replica }
    }

    /// A damaged saved state is a decode error, never a panic.
    #[test]
    fn damaged_state_does_not_decode() {
        let mut w = Deployment::new(83, &[4]);
        let up = w.upgrade(1, &[0], &[1]);
        let mut reps = w.replicas(0, &[]);
        let _ = order(&mut reps, w.keys(0), &up.prepare(w.gid(0)), ORIGIN, Verdict::Accept);
        let saved = bytes(&reps[0]);
        for cut in [0, 1, saved.len() / 3, saved.len() - 1] {
            assert!(wire::decode::<GroupReplica>(&saved[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = saved.clone();
        longer.push(0);
        assert!(wire::decode::<GroupReplica>(&longer).is_err());
    }
}

// =====================================================================
// Liveness under at most f faults: the failure classes found from
// outside, each reproduced here
// =====================================================================

mod liveness {
    use super::*;
    use bft_upgrade::crypto::PublicKey;
    use bft_upgrade::group::GuardianIds;
    use bft_upgrade::installer::Installer;
    use bft_upgrade::wire::GuardianSet;

    fn from(group: GroupId, index: u8) -> Peer {
        Peer::Replica { group, index }
    }

    /// Every effect of installer steps.
    fn decisions(steps: &[Step<InstallerEffect>]) -> Vec<InstallerEffect> {
        effects(steps)
    }

    /// Class 1, candidate poisoning in guardian custody: one faulty
    /// replica of a group of 4 answers first with several different bogus
    /// `s_g` values. At most one value per replica counts, so the true one,
    /// sent afterwards by the correct replicas, still reaches `f + 1`, also
    /// after a restart in between.
    #[test]
    fn candidate_poisoning_cannot_crowd_out_the_true_secret() {
        let mut w = Deployment::new(70, &[4]);
        let set = guardian_set(&mut w, 4);
        let up = build_guarded(&mut w, 0, 1, &[1], &set);
        let g = w.gid(0);
        let piece = up.piece(g);
        let mut inst = DefaultInstaller::new(1, up.header.clone(), &installer_groups(&w, &[0]), opts(true)).unwrap();
        let _ = inst.start(T0);
        let mut out = Vec::new();
        for k in 0..6u8 {
            let bogus = Code::from_bytes([k + 1; 32]);
            let a = Answer { upgrade: up.id(), group: g, replica: 0, reply: Reply::Code(ShareKind::Secret, bogus) };
            out.push(inst.handle_answer(T0, from(g, 0), &a, piece).unwrap());
        }
        let mut inst: DefaultInstaller = wire::decode(&bytes(&inst)).unwrap();
        // One group: its s_g is τ.
        for r in 1..4u8 {
            let reply = Reply::Code(ShareKind::Secret, up.trigger.clone());
            let a = Answer { upgrade: up.id(), group: g, replica: r, reply };
            out.push(inst.handle_answer(T0, from(g, r), &a, piece).unwrap());
        }
        assert!(decisions(&out).contains(&InstallerEffect::Decided(Outcome::Committed)), "{:?}", decisions(&out));
        let equivocations = faults(&out).iter().filter(|f| f.kind == FaultKind::Equivocation).count();
        assert_eq!(equivocations, 5, "every later value of replica 0 is its fault: {:?}", faults(&out));
    }

    /// The genuine answers of every replica of group `g` to `up`'s piece.
    fn genuine_answers(w: &Deployment, up: &Upgrade, g: usize, origin: Peer) -> Vec<Answer> {
        let mut reps = w.replicas(g, &[]);
        let steps = order(&mut reps, w.keys(g), &up.prepare(w.gid(g)), origin, Verdict::Accept);
        answers(&steps, origin)
    }

    /// Replica `r`'s genuine `c` share of `up`'s piece of group `g`, as a
    /// faulty replica would send it.
    fn cancel_answer(w: &Deployment, up: &Upgrade, g: usize, r: usize) -> Answer {
        let gid = w.gid(g);
        let opened = up.piece(gid).open_for(r, &w.keys(g)[r]).unwrap();
        Answer { upgrade: up.id(), group: gid, replica: r as u8, reply: Reply::Rejected(opened.cancel_share.clone()) }
    }

    /// Feeds `(answer)`s to an installer in order; returns its steps.
    fn feed_answers<const G: usize, const P: usize>(
        inst: &mut Installer<G, P>,
        up: &Upgrade,
        list: &[Answer],
    ) -> Vec<Step<InstallerEffect>> {
        list.iter().map(|a| inst.handle_answer(T0, from(a.group, a.replica), a, up.piece(a.group)).unwrap()).collect()
    }

    /// Class 2, share-pool starvation: with the default installer, 64
    /// groups of 13 (f = 4) where f faulty replicas per group send their
    /// genuine `c` share and f correct `s_g` shares arrive first still
    /// commit: the pool budgets what each group needs.
    #[test]
    fn share_pool_holds_f_of_each_kind_per_group() {
        let sizes = [13usize; 64];
        let mut w = Deployment::new(71, &sizes);
        let all: Vec<usize> = (0..sizes.len()).collect();
        let up = w.upgrade(1, &all, &[1]);
        let mut inst = DefaultInstaller::new(1, up.header.clone(), &installer_groups(&w, &all), opts(true)).unwrap();
        let _ = inst.start(T0);
        let f = 4;
        let secret: Vec<Vec<Answer>> = all.iter().map(|&g| genuine_answers(&w, &up, g, inst.peer())).collect();
        let mut order_of_arrival = Vec::new();
        for s in &secret {
            order_of_arrival.extend(s[..f].iter().cloned());
        }
        for &g in &all {
            for r in 13 - f..13 {
                order_of_arrival.push(cancel_answer(&w, &up, g, r));
            }
        }
        for r in f..13 - f {
            for s in &secret {
                order_of_arrival.push(s[r].clone());
            }
        }
        let out = feed_answers(&mut inst, &up, &order_of_arrival);
        assert!(decisions(&out).contains(&InstallerEffect::Decided(Outcome::Committed)), "starved");
    }

    /// Class 2 without faults: answers arriving round-robin across groups.
    /// An installer either refuses, at construction and with a capacity
    /// error, a deployment its pool cannot hold, or it decides.
    #[test]
    fn share_pool_never_starves_round_robin() {
        fn round_robin<const G: usize, const P: usize>(sizes: &[usize], seed: u8) -> Option<bool> {
            let mut w = Deployment::new(seed, sizes);
            let all: Vec<usize> = (0..sizes.len()).collect();
            let up = w.upgrade(1, &all, &[1]);
            let mut inst = match Installer::<G, P>::new(1, up.header.clone(), &installer_groups(&w, &all), opts(true)) {
                Ok(inst) => inst,
                Err(MisuseError::Capacity(CapacityError::Shares)) => return None,
                Err(e) => panic!("{e:?}"),
            };
            let _ = inst.start(T0);
            let answers: Vec<Vec<Answer>> = all.iter().map(|&g| genuine_answers(&w, &up, g, inst.peer())).collect();
            let mut list = Vec::new();
            for r in 0..sizes[0] {
                for a in &answers {
                    list.push(a[r].clone());
                }
            }
            let out = feed_answers(&mut inst, &up, &list);
            Some(decisions(&out).contains(&InstallerEffect::Decided(Outcome::Committed)))
        }
        // 8 groups of 25 (f = 8): 64 shares of room are too few, 128 enough.
        assert_eq!(round_robin::<8, 64>(&[25; 8], 72), None, "refused at construction");
        assert_eq!(round_robin::<8, 128>(&[25; 8], 72), Some(true));
        // Two groups of 4 with a pool of 2.
        assert_eq!(round_robin::<2, 2>(&[4, 4], 73), None, "refused at construction");
        assert_eq!(round_robin::<2, 4>(&[4, 4], 73), Some(true));
    }

    /// Class 3, upgrade-id squatting: an authorized deployer signs a piece
    /// carrying another deployer's upgrade id. The genuine piece still gets
    /// its own shares and commits at that group.
    #[test]
    fn a_deployer_cannot_squat_another_deployers_upgrade_id() {
        let mut w = Deployment::with_deployers(74, &[4], 2);
        let g = w.gid(0);
        let (genesis_a, genesis_b) = (w.genesis[0].clone(), w.genesis[1].clone());
        let genuine = w.upgrade_on(0, 1, &[0], &[1], &genesis_a);
        let theirs = w.upgrade_on(1, 1, &[0], &[2], &genesis_b);
        let mut squat = theirs.pieces[0].clone();
        squat.header.upgrade = genuine.id();
        squat.signature = w.signing[1].sign(&squat.header.digest()).unwrap();
        let mut reps = w.replicas(0, &[]);
        let _ = order(&mut reps, w.keys(0), &Operation::PrepareInstall(squat), Peer::Installer(66), Verdict::Accept);
        let steps = order(&mut reps, w.keys(0), &genuine.prepare(g), ORIGIN, Verdict::Accept);
        let shares = expect_accepted(&replies(&steps, ORIGIN), genuine.piece(g));
        // One group: its s_g is τ.
        assert_eq!(rebuild(&shares[..2]), genuine.trigger);
        let steps = order(&mut reps, w.keys(0), &genuine.commit(), ORIGIN, Verdict::Accept);
        expect_applied(&steps, &genuine, g);
    }

    /// Class 4, "done" before every group finished: an installer that
    /// commits through one group, over groups with no path between them
    /// (no neighbors, no guardians), is done only once every group
    /// finished, and every group does finish.
    #[test]
    fn done_only_once_every_group_finished() {
        let mut w = Deployment::new(75, &[4, 4, 4]);
        let all = [0, 1, 2];
        let up = w.upgrade(1, &all, &[1]);
        let mut groups: Vec<Vec<GroupReplica>> = all.iter().map(|&g| w.replicas(g, &[])).collect();
        let mut inst = DefaultInstaller::new(1, up.header.clone(), &installer_groups(&w, &all), opts(false)).unwrap();
        let mut now = T0;
        let mut pending: VecDeque<Step<InstallerEffect>> = VecDeque::from([inst.start(now)]);
        for _ in 0..60 {
            while let Some(step) = pending.pop_front() {
                if step.effects.contains(&InstallerEffect::Done) {
                    for (g, reps) in groups.iter().enumerate() {
                        for r in reps {
                            assert_eq!(r.outcome(up.id()), Some(Outcome::Committed), "done, but group {g} is not");
                        }
                    }
                }
                let mut ops: Vec<(usize, Operation)> = Vec::new();
                for e in &step.effects {
                    if let InstallerEffect::SendPrepare { group } = e {
                        ops.push((
                            w.groups.iter().position(|k| k.membership.group == *group).unwrap(),
                            up.prepare(*group),
                        ));
                    }
                }
                for m in &step.messages {
                    if let (Peer::Group(gid), Message::Submit(op)) = (m.to, &m.message) {
                        let g = w.groups.iter().position(|k| k.membership.group == gid).unwrap();
                        ops.push((g, Operation::from(op.clone())));
                    }
                }
                for (g, op) in ops {
                    let steps = order_at(now, &mut groups[g], w.keys(g), &op, inst.peer(), Verdict::Accept);
                    pending.extend(feed(&mut inst, now, &steps, up.piece(w.gid(g))));
                }
            }
            now = now.after(RETRY);
            pending.push_back(inst.handle_timeout(now));
        }
        assert!(inst.is_done());
        for reps in &groups {
            for r in reps {
                assert_eq!(r.outcome(up.id()), Some(Outcome::Committed));
            }
        }
    }

    /// `count` guardians with fresh keys, ids 500, 501, ...
    pub(super) fn guardian_set(w: &mut Deployment, count: usize) -> GuardianSet {
        let members: Vec<(u32, PublicKey)> =
            (0..count).map(|i| (500 + i as u32, ReplicaSecretKey::random(&mut w.rng).public_key())).collect();
        GuardianSet::new(&members).unwrap()
    }

    /// An upgrade of one group in guardian custody, by deployer `d`.
    pub(super) fn build_guarded(
        w: &mut Deployment,
        d: usize,
        seq: u64,
        resources: &[u32],
        set: &GuardianSet,
    ) -> Upgrade {
        let m = w.groups[0].membership.clone();
        let prev = w.genesis[d].clone();
        let ids = [m.group];
        let plan = UpgradePlan::new(&mut w.rng, w.deployers[d].id(), seq, &ids).unwrap();
        let upgrade = plan.header().upgrade;
        let resources: Vec<ResourceId> = resources.iter().copied().map(ResourceId).collect();
        let plain = b"guarded payload".to_vec();
        let (payload, sealed) = seal(&plan.group_key(m.group).unwrap(), upgrade, m.group, &plain);
        let target = GroupTarget {
            membership: &m,
            resources: &resources,
            prev_version: &prev,
            guardians: Some(set),
            payload,
            next: None,
        };
        let piece = plan.piece(&w.deployers[d], &target).unwrap();
        Upgrade {
            header: plan.header().clone(),
            trigger: plan.trigger_code().clone(),
            cancel: plan.cancel_code().clone(),
            pieces: vec![piece],
            payloads: vec![Payload { group: m.group, plain, sealed }],
        }
    }

    /// Replica 0 of one group of four in the custody of 16 guardians, and
    /// `count` upgrades of one resource each for it.
    fn guarded_replica(seed: u8, count: u64) -> (Deployment, Vec<Upgrade>, GroupReplica) {
        let mut w = Deployment::new(seed, &[4]);
        let set = guardian_set(&mut w, 16);
        let ups: Vec<Upgrade> = (0..count).map(|i| build_guarded(&mut w, 0, 1 + i, &[10 + i as u32], &set)).collect();
        let mut config = w.config(0, &[]);
        config.guardians = Some(GuardianIds { f: set.f, ids: set.members.iter().map(|(id, _)| *id).collect() });
        let r = GroupReplica::new(config, 0).unwrap();
        (w, ups, r)
    }

    /// Class 5, silent drops: outcomes whose guardian tells did not fit one
    /// step stay due, and must never take the room of what a later step
    /// owes: its answer to an operation's origin.
    #[test]
    fn a_backlog_of_guardian_tells_never_drops_an_answer() {
        let (w, ups, mut r) = guarded_replica(76, 9);
        let g = w.gid(0);
        let key = &w.keys(0)[0];
        for up in &ups {
            let step = r.handle_ordered(T0, ORIGIN, &up.prepare(g), key, |_| Verdict::Accept);
            assert!(step.messages.iter().any(|m| m.to == ORIGIN), "prepare answered");
        }
        // Eight codes arrive piggybacked at once: 8 × 16 tells, more than a step holds.
        let mut codes = Attachment::new();
        for up in &ups[..8] {
            codes.push(up.diffused(Outcome::Committed)).unwrap();
        }
        let mut learned: HashSet<(UpgradeId, Peer)> = HashSet::new();
        let mut note = |s: &Step<GroupEffect>| {
            for m in &s.messages {
                if let Message::Learned { diffused, .. } = &m.message {
                    learned.insert((diffused.upgrade, m.to));
                }
            }
        };
        let step = r.on_request(T0, GroupId(999), &codes);
        note(&step);
        // The ninth commits through an ordered operation: it is answered.
        let step = r.handle_ordered(T0, ORIGIN, &ups[8].commit(), key, |_| Verdict::Accept);
        note(&step);
        assert!(
            step.messages.iter().any(|m| m.to == ORIGIN && matches!(m.message, Message::Answer(_))),
            "the commit's answer was dropped"
        );
        // Every guardian hears of every outcome, once the host calls back.
        for _ in 0..10 {
            if r.deadline().is_none() {
                break;
            }
            let step = r.handle_timeout(T0);
            note(&step);
        }
        assert_eq!(learned.len(), 9 * 16);
    }

    /// Outcomes left due by one full step and more from the next, before
    /// any timeout, all stay due: the queue holds `HISTORY` of them, not
    /// just a step's `MAX_ATTACHED`.
    #[test]
    fn two_backlogs_of_tells_before_a_timeout_all_stay_due() {
        let (w, ups, mut r) = guarded_replica(78, 16);
        let g = w.gid(0);
        let key = &w.keys(0)[0];
        for up in &ups {
            let step = r.handle_ordered(T0, ORIGIN, &up.prepare(g), key, |_| Verdict::Accept);
            assert_eq!(step.lost, 0);
        }
        let mut learned: HashSet<(UpgradeId, Peer)> = HashSet::new();
        let mut note = |s: &Step<GroupEffect>| {
            assert_eq!(s.lost, 0, "a due tell was dropped");
            for m in &s.messages {
                if let Message::Learned { diffused, .. } = &m.message {
                    learned.insert((diffused.upgrade, m.to));
                }
            }
        };
        for batch in ups.chunks(8) {
            let mut codes = Attachment::new();
            for up in batch {
                codes.push(up.diffused(Outcome::Committed)).unwrap();
            }
            note(&r.on_request(T0, GroupId(999), &codes));
        }
        for _ in 0..20 {
            if r.deadline().is_none() {
                break;
            }
            note(&r.handle_timeout(T0));
        }
        assert_eq!(learned.len(), 16 * 16);
    }
}

mod guardian_squatting {
    use super::*;
    use bft_upgrade::crypto::PublicKey;
    use bft_upgrade::guardian::{GuardedGroup, Guardian, GuardianConfig, GuardianEffect};
    use bft_upgrade::wire::{GuardianSet, Piece};

    /// Four guardians (ids from `first`) guarding group 0 of a deployment:
    /// their keys and set, and the first one's configuration.
    pub(super) struct Guarded {
        pub keys: Vec<ReplicaSecretKey>,
        pub set: GuardianSet,
        pub config: GuardianConfig,
    }

    impl Guarded {
        pub fn new(w: &mut Deployment, first: u32) -> Self {
            let keys: Vec<ReplicaSecretKey> = (0..4).map(|_| ReplicaSecretKey::random(&mut w.rng)).collect();
            let members: Vec<(u32, PublicKey)> =
                keys.iter().enumerate().map(|(i, k)| (first + i as u32, k.public_key())).collect();
            let set = GuardianSet::new(&members).unwrap();
            let config = GuardianConfig {
                id: first,
                deployers: w.deployers.iter().map(|d| (d.id(), d.public_key())).collect(),
                groups: heapless::Vec::from_slice(&[GuardedGroup {
                    group: w.gid(0),
                    members: w.groups[0].membership.digest(),
                }])
                .unwrap(),
            };
            Self { keys, set, config }
        }

        /// A one-group piece by deployer `d` (order `seq`) in their custody.
        pub fn piece(&self, w: &mut Deployment, d: usize, seq: u64) -> Piece {
            let g = w.gid(0);
            let ids = [g];
            let plan = UpgradePlan::new(&mut w.rng, w.deployers[d].id(), seq, &ids).unwrap();
            let (payload, _) = seal(&plan.group_key(g).unwrap(), plan.header().upgrade, g, b"p");
            let prev = w.genesis[d].clone();
            let m = w.groups[0].membership.clone();
            let t = GroupTarget {
                membership: &m,
                resources: &[],
                prev_version: &prev,
                guardians: Some(&self.set),
                payload,
                next: None,
            };
            plan.piece(&w.deployers[d], &t).unwrap()
        }
    }

    /// Class 3 at a guardian: a piece carrying another deployer's upgrade
    /// id is dropped as forged, so the genuine piece that comes after it is
    /// kept and its shares are released once `f + 1` replicas ask.
    #[test]
    fn a_guardian_keeps_the_genuine_piece_after_a_squatter() {
        let mut w = Deployment::with_deployers(77, &[4], 2);
        let g = w.gid(0);
        let guarded = Guarded::new(&mut w, 600);
        let genuine = guarded.piece(&mut w, 0, 1);
        let mut squat = guarded.piece(&mut w, 1, 1);
        squat.header.upgrade = genuine.header.upgrade;
        squat.signature = w.signing[1].sign(&squat.header.digest()).unwrap();
        let guardian_keys = &guarded.keys;
        let mut guardian: Guardian<8> = Guardian::new(guarded.config.clone());
        let host = Peer::Replica { group: g, index: 0 };
        let step = guardian.handle_piece(T0, host, &squat, &guardian_keys[0]);
        assert_eq!(step.faults.iter().map(|f| f.kind).collect::<Vec<_>>(), vec![FaultKind::ForgedPiece]);
        let step = guardian.handle_piece(T0, host, &genuine, &guardian_keys[0]);
        assert!(step.faults.is_empty(), "{:?}", step.faults);
        let mut persisted = Vec::new();
        for r in 0..2u8 {
            let (_, token) = genuine.open_token(usize::from(r), &w.keys(0)[usize::from(r)]).unwrap();
            let request = Message::GuardianRequest {
                upgrade: genuine.header.upgrade,
                group: g,
                replica: r,
                kind: ShareKind::Secret,
                token,
            };
            let step = guardian.handle_message(T0, Peer::Replica { group: g, index: r }, &request);
            assert!(step.faults.is_empty(), "{:?}", step.faults);
            persisted.extend(step.effects);
        }
        assert_eq!(
            persisted,
            vec![GuardianEffect::Persist { upgrade: genuine.header.upgrade, group: g, kind: ShareKind::Secret }]
        );
    }
}

/// Issue 16, wedge 2: a guardian's slots hold records that released a
/// kind until their upgrade is retired; the deployer's signed retirement
/// frees them, and nothing else does.
mod guardian_retirement {
    use super::guardian_squatting::Guarded;
    use super::*;
    use bft_upgrade::error::MisuseError;
    use bft_upgrade::guardian::{Guardian, GuardianEffect};
    use bft_upgrade::wire::{Piece, Retirement};

    /// A guardian with two slots fills up with two released records and
    /// answers the third upgrade's piece `Busy` (what wedged the real node
    /// at its 34th upgrade); a forged retirement changes nothing, the
    /// deployer's own frees a slot and the third piece is kept.
    #[test]
    fn a_full_guardian_keeps_the_next_piece_once_its_deployer_retires_one() {
        let mut w = Deployment::with_deployers(78, &[4], 2);
        let g = w.gid(0);
        let guarded = Guarded::new(&mut w, 700);
        let pieces: Vec<Piece> = (1..=3).map(|seq| guarded.piece(&mut w, 0, seq)).collect();
        let guardian_keys = &guarded.keys;
        let config = guarded.config.clone();
        let mut guardian: Guardian<2> = Guardian::new(config);
        let host = Peer::Replica { group: g, index: 0 };
        let keys = w.keys(0).to_vec();
        let release = |guardian: &mut Guardian<2>, piece: &Piece| {
            let u = piece.header.upgrade;
            for r in 0..2u8 {
                let (_, token) = piece.open_token(usize::from(r), &keys[usize::from(r)]).unwrap();
                let request =
                    Message::GuardianRequest { upgrade: u, group: g, replica: r, kind: ShareKind::Secret, token };
                let step = guardian.handle_message(T0, Peer::Replica { group: g, index: r }, &request);
                assert!(step.faults.is_empty(), "{:?}", step.faults);
            }
            let _ = guardian.persisted(T0, u, g);
            assert_eq!(guardian.released(u, g), Some(ShareKind::Secret));
        };
        for piece in &pieces[..2] {
            let step = guardian.handle_piece(T0, host, piece, &guardian_keys[0]);
            assert!(step.effects.is_empty() && step.faults.is_empty());
            release(&mut guardian, piece);
        }
        let busy = |guardian: &mut Guardian<2>| {
            let step = guardian.handle_piece(T0, host, &pieces[2], &guardian_keys[0]);
            step.effects.iter().any(|e| matches!(e, GuardianEffect::Busy { .. }))
        };
        assert!(busy(&mut guardian), "the wedge: every slot holds a released record");

        let (u1, u2) = (pieces[0].header.upgrade, pieces[1].header.upgrade);
        let deployer = Peer::Deployer(w.deployers[0].id());
        // Signed by the other deployer, or by the right one for a forged id.
        let mut forged = w.deployers[1].retirement(UpgradeId::new(w.deployers[1].id(), [0; 12])).unwrap();
        forged.upgrade = u1;
        let other = Retirement { upgrade: u2, signature: w.deployers[0].retirement(u1).unwrap().signature };
        for bad in [forged, other] {
            let step = guardian.handle_retirement(deployer, &bad);
            assert_eq!(step.faults.iter().map(|f| f.kind).collect::<Vec<_>>(), vec![FaultKind::ForgedRetirement]);
            assert!(step.effects.is_empty());
        }
        assert!(busy(&mut guardian), "a forged retirement freed a slot");
        assert_eq!(guardian.released(u1, g), Some(ShareKind::Secret));
        // A deployer signs only its own upgrades.
        assert_eq!(w.deployers[1].retirement(u1).map(|_| ()), Err(MisuseError::BadArgument));

        let step = guardian.handle_retirement(deployer, &w.deployers[0].retirement(u1).unwrap());
        assert!(step.faults.is_empty());
        assert_eq!(step.effects.to_vec(), vec![GuardianEffect::Retired { upgrade: u1 }]);
        assert_eq!(guardian.released(u1, g), None);
        assert!(!busy(&mut guardian), "the third upgrade's piece is kept once the first is retired");
        release(&mut guardian, &pieces[2]);
        // Retiring again is harmless and says nothing.
        let step = guardian.handle_retirement(deployer, &w.deployers[0].retirement(u1).unwrap());
        assert!(step.effects.is_empty() && step.faults.is_empty());
    }
}
