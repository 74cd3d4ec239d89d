"""Stepper objects: in-place updates, untouched gradients, exact save and restore."""

import os
import pickle
import subprocess
import sys

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


def test_a_script_that_only_steps_does_not_import_the_scipy_front():
    """``fastrms.RMSProp(x).step(g)`` loads the steppers, not minimize's front and scipy.optimize
    (about half a second of a script's start); the scipy functions still come on first use."""
    code = ("import sys, numpy as np, fastrms\n"
            "x = np.ones(3); fastrms.RMSProp(x, lr=0.1).step(np.ones(3))\n"
            "print(sorted(m for m in ('scipy.optimize', 'fastrms._minimize') if m in sys.modules))\n"
            "print(fastrms.rmsprop.__name__, 'rmsprop' in fastrms.__all__,\n"
            "      'scipy.optimize' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["[]", "rmsprop True True"]


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


def test_a_one_element_x_takes_a_scalar_gradient():
    a, b = np.array([1.0]), np.array([1.0])
    fa, fb = fastrms.RMSProp(a, lr=0.1), fastrms.RMSProp(b, lr=0.1)
    for g in (0.5, -2.0, 3.0):
        fa.step(np.array([g]))
        fb.step(g)
    assert a.tobytes() == b.tobytes() and a[0] != 1.0


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
    with pytest.raises(TypeError, match="real numbers.*<U3"):  # not "the gradient has shape ()"
        opt.step("abc")
    with pytest.raises(ValueError, match=r"shape \(3, 1\), but x has shape \(3,\)"):
        opt.step(np.zeros((3, 1)))
    with pytest.raises(ValueError, match="unknown option"):
        fastrms.Adam(np.zeros(3), gamma=0.9)
    with pytest.raises(ValueError, match="missing"):
        opt.load_state_dict({"t": 0})

    for bad in (None, 1.0, [("t", 0)]):
        with pytest.raises(TypeError, match="state must be a dict"):
            opt.load_state_dict(bad)


class _Sub(np.ndarray):
    pass


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # np.matrix's own
@pytest.mark.parametrize("wrap", [np.asmatrix, lambda a: a.view(_Sub),
                                  lambda a: a.view(np.recarray)], ids=["matrix", "subclass", "recarray"])
def test_an_ndarray_subclass_is_updated_in_place_as_the_plain_array(wrap, rng):
    # before: np.matrix reached Numba as a matrix and failed with a typing traceback
    x0, grads = rng.normal(size=(1, 5)), rng.normal(size=(3, 1, 5))
    plain, wrapped = x0.copy(), wrap(x0.copy())
    a, b = fastrms.Adam(plain, lr=0.1), fastrms.Adam(wrapped, lr=0.1)
    for g in grads:
        a.step(g)
        b.step(g)
    assert b.x is wrapped and type(wrapped) is not np.ndarray
    assert np.asarray(wrapped).tobytes() == plain.tobytes()


def test_a_masked_array_is_refused_rather_than_its_mask_ignored():
    x = np.ma.array([1.0, 2.0, 3.0], mask=[False, True, False])
    with pytest.raises(TypeError, match="masked array: .* cannot honour the mask; pass x.data"):
        fastrms.RMSProp(x)
    with pytest.raises(TypeError, match=r"x\[1\]: x is a masked array"):
        fastrms.RMSProp([np.ones(2), x])  # before: updated its data, the masked element too
    assert x.data.tolist() == [1.0, 2.0, 3.0]


def test_float64_gradient_on_float32_x_is_cast():
    x = np.ones(4, np.float32)
    fastrms.GradientDescent(x, lr=0.5).step(np.ones(4))
    assert x.dtype == np.float32 and np.all(x == 0.5)


def test_every_form_of_gradient_steps_as_the_plain_one(rng):
    """The step's common case is tested inline (CpuBackend.single_step): whatever g looks like,
    step after step on one stepper, the result is that of the same values as a plain array."""
    x0 = rng.normal(size=(4, 3))
    grads = [rng.normal(size=(4, 3)) for _ in range(6)]
    forms = [lambda g: g,
             lambda g: np.asfortranarray(g),                    # same shape, not C-contiguous
             lambda g: np.repeat(g, 2, axis=1)[:, ::2],          # a strided view
             lambda g: g.tolist(),                               # not an array
             lambda g: g.astype(np.float32),                     # another dtype: cast
             lambda g: g.view(np.ma.MaskedArray),                # a subclass
             _read_only,                                         # not the kernel's usual types:
             _unaligned]                                         # through Numba's dispatcher
    grads += [rng.normal(size=(4, 3)) for _ in range(2)]
    x, y = x0.copy(), x0.copy()
    plain, varied = fastrms.RMSProp(x, lr=0.1, momentum=0.5), fastrms.RMSProp(y, lr=0.1, momentum=0.5)
    for g, form in zip(grads, forms, strict=True):
        plain.step(np.ascontiguousarray(g, np.float32).astype(np.float64) if form is forms[4] else g)
        varied.step(form(g))
    assert x.tobytes() == y.tobytes() and varied.t == 8
    with pytest.raises(ValueError, match=r"shape \(3, 4\), but x has shape \(4, 3\)"):
        varied.step(np.ones((3, 4)))  # the same size in another shape
    with pytest.raises(ValueError, match="shape"):
        varied.step(np.ones(12))
    with pytest.raises(TypeError, match="gradient is None"):  # not "the gradient has shape ()"
        varied.step(None)
    assert varied.t == 8 and x.tobytes() == y.tobytes()  # a refused step changes nothing


def _read_only(a):
    a = a.copy()
    a.flags.writeable = False
    return a


def _unaligned(a):
    """a's values in memory one byte off the dtype's alignment."""
    out = np.frombuffer(bytearray(a.nbytes + 1), dtype=a.dtype, count=a.size, offset=1).reshape(a.shape)
    out[...] = a
    assert not out.flags.aligned
    return out


def test_a_stepper_over_unaligned_memory_steps_as_over_aligned(rng):
    """x in memory one byte off its alignment (a buffer from a file, a struct) steps as an aligned
    one, with a g of either kind."""
    x0 = rng.normal(size=(5, 4)).astype(np.float32)
    grads = [rng.normal(size=(5, 4)).astype(np.float32) for _ in range(4)]
    x, y = x0.copy(), _unaligned(x0)
    aligned, unaligned = fastrms.Adam(x, lr=0.1), fastrms.Adam(y, lr=0.1)
    for j, g in enumerate(grads):
        aligned.step(_unaligned(g) if j % 2 else g)
        unaligned.step(g if j % 2 else _unaligned(g))
    assert x.tobytes() == y.tobytes() and not y.flags.aligned


def test_a_gradient_of_other_types_than_xs_goes_through_numbas_dispatcher(rng):
    """The usual g is handed to the kernel's compiled code directly (kernels.cpu.entry_point, typed
    for x's flat view); a read-only g has another Numba type, so it must take the dispatcher,
    which compiles the kernel for it."""
    x = rng.normal(size=(3, 7)).astype(np.float32)
    opt = fastrms.Yogi(x, lr=0.1)
    opt.step(rng.normal(size=(3, 7)).astype(np.float32))
    kernel = opt._mstate.kernels.step(x.size, x.itemsize)
    assert all(sig[1].mutable for sig in kernel.signatures)
    opt.step(_read_only(rng.normal(size=(3, 7)).astype(np.float32)))
    assert not all(sig[1].mutable for sig in kernel.signatures)


def test_a_scheduled_stepper_recomputes_its_coefficients_every_step():
    """h is read without a call once computed only where it cannot change (MethodState.constant_h)."""
    x = np.zeros(3)
    opt = fastrms.GradientDescent(x, lr=lambda t: 0.1 * (t + 1))
    for _ in range(3):
        opt.step(np.ones(3))
    np.testing.assert_allclose(x, -(0.1 + 0.2 + 0.3))
    assert opt._mstate.constant_h is None
    fixed = fastrms.GradientDescent(np.zeros(3), lr=0.1)
    fixed.step(np.ones(3))
    assert fixed._mstate.constant_h is not None
    fixed.load_state_dict({"t": 5})
    assert fixed._mstate.constant_h is None  # recomputed after a restore


def test_hyperparameters_change_between_steps(rng):
    """opt.lr = ... (torch's param_groups, Keras's opt.learning_rate = ...) keeps x, the state and t:
    the run equals one with a schedule that switches at that step, bit for bit."""
    grads = rng.normal(size=(20, 6))
    x, y = np.ones(6), np.ones(6)
    switched = fastrms.RMSProp(x, lr=0.1, momentum=0.9)
    scheduled = fastrms.RMSProp(y, lr=lambda t: 0.1 if t < 10 else 0.02,
                                gamma=lambda t: 0.9 if t < 15 else 0.5, momentum=0.9)
    for k, g in enumerate(grads):
        if k == 10:
            switched.lr = 0.02
        if k == 15:
            switched.alpha = 0.5  # an alias, as torch calls γ
        switched.step(g)
        scheduled.step(g)
    assert x.tobytes() == y.tobytes() and switched.t == 20 and switched.x is x
    assert switched.lr == 0.02 and switched.gamma == switched.rho == 0.5
    assert switched.hyperparameters["momentum"] == 0.9  # the rest kept
    switched.lr *= 0.5
    assert switched.lr == 0.01


def test_the_bound_step_follows_every_change_of_setup(rng):
    """A stepper over one array binds its fused step to the instance (one Python frame a step):
    a change of hyperparameters, even one that makes it batched (per-row η), must step with the
    new setup, and a subclass's own step must still be the one called."""
    grads = rng.normal(size=(6, 2, 3))
    x, y = np.ones((2, 3)), np.ones((2, 3))
    switched = fastrms.RMSProp(x, lr=0.1)
    batched = fastrms.RMSProp(y, lr=lambda t: 0.1 if t < 3 else 0.05)
    for k, g in enumerate(grads):
        if k == 3:
            switched.lr = np.array([0.05, 0.05])  # per row: the stepper becomes batched
        switched.step(g)
        batched.step(g)
    assert switched._fast_step is None and "step" not in vars(switched)
    assert x.tobytes() == y.tobytes() and switched.t == 6

    class Counting(fastrms.RMSProp):
        calls = 0

        def step(self, g):
            type(self).calls += 1
            super().step(g)

    opt = Counting(np.ones(3), lr=0.1)
    opt.step(np.ones(3))
    opt.step(np.ones(3))
    assert Counting.calls == 2 and opt.t == 2
    assert fastrms.RMSProp(np.ones(3)).step.__doc__ == fastrms.RMSProp.step.__doc__


def test_changing_hyperparameters_is_checked_and_leaves_the_stepper_as_it_was():
    opt = fastrms.Adam(np.ones(3), lr=0.1, betas=(0.9, 0.99))
    opt.step(np.ones(3))
    before = opt.state_dict()
    opt.beta1 = 0.5  # one of the pair given as betas
    assert opt.betas == (0.5, 0.99) and opt.t == 1
    opt.betas = (0.8, 0.9)
    assert (opt.hyperparameters["beta1"], opt.hyperparameters["beta2"]) == (0.8, 0.9)
    for change, exc, match in [({"lr": -1.0}, ValueError, r"lr must be in \(0, inf\]"),
                               ({"lrr": 0.1}, ValueError, "did you mean 'lr'"),
                               ({"amsgrad": True}, ValueError, "state rows"),
                               ({"preset": "torch"}, ValueError, "preset is fixed"),
                               ({"x": np.ones(3)}, ValueError, "unknown hyperparameter of Adam: 'x'"),
                               ({"batched": True}, ValueError, "batched is fixed")]:
        with pytest.raises(exc, match=match):
            opt.set_hyperparameters(**change)
        assert opt.lr == 0.1 and opt.t == 1
        assert all(np.array_equal(opt.state_dict()[k], before[k]) for k in ("m", "v"))
    with pytest.raises(ValueError, match="state rows"):
        fastrms.RMSProp(np.ones(3)).momentum = 0.9  # a buffer b would appear from nowhere
    with pytest.raises(AttributeError, match="updates the array it was built over"):
        opt.x = np.zeros(3)  # the kernels hold the first x's memory: never a silent no-op
    with pytest.raises(AttributeError, match="no attribute 'foo'"):
        opt.foo  # noqa: B018 - only hyperparameter names read through
    assert pickle.loads(pickle.dumps(opt)).betas == (0.8, 0.9)


def test_hyperparameters_change_for_many_arrays_and_batched_rows(rng):
    params, same = ({"W": np.ones((2, 3)), "b": np.zeros(3)} for _ in range(2))
    opt = fastrms.RMSProp(params, lr=0.1)
    scheduled = fastrms.RMSProp(same, lr=lambda t: 0.1 if t < 2 else 0.01)
    for k in range(4):
        if k == 2:
            opt.lr = 0.01
        g = {"W": rng.normal(size=(2, 3)), "b": rng.normal(size=3)}
        opt.step(g)
        scheduled.step(g)
    assert opt.t == 4 and all(params[k].tobytes() == same[k].tobytes() for k in params)
    X = np.ones((3, 2))
    rows = fastrms.RMSProp(X, lr=np.array([0.1, 0.2, 0.3]))
    rows.lr = np.array([0.0001, 0.2, 0.3])
    rows.step(np.ones((3, 2)))
    assert X[0, 0] > X[1, 0] and np.array_equal(rows.lr, [0.0001, 0.2, 0.3])


@pytest.mark.parametrize("name", list(fastrms.methods.METHODS))
def test_a_loaded_state_keeps_running_means_of_squares_nonnegative(name):
    """s, v, vmax, δ have their square roots taken: a negative one loaded would give NaN at the next
    step.  Signed rows (m, b) load as they are."""
    extra = {"adam": {"amsgrad": True}, "rmsprop": {"centered": True, "momentum": 0.9}}.get(name, {})
    opt = fastrms.steppers.STEPPERS[name](np.ones(3), **extra)
    opt.step(np.ones(3))
    state = opt.state_dict()
    for row in set(state) - {"t"}:
        bad = {**state, row: -np.abs(state[row]) - 1.0}
        if row in ("s", "v", "vmax", "delta"):
            with pytest.raises(ValueError, match=f"state '{row}' has negative values"):
                opt.load_state_dict(bad)
        else:
            opt.load_state_dict(bad)
            assert np.all(opt.state_dict()[row] < 0)
