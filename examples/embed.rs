//! The smallest in-process host: three groups of four replicas on a ring,
//! one deployer, one installer, every role driven through the host layer
//! (`bft_upgrade::host`) over in-memory stores. A first upgrade commits
//! (through one group, then by diffusion); a second, which one group's
//! application rejects, aborts everywhere.
//!
//! `cargo run --example embed`

use std::collections::VecDeque;

use bft_upgrade::crypto::{Binding, Code, DeployerKey, ReplicaSecretKey};
use bft_upgrade::deployer::{Deployer, GroupTarget, UpgradePlan, VersionChain};
use bft_upgrade::group::{AuthorizedDeployer, GroupConfig, GroupEffect, GroupReplica, Neighbor, Verdict};
use bft_upgrade::host::{open_payload, seal_payload, Batch, Bundle, InstallerHost, MemStore, Outbound, ReplicaHost};
use bft_upgrade::installer::{Finishing, Installer, InstallerOptions};
use bft_upgrade::rand_core::SeedableRng;
use bft_upgrade::step::{Instant, Peer};
use bft_upgrade::wire::{DeployerId, GroupId, Membership, Message, Outcome, ResourceId, UpgradeId};
use chacha20::ChaCha20Rng;

const GROUPS: [GroupId; 3] = [GroupId(1), GroupId(2), GroupId(3)];
const INSTALLER: Peer = Peer::Installer(1);

/// The replicas and their keys, the sealed payloads, and what is in
/// flight: the host's whole world.
struct Host {
    now: Instant,
    replicas: Vec<Vec<ReplicaHost<MemStore>>>,
    keys: Vec<Vec<ReplicaSecretKey>>,
    /// Per group, the sealed payload of the upgrade being installed.
    sealed: Vec<Vec<u8>>,
    /// Groups whose application refuses the next piece.
    rejecting: Vec<GroupId>,
    queue: VecDeque<(Peer, Outbound)>,
}

impl Host {
    /// Delivers every item in flight, and what it causes. A real host
    /// sends `Submit` through the group's agreement; here every replica
    /// executes it at once, in one order, which is what agreement gives.
    fn run(&mut self, installer: &mut InstallerHost<MemStore, 4, 64>) {
        while let Some((from, item)) = self.queue.pop_front() {
            match item {
                Outbound::Submit { group, op } => {
                    let gi = index(group);
                    let verdict = if self.rejecting.contains(&group) { Verdict::Reject } else { Verdict::Accept };
                    for ri in 0..self.replicas[gi].len() {
                        let key = &self.keys[gi][ri];
                        let report = self.replicas[gi][ri].ordered(self.now, from, &op, key, |_| verdict);
                        self.apply(gi, ri, &report.effects);
                    }
                }
                Outbound::Send { to: Peer::Replica { group, index: ri }, message } => {
                    let gi = index(group);
                    let report = self.replicas[gi][usize::from(ri)].message(self.now, from, &message);
                    self.apply(gi, usize::from(ri), &report.effects);
                }
                Outbound::Send { to: INSTALLER, message: Message::Answer(answer) } => {
                    let mut out = Vec::new();
                    installer.answer(self.now, from, &answer, &mut out).expect("in-memory store");
                    self.queue.extend(out.into_iter().map(|o| (INSTALLER, o)));
                }
                other => println!("  (no one to deliver {other:?} to)"),
            }
            self.flush_all();
        }
    }

    /// The application's side of a replica's step: open and install the
    /// payload on `Apply`, drop it on `Discard`.
    fn apply(&mut self, gi: usize, ri: usize, effects: &[GroupEffect]) {
        for effect in effects {
            match effect {
                GroupEffect::Apply { upgrade, key: Some(key), payload, .. } => {
                    let mut plain = Vec::new();
                    let binding = Binding::group(*upgrade, GROUPS[gi]);
                    open_payload(key, &binding, payload, &mut &self.sealed[gi][..], &mut plain).expect("payload");
                    if ri == 0 {
                        println!("  group {} installs {:?}", GROUPS[gi].0, String::from_utf8_lossy(&plain));
                    }
                }
                GroupEffect::Discard { .. } if ri == 0 => println!("  group {} discards it", GROUPS[gi].0),
                _ => {}
            }
        }
    }

    /// Writes every replica's state, then sends what it produced.
    fn flush_all(&mut self) {
        for (gi, group) in self.replicas.iter_mut().enumerate() {
            for (ri, replica) in group.iter_mut().enumerate() {
                let mut out = Vec::new();
                replica.flush(Batch::new(), &mut out).expect("in-memory store");
                let me = Peer::Replica { group: GROUPS[gi], index: ri as u8 };
                self.queue.extend(out.into_iter().map(|o| (me, o)));
            }
        }
    }

    /// Time passes: every due deadline fires.
    fn tick(&mut self, installer: &mut InstallerHost<MemStore, 4, 64>, ms: u64) {
        self.now = Instant(self.now.0 + ms);
        for gi in 0..self.replicas.len() {
            for ri in 0..self.replicas[gi].len() {
                if self.replicas[gi][ri].deadline().is_some_and(|d| d <= self.now) {
                    let report = self.replicas[gi][ri].timeout(self.now);
                    self.apply(gi, ri, &report.effects);
                }
            }
        }
        if installer.deadline().is_some_and(|d| d <= self.now) {
            let mut out = Vec::new();
            installer.timeout(self.now, &mut out).expect("in-memory store");
            self.queue.extend(out.into_iter().map(|o| (INSTALLER, o)));
        }
        self.flush_all();
        self.run(installer);
    }

    fn outcome(&self, upgrade: UpgradeId) -> Vec<Option<Outcome>> {
        self.replicas.iter().flatten().map(|r| r.role().outcome(upgrade)).collect()
    }
}

fn index(group: GroupId) -> usize {
    GROUPS.iter().position(|g| *g == group).expect("one of ours")
}

fn main() {
    // Any `rand_core::CryptoRng` works; a seeded ChaCha20 makes the run
    // repeatable. A real deployment seeds it from the operating system.
    let mut rng = ChaCha20Rng::from_seed([42; 32]);
    let deployer = Deployer::new(DeployerId(1), DeployerKey::random(&mut rng));
    let genesis = Code::from_bytes([1; 32]);

    // Three groups of 4 replicas (f = 1) on a ring.
    let keys: Vec<Vec<ReplicaSecretKey>> =
        GROUPS.iter().map(|_| (0..4).map(|_| ReplicaSecretKey::random(&mut rng)).collect()).collect();
    let memberships: Vec<Membership> = GROUPS
        .iter()
        .zip(&keys)
        .map(|(g, ks)| Membership::new(*g, &ks.iter().map(|k| k.public_key()).collect::<Vec<_>>()).expect("4 keys"))
        .collect();
    let replicas = (0..GROUPS.len())
        .map(|gi| {
            let me = AuthorizedDeployer { id: deployer.id(), key: deployer.public_key(), genesis: genesis.clone() };
            let config = GroupConfig::new(memberships[gi].clone(), 100)
                .with_deployer(me)
                .and_then(|c| c.with_neighbor(Neighbor::of(&memberships[(gi + 1) % 3])))
                .and_then(|c| c.with_neighbor(Neighbor::of(&memberships[(gi + 2) % 3])))
                .expect("within capacities");
            (0..4u8)
                .map(|i| {
                    let config = config.clone();
                    ReplicaHost::open(MemStore::default(), || GroupReplica::new(config, i)).expect("valid")
                })
                .collect()
        })
        .collect();
    let mut host =
        Host { now: Instant(0), replicas, keys, sealed: Vec::new(), rejecting: Vec::new(), queue: VecDeque::new() };
    let mut chain: VersionChain<3> = VersionChain::new(genesis);

    for (seq, rejecting) in [(1u64, vec![]), (2, vec![GroupId(3)])] {
        // The deployer: codes, sealed payloads and signed pieces.
        let plan = UpgradePlan::new(&mut rng, deployer.id(), seq, &GROUPS).expect("plan");
        let upgrade = plan.header().upgrade;
        println!("upgrade {seq}{}:", if rejecting.is_empty() { "" } else { " (group 3 rejects it)" });
        host.sealed.clear();
        let mut pieces = Vec::new();
        for (gi, g) in GROUPS.iter().enumerate() {
            let text = format!("release {seq} for group {}", g.0);
            let key = plan.group_key(*g).expect("in the plan");
            let mut sealed = Vec::new();
            let payload = seal_payload(&key, &Binding::group(upgrade, *g), 4096, &mut text.as_bytes(), &mut sealed)
                .expect("seal");
            host.sealed.push(sealed);
            let target = GroupTarget {
                membership: &memberships[gi],
                resources: &[ResourceId(1)],
                prev_version: chain.prev(*g),
                guardians: None,
                payload,
                next: None,
            };
            pieces.push(plan.piece(&deployer, &target).expect("piece"));
        }
        let bundle = Bundle {
            header: plan.header().clone(),
            groups: memberships.iter().map(|m| (m.group, m.f)).collect(),
            pieces,
        };
        host.rejecting = rejecting;

        // The installer: untrusted, it needs only the public bundle. It
        // finishes through one group and leaves the rest to diffusion.
        let options = InstallerOptions::default().retry_ms(100).finishing(Finishing::Diffusion { grace: 3 });
        let mut installer: InstallerHost<MemStore, 4, 64> =
            InstallerHost::open(MemStore::default(), "installer", bundle, |b| {
                Installer::new(1, b.header.clone(), &b.groups, options).map(Box::new)
            })
            .expect("installer");
        let mut out = Vec::new();
        installer.start(host.now, &mut out).expect("in-memory store");
        host.queue.extend(out.into_iter().map(|o| (INSTALLER, o)));
        host.run(&mut installer);
        while !installer.role().is_done() {
            host.tick(&mut installer, 100);
        }
        let (outcome, _) = installer.role().decided().expect("done means decided");
        let outcomes = host.outcome(upgrade);
        assert!(outcomes.iter().all(|o| *o == Some(outcome)), "every replica finished the same way");
        println!("  {outcome:?} at all {} replicas, at {} ms", outcomes.len(), host.now.0);
        // The deployer's chain: the next piece builds on this outcome.
        chain.advance(&plan, outcome).expect("3 groups");
    }
}
