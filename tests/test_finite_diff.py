"""jac='2-point', '3-point' and 'cs': gradients by finite differences of F, as scipy.optimize takes them."""

import numpy as np
import pytest
import scipy.optimize
from scipy.optimize._numdiff import approx_derivative  # (the tests' yardstick: scipy's own differences)

import fastrms
from fastrms.drivers.finite_diff import FiniteDifferences

C = np.array([[0.5, -1.0, 0.25], [2.0, 0.0, -0.75]])


def F(X):  # a quartic in a (2, 3) matrix; analytic in X, so the complex step applies
    return np.sum(X ** 4 / 4 - X ** 2 / 2 + C * X)


def dF(X):
    return X ** 3 - X + C


def F_rows(X):  # B such problems, one per row of X (B, 2, 3)
    return np.sum(X ** 4 / 4 - X ** 2 / 2 + C * X, axis=(1, 2))


def dF_rows(X):
    return X ** 3 - X + C


SCHEMES = ["2-point", "3-point", "cs"]
X = np.array([[0.3, -1.7, 0.0], [12.5, -0.0, 1e-9]])  # zeros, negatives, |x| > 1: every branch of the step


@pytest.mark.parametrize("rel_step", [None, 1e-4])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_the_gradient_is_scipys_approx_derivative_bit_for_bit(scheme, rel_step):
    fd = FiniteDifferences(F, scheme, rel_step)
    theirs = approx_derivative(lambda x: F(x.reshape(X.shape)), X.ravel(), method=scheme, rel_step=rel_step)
    mine = fd.gradient(X)
    assert mine.shape == X.shape and mine.tobytes() == theirs.reshape(X.shape).tobytes()
    assert fd.calls == {"2-point": 7, "3-point": 12, "cs": 6}[scheme]  # n + 1, 2n, n (n = 6)


@pytest.mark.parametrize("scheme,tol", [("2-point", 1e-5), ("3-point", 1e-8), ("cs", 1e-13)])
def test_minimize_follows_the_run_with_the_gradient_and_counts_every_evaluation(scheme, tol):
    opts = {"lr": 0.05, "maxiter": 60, "gtol": 0}
    exact = fastrms.minimize(F, dF, np.ones((2, 3)), method="momentum", options=opts)
    res = fastrms.minimize(F, np.ones((2, 3)), jac=scheme, method="momentum", options=opts)
    np.testing.assert_allclose(res.x, exact.x, rtol=tol, atol=tol)
    np.testing.assert_allclose(res.jac, exact.jac, rtol=tol, atol=tol)
    assert res.nit == 60 and res.njev == 61  # a gradient at x_0 … x_60
    # F at x itself comes with each 2-point gradient, so the final loss costs nothing there
    assert res.nfev == {"2-point": 61 * 7, "3-point": 61 * 12 + 1, "cs": 61 * 6 + 1}[scheme]
    assert res.fun == pytest.approx(exact.fun, rel=1e-6)


def test_the_loss_where_the_gradient_was_taken_is_not_evaluated_again():
    """history asks for F at every iterate: with '2-point' it is the F(x) the gradient took."""
    res = fastrms.minimize(F, np.ones((2, 3)), jac="2-point", method="gd",
                           options={"lr": 0.05, "maxiter": 30, "gtol": 0, "history": True})
    assert len(res.history["loss"]) == 31 and res.nfev == 31 * 7
    assert res.history["loss"][-1] == res.fun == F(res.x)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_batched_problems_move_each_coordinate_together_and_equal_separate_runs(scheme):
    B, opts = 3, {"lr": 0.05, "maxiter": 40, "gtol": 0}
    X0 = np.stack([np.ones((2, 3)), -np.ones((2, 3)), np.full((2, 3), 0.5)])
    res = fastrms.minimize(F_rows, X0, jac=scheme, method="rmsprop", options={**opts, "batched": True})
    for b in range(B):
        alone = fastrms.minimize(F, X0[b], jac=scheme, method="rmsprop", options=opts)
        np.testing.assert_allclose(res.x[b], alone.x, rtol=1e-13, atol=1e-15)
    # one F of all B problems per coordinate: the evaluations of one problem's run, not B times them
    assert res.nfev == {"2-point": 41 * 7, "3-point": 41 * 12 + 1, "cs": 41 * 6 + 1}[scheme]


def test_float32_moves_in_float32_and_f_never_sees_its_x_change():
    seen = []

    def F_keeps(x):
        seen.append((x, x.copy()))
        assert x.dtype == np.float32
        return float(np.sum((x - 2.0) ** 2))

    res = fastrms.minimize(F_keeps, np.zeros(3, np.float32), jac="3-point", method="gd",
                           options={"lr": 0.1, "maxiter": 40, "gtol": 0})
    assert res.x.dtype == np.float32
    np.testing.assert_allclose(res.x, 2.0, rtol=1e-3)
    assert all(np.array_equal(kept, copy) for kept, copy in seen)  # each x its own, unchanged


def test_finite_differences_with_mini_batches_follow_the_gradient_run():
    rng = np.random.default_rng(3)
    A, y = rng.normal(size=(40, 3)), rng.normal(size=40)

    def loss(w, A, y):
        return np.mean((A @ w - y) ** 2)

    def grad(w, A, y):
        return 2 * A.T @ (A @ w - y) / len(y)

    opts = {"lr": 0.01, "batch_size": 8, "epochs": 3, "seed": 5, "history": True}
    exact = fastrms.minimize(loss, grad, np.zeros(3), args=(A, y), options=opts)
    res = fastrms.minimize(loss, np.zeros(3), args=(A, y), jac="cs", options=opts)
    np.testing.assert_allclose(res.x, exact.x, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(res.history["loss"], exact.history["loss"], rtol=1e-12)


def test_a_minimizer_takes_a_scheme():
    solve = fastrms.Minimizer(F, "3-point", method="adam", options={"maxiter": 25, "gtol": 0})
    first, again = solve(np.ones((2, 3))), solve(np.ones((2, 3)))
    direct = fastrms.minimize(F, np.ones((2, 3)), jac="3-point", method="adam",
                              options={"maxiter": 25, "gtol": 0})
    assert first.x.tobytes() == again.x.tobytes() == direct.x.tobytes()
    assert first.nfev == again.nfev == direct.nfev == 26 * 12 + 1


@pytest.mark.parametrize("call,exc,match", [
    (lambda: fastrms.minimize(F, np.ones(3), jac="2point"), ValueError, "did you mean '2-point'"),
    (lambda: fastrms.minimize(F, np.ones(3), jac="2-point", options={"finite_diff_rel_step": -1e-3}),
     ValueError, "finite_diff_rel_step must be in"),
    # (an infinite step made every gradient NaN, reported as a diverged run: "lower lr?")
    (lambda: fastrms.minimize(F, np.ones(3), jac="2-point", options={"finite_diff_rel_step": np.inf}),
     ValueError, r"finite_diff_rel_step must be in \(0, inf\), got inf"),
    (lambda: fastrms.minimize(F, dF, np.ones(3), options={"finite_diff_rel_step": 1e-3}),
     ValueError, "with a gradient function it would do nothing"),
    (lambda: fastrms.Minimizer(F, dF, options={"finite_diff_rel_step": 1e-3}),
     ValueError, "with a gradient function it would do nothing"),
    (lambda: fastrms.minimize(lambda x: float(np.abs(x).sum()), np.ones(3), jac="cs"),
     TypeError, "needs an F that computes in complex arithmetic"),
    (lambda: fastrms.minimize(F, np.ones((2, 3)), jac="2-point", options={"driver": "compiled"}),
     ValueError, "finite-difference gradients"),
    (lambda: fastrms.minimize(lambda x: x, np.ones(3), jac="2-point"), ValueError, "must return a scalar"),
    (lambda: fastrms.minimize(F, np.ones((2, 3))), ValueError, "or jac='2-point' for finite differences"),
    # scipy hands a custom method jac=None for jac='2-point' too: the message says what works
    (lambda: scipy.optimize.minimize(lambda x: F(x.reshape(2, 3)), np.ones(6), method=fastrms.rmsprop,
                                     jac="2-point"),
     ValueError, r"call fastrms.minimize\(F, x0, jac='2-point', method='rmsprop'\)"),
])
def test_bad_finite_difference_requests(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_dask_data_is_refused_with_a_reason():
    da = pytest.importorskip("dask.array")
    A = da.ones((8, 3), chunks=4)
    with pytest.raises(ValueError, match="each a pass over the dask data: pass the gradient dF"):
        fastrms.minimize(lambda w, A: float((A @ w).sum()), np.zeros(3), args=(A,), jac="2-point")
