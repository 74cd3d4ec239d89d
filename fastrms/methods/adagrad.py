"""Adagrad (Duchi et al. 2011):  s ← s + g²;  x ← x − η g / √(s + ε).

RMSProp's rule with γ = 1 and g²'s weight 1 (rmsprop.py), plus PyTorch's learning-rate decay
η_t = η / (1 + (t − 1)·lr_decay).
"""

from __future__ import annotations

from .. import _checks as ck
from .base import COMMON, Hyper, Method
from .rmsprop import PARAMS, SLOTS, rms_hypers, rmsprop, rmsprop_coefficients

_hypers = {k: h for k, h in rms_hypers().items()
           if k in COMMON or k in ("eps", "eps_in_sqrt", "initial_scale")}
_hypers["lr_decay"] = Hyper(0.0, ck.nonneg, "η_t = η / (1 + (t − 1)·lr_decay) (PyTorch)")


def _pack(v):
    return {"adagrad": 1.0, "eps": v["eps"], "eps_in_sqrt": v["eps_in_sqrt"], "bias_correction": 0.0,
            "momentum": 0.0, "nesterov": 0.0, "lr_in_momentum": 0.0, "lr_decay": v["lr_decay"]}


METHOD = Method(
    "adagrad", "Adagrad", rmsprop, rmsprop_coefficients, _hypers, _pack, SLOTS, PARAMS,
    flags_fn=lambda v: (False, False, v["eps"] == 0, False, not v["eps_in_sqrt"], False, False),
    rows_fn=lambda v: [("s", v["initial_scale"])],
    varies_fn=lambda v: v["lr_decay"] > 0,
    doc="s ← s + g²;  x ← x − η g / √(s + ε)")
