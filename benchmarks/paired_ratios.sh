#!/usr/bin/env bash
# Issue 8's figures in one go (run on a quiet machine: no tests or other benchmarks beside it):
#   1. five back-to-back default benches at N=4096 (wall time of each, the exp-vs-l1 line);
#   2. the op-level exp-vs-l1 table at N=1024, 4096 and 8192 (D=384, h=6);
#   3. the pure-op ns/element of Softmax vs l1 over N=256..4096 (part of the tokens sweep);
#   4. the tokens and channels sweeps with their plots and the stability-verdict counts.
#   ./benchmarks/paired_ratios.sh [OUTDIR]      (about 20 minutes on a 2-core machine)
set -euo pipefail
cd "$(dirname "$0")/.."
EA=.venv/bin/edgeattn
OUT="${1:-results/paired}"
mkdir -p "$OUT"
echo "== 1. five default benches, N=4096 D=384 h=6 (export cache warm: run once before)"
for i in 1 2 3 4 5; do
  start=$(date +%s.%N)
  $EA bench --device cpu --tokens 4096 --out "$OUT/bench-$i.jsonl" > "$OUT/bench-$i.txt"
  end=$(date +%s.%N)
  printf 'run %d: wall %.1f s: ' "$i" "$(echo "$end - $start" | bc)"
  grep -A1 "exp vs l1 at fixed" "$OUT/bench-$i.txt" | head -2 | tr -s ' \n' ' '
  echo
done
echo "== 2. op-level table at N=1024, 8192 (4096: see run 1)"
for n in 1024 8192; do
  $EA bench --device cpu --tokens "$n" --methods softmax,sima_qk --ops --out "$OUT/ops-$n.jsonl" \
    | sed -n '/isolated from the matmuls/,$p'
done
sed -n '/isolated from the matmuls/,/^records/p' "$OUT/bench-1.txt"
echo "== 3+4. sweeps (tokens includes the pure-op pair), plots, verdicts"
$EA sweep --regime tokens --out "$OUT/sweep-tokens.jsonl" --plot "$OUT/tokens.png"
$EA sweep --regime channels --out "$OUT/sweep-channels.jsonl" --plot "$OUT/channels.png"
