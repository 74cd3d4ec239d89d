"""The AX = I problem's jitted F and dF for the whole-solve benchmarks (a light module: the
fresh worker processes of bench/solves.py import it, not the whole harness)."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def jit_residual(X, A):
    """AX − I; with loops for small n, where a BLAS call costs more than the arithmetic."""
    n = A.shape[0]
    if n > 16:
        R = A @ X
        for i in range(n):
            R[i, i] -= 1.0
        return R
    R = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            r = -1.0 if i == j else 0.0
            for k in range(n):
                r += A[i, k] * X[k, j]
            R[i, j] = r
    return R


@njit(cache=True)
def jit_F(X, A):
    R = jit_residual(X, A)
    return np.sum(R * R)


@njit(cache=True)
def jit_dF(X, A):
    R = jit_residual(X, A)
    n = A.shape[0]
    if n > 16:
        return 2.0 * (A.T @ R)
    G = np.zeros((n, n))
    for k in range(n):
        for i in range(n):
            a = 2.0 * A[k, i]
            for j in range(n):
                G[i, j] += a * R[k, j]
    return G


@njit(cache=True)
def jit_F_rows(X, A):
    """B problems at once (X and A of shape (B, n, n)): their B losses, for the batched solver."""
    out = np.empty(X.shape[0])
    for b in range(X.shape[0]):
        out[b] = jit_F(X[b], A[b])
    return out


@njit(cache=True)
def jit_dF_rows(X, A):
    G = np.empty_like(X)
    for b in range(X.shape[0]):
        G[b] = jit_dF(X[b], A[b])
    return G
