#!/usr/bin/env bash
# One GPU session in one command: build the extensions, run the GPU tests and compute-sanitizer,
# then the kernel and end-to-end benchmarks.  Every phase has its own time limit, and the phases are
# ordered by value, so a slow phase costs the later ones their time, never the whole run.
#
#   OUT=dir FASTREWEIGHT_COMMIT=$(git rev-parse --short HEAD) bash benchmarks/gpu_session.sh [seconds]
#
# Writes at most eight files under $OUT: env.txt, build.log, pytest_triton.log, pytest_cuda.log,
# sanitizer.log, gpu_kernels.jsonl, e2e_gpu.jsonl, session.log.
set -u
OUT="${OUT:-$PWD/gpu_out}"
mkdir -p "$OUT"
TOTAL="${1:-570}"
T0=$(date +%s)
DEADLINE=$((T0 + TOTAL))
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" FASTREWEIGHT_COMMIT="${FASTREWEIGHT_COMMIT:-unknown}"
PY=python3
left() { echo $((DEADLINE - $(date +%s))); }
log() { echo "[$(($(date +%s) - T0)) s] $*" | tee -a "$OUT/session.log"; }
cap() { local want=$1 l; l=$(left); [ "$l" -lt "$want" ] && want=$l; [ "$want" -lt 1 ] && want=1; echo "$want"; }

{
  date -u; nvidia-smi; nvcc --version | tail -2; command -v compute-sanitizer
  $PY -c "import torch, triton, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__); p = torch.cuda.get_device_properties(0); print(p.name, p.multi_processor_count, 'SMs', p.total_memory >> 20, 'MiB')"
  nproc; free -g | head -2
} > "$OUT/env.txt" 2>&1
log "env: $(tail -3 "$OUT/env.txt" | head -1)"

# 1. build the C++/CUDA extensions (CPU cores) while the Triton tests use the GPU
(
  MAX_JOBS=16 FASTREWEIGHT_CUDA_ARCHS="90a" timeout 300 $PY setup.py build_ext --inplace > "$OUT/build.log" 2>&1
  echo "build rc=$?" >> "$OUT/build.log"
) &
BUILD_PID=$!
XDIST=$($PY -c "import xdist" 2>/dev/null && echo "-n 6")
log "triton tests (GPU) ${XDIST:-without pytest-xdist}"
FASTREWEIGHT_NO_JIT=1 timeout "$(cap 170)" $PY -m pytest -q -rs -p no:cacheprovider $XDIST tests/test_triton_kernels.py \
  tests/test_validation.py tests/test_label_issues.py tests/test_clean_scorer.py tests/test_whiten.py > "$OUT/pytest_triton.log" 2>&1
log "triton tests rc=$? : $(tail -1 "$OUT/pytest_triton.log")"
wait $BUILD_PID
log "build: $(tail -1 "$OUT/build.log"); $(ls fastreweight/_C_*.so 2>/dev/null | tr '\n' ' ')"

# 2. CUDA extension tests and compute-sanitizer, side by side (correctness only, no timing)
export FASTREWEIGHT_NO_JIT=1
log "cuda tests + compute-sanitizer"
timeout "$(cap 100)" $PY -m pytest -q -rs -p no:cacheprovider tests/test_cpp_backend.py tests/test_cuda_backend.py \
  > "$OUT/pytest_cuda.log" 2>&1 &
P1=$!
( for tool in memcheck racecheck; do
    echo "=== compute-sanitizer --tool $tool: cuda backend"
    timeout "$(cap 100)" compute-sanitizer --tool $tool --error-exitcode 9 $PY tests/sanitize_driver.py cuda 2>&1 | tail -25
    echo "=== rc=${PIPESTATUS[0]}"
  done ) > "$OUT/sanitizer.log" 2>&1 &
P2=$!
( echo "=== compute-sanitizer --tool memcheck: triton backend (fixed configuration)"
  FASTREWEIGHT_TRITON_AUTOTUNE=0 timeout "$(cap 100)" compute-sanitizer --tool memcheck --error-exitcode 9 \
    $PY tests/sanitize_driver.py triton 2>&1 | tail -25
  echo "=== rc=${PIPESTATUS[0]}" ) > "$OUT/sanitizer_triton.tmp" 2>&1 &
P3=$!
wait $P1; log "cuda tests rc=$? : $(tail -1 "$OUT/pytest_cuda.log")"
wait $P2 $P3
cat "$OUT/sanitizer_triton.tmp" >> "$OUT/sanitizer.log"; rm -f "$OUT/sanitizer_triton.tmp"
log "sanitizer: $(grep -E '^=== rc|ERROR SUMMARY|sanitize_driver' "$OUT/sanitizer.log" | tr '\n' ' ')"

# 3. kernel benchmarks: keep ~150 s for the end-to-end runs
BUDGET=$(( $(left) - 200 )); [ $BUDGET -lt 30 ] && BUDGET=30
log "bench_gpu (budget ${BUDGET} s)"
timeout "$(cap $((BUDGET + 60)))" $PY benchmarks/bench_gpu.py --out "$OUT/gpu_kernels.jsonl" --budget-s $BUDGET \
  > "$OUT/bench_gpu.tmp" 2>&1
log "bench_gpu rc=$? : $(grep -c '"kind": "timing"' "$OUT/gpu_kernels.jsonl" 2>/dev/null) timings"
tail -5 "$OUT/bench_gpu.tmp" | cut -c1-300 >> "$OUT/session.log"; rm -f "$OUT/bench_gpu.tmp"

# 4. end-to-end step costs
log "e2e preact-resnet18"
timeout "$(cap 110)" $PY benchmarks/bench_e2e.py --suite gpu-preact18 --rounds 2 --epochs 3 --budget-s 80 --out "$OUT/e2e_gpu.jsonl" \
  >> "$OUT/session.log" 2>&1
log "e2e preact18 rc=$?"
log "e2e resnet34 paper recipe"
timeout "$(cap 100)" $PY benchmarks/bench_e2e.py --suite gpu-resnet34-paper --rounds 2 --epochs 2 --budget-s 70 --out "$OUT/e2e_gpu.jsonl" \
  >> "$OUT/session.log" 2>&1
log "e2e resnet34 rc=$?"
log "benchmarks/harness.py (quick)"
timeout "$(cap 40)" $PY benchmarks/harness.py --device cuda >> "$OUT/session.log" 2>&1
log "done"
