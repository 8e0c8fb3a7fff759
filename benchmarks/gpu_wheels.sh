#!/usr/bin/env bash
# The wheels benchmarks/gpu.sh installs on a GPU machine that has no network: the test
# dependencies its image lacks (pseudosel's cvxpy layer, pycocotools, USB's semilearn),
# for its Python 3.12 on x86-64 (docs/performance.md). Run here, where pip reaches PyPI:
#
#   bash benchmarks/gpu_wheels.sh [DIR]     # default .whl/ (git-ignored: add it to
#                                           # .git/info/exclude), then carry DIR along
#
# The versions are those of the README's test environment, except scs: 3.2.7's wheel is
# 10 MB where 3.3.1's is 43 MB, and what travels to the GPU machine is capped at 64 MiB
# (about 33 MB in all this way). Not needed there (the image
# has them): torch, triton, numpy, scipy, pytest, hypothesis, pytest-xdist, scikit-learn,
# lightning, tensorboard, scikit-image, pillow, tqdm, jinja2, joblib, threadpoolctl.
set -euo pipefail
DIR=${1:-.whl}
mkdir -p "$DIR"
PYTHON=${PYTHON:-python3}
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
  --platform manylinux_2_24_x86_64 --platform manylinux1_x86_64)
"$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp "${PLATFORMS[@]}" -d "$DIR" \
  cvxpy==1.9.3 cvxpylayers==1.2.0 diffcp==1.1.9 osqp==1.1.3 clarabel==0.11.1 scs==3.2.7 \
  qdldl==0.1.9.post1 highspy==1.16.0 sparsediffpy==0.6.1 cffi==2.1.1 pycparser==3.12 \
  pycocotools==2.0.11 semilearn==0.3.2 ruamel.yaml ruamel.yaml.clib
du -sh "$DIR"
