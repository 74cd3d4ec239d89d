"""Gradient descent:  x ← x − η g."""

from __future__ import annotations

from numba.extending import register_jitable

from .base import COMMON, KEEP, LR, Method, common_coefficients, gradient, rule


@rule
def gd(x, g, S, i, h, flags):
    """x ← x − η g."""
    g = gradient(x, g, h)
    return h[KEEP] * x - h[LR] * g


@register_jitable
def gd_coefficients(p, t, lr, gamma, gfactor, out):
    common_coefficients(p, lr, gfactor, out)
    out[LR] = lr


METHOD = Method("gd", "GradientDescent", gd, gd_coefficients, dict(COMMON), lambda v: {},
                doc="x ← x − η g")
