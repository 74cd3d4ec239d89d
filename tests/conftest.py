import os
import sys

# CI has no GPU: the CUDA tests run under Numba's simulator.  This must be set
# before numba is first imported.  On a GPU machine run NUMBA_ENABLE_CUDASIM=0.
os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
