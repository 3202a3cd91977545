//! What travels inside an authenticated frame. Everything is encoded with
//! the core's `wire::encode` and decoded with `wire::decode`, which checks
//! every length and rejects trailing or non-canonical bytes; the core's
//! messages, operations and pieces travel as they are.

use bft_upgrade::crypto::{Code, Digest};
use bft_upgrade::step::Peer;
use bft_upgrade::wire::{self, Attachment, GroupId, Message, Operation, Outcome, Piece, Retirement, UpgradeId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// One frame's content.
#[derive(Clone, Debug, Serialize, Deserialize)]
// Frames are built and dropped one at a time.
#[allow(clippy::large_enum_variant)]
pub enum Frame {
    /// AlephBFT traffic between replicas of one group in one session
    /// (SCALE-encoded `NetworkData`, opaque here).
    Consensus {
        /// The group's session.
        epoch: u64,
        /// The session's data.
        data: Vec<u8>,
    },
    /// A point-to-point protocol message (answers, guardian traffic).
    Msg(Message),
    /// Something for the receiving replica's group to order. The origin is
    /// the authenticated sender of the connection, never a claim inside.
    Submit {
        /// Chosen by the sender, fresh per submission: the same submission
        /// reaches every replica and is ordered up to `n` times, and is
        /// executed once.
        nonce: u64,
        /// What to order.
        body: Body,
    },
    /// A piece a replica forwards to a guardian (`GroupEffect::ForwardPiece`).
    Piece(Piece),
    /// The deployer's signed word that an upgrade finished everywhere, for
    /// a guardian to forget it (sent by `node install` once it is done).
    Retire(Retirement),
    /// An operator asks a replica for its status.
    StatusRequest,
    /// A replica's status.
    Status(Status),
    /// A guardian's status (its answer to `StatusRequest`).
    GuardianStatus(GuardianStatus),
    /// A replica asks a peer of its group for the sealed payload with this
    /// signed digest: its own copy is missing or does not open.
    PayloadRequest(Digest),
    /// The sealed payload with this digest, as the answering peer keeps
    /// it (the asker checks it against the digest its piece signed).
    Payload {
        /// The payload's signed digest.
        digest: Digest,
        /// Its sealed bytes.
        sealed: Vec<u8>,
    },
    /// A wiped replica asks a peer of its group for the checkpoint its
    /// rejoin request `tag` made its group write.
    CheckpointRequest {
        /// The rejoin request's tag.
        tag: u64,
    },
    /// That checkpoint (encoded), as the answering peer wrote it.
    Checkpoint {
        /// The rejoin request's tag.
        tag: u64,
        /// The encoded checkpoint.
        bytes: Vec<u8>,
    },
    /// A replica's answer to an application call it cannot serve yet: its
    /// group committed `upgrade`, whose payload this replica has not
    /// applied (it serves neither the old version nor the new).
    Upgrading {
        /// The answering replica's group.
        group: GroupId,
        /// The call.
        txn: u64,
        /// The upgrade it is waiting to apply.
        upgrade: UpgradeId,
    },
}

/// An operation of a group's replicated state machine.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)]
pub enum Body {
    /// An upgrade operation (PrepareInstall, CommitInstall, AbortInstall).
    Op(Operation),
    /// A PrepareInstall with its group's sealed payload, as the deployer
    /// sealed it: the group's verdict on the piece may depend on the
    /// payload (a module that does not validate is refused).
    Prepare {
        /// The PrepareInstall.
        op: Operation,
        /// The sealed payload.
        sealed: Vec<u8>,
    },
    /// The application: this group starts transaction `txn`, a call to a
    /// neighbor.
    Tick {
        /// The transaction.
        txn: u64,
    },
    /// The application: group `from`'s transaction `txn` calls this group,
    /// with the codes piggybacked on the request (Figure 2).
    Request {
        /// The calling group.
        from: GroupId,
        /// The caller's transaction.
        txn: u64,
        /// Codes piggybacked on the request.
        codes: Attachment,
        /// The caller's group version when the transaction started: a
        /// callee at another version does not serve it (section 4.3).
        version: u64,
        /// The caller's module (interface) version, recorded by the callee.
        module: u64,
        /// What leaves the caller's account.
        amount: i64,
        /// The call's other arguments, as the caller's module made them.
        args: Vec<i64>,
    },
    /// A wiped replica of this group (the envelope's origin) asks to
    /// rejoin: the AlephBFT session ends at this batch and every correct
    /// replica writes a checkpoint of the state there, for it to install
    /// and start the next session from (which it never ran, so it cannot
    /// equivocate in it). `tag` grows with each restart (the host's
    /// clock): a tag not above the last one executed for that replica, or a
    /// request within 1,000 batches of the session change the last one
    /// made, changes nothing.
    Rejoin {
        /// Larger at each restart of the wiped replica.
        tag: u64,
    },
    /// The application: the response to this group's transaction `txn`
    /// from group `from`, with the codes piggybacked on it.
    Response {
        /// The called group.
        from: GroupId,
        /// This group's transaction.
        txn: u64,
        /// Codes piggybacked on the response.
        codes: Attachment,
        /// What the callee did with the call.
        answer: Answer,
    },
}

/// What a callee did with a call.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum Answer {
    /// Served by the callee's module of this version: the amount is the
    /// callee's now.
    Served {
        /// The callee's module version.
        module: u64,
    },
    /// Not served: the callee's group is at another version (its own
    /// here). The caller takes its money back; when the response's codes
    /// bring it a commit, it restarts the transaction on the new version
    /// (Figure 2).
    Refused {
        /// The callee's group version.
        version: u64,
    },
    /// The callee's module failed the call (the arguments do not fit its
    /// `serve`, or it trapped): the caller takes its money back.
    Failed {
        /// The callee's module version.
        module: u64,
    },
}

/// A submission as the group orders it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Envelope {
    /// The authenticated submitter.
    pub origin: Peer,
    /// The submitter's nonce.
    pub nonce: u64,
    /// The operation.
    pub body: Body,
}

impl Envelope {
    /// The request id operations are deduplicated by: the digest of the
    /// envelope's canonical encoding.
    pub fn id(&self) -> [u8; 32] {
        Sha256::digest(encode(self)).into()
    }
}

/// One upgrade as a replica sees it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UpgradeStatus {
    /// The upgrade.
    pub upgrade: UpgradeId,
    /// Its outcome here, once finished.
    pub outcome: Option<Outcome>,
    /// Held and unfinished: in `A` (`true`) or `C` (`false`).
    pub held: Option<bool>,
    /// When it finished here (wall-clock ms).
    pub finished_at_ms: u64,
    /// Which call finished it: "ordered" (a CommitInstall/AbortInstall
    /// operation) or "piggyback" (codes on an application request or
    /// response).
    pub via: String,
}

/// A replica's status.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    /// The group.
    pub group: GroupId,
    /// The replica.
    pub index: u8,
    /// The version this replica serves: its group's commits so far whose
    /// payload it applied.
    pub version: u64,
    /// The deployer's current version code here.
    pub version_code: Option<Code>,
    /// Ordered operations executed (after deduplication).
    pub executed: u64,
    /// Application calls completed.
    pub app_calls: u64,
    /// The application: its module's interface version, the group's
    /// account and what is in flight.
    pub app: AppStatus,
    /// The installed payload (the application's "code"), as text.
    pub payload: String,
    /// Committed upgrades whose payload this replica has not applied yet,
    /// oldest first: `version` counts none of them, and until they are
    /// applied the replica answers application calls with `Upgrading`.
    pub upgrading: Vec<UpgradeId>,
    /// `Upgrading` answers this replica received from callees.
    pub callees_upgrading: u64,
    /// Upgrades seen.
    pub upgrades: Vec<UpgradeStatus>,
    /// The group's AlephBFT session.
    pub epoch: u64,
    /// Finalized units until the session changes (rounds left are at least
    /// this divided by the group's size).
    pub units_left: u64,
}

/// The application as a replica runs it (the bank): what the checks read.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AppStatus {
    /// The running module's interface version.
    pub module: u64,
    /// The group's account.
    pub balance: i64,
    /// Paid by this group's calls in flight (back on a refusal).
    pub escrow: i64,
    /// Paid by calls dropped unanswered (the oldest of more than the calls
    /// a group keeps in flight): the callee may have it, or nobody.
    pub limbo: i64,
    /// Calls this group served, by (caller's module, this group's module)
    /// version: every pair should match.
    pub served: Vec<(u64, u64, u64)>,
    /// Calls refused by a callee at another version (the caller's money
    /// back).
    pub refused: u64,
    /// Transactions restarted on a new version (Figure 2).
    pub restarted: u64,
    /// Calls a module failed (arguments that do not fit, or a trap).
    pub failed: u64,
    /// Application operations ordered while a committed module was
    /// missing here, run once it is applied.
    pub deferred: u64,
}

/// A guardian's status: how full it is.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct GuardianStatus {
    /// The guardian.
    pub id: u32,
    /// (upgrade, group) records it holds.
    pub held: u32,
    /// How many it can hold.
    pub capacity: u32,
    /// Records that released a kind (kept until the deployer retires their
    /// upgrade).
    pub releases: u32,
}

/// Encodes with the core's wire format.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut buf = vec![0u8; wire::encoded_len(value)];
    match wire::encode(value, &mut buf) {
        Ok(bytes) => bytes.to_vec(),
        Err(_) => Vec::new(),
    }
}

/// Decodes with the core's wire format (strict).
///
/// # Errors
/// The core's decode error.
pub fn decode<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> Result<T, bft_upgrade::error::DecodeError> {
    wire::decode(bytes)
}

/// A fresh random u64 (nonces).
pub fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b)
}
