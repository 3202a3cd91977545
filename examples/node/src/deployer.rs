//! The deployer's side: `node init` writes a cluster (topology, keys) and
//! `node deploy` builds an upgrade: a bundle file (the public header and
//! every group's signed piece) and one sealed payload file per group, each
//! piece chained on the version code the deployer's own record holds.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use bft_upgrade::crypto::{Binding, DeployerKey};
use bft_upgrade::deployer::{Deployer, GroupTarget, UpgradePlan};
use bft_upgrade::host::DeployerHost;
use bft_upgrade::host::{seal_payload, Bundle};
use bft_upgrade::wire::{DeployerId, GroupId, ResourceId, UpgradeId};
use chacha20::ChaCha20Rng;
use rand_core::SeedableRng;

use crate::config::{hex, unhex, write_private, Cluster};
use crate::hosts::{assemble, keygen, Party};

use crate::store::Store;

/// A CSPRNG seeded from the operating system.
pub fn os_rng() -> ChaCha20Rng {
    let mut seed = [0u8; 32];
    // getrandom fails only on platforms without an entropy source.
    if getrandom::fill(&mut seed).is_err() {
        tracing::error!("no entropy source");
        std::process::abort();
    }
    ChaCha20Rng::from_seed(seed)
}

/// Reads a bundle file (the host layer's [`Bundle`]).
///
/// # Errors
/// When the file is missing or does not decode.
pub fn load_bundle(path: &Path) -> Result<Bundle> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    crate::frame::decode(&bytes).map_err(|e| anyhow!("{}: {e}", path.display()))
}

/// Where the payload of `upgrade` for `group` lives.
pub fn payload_path(dir: &Path, upgrade: UpgradeId, group: GroupId) -> PathBuf {
    dir.join("payloads").join(hex(&upgrade.0)).join(format!("g{}.bin", group.0))
}

/// Loopback ports for one cluster, each distinct: every port stays bound
/// until the whole cluster is allocated, so the system cannot hand the
/// same one out twice (binding port 0 and closing it at once did, in 2 of
/// 30 fresh clusters).
#[derive(Default)]
struct Ports {
    held: Vec<TcpListener>,
}

impl Ports {
    fn next(&mut self) -> Result<SocketAddr> {
        let l = TcpListener::bind("127.0.0.1:0")?;
        let addr = l.local_addr()?;
        self.held.push(l);
        Ok(addr)
    }
}

/// What `node init` builds.
pub struct Shape {
    /// Groups.
    pub groups: usize,
    /// Replicas per group.
    pub replicas: usize,
    /// Guardians per group (0: replica custody).
    pub guardians: usize,
    /// AlephBFT unit delay.
    pub unit_delay_ms: u64,
    /// Application call interval (0: no application traffic).
    pub app_interval_ms: u64,
    /// Proactive diffusion.
    pub proactive: bool,
    /// Rounds per AlephBFT session.
    pub session_rounds: u16,
}

/// Writes a fresh cluster into `dir`: `cluster.json`, every party's keys,
/// loopback addresses on free ports.
///
/// # Errors
/// On I/O errors.
pub fn init(dir: &Path, shape: &Shape) -> Result<Cluster> {
    if dir.join("cluster.json").exists() {
        bail!("{} already holds a cluster", dir.display());
    }
    std::fs::create_dir_all(dir)?;
    let mut ports = Ports::default();
    let mut parties = Vec::new();
    for g in 1..=shape.groups as u32 {
        for i in 0..u8::try_from(shape.replicas)? {
            parties.push(keygen(dir, Party::Replica(g, i), Some(ports.next()?), Some(ports.next()?))?);
        }
    }
    // Group `i` takes guardians `i..i + K` of the pool (`assemble`).
    let pool = if shape.guardians == 0 { 0 } else { shape.groups + shape.guardians - 1 };
    for k in 1..=pool as u32 {
        parties.push(keygen(dir, Party::Guardian(k), Some(ports.next()?), Some(ports.next()?))?);
    }
    for k in 1..=3 {
        parties.push(keygen(dir, Party::Installer(k), None, None)?);
        parties.push(keygen(dir, Party::Client(k), None, None)?);
    }
    parties.push(keygen(dir, Party::Deployer, None, None)?);
    let cluster = assemble(&parties, shape)?;
    cluster.save(dir)?;
    Ok(cluster)
}

fn seal(plan: &UpgradePlan<'_>, group: GroupId, text: &[u8]) -> Result<(bft_upgrade::crypto::PayloadRef, Vec<u8>)> {
    let key = plan.group_key(group).map_err(|e| anyhow!("{e:?}"))?;
    let binding = Binding::group(plan.header().upgrade, group);
    let mut out = Vec::new();
    let payload = seal_payload(&key, &binding, 4096, &mut &text[..], &mut out)?;
    Ok((payload, out))
}

/// The cluster's deployer, from its key file (only the deployer's host has
/// it).
///
/// # Errors
/// When the key file is missing or not a key.
pub fn load_deployer(dir: &Path, cluster: &Cluster) -> Result<Deployer> {
    let path = dir.join("keys").join("deployer.key");
    let key_hex = std::fs::read_to_string(&path).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let key_bytes: [u8; 32] = unhex(key_hex.trim())?.try_into().map_err(|_| anyhow!("deployer key is 32 bytes"))?;
    Ok(Deployer::new(
        DeployerId(cluster.deployer_id),
        DeployerKey::from_bytes(&key_bytes).map_err(|e| anyhow!("{e:?}"))?,
    ))
}

/// The deployer's record (the host layer's [`DeployerHost`] over redb):
/// its order sequence, every group's version code, and the upgrade in
/// flight. Only the deployer's host has it.
pub type NodeDeployer = DeployerHost<Store, 64>;

/// Opens the deployer's record in `dir` (a fresh one chains from the
/// cluster's genesis code).
///
/// # Errors
/// When the database cannot be opened (another `node deploy`, `install`
/// or `abort` holds it) or read.
pub fn open_deployer(dir: &Path, cluster: &Cluster) -> Result<NodeDeployer> {
    let store = Store::open(&dir.join("deployer").join("state.redb"))?;
    DeployerHost::open(store, "deployer", cluster.genesis_code()?).map_err(|e| anyhow!("deployer record: {e}"))
}

/// Whether `dir` holds the deployer's record (this is the deployer's host).
pub fn has_deployer(dir: &Path) -> bool {
    dir.join("deployer").join("state.redb").exists()
}

/// Builds an upgrade over every group of the cluster in `dir`, each piece
/// on the version code the deployer's record holds for its group: writes
/// the payload files and the bundle, and returns the bundle's path. Needs
/// no running cluster.
///
/// # Errors
/// While the last upgrade is still in flight (install it, or abort it);
/// on I/O or crypto errors.
pub fn deploy(dir: &Path, text: &str) -> Result<PathBuf> {
    deploy_content(dir, Content::Text(text))
}

/// What an upgrade installs at each group.
#[derive(Clone, Copy)]
pub enum Content<'a> {
    /// Text (each group's says which upgrade and group it is).
    Text(&'a str),
    /// The application's next module (WebAssembly bytes), the same for
    /// every group.
    Module(&'a [u8]),
}

/// [`deploy`] of any [`Content`].
///
/// # Errors
/// As [`deploy`].
pub fn deploy_content(dir: &Path, content: Content<'_>) -> Result<PathBuf> {
    let cluster = Cluster::load(dir)?;
    let deployer = load_deployer(dir, &cluster)?;
    let mut host = open_deployer(dir, &cluster)?;
    if let Some(u) = host.pending() {
        let bundle = bundle_path(dir, u);
        bail!(
            "upgrade {} is still in flight: install it (node install {}) or abort it (node abort {})",
            hex(&u.0),
            bundle.display(),
            bundle.display()
        );
    }
    let ids: Vec<GroupId> = cluster.groups.iter().map(|g| GroupId(g.id)).collect();
    let upgrade = host.begin(&mut os_rng(), deployer.id(), &ids).map_err(|e| anyhow!("plan: {e}"))?;
    let plan = host.plan().ok_or_else(|| anyhow!("no plan"))?.map_err(|e| anyhow!("plan: {e}"))?;
    let seq = plan.header().order.seq;
    let mut parts = Vec::new();
    for g in &ids {
        let membership = cluster.membership(g.0)?;
        let guardians = cluster.guardian_set(g.0)?;
        let body = match content {
            Content::Text(text) => format!("{text} (upgrade {seq}, group {})", g.0).into_bytes(),
            Content::Module(bytes) => bytes.to_vec(),
        };
        let (payload, ciphertext) = seal(&plan, *g, &body)?;
        write_private(&payload_path(dir, upgrade, *g), &ciphertext)?;
        parts.push((membership, guardians, payload));
    }
    let targets: Vec<GroupTarget> = parts
        .iter()
        .zip(&ids)
        .map(|((membership, guardians, payload), g)| GroupTarget {
            membership,
            resources: &[ResourceId(1)],
            prev_version: host.prev(*g),
            guardians: guardians.as_ref(),
            payload: *payload,
            next: None,
        })
        .collect();
    // Every group's piece at once, on every core.
    let pieces = plan
        .pieces(&deployer, &targets)
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("piece: {e:?}"))?;
    let groups = parts.iter().zip(&ids).map(|((membership, _, _), g)| (*g, membership.f)).collect();
    let bundle = Bundle { header: plan.header().clone(), groups, pieces };
    let path = bundle_path(dir, upgrade);
    write_private(&path, &crate::frame::encode(&bundle))?;
    Ok(path)
}

/// Where the bundle of `upgrade` lives.
pub fn bundle_path(dir: &Path, upgrade: UpgradeId) -> PathBuf {
    dir.join("bundles").join(format!("{}.bundle", hex(&upgrade.0)))
}
