"""fastrms.Minimizer: minimize prepared once and called many times, equal to minimize call by call."""

import numpy as np
import pytest
from numba import njit
from test_compiled import F, FdF, dF

import fastrms
from fastrms import _minimize
from fastrms import experiments as ex
from fastrms.datasets import airfoil

OPTS = {"lr": 1e-2, "gamma": 0.9, "maxiter": 60, "gtol": 0}


def rand_A(seed: int, n: int = 5):
    rng = np.random.default_rng(seed)
    return np.eye(n) + rng.standard_normal((n, n)) / (2 * np.sqrt(n))


def same(a, b):
    """Two OptimizeResults equal bit for bit, history and trajectory included."""
    assert set(a) == set(b)
    for k in a:
        if k == "history":
            assert set(a.history) == set(b.history)
            for h in a.history:
                np.testing.assert_array_equal(a.history[h], b.history[h])
        elif isinstance(b[k], np.ndarray):
            assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
            assert a[k].tobytes() == b[k].tobytes(), k
        else:
            assert a[k] == b[k], k


@pytest.fixture
def spy(monkeypatch):
    """Counts the front's driver choices (a Minimizer's planned call makes none)."""
    calls = []
    choose = _minimize._choose_driver

    def counting(*a, **kw):
        calls.append(1)
        return choose(*a, **kw)

    monkeypatch.setattr(_minimize, "_choose_driver", counting)
    return calls


@pytest.mark.parametrize("fun,jac,driver", [(F, dF, "compiled"), (FdF, True, "compiled"),
                                            (ex.ax_loss, ex.ax_grad, "python")])
def test_each_call_equals_minimize_and_the_first_one_plans_the_rest(fun, jac, driver, spy):
    solve = fastrms.Minimizer(fun, jac, options={**OPTS, "history": True})
    results = []
    for seed in range(4):
        A = rand_A(seed)
        x0 = np.full((5, 5), 0.1 * seed)
        results.append(solve(x0, args=(A,)))
        assert len(spy) == (seed == 0)  # the first call chose the driver; the others reused its plan
        same(results[-1], fastrms.minimize(fun, x0, jac=jac, args=(A,), options={**OPTS, "history": True,
                                                                                 "driver": driver}))
        assert x0.tobytes() == np.full((5, 5), 0.1 * seed).tobytes()  # never mutated
        spy.clear()
    assert len({id(r.x) for r in results}) == 4  # each result owns its x
    assert not np.array_equal(results[0].x, results[1].x)


def quad_py(x, c, w):
    return w * np.sum((x - c) ** 2)


def dquad_py(x, c, w):
    return 2.0 * w * (x - c)


def test_a_new_shape_dtype_or_argument_type_is_planned_anew(spy):
    """(The plan's key is the front's, whichever loop runs: Python F and dF spare the suite compiling
    a driver for each type.)"""
    solve = fastrms.Minimizer(quad_py, dquad_py, options=OPTS)
    cases = [(np.zeros(3), (np.ones(3), 2.0)),
             (np.zeros(3, np.float32), (np.ones(3, np.float32), 2.0)),  # x0's dtype
             (np.zeros(4), (np.ones(4), 2.0)),                          # x0's shape
             (np.zeros(3), (np.ones(3), 2)),                            # an argument's type
             (np.zeros(3), (np.ones(3), 2.0))]                          # the first again: its plan
    chose = []
    for x0, args in cases:
        before = len(spy)
        res = solve(x0, args)
        chose.append(len(spy) - before)
        same(res, fastrms.minimize(solve.fun, solve.jac, x0, args=args, options=OPTS))
    assert chose == [1, 1, 1, 1, 0]


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
def test_divergence_in_place_and_trajectory_as_minimize():
    A = rand_A(1)
    diverge = {"lr": 1e10, "maxiter": 60}  # gradient descent: x grows 1e10-fold a step, then overflows
    # (the diverging runs through the Python loop: a compiled gd driver each would cost the suite seconds)
    for (fun, jac), method, opts, status in (
            ((ex.ax_loss, ex.ax_grad), "gd", diverge, 3),  # the last finite x
            ((ex.ax_loss, ex.ax_grad), "gd", {**diverge, "in_place": True}, 3),  # the checked rerun from x0
            ((F, dF), "rmsprop", {**OPTS, "trajectory": True, "maxiter": 7}, 1),
            ((F, dF), "rmsprop", {**OPTS, "lr": 1e-3, "gtol": 1e-2, "maxiter": 100_000}, 0)):
        solve = fastrms.Minimizer(fun, jac, args=(A,), method=method, options=opts)
        for scale in (1.0, 2.0):
            x0 = np.full((5, 5), scale)
            res = solve(x0)
            same(res, fastrms.minimize(fun, jac, x0, args=(A,), method=method, options=opts))
            assert res.status == status, (opts, res.message)
            assert ("repeated from x0" in res.message) == opts.get("in_place", False)


def test_what_it_does_not_plan_still_runs_as_minimize(spy):
    """Mini-batches, batched problems and a callback: every call goes the whole way, and is right."""
    X, y = airfoil(n=200)
    x0 = np.zeros(X.shape[1] + 1, np.float32)
    opts = {"lr": 0.05, "batch_size": 20, "epochs": 2, "seed": 3}
    solve = fastrms.Minimizer(ex.linreg_loss, ex.linreg_grad, args=(X, y), options=opts)
    for _ in range(2):
        same(solve(x0), fastrms.minimize(ex.linreg_loss, ex.linreg_grad, x0, args=(X, y), options=opts))
    assert len(spy) == 4

    def Fb(X):
        return 0.5 * np.sum(X ** 2, axis=1)

    def dFb(X):
        return X

    batched = fastrms.Minimizer(Fb, dFb, options={"batched": True, "lr": np.array([0.1, 0.2]), "maxiter": 20})
    same(batched(np.ones((2, 3))), fastrms.minimize(Fb, dFb, np.ones((2, 3)),
                                                  options={"batched": True, "lr": np.array([0.1, 0.2]),
                                                           "maxiter": 20}))

    def stop(intermediate_result):
        if intermediate_result.nit == 5:
            raise StopIteration

    with_callback = fastrms.Minimizer(ex.ax_loss, ex.ax_grad, args=(rand_A(0),), callback=stop, options=OPTS)
    for _ in range(2):
        r = with_callback(np.zeros((5, 5)))
        assert r.status == 99 and r.nit == 5
        same(r, fastrms.minimize(ex.ax_loss, ex.ax_grad, np.zeros((5, 5)), args=(rand_A(0),), callback=stop,
                                 options=OPTS))


def test_bad_input_is_refused_when_given():
    with pytest.raises(ValueError, match="unknown option .* 'gama'"):
        fastrms.Minimizer(F, dF, options={"gama": 0.9})
    with pytest.raises(ValueError, match="lr"):
        fastrms.Minimizer(F, dF, options={"lr": -1.0})
    with pytest.raises(ValueError, match="need the gradient"):
        fastrms.Minimizer(F, None)
    with pytest.raises(TypeError, match="fun must be callable"):
        fastrms.Minimizer(3, dF)
    with pytest.raises(ValueError, match="method"):
        fastrms.Minimizer(F, dF, method="bfgs")
    solve = fastrms.Minimizer(F, dF, args=(np.eye(5),), options=OPTS)
    solve(np.zeros((5, 5)))  # planned
    with pytest.raises(ValueError, match="NaN or inf"):  # a planned call still checks x0's values
        solve(np.full((5, 5), np.nan))


def test_what_it_was_made_with_stays():
    opts = dict(OPTS)
    solve = fastrms.Minimizer(F, dF, args=(np.eye(5),), options=opts)
    before = solve(np.ones((5, 5)))
    opts["lr"] = 1e-6  # the caller's dict is theirs: the Minimizer kept a copy
    same(solve(np.ones((5, 5))), before)
    with pytest.raises(TypeError):
        solve.options["lr"] = 1e-6
    for name in ("fun", "jac", "args", "method", "options"):
        with pytest.raises(AttributeError, match="make a new Minimizer"):
            setattr(solve, name, None)
    same(solve(np.ones((5, 5))), before)
    assert dict(solve.options) == OPTS


@njit(cache=True)
def raising_dF(x, A):
    if x[0, 0] > 1.5:
        raise ValueError("dF refuses x[0, 0] > 1.5")
    return dF(x, A)


def test_an_error_in_dF_reaches_the_caller_on_a_planned_call():
    solve = fastrms.Minimizer(F, raising_dF, args=(np.eye(5),), options=OPTS)
    assert solve(np.zeros((5, 5))).nit == OPTS["maxiter"]
    with pytest.raises(ValueError, match="refuses"):
        solve(np.full((5, 5), 2.0))
    assert solve(np.zeros((5, 5))).nit == OPTS["maxiter"]


def test_one_minimizer_from_many_threads(threads_agree):
    solve = fastrms.Minimizer(F, dF, options=OPTS)
    solve(np.zeros((5, 5)), args=(rand_A(0),))
    threads_agree(lambda seed: solve(np.zeros((5, 5)), args=(rand_A(seed),)).x, list(range(6)))


def test_exported_with_a_readable_repr():
    solve = fastrms.Minimizer(F, dF, method=fastrms.adam, options={"lr": 0.1})
    assert "Minimizer" in fastrms.__all__
    assert repr(solve) == "Minimizer('F', method='adam', options={'lr': 0.1})"


def test_a_minimizer_goes_to_another_process():
    """Pickled (multiprocessing, Dask workers) without its plans: the other process makes its own."""
    import multiprocessing
    import pickle

    solve = fastrms.Minimizer(F, dF, args=(rand_A(2),), options=OPTS)
    first = solve(np.zeros((5, 5)))
    again = pickle.loads(pickle.dumps(solve))
    assert again._plans == {} and again.options == solve.options
    assert again.args[0].tobytes() == solve.args[0].tobytes()
    same(again(np.zeros((5, 5))), first)
    # spawn, not fork: another test in this worker may have started JAX's or TensorFlow's threads,
    # which a forked child can deadlock on
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        same(pool.apply(solve, (np.zeros((5, 5)),)), first)
