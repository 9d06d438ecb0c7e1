#!/usr/bin/env bash
# The GPU checks in one run, on a machine with a CUDA GPU (CI has none):
#   1. seed 001's SSL and segmentation steps at the full preset's sizes   (geofm bench-ssl)
#   2. the GPU path of the tests (test_gpu.py; the training and SSL tests with device auto = cuda;
#      the torchrun tests are left out: two processes on one GPU cannot share it under NCCL)
#   3. the CLIP training benchmark's CUDA section                          (bench-train --gpu-only)
# Logs and numbers go to $OUT (default work/gpu). Run from the project root:
#   bash tools/gpu_check.sh
# On a machine whose Python lacks the project's packages, put wheels in .whl/ first: they are
# installed into /tmp/site (nothing else on the machine is changed).
set -u
OUT=${OUT:-work/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 GEOFM_ROOT=$PWD GEOFM_PROGRESS=text
PY=${PYTHON:-python3}
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
$PY -c "import torch, timm, lightning; print('torch', torch.__version__, 'timm', timm.__version__, 'lightning', lightning.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/gpu.txt"
T0=$(date +%s)
step() { echo "== $1: $(( $(date +%s) - T0 )) s"; }
STEPS=${STEPS:-"ssl tests train"}   # a subset to rerun, e.g. STEPS="tests train"
TESTS=${TESTS:-"tests/test_gpu.py tests/test_feed.py tests/test_training.py tests/test_training_scale.py tests/test_ssl.py tests/test_ssl_methods.py"}

case " $STEPS " in *" ssl "*)
step "bench-ssl"
timeout "${SSL_LIMIT:-220}" $PY -m geofm_lib.cli bench-ssl --preset full --device cuda \
    2>&1 | tee "$OUT/bench_ssl.log"
cp work/bench/ssl.json "$OUT/bench_ssl.json" 2>/dev/null ;; esac

case " $STEPS " in *" tests "*)
step "tests"
timeout "${TEST_LIMIT:-240}" $PY -m pytest -q -p no:cacheprovider -o addopts="-ra" $TESTS \
    -k "not torchrun" 2>&1 | tee "$OUT/tests.log" | tail -40 ;; esac

case " $STEPS " in *" train "*)
step "bench-train --gpu-only"
# before and after issue 40 in one run; BENCH_COMPILE=--compile adds the torch.compile'd step
timeout "${TRAIN_LIMIT:-300}" $PY -m geofm_lib.cli bench-train --gpu-only --device cuda ${BENCH_COMPILE:-} \
    2>&1 | tee "$OUT/bench_train.log" | tail -60
cp work/bench/training_gpu.json "$OUT/bench_train_gpu.json" 2>/dev/null ;; esac
step "done"
