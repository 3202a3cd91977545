//! A cluster spread over hosts (issue 17): each party's keys are made on
//! its own host (`node keygen`), which prints only the public half; the
//! cluster's configuration is assembled from those public lines
//! (`node assemble`), so no secret ever leaves the host it was made on.
//! `node init` makes every party's keys in one directory and assembles
//! them the same way.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use bft_upgrade::crypto::DeployerKey;
use bft_upgrade::step::Peer;
use bft_upgrade::wire::GroupId;
use serde::{Deserialize, Serialize};

use crate::cluster::ProcessConfig;
use crate::config::{hex, key_path, write_private, Cluster, DialerInfo, GroupInfo, GuardianInfo, ReplicaInfo, Secrets};
use crate::deployer::{os_rng, Shape};

/// A party of the cluster, by the name its files carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Party {
    /// Replica `index` of group `group`: `replica-G-I`.
    Replica(u32, u8),
    /// `guardian-K`.
    Guardian(u32),
    /// `installer-K`.
    Installer(u32),
    /// `client-K` (an operator's status queries).
    Client(u32),
    /// `deployer`: the only holder of the deployer's signing key.
    Deployer,
}

impl std::str::FromStr for Party {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || anyhow!("{s:?} is not a party (replica-G-I, guardian-K, installer-K, client-K or deployer)");
        if s == "deployer" {
            return Ok(Self::Deployer);
        }
        let (kind, rest) = s.split_once('-').ok_or_else(bad)?;
        let id = |t: &str| t.parse::<u32>().ok().filter(|k| *k > 0).ok_or_else(bad);
        match kind {
            "replica" => {
                let (g, i) = rest.split_once('-').ok_or_else(bad)?;
                Ok(Self::Replica(id(g)?, i.parse().map_err(|_| bad())?))
            }
            "guardian" => Ok(Self::Guardian(id(rest)?)),
            "installer" => Ok(Self::Installer(id(rest)?)),
            "client" => Ok(Self::Client(id(rest)?)),
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for Party {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Replica(g, i) => write!(f, "replica-{g}-{i}"),
            Self::Guardian(k) => write!(f, "guardian-{k}"),
            Self::Installer(k) => write!(f, "installer-{k}"),
            Self::Client(k) => write!(f, "client-{k}"),
            Self::Deployer => write!(f, "deployer"),
        }
    }
}

/// What `node keygen` prints: a party's public keys and where it listens.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PublicParty {
    /// The party's name ([`Party`]).
    pub party: String,
    /// Where it listens (replicas and guardians).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<SocketAddr>,
    /// Where it serves its counters (replicas and guardians, optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<SocketAddr>,
    /// Its signing key (transport and consensus; the deployer's pieces).
    pub sign_key: String,
    /// The key its boxes in pieces are sealed to (replicas and guardians).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub box_key: Option<String>,
}

/// Makes `party`'s keys in `dir` (its host's cluster directory), with what
/// it needs to start there: a replica's data directory marked as never run
/// and the process configuration `node replica` / `node guardian` reads.
/// Returns the public half.
///
/// # Errors
/// When the party's key already exists (keys are never replaced: a new key
/// is a new party), when a listening party has no address, or on I/O
/// errors.
pub fn keygen(dir: &Path, party: Party, addr: Option<SocketAddr>, metrics: Option<SocketAddr>) -> Result<PublicParty> {
    let listens = matches!(party, Party::Replica(..) | Party::Guardian(_));
    if listens && addr.is_none() {
        bail!("{party} listens: give its address");
    }
    if !listens && (addr.is_some() || metrics.is_some()) {
        bail!("{party} does not listen: it takes no address");
    }
    let path = match party {
        Party::Replica(g, i) => key_path(dir, Peer::Replica { group: GroupId(g), index: i }),
        Party::Guardian(k) => key_path(dir, Peer::Guardian(k)),
        Party::Installer(k) => key_path(dir, Peer::Installer(k)),
        Party::Client(k) => key_path(dir, Peer::Client(k)),
        Party::Deployer => dir.join("keys").join("deployer.key"),
    };
    if path.exists() {
        bail!("{} exists: {party}'s keys are made once", path.display());
    }
    let name = party.to_string();
    if party == Party::Deployer {
        let key = DeployerKey::random(&mut os_rng());
        write_private(&path, hex(key.to_bytes().as_slice()).as_bytes())?;
        let sign_key = hex(&key.public_key().to_compressed());
        return Ok(PublicParty { party: name, addr: None, metrics: None, sign_key, box_key: None });
    }
    let s = Secrets::random();
    s.save(&path)?;
    match party {
        Party::Replica(g, i) => {
            // Never run yet: an empty database here is genesis, not a wipe.
            let data = dir.join("data").join(&name);
            std::fs::create_dir_all(&data)?;
            std::fs::write(data.join(crate::replica::FRESH), b"")?;
            ProcessConfig::write(&dir.canonicalize()?, &name, Some(g), u32::from(i))?;
        }
        Party::Guardian(k) => {
            ProcessConfig::write(&dir.canonicalize()?, &name, None, k)?;
        }
        _ => {}
    }
    Ok(PublicParty {
        party: name,
        addr,
        metrics,
        sign_key: hex(&s.sign_key.public_key().to_compressed()),
        box_key: listens.then(|| hex(&s.box_key.public_key().to_compressed())),
    })
}

/// Ids `1..=n` (or indices `0..n`), each once: the parties of one kind.
fn contiguous<T>(kind: &str, items: &BTreeMap<u32, T>, first: u32) -> Result<()> {
    for (want, have) in (first..).zip(items.keys()) {
        if want != *have {
            bail!("{kind} {want} is missing (ids run from {first} without gaps)");
        }
    }
    Ok(())
}

/// The cluster's configuration from its parties' public lines: groups of
/// the replicas named `replica-G-*`, in a ring of calls; each group's
/// `guardians` (per group) taken from the pool in turn, so neighbouring
/// groups share guardians; the deployer's key; a fresh genesis code.
/// `shape`'s counts are not used: the parties are the counts.
///
/// # Errors
/// For a party named twice or missing from a run of ids, a group smaller
/// than 4 replicas or with a different size, a pool smaller than
/// `guardians`, no deployer or installer, or a public line without what
/// its party needs.
pub fn assemble(parties: &[PublicParty], shape: &Shape) -> Result<Cluster> {
    let mut replicas: BTreeMap<u32, BTreeMap<u32, ReplicaInfo>> = BTreeMap::new();
    let mut guardians = BTreeMap::new();
    let (mut installers, mut clients) = (BTreeMap::new(), BTreeMap::new());
    let mut deployer = None;
    for p in parties {
        let party: Party = p.party.parse()?;
        let addr = || p.addr.ok_or_else(|| anyhow!("{party} has no address"));
        let box_key = || p.box_key.clone().ok_or_else(|| anyhow!("{party} has no box key"));
        let fresh = match party {
            Party::Replica(g, i) => replicas
                .entry(g)
                .or_default()
                .insert(
                    u32::from(i),
                    ReplicaInfo {
                        addr: addr()?,
                        box_key: box_key()?,
                        sign_key: p.sign_key.clone(),
                        metrics: p.metrics,
                    },
                )
                .is_none(),
            Party::Guardian(id) => guardians
                .insert(
                    id,
                    GuardianInfo {
                        id,
                        addr: addr()?,
                        box_key: box_key()?,
                        sign_key: p.sign_key.clone(),
                        metrics: p.metrics,
                    },
                )
                .is_none(),
            Party::Installer(id) => installers.insert(id, DialerInfo { id, sign_key: p.sign_key.clone() }).is_none(),
            Party::Client(id) => clients.insert(id, DialerInfo { id, sign_key: p.sign_key.clone() }).is_none(),
            Party::Deployer => deployer.replace(p.sign_key.clone()).is_none(),
        };
        if !fresh {
            bail!("{party} is named twice");
        }
    }
    let deployer_key = deployer.ok_or_else(|| anyhow!("no deployer"))?;
    if installers.is_empty() {
        bail!("no installer");
    }
    contiguous("group", &replicas, 1)?;
    contiguous("guardian", &guardians, 1)?;
    contiguous("installer", &installers, 1)?;
    contiguous("client", &clients, 1)?;
    let k = shape.guardians;
    if k > guardians.len() {
        bail!("{k} guardians per group from a pool of {}", guardians.len());
    }
    let count = replicas.len();
    let size = replicas.values().next().map_or(0, BTreeMap::len);
    let mut groups = Vec::new();
    for (gi, (id, members)) in replicas.into_iter().enumerate() {
        contiguous(&format!("replica of group {id}, index"), &members, 0)?;
        if members.len() < 4 || members.len() != size {
            bail!("group {id} has {} replicas: every group has the same number, at least 4", members.len());
        }
        // A ring: each group calls the next and is called by the previous.
        let mut neighbors = Vec::new();
        if count > 1 {
            neighbors.push(((gi + 1) % count) as u32 + 1);
            let prev = ((gi + count - 1) % count) as u32 + 1;
            if !neighbors.contains(&prev) {
                neighbors.push(prev);
            }
        }
        let custody = (0..k).map(|j| ((gi + j) % guardians.len()) as u32 + 1).collect();
        groups.push(GroupInfo { id, replicas: members.into_values().collect(), neighbors, guardians: custody });
    }
    let mut genesis = [0u8; 32];
    rand_core::Rng::fill_bytes(&mut os_rng(), &mut genesis);
    Ok(Cluster {
        groups,
        guardians: guardians.into_values().collect(),
        installers: installers.into_values().collect(),
        clients: clients.into_values().collect(),
        deployer_id: 1,
        deployer_key,
        genesis: hex(&genesis),
        unit_delay_ms: shape.unit_delay_ms,
        retry_ms: 500,
        proactive: shape.proactive,
        app_interval_ms: shape.app_interval_ms,
        session_rounds: shape.session_rounds,
    })
}

/// Reads public lines (one JSON object a line, as `node keygen` prints
/// them; blank lines skipped).
///
/// # Errors
/// For a line that is not a public party, naming its number.
pub fn read_public(text: &str, source: &str) -> Result<Vec<PublicParty>> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| serde_json::from_str(l).with_context(|| format!("{source} line {}", n + 1)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn party_names_read_back_and_bad_ones_are_refused() {
        for name in ["replica-1-0", "replica-12-3", "guardian-7", "installer-1", "client-2", "deployer"] {
            assert_eq!(name.parse::<Party>().unwrap().to_string(), name);
        }
        for bad in ["replica-1", "replica-0-1", "guardian-0", "guardian-x", "node-1", "", "replica-1-300"] {
            assert!(bad.parse::<Party>().is_err(), "{bad}");
        }
    }
}
