import os
import sys

import numpy as np
import pytest

# CI has no GPU: the CUDA tests run under Numba's simulator.  This must be set
# before numba is first imported.  On a GPU machine run NUMBA_ENABLE_CUDASIM=0.
os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
# Keras parity runs Keras on jax; TensorFlow (the TF1 parity tests) would import Keras with its own
# backend first in a worker that runs both, so the choice is made here, before either
os.environ.setdefault("KERAS_BACKEND", "jax")
# The suite's time is mostly Numba compiling: at optimization level 2 rather than Numba's 3 a cold
# run took 287 s rather than 315 on the 2-core machine.  The arithmetic is the same (IEEE at both
# levels, no fast-math), and the loops still vectorize (test_kernels checks the machine code).
# Numba's cache does not key on the level, so the suite's code is cached apart, where a benchmark
# or a script run from this checkout never loads it; a NUMBA_OPT or NUMBA_CACHE_DIR of your own
# keeps Numba's defaults.
SUITE_CACHE = os.path.join(os.path.dirname(os.path.abspath(__file__)), ".numba-cache")
if "NUMBA_OPT" not in os.environ and "NUMBA_CACHE_DIR" not in os.environ:
    os.environ["NUMBA_OPT"] = "2"
    os.environ["NUMBA_CACHE_DIR"] = SUITE_CACHE

sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture
def threads_agree():
    """check(solve, params): solve(p) for each p from its own thread equals the serial runs, bit for bit."""
    import threading

    def check(solve, params):
        serial = [solve(p) for p in params]
        results = [None] * len(params)
        threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, solve(params[i])))
                   for i in range(len(params))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for a, b in zip(results, serial, strict=True):
            np.testing.assert_array_equal(a, b)

    return check
