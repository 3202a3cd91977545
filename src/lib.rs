#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects,
        clippy::unreachable
    )
)]
//! bft-upgrade

#[cfg(any(test, feature = "std"))]
extern crate std;

pub mod crypto;
pub mod deployer;
pub mod error;
pub mod group;
pub mod installer;
#[cfg(feature = "std")]
pub mod sim;
pub mod step;
pub mod wire;
