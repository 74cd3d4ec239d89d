"""fastrms on Dask: a real distributed.LocalCluster (2 worker processes, loopback only)."""

import os

import numpy as np
import pytest

import fastrms
from fastrms import experiments as ex
from fastrms.datasets import airfoil

da = distributed = None


@pytest.fixture(scope="module", autouse=True)
def _dask():
    # imported when this file's first test runs, not at collection: every xdist worker collects every file
    global da, distributed
    da = pytest.importorskip("dask.array", reason="needs dask: pip install 'fastrms[dask]'")
    distributed = pytest.importorskip("distributed")

OPTS = {"lr": 0.01, "gamma": 0.9, "maxiter": 30, "gtol": 0}


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                       dashboard_address="127.0.0.1:0")  # (None still serves on 8787)
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


@pytest.fixture(scope="module")
def data():
    X, y = airfoil(dtype=np.float64)
    return X, y, da.from_array(X, chunks=(375, 5)), da.from_array(y, chunks=375)  # 4 blocks of rows


def _x0(X):
    return np.zeros(X.shape[1] + 1)


def test_full_batch_airfoil_on_the_cluster_equals_the_in_memory_run(client, data):
    X, y, Xd, yd = data
    ref = fastrms.minimize(ex.linreg_loss, ex.linreg_grad, _x0(X), args=(X, y), options=OPTS)
    res = fastrms.minimize(ex.linreg_loss, ex.linreg_grad, _x0(X), args=(Xd, yd),
                           options={**OPTS, "reduction": "mean"})
    np.testing.assert_allclose(res.x, ref.x, rtol=1e-12, atol=1e-12)
    assert res.fun == pytest.approx(ref.fun, rel=1e-12) and res.nit == ref.nit == 30
    # 'sum': F and dF are sums over rows (blocks are added, not weighted)
    def F_sum(x, X, y):
        return ex.linreg_loss(x, X, y) * len(y)

    def dF_sum(x, X, y):
        return ex.linreg_grad(x, X, y) * len(y)

    ref_sum = fastrms.minimize(F_sum, dF_sum, _x0(X), args=(X, y), options=OPTS)
    res_sum = fastrms.minimize(F_sum, dF_sum, _x0(X), args=(Xd, yd), options={**OPTS, "reduction": "sum"})
    np.testing.assert_allclose(res_sum.x, ref_sum.x, rtol=1e-12, atol=1e-12)
    assert not np.allclose(res_sum.x, ref.x, rtol=1e-6)  # (a different problem: the sum is N times larger)


def test_minibatches_across_blocks_are_reproducible(client, data):
    X, y, Xd, yd = data
    opts = {"lr": 0.01, "gamma": 0.9, "reduction": "mean", "batch_size": 100, "epochs": 2, "seed": 3}
    a = fastrms.minimize(ex.linreg_loss, ex.linreg_grad, _x0(X), args=(Xd, yd), options=opts)
    b = fastrms.minimize(ex.linreg_loss, ex.linreg_grad, _x0(X), args=(Xd, yd), options=opts)
    np.testing.assert_array_equal(a.x, b.x)
    assert a.success and a.nit == 30 and "epochs" in a.message
    other = fastrms.minimize(ex.linreg_loss, ex.linreg_grad, _x0(X), args=(Xd, yd),
                             options={**opts, "seed": 4})
    assert not np.array_equal(a.x, other.x)


def _linreg_pair(x, X, y):
    return ex.linreg_loss(x, X, y), ex.linreg_grad(x, X, y)


def _linreg_pair_jit(x, X, y):
    return ex.linreg_loss_jit(x, X, y), ex.linreg_grad_jit(x, X, y)


def test_jac_true_on_blocks_equals_two_functions(client, data):
    """F returning (f, g): one task a block gives both; the run equals the two-function run, full
    batch (history included) and with mini-batches.  (Bit for bit with the jitted loops: NumPy's BLAS
    may round the same values differently at another address, on another worker.)"""
    X, y, Xd, yd = data
    for opts in ({**OPTS, "reduction": "mean", "history": True},
                 {"lr": 0.01, "reduction": "mean", "batch_size": 100, "epochs": 1, "seed": 3}):
        two = fastrms.minimize(ex.linreg_loss_jit, ex.linreg_grad_jit, _x0(X), args=(Xd, yd), options=opts)
        pair = fastrms.minimize(_linreg_pair_jit, _x0(X), jac=True, args=(Xd, yd), options=opts)
        np.testing.assert_array_equal(pair.x, two.x)
        assert pair.fun == two.fun and pair.nit == two.nit and pair.status == two.status
        if "history" in two:
            np.testing.assert_array_equal(pair.history["loss"], two.history["loss"])
    mean = {**OPTS, "reduction": "mean"}
    ref = fastrms.minimize(_linreg_pair, _x0(X), jac=True, args=(X, y), options=OPTS)  # in memory
    res = fastrms.minimize(_linreg_pair, _x0(X), jac=True, args=(Xd, yd), options=mean)
    np.testing.assert_allclose(res.x, ref.x, rtol=1e-12, atol=1e-12)
    with pytest.raises(TypeError, match="must return a pair"):
        fastrms.minimize(ex.linreg_loss, _x0(X), jac=True, args=(Xd, yd), options=mean)
    with pytest.raises(ValueError, match=r"gradient has shape \(7,\), but x has shape \(6,\)"):
        fastrms.minimize(lambda x, X, y: (0.0, np.zeros(7)), _x0(X), jac=True, args=(Xd, yd), options=mean)


def test_default_scheduler_without_a_client(data, monkeypatch):
    X, y, Xd, yd = data
    ref = fastrms.minimize(ex.linreg_loss, ex.linreg_grad, _x0(X), args=(X, y), options=OPTS)
    # as if no Client were active in this process (another test's may be): dask's own threads
    import dask

    monkeypatch.setattr(fastrms.cluster, "_client", lambda: None)
    with dask.config.set(scheduler="threads"):
        res = fastrms.minimize(ex.linreg_loss, ex.linreg_grad, _x0(X), args=(Xd, yd),
                               options={**OPTS, "reduction": "mean"})
        # scipy's tol= reaches the blocks' run as gtol
        tol = fastrms.minimize(ex.linreg_loss, ex.linreg_grad, _x0(X), args=(Xd, yd), tol=0.2,
                               options={"reduction": "mean", "lr": 0.01})
    assert tol.success and 0 < tol.nit < 1000 and np.max(np.abs(tol.jac)) <= 0.2
    np.testing.assert_allclose(res.x, ref.x, rtol=1e-12, atol=1e-12)


def test_a_worker_killed_mid_run_does_not_change_the_result(client, data):
    # jitted F and dF (compiled on the workers) written as loops: NumPy's BLAS may round differently
    # for the same values at another address, and a recomputed block lives at another address
    X, y, Xd, yd = data
    opts = {**OPTS, "reduction": "mean"}
    F, dF = ex.linreg_loss_jit, ex.linreg_grad_jit
    clean = fastrms.minimize(F, dF, _x0(X), args=(Xd, yd), options=opts)
    np.testing.assert_allclose(clean.x, fastrms.minimize(ex.linreg_loss, ex.linreg_grad, _x0(X), args=(X, y),
                                                         options=OPTS).x, rtol=1e-12, atol=1e-12)
    killed = []

    def kill_one_worker(intermediate_result):
        if intermediate_result.nit == 10 and not killed:
            victim = sorted(client.scheduler_info()["workers"])[0]
            try:
                client.run(os._exit, 1, workers=[victim])
            except Exception:  # the connection to the dying worker closes
                pass
            killed.append(victim)

    res = fastrms.minimize(F, dF, _x0(X), args=(Xd, yd), options=opts, callback=kill_one_worker)
    assert killed
    np.testing.assert_array_equal(res.x, clean.x)
    assert res.nit == clean.nit


def test_batched_problems_chunked_across_the_cluster(client):
    B = 10
    rng = np.random.default_rng(0)
    A, y = rng.normal(size=(B, 32, 4)), rng.normal(size=(B, 32))

    # without BLAS (its threads, which differ between the workers and here, change its rounding)
    def F(X, A, y):
        return 0.5 * np.mean(((A * X[:, None, :]).sum(-1) - y) ** 2, axis=-1)

    def dF(X, A, y):
        r = (A * X[:, None, :]).sum(-1) - y
        return (A * r[..., None]).sum(1) / 32

    opts = {"batched": True, "lr": np.geomspace(1e-3, 0.3, B), "maxiter": 80, "gtol": 1e-4}
    mem = fastrms.minimize(F, dF, np.zeros((B, 4)), args=(A, y), options=opts)
    dist = fastrms.minimize(F, dF, da.zeros((B, 4), chunks=(3, 4)),
                            args=(da.from_array(A, chunks=(3, 32, 4)), y), options=opts)
    assert dist.x.shape == (B, 4) and len(dist.status) == B
    np.testing.assert_array_equal(dist.status, mem.status)
    np.testing.assert_array_equal(dist.nit, mem.nit)
    np.testing.assert_array_equal(dist.x, mem.x)
    assert set(mem.status) == {0, 1}  # converged and maxiter problems, split over 4 chunks
    every = {**opts, "check_every": 4}  # each chunk tests every 4th step, as the one batch does
    mem = fastrms.minimize(F, dF, np.zeros((B, 4)), args=(A, y), options=every)
    dist = fastrms.minimize(F, dF, da.zeros((B, 4), chunks=(3, 4)),
                            args=(da.from_array(A, chunks=(3, 32, 4)), y), options=every)
    assert all(mem.nit[mem.status == 0] % 4 == 0) and set(mem.status) == {0, 1}
    for key in ("status", "nit", "x"):
        np.testing.assert_array_equal(dist[key], mem[key], err_msg=key)
    # the loss history too: the chunks' histories joined are the one batch's (NaN after a stop); problem
    # 5, which converges at step 14, is a chunk of its own, whose history ends there
    hist = {**opts, "history": True, "history_every": 5, "trajectory": True}
    mem = fastrms.minimize(F, dF, np.zeros((B, 4)), args=(A, y), options=hist)
    dist = fastrms.minimize(F, dF, da.zeros((B, 4), chunks=((5, 1, 4), 4)),
                            args=(da.from_array(A, chunks=(3, 32, 4)), y), options=hist)
    for key in ("step", "loss", "gnorm"):
        np.testing.assert_array_equal(dist.history[key], mem.history[key], err_msg=key)
    np.testing.assert_array_equal(dist.trajectory, mem.trajectory)
    assert mem.nit[5] == 14 and mem.history["step"][-1] == 80
    assert np.isnan(mem.history["loss"][:, 5]).sum() == len(mem.history["step"]) - 3  # steps 0, 5, 10
    # F returning (f, g) (jac=True) and finite differences reach the chunks' runs too (both were taken
    # for x0 there, as minimize's second positional argument)
    pair = {**opts, "maxiter": 20}
    mem = fastrms.minimize(F, dF, np.zeros((B, 4)), args=(A, y), options=pair)
    for fun, jac, tol in (((lambda X, A, y: (F(X, A, y), dF(X, A, y))), True, 0.0), (F, "3-point", 1e-6)):
        dist = fastrms.minimize(fun, da.zeros((B, 4), chunks=(3, 4)), jac=jac,
                                args=(da.from_array(A, chunks=(3, 32, 4)), y), options=pair)
        np.testing.assert_allclose(dist.x, mem.x, rtol=tol, atol=tol)


def test_bad_input_is_named(data):
    X, y, Xd, yd = data
    run = lambda args, **o: fastrms.minimize(ex.linreg_loss, ex.linreg_grad, _x0(X), args=args,  # noqa: E731
                                             options={**OPTS, "maxiter": 2, **o})
    with pytest.raises(ValueError, match="reduction"):
        run((Xd, yd))
    with pytest.raises(ValueError, match="different row counts"):
        run((Xd, yd[:-1]), reduction="mean")
    with pytest.raises(ValueError, match="chunked differently along rows"):
        run((Xd, da.from_array(y, chunks=500)), reduction="mean")
    with pytest.raises(ValueError, match="NumPy array with the dask arrays' 1500 rows"):
        run((Xd, y), reduction="mean")
    with pytest.raises(ValueError, match="a block has no rows"):
        run((da.from_array(X, chunks=((1500, 0), (5,))), da.from_array(y, chunks=((1500, 0),))),
            reduction="mean")
    with pytest.raises(ValueError, match="give epochs or maxiter, not both"):
        run((Xd, yd), reduction="mean", batch_size=10, epochs=1)
    with pytest.raises(ValueError, match="needs options=\\{'batched': True\\}"):
        fastrms.minimize(ex.linreg_loss, ex.linreg_grad, da.zeros(6, chunks=3), args=(X, y))
    # a batch's per-problem values are checked as one batch, before chunks ship: the index is the batch's
    X0 = da.zeros((6, 2), chunks=(2, 2))
    batched = {"batched": True, "maxiter": 2}
    with pytest.raises(ValueError, match=r"problem 4 \(lr=-1\)"):
        fastrms.minimize(_rows_f, _rows_df, X0, options={**batched, "lr": np.array([0.1] * 4 + [-1.0, 0.1])})
    with pytest.raises(ValueError, match=r"problem 5 \(eps=nan\)"):
        fastrms.minimize(_rows_f, _rows_df, X0, method=fastrms.adam, options={**batched, "eps": np.array(
            [1e-8] * 5 + [np.nan])})


def _rows_f(W):
    return np.sum((W - 1.0) ** 2, axis=1)


def _rows_df(W):
    return 2.0 * (W - 1.0)


def test_an_exception_on_a_worker_reaches_the_user(client, data):
    X, y, Xd, yd = data

    def dF_raising(x, X, y):
        if x[0] < -0.1:
            raise FloatingPointError("dF gave up on a worker")
        return ex.linreg_grad(x, X, y)

    with pytest.raises(FloatingPointError, match="dF gave up on a worker"):
        fastrms.minimize(ex.linreg_loss, dF_raising, _x0(X), args=(Xd, yd),
                         options={**OPTS, "reduction": "mean"})
