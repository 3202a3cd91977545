//! An order key a sub-deployer cannot game (section 4.4's first remedy): a
//! group configured with a sequencer refuses a piece whose order sequence
//! number the sequencer did not sign for that upgrade, so a selfish
//! deployer can no longer pick 0 and win every conflict; a group without
//! one keeps taking any number.

mod support;

use bft_upgrade::crypto::{Code, DeployerKey, ReplicaSecretKey};
use bft_upgrade::deployer::{Deployer, GroupTarget, Sequencer, UpgradePlan};
use bft_upgrade::error::MisuseError;
use bft_upgrade::group::{AuthorizedDeployer, GroupConfig, GroupEffect, GroupReplica, Status, Verdict};
use bft_upgrade::step::{FaultKind, Instant, Peer, Step};
use bft_upgrade::wire::{DeployerId, GroupId, Membership, Message, Operation, Piece, Refusal, Reply, ResourceId};
use chacha20::ChaCha20Rng;
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use rand_core::SeedableRng;
use sha2::{Digest as _, Sha256};
use support::fixture::{group_keys, no_payload};

const GENESIS: Code = Code::from_bytes([5; 32]);
const ORIGIN: Peer = Peer::Installer(2);

struct Group {
    keys: Vec<ReplicaSecretKey>,
    membership: Membership,
    replicas: Vec<GroupReplica>,
}

/// One group of 4 authorizing deployers 1 and 2, with `sequencer` if given.
fn group(rng: &mut ChaCha20Rng, deployers: &[&Deployer], sequencer: Option<&Sequencer>) -> Group {
    let (keys, membership) = group_keys(rng, GroupId(1), 4);
    let mut config = GroupConfig::new(membership.clone(), 100).proactive(false);
    for d in deployers {
        let me = AuthorizedDeployer { id: d.id(), key: d.public_key(), genesis: GENESIS };
        config = config.with_deployer(me).unwrap();
    }
    if let Some(s) = sequencer {
        config = config.with_sequencer(s.public_key());
    }
    let replicas = (0..4).map(|i| GroupReplica::new(config.clone(), i).unwrap()).collect();
    Group { keys, membership, replicas }
}

impl Group {
    fn piece(&self, plan: &UpgradePlan<'_>, deployer: &Deployer, resource: u32) -> Piece {
        let target = GroupTarget {
            membership: &self.membership,
            resources: &[ResourceId(resource)],
            prev_version: &GENESIS,
            guardians: None,
            payload: no_payload(),
            next: None,
        };
        plan.piece(deployer, &target).unwrap()
    }

    fn prepare(&mut self, piece: &Piece) -> Vec<Step<GroupEffect>> {
        let op = Operation::PrepareInstall(piece.clone());
        let now = Instant(1_000);
        self.replicas
            .iter_mut()
            .zip(&self.keys)
            .map(|(r, k)| r.handle_ordered(now, ORIGIN, &op, k, |_| Verdict::Accept))
            .collect()
    }
}

fn replies(steps: &[Step<GroupEffect>]) -> Vec<Reply> {
    steps
        .iter()
        .flat_map(|s| s.messages.iter())
        .filter_map(|o| match &o.message {
            Message::Answer(a) if o.to == ORIGIN => Some(a.reply.clone()),
            _ => None,
        })
        .collect()
}

fn deployers(rng: &mut ChaCha20Rng) -> (Deployer, Deployer) {
    (Deployer::new(DeployerId(1), DeployerKey::random(rng)), Deployer::new(DeployerId(2), DeployerKey::random(rng)))
}

#[test]
fn sequencer_absent_groups_take_any_sequence_number() {
    let mut rng = ChaCha20Rng::from_seed([1; 32]);
    let (d1, _) = deployers(&mut rng);
    let mut g = group(&mut rng, &[&d1], None);
    let plan = UpgradePlan::new(&mut rng, d1.id(), 0, &[GroupId(1)]).unwrap();
    let piece = g.piece(&plan, &d1, 1);
    assert_eq!(piece.header.sequence, None);
    g.prepare(&piece);
    assert!(g.replicas.iter().all(|r| r.status(plan.header().upgrade) == Some(Status::Released)));
}

#[test]
fn sequencer_refuses_a_self_picked_number_and_blames_its_deployer() {
    let mut rng = ChaCha20Rng::from_seed([2; 32]);
    let (d1, _) = deployers(&mut rng);
    let sequencer = Sequencer::new(DeployerKey::random(&mut rng), 10);
    let mut g = group(&mut rng, &[&d1], Some(&sequencer));
    let state = |g: &Group| -> Vec<String> { g.replicas.iter().map(|r| serde_json::to_string(r).unwrap()).collect() };
    let before = state(&g);
    let plan = UpgradePlan::new(&mut rng, d1.id(), 0, &[GroupId(1)]).unwrap();
    let steps = g.prepare(&g.piece(&plan, &d1, 1));
    assert_eq!(replies(&steps), vec![Reply::Refused(Refusal::Unsequenced); 4]);
    for s in &steps {
        let f = s.faults.iter().find(|f| f.kind == FaultKind::Unsequenced).expect("fault reported");
        assert_eq!(f.peer, Peer::Deployer(d1.id()));
    }
    assert_eq!(state(&g), before, "a refused piece changes nothing");
}

#[test]
fn sequencer_refuses_a_ticket_moved_to_another_upgrade_or_number() {
    let mut rng = ChaCha20Rng::from_seed([3; 32]);
    let (d1, _) = deployers(&mut rng);
    let key = DeployerKey::random(&mut rng);
    let d1_key = DeployerKey::random(&mut rng);
    let d1 = Deployer::new(d1.id(), d1_key.clone());
    let mut sequencer = Sequencer::new(key, 0);
    let mut g = group(&mut rng, &[&d1], Some(&sequencer));

    let mut plan_a = UpgradePlan::new(&mut rng, d1.id(), 0, &[GroupId(1)]).unwrap();
    let ticket = sequencer.issue(plan_a.header().upgrade).unwrap();
    plan_a.sequenced(&ticket).unwrap();
    let mut plan_b = UpgradePlan::new(&mut rng, d1.id(), 0, &[GroupId(1)]).unwrap();
    assert_eq!(plan_b.sequenced(&ticket), Err(MisuseError::BadArgument));

    // The deployer copies A's ticket into B's piece and signs it itself.
    let mut moved = g.piece(&plan_b, &d1, 1);
    moved.header.sequence = Some(ticket.signature);
    moved.header.order_seq = ticket.seq;
    moved.signature = d1_key.sign(&moved.header.digest()).unwrap();
    assert_eq!(replies(&g.prepare(&moved)), vec![Reply::Refused(Refusal::Unsequenced); 4]);

    // Or keeps A's ticket and lowers the number.
    let mut lowered = g.piece(&plan_a, &d1, 1);
    lowered.header.order_seq = 0u64.wrapping_sub(1);
    lowered.signature = d1_key.sign(&lowered.header.digest()).unwrap();
    assert_eq!(replies(&g.prepare(&lowered)), vec![Reply::Refused(Refusal::Unsequenced); 4]);

    // The piece as the ticket says is prepared.
    let genuine = g.piece(&plan_a, &d1, 1);
    assert_eq!(genuine.header.order_seq, 0);
    g.prepare(&genuine);
    assert!(g.replicas.iter().all(|r| r.status(plan_a.header().upgrade) == Some(Status::Released)));
    assert_eq!(sequencer.next(), 1);
}

#[test]
fn sequencer_numbers_decide_conflicts_whatever_a_deployer_would_pick() {
    // Deployer 2 would pick 0 to win; with tickets, deployer 1's earlier
    // ticket orders first, so deployer 2's conflicting piece is postponed.
    let mut rng = ChaCha20Rng::from_seed([4; 32]);
    let (d1, d2) = deployers(&mut rng);
    let mut sequencer = Sequencer::new(DeployerKey::random(&mut rng), 100);
    let mut g = group(&mut rng, &[&d1, &d2], Some(&sequencer));
    let mut first = UpgradePlan::new(&mut rng, d1.id(), 0, &[GroupId(1)]).unwrap();
    let mut second = UpgradePlan::new(&mut rng, d2.id(), 0, &[GroupId(1)]).unwrap();
    first.sequenced(&sequencer.issue(first.header().upgrade).unwrap()).unwrap();
    second.sequenced(&sequencer.issue(second.header().upgrade).unwrap()).unwrap();
    assert!(first.header().order < second.header().order);

    // Rule 3: the later-ordered conflicting piece is cancelled at once.
    g.prepare(&g.piece(&first, &d1, 7));
    g.prepare(&g.piece(&second, &d2, 7));
    for r in &g.replicas {
        assert_eq!(r.status(first.header().upgrade), Some(Status::Released));
        assert_eq!(r.status(second.header().upgrade), Some(Status::Cancelled));
    }

    // Without a sequencer, the same deployer picking 0 is ordered first
    // and only withheld, waiting to win.
    let mut free = group(&mut rng, &[&d1, &d2], None);
    let early = UpgradePlan::new(&mut rng, d1.id(), 5, &[GroupId(1)]).unwrap();
    let selfish = UpgradePlan::new(&mut rng, d2.id(), 0, &[GroupId(1)]).unwrap();
    free.prepare(&free.piece(&early, &d1, 7));
    free.prepare(&free.piece(&selfish, &d2, 7));
    assert!(free.replicas.iter().all(|r| r.status(selfish.header().upgrade) == Some(Status::Withheld)));
}

#[test]
fn sequencer_signature_checked_against_an_independent_digest() {
    // The ticket signs SHA-256(len ‖ label ‖ upgrade ‖ ALL ‖ index 0 ‖ seq ‖
    // deployer), computed here by hand and verified with p256 directly.
    let mut rng = ChaCha20Rng::from_seed([5; 32]);
    let key = DeployerKey::random(&mut rng);
    let public = key.public_key();
    let mut sequencer = Sequencer::new(key, 41);
    let plan = UpgradePlan::new(&mut rng, DeployerId(9), 0, &[GroupId(1)]).unwrap();
    let upgrade = plan.header().upgrade;
    let ticket = sequencer.issue(upgrade).unwrap();
    assert_eq!((ticket.seq, ticket.upgrade, sequencer.next()), (41, upgrade, 42));

    let label = b"bft-upgrade/v1/sequence";
    let mut h = Sha256::new();
    h.update([label.len() as u8]);
    h.update(label);
    h.update(upgrade.0);
    h.update(u32::MAX.to_be_bytes());
    h.update(0u16.to_be_bytes());
    h.update(41u64.to_le_bytes());
    h.update(9u32.to_le_bytes());
    let digest: [u8; 32] = h.finalize().into();
    let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&public.to_compressed()).unwrap();
    let sig = p256::ecdsa::Signature::from_slice(&ticket.signature.to_bytes()).unwrap();
    vk.verify_prehash(&digest, &sig).expect("the ticket signs the documented digest");
    let mut other = digest;
    other[0] ^= 1;
    assert!(vk.verify_prehash(&other, &sig).is_err());
}
