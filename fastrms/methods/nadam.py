"""NAdam (Dozat 2016) as torch and Keras define it: Adam (adam.py) with Nesterov momentum whose
coefficient follows a schedule, ``momentum_decay`` ψ.

    μ_t = β1 (1 − ½·0.96^(tψ)),   Π_t = μ_1 ⋯ μ_t
    m ← β1 m + (1 − β1) g,   v ← β2 v + (1 − β2) g²
    x ← x − η (μ_{t+1} m/(1 − Π_t μ_{t+1}) + (1 − μ_t) g/(1 − Π_t)) / (√(v/(1 − β2ᵗ)) + ε)

ψ = 0.004 is torch's default; Keras's Nadam is ψ = 1 (preset='keras').  Optax's ``nadam`` has no
schedule, μ_t = β1: ``momentum_decay=None`` (preset='optax'), which is ``adam(nesterov=True)``.
"""

from __future__ import annotations

from . import adam

METHOD = adam.variant("nadam", "NAdam", "Adam with Nesterov momentum μ_t = β1(1 − ½·0.96^(tψ))",
                      fixed={"nesterov": True, "amsgrad": False, "rectify": False, "threshold": 5.0,
                             "belief": False},
                      lr=0.002, momentum_decay=0.004)
