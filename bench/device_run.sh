#!/bin/bash
# How the GPU leases' numbers in bench/RESULTS.md were taken, on the lent device machine (its
# python3 has numba, numba-cuda, CuPy and torch, and cannot download).  Carry wheels in .whl/
# (ignored): NumPy 2.4.6 for cp312 (the image's 2.5.2 breaks numba-cuda 0.30.4) and, for the TBB
# runs, .whl/tbb/ with the tbb and tcmlib wheels.  From the repository root:
#   bash bench/device_run.sh suite            # CUDA suite without the simulator, then --gpu-only
#   bash bench/device_run.sh gpuonly          # python -m bench --gpu-only
#   bash bench/device_run.sh full omp [secs]  # python -m bench --gpu (CPU tables under OpenMP)
#   bash bench/device_run.sh solves tbb       # python -m bench --solves under TBB
#   bash bench/device_run.sh call3 omp        # the serial/parallel table, then solves at n = 100, 200
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
if [ "$2" = tbb ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --prefix /tmp/tbbp .whl/tbb/*.whl || exit 1
  export LD_LIBRARY_PATH=/tmp/tbbp/lib:$LD_LIBRARY_PATH
  export PYTHONPATH=/tmp/site:/tmp/tbbp/lib/python3.12/site-packages:$PWD
fi
date -u; nvidia-smi -L; nproc
python3 -c "import sys, numpy, numba, numba.cuda, scipy; print(sys.version); print('numpy', numpy.__version__, 'numba', numba.__version__, 'scipy', scipy.__version__); import importlib.metadata as m; print('numba-cuda', m.version('numba-cuda')); print('cupy', m.version('cupy-cuda13x'), 'torch', m.version('torch')); print('threads', numba.get_num_threads())"
gpu_only() { timeout 300 python3 -m bench --gpu-only 2>&1 | tee $OUT/bench_gpuonly.log | tail -70; }
layer() {
  python3 -c "import numba, numpy as np; from numba import njit, prange
@njit(parallel=True)
def f(a):
    for i in prange(a.size): a[i] += 1
f(np.zeros(10)); print('layer', numba.threading_layer())"
}
case "$1" in
  suite)
    NUMBA_ENABLE_CUDASIM=0 timeout 240 python3 -m pytest tests/test_cuda.py -q -n 4 -p no:cacheprovider 2>&1 | tee $OUT/cuda_suite.log | tail -25
    gpu_only ;;
  gpuonly) gpu_only ;;
  full)
    timeout ${3:-560} python3 -m bench --gpu --out $OUT/res 2>&1 | tee $OUT/bench_gpu.log | tail -120 ;;
  solves)
    layer
    timeout ${3:-400} python3 -m bench --solves 2>&1 | tee $OUT/solves_$2.log | tail -30 ;;
  call3)
    layer
    timeout 150 python3 -c "
import numba
from bench.run import bench_threshold, threshold_table
r = {'threshold': bench_threshold(7), 'layer': numba.threading_layer()}
print('\n'.join(threshold_table(r)))" 2>&1 | tee $OUT/threshold_$2.log | tail -25
    timeout 200 python3 -c "
from bench import solves
print(solves.markdown(solves.run(sizes=(100, 200), rounds=5)))" 2>&1 | tee $OUT/solves5_$2.log | tail -12 ;;
esac
date -u
