//! Criterion benchmarks of the protocol's hot paths, each next to the crypto
//! floor it is measured against (issue 9, part 1).
//!
//! ```sh
//! cargo bench --bench protocol                 # full run (about 5 minutes)
//! cargo bench --bench protocol -- --quick      # reduced
//! cargo bench --bench protocol -- --test       # each routine once (CI smoke)
//! ```
//!
//! Times are per-thread CPU time (`CLOCK_THREAD_CPUTIME_ID`), not wall
//! time: the machines this runs on are shared, and time spent descheduled
//! would land on whichever benchmark ran during a burst of other work.
//!
//! Results land in `target/criterion/`; `examples/scale.rs` reads them
//! (by each benchmark's full id, so the ids below are an interface) into
//! `BENCHMARKS.md` and `benchmarks.json`.
//!
//! Groups:
//! - `deployer/bundle/{n}`: one group's bundle (`UpgradePlan::new` over the
//!   group and `piece()`), throughput per replica; `floor/deployer_seal`:
//!   one ECDH + one HKDF-SHA256 + one ChaCha20-Poly1305 seal of a box.
//! - `replica/path/{n}`: a replica executing `PrepareInstall` (signature
//!   check and box opening, through `WithKey`) then `CommitInstall`;
//!   `floor/replica_open`: one ECDSA verify + one ECDH + one HKDF + one AEAD
//!   open of 96 bytes, with the same crates.
//! - `diag/*`: pieces of the gap between a path and its floor.
//! - `installer/group/{n}`: an installer taking every replica's answer of one
//!   group (share checks, reconstruction, the `D(τ)` check).
//! - `guardian/take_piece`, `guardian/release`.
//! - `shamir_split/{ours,vsss}/{n}`, `shamir_reconstruct/{ours,vsss}/{n}`
//!   with `k = f + 1`, `f = (n - 1) / 3`; ours stops at `MAX_SHARES` (64).
//! - `payload_open/{ours,hash_plus_aead,raw_aead}/{chunk}`: opening a 1 MiB
//!   payload; `hash_plus_aead` is the opener's floor (SHA-256 of the
//!   ciphertext and the AEAD open, the two things it must do to each byte).

use std::hint::black_box;
use std::time::Duration;

use bft_upgrade::crypto::{
    reconstruct, split, Binding, Code, DeployerKey, GroupKey, PayloadOpener, PayloadSealer, PublicKey,
    ReplicaSecretKey, ShareKind, CHUNK_TAG_LEN, MAX_SHARES,
};
use bft_upgrade::deployer::{Deployer, GroupTarget, UpgradePlan};
use bft_upgrade::group::{AuthorizedDeployer, GroupConfig, GroupReplica, Neighbor, Verdict};
use bft_upgrade::guardian::{GuardedGroup, Guardian, GuardianConfig, GuardianEffect};
use bft_upgrade::installer::{Installer, InstallerOptions};
use bft_upgrade::step::{Instant, Peer};
use bft_upgrade::wire::{
    Answer, DeployerId, GroupId, GuardianSet, Membership, Message, Operation, Piece, Reply, ResourceId,
};
use chacha20::ChaCha20Rng;
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag};
use cpu_time::ThreadTime;
use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Throughput};
use hkdf::Hkdf;
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::elliptic_curve::Generate;
use p256::Scalar;
use rand_core::SeedableRng;
use sha2::{Digest as _, Sha256};
use vsss_rs::{IdentifierPrimeField, PrimeFieldShare, ReadableShareSet};

mod common;
use common::small_payload;

/// Criterion measuring this thread's CPU time.
type Criterion = criterion::Criterion<ThreadCpu>;

/// Per-thread CPU time as a criterion measurement.
struct ThreadCpu;

impl Measurement for ThreadCpu {
    type Intermediate = ThreadTime;
    type Value = Duration;

    fn start(&self) -> ThreadTime {
        ThreadTime::now()
    }
    fn end(&self, start: ThreadTime) -> Duration {
        start.elapsed()
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, d: &Duration) -> f64 {
        d.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuFormatter
    }
}

/// Values in ns, shown as criterion shows wall time.
struct CpuFormatter;

impl ValueFormatter for CpuFormatter {
    fn scale_values(&self, typical_ns: f64, values: &mut [f64]) -> &'static str {
        let (factor, unit) = match typical_ns {
            t if t < 1e3 => (1.0, "ns"),
            t if t < 1e6 => (1e-3, "µs"),
            t if t < 1e9 => (1e-6, "ms"),
            _ => (1e-9, "s"),
        };
        values.iter_mut().for_each(|v| *v *= factor);
        unit
    }

    fn scale_throughputs(&self, _typical: f64, throughput: &Throughput, values: &mut [f64]) -> &'static str {
        let (count, per, unit) = match *throughput {
            Throughput::Bytes(b) | Throughput::BytesDecimal(b) => (b, 1048576.0, "MiB/s"),
            Throughput::Elements(e) | Throughput::ElementsAndBytes { elements: e, .. } => (e, 1.0, "elem/s"),
            Throughput::Bits(b) => (b, 1.0, "b/s"),
        };
        values.iter_mut().for_each(|v| *v = count as f64 * 1e9 / *v / per);
        unit
    }

    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

/// Group sizes of the per-group benchmarks.
const SIZES: [usize; 3] = [4, 16, 64];
/// Group sizes of the Shamir comparison.
const SHAMIR_SIZES: [usize; 4] = [4, 16, 64, 100];
/// The deployer's genesis version code at every group.
const GENESIS: [u8; 32] = [1; 32];
/// HKDF salt of box keys: the same length as the crate's label.
const BOX_LABEL: &[u8] = b"bft-upgrade/v1/box-key";

fn rng(tag: u8) -> ChaCha20Rng {
    ChaCha20Rng::from_seed([tag; 32])
}

/// `f` for a group of `n`, and the threshold `f + 1`.
fn threshold(n: usize) -> usize {
    (n - 1) / 3 + 1
}

/// One group, its keys, a deployer, a plan over the group and its piece.
struct Fixture {
    keys: Vec<ReplicaSecretKey>,
    membership: Membership,
    deployer: Deployer,
    piece: Piece,
    trigger: Code,
}

fn group_keys(rng: &mut ChaCha20Rng, n: usize, group: GroupId) -> (Vec<ReplicaSecretKey>, Membership) {
    let keys: Vec<ReplicaSecretKey> = (0..n).map(|_| ReplicaSecretKey::random(rng)).collect();
    let pks: Vec<PublicKey> = keys.iter().map(ReplicaSecretKey::public_key).collect();
    (keys, Membership::new(group, &pks).expect("membership"))
}

fn fixture(n: usize, guardians: Option<&GuardianSet>) -> Fixture {
    let mut rng = rng(n as u8);
    let group = GroupId(1);
    let (keys, membership) = group_keys(&mut rng, n, group);
    let deployer = Deployer::new(DeployerId(1), DeployerKey::random(&mut rng));
    let ids = [group];
    let plan = UpgradePlan::new(&mut rng, deployer.id(), 1, &ids).expect("plan");
    let target = GroupTarget {
        membership: &membership,
        resources: &[ResourceId(1)],
        prev_version: &Code::from_bytes(GENESIS),
        guardians,
        payload: small_payload(&plan, group),
        next: None,
    };
    let piece = plan.piece(&deployer, &target).expect("piece");
    let trigger = plan.trigger_code().clone();
    Fixture { keys, membership, deployer, piece, trigger }
}

fn group_config(f: &Fixture) -> GroupConfig {
    let mut deployers = heapless::Vec::new();
    let genesis = Code::from_bytes(GENESIS);
    deployers.push(AuthorizedDeployer { id: f.deployer.id(), key: f.deployer.public_key(), genesis }).expect("cap");
    let mut neighbors = heapless::Vec::new();
    for g in [2, 3] {
        neighbors.push(Neighbor { group: GroupId(g), f: 1 }).expect("cap");
    }
    GroupConfig {
        membership: f.membership.clone(),
        deployers,
        neighbors,
        retry_ms: 200,
        proactive: true,
        guardians: None,
        sequencer: None,
    }
}

// ----- deployer -----------------------------------------------------------

fn deployer(c: &mut Criterion) {
    let mut g = c.benchmark_group("deployer");
    for n in SIZES {
        let f = fixture(n, None);
        let payload = f.piece.header.payload;
        let genesis = Code::from_bytes(GENESIS);
        let ids = [GroupId(1)];
        let mut r = rng(7);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::new("bundle", n), |b| {
            b.iter(|| {
                let plan = UpgradePlan::new(&mut r, f.deployer.id(), 1, &ids).expect("plan");
                let target = GroupTarget {
                    membership: &f.membership,
                    resources: &[ResourceId(1)],
                    prev_version: &genesis,
                    guardians: None,
                    payload,
                    next: None,
                };
                black_box(plan.piece(&f.deployer, &target).expect("piece"))
            })
        });
    }
    g.finish();
}

/// Per replica, what a deployer cannot avoid: ECDH with the replica's key,
/// the box key derivation and the box's seal.
fn floor_deployer(c: &mut Criterion) {
    let mut r = rng(9);
    let recipient = p256::PublicKey::from_secret_scalar(&p256::NonZeroScalar::generate_from_rng(&mut r));
    let ephemeral = p256::ecdh::EphemeralSecret::generate_from_rng(&mut r);
    let eph_bytes = [2u8; 33];
    let aad = [3u8; 22];
    c.bench_function("floor/deployer_seal", |b| {
        b.iter(|| {
            let shared = ephemeral.diffie_hellman(black_box(&recipient));
            let hk = Hkdf::<Sha256>::new(Some(BOX_LABEL), shared.raw_secret_bytes());
            let mut key = [0u8; 32];
            hk.expand_multi_info(&[&aad, &eph_bytes], &mut key).expect("hkdf");
            let cipher = ChaCha20Poly1305::new(&Key::from(key));
            let mut buf = [5u8; 96];
            let tag = cipher.encrypt_inout_detached(&Nonce::default(), &aad, buf.as_mut_slice().into()).expect("seal");
            black_box((buf, tag))
        })
    });
}

// ----- replica ------------------------------------------------------------

fn replica(c: &mut Criterion) {
    let mut g = c.benchmark_group("replica");
    for n in SIZES {
        let f = fixture(n, None);
        let fresh = GroupReplica::new(group_config(&f), 0).expect("replica");
        let prepare = Operation::PrepareInstall(f.piece.clone());
        let commit = Operation::commit_install(f.piece.header.upgrade, f.trigger.clone());
        let installer = Peer::Installer(1);
        // Sanity: the path does what it says.
        {
            let mut r = fresh.clone();
            let s = r.handle_ordered(Instant(0), installer, &prepare, &f.keys[0], |_| Verdict::Accept);
            assert!(s
                .messages
                .iter()
                .any(|m| matches!(&m.message, Message::Answer(a) if matches!(a.reply, Reply::Accepted(_)))));
            let s = r.handle_ordered(Instant(1), installer, &commit, &f.keys[0], |_| Verdict::Accept);
            assert!(s.effects.iter().any(|e| matches!(e, bft_upgrade::group::GroupEffect::Apply { key: Some(_), .. })));
        }
        g.bench_function(BenchmarkId::new("path", n), |b| {
            b.iter_batched(
                || fresh.clone(),
                |mut r| {
                    let s1 = r.handle_ordered(Instant(0), installer, &prepare, &f.keys[0], |_| Verdict::Accept);
                    let s2 = r.handle_ordered(Instant(1), installer, &commit, &f.keys[0], |_| Verdict::Accept);
                    (r, s1, s2)
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

/// One ECDSA verify, one ECDH, one HKDF, one AEAD open of 96 bytes: the
/// cryptography a replica's path cannot avoid, with keys already parsed.
fn floor_replica(c: &mut Criterion) {
    let mut r = rng(11);
    let signing = p256::ecdsa::SigningKey::generate_from_rng(&mut r);
    let verifying = *signing.verifying_key();
    let prehash = [0x42u8; 32];
    let sig: p256::ecdsa::Signature =
        p256::ecdsa::signature::hazmat::PrehashSigner::sign_prehash(&signing, &prehash).expect("sign");
    let secret = p256::NonZeroScalar::generate_from_rng(&mut r);
    let ephemeral = p256::PublicKey::from_secret_scalar(&p256::NonZeroScalar::generate_from_rng(&mut r));
    let eph_bytes = [2u8; 33];
    let aad = [3u8; 22];
    let box_key = |shared: &[u8]| {
        let hk = Hkdf::<Sha256>::new(Some(BOX_LABEL), shared);
        let mut key = [0u8; 32];
        hk.expand_multi_info(&[&aad, &eph_bytes], &mut key).expect("hkdf");
        ChaCha20Poly1305::new(&Key::from(key))
    };
    // A box that opens, so the floor pays for the decryption too.
    let shared = p256::ecdh::diffie_hellman(secret, ephemeral.as_affine());
    let mut sealed = [7u8; 96];
    let tag: Tag = box_key(shared.raw_secret_bytes())
        .encrypt_inout_detached(&Nonce::default(), &aad, sealed.as_mut_slice().into())
        .expect("seal");
    c.bench_function("floor/replica_open", |b| {
        b.iter(|| {
            verifying.verify_prehash(black_box(&prehash), &sig).expect("verify");
            let shared = p256::ecdh::diffie_hellman(secret, black_box(&ephemeral).as_affine());
            let cipher = box_key(shared.raw_secret_bytes());
            let mut buf = sealed;
            cipher.decrypt_inout_detached(&Nonce::default(), &aad, buf.as_mut_slice().into(), &tag).expect("open");
            black_box(buf)
        })
    });
}

/// What the paths do beyond their floors, one by one.
fn diag(c: &mut Criterion) {
    let mut r = rng(13);
    let pk = PublicKey::from_sec1(
        &p256::PublicKey::from_secret_scalar(&p256::NonZeroScalar::generate_from_rng(&mut r)).to_sec1_bytes(),
    )
    .expect("point");
    let compressed = pk.to_compressed();
    c.bench_function("diag/sec1_decompress", |b| {
        b.iter(|| black_box(p256::PublicKey::from_sec1_bytes(black_box(&compressed)).expect("point")))
    });
    // A fixed-base multiplication (ephemeral keys, ECDSA signing): with
    // `std` the crate turns on p256's precomputed generator table.
    let scalar = p256::NonZeroScalar::generate_from_rng(&mut r);
    c.bench_function("diag/mul_by_generator", |b| {
        b.iter(|| {
            black_box(<p256::ProjectivePoint as p256::elliptic_curve::group::Group>::mul_by_generator(black_box(
                &*scalar,
            )))
        })
    });
    c.bench_function("diag/verifying_key_from_sec1", |b| {
        b.iter(|| black_box(p256::ecdsa::VerifyingKey::from_sec1_bytes(black_box(&compressed)).expect("point")))
    });
    let mut g = c.benchmark_group("diag");
    for n in SIZES {
        let f = fixture(n, None);
        g.bench_function(BenchmarkId::new("piece_header_digest", n), |b| {
            b.iter(|| black_box(&f.piece.header).digest())
        });
        g.bench_function(BenchmarkId::new("open_for", n), |b| {
            b.iter(|| black_box(f.piece.open_for(0, &f.keys[0]).expect("open")))
        });
        g.bench_function(BenchmarkId::new("piece_verify", n), |b| {
            b.iter(|| f.piece.verify(&f.deployer.public_key()).expect("verify"))
        });
        g.bench_function(BenchmarkId::new("member_keys_parse", n), |b| {
            b.iter(|| {
                for pk in &f.membership.replicas {
                    black_box(p256::PublicKey::from_sec1_bytes(&pk.to_compressed()).expect("point"));
                }
            })
        });
    }
    g.finish();
}

// ----- installer ----------------------------------------------------------

fn installer(c: &mut Criterion) {
    let mut g = c.benchmark_group("installer");
    for n in SIZES {
        let f = fixture(n, None);
        let h = &f.piece.header;
        let header = bft_upgrade::wire::UpgradeHeader {
            upgrade: h.upgrade,
            order: h.order_key(),
            trigger_digest: h.trigger_digest,
            cancel_digest: h.cancel_digest,
            groups: 1,
        };
        let fresh: Installer<64, 512> =
            Installer::new(1, header, &[(h.group, h.f)], InstallerOptions::default()).expect("installer");
        // Every replica's genuine answer, in replica order.
        let answers: Vec<(Peer, Answer)> = (0..n)
            .map(|i| {
                let opened = f.piece.open_for(i, &f.keys[i]).expect("open");
                let from = Peer::Replica { group: h.group, index: i as u8 };
                let a = Answer {
                    upgrade: h.upgrade,
                    group: h.group,
                    replica: i as u8,
                    reply: Reply::Accepted(opened.secret_share),
                };
                (from, a)
            })
            .collect();
        {
            let mut i = fresh.clone();
            for (from, a) in &answers {
                let _ = i.handle_answer(Instant(0), *from, a, &f.piece).expect("answer");
            }
            assert!(i.decided().is_some(), "the installer decides on one group's shares");
        }
        g.throughput(Throughput::Elements(1));
        g.bench_function(BenchmarkId::new("group", n), |b| {
            b.iter_batched(
                || Box::new(fresh.clone()),
                |mut i| {
                    for (from, a) in &answers {
                        let _ = black_box(i.handle_answer(Instant(0), *from, a, &f.piece).expect("answer"));
                    }
                    i
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

// ----- guardian -----------------------------------------------------------

fn guardian(c: &mut Criterion) {
    let mut r = rng(17);
    let gkeys: Vec<ReplicaSecretKey> = (0..4).map(|_| ReplicaSecretKey::random(&mut r)).collect();
    let members: Vec<(u32, PublicKey)> =
        gkeys.iter().enumerate().map(|(i, k)| (i as u32 + 1, k.public_key())).collect();
    let set = GuardianSet::new(&members).expect("set");
    let f = fixture(4, Some(&set));
    let h = &f.piece.header;
    let mut deployers = heapless::Vec::new();
    deployers.push((f.deployer.id(), f.deployer.public_key())).expect("cap");
    let mut groups = heapless::Vec::new();
    groups.push(GuardedGroup { group: h.group, members: f.membership.digest() }).expect("cap");
    let empty: Guardian<64> = Guardian::new(GuardianConfig { id: 1, deployers, groups });
    let from = Peer::Replica { group: h.group, index: 0 };
    c.bench_function("guardian/take_piece", |b| {
        b.iter_batched(
            || Box::new(empty.clone()),
            |mut g| {
                let _ = black_box(g.handle_piece(Instant(0), from, &f.piece, &gkeys[0]));
                g
            },
            BatchSize::SmallInput,
        )
    });
    let mut holding = empty.clone();
    let _ = holding.handle_piece(Instant(0), from, &f.piece, &gkeys[0]);
    // f + 1 = 2 replicas ask for the s_g share, proving membership.
    let requests: Vec<(Peer, Message)> = (0..2usize)
        .map(|i| {
            let (_, token) = f.piece.open_token(i, &f.keys[i]).expect("token");
            let m = Message::GuardianRequest {
                upgrade: h.upgrade,
                group: h.group,
                replica: i as u8,
                kind: ShareKind::Secret,
                token,
            };
            (Peer::Replica { group: h.group, index: i as u8 }, m)
        })
        .collect();
    let release = |g: &mut Guardian<64>| {
        let mut persist = false;
        for (from, m) in &requests {
            let s = g.handle_message(Instant(0), *from, m);
            persist |= s.effects.iter().any(|e| matches!(e, GuardianEffect::Persist { .. }));
        }
        assert!(persist);
        g.persisted(Instant(0), h.upgrade, h.group)
    };
    assert_eq!(release(&mut holding.clone()).messages.len(), 2, "two shares go out");
    c.bench_function("guardian/release", |b| {
        b.iter_batched(
            || Box::new(holding.clone()),
            |mut g| {
                let s = release(&mut g);
                (g, s)
            },
            BatchSize::SmallInput,
        )
    });
}

// ----- Shamir -------------------------------------------------------------

fn shamir(c: &mut Criterion) {
    type VShare = PrimeFieldShare<Scalar>;
    let mut r = rng(19);
    let secret = Scalar::generate_from_rng(&mut r);
    let mut g = c.benchmark_group("shamir_split");
    for n in SHAMIR_SIZES {
        let k = threshold(n);
        if n <= MAX_SHARES {
            g.bench_function(BenchmarkId::new("ours", n), |b| {
                b.iter(|| black_box(split(black_box(&secret), k, n, &mut r).expect("split")))
            });
        }
        g.bench_function(BenchmarkId::new("vsss", n), |b| {
            let s = IdentifierPrimeField(secret);
            b.iter(|| black_box(vsss_rs::shamir::split_secret::<VShare>(k, n, black_box(&s), &mut r).expect("split")))
        });
    }
    g.finish();
    let mut g = c.benchmark_group("shamir_reconstruct");
    for n in SHAMIR_SIZES {
        let k = threshold(n);
        if n <= MAX_SHARES {
            let shares = split(&secret, k, n, &mut r).expect("split");
            assert_eq!(reconstruct(&shares[..k]).expect("reconstruct"), secret);
            g.bench_function(BenchmarkId::new("ours", n), |b| {
                b.iter(|| black_box(reconstruct(black_box(&shares[..k])).expect("reconstruct")))
            });
        }
        let shares =
            vsss_rs::shamir::split_secret::<VShare>(k, n, &IdentifierPrimeField(secret), &mut r).expect("split");
        let set: &[VShare] = &shares[..k];
        assert_eq!(ReadableShareSet::combine(&set).expect("combine").0, secret);
        g.bench_function(BenchmarkId::new("vsss", n), |b| {
            b.iter(|| black_box(ReadableShareSet::combine(black_box(&set)).expect("combine")))
        });
    }
    g.finish();
}

// ----- payload ------------------------------------------------------------

/// Size of the payload opened per iteration.
const PAYLOAD: usize = 1 << 20;

fn payload(c: &mut Criterion) {
    let mut g = c.benchmark_group("payload_open");
    g.throughput(Throughput::Bytes(PAYLOAD as u64));
    for chunk in [4096usize, 65536] {
        let key = GroupKey::from_bytes([9; 32]);
        let binding = Binding::group(bft_upgrade::wire::UpgradeId([1; 16]), GroupId(1));
        let plain: Vec<u8> = (0..PAYLOAD).map(|i| i as u8).collect();
        // Ours: the chunked stream, as a deployer seals it.
        let mut sealer = PayloadSealer::new(&key, &binding, chunk as u32).expect("sealer");
        let mut ours = Vec::with_capacity(PAYLOAD + PAYLOAD / chunk * CHUNK_TAG_LEN);
        let mut buf = vec![0u8; chunk + CHUNK_TAG_LEN];
        let count = PAYLOAD / chunk;
        for (i, p) in plain.chunks(chunk).enumerate() {
            buf[..p.len()].copy_from_slice(p);
            ours.extend_from_slice(sealer.seal_chunk(&mut buf, p.len(), i + 1 == count).expect("seal"));
        }
        let reference = sealer.finish().expect("finish");
        // Raw: the same buffer layout, each chunk sealed with one AEAD call.
        let raw_cipher = ChaCha20Poly1305::new(&Key::from([9u8; 32]));
        let mut raw = Vec::with_capacity(ours.len());
        for (i, p) in plain.chunks(chunk).enumerate() {
            let mut body = p.to_vec();
            let tag =
                raw_cipher.encrypt_inout_detached(&nonce(i as u64), &[], body.as_mut_slice().into()).expect("seal");
            raw.extend_from_slice(&body);
            raw.extend_from_slice(&tag);
        }
        assert_eq!(raw.len(), ours.len());
        let full = chunk + CHUNK_TAG_LEN;
        g.bench_function(BenchmarkId::new("ours", chunk), |b| {
            b.iter_batched_ref(
                || ours.clone(),
                |ct| {
                    let mut o = PayloadOpener::new(&key, &binding, &reference).expect("opener");
                    for c in ct.chunks_mut(full) {
                        black_box(o.open_chunk(c).expect("open"));
                    }
                    o.finish().expect("digest");
                },
                BatchSize::LargeInput,
            )
        });
        // The opener's floor: what it must do to every byte, with the same
        // crates: SHA-256 over the ciphertext (the piece's digest covers
        // it) and the AEAD open, one after the other.
        g.bench_function(BenchmarkId::new("hash_plus_aead", chunk), |b| {
            b.iter_batched_ref(
                || raw.clone(),
                |ct| {
                    let mut h = Sha256::new();
                    for (i, c) in ct.chunks_mut(full).enumerate() {
                        h.update(&*c);
                        let (body, tag) = c.split_at_mut(chunk);
                        let tag = Tag::try_from(&*tag).expect("tag");
                        raw_cipher.decrypt_inout_detached(&nonce(i as u64), &[], body.into(), &tag).expect("open");
                        black_box(body);
                    }
                    black_box(h.finalize());
                },
                BatchSize::LargeInput,
            )
        });
        g.bench_function(BenchmarkId::new("raw_aead", chunk), |b| {
            b.iter_batched_ref(
                || raw.clone(),
                |ct| {
                    for (i, c) in ct.chunks_mut(full).enumerate() {
                        let (body, tag) = c.split_at_mut(chunk);
                        let tag = Tag::try_from(&*tag).expect("tag");
                        raw_cipher.decrypt_inout_detached(&nonce(i as u64), &[], body.into(), &tag).expect("open");
                        black_box(body);
                    }
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

fn nonce(i: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&i.to_be_bytes());
    Nonce::from(n)
}

fn config() -> Criterion {
    criterion::Criterion::default()
        .with_measurement(ThreadCpu)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(4))
}

criterion_group! {
    name = benches;
    config = config();
    targets = floor_replica, replica, floor_deployer, deployer, diag, installer, guardian, shamir, payload
}
criterion_main!(benches);
