#!/usr/bin/env bash
# Mutation testing of the protocol core: `bash mutants/run.sh`, by hand.
# Not in CI: a run takes about an hour on the 2-core machine.
#
# What it does:
#  1. installs cargo-mutants (pinned) if `cargo mutants` is missing, and
#     snapshots the work tree into target/mutants-run/tree, which every
#     phase below tests (so the tree may be edited during the run);
#  2. lists the mutants of src/group.rs, src/installer.rs, src/guardian.rs,
#     src/deployer.rs and src/crypto/ (formatting-only impls are excluded by
#     .cargo/mutants.toml);
#  3. samples a fixed, seeded subset (see "Sample" below);
#  4. runs them with `cargo mutants` against a fast subset of the tests, under
#     a wall-clock budget (stopping early, the report says it is partial);
#  5. re-runs each missed mutant against the full suite, `cargo test
#     --release --features std`, with whatever budget is left, so the report
#     tells a gap of the subset from a gap of the tests;
#  6. writes MUTANTS.md (the last run's report; committed).
#
# Sample: every mutant's key is its file and description without line and
# column ("src/group.rs: replace <= with > in GroupReplica::handle_timeout"),
# numbered ("#2") where a function has the same mutation more than once, so
# the sample does not move when unrelated lines do; the first SAMPLE
# mutants ordered by sha256(SEED, key) are run, each passed to cargo-mutants
# as one anchored `--re` of its exact name.
#
# Why a missed mutant is missed is a human's call: reasons live in
# mutants/reasons.tsv (key TAB reason, the key as above, numbered or not:
# unnumbered covers every occurrence) and are copied into MUTANTS.md; a
# missed mutant without one gets "(to explain)".
# After editing reasons.tsv, `bash mutants/run.sh --report-only` rewrites
# MUTANTS.md from the last run's results (kept in target/mutants-run/).
#
# Environment:
#   MUTANTS_SEED         sample seed (default 1)
#   MUTANTS_SAMPLE       sample size (default 150)
#   MUTANTS_BUDGET_MIN   wall-clock minutes for the whole run (default 75)
#   MUTANTS_CONFIRM_MIN  of which kept for the full-suite re-runs (default 12)
#
# (The report's variables come from target/mutants-run/meta.env; backquotes
# in single quotes are Markdown.)
# shellcheck disable=SC2154,SC2016
set -euo pipefail

# The whole script is one brace group, read before it runs: bash reads a
# script as it goes, so editing this file during an hour-long run would
# otherwise break the run.
{

CARGO_MUTANTS_VERSION=27.1.0
SEED=${MUTANTS_SEED:-1}
SAMPLE=${MUTANTS_SAMPLE:-150}
BUDGET_MIN=${MUTANTS_BUDGET_MIN:-75}
CONFIRM_MIN=${MUTANTS_CONFIRM_MIN:-12}

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
RUN=$ROOT/target/mutants-run
REASONS=$ROOT/mutants/reasons.tsv
NICE=(nice -n 15)

FILES=(src/group.rs src/installer.rs src/guardian.rs src/deployer.rs 'src/crypto/*.rs')
# The test subset: unit tests and the integration tests that drive the roles
# and the crypto. Left out, for time: swarm (12 s) and decode_props (7 s),
# which test the simulator at scale and the wire codec; fuzz_seeds,
# sim_smoke and planted; doctests (each one a separate build).
TESTS=(--lib --test=roles --test=foundation --test=guardians --test=conflicts --test=install --test=versions
    --test=secrets --test=exhaustive --test=malformed --test=wycheproof --test=mutants_regressions --test=host)

# Release as the README's test command, but incremental and without debug
# info: a mutant's rebuild drops from about a minute to about ten seconds.
# A target directory of its own keeps the dependencies built across runs.
export CARGO_PROFILE_RELEASE_INCREMENTAL=true
export CARGO_PROFILE_RELEASE_DEBUG=0
export CARGO_TARGET_DIR=$ROOT/target/mutants
export CARGO_TERM_COLOR=never

report_only=false
if [[ "${1:-}" == --report-only ]]; then
    report_only=true
fi

file_args=()
for f in "${FILES[@]}"; do
    file_args+=(-f "$f")
done
test_args=()
for t in "${TESTS[@]}"; do
    test_args+=("--cargo-arg=$t")
done

# "src/x.rs:12:5: desc" -> "src/x.rs: desc"
key_of() {
    sed -E 's/^([^:]+):[0-9]+:[0-9]+: /\1: /'
}
# An exact name as an anchored regex (regex crate syntax).
re_of() {
    printf '^%s$' "$(printf '%s' "$1" | sed -e 's/[][\\.+*?(){}|^$#&~-]/\\&/g')"
}

# ---- run -------------------------------------------------------------------

if ! $report_only; then
    start=$SECONDS
    started=$(date -u '+%Y-%m-%d %H:%M UTC')
    deadline=$((BUDGET_MIN * 60))
    if ! cargo mutants --version >/dev/null 2>&1; then
        "${NICE[@]}" cargo install --locked cargo-mutants --version "$CARGO_MUTANTS_VERSION"
    fi
    have=$(cargo mutants --version)
    if [[ "$have" != "cargo-mutants $CARGO_MUTANTS_VERSION" ]]; then
        echo "warning: $have, not $CARGO_MUTANTS_VERSION: names and the sample may differ" >&2
    fi

    rm -rf "$RUN"
    mkdir -p "$RUN/tree"
    # Both phases test one snapshot of the tree (tracked and untracked,
    # not ignored files), so edits made during the run do not leak in.
    commit=$(git rev-parse HEAD)
    dirty=$(git status --porcelain -- src tests Cargo.toml Cargo.lock .cargo | wc -l)
    git ls-files -z --cached --others --exclude-standard |
        tar --null --ignore-failed-read -T - -cf - 2>/dev/null | tar -xf - -C "$RUN/tree"
    tree=(-d "$RUN/tree")
    # Old scratch paths leave incremental caches nobody will read again.
    rm -rf "$CARGO_TARGET_DIR/release/incremental"

    cargo mutants --list "${tree[@]}" "${file_args[@]}" --features std >"$RUN/all.txt"
    # Keys, numbered where one function has the same mutation twice.
    key_of <"$RUN/all.txt" | awk '{ n[$0]++; print $0 " #" n[$0] }' >"$RUN/keys.txt"
    while IFS=$'\t' read -r key name; do
        h=$(printf '%s %s\n' "$SEED" "$key" | sha256sum)
        printf '%s\t%s\n' "${h:0:16}" "$name"
    done < <(paste "$RUN/keys.txt" "$RUN/all.txt") | sort >"$RUN/ranked.tsv"
    awk -v n="$SAMPLE" 'NR <= n' "$RUN/ranked.tsv" | cut -f2- | sort -t: -k1,1 -k2,2n -k3,3n >"$RUN/sample.txt"
    re_args=()
    while IFS= read -r name; do
        re_args+=(--re "$(re_of "$name")")
    done <"$RUN/sample.txt"
    # The regexes must select the sample. cargo-mutants 27.1.0 applies
    # neither --re nor --exclude-re to its "delete field ... from struct
    # expression" mutants, so those always run too: kept, and reported.
    cargo mutants --list "${tree[@]}" "${file_args[@]}" --features std "${re_args[@]}" >"$RUN/selected.txt"
    comm -23 <(sort "$RUN/sample.txt") <(sort "$RUN/selected.txt") >"$RUN/unselected.txt"
    comm -13 <(sort "$RUN/sample.txt") <(sort "$RUN/selected.txt") >"$RUN/extra.txt"
    if [[ -s "$RUN/unselected.txt" ]] || grep -qv ': delete field .* from struct ' "$RUN/extra.txt"; then
        echo "the --re list does not select the sample:" >&2
        cat "$RUN/unselected.txt" "$RUN/extra.txt" >&2
        exit 1
    fi

    main_cmd=(cargo mutants --no-shuffle --jobs 1 "${file_args[@]}" --profile release --features std
        --minimum-test-timeout 60 --output "$RUN/main" --colors never "${test_args[@]}")
    main_secs=$((deadline - CONFIRM_MIN * 60 - (SECONDS - start)))
    echo "running $(wc -l <"$RUN/selected.txt") mutants, at most ${main_secs} s (log: $RUN/main.log)"
    main_start=$SECONDS
    main_status=0
    timeout --signal=INT --kill-after=120 "$main_secs" "${NICE[@]}" "${main_cmd[@]}" "${tree[@]}" "${re_args[@]}" \
        >"$RUN/main.log" 2>&1 || main_status=$?
    main_wall=$((SECONDS - main_start))
    # cargo-mutants 27.1.0 exits 1 ("Error: interrupted") when the budget's
    # SIGINT stops it, not 130: that is a partial run, not a failure.
    if ((main_status == 1)) && grep -q 'Error: interrupted' "$RUN/main.log"; then
        main_status=130
    fi
    case $main_status in
        0 | 2 | 3) partial=false ;;
        124 | 130) partial=true ;;
        *)
            tail -n 40 "$RUN/main.log" >&2
            echo "cargo mutants exited $main_status" >&2
            exit 1
            ;;
    esac

    # Missed by the subset: do they survive the full suite too?
    out=$RUN/main/mutants.out
    touch "$out/missed.txt"
    : >"$RUN/confirm-caught.txt"
    : >"$RUN/confirm-missed.txt"
    confirm_status=skipped
    if [[ -s "$out/missed.txt" ]]; then
        confirm_secs=$((deadline - (SECONDS - start)))
        confirm_re=()
        while IFS= read -r name; do
            confirm_re+=(--re "$(re_of "$name")")
        done <"$out/missed.txt"
        if ((confirm_secs > 120)); then
            confirm_status=0
            timeout --signal=INT --kill-after=120 "$confirm_secs" "${NICE[@]}" \
                cargo mutants "${tree[@]}" --no-shuffle --jobs 1 "${file_args[@]}" --profile release --features std \
                --baseline skip --timeout 300 --output "$RUN/confirm" --colors never "${confirm_re[@]}" \
                >"$RUN/confirm.log" 2>&1 || confirm_status=$?
            for kind in caught missed; do
                cp "$RUN/confirm/mutants.out/$kind.txt" "$RUN/confirm-$kind.txt" 2>/dev/null || true
            done
            # A timeout under the full suite is a catch too.
            cat "$RUN/confirm/mutants.out/timeout.txt" >>"$RUN/confirm-caught.txt" 2>/dev/null || true
        fi
    fi

    {
        echo "commit=$commit"
        echo "dirty=$dirty"
        echo "run_date='$started'"
        echo "version='$have'"
        echo "total=$(wc -l <"$RUN/all.txt")"
        echo "partial=$partial"
        echo "main_wall=$main_wall"
        echo "main_status=$main_status"
        echo "confirm_status=$confirm_status"
        printf 'command_line=%q\n' "CARGO_PROFILE_RELEASE_INCREMENTAL=true CARGO_PROFILE_RELEASE_DEBUG=0 \
CARGO_TARGET_DIR=target/mutants nice -n 15 $(printf '%s ' "${main_cmd[@]}" |
            sed -e "s|src/crypto/\*\.rs|'src/crypto/*.rs'|" -e "s|$ROOT/||g")-d target/mutants-run/tree \
--re ... (one per sampled mutant)"
    } >"$RUN/meta.env"
fi

# ---- report ----------------------------------------------------------------

# shellcheck disable=SC1091
source "$RUN/meta.env"
out=$RUN/main/mutants.out
count() {
    if [[ -f "$out/$1.txt" ]]; then wc -l <"$out/$1.txt"; else echo 0; fi
}
caught=$(count caught)
missed=$(count missed)
unviable=$(count unviable)
timeouts=$(count timeout)
ran=$((caught + missed + unviable + timeouts))
viable=$((caught + missed + timeouts))
pct() {
    if (($2 == 0)); then echo "n/a"; else awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f %%", 100 * a / b }'; fi
}
sampled=$(wc -l <"$RUN/sample.txt")
extra=$(wc -l <"$RUN/extra.txt")
planned=$((sampled + extra))

# Seconds per mutant (build + test), from cargo-mutants' own record.
timing=$(jq -r '
    [.outcomes[] | select(.scenario != "Baseline") | [.phase_results[].duration] | add] as $t
    | if ($t | length) == 0 then "n/a" else
      "mean \($t | add / length | . * 10 | round / 10) s, median \($t | sort | .[length / 2 | floor] | . * 10 | round / 10) s, max \($t | max | . * 10 | round / 10) s over \($t | length) mutants"
      end' "$out/outcomes.json" 2>/dev/null || echo "n/a")
by_outcome=$(jq -r '
    [.outcomes[] | select(.scenario != "Baseline") | {s: .summary, t: ([.phase_results[].duration] | add)}]
    | group_by(.s) | map("\(.[0].s) \(length) x \((map(.t) | add / length) * 10 | round / 10) s") | join(", ")
    ' "$out/outcomes.json" 2>/dev/null || echo "n/a")
baseline=$(jq -r '
    .outcomes[] | select(.scenario == "Baseline") | .phase_results
    | map("\(.phase) \(.duration * 10 | round / 10) s") | join(", ")' "$out/outcomes.json" 2>/dev/null || echo "n/a")

declare -A reason=()
if [[ -f "$REASONS" ]]; then
    while IFS=$'\t' read -r k r; do
        [[ -z "$k" || "$k" == \#* ]] && continue
        reason[$k]=$r
    done <"$REASONS"
fi

# The reason of each missed mutant; its category is the reason's first
# words up to a colon ("Gap", "Equivalent", ...).
declare -A numbered=()
while IFS=$'\t' read -r k name; do
    numbered[$name]=$k
done < <(paste "$RUN/keys.txt" "$RUN/all.txt")
declare -A why_of=()
declare -A per_category=()
not_real=0
touch "$out/missed.txt"
while IFS= read -r name; do
    key=${numbered[$name]:-$(key_of <<<"$name")}
    why=${reason[$key]:-${reason[${key% #*}]:-"(to explain)"}}
    why_of[$name]=$why
    category=${why%%:*}
    [[ "$category" == "$why" ]] && category="(to explain)"
    per_category[$category]=$((${per_category[$category]:-0} + 1))
    case $category in
        Equivalent* | "Not compiled"*) not_real=$((not_real + 1)) ;;
    esac
done <"$out/missed.txt"

md_cell() {
    sed -e 's/|/\\|/g'
}

{
    echo "# Mutation testing"
    echo
    echo "Written by \`bash mutants/run.sh\` (the last run's report; by hand, not in CI)."
    echo
    echo "- Commit tested: \`$commit\`$( ((dirty > 0)) && echo " plus uncommitted changes")"
    echo "- Date: $run_date; $version; 2-core machine shared with other builds, everything at \`nice -n 15\`."
    echo "- Files: \`src/group.rs\`, \`src/installer.rs\`, \`src/guardian.rs\`, \`src/deployer.rs\`, \`src/crypto/\`;"
    echo "  $total mutants after \`.cargo/mutants.toml\` drops the formatting-only impls (\`Debug\`, \`Display\`, \`defmt::Format\`)."
    echo "- Sample: $sampled of the $total, seed $SEED: each mutant's key is its file and description without"
    echo "  line and column (numbered #2, ... where a function has the same mutation twice), and the first"
    echo "  $sampled by \`sha256(\"$SEED <key>\")\` are run, each passed as an anchored"
    echo "  \`--re\` of its exact name (so the sample stays put when unrelated lines move)."
    if ((extra > 0)); then
        echo "  cargo-mutants $CARGO_MUTANTS_VERSION applies neither \`--re\` nor \`--exclude-re\` to its field-deletion"
        echo "  mutants, so the one(s) below, outside the sample, ran as well and are counted:"
        while IFS= read -r name; do
            printf -- '  `%s`;\n' "$name"
        done <"$RUN/extra.txt"
        echo "  $planned mutants in all."
    fi
    echo "- Tests: the subset \`${TESTS[*]}\`, release profile, incremental,"
    echo "  no debug info (\`CARGO_PROFILE_RELEASE_INCREMENTAL=true CARGO_PROFILE_RELEASE_DEBUG=0\`)."
    echo "  Each missed mutant is then re-run against the full \`cargo test --release --features std\`."
    echo "- Command:"
    echo
    echo '  ```'
    echo "  $command_line"
    echo '  ```'
    echo
    echo "- Time: baseline $baseline; per mutant (build + test) $timing"
    echo "  (by outcome, mean: $by_outcome); the sampled run took $((main_wall / 60)) min $((main_wall % 60)) s."
    echo
    if [[ "$partial" == true ]]; then
        echo "**Partial report**: the wall-clock budget stopped the run after $ran of the $planned mutants."
        echo
    fi
    echo "## Results"
    echo
    echo "| outcome | mutants |"
    echo "| --- | ---: |"
    echo "| caught | $caught |"
    echo "| missed | $missed |"
    echo "| unviable (does not build) | $unviable |"
    echo "| timeout | $timeouts |"
    echo "| run | $ran of $planned |"
    echo
    echo "Caught rate over viable mutants: $(pct "$caught" "$viable") caught ($caught of $viable);"
    echo "$(pct $((caught + timeouts)) "$viable") counting timeouts as caught. Goal: at least 95 %."
    if ((missed > 0)); then
        echo
        categories=$(for c in "${!per_category[@]}"; do echo "$c ${per_category[$c]}"; done | sort | paste -sd ';' -)
        echo "Missed, by the category of their reason: ${categories//;/, }."
        real=$((viable - not_real))
        echo "Leaving out the $not_real that no test can kill in this build (equivalent, or not compiled):"
        echo "$(pct $((caught + timeouts)) "$real") caught or timed out ($((caught + timeouts)) of $real)."
    fi
    echo
    echo "## Missed mutants"
    echo
    if ((missed == 0)); then
        echo "None."
    else
        echo "\"Full suite\": the outcome of the same mutant under \`cargo test --release --features std\`"
        echo "(caught there means the gap is only the subset's)."
        echo
        echo "| mutant | full suite | why it is missed |"
        echo "| --- | --- | --- |"
        while IFS= read -r name; do
            if grep -qxF "$name" "$RUN/confirm-caught.txt"; then
                full=caught
            elif grep -qxF "$name" "$RUN/confirm-missed.txt"; then
                full=missed
            else
                full="not run (out of time)"
            fi
            why=${why_of[$name]}
            printf '| `%s` | %s | %s |\n' "$(md_cell <<<"$name")" "$full" "$(md_cell <<<"$why")"
        done <"$out/missed.txt"
    fi
    if ((timeouts > 0)); then
        echo
        echo "## Timeouts"
        echo
        while IFS= read -r name; do
            printf -- '- `%s`\n' "$name"
        done <"$out/timeout.txt"
    fi
} >"$ROOT/MUTANTS.md"

echo "MUTANTS.md: $caught caught, $missed missed, $unviable unviable, $timeouts timeout ($ran of $planned run)"
exit
}
