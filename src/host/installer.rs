//! An installer's host: pieces from the bundle, state checkpoints.

use std::boxed::Box;
use std::collections::BTreeMap;
use std::string::String;
use std::vec::Vec;

use super::{load, route, to_bytes, Batch, Bundle, Faults, HostError, Outbound, Store, Transport};
use crate::ids::GroupId;
use crate::installer::{Installer, InstallerEffect};
use crate::step::{FaultKind, Instant, Peer, Step};
use crate::wire::{Answer, Operation, Piece};
use serde::{Deserialize, Serialize};
use std::format;

/// One installer driving one upgrade, with the bundle and its store.
///
/// `SendPrepare` becomes a submission of the group's piece from the
/// bundle; an answer is matched to its group's piece before the role sees
/// it (an answer for a group outside the bundle is a fault, not an error).
///
/// Every step is committed before its outbound items are delivered, so a
/// restarted installer resumes exactly where its last input left it, even
/// when it crashes after every input. (An installer is untrusted by
/// design: what it sends never depends for safety on what it remembers;
/// writing every step is for progress across crashes.)
///
/// A step is written as its input, appended to a log under `key/log/`,
/// and the whole role as a checkpoint under `key` once the log holds as
/// many inputs as the upgrade has groups (at least [`LOG_MIN`]); reopening
/// replays the log over the checkpoint, and the role is deterministic in
/// its inputs. The cost of a step so stays constant: written whole on every
/// answer, the checkpoint of a 10,000-group installer took two thirds of a
/// simulated install, growing with the square of the groups.
pub struct InstallerHost<S, const G: usize, const P: usize> {
    store: S,
    key: String,
    role: Box<Installer<G, P>>,
    bundle: Bundle,
    /// Each group's piece in `bundle.pieces` (the first, if listed twice):
    /// found by a scan, every answer cost O(|G|).
    by_group: BTreeMap<GroupId, usize>,
    /// Inputs in the log since the checkpoint.
    logged: usize,
}

/// The fewest inputs an installer's log holds before a checkpoint.
pub const LOG_MIN: usize = 64;

/// One logged input of an installer (its host's log records).
#[derive(Serialize, Deserialize)]
enum Input {
    Timeout(Instant),
    Answer(Instant, Peer, Answer),
}

/// What one input produced for the host's operator.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InstallerReport {
    /// `Decided`, `Refused` and `Done` (`SendPrepare` was carried out).
    pub effects: Vec<InstallerEffect>,
    /// Peers seen misbehaving.
    pub faults: Faults,
    /// The step's lost outputs (always 0).
    pub lost: u32,
}

impl<S: Store, const G: usize, const P: usize> InstallerHost<S, G, P> {
    /// The installer stored under `key` in `store`, or `fresh()`; `bundle`
    /// is the upgrade it installs.
    ///
    /// # Errors
    /// When the stored role cannot be read; [`HostError::Misuse`] from
    /// `fresh`. `fresh` returns the role boxed: a large installer is
    /// better built where it will live than on the stack.
    pub fn open(
        store: S,
        key: &str,
        bundle: Bundle,
        fresh: impl FnOnce(&Bundle) -> Result<Box<Installer<G, P>>, crate::error::MisuseError>,
    ) -> Result<Self, HostError<S::Error>> {
        let mut store = store;
        let role: Box<Installer<G, P>> = match load(&store, key)? {
            Some(role) => role,
            None => {
                let role = fresh(&bundle)?;
                let mut batch = Batch::new();
                batch.put(key, to_bytes(&*role));
                store.commit(batch).map_err(HostError::Store)?;
                role
            }
        };
        let mut by_group = BTreeMap::new();
        for (i, p) in bundle.pieces.iter().enumerate() {
            by_group.entry(p.header.group).or_insert(i);
        }
        let mut host = Self { store, key: key.into(), role, bundle, by_group, logged: 0 };
        host.replay()?;
        Ok(host)
    }

    /// The name of the log's `seq`-th record.
    fn log_key(&self, seq: usize) -> String {
        format!("{}/log/{seq:010}", self.key)
    }

    /// Replays the log over the role just read from the checkpoint.
    fn replay(&mut self) -> Result<(), HostError<S::Error>> {
        let names = self.store.list(&format!("{}/log/", self.key)).map_err(HostError::Store)?;
        for name in &names {
            match load::<Input, S>(&self.store, name)? {
                Some(Input::Timeout(now)) => {
                    let _ = self.role.handle_timeout(now);
                }
                Some(Input::Answer(now, from, answer)) => {
                    if let Some(piece) = piece_in(&self.by_group, &self.bundle, answer.group) {
                        let _ = self.role.handle_answer(now, from, &answer, piece);
                    }
                }
                None => return Err(HostError::Missing { key: name.clone() }),
            }
        }
        self.logged = names.len();
        Ok(())
    }

    /// Inputs before a checkpoint: as many as the groups, so that writing
    /// the whole role costs a constant per input.
    fn log_limit(&self) -> usize {
        self.bundle.groups.len().max(LOG_MIN)
    }

    /// Crash and restart: reads the installer back from its last
    /// checkpoint.
    ///
    /// # Errors
    /// When the checkpoint cannot be read; the host is then unchanged.
    pub fn reopen(&mut self) -> Result<(), HostError<S::Error>> {
        let role = load(&self.store, &self.key)?.ok_or_else(|| HostError::Missing { key: self.key.clone() })?;
        let before = core::mem::replace(&mut self.role, role);
        if let Err(e) = self.replay() {
            self.role = before;
            return Err(e);
        }
        Ok(())
    }

    /// The role (read-only).
    pub fn role(&self) -> &Installer<G, P> {
        &self.role
    }

    /// The bundle.
    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }

    store_accessors!();

    /// When to call [`timeout`](Self::timeout) next.
    pub fn deadline(&self) -> Option<Instant> {
        self.role.deadline()
    }

    /// Plants a deliberate bug in the role (tests of the checkers only).
    #[cfg(feature = "planted-bugs")]
    ///
    /// # Errors
    /// When the checkpoint that records it cannot be written.
    pub fn plant(&mut self, bug: crate::planted::Planted) -> Result<(), HostError<S::Error>> {
        self.role.plant(bug);
        let batch = self.checkpoint();
        self.store.commit(batch).map_err(HostError::Store)?;
        self.logged = 0;
        Ok(())
    }

    /// The role whole, and the log cleared.
    fn checkpoint(&self) -> Batch {
        let mut batch = Batch::new();
        batch.put(self.key.clone(), to_bytes(&*self.role));
        for seq in 0..self.logged {
            batch.delete(self.log_key(seq));
        }
        batch
    }

    /// Starts the upgrade ([`Installer::start`]).
    ///
    /// # Errors
    /// [`HostError::Store`] when the checkpoint fails: nothing is sent and
    /// the role is back at its last checkpoint.
    pub fn start(
        &mut self,
        now: Instant,
        transport: &mut impl Transport,
    ) -> Result<InstallerReport, HostError<S::Error>> {
        let step = self.role.start(now);
        self.carry(step, None, transport)
    }

    /// The deadline passed ([`Installer::handle_timeout`]).
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub fn timeout(
        &mut self,
        now: Instant,
        transport: &mut impl Transport,
    ) -> Result<InstallerReport, HostError<S::Error>> {
        let step = self.role.handle_timeout(now);
        self.carry(step, Some(Input::Timeout(now)), transport)
    }

    /// An answer from a replica ([`Installer::handle_answer`]).
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub fn answer(
        &mut self,
        now: Instant,
        from: Peer,
        answer: &Answer,
        transport: &mut impl Transport,
    ) -> Result<InstallerReport, HostError<S::Error>> {
        let Some(piece) = piece_in(&self.by_group, &self.bundle, answer.group) else {
            let mut step = Step::new();
            step.fault(from, Some(answer.upgrade), FaultKind::Unsolicited);
            // The role did not see it: nothing to write.
            return Ok(self.deliver(step, transport));
        };
        let step = self.role.handle_answer(now, from, answer, piece)?;
        self.carry(step, Some(Input::Answer(now, from, answer.clone())), transport)
    }

    /// Writes the step (its `input` to the log, or a checkpoint), then
    /// delivers it.
    fn carry(
        &mut self,
        step: Step<InstallerEffect>,
        input: Option<Input>,
        transport: &mut impl Transport,
    ) -> Result<InstallerReport, HostError<S::Error>> {
        let (batch, logged) = match input {
            Some(input) if self.logged.saturating_add(1) < self.log_limit() => {
                let mut batch = Batch::new();
                batch.put(self.log_key(self.logged), to_bytes(&input));
                (batch, self.logged.saturating_add(1))
            }
            _ => (self.checkpoint(), 0),
        };
        if let Err(e) = self.store.commit(batch) {
            // Back to the last write, as after a crash: the step's items
            // are not sent, and the next sweep asks again.
            if let Ok(Some(role)) = load(&self.store, &self.key) {
                self.role = role;
                // Unreadable, the log leaves the checkpoint alone.
                let _ = self.replay();
            }
            return Err(HostError::Store(e));
        }
        self.logged = logged;
        Ok(self.deliver(step, transport))
    }

    /// Carries out a written step: its submissions and messages go to
    /// `transport`, the rest is the report.
    fn deliver(&self, step: Step<InstallerEffect>, transport: &mut impl Transport) -> InstallerReport {
        let mut report = InstallerReport {
            faults: Faults { faults: step.faults.iter().cloned().collect(), dropped: step.faults_dropped },
            lost: step.lost,
            ..InstallerReport::default()
        };
        for effect in step.effects.iter().cloned() {
            match effect {
                InstallerEffect::SendPrepare { group } => {
                    if let Some(piece) = piece_in(&self.by_group, &self.bundle, group) {
                        let op = Box::new(Operation::PrepareInstall(piece.clone()));
                        transport.deliver(Outbound::Submit { group, op });
                    }
                }
                other => report.effects.push(other),
            }
        }
        route(&step.messages, transport);
        report
    }
}

/// `group`'s piece in `bundle` ([`Bundle::piece`], by its index `by_group`;
/// a free function so that the role can be borrowed beside it).
fn piece_in<'a>(by_group: &BTreeMap<GroupId, usize>, bundle: &'a Bundle, group: GroupId) -> Option<&'a Piece> {
    by_group.get(&group).and_then(|i| bundle.pieces.get(*i))
}
