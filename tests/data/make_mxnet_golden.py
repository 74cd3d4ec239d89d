"""Writes mxnet_1_9_1.json, the iterates of MXNet 1.9.1's optimizers that test_mxnet_parity.py replays.

MXNet 1.x needs NumPy < 1.24, below what fastrms supports, so it cannot share the test environment;
run this in its own::

    python3 -m venv /tmp/mx && /tmp/mx/bin/pip install mxnet==1.9.1 'numpy<1.24'
    /tmp/mx/bin/python tests/data/make_mxnet_golden.py

Weights and states are float64 (MXNet makes float32 states whatever the weight's dtype: float64
ones are handed to it here); the gradient is elementwise, so both NumPy versions compute it alike.
"""

import json
import pathlib

import mxnet as mx
import numpy as np

rng = np.random.default_rng(0)
X0 = rng.uniform(-1.5, 1.5, 6)
C = rng.uniform(-1, 1, 6)
STEPS = 25
KEEP = (1, 2, 3, 10, 25)  # the iterates kept


def grad(x):
    return x * x * x - x + C


CASES = [
    ("RMSProp", dict(learning_rate=0.01, gamma1=0.9)),
    ("RMSProp", dict(learning_rate=0.01, gamma1=0.5, epsilon=1e-4)),
    ("RMSProp", dict(learning_rate=0.01, gamma1=0.9, gamma2=0.7)),  # gamma2 without centered: ignored there
    ("RMSProp", dict(learning_rate=0.01, gamma1=0.9, centered=True)),
    ("RMSProp", dict(learning_rate=0.01, gamma1=0.9, gamma2=0.5, centered=True)),
    ("RMSProp", dict(learning_rate=0.01, gamma1=0.9, wd=0.1)),
    ("RMSProp", dict(learning_rate=0.01, gamma1=0.9, clip_gradient=0.3)),
    ("RMSProp", dict(learning_rate=0.01, gamma1=0.9, centered=True, wd=0.1, clip_gradient=0.3)),
    ("SGD", dict(learning_rate=0.05)),
    ("SGD", dict(learning_rate=0.05, momentum=0.9)),
    ("SGD", dict(learning_rate=0.05, momentum=0.9, wd=0.1, clip_gradient=0.3)),
    ("Adam", dict(learning_rate=0.01)),
    ("Adam", dict(learning_rate=0.01, beta1=0.5, beta2=0.9, epsilon=1e-3)),
    ("Adam", dict(learning_rate=0.01, wd=0.1)),
    ("Adam", dict(learning_rate=0.01, wd=0.1, clip_gradient=0.3)),
    ("AdaGrad", dict(learning_rate=0.1)),
    ("AdaGrad", dict(learning_rate=0.1, eps=1e-3)),
    ("AdaGrad", dict(learning_rate=0.1, wd=0.1)),
    ("AdaGrad", dict(learning_rate=0.1, wd=0.1, clip_gradient=0.3)),
    ("Adamax", dict()),
    ("Adamax", dict(learning_rate=0.01, beta1=0.5, beta2=0.9)),
    ("Adamax", dict(learning_rate=0.01, wd=0.1, clip_gradient=0.3)),
    ("Nadam", dict()),
    ("Nadam", dict(learning_rate=0.01, beta1=0.5, beta2=0.9, epsilon=1e-3, schedule_decay=0.5)),
    ("Nadam", dict(learning_rate=0.01, wd=0.1, clip_gradient=0.3)),
]


def f64(state):
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(f64(s) for s in state)
    return mx.nd.zeros(state.shape, dtype="float64")


def run(name, kwargs):
    opt = getattr(mx.optimizer, name)(**kwargs)
    w = mx.nd.array(X0, dtype="float64")
    state = f64(opt.create_state(0, w))
    kept = {}
    for t in range(1, STEPS + 1):
        opt.update(0, w, mx.nd.array(grad(w.asnumpy()), dtype="float64"), state)
        if t in KEEP:
            kept[t] = w.asnumpy().tolist()
    return kept


out = {"mxnet": mx.__version__, "X0": X0.tolist(), "C": C.tolist(),
       "cases": [{"optimizer": n, "kwargs": kw, "iterates": run(n, kw)} for n, kw in CASES]}
path = pathlib.Path(__file__).with_name("mxnet_1_9_1.json")
path.write_text(json.dumps(out, indent=1) + "\n")
print(f"wrote {path} ({len(CASES)} cases)")
