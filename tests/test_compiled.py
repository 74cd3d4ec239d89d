"""The compiled whole-loop driver: same results as the Python loop, cached across processes."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import SUITE_CACHE
from numba import njit
from reference import SEED_AX_FINAL

import fastrms
from fastrms import experiments as ex
from fastrms import schedules


@njit(cache=True)
def F(x, A):
    R = A @ x
    s = 0.0
    for i in range(R.shape[0]):
        for j in range(R.shape[1]):
            r = R[i, j] - (1.0 if i == j else 0.0)
            s += r * r
    return s


@njit(cache=True)
def dF(x, A):
    R = A @ x
    for i in range(R.shape[0]):
        R[i, i] -= 1.0
    return 2.0 * (A.T @ R)


@njit(cache=True)
def FdF(x, A):
    return F(x, A), dF(x, A)


@njit(cache=True)
def quad(x, c, w):
    return w * np.sum((x - c) ** 2)


@njit(cache=True)
def dquad(x, c, w):
    return 2.0 * w * (x - c)


def both(fun, jac, x0, **kw):
    opts = kw.pop("options")
    r_c = fastrms.minimize(fun, x0, jac=jac, options={**opts, "driver": "compiled"}, **kw)
    r_p = fastrms.minimize(fun, x0, jac=jac, options={**opts, "driver": "python"}, **kw)
    return r_c, r_p


def same(r_c, r_p):
    assert r_c.x.tobytes() == r_p.x.tobytes() and r_c.jac.tobytes() == r_p.jac.tobytes()
    for k in ("fun", "nit", "nfev", "njev", "status", "success", "message"):
        assert r_c[k] == r_p[k], k
    if "history" in r_p:
        for k in ("loss", "gnorm"):
            np.testing.assert_array_equal(r_c.history[k], r_p.history[k])
    if "trajectory" in r_p:
        np.testing.assert_array_equal(r_c.trajectory, r_p.trajectory)


# float32 for the richest run only: each (method, dtype) is a compiled loop of its own (seconds of the suite)
@pytest.mark.parametrize("name,dtype", [(name, np.float64) for name in ex.AX_RUNS]
                         + [("rmsprop+momentum", np.float32)])
def test_compiled_equals_python_loop_on_ax_identity(name, dtype):
    method, opts = ex.AX_RUNS[name]
    r_c, r_p = both(F, dF, np.zeros((5, 5), dtype), args=(ex.A_SEED.astype(dtype),), method=method,
                    options={"lr": 1e-3, "maxiter": 300, "gtol": 0, "history": True, "trajectory": True,
                             **opts})
    same(r_c, r_p)
    assert r_c.x.dtype == dtype
    if dtype == np.float64:
        ref, tol = SEED_AX_FINAL[name]
        assert r_c.fun == pytest.approx(ref, abs=tol)


def test_compiled_fun_returning_f_and_g():
    r_c, r_p = both(FdF, True, np.zeros((5, 5)), args=(ex.A_SEED,),
                    options={"maxiter": 50, "momentum": 0.9, "centered": True})
    same(r_c, r_p)


@njit(cache=True)
def quad_and_grad(x, c, w):
    return quad(x, c, w), dquad(x, c, w)


def test_history_every_holds_when_the_loss_comes_with_every_gradient():
    # jac=True: F comes with every gradient, and the history is still taken every 3rd step
    r_c, r_p = both(quad_and_grad, True, np.zeros(3), args=(np.ones(3), 1.0), method="gd",
                    options={"lr": 0.25, "gtol": 1e-3, "history": True, "history_every": 3})
    same(r_c, r_p)
    np.testing.assert_array_equal(r_p.history["step"], [0, 3, 6, 9])
    assert r_p.nit == 11 and r_p.fun == quad(r_p.x, np.ones(3), 1.0)


@pytest.mark.parametrize("every", [2, 3])
def test_a_run_ending_between_recorded_losses_reports_its_final_loss(every):
    # converges at k = 11, between two recorded losses: fun is F at the final x, never a stale NaN
    r_c, r_p = both(quad, dquad, np.zeros(3), args=(np.ones(3), 1.0), method="gd",
                    options={"lr": 0.25, "gtol": 1e-3, "history": True, "history_every": every})
    same(r_c, r_p)
    assert r_c.success and r_c.nit == 11 and r_c.nit % every
    assert r_c.fun == quad(r_c.x, np.ones(3), 1.0) and r_c.nfev == 11 // every + 2


@pytest.mark.parametrize("method,opts", [
    ("adam", {"amsgrad": True, "lr": schedules.cosine(0.1, 100, warmup=5)}),
    ("rmsprop", {"lr": schedules.cosine(0.1, 100, warmup=8, warmup_from=0.0), "gamma": {
        "schedule": "constant", "value": 0.9, "warmup": 4, "warmup_from": 0.5}}),
    ("rmsprop", {"gamma": schedules.step(0.9, 0.95, 10), "bias_correction": False, "clip_norm": 0.5}),
    ("momentum", {"nesterov": True, "lr": schedules.exponential(0.05, 0.5, 50)}),
    ("momentum", {"momentum": schedules.cosine(0.8, 50, warmup=5, warmup_from=0.2)}),  # a schedule row
    ("adadelta", {"weight_decay": 0.01}),
    ("adagrad", {"lr_decay": 0.01, "lr": 0.5}),
    # the Adam relatives' coefficient functions in Numba and in Python: NAdam's product of momenta past
    # t = 64 (its series), RAdam's two phases, Adamax, AdaBelief rectified
    ("nadam", {"beta1": 0.99, "momentum_decay": 1.0, "lr": 0.05}),
    ("radam", {"lr": 0.05, "decoupled_weight_decay": True, "weight_decay": 0.01}),
    ("adamax", {"eps_in_max": False, "lr": 0.05}),
    ("adabelief", {"rectify": True, "epsilon_hat": True, "lr": 0.05}),
])
def test_compiled_equals_python_with_schedules_and_scalar_args(method, opts):
    c = np.linspace(-1, 1, 7)
    r_c, r_p = both(quad, dquad, np.zeros(7), args=(c, 0.5), method=method,
                    options={**opts, "maxiter": 200, "history": True})
    same(r_c, r_p)


def test_repeated_calls_with_one_F_and_dF_find_the_right_driver():
    """The front remembers each call's compiled loop by F, dF and what decides the loop (the
    method's flags, dtypes, argument types, in place or not): calls in a row with the same F and
    dF and something else changed each get their own, equal to the Python loop."""
    c = np.linspace(-1, 1, 5)
    for x0, args, method, opts in [
            (np.zeros(5), (c, 0.5), "rmsprop", {}),
            (np.zeros(5), (c, 0.5), "rmsprop", {"momentum": 0.5}),   # another state row
            (np.zeros(5), (c, 0.5), "rmsprop", {"in_place": True}),  # one buffer
            (np.zeros(5, np.float32), (c, 0.5), "rmsprop", {}),      # x's dtype
            (np.zeros(5), (c.astype(np.float32), 0.5), "rmsprop", {}),  # an argument's type
            (np.zeros(5), (c, 0.5), "gd", {}),                       # another method
            (np.zeros(5), (c, 0.5), "rmsprop", {})]:                 # the first again
        same(*both(quad, dquad, x0, args=args, method=method, options={**opts, "maxiter": 30, "lr": 0.05}))


@njit(cache=True)
def quad_items(x, c):
    s = 0.0
    for i in range(x.size):
        s += (x[i] - c[i]) ** 2
    return s


@njit(cache=True)
def dquad_items(x, c):
    g = np.empty_like(x)
    for i in range(x.size):
        g[i] = 2.0 * (x[i] - c[i])
    return g


@pytest.mark.filterwarnings("ignore::numba.core.errors.NumbaPendingDeprecationWarning")  # (reflected lists)
def test_lists_of_other_item_types_get_their_own_driver():
    """A list's Numba type depends on its items: a list of ints after a list of floats (same F and
    dF) ran the floats' driver and failed with Numba's "No matching definition"."""
    for c in ([1.0, 2.0, 3.0], [1, 2, 3], [1.0, 2.0, 3.0]):
        same(*both(quad_items, dquad_items, np.zeros(3), args=(c,), options={"lr": 0.1, "maxiter": 40}))


def test_a_run_in_chunks_equals_the_run_in_one_call(monkeypatch):
    """A small run is one call of the loop, without the chunks' bookkeeping; the same run cut into
    chunks (as a long one is, so that Ctrl-C is heard) takes the same steps, bit for bit."""
    from fastrms.drivers import compiled

    paused = []
    done = compiled.Chunks.done
    monkeypatch.setattr(compiled.Chunks, "done", lambda self, *a: (paused.append(a[2]), done(self, *a))[1])
    A, opts = ex.A_SEED, {"lr": 1e-2, "maxiter": 50, "gtol": 0, "driver": "compiled"}
    one = fastrms.minimize(F, dF, np.zeros((5, 5)), args=(A,), options=opts)
    assert paused == []  # one call, no chunks
    monkeypatch.setattr(compiled, "MAX_FIRST_CHUNK", 4)
    chunked = fastrms.minimize(F, dF, np.zeros((5, 5)), args=(A,), options=opts)
    assert paused[0] and not paused[-1] and len(paused) >= 2  # paused at step 4, then went on
    same(chunked, one)


def test_converged_and_diverged_runs_match():
    c = np.arange(3.0)
    same(*both(quad, dquad, np.zeros(3), args=(c, 1.0), method="gd", options={"lr": 0.1, "gtol": 1e-9}))
    r_c, r_p = both(quad, dquad, np.ones(3), args=(c, 1.0), method="rmsprop",
                    options={"lr": 0.4, "gamma": 1.0, "maxiter": 100000})
    same(r_c, r_p)
    assert r_c.status == 3 and np.all(np.isfinite(r_c.x))


def test_auto_picks_compiled_only_when_it_can():
    from fastrms.drivers import compiled

    c = np.zeros(3)

    @njit
    def fresh(x, c, w):
        return 2.0 * w * (x - c)

    fastrms.minimize(quad, fresh, np.ones(3), args=(c, 2.0), options={"maxiter": 5})
    assert any(key[1] is fresh for key in compiled._signatures)  # auto took the compiled path
    fastrms.minimize(quad, fresh, np.ones(3), args=(c, 2.0), callback=lambda x: None)  # Python loop
    with pytest.raises(ValueError, match="callback"):
        fastrms.minimize(quad, dquad, np.ones(3), args=(c, 2.0), callback=lambda x: None,
                         options={"driver": "compiled"})
    with pytest.raises(ValueError, match="Python callable"):
        fastrms.minimize(quad, dquad, np.ones(3), args=(c, 2.0),
                         options={"driver": "compiled", "lr": lambda t: 0.1})
    with pytest.raises(ValueError, match="numba.njit"):
        fastrms.minimize(lambda x: 0.0, dquad, np.ones(3), options={"driver": "compiled"})
    # a Python-callable lr still works through the Python loop
    res = fastrms.minimize(quad, dquad, np.ones(3), args=(c, 2.0), method="gd",
                           options={"lr": lambda t: 0.1 * 0.999 ** t, "gtol": 1e-6, "maxiter": 10000})
    assert res.success


def test_compiled_bad_gradient_shape_is_a_clear_error():
    @njit
    def bad(x, c, w):
        return np.zeros(x.size + 1)

    with pytest.raises(ValueError, match="shape"):
        fastrms.minimize(quad, bad, np.ones(3), args=(np.zeros(3), 1.0), options={"driver": "compiled"})


@njit(cache=True)
def _f_bool(x, c, w):
    return True


@njit(cache=True)
def _f_pair(x, c, w):
    return (1.0, 2.0)


@njit(cache=True)
def _f_one_element(x, c, w):
    return np.full(1, quad(x, c, w))


def test_what_compiled_code_cannot_take_is_named():
    """driver='compiled' says what F returned or which argument cannot be compiled, not the first
    line of a Numba traceback; 'auto' runs such a problem in the Python loop when it can."""
    args = (np.zeros(3), 1.0)
    for fun, match in ((_f_bool, r"F must return a real number, returns .*bool"),
                       (_f_pair, r"F must return a real number, returns UniTuple\(float64 x 2\)")):
        with pytest.raises(ValueError, match=match):
            fastrms.minimize(fun, dquad, np.ones(3), args=args, options={"driver": "compiled"})
    compiled = {"driver": "compiled"}
    with pytest.raises(ValueError, match=r"args\[1\], a dict, cannot be passed to compiled code"):
        fastrms.minimize(quad, dquad, np.ones(3), args=(np.zeros(3), {"w": 1.0}), options=compiled)
    with pytest.raises(ValueError, match="F must return the problems' losses, a 1-D real array, returns f"):
        fastrms.minimize(quad, dquad, np.ones((2, 3)), args=args, options={**compiled, "batched": True})
    # a one-element array is a scalar for the Python loop, as in scipy
    res = fastrms.minimize(_f_one_element, dquad, np.ones(3), args=args, options={"maxiter": 20})
    ref = fastrms.minimize(quad, dquad, np.ones(3), args=args, options={"maxiter": 20})
    assert res.x.tobytes() == ref.x.tobytes() and res.fun == ref.fun


def test_compiled_code_is_cached_across_processes(tmp_path):
    (tmp_path / "userfuns.py").write_text(textwrap.dedent('''
        import numpy as np
        from numba import njit

        @njit(cache=True)
        def f(x, c):
            return np.sum((x - c) ** 2)

        @njit(cache=True)
        def df(x, c):
            return 2.0 * (x - c)
    '''))
    script = textwrap.dedent('''
        import json, numpy as np, fastrms, userfuns
        from fastrms.drivers import compiled
        res = fastrms.minimize(userfuns.f, userfuns.df, np.zeros(4), args=(np.arange(4.0),),
                               method="rmsprop", options={"driver": "compiled", "maxiter": 50})
        d = list(compiled._drivers.values())[0]
        print(json.dumps({"hits": sum(d.stats.cache_hits.values()),
                          "misses": sum(d.stats.cache_misses.values()), "x": res.x.tolist()}))
    ''')
    # the suite's cache (conftest.py) or fastrms's own location: a fresh NUMBA_CACHE_DIR would make the
    # first process compile all of fastrms (seconds of the suite); the driver may then already be on
    # disk from an earlier test or run (the driver is keyed by argument types, not by the user's
    # functions), so the first process compiles it or loads it, and the second must load it
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    if env.get("NUMBA_CACHE_DIR") != SUITE_CACHE:
        env.pop("NUMBA_CACHE_DIR", None)
    runs = [json.loads(subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                                      text=True, check=True, cwd=tmp_path).stdout.splitlines()[-1])
            for _ in range(2)]
    assert runs[0]["misses"] + runs[0]["hits"] == 1
    assert runs[1]["hits"] == 1 and runs[1]["misses"] == 0
    assert runs[0]["x"] == runs[1]["x"]


@njit(cache=True)
def lin_loss(x, X, y):
    r = X @ x[:-1] + x[-1] - y
    return float(r @ r) / (2 * len(y))


@njit(cache=True)
def lin_grad(x, X, y):
    r = X @ x[:-1] + x[-1] - y
    g = np.empty_like(x)
    g[:-1] = X.T @ r
    g[-1] = r.sum()
    return g / len(y)


@pytest.mark.parametrize("opts", [
    {"batch_size": 10, "epochs": 2, "seed": 3, "history": True, "history_every": 20},
    {"batch_size": 64, "epochs": 3, "shuffle": False, "drop_last": True, "history": True},
    {"batch_size": 7, "maxiter": 100, "seed": 0, "trajectory": True},
])
def test_compiled_minibatches_equal_the_python_loop(opts):
    from fastrms.datasets import airfoil

    X, y = airfoil()
    X = np.asfortranarray(X)  # batches are C-contiguous in both loops, whatever the data's layout
    x0 = np.zeros(6, np.float32)
    r_c, r_p = both(lin_loss, lin_grad, x0, args=(X, y), options={"lr": 0.01, **opts})
    same(r_c, r_p)
    if "history" in opts:
        np.testing.assert_array_equal(r_c.history["step"], r_p.history["step"])
        np.testing.assert_array_equal(r_c.history["epoch"], r_p.history["epoch"])
    if "epochs" in opts:
        assert r_c.success and r_c.message == "Completed the requested epochs."


@pytest.mark.parametrize("method,opts", [
    ("adam", {"beta1": schedules.exponential(0.9, 0.5, 50), "weight_decay": schedules.cosine(0.05, 80),
              "decoupled_weight_decay": True}),
    ("rmsprop", {"momentum": schedules.step(0.5, 1.3, 40, warmup=5), "nesterov": True}),
    ("yogi", {"beta2": schedules.inverse_time(0.99, 0.1, 10)}),
])
def test_any_packed_hyperparameter_can_follow_a_schedule(method, opts):
    c = np.linspace(-1, 1, 7)
    same(*both(quad, dquad, np.zeros(7), args=(c, 0.5), method=method,
               options={**opts, "maxiter": 120, "history": True}))


def test_a_momentum_schedule_is_applied_step_by_step():
    mu = schedules.exponential(0.9, 0.5, 10)
    g = [np.array([1.0, -2.0, 0.5]) * (k + 1) for k in range(30)]
    x = np.zeros(3)
    opt = fastrms.Momentum(x, lr=0.01, momentum=mu)
    ref, b = np.zeros(3), np.zeros(3)
    for t, gt in enumerate(g):
        opt.step(gt)
        b = mu(t) * b + gt
        ref = ref - 0.01 * b
    np.testing.assert_allclose(x, ref, rtol=1e-13)


@pytest.mark.parametrize("driver", ["python", "compiled"])
def test_a_scheduled_momentum_leaving_its_interval_is_a_clear_error(driver):
    with pytest.raises(ValueError, match=r"momentum schedule gives 1\.04 at step t=10; "
                                         r"momentum must be in \[0, 1\)"):
        fastrms.minimize(quad, dquad, np.zeros(3), args=(np.ones(3), 1.0), method="momentum",
                         options={"momentum": schedules.step(0.8, 1.3, 10), "maxiter": 100, "gtol": 0,
                                  "driver": driver})
