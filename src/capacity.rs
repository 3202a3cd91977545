//! Compile-time capacities.
//!
//! Every collection in the crate is a fixed-capacity `heapless` value, so
//! these bounds decide the size of every role and message. The defaults
//! suit a server; firmware shrinks them by setting environment variables
//! when the crate is built (e.g. in the firmware's `.cargo/config.toml`,
//! `[env]`), the way `smoltcp` and `embassy` size their buffers:
//!
//! | variable | constant | default | range |
//! |---|---|---:|---|
//! | `BFT_UPGRADE_MAX_REPLICAS` | [`MAX_REPLICAS`] | 64 | 4..=64 |
//! | `BFT_UPGRADE_MAX_GUARDIANS` | [`MAX_GUARDIANS`] | 16 | 4..=64 |
//! | `BFT_UPGRADE_MAX_RESOURCES` | [`MAX_RESOURCES`] | 16 | 1..=256 |
//! | `BFT_UPGRADE_MAX_IN_FLIGHT` | [`MAX_IN_FLIGHT`] | 16 | 1..=256 |
//! | `BFT_UPGRADE_HISTORY` | [`HISTORY`] | 32 | 1..=1024 |
//! | `BFT_UPGRADE_MAX_NEIGHBORS` | [`MAX_NEIGHBORS`] | 16 | 1..=32 |
//! | `BFT_UPGRADE_MAX_ATTACHED` | [`MAX_ATTACHED`] | 8 | 1..=64 |
//! | `BFT_UPGRADE_MAX_DIFFUSING` | [`MAX_DIFFUSING`] | 8 | 1..=64 |
//! | `BFT_UPGRADE_MAX_GUARDED` | [`MAX_GUARDED`] | 16 | 1..=256 |
//!
//! A value out of range, or not a decimal number, fails the build. The wire
//! format does not change with them: a message over a smaller build's
//! capacity is a [`DecodeError`](crate::error::DecodeError) there, so every
//! node of a deployment must be built for the largest group it meets.

/// Reads capacity `name` from the build environment, else `default`; the
/// build fails unless the result is within `min..=max`.
const fn configured(value: Option<&str>, default: usize, min: usize, max: usize) -> usize {
    let n = match value {
        None => default,
        Some(s) => parse(s),
    };
    assert!(n >= min && n <= max, "a BFT_UPGRADE_* capacity is out of range (see bft_upgrade::capacity)");
    n
}

/// A decimal number, at compile time.
const fn parse(s: &str) -> usize {
    let mut digits = s.as_bytes();
    assert!(!digits.is_empty(), "a BFT_UPGRADE_* capacity is empty");
    let mut n: usize = 0;
    while let [d, rest @ ..] = digits {
        assert!(d.is_ascii_digit(), "a BFT_UPGRADE_* capacity is not a decimal number");
        // `d` is an ASCII digit, so `d - '0'` cannot wrap.
        let digit = d.wrapping_sub(b'0') as usize;
        n = match n.checked_mul(10) {
            Some(m) => match m.checked_add(digit) {
                Some(m) => m,
                None => usize::MAX,
            },
            None => usize::MAX,
        };
        digits = rest;
    }
    n
}

/// The most replicas a group may have. At most 64: proactive diffusion
/// keeps one bit per replica of a neighbor in a `u64`.
pub const MAX_REPLICAS: usize = configured(option_env!("BFT_UPGRADE_MAX_REPLICAS"), 64, 4, 64);
/// The most guardians a group may have (`3F + 1` of them).
pub const MAX_GUARDIANS: usize = configured(option_env!("BFT_UPGRADE_MAX_GUARDIANS"), 16, 4, 64);
/// The most shares one secret is split into: replicas or guardians.
pub const MAX_SHARES: usize = if MAX_REPLICAS > MAX_GUARDIANS { MAX_REPLICAS } else { MAX_GUARDIANS };
/// The most resources one piece may name.
pub const MAX_RESOURCES: usize = configured(option_env!("BFT_UPGRADE_MAX_RESOURCES"), 16, 1, 256);
/// The most unfinished pieces (`A ∪ C`) a group holds at once.
pub const MAX_IN_FLIGHT: usize = configured(option_env!("BFT_UPGRADE_MAX_IN_FLIGHT"), 16, 1, 256);
/// How many finished outcomes a group remembers (answers to late requests
/// and codes for external clients).
pub const HISTORY: usize = configured(option_env!("BFT_UPGRADE_HISTORY"), 32, 1, 1024);
/// The most neighbor groups a group has. At most 32: serde encodes fixed
/// arrays up to that length.
pub const MAX_NEIGHBORS: usize = configured(option_env!("BFT_UPGRADE_MAX_NEIGHBORS"), 16, 1, 32);
/// The most codes piggybacked on one application message.
pub const MAX_ATTACHED: usize = configured(option_env!("BFT_UPGRADE_MAX_ATTACHED"), 8, 1, 64);
/// The most upgrades a replica diffuses proactively at once.
pub const MAX_DIFFUSING: usize = configured(option_env!("BFT_UPGRADE_MAX_DIFFUSING"), 8, 1, 64);
/// The most groups one guardian guards.
pub const MAX_GUARDED: usize = configured(option_env!("BFT_UPGRADE_MAX_GUARDED"), 16, 1, 256);

// Share x-coordinates are bytes, and a secret has a share per replica or
// per guardian.
const _: () = assert!(MAX_SHARES < 256 && MAX_SHARES >= MAX_REPLICAS && MAX_SHARES >= MAX_GUARDIANS);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_decimal() {
        assert_eq!(parse("0"), 0);
        assert_eq!(parse("16"), 16);
        assert_eq!(parse("99999999999999999999999"), usize::MAX);
        assert_eq!(configured(None, 8, 1, 64), 8);
        assert_eq!(configured(Some("12"), 8, 1, 64), 12);
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn rejects_out_of_range() {
        let _ = configured(Some("65"), 8, 1, 64);
    }

    #[test]
    #[should_panic(expected = "not a decimal")]
    fn rejects_non_decimal() {
        let _ = parse("1_6");
    }
}
