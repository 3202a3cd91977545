//! The group-replica role: replica 0 of a group of `N` (4, then 16) takes
//! the fixed piece through `PrepareInstall` (verify, open its box, release
//! its `s_g` share) and `CommitInstall(τ)` (accept the commit), then opens
//! the payload; and, on the same inputs, the baseline: one ECDSA verify and
//! one ECDH.

use bft_upgrade::crypto::{
    shared_secret, Binding, GroupKey, PayloadOpener, PayloadRef, ReplicaSecretKey, CHUNK_TAG_LEN,
};
use bft_upgrade::group::{GroupConfig, GroupEffect, GroupReplica, Verdict};
use bft_upgrade::step::{Instant, Peer, Step};
use bft_upgrade::wire::{self, Answer, Finish, Message, Operation, Piece, Reply, UpgradeId, MAX_REPLICAS};
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use static_cell::StaticCell;

use crate::meter::Meter;
use crate::{counted_phase, ensure, phase, report, Context, Failure};

macro_rules! bundle {
    ($name:literal) => {
        include_bytes!(concat!(env!("OUT_DIR"), "/", $name))
    };
}

/// One group size's part of the bundle.
struct Bundle {
    n: usize,
    config: &'static [u8],
    key: &'static [u8; 32],
    prepare: &'static [u8],
    commit: &'static [u8],
    payload: &'static [u8],
}

const BUNDLES: [Bundle; 2] = [
    Bundle {
        n: 4,
        config: bundle!("group4_config.bin"),
        key: bundle!("group4_key.bin"),
        prepare: bundle!("group4_piece.bin"),
        commit: bundle!("group4_commit.bin"),
        payload: bundle!("group4_payload.bin"),
    },
    Bundle {
        n: 16,
        config: bundle!("group16_config.bin"),
        key: bundle!("group16_key.bin"),
        prepare: bundle!("group16_piece.bin"),
        commit: bundle!("group16_commit.bin"),
        payload: bundle!("group16_payload.bin"),
    },
];

static BUNDLES_REF: &[Bundle] = &BUNDLES;

const PLAIN: &[u8] = bundle!("payload_plain.bin");

/// The large values live in static memory, not on the stack.
struct Slots {
    replica: Option<GroupReplica>,
    op: Option<Operation>,
}

static SLOTS: StaticCell<Slots> = StaticCell::new();

/// The installer the operations come from.
const ORIGIN: Peer = Peer::Installer(1);

pub fn run(meter: &Meter) -> Result<(), Failure> {
    report!("size.GroupReplica", core::mem::size_of::<GroupReplica>());
    report!("size.GroupConfig", core::mem::size_of::<GroupConfig>());
    report!("size.Operation", core::mem::size_of::<Operation>());
    report!("size.Step<GroupEffect>", core::mem::size_of::<Step<GroupEffect>>());
    report!("size.Message", core::mem::size_of::<Message>());
    {
        use bft_upgrade::capacity as c;
        report!("cap.MAX_REPLICAS", MAX_REPLICAS);
        report!("cap.MAX_GUARDIANS", c::MAX_GUARDIANS);
        report!("cap.MAX_RESOURCES", c::MAX_RESOURCES);
        report!("cap.MAX_IN_FLIGHT", c::MAX_IN_FLIGHT);
        report!("cap.HISTORY", c::HISTORY);
        report!("cap.MAX_NEIGHBORS", c::MAX_NEIGHBORS);
        report!("cap.MAX_ATTACHED", c::MAX_ATTACHED);
        report!("cap.MAX_DIFFUSING", c::MAX_DIFFUSING);
        report!("cap.MAX_GUARDED", c::MAX_GUARDED);
    }
    let slots = SLOTS.init_with(|| Slots { replica: None, op: None });
    let bundle_bytes: usize = BUNDLES
        .iter()
        .map(|b| b.config.len() + b.key.len() + b.prepare.len() + b.commit.len() + b.payload.len())
        .sum::<usize>()
        + PLAIN.len();
    report!("bundle.bytes", bundle_bytes);
    for b in BUNDLES_REF {
        one_group(meter, slots, b)?;
    }
    Ok(())
}

fn one_group(meter: &Meter, slots: &mut Slots, b: &'static Bundle) -> Result<(), Failure> {
    let n = b.n;
    hprintln_n(n, "bundle.prepare_bytes", b.prepare.len());
    let key = ReplicaSecretKey::from_bytes(b.key).or_fail("replica key")?;

    // Setup: the replica and the operation go into static slots.
    let replica = phase(meter, &name(n, "new"), || new_replica(&mut slots.replica, b))?;
    let op = phase(meter, &name(n, "decode_piece"), || decode_prepare(&mut slots.op, b))?;
    let Operation::PrepareInstall(piece) = &*op else { return Err("not a PrepareInstall") };
    let (upgrade, group) = (piece.header.upgrade, piece.header.group);

    // Where prepare's time goes, and the baseline, on the same piece.
    phase(meter, &name(n, "baseline"), || baseline(meter, b, piece, &key))?;
    let (deployer, digest, signature) = (deployer_key(b)?, piece.header.digest().0, piece.signature.to_bytes());
    phase(meter, &name(n, "bare_verify"), || bare_verify(&deployer, &digest, &signature))?;

    // One prepare + release + commit.
    let t_prepare = counted_phase(meter, &name(n, "prepare"), || prepare(replica, op, &key));
    t_prepare.1?;
    decode_commit(op, b)?;
    let t_commit = counted_phase(meter, &name(n, "commit"), || commit(replica, op, &key));
    let (group_key, payload) = t_commit.1?;
    ensure(upgrade == payload.0, "commit: another upgrade")?;
    hprintln_n(n, "instr.prepare_release_commit", t_prepare.0 + t_commit.0);

    let binding = Binding::group(upgrade, group);
    phase(meter, &name(n, "open_payload"), || open_payload(&group_key, &binding, &payload.1, b))
}

/// `GroupReplica::new` on the decoded configuration, into `slot`.
#[inline(never)]
fn new_replica<'a>(slot: &'a mut Option<GroupReplica>, b: &Bundle) -> Result<&'a mut GroupReplica, Failure> {
    *slot = None;
    let config: GroupConfig = wire::decode(b.config).or_fail("decode config")?;
    ensure(config.membership.n() == b.n, "membership size")?;
    Ok(slot.insert(GroupReplica::new(config, 0).or_fail("GroupReplica::new")?))
}

/// Decodes the piece into `slot` as a `PrepareInstall` operation.
#[inline(never)]
fn decode_prepare<'a>(slot: &'a mut Option<Operation>, b: &Bundle) -> Result<&'a mut Operation, Failure> {
    // In place (`wire::decode_into`): a piece decoded by value is copied
    // up through every level of the decoder, five or six pieces of stack.
    let op = slot.get_or_insert_with(|| Operation::PrepareInstall(Piece::default()));
    if !matches!(op, Operation::PrepareInstall(_)) {
        *op = Operation::PrepareInstall(Piece::default());
    }
    let Operation::PrepareInstall(piece) = op else { return Err("not a PrepareInstall") };
    wire::decode_into(b.prepare, piece).or_fail("decode piece")?;
    Ok(op)
}

/// Decodes the `CommitInstall` (a `Finish`, as it travels) into the same slot.
#[inline(never)]
fn decode_commit(op: &mut Operation, b: &Bundle) -> Result<(), Failure> {
    let commit: Finish = wire::decode(b.commit).or_fail("decode commit")?;
    *op = Operation::from(commit);
    Ok(())
}

/// `PrepareInstall`: verify, open the box, release the `s_g` share.
#[inline(never)]
fn prepare(replica: &mut GroupReplica, op: &Operation, key: &ReplicaSecretKey) -> Result<(), Failure> {
    let step = replica.handle_ordered(Instant(0), ORIGIN, op, key, |_| Verdict::Accept);
    ensure(step.faults.is_empty(), "prepare: faults")?;
    let released = step.messages.iter().any(|m| {
        m.to == ORIGIN
            && matches!(&m.message, Message::Answer(Answer { reply: Reply::Accepted(s), replica: 0, .. }) if s.index() == 1)
    });
    ensure(released, "prepare: no Accepted share to the installer")?;
    let Operation::PrepareInstall(piece) = op else { return Err("not a PrepareInstall") };
    ensure(replica.holds(piece.header.upgrade) == Some(true), "prepare: piece not in A")
}

/// `CommitInstall(τ)`: the commit, with the key to open the payload.
#[inline(never)]
fn commit(
    replica: &mut GroupReplica,
    op: &Operation,
    key: &ReplicaSecretKey,
) -> Result<(GroupKey, (UpgradeId, PayloadRef)), Failure> {
    let step = replica.handle_ordered(Instant(1), ORIGIN, op, key, |_| Verdict::Accept);
    ensure(step.faults.is_empty(), "commit: faults")?;
    ensure(replica.version() == 1, "commit: version did not advance")?;
    step.effects
        .iter()
        .find_map(|e| match e {
            GroupEffect::Apply { upgrade, key: Some(k), payload, .. } => Some((k.clone(), (*upgrade, *payload))),
            _ => None,
        })
        .or_fail("commit: no Apply effect with the key")
}

/// Times the parts of prepare and the baseline (one ECDSA verify and one
/// ECDH) on this piece's inputs.
#[inline(never)]
fn baseline(meter: &Meter, b: &Bundle, piece: &Piece, key: &ReplicaSecretKey) -> Result<(), Failure> {
    let (n, h) = (b.n, &piece.header);
    let deployer = {
        // The first (only) authorized deployer signed the piece; its key is
        // in the config, which the replica holds privately: take it from
        // the bundle instead.
        let config: GroupConfig = wire::decode(b.config).or_fail("decode config")?;
        config.deployers.first().or_fail("deployer")?.key
    };
    let (t, digest) = meter.measure(|| h.digest());
    hprintln_n(n, "instr.header_digest", t);
    let (t, ok) = meter.measure(|| piece.verify(&deployer).is_ok());
    ensure(ok, "baseline: piece does not verify")?;
    hprintln_n(n, "instr.piece_verify", t);
    let (t, opened) = meter.measure(|| piece.open_for(0, key));
    opened.or_fail("baseline: box does not open")?;
    hprintln_n(n, "instr.open_for", t);

    // Crate level: the signature check and ECDH as the crate calls them
    // (each parses its compressed point).
    let (t_verify, ok) = meter.measure(|| piece.signature.verify(&deployer, &digest).is_ok());
    ensure(ok, "baseline: signature")?;
    let (t_ecdh, shared) = meter.measure(|| shared_secret(key, &h.ephemeral));
    shared.or_fail("baseline: ecdh")?;
    hprintln_n(n, "instr.crate_verify", t_verify);
    hprintln_n(n, "instr.crate_ecdh", t_ecdh);

    // Bare p256: keys parsed beforehand.
    let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&deployer.to_compressed()).or_fail("vk")?;
    let sig_bytes = piece.signature.to_bytes();
    let sig = p256::ecdsa::Signature::from_slice(&sig_bytes).or_fail("sig")?;
    let eph = p256::PublicKey::from_sec1_bytes(&h.ephemeral.to_compressed()).or_fail("eph")?;
    let secret = p256::SecretKey::from_bytes(&(*key.to_bytes()).into()).or_fail("secret")?;
    let scalar = secret.to_nonzero_scalar();
    let (t_verify, ok) = meter.measure(|| vk.verify_prehash(&digest.0, &sig).is_ok());
    ensure(ok, "baseline: bare verify")?;
    let (t_ecdh, _shared) = meter.measure(|| p256::ecdh::diffie_hellman(scalar, eph.as_affine()));
    hprintln_n(n, "instr.bare_verify", t_verify);
    hprintln_n(n, "instr.bare_ecdh", t_ecdh);
    Ok(())
}

/// One bare p256 verify (parsing the key and signature), for its stack.
#[inline(never)]
fn bare_verify(deployer: &[u8; 33], digest: &[u8; 32], signature: &[u8; 64]) -> Result<(), Failure> {
    let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(deployer).or_fail("vk")?;
    let sig = p256::ecdsa::Signature::from_slice(signature).or_fail("sig")?;
    vk.verify_prehash(digest, &sig).or_fail("bare verify")
}

/// The deployer's key from the bundle's configuration.
#[inline(never)]
fn deployer_key(b: &Bundle) -> Result<[u8; 33], Failure> {
    let config: GroupConfig = wire::decode(b.config).or_fail("decode config")?;
    Ok(config.deployers.first().or_fail("deployer")?.key.to_compressed())
}

/// Opens the sealed payload chunk by chunk through an 80-byte buffer.
#[inline(never)]
fn open_payload(key: &GroupKey, binding: &Binding, payload: &PayloadRef, b: &Bundle) -> Result<(), Failure> {
    let mut opener = PayloadOpener::new(key, binding, payload).or_fail("payload: opener")?;
    let mut buf = [0u8; 64 + CHUNK_TAG_LEN];
    let (mut pos, mut plain) = (0usize, 0usize);
    while let Some(len) = opener.next_chunk_len() {
        let src = b.payload.get(pos..pos + len).or_fail("payload: short")?;
        let dst = buf.get_mut(..len).or_fail("payload: chunk too large")?;
        dst.copy_from_slice(src);
        let opened = opener.open_chunk(dst).or_fail("payload: chunk does not open")?;
        ensure(PLAIN.get(plain..plain + opened.len()) == Some(opened), "payload: wrong plaintext")?;
        plain += opened.len();
        pos += len;
    }
    opener.finish().or_fail("payload: finish")?;
    ensure(plain == PLAIN.len(), "payload: wrong length")
}

fn name(n: usize, what: &str) -> heapless_name::Name {
    heapless_name::Name::new(n, what)
}

fn hprintln_n(n: usize, key: &str, value: impl core::fmt::Display) {
    cortex_m_semihosting::hprintln!("@ n{}.{} {}", n, key, value);
}

/// A phase name `n{N}.{what}` without a heap.
mod heapless_name {
    use core::fmt::Write;

    pub struct Name(heapless::String<40>);

    impl Name {
        pub fn new(n: usize, what: &str) -> Self {
            let mut s = heapless::String::new();
            let _ = write!(s, "n{n}.{what}");
            Self(s)
        }
    }

    impl core::ops::Deref for Name {
        type Target = str;
        fn deref(&self) -> &str {
            &self.0
        }
    }
}
