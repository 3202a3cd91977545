//! State transfer: a wiped, lagging or new replica installs its group's
//! replicated state from a trusted source (here `f + 1` peers whose
//! digests match), rebuilds its own part by opening its boxes of the held
//! pieces, and carries on, shares it owes included.

mod support;

use std::collections::BTreeMap;

use bft_upgrade::crypto::{Code, DeployerKey, ReplicaSecretKey};
use bft_upgrade::deployer::{Deployer, GroupTarget, UpgradePlan};
use bft_upgrade::error::MisuseError;
use bft_upgrade::group::{GroupConfig, GroupReplica, ReplicatedState, Verdict};
use bft_upgrade::step::{FaultKind, Instant, Peer};
use bft_upgrade::wire::{
    DeployerId, GroupId, Membership, Message, Operation, Outcome, Piece, Reply, ResourceId, UpgradeId, WithKey,
};
use chacha20::ChaCha20Rng;
use rand_core::SeedableRng;
use support::fixture::{config, group_keys, no_payload};

const GENESIS: Code = Code::from_bytes([3; 32]);
const ORIGIN: Peer = Peer::Installer(4);
const NOW: Instant = Instant(1_000);

struct Group {
    deployer: Deployer,
    config: GroupConfig,
    keys: Vec<ReplicaSecretKey>,
    membership: Membership,
    replicas: Vec<GroupReplica>,
    /// The pieces the host's piece store keeps (any peer can supply them).
    pieces: BTreeMap<UpgradeId, Piece>,
}

impl Group {
    fn new(seed: u8) -> (Self, ChaCha20Rng) {
        let mut rng = ChaCha20Rng::from_seed([seed; 32]);
        let deployer = Deployer::new(DeployerId(1), DeployerKey::random(&mut rng));
        let (keys, membership) = group_keys(&mut rng, GroupId(1), 4);
        let config = config(&membership, &deployer, &GENESIS, None);
        let replicas = (0..4).map(|i| GroupReplica::new(config.clone(), i).unwrap()).collect();
        (Self { deployer, config, keys, membership, replicas, pieces: BTreeMap::new() }, rng)
    }

    /// A one-group upgrade on `prev`, changing resource `r`.
    fn plan_piece(&mut self, rng: &mut ChaCha20Rng, seq: u64, prev: &Code, r: u32) -> (Piece, Operation) {
        let groups = [GroupId(1)];
        let plan = UpgradePlan::new(rng, self.deployer.id(), seq, &groups).unwrap();
        let target = GroupTarget {
            membership: &self.membership,
            resources: &[ResourceId(r)],
            prev_version: prev,
            guardians: None,
            payload: no_payload(),
            next: None,
        };
        let piece = plan.piece(&self.deployer, &target).unwrap();
        self.pieces.insert(piece.header.upgrade, piece.clone());
        (piece, plan.commit())
    }

    /// Orders `op` at the replicas in `which`; each one's answer.
    fn order(&mut self, which: &[usize], op: &Operation) -> Vec<Option<Reply>> {
        which
            .iter()
            .map(|&i| {
                let step = self.replicas[i].handle_ordered(NOW, ORIGIN, op, &self.keys[i], |_| Verdict::Accept);
                step.messages.iter().find_map(|o| match &o.message {
                    Message::Answer(a) if o.to == ORIGIN => Some(a.reply.clone()),
                    _ => None,
                })
            })
            .collect()
    }

    /// What the host trusts: the state of `f + 1` peers whose digests match.
    fn trusted_state(&self, peers: &[usize]) -> ReplicatedState {
        let states: Vec<ReplicatedState> = peers.iter().map(|&i| self.replicas[i].replicated()).collect();
        assert!(states.len() > usize::from(self.membership.f));
        assert!(states.iter().all(|s| s.digest() == states[0].digest()), "peers disagree");
        // It travels as bytes.
        serde_json::from_slice(&serde_json::to_vec(&states[0]).unwrap()).unwrap()
    }

    fn rejoin(&self, me: u8, state: &ReplicatedState, key: &ReplicaSecretKey) -> (GroupReplica, Vec<FaultKind>) {
        let (r, step) =
            GroupReplica::transfer(self.config.clone(), me, state, |u| self.pieces.get(&u), &mut WithKey(key)).unwrap();
        (r, step.faults.iter().map(|f| f.kind).collect())
    }
}

#[test]
fn state_transfer_a_wiped_replica_rejoins_and_still_owes_its_shares() {
    let (mut g, mut rng) = Group::new(1);
    let (piece, commit) = g.plan_piece(&mut rng, 1, &GENESIS, 1);
    let op = Operation::PrepareInstall(piece.clone());
    let before = g.order(&[0, 1, 2, 3], &op);
    let Some(Reply::Accepted(share)) = before[3].clone() else { panic!("replica 3 accepted: {before:?}") };

    // Replica 3 loses everything; two peers (f + 1) agree on the state.
    let state = g.trusted_state(&[0, 1]);
    assert_eq!(state.held_upgrades().collect::<Vec<_>>(), vec![piece.header.upgrade]);
    let key = g.keys[3].clone();
    let (rejoined, faults) = g.rejoin(3, &state, &key);
    assert!(faults.is_empty(), "{faults:?}");
    g.replicas[3] = rejoined;
    assert_eq!(g.replicas[3].replicated_digest(), g.replicas[0].replicated_digest());

    // The installer's retry gets the very share replica 3 gave before.
    let again = g.order(&[3], &op);
    assert_eq!(again[0], Some(Reply::Accepted(share)));
    // And it follows the commit with the others.
    g.order(&[0, 1, 2, 3], &commit);
    for r in &g.replicas {
        assert_eq!(r.outcome(piece.header.upgrade), Some(Outcome::Committed));
        assert_eq!(r.version(), 1);
    }
    assert_eq!(g.replicas[3].replicated_digest(), g.replicas[0].replicated_digest());
}

#[test]
fn state_transfer_a_lagging_replica_takes_the_history_and_chains() {
    // Replica 2 missed a whole upgrade and the next piece; it catches up.
    let (mut g, mut rng) = Group::new(2);
    let (first, commit) = g.plan_piece(&mut rng, 1, &GENESIS, 1);
    g.order(&[0, 1, 3], &Operation::PrepareInstall(first.clone()));
    g.order(&[0, 1, 3], &commit);
    let tau = g.replicas[0].version_code(g.deployer.id()).unwrap().clone();
    let (second, _) = g.plan_piece(&mut rng, 2, &tau, 2);
    g.order(&[0, 1, 3], &Operation::PrepareInstall(second.clone()));
    assert_eq!(g.replicas[2].version(), 0);

    let state = g.trusted_state(&[1, 3]);
    let key = g.keys[2].clone();
    let (caught_up, _) = g.rejoin(2, &state, &key);
    assert_eq!(caught_up.version(), 1);
    assert_eq!(caught_up.version_code(g.deployer.id()), Some(&tau));
    assert_eq!(caught_up.outcome(first.header.upgrade), Some(Outcome::Committed));
    assert_eq!(caught_up.holds(second.header.upgrade), Some(true));
    assert_eq!(caught_up.replicated_digest(), g.replicas[0].replicated_digest());
    // Only held pieces are needed: the finished one's piece may be gone.
    g.pieces.remove(&first.header.upgrade);
    assert!(GroupReplica::transfer(g.config.clone(), 2, &state, |u| g.pieces.get(&u), &mut WithKey(&key)).is_ok());
}

#[test]
fn state_transfer_a_box_that_does_not_open_is_reported_and_the_replica_follows() {
    let (mut g, mut rng) = Group::new(3);
    let (piece, commit) = g.plan_piece(&mut rng, 1, &GENESIS, 1);
    let op = Operation::PrepareInstall(piece.clone());
    g.order(&[0, 1, 2, 3], &op);
    let state = g.trusted_state(&[0, 1]);
    // Replica 3 rejoins with a key its box was not sealed for (as a
    // deployer's bad box for it would look).
    let wrong = ReplicaSecretKey::random(&mut rng);
    let (rejoined, faults) = g.rejoin(3, &state, &wrong);
    assert_eq!(faults, vec![FaultKind::BadBox]);
    g.replicas[3] = rejoined;
    assert_eq!(g.order(&[3], &op)[0], Some(Reply::NoShare));
    g.order(&[0, 1, 2, 3], &commit);
    assert_eq!(g.replicas[3].outcome(piece.header.upgrade), Some(Outcome::Committed));
}

#[test]
fn state_transfer_refuses_another_groups_state_and_missing_or_forged_pieces() {
    let (mut g, mut rng) = Group::new(4);
    let (piece, _) = g.plan_piece(&mut rng, 1, &GENESIS, 1);
    g.order(&[0, 1, 2], &Operation::PrepareInstall(piece.clone()));
    let state = g.trusted_state(&[0, 1]);
    let key = g.keys[3].clone();
    let transfer = |config: GroupConfig, pieces: &BTreeMap<UpgradeId, Piece>| {
        GroupReplica::transfer(config, 3, &state, |u| pieces.get(&u), &mut WithKey(&key)).err()
    };

    // Another group's configuration.
    let (_, other) = group_keys(&mut rng, GroupId(2), 4);
    let elsewhere = config(&other, &g.deployer, &GENESIS, None);
    assert_eq!(transfer(elsewhere, &g.pieces), Some(MisuseError::BadArgument));
    // The held piece missing.
    assert_eq!(transfer(g.config.clone(), &BTreeMap::new()), Some(MisuseError::BadArgument));
    // A piece for the same id, altered (its signature no longer holds).
    let mut forged = g.pieces.clone();
    forged.get_mut(&piece.header.upgrade).unwrap().header.order_seq = 0;
    assert_eq!(transfer(g.config.clone(), &forged), Some(MisuseError::BadArgument));
    // Another genuine piece under the held id.
    let (other_piece, _) = g.plan_piece(&mut rng, 2, &GENESIS, 5);
    let mut swapped = g.pieces.clone();
    swapped.insert(piece.header.upgrade, other_piece);
    assert_eq!(transfer(g.config.clone(), &swapped), Some(MisuseError::BadArgument));
    // Out of range index, as `new`.
    assert_eq!(
        GroupReplica::transfer(g.config.clone(), 9, &state, |u| g.pieces.get(&u), &mut WithKey(&key)).err(),
        Some(MisuseError::OutOfRange)
    );
}
