//! The hostile adversary: Byzantine replicas that race the correct ones,
//! lie again and again, replay genuine values from elsewhere, and mutate
//! real messages one field at a time (in the spirit of ByzzFuzz). Like the
//! rest of the adversary it only rewrites what the real role code sends.

use std::vec;
use std::vec::Vec;

use rand_core::Rng;

use super::{below, ByzantineReplica, World};
use crate::crypto::{Code, Share, ShareKind};
use crate::step::Peer;
use crate::wire::{self, Answer, Finish, Message, Outcome, Reply, Token, UpgradeId};

/// Genuine messages kept for replay.
const STORE: usize = 64;
/// Distinct bogus `s_g` values a racer sends: one more than an installer
/// tracks per group, so a list that keeps the first ones holds only lies.
const BOGUS_CODES: usize = 5;

impl World {
    /// Keeps a genuine message a correct replica sent, for replayers.
    pub(super) fn keep_genuine(&mut self, message: &Message) {
        let useful = match message {
            Message::Answer(a) => !matches!(a.reply, Reply::Pending | Reply::Unknown | Reply::Conflict),
            Message::Submit(_) | Message::GuardianRequest { .. } | Message::Learned { .. } => true,
            _ => false,
        };
        if !useful {
            return;
        }
        if self.genuine.len() < STORE {
            self.genuine.push(message.clone());
        } else {
            let at = below(&mut self.rng, STORE);
            self.genuine[at] = message.clone();
        }
    }

    /// A hostile Byzantine replica's rewrite of one outgoing message.
    pub(super) fn hostile(&mut self, gi: usize, ri: usize, b: ByzantineReplica, to: Peer, message: &Message) {
        match b {
            ByzantineReplica::Racer => self.racer(gi, ri, to, message),
            ByzantineReplica::Replayer => self.replayer(gi, ri, to, message),
            _ => self.mutator(gi, ri, to, message),
        }
    }

    fn me(&self, gi: usize, ri: usize) -> Peer {
        Peer::Replica { group: self.groups[gi].id, index: ri as u8 }
    }

    /// Every installer of upgrade `u`, dead or alive.
    fn installers_of(&self, u: UpgradeId) -> Vec<Peer> {
        self.installers.iter().filter(|i| self.upgrades[i.upgrade].header.upgrade == u).map(|i| i.role.peer()).collect()
    }

    /// Sends straight onto the wire at `at`, past the network's faults: the
    /// adversary picks its own timing.
    fn send_at(&mut self, from: Peer, to: Peer, message: &Message, at: u64) {
        let mut buf = vec![0u8; wire::encoded_len(message)];
        let n = wire::encode(message, &mut buf).expect("sized buffer").len();
        buf.truncate(n);
        self.count(from, n as u64);
        self.push(at.max(self.now), super::Event::Net { from, to, bytes: buf });
    }

    fn early(&self) -> u64 {
        self.now + 1
    }

    fn late(&mut self) -> u64 {
        self.now + self.cfg.latency_ms + below(&mut self.rng, 4 * self.cfg.retry_ms as usize + 1) as u64
    }

    fn bogus_bytes(&mut self) -> [u8; 32] {
        let mut y = [0u8; 32];
        self.rng.fill_bytes(&mut y);
        y[0] &= 0x7f;
        y
    }

    fn bogus_code(&mut self) -> Code {
        Code::from_bytes(self.bogus_bytes())
    }

    fn bogus_share(&mut self, index: u8) -> Share {
        Share::new(index, self.bogus_bytes())
    }

    fn other_upgrade(&mut self, not: UpgradeId) -> UpgradeId {
        let n = self.upgrades.len();
        let pick = self.upgrades[below(&mut self.rng, n)].header.upgrade;
        if pick == not {
            let mut u = not;
            u.0[0] ^= 1 + below(&mut self.rng, 255) as u8;
            u
        } else {
            pick
        }
    }

    /// Lies first, to every installer, with many distinct values of both
    /// kinds; then the honest answer; then one more lie, late.
    fn racer(&mut self, gi: usize, ri: usize, to: Peer, message: &Message) {
        let me = self.me(gi, ri);
        let Message::Answer(a) = message else {
            return self.send(me, to, message);
        };
        let own = ri as u8 + 1;
        let mut lies = Vec::new();
        for _ in 0..BOGUS_CODES {
            lies.push(Reply::Code(ShareKind::Secret, self.bogus_code()));
        }
        lies.push(Reply::Code(ShareKind::Cancel, self.bogus_code()));
        if self.material.guardian_sets[gi].is_none() {
            lies.insert(0, Reply::Accepted(self.bogus_share(own)));
            lies.insert(1, Reply::Rejected(self.bogus_share(own)));
        }
        let at = self.early();
        for target in self.installers_of(a.upgrade) {
            for reply in &lies {
                self.send_at(me, target, &Message::Answer(Answer { reply: reply.clone(), ..a.clone() }), at);
            }
        }
        self.send(me, to, message);
        let reply = if self.rng.next_u32().is_multiple_of(2) {
            Reply::Code(ShareKind::Secret, self.bogus_code())
        } else {
            Reply::Finished(Outcome::Committed, self.bogus_code())
        };
        let at = self.late();
        self.send_at(me, to, &Message::Answer(Answer { reply, ..a.clone() }), at);
    }

    /// Replays genuine messages from the store, re-addressed as its own
    /// answer and verbatim, before its honest message.
    fn replayer(&mut self, gi: usize, ri: usize, to: Peer, message: &Message) {
        let me = self.me(gi, ri);
        if !self.genuine.is_empty() {
            let times = if matches!(message, Message::Answer(_)) { 3 } else { 1 };
            for _ in 0..times {
                let pick = self.genuine[below(&mut self.rng, self.genuine.len())].clone();
                self.replay(gi, me, to, message, pick);
            }
        }
        self.send(me, to, message);
    }

    fn replay(&mut self, gi: usize, me: Peer, to: Peer, message: &Message, pick: Message) {
        let at = self.early();
        match (message, &pick) {
            (Message::Answer(a), Message::Answer(old)) => {
                // As its own answer to this upgrade, to every installer...
                let own = Message::Answer(Answer { reply: old.reply.clone(), ..a.clone() });
                for target in self.installers_of(a.upgrade) {
                    self.send_at(me, target, &own, at);
                }
                // ...and verbatim, under its original upgrade's installers.
                for target in self.installers_of(old.upgrade).into_iter().take(2) {
                    self.send_at(me, target, &pick, at);
                }
            }
            (Message::Answer(a), Message::Submit(op)) => {
                // A genuine code of some upgrade, as this replica's answer.
                let (outcome, code) = match op {
                    Finish { outcome: Outcome::Committed, code, .. } => (Outcome::Committed, code.clone()),
                    Finish { outcome: Outcome::Aborted, code, .. } => (Outcome::Aborted, code.clone()),
                };
                let reply = if self.rng.next_u32().is_multiple_of(2) {
                    Reply::Finished(outcome, code)
                } else {
                    Reply::Code(ShareKind::Secret, code)
                };
                self.send_at(me, to, &Message::Answer(Answer { reply, ..a.clone() }), at);
            }
            (_, Message::Submit(_)) => {
                // A genuine commit or abort, to a neighbour or its own group.
                let nbs = &self.groups[gi].neighbors;
                let target = if nbs.is_empty() { gi } else { nbs[below(&mut self.rng, nbs.len())] };
                let group = self.groups[target].id;
                self.send_at(me, Peer::Group(group), &pick, at);
            }
            _ => self.send_at(me, to, &pick, at),
        }
    }

    /// Alters one field of the real message, or duplicates it, or sends it
    /// early or late.
    fn mutator(&mut self, gi: usize, ri: usize, to: Peer, message: &Message) {
        let me = self.me(gi, ri);
        match self.rng.next_u32() % 8 {
            field @ 0..=3 => {
                let (to, mutated) = self.mutate(gi, to, message, field);
                self.send(me, to, &mutated);
            }
            4 => {
                for _ in 0..2 + below(&mut self.rng, 2) {
                    self.send(me, to, message);
                }
            }
            5 => {
                let at = self.early();
                self.send_at(me, to, message, at);
            }
            6 => {
                let at = self.late();
                self.send_at(me, to, message, at);
            }
            _ => self.send(me, to, message),
        }
    }

    /// `message` with one field altered: 0 a value, 1 a kind, 2 an index
    /// (or the destination group), 3 the upgrade id.
    fn mutate(&mut self, gi: usize, to: Peer, message: &Message, field: u32) -> (Peer, Message) {
        let n = self.groups[gi].replicas.len();
        let flip = |k: ShareKind| if k == ShareKind::Secret { ShareKind::Cancel } else { ShareKind::Secret };
        let other = |o: Outcome| if o == Outcome::Committed { Outcome::Aborted } else { Outcome::Committed };
        let mut m = message.clone();
        match &mut m {
            Message::Answer(a) => match field {
                0 => {
                    a.reply = match &a.reply {
                        Reply::Accepted(s) => Reply::Accepted(self.bogus_share(s.index())),
                        Reply::Rejected(s) => Reply::Rejected(self.bogus_share(s.index())),
                        Reply::Code(k, _) => Reply::Code(*k, self.bogus_code()),
                        Reply::Finished(o, _) => Reply::Finished(*o, self.bogus_code()),
                        _ => Reply::Code(ShareKind::Secret, self.bogus_code()),
                    }
                }
                1 => {
                    a.reply = match &a.reply {
                        Reply::Accepted(s) => Reply::Rejected(s.clone()),
                        Reply::Rejected(s) => Reply::Accepted(s.clone()),
                        Reply::Code(k, c) => Reply::Code(flip(*k), c.clone()),
                        Reply::Finished(o, c) => Reply::Finished(other(*o), c.clone()),
                        _ => Reply::Rejected(self.bogus_share(a.replica + 1)),
                    }
                }
                2 => {
                    if self.rng.next_u32().is_multiple_of(2) {
                        a.replica = below(&mut self.rng, n) as u8;
                    } else {
                        let x = 1 + below(&mut self.rng, n) as u8;
                        a.reply = match &a.reply {
                            Reply::Accepted(s) => Reply::Accepted(Share::new(x, *s.value())),
                            Reply::Rejected(s) => Reply::Rejected(Share::new(x, *s.value())),
                            r => r.clone(),
                        };
                    }
                }
                _ => a.upgrade = self.other_upgrade(a.upgrade),
            },
            Message::Submit(op) => {
                let (upgrade, code, committed) = match op {
                    Finish { outcome: Outcome::Committed, upgrade, code } => (*upgrade, code.clone(), true),
                    Finish { outcome: Outcome::Aborted, upgrade, code } => (*upgrade, code.clone(), false),
                };
                let outcome = if committed { Outcome::Committed } else { Outcome::Aborted };
                *op = match field {
                    0 => Finish::new(upgrade, outcome, self.bogus_code()),
                    1 => Finish::new(upgrade, other(outcome), code),
                    2 => {
                        let target = self.groups[below(&mut self.rng, self.groups.len())].id;
                        return (Peer::Group(target), m);
                    }
                    _ => Finish::new(self.other_upgrade(upgrade), outcome, code),
                };
            }
            Message::GuardianRequest { upgrade, replica, kind, token, .. } => match field {
                0 => *token = Token(self.bogus_bytes()),
                1 => *kind = flip(*kind),
                2 => *replica = below(&mut self.rng, n) as u8,
                _ => *upgrade = self.other_upgrade(*upgrade),
            },
            Message::Learned { group, diffused } => match field {
                0 => diffused.code = self.bogus_code(),
                1 => diffused.outcome = other(diffused.outcome),
                2 => *group = self.groups[below(&mut self.rng, self.groups.len())].id,
                _ => diffused.upgrade = self.other_upgrade(diffused.upgrade),
            },
            _ => {}
        }
        (to, m)
    }
}
