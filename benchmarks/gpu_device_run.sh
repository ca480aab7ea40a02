#!/usr/bin/env bash
# Run every CUDA kernel check and the CUDA benchmark on the lent GPU machine, which has Python
# 3.12, torch with CUDA and numpy but no TVM compiler and no registry.
#
# Prepare here (full TVM + nvcc), in the repository root; both land in benchmarks/cuda_build/,
# which travels with the working tree (untracked, not ignored; ~25 MB):
#   python benchmarks/cuda_kernels.py build          # kernels.so + cuda/*.cubin (sm_80, sm_90)
#   python benchmarks/cuda_kernels.py pack-runtime   # tvm_runtime/: runtime-only tvm + ffi wheel
# Then send:  run(command="bash benchmarks/gpu_device_run.sh")
#
# On the device this installs the apache-tvm-ffi wheel (offline, from the file), puts the
# runtime-only tvm package first on PYTHONPATH with TVM_USE_RUNTIME_LIB=1, and runs
# `cuda_kernels.py run`: every kernel checked exactly against bitnet_tvm.reference, then the
# benchmark; the JSON + PNG go to $OUT (the device tool brings them back) and benchmarks/results.
# The cubins are served to the CUDA runtime by bitnet_tvm.cuda_aot.install_aot_kernels: no nvcc
# or NVRTC is used there.  Exit status: 0 all exact (or no GPU), 1 a mismatch.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-benchmarks/cuda_build}
RUNTIME=$BUILD/tvm_runtime
if ! python -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
    echo "No CUDA GPU visible to torch: nothing to run."
    exit 0
fi
for need in "$BUILD/kernels.so" "$BUILD/cuda/kernels.json" "$RUNTIME/tvm/__init__.py"; do
    [ -e "$need" ] || { echo "missing $need: prepare it with benchmarks/cuda_kernels.py (see above)"; exit 2; }
done
python -c "import tvm_ffi" 2>/dev/null || python -m pip install --no-index --no-deps --quiet "$RUNTIME"/apache_tvm_ffi-*.whl
export TVM_USE_RUNTIME_LIB=1 PYTHONPATH="$RUNTIME:$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv || true
status=0
python benchmarks/cuda_kernels.py run --build "$BUILD" --out benchmarks/results || status=$?
if [ -n "${OUT:-}" ]; then cp benchmarks/results/cuda_kernels_* "$OUT"/ 2>/dev/null || true; fi
exit $status
