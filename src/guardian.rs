//! The guardian role: holding a group's shares so that even a compromised
//! group cannot rebuild both codes (paper section 5; see [guardians](crate::protocol#guardians-section-5)).
//!
//! A group has `3F + 1` (or more) guardians and its codes have threshold
//! `2F + 1` (in general [`guardian_threshold`](crate::wire::guardian_threshold)).
//! A correct guardian releases, per group and upgrade, shares of **one kind
//! only**; two quorums of `2F + 1` meet in a correct guardian, so no group,
//! however compromised, gets both `s_g` and `c`.
//!
//! **Beyond the paper:** a guardian releases a kind only once `f + 1`
//! distinct replicas of the group asked for it, each proving membership with
//! the token only it can decrypt from the piece (the guardian holds the
//! tokens' digests). One faulty replica of a correct group cannot force an
//! abort by asking for `c` first.
//!
//! # What the embedder must do
//! - Hand every piece the group's hosts forward to
//!   [`handle_piece`](Guardian::handle_piece), and every message to
//!   [`handle_message`](Guardian::handle_message).
//! - On [`GuardianEffect::Persist`], write the guardian's state durably, then
//!   call [`persisted`](Guardian::persisted): only then do the shares go out.
//!   After a crash, restore the last state written.
//!
//! ```
//! use bft_upgrade::crypto::DeployerKey;
//! use bft_upgrade::deployer::Deployer;
//! use bft_upgrade::guardian::{GuardedGroup, Guardian, GuardianConfig};
//! use bft_upgrade::rand_core::SeedableRng;
//! use bft_upgrade::step::{FaultKind, Instant, Peer};
//! use bft_upgrade::wire::{DeployerId, GroupId, Membership, Message, UpgradeId};
//!
//! let mut rng = chacha20::ChaCha20Rng::from_seed([4; 32]);
//! let deployer = Deployer::new(DeployerId(1), DeployerKey::random(&mut rng));
//! let replica = bft_upgrade::crypto::ReplicaSecretKey::random(&mut rng).public_key();
//! let membership = Membership::new(GroupId(1), &[replica]).unwrap();
//! let mut config = GuardianConfig { id: 1, deployers: Default::default(), groups: Default::default() };
//! config.deployers.push((deployer.id(), deployer.public_key())).unwrap();
//! config.groups.push(GuardedGroup { group: GroupId(1), members: membership.digest() }).unwrap();
//! let mut guardian: Guardian<16> = Guardian::new(config);
//! assert_eq!(guardian.peer(), Peer::Guardian(1));
//! // Pieces come from the group's hosts (`handle_piece`), requests and
//! // outcomes from its replicas; anything else is a fault.
//! let from = Peer::Installer(3);
//! let upgrade = UpgradeId::new(DeployerId(1), [0; 12]);
//! let step = guardian.handle_message(Instant(0), from, &Message::GuardianNeedsPiece { upgrade, group: GroupId(1) });
//! assert_eq!(step.faults[0].kind, FaultKind::Unsolicited);
//! assert_eq!(guardian.released(upgrade, GroupId(1)), None);
//! ```

use heapless::Vec;
use serde::{Deserialize, Serialize};

use crate::crypto::{Binding, Digest, PublicKey, ReplicaSecretKey, Share, ShareKind};
use crate::step::{FaultKind, Instant, Peer, Step};
use crate::wire::{
    Custody, DeployerId, Finish, GroupId, Message, Outcome, Piece, PieceCrypto, Retirement, Token, UpgradeId, WithKey,
    MAX_REPLICAS,
};

pub use crate::capacity::MAX_GUARDED;
/// The most deployers a guardian accepts pieces from.
pub const MAX_GUARDIAN_DEPLOYERS: usize = 4;

/// A group this guardian guards.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardedGroup {
    /// The group.
    pub group: GroupId,
    /// Digest of its membership ([`Membership::digest`](crate::wire::Membership::digest)).
    /// It follows the group's membership upgrades: once the guardian learns
    /// that one committed, it takes the new membership's digest.
    pub members: Digest,
}

/// A guardian's configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardianConfig {
    /// The guardian's id (its address in pieces).
    pub id: u32,
    /// Deployers whose pieces it accepts.
    pub deployers: Vec<(DeployerId, PublicKey), MAX_GUARDIAN_DEPLOYERS>,
    /// The groups it guards.
    pub groups: Vec<GuardedGroup, MAX_GUARDED>,
}

/// What a guardian step asks the host to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GuardianEffect {
    /// Write the guardian's state durably (it now records that `kind` was
    /// released for this group and upgrade), then call
    /// [`Guardian::persisted`]. Nothing of that kind leaves before.
    Persist {
        /// The upgrade.
        upgrade: UpgradeId,
        /// The group.
        group: GroupId,
        /// The kind released.
        kind: ShareKind,
    },
    /// Every record slot is taken by a record that released a kind: the
    /// piece of (`upgrade`, `group`) was not kept. Retire finished upgrades
    /// ([`Guardian::retire`]) to make room; the piece comes again when the
    /// group's replicas ask.
    Busy {
        /// The upgrade.
        upgrade: UpgradeId,
        /// The group.
        group: GroupId,
    },
    /// A deployer's retirement made this guardian forget its records of
    /// `upgrade`: write the state (the host may also drop the upgrade's
    /// release rows).
    Retired {
        /// The upgrade.
        upgrade: UpgradeId,
    },
}

/// One (upgrade, group) this guardian holds shares for.
#[derive(Clone, Serialize, Deserialize)]
struct Record {
    upgrade: UpgradeId,
    group: GroupId,
    /// The group's `f`: `f + 1` replicas must ask.
    f: u8,
    trigger_digest: Digest,
    cancel_digest: Digest,
    /// Digests of the replicas' tokens, in replica order.
    tokens: Vec<Digest, MAX_REPLICAS>,
    secret_share: Share,
    cancel_share: Share,
    /// Replicas that asked, per kind (`[secret, cancel]`).
    asked: [u64; 2],
    /// The one kind this guardian released (or is about to), if any.
    released: Option<ShareKind>,
    /// Whether the host acknowledged writing `released`. Not stored: the
    /// host writes the state on [`GuardianEffect::Persist`], so a state read
    /// back from storage holds only releases that were written.
    #[serde(skip, default = "written")]
    durable: bool,
    /// Whether the outcome was learned and forwarded.
    learned: bool,
    /// Digest of the membership the group switches to if the upgrade
    /// commits.
    next: Option<Digest>,
}

impl Record {
    fn share(&self, kind: ShareKind) -> &Share {
        match kind {
            ShareKind::Secret => &self.secret_share,
            ShareKind::Cancel => &self.cancel_share,
        }
    }
}

fn written() -> bool {
    true
}

fn slot(kind: ShareKind) -> usize {
    match kind {
        ShareKind::Secret => 0,
        ShareKind::Cancel => 1,
    }
}

/// A guardian holding shares for at most `R` (upgrade, group) pairs.
#[derive(Clone, Serialize, Deserialize)]
pub struct Guardian<const R: usize> {
    config: GuardianConfig,
    records: Vec<Record, R>,
}

impl<const R: usize> Guardian<R> {
    /// How many (upgrade, group) records it can hold: `R`.
    pub const CAPACITY: usize = R;

    /// A guardian with `config`.
    pub fn new(config: GuardianConfig) -> Self {
        Self { config, records: Vec::new() }
    }

    /// Its configuration, with each guarded group's membership as the
    /// last membership upgrade it learned of set it.
    pub fn config(&self) -> &GuardianConfig {
        &self.config
    }

    /// Sets `group`'s membership digest, for a guardian that never held the
    /// piece of a membership upgrade that committed there (it follows by
    /// itself only the changes whose pieces it held): its host takes the
    /// new digest from the deployer. Returns whether it guards `group`.
    pub fn follow(&mut self, group: GroupId, members: Digest) -> bool {
        match self.config.groups.iter_mut().find(|g| g.group == group) {
            Some(g) => {
                g.members = members;
                true
            }
            None => false,
        }
    }

    /// This guardian as a peer.
    pub fn peer(&self) -> Peer {
        Peer::Guardian(self.config.id)
    }

    /// How many (upgrade, group) records it holds, of `R`: a host's
    /// health report (a guardian near `R` with releases it cannot retire
    /// answers `Busy` to the next pieces).
    pub fn held(&self) -> usize {
        self.records.len()
    }

    /// How many of the records it holds released a kind.
    pub fn releases(&self) -> usize {
        self.records.iter().filter(|r| r.released.is_some()).count()
    }

    /// The kind released for (`upgrade`, `group`), if any.
    pub fn released(&self, upgrade: UpgradeId, group: GroupId) -> Option<ShareKind> {
        self.record(upgrade, group).and_then(|r| r.released)
    }

    /// Whether it holds a record for (`upgrade`, `group`) (the simulator's
    /// liveness reports).
    #[cfg(feature = "std")]
    pub(crate) fn holds(&self, upgrade: UpgradeId, group: GroupId) -> bool {
        self.record(upgrade, group).is_some()
    }

    fn record(&self, upgrade: UpgradeId, group: GroupId) -> Option<&Record> {
        self.records.iter().find(|r| r.upgrade == upgrade && r.group == group)
    }

    /// A piece forwarded by a replica's host: if it is authentic, for a
    /// guarded group and lists this guardian, keep this guardian's shares.
    ///
    /// A guardian with every slot holding a record that released a kind
    /// (until the host retires their upgrades) does not keep it and says so
    /// with [`GuardianEffect::Busy`], as a full group answers `Busy`; the
    /// group's hosts send the piece again when the guardian answers a
    /// request with `GuardianNeedsPiece`. Bad pieces are faults.
    pub fn handle_piece(
        &mut self,
        now: Instant,
        from: Peer,
        piece: &Piece,
        key: &ReplicaSecretKey,
    ) -> Step<GuardianEffect> {
        self.handle_piece_with(now, from, piece, &mut WithKey(key))
    }

    /// [`handle_piece`](Self::handle_piece) with the signature check and box
    /// opening done by `crypto`.
    pub fn handle_piece_with(
        &mut self,
        now: Instant,
        from: Peer,
        piece: &Piece,
        crypto: &mut impl PieceCrypto,
    ) -> Step<GuardianEffect> {
        let _ = now;
        let mut step = Step::new();
        let h = &piece.header;
        if h.upgrade.deployer() != h.deployer {
            // Another deployer's upgrade id: kept, it would take that
            // upgrade's record here (see `UpgradeId`).
            step.fault(from, Some(h.upgrade), FaultKind::ForgedPiece);
            return step;
        }
        if self.record(h.upgrade, h.group).is_some() {
            return step;
        }
        let guarded = self.config.groups.iter().find(|g| g.group == h.group);
        let signer = self.config.deployers.iter().find(|(id, _)| *id == h.deployer).map(|(_, k)| k);
        let (Some(guarded), Some(signer)) = (guarded, signer) else {
            step.fault(from, Some(h.upgrade), FaultKind::ForgedPiece);
            return step;
        };
        if guarded.members != h.members || !crypto.verify(piece, signer) {
            step.fault(from, Some(h.upgrade), FaultKind::ForgedPiece);
            return step;
        }
        let Custody::Guardians { guardians, .. } = &h.custody else {
            step.fault(from, Some(h.upgrade), FaultKind::Unsolicited);
            return step;
        };
        let Some(index) = guardians.iter().position(|g| g.guardian == self.config.id) else {
            step.fault(from, Some(h.upgrade), FaultKind::Unsolicited);
            return step;
        };
        let Ok((secret_share, cancel_share)) = crypto.open_guardian(piece, index) else {
            // A signed piece whose box for us is bad: the deployer's fault.
            step.fault(Peer::Deployer(h.deployer), Some(h.upgrade), FaultKind::BadBox);
            return step;
        };
        let mut tokens = Vec::new();
        for e in &h.replicas {
            // A piece holds at most MAX_REPLICAS entries, as does `tokens`.
            if tokens.push(e.secret_share).is_err() {
                return step;
            }
        }
        let record = Record {
            upgrade: h.upgrade,
            group: h.group,
            f: h.f,
            trigger_digest: h.trigger_digest,
            cancel_digest: h.cancel_digest,
            tokens,
            secret_share,
            cancel_share,
            asked: [0; 2],
            released: None,
            durable: false,
            learned: false,
            next: h.next.as_ref().map(|n| n.membership.digest()),
        };
        if self.records.is_full() {
            // Make room by forgetting a record that released nothing: if its
            // piece comes again, starting afresh releases nothing new. A
            // record that released a kind is kept until the host retires
            // its upgrade (forgetting it could release the other kind).
            match self.records.iter().position(|r| r.released.is_none()) {
                Some(i) => {
                    self.records.swap_remove(i);
                }
                None => {
                    step.emit_effect(GuardianEffect::Busy { upgrade: h.upgrade, group: h.group });
                    return step;
                }
            }
        }
        if self.records.push(record).is_err() {
            step.emit_effect(GuardianEffect::Busy { upgrade: h.upgrade, group: h.group });
        }
        step
    }

    /// Forgets every record of `upgrade`. Call only once the upgrade has
    /// finished at every group it covers: then no share of either kind can
    /// change any group's outcome. A host that learns this from its
    /// deployer over the network uses
    /// [`handle_retirement`](Self::handle_retirement), which checks the
    /// deployer's signature.
    pub fn retire(&mut self, upgrade: UpgradeId) {
        self.records.retain(|r| r.upgrade != upgrade);
    }

    /// A deployer's [`Retirement`]: if the deployer its upgrade id names is
    /// one this guardian accepts and signed it, forget every record of the
    /// upgrade ([`retire`](Self::retire)), which is how a guardian's slots
    /// come free without the host's own knowledge of every group. Anything
    /// else is `from`'s fault ([`FaultKind::ForgedRetirement`]) and changes
    /// nothing. Returns whether records were forgotten in the step's effects
    /// ([`GuardianEffect::Retired`]).
    pub fn handle_retirement(&mut self, from: Peer, retirement: &Retirement) -> Step<GuardianEffect> {
        let mut step = Step::new();
        let upgrade = retirement.upgrade;
        let signer = self.config.deployers.iter().find(|(id, _)| *id == upgrade.deployer()).map(|(_, k)| k);
        if signer.is_none_or(|k| retirement.verify(k).is_err()) {
            step.fault(from, Some(upgrade), FaultKind::ForgedRetirement);
            return step;
        }
        let held = self.records.len();
        self.retire(upgrade);
        if self.records.len() != held {
            step.emit_effect(GuardianEffect::Retired { upgrade });
        }
        step
    }

    /// A message from a replica: a share request or a learned outcome.
    pub fn handle_message(&mut self, now: Instant, from: Peer, message: &Message) -> Step<GuardianEffect> {
        let _ = now;
        let mut step = Step::new();
        match message {
            Message::GuardianRequest { upgrade, group, replica, kind, token } => {
                self.request(&mut step, from, (*upgrade, *group, *replica), *kind, token);
            }
            Message::Learned { group, diffused } => self.learned(&mut step, from, *group, diffused),
            // A group's answer to an outcome this guardian forwarded (from
            // an older replica: current ones answer no guardian). Harmless.
            Message::Answer(_) => {}
            _ => step.fault(from, None, FaultKind::Unsolicited),
        }
        step
    }

    /// The host wrote the release record of (`upgrade`, `group`): the
    /// shares go out to every replica that asked for that kind.
    pub fn persisted(&mut self, now: Instant, upgrade: UpgradeId, group: GroupId) -> Step<GuardianEffect> {
        let _ = now;
        let mut step = Step::new();
        let Some(r) = self.records.iter_mut().find(|r| r.upgrade == upgrade && r.group == group) else {
            return step;
        };
        let Some(kind) = r.released else { return step };
        r.durable = true;
        let askers = r.asked.get(slot(kind)).copied().unwrap_or(0);
        let r = &*r;
        // Askers are replicas with a token here: at most MAX_REPLICAS, which
        // MAX_STEP_MESSAGES holds.
        for index in (0..64u8).filter(|i| askers & (1u64 << i) != 0) {
            let share = r.share(kind).clone();
            step.emit(Peer::Replica { group, index }, Message::GuardianShare { upgrade, group, kind, share });
        }
        step
    }

    /// A replica asks for `kind`: count it; release once `f + 1` distinct
    /// replicas asked and no other kind was released.
    fn request(
        &mut self,
        step: &mut Step<GuardianEffect>,
        from: Peer,
        (upgrade, group, replica): (UpgradeId, GroupId, u8),
        kind: ShareKind,
        token: &Token,
    ) {
        if from != (Peer::Replica { group, index: replica }) {
            step.fault(from, Some(upgrade), FaultKind::Unsolicited);
            return;
        }
        let Some(r) = self.records.iter_mut().find(|r| r.upgrade == upgrade && r.group == group) else {
            step.emit(from, Message::GuardianNeedsPiece { upgrade, group });
            return;
        };
        let x = u16::from(replica).saturating_add(1);
        let binding = Binding::group(upgrade, group).at(x);
        let genuine = r.tokens.get(usize::from(replica)).is_some_and(|d| token.digest(&binding) == *d);
        if !genuine {
            step.fault(from, Some(upgrade), FaultKind::ForgedShare);
            return;
        }
        let bit = 1u64 << (replica % 64);
        if let Some(asked) = r.asked.get_mut(slot(kind)) {
            *asked |= bit;
        }
        match r.released {
            // Never both kinds.
            Some(k) if k != kind => {}
            Some(_) if r.durable => {
                let share = r.share(kind).clone();
                step.emit(from, Message::GuardianShare { upgrade, group, kind, share });
            }
            // Waiting for the host's write: the share goes out then.
            Some(_) => {}
            None => {
                let count = r.asked.get(slot(kind)).map_or(0, |a| a.count_ones());
                if count > u32::from(r.f) {
                    r.released = Some(kind);
                    r.durable = false;
                    step.emit_effect(GuardianEffect::Persist { upgrade, group, kind });
                }
            }
        }
    }

    /// A replica tells the outcome: check it and forward it to the other
    /// groups this guardian guards for the same upgrade (section 5). A
    /// group is marked told only once its message is in the step, so
    /// groups beyond the step's capacity are told on the next report.
    fn learned(&mut self, step: &mut Step<GuardianEffect>, from: Peer, group: GroupId, d: &Finish) {
        let Some(r) = self.records.iter().find(|r| r.upgrade == d.upgrade && r.group == group) else {
            return;
        };
        if self.records.iter().filter(|r| r.upgrade == d.upgrade).all(|r| r.learned) {
            return;
        }
        if d.outcome.check(d.upgrade, &d.code, &r.trigger_digest, &r.cancel_digest).is_err() {
            step.fault(from, Some(d.upgrade), FaultKind::WrongCode);
            return;
        }
        // A membership upgrade committed: the group's later pieces are built
        // for its new membership.
        if d.outcome == Outcome::Committed {
            for i in 0..self.records.len() {
                if let Some(&Record { upgrade, group, next: Some(next), .. }) = self.records.get(i) {
                    if upgrade == d.upgrade {
                        self.follow(group, next);
                    }
                }
            }
        }
        for r in self.records.iter_mut().filter(|r| r.upgrade == d.upgrade && !r.learned) {
            if r.group != group {
                let op = Finish::new(d.upgrade, d.outcome, d.code.clone());
                if step.send(Peer::Group(r.group), Message::Submit(op)).is_err() {
                    continue;
                }
            }
            r.learned = true;
        }
    }
}
