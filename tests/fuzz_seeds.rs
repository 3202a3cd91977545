//! The checked-in seed corpora of the fuzz targets under `fuzz/corpus/`.
//!
//! A seed that no longer decodes (because the wire format changed) silently
//! costs the fuzzer its head start, so the check below fails until the seeds
//! are regenerated with:
//!
//! ```text
//! cargo test --features std --test fuzz_seeds -- --ignored
//! ```

mod samples;

use std::path::PathBuf;

use bft_upgrade::crypto::{GroupKey, PayloadOpener, PayloadRef};
use bft_upgrade::wire::{decode, Piece};

fn corpus(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target)
}

/// The `decode_piece` seeds: valid pieces signed by the target's fixed
/// key, a small one and one at full capacity (whose length also raises
/// libFuzzer's default input size limit to the largest piece).
fn piece_seed() -> Vec<u8> {
    samples::to_bytes(&samples::piece())
}

fn full_piece_seed() -> Vec<u8> {
    samples::to_bytes(&samples::full_piece())
}

/// The `decode_payload_ref_and_open` seed: the length of the encoded
/// reference (one byte), the reference, then the whole ciphertext stream.
fn payload_seed() -> Vec<u8> {
    let (r, chunks) = samples::sealed_payload();
    let head = samples::to_bytes(&r);
    let mut seed = vec![u8::try_from(head.len()).expect("a reference is short")];
    seed.extend_from_slice(&head);
    for chunk in &chunks {
        seed.extend_from_slice(chunk);
    }
    seed
}

fn seeds() -> [(&'static str, &'static str, Vec<u8>); 3] {
    [
        ("decode_piece", "seed-valid-piece", piece_seed()),
        ("decode_piece", "seed-full-piece", full_piece_seed()),
        ("decode_payload_ref_and_open", "seed-valid-stream", payload_seed()),
    ]
}

#[test]
#[ignore = "writes the seed files; run it after a wire-format change"]
fn write_seeds() {
    for (target, name, bytes) in seeds() {
        let dir = corpus(target);
        std::fs::create_dir_all(&dir).expect("create corpus dir");
        std::fs::write(dir.join(name), bytes).expect("write seed");
    }
}

#[test]
fn checked_in_seeds_are_current() {
    for (target, name, bytes) in seeds() {
        let path = corpus(target).join(name);
        let on_disk = std::fs::read(&path).unwrap_or_default();
        assert!(
            on_disk == bytes,
            "{} is stale; regenerate it with `cargo test --features std --test fuzz_seeds -- --ignored`",
            path.display()
        );
    }
}

#[test]
fn seeds_reach_the_success_paths() {
    // The piece seeds decode and verify under the fuzz target's fixed key.
    for seed in [piece_seed(), full_piece_seed()] {
        let piece: Piece = decode(&seed).expect("seed decodes");
        piece.verify(&samples::deployer_public()).expect("seed verifies");
    }

    // The stream seed opens completely under the target's key and binding.
    let seed = payload_seed();
    let (&len, rest) = seed.split_first().expect("non-empty");
    let (head, mut stream) = rest.split_at(usize::from(len));
    let r: PayloadRef = decode(head).expect("reference decodes");
    let mut opener =
        PayloadOpener::new(&GroupKey::from_bytes(samples::PAYLOAD_KEY), &samples::binding(), &r).expect("layout");
    while let Some(want) = opener.next_chunk_len() {
        let (chunk, tail) = stream.split_at(want);
        stream = tail;
        opener.open_chunk(&mut chunk.to_vec()).expect("chunk opens");
    }
    assert!(stream.is_empty());
    opener.finish().expect("stream digest matches");
}
