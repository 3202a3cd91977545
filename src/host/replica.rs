//! A replica's host: the role, its pieces and its outbound items.

use std::boxed::Box;
use std::format;
use std::string::String;
use std::vec::Vec;

use super::{hex, load, route, to_bytes, unhex16, Batch, Faults, HostError, Outbound, Store, Transport};
use crate::crypto::ReplicaSecretKey;
use crate::group::{GroupConfig, GroupEffect, GroupReplica, ReplicatedState, TxnId, Verdict};
use crate::step::{Instant, Peer, Step};
use crate::wire::{
    Attachment, ClientCall, ClientReply, GroupId, Message, Operation, Piece, PieceCrypto, PieceHeader, UpgradeId,
    WithKey,
};

/// The record holding the role.
const ROLE: &str = "replica/role";
/// Pieces are named `replica/piece/<upgrade id in hex>`.
const PIECE: &str = "replica/piece/";

/// One replica, its store and the items waiting for the next
/// [`flush`](Self::flush).
///
/// Call the input methods in the order the host sees inputs (ordered
/// operations in the agreed order), each returning what the application
/// must do; then `flush` once per batch of inputs: it commits the role,
/// the pieces it took (and deletes those it no longer holds) and the
/// application's own writes in one [`Batch`], and only then hands the
/// outbound items to the transport. Nothing leaves before its state is
/// written, and after a crash [`open`](Self::open) carries on from the
/// last flush: inputs since then were never acknowledged to anyone.
///
/// The host handles `ForwardPiece` itself (from the pieces it keeps); the
/// application sees `Apply`, `Discard`, `AbortTransaction` and
/// `RestartTransaction`.
pub struct ReplicaHost<S> {
    store: S,
    role: GroupReplica,
    /// Upgrades whose piece the store holds, as of the last flush.
    stored: Vec<UpgradeId>,
    /// Pieces taken since the last flush.
    taken: Vec<Piece>,
    out: Vec<Outbound>,
    dirty: bool,
}

/// What one input asks of the application.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaReport {
    /// `Apply`, `Discard`, `AbortTransaction`, `RestartTransaction`, in
    /// order (never `ForwardPiece`: the host did that).
    pub effects: Vec<GroupEffect>,
    /// Peers seen misbehaving.
    pub faults: Faults,
    /// The step's lost outputs (always 0; see [`Step::lost`]).
    pub lost: u32,
}

impl<S: Store> ReplicaHost<S> {
    /// The replica stored in `store`, or `fresh()` if it holds none.
    ///
    /// # Errors
    /// [`HostError::Store`] or [`HostError::Corrupt`] when the stored role
    /// cannot be read; [`HostError::Misuse`] from `fresh`.
    pub fn open(
        store: S,
        fresh: impl FnOnce() -> Result<GroupReplica, crate::error::MisuseError>,
    ) -> Result<Self, HostError<S::Error>> {
        let mut store = store;
        let role = match load(&store, ROLE)? {
            Some(role) => role,
            None => {
                // Written at once: a crash before the first flush reopens
                // this same replica.
                let role = fresh()?;
                let mut batch = Batch::new();
                batch.put(ROLE, to_bytes(&role));
                store.commit(batch).map_err(HostError::Store)?;
                role
            }
        };
        let stored = stored_pieces(&store)?;
        Ok(Self { store, role, stored, taken: Vec::new(), out: Vec::new(), dirty: false })
    }

    /// State transfer for a wiped, lagging or new replica: replica `me` of
    /// `config`'s group built from `state` (which the host trusts: `f + 1`
    /// peers' matching digests, or a certified checkpoint) and the pieces
    /// of its held upgrades ([`GroupReplica::transfer`]), written to `store`
    /// at once with those pieces (stale ones deleted). The report holds
    /// the faults found (a box that does not open for this replica).
    ///
    /// # Errors
    /// [`HostError::Misuse`] from `transfer` (nothing is written then);
    /// [`HostError::Store`] when the store cannot be read or written.
    pub fn rejoin(
        store: S,
        config: GroupConfig,
        me: u8,
        state: &ReplicatedState,
        pieces: &[Piece],
        crypto: &mut impl PieceCrypto,
    ) -> Result<(Self, ReplicaReport), HostError<S::Error>> {
        let find = |u: UpgradeId| pieces.iter().find(|p| p.header.upgrade == u);
        let (role, step) = GroupReplica::transfer(config, me, state, find, crypto)?;
        let stored = stored_pieces(&store)?;
        let taken = state.held_upgrades().filter_map(find).cloned().collect();
        let mut host = Self { store, role, stored, taken, out: Vec::new(), dirty: true };
        let report = host.carry(&step);
        host.flush(Batch::new(), &mut Vec::new())?;
        Ok((host, report))
    }

    /// Crash and restart: forgets everything since the last flush and reads
    /// the replica back from the store, as [`open`](Self::open) would.
    ///
    /// # Errors
    /// When the stored role cannot be read (the host is then unchanged).
    pub fn reopen(&mut self) -> Result<(), HostError<S::Error>> {
        let role = load(&self.store, ROLE)?.ok_or(HostError::Missing { key: ROLE.into() })?;
        self.stored = stored_pieces(&self.store)?;
        self.role = role;
        self.taken.clear();
        self.out.clear();
        self.dirty = false;
        Ok(())
    }

    /// The role (read-only: every change goes through this host).
    pub fn role(&self) -> &GroupReplica {
        &self.role
    }

    store_accessors!();

    /// When to call [`timeout`](Self::timeout) next.
    pub fn deadline(&self) -> Option<Instant> {
        self.role.deadline()
    }

    /// Whether a flush has anything to write or send.
    pub fn pending(&self) -> bool {
        self.dirty || !self.out.is_empty()
    }

    /// The piece of `upgrade` this replica keeps, if any.
    ///
    /// # Errors
    /// When the store cannot be read or the piece does not decode.
    pub fn piece(&self, upgrade: UpgradeId) -> Result<Option<Piece>, HostError<S::Error>> {
        if let Some(p) = self.taken.iter().find(|p| p.header.upgrade == upgrade) {
            return Ok(Some(p.clone()));
        }
        load(&self.store, &piece_key(upgrade))
    }

    /// An ordered operation from `origin`, with this replica's key
    /// ([`GroupReplica::handle_ordered`]).
    pub fn ordered(
        &mut self,
        now: Instant,
        origin: Peer,
        op: &Operation,
        key: &ReplicaSecretKey,
        validate: impl FnOnce(&PieceHeader) -> Verdict,
    ) -> ReplicaReport {
        self.ordered_with(now, origin, op, &mut WithKey(key), validate)
    }

    /// An ordered operation with the crypto done by `crypto`
    /// ([`GroupReplica::handle_ordered_with`]).
    pub fn ordered_with(
        &mut self,
        now: Instant,
        origin: Peer,
        op: &Operation,
        crypto: &mut impl PieceCrypto,
        validate: impl FnOnce(&PieceHeader) -> Verdict,
    ) -> ReplicaReport {
        let fresh = match op {
            Operation::PrepareInstall(p) if self.role.holds(p.header.upgrade).is_none() => Some(p),
            _ => None,
        };
        let step = self.role.handle_ordered_with(now, origin, op, crypto, validate);
        // A piece the role took now: kept while it is held, for guardians.
        if let Some(piece) = fresh.filter(|p| self.role.holds(p.header.upgrade).is_some()) {
            self.taken.push(piece.clone());
        }
        self.carry(&step)
    }

    /// A message from another party ([`GroupReplica::handle_message`]).
    pub fn message(&mut self, now: Instant, from: Peer, message: &Message) -> ReplicaReport {
        let step = self.role.handle_message(now, from, message);
        self.carry(&step)
    }

    /// The deadline passed ([`GroupReplica::handle_timeout`]).
    pub fn timeout(&mut self, now: Instant) -> ReplicaReport {
        let step = self.role.handle_timeout(now);
        self.carry(&step)
    }

    /// An application request from `from` carried `codes`, in its ordered
    /// execution ([`GroupReplica::on_request`]).
    pub fn request(&mut self, now: Instant, from: GroupId, codes: &Attachment) -> ReplicaReport {
        let step = self.role.on_request(now, from, codes);
        self.carry_learned(&step)
    }

    /// A response to transaction `txn` from `from` carried `codes`
    /// ([`GroupReplica::on_response`]).
    pub fn response(&mut self, now: Instant, txn: TxnId, from: GroupId, codes: &Attachment) -> ReplicaReport {
        let step = self.role.on_response(now, txn, from, codes);
        self.carry_learned(&step)
    }

    /// A call from an external client ([`GroupReplica::on_client_call`]),
    /// in the group's order; the reply goes back to the client after the
    /// next flush, as everything else.
    pub fn client_call(&mut self, now: Instant, call: &ClientCall) -> (ReplicaReport, ClientReply) {
        let (step, reply) = self.role.on_client_call(now, call);
        (self.carry_learned(&step), reply)
    }

    /// The codes to attach to a request or response for `to`
    /// ([`GroupReplica::take_attachment`]; the role's state changes, so the
    /// next flush writes it).
    pub fn attachment(&mut self, to: GroupId) -> Attachment {
        let codes = self.role.take_attachment(to);
        // Taking an empty attachment leaves the role as it was.
        self.dirty |= !codes.is_empty();
        codes
    }

    /// Plants a deliberate bug in the role (tests of the checkers only).
    #[cfg(feature = "planted-bugs")]
    pub fn plant(&mut self, bug: crate::planted::Planted) {
        self.role.plant(bug);
        self.dirty = true;
    }

    /// A piggyback (request, response, client call): the role changes only
    /// by finishing what the codes finish, and every finish is an effect
    /// (see [`GroupReplica::on_request`]); most calls carry nothing new, and
    /// cost no write.
    fn carry_learned(&mut self, step: &Step<GroupEffect>) -> ReplicaReport {
        let changed = !step.effects.is_empty() || !step.messages.is_empty();
        let dirty = self.dirty;
        let report = self.carry(step);
        self.dirty = dirty || changed;
        report
    }

    fn carry(&mut self, step: &Step<GroupEffect>) -> ReplicaReport {
        self.dirty = true;
        let mut report = ReplicaReport {
            faults: Faults { faults: step.faults.iter().cloned().collect(), dropped: step.faults_dropped },
            lost: step.lost,
            ..ReplicaReport::default()
        };
        for effect in &step.effects {
            match effect {
                GroupEffect::ForwardPiece { upgrade, guardian } => self.forward(*upgrade, *guardian),
                other => report.effects.push(other.clone()),
            }
        }
        route(&step.messages, &mut self.out);
        report
    }

    /// `ForwardPiece`: the piece to one guardian or all the group's.
    fn forward(&mut self, upgrade: UpgradeId, only: Option<u32>) {
        // The role asks only for held pieces, which this host keeps; a
        // piece missing here means a store that lost it, and the guardian
        // asks again (`GuardianNeedsPiece`) after the next flush.
        let Ok(Some(piece)) = self.piece(upgrade) else { return };
        let Some(ids) = self.role.config().guardians.as_ref().map(|g| g.ids.clone()) else { return };
        for guardian in ids.into_iter().filter(|id| only.is_none_or(|o| o == *id)) {
            self.out.push(Outbound::Piece { guardian, piece: Box::new(piece.clone()) });
        }
    }

    /// Writes the role, its pieces and `app` in one batch, then delivers
    /// every item the inputs since the last flush produced.
    ///
    /// # Errors
    /// [`HostError::Store`] when the commit fails: nothing is sent, and the
    /// items stay for the next flush.
    pub fn flush(&mut self, app: Batch, transport: &mut impl Transport) -> Result<(), HostError<S::Error>> {
        if self.dirty || !app.is_empty() {
            let mut batch = Batch::new();
            batch.put(ROLE, to_bytes(&self.role));
            let held: Vec<UpgradeId> = self.role.held_upgrades().map(|(u, _)| u).collect();
            let mut stored: Vec<UpgradeId> = Vec::new();
            for p in &self.taken {
                let u = p.header.upgrade;
                if held.contains(&u) && !stored.contains(&u) {
                    batch.put(piece_key(u), to_bytes(p));
                    stored.push(u);
                }
            }
            // A piece goes in the batch that writes a role no longer
            // holding it, never before.
            for u in &self.stored {
                if held.contains(u) {
                    if !stored.contains(u) {
                        stored.push(*u);
                    }
                } else {
                    batch.delete(piece_key(*u));
                }
            }
            batch.extend(app);
            self.store.commit(batch).map_err(HostError::Store)?;
            self.stored = stored;
            // Freed, not cleared: pieces are taken rarely, and a cleared
            // vector would keep a piece's room for good.
            self.taken = Vec::new();
            self.dirty = false;
        }
        for item in self.out.drain(..) {
            transport.deliver(item);
        }
        Ok(())
    }
}

fn stored_pieces<S: Store>(store: &S) -> Result<Vec<UpgradeId>, HostError<S::Error>> {
    let mut stored = Vec::new();
    for key in store.list(PIECE).map_err(HostError::Store)? {
        if let Some(id) = key.strip_prefix(PIECE).and_then(unhex16) {
            stored.push(UpgradeId(id));
        }
    }
    Ok(stored)
}

fn piece_key(upgrade: UpgradeId) -> String {
    format!("{PIECE}{}", hex(&upgrade.0))
}

/// The replica a [`ReplicaHost`] stored in `store`, if any (for checkers
/// and status tools; the replica need not run).
///
/// # Errors
/// When the store cannot be read or the record does not decode.
pub fn stored_replica<S: Store>(store: &S) -> Result<Option<GroupReplica>, HostError<S::Error>> {
    load(store, ROLE)
}
