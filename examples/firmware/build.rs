//! Makes the fixed test bundle on the host, with the crate's own deployer
//! and a seeded ChaCha20 stream, so every build embeds the same bytes.
//!
//! Everything is written postcard-encoded into `OUT_DIR`, where the firmware
//! `include_bytes!`s it and decodes it with `bft_upgrade::wire::decode`:
//!
//! - `group{N}_*` for a group of `N` replicas (4 and 16): its `GroupConfig`,
//!   replica 0's secret key, the signed piece (for a
//!   `PrepareInstall`), the `CommitInstall` with `τ`, and the sealed payload;
//! - `payload_plain.bin`: what the payload opens to;
//! - `installer_*`: the upgrade header and the `f + 1` answers (released
//!   `s_g` shares) of the 4-replica group;
//! - `guardian_*`: a 4-replica group's piece in the custody of 4 guardians,
//!   guardian 0's configuration and key, and the `f + 1` replicas' share
//!   requests with their tokens;
//! - `client_reply.bin`: a group's reply to an external client.
//!
//! It also puts `memory.x` where the linker finds it.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

use bft_upgrade::crypto::{Binding, Code, DeployerKey, PayloadRef, PayloadSealer, ReplicaSecretKey, CHUNK_TAG_LEN};
use bft_upgrade::deployer::{Deployer, GroupTarget, UpgradePlan};
use bft_upgrade::group::{AuthorizedDeployer, GroupConfig};
use bft_upgrade::guardian::{GuardedGroup, GuardianConfig};
use bft_upgrade::wire::{
    self, Answer, Attachment, ClientReply, ClientStatus, DeployerId, Finish, GroupId, GuardianSet, Membership, Message,
    Outcome, Reply, ResourceId,
};
use chacha20::ChaCha20Rng;
use rand_core::SeedableRng;
use serde::Serialize;

/// Group sizes the group role is run with.
const GROUP_SIZES: [usize; 2] = [4, 16];
/// Plaintext chunk size of the sealed payload (the smallest allowed).
const CHUNK: usize = 64;
/// The payload: a few chunks, the last one short.
const PAYLOAD_LEN: usize = 200;

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    fs::copy(manifest.join("memory.x"), out.join("memory.x")).expect("copy memory.x");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-changed=build.rs");
    // The bundle depends on the parent crate's encoding and deployer.
    println!("cargo:rerun-if-changed=../../src");

    let plain: Vec<u8> = (0..PAYLOAD_LEN).map(|i| (i as u8).wrapping_mul(7).wrapping_add(3)).collect();
    write(&out, "payload_plain.bin", &plain);
    for n in GROUP_SIZES {
        replica_bundle(&out, n, &plain);
    }
    guardian_bundle(&out, &plain);
    client_bundle(&out);
}

fn write(out: &Path, name: &str, bytes: &[u8]) {
    fs::write(out.join(name), bytes).unwrap_or_else(|e| panic!("write {name}: {e}"));
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut buf = vec![0u8; wire::encoded_len(value)];
    let bytes = wire::encode(value, &mut buf).expect("encode").to_vec();
    bytes
}

struct Setup {
    rng: ChaCha20Rng,
    deployer: Deployer,
    membership: Membership,
    keys: Vec<ReplicaSecretKey>,
    genesis: Code,
}

fn setup(seed: u8, group: GroupId, n: usize) -> Setup {
    let mut rng = ChaCha20Rng::from_seed([seed; 32]);
    let deployer = Deployer::new(DeployerId(1), DeployerKey::random(&mut rng));
    let keys: Vec<_> = (0..n).map(|_| ReplicaSecretKey::random(&mut rng)).collect();
    let pks: Vec<_> = keys.iter().map(ReplicaSecretKey::public_key).collect();
    let membership = Membership::new(group, &pks).expect("membership");
    Setup { rng, deployer, membership, keys, genesis: Code::from_bytes([0x11; 32]) }
}

fn config(s: &Setup) -> GroupConfig {
    let mut deployers = heapless::Vec::new();
    let d = AuthorizedDeployer { id: s.deployer.id(), key: s.deployer.public_key(), genesis: s.genesis.clone() };
    deployers.push(d).expect("one deployer");
    GroupConfig {
        membership: s.membership.clone(),
        deployers,
        neighbors: heapless::Vec::new(),
        retry_ms: 100,
        proactive: false,
        guardians: None,
        sequencer: None,
    }
}

/// Seals `plain` for `group`'s piece; returns the reference and ciphertext.
fn seal(plan: &UpgradePlan<'_>, group: GroupId, plain: &[u8]) -> (PayloadRef, Vec<u8>) {
    let key = plan.group_key(group).expect("group key");
    let binding = Binding::group(plan.header().upgrade, group);
    let mut sealer = PayloadSealer::new(&key, &binding, CHUNK as u32).expect("sealer");
    let mut sealed = Vec::new();
    let mut chunks = plain.chunks(CHUNK).peekable();
    while let Some(chunk) = chunks.next() {
        let mut buf = [0u8; CHUNK + CHUNK_TAG_LEN];
        buf[..chunk.len()].copy_from_slice(chunk);
        let last = chunks.peek().is_none();
        sealed.extend_from_slice(sealer.seal_chunk(&mut buf, chunk.len(), last).expect("seal chunk"));
    }
    (sealer.finish().expect("finish"), sealed)
}

fn replica_bundle(out: &Path, n: usize, plain: &[u8]) {
    let group = GroupId(7);
    let mut s = setup(n as u8, group, n);
    let groups = [group];
    let plan = UpgradePlan::new(&mut s.rng, s.deployer.id(), 1, &groups).expect("plan");
    let (payload, sealed) = seal(&plan, group, plain);
    let target = GroupTarget {
        membership: &s.membership,
        resources: &[ResourceId(1)],
        prev_version: &s.genesis,
        guardians: None,
        payload,
        next: None,
    };
    let piece = plan.piece(&s.deployer, &target).expect("piece");
    let prefix = format!("group{n}");
    write(out, &format!("{prefix}_config.bin"), &encode(&config(&s)));
    write(out, &format!("{prefix}_key.bin"), s.keys[0].to_bytes().as_slice());
    let commit = Finish::commit_install(plan.header().upgrade, plan.trigger_code().clone());
    write(out, &format!("{prefix}_commit.bin"), &encode(&commit));
    write(out, &format!("{prefix}_payload.bin"), &sealed);
    if n == 4 {
        // The installer's inputs: the header and f + 1 released shares.
        write(out, "installer_header.bin", &encode(plan.header()));
        write(out, "installer_piece.bin", &encode(&piece));
        for i in 0..s.membership.threshold() {
            let opened = piece.open_for(i, &s.keys[i]).expect("open");
            let reply = Reply::Accepted(opened.secret_share.clone());
            let answer = Answer { upgrade: plan.header().upgrade, group, replica: i as u8, reply };
            write(out, &format!("installer_answer{i}.bin"), &encode(&Message::Answer(answer)));
        }
        write(out, "installer_tau.bin", plan.trigger_code().expose());
    }
    write(out, &format!("{prefix}_piece.bin"), &encode(&piece));
}

fn guardian_bundle(out: &Path, plain: &[u8]) {
    let group = GroupId(9);
    let mut s = setup(99, group, 4);
    let guardian_keys: Vec<_> = (0..4).map(|_| ReplicaSecretKey::random(&mut s.rng)).collect();
    let members: Vec<_> = guardian_keys.iter().enumerate().map(|(i, k)| (100 + i as u32, k.public_key())).collect();
    let set = GuardianSet::new(&members).expect("guardian set");
    let groups = [group];
    let plan = UpgradePlan::new(&mut s.rng, s.deployer.id(), 1, &groups).expect("plan");
    let (payload, _) = seal(&plan, group, plain);
    let target = GroupTarget {
        membership: &s.membership,
        resources: &[ResourceId(1)],
        prev_version: &s.genesis,
        guardians: Some(&set),
        payload,
        next: None,
    };
    let piece = plan.piece(&s.deployer, &target).expect("piece");
    let mut deployers = heapless::Vec::new();
    deployers.push((s.deployer.id(), s.deployer.public_key())).expect("one deployer");
    let mut guarded = heapless::Vec::new();
    guarded.push(GuardedGroup { group, members: s.membership.digest() }).expect("one group");
    let config = GuardianConfig { id: members[0].0, deployers, groups: guarded };
    write(out, "guardian_config.bin", &encode(&config));
    write(out, "guardian_key.bin", guardian_keys[0].to_bytes().as_slice());
    write(out, "guardian_piece.bin", &encode(&piece));
    for i in 0..s.membership.threshold() {
        let (_, token) = piece.open_token(i, &s.keys[i]).expect("token");
        let kind = bft_upgrade::crypto::ShareKind::Secret;
        let request = Message::GuardianRequest { upgrade: plan.header().upgrade, group, replica: i as u8, kind, token };
        write(out, &format!("guardian_request{i}.bin"), &encode(&request));
    }
}

fn client_bundle(out: &Path) {
    let mut codes = Attachment::new();
    let d = Finish { upgrade: wire::UpgradeId([5; 16]), outcome: Outcome::Committed, code: Code::from_bytes([6; 32]) };
    codes.push(d).expect("one code");
    let reply = ClientReply { group: GroupId(3), version: 1, status: ClientStatus::Current, codes };
    write(out, "client_reply.bin", &encode(&reply));
}
