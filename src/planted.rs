//! Deliberate bugs, active only with the `planted-bugs` feature, so tests
//! can show that the simulator's checkers find each one.
//!
//! Never enable this feature in a build that runs a real deployment.

use serde::{Deserialize, Serialize};

/// A bug to plant in a role (or, for the last two, in the simulator's
/// treatment of a role).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Planted {
    /// No bug.
    #[default]
    None,
    /// A replica that releases both kinds of share (simulator).
    ReleasesBoth,
    /// A group that commits on any code, skipping the check against `D(τ)`.
    SkipTriggerCheck,
    /// A group that accepts a piece whatever its previous version code.
    SkipVersionCheck,
    /// An installer that decides to commit with one group still missing.
    CommitWithMissingGroup,
    /// A guardian whose release record is never written, so a restart
    /// forgets it (simulator).
    GuardianForgets,
    /// Figure 3 as printed: a postponed piece is released on retry even
    /// while a conflicting piece is released.
    NoPostponement,
    /// A group that takes a piece whose upgrade id names another deployer
    /// (an upgrade id squatted by another deployer).
    SquattableIds,
    /// An installer whose sweep sends past a full step instead of keeping
    /// the rest due for the next call (the outputs that do not fit are
    /// lost).
    SweepIgnoresRoom,
    /// An installer that counts every `s_g` value a replica sends, not
    /// only its first (one faulty replica can then make `f + 1`).
    VotesPerMessage,
    /// An installer whose pool budget counts `f` entries a group instead of
    /// `2f` (forgetting the other kind, or wrong values beside right ones)
    /// and drops what does not fit, as installers once did.
    PoolHalfBudget,
    /// An installer that is done once one group acknowledged and never
    /// sends the outcome to the groups diffusion does not reach.
    DoneAfterOneGroup,
    /// A group's last replica counts each commit twice in its version: its
    /// replicated state diverges from its peers'.
    DivergentVersion,
    /// A group's last replica keeps its old membership when a membership
    /// upgrade commits.
    MembershipIgnored,
    /// Replicas hand out their replicated state for state transfer with one
    /// version chain missing, so no replica can rejoin from it.
    TransferShapeLost,
}
