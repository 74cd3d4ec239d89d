"""AdamW (Loshchilov & Hutter 2019): Adam (adam.py) with decoupled weight decay x ← (1 − ηλ) x."""

from __future__ import annotations

from . import adam

METHOD = adam.variant("adamw", "AdamW", "Adam with x ← (1 − ηλ) x before the step",
                      fixed={"decoupled_weight_decay": True},
                      docs={"weight_decay": "decoupled weight decay λ"}, weight_decay=0.01)
