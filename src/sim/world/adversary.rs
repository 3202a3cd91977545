//! The adversary's fixed menu: Byzantine replicas and guardians that
//! rewrite what the real role code sends, compromised groups, Byzantine
//! installers that replay, flood and squat. (The hostile adversary is in
//! `hostile`.)

#[allow(clippy::wildcard_imports)]
use super::*;

impl World {
    /// A Byzantine guardian's answer to a message.
    pub(super) fn byzantine_guardian(&mut self, k: usize, b: ByzantineGuardian, from: Peer, message: &Message) {
        let Message::GuardianRequest { upgrade, group, kind, .. } = message else { return };
        let me = Peer::Guardian(k as u32 + 1);
        let Some(gi) = self.group_index(*group) else { return };
        let Some(set) = &self.material.guardian_sets[gi] else { return };
        let Some(index) = set.members.iter().position(|(id, _)| *id == k as u32 + 1) else { return };
        let Some(piece) = self.upgrades.iter().find(|u| u.header.upgrade == *upgrade).and_then(|u| u.pieces.get(group))
        else {
            return;
        };
        let key = &self.material.guardian_keys[k];
        let Ok((s, c)) = (Cached { material: &self.material, key }).open_guardian(&piece.clone(), index) else {
            return;
        };
        let share = match (b, kind) {
            (ByzantineGuardian::Silent, _) => return,
            (ByzantineGuardian::LeakBoth, ShareKind::Secret) => s,
            (ByzantineGuardian::LeakBoth, ShareKind::Cancel) => c,
            (ByzantineGuardian::Forge, _) => {
                let mut y = [0u8; 32];
                self.rng.fill_bytes(&mut y);
                y[0] &= 0x7f;
                Share::new(s.index(), y)
            }
        };
        let msg = Message::GuardianShare { upgrade: *upgrade, group: *group, kind: *kind, share };
        self.send(me, from, &msg);
    }

    /// A Byzantine replica's rewrite of one outgoing message.
    pub(super) fn adversary(
        &mut self,
        gi: usize,
        ri: usize,
        b: ByzantineReplica,
        to: Peer,
        message: &Message,
        op: Option<&Operation>,
    ) {
        let me = Peer::Replica { group: self.groups[gi].id, index: ri as u8 };
        let answer = match message {
            Message::Answer(a) => Some(a.clone()),
            _ => None,
        };
        // Its own two shares of the piece, if it can open its box.
        let shares = match op {
            Some(Operation::PrepareInstall(p)) => {
                Cached { material: &self.material, key: &self.material.keys[gi][self.key_at[gi][ri]] }
                    .open(p, ri)
                    .ok()
                    .map(|o| (o.secret_share, o.cancel_share))
            }
            _ => None,
        };
        let with = |a: &Answer, reply: Reply| Message::Answer(Answer { reply, ..a.clone() });
        if b == ByzantineReplica::Compromised {
            return self.compromised(gi, ri, to, message, op);
        }
        if ByzantineReplica::HOSTILE.contains(&b) {
            return self.hostile(gi, ri, b, to, message);
        }
        match (b, answer, shares) {
            (ByzantineReplica::Silent, _, _) | (ByzantineReplica::Compromised, _, _) => {}
            (ByzantineReplica::Garbage, _, _) => {
                let len = 1 + below(&mut self.rng, 200);
                let mut junk = vec![0u8; len];
                self.rng.fill_bytes(&mut junk);
                self.send_bytes(me, to, junk);
            }
            (ByzantineReplica::ForgeShares, Some(a), _) => {
                let forge = |rng: &mut ChaCha20Rng, s: &Share| {
                    let mut y = [0u8; 32];
                    rng.fill_bytes(&mut y);
                    y[0] &= 0x7f;
                    Share::new(s.index(), y)
                };
                let reply = match &a.reply {
                    Reply::Accepted(s) => Reply::Accepted(forge(&mut self.rng, s)),
                    Reply::Rejected(s) => Reply::Rejected(forge(&mut self.rng, s)),
                    r => r.clone(),
                };
                self.send(me, to, &with(&a, reply));
            }
            (ByzantineReplica::BothKinds, Some(a), Some((s, c))) => {
                if self.groups[gi].replicas[ri].counted_correct {
                    self.groups[gi].replicas[ri].released.insert(a.upgrade, (true, true));
                    self.dirty = true;
                    self.touch(a.upgrade, gi);
                }
                self.send(me, to, &with(&a, Reply::Accepted(s)));
                self.send(me, to, &with(&a, Reply::Rejected(c)));
            }
            (ByzantineReplica::WrongDecision, Some(a), Some((_, c))) => {
                self.send(me, to, &with(&a, Reply::Rejected(c)));
            }
            (ByzantineReplica::Equivocate, Some(a), Some((s, c))) => {
                self.send(me, to, message);
                let other = match a.reply {
                    Reply::Accepted(_) => Reply::Rejected(c),
                    _ => Reply::Accepted(s),
                };
                let peers: Vec<Peer> = self
                    .installers
                    .iter()
                    .filter(|i| self.upgrades[i.upgrade].header.upgrade == a.upgrade)
                    .map(|i| i.role.peer())
                    .filter(|p| *p != to)
                    .collect();
                for p in peers {
                    self.send(me, p, &with(&a, other.clone()));
                }
            }
            // Anything else it passes on as the honest code wrote it.
            _ => self.send(me, to, message),
        }
    }

    /// A replica of a compromised group: every kind of everything.
    pub(super) fn compromised(&mut self, gi: usize, ri: usize, to: Peer, message: &Message, op: Option<&Operation>) {
        let me = Peer::Replica { group: self.groups[gi].id, index: ri as u8 };
        let group = self.groups[gi].id;
        let Some(Operation::PrepareInstall(p)) = op else {
            self.send(me, to, message);
            return;
        };
        let key = &self.material.keys[gi][self.key_at[gi][ri]];
        let mut crypto = Cached { material: &self.material, key };
        match &p.header.custody {
            Custody::Replicas => {
                let Ok(o) = crypto.open(p, ri) else { return };
                if let Message::Answer(a) = message {
                    for reply in [Reply::Accepted(o.secret_share.clone()), Reply::Rejected(o.cancel_share.clone())] {
                        self.send(me, to, &Message::Answer(Answer { reply, ..a.clone() }));
                    }
                }
            }
            Custody::Guardians { guardians, .. } => {
                let Ok((_, token)) = crypto.open_token(p, ri) else { return };
                let ids: Vec<u32> = guardians.iter().map(|g| g.guardian).collect();
                let upgrade = p.header.upgrade;
                if ri == 0 {
                    self.forward_piece(gi, me, upgrade);
                }
                for kind in [ShareKind::Secret, ShareKind::Cancel] {
                    for id in &ids {
                        let request =
                            Message::GuardianRequest { upgrade, group, replica: ri as u8, kind, token: token.clone() };
                        self.send(me, Peer::Guardian(*id), &request);
                    }
                }
                self.send(me, to, message);
            }
        }
    }

    /// A Byzantine installer's extra moves: wrong codes, replays of other
    /// upgrades' pieces, stray aborts and commits, and squatted pieces.
    pub(super) fn byzantine_installer(&mut self, ii: usize) {
        let me = self.installers[ii].role.peer();
        let gi = below(&mut self.rng, self.groups.len());
        let ui = below(&mut self.rng, self.upgrades.len());
        let upgrade = self.upgrades[ui].header.upgrade;
        // A gated upgrade's deployer holds its bundle back until it starts:
        // nobody has its pieces before.
        let published = self.gates[ui].is_empty() || self.started[ui];
        match self.rng.next_u32() % 5 {
            0 => {
                let mut junk = [0u8; 32];
                self.rng.fill_bytes(&mut junk);
                let code = Code::from_bytes(junk);
                let op = if self.rng.next_u32().is_multiple_of(2) {
                    Operation::commit_install(upgrade, code)
                } else {
                    Operation::abort_install(upgrade, code)
                };
                self.submit(me, gi, op);
            }
            1 | 2 if !published => {}
            1 => {
                // Replay some piece of some upgrade to its group.
                if let Some((g, p)) = self.upgrades[ui].pieces.iter().next() {
                    if let Some(target) = self.group_index(*g) {
                        let op = Operation::PrepareInstall((**p).clone());
                        self.submit(me, target, op);
                    }
                }
            }
            2 => {
                // A piece sent to the wrong group.
                if let Some(p) = self.upgrades[ui].pieces.values().next() {
                    self.submit(me, gi, Operation::PrepareInstall((**p).clone()));
                }
            }
            3 => self.squat(me, ui),
            _ => {}
        }
    }

    /// Upgrade-id squatting: the last authorized deployer (whose chain the
    /// workloads leave at genesis) signs, under its own name, a copy of a
    /// piece of upgrade `ui`, typically before the upgrade starts. Groups
    /// and guardians must refuse it: the id names another deployer.
    pub(super) fn squat(&mut self, me: Peer, ui: usize) {
        let squatter = self.material.deployers.len() - 1;
        let (id, _) = self.material.deployers[squatter];
        let count = self.upgrades[ui].pieces.len();
        let pick = below(&mut self.rng, count);
        let Some((g, genuine)) = self.upgrades[ui].pieces.iter().nth(pick) else { return };
        if genuine.header.deployer == id {
            return;
        }
        let mut piece = (**genuine).clone();
        piece.header.deployer = id;
        piece.header.prev_version = self.material.genesis[squatter].clone();
        piece.signature =
            self.material.deployer_keys[squatter].sign(&piece.header.digest()).expect("a valid key signs");
        if let Some(target) = self.group_index(*g) {
            self.submit(me, target, Operation::PrepareInstall(piece));
        }
    }
}
