"""Finite-difference gradients: ``jac='2-point'``, ``'3-point'`` or ``'cs'``, as scipy.optimize.minimize
takes them, for an F without a dF.

Coordinate j of x is moved by h_j = r·sign(x_j)·max(1, |x_j|) (sign(0) = 1), with r = √ε for
'2-point' and 'cs' and ε^(1/3) for '3-point' (ε of x's float type), or
h_j = r·sign(x_j)·|x_j| for a given ``finite_diff_rel_step`` r (where that moves nothing, the
default step); each difference divides by the width of its points as the floats hold them
(x_j + h_j − x_j, not h_j):

    2-point  g_j = (F(x + h_j e_j) − F(x)) / h_j                n + 1 evaluations of F a gradient
    3-point  g_j = (F(x + h_j e_j) − F(x − h_j e_j)) / 2h_j     2n evaluations
    cs       g_j = Im F(x + i h_j e_j) / h_j                    n evaluations, F analytic

as scipy.optimize's approx_derivative does (for float64 x and F, bit for bit; a float32 x moves
in float32, where scipy would hand F a float64 one, and F's values are differenced in float64).
Each evaluation gets an array of its own, so an F that keeps its x sees it unchanged.  F at x
itself is remembered, so the driver asking for the loss where the gradient was just taken costs
nothing.  With batched problems (x of shape (B, ...), F returning B losses) coordinate j moves in
all B problems at once: B gradients for the price of one.  Every evaluation of F is counted
(``calls``, the result's nfev, as in scipy).
"""

from __future__ import annotations

import numpy as np

from .problem import as_losses, as_scalar

SCHEMES = ("2-point", "3-point", "cs")  # (scipy's names)


class FiniteDifferences:
    """F's value and its finite-difference gradient, as the drivers call F and dF."""

    def __init__(self, fun, method: str, rel_step: float | None = None, batched: bool = False):
        self.fun, self.method, self.rel_step, self.batched = fun, method, rel_step, batched
        self.calls = 0
        self._at = None  # (x, args, F(x)) of the last evaluation at an unmoved x

    def _f(self, x, args):
        self.calls += 1
        f = self.fun(x, *args)
        return as_losses(f, x.shape[0]) if self.batched else as_scalar(f)

    def _f_complex(self, x, args):
        self.calls += 1
        f = np.asarray(self.fun(x, *args))
        if f.dtype.kind != "c":
            raise TypeError("jac='cs' (complex step) needs an F that computes in complex arithmetic: for a "
                            f"complex x it returned {f.dtype}, so the step's imaginary part was lost "
                            "(use jac='3-point')")
        if f.size != (x.shape[0] if self.batched else 1):
            as_losses(f.real, x.shape[0]) if self.batched else as_scalar(f.real)  # (raises, saying why)
        return f.reshape(-1).imag if self.batched else f.reshape(-1)[0].imag

    def value(self, x, *args):
        """F(x, *args), remembered for the gradient at the same x (and read again from it)."""
        at = self._at
        if (at is not None and len(at[1]) == len(args)
                and all(a is b for a, b in zip(at[1], args, strict=True)) and np.array_equal(at[0], x)):
            return at[2]
        f = self._f(x, args)
        self._at = (np.array(x, copy=True), args, f)
        return f

    def gradient(self, x, *args) -> np.ndarray:
        x = np.asarray(x)
        rows = x.reshape(x.shape[0], -1) if self.batched else x.reshape(1, -1)
        f0 = self.value(x, *args) if self.method == "2-point" else None
        h = self._steps(rows)
        g = np.empty_like(rows)
        for j in range(rows.shape[1]):
            if self.method == "cs":
                xc = rows.astype(np.result_type(x.dtype, np.complex64))
                xc[:, j] += 1j * h[:, j]
                g[:, j] = self._f_complex(xc.reshape(x.shape), args) / h[:, j]
                continue
            up = rows.copy()
            up[:, j] += h[:, j]
            if self.method == "2-point":
                g[:, j] = (self._f(up.reshape(x.shape), args) - f0) / (up[:, j] - rows[:, j])
            else:
                down = rows.copy()
                down[:, j] -= h[:, j]
                f_up = self._f(up.reshape(x.shape), args)
                g[:, j] = (f_up - self._f(down.reshape(x.shape), args)) / (up[:, j] - down[:, j])
        return g.reshape(x.shape)

    def _steps(self, rows) -> np.ndarray:
        """h for each element of rows (in x's dtype), as scipy's _compute_absolute_step."""
        eps = np.finfo(rows.dtype).eps
        r = eps ** (1 / 3) if self.method == "3-point" else eps ** 0.5
        sign = np.where(rows >= 0, 1.0, -1.0)
        default = (r * sign * np.maximum(1.0, np.abs(rows))).astype(rows.dtype)
        if self.rel_step is None:
            return default
        h = (self.rel_step * sign * np.abs(rows)).astype(rows.dtype)
        return np.where((rows + h) - rows == 0, default, h)
