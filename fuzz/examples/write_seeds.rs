//! Writes the `decode_wire` seeds: one valid encoding of every type it
//! decodes (genuine pieces of the role targets' fixture, every message and
//! reply shape, and persisted role states), each behind its type tag.
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example write_seeds
//! ```
//!
//! Run it after a wire-format change (the seeds then no longer decode and
//! cost the fuzzer its head start). The role targets' seeds are picked from
//! fuzzing corpora instead: see `fuzz/README.md`.

#[path = "../common/mod.rs"]
mod common;
#[path = "../common/tags.rs"]
mod tags;

use std::path::PathBuf;

use bft_upgrade::client::Client;
use bft_upgrade::crypto::{ShareKind, Signature};
use bft_upgrade::group::{AuthorizedDeployer, GroupConfig, GroupReplica, GuardianIds, Neighbor, Verdict};
use bft_upgrade::guardian::{GuardedGroup, Guardian, GuardianConfig};
use bft_upgrade::installer::{DefaultInstaller, InstallerOptions};
use bft_upgrade::step::{Instant, Peer};
use bft_upgrade::wire::{
    Answer, Attachment, ClientCall, ClientReply, ClientStatus, Custody, Finish, GroupId, Message, NextMembership,
    Operation, Outcome, Reply, Retirement,
};
use common::{fixture, to_bytes, Fixture, FxCrypto, Holder, GROUPS, GUARDIANS};

fn replica(fx: &'static Fixture, guarded: bool) -> GroupReplica {
    let mut deployers = heapless::Vec::new();
    for ((id, key), genesis) in common::DEPLOYERS.iter().zip(&fx.deployer_pubs).zip(&fx.genesis) {
        let _ = deployers.push(AuthorizedDeployer { id: *id, key: *key, genesis: genesis.clone() });
    }
    let mut neighbors = heapless::Vec::new();
    let _ = neighbors.push(Neighbor { group: GroupId(2), f: 1 });
    let guardians = guarded.then(|| GuardianIds { f: 1, ids: heapless::Vec::from_slice(&GUARDIANS[0]).expect("4") });
    let config = GroupConfig {
        membership: fx.memberships[0].clone(),
        deployers,
        neighbors,
        retry_ms: 100,
        proactive: true,
        guardians,
        sequencer: None,
    };
    let mut r = GroupReplica::new(config, 0).expect("config");
    let key = &fx.replica_keys[0][0];
    let mut crypto = FxCrypto { fx, key, holder: Holder::Replica { group: 0, index: 0 } };
    let origin = Peer::Installer(1);
    for u in [0, 2] {
        let op = Operation::PrepareInstall(fx.upgrades[u].piece(0, guarded).clone());
        let _ = r.handle_ordered_with(Instant(10), origin, &op, &mut crypto, |_| Verdict::Accept);
    }
    if !guarded {
        let op = Operation::commit_install(fx.upgrades[2].id(), fx.upgrades[2].trigger.clone());
        let _ = r.handle_ordered_with(Instant(20), origin, &op, &mut crypto, |_| Verdict::Accept);
    }
    r
}

fn main() {
    let fx = fixture();
    let u = &fx.upgrades[0];
    let piece = u.piece(0, false).clone();
    let guarded = u.piece(0, true).clone();
    let share = u.opened[0][1].secret_share.clone();
    let diffused = Finish { upgrade: u.id(), outcome: Outcome::Committed, code: u.trigger.clone() };
    let mut codes = Attachment::new();
    let _ = codes.push(diffused.clone());
    let _ = codes.push(Finish {
        upgrade: fx.upgrades[2].id(),
        outcome: Outcome::Aborted,
        code: fx.upgrades[2].cancel.clone(),
    });
    let answer = Answer { upgrade: u.id(), group: GROUPS[0], replica: 1, reply: Reply::Accepted(share.clone()) };
    let Custody::Guardians { guardians, .. } = &guarded.header.custody else { unreachable!("guardian custody") };

    let mut installer = DefaultInstaller::new(
        3,
        u.header.clone(),
        &[(GROUPS[0], 1), (GROUPS[1], 1)],
        InstallerOptions::default().retry_ms(100),
    )
    .expect("installer");
    let _ = installer.start(Instant(5));
    let from = Peer::Replica { group: GROUPS[0], index: 1 };
    let _ = installer.handle_answer(Instant(6), from, &answer, &piece).expect("right piece");

    let mut gconfig = GuardianConfig { id: 12, deployers: heapless::Vec::new(), groups: heapless::Vec::new() };
    for (d, key) in common::DEPLOYERS.iter().zip(&fx.deployer_pubs) {
        let _ = gconfig.deployers.push((*d, *key));
    }
    for (gi, g) in GROUPS.iter().enumerate() {
        let _ = gconfig.groups.push(GuardedGroup { group: *g, members: fx.memberships[gi].digest() });
    }
    let mut guardian: Guardian<8> = Guardian::new(gconfig);
    let key = fx.guardian_key(12).expect("guardian 12");
    let mut crypto = FxCrypto { fx, key, holder: Holder::Guardian { id: 12 } };
    let _ = guardian.handle_piece_with(Instant(1), Peer::Replica { group: GROUPS[0], index: 0 }, &guarded, &mut crypto);

    let mut client: Client<8> = Client::new(4);
    let reply = ClientReply { group: GROUPS[0], version: 3, status: ClientStatus::Current, codes: codes.clone() };
    let _ = client.on_reply(&reply).expect("room");

    let token = u.tokens[0][0].1.clone();
    let seeds: Vec<(&str, u8, Vec<u8>)> = vec![
        ("piece", tags::PIECE, to_bytes(&piece)),
        ("piece-guarded", tags::PIECE, to_bytes(&guarded)),
        ("piece-header", tags::PIECE_HEADER, to_bytes(&guarded.header)),
        ("operation-prepare", tags::OPERATION, to_bytes(&Operation::PrepareInstall(piece.clone()))),
        ("operation-commit", tags::OPERATION, to_bytes(&Operation::commit_install(u.id(), u.trigger.clone()))),
        (
            "message-submit",
            tags::MESSAGE,
            to_bytes(&Message::Submit(Finish { outcome: Outcome::Aborted, upgrade: u.id(), code: u.cancel.clone() })),
        ),
        ("message-answer", tags::MESSAGE, to_bytes(&Message::Answer(answer.clone()))),
        (
            "message-request",
            tags::MESSAGE,
            to_bytes(&Message::GuardianRequest {
                upgrade: u.id(),
                group: GROUPS[0],
                replica: 0,
                kind: ShareKind::Secret,
                token: token.clone(),
            }),
        ),
        (
            "message-share",
            tags::MESSAGE,
            to_bytes(&Message::GuardianShare {
                upgrade: u.id(),
                group: GROUPS[0],
                kind: ShareKind::Cancel,
                share: u.guardian_shares[0][2].1.clone(),
            }),
        ),
        (
            "message-needs-piece",
            tags::MESSAGE,
            to_bytes(&Message::GuardianNeedsPiece { upgrade: u.id(), group: GROUPS[1] }),
        ),
        (
            "message-learned",
            tags::MESSAGE,
            to_bytes(&Message::Learned { group: GROUPS[1], diffused: diffused.clone() }),
        ),
        ("answer", tags::ANSWER, to_bytes(&answer)),
        ("reply-code", tags::REPLY, to_bytes(&Reply::Code(ShareKind::Secret, u.s_g[0].clone()))),
        ("reply-finished", tags::REPLY, to_bytes(&Reply::Finished(Outcome::Aborted, u.cancel.clone()))),
        (
            "finish",
            tags::FINISH,
            to_bytes(&Finish { outcome: Outcome::Committed, upgrade: u.id(), code: u.trigger.clone() }),
        ),
        ("upgrade-header", tags::UPGRADE_HEADER, to_bytes(&u.header)),
        ("client-call", tags::CLIENT_CALL, to_bytes(&ClientCall { client: 4, seen: 2, codes: codes.clone() })),
        ("client-reply", tags::CLIENT_REPLY, to_bytes(&reply)),
        ("attachment", tags::ATTACHMENT, to_bytes(&codes)),
        ("membership", tags::MEMBERSHIP, to_bytes(&fx.memberships[1])),
        ("guardian-set", tags::GUARDIAN_SET, to_bytes(&fx.guardian_sets[0])),
        ("payload-ref", tags::PAYLOAD_REF, to_bytes(&piece.header.payload)),
        ("order-key", tags::ORDER_KEY, to_bytes(&u.header.order)),
        ("custody", tags::CUSTODY, to_bytes(&guarded.header.custody)),
        (
            "next-membership",
            tags::NEXT_MEMBERSHIP,
            to_bytes(&NextMembership { membership: fx.memberships[1].clone(), guardians: None }),
        ),
        ("replica-entry", tags::REPLICA_ENTRY, to_bytes(&piece.header.replicas[0])),
        ("guardian-entry", tags::GUARDIAN_ENTRY, to_bytes(&guardians[0])),
        ("share", tags::SHARE, to_bytes(&share)),
        ("public-key", tags::PUBLIC_KEY, to_bytes(&fx.deployer_pubs[0])),
        ("signature", tags::SIGNATURE, to_bytes(&Signature::from_bytes(&piece.signature.to_bytes()))),
        (
            "retirement",
            tags::RETIREMENT,
            to_bytes(&Retirement { upgrade: piece.header.upgrade, signature: piece.signature }),
        ),
        (
            "sealed-box-and-token",
            tags::SEALED_BOX_AND_TOKEN,
            to_bytes(&(piece.header.replicas[1].sealed.clone(), token)),
        ),
        ("group-replica", tags::GROUP_REPLICA, to_bytes(&replica(fx, false))),
        ("group-replica-guarded", tags::GROUP_REPLICA, to_bytes(&replica(fx, true))),
        ("installer", tags::INSTALLER, to_bytes(&installer)),
        ("guardian", tags::GUARDIAN, to_bytes(&guardian)),
        ("client", tags::CLIENT, to_bytes(&client)),
    ];
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus/decode_wire");
    std::fs::create_dir_all(&dir).expect("create the corpus directory");
    for (name, tag, bytes) in seeds {
        let mut seed = vec![tag];
        seed.extend_from_slice(&bytes);
        std::fs::write(dir.join(format!("seed-{name}")), &seed).expect("write a seed");
        println!("seed-{name}: {} bytes", seed.len());
    }
}
