#!/usr/bin/env bash
# bench/ab.sh: an interleaved A/B of two vipmux variants, the way every lever
# in bench/results/TUNING.md is decided.
#
#   bench/ab.sh 'BIN=/tmp/vipmux-a' 'BIN=/tmp/vipmux-b'
#   bench/ab.sh 'DISPATCH_EXTRA="delayed_ack = \"0s\""' ''
#
# Each side is a list of environment assignments for bench/run.sh (BIN,
# VIPMUX_ENV, NIC_EXTRA, DISPATCH_EXTRA, ...). PAIRS rounds (default 5) run
# A then B, alternating which goes first, each a whole bench/run.sh with
# RUNS=1, pinned (PIN=1), only the paths haproxy and vipmux-m1, and only
# the groups in ONLY (default conns,latency). What is compared is vipmux's
# ratio to HAProxy measured in the same run, so a machine that is busier
# in one round moves both sides of that round's ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# = 2 ] || { echo "usage: bench/ab.sh 'A assignments' 'B assignments'"; exit 2; }
PAIRS=${PAIRS:-5} T=${T:-5} ONLY=${ONLY:-conns,latency}
dir=${AB_DIR:-$(mktemp -d /tmp/vipmux-ab.XXXXXX)}
mkdir -p "$dir"
side() { # side NAME SPEC ROUND
	eval "env $2 QUICK=1 RUNS=1 T=$T PIN=\${PIN:-1} ONLY=$ONLY PATHS='haproxy vipmux-m1' OUT=$dir/$1-$3.md ./bench/run.sh" >"$dir/$1-$3.log" 2>&1 ||
		{ echo "ab: side $1 round $3 failed; see $dir/$1-$3.log"; tail -5 "$dir/$1-$3.log"; exit 1; }
}
for r in $(seq "$PAIRS"); do
	if [ $((r % 2)) = 1 ]; then side A "$1" "$r"; side B "$2" "$r"; else side B "$2" "$r"; side A "$1" "$r"; fi
	echo "ab: pair $r/$PAIRS done" >&2
done
python3 - "$dir" "$PAIRS" "$1" "$2" <<'PY'
import re, statistics, sys
d, pairs, a, b = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def ratios(path):
    out = {}
    for line in open(path):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 7 or cells[0] in ("figure", "---"): continue
        m = re.match(r"[0-9.]+", cells[5])
        if m: out[cells[0]] = float(m.group())
    return out
A = [ratios(f"{d}/A-{r}.md") for r in range(1, pairs + 1)]
B = [ratios(f"{d}/B-{r}.md") for r in range(1, pairs + 1)]
print(f"A: {a or '(defaults)'}\nB: {b or '(defaults)'}\n")
print("| figure (vipmux/HAProxy, pinned) | A per pair | B per pair | A median | B median | B/A |")
print("|---|---|---|---|---|---|")
for fig in A[0]:
    xa = [x[fig] for x in A if fig in x]; xb = [x[fig] for x in B if fig in x]
    if not xa or not xb: continue
    ma, mb = statistics.median(xa), statistics.median(xb)
    print(f"| {fig} | {' '.join('%.2f' % x for x in xa)} | {' '.join('%.2f' % x for x in xb)} | {ma:.2f} | {mb:.2f} | {mb / ma:.2f} |")
print(f"\nrounds kept in {d}")
PY
