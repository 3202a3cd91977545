//! A small in-process host: two groups on a ring, one deployer, optional
//! guardians guarding both groups, one installer; every role behind the
//! host layer (`bft_upgrade::host`) over stores that can be made to fail,
//! and the routing a host does. Used by tests/host.rs and, to write and
//! replay the frozen format fixtures, tests/fixtures.rs.

use std::collections::{BTreeMap, VecDeque};

use bft_upgrade::crypto::{Binding, Code, DeployerKey, ReplicaSecretKey};
use bft_upgrade::deployer::{Deployer, GroupTarget, SavedPlan, UpgradePlan};
use bft_upgrade::group::{AuthorizedDeployer, GroupConfig, GroupEffect, GroupReplica, Neighbor, Verdict};
use bft_upgrade::guardian::{GuardedGroup, Guardian, GuardianConfig};
use bft_upgrade::host::{
    seal_payload, Batch, Bundle, GuardianHost, InstallerHost, MemStore, Outbound, ReplicaHost, Store,
};
use bft_upgrade::installer::{Finishing, Installer, InstallerOptions};
use bft_upgrade::step::{Instant, Peer};
use bft_upgrade::wire::{DeployerId, GroupId, GuardianSet, Membership, Message, ResourceId, UpgradeId};
use chacha20::ChaCha20Rng;
use rand_core::SeedableRng;

/// A [`MemStore`] whose commits fail while `fail` is set (a full disk).
#[derive(Default)]
pub struct Flaky {
    pub inner: MemStore,
    pub fail: bool,
    /// Bytes of the values committed so far.
    pub written: usize,
}

#[derive(Debug)]
pub struct DiskFull;

impl Store for Flaky {
    type Error = DiskFull;
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, DiskFull> {
        Ok(self.inner.get(key).unwrap())
    }
    fn list(&self, prefix: &str) -> Result<Vec<String>, DiskFull> {
        Ok(self.inner.list(prefix).unwrap())
    }
    fn commit(&mut self, batch: Batch) -> Result<(), DiskFull> {
        if self.fail {
            return Err(DiskFull);
        }
        self.written += batch.clone().into_writes().iter().filter_map(|(_, v)| v.as_ref()).map(Vec::len).sum::<usize>();
        self.inner.commit(batch).unwrap();
        Ok(())
    }
}

/// The two groups.
pub const GROUPS: [GroupId; 2] = [GroupId(1), GroupId(2)];
/// The installer.
pub const INSTALLER: Peer = Peer::Installer(9);
/// Where the installer's host keeps its role.
pub const INSTALLER_KEY: &str = "installer";

/// Two groups on a ring of two, one deployer, optionally guardians
/// guarding both groups, one installer.
pub struct Host {
    /// Replicas per group.
    pub n: usize,
    /// The plan as its deployer saved it.
    pub saved: SavedPlan,
    /// The deployer (not in a snapshot: restored hosts have none).
    pub deployer: Option<Deployer>,
    pub now: u64,
    pub replicas: Vec<Vec<ReplicaHost<Flaky>>>,
    pub keys: Vec<Vec<ReplicaSecretKey>>,
    pub guardians: Vec<GuardianHost<Flaky, 8>>,
    pub guardian_keys: Vec<ReplicaSecretKey>,
    pub installer: InstallerHost<Flaky, 4, 64>,
    /// Items in flight, with the peer that sent them.
    pub queue: VecDeque<(Peer, Outbound)>,
    /// Every item delivered, in order.
    pub delivered: Vec<(Peer, Outbound)>,
    /// Effects the application saw, per (group, replica).
    pub applied: Vec<(usize, usize, GroupEffect)>,
    pub sealed: Vec<Vec<u8>>,
    pub plain: Vec<Vec<u8>>,
    pub trigger: Code,
    pub upgrade: UpgradeId,
}

/// Everything a [`Host`] needs to carry on: each party's stored records,
/// the secret keys, the bundle, the deployer's saved plan and the sealed
/// payloads. The fixtures are one of these, written out file by file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub now: u64,
    pub n: usize,
    /// Per party (`replica-<group index>-<replica>`, `guardian-<id>`,
    /// `installer`): its store's records, key to bytes.
    pub stores: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    pub replica_keys: Vec<Vec<[u8; 32]>>,
    pub guardian_keys: Vec<[u8; 32]>,
    pub bundle: Bundle,
    pub saved: Vec<u8>,
    pub sealed: Vec<Vec<u8>>,
}

/// What group `g`'s sample payload says.
pub fn plaintext(g: GroupId) -> Vec<u8> {
    (0..300u32).map(|i| (i as u8) ^ g.0 as u8).collect()
}

fn records(store: &Flaky) -> BTreeMap<String, Vec<u8>> {
    let keys = store.inner.list("").unwrap();
    keys.into_iter().map(|k| (k.clone(), store.inner.get(&k).unwrap().unwrap())).collect()
}

fn store_of(records: Option<&BTreeMap<String, Vec<u8>>>) -> Flaky {
    let mut batch = Batch::new();
    for (k, v) in records.into_iter().flatten() {
        batch.put(k.clone(), v.clone());
    }
    let mut store = Flaky::default();
    store.commit(batch).unwrap();
    store
}

impl Host {
    /// Two groups of four; `guardians` guardians (0: replica custody).
    pub fn new(seed: u8, guardians: usize) -> Self {
        Self::build(seed, 4, guardians)
    }

    /// Two groups of `n`; `guardians` guardians (0: replica custody).
    pub fn build(seed: u8, n: usize, guardians: usize) -> Self {
        let mut rng = ChaCha20Rng::from_seed([seed; 32]);
        let deployer = Deployer::new(DeployerId(1), DeployerKey::random(&mut rng));
        let genesis = Code::from_bytes([7; 32]);
        let keys: Vec<Vec<ReplicaSecretKey>> =
            GROUPS.iter().map(|_| (0..n).map(|_| ReplicaSecretKey::random(&mut rng)).collect()).collect();
        let memberships: Vec<Membership> = GROUPS
            .iter()
            .zip(&keys)
            .map(|(g, ks)| Membership::new(*g, &ks.iter().map(|k| k.public_key()).collect::<Vec<_>>()).unwrap())
            .collect();
        let guardian_keys: Vec<ReplicaSecretKey> = (0..guardians).map(|_| ReplicaSecretKey::random(&mut rng)).collect();
        let set = (guardians > 0).then(|| {
            let members: Vec<(u32, _)> =
                guardian_keys.iter().enumerate().map(|(i, k)| (i as u32 + 1, k.public_key())).collect();
            GuardianSet::new(&members).unwrap()
        });
        let plan = UpgradePlan::new(&mut rng, deployer.id(), 1, &GROUPS).unwrap();
        let upgrade = plan.header().upgrade;
        let (mut pieces, mut sealed) = (Vec::new(), Vec::new());
        for (gi, g) in GROUPS.iter().enumerate() {
            let text = plaintext(*g);
            let mut out = Vec::new();
            let key = plan.group_key(*g).unwrap();
            let payload = seal_payload(&key, &Binding::group(upgrade, *g), 64, &mut &text[..], &mut out).unwrap();
            let target = GroupTarget {
                membership: &memberships[gi],
                resources: &[ResourceId(1)],
                prev_version: &genesis,
                guardians: set.as_ref(),
                payload,
                next: None,
            };
            pieces.push(plan.piece(&deployer, &target).unwrap());
            sealed.push(out);
        }
        let bundle = Bundle {
            header: plan.header().clone(),
            groups: memberships.iter().map(|m| (m.group, m.f)).collect(),
            pieces,
        };
        let replicas = (0..GROUPS.len())
            .map(|gi| {
                let me = AuthorizedDeployer { id: deployer.id(), key: deployer.public_key(), genesis: genesis.clone() };
                let mut config = GroupConfig::new(memberships[gi].clone(), 50)
                    .with_deployer(me)
                    .and_then(|c| c.with_neighbor(Neighbor::of(&memberships[1 - gi])))
                    .unwrap();
                if let Some(set) = &set {
                    config = config.with_guardians(set);
                }
                (0..n as u8)
                    .map(|i| {
                        let c = config.clone();
                        ReplicaHost::open(Flaky::default(), || GroupReplica::new(c, i)).unwrap()
                    })
                    .collect()
            })
            .collect();
        let guardians = (0..guardians)
            .map(|k| {
                let mut config =
                    GuardianConfig { id: k as u32 + 1, deployers: heapless::Vec::new(), groups: heapless::Vec::new() };
                config.deployers.push((deployer.id(), deployer.public_key())).unwrap();
                for m in &memberships {
                    config.groups.push(GuardedGroup { group: m.group, members: m.digest() }).unwrap();
                }
                GuardianHost::open(Flaky::default(), || Guardian::new(config)).unwrap()
            })
            .collect();
        let options = InstallerOptions::default().retry_ms(50).finishing(Finishing::EveryGroup);
        let installer = InstallerHost::open(Flaky::default(), INSTALLER_KEY, bundle, |b| {
            Installer::new(9, b.header.clone(), &b.groups, options).map(Box::new)
        })
        .unwrap();
        Host {
            n,
            saved: plan.saved(),
            deployer: Some(deployer),
            now: 1_000,
            replicas,
            keys,
            guardians,
            guardian_keys,
            installer,
            queue: VecDeque::new(),
            delivered: Vec::new(),
            applied: Vec::new(),
            sealed,
            plain: GROUPS.iter().map(|g| plaintext(*g)).collect(),
            trigger: plan.trigger_code().clone(),
            upgrade,
        }
    }

    /// Every party's stored records and what else carrying on needs (only
    /// at a quiet moment: nothing in flight).
    pub fn snapshot(&self) -> Snapshot {
        assert!(self.queue.is_empty(), "a snapshot is taken when nothing is in flight");
        let mut stores = BTreeMap::new();
        for (gi, group) in self.replicas.iter().enumerate() {
            for (ri, r) in group.iter().enumerate() {
                stores.insert(format!("replica-{gi}-{ri}"), records(r.store()));
            }
        }
        for (k, g) in self.guardians.iter().enumerate() {
            stores.insert(format!("guardian-{}", k + 1), records(g.store()));
        }
        stores.insert(INSTALLER_KEY.to_string(), records(self.installer.store()));
        Snapshot {
            now: self.now,
            n: self.n,
            stores,
            replica_keys: self.keys.iter().map(|ks| ks.iter().map(|k| *k.to_bytes()).collect()).collect(),
            guardian_keys: self.guardian_keys.iter().map(|k| *k.to_bytes()).collect(),
            bundle: self.installer.bundle().clone(),
            saved: to_bytes(&self.saved),
            sealed: self.sealed.clone(),
        }
    }

    /// The host that `snapshot` describes, every role reopened from its
    /// records (a role missing from them is an error, never a fresh one).
    pub fn restore(snapshot: &Snapshot) -> Self {
        let saved: SavedPlan = bft_upgrade::wire::decode(&snapshot.saved).expect("the saved plan decodes");
        let plan = UpgradePlan::restore(&saved, &GROUPS).expect("the saved plan restores");
        let key = |b: &[u8; 32]| ReplicaSecretKey::from_bytes(b).unwrap();
        let replicas = (0..GROUPS.len())
            .map(|gi| {
                (0..snapshot.n)
                    .map(|ri| {
                        let store = store_of(snapshot.stores.get(&format!("replica-{gi}-{ri}")));
                        ReplicaHost::open(store, || panic!("replica {gi}-{ri} has no stored role")).unwrap()
                    })
                    .collect()
            })
            .collect();
        let guardians = (0..snapshot.guardian_keys.len())
            .map(|k| {
                let store = store_of(snapshot.stores.get(&format!("guardian-{}", k + 1)));
                GuardianHost::open(store, || panic!("guardian {} has no stored role", k + 1)).unwrap()
            })
            .collect();
        let store = store_of(snapshot.stores.get(INSTALLER_KEY));
        let installer = InstallerHost::open(store, INSTALLER_KEY, snapshot.bundle.clone(), |_| {
            panic!("the installer has no stored role")
        })
        .unwrap();
        Host {
            n: snapshot.n,
            saved,
            deployer: None,
            now: snapshot.now,
            replicas,
            keys: snapshot.replica_keys.iter().map(|ks| ks.iter().map(key).collect()).collect(),
            guardians,
            guardian_keys: snapshot.guardian_keys.iter().map(key).collect(),
            installer,
            queue: VecDeque::new(),
            delivered: Vec::new(),
            applied: Vec::new(),
            sealed: snapshot.sealed.clone(),
            plain: GROUPS.iter().map(|g| plaintext(*g)).collect(),
            trigger: plan.trigger_code().clone(),
            upgrade: plan.header().upgrade,
        }
    }

    pub fn t(&self) -> Instant {
        Instant(self.now)
    }

    pub fn gi(g: GroupId) -> usize {
        GROUPS.iter().position(|x| *x == g).unwrap()
    }

    /// Flushes replica (gi, ri) into the queue; a failed write sends
    /// nothing and is reported.
    pub fn flush(&mut self, gi: usize, ri: usize) -> bool {
        let mut out = Vec::new();
        let ok = self.replicas[gi][ri].flush(Batch::new(), &mut out).is_ok();
        let from = Peer::Replica { group: GROUPS[gi], index: ri as u8 };
        self.queue.extend(out.into_iter().map(|o| (from, o)));
        ok
    }

    fn report(&mut self, gi: usize, ri: usize, report: bft_upgrade::host::ReplicaReport) {
        assert_eq!(report.lost, 0);
        for e in report.effects {
            self.applied.push((gi, ri, e));
        }
        self.flush(gi, ri);
    }

    /// Delivers everything in flight (and what it causes).
    pub fn run(&mut self) {
        let mut budget = 100_000;
        while let Some((from, item)) = self.queue.pop_front() {
            budget -= 1;
            assert!(budget > 0, "the host never went quiet");
            self.delivered.push((from, item.clone()));
            let now = self.t();
            match item {
                Outbound::Submit { group, op } => {
                    let gi = Self::gi(group);
                    for ri in 0..self.n {
                        let key = self.keys[gi][ri].clone();
                        let r = self.replicas[gi][ri].ordered(now, from, &op, &key, |_| Verdict::Accept);
                        self.report(gi, ri, r);
                    }
                }
                Outbound::Send { to: Peer::Replica { group, index }, message } => {
                    let (gi, ri) = (Self::gi(group), usize::from(index));
                    let r = self.replicas[gi][ri].message(now, from, &message);
                    self.report(gi, ri, r);
                }
                Outbound::Send { to: INSTALLER, message: Message::Answer(a) } => {
                    let mut out = Vec::new();
                    self.installer.answer(now, from, &a, &mut out).unwrap();
                    self.queue.extend(out.into_iter().map(|o| (INSTALLER, o)));
                }
                Outbound::Send { to: Peer::Guardian(id), message } => {
                    let mut out = Vec::new();
                    let k = id as usize - 1;
                    // A failed write drops the input, as a host that
                    // crashes on it would; the replicas ask again.
                    let _ = self.guardians[k].message(now, from, &message, &mut out);
                    self.queue.extend(out.into_iter().map(|o| (Peer::Guardian(id), o)));
                }
                Outbound::Piece { guardian, piece } => {
                    let mut out = Vec::new();
                    let k = guardian as usize - 1;
                    let key = self.guardian_keys[k].clone();
                    let _ = self.guardians[k].piece(now, from, &piece, &key, &mut out);
                    self.queue.extend(out.into_iter().map(|o| (Peer::Guardian(guardian), o)));
                }
                other => panic!("nowhere to deliver {other:?}"),
            }
        }
    }

    /// Moves the clock on by `ms` and fires every due deadline.
    pub fn tick(&mut self, ms: u64) {
        self.now += ms;
        let now = self.t();
        for gi in 0..GROUPS.len() {
            for ri in 0..self.n {
                if self.replicas[gi][ri].deadline().is_some_and(|d| d <= now) {
                    let r = self.replicas[gi][ri].timeout(now);
                    self.report(gi, ri, r);
                }
            }
        }
        if self.installer.deadline().is_some_and(|d| d <= now) {
            let mut out = Vec::new();
            self.installer.timeout(now, &mut out).unwrap();
            self.queue.extend(out.into_iter().map(|o| (INSTALLER, o)));
        }
        self.run();
    }

    pub fn start(&mut self) {
        let mut out = Vec::new();
        let now = self.t();
        let report = self.installer.start(now, &mut out).unwrap();
        assert!(report.effects.is_empty());
        self.queue.extend(out.into_iter().map(|o| (INSTALLER, o)));
        self.run();
    }

    pub fn committed_everywhere(&self) -> bool {
        (0..GROUPS.len()).all(|gi| (0..self.n).all(|ri| self.replicas[gi][ri].role().outcome(self.upgrade).is_some()))
    }

    pub fn shares_sent(&self) -> usize {
        self.delivered
            .iter()
            .filter(|(_, o)| matches!(o, Outbound::Send { message: Message::GuardianShare { .. }, .. }))
            .count()
    }
}

/// A value's bytes, as the crate encodes it.
pub fn to_bytes<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let mut buf = vec![0u8; bft_upgrade::wire::encoded_len(value)];
    let len = bft_upgrade::wire::encode(value, &mut buf).unwrap().len();
    buf.truncate(len);
    buf
}
