#!/usr/bin/env bash
# One call of the device tool on a lent H100/H200: the paper-profile benchmarks that BENCHMARKS.md needs.
#   run(command="bash docs/gpu/session.sh PHASE", carry=[".whl"])   after `bash docs/gpu/wheels.sh` here.
# PHASE: tests | sia | stages | memory | trace. Each fits in one 10-minute call; JSON and logs land in $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || exit 1
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.version.cuda)" | tee -a "$OUT/gpu.txt"

bench() {  # bench NAME ARGS...: one `realnet bench` run, its JSON in $OUT/NAME.json; at most $LIMIT s
  local name=$1; shift
  echo "== $name: realnet bench --profile paper --device cuda $*"
  timeout "${LIMIT:-540}" python3 -m flows.cli bench --profile paper --device cuda --json "$@" \
    > "$OUT/$name.json" 2> >(tee "$OUT/$name.log" >&2)
  echo "rc=$?"
}

case "${1:-}" in
  tests)   # the CUDA-only tests that CI (no GPU) skips
    timeout 540 python3 -m pytest -q -p no:cacheprovider tests/diffusion/test_diffusion_cuda.py \
      tests/synthesis/test_blend.py tests/synthesis/test_perlin.py 2>&1 | tee "$OUT/tests.log" ;;
  sia)     # the SIA target: compiled (the paper profile's default), then with cuDNN autotuning
    LIMIT=285
    bench sia --part sia --channels-last
    bench sia_cudnn --part sia --channels-last --set runtime.cudnn_benchmark=true ;;
  stages)  # AFS, RealNet training and inference (speed and the 4 GB memory figure), compiled
    bench stages --part afs --part realnet_train --part inference ;;
  memory)  # diffusion training's peak memory with and without gradient checkpointing (eager: no compile wait)
    LIMIT=285
    bench diffusion --part diffusion_train --set runtime.compile=false
    bench diffusion_ckpt --part diffusion_train --set runtime.compile=false --set runtime.grad_checkpoint=true ;;
  trace)   # profiler evidence: op tables and a Chrome trace of one SIA batch
    mkdir -p "$OUT/traces"
    bench sia_trace --part sia --channels-last --quick --trace "$OUT/traces"
    gzip -9 "$OUT"/traces/*.trace.json ;;  # files over 16 MB do not come back
  *) echo "usage: session.sh tests|sia|stages|memory|trace" >&2; exit 2 ;;
esac
