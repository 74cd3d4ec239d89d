"""Step-by-step parity with autograd's optimizers under preset='autograd' (skipped without autograd).

``autograd.misc.optimizers`` has ``sgd`` (momentum with ``mass``), ``rmsprop`` (s₀ = 1, ε outside
the root) and ``adam``.  Each case passes the same keyword arguments to autograd's function and to
the fastrms stepper and to ``minimize``: the preset's names and defaults must make them the same
optimizer.  autograd calls ``callback(x, i, g)`` before each step, which records every iterate.
"""

import numpy as np
import pytest
from reference import PARITY_X0 as X0
from reference import parity_grad as dF
from reference import parity_loss as F

import fastrms

optimizers = None

STEPS = 40




@pytest.fixture(scope="module", autouse=True)
def _autograd():
    global optimizers
    pytest.importorskip("autograd", reason="autograd parity tests need autograd (pip install autograd)")
    import autograd.misc.optimizers

    optimizers = autograd.misc.optimizers


def _theirs(name: str, kwargs: dict, x0=X0, grad=dF):
    """autograd's iterates x_0 … x_STEPS."""
    xs = []
    last = getattr(optimizers, name)(lambda x, i: grad(x), x0, callback=lambda x, i, g: xs.append(x),
                                     num_iters=STEPS, **kwargs)
    return [*xs, last]


CASES = [
    ("sgd", "momentum", {}),  # (its defaults: step_size 0.1, mass 0.9)
    ("sgd", "momentum", {"mass": 0.5, "step_size": 0.01}),
    ("sgd", "momentum", {"mass": 0.0, "step_size": 0.02}),
    ("rmsprop", "rmsprop", {"step_size": 0.01}),
    ("rmsprop", "rmsprop", {"step_size": 0.003, "gamma": 0.5, "eps": 1e-4}),
    ("adam", "adam", {"step_size": 0.01}),
    ("adam", "adam", {"step_size": 0.02, "b1": 0.5, "b2": 0.9, "eps": 1e-3}),
]


@pytest.mark.parametrize(("theirs", "method", "kwargs"), CASES)
def test_stepper_matches_autograd(theirs, method, kwargs):
    expected = _theirs(theirs, kwargs)
    x = X0.copy()
    opt = fastrms.steppers.STEPPERS[method](x, preset="autograd", **kwargs)
    for k in range(STEPS):
        np.testing.assert_allclose(x, expected[k], rtol=1e-12, atol=1e-14, err_msg=f"step {k}")
        opt.step(dF(x))
    np.testing.assert_allclose(x, expected[-1], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(("theirs", "method", "kwargs"), CASES[1::2])
def test_minimize_matches_autograd(theirs, method, kwargs):
    res = fastrms.minimize(F, dF, X0, method=method,
                           options={"preset": "autograd", **kwargs, "maxiter": STEPS, "gtol": 0})
    assert res.nit == STEPS
    np.testing.assert_allclose(res.x, _theirs(theirs, kwargs)[-1], rtol=1e-12, atol=1e-14)


def test_defaults_and_dampening():
    """sgd's defaults (step_size 0.1, mass 0.9) and its first step: velocity = −(1 − mass)·g from 0,
    so x₁ = x₀ − η (1 − mass) g₀ (torch's dampening leaves the first step undamped)."""
    x = np.array([1.0, -2.0])
    g = np.array([0.5, 4.0])
    fastrms.Momentum(x, preset="autograd").step(g)
    np.testing.assert_array_equal(x, np.array([1.0, -2.0]) - 0.1 * ((1 - 0.9) * g))
    expected = _theirs("sgd", {}, x0=np.array([1.0, -2.0]), grad=lambda x: 0.1 * x)
    x = np.array([1.0, -2.0])
    opt = fastrms.Momentum(x, preset="autograd")
    for _ in range(STEPS):
        opt.step(0.1 * x)
    np.testing.assert_allclose(x, expected[-1], rtol=1e-12)
    # an explicit dampening wins over mass; torch's preset keeps its undamped first step
    y = np.zeros(2)
    fastrms.Momentum(y, preset="autograd", mass=0.5, dampening=0.0).step(g)
    np.testing.assert_array_equal(y, -0.1 * g)
    z = np.zeros(2)
    fastrms.Momentum(z, preset="torch", lr=0.1, momentum=0.5, dampening=0.5).step(g)
    np.testing.assert_array_equal(z, -0.1 * g)


def test_a_dict_of_arrays_as_autograd_takes_it():
    """autograd's optimizers flatten a dict of arrays; a fastrms stepper takes the dict itself."""
    P0 = {"W": X0[:, :2].copy(), "b": X0[:, 2].copy()}

    def grad(P):
        g = dF(np.column_stack([P["W"], P["b"]]))
        return {"W": g[:, :2], "b": g[:, 2]}

    expected = _theirs("rmsprop", {"step_size": 0.01}, x0=P0, grad=grad)[-1]
    P = {k: v.copy() for k, v in P0.items()}
    opt = fastrms.RMSProp(P, preset="autograd", step_size=0.01)
    for _ in range(STEPS):
        opt.step(grad(P))
    for k in P:
        np.testing.assert_allclose(P[k], expected[k], rtol=1e-12, atol=1e-14)
