"""The scipy-style front: call forms, options, results, callbacks, and clear errors."""

import numpy as np
import pytest
import scipy.optimize

import fastrms
from fastrms import experiments as ex

A = ex.A_SEED


def F(x, A=A):
    return ex.ax_loss(x, A)


def dF(x, A=A):
    return ex.ax_grad(x, A)


def quad(x):
    return float(np.sum((x - 3.0) ** 2))


def dquad(x):
    return 2.0 * (x - 3.0)


OPTS = {"lr": 0.05, "maxiter": 2000}


def test_three_call_forms_agree():
    r1 = fastrms.minimize(F, dF, np.zeros((5, 5)), options={"maxiter": 50})
    r2 = fastrms.minimize(F, np.zeros((5, 5)), jac=dF, options={"maxiter": 50})
    r3 = fastrms.minimize(lambda x: (F(x), dF(x)), np.zeros((5, 5)), jac=True, options={"maxiter": 50})
    for r in (r2, r3):
        np.testing.assert_array_equal(r.x, r1.x)
        assert r.fun == r1.fun and r.nit == r1.nit == 50
    assert isinstance(r1, scipy.optimize.OptimizeResult)
    assert r1.x.shape == (5, 5) and r1.jac.shape == (5, 5)
    np.testing.assert_allclose(r1.jac, dF(r1.x))
    assert r1.fun == pytest.approx(F(r1.x))


def test_args_reach_the_functions():
    B = np.diag([1.0, 2.0, 3.0])
    res = fastrms.minimize(F, dF, np.zeros((3, 3)), args=(B,), method="gd",
                           options={"lr": 0.05, "maxiter": 3000, "gtol": 1e-9})
    assert res.success
    np.testing.assert_allclose(res.x, np.linalg.inv(B), atol=1e-9)


def test_converges_with_gtol_and_reports_success():
    res = fastrms.minimize(quad, dquad, np.zeros(4), method="gd", options={"lr": 0.1, "gtol": 1e-8})
    assert res.success and res.status == 0 and res.message == "Optimization terminated successfully."
    assert np.max(np.abs(res.jac)) <= 1e-8 and res.nit < 200
    np.testing.assert_allclose(res.x, 3.0, atol=1e-8)
    assert res.njev == res.nit + 1  # one gradient per iterate, none wasted


def test_maxiter_status_and_nfev_only_at_the_end():
    res = fastrms.minimize(F, dF, np.zeros((5, 5)), options={"maxiter": 10})
    assert res.status == 1 and not res.success and res.nit == 10
    assert res.message == "Maximum number of iterations has been exceeded."
    assert res.nfev == 1 and res.njev == 11


def test_x0_is_never_mutated_and_dtype_is_kept():
    x0 = np.zeros((5, 5), np.float32)
    res = fastrms.minimize(F, dF, x0, options={"maxiter": 20})
    assert not x0.any()
    assert res.x.dtype == np.float32 and res.jac.dtype == np.float32
    seen = []
    fastrms.minimize(F, lambda x: seen.append(x.dtype) or dF(x).astype(np.float32), x0,
                     options={"maxiter": 3})
    assert set(seen) == {np.dtype(np.float32)}


def test_integer_and_list_x0_become_float64():
    res = fastrms.minimize(quad, dquad, [0, 1, 2], options={"maxiter": 5})
    assert res.x.dtype == np.float64 and res.x.shape == (3,)


def test_float32_result_close_to_float64():
    r64 = fastrms.minimize(F, dF, np.zeros((5, 5)), options={"maxiter": 300, "lr": 1e-3, "momentum": 0.9})
    r32 = fastrms.minimize(F, dF, np.zeros((5, 5)), options={"maxiter": 300, "lr": 1e-3, "momentum": 0.9,
                                                              "dtype": "float32"})
    np.testing.assert_allclose(r32.x, r64.x, atol=2e-3)


def test_history_and_trajectory():
    res = fastrms.minimize(F, dF, np.zeros((5, 5)), options={"maxiter": 30, "history": True,
                                                             "trajectory": True})
    assert res.history["loss"].shape == (31,) and res.history["gnorm"].shape == (31,)
    assert res.history["loss"][0] == F(np.zeros((5, 5))) and res.history["loss"][-1] == res.fun
    assert res.trajectory.shape == (31, 5, 5)
    np.testing.assert_array_equal(res.trajectory[-1], res.x)
    assert res.history["gnorm"][-1] == pytest.approx(np.max(np.abs(res.jac)))


def test_callback_intermediate_result_and_stopiteration():
    seen = []

    def cb(intermediate_result):
        seen.append(intermediate_result.fun)
        if len(seen) == 5:
            raise StopIteration

    res = fastrms.minimize(F, dF, np.zeros((5, 5)), callback=cb, options={"maxiter": 100})
    assert res.status == 99 and not res.success and res.nit == 5 and len(seen) == 5
    assert res.message == "`callback` raised `StopIteration`."
    assert seen[-1] == res.fun


def test_callback_with_xk():
    xs = []
    fastrms.minimize(F, dF, np.zeros((5, 5)), callback=lambda xk: xs.append(xk), options={"maxiter": 4})
    assert len(xs) == 4 and xs[0].shape == (5, 5)
    assert not np.shares_memory(xs[0], xs[1])


def test_tol_sets_gtol():
    res = fastrms.minimize(quad, dquad, np.zeros(2), method="gd", tol=1e-3, options={"lr": 0.1})
    assert res.success and np.max(np.abs(res.jac)) <= 1e-3 and np.max(np.abs(res.jac)) > 1e-6


def test_aliases_are_accepted():
    base = fastrms.minimize(F, dF, np.zeros((5, 5)), options={"lr": 0.01, "gamma": 0.8, "eps": 1e-7,
                                                              "momentum": 0.5, "maxiter": 20})
    for alias in ({"learning_rate": 0.01, "rho": 0.8, "epsilon": 1e-7, "mu": 0.5},
                  {"eta": 0.01, "alpha": 0.8, "eps": 1e-7, "momentum": 0.5},
                  {"lr": 0.01, "decay": 0.8, "epsilon": 1e-7, "mu": 0.5}):
        res = fastrms.minimize(F, dF, np.zeros((5, 5)), options={**alias, "maxiter": 20})
        np.testing.assert_array_equal(res.x, base.x)


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")  # the user's F overflows: that is the point
def test_divergence_is_reported_with_last_finite_x():
    # gamma = 1: s stays 0 and every step is lr*g/sqrt(eps) -- the seeds' exercise
    res = fastrms.minimize(ex.f_2d, ex.grad_2d, np.array([-5.0, -2.0]),
                           options={"lr": 0.4, "gamma": 1.0, "maxiter": 10000, "history": True})
    assert not res.success and res.status == 3
    assert "non-finite" in res.message and "diverged" in res.message
    assert np.all(np.isfinite(res.x)) and np.max(np.abs(res.x)) > 1e100
    assert res.nit < 10000


def test_scipy_accepts_fastrms_methods():
    res = scipy.optimize.minimize(quad, np.zeros(3), jac=dquad, method=fastrms.rmsprop,
                                  options={"lr": 0.05, "maxiter": 3000, "momentum": 0.9}, tol=1e-6)
    assert res.success and isinstance(res, scipy.optimize.OptimizeResult)
    np.testing.assert_allclose(res.x, 3.0, atol=1e-5)
    stops = []

    def cb(intermediate_result):
        stops.append(intermediate_result.nit)
        raise StopIteration

    res = scipy.optimize.minimize(quad, np.zeros(3), jac=dquad, method=fastrms.adam, callback=cb)
    assert res.status == 99 and stops == [1]
    res = scipy.optimize.minimize(lambda x: (quad(x), dquad(x)), np.zeros(3), jac=True,
                                  method=fastrms.gd, options={"lr": 0.1})
    assert res.success


@pytest.mark.parametrize("name", list(fastrms.methods.METHODS))
def test_every_method_minimizes_a_quadratic(name):
    lr = {"adadelta": 1.0, "gd": 0.1, "momentum": 0.05}.get(name, 0.05)
    if name == "lion":  # steps of size η whatever g is: converging needs η to decay
        lr = fastrms.schedules.exponential(0.05, 0.5, 200)
    res = fastrms.minimize(quad, dquad, np.zeros(3), method=name, options={"lr": lr, "maxiter": 20000,
                                                                          "gtol": 1e-4})
    assert res.success, res.message
    np.testing.assert_allclose(res.x, 3.0, atol=1e-3)


# -- bad input -------------------------------------------------------------------

@pytest.mark.parametrize("options,exc,match", [
    ({"gama": 0.9}, ValueError, "did you mean 'gamma'"),
    ({"lr": 0}, ValueError, "lr must be in"),
    ({"lr": -1.0}, ValueError, "lr must be in"),
    ({"gamma": 1.5}, ValueError, r"gamma must be in \[0, 1\]"),
    ({"rho": -0.1}, ValueError, "rho must be in"),
    ({"eps": -1e-8}, ValueError, "eps must be in"),
    ({"momentum": 1.0}, ValueError, r"momentum must be in \[0, 1\)"),
    ({"maxiter": -1}, ValueError, "maxiter must be >= 0"),
    ({"maxiter": 2.5}, TypeError, "maxiter must be an integer"),
    ({"lr": "fast"}, TypeError, "lr must be a real number"),
    ({"lr": 1 + 2j}, TypeError, "lr must be a real number"),
    ({"rho": 0.9, "alpha": 0.8}, ValueError, "gamma given twice"),
    ({"lr": 0.1, "learning_rate": 0.1}, ValueError, "lr given twice"),
    ({"centered": "yes"}, TypeError, "centered must be True or False"),
    ({"nesterov": True}, ValueError, "nesterov=True needs momentum > 0"),
    ({"decay_before_clip": True, "decoupled_weight_decay": True}, ValueError,
     "cannot combine with decoupled_weight_decay=True"),
    ({"decay_before_clip": True, "weight_decay": 0.1, "clip_norm": 1.0}, ValueError,
     "use clip_value, or decay_before_clip=False"),
])
def test_bad_options(options, exc, match):
    with pytest.raises(exc, match=match):
        fastrms.minimize(F, dF, np.zeros((5, 5)), options=options)


@pytest.mark.parametrize("method,options,match", [
    ("adam", {"momentum_decay": 0.004}, "momentum_decay schedules NAdam's momentum .* nesterov=False"),
    ("nadam", {"beta1": fastrms.schedules.exponential(0.9, 0.5, 10)},
     "a scheduled beta1 with momentum_decay"),
    ("nadam", {"momentum_decay": -1.0}, "momentum_decay must be in"),
    ("radam", {"threshold": 3.0}, r"threshold must be in \[4, inf\]"),
    ("radam", {"amsgrad": True}, "RAdam is defined with amsgrad=False"),
    ("adam", {"rectify": True, "amsgrad": True}, "rectify=True .* amsgrad=True does not go with it"),
])
def test_adam_relatives_refuse_what_they_are_not_defined_with(method, options, match):
    with pytest.raises(ValueError, match=match):
        fastrms.minimize(quad, dquad, np.zeros(3), method=method, options=options)


def test_a_method_function_names_its_method():
    """minimize(..., method=fastrms.adam), as scipy.optimize.minimize takes it: the same run as 'adam'."""
    opts = {"beta1": 0.5, "maxiter": 20}
    by_name = fastrms.minimize(quad, dquad, np.zeros(3), method="adam", options=opts)
    by_fn = fastrms.minimize(quad, dquad, np.zeros(3), method=fastrms.adam, options=opts)
    assert by_fn.x.tobytes() == by_name.x.tobytes()
    with pytest.raises(TypeError, match="method must be a string or a fastrms method function"):
        fastrms.minimize(quad, dquad, np.zeros(3), method=print)


def test_unknown_method_suggests():
    with pytest.raises(ValueError, match="did you mean 'rmsprop'"):
        fastrms.minimize(F, dF, np.zeros((5, 5)), method="rmsporp")
    with pytest.raises(ValueError, match="unknown method 'SGD'; did you mean 'gd'"):  # (any case, as 'sgd')
        fastrms.minimize(F, dF, np.zeros((5, 5)), method="SGD")
    with pytest.raises(ValueError, match="unknown option for method 'rmsprop': 'LR'; did you mean 'lr'"):
        fastrms.minimize(F, dF, np.zeros((5, 5)), options={"LR": 0.1})


def test_method_none_is_the_default_as_in_scipy():
    default = fastrms.minimize(quad, dquad, np.zeros(3), options={"maxiter": 20})
    for solve in (lambda: fastrms.minimize(quad, dquad, np.zeros(3), method=None, options={"maxiter": 20}),
                  lambda: fastrms.Minimizer(quad, dquad, method=None, options={"maxiter": 20})(np.zeros(3))):
        assert solve().x.tobytes() == default.x.tobytes()


@pytest.mark.parametrize("x0,exc,match", [
    ("abc", TypeError, "string"),
    (np.array([1 + 1j, 2]), TypeError, "real numbers"),
    (np.array(["a", "b"]), TypeError, "real numbers"),
    ([1.0, np.nan], ValueError, "NaN or inf"),
    ([np.inf, 1.0], ValueError, "NaN or inf"),
    ([], ValueError, "empty"),
    ([[1, 2], [3]], TypeError, "array of numbers"),
])
def test_bad_x0(x0, exc, match):
    with pytest.raises(exc, match=match):
        fastrms.minimize(quad, dquad, x0)


@pytest.mark.parametrize("n", [3, 5000])  # the compiled test below 4096 elements, NumPy's above
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_x0_arrays(n, dtype, bad):
    x0 = np.zeros(n, dtype)
    x0[n // 2] = bad
    with pytest.raises(ValueError, match="x0 contains NaN or inf"):
        fastrms.minimize(quad, dquad, x0)
    with pytest.raises(ValueError, match="x0 contains NaN or inf"):  # not C-contiguous
        fastrms.minimize(quad, dquad, np.stack([x0, x0], axis=1)[:, 0])
    x0[n // 2] = np.finfo(dtype).max  # finite, however large
    res = fastrms.minimize(lambda x: 0.0, lambda x: np.zeros_like(x), x0, options={"maxiter": 1})
    assert res.x.dtype == dtype and res.x[n // 2] == np.finfo(dtype).max


def test_a_cached_valid_call_does_not_let_an_equal_bad_value_through():
    """Validated options are remembered by value and type: tol=True equals tol=1, and must still be
    refused after a call with tol=1 (it was accepted from the cache)."""
    for _ in range(2):
        assert fastrms.minimize(quad, dquad, np.ones(3), tol=1, options={"maxiter": 2}).nit == 2
        with pytest.raises(TypeError, match="gtol must be a real number, got bool"):
            fastrms.minimize(quad, dquad, np.ones(3), tol=True, options={"maxiter": 2})
        with pytest.raises(TypeError, match="maxiter"):
            fastrms.minimize(quad, dquad, np.ones(3), options={"maxiter": True})
        # inside a tuple too, through minimize and the steppers (which share the configured methods)
        fastrms.minimize(quad, dquad, np.ones(3), method="adam", options={"betas": (0, 0.999), "maxiter": 2})
        with pytest.raises(TypeError, match="betas must be a real number, got bool"):
            fastrms.minimize(quad, dquad, np.ones(3), method="adam", options={"betas": (False, 0.999)})
        with pytest.raises(TypeError, match="betas must be a real number, got bool"):
            fastrms.Adam(np.ones(3), betas=(False, 0.999))


def test_x0_by_keyword_as_scipy_names_it():
    """scipy's minimize(fun, x0=..., jac=...) and fastrms's minimize(F, dF, x0=...) are the same
    call as the positional forms; x0 given twice or not at all is a TypeError that says so."""
    plain = fastrms.minimize(quad, dquad, np.zeros(3), options={"maxiter": 20})
    for res in (fastrms.minimize(quad, x0=np.zeros(3), jac=dquad, options={"maxiter": 20}),
                fastrms.minimize(quad, dquad, x0=np.zeros(3), options={"maxiter": 20}),
                fastrms.minimize(fun=quad, x0=np.zeros(3), jac=dquad, options={"maxiter": 20})):
        assert res.x.tobytes() == plain.x.tobytes() and res.nit == plain.nit == 20
    with pytest.raises(TypeError, match="x0 was given twice: as the third argument"):
        fastrms.minimize(quad, dquad, np.zeros(3), x0=np.zeros(3))
    with pytest.raises(TypeError, match="x0 was given twice: as the second argument"):
        fastrms.minimize(quad, np.zeros(3), x0=np.zeros(3), jac=dquad)
    for call in (lambda: fastrms.minimize(quad, jac=dquad), lambda: fastrms.minimize(quad, dquad)):
        with pytest.raises(TypeError, match="x0 is missing"):
            call()


def test_true_or_a_scheme_in_dfs_place():
    """minimize(F, True, x0) and minimize(F, '2-point', x0), as Minimizer(F, True) takes them: the
    same runs as jac=True and jac='2-point' (they were "pass args ... by keyword")."""
    def both(x):
        return quad(x), dquad(x)

    opts = {"maxiter": 20}
    for second, fun in ((True, both), ("2-point", quad)):
        res = fastrms.minimize(fun, second, np.zeros(3), options=opts)
        ref = fastrms.minimize(fun, x0=np.zeros(3), jac=second, options=opts)
        assert res.x.tobytes() == ref.x.tobytes() and res.nit == ref.nit == 20 and res.nfev == ref.nfev
    with pytest.raises(ValueError, match="unknown jac '2-pt'; did you mean '2-point'"):
        fastrms.minimize(quad, "2-pt", np.zeros(3))
    with pytest.raises(TypeError, match="given twice"):
        fastrms.minimize(both, True, np.zeros(3), jac=True)


def test_bad_gradients_and_objectives():
    with pytest.raises(ValueError, match=r"gradient has shape \(2,\), but x has shape \(3,\)"):
        fastrms.minimize(quad, lambda x: np.zeros(2), np.zeros(3))
    with pytest.raises(TypeError, match="gradient must hold real numbers"):
        fastrms.minimize(quad, lambda x: x.astype(complex), np.zeros(3))
    with pytest.raises(TypeError, match="gradient must hold real numbers"):
        fastrms.minimize(quad, lambda x: np.array(["a"] * 3), np.zeros(3))
    with pytest.raises(ValueError, match="objective must return a scalar"):
        fastrms.minimize(lambda x: x, dquad, np.zeros(3), options={"history": True})
    with pytest.raises(TypeError, match="objective must return a real scalar"):
        fastrms.minimize(lambda x: "f", dquad, np.zeros(3), options={"maxiter": 1})
    with pytest.raises(ValueError, match="need the gradient"):
        fastrms.minimize(quad, np.zeros(3))
    with pytest.raises(TypeError, match="pair"):
        fastrms.minimize(quad, np.zeros(3), jac=True)
    with pytest.raises(TypeError, match="given twice"):
        fastrms.minimize(quad, dquad, np.zeros(3), jac=dquad)
    with pytest.raises(ValueError, match="bounds"):
        scipy.optimize.minimize(quad, np.zeros(3), jac=dquad, method=fastrms.rmsprop, bounds=[(0, 1)] * 3)
    # a Hessian is not used, and says so, as scipy's first-order methods do (the run is unchanged)
    plain = scipy.optimize.minimize(quad, np.zeros(3), jac=dquad, method=fastrms.rmsprop)
    for kw in ({"hess": lambda x: 2 * np.eye(3)}, {"hessp": lambda x, p: 2 * p}):
        with pytest.warns(RuntimeWarning, match=f"does not use Hessian information \\({next(iter(kw))}\\)"):
            res = scipy.optimize.minimize(quad, np.zeros(3), jac=dquad, method=fastrms.rmsprop, **kw)
        assert res.x.tobytes() == plain.x.tobytes()


def test_scipys_second_order_and_constraint_arguments_get_clear_answers():
    """A call ported from scipy.optimize.minimize may pass hess, hessp, bounds or constraints:
    a Hessian is ignored with a warning, as by scipy's BFGS (the run is unchanged); bounds and
    constraints are refused by name (not a stray TypeError, and not ignored as BFGS ignores
    them); no constraints, however written, is none."""
    plain = fastrms.minimize(quad, dquad, np.zeros(3), method="adam")
    for kw in ({"hess": lambda x: 2 * np.eye(3)}, {"hessp": lambda x, p: 2 * p}):
        with pytest.warns(RuntimeWarning, match=r"minimize\(method='adam'\) does not use Hessian"):
            res = fastrms.minimize(quad, dquad, np.zeros(3), method="adam", **kw)
        assert res.x.tobytes() == plain.x.tobytes()
    for kw in ({"bounds": [(0, 1)] * 3}, {"constraints": {"type": "eq", "fun": lambda x: x[0]}},
               {"constraints": [{"type": "ineq", "fun": lambda x: x[1]}]},
               {"constraints": scipy.optimize.LinearConstraint(np.eye(3), 0, 1)}):
        with pytest.raises(ValueError, match="is unconstrained: it cannot honour bounds or constraints"):
            fastrms.minimize(quad, np.zeros(3), jac=dquad, **kw)
    for none in ((), [], {}, None):
        assert fastrms.minimize(quad, dquad, np.zeros(3), method="adam", constraints=none).x.tobytes() \
            == plain.x.tobytes()


def test_one_variable_problems_take_scipys_scalar_forms():
    """As in scipy: for a one-element x, F may return a one-element array and dF a scalar (or
    any one-element shape); the run is the one with the strict shapes, bit for bit."""
    opts = {"lr": 0.1, "maxiter": 50}
    strict = fastrms.minimize(lambda x: float((x[0] - 1) ** 2), lambda x: 2 * (x - 1), np.zeros(1),
                              options=opts)
    loose = [
        fastrms.minimize(lambda x: np.array([(x[0] - 1) ** 2]), lambda x: 2 * (x[0] - 1), np.zeros(1),
                         options=opts),
        fastrms.minimize(lambda x: ((x[0] - 1) ** 2, 2 * (x[0] - 1)), np.zeros(1), jac=True, options=opts),
        fastrms.minimize(lambda x: (x[0] - 1) ** 2, lambda x: np.full((1, 1), 2 * (x[0] - 1)), np.zeros(1),
                         options=opts),
        scipy.optimize.minimize(lambda x: np.array([[(x[0] - 1) ** 2]]), [0.0], jac=lambda x: 2 * (x[0] - 1),
                                method=fastrms.rmsprop, options=opts),
    ]
    for res in loose:
        assert res.x.shape == (1,) and res.jac.shape == (1,) and res.nit == strict.nit
        assert res.x.tobytes() == strict.x.tobytes() and res.fun == strict.fun
    scalar_x0 = fastrms.minimize(lambda x: (x - 1) ** 2, lambda x: np.array([2 * (x - 1)]), 0.0, options=opts)
    assert np.shape(scalar_x0.x) == () and float(scalar_x0.x) == strict.x[0]
    # more than one element: the shapes must agree (a (3, 1) gradient for x of shape (3,) is a bug)
    with pytest.raises(ValueError, match=r"gradient has shape \(3, 1\), but x has shape \(3,\)"):
        fastrms.minimize(quad, lambda x: dquad(x)[:, None], np.zeros(3))
    with pytest.raises(ValueError, match="objective must return a scalar"):
        fastrms.minimize(lambda x: np.array([quad(x), 0.0]), dquad, np.zeros(1), options={"maxiter": 1})


def test_nan_gradient_stops_before_stepping():
    calls = []

    def grad(x):
        calls.append(1)
        return dquad(x) if len(calls) < 4 else np.full(3, np.nan)

    res = fastrms.minimize(quad, grad, np.zeros(3), method="gd", options={"lr": 0.1})
    assert res.status == 3 and res.nit == 3 and np.all(np.isfinite(res.x))


def test_disp_prints_a_scipy_style_summary(capsys):
    fastrms.minimize(quad, dquad, np.zeros(2), method="gd", options={"lr": 0.1, "disp": True})
    out = capsys.readouterr().out
    assert "Optimization terminated successfully." in out and "Iterations:" in out
    assert "Gradient evaluations:" in out
