#!/usr/bin/env bash
# The full benchmark run behind BENCHMARKS.md and benchmarks.json (issue 9):
# the criterion micro-benchmarks, then the scaling report, which reads their
# results from target/criterion and writes both files at the repository
# root. Pass extra arguments on to examples/scale.rs (e.g. --groups 10,100).
#
# Takes tens of minutes on a 2-core machine: run it on an idle one.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

start=$SECONDS
cargo bench --bench protocol
criterion_seconds=$((SECONDS - start))

cargo run --release --example scale -- --criterion-seconds "$criterion_seconds" "$@"
