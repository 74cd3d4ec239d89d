"""Data shipped with fastrms (nothing is downloaded at run time)."""

from __future__ import annotations

from importlib import resources

import numpy as np

from .. import _checks as ck

AIRFOIL_ROWS = 1503
AIRFOIL_SHA256 = "74c75fd71783f1e6b71f8a622b993dc592897a97cd689c5090a07147a1b097b3"


def airfoil(n: int = 1500, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """The NASA airfoil self-noise data as d2l's ``get_data_ch11`` prepares it.

    Read as float32, standardize every column over all 1503 rows (population
    standard deviation), keep the first ``n`` rows (1 ≤ n ≤ 1503); returns (features (n, 5),
    labels (n,)), each a fresh array.
    """
    n = ck.count("n", n, lo=1)  # (a slice would take n = -1 as "all but the last", silently)
    if n > AIRFOIL_ROWS:
        raise ValueError(f"n must be <= {AIRFOIL_ROWS}, the data set's rows; got {n}")
    with resources.files(__name__).joinpath("airfoil_self_noise.dat").open("rb") as fh:
        data = np.genfromtxt(fh, dtype=np.float32, delimiter="\t")
    data = (data - data.mean(axis=0)) / data.std(axis=0)
    data = data[:n].astype(dtype)
    return np.ascontiguousarray(data[:, :-1]), np.ascontiguousarray(data[:, -1])
