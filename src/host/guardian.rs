//! A guardian's host: write the release, then let the shares out.

use std::format;
use std::vec::Vec;

use super::{hex, load, route, to_bytes, Batch, Faults, HostError, Store, Transport};
use crate::crypto::{ReplicaSecretKey, ShareKind};
use crate::guardian::{Guardian, GuardianEffect};
use crate::step::{Instant, Peer, Step};
use crate::wire::{GroupId, Message, Piece, PieceCrypto, UpgradeId, WithKey};

/// The record holding the role.
const ROLE: &str = "guardian/role";
/// The release log: `guardian/release/<upgrade hex>/<group>/<kind>` holds
/// the host's time of the release (8 bytes, little-endian ms), written in
/// the batch that records the release in the role.
pub(crate) const RELEASE: &str = "guardian/release/";

/// What one input to a guardian produced for the host's log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuardianReport {
    /// Peers seen misbehaving.
    pub faults: Faults,
    /// Pieces not kept because every record slot holds a release (see
    /// [`GuardianEffect::Busy`]): retire finished upgrades.
    pub busy: Vec<(UpgradeId, GroupId)>,
}

/// One guardian and its store.
///
/// A piece is written when it arrives. On a [`GuardianEffect::Persist`] the
/// state is written with a release-log row, and only after the commit does
/// the host call [`Guardian::persisted`] and send the shares. Other
/// messages (share requests that release nothing, learned outcomes) are not
/// written on their own: after a crash the replicas' retries ask again.
/// Reopened after a crash, the guardian holds exactly the releases that
/// were written.
pub struct GuardianHost<S, const R: usize> {
    store: S,
    role: Guardian<R>,
    /// Planted bug `GuardianForgets`: once a release happened, nothing is
    /// written any more.
    #[cfg(feature = "planted-bugs")]
    forgets: Option<bool>,
}

impl<S: Store, const R: usize> GuardianHost<S, R> {
    /// The guardian stored in `store`, or `fresh()` if it holds none.
    ///
    /// # Errors
    /// When the stored role cannot be read.
    pub fn open(store: S, fresh: impl FnOnce() -> Guardian<R>) -> Result<Self, HostError<S::Error>> {
        let mut store = store;
        let role = match load(&store, ROLE)? {
            Some(role) => role,
            None => {
                // Written at once, so a failed write can always roll back.
                let role = fresh();
                let mut batch = Batch::new();
                batch.put(ROLE, to_bytes(&role));
                store.commit(batch).map_err(HostError::Store)?;
                role
            }
        };
        Ok(Self {
            store,
            role,
            #[cfg(feature = "planted-bugs")]
            forgets: None,
        })
    }

    /// Crash and restart: reads the guardian back from the store (what was
    /// written, and nothing else), or `fresh()` if nothing was.
    ///
    /// # Errors
    /// When the stored role cannot be read (the host is then unchanged).
    pub fn reopen(&mut self, fresh: impl FnOnce() -> Guardian<R>) -> Result<(), HostError<S::Error>> {
        self.role = load(&self.store, ROLE)?.unwrap_or_else(fresh);
        Ok(())
    }

    /// The role (read-only).
    pub fn role(&self) -> &Guardian<R> {
        &self.role
    }

    store_accessors!();

    /// Plants `GuardianForgets` (tests of the checkers only).
    #[cfg(feature = "planted-bugs")]
    pub fn plant(&mut self, bug: crate::planted::Planted) {
        if bug == crate::planted::Planted::GuardianForgets {
            self.forgets = Some(false);
        }
    }

    /// A piece a replica's host forwarded ([`Guardian::handle_piece`]).
    ///
    /// # Errors
    /// [`HostError::Store`] when the write fails (nothing sent).
    pub fn piece(
        &mut self,
        now: Instant,
        from: Peer,
        piece: &Piece,
        key: &ReplicaSecretKey,
        transport: &mut impl Transport,
    ) -> Result<GuardianReport, HostError<S::Error>> {
        self.piece_with(now, from, piece, &mut WithKey(key), transport)
    }

    /// [`piece`](Self::piece) with the crypto done by `crypto`.
    ///
    /// # Errors
    /// As [`piece`](Self::piece).
    pub fn piece_with(
        &mut self,
        now: Instant,
        from: Peer,
        piece: &Piece,
        crypto: &mut impl PieceCrypto,
        transport: &mut impl Transport,
    ) -> Result<GuardianReport, HostError<S::Error>> {
        let step = self.role.handle_piece_with(now, from, piece, crypto);
        self.carry(now, step, true, transport)
    }

    /// A message from a replica ([`Guardian::handle_message`]).
    ///
    /// # Errors
    /// [`HostError::Store`] when the write fails: nothing is sent and the
    /// role is rolled back to its last written state.
    pub fn message(
        &mut self,
        now: Instant,
        from: Peer,
        message: &Message,
        transport: &mut impl Transport,
    ) -> Result<GuardianReport, HostError<S::Error>> {
        let members = |role: &Guardian<R>| role.config().groups.iter().map(|g| g.members).collect::<Vec<_>>();
        let before = members(&self.role);
        let step = self.role.handle_message(now, from, message);
        // A release must be durable before what follows it (`carry` writes
        // every release); a request that released nothing is asked again
        // by the replica's retries after a crash, so it is not written on
        // its own. A membership change learned with a commit is written: a
        // guardian that forgot it would refuse the group's later pieces,
        // and nobody tells it again.
        let followed = members(&self.role) != before;
        self.carry(now, step, followed, transport)
    }

    /// Takes `group`'s new membership digest ([`Guardian::follow`]) and
    /// writes the role if that changed it (each replica of the group may
    /// tell the same change); returns whether it guards `group`.
    ///
    /// # Errors
    /// [`HostError::Store`] when the write fails.
    pub fn follow(&mut self, group: GroupId, members: crate::crypto::Digest) -> Result<bool, HostError<S::Error>> {
        let known = self.role.config().groups.iter().any(|g| g.group == group && g.members == members);
        let guards = self.role.follow(group, members);
        if guards && !known {
            let mut batch = Batch::new();
            batch.put(ROLE, to_bytes(&self.role));
            self.write(batch)?;
        }
        Ok(guards)
    }

    /// Forgets `upgrade` ([`Guardian::retire`]) and its release-log rows.
    ///
    /// # Errors
    /// [`HostError::Store`] when the write fails.
    pub fn retire(&mut self, upgrade: UpgradeId) -> Result<(), HostError<S::Error>> {
        self.role.retire(upgrade);
        let mut batch = Batch::new();
        batch.put(ROLE, to_bytes(&self.role));
        self.drop_rows(&mut batch, upgrade)?;
        self.write(batch)
    }

    /// A deployer's [`Retirement`](crate::wire::Retirement) from `from`
    /// ([`Guardian::handle_retirement`]): a genuine one forgets the upgrade
    /// and its release-log rows in one write; a forged one is a fault in
    /// the report and changes nothing.
    ///
    /// # Errors
    /// [`HostError::Store`] when the write fails (the role is then back to
    /// what is stored).
    pub fn retirement(
        &mut self,
        now: Instant,
        from: Peer,
        retirement: &crate::wire::Retirement,
    ) -> Result<GuardianReport, HostError<S::Error>> {
        let step = self.role.handle_retirement(from, retirement);
        self.carry(now, step, false, &mut Vec::new())
    }

    /// Deletes `upgrade`'s release-log rows in `batch`.
    fn drop_rows(&self, batch: &mut Batch, upgrade: UpgradeId) -> Result<(), HostError<S::Error>> {
        for key in self.store.list(&format!("{RELEASE}{}/", hex(&upgrade.0))).map_err(HostError::Store)? {
            batch.delete(key);
        }
        Ok(())
    }

    fn carry(
        &mut self,
        now: Instant,
        step: Step<GuardianEffect>,
        write: bool,
        transport: &mut impl Transport,
    ) -> Result<GuardianReport, HostError<S::Error>> {
        let faults = Faults { faults: step.faults.iter().cloned().collect(), dropped: step.faults_dropped };
        let mut released = Vec::new();
        let mut busy = Vec::new();
        let mut retired = Vec::new();
        for effect in step.effects.iter().cloned() {
            match effect {
                GuardianEffect::Persist { upgrade, group, kind } => released.push((upgrade, group, kind)),
                GuardianEffect::Busy { upgrade, group } => busy.push((upgrade, group)),
                GuardianEffect::Retired { upgrade } => retired.push(upgrade),
            }
        }
        #[cfg(feature = "planted-bugs")]
        if let Some(f) = &mut self.forgets {
            *f |= !released.is_empty();
        }
        // Every release is written; `write` asks for a write without one.
        if write || !released.is_empty() || !retired.is_empty() {
            let mut batch = Batch::new();
            batch.put(ROLE, to_bytes(&self.role));
            for upgrade in &retired {
                self.drop_rows(&mut batch, *upgrade)?;
            }
            for (upgrade, group, kind) in &released {
                let kind_code = match kind {
                    ShareKind::Secret => 0,
                    ShareKind::Cancel => 1,
                };
                let key = format!("{RELEASE}{}/{}/{kind_code}", hex(&upgrade.0), group.0);
                batch.put(key, to_bytes(&now.0));
            }
            self.write(batch)?;
        }
        route(&step.messages, transport);
        for (upgrade, group, _) in released {
            let after = self.role.persisted(now, upgrade, group);
            route(&after.messages, transport);
        }
        Ok(GuardianReport { faults, busy })
    }

    fn write(&mut self, batch: Batch) -> Result<(), HostError<S::Error>> {
        #[cfg(feature = "planted-bugs")]
        if self.forgets == Some(true) {
            return Ok(());
        }
        if let Err(e) = self.store.commit(batch) {
            // The role ran ahead of its store (a release it must not act
            // on unwritten): back to what is durable, as after a crash; the
            // replicas ask again.
            if let Ok(Some(role)) = load(&self.store, ROLE) {
                self.role = role;
            }
            return Err(HostError::Store(e));
        }
        Ok(())
    }
}

/// One row of a guardian's release log: `kind` was released for `group`
/// and `upgrade` at host time `at` (ms).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Release {
    /// The upgrade.
    pub upgrade: UpgradeId,
    /// The group.
    pub group: GroupId,
    /// The kind released.
    pub kind: ShareKind,
    /// The host's time of the write, in ms.
    pub at: u64,
}

/// The release log a [`GuardianHost`] wrote into `store` (for audits and
/// checkers; the guardian need not run).
///
/// # Errors
/// When the store cannot be read or a row is not one the host writes.
pub fn releases<S: Store>(store: &S) -> Result<Vec<Release>, HostError<S::Error>> {
    let mut out = Vec::new();
    for key in store.list(RELEASE).map_err(HostError::Store)? {
        let corrupt = || HostError::Corrupt { key: key.clone(), error: crate::error::DecodeError::Malformed };
        let rest = key.strip_prefix(RELEASE).ok_or_else(corrupt)?;
        let mut parts = rest.split('/');
        let (Some(u), Some(g), Some(k), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(corrupt());
        };
        let upgrade = super::unhex16(u).map(UpgradeId).ok_or_else(corrupt)?;
        let group = g.parse().map(GroupId).map_err(|_| corrupt())?;
        let kind = match k {
            "0" => ShareKind::Secret,
            "1" => ShareKind::Cancel,
            _ => return Err(corrupt()),
        };
        let bytes = store.get(&key).map_err(HostError::Store)?.unwrap_or_default();
        let at = crate::wire::decode(&bytes).map_err(|error| HostError::Corrupt { key: key.clone(), error })?;
        out.push(Release { upgrade, group, kind, at });
    }
    Ok(out)
}
