//! The cluster: who is where, with which public keys (`cluster.json`), and
//! each process's secret keys (`keys/*.key`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use bft_upgrade::crypto::{Code, DeployerKey, PublicKey, ReplicaSecretKey};
use bft_upgrade::step::Peer;
use bft_upgrade::wire::{GroupId, GuardianSet, Membership};
use serde::{Deserialize, Serialize};

/// One replica's public identity.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReplicaInfo {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its box key (pieces are sealed to it), compressed SEC1, hex.
    pub box_key: String,
    /// Its transport signing key, compressed SEC1, hex.
    pub sign_key: String,
    /// Where it serves its counters (Prometheus text format, loopback);
    /// none in configurations from before they existed.
    #[serde(default)]
    pub metrics: Option<SocketAddr>,
}

/// One group.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GroupInfo {
    /// The group id (1-based).
    pub id: u32,
    /// Its replicas, in membership order.
    pub replicas: Vec<ReplicaInfo>,
    /// Groups its application calls (and diffuses to).
    pub neighbors: Vec<u32>,
    /// Its guardians' ids, in share order (empty: replica custody).
    pub guardians: Vec<u32>,
}

/// One guardian.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GuardianInfo {
    /// Its id.
    pub id: u32,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its box key, hex.
    pub box_key: String,
    /// Its transport signing key, hex.
    pub sign_key: String,
    /// Where it serves its counters (Prometheus text format, loopback).
    #[serde(default)]
    pub metrics: Option<SocketAddr>,
}

/// A party without an address (an installer or the operator's client):
/// it dials; only its signing key is known.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DialerInfo {
    /// Its id.
    pub id: u32,
    /// Its transport signing key, hex.
    pub sign_key: String,
}

/// The whole cluster.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Cluster {
    /// The groups.
    pub groups: Vec<GroupInfo>,
    /// The guardians.
    pub guardians: Vec<GuardianInfo>,
    /// Installers (as `Peer::Installer(id)`).
    pub installers: Vec<DialerInfo>,
    /// Operators' clients (status queries; `Peer::Client(id)`).
    pub clients: Vec<DialerInfo>,
    /// The deployer's id and public key (hex).
    pub deployer_id: u32,
    /// The deployer's ECDSA key, hex.
    pub deployer_key: String,
    /// The genesis version code of the deployer's chain, hex.
    pub genesis: String,
    /// AlephBFT unit creation delay.
    pub unit_delay_ms: u64,
    /// The groups' first retry interval (diffusion, guardian fetches).
    pub retry_ms: u64,
    /// Proactive diffusion on or off (piggybacking is always on).
    pub proactive: bool,
    /// How often a group's application calls a neighbor (0: never).
    pub app_interval_ms: u64,
    /// A group changes its AlephBFT session after at most this many rounds
    /// (AlephBFT's rounds are 16-bit: a session cannot outlive 65,535).
    #[serde(default = "default_session_rounds")]
    pub session_rounds: u16,
}

/// Rounds per AlephBFT session by default: about 25 to 50 minutes at a
/// unit every 100 ms.
pub const DEFAULT_SESSION_ROUNDS: u16 = 30_000;

fn default_session_rounds() -> u16 {
    DEFAULT_SESSION_ROUNDS
}

/// The most faulty members `n` replicas (or guardians) tolerate:
/// `n >= 3f + 1`, as the core's `Membership::new` takes it.
pub fn max_faulty(n: usize) -> usize {
    n.saturating_sub(1) / 3
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses hex.
///
/// # Errors
/// For odd length or a non-hex digit.
pub fn unhex(s: &str) -> Result<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        bail!("odd hex length");
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|e| anyhow!("hex: {e}"))).collect()
}

/// A public key from hex.
///
/// # Errors
/// For bad hex or a wrong length.
pub fn public_key(s: &str) -> Result<PublicKey> {
    let bytes: [u8; 33] = unhex(s)?.try_into().map_err(|_| anyhow!("a public key is 33 bytes"))?;
    Ok(PublicKey::from_compressed(bytes))
}

impl Cluster {
    /// Reads `dir/cluster.json`.
    ///
    /// # Errors
    /// When the file is missing or malformed.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("cluster.json");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Writes `dir/cluster.json`.
    ///
    /// # Errors
    /// On I/O errors.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::write(dir.join("cluster.json"), serde_json::to_string_pretty(self)?)?;
        Ok(())
    }

    /// Group `id`.
    ///
    /// # Errors
    /// For an unknown group.
    pub fn group(&self, id: u32) -> Result<&GroupInfo> {
        self.groups.iter().find(|g| g.id == id).ok_or_else(|| anyhow!("no group {id}"))
    }

    /// The group's membership, as pieces name it.
    ///
    /// # Errors
    /// For an unknown group or a bad key.
    pub fn membership(&self, id: u32) -> Result<Membership> {
        let g = self.group(id)?;
        let keys = g.replicas.iter().map(|r| public_key(&r.box_key)).collect::<Result<Vec<_>>>()?;
        Membership::new(GroupId(id), &keys).map_err(|e| anyhow!("membership: {e:?}"))
    }

    /// The group's guardians as a deployer needs them.
    ///
    /// # Errors
    /// For an unknown guardian or a bad key.
    pub fn guardian_set(&self, id: u32) -> Result<Option<GuardianSet>> {
        let g = self.group(id)?;
        if g.guardians.is_empty() {
            return Ok(None);
        }
        let mut members = Vec::new();
        for gid in &g.guardians {
            let info = self.guardian(*gid)?;
            members.push((*gid, public_key(&info.box_key)?));
        }
        Ok(Some(GuardianSet::new(&members).map_err(|e| anyhow!("guardians: {e:?}"))?))
    }

    /// Guardian `id`.
    ///
    /// # Errors
    /// For an unknown guardian.
    pub fn guardian(&self, id: u32) -> Result<&GuardianInfo> {
        self.guardians.iter().find(|g| g.id == id).ok_or_else(|| anyhow!("no guardian {id}"))
    }

    /// The genesis version code.
    ///
    /// # Errors
    /// For bad hex.
    pub fn genesis_code(&self) -> Result<Code> {
        let bytes: [u8; 32] = unhex(&self.genesis)?.try_into().map_err(|_| anyhow!("genesis is 32 bytes"))?;
        Ok(Code::from_bytes(bytes))
    }

    /// A peer's address (if it listens) and transport key.
    pub fn lookup(&self, peer: Peer) -> Option<(Option<SocketAddr>, PublicKey)> {
        let (addr, key) = match peer {
            Peer::Replica { group, index } => {
                let r = self.groups.iter().find(|g| g.id == group.0)?.replicas.get(usize::from(index))?;
                (Some(r.addr), &r.sign_key)
            }
            Peer::Guardian(id) => {
                let g = self.guardians.iter().find(|g| g.id == id)?;
                (Some(g.addr), &g.sign_key)
            }
            Peer::Installer(id) => (None, &self.installers.iter().find(|i| i.id == id)?.sign_key),
            Peer::Client(id) => (None, &self.clients.iter().find(|i| i.id == id)?.sign_key),
            // Deployers run no transport; groups are not one endpoint.
            Peer::Group(_) | Peer::Deployer(_) => return None,
        };
        Some((addr, public_key(key).ok()?))
    }

    /// The replicas of group `id` as peers.
    pub fn replicas_of(&self, id: GroupId) -> Vec<Peer> {
        self.groups
            .iter()
            .find(|g| g.id == id.0)
            .map(|g| (0..g.replicas.len()).map(|i| Peer::Replica { group: id, index: i as u8 }).collect())
            .unwrap_or_default()
    }
}

/// A process's secret keys: the box key (ECIES, ECDH) and the transport
/// signing key, kept apart so no key serves two algorithms.
pub struct Secrets {
    /// Opens this party's boxes in pieces.
    pub box_key: ReplicaSecretKey,
    /// Signs this party's handshakes and consensus units.
    pub sign_key: DeployerKey,
}

/// The file holding a peer's keys.
pub fn key_path(dir: &Path, peer: Peer) -> PathBuf {
    let name = match peer {
        Peer::Replica { group, index } => format!("replica-{}-{}", group.0, index),
        Peer::Guardian(id) => format!("guardian-{id}"),
        Peer::Installer(id) => format!("installer-{id}"),
        Peer::Client(id) => format!("client-{id}"),
        Peer::Group(g) => format!("group-{}", g.0),
        Peer::Deployer(d) => format!("deployer-{}", d.0),
    };
    dir.join("keys").join(format!("{name}.key"))
}

impl Secrets {
    /// Fresh keys.
    pub fn random() -> Self {
        let mut rng = crate::deployer::os_rng();
        Self { box_key: ReplicaSecretKey::random(&mut rng), sign_key: DeployerKey::random(&mut rng) }
    }

    /// Reads a key file (64 bytes, hex: box key then signing key).
    ///
    /// # Errors
    /// When the file is missing or malformed.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let bytes = unhex(text.trim())?;
        let (a, b) = bytes.split_at_checked(32).ok_or_else(|| anyhow!("key file too short"))?;
        let a: [u8; 32] = a.try_into()?;
        let b: [u8; 32] = b.try_into()?;
        Ok(Self {
            box_key: ReplicaSecretKey::from_bytes(&a).map_err(|e| anyhow!("box key: {e:?}"))?,
            sign_key: DeployerKey::from_bytes(&b).map_err(|e| anyhow!("signing key: {e:?}"))?,
        })
    }

    /// Writes a key file (mode 0600).
    ///
    /// # Errors
    /// On I/O errors.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut bytes = self.box_key.to_bytes().to_vec();
        bytes.extend_from_slice(self.sign_key.to_bytes().as_slice());
        write_private(path, hex(&bytes).as_bytes())
    }
}

/// Writes a file readable by its owner only.
///
/// # Errors
/// On I/O errors.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}
