#!/usr/bin/env bash
# Issue 20 item 5 on a GPU in one command (at most 480 s by default): the read-ahead's GPU tests, then
# score_dataset over 10^7 x 512 float32 rows streamed from a memory-mapped .npy (read-ahead on and
# off) and held in device memory (chunks of 65536, 262144 and 8192 rows), plain and whitened, each
# against the GPU's own GEMM rate measured in the same run.  Records are appended as each run finishes, so a
# run cut short still leaves the ones before it.
#
#   OUT=dir FASTREWEIGHT_COMMIT=$(git rev-parse --short HEAD) bash benchmarks/gpu_scale.sh [seconds]
#
# Writes under $OUT: env_scale.txt, pytest_scale.log, score_scale_gpu.jsonl, bench_scale.log, scale.log.
# The features file (20 GB) goes to $SCALE_FILE (default /tmp/fastreweight_scale.npy) and is kept, so a
# second call on the same warm machine skips drawing it.
set -u
OUT="${OUT:-$PWD/gpu_out}"
mkdir -p "$OUT"
TOTAL="${1:-480}"
T0=$(date +%s)
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" FASTREWEIGHT_NO_JIT=1
export FASTREWEIGHT_COMMIT="${FASTREWEIGHT_COMMIT:-unknown}"
PY=python3
log() { echo "[$(($(date +%s) - T0)) s] $*" | tee -a "$OUT/scale.log"; }
# seconds left, keeping $1 back for what follows (at least 30)
left() { local l=$((T0 + TOTAL - $(date +%s) - ${1:-0})); [ "$l" -lt 30 ] && l=30; echo "$l"; }

{
  date -u; nvidia-smi; df -h /tmp | tail -1; free -g | head -2; nproc
  $PY -c "import torch, triton, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__); p = torch.cuda.get_device_properties(0); print(p.name, p.multi_processor_count, 'SMs', p.total_memory >> 20, 'MiB')"
} > "$OUT/env_scale.txt" 2>&1
log "env: $(tail -1 "$OUT/env_scale.txt")"

timeout 90 $PY -m pytest -q -rs -p no:cacheprovider tests/test_label_issues_prefetch.py tests/test_label_issues.py \
  -k "prefetch or cuda or read" > "$OUT/pytest_scale.log" 2>&1
log "read-ahead tests rc=$? : $(tail -1 "$OUT/pytest_scale.log")"

# 1. from the file: the bus and the page cache set the time, so one chunk size, read-ahead on and off
SHAPE="--rows 10000000 --dim 512 --classes 100 --clean 2000 --file ${SCALE_FILE:-/tmp/fastreweight_scale.npy}"
timeout "$(left 100)" $PY benchmarks/bench_score.py --scale --device cuda $SHAPE --chunk 65536 \
  --prefetch default,0 --inputs mapped --repeat 2 --out "$OUT/score_scale_gpu.jsonl" > "$OUT/bench_scale.log" 2>&1
log "bench_score, mapped rc=$? : $(grep -c . "$OUT/score_scale_gpu.jsonl" 2>/dev/null) records"
# 2. from device memory: the GEMMs and the launches per chunk set the time, so the chunk size is swept,
#    with the planner's backend (Triton) and the reference (cuBLAS and torch ops) side by side
timeout "$(left 5)" $PY benchmarks/bench_score.py --scale --device cuda $SHAPE --chunk 65536 \
  --chunks 65536,262144,8192 --backends auto,reference --inputs resident --repeat 2 --out "$OUT/score_scale_gpu.jsonl" >> "$OUT/bench_scale.log" 2>&1
log "bench_score, resident rc=$? : $(grep -c . "$OUT/score_scale_gpu.jsonl" 2>/dev/null) records"
log "done"
