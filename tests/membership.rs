//! Membership change as an atomic upgrade: a piece carries its group's next
//! membership, and the group switches when the upgrade commits there, with
//! its version; later pieces must be built for the new membership, joining
//! replicas start by state transfer, and leaving ones open nothing more.

mod support;

use std::collections::BTreeMap;

use bft_upgrade::crypto::{Code, DeployerKey, ReplicaSecretKey};
use bft_upgrade::deployer::{Deployer, GroupTarget, UpgradePlan};
use bft_upgrade::error::MisuseError;
use bft_upgrade::group::{GroupConfig, GroupEffect, GroupReplica, Verdict};
use bft_upgrade::installer::{DefaultInstaller, InstallerEffect, InstallerOptions};
use bft_upgrade::step::{FaultKind, Instant, Peer, Step};
use bft_upgrade::wire::{
    DeployerId, Finish, GroupId, Membership, Message, NextMembership, Operation, Outcome, Piece, Refusal, Reply,
    ResourceId, UpgradeHeader, UpgradeId, WithKey,
};
use chacha20::ChaCha20Rng;
use rand_core::SeedableRng;
use support::fixture::{config, no_payload};

const GENESIS: Code = Code::from_bytes([3; 32]);
const ORIGIN: Peer = Peer::Installer(4);
const NOW: Instant = Instant(1_000);
const GROUP: GroupId = GroupId(1);

/// One group whose replicas sit at the indices of the membership in force;
/// a replica that left stays in `left` (its host would stop it).
struct Group {
    rng: ChaCha20Rng,
    deployer_key: DeployerKey,
    deployer: Deployer,
    config: GroupConfig,
    membership: Membership,
    /// Replica `i` of the membership in force and its key.
    replicas: Vec<(GroupReplica, ReplicaSecretKey)>,
    left: Vec<(GroupReplica, ReplicaSecretKey)>,
    chain: Code,
    seq: u64,
    pieces: BTreeMap<UpgradeId, Piece>,
    headers: BTreeMap<UpgradeId, UpgradeHeader>,
}

fn next(membership: &Membership) -> NextMembership {
    NextMembership { membership: membership.clone(), guardians: None }
}

impl Group {
    fn new(seed: u8, n: usize) -> Self {
        let mut rng = ChaCha20Rng::from_seed([seed; 32]);
        let deployer_key = DeployerKey::random(&mut rng);
        let deployer = Deployer::new(DeployerId(1), deployer_key.clone());
        let keys: Vec<ReplicaSecretKey> = (0..n).map(|_| ReplicaSecretKey::random(&mut rng)).collect();
        let membership = Membership::new(GROUP, &keys.iter().map(|k| k.public_key()).collect::<Vec<_>>()).unwrap();
        let config = config(&membership, &deployer, &GENESIS, None);
        let replicas = keys
            .into_iter()
            .enumerate()
            .map(|(i, k)| (GroupReplica::new(config.clone(), i as u8).unwrap(), k))
            .collect();
        Self {
            rng,
            deployer_key,
            deployer,
            config,
            membership,
            replicas,
            left: Vec::new(),
            chain: GENESIS,
            seq: 0,
            pieces: BTreeMap::new(),
            headers: BTreeMap::new(),
        }
    }

    /// The membership in force with fresh keys at `rotate`, the first
    /// `keep` kept and `add` fresh ones appended; the new keys, by index.
    fn change(&mut self, keep: usize, rotate: &[usize], add: usize) -> (Membership, BTreeMap<usize, ReplicaSecretKey>) {
        let mut fresh = BTreeMap::new();
        let mut pks: Vec<_> = self.membership.replicas[..keep].to_vec();
        for &i in rotate {
            let k = ReplicaSecretKey::random(&mut self.rng);
            pks[i] = k.public_key();
            fresh.insert(i, k);
        }
        for i in keep..keep + add {
            let k = ReplicaSecretKey::random(&mut self.rng);
            pks.push(k.public_key());
            fresh.insert(i, k);
        }
        (Membership::new(GROUP, &pks).unwrap(), fresh)
    }

    /// A one-group upgrade on the chain, changing resource `r` and, with
    /// `next`, the membership; its piece, its plan's commit and abort.
    fn upgrade(&mut self, r: u32, next: Option<&NextMembership>) -> (Piece, Operation, Operation) {
        self.seq += 1;
        self.upgrade_at(self.seq, r, next)
    }

    /// [`upgrade`](Self::upgrade) with order sequence `seq`.
    fn upgrade_at(&mut self, seq: u64, r: u32, next: Option<&NextMembership>) -> (Piece, Operation, Operation) {
        let groups = [GROUP];
        let plan = UpgradePlan::new(&mut self.rng, self.deployer.id(), seq, &groups).unwrap();
        let target = GroupTarget {
            membership: &self.membership,
            resources: &[ResourceId(r)],
            prev_version: &self.chain,
            guardians: None,
            payload: no_payload(),
            next,
        };
        let piece = plan.piece(&self.deployer, &target).unwrap();
        self.pieces.insert(piece.header.upgrade, piece.clone());
        self.headers.insert(piece.header.upgrade, plan.header().clone());
        (piece, plan.commit(), plan.abort())
    }

    /// Orders `op` at every replica of the membership in force.
    fn order(&mut self, op: &Operation) -> Vec<Step<GroupEffect>> {
        self.replicas.iter_mut().map(|(r, k)| r.handle_ordered(NOW, ORIGIN, op, k, |_| Verdict::Accept)).collect()
    }

    /// Orders a commit; the chain moves on and, if the upgrade changed the
    /// membership, the replicas that left move out and `joining` come in
    /// by state transfer from the `f' + 1` first kept replicas.
    fn commit(&mut self, op: &Operation, joining: BTreeMap<usize, ReplicaSecretKey>) -> Vec<Step<GroupEffect>> {
        let steps = self.order(op);
        let reconfigured: Vec<bool> = steps
            .iter()
            .map(|s| s.effects.iter().any(|e| matches!(e, GroupEffect::Apply { reconfigured: true, .. })))
            .collect();
        assert!(reconfigured.iter().all(|r| *r == reconfigured[0]), "the group switches as one");
        if let Operation::Finish(Finish { outcome: Outcome::Committed, code, .. }) = op {
            self.chain = code.clone();
        }
        if !reconfigured[0] {
            return steps;
        }
        let now = self.replicas[0].0.config().membership.clone();
        assert!(self.replicas.iter().all(|(r, _)| r.config().membership == now));
        let (mut staying, leaving): (Vec<_>, Vec<_>) = std::mem::take(&mut self.replicas)
            .into_iter()
            .partition(|(r, _)| r.is_member() && usize::from(r.index()) < now.n());
        self.left.extend(leaving);
        let trusted = {
            let peers: Vec<_> = staying.iter().take(usize::from(now.f) + 1).map(|(r, _)| r.replicated()).collect();
            assert!(peers.iter().all(|s| s.digest() == peers[0].digest()));
            peers[0].clone()
        };
        for (i, key) in joining {
            let (r, step) = GroupReplica::transfer(
                self.config.clone(),
                i as u8,
                &trusted,
                |u| self.pieces.get(&u),
                &mut WithKey(&key),
            )
            .unwrap();
            assert!(r.is_member());
            // Pieces held from before the change were not sealed for it:
            // no share, and nobody to blame.
            assert!(step.faults.is_empty(), "{:?}", step.faults);
            staying.push((r, key));
        }
        staying.sort_by_key(|(r, _)| r.index());
        assert_eq!(staying.len(), now.n());
        self.replicas = staying;
        self.membership = now;
        steps
    }

    fn digests_agree(&self) -> bool {
        self.replicas.iter().all(|(r, _)| r.replicated_digest() == self.replicas[0].0.replicated_digest())
    }
}

fn answers(steps: &[Step<GroupEffect>]) -> Vec<Reply> {
    steps
        .iter()
        .map(|s| {
            s.messages
                .iter()
                .find_map(|o| match &o.message {
                    Message::Answer(a) if o.to == ORIGIN => Some(a.reply.clone()),
                    _ => None,
                })
                .expect("an answer")
        })
        .collect()
}

fn accepted(steps: &[Step<GroupEffect>]) -> usize {
    answers(steps).iter().filter(|r| matches!(r, Reply::Accepted(_))).count()
}

/// An upgrade built for the membership in force commits at every replica.
fn an_upgrade_for_the_new_membership_commits(g: &mut Group, r: u32) {
    let (piece, commit, _) = g.upgrade(r, None);
    let n = g.membership.n();
    assert_eq!(accepted(&g.order(&Operation::PrepareInstall(piece.clone()))), n, "every member opens its box");
    let steps = g.commit(&commit, BTreeMap::new());
    assert!(steps.iter().all(|s| matches!(s.effects[..], [GroupEffect::Apply { reconfigured: false, .. }])));
    assert!(g.replicas.iter().all(|(r, _)| r.outcome(piece.header.upgrade) == Some(Outcome::Committed)));
    assert!(g.digests_agree());
}

#[test]
fn membership_grow_from_4_to_7_then_an_upgrade_for_7_commits() {
    let mut g = Group::new(1, 4);
    let (seven, joining) = g.change(4, &[], 3);
    let change = next(&seven);
    let (piece, commit, _) = g.upgrade(1, Some(&change));
    assert!(piece.header.resources.contains(&ResourceId::MEMBERSHIP), "membership is a resource");
    // Another piece of the same chain head, built for the four, held across
    // the change (no common resource).
    let (old, old_commit, _) = g.upgrade(2, None);
    assert_eq!(accepted(&g.order(&Operation::PrepareInstall(piece.clone()))), 4);
    assert_eq!(accepted(&g.order(&Operation::PrepareInstall(old.clone()))), 4);
    // Nothing switches before the commit.
    assert!(g.replicas.iter().all(|(r, _)| r.config().membership.n() == 4));
    g.commit(&commit, joining);
    assert_eq!(g.membership, seven);
    assert_eq!(g.replicas.len(), 7);
    assert!(g.replicas.iter().all(|(r, _)| r.version() == 1 && r.is_member()));
    assert!(g.digests_agree());
    // The old piece finishes with the four's shares; the three that joined
    // hold it without a share, and blame nobody.
    let steps = g.order(&Operation::PrepareInstall(old.clone()));
    assert!(steps.iter().all(|s| s.faults.is_empty()));
    let replies = answers(&steps);
    assert!(replies[..4].iter().all(|r| matches!(r, Reply::Accepted(_))), "{replies:?}");
    assert!(replies[4..].iter().all(|r| *r == Reply::NoShare), "{replies:?}");
    g.commit(&old_commit, BTreeMap::new());
    assert!(g.replicas.iter().all(|(r, _)| r.version() == 2));
    an_upgrade_for_the_new_membership_commits(&mut g, 3);
    assert!(g.replicas.iter().all(|(r, _)| r.version() == 3));
}

/// A piece of a one-group upgrade on the chain head, built for `m`.
fn piece_for(g: &mut Group, m: &Membership, r: u32) -> (Piece, Operation, Operation) {
    let current = std::mem::replace(&mut g.membership, m.clone());
    let built = g.upgrade(r, None);
    g.membership = current;
    built
}

#[test]
fn membership_a_piece_built_for_the_previous_membership_aborts_and_older_is_refused() {
    let mut g = Group::new(2, 4);
    let first = g.membership.clone();
    let (seven, joining) = g.change(4, &[], 3);
    let (piece, commit, _) = g.upgrade(1, Some(&next(&seven)));
    g.order(&Operation::PrepareInstall(piece));
    g.commit(&commit, joining);
    // Another deployer's piece built before the change, arriving after it:
    // held and rejected (the four old replicas' c shares), so its upgrade
    // aborts instead of stalling; the three that joined have no box.
    let (late, _, abort) = piece_for(&mut g, &first, 2);
    let steps = g.order(&Operation::PrepareInstall(late.clone()));
    assert!(steps.iter().all(|s| s.faults.is_empty()), "nobody to blame");
    let replies = answers(&steps);
    assert!(replies[..4].iter().all(|r| matches!(r, Reply::Rejected(_))), "{replies:?}");
    assert!(replies[4..].iter().all(|r| *r == Reply::NoShare), "{replies:?}");
    g.order(&abort);
    assert!(g.replicas.iter().all(|(r, _)| r.outcome(late.header.upgrade) == Some(Outcome::Aborted)));
    // The deployer's chain moves on to the abort's code.
    let Operation::Finish(Finish { outcome: Outcome::Aborted, code, .. }) = &abort else { unreachable!() };
    g.chain = code.clone();
    assert!(g.digests_agree());
    // Two changes on, the first membership is refused outright.
    let (rotated, joining) = g.change(7, &[6], 0);
    let (piece, commit, _) = g.upgrade(3, Some(&next(&rotated)));
    g.order(&Operation::PrepareInstall(piece));
    g.commit(&commit, joining);
    let (stale, _, _) = piece_for(&mut g, &first, 4);
    let before: Vec<_> = g.replicas.iter().map(|(r, _)| r.replicated_digest()).collect();
    let replies = answers(&g.order(&Operation::PrepareInstall(stale)));
    assert!(replies.iter().all(|r| *r == Reply::Refused(Refusal::WrongMembership)), "{replies:?}");
    assert_eq!(before, g.replicas.iter().map(|(r, _)| r.replicated_digest()).collect::<Vec<_>>());
}

#[test]
fn membership_shrink_from_7_to_4_then_an_upgrade_for_4_commits() {
    let mut g = Group::new(3, 7);
    let (four, joining) = g.change(4, &[], 0);
    assert!(joining.is_empty());
    let (piece, commit, _) = g.upgrade(1, Some(&next(&four)));
    assert_eq!(accepted(&g.order(&Operation::PrepareInstall(piece))), 7);
    g.commit(&commit, BTreeMap::new());
    assert_eq!(g.replicas.len(), 4);
    assert_eq!(g.left.len(), 3);
    assert!(g.left.iter().all(|(r, _)| !r.is_member()));
    // A replica that left and is still fed a later piece opens nothing and
    // blames nobody.
    let (later, _, _) = {
        let (p, c, a) = g.upgrade(2, None);
        g.seq -= 1;
        (p, c, a)
    };
    for (r, k) in &mut g.left {
        let step = r.handle_ordered(NOW, ORIGIN, &Operation::PrepareInstall(later.clone()), k, |_| Verdict::Accept);
        assert!(step.faults.is_empty(), "{:?}", step.faults);
        assert!(answers(&[step]) == [Reply::NoShare]);
    }
    g.pieces.remove(&later.header.upgrade);
    an_upgrade_for_the_new_membership_commits(&mut g, 2);
}

#[test]
fn membership_rotate_one_key_then_an_upgrade_for_the_new_key_commits() {
    let mut g = Group::new(4, 4);
    let (rotated, joining) = g.change(4, &[2], 0);
    assert_eq!(joining.keys().copied().collect::<Vec<_>>(), [2]);
    let (piece, commit, _) = g.upgrade(1, Some(&next(&rotated)));
    g.order(&Operation::PrepareInstall(piece));
    g.commit(&commit, joining);
    assert_eq!(g.left.len(), 1, "the old holder of key 2 left");
    assert_eq!(g.left[0].0.index(), 2);
    assert_eq!(g.replicas[2].1.public_key(), rotated.replicas[2]);
    an_upgrade_for_the_new_membership_commits(&mut g, 2);
}

#[test]
fn membership_two_changes_conflict_and_only_the_committed_one_applies() {
    let mut g = Group::new(5, 4);
    let (grow, joining) = g.change(4, &[], 3);
    let (rotate, _) = g.change(4, &[1], 0);
    // Both built on the same chain head, on unrelated ordinary resources.
    let (first, commit_first, _) = g.upgrade(1, Some(&next(&grow)));
    g.seq += 1;
    let (second, _, _) = g.upgrade_at(0, 2, Some(&next(&rotate)));
    assert_eq!(accepted(&g.order(&Operation::PrepareInstall(first.clone()))), 4);
    // The second change conflicts on the membership: held, nothing released.
    let replies = answers(&g.order(&Operation::PrepareInstall(second.clone())));
    assert!(replies.iter().all(|r| *r == Reply::Conflict), "{replies:?}");
    g.commit(&commit_first, joining);
    assert_eq!(g.membership, grow, "the committed change applies");
    // The loser moved to C with the commit: it can only abort now.
    assert!(g.replicas[..4].iter().all(|(r, _)| r.holds(second.header.upgrade) == Some(false)));
}

#[test]
fn membership_an_abrupt_or_unlisted_change_is_refused_by_deployer_and_group() {
    let mut g = Group::new(6, 4);
    // Two of four keys replaced: only 2 kept, but f + 1 + f' = 3 are needed.
    let (abrupt, _) = g.change(4, &[0, 1], 0);
    let (gentle, _) = g.change(4, &[3], 0);
    let change = next(&abrupt);
    let groups = [GROUP];
    let plan = UpgradePlan::new(&mut g.rng, g.deployer.id(), 1, &groups).unwrap();
    let target = GroupTarget {
        membership: &g.membership,
        resources: &[ResourceId(1)],
        prev_version: &g.chain,
        guardians: None,
        payload: no_payload(),
        next: None,
    };
    assert_eq!(
        plan.piece(&g.deployer, &GroupTarget { next: Some(&change), ..target.clone() }).err(),
        Some(MisuseError::BadArgument)
    );
    // Signed anyway (a faulty deployer), or without the membership resource.
    let mut pieces = Vec::new();
    for (change, resources) in
        [(next(&abrupt), vec![ResourceId(1), ResourceId::MEMBERSHIP]), (next(&gentle), vec![ResourceId(1)])]
    {
        let mut piece = plan.piece(&g.deployer, &target).unwrap();
        piece.header.next = Some(change);
        piece.header.resources = heapless::Vec::from_slice(&resources).unwrap();
        piece.signature = g.deployer_key.sign(&piece.header.digest()).unwrap();
        pieces.push(piece);
    }
    let before = g.replicas[0].0.replicated_digest();
    for piece in pieces {
        let replies = answers(&g.order(&Operation::PrepareInstall(piece)));
        assert!(replies.iter().all(|r| *r == Reply::Refused(Refusal::BadMembership)), "{replies:?}");
    }
    assert_eq!(g.replicas[0].0.replicated_digest(), before);
}

#[test]
fn membership_a_forged_repeat_cannot_swap_the_staged_change() {
    let mut g = Group::new(7, 4);
    let (grow, joining) = g.change(4, &[], 3);
    let (other, _) = g.change(4, &[3], 0);
    // A conflicting piece (same resource), released first, holds back the
    // change, which is ordered before it (order sequence 0).
    let (blocker, _, abort_blocker) = g.upgrade(9, None);
    g.seq += 1;
    let (piece, commit, _) = g.upgrade_at(0, 9, Some(&next(&grow)));
    assert_eq!(accepted(&g.order(&Operation::PrepareInstall(blocker))), 4);
    assert!(answers(&g.order(&Operation::PrepareInstall(piece.clone()))).iter().all(|r| *r == Reply::Conflict));
    g.order(&abort_blocker);
    // Re-presented with another change (no signature is checked on a held
    // piece): a fault, and still nothing released.
    let mut forged = piece.clone();
    forged.header.next = Some(next(&other));
    let steps = g.order(&Operation::PrepareInstall(forged));
    assert!(steps.iter().all(|s| s.faults.iter().any(|f| f.kind == FaultKind::ForgedPiece && f.peer == ORIGIN)));
    assert!(answers(&steps).iter().all(|r| *r == Reply::Conflict));
    // The genuine piece is released, and its change is what commits.
    assert_eq!(accepted(&g.order(&Operation::PrepareInstall(piece))), 4);
    g.commit(&commit, joining);
    assert_eq!(g.membership, grow);
}

#[test]
fn membership_a_replica_wiped_before_the_commit_switches_with_its_group() {
    let mut g = Group::new(8, 4);
    let (seven, joining) = g.change(4, &[], 3);
    let (piece, commit, _) = g.upgrade(1, Some(&next(&seven)));
    g.order(&Operation::PrepareInstall(piece));
    // Replica 3 is wiped with the change staged, and rejoins from 0..=1.
    let state = g.replicas[0].0.replicated();
    assert_eq!(state.digest(), g.replicas[1].0.replicated_digest());
    let key = g.replicas[3].1.clone();
    let (r, step) =
        GroupReplica::transfer(g.config.clone(), 3, &state, |u| g.pieces.get(&u), &mut WithKey(&key)).unwrap();
    assert!(step.faults.is_empty());
    assert_eq!(r.replicated_digest(), g.replicas[3].0.replicated_digest());
    g.replicas[3].0 = r;
    g.commit(&commit, joining);
    assert_eq!(g.membership, seven);
    assert!(g.digests_agree());
}

#[test]
fn membership_an_installer_hears_replicas_that_joined_without_blaming_them() {
    let mut g = Group::new(9, 4);
    let (seven, joining) = g.change(4, &[], 3);
    let (piece, commit, _) = g.upgrade(1, Some(&next(&seven)));
    let (old, _, _) = g.upgrade(2, None);
    g.order(&Operation::PrepareInstall(piece));
    g.order(&Operation::PrepareInstall(old.clone()));
    g.commit(&commit, joining);
    // An installer of the old piece, built for four, hears all seven.
    let header = g.headers[&old.header.upgrade].clone();
    let mut inst = DefaultInstaller::new(1, header, &[(GROUP, 1)], InstallerOptions::default()).unwrap();
    let _ = inst.start(NOW);
    let steps = g.order(&Operation::PrepareInstall(old.clone()));
    let mut decided = Vec::new();
    for (i, reply) in answers(&steps).into_iter().enumerate().rev() {
        let answer = bft_upgrade::wire::Answer { upgrade: old.header.upgrade, group: GROUP, replica: i as u8, reply };
        let step = inst.handle_answer(NOW, Peer::Replica { group: GROUP, index: i as u8 }, &answer, &old).unwrap();
        assert!(step.faults.is_empty(), "replica {i}: {:?}", step.faults);
        decided.extend(step.effects.iter().filter(|e| matches!(e, InstallerEffect::Decided { .. })).cloned());
    }
    assert_eq!(decided.len(), 1, "the four old replicas' shares decide it");
    assert_eq!(inst.decided().map(|(o, _)| o), Some(Outcome::Committed));
    // A code from a replica that joined decides a fresh installer, and the
    // step carries the installer's new deadline (found by fuzz/role_installer).
    let header = g.headers[&old.header.upgrade].clone();
    let mut fresh = DefaultInstaller::new(2, header.clone(), &[(GROUP, 1)], InstallerOptions::default()).unwrap();
    let _ = fresh.start(NOW);
    let trigger = inst.decided().map(|(_, c)| c.clone()).expect("decided");
    let answer = bft_upgrade::wire::Answer {
        upgrade: old.header.upgrade,
        group: GROUP,
        replica: 6,
        reply: Reply::Finished(Outcome::Committed, trigger),
    };
    let step = fresh.handle_answer(NOW, Peer::Replica { group: GROUP, index: 6 }, &answer, &old).unwrap();
    assert!(step.faults.is_empty());
    assert_eq!(fresh.decided().map(|(o, _)| o), Some(Outcome::Committed));
    assert_eq!(step.deadline, fresh.deadline());
}

#[test]
fn membership_guardians_follow_the_change_of_a_group_in_their_custody() {
    use bft_upgrade::guardian::{GuardedGroup, Guardian, GuardianConfig};
    use bft_upgrade::wire::Finish;
    let mut rng = ChaCha20Rng::from_seed([10; 32]);
    let (_, membership) = support::fixture::group_keys(&mut rng, GROUP, 4);
    let (guardian_keys, set) = support::fixture::guardian_set(&mut rng, 1..=4);
    let deployer = Deployer::new(DeployerId(1), DeployerKey::random(&mut rng));
    let mut pks = membership.replicas.to_vec();
    pks[3] = ReplicaSecretKey::random(&mut rng).public_key();
    let rotated = Membership::new(GROUP, &pks).unwrap();
    let ids = bft_upgrade::group::GuardianIds { f: set.f, ids: set.members.iter().map(|(id, _)| *id).collect() };
    let change = NextMembership { membership: rotated.clone(), guardians: Some(ids) };
    let groups = [GROUP];
    let build = |rng: &mut ChaCha20Rng, seq, m: &Membership, next, prev: &Code| {
        let plan = UpgradePlan::new(rng, deployer.id(), seq, &groups).unwrap();
        let target = GroupTarget {
            membership: m,
            resources: &[],
            prev_version: prev,
            guardians: Some(&set),
            payload: no_payload(),
            next,
        };
        (plan.piece(&deployer, &target).unwrap(), plan.trigger_code().clone())
    };
    let (piece, trigger) = build(&mut rng, 1, &membership, Some(&change), &GENESIS);
    let mut config = GuardianConfig { id: 1, deployers: heapless::Vec::new(), groups: heapless::Vec::new() };
    config.deployers.push((deployer.id(), deployer.public_key())).unwrap();
    config.groups.push(GuardedGroup { group: GROUP, members: membership.digest() }).unwrap();
    let mut guardian: Guardian<8> = Guardian::new(config);
    let from = Peer::Replica { group: GROUP, index: 0 };
    assert!(guardian.handle_piece(NOW, from, &piece, &guardian_keys[0]).faults.is_empty());
    // Not before the commit is learned.
    assert_eq!(guardian.config().groups[0].members, membership.digest());
    let learned = Message::Learned {
        group: GROUP,
        diffused: Finish { upgrade: piece.header.upgrade, outcome: Outcome::Committed, code: trigger.clone() },
    };
    let _ = guardian.handle_message(NOW, from, &learned);
    assert_eq!(guardian.config().groups[0].members, rotated.digest());
    // Through the host layer the change is written: a guardian that
    // crashes after learning it still follows it (it used to come back with
    // the old membership and refuse every later piece as forged).
    {
        use bft_upgrade::host::{GuardianHost, MemStore};
        let fresh = || {
            let mut config = GuardianConfig { id: 1, deployers: heapless::Vec::new(), groups: heapless::Vec::new() };
            config.deployers.push((deployer.id(), deployer.public_key())).unwrap();
            config.groups.push(GuardedGroup { group: GROUP, members: membership.digest() }).unwrap();
            Guardian::<8>::new(config)
        };
        let mut host = GuardianHost::open(MemStore::default(), fresh).unwrap();
        let mut sent = Vec::new();
        let report = host.piece(NOW, from, &piece, &guardian_keys[0], &mut sent).unwrap();
        assert!(report.faults.faults.is_empty());
        host.message(NOW, from, &learned, &mut sent).unwrap();
        assert_eq!(host.role().config().groups[0].members, rotated.digest());
        host.reopen(fresh).unwrap();
        assert_eq!(host.role().config().groups[0].members, rotated.digest(), "the change was not written");
    }
    // Later pieces are for the new membership; one for the old is forged.
    let (later, _) = build(&mut rng, 2, &rotated, None, &trigger);
    assert!(guardian.handle_piece(NOW, from, &later, &guardian_keys[0]).faults.is_empty());
    let (old, _) = build(&mut rng, 3, &membership, None, &trigger);
    let step = guardian.handle_piece(NOW, from, &old, &guardian_keys[0]);
    assert!(step.faults.iter().any(|f| f.kind == FaultKind::ForgedPiece));
    // A guardian that never held the change's piece is told by its host.
    let mut config = GuardianConfig { id: 2, deployers: heapless::Vec::new(), groups: heapless::Vec::new() };
    config.deployers.push((deployer.id(), deployer.public_key())).unwrap();
    config.groups.push(GuardedGroup { group: GROUP, members: membership.digest() }).unwrap();
    let mut missed: Guardian<8> = Guardian::new(config);
    assert!(missed
        .handle_piece(NOW, from, &later, &guardian_keys[1])
        .faults
        .iter()
        .any(|f| f.kind == FaultKind::ForgedPiece));
    assert!(missed.follow(GROUP, rotated.digest()));
    assert!(!missed.follow(GroupId(99), rotated.digest()));
    assert!(missed.handle_piece(NOW, from, &later, &guardian_keys[1]).faults.is_empty());
}

#[test]
fn membership_the_simulator_rotates_keys_and_resizes_groups_under_faults() {
    use bft_upgrade::sim::{Swarm, World};
    // Replica custody, and guardian custody (the default run).
    for swarm in [Swarm { guardians: 0, ..Swarm::default() }, Swarm::default()] {
        let (mut rotated, mut joined, mut left) = (0, 0, 0);
        for seed in 0..20 {
            let r = World::new(swarm.config(seed)).run();
            assert!(r.violation.is_none() && r.liveness.is_none(), "seed {seed}: {:?} {:?}", r.violation, r.liveness);
            rotated += r.metrics.rotations;
            joined += r.metrics.joined;
            left += r.metrics.left;
        }
        // One key at each of the 12 groups a run, where the rotation commits.
        assert!(rotated >= 12 * 10, "only {rotated} keys rotated in 20 runs of {swarm:?}");
        // Two groups grow 4 -> 7 and then shrink back, where those commit:
        // three replicas join each and three leave.
        assert!(joined >= 2 * 3 * 10, "only {joined} replicas joined in 20 runs of {swarm:?}");
        assert!(left >= 2 * 3 * 10, "only {left} replicas left in 20 runs of {swarm:?}");
    }
}
