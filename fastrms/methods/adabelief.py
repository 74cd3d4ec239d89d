"""AdaBelief (Zhuang et al. 2020): Adam (adam.py) whose second moment is the running variance of g
around its running mean, ``belief=True``, as the paper's code (and timm) write it.

    m ← β1 m + (1 − β1) g
    s ← β2 s + (1 − β2)(g − m)² + ε_root        (ε_root kept in s, as in the paper's code)
    x ← x − η/(1 − β1ᵗ) · m / (√s / √(1 − β2ᵗ) + ε)

ε = ε_root = 1e-16 by default.  Optax's ``adabelief`` divides by √(s/(1 − β2ᵗ)) + ε (``v_hat=True``,
preset='optax'); the paper's code and timm rectify the step as RAdam does (``rectify=True``,
preset='timm').
"""

from __future__ import annotations

from . import adam

METHOD = adam.variant("adabelief", "AdaBelief",
                      "m ← β1 m + (1 − β1) g;  s ← β2 s + (1 − β2)(g − m)² + ε;  x ← x − η m̂ / (√ŝ + ε)",
                      fixed={"belief": True, "momentum_decay": None},
                      docs={"eps_root": "ε_root, added to s every step (kept in the state)"},
                      eps=1e-16, eps_root=1e-16)
