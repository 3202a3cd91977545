//! A deployer process's bookkeeping: its order sequence, its version chain,
//! and the one upgrade it has in flight, in one record.

use std::string::String;
use std::vec::Vec;

use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::{load, to_bytes, Batch, HostError, Store};
use crate::crypto::Code;
use crate::deployer::{SavedPlan, UpgradePlan, VersionChain};
use crate::error::MisuseError;
use crate::wire::{DeployerId, GroupId, Operation, Outcome, Refusal, UpgradeId};

/// A deployer's state across restarts: the next order sequence number, the
/// version code of every group it upgrades ([`VersionChain`]), and the
/// upgrade it has in flight (its [`SavedPlan`] and group list), written as
/// one record so no crash leaves them out of step.
///
/// One upgrade at a time: [`begin`](Self::begin) refuses a new one until
/// the last has [`finished`](Self::finished) (or was
/// [`aborted`](Self::aborted)), because the next pieces chain on the
/// version code the last one ends with, and a deployer that guesses it
/// (from replicas' answers, or by predicting the outcome) builds pieces a
/// group may refuse for good.
///
/// The record holds the plan's master seed: store it as secret as the
/// deployer's signing key.
///
/// ```
/// use bft_upgrade::crypto::Code;
/// use bft_upgrade::host::{DeployerHost, MemStore};
/// use bft_upgrade::wire::{DeployerId, GroupId, Outcome};
/// # let mut rng = chacha20::ChaCha20Rng::from_seed([1; 32]);
/// # use rand_core::SeedableRng;
///
/// let genesis = Code::from_bytes([7; 32]);
/// let groups = [GroupId(1), GroupId(2)];
/// let mut host: DeployerHost<MemStore> = DeployerHost::open(MemStore::default(), "deployer", genesis).unwrap();
/// let upgrade = host.begin(&mut rng, DeployerId(1), &groups).unwrap();
/// let plan = host.plan().unwrap().unwrap();
/// // ... build each piece on `host.prev(group)`, hand the bundle to an
/// // installer, and when it reports the outcome with its code:
/// let tau = plan.trigger_code().clone();
/// drop(plan);
/// host.finished(upgrade, Outcome::Committed, &tau).unwrap();
/// assert_eq!(host.prev(GroupId(1)), &tau);
/// assert!(host.pending().is_none());
/// ```
pub struct DeployerHost<S, const G: usize = 1024> {
    store: S,
    key: String,
    record: Record<G>,
}

/// What the deployer host stores.
#[derive(Clone, Serialize, Deserialize)]
struct Record<const G: usize> {
    next_seq: u64,
    chain: VersionChain<G>,
    pending: Option<Pending>,
    last: Option<(UpgradeId, Outcome)>,
}

/// The upgrade in flight.
#[derive(Clone, Serialize, Deserialize)]
struct Pending {
    saved: SavedPlan,
    groups: Vec<GroupId>,
}

impl<S: Store, const G: usize> DeployerHost<S, G> {
    /// The deployer stored under `key` in `store`, or a fresh one whose
    /// groups are all at `genesis` (the code their configurations hold).
    ///
    /// # Errors
    /// When the stored record cannot be read.
    pub fn open(store: S, key: &str, genesis: Code) -> Result<Self, HostError<S::Error>> {
        let record = load(&store, key)?.unwrap_or(Record {
            next_seq: 1,
            chain: VersionChain::new(genesis),
            pending: None,
            last: None,
        });
        Ok(Self { store, key: key.into(), record })
    }

    store_accessors!();

    /// The version code `group`'s next piece must be built on.
    pub fn prev(&self, group: GroupId) -> &Code {
        self.record.chain.prev(group)
    }

    /// The chain of version codes.
    pub fn chain(&self) -> &VersionChain<G> {
        &self.record.chain
    }

    /// The upgrade in flight, if any.
    pub fn pending(&self) -> Option<UpgradeId> {
        self.record.pending.as_ref().map(|p| p.saved.upgrade)
    }

    /// The last upgrade that finished, and how.
    pub fn last(&self) -> Option<(UpgradeId, Outcome)> {
        self.record.last
    }

    /// Starts a new upgrade by `deployer` over `groups` (strictly
    /// increasing) with the next order sequence number, and stores its plan
    /// before returning its id: build the pieces from [`plan`](Self::plan).
    ///
    /// # Errors
    /// [`MisuseError::WrongState`] while another upgrade is in flight;
    /// [`MisuseError::BadArgument`] for an empty or unsorted group list;
    /// [`HostError::Store`] when the record cannot be written (nothing
    /// changed then).
    pub fn begin<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        deployer: DeployerId,
        groups: &[GroupId],
    ) -> Result<UpgradeId, HostError<S::Error>> {
        if self.record.pending.is_some() {
            return Err(MisuseError::WrongState.into());
        }
        let seq = self.record.next_seq;
        let next_seq = seq.checked_add(1).ok_or(MisuseError::OutOfRange)?;
        let plan = UpgradePlan::new(rng, deployer, seq, groups)?;
        let mut record = self.record.clone();
        record.next_seq = next_seq;
        record.pending = Some(Pending { saved: plan.saved(), groups: groups.to_vec() });
        let upgrade = plan.header().upgrade;
        self.write(record)?;
        Ok(upgrade)
    }

    /// The plan of the upgrade in flight, rebuilt from its record (the
    /// same `τ`, `c` and byte-identical pieces after any restart).
    ///
    /// # Errors
    /// [`MisuseError::BadArgument`] when the stored plan does not rebuild
    /// (a record altered under the host).
    pub fn plan(&self) -> Option<Result<UpgradePlan<'_>, MisuseError>> {
        self.record.pending.as_ref().map(|p| UpgradePlan::restore(&p.saved, &p.groups))
    }

    /// The upgrade in flight finished with `outcome`, proven by `code` (what
    /// the installer decided with): every group of the plan is now at that
    /// code. Reporting the last finished upgrade again with the same
    /// outcome is a no-op.
    ///
    /// # Errors
    /// [`MisuseError::WrongState`] for an upgrade that is not in flight;
    /// [`MisuseError::BadArgument`] when `code` is not the plan's code for
    /// `outcome` (compared in constant time); the record is then unchanged.
    pub fn finished(&mut self, upgrade: UpgradeId, outcome: Outcome, code: &Code) -> Result<(), HostError<S::Error>> {
        if self.record.last == Some((upgrade, outcome)) && self.record.pending.is_none() {
            return Ok(());
        }
        let mut record = self.record.clone();
        {
            let plan = self.in_flight(upgrade)?;
            if !bool::from(plan.code(outcome).ct_eq(code)) {
                return Err(MisuseError::BadArgument.into());
            }
            record.chain.advance(&plan, outcome).map_err(MisuseError::Capacity)?;
        }
        record.pending = None;
        record.last = Some((upgrade, outcome));
        self.write(record)
    }

    /// `AbortInstall(c)` for the upgrade in flight, given the refusal that
    /// makes it sound: a group refused the piece for good
    /// ([`Refusal::is_permanent`]), so it never releases its `s_g` and `τ`
    /// can never be assembled. Before that an installer may already hold
    /// `τ`, and `c` from the deployer would split the outcome.
    ///
    /// Submit the operation to every group of the plan, each time after
    /// the group's piece, then record where it took with
    /// [`aborted`](Self::aborted).
    ///
    /// # Errors
    /// [`MisuseError::WrongState`] for an upgrade that is not in flight or
    /// a refusal that may still change ([`Refusal::Busy`],
    /// [`Refusal::OutOfOrder`]).
    pub fn abort(&self, upgrade: UpgradeId, refusal: Refusal) -> Result<Operation, HostError<S::Error>> {
        if !refusal.is_permanent() {
            return Err(MisuseError::WrongState.into());
        }
        Ok(self.in_flight(upgrade)?.abort())
    }

    /// The deployer's own abort of the upgrade in flight has finished:
    /// the groups in `held` held the piece and are now at `c`; the others
    /// refused it and stay where they were.
    ///
    /// # Errors
    /// [`MisuseError::WrongState`] for an upgrade that is not in flight;
    /// [`MisuseError::BadArgument`] for a group outside its plan; the
    /// record is then unchanged.
    pub fn aborted(&mut self, upgrade: UpgradeId, held: &[GroupId]) -> Result<(), HostError<S::Error>> {
        let mut record = self.record.clone();
        {
            let plan = self.in_flight(upgrade)?;
            if held.iter().any(|g| plan.groups().binary_search(g).is_err()) {
                return Err(MisuseError::BadArgument.into());
            }
            for g in held {
                record.chain.record(*g, plan.cancel_code()).map_err(MisuseError::Capacity)?;
            }
        }
        record.pending = None;
        record.last = Some((upgrade, Outcome::Aborted));
        self.write(record)
    }

    /// Records `group`'s version code as the group itself reports it, for
    /// a deployer whose record fell behind (restored from an old backup:
    /// groups refuse its pieces as [`Refusal::Replayed`]). Take a code only
    /// from enough of the group's replicas that a correct one is among
    /// them, and only while no upgrade of this deployer is in flight there.
    ///
    /// # Errors
    /// [`MisuseError::WrongState`] while an upgrade is in flight;
    /// [`MisuseError::Capacity`] past `G` groups.
    pub fn learned(&mut self, group: GroupId, code: &Code) -> Result<(), HostError<S::Error>> {
        if self.record.pending.is_some() {
            return Err(MisuseError::WrongState.into());
        }
        if self.prev(group) == code {
            return Ok(());
        }
        let mut record = self.record.clone();
        record.chain.record(group, code).map_err(MisuseError::Capacity)?;
        self.write(record)
    }

    fn in_flight(&self, upgrade: UpgradeId) -> Result<UpgradePlan<'_>, MisuseError> {
        match self.plan() {
            Some(plan) if self.pending() == Some(upgrade) => plan,
            _ => Err(MisuseError::WrongState),
        }
    }

    fn write(&mut self, record: Record<G>) -> Result<(), HostError<S::Error>> {
        let mut batch = Batch::new();
        batch.put(self.key.clone(), to_bytes(&record));
        self.store.commit(batch).map_err(HostError::Store)?;
        self.record = record;
        Ok(())
    }
}
