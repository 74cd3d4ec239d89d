"""minimize(..., options={'in_place': True}): one buffer for x, and the same results as a checked run."""

import tracemalloc

import numpy as np
import pytest
from numba import njit

import fastrms
from fastrms import _minimize
from fastrms._minimize import RERUN_NOTE

# (the diverging runs overflow in F and dF on purpose)
pytestmark = pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning",
                                        "ignore:invalid value:RuntimeWarning")

N = 6
A = np.random.default_rng(5).normal(size=(N, N)) + N * np.eye(N)


def F(X, A):
    R = A @ X - np.eye(A.shape[0])
    return 0.5 * np.sum(R * R)


def dF(X, A):
    return A.T @ (A @ X - np.eye(A.shape[0]))


FUNCTIONS = {"python": (F, dF), "compiled": (njit(cache=True)(F), njit(cache=True)(dF))}
# gradient descent on AX = I: converges with a small lr, stops at maxiter, and with a large lr grows
# until an update overflows (after dozens of steps, so the repeated run has work to do)
CASES = {"converged": (0.004, 1e-6, 5000), "maxiter": (0.004, 0.0, 50), "diverged": (0.05, 1e-6, 5000)}


@pytest.mark.parametrize("driver", ["python", "compiled"])
@pytest.mark.parametrize("case", list(CASES))
def test_in_place_ends_where_the_checked_run_ends_bit_for_bit(driver, case):
    lr, gtol, maxiter = CASES[case]
    f, df = FUNCTIONS[driver]
    runs = [fastrms.minimize(f, df, np.zeros((N, N)), args=(A,), method="gd",
                             options={"lr": lr, "gtol": gtol, "maxiter": maxiter, "driver": driver,
                                      "in_place": in_place}) for in_place in (False, True)]
    checked, in_place = runs
    assert checked.status == {"converged": 0, "maxiter": 1, "diverged": 3}[case]
    if case == "diverged":
        assert checked.nit > 10 and np.all(np.isfinite(checked.x))
    assert in_place.x.tobytes() == checked.x.tobytes()
    assert (in_place.status, in_place.nit, in_place.fun) == (checked.status, checked.nit, checked.fun)
    assert in_place.jac.tobytes() == checked.jac.tobytes()
    if case == "diverged":  # the in-place run lost x_k and repeated the run: said, and counted
        assert in_place.message == f"{checked.message} {RERUN_NOTE}"
        assert in_place.njev == 2 * checked.njev
    else:
        assert (in_place.message, in_place.njev) == (checked.message, checked.njev)


def test_in_place_keeps_one_buffer_fewer():
    n = 10_000  # (gradient descent's serial kernels: compiled by the tests above)
    x0 = np.zeros(n)
    peaks = {}
    for in_place in (False, True):
        def run():
            return fastrms.minimize(lambda x: float(np.sum((x - 1) ** 2)), lambda x: 2 * (x - 1), x0,
                                    method="gd", options={"maxiter": 3, "gtol": 0, "in_place": in_place})
        run()  # compiled and warm
        tracemalloc.start()
        res = run()
        peaks[in_place] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert res.status == 1 and np.all(x0 == 0)
    assert peaks[False] - peaks[True] >= 0.95 * x0.nbytes


def test_in_place_with_mini_batches_repeats_the_same_batches(monkeypatch):
    rng = np.random.default_rng(0)
    M = rng.normal(size=(64, 4))
    y = M @ np.arange(4.0)

    def loss(w, M, y):
        return float(np.mean((M @ w - y) ** 2))

    def grad(w, M, y):
        return 2 * M.T @ (M @ w - y) / len(y)

    opts = {"lr": 3.0, "batch_size": 8, "epochs": 60, "seed": 3}
    checked = fastrms.minimize(loss, grad, np.zeros(4), args=(M, y), method="gd", options=opts)
    again = fastrms.minimize(loss, grad, np.zeros(4), args=(M, y), method="gd",
                             options={**opts, "in_place": True})
    assert checked.status == 3 and again.x.tobytes() == checked.x.tobytes() and again.nit == checked.nit
    # no seed: the repeat must still see the first run's batches, so fastrms draws one for both
    monkeypatch.setattr(_minimize, "_draw_seed", lambda: opts["seed"])
    unseeded = fastrms.minimize(loss, grad, np.zeros(4), args=(M, y), method="gd",
                                options={**opts, "seed": None, "in_place": True})
    assert unseeded.x.tobytes() == checked.x.tobytes() and RERUN_NOTE in unseeded.message


@pytest.mark.parametrize("options, callback, error, words", [
    ({"check_every": 2}, None, ValueError, "check_every"),
    ({"batched": True}, None, ValueError, "batched"),
    ({}, lambda res: None, ValueError, "callback"),
    ({"in_place": "yes"}, None, TypeError, "in_place must be True or False"),
])
def test_in_place_refuses_what_it_cannot_keep(options, callback, error, words):
    x0 = np.zeros((2, 3))
    with pytest.raises(error, match=words):
        fastrms.minimize(lambda x: np.sum(x * x, axis=-1), lambda x: 2 * x, x0, callback=callback,
                         options={"in_place": True, **options})


@njit(cache=True)
def dF_raising(X, A):  # the type signature of FUNCTIONS["compiled"]: the same compiled in-place loop
    if X[0, 0] > 0.01:
        raise ValueError("boom: X[0, 0] passed 0.01")
    return A.T @ (A @ X - np.eye(A.shape[0]))


def test_a_gradient_that_keeps_x_in_place():
    # dF keeps every x it is given: the loop moves to a fresh buffer each time, and in place that
    # buffer must then be the one stepped (it went on stepping the kept one, a step behind)
    kept = []

    def dF_keeping(X, A):
        kept.append(X)
        return dF(X, A)

    runs = {}
    for in_place in (False, True):
        kept.clear()
        opts = {"lr": 0.004, "maxiter": 20, "gtol": 0, "in_place": in_place}
        runs[in_place] = fastrms.minimize(F, dF_keeping, np.zeros((N, N)), args=(A,), method="gd",
                                          options=opts)
        assert len({k.tobytes() for k in kept}) == 21  # 21 different iterates, each left as dF saw it
    assert runs[True].x.tobytes() == runs[False].x.tobytes()
    assert runs[True].fun == runs[False].fun and runs[True].nit == runs[False].nit == 20


@pytest.mark.parametrize("driver", ["python", "compiled"])
def test_an_exception_in_the_gradient_reaches_the_user(driver):
    f = FUNCTIONS[driver][0]
    with pytest.raises(ValueError, match=r"boom: X\[0, 0\] passed 0.01"):
        fastrms.minimize(f, dF_raising, np.zeros((N, N)), args=(A,), method="gd",
                         options={"lr": 0.004, "maxiter": 5000, "driver": driver, "in_place": True})


@pytest.mark.parametrize("driver", ["python", "compiled"])
def test_in_place_runs_from_threads_agree_with_serial_runs(driver, threads_agree):
    f, df = FUNCTIONS[driver]

    def solve(case):  # converged, maxiter, and a diverged run that is repeated
        lr, gtol, maxiter = CASES[case]
        return fastrms.minimize(f, df, np.zeros((N, N)), args=(A,), method="gd",
                                options={"lr": lr, "gtol": gtol, "maxiter": maxiter, "driver": driver,
                                         "in_place": True}).x

    threads_agree(solve, list(CASES))
