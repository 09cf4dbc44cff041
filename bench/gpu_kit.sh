#!/usr/bin/env bash
# The GPU checks of training (train.cuda_graphs, bf16, the throughput table, SIGKILL-and-resume, the 64 / 128 px
# recipes of docs/training.md) in one short run
# on a lent GPU machine, whose image has torch, pandas, pytest and Pillow but not pydantic. Two halves:
#
#   bench/gpu_kit.sh prepare   here, after `make repro`: pydantic's wheels for that machine's Python 3.12 into
#                              .whl/ (git ignores it); prints what to carry
#   bench/gpu_kit.sh run       there, carrying .whl, data/raw, data/processed/images.npy and manifest.csv (about
#                              45 MB): the CUDA tests of tests/test_graphs.py, bench/train_throughput.py,
#                              bench/cuda_check.py and bench/gpu_recipes.py (RECIPE_STEPS steps of each recipe,
#                              default 1000; MLflow replaced by a null run), each one's output also under $OUT
#
# About 5 minutes on an H200 (estimated from the 2026-11-27 figures, not yet run). On a CPU, with
# PYTHON3=.venv/bin/python STEPS=8, `run` is a dry run of the same commands (the CUDA tests skip).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON3=${PYTHON3:-python3}
case "${1:-}" in
prepare)
  if [ ! -f data/processed/images.npy ] || [ ! -d data/raw/images ]; then
    echo "gpu_kit: data/raw and data/processed/images.npy are missing: run make repro (or dvc repro preprocess) first"
    exit 1
  fi
  pins=$(.venv/bin/python -m pip list --format=freeze | grep -iE '^(pydantic|pydantic[-_]core|annotated[-_]types|typing[-_]inspection)==')
  rm -rf .whl && mkdir -p .whl
  # shellcheck disable=SC2086  # one pin a word
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl $pins \
    || exit 1
  ls .whl
  echo "device run: carry [.whl, data/raw, data/processed/images.npy, data/processed/manifest.csv]," \
    "command: bench/gpu_kit.sh run, timeout_s 540"
  ;;
run)
  if ! "$PYTHON3" -c "import pydantic" 2>/dev/null; then
    "$PYTHON3" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
      || exit 1
    export PYTHONPATH=/tmp/site
  fi
  export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD" PYTHONUNBUFFERED=1
  out=${OUT:-/tmp/gpu_kit}
  mkdir -p "$out"
  steps=${STEPS:-600}
  rc=0
  step() {  # name, command...: run it, keep its output, go on after a failure
    local name=$1
    shift
    echo "== $name: $*"
    "$@" 2>&1 | grep --line-buffered -v 'step/s' | tee "$out/$name.txt"
    local status=${PIPESTATUS[0]}
    echo "== $name: exit $status"
    [ "$status" = 0 ] || rc=1
  }
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  step test_graphs "$PYTHON3" -m pytest -q -p no:cacheprovider tests/test_graphs.py
  step train_throughput "$PYTHON3" bench/train_throughput.py --steps $((steps >= 20 ? steps / 10 : 2)) --repeats 3
  step cuda_check "$PYTHON3" bench/cuda_check.py --no-tracking --skip-compile --steps "$steps"
  step gpu_recipes "$PYTHON3" bench/gpu_recipes.py run --steps "${RECIPE_STEPS:-1000}"
  exit $rc
  ;;
*)
  echo "usage: bench/gpu_kit.sh prepare | run"
  exit 2
  ;;
esac
