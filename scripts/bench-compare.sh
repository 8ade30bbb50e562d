#!/usr/bin/env bash
# Compares the bench figures of two revisions on this machine, in one run:
#
#   scripts/bench-compare.sh OLD_REV NEW_REV      (make bench-compare OLD=... NEW=...)
#
# Each revision is exported (git archive, no worktree registered) to
# target/bench-compare/<sha>/ and built there in release with its own target
# directory, seeded from this checkout's target/release so that the
# dependencies (and whatever was built from files identical to this checkout's)
# are not compiled again; `make bench` first makes the seed fullest. Then each revision's own bench runs the
# `uncapped`, `capped` and `binary` scenarios BENCH_COMPARE_RUNS times (default
# 3), interleaved old, new, old, new…, and the script prints for each figure the
# median for old and new and new ÷ old.
#
# Like with like: each revision's own bench, because `uncapped` and `capped` run
# the handler in-process (the bench links the revision's library) and `binary`
# drives the binary built beside it. The three scenarios compute the same
# figures in both (this script reads them from the table each bench prints), so
# an OLD_REV whose bench is still one file, or lacks later scenarios, compares
# the same way. Figures a revision does not print (the root-store reads before
# they were counted) show as "—".
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 OLD_REV NEW_REV" >&2
    exit 2
fi
started=$(date +%s)
root=$(git rev-parse --show-toplevel)
runs=${BENCH_COMPARE_RUNS:-3}
base="$root/target/bench-compare"
mkdir -p "$base"
CARGO=${CARGO:-cargo}

old=$(git -C "$root" rev-parse --short=7 "$1^{commit}")
new=$(git -C "$root" rev-parse --short=7 "$2^{commit}")
echo "bench-compare: old $1 = $old, new $2 = $new; $runs runs each, interleaved" >&2

# Export and build one revision; prints nothing, fails loudly.
build() {
    local sha=$1 dir="$base/$1"
    if [ ! -f "$dir/.exported" ]; then
        rm -rf "$dir"
        mkdir -p "$dir"
        git -C "$root" archive "$sha" | tar -x -C "$dir"
        # Seed the build with this checkout's target/release: registry crates compile
        # the same for both revisions. Cargo tells a stale workspace crate by mtimes,
        # not content, so every exported file identical to this checkout's takes its
        # mtime (what was built from it stays fresh) and every other file is made
        # newer than anything seeded (what depends on it is built again).
        if [ -d "$root/target/release/deps" ]; then
            mkdir -p "$dir/target/release"
            for part in deps build .fingerprint examples; do
                [ -e "$root/target/release/$part" ] && cp -a --reflink=auto "$root/target/release/$part" "$dir/target/release/"
            done
            (cd "$dir" && git -C "$root" ls-tree -r --name-only "$sha") | while IFS= read -r file; do
                if cmp -s "$dir/$file" "$root/$file"; then
                    touch -h -r "$root/$file" "$dir/$file"
                else
                    touch -h "$dir/$file"
                fi
            done
        fi
        touch "$dir/.exported"
    fi
    echo "building $sha (release: the binary and the bench)…" >&2
    (cd "$dir" && CARGO_TARGET_DIR="$dir/target" $CARGO build --quiet --release --bin d365-trigger-relay --example bench) >&2
}

build_started=$(date +%s)
build "$old"
[ "$new" = "$old" ] || build "$new"
build_secs=$(($(date +%s) - build_started))

runs_started=$(date +%s)
for i in $(seq 1 "$runs"); do
    for side in old new; do
        sha=${!side}
        out="$base/run-$side-$i.txt"
        echo "run $i of $runs: $side ($sha)…" >&2
        (cd "$base/$sha" && BENCH_ONLY=uncapped,capped,binary BENCH_STRICT_ROOTS=0 ./target/release/examples/bench) >"$out" 2>"$base/run-$side-$i.err" || {
            echo "the bench of $sha failed (see $out and ${out%.txt}.err)" >&2
            exit 1
        }
    done
done
runs_secs=$(($(date +%s) - runs_started))

python3 - "$base" "$runs" "$1 ($old)" "$2 ($new)" "$build_secs" "$runs_secs" "$(($(date +%s) - started))" <<'EOF'
import re, statistics, sys

base, runs, old_name, new_name = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
build_secs, runs_secs, total_secs = (int(s) for s in sys.argv[5:8])

def number(cell):
    m = re.search(r"\*\*([0-9.]+)", cell) or re.search(r"([0-9.]+)", cell)
    return float(m.group(1)) if m else None

def figures(path):
    """The compared figures of one bench run, read from its Markdown table."""
    found = {}
    for line in open(path, encoding="utf-8"):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2:
            continue
        if cells[0] == "batch" and len(cells) >= 6:
            found[f"uncapped N = {cells[1]}, C = {cells[2]}: wall ÷ bound"] = number(cells[5])
        elif cells[0].startswith("capped at 16") and len(cells) >= 6:
            k = re.search(r"batch (\d) of 3", cells[0]).group(1)
            found[f"capped at 16, batch {k} of 3: wall ÷ bound"] = number(cells[5])
        elif cells[0].startswith("cold start"):
            found["cold start, ms (median of 9)"] = number(cells[1])
        elif cells[0].startswith("peak RSS, 1,000-record"):
            found["peak RSS, 1,000-record batch, MiB"] = number(cells[1])
        elif cells[0].startswith("peak RSS, 1-record"):
            found["peak RSS, 1-record batch, MiB"] = number(cells[1])
        elif cells[0].startswith("root-store reads at init"):
            found["root-store reads at init"] = number(cells[1])
    return found

sides = {side: [figures(f"{base}/run-{side}-{i}.txt") for i in range(1, runs + 1)] for side in ("old", "new")}
names = []
for side in ("old", "new"):
    for run in sides[side]:
        names += [n for n in run if n not in names]

def median(side, name):
    values = [run[name] for run in sides[side] if run.get(name) is not None]
    return statistics.median(values) if values else None

def show(v):
    return "—" if v is None else f"{v:.3f}" if v < 10 else f"{v:.1f}"

lines = [
    f"old: {old_name}; new: {new_name}; median of {runs} interleaved runs of each revision's own bench (BENCH_ONLY=uncapped,capped,binary)",
    "",
    f"| figure | old | new | new ÷ old |",
    "|---|---|---|---|",
]
for name in names:
    o, n = median("old", name), median("new", name)
    ratio = f"**{n / o:.3f}**" if o and n is not None else "—"
    lines.append(f"| {name} | {show(o)} | {show(n)} | {ratio} |")
lines += ["", f"took {total_secs} s: builds {build_secs} s, {2 * runs} bench runs {runs_secs} s"]
text = "\n".join(lines) + "\n"
print(text, end="")
open(f"{base}/compare.md", "w", encoding="utf-8").write(text)
print(f"\nwritten to target/bench-compare/compare.md")
EOF
