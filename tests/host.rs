//! The host layer (`bft_upgrade::host`): routing, durability before
//! sending, pieces kept while held, crash and reopen, payload files. A
//! small in-process host drives real roles through the wrappers, over a
//! store that can be made to fail.

use bft_upgrade::crypto::{Binding, Code, ShareKind};
use bft_upgrade::group::{GroupEffect, Status, Verdict};
use bft_upgrade::host::{open_payload, releases, Batch, HostError, Outbound, ReplicaHost, Store};
use bft_upgrade::sim::{NetworkFaults, SimConfig, World};
use bft_upgrade::step::{FaultKind, Peer};
use bft_upgrade::wire::{Answer, Attachment, Finish, GroupId, Message, Operation, Outcome, Reply, WithKey};
use support::cluster::{DiskFull, Flaky, Host, GROUPS, INSTALLER};

mod support;

#[test]
fn an_upgrade_commits_through_the_host_layer_with_and_without_guardians() {
    for guardians in [0, 4] {
        let mut h = Host::new(1, guardians);
        h.start();
        for _ in 0..40 {
            if h.installer.role().is_done() {
                break;
            }
            h.tick(50);
        }
        assert!(h.installer.role().is_done(), "{guardians} guardians: the installer is not done");
        assert!(h.committed_everywhere());
        assert_eq!(h.installer.role().decided().map(|(o, _)| o), Some(Outcome::Committed));
        // Every replica applied once, and its payload opens to the plaintext.
        for (gi, group) in GROUPS.iter().enumerate() {
            for ri in 0..4 {
                let applied: Vec<_> = h
                    .applied
                    .iter()
                    .filter(|(g, r, e)| (*g, *r) == (gi, ri) && matches!(e, GroupEffect::Apply { .. }))
                    .collect();
                assert_eq!(applied.len(), 1, "group {gi} replica {ri}");
                let GroupEffect::Apply { key: Some(key), payload, .. } = &applied[0].2 else { panic!("no key") };
                let mut plain = Vec::new();
                let binding = Binding::group(h.upgrade, *group);
                open_payload(key, &binding, payload, &mut &h.sealed[gi][..], &mut plain).unwrap();
                assert_eq!(plain, h.plain[gi]);
            }
        }
        // With guardians, pieces went to them, the release log says s_g,
        // never c, and guardians forwarded the outcome a group told them to
        // the other group they guard.
        if guardians > 0 {
            assert!(h.delivered.iter().any(|(_, o)| matches!(o, Outbound::Piece { .. })));
            let forwarded = h.delivered.iter().any(|(from, o)| {
                matches!((from, o), (Peer::Guardian(_), Outbound::Submit { op, .. })
                    if matches!(**op, Operation::Finish(Finish { outcome: Outcome::Committed, .. })))
            });
            assert!(forwarded, "no guardian forwarded the outcome");
            for g in &h.guardians {
                let rows = releases(g.store()).unwrap();
                assert_eq!(rows.len(), GROUPS.len(), "one release per group");
                assert!(rows.iter().all(|r| r.kind == ShareKind::Secret && r.upgrade == h.upgrade));
            }
        }
    }
}

/// Nothing a role decided leaves before the write it depends on: with every
/// guardian's disk full, no guardian share goes out and nothing is logged;
/// once the disks work, the replicas' retries finish the upgrade.
#[test]
fn guardian_shares_leave_only_after_the_release_is_written() {
    let mut h = Host::new(2, 4);
    for g in &mut h.guardians {
        g.store_mut().fail = true;
    }
    h.start();
    for _ in 0..10 {
        h.tick(50);
    }
    assert_eq!(h.shares_sent(), 0, "a share left before its release was written");
    assert!(!h.committed_everywhere());
    for g in &mut h.guardians {
        assert!(releases(g.store()).unwrap().is_empty());
        g.store_mut().fail = false;
    }
    for _ in 0..60 {
        if h.installer.role().is_done() {
            break;
        }
        h.tick(100);
    }
    assert!(h.shares_sent() > 0);
    assert!(h.committed_everywhere(), "the retries after the disks healed did not finish the upgrade");
}

/// A replica whose write fails sends nothing, keeps its items, and sends
/// them once a flush succeeds.
#[test]
fn a_replica_sends_nothing_until_its_flush_commits() {
    let mut h = Host::new(3, 0);
    let piece = h.installer.bundle().pieces[0].clone();
    let op = Operation::PrepareInstall(piece);
    let key = h.keys[0][0].clone();
    let now = h.t();
    let r = &mut h.replicas[0][0];
    let _ = r.ordered(now, INSTALLER, &op, &key, |_| Verdict::Accept);
    assert!(r.pending());
    r.store_mut().fail = true;
    let mut out = Vec::new();
    assert!(matches!(r.flush(Batch::new(), &mut out), Err(HostError::Store(DiskFull))));
    assert!(out.is_empty(), "sent before the write: {out:?}");
    r.store_mut().fail = false;
    r.flush(Batch::new(), &mut out).unwrap();
    assert!(!r.pending());
    assert!(
        matches!(
            &out[..],
            [Outbound::Send { to: INSTALLER, message: Message::Answer(Answer { reply: Reply::Accepted(_), .. }) }]
        ),
        "{out:?}"
    );
}

/// A crash forgets what was not flushed; a reopened replica has the role and
/// the pieces of the last flush, and a piece is deleted in the flush that
/// writes a role no longer holding it.
#[test]
fn a_crash_reopens_the_last_flush_with_its_pieces() {
    let mut h = Host::new(4, 0);
    let piece = h.installer.bundle().pieces[0].clone();
    let upgrade = h.upgrade;
    let key = h.keys[0][1].clone();
    let now = h.t();
    let r = &mut h.replicas[0][1];
    // Ordered, not flushed, crash: gone.
    let _ = r.ordered(now, INSTALLER, &Operation::PrepareInstall(piece.clone()), &key, |_| Verdict::Accept);
    r.reopen().unwrap();
    assert_eq!(r.role().holds(upgrade), None);
    assert!(r.store().inner.list("replica/piece/").unwrap().is_empty());
    // Ordered and flushed: survives, with its piece.
    let _ = r.ordered(now, INSTALLER, &Operation::PrepareInstall(piece.clone()), &key, |_| Verdict::Accept);
    r.flush(Batch::new(), &mut Vec::new()).unwrap();
    r.reopen().unwrap();
    assert_eq!(r.role().holds(upgrade), Some(true));
    assert_eq!(r.role().status(upgrade), Some(Status::Released));
    assert_eq!(r.piece(upgrade).unwrap().as_ref(), Some(&piece));
    // The application's writes go in the same batch.
    let mut app = Batch::new();
    app.put("app/x", vec![1, 2, 3]);
    let commit = Operation::Finish(Finish { outcome: Outcome::Committed, upgrade, code: h.trigger.clone() });
    let report = r.ordered(now, INSTALLER, &commit, &key, |_| Verdict::Accept);
    assert!(matches!(report.effects[..], [GroupEffect::Apply { .. }]), "{:?}", report.effects);
    // Not flushed yet: the piece is still stored.
    assert_eq!(r.store().inner.list("replica/piece/").unwrap().len(), 1);
    r.flush(app, &mut Vec::new()).unwrap();
    assert!(r.store().inner.list("replica/piece/").unwrap().is_empty(), "a finished upgrade's piece stays");
    assert_eq!(r.store().inner.get("app/x").unwrap(), Some(vec![1, 2, 3]));
    r.reopen().unwrap();
    assert_eq!(r.role().outcome(upgrade), Some(Outcome::Committed));
    assert_eq!(r.role().status(upgrade), None);
    assert_eq!(r.piece(upgrade).unwrap(), None);
}

/// A replica that lost its disk rejoins through the host layer: the role
/// from two peers' replicated state, its pieces written with it, its own
/// share owed again, and a reopen after that finds them.
#[test]
fn a_wiped_replica_rejoins_with_its_pieces_and_owes_its_share() {
    let mut h = Host::new(5, 0);
    let piece = h.installer.bundle().pieces[0].clone();
    let upgrade = h.upgrade;
    let now = h.t();
    let prepare = Operation::PrepareInstall(piece.clone());
    let mut shares = Vec::new();
    for ri in 0..4 {
        let key = h.keys[0][ri].clone();
        let r = &mut h.replicas[0][ri];
        let _ = r.ordered(now, INSTALLER, &prepare, &key, |_| Verdict::Accept);
        let mut out = Vec::new();
        r.flush(Batch::new(), &mut out).unwrap();
        shares.push(out);
    }
    // Replica 3's disk is gone; replicas 0 and 1 agree on the state.
    let (a, b) = (h.replicas[0][0].role().replicated(), h.replicas[0][1].role().replicated());
    assert_eq!(a.digest(), b.digest());
    let pieces: Vec<_> = a.held_upgrades().map(|u| h.replicas[0][0].piece(u).unwrap().unwrap()).collect();
    let config = h.replicas[0][0].role().config().clone();
    let key = h.keys[0][3].clone();
    let (mut rejoined, report) =
        ReplicaHost::rejoin(Flaky::default(), config, 3, &a, &pieces, &mut WithKey(&key)).unwrap();
    assert!(report.faults.faults.is_empty());
    assert_eq!(rejoined.store().inner.list("replica/piece/").unwrap().len(), 1);
    rejoined.reopen().unwrap();
    assert_eq!(rejoined.role().replicated_digest(), h.replicas[0][0].role().replicated_digest());
    assert_eq!(rejoined.piece(upgrade).unwrap().as_ref(), Some(&piece));
    // The retry gets the same answer replica 3 sent before its wipe.
    let _ = rejoined.ordered(now, INSTALLER, &prepare, &key, |_| Verdict::Accept);
    let mut out = Vec::new();
    rejoined.flush(Batch::new(), &mut out).unwrap();
    assert_eq!(out, shares[3]);
    // A state the pieces do not cover is refused, and nothing is written.
    let config = h.replicas[0][0].role().config().clone();
    let refused = ReplicaHost::rejoin(Flaky::default(), config, 3, &a, &[], &mut WithKey(&key));
    assert!(matches!(refused, Err(HostError::Misuse(_))));
}

/// Piggybacks that carry nothing new leave the role unchanged and cost no
/// write; one that finishes a piece writes.
#[test]
fn a_piggyback_with_nothing_new_costs_no_write() {
    let mut h = Host::new(5, 0);
    let piece = h.installer.bundle().pieces[0].clone();
    let upgrade = h.upgrade;
    let key = h.keys[0][2].clone();
    let now = h.t();
    let r = &mut h.replicas[0][2];
    let _ = r.ordered(now, INSTALLER, &Operation::PrepareInstall(piece), &key, |_| Verdict::Accept);
    r.flush(Batch::new(), &mut Vec::new()).unwrap();
    let before = r.store().inner.commits();
    let bytes = r.store().inner.get("replica/role").unwrap();
    let _ = r.request(now, GROUPS[1], &Attachment::new());
    let _ = r.attachment(GROUPS[1]);
    let _ = r.attachment(GROUPS[1]);
    // A stale code (not τ) changes nothing either.
    let mut wrong = Attachment::new();
    let stale = Finish { upgrade, outcome: Outcome::Committed, code: Code::from_bytes([9; 32]) };
    wrong.push(stale).unwrap();
    let report = r.response(now, bft_upgrade::group::TxnId(1), GROUPS[1], &wrong);
    assert!(report.effects.is_empty());
    assert!(!r.pending());
    r.flush(Batch::new(), &mut Vec::new()).unwrap();
    assert_eq!(r.store().inner.commits(), before, "a no-op piggyback was written");
    assert_eq!(r.store().inner.get("replica/role").unwrap(), bytes);
    // The role really is unchanged: reopening gives the same bytes.
    // Now τ: a commit, written.
    let mut codes = Attachment::new();
    codes.push(Finish { upgrade, outcome: Outcome::Committed, code: h.trigger.clone() }).unwrap();
    let report = r.request(now, GROUPS[1], &codes);
    assert!(matches!(report.effects[..], [GroupEffect::Apply { .. }]));
    assert!(r.pending());
    r.flush(Batch::new(), &mut Vec::new()).unwrap();
    assert_eq!(r.store().inner.commits(), before + 1);
    // Figure 2 does not echo a code to the group it came from: nothing is
    // queued for the sender, and taking that empty attachment is free.
    assert!(r.attachment(GROUPS[1]).is_empty());
    assert!(!r.pending());
    // A commit ordered here queues τ for the neighbor: taking it changes
    // the role, and is written.
    let key = h.keys[0][3].clone();
    let r = &mut h.replicas[0][3];
    let piece = h.installer.bundle().pieces[0].clone();
    let _ = r.ordered(now, INSTALLER, &Operation::PrepareInstall(piece), &key, |_| Verdict::Accept);
    let commit = Operation::Finish(Finish { outcome: Outcome::Committed, upgrade, code: h.trigger.clone() });
    let _ = r.ordered(now, INSTALLER, &commit, &key, |_| Verdict::Accept);
    r.flush(Batch::new(), &mut Vec::new()).unwrap();
    assert!(!r.pending());
    assert_eq!(r.attachment(GROUPS[1]).len(), 1);
    assert!(r.pending());
}

/// An answer for a group outside the bundle is the sender's fault, not an
/// error of the host.
#[test]
fn an_answer_from_outside_the_bundle_is_a_fault() {
    let mut h = Host::new(6, 0);
    h.start();
    let stranger = Peer::Replica { group: GroupId(77), index: 0 };
    let a = Answer { upgrade: h.upgrade, group: GroupId(77), replica: 0, reply: Reply::Pending };
    let mut out = Vec::new();
    let report = h.installer.answer(h.t(), stranger, &a, &mut out).unwrap();
    assert!(out.is_empty());
    assert_eq!(report.faults.faults.len(), 1);
    assert_eq!(report.faults.faults[0].kind, FaultKind::Unsolicited);
    assert!(report.effects.is_empty());
}

/// The simulator drives every role through the host layer: its crashes
/// reopen them from their in-memory stores, and those stores are written
/// by the same code (a write lost in the host layer is caught: see the
/// planted `GuardianForgets` in tests/planted.rs).
#[test]
fn the_simulator_restarts_roles_from_their_stores() {
    let mut cfg = SimConfig::simple(8, 3, 4);
    cfg.restart_every_event = true;
    cfg.guardians = 4;
    cfg.network = NetworkFaults { drop: 0.1, duplicate: 0.1, jitter_ms: 20 };
    cfg.fault_phase_ms = 1_000;
    let r = World::new(cfg).run();
    assert!(r.violation.is_none() && r.liveness.is_none(), "{:?} {:?}", r.violation, r.liveness);
    assert!(r.metrics.restarts > 100, "{} restarts", r.metrics.restarts);
    assert!(r.metrics.store_writes > 0);
    assert_eq!(r.outcomes, vec![Some(Outcome::Committed)]);
}

/// A guardian told a group's new membership writes its role once, however
/// many of the group's replicas tell it the same change; a guardian that
/// does not guard the group writes nothing.
#[test]
fn a_guardian_writes_a_membership_change_once() {
    let mut h = Host::new(7, 4);
    let g = &mut h.guardians[0];
    let before = g.store().inner.commits();
    let members = bft_upgrade::crypto::Digest([5; 32]);
    for _ in 0..4 {
        assert!(g.follow(GROUPS[0], members).unwrap());
    }
    assert_eq!(g.store().inner.commits(), before + 1);
    assert_eq!(g.role().config().groups[0].members, members);
    assert!(!g.follow(GroupId(77), members).unwrap());
    assert_eq!(g.store().inner.commits(), before + 1);
}

/// Issue 16, wedge 2, through the host layer: once the upgrade is done,
/// the deployer's signed retirement makes every guardian forget it and its
/// release rows in one write; a forged one is a reported fault.
#[test]
fn a_deployer_retirement_frees_every_guardian_in_one_write() {
    let mut h = Host::new(8, 4);
    h.start();
    for _ in 0..40 {
        if h.installer.role().is_done() {
            break;
        }
        h.tick(50);
    }
    assert!(h.installer.role().is_done());
    let deployer = h.deployer.take().unwrap();
    let retirement = deployer.retirement(h.upgrade).unwrap();
    let mut forged = retirement;
    forged.upgrade = bft_upgrade::wire::UpgradeId::new(deployer.id(), [9; 12]);
    let now = h.t();
    for g in &mut h.guardians {
        assert_eq!(releases(g.store()).unwrap().len(), GROUPS.len());
        let before = g.store().inner.commits();
        let report = g.retirement(now, Peer::Deployer(deployer.id()), &forged).unwrap();
        assert_eq!(report.faults.faults.iter().map(|f| f.kind).collect::<Vec<_>>(), vec![FaultKind::ForgedRetirement]);
        assert_eq!(g.store().inner.commits(), before, "a forged retirement was written");
        let report = g.retirement(now, Peer::Deployer(deployer.id()), &retirement).unwrap();
        assert!(report.faults.faults.is_empty());
        assert_eq!(g.store().inner.commits(), before + 1);
        assert!(releases(g.store()).unwrap().is_empty());
        assert!(GROUPS.iter().all(|gr| g.role().released(h.upgrade, *gr).is_none()));
        g.reopen(|| panic!("stored")).unwrap();
        assert!(GROUPS.iter().all(|gr| g.role().released(h.upgrade, *gr).is_none()));
    }
}

/// Answers the installer took in, in `h`'s delivery log.
fn installer_answers(h: &Host) -> usize {
    h.delivered
        .iter()
        .filter(|(_, o)| matches!(o, Outbound::Send { to: INSTALLER, message: Message::Answer(_) }))
        .count()
}

#[test]
fn an_installer_writes_an_answer_not_its_whole_state() {
    for guardians in [0, 4] {
        let mut h = Host::new(1, guardians);
        h.start();
        let (before, answers_before) = (h.installer.store().written, installer_answers(&h));
        let whole = h.installer.store().inner.get(support::cluster::INSTALLER_KEY).unwrap().unwrap().len();
        for _ in 0..40 {
            if h.installer.role().is_done() {
                break;
            }
            h.tick(50);
        }
        assert!(h.installer.role().is_done(), "{guardians} guardians: the installer is not done");
        assert!(h.committed_everywhere());
        // Written whole on every answer, the checkpoint of a 10,000-group
        // installer cost two thirds of a simulated install.
        let answers = installer_answers(&h) - answers_before;
        let per_answer = (h.installer.store().written - before) / answers.max(1);
        assert!(answers >= 8, "{answers} answers");
        assert!(per_answer * 2 < whole, "{guardians} guardians: {per_answer} bytes per answer, {whole} for the role");
        // What was logged replays to the same role.
        let live = h.installer.role().decided().map(|(o, c)| (o, c.clone()));
        h.installer.reopen().unwrap();
        assert_eq!(h.installer.role().decided().map(|(o, c)| (o, c.clone())), live);
        assert!(h.installer.role().is_done());
    }
}

#[test]
fn an_installer_reopened_before_every_tick_finishes() {
    // Each reopen reads the checkpoint and replays the log over it.
    for guardians in [0, 4] {
        let mut h = Host::new(1, guardians);
        h.start();
        for _ in 0..80 {
            if h.installer.role().is_done() {
                break;
            }
            h.installer.reopen().unwrap();
            h.tick(50);
        }
        assert!(h.installer.role().is_done(), "{guardians} guardians: the installer is not done");
        assert!(h.committed_everywhere());
    }
}
