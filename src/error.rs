//! Error types, one per concern.
//!
//! The crate keeps three kinds of bad apart:
//! - misuse of the API by the host is an `Err` of the call ([`MisuseError`],
//!   [`CapacityError`]);
//! - a peer that misbehaves is a [`Fault`](crate::step::Fault) in the returned
//!   step, and processing goes on;
//! - bytes that do not decode are a [`DecodeError`] at the wire boundary.
//!
//! Cryptographic checks that fail on data the host handed in (a box that does
//! not open, a signature that does not verify) are a [`CryptoError`].

use core::fmt;

/// Bytes that could not be turned into a typed message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended before the value was complete.
    Truncated,
    /// Bytes were left over after a complete value.
    TrailingBytes,
    /// A length or count exceeds the crate's capacity for that field.
    OverCapacity,
    /// The bytes are not a valid encoding of the expected type (bad tag,
    /// bad varint, invalid point or scalar, ...).
    Malformed,
    /// The value decoded but does not re-encode to the same bytes, so the
    /// input was not the canonical encoding.
    NonCanonical,
    /// The leading format version is not one this build reads (a newer
    /// release wrote it, or the bytes are not this crate's):
    /// [`FORMAT_VERSION`](crate::wire::FORMAT_VERSION).
    UnknownVersion {
        /// The version byte found.
        version: u8,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::UnknownVersion { version } => return write!(f, "unknown format version {version}"),
            Self::Truncated => "input truncated",
            Self::TrailingBytes => "trailing bytes after value",
            Self::OverCapacity => "length or count over capacity",
            Self::Malformed => "malformed encoding",
            Self::NonCanonical => "non-canonical encoding",
        })
    }
}

impl core::error::Error for DecodeError {}

impl From<postcard::Error> for DecodeError {
    fn from(e: postcard::Error) -> Self {
        use postcard::Error as E;
        match e {
            E::DeserializeUnexpectedEnd => Self::Truncated,
            // heapless reports a sequence longer than its capacity through
            // serde's custom error path.
            E::SerdeDeCustom => Self::OverCapacity,
            _ => Self::Malformed,
        }
    }
}

/// A value could not be encoded ([`wire::encode`](crate::wire::encode)):
/// the host's misuse, never a peer's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum EncodeError {
    /// The output buffer is too small
    /// ([`wire::encoded_len`](crate::wire::encoded_len) says how large it
    /// must be).
    BufferTooSmall,
    /// The value has no encoding (a serializer error).
    Unencodable,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::BufferTooSmall => "output buffer too small",
            Self::Unencodable => "value cannot be encoded",
        })
    }
}

impl core::error::Error for EncodeError {}

/// A cryptographic check failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum CryptoError {
    /// A signature does not verify under the expected key.
    BadSignature,
    /// A public key is not a valid point on P-256.
    InvalidPublicKey,
    /// A secret key is zero or not below the group order.
    InvalidSecretKey,
    /// An AEAD box or payload chunk failed authentication.
    OpenFailed,
    /// A share is malformed, repeated, or does not match its digest.
    BadShare,
    /// Fewer shares than the threshold, or a threshold outside `1..=n`.
    BadThreshold,
    /// A code does not match the digest it must match.
    CodeMismatch,
    /// A payload stream was truncated, reordered, spliced or extended.
    PayloadStream,
}

impl fmt::Display for CryptoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::BadSignature => "signature does not verify",
            Self::InvalidPublicKey => "invalid P-256 public key",
            Self::InvalidSecretKey => "invalid P-256 secret key",
            Self::OpenFailed => "authenticated decryption failed",
            Self::BadShare => "invalid or duplicate share",
            Self::BadThreshold => "threshold not met or out of range",
            Self::CodeMismatch => "code does not match its digest",
            Self::PayloadStream => "payload stream truncated, reordered or extended",
        })
    }
}

impl core::error::Error for CryptoError {}

/// A bounded collection is full, or a request exceeds a documented capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum CapacityError {
    /// More replicas than [`MAX_REPLICAS`](crate::wire::MAX_REPLICAS).
    Replicas,
    /// More resources than [`MAX_RESOURCES`](crate::wire::MAX_RESOURCES).
    Resources,
    /// More groups than the role was built to hold.
    Groups,
    /// More pieces in flight than the role was built to hold.
    Pieces,
    /// More deployers than the configuration can hold.
    Deployers,
    /// More neighbors than the configuration can hold.
    Neighbors,
    /// An output buffer of the step is full.
    Output,
    /// More shares than an installer's pool holds (see
    /// [`pool_needed`](crate::installer::pool_needed)).
    Shares,
}

impl fmt::Display for CapacityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Replicas => "too many replicas",
            Self::Resources => "too many resources",
            Self::Groups => "too many groups",
            Self::Pieces => "too many pieces in flight",
            Self::Deployers => "too many deployers",
            Self::Neighbors => "too many neighbors",
            Self::Output => "step output full",
            Self::Shares => "more shares than the installer's pool holds",
        })
    }
}

impl core::error::Error for CapacityError {}

/// The host called the API in a way it documents as wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum MisuseError {
    /// An index (group, replica, chunk) is outside the range the call allows.
    OutOfRange,
    /// A call came in a state where it is not allowed (e.g. sealing a piece
    /// before its payload was sealed, or a chunk after the last one).
    WrongState,
    /// An argument is inconsistent with the configuration (e.g. `f` too large
    /// for `n`, a buffer smaller than the chunk size).
    BadArgument,
    /// A capacity was exceeded.
    Capacity(CapacityError),
    /// A cryptographic operation on host-provided material failed.
    Crypto(CryptoError),
}

impl fmt::Display for MisuseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutOfRange => f.write_str("index out of range"),
            Self::WrongState => f.write_str("call not allowed in this state"),
            Self::BadArgument => f.write_str("argument inconsistent with configuration"),
            Self::Capacity(e) => write!(f, "capacity: {e}"),
            Self::Crypto(e) => write!(f, "crypto: {e}"),
        }
    }
}

impl core::error::Error for MisuseError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            Self::Capacity(e) => Some(e),
            Self::Crypto(e) => Some(e),
            _ => None,
        }
    }
}

impl From<CapacityError> for MisuseError {
    fn from(e: CapacityError) -> Self {
        Self::Capacity(e)
    }
}

impl From<CryptoError> for MisuseError {
    fn from(e: CryptoError) -> Self {
        Self::Crypto(e)
    }
}
