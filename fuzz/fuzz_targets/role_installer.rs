//! A `DefaultInstaller` for one of the fixture's upgrades, fed up to 64
//! fuzzer-chosen inputs: starts, timeouts at any time, serialize-restore,
//! and answers from any peer in any replica's name with any reply: the
//! replica's genuine share of either kind, other genuine or random shares,
//! right or wrong codes, refusals, along with the right piece, another
//! group's, another upgrade's, or an edited one.
//!
//! After every input:
//! - `Decided` is reported at most once, the decided outcome never changes,
//!   and its code matches the header's digest (`D(τ)` or `D(c)`);
//! - `Done` is reported at most once, and only after a decision;
//! - an `Err` leaves the serialized state byte for byte unchanged;
//! - the step stays within its bounds and its deadline is `deadline()`;
//! - on a copy, a sweep at the deadline moves the deadline forward (or
//!   keeps it due only while the step is full of work).

#![no_main]

#[path = "../common/mod.rs"]
mod common;

use arbitrary::Arbitrary;
use bft_upgrade::crypto::{Binding, Code, Domain, ShareKind};
use bft_upgrade::installer::{DefaultInstaller, Finishing, InstallerEffect, InstallerOptions};

/// Every group at once, or one a sweep and diffusion (the rest after two).
fn options(finish_all: bool, retry: u64) -> InstallerOptions {
    let finishing = if finish_all { Finishing::EveryGroup } else { Finishing::Diffusion { grace: 2 } };
    InstallerOptions::default().retry_ms(retry).finishing(finishing)
}
use bft_upgrade::step::{Instant, Peer, Step};
use bft_upgrade::wire::{Answer, GroupId, Outcome, Refusal, Reply, UpgradeHeader};
use common::{fixture, to_bytes, CodePick, Fixture, GroupPick, PeerPick, PiecePick, SharePick, UpgradePick, GROUPS};
use libfuzzer_sys::fuzz_target;

const MAX_INPUTS: usize = 64;

#[derive(Arbitrary, Debug)]
struct Scenario {
    upgrade: u8,
    finish_all: bool,
    retry_ms: u8,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Start,
    Timeout {
        dt: u16,
    },
    Answer {
        group: GroupPick,
        replica: u8,
        from: Option<PeerPick>,
        upgrade: Option<UpgradePick>,
        reply: ReplyPick,
        piece: PieceArg,
    },
    Restore,
}

#[derive(Arbitrary, Debug)]
enum ReplyPick {
    /// The answering replica's genuine share of this upgrade.
    Own {
        secret: bool,
    },
    Accepted(SharePick),
    Rejected(SharePick),
    Finished(bool, CodePick),
    /// Guardian custody: a rebuilt `s_g` (`true`) or `c`.
    Code(bool, CodePick),
    Refused(u8),
    Unknown,
    Conflict,
    NoShare,
    Pending,
}

#[derive(Arbitrary, Debug)]
enum PieceArg {
    /// This upgrade's genuine piece for the answer's group.
    Own {
        guarded: bool,
    },
    Pick(PiecePick),
}

const REFUSALS: [Refusal; 8] = [
    Refusal::WrongGroup,
    Refusal::UnknownDeployer,
    Refusal::BadSignature,
    Refusal::WrongMembership,
    Refusal::Replayed,
    Refusal::OutOfOrder,
    Refusal::WrongChain,
    Refusal::Busy,
];

struct Run {
    fx: &'static Fixture,
    upgrade: usize,
    installer: DefaultInstaller,
    now: Instant,
    decided: Option<(Outcome, Code)>,
    done: bool,
}

fn checks(header: &UpgradeHeader, outcome: Outcome, code: &Code) -> bool {
    let (domain, digest) = match outcome {
        Outcome::Committed => (Domain::Trigger, &header.trigger_digest),
        Outcome::Aborted => (Domain::Cancel, &header.cancel_digest),
    };
    code.check(domain, &Binding::upgrade(header.upgrade), digest).is_ok()
}

impl Run {
    fn observe(&mut self, step: &Step<InstallerEffect>) {
        assert_eq!(step.lost, 0, "a step lost an output the installer had decided");
        assert_eq!(step.deadline, self.installer.deadline(), "the step's deadline is not the installer's");
        let header = &self.fx.upgrades[self.upgrade].header;
        for e in &step.effects {
            match e {
                InstallerEffect::Decided(outcome) => {
                    assert!(self.decided.is_none(), "Decided reported twice");
                    let (o, code) = self.installer.decided().expect("Decided without a decision");
                    assert_eq!(o, *outcome);
                    assert!(checks(header, o, code), "decided {o:?} with a code that does not match its digest");
                    self.decided = Some((o, code.clone()));
                }
                InstallerEffect::Done => {
                    assert!(!self.done, "Done reported twice");
                    assert!(self.decided.is_some(), "Done before a decision");
                    self.done = true;
                }
                InstallerEffect::SendPrepare { group } | InstallerEffect::Refused { group, .. } => {
                    let covered = self.fx.upgrades[self.upgrade].groups.iter().any(|gi| GROUPS[*gi] == *group);
                    assert!(covered, "an effect for a group outside the upgrade");
                }
            }
        }
        match (&self.decided, self.installer.decided()) {
            (None, None) => {}
            (Some((o, c)), Some((o2, c2))) => assert!(*o == o2 && c == c2, "the decision changed"),
            (a, b) => panic!("decision {b:?} without its effect (tracked {a:?})"),
        }
        assert_eq!(self.installer.is_done(), self.done);
        assert_eq!(self.installer.decided().is_some(), self.decided.is_some(), "decided without a Decided effect");
        self.check_deadline(step.deadline);
    }

    fn check_deadline(&self, deadline: Option<Instant>) {
        let Some(mut due) = deadline else { return };
        let mut copy = self.installer.clone();
        let mut now = self.now;
        for _ in 0..64 {
            now = now.max(due);
            let step = copy.handle_timeout(now);
            match step.deadline {
                None => return,
                Some(next) if next > now => return,
                Some(next) => {
                    let busy = !step.messages.is_empty() || !step.effects.is_empty();
                    assert!(busy, "deadline {next:?} still due at {now:?} with nothing done");
                    due = next;
                }
            }
        }
        panic!("handle_timeout kept its deadline due for 64 calls");
    }

    fn op(&mut self, op: &Op) {
        let fx = self.fx;
        let u = &fx.upgrades[self.upgrade];
        let step = match op {
            Op::Start => self.installer.start(self.now),
            Op::Timeout { dt } => {
                self.now = self.now.after(u64::from(*dt));
                self.installer.handle_timeout(self.now)
            }
            Op::Restore => {
                self.installer = common::restore(&self.installer);
                return;
            }
            Op::Answer { group, replica, from, upgrade, reply, piece } => {
                let group: GroupId = group.id();
                let replica = replica % 6;
                let from = from.map_or(Peer::Replica { group, index: replica }, PeerPick::peer);
                let gi = GROUPS.iter().position(|g| *g == group).unwrap_or(0);
                let reply = match reply {
                    ReplyPick::Own { secret } => {
                        let gi = if u.groups.contains(&gi) { gi } else { u.groups[0] };
                        let o = &u.opened[gi][usize::from(replica) % common::N];
                        if *secret {
                            Reply::Accepted(o.secret_share.clone())
                        } else {
                            Reply::Rejected(o.cancel_share.clone())
                        }
                    }
                    ReplyPick::Accepted(s) => Reply::Accepted(s.share(fx)),
                    ReplyPick::Rejected(s) => Reply::Rejected(s.share(fx)),
                    ReplyPick::Finished(c, code) => {
                        Reply::Finished(if *c { Outcome::Committed } else { Outcome::Aborted }, code.code(fx))
                    }
                    ReplyPick::Code(s, code) => {
                        Reply::Code(if *s { ShareKind::Secret } else { ShareKind::Cancel }, code.code(fx))
                    }
                    ReplyPick::Refused(r) => Reply::Refused(REFUSALS[usize::from(*r) % REFUSALS.len()]),
                    ReplyPick::Unknown => Reply::Unknown,
                    ReplyPick::Conflict => Reply::Conflict,
                    ReplyPick::NoShare => Reply::NoShare,
                    ReplyPick::Pending => Reply::Pending,
                };
                let upgrade = upgrade.map_or(u.id(), |p| p.id(fx));
                let answer = Answer { upgrade, group, replica, reply };
                let piece = match piece {
                    PieceArg::Own { guarded } => u.piece(gi, *guarded).clone(),
                    PieceArg::Pick(p) => {
                        let Some(p) = p.piece(fx) else { return };
                        p
                    }
                };
                let before = to_bytes(&self.installer);
                match self.installer.handle_answer(self.now, from, &answer, &piece) {
                    Ok(step) => step,
                    Err(_) => {
                        assert_eq!(to_bytes(&self.installer), before, "an Err changed the installer's state");
                        return;
                    }
                }
            }
        };
        self.observe(&step);
    }
}

fuzz_target!(|s: Scenario| {
    let fx = fixture();
    let upgrade = usize::from(s.upgrade) % fx.upgrades.len();
    let u = &fx.upgrades[upgrade];
    let groups: Vec<(GroupId, u8)> = u.groups.iter().map(|gi| (GROUPS[*gi], fx.memberships[*gi].f)).collect();
    let retry = 1 + u64::from(s.retry_ms);
    let installer =
        DefaultInstaller::new(7, u.header.clone(), &groups, options(s.finish_all, retry)).expect("valid installer");
    let mut run = Run { fx, upgrade, installer, now: Instant(1_000), decided: None, done: false };
    for op in s.ops.iter().take(MAX_INPUTS) {
        run.op(op);
    }
});
