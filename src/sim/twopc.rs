//! The paper's section 3.3 baseline: the upgrade installed by one
//! distributed transaction, two-phase commit across every group, each group
//! locked from its prepare until its commit.
//!
//! It runs on the same world shape, network faults, latency and
//! application traffic as the diffusing protocol, so the two are measured
//! side by side. A coordinator sends `Prepare(piece)` to every group (ordered
//! there; the group locks), waits for `f + 1` matching votes from each, then
//! sends `Commit` and waits for `f + 1` acknowledgements; it retries on
//! timeouts. An application transaction that calls a locked group (or is
//! issued by one) is blocked. Byzantine replicas are not modelled here: the
//! baseline gets the benefit of the doubt.

use std::collections::{BTreeMap, BinaryHeap};
use std::vec::Vec;

use chacha20::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

use super::world::SimConfig;

/// Wire sizes, in bytes, of the baseline's small messages (a vote, a
/// commit, an acknowledgement: an upgrade id, a group id, a replica index
/// and a tag, as postcard would encode them).
const SMALL_MESSAGE: u64 = 24;

/// The baseline's measurements on one run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TwoPcReport {
    /// Virtual time from the start to the last group's commit, ms.
    pub time_to_install_ms: Option<u64>,
    /// Messages per replica.
    pub messages_per_replica: f64,
    /// Bytes per replica.
    pub bytes_per_replica: f64,
    /// Longest time a group stayed locked, ms.
    pub lock_window_ms: u64,
    /// Share of application transactions in the install window that were
    /// not blocked by a lock.
    pub availability: Option<f64>,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Prepare(usize),
    Vote(usize),
    Commit(usize),
    Ack(usize),
    Retry,
    App(usize),
}

/// The baseline's network: the same drop and jitter as the world's during
/// its fault phase.
struct Net<'a> {
    queue: BinaryHeap<std::cmp::Reverse<(u64, u64, Ev)>>,
    seq: u64,
    msgs: u64,
    bytes: u64,
    rng: &'a mut ChaCha20Rng,
    cfg: &'a SimConfig,
}

impl Net<'_> {
    fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(std::cmp::Reverse((at, self.seq, ev)));
    }

    fn send(&mut self, now: u64, size: u64, ev: Ev) {
        self.msgs += 1;
        self.bytes += size;
        let faulty = now < self.cfg.fault_phase_ms;
        let unit = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        if faulty && unit < self.cfg.network.drop {
            return;
        }
        let jitter = match self.cfg.network.jitter_ms {
            j if faulty && j > 0 => self.rng.next_u64() % (j + 1),
            _ => 0,
        };
        self.push(now + self.cfg.latency_ms + jitter, ev);
    }
}

/// Runs the baseline for the first upgrade of `cfg` (its groups, its piece
/// size), with the same faults and traffic.
pub fn run(cfg: &SimConfig, piece_bytes: u64) -> TwoPcReport {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&cfg.seed.to_le_bytes());
    s[8..12].copy_from_slice(b"2pc!");
    let mut rng = ChaCha20Rng::from_seed(s);
    let Some(upgrade) = cfg.upgrades.first() else { return TwoPcReport::default() };
    let groups: Vec<usize> = upgrade.groups.clone();
    let g = cfg.group_sizes.len();
    let f = |gi: usize| (cfg.group_sizes[gi].saturating_sub(1) / 3) as u32;
    let replicas: u64 = cfg.group_sizes.iter().map(|n| *n as u64).sum();

    let mut net = Net { queue: BinaryHeap::new(), seq: 0, msgs: 0, bytes: 0, rng: &mut rng, cfg };
    let start = upgrade.start_ms;
    let mut locked_at: BTreeMap<usize, u64> = BTreeMap::new();
    let mut unlocked_at: BTreeMap<usize, u64> = BTreeMap::new();
    let mut votes: BTreeMap<usize, u32> = BTreeMap::new();
    let mut acks: BTreeMap<usize, u32> = BTreeMap::new();
    let mut committing = false;
    let (mut blocked, mut done) = (0u64, 0u64);

    for gi in &groups {
        net.send(start, piece_bytes, Ev::Prepare(*gi));
    }
    net.push(start + cfg.retry_ms, Ev::Retry);
    let interval = cfg.app_interval_ms.unwrap_or(10).max(1);
    for gi in 0..g {
        let at = net.rng.next_u64() % interval;
        net.push(at, Ev::App(gi));
    }

    let mut finish = None;
    while let Some(std::cmp::Reverse((now, _, ev))) = net.queue.pop() {
        if now > cfg.deadline_ms || finish.is_some() {
            break;
        }
        match ev {
            Ev::Prepare(gi) => {
                locked_at.entry(gi).or_insert(now);
                // Every replica votes.
                for _ in 0..cfg.group_sizes[gi] {
                    net.send(now, SMALL_MESSAGE, Ev::Vote(gi));
                }
            }
            Ev::Vote(gi) => {
                *votes.entry(gi).or_default() += 1;
                let all = groups.iter().all(|x| votes.get(x).is_some_and(|v| *v > f(*x)));
                if all && !committing {
                    committing = true;
                    for x in &groups {
                        net.send(now, SMALL_MESSAGE, Ev::Commit(*x));
                    }
                }
            }
            Ev::Commit(gi) => {
                unlocked_at.entry(gi).or_insert(now);
                for _ in 0..cfg.group_sizes[gi] {
                    net.send(now, SMALL_MESSAGE, Ev::Ack(gi));
                }
            }
            Ev::Ack(gi) => {
                *acks.entry(gi).or_default() += 1;
                if groups.iter().all(|x| acks.get(x).is_some_and(|a| *a > f(*x))) {
                    finish = unlocked_at.values().max().copied();
                }
            }
            Ev::Retry => {
                // Timeouts: resend what is missing, as a coordinator would.
                for x in &groups {
                    if !committing && votes.get(x).is_none_or(|v| *v <= f(*x)) {
                        net.send(now, piece_bytes, Ev::Prepare(*x));
                    }
                    if committing && acks.get(x).is_none_or(|a| *a <= f(*x)) {
                        net.send(now, SMALL_MESSAGE, Ev::Commit(*x));
                    }
                }
                net.push(now + cfg.retry_ms, Ev::Retry);
            }
            Ev::App(gi) => {
                // A transaction at gi calling a random other group.
                let callee = if g > 1 { (gi + 1 + (net.rng.next_u64() as usize % (g - 1))) % g } else { gi };
                let locked = |x: usize| locked_at.get(&x).is_some_and(|t| *t <= now) && !unlocked_at.contains_key(&x);
                if now >= start {
                    if locked(gi) || locked(callee) {
                        blocked += 1;
                    } else {
                        done += 1;
                    }
                }
                net.push(now + interval, Ev::App(gi));
            }
        }
    }
    let lock_window_ms =
        groups.iter().filter_map(|x| Some(unlocked_at.get(x)?.saturating_sub(*locked_at.get(x)?))).max().unwrap_or(0);
    let total = blocked + done;
    TwoPcReport {
        time_to_install_ms: finish.map(|t| t.saturating_sub(start)),
        messages_per_replica: net.msgs as f64 / replicas.max(1) as f64,
        bytes_per_replica: net.bytes as f64 / replicas.max(1) as f64,
        lock_window_ms,
        availability: (total > 0).then(|| done as f64 / total as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baseline_installs_and_blocks() {
        let mut cfg = SimConfig::simple(1, 6, 4);
        cfg.app_interval_ms = Some(2);
        let r = run(&cfg, 10_000);
        assert!(r.time_to_install_ms.is_some());
        assert!(r.lock_window_ms > 0);
        assert!(r.availability.is_some_and(|a| a < 1.0), "{r:?}");
    }
}
