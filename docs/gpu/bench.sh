#!/usr/bin/env bash
# The paper-profile benchmarks of BENCHMARKS.md on any CUDA machine, one script under one deadline.
#   bash docs/gpu/bench.sh [PHASE] [bench args]      PHASE: all (default) | tests | sia | inference | stages |
#                                                     memory | trace | latency
#   e.g. bash docs/gpu/bench.sh sia --set runtime.cudnn_benchmark=true
# `all` runs the phases in order of importance and skips what no longer fits before DEADLINE seconds (420 by
# default). Results land in $OUT (default /tmp/out): summary.txt (also printed last), bench.tar.gz (every log,
# JSON report and op table) and the gzipped profiler traces. On a machine without zarr or pydantic, put their
# wheels in .whl/ first (bash docs/gpu/wheels.sh, on a machine with PyPI).
# The same plumbing on a CPU in a few minutes:
#   DEVICE=cpu PROFILE=demo QUICK=1 PY=.venv/bin/python OUT=/tmp/gpu-smoke bash docs/gpu/bench.sh
set -uo pipefail
export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
OUT=${OUT:-/tmp/out} PY=${PY:-python3} DEVICE=${DEVICE:-cuda} PROFILE=${PROFILE:-paper}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)/bench
mkdir -p "$OUT" "$work/traces"
end=$(( $(date +%s) + ${DEADLINE:-420} ))

if ! "$PY" -c "import zarr, pydantic" 2>/dev/null; then  # an image without them: the wheels of wheels.sh
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; } | tee "$work/gpu.txt"

# fits NAME WANT: sets `limit` to WANT seconds, cut to what is left before the deadline; false (and the step is
# recorded as skipped) when under 30 s are left.
fits() {
  local left=$(( end - $(date +%s) ))
  limit=$(( left < $2 ? left : $2 ))
  (( limit >= 30 )) && return 0
  echo "$1: skipped, ${left} s left before the deadline" | tee -a "$work/skipped.txt"
  return 1
}

run() {  # run NAME WANT CMD...: CMD under its time limit, output in $work/NAME.log
  local name=$1 t0; fits "$1" "$2" || return 0; shift 2
  t0=$(date +%s)
  echo "== $name (at most $limit s): $*"
  timeout "$limit" "$@" 2>&1 | tee "$work/$name.log"
  echo "== $name: rc=${PIPESTATUS[0]}, $(( $(date +%s) - t0 )) s"
}

bench() {  # bench NAME WANT ARGS...: one `realnet bench`, its JSON in $work/NAME.json, progress in NAME.log
  local name=$1 t0; fits "$1" "$2" || return 0; shift 2
  [ -n "${QUICK:-}" ] && set -- --quick "$@"
  set -- "$@" "${extra[@]}"
  t0=$(date +%s)
  echo "== $name (at most $limit s): realnet bench --profile $PROFILE --device $DEVICE $*"
  timeout "$limit" "$PY" -m flows.cli bench --profile "$PROFILE" --device "$DEVICE" --json "$@" \
    > "$work/$name.json" 2> >(tee "$work/$name.log" >&2)
  echo "== $name: rc=$?, $(( $(date +%s) - t0 )) s"
}

phase() {
  case "$1" in
    tests)  # the CUDA-only tests that CI (no GPU) skips, first: a failure there makes the numbers suspect
      run tests 120 "$PY" -m pytest -q -p no:cacheprovider tests/diffusion/test_diffusion_cuda.py \
        tests/flows/test_memory_model_cuda.py tests/methods/realnet/test_model_discriminator.py tests/synthesis/test_blend.py \
        tests/synthesis/test_perlin.py ;;
    sia)    # the SIA target (8 images/s): compiled, channels_last, the paper profile's default
      bench sia 200 --part sia --channels-last ;;
    inference)  # the inference targets (300 images/s batched, 4 GB at batch 1) with the authors' head
      bench inference 150 --part inference ;;
    stages)  # AFS and RealNet training, compiled
      bench stages 150 --part afs --part realnet_train ;;
    memory)  # diffusion training's peak memory with and without gradient checkpointing (eager: no compile wait),
      # beside what flows/bench/memory_model.py predicts for both (seconds, no GPU work)
      bench memory_model 40 --part memory_model
      bench diffusion 90 --part diffusion_train --set runtime.compile=false
      bench diffusion_ckpt 90 --part diffusion_train --set runtime.compile=false --set runtime.grad_checkpoint=true ;;
    trace)  # profiler evidence: op tables and Chrome traces (Inductor's on-disk cache from `sia` helps)
      bench sia_trace 120 --part sia --channels-last --quick --trace "$work/traces"
      bench inference_trace 90 --part inference --quick --trace "$work/traces" ;;
    latency)  # batch-1 inference was bound by launches (10 images/s eager): CUDA graphs through Inductor
      bench latency 150 --part inference --set runtime.compile_mode=reduce-overhead ;;
    *) echo "usage: bench.sh [all|tests|sia|inference|stages|memory|trace|latency] [bench args]" >&2; exit 2 ;;
  esac
}

phase_name=${1:-all}
extra=("${@:2}")
if [ "$phase_name" = all ]; then
  for p in tests sia inference stages memory trace latency; do phase "$p"; done
else
  phase "$phase_name"
fi

"$PY" "$here/summary.py" "$work" | tee "$work/summary.txt"
cp "$work/summary.txt" "$OUT/"
for trace in "$work"/traces/*.trace.json; do  # gzipped: a trace is tens of MB
  [ -f "$trace" ] && gzip -9c "$trace" > "$OUT/$(basename "$trace").gz" && rm "$trace"
done
tar -czf "$OUT/bench.tar.gz" -C "$(dirname "$work")" bench
