//! The installer role: an untrusted coordinator (paper section 4.1).
//!
//! It calls `PrepareInstall` on every group, checks each share a replica
//! releases against the piece's digest map (a forged one is that replica's
//! fault), rebuilds `s_g` or `c` from `f + 1` valid shares, and then calls
//! `CommitInstall(τ)` with `τ = ⊕ s_g` once every group accepted, or
//! `AbortInstall(c)` once any group rejected. Several installers may work on
//! one upgrade at once; safety needs none of them to be correct.
//!
//! The installer holds no pieces: the host keeps the bundle, sends a piece
//! when the step says [`InstallerEffect::SendPrepare`], and passes the
//! group's piece along with every answer from that group's replicas.

use heapless::Vec;
use p256::elliptic_curve::ff::PrimeField;
use serde::{Deserialize, Serialize};

use crate::crypto::{reconstruct, Binding, Code, Domain, Share, ShareKind, MAX_SHARES};
use crate::error::{CapacityError, MisuseError};
use crate::step::{FaultKind, Instant, Peer, Step};
use crate::wire::{Answer, GroupId, Message, Outcome, Piece, Refusal, Reply, SmallOperation, UpgradeHeader};

/// What an installer step asks the host to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InstallerEffect {
    /// Submit `PrepareInstall` with this group's piece to the group's
    /// ordering, with this installer as the origin.
    SendPrepare {
        /// The group.
        group: GroupId,
    },
    /// The upgrade's outcome is decided (reported once).
    Decided(Outcome),
    /// `f + 1` replicas of a group refused the piece: this installer cannot
    /// finish the upgrade through that group (e.g. a stale version code).
    /// Only someone holding `c` (the deployer) can abort it now.
    Refused {
        /// The group.
        group: GroupId,
        /// Its reason.
        reason: Refusal,
    },
    /// Every group this installer finishes through has acknowledged.
    Done,
}

/// How far one group has come, from this installer's view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupProgress {
    /// Waiting for shares.
    Preparing,
    /// `s_g` rebuilt and folded into `τ`.
    Accepted,
    /// `c` rebuilt from this group's shares.
    Rejected,
    /// The group acknowledged the outcome.
    Finished,
}

#[derive(Clone, Serialize, Deserialize)]
struct Slot {
    group: GroupId,
    f: u8,
    progress: GroupProgress,
    /// Replicas that released an `s_g` / a `c` share, and that refused.
    sent_secret: u64,
    sent_cancel: u64,
    refused: u64,
    finished_acks: u64,
    refusal_reported: bool,
    /// Guardian custody: `s_g` values replicas sent, with who sent each.
    candidates: Vec<(Code, u64), MAX_CANDIDATES>,
}

/// Distinct `s_g` values an installer tracks per group in guardian custody
/// (a faulty replica may send a wrong one; `f + 1` matching ones decide).
const MAX_CANDIDATES: usize = 4;

#[derive(Clone, Serialize, Deserialize)]
struct Pending {
    slot: u32,
    kind: ShareKind,
    share: Share,
}

/// An installer for one upgrade over at most `G` groups, holding at most
/// `P` not-yet-used shares at once (shares that arrive when the pool is full
/// are dropped and asked for again on the next retry).
#[derive(Clone, Serialize, Deserialize)]
pub struct Installer<const G: usize, const P: usize> {
    id: u32,
    header: UpgradeHeader,
    slots: Vec<Slot, G>,
    pool: Vec<Pending, P>,
    /// `⊕ s_g` of the groups accepted so far.
    trigger: Code,
    accepted: u32,
    decided: Option<(Outcome, Code)>,
    finish_all: bool,
    retry_ms: u64,
    /// Next group to (re)send to, and when the next sweep is due.
    cursor: u32,
    sweeps: u32,
    deadline: Instant,
    done: bool,
    #[cfg(feature = "planted-bugs")]
    planted: crate::planted::Planted,
}

/// An installer for up to 64 groups.
pub type DefaultInstaller = Installer<64, 512>;

impl<const G: usize, const P: usize> Installer<G, P> {
    /// An installer `id` for the upgrade `header` over `groups` (with each
    /// group's `f`). With `finish_all`, it sends the outcome to every group
    /// and is done when all acknowledge; otherwise to one group.
    ///
    /// # Errors
    /// [`CapacityError::Groups`] when `groups` exceeds `G` or disagrees
    /// with the header's count; [`MisuseError::BadArgument`] for a zero
    /// retry interval or a group listed twice.
    pub fn new(
        id: u32,
        header: UpgradeHeader,
        groups: &[(GroupId, u8)],
        finish_all: bool,
        retry_ms: u64,
    ) -> Result<Self, MisuseError> {
        if groups.is_empty() || groups.len() > G || u32::try_from(groups.len()) != Ok(header.groups) {
            return Err(CapacityError::Groups.into());
        }
        if retry_ms == 0 {
            return Err(MisuseError::BadArgument);
        }
        let mut slots: Vec<Slot, G> = Vec::new();
        for (group, f) in groups {
            let slot = Slot {
                group: *group,
                f: *f,
                progress: GroupProgress::Preparing,
                sent_secret: 0,
                sent_cancel: 0,
                refused: 0,
                finished_acks: 0,
                refusal_reported: false,
                candidates: Vec::new(),
            };
            slots.push(slot).map_err(|_| CapacityError::Groups)?;
        }
        // Sorted by group, so an answer finds its slot by binary search
        // (a linear scan cost as much as the share checks at 10,000 groups).
        slots.sort_unstable_by_key(|s| s.group);
        if slots.windows(2).any(|w| matches!(w, [a, b] if a.group == b.group)) {
            return Err(MisuseError::BadArgument);
        }
        Ok(Self {
            id,
            header,
            slots,
            pool: Vec::new(),
            trigger: Code::default(),
            accepted: 0,
            decided: None,
            finish_all,
            retry_ms,
            cursor: 0,
            sweeps: 0,
            deadline: Instant(0),
            done: false,
            #[cfg(feature = "planted-bugs")]
            planted: crate::planted::Planted::None,
        })
    }

    /// Plants a deliberate bug (tests of the checkers only).
    #[cfg(feature = "planted-bugs")]
    pub fn plant(&mut self, bug: crate::planted::Planted) {
        self.planted = bug;
    }

    /// This installer as a peer.
    pub fn peer(&self) -> Peer {
        Peer::Installer(self.id)
    }

    /// The outcome, once decided, with its code.
    pub fn decided(&self) -> Option<(Outcome, &Code)> {
        self.decided.as_ref().map(|(o, c)| (*o, c))
    }

    /// Whether every group it finishes through has acknowledged.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The index of `group`'s slot (slots are sorted by group).
    fn slot(&self, group: GroupId) -> Option<usize> {
        self.slots.binary_search_by_key(&group, |s| s.group).ok()
    }

    /// A group's progress.
    pub fn progress(&self, group: GroupId) -> Option<GroupProgress> {
        self.slot(group).and_then(|i| self.slots.get(i)).map(|s| s.progress)
    }

    /// Starts (or, after a restart, resumes) the installation.
    pub fn start(&mut self, now: Instant) -> Step<InstallerEffect> {
        self.deadline = now;
        self.handle_timeout(now)
    }

    /// The next deadline.
    pub fn deadline(&self) -> Option<Instant> {
        (!self.done).then_some(self.deadline)
    }

    /// A sweep: (re)sends what is missing, one step's worth at a time.
    pub fn handle_timeout(&mut self, now: Instant) -> Step<InstallerEffect> {
        let mut step = Step::new();
        if self.done || now < self.deadline {
            step.deadline = self.deadline();
            return step;
        }
        let n = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
        let mut full = false;
        while self.cursor < n {
            let Some(slot) = self.slots.get(self.cursor as usize) else {
                break;
            };
            let group = slot.group;
            let sent = match (&self.decided, slot.progress) {
                (None, GroupProgress::Preparing) => step.effect(InstallerEffect::SendPrepare { group }).is_ok(),
                (Some((Outcome::Committed, code)), p) if p != GroupProgress::Finished => {
                    // Committing through one group: a different one each
                    // sweep, so one silent group cannot stall the installer;
                    // diffusion carries τ to the rest.
                    let not_this_sweep = !self.finish_all && Some(self.cursor) != self.sweeps.checked_rem(n);
                    let op = SmallOperation::finish(self.header.upgrade, Outcome::Committed, code.clone());
                    not_this_sweep || step.send(Peer::Group(group), Message::Submit(op)).is_ok()
                }
                (Some((Outcome::Aborted, code)), p) if p != GroupProgress::Finished => {
                    // Aborts go to every group, each preceded by the piece: a
                    // group that never held the piece ignores `c`, so it gets
                    // the piece first and then the abort. That advances its
                    // deployer's version chain, which the next piece needs.
                    let op = SmallOperation::finish(self.header.upgrade, Outcome::Aborted, code.clone());
                    step.messages.len() < crate::step::MAX_STEP_MESSAGES
                        && step.effect(InstallerEffect::SendPrepare { group }).is_ok()
                        && step.send(Peer::Group(group), Message::Submit(op)).is_ok()
                }
                _ => true,
            };
            if !sent {
                full = true;
                break;
            }
            self.cursor = self.cursor.saturating_add(1);
        }
        if full {
            // More to send: come back at once.
            self.deadline = now;
        } else {
            self.cursor = 0;
            self.sweeps = self.sweeps.wrapping_add(1);
            self.deadline = now.after(self.retry_ms);
        }
        step.deadline = self.deadline();
        step
    }

    /// An answer from a replica of `piece`'s group. `from` is the peer the
    /// host received it from; `piece` is that group's piece of the bundle.
    ///
    /// # Errors
    /// [`MisuseError::BadArgument`] when `piece` is not this upgrade's piece
    /// for the answer's group.
    pub fn handle_answer(
        &mut self,
        now: Instant,
        from: Peer,
        answer: &Answer,
        piece: &Piece,
    ) -> Result<Step<InstallerEffect>, MisuseError> {
        let h = &piece.header;
        if h.upgrade != self.header.upgrade || h.group != answer.group {
            return Err(MisuseError::BadArgument);
        }
        let mut step = Step::new();
        let genuine = from == Peer::Replica { group: answer.group, index: answer.replica }
            && answer.upgrade == self.header.upgrade
            && usize::from(answer.replica) < h.replicas.len();
        // Every step carries the installer's deadline, whatever it says.
        step.deadline = self.deadline();
        let Some(si) = self.slot(answer.group) else {
            step.fault(from, Some(answer.upgrade), FaultKind::Unsolicited);
            return Ok(step);
        };
        if !genuine {
            step.fault(from, Some(answer.upgrade), FaultKind::Unsolicited);
            return Ok(step);
        }
        let bit = 1u64 << (answer.replica % 64);
        match &answer.reply {
            Reply::Accepted(share) => {
                self.take_share(&mut step, now, from, (si, answer.replica), ShareKind::Secret, share, piece);
            }
            Reply::Rejected(share) => {
                self.take_share(&mut step, now, from, (si, answer.replica), ShareKind::Cancel, share, piece);
            }
            Reply::Finished(outcome, code) => {
                let domain = match outcome {
                    Outcome::Committed => Domain::Trigger,
                    Outcome::Aborted => Domain::Cancel,
                };
                let expected = match outcome {
                    Outcome::Committed => &self.header.trigger_digest,
                    Outcome::Aborted => &self.header.cancel_digest,
                };
                if code.check(domain, &Binding::upgrade(self.header.upgrade), expected).is_err() {
                    step.fault(from, Some(answer.upgrade), FaultKind::WrongCode);
                } else {
                    self.decide(&mut step, now, *outcome, code.clone());
                    if let Some(s) = self.slots.get_mut(si) {
                        s.finished_acks |= bit;
                    }
                }
            }
            Reply::Unknown => {
                // After a commit, a group without the piece finished and
                // forgot it (a commit implies every group prepared). After
                // an abort it may never have had it: the sweep re-sends the
                // piece before the abort.
                if matches!(self.decided, Some((Outcome::Committed, _))) {
                    if let Some(s) = self.slots.get_mut(si) {
                        s.finished_acks |= bit;
                    }
                }
            }
            Reply::Refused(Refusal::Replayed) if self.decided.is_some() => {
                // After the outcome, `Replayed` means the group's chain is
                // already past this piece: it finished it. (`OutOfOrder`
                // means the opposite: the group is behind and has not seen
                // the piece; other refusals say nothing about the outcome.)
                if let Some(s) = self.slots.get_mut(si) {
                    s.finished_acks |= bit;
                }
            }
            Reply::Refused(_) if self.decided.is_some() => {}
            Reply::Refused(reason) => {
                if let Some(s) = self.slots.get_mut(si) {
                    s.refused |= bit;
                    if s.refused.count_ones() > u32::from(s.f) && !s.refusal_reported {
                        s.refusal_reported = true;
                        let _ = step.effect(InstallerEffect::Refused { group: s.group, reason: *reason });
                    }
                }
            }
            Reply::Code(ShareKind::Secret, code) => self.take_secret(&mut step, now, si, answer.replica, code),
            Reply::Code(ShareKind::Cancel, code) => {
                // `c` checks against `D(c)` by itself.
                let b = Binding::upgrade(self.header.upgrade);
                if code.check(Domain::Cancel, &b, &self.header.cancel_digest).is_ok() {
                    if let Some(s) = self.slots.get_mut(si) {
                        s.progress = GroupProgress::Rejected;
                    }
                    self.decide(&mut step, now, Outcome::Aborted, code.clone());
                } else {
                    step.fault(from, Some(answer.upgrade), FaultKind::WrongCode);
                }
            }
            Reply::Conflict | Reply::NoShare | Reply::Pending => {}
        }
        self.check_done(&mut step);
        step.deadline = self.deadline();
        Ok(step)
    }

    /// Records a released share; rebuilds the code at `f + 1` valid ones.
    #[allow(clippy::too_many_arguments)]
    fn take_share(
        &mut self,
        step: &mut Step<InstallerEffect>,
        now: Instant,
        from: Peer,
        (si, replica): (usize, u8),
        kind: ShareKind,
        share: &Share,
        piece: &Piece,
    ) {
        let upgrade = Some(self.header.upgrade);
        let bit = 1u64 << (replica % 64);
        let Some(slot) = self.slots.get_mut(si) else {
            return;
        };
        // The share must be the answering replica's own and match the map.
        if u16::from(share.index()) != u16::from(replica).saturating_add(1) || !piece.share_is_valid(kind, share) {
            step.fault(from, upgrade, FaultKind::ForgedShare);
            return;
        }
        let (mine, other) = match kind {
            ShareKind::Secret => (&mut slot.sent_secret, slot.sent_cancel),
            ShareKind::Cancel => (&mut slot.sent_cancel, slot.sent_secret),
        };
        *mine |= bit;
        if other & bit != 0 {
            // A correct replica never releases both kinds for one piece.
            step.fault(from, upgrade, FaultKind::BothKinds);
        }
        if slot.progress != GroupProgress::Preparing || self.decided.is_some() && kind == ShareKind::Secret {
            return;
        }
        let si32 = u32::try_from(si).unwrap_or(u32::MAX);
        let dup = self.pool.iter().any(|p| p.slot == si32 && p.kind == kind && p.share.index() == share.index());
        if !dup && self.pool.push(Pending { slot: si32, kind, share: share.clone() }).is_err() {
            // Pool full: this share is asked for again on a later sweep.
            return;
        }
        let k = usize::from(slot.f).saturating_add(1);
        let mut shares: Vec<Share, MAX_SHARES> = Vec::new();
        for p in self.pool.iter().filter(|p| p.slot == si32 && p.kind == kind).take(k) {
            let _ = shares.push(p.share.clone());
        }
        if shares.len() < k {
            return;
        }
        self.pool.retain(|p| p.slot != si32);
        let Ok(secret) = reconstruct(&shares) else {
            return;
        };
        let code = Code::from_bytes(secret.to_repr().into());
        match kind {
            ShareKind::Secret => {
                if let Some(s) = self.slots.get_mut(si) {
                    s.progress = GroupProgress::Accepted;
                }
                self.fold(step, now, &code);
            }
            ShareKind::Cancel => {
                if let Some(s) = self.slots.get_mut(si) {
                    s.progress = GroupProgress::Rejected;
                }
                let b = Binding::upgrade(self.header.upgrade);
                if code.check(Domain::Cancel, &b, &self.header.cancel_digest).is_ok() {
                    self.decide(step, now, Outcome::Aborted, code);
                }
            }
        }
    }

    /// Guardian custody: a replica's rebuilt `s_g`. Nothing checks `s_g` on
    /// its own, so `f + 1` replicas must send the same value.
    fn take_secret(&mut self, step: &mut Step<InstallerEffect>, now: Instant, si: usize, replica: u8, code: &Code) {
        let bit = 1u64 << (replica % 64);
        let Some(slot) = self.slots.get_mut(si) else { return };
        if slot.progress != GroupProgress::Preparing || self.decided.is_some() {
            return;
        }
        let i = match slot.candidates.iter().position(|(c, _)| c == code) {
            Some(i) => i,
            None => {
                if slot.candidates.push((code.clone(), 0)).is_err() {
                    // Too many distinct values: more than f replicas lie,
                    // which a correct group does not have.
                    return;
                }
                slot.candidates.len().saturating_sub(1)
            }
        };
        let Some((value, senders)) = slot.candidates.get_mut(i) else { return };
        *senders |= bit;
        if senders.count_ones() <= u32::from(slot.f) {
            return;
        }
        let value = value.clone();
        slot.progress = GroupProgress::Accepted;
        slot.candidates.clear();
        self.fold(step, now, &value);
    }

    /// Folds one group's `s_g` into `τ`; at the last group, checks `D(τ)`.
    fn fold(&mut self, step: &mut Step<InstallerEffect>, now: Instant, s_g: &Code) {
        self.trigger.xor_assign(s_g);
        self.accepted = self.accepted.saturating_add(1);
        #[cfg(feature = "planted-bugs")]
        if self.planted == crate::planted::Planted::CommitWithMissingGroup
            && self.accepted.saturating_add(1) == self.header.groups
        {
            let tau = self.trigger.clone();
            self.decide(step, now, Outcome::Committed, tau);
            return;
        }
        if self.accepted == self.header.groups {
            let tau = self.trigger.clone();
            let b = Binding::upgrade(self.header.upgrade);
            if tau.check(Domain::Trigger, &b, &self.header.trigger_digest).is_ok() {
                self.decide(step, now, Outcome::Committed, tau);
            }
        }
    }

    /// The outcome is known: report it and start sending it.
    fn decide(&mut self, step: &mut Step<InstallerEffect>, now: Instant, outcome: Outcome, code: Code) {
        if self.decided.is_some() {
            return;
        }
        self.decided = Some((outcome, code));
        self.pool.clear();
        let _ = step.effect(InstallerEffect::Decided(outcome));
        // Send at the next sweep, which is due now.
        self.cursor = 0;
        self.deadline = now;
    }

    fn check_done(&mut self, step: &mut Step<InstallerEffect>) {
        if self.done || self.decided.is_none() {
            return;
        }
        for s in self.slots.iter_mut() {
            if s.finished_acks.count_ones() > u32::from(s.f) {
                s.progress = GroupProgress::Finished;
            }
        }
        let finished = |s: &Slot| s.progress == GroupProgress::Finished;
        let all = self.finish_all || matches!(self.decided, Some((Outcome::Aborted, _)));
        let done = if all { self.slots.iter().all(finished) } else { self.slots.iter().any(finished) };
        if done {
            self.done = true;
            let _ = step.effect(InstallerEffect::Done);
        }
    }
}
