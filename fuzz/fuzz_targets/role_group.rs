//! One `GroupReplica` of the fixture's group 1 (four replicas, `f = 1`, two
//! deployers, neighbors 2 and 3), in replica or guardian custody, driven by
//! up to 64 fuzzer-chosen inputs: ordered prepares of genuine, edited,
//! re-signed or bit-flipped pieces with either verdict; commits and aborts
//! with right or wrong codes from any origin; messages from any peer;
//! timeouts at any time; piggybacked codes on requests, responses and client
//! calls; and serialize-restore.
//!
//! After every input:
//! - the replica never answered both kinds (`Accepted`/`Code(Secret)` and
//!   `Rejected`/`Code(Cancel)`) for one upgrade, and never applied an
//!   upgrade it also discarded or released its `c` share for;
//! - its version counts the `Apply` effects; a client reply carries exactly
//!   the commits since the client's version, or says `TooOld`;
//! - no step lost an output (`Step::lost`), every outcome the replica
//!   records has yielded its `Apply`/`Discard`, and a step's deadline is the
//!   replica's `deadline()`;
//! - on a copy, calling `handle_timeout` at the returned deadline moves the
//!   deadline forward (or keeps it due only while it sends messages).

#![no_main]

#[path = "../common/mod.rs"]
mod common;

use std::collections::HashMap;

use arbitrary::Arbitrary;
use bft_upgrade::crypto::ShareKind;
use bft_upgrade::group::{
    AuthorizedDeployer, GroupConfig, GroupEffect, GroupReplica, GuardianIds, Neighbor, TxnId, Verdict,
};
use bft_upgrade::step::{Instant, Peer, Step};
use bft_upgrade::wire::{
    self, Answer, ClientCall, ClientStatus, GroupId, Message, Operation, Outcome, Reply, UpgradeId,
};
use common::{
    attachment, fixture, CodePick, DiffusedPick, Fixture, FxCrypto, GroupPick, Holder, PeerPick, PiecePick, SharePick,
    UpgradePick, GROUPS, GUARDIANS,
};
use libfuzzer_sys::fuzz_target;

const MAX_INPUTS: usize = 64;

#[derive(Arbitrary, Debug)]
struct Scenario {
    me: u8,
    guarded: bool,
    proactive: bool,
    retry_ms: u8,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Prepare {
        piece: PiecePick,
        origin: PeerPick,
        reject: bool,
    },
    /// Genuine pieces of `count` consecutive fixture upgrades, accepted.
    PrepareSeveral {
        first: u8,
        count: u8,
        origin: PeerPick,
    },
    Finish {
        upgrade: UpgradePick,
        commit: bool,
        code: CodePick,
        origin: PeerPick,
    },
    Message {
        from: PeerPick,
        message: MessagePick,
    },
    Timeout {
        dt: u16,
    },
    Advance {
        dt: u16,
    },
    Request {
        from: GroupPick,
        codes: Vec<DiffusedPick>,
    },
    Response {
        txn: u8,
        from: GroupPick,
        codes: Vec<DiffusedPick>,
    },
    ClientCall {
        client: u8,
        seen: u8,
        codes: Vec<DiffusedPick>,
    },
    TakeAttachment {
        to: GroupPick,
    },
    Restore,
}

#[derive(Arbitrary, Debug)]
enum MessagePick {
    /// A neighbor's answer to proactive diffusion: `Finished` or `Unknown`.
    Ack {
        upgrade: UpgradePick,
        finished: Option<(bool, CodePick)>,
    },
    /// Any other reply as an answer.
    Answer {
        upgrade: UpgradePick,
        share: SharePick,
        kind: u8,
    },
    GuardianShare {
        upgrade: UpgradePick,
        group: GroupPick,
        secret: bool,
        share: SharePick,
    },
    NeedsPiece {
        upgrade: UpgradePick,
        group: GroupPick,
    },
    Raw(Vec<u8>),
}

fn config(fx: &Fixture, guarded: bool, proactive: bool, retry_ms: u64) -> GroupConfig {
    let mut deployers = heapless::Vec::new();
    for ((id, key), genesis) in common::DEPLOYERS.iter().zip(&fx.deployer_pubs).zip(&fx.genesis) {
        let _ = deployers.push(AuthorizedDeployer { id: *id, key: *key, genesis: genesis.clone() });
    }
    let mut neighbors = heapless::Vec::new();
    let _ = neighbors.push(Neighbor { group: GroupId(2), f: 1 });
    let _ = neighbors.push(Neighbor { group: GroupId(3), f: 0 });
    let guardians = guarded.then(|| GuardianIds { f: 1, ids: heapless::Vec::from_slice(&GUARDIANS[0]).expect("4") });
    GroupConfig {
        membership: fx.memberships[0].clone(),
        deployers,
        neighbors,
        retry_ms,
        proactive,
        guardians,
        sequencer: None,
    }
}

struct Run {
    fx: &'static Fixture,
    me: u8,
    guarded: bool,
    replica: GroupReplica,
    now: Instant,
    /// Kinds answered per upgrade (1: secret, 2: cancel).
    released: HashMap<UpgradeId, u8>,
    /// Outcome applied per upgrade.
    finished: HashMap<UpgradeId, Outcome>,
    applies: u64,
}

impl Run {
    fn observe(&mut self, step: &Step<GroupEffect>) {
        assert_eq!(step.lost, 0, "a step lost an output the role had decided");
        assert_eq!(step.deadline, self.replica.deadline(), "the step's deadline is not the replica's");
        for out in &step.messages {
            if let Message::Answer(a) = &out.message {
                assert_eq!((a.group, a.replica), (GROUPS[0], self.me), "an answer in someone else's name");
                let bit = match a.reply {
                    Reply::Accepted(_) | Reply::Code(ShareKind::Secret, _) => 1,
                    Reply::Rejected(_) | Reply::Code(ShareKind::Cancel, _) => 2,
                    _ => 0,
                };
                let kinds = self.released.entry(a.upgrade).or_default();
                *kinds |= bit;
                assert_ne!(*kinds, 3, "replica released both kinds for {:?}", a.upgrade);
                if bit == 2 {
                    assert_ne!(self.finished.get(&a.upgrade), Some(&Outcome::Committed), "c after applying");
                }
            }
        }
        for e in &step.effects {
            let (upgrade, outcome) = match e {
                GroupEffect::Apply { upgrade, .. } => (*upgrade, Outcome::Committed),
                GroupEffect::Discard { upgrade } => (*upgrade, Outcome::Aborted),
                _ => continue,
            };
            if outcome == Outcome::Committed {
                self.applies += 1;
                assert_eq!(self.released.get(&upgrade).copied().unwrap_or(0) & 2, 0, "applied after releasing c");
            }
            let prev = self.finished.insert(upgrade, outcome);
            assert!(prev.is_none(), "{upgrade:?} finished twice: {prev:?} then {outcome:?}");
        }
        assert_eq!(self.replica.version(), self.applies, "version is not the number of commits");
        // Every outcome the replica recorded has yielded its effect.
        for (upgrade, outcome, _) in self.replica.finished_upgrades() {
            assert_eq!(self.finished.get(&upgrade), Some(&outcome), "{upgrade:?} finished here without its effect");
        }
        // A finished upgrade that left the history is forgotten by the
        // replica: only a deployer that reuses codes can bring it back.
        let replica = &self.replica;
        let forgotten: Vec<UpgradeId> = self
            .finished
            .keys()
            .filter(|u| replica.outcome(**u).is_none() && replica.holds(**u).is_none())
            .copied()
            .collect();
        for u in forgotten {
            self.finished.remove(&u);
            self.released.remove(&u);
        }
        self.check_deadline(step.deadline);
    }

    /// On a copy: at its deadline, `handle_timeout` moves the deadline on.
    fn check_deadline(&self, deadline: Option<Instant>) {
        let Some(mut due) = deadline else { return };
        let mut copy = self.replica.clone();
        let mut now = self.now;
        for _ in 0..64 {
            now = now.max(due);
            let step = copy.handle_timeout(now);
            assert_eq!(step.lost, 0, "a timeout step lost an output");
            assert_eq!(step.deadline, copy.deadline());
            match step.deadline {
                None => return,
                Some(next) if next > now => return,
                Some(next) => {
                    assert!(!step.messages.is_empty(), "deadline {next:?} still due at {now:?} with nothing sent");
                    due = next;
                }
            }
        }
        panic!("handle_timeout kept its deadline due for 64 calls");
    }

    fn op(&mut self, op: &Op) {
        let fx = self.fx;
        let key = &fx.replica_keys[0][usize::from(self.me)];
        let mut crypto = FxCrypto { fx, key, holder: Holder::Replica { group: 0, index: usize::from(self.me) } };
        let now = self.now;
        let step = match op {
            Op::Prepare { piece, origin, reject } => {
                let Some(piece) = piece.piece(fx) else { return };
                let verdict = if *reject { Verdict::Reject } else { Verdict::Accept };
                let op = Operation::PrepareInstall(piece);
                self.replica.handle_ordered_with(now, origin.peer(), &op, &mut crypto, |_| verdict)
            }
            Op::PrepareSeveral { first, count, origin } => {
                for i in 0..count % 16 {
                    let u = fx.upgrade(first.wrapping_add(i));
                    let op = Operation::PrepareInstall(u.piece(0, self.guarded).clone());
                    let step =
                        self.replica.handle_ordered_with(now, origin.peer(), &op, &mut crypto, |_| Verdict::Accept);
                    self.observe(&step);
                }
                return;
            }
            Op::Finish { upgrade, commit, code, origin } => {
                let (upgrade, code) = (upgrade.id(fx), code.code(fx));
                let op = if *commit {
                    Operation::commit_install(upgrade, code)
                } else {
                    Operation::abort_install(upgrade, code)
                };
                self.replica.handle_ordered_with(now, origin.peer(), &op, &mut crypto, |_| Verdict::Accept)
            }
            Op::Message { from, message } => {
                let from = from.peer();
                let (group, replica) = match from {
                    Peer::Replica { group, index } => (group, index),
                    _ => (GroupId(2), 0),
                };
                let message = match message {
                    MessagePick::Ack { upgrade, finished } => {
                        let reply = match finished {
                            Some((true, code)) => Reply::Finished(Outcome::Committed, code.code(fx)),
                            Some((false, code)) => Reply::Finished(Outcome::Aborted, code.code(fx)),
                            None => Reply::Unknown,
                        };
                        Message::Answer(Answer { upgrade: upgrade.id(fx), group, replica, reply })
                    }
                    MessagePick::Answer { upgrade, share, kind } => {
                        let share = share.share(fx);
                        let reply = match kind % 4 {
                            0 => Reply::Accepted(share),
                            1 => Reply::Rejected(share),
                            2 => Reply::Conflict,
                            _ => Reply::Pending,
                        };
                        Message::Answer(Answer { upgrade: upgrade.id(fx), group, replica, reply })
                    }
                    MessagePick::GuardianShare { upgrade, group, secret, share } => Message::GuardianShare {
                        upgrade: upgrade.id(fx),
                        group: group.id(),
                        kind: if *secret { ShareKind::Secret } else { ShareKind::Cancel },
                        share: share.share(fx),
                    },
                    MessagePick::NeedsPiece { upgrade, group } => {
                        Message::GuardianNeedsPiece { upgrade: upgrade.id(fx), group: group.id() }
                    }
                    MessagePick::Raw(bytes) => {
                        let Ok(m) = wire::decode::<Message>(bytes) else { return };
                        m
                    }
                };
                self.replica.handle_message(now, from, &message)
            }
            Op::Timeout { dt } => {
                self.now = now.after(u64::from(*dt));
                self.replica.handle_timeout(self.now)
            }
            Op::Advance { dt } => {
                self.now = now.after(u64::from(*dt) * 16);
                return;
            }
            Op::Request { from, codes } => self.replica.on_request(now, from.id(), &attachment(fx, codes)),
            Op::Response { txn, from, codes } => {
                let codes = attachment(fx, codes);
                let step = self.replica.on_response(now, TxnId(u64::from(*txn)), from.id(), &codes);
                let restart = step.effects.iter().any(|e| matches!(e, GroupEffect::RestartTransaction(_)));
                let abort = step.effects.iter().any(|e| matches!(e, GroupEffect::AbortTransaction(_)));
                assert_eq!(restart, abort, "a transaction aborted without restart, or the reverse");
                step
            }
            Op::ClientCall { client, seen, codes } => {
                let seen = u64::from(*seen % 40);
                let call = ClientCall { client: u32::from(*client), seen, codes: attachment(fx, codes) };
                let (step, reply) = self.replica.on_client_call(now, &call);
                self.observe(&step);
                assert_eq!(reply.group, GROUPS[0]);
                assert_eq!(reply.version, self.replica.version());
                match reply.status {
                    ClientStatus::Current if seen < reply.version => {
                        assert_eq!(reply.codes.len() as u64, reply.version - seen, "a commit missing for the client");
                        for d in &reply.codes {
                            assert_eq!(d.outcome, Outcome::Committed);
                            let applied = self.finished.get(&d.upgrade);
                            assert!(applied.is_none_or(|o| *o == Outcome::Committed), "a code not applied here");
                        }
                    }
                    _ => assert!(reply.codes.is_empty(), "codes for a current client, or a too-old one"),
                }
                return;
            }
            Op::TakeAttachment { to } => {
                let codes = self.replica.take_attachment(to.id());
                assert!(codes.len() <= wire::MAX_ATTACHED);
                assert!(self.replica.take_attachment(to.id()).is_empty(), "an attachment taken twice");
                return;
            }
            Op::Restore => {
                self.replica = common::restore(&self.replica);
                return;
            }
        };
        self.observe(&step);
    }
}

fuzz_target!(|s: Scenario| {
    let fx = fixture();
    let me = s.me % 4;
    let cfg = config(fx, s.guarded, s.proactive, 1 + u64::from(s.retry_ms));
    let replica = GroupReplica::new(cfg, me).expect("valid config");
    let mut run = Run {
        fx,
        me,
        guarded: s.guarded,
        replica,
        now: Instant(1_000),
        released: HashMap::new(),
        finished: HashMap::new(),
        applies: 0,
    };
    for op in s.ops.iter().take(MAX_INPUTS) {
        run.op(op);
    }
});
