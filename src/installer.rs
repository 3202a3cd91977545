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
//!
//! # Liveness within the declared capacities
//! An installer whose deployment fits it always makes progress, whatever
//! up to `f` faulty replicas per group send and in whatever order answers
//! arrive:
//! - the shares and values it holds before a group's code is rebuilt live
//!   in one pool of `P` entries, and a group never holds more than `2f` of
//!   them (at most `f` of each kind, or `f` wrong values and `f` right ones:
//!   the next one rebuilds the code), so [`Installer::new`] refuses, with
//!   [`CapacityError::Shares`], a deployment whose `Σ 2f` exceeds the pool;
//! - each replica's first value counts and only that one (a later,
//!   different one is its [`Equivocation`](FaultKind::Equivocation));
//! - it is [done](InstallerEffect::Done) only once every group
//!   acknowledged the outcome (see [`Finishing`]).
//!
//! ```
//! use bft_upgrade::crypto::DeployerKey;
//! use bft_upgrade::deployer::{Deployer, UpgradePlan};
//! use bft_upgrade::installer::{DefaultInstaller, Finishing, InstallerEffect, InstallerOptions};
//! use bft_upgrade::rand_core::SeedableRng;
//! use bft_upgrade::step::Instant;
//! use bft_upgrade::wire::{DeployerId, GroupId};
//!
//! let mut rng = chacha20::ChaCha20Rng::from_seed([3; 32]);
//! let deployer = Deployer::new(DeployerId(1), DeployerKey::random(&mut rng));
//! let groups = [GroupId(1), GroupId(2)];
//! let plan = UpgradePlan::new(&mut rng, deployer.id(), 1, &groups).unwrap();
//! // The installer needs only the public header and each group's f.
//! let options = InstallerOptions::default().retry_ms(200).finishing(Finishing::EveryGroup);
//! let mut installer =
//!     DefaultInstaller::new(9, plan.header().clone(), &[(GroupId(1), 1), (GroupId(2), 1)], options).unwrap();
//! let step = installer.start(Instant(0));
//! // Submit each group's piece (the host holds the bundle), then retry on
//! // the deadline and feed every answer to `handle_answer`.
//! assert!(step.effects.contains(&InstallerEffect::SendPrepare { group: GroupId(1) }));
//! assert!(step.effects.contains(&InstallerEffect::SendPrepare { group: GroupId(2) }));
//! assert_eq!(step.deadline, Some(Instant(200)));
//! ```

use heapless::Vec;
use p256::elliptic_curve::ff::PrimeField;
use serde::{Deserialize, Serialize};

use crate::crypto::{reconstruct, Code, Share, ShareKind, MAX_SHARES};
use crate::error::{CapacityError, MisuseError};
use crate::step::{FaultKind, Instant, Peer, Step};
use crate::wire::{Answer, Custody, Finish, GroupId, Message, Outcome, Piece, Refusal, Reply, UpgradeHeader};

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
    /// A refusal for good means `τ` can never be assembled; then the
    /// deployer, who holds `c`, aborts it
    /// ([`UpgradePlan::abort`](crate::deployer::UpgradePlan::abort)).
    Refused {
        /// The group.
        group: GroupId,
        /// Its reason.
        reason: Refusal,
    },
    /// Every group has acknowledged the outcome (`f + 1` of its replicas).
    Done,
}

/// Where an installer sends the outcome once it is decided.
///
/// Either way the installer is [done](InstallerEffect::Done) only once every
/// group acknowledged it: a group that diffusion never reaches (no path in
/// the call graph, no proactive diffusion, no guardian forwarding) would
/// otherwise hold its piece, and block conflicting ones, forever.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Finishing {
    /// To every group, each sweep, until it acknowledges.
    EveryGroup,
    /// To one group a sweep (a different one each time), letting diffusion
    /// carry the outcome to the others; from `grace` sweeps after the
    /// decision on, to every group that has not acknowledged.
    Diffusion {
        /// Sweeps to leave to diffusion.
        grace: u32,
    },
}

/// How an installer works; [`Default`] gives a 200 ms retry interval,
/// [`Finishing::EveryGroup`] and the whole pool of the installer's type.
///
/// ```
/// use bft_upgrade::installer::{Finishing, InstallerOptions};
/// let options = InstallerOptions::default().retry_ms(500).finishing(Finishing::Diffusion { grace: 4 });
/// assert_eq!(options.retry_ms, 500);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstallerOptions {
    /// First interval between sweeps, in ms (not zero).
    pub retry_ms: u64,
    /// Where the outcome goes.
    pub finishing: Finishing,
    /// The most pool entries to use, if fewer than the type's `P` (e.g. to
    /// run at exactly the capacity a deployment needs).
    pub share_pool: Option<usize>,
}

impl Default for InstallerOptions {
    fn default() -> Self {
        Self { retry_ms: 200, finishing: Finishing::EveryGroup, share_pool: None }
    }
}

impl InstallerOptions {
    /// With `retry_ms` between sweeps.
    #[must_use]
    pub const fn retry_ms(mut self, retry_ms: u64) -> Self {
        self.retry_ms = retry_ms;
        self
    }

    /// With `finishing`.
    #[must_use]
    pub const fn finishing(mut self, finishing: Finishing) -> Self {
        self.finishing = finishing;
        self
    }

    /// Using at most `entries` of the pool.
    #[must_use]
    pub const fn share_pool(mut self, entries: usize) -> Self {
        self.share_pool = Some(entries);
        self
    }
}

/// The pool entries a deployment needs: `2f` per group (see the module
/// docs). An installer of pool `P` takes a deployment only if this is at
/// most `P`.
pub fn pool_needed(groups: &[(GroupId, u8)]) -> usize {
    groups.iter().map(|(_, f)| usize::from(*f).saturating_mul(2)).fold(0, usize::saturating_add)
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
    /// Guardian custody: replicas whose `s_g` value was counted.
    voted: u64,
}

/// What the pool holds for a group still preparing.
#[derive(Clone, Serialize, Deserialize)]
enum Pooled {
    /// A valid share of this kind from the replica of its index.
    Share(ShareKind, Share),
    /// Guardian custody: the `s_g` value one replica sent (nothing checks
    /// `s_g` alone, so `f + 1` replicas must send the same).
    Secret(Code),
}

#[derive(Clone, Serialize, Deserialize)]
struct Pending {
    slot: u32,
    replica: u8,
    value: Pooled,
}

/// An installer for one upgrade over at most `G` groups, holding at most
/// `P` shares or values of groups still preparing (see the module docs for
/// why `Σ 2f` entries always suffice).
#[derive(Clone, Serialize, Deserialize)]
pub struct Installer<const G: usize, const P: usize> {
    id: u32,
    header: UpgradeHeader,
    slots: Vec<Slot, G>,
    pool: Vec<Pending, P>,
    /// The most entries of `pool` in use (`P`, or less by the options).
    pool_limit: usize,
    /// `⊕ s_g` of the groups accepted so far.
    trigger: Code,
    accepted: u32,
    decided: Option<(Outcome, Code)>,
    /// The sweep count when the outcome was decided.
    decided_sweep: u32,
    finishing: Finishing,
    retry_ms: u64,
    /// Next group to (re)send to, and when the next sweep is due.
    cursor: u32,
    sweeps: u32,
    deadline: Instant,
    done: bool,
    /// Every slot below this one has finished: a hint that keeps
    /// [`Self::check_done`] from reading every slot at every answer (an
    /// install was O(|G|²)). Not stored: a restored installer starts it
    /// at 0.
    #[serde(skip)]
    finished_below: u32,
    #[cfg(feature = "planted-bugs")]
    planted: crate::planted::Planted,
}

/// An installer for up to 64 groups, with a pool for groups of up to 25
/// replicas (`f = 8`) each, or larger groups among smaller ones.
pub type DefaultInstaller = Installer<64, 1024>;

impl<const G: usize, const P: usize> Installer<G, P> {
    /// An installer `id` for the upgrade `header` over `groups` (each
    /// group with its `f`), working as `options` say.
    ///
    /// # Errors
    /// [`CapacityError::Groups`] when `groups` exceeds `G` or disagrees
    /// with the header's count; [`CapacityError::Shares`] when the
    /// groups' [`pool_needed`] exceeds `P` (or `options.share_pool`);
    /// [`MisuseError::BadArgument`] for a zero retry interval, an `f` no
    /// group of [`MAX_REPLICAS`](crate::wire::MAX_REPLICAS) has, or a group
    /// listed twice.
    pub fn new(
        id: u32,
        header: UpgradeHeader,
        groups: &[(GroupId, u8)],
        options: InstallerOptions,
    ) -> Result<Self, MisuseError> {
        if groups.is_empty() || groups.len() > G || u32::try_from(groups.len()) != Ok(header.groups) {
            return Err(CapacityError::Groups.into());
        }
        let max_f = crate::wire::MAX_REPLICAS.saturating_sub(1) / 3;
        if options.retry_ms == 0 || groups.iter().any(|(_, f)| usize::from(*f) > max_f) {
            return Err(MisuseError::BadArgument);
        }
        let pool_limit = options.share_pool.map_or(P, |n| n.min(P));
        if pool_needed(groups) > pool_limit {
            return Err(CapacityError::Shares.into());
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
                voted: 0,
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
            pool_limit,
            trigger: Code::default(),
            accepted: 0,
            decided: None,
            decided_sweep: 0,
            finishing: options.finishing,
            retry_ms: options.retry_ms,
            cursor: 0,
            sweeps: 0,
            deadline: Instant(0),
            done: false,
            finished_below: 0,
            #[cfg(feature = "planted-bugs")]
            planted: crate::planted::Planted::None,
        })
    }

    /// Plants a deliberate bug (tests of the checkers only).
    #[cfg(feature = "planted-bugs")]
    pub fn plant(&mut self, bug: crate::planted::Planted) {
        self.planted = bug;
    }

    /// Whether `bug` is planted (never, without the feature).
    #[allow(clippy::unused_self)]
    fn planted(&self, bug: crate::planted::Planted) -> bool {
        #[cfg(feature = "planted-bugs")]
        return self.planted == bug;
        #[cfg(not(feature = "planted-bugs"))]
        {
            let _ = bug;
            false
        }
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
                    // diffusion carries τ to the rest, and after the grace
                    // sweeps every group still silent gets τ directly.
                    let direct = match self.finishing {
                        Finishing::Diffusion { .. } if self.planted(crate::planted::Planted::DoneAfterOneGroup) => {
                            Some(self.cursor) == self.sweeps.checked_rem(n)
                        }
                        Finishing::EveryGroup => true,
                        Finishing::Diffusion { grace } => {
                            self.sweeps.wrapping_sub(self.decided_sweep) >= grace
                                || Some(self.cursor) == self.sweeps.checked_rem(n)
                        }
                    };
                    let op = Finish::new(self.header.upgrade, Outcome::Committed, code.clone());
                    !direct || step.send(Peer::Group(group), Message::Submit(op)).is_ok()
                }
                (Some((Outcome::Aborted, code)), p) if p != GroupProgress::Finished => {
                    // Aborts go to every group, each preceded by the piece: a
                    // group that never held the piece ignores `c`, so it gets
                    // the piece first and then the abort. That advances its
                    // deployer's version chain, which the next piece needs.
                    let op = Finish::new(self.header.upgrade, Outcome::Aborted, code.clone());
                    step.messages.len() < crate::step::MAX_STEP_MESSAGES
                        && step.effect(InstallerEffect::SendPrepare { group }).is_ok()
                        && step.send(Peer::Group(group), Message::Submit(op)).is_ok()
                }
                _ => true,
            };
            if !sent && self.planted(crate::planted::Planted::SweepIgnoresRoom) {
                // The bug: what did not fit is counted lost, not kept due.
                step.lost = step.lost.saturating_add(1);
                self.cursor = self.cursor.saturating_add(1);
                continue;
            }
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
            && answer.upgrade == self.header.upgrade;
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
        if usize::from(answer.replica) >= h.replicas.len() {
            // A replica that joined the group after the piece was built (a
            // membership upgrade): it holds no share of it, but its code
            // is as good as anyone's; nothing else it says counts.
            if let Reply::Finished(outcome, code) = &answer.reply {
                if self.check(*outcome, code).is_ok() {
                    self.decide(&mut step, now, *outcome, code.clone());
                    step.deadline = self.deadline();
                }
            }
            return Ok(step);
        }
        let bit = 1u64 << (answer.replica % 64);
        // Shares come in replica custody, rebuilt codes in guardian custody;
        // the other kind of answer is a fault (and must not use the pool).
        let guarded = h.custody != Custody::Replicas;
        match &answer.reply {
            Reply::Accepted(_) | Reply::Rejected(_) if guarded => {
                step.fault(from, Some(answer.upgrade), FaultKind::Unsolicited);
            }
            Reply::Code(ShareKind::Secret, _) if !guarded => {
                step.fault(from, Some(answer.upgrade), FaultKind::Unsolicited);
            }
            Reply::Accepted(share) => {
                self.take_share(&mut step, now, from, (si, answer.replica), ShareKind::Secret, share, piece);
            }
            Reply::Rejected(share) => {
                self.take_share(&mut step, now, from, (si, answer.replica), ShareKind::Cancel, share, piece);
            }
            Reply::Finished(outcome, code) => {
                if self.check(*outcome, code).is_err() {
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
                        // At most three effects an answer: Refused or
                        // Decided, and Done.
                        step.emit_effect(InstallerEffect::Refused { group: s.group, reason: *reason });
                    }
                }
            }
            Reply::Code(ShareKind::Secret, code) => self.take_secret(&mut step, now, from, (si, answer.replica), code),
            Reply::Code(ShareKind::Cancel, code) => {
                // `c` checks against `D(c)` by itself.
                if self.check(Outcome::Aborted, code).is_ok() {
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
        self.check_done(&mut step, si);
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
        let k = usize::from(slot.f).saturating_add(1);
        // This group's pooled shares of this kind: fewer than k, one per
        // replica (the share's index is its replica's, checked above).
        let mut shares: Vec<Share, MAX_SHARES> = Vec::new();
        for p in self.pool.iter().filter(|p| p.slot == si32) {
            match &p.value {
                Pooled::Share(kd, s) if *kd == kind => {
                    if s.index() == share.index() {
                        return;
                    }
                    if shares.push(s.clone()).is_err() {
                        return;
                    }
                }
                _ => {}
            }
        }
        if shares.push(share.clone()).is_err() {
            return;
        }
        if shares.len() < k {
            // At most f of each kind wait here, within the budget `new`
            // checked; the share that makes k is used at once.
            self.pool_push(step, si32, replica, Pooled::Share(kind, share.clone()));
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
                if self.check(Outcome::Aborted, &code).is_ok() {
                    self.decide(step, now, Outcome::Aborted, code);
                }
            }
        }
    }

    /// Guardian custody: a replica's rebuilt `s_g`. Nothing checks `s_g` on
    /// its own, so `f + 1` replicas must send the same value; each replica's
    /// first value counts, and only that one.
    fn take_secret(
        &mut self,
        step: &mut Step<InstallerEffect>,
        now: Instant,
        from: Peer,
        (si, replica): (usize, u8),
        code: &Code,
    ) {
        let bit = 1u64 << (replica % 64);
        let per_message = self.planted(crate::planted::Planted::VotesPerMessage);
        let Some(slot) = self.slots.get_mut(si) else { return };
        if slot.progress != GroupProgress::Preparing || self.decided.is_some() {
            return;
        }
        let si32 = u32::try_from(si).unwrap_or(u32::MAX);
        let f = slot.f;
        if slot.voted & bit != 0 && !per_message {
            let same = self
                .pool
                .iter()
                .any(|p| p.slot == si32 && p.replica == replica && matches!(&p.value, Pooled::Secret(c) if c == code));
            if !same {
                step.fault(from, Some(self.header.upgrade), FaultKind::Equivocation);
            }
            return;
        }
        slot.voted |= bit;
        let matching =
            self.pool.iter().filter(|p| p.slot == si32 && matches!(&p.value, Pooled::Secret(c) if c == code)).count();
        if matching < usize::from(f) {
            // At most f wrong values and f right ones wait here.
            self.pool_push(step, si32, replica, Pooled::Secret(code.clone()));
            return;
        }
        if let Some(s) = self.slots.get_mut(si) {
            s.progress = GroupProgress::Accepted;
        }
        self.pool.retain(|p| p.slot != si32);
        self.fold(step, now, code);
    }

    /// Pools a share or value of a group still preparing. Room is
    /// guaranteed by the budget [`new`](Self::new) checked; a full pool
    /// would be this crate's bug, counted in the step's `lost`.
    fn pool_push(&mut self, step: &mut Step<InstallerEffect>, slot: u32, replica: u8, value: Pooled) {
        if self.planted(crate::planted::Planted::PoolHalfBudget) {
            // The bug: half the budget, and what does not fit is dropped.
            let half = self.pool_limit / 2;
            if self.pool.len() < half {
                let _ = self.pool.push(Pending { slot, replica, value });
            }
            return;
        }
        if self.pool.len() >= self.pool_limit || self.pool.push(Pending { slot, replica, value }).is_err() {
            debug_assert!(false, "installer pool over its budget");
            step.lost = step.lost.saturating_add(1);
        }
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
            if self.check(Outcome::Committed, &tau).is_ok() {
                self.decide(step, now, Outcome::Committed, tau);
            }
        }
    }

    /// The outcome is known: report it and start sending it.
    /// Whether `code` finishes this upgrade as `outcome` (the header's digests).
    fn check(&self, outcome: Outcome, code: &Code) -> Result<(), crate::error::CryptoError> {
        let h = &self.header;
        outcome.check(h.upgrade, code, &h.trigger_digest, &h.cancel_digest)
    }

    fn decide(&mut self, step: &mut Step<InstallerEffect>, now: Instant, outcome: Outcome, code: Code) {
        if self.decided.is_some() {
            return;
        }
        self.decided = Some((outcome, code));
        self.decided_sweep = self.sweeps;
        self.pool.clear();
        step.emit_effect(InstallerEffect::Decided(outcome));
        // Send at the next sweep, which is due now.
        self.cursor = 0;
        self.deadline = now;
    }

    /// After an answer for slot `si`, the only slot an answer changes.
    fn check_done(&mut self, step: &mut Step<InstallerEffect>, si: usize) {
        if self.done || self.decided.is_none() {
            return;
        }
        if let Some(s) = self.slots.get_mut(si) {
            if s.finished_acks.count_ones() > u32::from(s.f) {
                s.progress = GroupProgress::Finished;
            }
            if s.progress != GroupProgress::Finished {
                self.finished_below = self.finished_below.min(u32::try_from(si).unwrap_or(u32::MAX));
            }
        }
        while self.slots.get(self.finished_below as usize).is_some_and(|s| s.progress == GroupProgress::Finished) {
            self.finished_below = self.finished_below.saturating_add(1);
        }
        let one = self.planted(crate::planted::Planted::DoneAfterOneGroup)
            && matches!(self.finishing, Finishing::Diffusion { .. })
            && self.slots.iter().any(|s| s.progress == GroupProgress::Finished);
        if one || self.finished_below as usize >= self.slots.len() {
            self.done = true;
            step.emit_effect(InstallerEffect::Done);
        }
    }
}
