"""Step-by-step parity with TensorFlow 1's optimizers under preset='tf1' (skipped without tensorflow).

``tf.compat.v1.train``'s RMSProp (s₀ = 1, ε inside the root, η inside the momentum buffer),
Momentum, Adagrad, Adam (its ε̂ form), Adadelta and GradientDescent, on float64 variables in
eager mode.  Each case passes the same keyword arguments to TensorFlow and to the fastrms stepper.

TF1 turns a Python float hyperparameter into a float32 tensor, also for a float64 variable
(learning_rate=0.01 runs as 0.0099999998): the cases hand TensorFlow every float as a float64
tensor, and one test shows the artifact itself.
"""

import itertools
import os

import numpy as np
import pytest
from reference import PARITY_X0 as X0
from reference import parity_grad as dF

import fastrms

tf = None

STEPS = 25



@pytest.fixture(scope="module", autouse=True)
def _tensorflow():
    global tf
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    tf = pytest.importorskip("tensorflow", reason="TF1 parity tests need TensorFlow (tensorflow-cpu)")


def _grid(**axes):
    return [dict(zip(axes, vals, strict=True)) for vals in itertools.product(*axes.values())]


# TF1's own defaults written out, so that each case gives TensorFlow every float itself
CASES = (
    [("RMSPropOptimizer", "rmsprop", {"learning_rate": 0.01, **kw})
     for kw in _grid(decay=[0.9, 0.5], momentum=[0.0, 0.9], epsilon=[1e-10, 1e-4], centered=[False, True])]
    + [("MomentumOptimizer", "momentum", {"learning_rate": 0.05, **kw})
       for kw in _grid(momentum=[0.5, 0.9], use_nesterov=[False, True])]
    + [("AdagradOptimizer", "adagrad", {"learning_rate": 0.1, "initial_accumulator_value": v})
       for v in (0.1, 1.0)]
    + [("AdamOptimizer", "adam", {"learning_rate": 0.001, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8}),
       ("AdamOptimizer", "adam", {"learning_rate": 0.01, "beta1": 0.5, "beta2": 0.9, "epsilon": 1e-3})]
    + [("AdadeltaOptimizer", "adadelta", {"learning_rate": 1.0, "rho": 0.95, "epsilon": 1e-8}),
       ("AdadeltaOptimizer", "adadelta", {"learning_rate": 0.5, "rho": 0.5, "epsilon": 1e-3})]
    + [("GradientDescentOptimizer", "gd", {"learning_rate": 0.05})]
)


def _tf_optimizer(name: str, kwargs: dict, float64: bool = True):
    def value(k, v):  # (initial_accumulator_value must be a Python number; it is exact in float64)
        exact = float64 and isinstance(v, float) and k != "initial_accumulator_value"
        return tf.constant(v, tf.float64) if exact else v

    return getattr(tf.compat.v1.train, name)(**{k: value(k, v) for k, v in kwargs.items()})


def _theirs(name: str, kwargs: dict, float64: bool = True) -> list:
    var = tf.Variable(X0.copy(), dtype=tf.float64)
    opt = _tf_optimizer(name, kwargs, float64)
    xs = []
    for _ in range(STEPS):
        opt.apply_gradients([(tf.constant(dF(var.numpy())), var)])
        xs.append(var.numpy().copy())
    return xs


@pytest.mark.parametrize(("theirs", "method", "kwargs"), CASES,
                         ids=[f"{m}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for _, m, kw in CASES])
def test_stepper_matches_tf1(theirs, method, kwargs):
    expected = _theirs(theirs, kwargs)
    x = X0.copy()
    opt = fastrms.steppers.STEPPERS[method](x, preset="tf1", **kwargs)
    for k in range(STEPS):
        opt.step(dF(x))
        np.testing.assert_allclose(x, expected[k], rtol=1e-12, atol=1e-12, err_msg=f"step {k + 1}")


def test_tf1_rounds_python_float_hyperparameters_to_float32():
    """Python floats (and TF1's own defaults) become float32 tensors there: the same run as fastrms
    given the float32-rounded values; with the values as written the runs differ."""
    kwargs = {"learning_rate": 0.01, "decay": 0.9, "momentum": 0.5, "epsilon": 1e-10}
    expected = _theirs("RMSPropOptimizer", kwargs, float64=False)
    rounded = {k: float(np.float32(v)) for k, v in kwargs.items()}
    for hyper, same in ((rounded, True), (kwargs, False)):
        x = X0.copy()
        opt = fastrms.RMSProp(x, preset="tf1", **hyper)
        for _ in range(STEPS):
            opt.step(dF(x))
        assert np.allclose(x, expected[-1], rtol=1e-12, atol=1e-12) == same
