//! A deterministic, seeded simulator of whole deployments (std only).
//!
//! A [`World`] holds groups of replicas (each a real
//! [`GroupReplica`](crate::group::GroupReplica)), a neighbor graph, a
//! deployer's upgrades, installers, an ordering stand-in per group, and a
//! network that delays, drops, duplicates and reorders messages over a
//! virtual clock. Byzantine replicas and installers run the real code and
//! have their outputs rewritten by an adversary. Everything follows from one
//! `u64` seed: the same seed gives the same run, byte for byte.
//!
//! After every event the safety checker runs ([what holds](crate::protocol#what-holds)); then
//! a liveness phase (faults off, network healed) must finish every upgrade
//! at every correct group within a bound.

// The simulator is a std test tool driven by its own configuration, not by
// untrusted input: indexing and `expect` on that configuration are fine here.
#![allow(
    clippy::indexing_slicing,
    clippy::expect_used,
    clippy::panic,
    clippy::arithmetic_side_effects,
    clippy::cast_possible_truncation
)]

mod material;
mod swarm;
pub mod twopc;
mod world;

pub use swarm::{chained_workload, FaultMode, Swarm, Template, LONG_UPGRADES};
pub use world::{
    ByzantineGuardian, ByzantineReplica, Metrics, NetworkFaults, Report, SimConfig, UpgradeSpec, Violation,
    ViolationKind, World, DIFFUSION_GRACE,
};
