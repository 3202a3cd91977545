//! A payload reference read from the front of the input, then the rest of
//! the input fed to a `PayloadOpener` as ciphertext chunks: neither the
//! layout arithmetic nor chunk opening may panic on any reference or stream.

#![no_main]

use bft_upgrade::crypto::{Binding, GroupKey, PayloadOpener, PayloadRef};
use bft_upgrade::wire::{decode, GroupId, UpgradeId};
use libfuzzer_sys::fuzz_target;

/// Bounds the work per input; a reference may describe billions of chunks.
const MAX_CHUNKS: usize = 64;

fuzz_target!(|data: &[u8]| {
    // The encoded reference is a prefix of the input; its length is the
    // first byte, so the fuzzer controls where the chunk stream starts.
    let Some((&len, rest)) = data.split_first() else {
        return;
    };
    let Some((head, mut stream)) = rest.split_at_checked(usize::from(len)) else {
        return;
    };
    let Ok(r) = decode::<PayloadRef>(head) else {
        return;
    };
    let _ = r.plaintext_len();
    let binding = Binding::group(UpgradeId([1; 16]), GroupId(3));
    let Ok(mut opener) = PayloadOpener::new(&GroupKey::from_bytes([7; 32]), &binding, &r) else {
        return;
    };

    for _ in 0..MAX_CHUNKS {
        let Some(want) = opener.next_chunk_len() else {
            break;
        };
        // A short tail is still offered, so the wrong-length path is hit.
        let take = want.min(stream.len());
        let (chunk, tail) = stream.split_at(take);
        stream = tail;
        let mut buf = chunk.to_vec();
        if opener.open_chunk(&mut buf).is_err() {
            return;
        }
    }
    let _ = opener.finish();
});
