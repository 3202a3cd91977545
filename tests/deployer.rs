//! A deployer that restarts: a plan saved as a `SavedPlan` (and its group
//! list) and restored rebuilds every piece byte-identically, its
//! `VersionChain` survives the restart, and the next upgrade built on the
//! restored chain commits at real group replicas.

mod support;

use bft_upgrade::crypto::{Code, DeployerKey, ReplicaSecretKey};
use bft_upgrade::deployer::{Deployer, GroupTarget, SavedPlan, UpgradePlan, VersionChain};
use bft_upgrade::error::MisuseError;
use bft_upgrade::group::{GroupReplica, Verdict};
use bft_upgrade::step::{Instant, Peer};
use bft_upgrade::wire::{GroupId, GuardianSet, Membership, Operation, Outcome, Piece, ResourceId};
use chacha20::ChaCha20Rng;
use rand_core::SeedableRng;
use support::fixture::{config, group_keys, guardian_set, no_payload};

const GENESIS: Code = Code::from_bytes([7; 32]);
const ORIGIN: Peer = Peer::Installer(1);

/// Three groups of four replicas, one deployer.
struct Cluster {
    deployer: Deployer,
    keys: Vec<Vec<ReplicaSecretKey>>,
    memberships: Vec<Membership>,
    replicas: Vec<Vec<GroupReplica>>,
    guardians: GuardianSet,
}

impl Cluster {
    fn new(rng: &mut ChaCha20Rng) -> Self {
        let deployer = Deployer::new(bft_upgrade::wire::DeployerId(3), DeployerKey::random(rng));
        let (mut keys, mut memberships, mut replicas) = (Vec::new(), Vec::new(), Vec::new());
        for g in 1..=3 {
            let (k, m) = group_keys(rng, GroupId(g), 4);
            let cfg = config(&m, &deployer, &GENESIS, None);
            replicas.push((0..4).map(|i| GroupReplica::new(cfg.clone(), i).unwrap()).collect());
            keys.push(k);
            memberships.push(m);
        }
        let (_, guardians) = guardian_set(rng, 1..=4);
        Self { deployer, keys, memberships, replicas, guardians }
    }

    fn groups(&self) -> Vec<GroupId> {
        self.memberships.iter().map(|m| m.group).collect()
    }

    fn piece(&self, plan: &UpgradePlan<'_>, gi: usize, prev: &Code) -> Piece {
        let target = GroupTarget {
            membership: &self.memberships[gi],
            resources: &[ResourceId(1)],
            prev_version: prev,
            guardians: None,
            payload: no_payload(),
            next: None,
        };
        plan.piece(&self.deployer, &target).unwrap()
    }

    /// Orders `op` at every replica of group `gi`.
    fn order(&mut self, gi: usize, op: &Operation) {
        for (r, k) in self.replicas[gi].iter_mut().zip(&self.keys[gi]) {
            let _ = r.handle_ordered(Instant(1_000), ORIGIN, op, k, |_| Verdict::Accept);
        }
    }

    fn outcomes(&self, upgrade: bft_upgrade::wire::UpgradeId) -> Vec<Option<Outcome>> {
        self.replicas.iter().flatten().map(|r| r.outcome(upgrade)).collect()
    }
}

/// What a deployer process writes before handing out a bundle: the plan,
/// its groups and the chain, through serde.
fn persist(plan: &UpgradePlan<'_>, chain: &VersionChain<8>) -> Vec<u8> {
    let record = (plan.saved(), plan.groups().to_vec(), chain.clone());
    serde_json::to_vec(&record).unwrap()
}

fn reload(bytes: &[u8]) -> (SavedPlan, Vec<GroupId>, VersionChain<8>) {
    serde_json::from_slice(bytes).unwrap()
}

#[test]
fn deployer_restart_rebuilds_every_piece_byte_identically() {
    let mut rng = ChaCha20Rng::from_seed([1; 32]);
    let c = Cluster::new(&mut rng);
    let groups = c.groups();
    let chain = VersionChain::<8>::new(GENESIS);
    let plan = UpgradePlan::new(&mut rng, c.deployer.id(), 5, &groups).unwrap();
    let pieces: Vec<Piece> = (0..3).map(|gi| c.piece(&plan, gi, &GENESIS)).collect();
    let bytes = persist(&plan, &chain);
    let header = plan.header().clone();
    let (trigger, cancel) = (plan.trigger_code().clone(), plan.cancel_code().clone());
    drop(plan);

    let (saved, groups, _) = reload(&bytes);
    let restored = UpgradePlan::restore(&saved, &groups).unwrap();
    assert_eq!(restored.header(), &header);
    assert_eq!((restored.trigger_code(), restored.cancel_code()), (&trigger, &cancel));
    for (gi, piece) in pieces.iter().enumerate() {
        assert_eq!(&c.piece(&restored, gi, &GENESIS), piece, "group {gi}'s piece rebuilt");
    }

    // Restoring over another group list is refused (τ would differ).
    assert_eq!(UpgradePlan::restore(&saved, &groups[..2]).err(), Some(MisuseError::BadArgument));
    // The master seed never shows in Debug.
    let shown = format!("{saved:?}");
    assert!(shown.contains("SavedPlan") && !shown.contains("master"), "{shown}");
}

#[test]
fn deployer_restart_never_reuses_an_ephemeral_key_for_other_contents() {
    // The ephemeral key is derived, not drawn; a piece built for another
    // membership, custody or base must get another key, or one key would
    // seal different contents under the same box binding.
    let mut rng = ChaCha20Rng::from_seed([2; 32]);
    let c = Cluster::new(&mut rng);
    let groups = c.groups();
    let plan = UpgradePlan::new(&mut rng, c.deployer.id(), 1, &groups).unwrap();
    let base = c.piece(&plan, 0, &GENESIS);
    let other_base = c.piece(&plan, 0, &Code::from_bytes([9; 32]));
    let guarded = plan
        .piece(
            &c.deployer,
            &GroupTarget {
                membership: &c.memberships[0],
                resources: &[ResourceId(1)],
                prev_version: &GENESIS,
                guardians: Some(&c.guardians),
                payload: no_payload(),
                next: None,
            },
        )
        .unwrap();
    let (_, grown) = group_keys(&mut rng, GroupId(1), 7);
    let regrown = plan
        .piece(
            &c.deployer,
            &GroupTarget {
                membership: &grown,
                resources: &[ResourceId(1)],
                prev_version: &GENESIS,
                guardians: None,
                payload: no_payload(),
                next: None,
            },
        )
        .unwrap();
    let e = |p: &Piece| p.header.ephemeral.to_compressed();
    let all = [e(&base), e(&other_base), e(&guarded), e(&regrown)];
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            assert_ne!(a, b);
        }
    }
    // Two plans never share one either (their master seeds differ).
    let plan2 = UpgradePlan::new(&mut rng, c.deployer.id(), 1, &groups).unwrap();
    assert_ne!(e(&c.piece(&plan2, 0, &GENESIS)), e(&base));
}

#[test]
fn deployer_restart_after_a_commit_advances_its_chain_and_the_next_upgrade_commits() {
    let mut rng = ChaCha20Rng::from_seed([3; 32]);
    let mut c = Cluster::new(&mut rng);
    let groups = c.groups();
    let chain = VersionChain::<8>::new(GENESIS);
    let plan = UpgradePlan::new(&mut rng, c.deployer.id(), 1, &groups).unwrap();
    let upgrade = plan.header().upgrade;
    let pieces: Vec<Piece> = (0..3).map(|gi| c.piece(&plan, gi, chain.prev(groups[gi]))).collect();
    let bytes = persist(&plan, &chain);
    for (gi, piece) in pieces.iter().enumerate() {
        c.order(gi, &Operation::PrepareInstall(piece.clone()));
        c.order(gi, &plan.commit());
    }
    assert!(c.outcomes(upgrade).iter().all(|o| *o == Some(Outcome::Committed)));
    drop(plan);

    // Restarted: the plan and chain come back from the record, the chain
    // advances to τ, and the next upgrade chains from it.
    let (saved, groups, mut chain) = reload(&bytes);
    let restored = UpgradePlan::restore(&saved, &groups).unwrap();
    chain.advance(&restored, Outcome::Committed).unwrap();
    for g in &groups {
        assert_eq!(chain.prev(*g), restored.trigger_code());
    }
    let chain: VersionChain<8> = serde_json::from_slice(&serde_json::to_vec(&chain).unwrap()).unwrap();

    let next = UpgradePlan::new(&mut rng, c.deployer.id(), 2, &groups).unwrap();
    for (gi, g) in groups.iter().enumerate() {
        let piece = c.piece(&next, gi, chain.prev(*g));
        c.order(gi, &Operation::PrepareInstall(piece));
        c.order(gi, &next.commit());
    }
    assert!(c.outcomes(next.header().upgrade).iter().all(|o| *o == Some(Outcome::Committed)));
    // A piece on the chain the restart would have lost (genesis) is refused.
    let stale = UpgradePlan::new(&mut rng, c.deployer.id(), 3, &groups).unwrap();
    let piece = c.piece(&stale, 0, &GENESIS);
    c.order(0, &Operation::PrepareInstall(piece));
    assert!(c.replicas[0].iter().all(|r| r.holds(stale.header().upgrade).is_none()));
}

#[test]
fn deployer_restart_after_a_refusal_aborts_its_upgrade() {
    // Group 3 refuses the piece for good (it was built on a code the group
    // never had), so τ can never be assembled: the restarted deployer may
    // abort with `c`, each group after its piece, and its chain then
    // advances to `c` everywhere.
    let mut rng = ChaCha20Rng::from_seed([4; 32]);
    let mut c = Cluster::new(&mut rng);
    let groups = c.groups();
    let chain = VersionChain::<8>::new(GENESIS);
    let plan = UpgradePlan::new(&mut rng, c.deployer.id(), 1, &groups).unwrap();
    let upgrade = plan.header().upgrade;
    let bases = [GENESIS, GENESIS, Code::from_bytes([0xEE; 32])];
    let pieces: Vec<Piece> = (0..3).map(|gi| c.piece(&plan, gi, &bases[gi])).collect();
    let bytes = persist(&plan, &chain);
    for (gi, piece) in pieces.iter().enumerate() {
        c.order(gi, &Operation::PrepareInstall(piece.clone()));
    }
    assert!(c.replicas[2].iter().all(|r| r.holds(upgrade).is_none()), "group 3 refused");
    drop(plan);

    let (saved, groups, mut chain) = reload(&bytes);
    let restored = UpgradePlan::restore(&saved, &groups).unwrap();
    for (gi, piece) in pieces.iter().enumerate() {
        c.order(gi, &Operation::PrepareInstall(piece.clone()));
        c.order(gi, &restored.abort());
    }
    // Groups 1 and 2 aborted; group 3 never held the piece.
    for gi in 0..2 {
        assert!(c.replicas[gi].iter().all(|r| r.outcome(upgrade) == Some(Outcome::Aborted)));
        assert!(c.replicas[gi].iter().all(|r| r.version_code(c.deployer.id()) == Some(restored.cancel_code())));
    }
    // Only the groups that held the piece moved to `c`; group 3 is still at
    // genesis.
    for g in &groups[..2] {
        chain.record(*g, restored.code(Outcome::Aborted)).unwrap();
    }
    assert_eq!(chain.prev(groups[2]), &GENESIS);
    assert!(c.replicas[2].iter().all(|r| r.version_code(c.deployer.id()) == Some(&GENESIS)));
    let two = &groups[..2];
    let next = UpgradePlan::new(&mut rng, c.deployer.id(), 2, two).unwrap();
    for (gi, g) in two.iter().enumerate() {
        let piece = c.piece(&next, gi, chain.prev(*g));
        c.order(gi, &Operation::PrepareInstall(piece));
        c.order(gi, &next.commit());
    }
    let done = c.outcomes(next.header().upgrade);
    assert!(done[..8].iter().all(|o| *o == Some(Outcome::Committed)), "{done:?}");
}

/// `UpgradePlan::pieces` on one, two and four threads gives, in order, the
/// pieces and errors `piece` gives one at a time: mixed group sizes, replica
/// and guardian custody, and a target the plan does not cover.
#[test]
fn parallel_pieces_are_the_sequential_pieces_byte_for_byte() {
    let mut rng = ChaCha20Rng::from_seed([21; 32]);
    let deployer = Deployer::new(bft_upgrade::wire::DeployerId(3), DeployerKey::random(&mut rng));
    let memberships: Vec<Membership> =
        (1..=24).map(|g| group_keys(&mut rng, GroupId(g), [4, 7, 1, 10][g as usize % 4]).1).collect();
    let (_, guardians) = guardian_set(&mut rng, 1..=4);
    let stranger = group_keys(&mut rng, GroupId(99), 4).1;
    let ids: Vec<GroupId> = memberships.iter().map(|m| m.group).collect();
    let plan = UpgradePlan::new(&mut rng, deployer.id(), 5, &ids).unwrap();
    let genesis = GENESIS;
    let mut targets: Vec<GroupTarget> = memberships
        .iter()
        .enumerate()
        .map(|(i, m)| GroupTarget {
            membership: m,
            resources: &[ResourceId(1)],
            prev_version: &genesis,
            guardians: (i % 3 == 0).then_some(&guardians),
            payload: no_payload(),
            next: None,
        })
        .collect();
    targets.insert(11, GroupTarget { membership: &stranger, ..targets[0].clone() });
    let sequential: Vec<Result<Piece, MisuseError>> = targets.iter().map(|t| plan.piece(&deployer, t)).collect();
    assert_eq!(sequential[11], Err(MisuseError::OutOfRange));
    assert_eq!(sequential.iter().filter(|p| p.is_ok()).count(), 24);
    let bytes = |pieces: &[Result<Piece, MisuseError>]| -> Vec<Option<Vec<u8>>> {
        pieces.iter().map(|p| p.as_ref().ok().map(|p| serde_json::to_vec(p).unwrap())).collect()
    };
    for threads in [1, 2, 4] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let parallel = pool.install(|| plan.pieces(&deployer, &targets));
        assert_eq!(parallel, sequential, "{threads} threads");
        assert_eq!(bytes(&parallel), bytes(&sequential), "{threads} threads");
    }
}

#[test]
fn replicated_digest_agrees_across_replicas_and_tracks_ordered_state() {
    // The replicas' own shares differ, their replicated state does not.
    let mut rng = ChaCha20Rng::from_seed([5; 32]);
    let mut c = Cluster::new(&mut rng);
    let groups = c.groups();
    let digests = |c: &Cluster| -> Vec<[u8; 32]> { c.replicas[0].iter().map(|r| r.replicated_digest().0).collect() };
    let fresh = digests(&c);
    assert!(fresh.iter().all(|d| *d == fresh[0]));
    // Two groups' digests differ (the binding names the group).
    assert_ne!(c.replicas[1][0].replicated_digest().0, fresh[0]);

    let plan = UpgradePlan::new(&mut rng, c.deployer.id(), 1, &groups).unwrap();
    let piece = c.piece(&plan, 0, &GENESIS);
    c.order(0, &Operation::PrepareInstall(piece));
    let prepared = digests(&c);
    assert!(prepared.iter().all(|d| *d == prepared[0]));
    assert_ne!(prepared[0], fresh[0]);

    // One replica alone executing the commit diverges from the others.
    let key = &c.keys[0][2];
    let _ = c.replicas[0][2].handle_ordered(Instant(1_000), ORIGIN, &plan.commit(), key, |_| Verdict::Accept);
    let split = digests(&c);
    assert_ne!(split[2], split[0]);
    assert_eq!(split[0], prepared[0]);
}

// ---- the host layer's deployer: chain, sequence and plan in one record ----

mod deployer_host {
    use super::*;
    use bft_upgrade::host::{DeployerHost, HostError, MemStore};
    use bft_upgrade::wire::{Message, Refusal, Reply, UpgradeId};

    type Host = DeployerHost<MemStore, 8>;

    impl Cluster {
        /// Orders `op` at every replica of group `gi`; the replies they
        /// sent back to the origin.
        fn replies(&mut self, gi: usize, op: &Operation) -> Vec<Reply> {
            let mut out = Vec::new();
            for (r, k) in self.replicas[gi].iter_mut().zip(&self.keys[gi]) {
                let step = r.handle_ordered(Instant(1_000), ORIGIN, op, k, |_| Verdict::Accept);
                for m in &step.messages {
                    if let Message::Answer(a) = &m.message {
                        out.push(a.reply.clone());
                    }
                }
            }
            out
        }

        /// Every group's piece of the host's upgrade in flight, on the
        /// host's chain.
        fn pieces(&self, host: &Host) -> Vec<Piece> {
            let plan = host.plan().unwrap().unwrap();
            self.groups().iter().enumerate().map(|(gi, g)| self.piece(&plan, gi, host.prev(*g))).collect()
        }

        /// Prepares and commits the host's upgrade at every group and
        /// reports it finished.
        fn install(&mut self, host: &mut Host) -> UpgradeId {
            let upgrade = host.pending().unwrap();
            let (commit, tau) = {
                let plan = host.plan().unwrap().unwrap();
                (plan.commit(), plan.trigger_code().clone())
            };
            for (gi, piece) in self.pieces(host).into_iter().enumerate() {
                self.order(gi, &Operation::PrepareInstall(piece));
                self.order(gi, &commit);
            }
            assert!(self.outcomes(upgrade).iter().all(|o| *o == Some(Outcome::Committed)));
            host.finished(upgrade, Outcome::Committed, &tau).unwrap();
            upgrade
        }
    }

    fn misuse(e: HostError<core::convert::Infallible>) -> MisuseError {
        match e {
            HostError::Misuse(m) => m,
            other => panic!("not misuse: {other}"),
        }
    }

    #[test]
    fn deployer_restart_through_the_host_rebuilds_its_pieces_and_chains_five_upgrades() {
        let mut rng = ChaCha20Rng::from_seed([11; 32]);
        let mut c = Cluster::new(&mut rng);
        let groups = c.groups();
        let mut host = Host::open(MemStore::default(), "deployer", GENESIS).unwrap();
        for round in 1..=5u8 {
            let upgrade = host.begin(&mut rng, c.deployer.id(), &groups).unwrap();
            let before = c.pieces(&host);
            // The process dies after handing out the bundle; it comes back
            // from its store with the same plan and the same pieces.
            let store = host.into_store();
            host = Host::open(store, "deployer", GENESIS).unwrap();
            assert_eq!(host.pending(), Some(upgrade));
            assert_eq!(c.pieces(&host), before, "round {round}: a restart changed a piece");
            assert_eq!(c.install(&mut host), upgrade);
            let store = host.into_store();
            host = Host::open(store, "deployer", GENESIS).unwrap();
            assert_eq!(host.last(), Some((upgrade, Outcome::Committed)));
            assert!(host.pending().is_none());
            for (gi, g) in groups.iter().enumerate() {
                let at = c.replicas[gi][0].version_code(c.deployer.id()).unwrap();
                assert_eq!(host.prev(*g), at, "round {round}: the chain is where group {gi} is");
            }
        }
        // Five upgrades, five order sequence numbers.
        assert_eq!(host.store().commits(), 10);
    }

    #[test]
    fn deployer_host_takes_one_upgrade_at_a_time_and_only_its_own_codes() {
        let mut rng = ChaCha20Rng::from_seed([12; 32]);
        let c = Cluster::new(&mut rng);
        let groups = c.groups();
        let mut host = Host::open(MemStore::default(), "deployer", GENESIS).unwrap();
        let upgrade = host.begin(&mut rng, c.deployer.id(), &groups).unwrap();
        let commits = host.store().commits();
        assert_eq!(misuse(host.begin(&mut rng, c.deployer.id(), &groups).unwrap_err()), MisuseError::WrongState);
        let (tau, cancel) = {
            let plan = host.plan().unwrap().unwrap();
            (plan.trigger_code().clone(), plan.cancel_code().clone())
        };
        // An outcome with the other outcome's code, or any other code, is
        // refused and changes nothing.
        for (o, code) in [(Outcome::Committed, &cancel), (Outcome::Aborted, &tau), (Outcome::Committed, &GENESIS)] {
            assert_eq!(misuse(host.finished(upgrade, o, code).unwrap_err()), MisuseError::BadArgument);
        }
        let other = UpgradeId([9; 16]);
        assert_eq!(misuse(host.finished(other, Outcome::Committed, &tau).unwrap_err()), MisuseError::WrongState);
        assert_eq!(host.store().commits(), commits, "a refused call wrote nothing");
        assert_eq!(host.pending(), Some(upgrade));
        for g in &groups {
            assert_eq!(host.prev(*g), &GENESIS);
        }
        host.finished(upgrade, Outcome::Aborted, &cancel).unwrap();
        // Told twice (an installer restarted after reporting): no-op.
        host.finished(upgrade, Outcome::Aborted, &cancel).unwrap();
        assert_eq!(host.store().commits(), commits + 1, "the repeat wrote nothing");
        for g in &groups {
            assert_eq!(host.prev(*g), &cancel);
        }
        // A group's code learned from the group itself (a deployer behind
        // its groups), only with nothing in flight.
        host.learned(groups[0], &tau).unwrap();
        assert_eq!(host.prev(groups[0]), &tau);
        host.learned(groups[0], &cancel).unwrap();
        // The other outcome for a finished upgrade is not taken.
        assert_eq!(misuse(host.finished(upgrade, Outcome::Committed, &tau).unwrap_err()), MisuseError::WrongState);
        assert!(host.begin(&mut rng, c.deployer.id(), &groups).is_ok());
        assert_eq!(misuse(host.learned(groups[0], &tau).unwrap_err()), MisuseError::WrongState);
    }

    #[test]
    fn deployer_host_aborts_its_upgrade_only_after_a_refusal_for_good() {
        let mut rng = ChaCha20Rng::from_seed([13; 32]);
        let mut c = Cluster::new(&mut rng);
        let groups = c.groups();
        let mut host = Host::open(MemStore::default(), "deployer", GENESIS).unwrap();
        host.begin(&mut rng, c.deployer.id(), &groups).unwrap();
        let first = c.install(&mut host);
        let tau1 = c.replicas[0][0].version_code(c.deployer.id()).unwrap().clone();

        // The second upgrade's piece for group 3 is built on genesis (a
        // deployer restored from an old backup would do that): group 3
        // refuses it as a replay, for good; groups 1 and 2 prepare.
        let upgrade = host.begin(&mut rng, c.deployer.id(), &groups).unwrap();
        let mut pieces = c.pieces(&host);
        pieces[2] = {
            let plan = host.plan().unwrap().unwrap();
            c.piece(&plan, 2, &GENESIS)
        };
        for (gi, piece) in pieces.iter().enumerate() {
            let replies = c.replies(gi, &Operation::PrepareInstall(piece.clone()));
            if gi == 2 {
                assert!(replies.iter().all(|r| *r == Reply::Refused(Refusal::Replayed)), "{replies:?}");
            } else {
                assert!(replies.iter().all(|r| matches!(r, Reply::Accepted(_))), "{replies:?}");
            }
        }
        // A refusal that may still change does not make the abort sound.
        for transient in [Refusal::Busy, Refusal::OutOfOrder] {
            assert_eq!(misuse(host.abort(upgrade, transient).unwrap_err()), MisuseError::WrongState);
        }
        assert_eq!(misuse(host.abort(first, Refusal::Replayed).unwrap_err()), MisuseError::WrongState);
        let abort = host.abort(upgrade, Refusal::Replayed).unwrap();
        for (gi, piece) in pieces.iter().enumerate() {
            c.order(gi, &Operation::PrepareInstall(piece.clone()));
            c.order(gi, &abort);
        }
        let outcomes = c.outcomes(upgrade);
        assert!(outcomes[..8].iter().all(|o| *o == Some(Outcome::Aborted)), "{outcomes:?}");
        assert!(outcomes[8..].iter().all(Option::is_none), "group 3 never held it");
        assert_eq!(misuse(host.aborted(upgrade, &[GroupId(77)]).unwrap_err()), MisuseError::BadArgument);
        host.aborted(upgrade, &groups[..2]).unwrap();
        assert_eq!(host.last(), Some((upgrade, Outcome::Aborted)));
        for (gi, g) in groups.iter().enumerate() {
            let at = c.replicas[gi][0].version_code(c.deployer.id()).unwrap();
            assert_eq!(host.prev(*g), at);
        }
        assert_eq!(host.prev(groups[2]), &tau1);

        // The next upgrade, on the chain as it now is, commits everywhere.
        host.begin(&mut rng, c.deployer.id(), &groups).unwrap();
        c.install(&mut host);
    }
}
