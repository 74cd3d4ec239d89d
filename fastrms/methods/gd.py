"""Gradient descent:  x ← x − η g."""

from __future__ import annotations

from numba.extending import register_jitable

from .base import COMMON, LR, Method, common_coefficients, gradient, keep, rule


@rule
def gd(x, g, S, i, h, flags):
    """x ← x − η g."""
    general, decay_first = flags
    g = gradient(x, g, h, general, decay_first)
    return keep(x, h, general) - h[LR] * g


@register_jitable
def gd_coefficients(p, t, lr, gamma, gfactor, out):
    common_coefficients(p, lr, gfactor, out)
    out[LR] = lr


# (torch.optim.SGD without momentum is this method: its momentum, dampening and nesterov are taken at
# the values that make it so, and only at those)
METHOD = Method("gd", "GradientDescent", gd, gd_coefficients, dict(COMMON), lambda v: {},
                fixed={"momentum": 0.0, "dampening": 0.0, "nesterov": False}, doc="x ← x − η g")
