//! Guardians (paper section 5, PROTOCOL.md section 7) in whole deployments.

use bft_upgrade::sim::{ByzantineGuardian, ByzantineReplica, NetworkFaults, SimConfig, World};
use bft_upgrade::wire::Outcome;

mod support;
use support::run;

fn guarded(seed: u64, groups: usize, guardians: usize) -> SimConfig {
    let mut cfg = SimConfig::simple(seed, groups, 4);
    cfg.guardians = guardians;
    cfg
}

#[test]
fn guardian_custody_commits_and_aborts() {
    let r = run(guarded(1, 4, 4));
    assert_eq!(r.outcomes, vec![Some(Outcome::Committed)]);
    let mut cfg = guarded(2, 4, 4);
    cfg.upgrades[0].rejected_by = vec![2];
    assert_eq!(run(cfg).outcomes, vec![Some(Outcome::Aborted)]);
}

#[test]
fn guardians_with_faults() {
    for seed in 0..20u64 {
        let mut cfg = guarded(seed, 5, 4);
        cfg.installers = 2;
        cfg.network = NetworkFaults { drop: 0.2, duplicate: 0.1, jitter_ms: 40 };
        cfg.fault_phase_ms = 3_000;
        cfg.byzantine = vec![(0, 1, ByzantineReplica::Garbage), (2, 3, ByzantineReplica::ForgeShares)];
        cfg.byzantine_guardians = vec![(1, ByzantineGuardian::LeakBoth), (5, ByzantineGuardian::Forge)];
        cfg.crashes = true;
        if seed % 2 == 0 {
            cfg.upgrades[0].rejected_by = vec![3];
        }
        run(cfg);
    }
}

/// A compromised group (every replica Byzantine: asks for both kinds,
/// forges, replays) with up to F Byzantine guardians per group can never
/// make correct groups disagree, over 1,000 seeds.
#[test]
fn compromised_group_cannot_split_with_guardians() {
    let mut finished = 0;
    for seed in 0..1000u64 {
        let mut cfg = guarded(seed, 4, 4);
        cfg.compromised = vec![(seed % 4) as usize];
        // Pool indices 0, 4, ...: every group's window of 4 holds one.
        cfg.byzantine_guardians = vec![(
            0,
            [ByzantineGuardian::LeakBoth, ByzantineGuardian::Forge, ByzantineGuardian::Silent][seed as usize % 3],
        )];
        cfg.byzantine_guardians.push((4, ByzantineGuardian::LeakBoth));
        cfg.byzantine_installers = 1;
        cfg.network = NetworkFaults { drop: 0.05, duplicate: 0.1, jitter_ms: 20 };
        cfg.fault_phase_ms = 500;
        cfg.deadline_ms = 5_000;
        if seed % 3 == 0 {
            cfg.upgrades[0].rejected_by = vec![((seed / 3) % 4) as usize];
        }
        let r = World::new(cfg).run();
        assert!(r.violation.is_none(), "seed {seed}: {:?}", r.violation);
        finished += usize::from(r.outcomes[0].is_some());
    }
    println!("finished at every correct group in {finished} of 1000 runs");
}

/// The same scenario without guardians breaks safety: a compromised group
/// releases both kinds, so both codes can be rebuilt. The check can fail.
#[test]
fn compromised_group_splits_without_guardians() {
    let mut found = 0;
    for seed in 0..20u64 {
        let mut cfg = SimConfig::simple(seed, 4, 4);
        cfg.compromised = vec![(seed % 4) as usize];
        cfg.deadline_ms = 5_000;
        let r = World::new(cfg).run();
        found += usize::from(r.violation.is_some());
    }
    assert_eq!(found, 20, "every run without guardians must be caught");
}

/// Section 7's hardening: one faulty replica of a correct group asking for
/// the c shares first does not make the guardians release them, and the
/// upgrade still commits.
#[test]
fn one_faulty_replica_cannot_force_an_abort() {
    for seed in 0..50u64 {
        let mut cfg = guarded(seed, 4, 4);
        // Replica 0 of every group asks for both kinds at once.
        cfg.byzantine = (0..4).map(|g| (g, 0u8, ByzantineReplica::Compromised)).collect();
        let r = run(cfg);
        assert_eq!(r.outcomes, vec![Some(Outcome::Committed)], "seed {seed}");
    }
}

/// Guardian crashes at any point: restored from what was durably written,
/// never both kinds (checked after every event by the simulator).
#[test]
fn guardian_crashes_keep_one_kind() {
    for seed in 0..100u64 {
        let mut cfg = guarded(seed, 4, 4);
        cfg.crashes = true;
        cfg.fault_phase_ms = 400;
        cfg.compromised = vec![(seed % 4) as usize];
        cfg.deadline_ms = 5_000;
        let r = World::new(cfg).run();
        assert!(r.violation.is_none(), "seed {seed}: {:?}", r.violation);
        assert!(r.metrics.restarts > 0);
    }
}

/// Forwarding: with an installer that commits only one group and no
/// application traffic or proactive calls, guardians shared between groups
/// carry the code to the others.
#[test]
fn guardians_forward_codes() {
    for seed in 0..10u64 {
        let mut cfg = guarded(seed, 6, 4);
        cfg.finish_all = false;
        cfg.proactive = false;
        cfg.app_interval_ms = None;
        let r = run(cfg);
        assert_eq!(r.outcomes, vec![Some(Outcome::Committed)], "seed {seed}");
    }
}

mod guardian_role {
    use super::support::fixture::{group_keys, guardian_set, one_group_piece};
    use bft_upgrade::crypto::{Code, DeployerKey, ReplicaSecretKey, ShareKind};
    use bft_upgrade::deployer::Deployer;
    use bft_upgrade::guardian::{GuardedGroup, Guardian, GuardianConfig, GuardianEffect};
    use bft_upgrade::step::{Instant, Peer};
    use bft_upgrade::wire::{self, DeployerId, GroupId, Message, Piece};
    use chacha20::ChaCha20Rng;
    use rand_core::{Rng, SeedableRng};

    type G = Guardian<8>;

    struct Setup {
        piece: Piece,
        /// A piece of a second upgrade of the same deployer for the group.
        other: Piece,
        replica_keys: Vec<ReplicaSecretKey>,
        guardian_key: ReplicaSecretKey,
        config: GuardianConfig,
    }

    fn setup() -> Setup {
        let mut rng = ChaCha20Rng::from_seed([5; 32]);
        let (replica_keys, membership) = group_keys(&mut rng, GroupId(1), 4);
        let (guardian_keys, set) = guardian_set(&mut rng, 1..=4);
        let deployer = Deployer::new(DeployerId(1), DeployerKey::random(&mut rng));
        let genesis = Code::default();
        let piece = one_group_piece(&mut rng, &deployer, 1, &membership, Some(&set), &genesis);
        let other = one_group_piece(&mut rng, &deployer, 2, &membership, Some(&set), &genesis);
        let mut groups = heapless::Vec::new();
        groups.push(GuardedGroup { group: GroupId(1), members: membership.digest() }).unwrap();
        let mut deployers = heapless::Vec::new();
        deployers.push((deployer.id(), deployer.public_key())).unwrap();
        let config = GuardianConfig { id: 1, deployers, groups };
        Setup { piece, other, replica_keys, guardian_key: guardian_keys[0].clone(), config }
    }

    fn request(s: &Setup, replica: u8, kind: ShareKind) -> Message {
        let (_, token) = s.piece.open_token(usize::from(replica), &s.replica_keys[usize::from(replica)]).unwrap();
        Message::GuardianRequest { upgrade: s.piece.header.upgrade, group: GroupId(1), replica, kind, token }
    }

    fn from(replica: u8) -> Peer {
        Peer::Replica { group: GroupId(1), index: replica }
    }

    /// A guardian whose every slot holds a release does not keep another
    /// piece and says so (`Busy`, as a full group does), leaving its state
    /// as it was; once the host retires the finished upgrade it keeps it.
    #[test]
    fn a_full_guardian_is_busy_not_an_error() {
        let s = setup();
        let mut g: Guardian<1> = Guardian::new(s.config.clone());
        let (u, grp) = (s.piece.header.upgrade, GroupId(1));
        assert!(g.handle_piece(Instant(0), from(0), &s.piece, &s.guardian_key).is_empty());
        let _ = g.handle_message(Instant(1), from(1), &request(&s, 1, ShareKind::Secret));
        let step = g.handle_message(Instant(2), from(2), &request(&s, 2, ShareKind::Secret));
        assert_eq!(step.effects.len(), 1, "released: {:?}", step.effects);
        let before = wire::encoded_len(&g);
        let mut buf = vec![0u8; before];
        let snapshot = wire::encode(&g, &mut buf).unwrap().to_vec();
        let other = s.other.header.upgrade;
        let step = g.handle_piece(Instant(3), from(0), &s.other, &s.guardian_key);
        assert_eq!(step.effects.as_slice(), &[GuardianEffect::Busy { upgrade: other, group: grp }]);
        assert!(step.faults.is_empty(), "a full guardian is not the sender's fault");
        let mut buf = vec![0u8; wire::encoded_len(&g)];
        assert_eq!(wire::encode(&g, &mut buf).unwrap().to_vec(), snapshot, "a busy guardian changed its state");
        g.retire(u);
        assert!(g.handle_piece(Instant(4), from(0), &s.other, &s.guardian_key).is_empty());
    }

    /// One faulty replica asking for c first does not get it released; f + 1
    /// asking for s_g do, after the durable write and not before.
    #[test]
    fn f_plus_one_tokens_and_durable_release() {
        let s = setup();
        let mut g = G::new(s.config.clone());
        let (u, grp) = (s.piece.header.upgrade, GroupId(1));
        let step = g.handle_piece(Instant(0), from(0), &s.piece, &s.guardian_key);
        assert!(step.is_empty());
        let step = g.handle_message(Instant(1), from(0), &request(&s, 0, ShareKind::Cancel));
        assert!(step.is_empty() && g.released(u, grp).is_none(), "one replica must not be enough");
        let step = g.handle_message(Instant(2), from(1), &request(&s, 1, ShareKind::Secret));
        assert!(step.is_empty());
        let step = g.handle_message(Instant(3), from(2), &request(&s, 2, ShareKind::Secret));
        assert_eq!(
            step.effects.as_slice(),
            &[GuardianEffect::Persist { upgrade: u, group: grp, kind: ShareKind::Secret }]
        );
        assert!(step.messages.is_empty(), "no share before the write is acknowledged");
        let step = g.persisted(Instant(4), u, grp);
        assert_eq!(step.messages.len(), 2);
        // The faulty replica's c request, now joined by another: never.
        let step = g.handle_message(Instant(5), from(3), &request(&s, 3, ShareKind::Cancel));
        assert!(step.messages.is_empty() && step.effects.is_empty());
        // A forged token is a fault.
        let mut forged = request(&s, 3, ShareKind::Secret);
        if let Message::GuardianRequest { token, .. } = &mut forged {
            token.0[0] ^= 1;
        }
        let step = g.handle_message(Instant(6), from(3), &forged);
        assert_eq!(step.faults.len(), 1);
        // A group's answer to an outcome the guardian forwarded is no fault.
        let answer = wire::Answer {
            upgrade: u,
            group: grp,
            replica: 0,
            reply: wire::Reply::Finished(wire::Outcome::Committed, Code::default()),
        };
        let step = g.handle_message(Instant(7), from(0), &Message::Answer(answer));
        assert!(step.is_empty());
    }

    /// Once the release is decided and before it is written, no request
    /// gets a share: not a repeated one, not one from a replica that did
    /// not count towards f + 1. After the write, a request gets it.
    #[test]
    fn no_share_between_decision_and_write() {
        let s = setup();
        let mut g = G::new(s.config.clone());
        let (u, grp) = (s.piece.header.upgrade, GroupId(1));
        let _ = g.handle_piece(Instant(0), from(0), &s.piece, &s.guardian_key);
        let _ = g.handle_message(Instant(1), from(0), &request(&s, 0, ShareKind::Secret));
        let step = g.handle_message(Instant(2), from(1), &request(&s, 1, ShareKind::Secret));
        assert_eq!(
            step.effects.as_slice(),
            &[GuardianEffect::Persist { upgrade: u, group: grp, kind: ShareKind::Secret }]
        );
        for (t, r) in [(3, 0u8), (4, 1), (5, 2)] {
            let step = g.handle_message(Instant(t), from(r), &request(&s, r, ShareKind::Secret));
            assert!(step.messages.is_empty() && step.effects.is_empty(), "replica {r}: a share before the write");
        }
        let _ = g.persisted(Instant(6), u, grp);
        let step = g.handle_message(Instant(7), from(3), &request(&s, 3, ShareKind::Secret));
        assert!(
            matches!(step.messages.as_slice(), [m] if matches!(m.message, Message::GuardianShare { kind: ShareKind::Secret, .. })),
            "after the write, a request gets the share"
        );
    }

    /// `retire` forgets the records of that upgrade, and only those.
    #[test]
    fn retire_forgets_one_upgrade() {
        let s = setup();
        let mut g = G::new(s.config.clone());
        let (u, grp) = (s.piece.header.upgrade, GroupId(1));
        assert_eq!((g.held(), g.releases()), (0, 0));
        let _ = g.handle_piece(Instant(0), from(0), &s.piece, &s.guardian_key);
        let _ = g.handle_piece(Instant(0), from(0), &s.other, &s.guardian_key);
        assert_eq!((g.held(), g.releases()), (2, 0));
        for r in 0..2 {
            let _ = g.handle_message(Instant(1), from(r), &request(&s, r, ShareKind::Secret));
        }
        assert_eq!(g.released(u, grp), Some(ShareKind::Secret));
        assert_eq!((g.held(), g.releases()), (2, 1));
        g.retire(wire::UpgradeId([0xEE; 16]));
        assert_eq!(g.released(u, grp), Some(ShareKind::Secret), "retiring another upgrade kept this one");
        g.retire(u);
        assert_eq!(g.released(u, grp), None);
        assert_eq!((g.held(), g.releases()), (1, 0));
        // Forgotten: a request now asks for the piece again.
        let step = g.handle_message(Instant(2), from(2), &request(&s, 2, ShareKind::Secret));
        assert!(
            matches!(step.messages.as_slice(), [m] if matches!(m.message, Message::GuardianNeedsPiece { .. })),
            "{:?}",
            step.messages
        );
    }

    /// Random request orders with crashes at every step, restarting from the
    /// last state written at a `Persist`: across the whole history the
    /// guardian never sends shares of both kinds, and never a share before
    /// its release was written.
    #[test]
    fn crashes_at_every_step_never_both_kinds() {
        let s = setup();
        let (u, grp) = (s.piece.header.upgrade, GroupId(1));
        for seed in 0..100u64 {
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let mut g = G::new(s.config.clone());
            let mut stored: Option<Vec<u8>> = None;
            let mut pending_ack = false;
            let mut sent = [false; 2];
            for _ in 0..40 {
                match rng.next_u32() % 5 {
                    0 => {
                        // Crash: back to what was written (or nothing).
                        g = match &stored {
                            Some(b) => wire::decode(b).unwrap(),
                            None => G::new(s.config.clone()),
                        };
                        pending_ack = false;
                    }
                    1 if pending_ack => {
                        let step = g.persisted(Instant(0), u, grp);
                        pending_ack = false;
                        for m in &step.messages {
                            if let Message::GuardianShare { kind, .. } = m.message {
                                sent[(kind == ShareKind::Cancel) as usize] = true;
                            }
                        }
                    }
                    2 => {
                        let _ = g.handle_piece(Instant(0), from(0), &s.piece, &s.guardian_key);
                    }
                    _ => {
                        let r = (rng.next_u32() % 4) as u8;
                        let kind = if rng.next_u32() % 2 == 0 { ShareKind::Secret } else { ShareKind::Cancel };
                        let step = g.handle_message(Instant(0), from(r), &request(&s, r, kind));
                        for e in &step.effects {
                            let GuardianEffect::Persist { .. } = e else { continue };
                            // The host writes the state now, then acks later.
                            let mut buf = vec![0u8; wire::encoded_len(&g)];
                            stored = Some(wire::encode(&g, &mut buf).unwrap().to_vec());
                            pending_ack = true;
                        }
                        for m in &step.messages {
                            if let Message::GuardianShare { kind, .. } = m.message {
                                assert!(stored.is_some(), "seed {seed}: a share left before any write");
                                sent[(kind == ShareKind::Cancel) as usize] = true;
                            }
                        }
                    }
                }
                assert!(!(sent[0] && sent[1]), "seed {seed}: both kinds released");
            }
        }
    }
}

/// The group replica's side of guardian custody, driven by hand.
mod guarded_replica {
    use super::support::fixture::{config, group_keys, guardian_set, one_group_piece};
    use bft_upgrade::crypto::{Code, DeployerKey, ReplicaSecretKey};
    use bft_upgrade::deployer::Deployer;
    use bft_upgrade::group::{GroupEffect, GroupReplica, Verdict};
    use bft_upgrade::step::{FaultKind, Instant, Peer, Step};
    use bft_upgrade::wire::{DeployerId, GroupId, Message, Operation, Piece};
    use chacha20::ChaCha20Rng;
    use rand_core::SeedableRng;

    const GROUP: GroupId = GroupId(1);

    /// Seven replicas (`f = 2`) with four guardians (ids 1..=4, `F = 1`),
    /// and a piece for them in guardian custody.
    fn setup() -> (Vec<GroupReplica>, Vec<ReplicaSecretKey>, Piece) {
        let mut rng = ChaCha20Rng::from_seed([44; 32]);
        let (keys, membership) = group_keys(&mut rng, GROUP, 7);
        let (_, set) = guardian_set(&mut rng, 1..=4);
        let deployer = Deployer::new(DeployerId(1), DeployerKey::random(&mut rng));
        let genesis = Code::default();
        let piece = one_group_piece(&mut rng, &deployer, 1, &membership, Some(&set), &genesis);
        let config = config(&membership, &deployer, &genesis, Some(&set));
        let reps = (0..7).map(|i| GroupReplica::new(config.clone(), i).unwrap()).collect();
        (reps, keys, piece)
    }

    fn forwards(step: &Step<GroupEffect>, who: Option<u32>) -> bool {
        step.effects.iter().any(|e| matches!(e, GroupEffect::ForwardPiece { guardian, .. } if *guardian == who))
    }

    /// After the decision, the first f + 1 replicas (and only they) hand
    /// the piece to the guardians; every replica asks every guardian.
    #[test]
    fn first_f_plus_one_forward_the_piece() {
        let (mut reps, keys, piece) = setup();
        let op = Operation::PrepareInstall(piece);
        for (i, (r, k)) in reps.iter_mut().zip(&keys).enumerate() {
            let step = r.handle_ordered(Instant(0), Peer::Installer(1), &op, k, |_| Verdict::Accept);
            assert_eq!(forwards(&step, None), i <= 2, "replica {i}");
            let asked = step.messages.iter().filter(|m| matches!(m.message, Message::GuardianRequest { .. })).count();
            assert_eq!(asked, 4, "replica {i}");
        }
    }

    /// A guardian that needs the piece gets it from a replica holding it;
    /// asking about another group is a fault and gets nothing.
    #[test]
    fn guardian_needs_piece_of_this_group_only() {
        let (mut reps, keys, piece) = setup();
        let upgrade = piece.header.upgrade;
        let op = Operation::PrepareInstall(piece);
        let r = &mut reps[4];
        let _ = r.handle_ordered(Instant(0), Peer::Installer(1), &op, &keys[4], |_| Verdict::Accept);
        let ask = |group| Message::GuardianNeedsPiece { upgrade, group };
        let step = r.handle_message(Instant(1), Peer::Guardian(3), &ask(GROUP));
        assert!(forwards(&step, Some(3)) && step.faults.is_empty());
        let step = r.handle_message(Instant(2), Peer::Guardian(3), &ask(GroupId(2)));
        assert!(step.effects.is_empty(), "{:?}", step.effects);
        assert!(step.faults.iter().any(|f| f.kind == FaultKind::Unsolicited));
    }
}

/// Measured: bytes per guardian entry in the piece, and messages per
/// upgrade with and without guardians (same world, no faults).
#[test]
fn guardian_costs() {
    use bft_upgrade::wire::{encoded_len, Custody};
    let per_upgrade = |guardians: usize| {
        let mut cfg = guarded(3, 12, guardians);
        cfg.guardians = guardians;
        let r = run(cfg);
        let m = &r.metrics;
        (m.replica_messages + m.installer_messages, m.replica_bytes + m.installer_bytes, r.piece_bytes)
    };
    let (m0, b0, p0) = per_upgrade(0);
    let (m4, b4, p4) = per_upgrade(4);
    let (m7, b7, p7) = per_upgrade(7);
    println!("| guardians per group | messages per upgrade | bytes per upgrade | piece bytes |");
    println!("|---|---|---|---|");
    println!("| 0 | {m0} | {b0} | {p0} |");
    println!("| 4 | {m4} | {b4} | {p4} |");
    println!("| 7 | {m7} | {b7} | {p7} |");
    // Bytes one guardian adds to a piece: the entry's encoding.
    let s = guardian_role_setup_piece();
    let Custody::Guardians { guardians, .. } = &s.header.custody else { panic!("guardian custody") };
    let entry = encoded_len(&guardians[0]);
    println!("bytes per guardian entry: {entry} (piece growth per guardian: {})", (p7 - p4) / 3);
    assert!(entry <= 200, "{entry}");
}

fn guardian_role_setup_piece() -> bft_upgrade::wire::Piece {
    use bft_upgrade::crypto::{Code, DeployerKey};
    use bft_upgrade::deployer::Deployer;
    use bft_upgrade::wire::{DeployerId, GroupId};
    use chacha20::ChaCha20Rng;
    use rand_core::SeedableRng;
    use support::fixture::{group_keys, guardian_set, one_group_piece};
    let mut rng = ChaCha20Rng::from_seed([8; 32]);
    let (_, m) = group_keys(&mut rng, GroupId(1), 4);
    let (_, set) = guardian_set(&mut rng, 1..=4);
    let d = Deployer::new(DeployerId(1), DeployerKey::random(&mut rng));
    one_group_piece(&mut rng, &d, 1, &m, Some(&set), &Code::default())
}
