//! Wipe and rejoin: a correct replica loses its store, misses what its
//! group orders meanwhile, and comes back by state transfer through the
//! host layer (`ReplicaHost::rejoin`), from the replicated state of `f + 1`
//! correct peers whose digests agree and the pieces their stores keep. The
//! application's state travels with it, so the outcomes it missed count as
//! applied.

#[allow(clippy::wildcard_imports)]
use super::*;

/// How long a wiped replica stays away, ms (before its rejoin).
const AWAY_MS: usize = 300;

/// How long a replica a resize admitted takes to catch up, ms: it was
/// brought up beside the group before the change (as a learner) and
/// fetches the state that includes it right after.
const JOIN_MS: usize = 20;

/// How often a gated upgrade looks again whether it may start, ms.
pub(super) const GATE_RETRY_MS: u64 = 50;

/// Per upgrade, what must finish before it starts: around each key rotation
/// `(ur, gi)`, the upgrades over group `gi` before it (those the checkers
/// owe liveness to) gate the rotation, and the rotation gates those after,
/// whose pieces are built for the new membership. An upgrade after a
/// rotation that may never finish is owed nothing either.
pub(super) fn gates(
    specs: &[UpgradeSpec],
    rotations: &BTreeSet<(usize, usize)>,
    upgrades: &mut [Built],
) -> Vec<Vec<(usize, usize)>> {
    let mut gates = vec![Vec::new(); specs.len()];
    for &(ur, gi) in rotations {
        for (ui, spec) in specs.iter().enumerate() {
            if ui == ur || !spec.chained || !spec.groups.contains(&gi) {
                continue;
            }
            if ui < ur && upgrades[ui].valid {
                gates[ur].push((ui, gi));
            }
            if ui > ur {
                gates[ui].push((ur, gi));
                if !upgrades[ur].valid {
                    upgrades[ui].valid = false;
                }
            }
        }
    }
    gates
}

impl World {
    /// Whether every upgrade gating `ui` has finished at every correct
    /// replica (that is up) of the gating group.
    pub(super) fn gate_open(&self, ui: usize) -> bool {
        self.gates[ui].iter().all(|&(u, gi)| {
            let id = self.upgrades[u].header.upgrade;
            self.groups[gi].replicas.iter().filter(|r| r.byz.is_none() && !r.down).all(|r| r.finished.contains_key(&id))
        })
    }

    /// A membership upgrade committed at replica `ri` of group `gi`: the
    /// deployer tells the group's correct guardians the new membership
    /// ([`Guardian::follow`](crate::guardian::Guardian::follow)), for those
    /// that never held the change's piece (the others follow by themselves).
    pub(super) fn tell_guardians_membership(&mut self, gi: usize, ri: usize) {
        let id = self.groups[gi].id;
        let members = self.groups[gi].replicas[ri].host.role().config().membership.digest();
        for slot in self.guardians.iter_mut().filter(|s| s.byz.is_none()) {
            if slot.config.groups.iter().any(|g| g.group == id) {
                slot.host.follow(id, members);
            }
        }
    }

    /// A membership upgrade committed at replica `ri` of group `gi`, the
    /// first there: the slots its new membership adds become members, away
    /// (owed every outcome from now on, counted in the fault budget) until
    /// their replicas join by state transfer a little later.
    pub(super) fn fill_slots(&mut self, gi: usize, ri: usize) {
        let n = self.groups[gi].replicas[ri].host.role().config().membership.n();
        // The membership that admits the joiners: the `f` of those in it
        // now (the sim's memberships tolerate `(n - 1) / 3`).
        let before = self.groups[gi].replicas.iter().filter(|r| !r.gone).count();
        let admitting = u8::try_from(before.saturating_sub(1) / 3).expect("small group");
        for j in 0..n.min(self.groups[gi].replicas.len()) {
            if !self.groups[gi].replicas[j].gone {
                continue;
            }
            self.groups[gi].replicas[j].gone = false;
            self.groups[gi].replicas[j].joining = Some(admitting);
            self.metrics.joined += 1;
            let counted = self.groups[gi].correct && self.groups[gi].replicas[j].byz.is_none();
            for t in self.tallies.iter_mut().filter(|t| t.member.get(gi).copied().unwrap_or(false)) {
                t.unfinished += usize::from(counted);
                // Once retired, an upgrade stays retired.
                if t.left > 0 {
                    t.left += 1;
                }
            }
            // A compromised group has no correct peers to join from.
            if self.groups[gi].correct {
                let at = self.now + 1 + below(&mut self.rng, JOIN_MS) as u64;
                self.push(at, Event::Rejoin { group: gi, replica: j });
            }
        }
    }

    /// Replica `ri` of group `gi` is out of its group's membership for
    /// good (a resize dropped its index): gone, and owed nothing it has
    /// not finished.
    fn drop_out(&mut self, gi: usize, ri: usize) {
        let counted = self.groups[gi].correct && self.groups[gi].replicas[ri].byz.is_none();
        let r = &mut self.groups[gi].replicas[ri];
        r.down = true;
        r.gone = true;
        r.joining = None;
        r.scheduled = None;
        self.metrics.left += 1;
        for ui in 0..self.upgrades.len() {
            let u = self.upgrades[ui].header.upgrade;
            if !self.tallies[ui].member.get(gi).copied().unwrap_or(false)
                || self.groups[gi].replicas[ri].finished.contains_key(&u)
            {
                continue;
            }
            if counted {
                self.tallies[ui].unfinished -= 1;
            }
            self.count_out(ui, u);
        }
    }

    /// Replica `ri` of group `gi` left: with its rotated-out key (the
    /// holder of the new key joins by state transfer a little later), or
    /// for good when a resize dropped its index.
    pub(super) fn leave(&mut self, gi: usize, ri: usize) {
        if ri >= self.groups[gi].replicas[ri].host.role().config().membership.n() {
            return self.drop_out(gi, ri);
        }
        let correct = self.groups[gi].correct;
        let r = &mut self.groups[gi].replicas[ri];
        r.down = true;
        r.scheduled = None;
        self.metrics.rotations += 1;
        // A compromised group has no correct peers to join from; its
        // replicas are the adversary's anyway.
        if !correct {
            return;
        }
        let at = self.now + 1 + below(&mut self.rng, AWAY_MS) as u64;
        self.push(at, Event::Rejoin { group: gi, replica: ri });
    }

    /// Wipes replica `ri` of group `gi` if that keeps the group within `f`
    /// faulty replicas (its Byzantine ones and those away), and schedules
    /// its rejoin.
    pub(super) fn wipe(&mut self, gi: usize, ri: usize) {
        let g = &self.groups[gi];
        let faulty = g.replicas.iter().filter(|r| !r.gone && (r.byz.is_some() || r.down)).count();
        let r = &g.replicas[ri];
        if r.byz.is_some() || r.down || faulty >= usize::from(g.f) {
            return;
        }
        self.groups[gi].replicas[ri].down = true;
        self.metrics.wipes += 1;
        let at = self.now + 1 + below(&mut self.rng, AWAY_MS) as u64;
        self.push(at, Event::Rejoin { group: gi, replica: ri });
    }

    /// State transfer for the wiped replica `ri` of group `gi`.
    pub(super) fn rejoin(&mut self, gi: usize, ri: usize) {
        let g = &self.groups[gi];
        if !g.replicas[ri].down || g.replicas[ri].gone {
            return;
        }
        let peers: Vec<usize> =
            (0..g.replicas.len()).filter(|&i| i != ri && !g.replicas[i].down && g.replicas[i].byz.is_none()).collect();
        // `f + 1` of the membership in force (a resize changes `f`), or of
        // the one that admitted a joiner.
        let f = peers.first().map_or(g.f, |&i| g.replicas[i].host.role().config().membership.f);
        let need = usize::from(g.replicas[ri].joining.unwrap_or(f)) + 1;
        let Some(peers) = peers.get(..need) else {
            // Joiners a resize admitted are on their way: they bring the
            // peers this replica needs under the grown membership.
            if g.correct && g.replicas.iter().enumerate().any(|(j, r)| j != ri && r.down && r.joining.is_some()) {
                self.push(self.now + JOIN_MS as u64, Event::Rejoin { group: gi, replica: ri });
                return;
            }
            self.flag(ViolationKind::StateTransfer, format!("group {gi} has no {need} correct peers for replica {ri}"));
            return;
        };
        let digest = g.replicas[peers[0]].host.role().replicated_digest();
        if peers.iter().any(|&i| g.replicas[i].host.role().replicated_digest() != digest) {
            self.flag(ViolationKind::Diverged, format!("group {gi}'s peers {peers:?} disagree for replica {ri}"));
            return;
        }
        // What one of them hands over must be what they all vouch for.
        let state = &g.replicas[peers[0]].host.role().replicated();
        if state.digest() != digest {
            self.flag(ViolationKind::StateTransfer, format!("group {gi}'s state for replica {ri} is not its digest's"));
            return;
        }
        let mut pieces = Vec::new();
        for u in state.held_upgrades() {
            let found = peers.iter().find_map(|&i| g.replicas[i].host.piece(u).ok().flatten());
            pieces.extend(found);
        }
        let config = g.replicas[peers[0]].host.role().config().clone();
        // Wiped, then dropped by a resize while away.
        if ri >= state.membership().n() {
            return self.drop_out(gi, ri);
        }
        // The key the membership names at this index (a rotation brought
        // in a new one while the replica was away or as it left).
        let named = state.membership().replicas.get(ri).copied();
        let Some(k) = self.material.keys[gi].iter().position(|k| Some(k.public_key()) == named) else {
            self.flag(ViolationKind::StateTransfer, format!("replica {ri} of group {gi}: no key for its index"));
            return;
        };
        self.key_at[gi][ri] = k;
        let mut crypto = Cached { material: &self.material, key: &self.material.keys[gi][k] };
        let joined = ReplicaHost::rejoin(MemStore::default(), config, ri as u8, state, &pieces, &mut crypto);
        let (host, report) = match joined {
            Ok(j) => j,
            Err(e) => {
                self.flag(ViolationKind::StateTransfer, format!("replica {ri} of group {gi} cannot rejoin: {e:?}"));
                return;
            }
        };
        // A planted bug is in the code every replica runs, this one too.
        #[cfg(feature = "planted-bugs")]
        let host = {
            let mut host = host;
            host.plant(self.groups[gi].replicas[peers[0]].host.role().planted_bug());
            host
        };
        let finished: Vec<(UpgradeId, Outcome)> = host.role().finished_upgrades().map(|(u, o, _)| (u, o)).collect();
        let r = &mut self.groups[gi].replicas[ri];
        r.host = host;
        r.down = false;
        r.joining = None;
        r.scheduled = None;
        for (u, outcome) in finished {
            if !self.groups[gi].replicas[ri].finished.contains_key(&u) {
                self.note_finished(gi, ri, u, outcome);
            }
        }
        self.route_group(gi, ri, report, None);
        self.check_replicated(gi);
        let d = self.groups[gi].replicas[ri].host.deadline();
        self.schedule(Who::Replica(gi, ri), d);
    }
}
