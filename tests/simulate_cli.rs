//! The simulator's command line (`examples/simulate.rs`), run as a program:
//! bad arguments are one line on stderr and exit code 2, never a panic;
//! seed ranges near `u64::MAX` end and run exactly the seeds they should;
//! `--seed` and the `replay` command it prints replay a run.
//!
//! The example binary must be built: plain `cargo test` builds examples
//! before it runs tests, but `cargo test --test simulate_cli` alone does not
//! (then `cargo build --example simulate` first, with the same profile).

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use bft_upgrade::capacity::{MAX_GUARDED, MAX_GUARDIANS, MAX_REPLICAS};

/// What the command line accepts beyond the crate's capacities (see
/// `examples/simulate.rs`).
const MAX_GROUPS: usize = 16_384;
const MAX_INSTALLERS: usize = 64;
const MAX_THREADS: usize = 256;

/// Longer than any run here should take (the slowest, 64 replicas with
/// every fault, takes seconds unoptimized); a run that never ends fails the
/// test.
const TIMEOUT: Duration = Duration::from_secs(if cfg!(debug_assertions) { 300 } else { 60 });

/// The smallest quick world: two groups of four, no guardians, no faults,
/// no side-by-side comparison.
const TINY: [&str; 10] = ["--groups", "2", "--replicas", "4", "--guardians", "0", "--compare", "0", "--faults", "none"];

/// The example binary, next to this test's: `target/<profile>/deps/` holds
/// the test, `target/<profile>/examples/` the example.
fn simulate() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let profile = exe.parent().and_then(|deps| deps.parent()).expect("the test lives in target/<profile>/deps");
    let build = match profile.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "cargo build --example simulate".to_string(),
        Some("release") => "cargo build --release --example simulate".to_string(),
        Some(other) => format!("cargo build --profile {other} --example simulate"),
        None => "cargo build --example simulate".to_string(),
    };
    let bin = profile.join("examples").join(format!("simulate{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "the simulate example is not built at {}: run `{build}` first (plain `cargo test` builds examples, \
         `cargo test --test simulate_cli` does not)",
        bin.display()
    );
    // `cargo test --test simulate_cli` does not rebuild the example: refuse
    // to test one older than its sources.
    let built = std::fs::metadata(&bin).and_then(|m| m.modified()).expect("the example's time");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let newest = newest_source(&[root.join("examples/simulate.rs"), root.join("src"), root.join("Cargo.toml")]);
    assert!(
        newest <= built,
        "the simulate example at {} is older than its sources: run `{build}` first (plain `cargo test` builds \
         examples, `cargo test --test simulate_cli` does not)",
        bin.display()
    );
    bin
}

/// The latest modification time among `paths` and the files under them.
fn newest_source(paths: &[PathBuf]) -> SystemTime {
    let mut newest = SystemTime::UNIX_EPOCH;
    let mut todo: Vec<PathBuf> = paths.to_vec();
    while let Some(p) = todo.pop() {
        let Ok(meta) = std::fs::metadata(&p) else { continue };
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&p) {
                todo.extend(entries.flatten().map(|e| e.path()));
            }
        } else if let Ok(t) = meta.modified() {
            newest = newest.max(t);
        }
    }
    newest
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs the simulator with `args`, failing the test if it takes longer than
/// [`TIMEOUT`] (a batch that never ends).
fn run(args: &[&str]) -> Run {
    let mut child = Command::new(simulate())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the simulate example");
    // Drain both pipes on threads, so a chatty child never blocks.
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the simulate example") {
            break status;
        }
        if started.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("simulate {args:?} did not finish within {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Run { code: status.code(), stdout: out.join().expect("stdout reader"), stderr: err.join().expect("stderr reader") }
}

/// `TINY` followed by `extra`.
fn tiny<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    TINY.iter().copied().chain(extra.iter().copied()).collect()
}

/// Asserts `args` are refused as a usage error: exit code 2, one non-empty
/// line on stderr that names `flag` (and `bound`, when given), nothing on
/// stdout, no panic.
fn refused(args: &[&str], flag: &str, bound: Option<&str>) {
    let r = run(args);
    let lines: Vec<&str> = r.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!r.stderr.contains("panicked"), "simulate {args:?} panicked:\n{}", r.stderr);
    assert_eq!(r.code, Some(2), "simulate {args:?}: exit code, stderr:\n{}", r.stderr);
    assert_eq!(lines.len(), 1, "simulate {args:?}: one line on stderr, got:\n{}", r.stderr);
    assert!(lines[0].contains(flag), "simulate {args:?}: {flag} not named in {:?}", lines[0]);
    if let Some(bound) = bound {
        assert!(lines[0].contains(bound), "simulate {args:?}: bound {bound} not in {:?}", lines[0]);
    }
    assert!(r.stdout.is_empty(), "simulate {args:?}: stdout:\n{}", r.stdout);
}

#[test]
fn out_of_bounds_arguments_are_one_line_and_exit_2() {
    let replicas = format!("1..={MAX_REPLICAS}");
    let guardians = format!("0..={}", MAX_GUARDIANS.min(MAX_GUARDED));
    let groups = format!("1..={MAX_GROUPS}");
    let installers = format!("1..={MAX_INSTALLERS}");
    let threads = format!("1..={MAX_THREADS}");
    let too_many_replicas = (MAX_REPLICAS + 1).to_string();
    let too_many_guardians = (MAX_GUARDIANS.min(MAX_GUARDED) + 1).to_string();
    let too_many_groups = (MAX_GROUPS + 1).to_string();
    let too_many_installers = (MAX_INSTALLERS + 1).to_string();
    let too_many_threads = (MAX_THREADS + 1).to_string();
    let cases: [(&str, &str, &str); 10] = [
        ("--replicas", "0", &replicas),
        ("--replicas", &too_many_replicas, &replicas),
        ("--guardians", &too_many_guardians, &guardians),
        ("--groups", "0", &groups),
        ("--groups", &too_many_groups, &groups),
        ("--installers", "0", &installers),
        ("--installers", &too_many_installers, &installers),
        ("--threads", "0", &threads),
        ("--threads", &too_many_threads, &threads),
        ("--groups", "18446744073709551616", ""),
    ];
    for (flag, value, bound) in cases {
        let bound = (!bound.is_empty()).then_some(bound);
        // In a batch and in a replay (no other shape flags: a flag given
        // twice is an error of its own).
        refused(&[flag, value, "--runs", "1", "--compare", "0", "--faults", "none", "--json"], flag, bound);
        refused(&[flag, value, "--seed", "1", "--faults", "none"], flag, bound);
    }
    refused(&["--replicas", "four"], "--replicas", None);
    refused(&["--runs", "-1"], "-1", None);
    refused(&["--first", "18446744073709551616"], "--first", None);
}

/// The summary of a `--json` batch.
fn batch(extra: &[&str]) -> serde_json::Value {
    let args = tiny(&[extra, &["--json"]].concat());
    let r = run(&args);
    assert!(!r.stderr.contains("panicked"), "simulate {args:?} panicked:\n{}", r.stderr);
    assert!(r.code == Some(0) || r.code == Some(1), "simulate {args:?}: exit {:?}, stderr:\n{}", r.code, r.stderr);
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("simulate {args:?}: not JSON ({e}):\n{}", r.stdout))
}

#[test]
fn batches_near_u64_max_run_exactly_their_seeds() {
    let max = u64::MAX;
    for threads in ["1", "2", "3"] {
        let first = (max - 2).to_string();
        let v = batch(&["--first", &first, "--runs", "2", "--threads", threads]);
        assert_eq!(v["runs"], 2, "--first {first} --runs 2 --threads {threads}: {v}");
        assert_eq!(v["seed_first"], max - 2);

        let v = batch(&["--first", &max.to_string(), "--runs", "5", "--threads", threads]);
        assert_eq!(v["runs"], 1, "--first u64::MAX --runs 5 --threads {threads}: {v}");

        let v = batch(&["--first", &(max - 1).to_string(), "--runs", &max.to_string(), "--threads", threads]);
        assert_eq!(v["runs"], 2, "--first u64::MAX - 1 --runs u64::MAX --threads {threads}: {v}");
    }
    // Which seeds ran: a planted bug that breaks safety on every one of
    // them lists them all as failing.
    let v = batch(&["--first", &(max - 3).to_string(), "--runs", "9", "--threads", "2", "--plant", "releases-both"]);
    assert_eq!(v["runs"], 4, "{v}");
    let failing: Vec<u64> =
        v["failing_seeds"].as_array().expect("failing_seeds").iter().filter_map(|s| s.as_u64()).collect();
    assert_eq!(failing, [max - 3, max - 2, max - 1, max], "{v}");
}

#[test]
fn empty_batch_is_an_empty_summary() {
    let v = batch(&["--runs", "0"]);
    assert_eq!(v["runs"], 0, "{v}");
    let v = batch(&["--first", &u64::MAX.to_string(), "--runs", "0", "--threads", "2"]);
    assert_eq!(v["runs"], 0, "{v}");
    let r = run(&tiny(&["--runs", "0"]));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stdout.contains("no seeds"), "{}", r.stdout);
}

#[test]
fn odd_but_valid_shapes_run() {
    // One group; one replica (f = 0); guardians that give F = 0; the
    // largest groups and guardian sets; all faults on.
    let shapes: [&[&str]; 5] = [
        &["--groups", "1", "--replicas", "1", "--guardians", "1"],
        &["--groups", "1", "--replicas", "4", "--guardians", "3"],
        &["--groups", "2", "--replicas", "1", "--guardians", "2"],
        &["--groups", "2", "--replicas", "64", "--guardians", "0"],
        &["--groups", "2", "--replicas", "4", "--guardians", "16"],
    ];
    for shape in shapes {
        let args =
            [shape, &["--runs", "2", "--compare", "1", "--installers", "1", "--faults", "all", "--json"]].concat();
        let r = run(&args);
        assert!(!r.stderr.contains("panicked"), "simulate {args:?} panicked:\n{}", r.stderr);
        // Safety violations (exit 1) are findings, not crashes: a group
        // with 2 guardians does not hold a compromised group.
        assert!(r.code == Some(0) || r.code == Some(1), "simulate {args:?}: exit {:?}:\n{}", r.code, r.stderr);
        let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON");
        assert_eq!(v["runs"], 2, "simulate {args:?}: {v}");
    }
}

#[test]
fn seed_replays_and_the_printed_replay_command_works() {
    let max = u64::MAX.to_string();
    let r = run(&["--seed", &max, "--groups", "2", "--replicas", "4", "--guardians", "0", "--faults", "none"]);
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.starts_with(&format!("seed {max}: 2 groups of 4 replicas")), "{}", r.stdout);
    assert!(r.stdout.contains("ok: no safety violation"), "{}", r.stdout);

    // A failing batch prints the command that replays each failing seed.
    let r = run(&tiny(&["--first", "7", "--runs", "1", "--plant", "releases-both"]));
    assert_eq!(r.code, Some(1), "{}\n{}", r.stdout, r.stderr);
    let line = r.stderr.lines().find_map(|l| l.trim().strip_prefix("replay: ")).expect("a replay line");
    let (cargo, args) = line.split_once(" -- ").expect("cargo run ... -- ARGS");
    assert!(cargo.starts_with("cargo run --release") && cargo.ends_with("--example simulate"), "{line}");
    let args: Vec<&str> = args.split_whitespace().collect();
    assert!(args.windows(2).any(|w| w == ["--seed", "7"]), "{line}");
    let r = run(&args);
    assert_eq!(r.code, Some(1), "replay {args:?}:\n{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.starts_with("seed 7: 2 groups of 4 replicas, 0 guardians each"), "{}", r.stdout);
    assert!(r.stdout.contains("SAFETY VIOLATION"), "{}", r.stdout);
}

#[test]
fn help_documents_the_bounds() {
    let r = run(&["--help"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    for text in ["18446744073709551615", &format!("1 to {MAX_REPLICAS}"), &format!("1 to {MAX_GROUPS}")] {
        assert!(r.stdout.contains(text), "--help lacks {text:?}:\n{}", r.stdout);
    }
}
