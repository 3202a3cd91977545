//! Group versions for external clients (section 4.3): the history window and
//! the typed "too old: refresh" answer, and version chains advanced by the
//! deployer's `VersionChain`.

use bft_upgrade::client::{Client, ClientEvent};
use bft_upgrade::crypto::{Binding, Code, DeployerKey, PayloadSealer, ReplicaSecretKey, CHUNK_TAG_LEN};
use bft_upgrade::deployer::{Deployer, GroupTarget, UpgradePlan, VersionChain};
use bft_upgrade::group::{GroupReplica, Verdict};
use bft_upgrade::step::{Instant, Peer};
use bft_upgrade::wire::{
    Attachment, ClientCall, ClientStatus, DeployerId, Finish, GroupId, Membership, Operation, Outcome, ResourceId,
    MAX_ATTACHED,
};
use chacha20::ChaCha20Rng;
use rand_core::SeedableRng;

mod support;

const G: GroupId = GroupId(1);

struct One {
    key: ReplicaSecretKey,
    replica: GroupReplica,
    deployer: Deployer,
    chain: VersionChain<4>,
    membership: Membership,
    rng: ChaCha20Rng,
}

fn one() -> One {
    let mut rng = ChaCha20Rng::from_seed([11; 32]);
    let key = ReplicaSecretKey::random(&mut rng);
    let membership = Membership::new(G, &[key.public_key()]).unwrap();
    let deployer = Deployer::new(DeployerId(1), DeployerKey::random(&mut rng));
    let genesis = Code::from_bytes([1; 32]);
    let config = support::fixture::config(&membership, &deployer, &genesis, None);
    One {
        replica: GroupReplica::new(config, 0).unwrap(),
        key,
        deployer,
        chain: VersionChain::new(genesis),
        membership,
        rng,
    }
}

/// Prepares and finishes one upgrade chained on the deployer's current
/// code; returns its trigger code if it committed.
fn install(w: &mut One, seq: u64, commit: bool) -> Code {
    let ids = [G];
    let plan = UpgradePlan::new(&mut w.rng, w.deployer.id(), seq, &ids).unwrap();
    let gk = plan.group_key(G).unwrap();
    let mut sealer = PayloadSealer::new(&gk, &Binding::group(plan.header().upgrade, G), 64).unwrap();
    let mut buf = [0u8; 64 + CHUNK_TAG_LEN];
    sealer.seal_chunk(&mut buf, 3, true).unwrap();
    let target = GroupTarget {
        membership: &w.membership,
        resources: &[ResourceId(1)],
        prev_version: w.chain.prev(G),
        guardians: None,
        payload: sealer.finish().unwrap(),
        next: None,
    };
    let piece = plan.piece(&w.deployer, &target).unwrap();
    let upgrade = piece.header.upgrade;
    let verdict = if commit { Verdict::Accept } else { Verdict::Reject };
    let now = Instant(seq);
    let _ = w.replica.handle_ordered(now, Peer::Installer(1), &Operation::PrepareInstall(piece), &w.key, |_| verdict);
    let (op, outcome) = if commit {
        (
            Operation::Finish(Finish { outcome: Outcome::Committed, upgrade, code: plan.trigger_code().clone() }),
            Outcome::Committed,
        )
    } else {
        (
            Operation::Finish(Finish { outcome: Outcome::Aborted, upgrade, code: plan.cancel_code().clone() }),
            Outcome::Aborted,
        )
    };
    let _ = w.replica.handle_ordered(now, Peer::Installer(1), &op, &w.key, |_| verdict);
    assert_eq!(w.replica.outcome(upgrade), Some(outcome));
    w.chain.advance(&plan, outcome).unwrap();
    assert_eq!(w.replica.version_code(w.deployer.id()), Some(w.chain.prev(G)));
    plan.trigger_code().clone()
}

#[test]
fn chain_of_commits_and_aborts() {
    let mut w = one();
    for seq in 1..=6 {
        install(&mut w, seq, seq % 3 != 0);
    }
    assert_eq!(w.replica.version(), 4);
}

#[test]
fn clients_within_the_window_get_every_code() {
    let mut w = one();
    let mut codes = Vec::new();
    for seq in 1..=5 {
        codes.push(install(&mut w, seq, true));
    }
    let call = ClientCall { client: 1, seen: 2, codes: Attachment::new() };
    let (_, reply) = w.replica.on_client_call(Instant(100), &call);
    assert_eq!(reply.status, ClientStatus::Current);
    assert_eq!(reply.version, 5);
    let got: Vec<&Code> = reply.codes.iter().map(|d| &d.code).collect();
    assert_eq!(got, codes[2..].iter().collect::<Vec<_>>());
    let mut client: Client<4> = Client::new(1);
    assert_eq!(client.on_reply(&reply), Ok(ClientEvent::Current));
    assert_eq!(client.seen(G), 5);
    assert_eq!(client.call(G).codes.len(), 3);
}

/// A client further behind than the window gets the typed answer, and the
/// group's memory stays bounded however far behind it is.
#[test]
fn clients_beyond_the_window_must_refresh() {
    let mut w = one();
    let n = MAX_ATTACHED as u64 + 3;
    for seq in 1..=n {
        install(&mut w, seq, true);
    }
    let before = bft_upgrade::wire::encoded_len(&w.replica);
    for seen in [0, 1, 2] {
        let call = ClientCall { client: 1, seen, codes: Attachment::new() };
        let (_, reply) = w.replica.on_client_call(Instant(1_000), &call);
        assert_eq!(reply.status, ClientStatus::TooOld, "seen {seen}");
        assert!(reply.codes.is_empty());
        let mut client: Client<4> = Client::new(1);
        assert_eq!(client.on_reply(&reply), Ok(ClientEvent::MustRefresh));
        assert_eq!(client.seen(G), n);
    }
    // Just inside the window.
    let call = ClientCall { client: 1, seen: n - MAX_ATTACHED as u64, codes: Attachment::new() };
    let (_, reply) = w.replica.on_client_call(Instant(1_000), &call);
    assert_eq!(reply.status, ClientStatus::Current);
    assert_eq!(reply.codes.len(), MAX_ATTACHED);
    assert_eq!(bft_upgrade::wire::encoded_len(&w.replica), before, "client calls change no state");
    // Far more commits than the history holds: still bounded, still typed.
    for seq in n + 1..=n + 40 {
        install(&mut w, seq, true);
    }
    let (_, reply) =
        w.replica.on_client_call(Instant(2_000), &ClientCall { client: 1, seen: 0, codes: Attachment::new() });
    assert_eq!(reply.status, ClientStatus::TooOld);
    assert!(bft_upgrade::wire::encoded_len(&w.replica) < 16 * 1024);
}

/// A client carrying a trigger code makes a group that prepared the piece
/// commit before executing its call.
#[test]
fn client_codes_commit_before_the_call() {
    let mut w = one();
    let ids = [G];
    let plan = UpgradePlan::new(&mut w.rng, w.deployer.id(), 1, &ids).unwrap();
    let gk = plan.group_key(G).unwrap();
    let mut sealer = PayloadSealer::new(&gk, &Binding::group(plan.header().upgrade, G), 64).unwrap();
    let mut buf = [0u8; 64 + CHUNK_TAG_LEN];
    sealer.seal_chunk(&mut buf, 0, true).unwrap();
    let target = GroupTarget {
        membership: &w.membership,
        resources: &[],
        prev_version: w.chain.prev(G),
        guardians: None,
        payload: sealer.finish().unwrap(),
        next: None,
    };
    let piece = plan.piece(&w.deployer, &target).unwrap();
    let upgrade = piece.header.upgrade;
    let _ = w
        .replica
        .handle_ordered(Instant(1), Peer::Installer(1), &Operation::PrepareInstall(piece), &w.key, |_| Verdict::Accept);
    let mut codes = Attachment::new();
    codes
        .push(bft_upgrade::wire::Finish { upgrade, outcome: Outcome::Committed, code: plan.trigger_code().clone() })
        .unwrap();
    let (step, reply) = w.replica.on_client_call(Instant(2), &ClientCall { client: 9, seen: 0, codes });
    assert!(step.effects.iter().any(|e| matches!(e, bft_upgrade::group::GroupEffect::Apply { .. })));
    assert_eq!(reply.version, 1);
    assert_eq!(w.replica.outcome(upgrade), Some(Outcome::Committed));
}
