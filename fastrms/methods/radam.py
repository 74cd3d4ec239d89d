"""RAdam (Liu et al. 2019): Adam (adam.py) with its step rectified, ``rectify=True``.

    ρ∞ = 2/(1 − β2) − 1,   ρ_t = ρ∞ − 2t β2ᵗ/(1 − β2ᵗ)
    x ← x − η m̂                                  while ρ_t ≤ 5 (the variance of v̂ is not tractable)
    x ← x − η r_t √(1 − β2ᵗ)/(1 − β1ᵗ) · m/(√v + ε)   after, with
    r_t = √((ρ_t − 4)(ρ_t − 2) ρ∞ / ((ρ∞ − 4)(ρ∞ − 2) ρ_t))

ε added to √v (``epsilon_hat``), as the paper's code and torch.optim.RAdam do; Optax's ``radam``
adds it to √v̂ (``v_hat=True``, preset='optax').
"""

from __future__ import annotations

from . import adam

METHOD = adam.variant("radam", "RAdam", "Adam whose step is η m̂ while ρ_t ≤ 5, then rectified by r_t",
                      fixed={"rectify": True, "amsgrad": False, "momentum_decay": None, "belief": False},
                      epsilon_hat=True)
