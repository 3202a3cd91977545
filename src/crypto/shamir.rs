//! Shamir secret sharing over the P-256 scalar field.
//!
//! Shares are points `(x, p(x))` of a random polynomial `p` of degree
//! `k - 1` with `p(0)` the secret; `x` runs over `1..=n`. Coefficients are
//! drawn with `p256`'s own rejection sampling, so they are uniform.
//! Reconstruction is Lagrange interpolation at zero with one batched
//! inversion. Everything lives in fixed-size arrays.
// Field arithmetic on `Scalar` is modular: it cannot overflow or panic.
#![allow(clippy::arithmetic_side_effects)]

use heapless::Vec;
use p256::elliptic_curve::{ff::PrimeField, Generate};
use p256::{FieldBytes, Scalar};
use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use subtle::{Choice, ConstantTimeEq};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::{CryptoError, MisuseError};

pub use crate::capacity::MAX_SHARES;

/// Which secret a share belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ShareKind {
    /// A share of the group secret `s_g` (released on *accept*).
    Secret,
    /// A share of the cancellation code `c` (released on *reject*).
    Cancel,
}

/// One share `(x, y)` of a secret. `x` is the 1-based share index.
#[derive(Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct Share {
    x: u8,
    y: [u8; 32],
}

impl Share {
    /// Builds a share from its index and value bytes (not checked here).
    pub const fn new(x: u8, y: [u8; 32]) -> Self {
        Self { x, y }
    }

    /// The 1-based share index.
    pub const fn index(&self) -> u8 {
        self.x
    }

    /// The share's value `y` (32-byte big-endian scalar).
    pub fn value(&self) -> &[u8; 32] {
        &self.y
    }

    /// The share's 33-byte encoding `x || y`, which share digests cover.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 33]> {
        let mut out = Zeroizing::new([0u8; 33]);
        let (x, y) = out.split_at_mut(1);
        x.copy_from_slice(&[self.x]);
        y.copy_from_slice(&self.y);
        out
    }

    /// `D(a_r)`: the share's digest as a piece lists it. `binding` is the
    /// piece's group (or guardian) binding; the share index is added to its
    /// index here.
    pub fn digest(&self, kind: ShareKind, binding: &super::Binding) -> super::Digest {
        let domain = match kind {
            ShareKind::Secret => super::Domain::SecretShare,
            ShareKind::Cancel => super::Domain::CancelShare,
        };
        super::digest(domain, &binding.offset(u16::from(self.x)), self.to_bytes().as_slice())
    }

    fn scalar(&self) -> Result<Scalar, CryptoError> {
        Option::from(Scalar::from_repr(FieldBytes::from(self.y))).ok_or(CryptoError::BadShare)
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for Share {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(f, "Share({}, <redacted>)", self.x)
    }
}

impl ConstantTimeEq for Share {
    fn ct_eq(&self, other: &Self) -> Choice {
        self.x.ct_eq(&other.x) & self.y.ct_eq(&other.y)
    }
}

impl PartialEq for Share {
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other).into()
    }
}

impl Eq for Share {}

impl core::fmt::Debug for Share {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Share({}, <redacted>)", self.x)
    }
}

/// Splits `secret` into `n` shares, any `k` of which reconstruct it.
///
/// # Errors
/// [`MisuseError::BadArgument`] unless `1 <= k <= n <= MAX_SHARES`.
pub fn split<R: CryptoRng + ?Sized>(
    secret: &Scalar,
    k: usize,
    n: usize,
    rng: &mut R,
) -> Result<Vec<Share, MAX_SHARES>, MisuseError> {
    if k == 0 || k > n || n > MAX_SHARES {
        return Err(MisuseError::BadArgument);
    }
    // coefficients[0] is the secret, the rest uniformly random. Only the
    // first k slots are written, used and wiped: the work is sized to k and
    // n, not to the array's capacity.
    let mut poly = Polynomial { coefficients: [Scalar::ZERO; MAX_SHARES], degree_plus_one: k };
    let mut slots = poly.coefficients.iter_mut().take(k);
    if let Some(c0) = slots.next() {
        *c0 = *secret;
    }
    for c in slots {
        *c = Scalar::generate_from_rng(rng);
    }
    let coefficients = poly.coefficients.get(..k).ok_or(MisuseError::BadArgument)?;
    let mut shares = Vec::new();
    let mut xs = Scalar::ZERO;
    for x in 1..=n {
        // n <= MAX_SHARES < 256, so x fits a byte.
        let xb = u8::try_from(x).map_err(|_| MisuseError::BadArgument)?;
        // x by addition: cheaper than converting each index.
        xs += Scalar::ONE;
        // Horner's rule, starting from the highest coefficient itself (not
        // from zero times x): k - 1 multiplications per share.
        let (top, rest) = coefficients.split_last().ok_or(MisuseError::BadArgument)?;
        let mut y = Zeroizing::new(*top);
        for c in rest.iter().rev() {
            *y = *y * xs + c;
        }
        let share = Share { x: xb, y: y.to_bytes().into() };
        shares.push(share).map_err(|_| MisuseError::BadArgument)?;
    }
    Ok(shares)
}

/// A polynomial's coefficients in fixed storage, of which only the first
/// `degree_plus_one` are used: those are wiped on drop, the rest were never
/// written.
struct Polynomial {
    coefficients: [Scalar; MAX_SHARES],
    degree_plus_one: usize,
}

impl Drop for Polynomial {
    fn drop(&mut self) {
        for c in self.coefficients.iter_mut().take(self.degree_plus_one) {
            c.zeroize();
        }
    }
}

/// Rebuilds the secret from shares by Lagrange interpolation at zero.
///
/// Pass at least the threshold's worth of shares that are known valid (their
/// digests checked): with fewer, or with a forged one, the result is some
/// other scalar, which the caller's digest check of the rebuilt code catches.
///
/// # Errors
/// [`CryptoError::BadThreshold`] for no shares or more than [`MAX_SHARES`];
/// [`CryptoError::BadShare`] for an index of zero, a repeated index, or a
/// value that is not a canonical scalar.
pub fn reconstruct(shares: &[Share]) -> Result<Scalar, CryptoError> {
    if shares.is_empty() || shares.len() > MAX_SHARES {
        return Err(CryptoError::BadThreshold);
    }
    let mut xs = [Scalar::ZERO; MAX_SHARES];
    let mut ys: Zeroizing<[Scalar; MAX_SHARES]> = Zeroizing::new([Scalar::ZERO; MAX_SHARES]);
    let mut seen = [false; 256];
    for ((share, x), y) in shares.iter().zip(xs.iter_mut()).zip(ys.iter_mut()) {
        let slot = seen.get_mut(usize::from(share.x)).ok_or(CryptoError::BadShare)?;
        if share.x == 0 || *slot {
            return Err(CryptoError::BadShare);
        }
        *slot = true;
        *x = Scalar::from(u64::from(share.x));
        *y = share.scalar()?;
    }
    let m = shares.len();
    let xs = xs.get(..m).ok_or(CryptoError::BadThreshold)?;
    let ys = ys.get(..m).ok_or(CryptoError::BadThreshold)?;

    // λ_i = Π_{j≠i} x_j / (x_j - x_i). Numerators and denominators first,
    // then every denominator inverted with one field inversion.
    let mut num = [Scalar::ONE; MAX_SHARES];
    let mut den = [Scalar::ONE; MAX_SHARES];
    for (i, xi) in xs.iter().enumerate() {
        let (Some(n), Some(d)) = (num.get_mut(i), den.get_mut(i)) else {
            return Err(CryptoError::BadThreshold);
        };
        for (j, xj) in xs.iter().enumerate() {
            if i != j {
                *n *= xj;
                *d *= *xj - xi;
            }
        }
    }
    let den = den.get_mut(..m).ok_or(CryptoError::BadThreshold)?;
    batch_invert(den)?;

    let mut secret = Scalar::ZERO;
    for ((y, n), d) in ys.iter().zip(num.iter()).zip(den.iter()) {
        secret += *y * n * d;
    }
    Ok(secret)
}

/// Montgomery's trick: inverts every element with a single inversion.
fn batch_invert(values: &mut [Scalar]) -> Result<(), CryptoError> {
    let mut prefix = [Scalar::ONE; MAX_SHARES];
    let mut acc = Scalar::ONE;
    for (v, p) in values.iter().zip(prefix.iter_mut()) {
        *p = acc;
        acc *= v;
    }
    // Distinct non-zero x values make every denominator non-zero.
    let mut inv: Scalar = Option::from(acc.invert()).ok_or(CryptoError::BadShare)?;
    for (v, p) in values.iter_mut().zip(prefix.iter()).rev() {
        let vi = inv * p;
        inv *= *v;
        *v = vi;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chacha20::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn secret(rng: &mut ChaCha20Rng) -> Scalar {
        Scalar::generate_from_rng(rng)
    }

    /// Every k-subset of every (n, k) with n <= 10 reconstructs the secret.
    #[test]
    fn exhaustive_small_scope() {
        let mut rng = ChaCha20Rng::from_seed([7; 32]);
        let mut subsets = 0u64;
        for n in 1..=10usize {
            for k in 1..=n {
                let s = secret(&mut rng);
                let shares = split(&s, k, n, &mut rng).unwrap();
                assert_eq!(shares.len(), n);
                for mask in 0u32..(1 << n) {
                    if mask.count_ones() as usize != k {
                        continue;
                    }
                    let subset: Vec<Share, MAX_SHARES> = shares
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| mask & (1 << i) != 0)
                        .map(|(_, s)| s.clone())
                        .collect();
                    assert_eq!(reconstruct(&subset).unwrap(), s, "n={n} k={k} mask={mask:b}");
                    subsets += 1;
                }
            }
        }
        // sum over n of (2^n - 1) for n = 1..=10
        assert_eq!(subsets, 2036);
    }

    /// Each share is `p(x)` for the polynomial whose coefficients are the
    /// secret and then the rng's next `k - 1` scalars in order, evaluated
    /// here term by term (powers of x, not Horner), so the draw order (and
    /// with it every piece a restarted deployer rebuilds) cannot change
    /// unnoticed.
    #[test]
    fn shares_are_the_drawn_polynomial_at_one_to_n() {
        for (n, k) in [(1, 1), (4, 1), (4, 2), (7, 3), (16, 6), (MAX_SHARES, 22), (MAX_SHARES, MAX_SHARES)] {
            let mut rng = ChaCha20Rng::from_seed([11; 32]);
            let s = secret(&mut rng);
            let mut twin = ChaCha20Rng::from_seed([11; 32]);
            assert_eq!(secret(&mut twin), s);
            let mut coefficients = std::vec![s];
            coefficients.extend((1..k).map(|_| Scalar::generate_from_rng(&mut twin)));
            let shares = split(&s, k, n, &mut rng).unwrap();
            assert_eq!(shares.len(), n);
            for (i, share) in shares.iter().enumerate() {
                let x = Scalar::from(i as u64 + 1);
                let mut power = Scalar::ONE;
                let mut y = Scalar::ZERO;
                for c in &coefficients {
                    y += *c * power;
                    power *= x;
                }
                assert_eq!(usize::from(share.index()), i + 1);
                assert_eq!(share.value(), &<[u8; 32]>::from(y.to_bytes()), "n={n} k={k} x={}", i + 1);
            }
        }
    }

    /// vsss-rs, an independent implementation over the same field, combines
    /// our shares into our secret, and ours combines its shares into its.
    #[test]
    fn agrees_with_vsss_rs() {
        use vsss_rs::{IdentifierPrimeField, PrimeFieldShare, ReadableShareSet, Share as _};
        type VShare = PrimeFieldShare<Scalar>;
        let mut rng = ChaCha20Rng::from_seed([12; 32]);
        for (n, k) in [(4, 2), (7, 3), (16, 6), (MAX_SHARES, 22)] {
            let s = secret(&mut rng);
            let ours = split(&s, k, n, &mut rng).unwrap();
            let as_theirs: std::vec::Vec<VShare> = ours
                .iter()
                .skip(n - k)
                .map(|sh| {
                    VShare::with_identifier_and_value(
                        IdentifierPrimeField(Scalar::from(u64::from(sh.index()))),
                        IdentifierPrimeField(sh.scalar().unwrap()),
                    )
                })
                .collect();
            assert_eq!(ReadableShareSet::combine(&as_theirs.as_slice()).unwrap().0, s, "n={n} k={k}");
            let theirs = vsss_rs::shamir::split_secret::<VShare>(k, n, &IdentifierPrimeField(s), &mut rng).unwrap();
            let as_ours: Vec<Share, MAX_SHARES> = theirs
                .iter()
                .take(k)
                .map(|sh| {
                    let id = sh.identifier().0.to_bytes();
                    assert!(id[..31].iter().all(|b| *b == 0), "vsss-rs identifiers are 1..=n");
                    let x = id[31];
                    Share::new(x, sh.value().0.to_bytes().into())
                })
                .collect();
            assert_eq!(reconstruct(&as_ours).unwrap(), s, "n={n} k={k}");
        }
    }

    #[test]
    fn fewer_than_k_do_not_reconstruct() {
        let mut rng = ChaCha20Rng::from_seed([8; 32]);
        let s = secret(&mut rng);
        let shares = split(&s, 3, 7, &mut rng).unwrap();
        assert_ne!(reconstruct(&shares[..2]).unwrap(), s);
        assert_ne!(reconstruct(&shares[4..6]).unwrap(), s);
    }

    #[test]
    fn rejects_bad_sets() {
        let mut rng = ChaCha20Rng::from_seed([9; 32]);
        let s = secret(&mut rng);
        let shares = split(&s, 2, 4, &mut rng).unwrap();
        assert_eq!(reconstruct(&[]), Err(CryptoError::BadThreshold));
        let dup = [shares[0].clone(), shares[0].clone()];
        assert_eq!(reconstruct(&dup), Err(CryptoError::BadShare));
        let zero = [Share::new(0, [1; 32]), shares[1].clone()];
        assert_eq!(reconstruct(&zero), Err(CryptoError::BadShare));
        let big = [Share::new(1, [0xff; 32]), shares[1].clone()];
        assert_eq!(reconstruct(&big), Err(CryptoError::BadShare));
        assert!(split(&s, 0, 4, &mut rng).is_err());
        assert!(split(&s, 5, 4, &mut rng).is_err());
        assert!(split(&s, 1, MAX_SHARES + 1, &mut rng).is_err());
        assert_eq!(split(&s, MAX_SHARES, MAX_SHARES, &mut rng).unwrap().len(), MAX_SHARES);
    }
}
