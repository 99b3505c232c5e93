#!/usr/bin/env bash
# How fast tidings could go on this machine if durability cost nothing: a ceiling for its
# figures, not a figure of tidings. Builds the node twice from HEAD, as it is and with
# bench/ceiling/no-fsync.patch applied (every store commit skips redb's fsync and the
# write-ahead log, so nothing is durable and the store never waits on the disk; everything
# else, signatures, replication, matching and the B-tree work included, is the same), runs the
# same compare measurement on each, interleaved round by round (one compare run per system and
# scenario), and prints each run, the medians, and how busy the machine's cores were over the
# busiest 3 s of each run (from /proc/stat).
#
#   bench/ceiling.sh [ROUNDS (3)] [compare options (default: --systems tidings-3 --scenarios latency)]
#   bench/ceiling.sh --report bench/results/ceiling-<date>.jsonl   # print a saved run again
#   bench/ceiling.sh --check     # does the patched tree still compile? (scripts/test.sh runs it)
#
# Writes bench/results/ceiling-<date>.jsonl: compare's result lines, each with "variant",
# "round" and "busy" added. The patched binary is built under target/ceiling/ and never
# installed: it acknowledges events that a crash loses. Takes ≈10 minutes the first time on a
# 2-core VM (the patched build), then ≈2 plus ≈15 s per measurement.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

# Prints a results file: every run, then the medians of each variant and their ratio.
report() {
  python3 - "$1" <<'EOF'
import json, statistics, sys
rows = [d for d in map(json.loads, open(sys.argv[1])) if "variant" in d]
def ms(us): return f"{us / 1000:.1f} ms"
print(f"results: {sys.argv[1]}")
print(f"{'variant':<9} {'round':>5} {'system':<10} {'scenario':<18} {'published/s':>11} {'p50':>9} {'p99':>9} {'busy':>5} lost/dup")
for d in rows:
    print(f"{d['variant']:<9} {d['round']:>5} {d['system']:<10} {d['scenario']:<18} {d['published_per_s']:>11,.0f} "
          f"{ms(d['p50_us']):>9} {ms(d['p99_us']):>9} {d['busy']:>5.0%} {d['lost']}/{d['dup']}")
print("medians (durable ÷ ceiling):")
for key in sorted({(d['system'], d['scenario']) for d in rows}):
    med = {}
    for v in ("durable", "ceiling"):
        sel = [d for d in rows if d['variant'] == v and (d['system'], d['scenario']) == key]
        if not sel:
            break
        med[v] = {f: statistics.median(d[f] for d in sel) for f in ("published_per_s", "p50_us", "p99_us", "busy")}
    if len(med) < 2:
        continue
    dv, cv = med["durable"], med["ceiling"]
    print(f"  {key[0]} {key[1]}: durable {dv['published_per_s']:,.0f}/s, p50 {ms(dv['p50_us'])}, p99 {ms(dv['p99_us'])}, busy {dv['busy']:.0%}; "
          f"ceiling {cv['published_per_s']:,.0f}/s, p50 {ms(cv['p50_us'])}, p99 {ms(cv['p99_us'])}, busy {cv['busy']:.0%}; "
          f"p50 {dv['p50_us'] / cv['p50_us']:.2f}×, p99 {dv['p99_us'] / cv['p99_us']:.2f}×")
EOF
}

if [ "${1:-}" = "--report" ]; then
  [ $# -eq 2 ] && [ -f "$2" ] || { echo "usage: bench/ceiling.sh --report FILE.jsonl" >&2; exit 2; }
  report "$2"
  exit 0
fi

# Puts a worktree of HEAD at $1 with the patch applied, or stops saying the patch needs updating.
# Both the measurement and --check start from it.
patched_tree() {
  git worktree add -q --detach "$1" HEAD
  git -C "$1" apply "$root/bench/ceiling/no-fsync.patch" || {
    echo "ceiling.sh: bench/ceiling/no-fsync.patch no longer applies to node/src/store/writer.rs; update it" >&2
    exit 1
  }
}

# Type-checks the patched node, into the workspace's own target/ (only the patched crates are
# checked again: a few seconds after clippy). A change to the store can leave the patch applying
# cleanly but no longer compiling; this finds that in CI rather than at the next measurement.
if [ "${1:-}" = "--check" ]; then
  [ $# -eq 1 ] || { echo "usage: bench/ceiling.sh --check" >&2; exit 2; }
  check=$(mktemp -d /tmp/tidings-ceiling-check.XXXXXX)
  trap 'git worktree remove --force "$check/tree" 2>/dev/null || true; rm -rf "$check"' EXIT
  patched_tree "$check/tree"
  (cd "$check/tree" && CARGO_TARGET_DIR="$root/target" cargo check -q -p tidings-node) || {
    echo "ceiling.sh: the tree with bench/ceiling/no-fsync.patch applied no longer compiles; update the patch" >&2
    exit 1
  }
  echo "ceiling.sh: bench/ceiling/no-fsync.patch applies to HEAD and the patched node compiles"
  exit 0
fi

rounds=3
if [ $# -gt 0 ] && [[ "$1" =~ ^[0-9]+$ ]]; then
  rounds=$1
  shift
fi
if ! git diff --quiet HEAD -- node ipld-schema matcher Cargo.lock; then
  echo "ceiling.sh: node/, ipld-schema/, matcher/ or Cargo.lock has changes not committed; both builds come from HEAD, so commit first" >&2
  exit 2
fi

work=$(mktemp -d /tmp/tidings-ceiling.XXXXXX)
tree="$work/tree"
sampler=""
cleanup() {
  # A run that fails or is interrupted leaves no sampler looping behind it.
  if [ -n "$sampler" ]; then kill "$sampler" 2>/dev/null || true; fi
  git worktree remove --force "$tree" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "== building tidings (HEAD $(git rev-parse --short HEAD)) and the driver" >&2
cargo build --release -q -p tidings-node -p tidings-bench
cp target/release/tidings "$work/tidings-durable"

echo "== building the no-fsync variant into target/ceiling/ (≈8 min the first time)" >&2
patched_tree "$tree"
(cd "$tree" && CARGO_TARGET_DIR="$root/target/ceiling" cargo build --release -q -p tidings-node)
cp target/ceiling/release/tidings "$work/tidings-ceiling"
# The builds leave about a gigabyte of dirty pages; written back during a measurement, they
# would stall the store's fsyncs (one run right after the builds, without this, gave tidings-1
# a p99 of 100 ms at 5,000/s, against 3.5-7 ms otherwise).
sync

mkdir -p bench/results
stamp=$(date -u +%Y%m%d-%H%M%S)
out="bench/results/ceiling-$stamp.jsonl"
# The first line describes the run, as every results file's does.
python3 - "$stamp" "$(git rev-parse --short HEAD)" "$rounds" "$*" > "$out" <<'EOF'
import json, os, platform, sys, time
stamp, commit, rounds, args = sys.argv[1:]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
mem = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal"))
print(json.dumps({
    "bench": "ceiling-run",
    "date": time.strftime("%Y-%m-%d %H:%M:%S", time.strptime(stamp, "%Y%m%d-%H%M%S")),
    "command": f"bench/ceiling.sh {rounds} {args}",
    "cpu": cpu, "cores": os.cpu_count(), "kernel": f"linux {platform.release()}",
    "memory": f"{mem / 1048576:.1f} GiB", "loadavg_at_start": open("/proc/loadavg").read().strip(),
    "tidings_commit": commit, "variants": {
        "durable": "tidings as built from that commit",
        "ceiling": "the same with bench/ceiling/no-fsync.patch: no fsync, no write-ahead log"},
}))
EOF
# compare runs its systems and scenarios one after another; each pair runs on its own here, so
# that the busy share read beside it is that pair's.
systems=""
scenarios=""
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --systems) systems=$2; shift 2 ;;
    --scenarios) scenarios=$2; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
systems=${systems:-tidings-3}
scenarios=${scenarios:-latency}

# Samples /proc/stat's first line every 0.5 s into $1 until killed: "busy idle" jiffies.
sample() {
  while :; do
    awk '/^cpu /{print $2+$3+$4+$7+$8, $5+$6}' /proc/stat >> "$1"
    sleep 0.5
  done
}

for r in $(seq 1 "$rounds"); do
  for sys in ${systems//,/ }; do
    for s in ${scenarios//,/ }; do
      for v in durable ceiling; do
        dir="$work/$v-$sys-$s-$r"
        mkdir -p "$dir"
        sample "$dir.cpu" &
        sampler=$!
        # --latency-secs 4: the 4 s window its saved runs used (a later option in ARGS wins).
        TIDINGS_BIN="$work/tidings-$v" target/release/compare --runs 1 --out "$dir" --systems "$sys" --scenarios "$s" --latency-secs 4 \
          "${args[@]}" > "$dir.log" 2>&1 || {
          echo "ceiling.sh: compare failed on $v, $sys, $s, round $r:" >&2
          tail -20 "$dir.log" >&2
          exit 1
        }
        kill "$sampler"
        wait "$sampler" 2>/dev/null || true
        sampler=""
        for f in "$dir"/results/*.jsonl; do
          grep '"scenario"' "$f" | python3 -c '
import json, sys
# The busiest 3 s (6 samples apart) of the run: inside its publishing, which lasts 4 s by
# default; the whole run would count the setup and the grace period too.
samples = [tuple(map(int, l.split())) for l in open(sys.argv[3]) if l.strip()]
busiest = 0.0
for a, b in zip(samples, samples[6:]):
    busy, idle = b[0] - a[0], b[1] - a[1]
    if busy + idle:
        busiest = max(busiest, busy / (busy + idle))
for line in sys.stdin:
    d = json.loads(line)
    d.update(variant=sys.argv[1], round=int(sys.argv[2]), busy=round(busiest, 3))
    print(json.dumps(d))' "$v" "$r" "$dir.cpu" >> "$out"
        done
      done
    done
  done
done

report "$out"
