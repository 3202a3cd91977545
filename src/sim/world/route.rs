//! Routing: what each role's host layer lets out goes onto the seeded
//! network, through the adversary for Byzantine replicas; and the host's
//! duties around it (pieces to guardians, retirement).

#[allow(clippy::wildcard_imports)]
use super::*;
use crate::deployer::Deployer;

impl World {
    /// Carries out a replica's step, through the adversary if Byzantine.
    /// Every role runs the real code, so every step must keep what it
    /// decided: a lost output is this crate's bug, whoever's step it is.
    pub(super) fn check_lost(&mut self, lost: u32, who: impl FnOnce() -> String) {
        if lost > 0 {
            let what = format!("{}'s step lost {lost} output(s) it had decided", who());
            self.flag(ViolationKind::LostOutput, what);
        }
    }

    /// Carries out what a replica's inputs produced: the host layer
    /// writes the replica's state, then hands over its outbound items,
    /// which go through the adversary if the replica is Byzantine.
    pub(super) fn route_group(&mut self, gi: usize, ri: usize, report: ReplicaReport, op: Option<&Operation>) {
        self.check_lost(report.lost, || format!("replica {ri} of group {gi}"));
        let mut out = Vec::new();
        self.groups[gi].replicas[ri].host.flush(Batch::new(), &mut out).expect("memory store");
        self.dirty |= !report.effects.is_empty()
            || out.iter().any(|o| matches!(o, Outbound::Send { message: Message::Answer(_), .. }));
        self.note_faults(&report.faults);
        let me = Peer::Replica { group: self.groups[gi].id, index: ri as u8 };
        let byz = self.groups[gi].replicas[ri].byz;
        let mut reconfigured = false;
        for e in &report.effects {
            match e {
                GroupEffect::Apply { upgrade, reconfigured: r, .. } => {
                    reconfigured |= *r;
                    self.note_finished(gi, ri, *upgrade, Outcome::Committed);
                }
                GroupEffect::Discard { upgrade } => self.note_finished(gi, ri, *upgrade, Outcome::Aborted),
                _ => {}
            }
        }
        for item in out {
            let (to, message) = match item {
                Outbound::Piece { guardian, piece } => {
                    let piece = self.shared_piece(*piece);
                    self.piece_to_guardian(me, guardian, piece);
                    continue;
                }
                Outbound::Submit { group, op } => {
                    let Ok(small) = crate::wire::Finish::try_from(*op) else { continue };
                    (Peer::Group(group), Message::Submit(small))
                }
                Outbound::Send { to, message } => (to, message),
            };
            if byz.is_none() && self.replaying {
                self.keep_genuine(&message);
            }
            if byz.is_none() {
                if let Message::Answer(a) = &message {
                    self.touch(a.upgrade, gi);
                    let entry = self.groups[gi].replicas[ri].released.entry(a.upgrade).or_default();
                    let releases = match a.reply {
                        Reply::Accepted(_) | Reply::Code(ShareKind::Secret, _) => {
                            entry.0 = true;
                            true
                        }
                        Reply::Rejected(_) | Reply::Code(ShareKind::Cancel, _) => {
                            entry.1 = true;
                            true
                        }
                        _ => false,
                    };
                    if releases {
                        self.check_chain(gi, ri, a.upgrade);
                    }
                }
            }
            match byz {
                None => self.send(me, to, &message),
                Some(b) => self.adversary(gi, ri, b, to, &message, op),
            }
        }
        if reconfigured {
            self.tell_guardians_membership(gi, ri);
            self.fill_slots(gi, ri);
        }
        if reconfigured && !self.groups[gi].replicas[ri].host.role().is_member() {
            // Its key was rotated out (the new holder joins), or a resize
            // dropped its index.
            self.leave(gi, ri);
            return;
        }
        let d = self.groups[gi].replicas[ri].host.deadline();
        self.schedule(Who::Replica(gi, ri), d);
    }

    pub(super) fn note_faults(&mut self, faults: &Faults) {
        self.metrics.faults_reported += faults.faults.len() as u64 + u64::from(faults.dropped);
    }

    /// `piece`, shared with the upgrade's own copy when it is that one (a
    /// million-replica world has a million pieces in flight at once).
    fn shared_piece(&self, piece: Piece) -> Arc<Piece> {
        let h = &piece.header;
        let genuine = self.upgrade_index(h.upgrade).and_then(|ui| self.upgrades[ui].pieces.get(&h.group));
        match genuine {
            Some(g) if **g == piece => Arc::clone(g),
            _ => Arc::new(piece),
        }
    }

    /// A replica's host sends `piece` to guardian `id`, over the lossy
    /// network.
    pub(super) fn piece_to_guardian(&mut self, from: Peer, id: u32, piece: Arc<Piece>) {
        let Some(k) = (id as usize).checked_sub(1).filter(|k| *k < self.guardians.len()) else { return };
        self.count(from, wire::encoded_len(&*piece) as u64);
        if self.faulty_network() && unit(&mut self.rng) < self.cfg.network.drop {
            self.metrics.dropped += 1;
            return;
        }
        let at = self.now + self.cfg.latency_ms;
        self.push(at, Event::PieceToGuardian { guardian: k, piece, from });
    }

    /// A compromised replica's host sends the genuine piece of `upgrade`
    /// to every guardian of its group.
    pub(super) fn forward_piece(&mut self, gi: usize, from: Peer, upgrade: UpgradeId) {
        let Some(ui) = self.upgrade_index(upgrade) else { return };
        let group = self.groups[gi].id;
        let Some(set) = self.material.guardian_sets[gi].clone() else { return };
        let Some(piece) = self.upgrades[ui].pieces.get(&group).cloned() else { return };
        for (id, _) in &set.members {
            self.piece_to_guardian(from, *id, Arc::clone(&piece));
        }
    }

    /// Delivers what a guardian's host let out (after writing its state).
    pub(super) fn route_guardian(&mut self, k: usize, faults: &Faults, out: Vec<Outbound>) {
        self.note_faults(faults);
        let me = Peer::Guardian(k as u32 + 1);
        for item in out {
            match item {
                Outbound::Submit { group, op } => {
                    if let Some(gi) = self.group_index(group) {
                        self.submit(me, gi, *op);
                    }
                }
                Outbound::Send { to, message } => {
                    self.note_leak(to, &message);
                    self.send(me, to, &message);
                }
                Outbound::Piece { .. } => {}
            }
        }
    }

    pub(super) fn route_installer(&mut self, ii: usize, report: InstallerReport, out: Vec<Outbound>) {
        self.check_lost(report.lost, || format!("installer {ii}"));
        self.note_faults(&report.faults);
        let me = self.installers[ii].role.peer();
        let ui = self.installers[ii].upgrade;
        let byz = self.installers[ii].byzantine;
        if !byz
            && report.effects.contains(&InstallerEffect::Decided(Outcome::Committed))
            && !self.upgrades[ui].groups.iter().all(|gi| self.rebuildable(ui, *gi).0)
        {
            // A correct installer commits only once every group released s_g.
            let what = format!(
                "installer {me:?} decided to commit {:?} before every group accepted",
                self.upgrades[ui].header.upgrade
            );
            self.flag(ViolationKind::EarlyCommit, what);
        }
        for item in out {
            match item {
                Outbound::Submit { group, op } => {
                    let Some(gi) = self.group_index(group) else { continue };
                    // A Byzantine installer floods its prepares.
                    let copies = if byz && matches!(*op, Operation::PrepareInstall(_)) { 3 } else { 1 };
                    for _ in 1..copies {
                        self.submit(me, gi, (*op).clone());
                    }
                    self.submit(me, gi, *op);
                }
                Outbound::Send { to, message } => self.send(me, to, &message),
                Outbound::Piece { .. } => {}
            }
        }
        let d = self.installers[ii].role.deadline();
        self.schedule(Who::Installer(ii), d);
    }

    /// The deployer's duty once `u` finished at every replica of every
    /// group it covers: it signs a retirement, and every guardian of those
    /// groups checks it and forgets its records (they hold at most 64, and
    /// a record that released a kind stays until retired), through the
    /// host layer as a real guardian host does. Other guardians hold
    /// nothing of `u`.
    pub(super) fn retire(&mut self, u: UpgradeId) {
        let d = u.deployer();
        let Some(key) = d.0.checked_sub(1).and_then(|i| self.material.deployer_keys.get(i as usize)) else {
            return;
        };
        let Some(ui) = self.upgrade_index(u) else { return };
        let covered: Vec<GroupId> = self.upgrades[ui].groups.iter().map(|gi| self.groups[*gi].id).collect();
        let retirement = Deployer::new(d, key.clone()).retirement(u).expect("the deployer's own upgrade");
        let now = Instant(self.now);
        let guards = |slot: &GuardianSlot| slot.config.groups.iter().any(|g| covered.contains(&g.group));
        for slot in self.guardians.iter_mut().filter(|s| guards(s)) {
            let report = slot.host.retirement(now, Peer::Deployer(d), &retirement);
            assert!(report.faults.faults.is_empty(), "a guardian refused its deployer's retirement");
        }
    }
}
