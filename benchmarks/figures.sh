#!/usr/bin/env bash
# The figures quoted in the README and the issue notes, measured on this machine in one go.
#   ./benchmarks/figures.sh            (about 10 minutes on a 2-core machine)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
EA=.venv/bin/edgeattn
mkdir -p results
echo "== exp vs l1, dynamic order, fused softmax, SOFT, XCA: N=4096 D=384 h=6"
$EA bench --tokens 4096 --dim 384 --heads 6 --min-time 3 --out results/bench-4096.jsonl
echo "== crossover: D=384 with h=6 and h=1"
$EA sweep --regime crossover --dim 384 --heads 6 --crossover-heads 6,1 --out results/crossover.jsonl \
  --write-crossover results/crossover.json --min-time 0.5
echo "== SOFT scaling"
$PY benchmarks/soft_scaling.py --out results/soft_scaling.jsonl
echo "== harness fidelity"
$PY benchmarks/harness_fidelity.py --method softmax --tokens 1024
echo "== export figures"
for m in soft_tiny sima_tiny_12_p16; do
  /usr/bin/time -f "$m export wall %e s, max RSS %M KB" $EA export "$m" --opset 17 -o "results/$m.onnx"
  ls -l "results/$m.onnx"
done
echo "== profile"
$EA profile soft_tiny --depth stage --out results/profile-soft_tiny.jsonl
