r"""The per-element update rules: the whole math of fastrms in one place.

Notation of the seeds: x parameters, g gradient, s running mean of g², m running
mean of g (centered variants), b momentum buffer, η learning rate, γ decay,
μ momentum, ε eps.  Every rule updates ONE element and is compiled into every
backend (``kernels/cpu.py`` loops over it with ``prange``, ``kernels/cuda.py``
with a grid-stride loop), so a method's math exists exactly once.

Signature of every rule::

    rule(x, g, S, i, h, flags) -> new x[i]

``x``, ``g`` are the scalars x[i], g[i]; ``S`` is the (k, n) state array of the
method (row j, column i is the j-th state of element i), updated in place;
``h`` is the tuple of per-step coefficients, already cast to x's dtype so that
a float32 problem stays float32; ``flags`` is a tuple of compile-time booleans
that switch state rows on and off.

Options that do not change the number of state rows are coefficients chosen so
that their "off" value is exact in IEEE arithmetic (multiply by 1, add 0, clip
at inf).  The default update is therefore bit-for-bit the textbook formula.
The host side (``methods.py``) computes the coefficients for each step.

Layout of h, common to all rules:

=====  ==========  =============================================================
h[0]   LR          step multiplier η_t (1 when η lives inside the momentum buffer)
h[1]   GSCALE      g ← GSCALE·g   (−1 to maximize; the clip-by-norm factor)
h[2]   CLIP        g ← clip(g, −CLIP, CLIP)    (inf: off)
h[3]   WD          g ← g + WD·x   (coupled L2 weight decay, as in PyTorch)
h[4]   KEEP        x ← KEEP·x     (decoupled weight decay 1 − η_t·λ, as in AdamW)
=====  ==========  =============================================================
"""

import math

from numba.extending import overload, register_jitable

LR, GSCALE, CLIP, WD, KEEP = 0, 1, 2, 3, 4


def rule(fn):
    """Like ``register_jitable``, but typed with literal flags so that Numba prunes the
    branches they switch off; otherwise the dead branches block SIMD vectorization."""

    @overload(fn, prefer_literal=True, strict=False)
    def _typed(*args):
        return fn

    return fn


@register_jitable
def gradient(x, g, h):
    """g ← clip(GSCALE·g, ±CLIP) + WD·x  (NaN passes through the clip)."""
    g = h[GSCALE] * g
    if g > h[CLIP]:
        g = h[CLIP]
    elif g < -h[CLIP]:
        g = -h[CLIP]
    return g + h[WD] * x


@register_jitable
def ratio(g, d):
    """g / d, and 0 where d = 0: with ε = 0, d is 0 only where every g so far was 0 (or its square
    underflowed), and 0/0 must not become NaN.  (Written as g − g to stay in x's dtype.)  Only
    rules compiled for ε = 0 use it (flag eps_zero): with ε > 0, d ≥ √ε or ε is never 0."""
    return g / d if d != 0 else g - g


@register_jitable
def overflow_check(u, s):
    """u, or NaN where the running mean s is inf.  g/√s would silently freeze that element at 0
    once g² overflowed s (|g| > ~1e154 in float64, ~1e19 in float32); NaN instead makes the run
    report divergence (minimize: status 3; steppers: NaN in x)."""
    return u + (s - s)


@rule
def gd(x, g, S, i, h, flags):
    """Gradient descent:  x ← x − η g."""
    g = gradient(x, g, h)
    return h[KEEP] * x - h[LR] * g


# momentum: h[5] μ, h[6] a (g's weight in the buffer: 1, or η if η is inside),
#           h[7] c_g, h[8] c_b (step = c_g g + c_b b; (0, 1) heavy ball, (a, μ) Nesterov)
@rule
def momentum(x, g, S, i, h, flags):
    """Heavy ball:  b ← μ b + g;  x ← x − η b.   Nesterov: x ← x − η (g + μ b)."""
    g = gradient(x, g, h)
    b = h[5] * S[0, i] + h[6] * g
    S[0, i] = b
    return h[KEEP] * x - h[LR] * (h[7] * g + h[8] * b)


# rmsprop: h[5] γ, h[6] w (g²'s weight: 1 − γ, or 1 for Adagrad), h[7] ε inside
#          the root, h[8] ε outside, h[9] c (bias correction 1/(1 − γ^t), else 1),
#          h[10] μ, h[11] a, h[12] c_u, h[13] c_b  (momentum as above, on u = g/d)
# flags: (centered, momentum, eps_zero); state rows: s, then m if centered, then b if momentum
@rule
def rmsprop(x, g, S, i, h, flags):
    r"""RMSProp (Tieleman & Hinton 2012) and Adagrad (γ = 1, w = 1).

        s ← γ s + (1 − γ) g²
        d = √(s + ε)            (ε outside the root: √s + ε)
        x ← x − η g / d

    centered (Graves 2013):  m ← γ m + (1 − γ) g,  d uses max(s − m², 0) in place of s.
    momentum μ > 0:          b ← μ b + g/d,  x ← x − η b.
    """
    centered, with_momentum, eps_zero = flags
    g = gradient(x, g, h)
    s = h[5] * S[0, i] + h[6] * (g * g)
    S[0, i] = s
    v = h[9] * s
    if centered:
        m = h[5] * S[1, i] + h[6] * g
        S[1, i] = m
        m = h[9] * m
        v = v - m * m
        v = v if v >= 0 else v - v  # s − m² ≥ 0 in exact arithmetic; rounding can dip below
    d = math.sqrt(v + h[7]) + h[8]
    u = overflow_check(ratio(g, d) if eps_zero else g / d, s)
    if with_momentum:
        j = 2 if centered else 1
        b = h[10] * S[j, i] + h[11] * u
        S[j, i] = b
        u = h[12] * u + h[13] * b
    return h[KEEP] * x - h[LR] * u


# adam: h[5] β1, h[6] 1 − β1, h[7] β2, h[8] 1 − β2, h[9] ε, h[10] √(1 − β2^t)
#       (h[0] is η/(1 − β1^t), PyTorch's step size); flags: (amsgrad, eps_zero)
@rule
def adam(x, g, S, i, h, flags):
    r"""Adam (Kingma & Ba 2015): RMSProp plus momentum with bias correction.

        m ← β1 m + (1 − β1) g,   v ← β2 v + (1 − β2) g²
        x ← x − η/(1 − β1^t) · m / (√v / √(1 − β2^t) + ε)

    amsgrad: v̂ ← max(v̂, v) is used in place of v.
    """
    amsgrad, eps_zero = flags
    g = gradient(x, g, h)
    m = h[5] * S[0, i] + h[6] * g
    v = h[7] * S[1, i] + h[8] * (g * g)
    S[0, i] = m
    S[1, i] = v
    if amsgrad:
        if S[2, i] > v:
            v = S[2, i]
        S[2, i] = v
    d = math.sqrt(v) / h[10] + h[9]
    return h[KEEP] * x - h[LR] * overflow_check(ratio(m, d) if eps_zero else m / d, v)


# adadelta: h[5] ρ, h[6] 1 − ρ, h[7] ε; flags: (eps_zero,)
@rule
def adadelta(x, g, S, i, h, flags):
    r"""Adadelta (Zeiler 2012).

        s ← ρ s + (1 − ρ) g²
        Δ = √(δ + ε) / √(s + ε) · g
        δ ← ρ δ + (1 − ρ) Δ²
        x ← x − η Δ
    """
    (eps_zero,) = flags
    g = gradient(x, g, h)
    s = h[5] * S[0, i] + h[6] * (g * g)
    S[0, i] = s
    a, d = math.sqrt(S[1, i] + h[7]), math.sqrt(s + h[7])
    delta = overflow_check((ratio(a, d) if eps_zero else a / d) * g, s)
    S[1, i] = h[5] * S[1, i] + h[6] * (delta * delta)
    return h[KEEP] * x - h[LR] * delta
