//! Secret types: they zeroize, never print their bytes, and compare in
//! constant time.
//!
//! - Types that implement `Zeroize` are zeroized on a clone and the bytes
//!   read back (through a public accessor, or their serde encoding where
//!   there is no accessor) are all zero, while the original is untouched.
//! - Types that only wipe themselves on drop carry `ZeroizeOnDrop`
//!   (checked by a generic bound, so a missing impl fails to compile).
//! - `format!("{:?}")` never shows the secret bytes, in hex or as a decimal
//!   array, not even a 4-byte window of them.
//! - `Code`, `Digest` and `Share` implement `subtle::ConstantTimeEq`, and
//!   their `==` agrees with it.

use std::marker::PhantomData;

use bft_upgrade::crypto::{BoxContents, Code, DeployerKey, Digest, GroupKey, ReplicaSecretKey, Share};
use bft_upgrade::wire::{self, Opened, Token};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

fn assert_zod<T: ZeroizeOnDrop>() {}
fn ct<T: ConstantTimeEq>() {}

/// Distinctive secret bytes: no window of them occurs by chance.
fn secret(seed: u8) -> [u8; 32] {
    std::array::from_fn(|i| seed.wrapping_add((i as u8).wrapping_mul(37)) | 0x01)
}

/// Asserts that `shown` holds no 4-byte window of `bytes` in hex (either
/// case, with or without separators) or as decimals.
fn assert_hidden(shown: &str, bytes: &[u8]) {
    let flat: String = shown.chars().filter(|c| c.is_ascii_hexdigit()).collect::<String>().to_lowercase();
    for w in bytes.windows(4) {
        let hex: String = w.iter().map(|b| format!("{b:02x}")).collect();
        assert!(!flat.contains(&hex), "{shown:?} shows secret bytes {hex} in hex");
        let dec = format!("{}, {}, {}, {}", w[0], w[1], w[2], w[3]);
        assert!(!shown.contains(&dec), "{shown:?} shows secret bytes [{dec}]");
    }
    let array = format!("{bytes:?}");
    assert!(!shown.contains(&array[1..array.len() - 1]), "{shown:?} shows the secret as an array");
}

fn encoded<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let mut buf = vec![0u8; wire::encoded_len(value)];
    let len = wire::encode(value, &mut buf).expect("sized").len();
    buf.truncate(len);
    // The value's own bytes, after the format version.
    assert_eq!(buf.remove(0), wire::FORMAT_VERSION);
    buf
}

#[test]
fn code_zeroizes_and_is_redacted() {
    assert_zod::<Code>();
    let bytes = secret(3);
    let code = Code::from_bytes(bytes);
    let mut copy = code.clone();
    copy.zeroize();
    assert_eq!(copy.expose(), &[0u8; 32]);
    assert_eq!(code.expose(), &bytes, "zeroizing a clone touched the original");
    assert_hidden(&format!("{code:?}"), &bytes);
    assert_hidden(&format!("{:?}", Some(&code)), &bytes);
}

#[test]
fn share_zeroizes_and_is_redacted() {
    assert_zod::<Share>();
    let bytes = secret(5);
    let share = Share::new(7, bytes);
    let mut copy = share.clone();
    copy.zeroize();
    assert_eq!(copy.value(), &[0u8; 32]);
    assert_eq!(copy.index(), 0);
    assert_eq!(share.value(), &bytes);
    let shown = format!("{share:?}");
    assert_hidden(&shown, &bytes);
    assert!(shown.contains('7'), "the (public) index is shown: {shown}");
}

#[test]
fn group_key_zeroizes_and_is_redacted() {
    assert_zod::<GroupKey>();
    let bytes = secret(7);
    let key = GroupKey::from_bytes(bytes);
    // No accessor: the serde encoding (32 raw bytes) shows the contents.
    assert_eq!(encoded(&key), bytes);
    let mut copy = key.clone();
    copy.zeroize();
    assert_eq!(encoded(&copy), [0u8; 32]);
    assert_eq!(encoded(&key), bytes);
    assert_hidden(&format!("{key:?}"), &bytes);
}

#[test]
fn token_zeroizes_and_is_redacted() {
    assert_zod::<Token>();
    let bytes = secret(11);
    let token = Token(bytes);
    let mut copy = token.clone();
    copy.zeroize();
    assert_eq!(copy.0, [0u8; 32]);
    assert_eq!(token.0, bytes);
    assert_hidden(&format!("{token:?}"), &bytes);
}

#[test]
fn box_contents_zeroize_and_are_redacted() {
    assert_zod::<BoxContents>();
    let (a, b, c) = (secret(13), secret(17), secret(19));
    let contents = BoxContents { first: a, second: b, third: c };
    let mut copy = contents.clone();
    copy.zeroize();
    assert_eq!((copy.first, copy.second, copy.third), ([0; 32], [0; 32], [0; 32]));
    assert_eq!(contents.first, a);
    let shown = format!("{contents:?}");
    for bytes in [a, b, c] {
        assert_hidden(&shown, &bytes);
    }
}

#[test]
fn replica_secret_key_zeroizes_on_drop_and_is_redacted() {
    assert_zod::<ReplicaSecretKey>();
    let key = ReplicaSecretKey::from_bytes(&secret(23)).expect("a valid scalar");
    let bytes = *key.to_bytes();
    assert_eq!(bytes, secret(23));
    assert_hidden(&format!("{key:?}"), &bytes);
    // The public key is public; the secret is not in it either.
    assert_hidden(&format!("{:?}", key.public_key()), &bytes);
}

#[test]
fn deployer_key_is_redacted() {
    let key = DeployerKey::from_bytes(&secret(29)).expect("a valid scalar");
    let bytes = *key.to_bytes();
    assert_eq!(bytes, secret(29));
    assert_hidden(&format!("{key:?}"), &bytes);
    assert_hidden(&format!("{:?}", key.public_key()), &bytes);
}

#[test]
fn opened_holds_only_self_wiping_parts() {
    // `Opened` has no `Debug` at all (nothing to leak), and each of its
    // fields wipes itself on drop.
    assert_zod::<GroupKey>();
    assert_zod::<Share>();
    let opened = Opened {
        key: GroupKey::from_bytes(secret(31)),
        secret_share: Share::new(1, secret(37)),
        cancel_share: Share::new(1, secret(41)),
    };
    let mut copy = opened.clone();
    copy.key.zeroize();
    copy.secret_share.zeroize();
    copy.cancel_share.zeroize();
    assert_eq!(encoded(&copy.key), [0u8; 32]);
    assert_eq!(copy.secret_share.value(), &[0u8; 32]);
    assert_eq!(copy.cancel_share.value(), &[0u8; 32]);
    assert_eq!(opened.secret_share.value(), &secret(37));
}

// ---- ZeroizeOnDrop on the key and the box result themselves ------------------

/// Autoref probe: `zod!(T)` is whether `T: ZeroizeOnDrop`, without failing
/// to compile when it is not.
struct Probe<T>(PhantomData<T>);
trait HasZod {
    fn zod(&self) -> bool {
        true
    }
}
impl<T: ZeroizeOnDrop> HasZod for &Probe<T> {}
trait NoZod {
    fn zod(&self) -> bool {
        false
    }
}
impl<T> NoZod for Probe<T> {}
macro_rules! zod {
    ($t:ty) => {
        (&&Probe::<$t>(PhantomData)).zod()
    };
}

#[test]
fn the_probe_tells_zeroize_on_drop_apart() {
    assert!(zod!(Code));
    assert!(zod!(ReplicaSecretKey));
    assert!(!zod!(Digest));
}

#[test]
fn deployer_key_and_opened_are_zeroize_on_drop() {
    assert!(zod!(DeployerKey), "DeployerKey: no ZeroizeOnDrop");
    assert!(zod!(Opened), "Opened: no ZeroizeOnDrop");
}

// ---- constant-time equality ----------------------------------------------------

#[test]
fn codes_digests_and_shares_compare_in_constant_time() {
    ct::<Code>();
    ct::<Digest>();
    ct::<Share>();

    let (a, b) = (Code::from_bytes(secret(1)), Code::from_bytes(secret(2)));
    assert!(bool::from(a.ct_eq(&a.clone())) && a == a.clone());
    assert!(!bool::from(a.ct_eq(&b)) && a != b);

    let (a, b) = (Digest(secret(3)), Digest(secret(4)));
    assert!(bool::from(a.ct_eq(&a)) && a == a);
    assert!(!bool::from(a.ct_eq(&b)) && a != b);

    // A share is its index and its value: a difference in either is one.
    let s = Share::new(1, secret(5));
    for other in [Share::new(2, secret(5)), Share::new(1, secret(6))] {
        assert!(!bool::from(s.ct_eq(&other)) && s != other);
    }
    assert!(bool::from(s.ct_eq(&s.clone())) && s == s.clone());
}
