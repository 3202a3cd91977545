//! The checkers: safety after every event (split outcomes, both kinds,
//! both codes rebuildable, replays, early commits), the bookkeeping they
//! read, and the report with its liveness diagnosis. The planted-bug tests
//! certify them (tests/planted.rs).

#[allow(clippy::wildcard_imports)]
use super::*;

/// A safety violation found by the checker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Virtual time, ms.
    pub at_ms: u64,
    /// Which property broke.
    pub kind: ViolationKind,
    /// What broke, in words.
    pub what: String,
}

/// The property a [`Violation`] breaks ([what holds](crate::protocol#what-holds), and the
/// crate's own promises).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViolationKind {
    /// A correct group committed while another aborted.
    SplitOutcome,
    /// A correct group released both kinds of share for one piece.
    BothKinds,
    /// Both the trigger and the cancellation code can be rebuilt.
    BothCodes,
    /// A correct replica released shares of a piece not built on its
    /// deployer's current version code (a replay).
    Replay,
    /// A correct installer decided to commit before every group accepted.
    EarlyCommit,
    /// A client saw a group older than one it saw before (section 4.3).
    ClientOrder,
    /// A role's step lost an output it had decided (`Step::lost`).
    LostOutput,
    /// Two correct replicas of a group that executed the same ordered
    /// operations hold different replicated state
    /// (`GroupReplica::replicated_digest`).
    Diverged,
    /// A wiped replica could not rejoin from `f + 1` correct peers.
    StateTransfer,
}

/// Message and work counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metrics {
    /// Messages sent by replicas.
    pub replica_messages: u64,
    /// Bytes sent by replicas.
    pub replica_bytes: u64,
    /// Messages sent by installers (including pieces).
    pub installer_messages: u64,
    /// Bytes sent by installers.
    pub installer_bytes: u64,
    /// Messages dropped by the network.
    pub dropped: u64,
    /// Messages duplicated by the network.
    pub duplicated: u64,
    /// Messages that did not decode (garbage).
    pub undecodable: u64,
    /// Faults reported by roles.
    pub faults_reported: u64,
    /// Application transactions completed.
    pub txns_completed: u64,
    /// Transactions aborted and restarted by Figure 2.
    pub txns_restarted: u64,
    /// Events processed.
    pub events: u64,
    /// Role restarts: each reopens the role from its host-layer store.
    pub restarts: u64,
    /// Replicas wiped (each rejoins by state transfer).
    pub wipes: u64,
    /// Keys rotated by membership upgrades: the old holder left, the new
    /// one joined by state transfer.
    pub rotations: u64,
    /// Replicas that joined a group a resize grew (by state transfer).
    pub joined: u64,
    /// Replicas that left a group a resize shrank.
    pub left: u64,
    /// Batches the roles' host layers committed to their stores.
    pub store_writes: u64,
    /// External client calls.
    pub client_calls: u64,
    /// Client calls answered "too old: refresh".
    pub client_refreshes: u64,
}

/// The result of one run.
#[derive(Clone, Debug)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// The first safety violation, if any.
    pub violation: Option<Violation>,
    /// Liveness failure: what was unfinished at the deadline.
    pub liveness: Option<String>,
    /// Per upgrade: the outcome at correct groups (`None`: unfinished or
    /// refused everywhere).
    pub outcomes: Vec<Option<Outcome>>,
    /// Virtual time when every upgrade had finished at every correct group.
    pub finished_at_ms: Option<u64>,
    /// Counters.
    pub metrics: Metrics,
    /// Digest of the run's trace (same seed, same digest).
    pub trace_digest: [u8; 32],
    /// Share of application transactions in the install window (first
    /// start to full finish) that completed without being aborted; `None`
    /// without application traffic in the window.
    pub availability: Option<f64>,
    /// Encoded size of the first upgrade's first piece, bytes.
    pub piece_bytes: u64,
    /// Faults injected: Byzantine replicas, installers and guardians,
    /// compromised groups, crashes, dropped and duplicated messages.
    pub faults_injected: u64,
    /// Number of replicas.
    pub replicas: usize,
}

impl World {
    /// Records guardian shares that reach a Byzantine replica.
    pub(super) fn note_leak(&mut self, to: Peer, message: &Message) {
        let (Peer::Replica { group, index }, Message::GuardianShare { upgrade, kind, share, .. }) = (to, message)
        else {
            return;
        };
        let Some(gi) = self.group_index(group) else { return };
        if self.groups[gi].replicas.get(usize::from(index)).is_some_and(|r| r.byz.is_some()) {
            self.dirty = true;
            self.touch(*upgrade, gi);
            let key = (*upgrade, group, *kind == ShareKind::Secret);
            self.leaked.entry(key).or_default().insert(share.index());
        }
    }

    pub(super) fn outcome_of(&self, ui: usize) -> Option<Outcome> {
        let b = &self.upgrades[ui];
        let mut out = None;
        for gi in &b.groups {
            let g = &self.groups[*gi];
            if !g.correct {
                continue;
            }
            for r in g.replicas.iter().filter(|r| r.byz.is_none() && !r.gone) {
                match r.finished.get(&b.header.upgrade) {
                    Some(o) => out = Some(*o),
                    None => return None,
                }
            }
        }
        out
    }

    pub(super) fn all_finished(&self) -> bool {
        (0..self.upgrades.len()).all(|ui| !self.upgrades[ui].valid || self.tallies[ui].finished())
    }

    /// Marks upgrade `u` at group `gi` for the safety checkers.
    pub(super) fn touch(&mut self, u: UpgradeId, gi: usize) {
        if let Some(ui) = self.upgrade_index(u) {
            if self.tallies[ui].member.get(gi).copied().unwrap_or(false) {
                self.to_check.insert((ui, gi));
            }
        }
    }

    pub(super) fn upgrade_index(&self, u: UpgradeId) -> Option<usize> {
        self.upgrades.iter().position(|b| b.header.upgrade == u)
    }

    /// Records that replica `ri` of group `gi` finished `u` with `outcome`.
    pub(super) fn note_finished(&mut self, gi: usize, ri: usize, u: UpgradeId, outcome: Outcome) {
        let r = &mut self.groups[gi].replicas[ri];
        let first = r.finished.insert(u, outcome).is_none();
        let counted = first && r.byz.is_none() && self.groups[gi].correct;
        let Some(ui) = self.upgrade_index(u) else { return };
        if !self.tallies[ui].member.get(gi).copied().unwrap_or(false) {
            return;
        }
        if counted {
            self.tallies[ui].unfinished -= 1;
        }
        if first {
            self.count_out(ui, u);
        }
        self.to_check.insert((ui, gi));
    }

    /// One replica fewer has `u` (upgrade `ui`) to finish: when it was the
    /// last, the deployer retires the upgrade. A replica that joined after
    /// the retirement was never counted in.
    pub(super) fn count_out(&mut self, ui: usize, u: UpgradeId) {
        let t = &mut self.tallies[ui];
        if t.left == 0 {
            return;
        }
        t.left -= 1;
        if t.left == 0 && !t.compromised {
            self.retire(u);
        }
    }

    /// No replay (section 4.4): a correct replica releases shares only for
    /// a piece built on its deployer's current version code there.
    pub(super) fn check_chain(&mut self, gi: usize, ri: usize, upgrade: UpgradeId) {
        let Some(piece) =
            self.upgrades.iter().find(|b| b.header.upgrade == upgrade).and_then(|b| b.pieces.get(&self.groups[gi].id))
        else {
            return;
        };
        let h = &piece.header;
        let current = self.groups[gi].replicas[ri].host.role().version_code(h.deployer);
        if current != Some(&h.prev_version) {
            let what = format!(
                "replica {ri} of {:?} released shares of {upgrade:?}, built on a stale version",
                self.groups[gi].id
            );
            self.flag(ViolationKind::Replay, what);
        }
    }

    /// What an adversary can rebuild at group `gi` of upgrade `ui`: (its
    /// `s_g`, hence its part of `τ`; `c`).
    ///
    /// Replica custody: shares correct replicas released, plus every share
    /// Byzantine replicas hold. Guardian custody: codes correct replicas
    /// released, or guardian shares in Byzantine hands (leaked by correct
    /// guardians to Byzantine replicas, or held by Byzantine guardians).
    /// Both only grow, so a group once found rebuildable stays so.
    pub(super) fn rebuildable(&self, ui: usize, gi: usize) -> (bool, bool) {
        let u = self.upgrades[ui].header.upgrade;
        let g = &self.groups[gi];
        let released = |secret: bool| {
            g.replicas
                .iter()
                .filter(|r| r.correct())
                .any(|r| r.released.get(&u).is_some_and(|k| if secret { k.0 } else { k.1 }))
        };
        match &self.material.guardian_sets[gi] {
            None => {
                let byz = g.replicas.iter().filter(|r| r.byz.is_some()).count();
                let count = |secret: bool| {
                    g.replicas
                        .iter()
                        .filter(|r| r.byz.is_none())
                        .filter(|r| r.released.get(&u).is_some_and(|k| if secret { k.0 } else { k.1 }))
                        .count()
                        + byz
                };
                // The threshold the piece was built with (a resize
                // changes `f`).
                let f = self.upgrades[ui].pieces.get(&g.id).map_or(g.f, |p| p.header.f);
                let k = usize::from(f) + 1;
                (count(true) >= k, count(false) >= k)
            }
            Some(set) => {
                let byz = &self.byz_guardians[gi];
                let public = |secret: bool| {
                    let leaked = self.leaked.get(&(u, g.id, secret)).map_or(0, |l| l.difference(byz).count());
                    byz.len() + leaked >= set.threshold()
                };
                (released(true) || public(true), released(false) || public(false))
            }
        }
    }

    /// After an operation every replica of group `gi` executed in the
    /// group's order: its correct replicas' replicated digests agree.
    pub(super) fn check_replicated(&mut self, gi: usize) {
        let g = &self.groups[gi];
        let mut correct = g.replicas.iter().enumerate().filter(|(_, r)| r.byz.is_none() && !r.down);
        let Some((first, r0)) = correct.next() else { return };
        let d0 = r0.host.role().replicated_digest();
        let diverged = correct.find(|(_, r)| r.host.role().replicated_digest() != d0).map(|(ri, _)| ri);
        if let Some(ri) = diverged {
            let what = format!("replicas {first} and {ri} of group {:?} diverged after the same operations", g.id);
            self.flag(ViolationKind::Diverged, what);
        }
    }

    pub(super) fn flag(&mut self, kind: ViolationKind, what: String) {
        if self.violation.is_none() {
            self.violation = Some(Violation { at_ms: self.now, kind, what });
        }
    }

    /// The protocol's safety properties for upgrade `ui`, after every event that
    /// changed what it reads at group `gi`: the group's own state, then the
    /// upgrade's tallies over all groups.
    pub(super) fn check_safety(&mut self, ui: usize, gi: usize) {
        let u = self.upgrades[ui].header.upgrade;
        let g = &self.groups[gi];
        let t = &mut self.tallies[ui];
        let mut kinds = (false, false);
        for (ri, r) in g.replicas.iter().enumerate().filter(|(_, r)| r.correct()) {
            match r.finished.get(&u) {
                Some(Outcome::Committed) if g.correct => t.committed = t.committed.or(Some((g.id, ri))),
                Some(Outcome::Aborted) if g.correct => t.aborted = t.aborted.or(Some((g.id, ri))),
                _ => {}
            }
            if let Some((s, c)) = r.released.get(&u) {
                kinds.0 |= *s;
                kinds.1 |= *c;
            }
        }
        if g.correct && kinds.0 && kinds.1 {
            let what = format!("correct group {:?} released both kinds of share for {u:?}", g.id);
            return self.flag(ViolationKind::BothKinds, what);
        }
        if let (Some(c), Some(a)) = (t.committed, t.aborted) {
            let what = format!("{u:?} committed at {c:?} but aborted at {a:?}");
            return self.flag(ViolationKind::SplitOutcome, what);
        }
        let (tau, c) = self.rebuildable(ui, gi);
        let t = &mut self.tallies[ui];
        if tau {
            t.tau_at.insert(gi);
        }
        if c {
            t.c_at.insert(gi);
        }
        if t.tau_at.len() == t.groups && !t.c_at.is_empty() {
            self.flag(
                ViolationKind::BothCodes,
                format!("both the trigger and the cancellation code of {u:?} can be rebuilt"),
            );
        }
    }

    /// One stuck group of upgrade `ui`, for a liveness report: what its
    /// first correct replica holds, and each live correct installer's view.
    pub(super) fn diagnose(&self, ui: usize, id: GroupId) -> String {
        let u = self.upgrades[ui].header.upgrade;
        let Some(gi) = self.group_index(id) else { return String::new() };
        let g = &self.groups[gi];
        let Some((ri, r)) = g.replicas.iter().enumerate().find(|(_, r)| r.byz.is_none() && !r.gone) else {
            return String::new();
        };
        let held = r.host.role().status(u);
        // What a prepare would answer now, on a copy.
        let answer = self.upgrades[ui].pieces.get(&id).map(|piece| {
            let mut copy = r.host.role().clone();
            let mut crypto = Cached { material: &self.material, key: &self.material.keys[gi][self.key_at[gi][ri]] };
            let op = Operation::PrepareInstall((**piece).clone());
            let step =
                copy.handle_ordered_with(Instant(self.now), Peer::Installer(0), &op, &mut crypto, |_| Verdict::Accept);
            step.messages.iter().find_map(|m| match &m.message {
                Message::Answer(a) => Some(format!("{:?}", a.reply)),
                _ => None,
            })
        });
        let views: Vec<String> = self
            .installers
            .iter()
            .filter(|i| i.upgrade == ui && !i.byzantine && !i.dead)
            .map(|i| format!("{:?}", i.role.progress(id)))
            .collect();
        // Which upgrade's outcome the piece was chained on, and what that
        // upgrade's outcome is here (a refused piece's chain broke there).
        let chained_on = self.upgrades[ui].pieces.get(&id).and_then(|piece| {
            let prev = &piece.header.prev_version;
            self.upgrades.iter().enumerate().find_map(|(pi, b)| {
                let kind = if b.trigger == *prev {
                    "commit"
                } else if b.cancel == *prev {
                    "abort"
                } else {
                    return None;
                };
                Some(format!("#{pi}'s {kind} (here: {:?})", r.finished.get(&b.header.upgrade)))
            })
        });
        // Everything else it holds: a stuck upgrade is most often withheld
        // behind one of these.
        let others: Vec<String> = r
            .host
            .role()
            .replicated()
            .held_upgrades()
            .filter(|h| *h != u)
            .map(|h| format!("#{} {:?}", self.upgrade_index(h).map_or(-1, |i| i as i64), r.host.role().status(h)))
            .collect();
        // In guardian custody: what each of the group's guardians holds,
        // and whether it follows the group's membership.
        let members = r.host.role().config().membership.digest();
        let guardians: Vec<String> = self
            .guardians
            .iter()
            .enumerate()
            .filter_map(|(k, slot)| {
                let role = &slot.host;
                let set = role.config().groups.iter().find(|s| s.group == id)?;
                let held = if role.holds(u, id) { format!("{:?}", role.released(u, id)) } else { "-".into() };
                let follows = if set.members == members { "" } else { " stale members" };
                let byz = if slot.byz.is_some() { " byzantine" } else { "" };
                Some(format!("{k}: {held}{follows}{byz}"))
            })
            .collect();
        format!(
            "g{}: {held:?}, a prepare now: {answer:?}, installers {}, also held: [{}], chained on {}, guardians [{}]",
            id.0,
            views.join("/"),
            others.join(", "),
            chained_on.as_deref().unwrap_or("genesis"),
            guardians.join(", ")
        )
    }

    pub(super) fn report(self) -> Report {
        use sha2::Digest as _;
        let outcomes: Vec<Option<Outcome>> = (0..self.upgrades.len()).map(|ui| self.outcome_of(ui)).collect();
        let liveness = if self.violation.is_some() || self.all_finished() {
            None
        } else {
            let pending: Vec<String> = (0..self.upgrades.len())
                .filter(|ui| self.upgrades[*ui].valid && self.outcome_of(*ui).is_none())
                .map(|ui| {
                    let b = &self.upgrades[ui];
                    let stuck: Vec<u32> = b
                        .groups
                        .iter()
                        .filter(|gi| {
                            let g = &self.groups[**gi];
                            g.correct
                                && g.replicas
                                    .iter()
                                    .any(|r| r.byz.is_none() && !r.finished.contains_key(&b.header.upgrade))
                        })
                        .map(|gi| self.groups[*gi].id.0)
                        .collect();
                    let why: Vec<String> = stuck.iter().map(|g| self.diagnose(ui, GroupId(*g))).collect();
                    format!("upgrade #{ui} unfinished at groups {stuck:?} ({})", why.join(", "))
                })
                .collect();
            let cut = if self.out_of_events { " (event limit hit)" } else { "" };
            Some(format!("{}{cut}", pending.join("; ")))
        };
        let _ = (&self.upgrades.first().map(|b| (&b.trigger, &b.cancel)), &self.txns);
        let byz_replicas = self.groups.iter().flat_map(|g| &g.replicas).filter(|r| r.byz.is_some()).count();
        let byz_installers = self.installers.iter().filter(|i| i.byzantine).count();
        let byz_guardians = self.guardians.iter().filter(|g| g.byz.is_some()).count();
        let faults_injected = (byz_replicas + byz_installers + byz_guardians) as u64
            + self.metrics.restarts
            + self.metrics.wipes
            + self.metrics.dropped
            + self.metrics.duplicated;
        let start = self.cfg.upgrades.iter().map(|u| u.start_ms).min().unwrap_or(0);
        let end = self.finished_at.unwrap_or(self.now);
        let window: Vec<bool> =
            self.txn_log.iter().filter(|(t, _)| (start..=end).contains(t)).map(|(_, ok)| *ok).collect();
        let availability =
            (!window.is_empty()).then(|| window.iter().filter(|ok| **ok).count() as f64 / window.len() as f64);
        let piece_bytes =
            self.upgrades.first().and_then(|b| b.pieces.values().next()).map_or(0, |p| wire::encoded_len(&**p)) as u64;
        let mut metrics = self.metrics;
        metrics.store_writes =
            self.groups.iter().flat_map(|g| &g.replicas).map(|r| r.host.store().commits()).sum::<u64>()
                + self.guardians.iter().map(|g| g.host.commits()).sum::<u64>()
                + self.installers.iter().map(|i| i.role.store_writes()).sum::<u64>();
        Report {
            piece_bytes,
            availability,
            faults_injected,
            seed: self.cfg.seed,
            violation: self.violation,
            liveness,
            outcomes,
            finished_at_ms: self.finished_at,
            replicas: self.groups.iter().map(|g| g.replicas.len()).sum(),
            metrics,
            trace_digest: self.trace.finalize().into(),
        }
    }
}
