//! One `Guardian` of the fixture (id 11 to 15; 12 to 14 guard both groups),
//! with room for four records, fed up to 64 fuzzer-chosen inputs: genuine,
//! edited, re-signed or bit-flipped pieces from any peer; share requests in
//! any replica's name with its genuine token, another's or a random one;
//! learned outcomes with right or wrong codes; raw messages; the host's
//! `persisted` calls; crashes that restore the last durably written state;
//! serialize-restore; and retirements (after which the host writes its state).
//!
//! Across the whole run, for every (upgrade, group):
//! - `GuardianShare` messages carry one kind only;
//! - a share of a kind goes out only after `persisted` was called following
//!   the `Persist` effect for that kind;
//! - once a kind's release was written, `Persist` never asks for the other.

#![no_main]

#[path = "../common/mod.rs"]
mod common;

use std::collections::{HashMap, HashSet};

use arbitrary::Arbitrary;
use bft_upgrade::crypto::ShareKind;
use bft_upgrade::guardian::{GuardedGroup, Guardian, GuardianConfig, GuardianEffect};
use bft_upgrade::step::{Instant, Peer, Step};
use bft_upgrade::wire::{self, Finish, GroupId, Message, Outcome, Token, UpgradeId};
use common::{
    fixture, kind_bit, to_bytes, CodePick, Fixture, FxCrypto, GroupPick, Holder, PeerPick, PiecePick, UpgradePick,
    GROUPS, GUARDIANS, GUARDIAN_IDS,
};
use libfuzzer_sys::fuzz_target;

const MAX_INPUTS: usize = 64;
type G = Guardian<4>;

#[derive(Arbitrary, Debug)]
struct Scenario {
    id: u8,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Piece {
        piece: PiecePick,
        from: PeerPick,
    },
    Request {
        upgrade: UpgradePick,
        group: GroupPick,
        replica: u8,
        secret: bool,
        token: TokenPick,
        from: Option<PeerPick>,
    },
    Learned {
        group: GroupPick,
        upgrade: UpgradePick,
        committed: bool,
        code: CodePick,
        from: PeerPick,
    },
    Raw {
        from: PeerPick,
        bytes: Vec<u8>,
    },
    /// The host finished writing: persist the state, then `persisted` for
    /// the n-th pending `Persist` (or for any pair).
    Persisted {
        pending: u8,
        any: Option<(UpgradePick, GroupPick)>,
    },
    Crash,
    Restore,
    Retire(UpgradePick),
}

#[derive(Arbitrary, Debug)]
enum TokenPick {
    /// The named replica's own token for this (upgrade, group).
    Own,
    /// Another replica's token.
    Of(u8),
    Any([u8; 32]),
}

type Pair = (UpgradeId, GroupId);

struct Run {
    fx: &'static Fixture,
    id: u32,
    config: GuardianConfig,
    guardian: G,
    durable: Option<Vec<u8>>,
    now: Instant,
    /// The kind of the latest `Persist` per pair, in the order they came.
    pending: Vec<(Pair, ShareKind)>,
    /// Kinds whose release was written (`persisted` after its `Persist`).
    written: HashSet<(Pair, ShareKind)>,
    /// Kinds of share sent per pair.
    sent: HashMap<Pair, u8>,
}

impl Run {
    fn observe(&mut self, step: &Step<GuardianEffect>) {
        assert_eq!(step.lost, 0, "a step lost an output the guardian had decided");
        for e in &step.effects {
            let GuardianEffect::Persist { upgrade, group, kind } = e else { continue };
            let pair = (*upgrade, *group);
            let other = match kind {
                ShareKind::Secret => ShareKind::Cancel,
                ShareKind::Cancel => ShareKind::Secret,
            };
            assert!(
                !self.written.contains(&(pair, other)),
                "Persist {kind:?} after {other:?} was written for {pair:?}"
            );
            self.pending.retain(|(p, _)| *p != pair);
            self.pending.push((pair, *kind));
        }
        for out in &step.messages {
            if let Message::GuardianShare { upgrade, group, kind, .. } = &out.message {
                let pair = (*upgrade, *group);
                assert!(self.written.contains(&(pair, *kind)), "a {kind:?} share for {pair:?} before it was written");
                assert!(
                    matches!(out.to, Peer::Replica { group: g, .. } if g == *group),
                    "a share to someone outside the group"
                );
                let kinds = self.sent.entry(pair).or_default();
                *kinds |= kind_bit(*kind);
                assert_ne!(*kinds, 3, "guardian {} sent both kinds for {pair:?}", self.id);
            }
        }
    }

    fn write(&mut self) {
        self.durable = Some(to_bytes(&self.guardian));
    }

    fn op(&mut self, op: &Op) {
        let fx = self.fx;
        let now = self.now;
        self.now = now.after(1);
        let step = match op {
            Op::Piece { piece, from } => {
                let Some(piece) = piece.piece(fx) else { return };
                let key = fx.guardian_key(self.id).expect("fixture guardian");
                let mut crypto = FxCrypto { fx, key, holder: Holder::Guardian { id: self.id } };
                let before = to_bytes(&self.guardian);
                let step = self.guardian.handle_piece_with(now, from.peer(), &piece, &mut crypto);
                if step.effects.iter().any(|e| matches!(e, GuardianEffect::Busy { .. })) {
                    assert_eq!(to_bytes(&self.guardian), before, "a piece not kept changed the guardian's state");
                }
                step
            }
            Op::Request { upgrade, group, replica, secret, token, from } => {
                let (upgrade, group, replica) = (upgrade.id(fx), group.id(), replica % 6);
                let token = match token {
                    TokenPick::Own => genuine_token(fx, upgrade, group, replica),
                    TokenPick::Of(r) => genuine_token(fx, upgrade, group, *r % 4),
                    TokenPick::Any(b) => Token(*b),
                };
                let kind = if *secret { ShareKind::Secret } else { ShareKind::Cancel };
                let from = from.map_or(Peer::Replica { group, index: replica }, PeerPick::peer);
                let message = Message::GuardianRequest { upgrade, group, replica, kind, token };
                self.guardian.handle_message(now, from, &message)
            }
            Op::Learned { group, upgrade, committed, code, from } => {
                let outcome = if *committed { Outcome::Committed } else { Outcome::Aborted };
                let diffused = Finish { upgrade: upgrade.id(fx), outcome, code: code.code(fx) };
                self.guardian.handle_message(now, from.peer(), &Message::Learned { group: group.id(), diffused })
            }
            Op::Raw { from, bytes } => {
                let Ok(message) = wire::decode::<Message>(bytes) else { return };
                self.guardian.handle_message(now, from.peer(), &message)
            }
            Op::Persisted { pending, any } => {
                let pair = match any {
                    Some((u, g)) => (u.id(fx), g.id()),
                    None if self.pending.is_empty() => return,
                    None => self.pending[usize::from(*pending) % self.pending.len()].0,
                };
                self.write();
                if let Some(i) = self.pending.iter().position(|(p, _)| *p == pair) {
                    let (_, kind) = self.pending.remove(i);
                    self.written.insert((pair, kind));
                }
                self.guardian.persisted(now, pair.0, pair.1)
            }
            Op::Crash => {
                self.guardian = match &self.durable {
                    Some(bytes) => wire::decode(bytes).expect("own state decodes"),
                    None => G::new(self.config.clone()),
                };
                return;
            }
            Op::Restore => {
                self.guardian = common::restore(&self.guardian);
                return;
            }
            Op::Retire(u) => {
                // Allowed once the upgrade finished everywhere; the host
                // writes the state so a crash does not bring it back.
                let upgrade = u.id(fx);
                self.guardian.retire(upgrade);
                self.write();
                self.pending.retain(|((u, _), _)| *u != upgrade);
                self.written.retain(|((u, _), _)| *u != upgrade);
                self.sent.retain(|(u, _), _| *u != upgrade);
                return;
            }
        };
        self.observe(&step);
    }
}

/// Replica `replica`'s genuine token of (upgrade, group), or a fixed one.
fn genuine_token(fx: &Fixture, upgrade: UpgradeId, group: GroupId, replica: u8) -> Token {
    let gi = GROUPS.iter().position(|g| *g == group);
    fx.upgrades
        .iter()
        .find(|u| u.id() == upgrade)
        .zip(gi)
        .and_then(|(u, gi)| u.tokens[gi].get(usize::from(replica)))
        .map_or(Token([0x77; 32]), |(_, t)| t.clone())
}

fuzz_target!(|s: Scenario| {
    let fx = fixture();
    let id = GUARDIAN_IDS[usize::from(s.id) % GUARDIAN_IDS.len()];
    let mut config = GuardianConfig { id, deployers: heapless::Vec::new(), groups: heapless::Vec::new() };
    for (d, key) in common::DEPLOYERS.iter().zip(&fx.deployer_pubs) {
        let _ = config.deployers.push((*d, *key));
    }
    for (gi, ids) in GUARDIANS.iter().enumerate() {
        if ids.contains(&id) {
            let g = GuardedGroup { group: GROUPS[gi], members: fx.memberships[gi].digest() };
            let _ = config.groups.push(g);
        }
    }
    let mut run = Run {
        fx,
        id,
        guardian: G::new(config.clone()),
        config,
        durable: None,
        now: Instant(1_000),
        pending: Vec::new(),
        written: HashSet::new(),
        sent: HashMap::new(),
    };
    for op in s.ops.iter().take(MAX_INPUTS) {
        run.op(op);
    }
});
