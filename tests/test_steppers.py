"""Stepper objects: in-place updates, untouched gradients, exact save and restore."""

import numpy as np
import pytest
from reference import reference_run

import fastrms


def test_step_updates_x_in_place_and_leaves_g_alone(rng):
    x = rng.normal(size=(4, 3))
    row = x[1]  # a view taken before the step sees the update only if it is made in x's memory
    g = rng.normal(size=(4, 3))
    g_before = g.copy()
    opt = fastrms.RMSProp(x, lr=0.1, gamma=0.9)
    x0 = x.copy()
    opt.step(g)
    assert opt.x is x and not np.array_equal(x, x0)
    np.testing.assert_array_equal(row, x[1])
    assert not np.array_equal(row, x0[1])
    np.testing.assert_array_equal(g, g_before)
    np.testing.assert_allclose(x, reference_run("rmsprop", x0, [g], lr=0.1), rtol=1e-14)
    assert opt.t == 1 and set(opt.state) == {"t", "s"} and opt.state["s"].shape == (4, 3)


def test_state_roundtrip_continues_bit_for_bit(rng):
    x = rng.normal(size=50)
    grads = [rng.normal(size=50) for _ in range(10)]
    a = fastrms.RMSProp(x, momentum=0.9, centered=True)
    for g in grads[:5]:
        a.step(g)
    saved, x_saved = a.state_dict(), x.copy()
    for g in grads[5:]:
        a.step(g)
    y = x_saved.copy()
    b = fastrms.RMSProp(y, momentum=0.9, centered=True)
    b.load_state_dict(saved)
    for g in grads[5:]:
        b.step(g)
    assert y.tobytes() == x.tobytes() and b.t == a.t == 10
    assert set(saved) == {"t", "s", "m", "b"}


def test_state_dict_is_a_copy(rng):
    x = rng.normal(size=5)
    opt = fastrms.Adam(x)
    opt.step(np.ones(5))
    d = opt.state_dict()
    opt.step(np.ones(5))
    assert d["t"] == 1 and not np.array_equal(d["m"], opt.state["m"])


@pytest.mark.parametrize("cls", list(fastrms.steppers.STEPPERS.values()))
def test_every_stepper_descends(cls, rng):
    x = rng.normal(size=10)
    f0 = float(np.sum(x ** 2))
    opt = cls(x, lr=0.01)
    for _ in range(20):
        opt.step(2 * x)
    assert np.sum(x ** 2) < f0


def test_stepper_errors():
    with pytest.raises(TypeError, match="in place"):
        fastrms.RMSProp([1.0, 2.0])
    with pytest.raises(TypeError, match="float32 or float64"):
        fastrms.RMSProp(np.arange(3))
    with pytest.raises(ValueError, match="C-contiguous"):
        fastrms.RMSProp(np.zeros((4, 4))[:, 0])
    opt = fastrms.RMSProp(np.zeros(3))
    with pytest.raises(ValueError, match="shape"):
        opt.step(np.zeros(4))
    with pytest.raises(ValueError, match="unknown option"):
        fastrms.Adam(np.zeros(3), gamma=0.9)
    with pytest.raises(ValueError, match="missing"):
        opt.load_state_dict({"t": 0})


def test_float64_gradient_on_float32_x_is_cast():
    x = np.ones(4, np.float32)
    fastrms.GradientDescent(x, lr=0.5).step(np.ones(4))
    assert x.dtype == np.float32 and np.all(x == 0.5)
