//! Format 1, frozen: values encoded by this crate's format 1, stored under
//! `tests/fixtures/format-1/`, that every later release must read.
//!
//! Each scenario directory holds, for two groups on a ring with an
//! installer (and guardians, in guardian custody), taken in the middle of
//! an upgrade: every party's stored records (`stores/<party>/<key>`, as
//! the host layer wrote them: role states, held pieces, release rows), the
//! bundle, the deployer's saved plan, the sealed payloads and the parties'
//! secret keys (test keys); and, from the same run carried to its end, one
//! message and one ordered operation of every kind, a replica's replicated
//! state, the deployer's version chain and an external client.
//!
//! The test decodes every file, re-encodes it byte-identically, then
//! restores every party from its records and drives the upgrade to
//! completion. `firmware-*` scenarios were written by a build with the
//! firmware's capacities and `server` by one with the defaults: a larger
//! build reads both, a smaller one refuses the server's records with
//! [`DecodeError::OverCapacity`] (CI runs this test both ways).
//!
//! The files are written once per format version, by
//! `bash tests/fixtures/generate.sh`, which never overwrites a scenario.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bft_upgrade::capacity::{MAX_GUARDIANS, MAX_REPLICAS};
use bft_upgrade::client::Client;
use bft_upgrade::deployer::{SavedPlan, UpgradePlan, VersionChain};
use bft_upgrade::error::DecodeError;
use bft_upgrade::group::{GroupEffect, GroupReplica, ReplicatedState};
use bft_upgrade::guardian::Guardian;
use bft_upgrade::host::{open_payload, releases, Bundle, Outbound};
use bft_upgrade::installer::Installer;
use bft_upgrade::wire::{
    decode, Attachment, ClientCall, ClientReply, Message, Operation, Outcome, Piece, FORMAT_VERSION,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use support::cluster::{to_bytes, Host, Snapshot, GROUPS, INSTALLER_KEY};

/// The scenarios: name, replicas per group, guardians.
const SCENARIOS: [(&str, usize, usize); 3] =
    [("firmware-replicas", 4, 0), ("firmware-guardians", 4, 4), ("server", 17, 8)];

/// Whether this build's capacities hold a scenario of `n` replicas and
/// `guardians` guardians.
fn fits(n: usize, guardians: usize) -> bool {
    n <= MAX_REPLICAS && guardians <= MAX_GUARDIANS
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(format!("format-{FORMAT_VERSION}"))
}

/// Something the fixtures show this build gets wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Finding {
    /// A file does not decode as the type it holds.
    Decode { file: String, error: DecodeError },
    /// A file decodes but re-encodes to other bytes.
    Reencode { file: String },
    /// A file the test does not know what to decode as.
    Unknown { file: String },
    /// A file every scenario must have is not there.
    Missing { file: String },
    /// Restored from the fixtures, the parties do not finish the upgrade.
    Stalled { why: String },
}

/// A scenario's files, path (relative, `/`-separated) to bytes.
fn read_tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(base, &path, out);
            } else {
                let rel = path.strip_prefix(base).unwrap().to_str().unwrap().replace('\\', "/");
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Reads the fixture files of one scenario and checks each.
struct Reader {
    files: BTreeMap<String, Vec<u8>>,
    /// Files read so far (the others are `Unknown`).
    used: std::collections::BTreeSet<String>,
    findings: Vec<Finding>,
}

impl Reader {
    fn new(files: BTreeMap<String, Vec<u8>>) -> Self {
        Self { files, used: Default::default(), findings: Vec::new() }
    }

    /// `file` decoded as a `T`, if it decodes and re-encodes to its bytes.
    fn value<T: Serialize + DeserializeOwned>(&mut self, file: &str) -> Option<T> {
        let Some(bytes) = self.files.get(file) else {
            self.findings.push(Finding::Missing { file: file.into() });
            return None;
        };
        self.used.insert(file.into());
        match decode::<T>(bytes) {
            Err(error) => {
                self.findings.push(Finding::Decode { file: file.into(), error });
                None
            }
            Ok(v) if to_bytes(&v) != *bytes => {
                self.findings.push(Finding::Reencode { file: file.into() });
                None
            }
            Ok(v) => Some(v),
        }
    }

    fn raw(&mut self, file: &str) -> Option<Vec<u8>> {
        self.used.insert(file.into());
        let bytes = self.files.get(file).cloned();
        if bytes.is_none() {
            self.findings.push(Finding::Missing { file: file.into() });
        }
        bytes
    }

    /// The files under `prefix`, in order.
    fn under(&self, prefix: &str) -> Vec<String> {
        self.files.keys().filter(|k| k.starts_with(prefix)).cloned().collect()
    }

    fn unread(&mut self) {
        let unknown: Vec<String> = self.files.keys().filter(|k| !self.used.contains(*k)).cloned().collect();
        self.findings.extend(unknown.into_iter().map(|file| Finding::Unknown { file }));
    }
}

/// Every store record, checked as the type its key says; the party's
/// records, for restoring it.
fn stores(r: &mut Reader) -> BTreeMap<String, BTreeMap<String, Vec<u8>>> {
    let mut out: BTreeMap<String, BTreeMap<String, Vec<u8>>> = BTreeMap::new();
    for file in r.under("stores/") {
        let rest = file.strip_prefix("stores/").unwrap();
        let (party, key) = rest.split_once('/').unwrap_or((rest, ""));
        let ok = match key {
            "replica/role" => r.value::<GroupReplica>(&file).is_some(),
            k if k.starts_with("replica/piece/") => r.value::<Piece>(&file).is_some(),
            "guardian/role" => r.value::<Guardian<8>>(&file).is_some(),
            k if k.starts_with("guardian/release/") => r.value::<u64>(&file).is_some(),
            INSTALLER_KEY => r.value::<Installer<4, 64>>(&file).is_some(),
            _ => {
                r.findings.push(Finding::Unknown { file: file.clone() });
                r.used.insert(file.clone());
                false
            }
        };
        if ok {
            out.entry(party.to_string()).or_default().insert(key.to_string(), r.files[&file].clone());
        }
    }
    out
}

/// A key file's 32 bytes.
fn key(r: &mut Reader, file: &str) -> [u8; 32] {
    r.raw(file).and_then(|b| b.try_into().ok()).unwrap_or([1; 32])
}

/// The message kinds, exhaustively: a new kind is a compile error here,
/// and then needs a fixture.
fn message_kind(m: &Message) -> &'static str {
    match m {
        Message::Submit(_) => "submit",
        Message::Answer(_) => "answer",
        Message::GuardianRequest { .. } => "guardian-request",
        Message::GuardianShare { .. } => "guardian-share",
        Message::GuardianNeedsPiece { .. } => "guardian-needs-piece",
        Message::Learned { .. } => "learned",
    }
}

fn operation_kind(op: &Operation) -> &'static str {
    match op {
        Operation::PrepareInstall(_) => "prepare-install",
        Operation::Finish(_) => "finish",
    }
}

const MESSAGE_KINDS: [&str; 6] =
    ["submit", "answer", "guardian-request", "guardian-share", "guardian-needs-piece", "learned"];

/// Checks one scenario: every file, then the parties restored from their
/// records carry the upgrade to its commit. Returns the findings and the
/// message kinds it holds.
fn check(dir: &Path, n: usize, guardians: usize) -> (Vec<Finding>, Vec<&'static str>) {
    let mut r = Reader::new(read_tree(dir));
    let stores = stores(&mut r);
    let bundle = r.value::<Bundle>("bundle");
    let saved = r.value::<SavedPlan>("saved-plan");
    let now = r.value::<u64>("now");
    let replicated = r.value::<ReplicatedState>("replicated");
    let chain = r.value::<VersionChain<4>>("chain");
    let client = r.value::<Client<4>>("client");
    let _ = r.value::<ClientCall>("client-call");
    let reply = r.value::<ClientReply>("client-reply");
    let _ = r.value::<Attachment>("attachment");
    let mut kinds = Vec::new();
    for file in r.under("messages/") {
        if let Some(m) = r.value::<Message>(&file) {
            assert_eq!(file, format!("messages/{}", message_kind(&m)), "a message filed under another kind");
            kinds.push(message_kind(&m));
        }
    }
    for kind in ["prepare-install", "finish"] {
        if let Some(op) = r.value::<Operation>(&format!("operations/{kind}")) {
            assert_eq!(operation_kind(&op), kind);
        }
    }
    let replica_keys: Vec<Vec<[u8; 32]>> = (0..GROUPS.len())
        .map(|gi| (0..n).map(|ri| key(&mut r, &format!("keys/replica-{gi}-{ri}"))).collect())
        .collect();
    let guardian_keys: Vec<[u8; 32]> = (1..=guardians).map(|k| key(&mut r, &format!("keys/guardian-{k}"))).collect();
    let sealed: Vec<Vec<u8>> =
        (0..GROUPS.len()).map(|gi| r.raw(&format!("payload-{gi}")).unwrap_or_default()).collect();
    r.unread();
    let (Some(bundle), Some(saved), Some(now)) = (bundle, saved, now) else {
        return (r.findings, kinds);
    };
    if !r.findings.is_empty() {
        return (r.findings, kinds);
    }

    // The deployer's saved plan still rebuilds the upgrade it planned.
    let groups = GROUPS;
    let plan = UpgradePlan::restore(&saved, &groups).expect("the saved plan restores");
    if *plan.header() != bundle.header {
        r.findings.push(Finding::Stalled { why: "the restored plan has another header".into() });
    }
    let snapshot = Snapshot { now, n, stores, replica_keys, guardian_keys, bundle, saved: to_bytes(&saved), sealed };
    let mut h = Host::restore(&snapshot);
    if let Some(state) = replicated {
        // The replicated part is what replica 0 of group 0 restored into.
        if state.digest() != h.replicas[0][0].role().replicated_digest() {
            r.findings.push(Finding::Stalled { why: "the replicated state is not the restored replica's".into() });
        }
    }
    if h.installer.role().is_done() || h.committed_everywhere() {
        r.findings.push(Finding::Stalled { why: "the fixtures were taken after the upgrade finished".into() });
    }
    for _ in 0..100 {
        if h.installer.role().is_done() {
            break;
        }
        h.tick(50);
    }
    if !(h.installer.role().is_done() && h.committed_everywhere()) {
        r.findings.push(Finding::Stalled { why: "restored, the upgrade does not finish".into() });
        return (r.findings, kinds);
    }
    if h.installer.role().decided().map(|(o, _)| o) != Some(Outcome::Committed) {
        r.findings.push(Finding::Stalled { why: "restored, the upgrade does not commit".into() });
    }
    // Every replica applies after the restore (the snapshot is from
    // before the commit), and its payload opens to the plaintext.
    let applied = h.applied.iter().filter(|(_, _, e)| matches!(e, GroupEffect::Apply { .. })).count();
    if applied != GROUPS.len() * n {
        r.findings.push(Finding::Stalled { why: format!("{applied} replicas applied after the restore") });
    }
    for (gi, ri, effect) in &h.applied {
        if let GroupEffect::Apply { key: Some(key), payload, .. } = effect {
            let mut plain = Vec::new();
            let binding = bft_upgrade::crypto::Binding::group(h.upgrade, GROUPS[*gi]);
            if open_payload(key, &binding, payload, &mut &h.sealed[*gi][..], &mut plain).is_err()
                || plain != h.plain[*gi]
            {
                r.findings.push(Finding::Stalled { why: format!("replica {gi}-{ri}: the payload does not open") });
            }
        }
    }
    for g in &h.guardians {
        if !releases(g.store()).unwrap().iter().all(|row| row.kind == bft_upgrade::crypto::ShareKind::Secret) {
            r.findings.push(Finding::Stalled { why: "a guardian released the cancel share".into() });
        }
    }
    // The chain and the client saw the commit.
    if chain.is_some_and(|c| *c.prev(GROUPS[0]) != *plan.trigger_code()) {
        r.findings.push(Finding::Stalled { why: "the version chain is not at the trigger code".into() });
    }
    if let (Some(client), Some(reply)) = (client, reply) {
        let forwards = client.call(GROUPS[1]).codes.iter().any(|f| f.upgrade == h.upgrade);
        if client.seen(GROUPS[0]) != reply.version || reply.version == 0 || !forwards {
            r.findings.push(Finding::Stalled { why: "the client lost what it saw".into() });
        }
    }
    (r.findings, kinds)
}

#[test]
#[cfg(not(feature = "planted-format-change"))]
fn format_1_fixtures_decode_reencode_and_carry_on() {
    let mut kinds = std::collections::BTreeSet::new();
    for (name, n, guardians) in SCENARIOS {
        let dir = root().join(name);
        assert!(dir.is_dir(), "{} is missing: the fixtures are part of the repository", dir.display());
        let (findings, seen) = check(&dir, n, guardians);
        if fits(n, guardians) {
            assert_eq!(findings, vec![], "{name}");
            kinds.extend(seen);
        } else {
            // A smaller build: every role state and piece too large for it
            // is a typed capacity error, never a misparse.
            let records: Vec<&Finding> = findings
                .iter()
                .filter(|f| matches!(f, Finding::Decode { file, .. } if file.starts_with("stores/")))
                .collect();
            assert!(!records.is_empty(), "{name}: a smaller build read records too large for it");
            for f in &findings {
                assert!(
                    matches!(f, Finding::Decode { error: DecodeError::OverCapacity, .. }),
                    "{name}: {f:?} (only capacity errors are expected)"
                );
            }
            // (The installer's state does not grow with a group's size.)
            for party in ["replica-0-0/replica/role", "guardian-1/guardian/role"] {
                let file = format!("stores/{party}");
                assert!(
                    findings.contains(&Finding::Decode { file: file.clone(), error: DecodeError::OverCapacity }),
                    "{name}: {file} is not a capacity error: {findings:?}"
                );
            }
        }
    }
    if fits(17, 8) {
        assert_eq!(kinds.into_iter().collect::<Vec<_>>().len(), MESSAGE_KINDS.len(), "a message kind has no fixture");
    }
}

/// A fixture whose version byte names another format is refused as such,
/// whatever follows it: never read as format 1.
#[test]
fn another_format_version_is_a_typed_error() {
    let dir = root().join(SCENARIOS[1].0);
    for file in ["bundle", "stores/replica-0-0/replica/role", "stores/guardian-1/guardian/role", "messages/answer"] {
        let mut bytes = std::fs::read(dir.join(file)).unwrap();
        assert_eq!(bytes[0], FORMAT_VERSION, "{file}");
        for version in [0, FORMAT_VERSION + 1, 0xff] {
            bytes[0] = version;
            let expected = Err(DecodeError::UnknownVersion { version });
            match file {
                "bundle" => assert_eq!(decode::<Bundle>(&bytes).map(|_| ()), expected),
                "messages/answer" => assert_eq!(decode::<Message>(&bytes).map(|_| ()), expected),
                f if f.ends_with("replica/role") => assert_eq!(decode::<GroupReplica>(&bytes).map(|_| ()), expected),
                _ => assert_eq!(decode::<Guardian<8>>(&bytes).map(|_| ()), expected),
            }
        }
    }
}

/// The fixture test catches a format change: with the feature
/// `planted-format-change`, two fields of the stored `GroupConfig` swap
/// places, and every stored group replica stops decoding.
#[test]
#[cfg(feature = "planted-format-change")]
fn a_planted_format_change_is_caught() {
    let (name, n, guardians) = SCENARIOS[0];
    let (findings, _) = check(&root().join(name), n, guardians);
    let broken: Vec<&Finding> = findings
        .iter()
        .filter(
            |f| matches!(f, Finding::Decode { file, error: DecodeError::Malformed } if file.ends_with("replica/role")),
        )
        .collect();
    assert_eq!(broken.len(), 2 * n, "{findings:?}");
}

/// Writes the scenarios this build's capacities are for (`firmware-*`
/// below the defaults, `server` at them), never over an existing one.
/// Run by `tests/fixtures/generate.sh`.
#[test]
#[ignore = "writes tests/fixtures/format-<N>/ once per format version: bash tests/fixtures/generate.sh"]
fn generate() {
    let server = fits(17, 8);
    for (seed, (name, n, guardians)) in SCENARIOS.into_iter().enumerate() {
        if (name == "server") != server {
            continue;
        }
        let dir = root().join(name);
        if dir.exists() {
            eprintln!("kept {}: format {FORMAT_VERSION} is frozen", dir.display());
            continue;
        }
        let files = scenario(40 + seed as u8, n, guardians);
        for (file, bytes) in &files {
            let path = dir.join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, bytes).unwrap();
        }
        let (findings, _) = check(&dir, n, guardians);
        assert_eq!(findings, vec![], "{name}: what was just written does not check");
        eprintln!("wrote {} files to {}", files.len(), dir.display());
    }
}

/// Runs one scenario and returns its files.
fn scenario(seed: u8, n: usize, guardians: usize) -> BTreeMap<String, Vec<u8>> {
    let mut h = Host::build(seed, n, guardians);
    let mut files = BTreeMap::new();
    // The middle of the upgrade: the installer started, the groups
    // prepared, the first answers in; no deadline has fired yet.
    h.start();
    let snapshot = h.snapshot();
    assert!(!h.installer.role().is_done(), "the snapshot must be taken mid-upgrade");
    for (party, records) in &snapshot.stores {
        for (key, bytes) in records {
            files.insert(format!("stores/{party}/{key}"), bytes.clone());
        }
    }
    for (gi, keys) in snapshot.replica_keys.iter().enumerate() {
        for (ri, k) in keys.iter().enumerate() {
            files.insert(format!("keys/replica-{gi}-{ri}"), k.to_vec());
        }
    }
    for (k, key) in snapshot.guardian_keys.iter().enumerate() {
        files.insert(format!("keys/guardian-{}", k + 1), key.to_vec());
    }
    for (gi, sealed) in snapshot.sealed.iter().enumerate() {
        files.insert(format!("payload-{gi}"), sealed.clone());
    }
    files.insert("bundle".into(), to_bytes(&snapshot.bundle));
    files.insert("saved-plan".into(), snapshot.saved.clone());
    files.insert("now".into(), to_bytes(&snapshot.now));
    files.insert("replicated".into(), to_bytes(&h.replicas[0][0].role().replicated()));

    // The rest of the run: one message and one operation of each kind.
    for _ in 0..100 {
        if h.installer.role().is_done() {
            break;
        }
        h.tick(50);
    }
    assert!(h.installer.role().is_done() && h.committed_everywhere());
    for (_, item) in &h.delivered {
        match item {
            Outbound::Send { message, .. } => {
                files.entry(format!("messages/{}", message_kind(message))).or_insert_with(|| to_bytes(message));
            }
            Outbound::Submit { op, .. } => {
                files.entry(format!("operations/{}", operation_kind(op))).or_insert_with(|| to_bytes(&**op));
            }
            Outbound::Piece { .. } => {}
        }
    }
    // Hosts route a submission as an ordering submission, so the message
    // that carries one over the network never passes here.
    let m = Message::Submit(bft_upgrade::wire::Finish::commit_install(h.upgrade, h.trigger.clone()));
    files.entry(format!("messages/{}", message_kind(&m))).or_insert_with(|| to_bytes(&m));
    if guardians > 0 {
        // What a guardian sends when it lacks a piece (not needed in a
        // run where every piece arrives).
        let m = Message::GuardianNeedsPiece { upgrade: h.upgrade, group: GROUPS[0] };
        files.entry(format!("messages/{}", message_kind(&m))).or_insert_with(|| to_bytes(&m));
    }
    let plan = UpgradePlan::restore(&h.saved, &GROUPS).unwrap();
    let mut chain = VersionChain::<4>::new(bft_upgrade::crypto::Code::from_bytes([7; 32]));
    chain.advance(&plan, Outcome::Committed).unwrap();
    files.insert("chain".into(), to_bytes(&chain));
    let mut client = Client::<4>::new(7);
    let call = client.call(GROUPS[0]);
    let now = h.t();
    let (_, reply) = h.replicas[0][0].client_call(now, &call);
    client.on_reply(&reply).unwrap();
    files.insert("client-call".into(), to_bytes(&call));
    files.insert("client-reply".into(), to_bytes(&reply));
    files.insert("attachment".into(), to_bytes(&reply.codes));
    files.insert("client".into(), to_bytes(&client));
    files
}
