#!/usr/bin/env bash
# Builds every role of the firmware at opt-level "s" and "z" (and the group
# role without sha2's compact backend), runs each under QEMU, and writes
# FOOTPRINT.md at the repository root from the ELF section sizes and what
# the runs print (`@ key value` lines over semihosting).
#
#   bash examples/firmware/footprint.sh            # writes FOOTPRINT.md
#   bash examples/firmware/footprint.sh --run-only # group, installer, guardian, opt "s": build, run, check (CI)
#   bash examples/firmware/footprint.sh --report-only # FOOTPRINT.md again from the last run's logs
#
# Needs the thumbv7em-none-eabihf target, qemu-system-arm and python3.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$here" # .cargo/config.toml here sets the target, runner and rustflags

QEMU=(qemu-system-arm -cpu cortex-m4 -machine mps2-an386 -nographic
    -semihosting-config enable=on,target=native -icount shift=0 -kernel)
TARGET=thumbv7em-none-eabihf
ROLES=(group installer guardian client none)
logs="$here/target/footprint"
mkdir -p "$logs"

# build VARIANT OPT ROLE [RUSTFLAGS]: builds into target/fp-VARIANT, echoes the ELF.
build() {
    local variant=$1 opt=$2 role=$3 flags=${4:-}
    local features=(--no-default-features --features "role-$role")
    local dir="$here/target/fp-$variant"
    if [[ -n "$flags" ]]; then
        RUSTFLAGS="$flags" CARGO_PROFILE_RELEASE_OPT_LEVEL="$opt" \
            cargo build --release --quiet --target-dir "$dir" "${features[@]}" >&2
    else
        CARGO_PROFILE_RELEASE_OPT_LEVEL="$opt" \
            cargo build --release --quiet --target-dir "$dir" "${features[@]}" >&2
    fi
    local elf="$logs/$variant-$role.elf"
    cp "$dir/$TARGET/release/bft-upgrade-firmware" "$elf"
    echo "$elf"
}

# run ELF LOG: runs under QEMU (60 s at most), fails unless it exits 0.
run() {
    local elf=$1 log=$2
    if ! timeout 60 "${QEMU[@]}" "$elf" >"$log" 2>&1; then
        cat "$log" >&2
        echo "firmware run failed: $elf" >&2
        return 1
    fi
    grep -E '^firmware: ' "$log"
}

if [[ "${1:-}" == "--run-only" ]]; then
    for role in group installer guardian; do
        elf=$(build s s "$role")
        run "$elf" "$logs/s-$role.log"
    done
    exit 0
fi

variants=()
for opt in s z; do
    for role in "${ROLES[@]}"; do
        variants+=("$opt:$role")
    done
done
variants+=("s-sha2default:group" "s-mincap:group")

if [[ "${1:-}" != "--report-only" ]]; then
for opt in s z; do
    for role in "${ROLES[@]}"; do
        echo "==> opt-level $opt, role $role" >&2
        elf=$(build "$opt" "$opt" "$role")
        run "$elf" "$logs/$opt-$role.log"
    done
done
# The group role with sha2's default (unrolled) software backend: the
# config's rustflags without the compact cfg.
echo "==> opt-level s, role group, sha2 default backend" >&2
elf=$(build s-sha2default s group "-C link-arg=-Tlink.x")
run "$elf" "$logs/s-sha2default-group.log"
# The group role at the smallest capacities that still run the bundle
# (one piece in flight, two finished outcomes, one neighbor): what the
# capacities can buy towards the RAM goal, n <= 16 kept.
echo "==> opt-level s, role group, smallest capacities" >&2
elf=$(BFT_UPGRADE_MAX_IN_FLIGHT=1 BFT_UPGRADE_HISTORY=2 BFT_UPGRADE_MAX_NEIGHBORS=1 BFT_UPGRADE_MAX_ATTACHED=1 \
    BFT_UPGRADE_MAX_DIFFUSING=1 BFT_UPGRADE_MAX_RESOURCES=1 build s-mincap s group)
run "$elf" "$logs/s-mincap-group.log"
fi

toolchain="$(rustc --version), $(qemu-system-arm --version | head -n1)"
python3 - "$logs" "$root/FOOTPRINT.md" "$toolchain" "${variants[@]}" <<'PY'
"""Writes FOOTPRINT.md from the ELFs and logs footprint.sh left in its log dir."""
import datetime
import os
import re
import struct
import subprocess
import sys

logs, out, toolchain, variants = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
KIB = 1024


def sections(path):
    """Section name -> size, from the ELF32 section headers."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:4] == b"\x7fELF" and data[4] == 1, "ELF32 expected"
    shoff, = struct.unpack_from("<I", data, 0x20)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x2E)
    heads = [struct.unpack_from("<IIIIIIIIII", data, shoff + i * shentsize) for i in range(shnum)]
    strtab = heads[shstrndx][4]
    result = {}
    for h in heads:
        name = data[strtab + h[0]:data.index(b"\0", strtab + h[0])].decode()
        result[name] = h[5]
    return result


def values(path):
    """The `@ key value` lines of a run."""
    result = {}
    with open(path) as f:
        for line in f:
            m = re.match(r"^@ (\S+) (\S+)$", line.strip())
            if m:
                result[m.group(1)] = m.group(2)
    return result


def sizes(variant, role):
    s = sections(os.path.join(logs, f"{variant}-{role}.elf"))
    v = values(os.path.join(logs, f"{variant}-{role}.log"))
    text, rodata, data = s.get(".text", 0), s.get(".rodata", 0), s.get(".data", 0)
    vector = s.get(".vector_table", 0)
    bss = s.get(".bss", 0) + s.get(".uninit", 0)
    return {
        "text": text, "rodata": rodata, "vector": vector, "data": data, "bss": bss,
        "flash": vector + text + rodata + data, "static": data + bss,
        "stack": int(v.get("stack.peak", 0)), "bundle": int(v.get("bundle.bytes", 0)), "v": v,
    }


def k(n):
    return f"{n / KIB:.1f}"


roles = ["group", "installer", "guardian", "client", "none"]
table = {(var, role): sizes(var, role) for var, role in (x.split(":") for x in variants)}
g = table[("s", "group")]
gv = g["v"]
none = table[("s", "none")]

lines = []
w = lines.append
w("# Firmware footprint")
w("")
w("Generated by `examples/firmware/footprint.sh`; do not edit by hand.")
w("")
w(f"- Date: {datetime.date.today().isoformat()}")
w(f"- Toolchain: {toolchain}")
w("- Target: thumbv7em-none-eabihf (Cortex-M4F), QEMU `mps2-an386`, `-icount shift=0`")
w("- Profile: `lto = true`, `codegen-units = 1`, `panic = \"abort\"`; sha2 with "
  "`--cfg sha2_backend_soft=\"compact\"` unless said otherwise")
caps = ", ".join(f"{k[4:]} = {v}" for k, v in gv.items() if k.startswith("cap."))
w(f"- Capacities as compiled (`bft_upgrade::capacity`, set in `examples/firmware/.cargo/config.toml` `[env]`): {caps}")
w("")
w("Each role is its own build (cargo feature `role-*`) and run on the fixed test bundle. "
  "Flash is `.vector_table + .text + .rodata + .data` (the load image); static RAM is "
  "`.data + .bss`; peak stack is measured by painting the free RAM and finding the lowest "
  "word written, over the whole run. RAM = static + peak stack. The `none` build is the "
  "measuring harness alone (semihosting, formatting, SysTick, stack painting); the test bundle "
  "is included in `.rodata` (column *bundle*).")
w("")
for opt in ["s", "z"]:
    w(f"## opt-level \"{opt}\"")
    w("")
    w("| role | .text | .rodata | .data | .bss | flash | of which bundle | static RAM | peak stack | RAM total |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for role in roles:
        t = table[(opt, role)]
        w(f"| {role} | {t['text']} | {t['rodata']} | {t['data']} | {t['bss']} | "
          f"{t['flash']} ({k(t['flash'])} KiB) | {t['bundle']} | {t['static']} ({k(t['static'])} KiB) | "
          f"{t['stack']} ({k(t['stack'])} KiB) | {k(t['static'] + t['stack'])} KiB |")
    w("")
sd = table.get(("s-sha2default", "group"))
if sd:
    w(f"sha2's default software backend instead of `compact` (group role, opt-level \"s\"): "
      f"flash {sd['flash']} bytes ({k(sd['flash'])} KiB), {sd['flash'] - g['flash']:+} bytes; "
      f"prepare + release + commit (n = 4) {int(sd['v'].get('instr.n4.prepare', 0)) + int(sd['v'].get('instr.n4.commit', 0)):,} "
      f"instructions.")
    w("")

w("## Group role against the goals (opt-level \"s\")")
w("")
flash_net = g["flash"] - g["bundle"]
ram = g["static"] + g["stack"]
w("| measure | value | acceptance | goal |")
w("|---|---:|---|---|")
w(f"| flash (test bundle excluded) | {k(flash_net)} KiB | {'fits' if flash_net <= 128 * KIB else 'MISSES'} 128 KiB "
  f"| {'fits' if flash_net <= 64 * KIB else 'MISSES'} 64 KiB |")
w(f"| RAM: static + peak stack | {k(ram)} KiB | {'fits' if ram <= 32 * KIB else 'MISSES'} 32 KiB "
  f"| {'fits' if ram <= 16 * KIB else 'MISSES'} 16 KiB |")


def n(key):
    return int(gv.get(key, 0))


mc = table.get(("s-mincap", "group"))
if mc:
    mv = mc["v"]
    mcaps = ", ".join(f"{key[4:]} = {val}" for key, val in mv.items() if key.startswith("cap."))
    mram = mc["static"] + mc["stack"]
    w(f"| RAM at the smallest capacities ({mcaps}) | {k(mram)} KiB "
      f"(static {k(mc['static'])} + stack {k(mc['stack'])}) | | {'fits' if mram <= 16 * KIB else 'MISSES'} 16 KiB |")


for size in [4, 16]:
    prc = n(f"instr.n{size}.prepare") + n(f"instr.n{size}.commit")
    bare = n(f"n{size}.instr.bare_verify") + n(f"n{size}.instr.bare_ecdh")
    crate = n(f"n{size}.instr.crate_verify") + n(f"n{size}.instr.crate_ecdh")
    w(f"| n = {size}: prepare + release + commit / (bare p256 verify + ECDH) | {prc:,} / {bare:,} = "
      f"{prc / bare:.3f}x | | {'meets' if prc <= 1.2 * bare else 'MISSES'} 1.2x |")
    w(f"| n = {size}: the same / (crate `Signature::verify` + `shared_secret`, with point decompression) | "
      f"{prc:,} / {crate:,} = {prc / crate:.3f}x | | {'meets' if prc <= 1.2 * crate else 'MISSES'} 1.2x |")
w("")

def sz(key):
    return int(gv.get(f"size.{key}", 0))


w("")
w("Where the space goes (read from the numbers below):")
w("")
caps = {k[4:]: int(v) for k, v in gv.items() if k.startswith("cap.")}
w(f"- Static RAM is the role's values at the capacities compiled in: `GroupReplica` {sz('GroupReplica'):,} "
  f"bytes (up to {caps.get('MAX_IN_FLIGHT')} held pieces, each with room for {caps.get('MAX_GUARDIANS')} "
  f"guardians' digests and fetched shares; {caps.get('HISTORY')} finished outcomes; "
  f"{caps.get('MAX_NEIGHBORS')} neighbors' outboxes; a {caps.get('MAX_REPLICAS')}-replica membership) and the "
  f"`Operation` holding the piece, {sz('Operation'):,} bytes ({caps.get('MAX_REPLICAS')} replica entries and "
  f"{caps.get('MAX_GUARDIANS')} guardian entries), whatever the group's actual size.")
phases = {ph: n(f"stack.n4.{ph}") for ph in ["new", "decode_piece", "prepare", "commit", "open_payload"]}
top = max(phases, key=phases.get)
w(f"- Peak stack is set by `{top}` ({phases[top]:,} bytes). The others: "
  + ", ".join(f"`{ph}` {v:,}" for ph, v in phases.items() if ph != top)
  + f". Prepare holds a `Step<GroupEffect>` ({sz('Step<GroupEffect>'):,} bytes) while p256 verifies "
  f"(a bare verify alone takes {n('stack.n4.bare_verify'):,}); the piece is decoded in place "
  f"(`wire::decode_into`), where decoding it by value copied it up through each level of the decoder "
  f"(about six pieces of stack).")
if mc:
    mv = mc["v"]
    w(f"- The 16 KiB RAM goal is not met, and capacities alone cannot meet it: at the smallest capacities "
      f"`GroupReplica` shrinks to {int(mv.get('size.GroupReplica', 0)):,} bytes, but the piece being "
      f"prepared ({int(mv.get('size.Operation', 0)):,} bytes at 16 replicas and 7 guardians, which the "
      f"replica must hold to order it) and prepare's stack ({int(mv.get('stack.n4.prepare', 0)):,} bytes: "
      f"the `Step` returned by value, {int(mv.get('size.Step<GroupEffect>', 0)):,} bytes, held across "
      f"p256's verify, {int(mv.get('stack.n4.bare_verify', 0)):,}) stay, "
      f"{k(mc['static'] + mc['stack'])} KiB in all. Meeting it would take a piece streamed through "
      f"verification instead of held whole, and outputs written into caller-provided buffers instead of "
      f"a `Step` returned by value: an API change, not a setting.")
w(f"- Flash: P-256 arithmetic, ECDSA, SHA-256, HKDF, ChaCha20-Poly1305 and the serde decoders dominate "
  f"(see the tables at the end); the harness alone (`none`) is {k(none['flash'])} KiB.")
w("")
w("Instructions are counted, not estimated: QEMU does not emulate the DWT cycle counter "
  f"(`dwt.cyccnt` = {gv.get('dwt.cyccnt')}), so the SysTick (core clock) is read, and with `-icount shift=0` one "
  f"tick is {int(gv.get('meter.instr_per_tick_x1024', 0)) / 1024:.1f} instructions (calibrated at start on a loop "
  "of known length; resolution 40 instructions). Instruction counts are not Cortex-M4 cycles: "
  "loads, multiplies and taken branches cost more cycles on hardware.")
w("")

w("## Installer and guardian against the goals (opt-level \"s\")")
w("")
w("Each runs one group of 4 on the fixed bundle: the installer prepares it, rebuilds `s_g` from two "
  "answers and sends the commit; the guardian keeps its shares of a guardian-custody piece and releases "
  "the `s_g` share after two requests. The host decodes the piece in place (`wire::decode_into`) into "
  "static memory, as the group's firmware does; decoded by value it took 34,716 bytes of stack "
  "(measured before the change), which put both roles over 44 KiB.")
w("")
w("| role | static RAM | peak stack | RAM total | goal | largest phase (stack) |")
w("|---|---:|---:|---:|---|---|")
for role in ["installer", "guardian"]:
    t = table[("s", role)]
    total = t["static"] + t["stack"]
    ph = {key[6:]: int(val) for key, val in t["v"].items() if key.startswith("stack.") and key not in
          ("stack.peak", "stack.room")}
    top = max(ph, key=ph.get) if ph else "-"
    w(f"| {role} | {t['static']:,} | {t['stack']:,} | {k(total)} KiB | "
      f"{'meets' if total <= 32 * KIB else 'MISSES'} 32 KiB | `{top}` ({ph.get(top, 0):,}) |")
w("")
w("Peak stack is the phase's stack plus the frame of the role's `run`, which holds the decoded header, "
  "the role value and each `Step` by value.")
w("")

w("## Group role phases (opt-level \"s\")")
w("")
w("Stack is what the phase used below its caller's frame.")
w("")
w("| phase | n = 4: instructions | n = 4: stack | n = 16: instructions | n = 16: stack |")
w("|---|---:|---:|---:|---:|")
for phase, what in [
    ("new", "decode `GroupConfig`, `GroupReplica::new`"),
    ("decode_piece", "`wire::decode_into` of the piece, in an `Operation`"),
    ("prepare", "`handle_ordered(PrepareInstall)`: verify, open box, release share"),
    ("commit", "`handle_ordered(CommitInstall(τ))`"),
    ("open_payload", "`PayloadOpener`, 200 bytes in 64-byte chunks"),
    ("bare_verify", "bare p256 `VerifyingKey::verify_prehash` (parsing key and signature)"),
]:
    w(f"| {what} | {n(f'instr.n4.{phase}'):,} | {n(f'stack.n4.{phase}'):,} | "
      f"{n(f'instr.n16.{phase}'):,} | {n(f'stack.n16.{phase}'):,} |")
w("")
w("Where prepare's instructions go (n = 4 / n = 16):")
w("")
for key, what in [
    ("header_digest", "`PieceHeader::digest` (hashing the encoded header)"),
    ("piece_verify", "`Piece::verify` (digest + ECDSA with key decompression)"),
    ("open_for", "`Piece::open_for` (ECDH with decompression, HKDF, ChaCha20-Poly1305, two share digests)"),
    ("bare_verify", "bare p256 verify (key parsed beforehand)"),
    ("bare_ecdh", "bare p256 ECDH (point parsed beforehand)"),
    ("crate_verify", "crate `Signature::verify`"),
    ("crate_ecdh", "crate `shared_secret`"),
]:
    w(f"- {what}: {n(f'n4.instr.{key}'):,} / {n(f'n16.instr.{key}'):,}")
w("")

w("## Sizes of the roles' values (bytes, `core::mem::size_of` on the target)")
w("")
w("| type | bytes |")
w("|---|---:|")
seen = set()
for role in ["group", "installer", "guardian", "client"]:
    for key, val in table[("s", role)]["v"].items():
        if key.startswith("size.") and key not in seen:
            seen.add(key)
            w(f"| `{key[5:]}` | {int(val):,} |")
w("")

w("## What takes the flash (group role, opt-level \"s\", largest symbols)")
w("")
try:
    nm = subprocess.run(["nm", "--size-sort", "-C", "-S", os.path.join(logs, "s-group.elf")],
                        capture_output=True, text=True, check=True).stdout
    syms = []
    for line in nm.splitlines():
        parts = line.split(None, 3)
        if len(parts) == 4 and parts[2] in "tTrR":
            syms.append((int(parts[1], 16), parts[2], parts[3]))
    syms.sort(reverse=True)
    by_crate = {}
    for size, kind, name in syms:
        m = re.match(r"^<*([A-Za-z_][A-Za-z0-9_]*)", name)
        crate = m.group(1) if m else "?"
        by_crate[crate] = by_crate.get(crate, 0) + size
    w("By crate (sum of the sizes of its code and read-only data symbols; generic code is "
      "counted where it was instantiated, e.g. `serde_core` holds the crate's derived decoders, "
      "and `<T as Trait>` names count under `T`'s crate; with LTO, library code inlined into the "
      "firmware's phase functions, e.g. `handle_ordered` into `group::prepare`, counts under "
      "`bft_upgrade_firmware`; `?` is unnamed data such as the test bundle):")
    w("")
    w("| bytes | crate |")
    w("|---:|---|")
    for crate, size in sorted(by_crate.items(), key=lambda x: -x[1])[:15]:
        w(f"| {size} | `{crate}` |")
    w("")
    w("Largest symbols:")
    w("")
    w("| bytes | kind | symbol |")
    w("|---:|---|---|")
    for size, kind, name in syms[:20]:
        name = re.sub(r"::h[0-9a-f]{16}$", "", name)
        if len(name) > 110:
            name = name[:107] + "..."
        w(f"| {size} | {'code' if kind in 'tT' else 'data'} | `{name.replace('|', '/')}` |")
except (OSError, subprocess.CalledProcessError) as e:
    w(f"(nm not available: {e})")
w("")
w("## What takes the stack (group role, opt-level \"s\", largest frames)")
w("")
w("Frame sizes read from each function's prologue (`push`, `vpush`, `sub sp`); a frame "
  "holds the function's by-value temporaries and those of everything inlined into it.")
w("")
try:
    dis = subprocess.run(["llvm-objdump", "-d", "--no-show-raw-insn", "-C", os.path.join(logs, "s-group.elf")],
                         capture_output=True, text=True, check=True).stdout
    frames, fn, regs, count = {}, None, {}, 0
    for line in dis.splitlines():
        m = re.match(r"^[0-9a-f]+ <(.*)>:$", line)
        if m:
            fn, regs, count = m.group(1), {}, 0
            frames[fn] = 0
            continue
        m = re.match(r"\s*[0-9a-f]+:\s+(\S+)\s*(.*)$", line)
        if fn is None or not m:
            continue
        count += 1
        if count > 40:  # prologues only
            continue
        op, args = m.group(1), m.group(2)
        mm = re.match(r"(?:movw|mov\.w|movs|mov)\s+(r\d+|ip), #(\d+)$", f"{op} {args}")
        if mm:
            regs[mm.group(1)] = int(mm.group(2))
        elif op.startswith("push"):
            frames[fn] += 4 * len(args.split(","))
        elif op.startswith("vpush"):
            frames[fn] += 8 * len(args.split(","))
        elif op.startswith("sub") and re.match(r"sp, (sp, )?#", args):
            frames[fn] += int(args.split("#")[1].split()[0], 0)
        elif op.startswith("sub") and re.match(r"sp, (sp, )?(r\d+|ip)$", args):
            frames[fn] += regs.get(args.split(",")[-1].strip(), 0)
    w("| frame bytes | function |")
    w("|---:|---|")
    for name, size in sorted(frames.items(), key=lambda x: -x[1])[:12]:
        name = re.sub(r"::h[0-9a-f]{16}$", "", name)
        if len(name) > 110:
            name = name[:107] + "..."
        w(f"| {size} | `{name.replace('|', '/')}` |")
except (OSError, subprocess.CalledProcessError) as e:
    w(f"(llvm-objdump not available: {e})")
w("")
with open(out, "w") as f:
    f.write("\n".join(lines))
print(f"wrote {out}")
PY
