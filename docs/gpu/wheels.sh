#!/usr/bin/env bash
# Fetch, on a machine with PyPI, the wheels that docs/gpu/bench.sh needs on an offline CUDA machine whose
# Python 3.12 image has torch, numpy, pandas, pyarrow, scikit-learn, OpenCV, tqdm and PyYAML but not zarr
# or pydantic.
# Usage, from the repository root: bash docs/gpu/wheels.sh   (writes .whl/, which git ignores)
set -euo pipefail
cd "$(dirname "$0")/../.."
py=${PYTHON:-python3}
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
# Pinned to what the CI environment resolves today; each with the packages it needs that the image lacks.
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d .whl \
  zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0 \
  pydantic==2.14.3 pydantic-core==2.50.4 annotated-types==0.8.0 typing-inspection==0.4.5 \
  typing-extensions==4.16.0
ls -la .whl
