"""Batched solves: B independent problems in one call equal B separate calls, bit for bit."""

import sys

import numba
import numpy as np
import pytest

import fastrms
from fastrms.kernels import cpu

B, N, M = 12, 4, 16


def _least_squares(rng, dtype=np.float64):
    A = rng.normal(size=(B, M, N)).astype(dtype)
    y = rng.normal(size=(B, M)).astype(dtype)
    return A, y


# vectorized over the leading axis; called with one problem's slice (a leading axis of 1) for the
# separate runs, so both see the same floating-point operations
def F(X, A, y):
    r = (A @ X[..., None])[..., 0] - y
    return 0.5 * np.mean(r * r, axis=-1)


def dF(X, A, y):
    r = (A @ X[..., None])[..., 0] - y
    return (np.swapaxes(A, -1, -2) @ r[..., None])[..., 0] / A.shape[-2]


def _separate(method, X0, args, options, b, fns=(F, dF)):
    """Problem b alone, through the same vectorized F and dF."""
    opts = {k: (v[b] if isinstance(v, np.ndarray) else v) for k, v in options.items()}
    one = tuple(a[b] for a in args)
    f, df = fns
    return fastrms.minimize(lambda x, *a: f(x[None], *(v[None] for v in a))[0],
                            lambda x, *a: df(x[None], *(v[None] for v in a))[0], X0[b],
                            args=one, method=method, options=opts)


def _assert_same_as_separate(res, method, X0, args, options, fns=(F, dF)):
    for b in range(X0.shape[0]):
        r = _separate(method, X0, args, options, b, fns)
        assert r.nit == res.nit[b] and r.status == res.status[b] and r.message == res.message[b], b
        np.testing.assert_array_equal(r.x, res.x[b], err_msg=f"problem {b}")
        np.testing.assert_array_equal(r.jac, res.jac[b])
        assert r.fun == res.fun[b] or (np.isnan(r.fun) and np.isnan(res.fun[b]))


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_equals_separate_calls_with_a_mix_of_endings(dtype, rng):
    A, y = _least_squares(rng, dtype)
    X0 = rng.normal(size=(B, N)).astype(dtype)
    A[3] *= np.sqrt(np.finfo(dtype).max)  # g² overflows: problem 3 diverges
    lr = np.geomspace(1e-3, 0.3, B)
    options = {"lr": lr, "momentum": np.where(np.arange(B) % 2, 0.9, 0.0), "gamma": 0.9,
               "maxiter": 150, "gtol": 1e-3}
    res = fastrms.minimize(F, dF, X0, args=(A, y), options={**options, "batched": True})
    assert set(res.status) >= {0, 1, 3}  # converged, maxiter and diverged problems in one batch
    assert res.x.shape == (B, N) and res.x.dtype == dtype and res.fun.shape == (B,)
    assert res.success.dtype == bool and list(res.success) == [s == 0 for s in res.status]
    _assert_same_as_separate(res, "rmsprop", X0, (A, y), options)


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
def test_check_every_equals_separate_calls_with_check_every(rng):
    """Stopping tests every 7th step: a problem that converges is seen at the next test, one whose x
    overflows between two tests ends at the last tested iterate (a multiple of 7, plus 1) with its
    gradient, each as its own run with check_every ends."""
    A, y = _least_squares(rng)
    X0 = rng.normal(size=(B, N))
    options = {"lr": np.geomspace(0.01, 300.0, B), "maxiter": 300, "gtol": 1e-6, "check_every": 7}
    res = fastrms.minimize(F, dF, X0, args=(A, y), method="gd", options={**options, "batched": True})
    unchecked = ["between two stopping tests" in m for m in res.message]
    assert {0, 1} <= set(res.status) and any(unchecked)
    assert all(res.nit[unchecked] % 7 == 1) and np.all(np.isfinite(res.x))
    assert all(res.nit[res.status == 0] % 7 == 0)
    _assert_same_as_separate(res, "gd", X0, (A, y), options)


def test_a_learning_rate_by_decay_sweep_is_one_call(rng):
    A, y = _least_squares(rng)
    X0 = np.zeros((B, N))
    etas, gammas = np.meshgrid([0.003, 0.01, 0.03], [0.5, 0.8, 0.9, 0.99], indexing="ij")
    options = {"lr": etas.ravel(), "gamma": gammas.ravel(), "eps": 1e-6, "maxiter": 60, "gtol": 0}
    res = fastrms.minimize(F, dF, X0, args=(A, y), options={**options, "batched": True})
    assert np.all(res.status == 1) and len(np.unique(res.fun)) == B
    _assert_same_as_separate(res, "rmsprop", X0, (A, y), options)


@pytest.mark.parametrize("method,options", [
    ("adam", {"beta1": np.linspace(0.5, 0.95, B), "amsgrad": True, "clip_norm": 0.5}),
    ("momentum", {"momentum": np.linspace(0.0, 0.9, B), "nesterov": True, "weight_decay": 0.01}),
    ("adadelta", {"lr": 1.0, "eps": np.geomspace(1e-8, 1e-3, B)}),
    # autograd's sgd: the preset derives each problem's dampening from its own mass
    ("momentum", {"preset": "autograd", "mass": np.linspace(0.2, 0.9, B), "step_size": 0.05}),
    # MXNet's RMSProp clips g + λx: problem 0 has no decay (the general form without the decay's
    # order), the others have it, in one compiled rule
    ("rmsprop", {"preset": "mxnet", "wd": np.linspace(0.0, 0.5, B), "clip_gradient": 0.3, "lr": 0.01}),
])
def test_per_problem_hyperparameters_of_other_methods(method, options, rng):
    A, y = _least_squares(rng)
    X0 = rng.normal(size=(B, N))
    options = {**options, "maxiter": 40}
    if "nesterov" in options:  # nesterov needs μ > 0 on its own; keep problem 0 at μ = 0.1
        options["momentum"][0] = 0.1
    res = fastrms.minimize(F, dF, X0, args=(A, y), method=method, options={**options, "batched": True})
    _assert_same_as_separate(res, method, X0, (A, y), options)


def test_one_problems_varying_coefficients_are_recomputed_every_step(rng):
    """Adagrad's lr_decay > 0 makes the coefficients change every step.  The batch's config is one
    problem's (here problem 0, lr_decay = 0), so the batch must still vary when another problem's
    values do: it had computed H once, and the other problems' η never decayed."""
    A, y = _least_squares(rng)
    X0 = rng.normal(size=(B, N))
    decay = np.where(np.arange(B) % 2, 0.05, 0.0)
    options = {"lr": 0.1, "lr_decay": decay, "maxiter": 30, "gtol": 0}
    res = fastrms.minimize(F_jit, dF_jit, X0, args=(A, y), method="adagrad",
                           options={**options, "batched": True, "driver": "compiled"})
    _assert_same_as_separate(res, "adagrad", X0, (A, y), options, (F_jit, dF_jit))
    Xb = X0.copy()  # a stepper over the rows (the Python loops' coefficients)
    rows = fastrms.Adagrad(Xb, lr=0.1, lr_decay=decay)
    grads = [rng.normal(size=X0.shape) for _ in range(4)]
    for g in grads:
        rows.step(g)
    for b in range(B):
        x = X0[b].copy()
        one = fastrms.Adagrad(x, lr=0.1, lr_decay=decay[b])
        for g in grads:
            one.step(g[b])
        np.testing.assert_array_equal(x, Xb[b], err_msg=f"problem {b}")


def test_each_problems_values_get_one_problems_cross_checks():
    """Per-problem values are checked together as one problem's would be (not only the values of
    the problem whose config the batch runs), and the error names the problem."""
    with pytest.raises(ValueError, match=r"problem 2 \(lr=-1\): lr must be in"):
        fastrms.RMSProp(np.zeros((4, 2)), lr=np.array([0.1, 0.1, -1.0, 0.2]))
    with pytest.raises(ValueError, match=r"problem 3 \(lr=nan\): lr must not be NaN"):
        fastrms.RMSProp(np.zeros((4, 2)), lr=np.array([0.1, 0.1, 0.3, np.nan]))
    with pytest.raises(ValueError, match=r"problem 1 \(eps=-1\)"):  # not problem 0, whose eps is NaN
        fastrms.Adam(np.zeros((2, 3)), eps=np.array([np.nan, -1.0]))
    with pytest.raises(ValueError, match=r"problem 1 \(eps_root=0.01\): .*v_hat"):
        fastrms.Adam(np.zeros((3, 4)), eps_root=np.array([0.0, 0.01, 0.0]))
    with pytest.raises(ValueError, match=r"problem 1 \(momentum=0\): nesterov=True needs momentum > 0"):
        fastrms.minimize(F, dF, np.zeros((3, N)), args=(np.ones((3, M, N)), np.ones((3, M))),
                         method="momentum",
                         options={"batched": True, "momentum": np.array([0.9, 0.0, 0.5]), "nesterov": True})


@pytest.mark.parametrize("method,options", [
    ("rmsprop", {"gamma": np.linspace(0.5, 1.0, 6), "momentum": np.array([0.0, 0.5, 0.9, 0.0, 0.3, 0.1]),
                 "weight_decay": np.array([0.0, 0.1, 0.0, 0.0, 0.2, 0.0]), "lr": lambda t: 0.1}),
    ("adam", {"beta1": np.linspace(0.0, 0.95, 6), "beta2": np.array([0.9, 0.99, 0.999, 0.9, 0.5, 0.99]),
              "eps": np.array([0.0, 1e-8, 1e-3, 0.0, 1.0, 1e-8]), "amsgrad": True}),
    ("momentum", {"momentum": np.array([0.0, 0.5, 0.9, 0.0, 0.3, 0.1]), "dampening": np.linspace(0, 1, 6)}),
    ("adadelta", {"gamma": np.linspace(0.0, 1.0, 6), "eps": np.array([1e-6, 1e-3, 1.0, 1e-8, 2.0, 1e-6]),
                  "clip_norm": 1.0})])
def test_many_combinations_are_configured_as_each_one_alone(method, options):
    """A batch of many distinct values (a random search) configures each combination from the first
    one's config with its values put in; each equals the config validated from its own options
    (values, flags, state rows, packed parameters, whether h varies).  Values outside their
    interval, or a combination the method's cross-checks refuse, leave it to the one-by-one path,
    whose error names the problem (test_each_problems_values_get_one_problems_cross_checks)."""
    from fastrms import methods, presets

    m = methods.get(method)
    names = [k for k, v in options.items() if isinstance(v, np.ndarray)]
    scalars = {k: v for k, v in options.items() if k not in names}
    combos = np.stack([options[k] for k in names], axis=1)
    quick = presets._quick_configs(m, scalars, names, names, combos)
    assert quick is not None and len(quick) == len(combos)
    for row, q in zip(combos, quick, strict=True):
        alone = presets.configure(method, {**scalars, **dict(zip(names, map(float, row), strict=True))})
        assert q.values == alone.values and q.flags == alone.flags and q.rows == alone.rows
        assert q.varies == alone.varies
        np.testing.assert_array_equal(q.packed(), alone.packed())
    outside = combos.copy()
    outside[2, 0] = np.nan
    assert presets._quick_configs(m, scalars, names, names, outside) is None
    if method == "momentum":  # (nesterov needs dampening 0: the cross-check refuses problems 1 to 5)
        assert presets._quick_configs(m, {"nesterov": True}, names, names, combos) is None
    if method == "adam":  # (the same for a later combination: eps_root > 0 needs v_hat)
        roots = np.array([[0.0], [0.1]])
        assert presets._quick_configs(m, {}, ["eps_root"], ["eps_root"], roots) is None
        assert presets._quick_configs(m, {"v_hat": True}, ["eps_root"], ["eps_root"], roots) is not None


@pytest.mark.parametrize("library", ["torch", "jax"])
def test_per_problem_values_from_torch_or_jax_are_their_numpy_values(library):
    """A torch user writes lr=torch.linspace(...), a JAX one jnp.linspace(...): the values are read
    once, as the NumPy array of them (a stepper and a batched minimize alike); a list is an error
    that says where per-problem values go."""
    lib = pytest.importorskip(library)
    lr = np.array([0.1, 0.2, 0.3])
    given = {"torch": lambda: lib.tensor(lr, requires_grad=True),
             "jax": lambda: lib.numpy.asarray(np.float32(lr))}[library]()
    same = np.asarray(given.detach() if library == "torch" else given, dtype=np.float64)
    grads = np.arange(6.0).reshape(3, 2) - 2
    runs = []
    for value in (given, same):
        X = np.ones((3, 2))
        opt = fastrms.Adam(X, lr=value, beta1=value / 2)
        opt.step(grads)
        res = fastrms.minimize(lambda X: (X**2).sum(1), lambda X: 2 * X, np.ones((3, 2)), method="adam",
                               options={"batched": True, "lr": value, "maxiter": 4})
        runs.append((X, res.x, opt.lr))
    for a, b in zip(*runs, strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(TypeError, match=r"got list .*goes in a 1-D array"):
        fastrms.Adam(np.ones((3, 2)), lr=[0.1, 0.2, 0.3])


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

# per-problem columns and the values they draw from: 0 and the ends of intervals, where the structure
# or a cross-check turns, and (in half the batches) values outside them and NaN
_INSIDE = [0.0, 1e-8, 0.1, 0.5, 0.9, 0.999]
_ANY = _INSIDE + [1.0, 2.0, -1.0, float("nan")]
_BATCH_CASES = {  # method: (its per-problem columns, its other options)
    "rmsprop": (["gamma", "momentum", "eps", "weight_decay"],
                [{}, {"bias_correction": True}, {"centered": True, "nesterov": True}]),
    "adam": (["beta1", "beta2", "eps", "eps_root", "weight_decay"],
             [{}, {"v_hat": True}, {"rectify": True}, {"nesterov": True, "momentum_decay": 0.004}]),
    "momentum": (["momentum", "dampening", "weight_decay"], [{}, {"nesterov": True}]),
    "adadelta": (["gamma", "eps"], [{}, {"clip_norm": 1.0}])}


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_a_batch_is_configured_as_each_problem_alone(data):
    """Whatever the per-problem values, configure_batch answers as validating every combination on
    its own does: the same config, per-problem values and 'varies', or the same error."""
    from fastrms import presets

    method = data.draw(st.sampled_from(sorted(_BATCH_CASES)))
    columns, extras = _BATCH_CASES[method]
    names = data.draw(st.lists(st.sampled_from(columns), min_size=1, max_size=len(columns), unique=True))
    B = data.draw(st.integers(2, 5))
    pool = _ANY if data.draw(st.booleans()) else _INSIDE
    values = st.lists(st.sampled_from(pool), min_size=B, max_size=B)
    options = {**data.draw(st.sampled_from(extras)), **{k: np.array(data.draw(values)) for k in names}}

    def answer():
        try:
            c, per_problem, varies = presets.configure_batch(method, options, None, B)
        except (TypeError, ValueError) as e:
            return type(e), str(e)
        return c.values, c.flags, {k: v.tolist() for k, v in per_problem.items()}, varies

    quick = answer()
    real = presets._quick_configs
    presets._quick_configs = lambda *a: None
    try:
        alone = answer()
    finally:
        presets._quick_configs = real
    assert repr(quick) == repr(alone)  # (repr: NaN equals NaN there)


def test_per_problem_minibatches_equal_separate_runs(rng):
    A, y = _least_squares(rng)
    X0 = np.zeros((B, N))
    options = {"lr": 0.01, "batch_size": 5, "epochs": 3, "seed": 7}
    res = fastrms.minimize(F, dF, X0, args=(A, y), options={**options, "batched": True})
    assert np.all(res.status == 0) and np.all(res.nit == 3 * 4)
    assert "epochs" in res.message[0]
    _assert_same_as_separate(res, "rmsprop", X0, (A, y), options)
    again = fastrms.minimize(F, dF, X0, args=(A, y), options={**options, "batched": True})
    np.testing.assert_array_equal(again.x, res.x)


@numba.njit(cache=True)
def F_jit(X, A, y):
    out = np.empty(X.shape[0])
    for b in range(X.shape[0]):
        r = A[b] @ X[b] - y[b]
        out[b] = 0.5 * np.mean(r * r)
    return out


@numba.njit(cache=True)
def dF_jit(X, A, y):
    G = np.empty_like(X)
    for b in range(X.shape[0]):
        r = A[b] @ X[b] - y[b]
        gb = A[b].T @ r / A.shape[1]
        for i in range(gb.size):  # (G[b] = gb would compile Numba's shape-mismatch message: seconds)
            G[b, i] = gb[i]
    return G


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
# the rows kernel; the flat one while all run (its h computed once for all: a shared schedule, Adam's
# bias corrections), then the rows kernel once some have stopped
@pytest.mark.parametrize("lr,method", [("per problem", "rmsprop"), ("shared", "rmsprop"), ("shared", "adam")])
def test_compiled_loop_equals_python_loop_and_separate_calls(lr, method, rng):
    A, y = _least_squares(rng)
    A *= np.linspace(0.2, 3.0, B)[:, None, None]  # problems of different scales stop at different steps
    X0 = rng.normal(size=(B, N))
    A[5] *= 1e155  # diverges
    options = {"lr": np.geomspace(1e-3, 0.3, B) if lr == "per problem" else 0.05, "momentum": 0.9,
               "maxiter": 200, "gtol": 3e-3, "gamma": fastrms.schedules.exponential(0.9, 0.99, 10)}
    if method == "adam":
        options = {"lr": 0.05, "beta1": 0.8, "maxiter": 120, "gtol": 3e-3}
    py = fastrms.minimize(F_jit, dF_jit, X0, args=(A, y), method=method,
                          options={**options, "batched": True, "driver": "python"})
    co = fastrms.minimize(F_jit, dF_jit, X0, args=(A, y), method=method,
                          options={**options, "batched": True, "driver": "compiled"})
    assert set(py.status) >= {0, 1, 3} and len(set(py.nit[py.status == 0])) > 1
    for key in ("x", "jac", "nit", "status", "fun"):
        np.testing.assert_array_equal(py[key], co[key], err_msg=key)
    assert list(py.message) == list(co.message) and py.njev == co.njev
    _assert_same_as_separate(py, method, X0, (A, y), options, (F_jit, dF_jit))


@pytest.mark.parametrize("method,options", [("rmsprop", {"momentum": 0.9}), ("gd", {"clip_norm": 0.5})])
def test_compiled_minibatches_equal_the_python_loop(method, options, rng):
    # dF must see each mini-batch in the same layout in both loops (rows cut along axis 1 by NumPy
    # indexing are not C-contiguous; Numba's are), or its matrix products round differently
    A, y = _least_squares(rng)
    X0 = rng.normal(size=(B, N))
    options = {**options, "batched": True, "lr": np.geomspace(1e-3, 0.3, B), "batch_size": M, "epochs": 3,
               "seed": 3}  # (every row each step, in a new order: the layouts then differed)
    py, co = (fastrms.minimize(F_jit, dF_jit, X0, args=(A, y), method=method,
                               options={**options, "driver": d}) for d in ("python", "compiled"))
    for key in ("x", "jac", "nit", "status", "fun"):
        np.testing.assert_array_equal(py[key], co[key], err_msg=key)


def test_stepper_over_rows_equals_separate_steppers(rng):
    X = rng.normal(size=(5, 3, 2))
    grads = [rng.normal(size=X.shape) for _ in range(6)]
    lr, beta2 = np.geomspace(1e-3, 1e-1, 5), np.linspace(0.9, 0.999, 5)
    Xb = X.copy()
    opt = fastrms.Adam(Xb, lr=lr, beta2=beta2)
    for g in grads:
        opt.step(g)
    for b in range(5):
        x = X[b].copy()
        one = fastrms.Adam(x, lr=lr[b], beta2=beta2[b])
        for g in grads:
            one.step(g[b])
        np.testing.assert_array_equal(x, Xb[b])
    np.testing.assert_array_equal(opt.hyperparameters["lr"], lr)
    # its state round-trips, and batched=True runs rows with shared hyperparameters
    Y = X.copy()
    twin = fastrms.Adam(Y, lr=lr, beta2=beta2)
    twin.load_state_dict(opt.state_dict())
    Y[...] = Xb
    opt.step(grads[0])
    twin.step(grads[0])
    np.testing.assert_array_equal(Y, Xb)
    Z = X.copy()
    rows = fastrms.RMSProp(Z, batched=True, clip_norm=0.5)
    rows.step(grads[0] * 10)
    for b in range(5):
        z = X[b].copy()
        fastrms.RMSProp(z, clip_norm=0.5).step(grads[0][b] * 10)  # each row clipped by its own norm
        np.testing.assert_array_equal(z, Z[b])
    W = X.copy()  # shared hyperparameters: one flat launch over all rows
    shared = fastrms.RMSProp(W, batched=True, momentum=0.9)
    for g in grads:
        shared.step(g)
    for b in range(5):
        w = X[b].copy()
        one = fastrms.RMSProp(w, momentum=0.9)
        for g in grads:
            one.step(g[b])
        np.testing.assert_array_equal(w, W[b])
    V = X.copy()  # shared and varying (Adam's corrections): one h a step for all rows
    shared = fastrms.Adam(V, batched=True, lr=0.1, weight_decay=0.01)
    for g in grads:
        shared.step(g)
    for b in range(5):
        v = X[b].copy()
        one = fastrms.Adam(v, lr=0.1, weight_decay=0.01)
        for g in grads:
            one.step(g[b])
        np.testing.assert_array_equal(v, V[b])


# A batch whose problems differ in η alone (or γ, or the clip factor) computes the powers of t of
# the coefficients (Method.parts: Adam's bias corrections, RAdam's rectification, NAdam's weights)
# once a step, and each row's coefficients from them: bit for bit what each problem computes alone,
# across RAdam's switch at t = 5 and NAdam's product past t = 64.
_SHARED_P = [
    ("Adam", {}), ("Adam", {"amsgrad": True, "weight_decay": 0.01}), ("AdamW", {}),
    ("Adam", {"preset": "tf1"}), ("Adam", {"preset": "optax", "eps_root": 1e-8}),
    ("Adam", {"bias_correction_mu": False, "bias_correction_nu": False}),
    ("NAdam", {}), ("Adam", {"nesterov": True, "preset": "optax"}), ("RAdam", {}), ("AdaBelief", {}),
    ("Adamax", {}), ("Yogi", {}), ("Adam", {"clip_norm": 0.5}),
]


@pytest.mark.parametrize("cls,options,dtype", [(*case, np.float64) for case in _SHARED_P] + [
    (*case, np.float32) for case in _SHARED_P if not case[1] and case[0] != "AdamW"])  # (each parts pair)
def test_rows_that_share_p_equal_separate_steppers(cls, options, dtype, rng):
    X = rng.normal(size=(5, 3)).astype(dtype)
    grads = [rng.normal(size=X.shape).astype(dtype) for _ in range(70)]
    lr = np.geomspace(1e-3, 1e-1, 5)
    Xb = X.copy()
    rows = getattr(fastrms, cls)(Xb, lr=lr, **options)
    assert rows._mstate.shares_p
    for g in grads:
        rows.step(g)
    for b in range(5):
        x = X[b].copy()
        one = getattr(fastrms, cls)(x, lr=lr[b], **options)
        for g in grads:
            one.step(g[b])
        np.testing.assert_array_equal(x, Xb[b], err_msg=f"problem {b}")


@pytest.mark.parametrize("cls,slow", [("NAdam", True), ("NAdam", False), ("Yogi", True)])
def test_rows_in_groups_of_equal_p_equal_separate_steppers(cls, slow, rng):
    """A grid of η × β1 (β1 along either axis) comes in groups of equal p, one a β1: the powers of
    t once a group, then each row; bit for bit what each problem computes alone.  A random search
    of β1 (every p its own) computes its rows one by one."""
    etas, betas = np.geomspace(1e-3, 1e-1, 3), np.array([0.5, 0.8, 0.9])
    lr, beta1 = (np.tile(etas, 3), np.repeat(betas, 3)) if slow else (np.repeat(etas, 3), np.tile(betas, 3))
    X = rng.normal(size=(9, 3))
    grads = [rng.normal(size=X.shape) for _ in range(66)]  # (NAdam's product past t = 64)
    Xb = X.copy()
    rows = getattr(fastrms, cls)(Xb, lr=lr, beta1=beta1)
    assert rows._mstate.grouped and len(rows._mstate.groups[1]) == 4
    for g in grads:
        rows.step(g)
    for b in range(9):
        x = X[b].copy()
        one = getattr(fastrms, cls)(x, lr=lr[b], beta1=beta1[b])
        for g in grads:
            one.step(g[b])
        np.testing.assert_array_equal(x, Xb[b], err_msg=f"problem {b}")
    assert not getattr(fastrms, cls)(X.copy(), beta1=np.linspace(0.5, 0.9, 9))._mstate.grouped


@pytest.mark.parametrize("grid", [False, True], ids=["a sweep of η", "η × β1"])
def test_the_compiled_loop_over_rows_that_share_p_equals_separate_calls(grid, rng):
    A, y = _least_squares(rng)
    X0 = rng.normal(size=(B, N))
    options = {"lr": np.geomspace(1e-3, 0.3, B), "maxiter": 80, "gtol": 0}
    if grid:  # (three groups of four problems, the compiled loop's grouped fill)
        options["beta1"] = np.repeat([0.5, 0.8, 0.9], B // 3)
    res = fastrms.minimize(F_jit, dF_jit, X0, args=(A, y), method="nadam",
                           options={**options, "batched": True, "driver": "compiled"})
    _assert_same_as_separate(res, "nadam", X0, (A, y), options, (F_jit, dF_jit))


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="one thread: no parallel code")
@pytest.mark.parametrize("grid", [False, True], ids=["a random search of β1", "η × β1"])
def test_many_problems_fill_their_rows_in_parallel_bit_for_bit(grid, monkeypatch, rng):
    """Many problems (here, with the thresholds lowered, 12) fill their rows in parallel, row by row
    (a random search) or in pieces of their groups (a grid; pieces of 3 rows in groups of 4), in a
    stepper and in minimize's Python loop: the serial fill's iterates, and each problem's own.
    The compiled loop binds the parallel fill whatever its kernels' mode (x here is far below the
    parallel kernels' 128 KiB), and gives the Python loop's iterates with the serial fill."""
    from fastrms import method_state
    from fastrms.drivers import compiled_batched
    from fastrms.drivers.problem import Problem

    A, y = _least_squares(rng)
    X0 = rng.normal(size=(B, N))
    beta1 = np.repeat([0.5, 0.8, 0.9], B // 3) if grid else np.linspace(0.5, 0.95, B)
    options = {"lr": np.geomspace(1e-3, 0.3, B), "beta1": beta1, "maxiter": 30, "gtol": 0}
    grads = [rng.normal(size=X0.shape) for _ in range(5)]

    def run():
        X = X0.copy()
        opt = fastrms.Adam(X, lr=options["lr"], beta1=beta1)
        for g in grads:
            opt.step(g)
        res = fastrms.minimize(F, dF, X0, args=(A, y), method="adam", options={**options, "batched": True})
        return opt._mstate, X, res

    serial_state, X_serial, serial = run()
    assert serial_state._host_fill.kernel is serial_state._fill  # (B is below the thresholds)
    monkeypatch.setattr(method_state, "PARALLEL_FILL_MIN_ROWS", 4)
    monkeypatch.setattr(method_state, "PARALLEL_GROUPED_FILL_MIN_ROWS", 4)
    monkeypatch.setattr(method_state, "FILL_PIECE_ROWS", 3)
    state, X_par, par = run()
    assert state.grouped is grid and "_par_" in state._host_fill.kernel.py_func.__name__
    assert X_par.tobytes() == X_serial.tobytes()
    assert par.x.tobytes() == serial.x.tobytes() and np.array_equal(par.nit, serial.nit)
    _assert_same_as_separate(par, "adam", X0, (A, y), options)
    problem = Problem(F_jit, dF_jit, (A, y), X0.shape, X0.dtype, batch=B)
    assert compiled_batched.prepare(problem, state, X0.reshape(-1), 30)[2:] == (False, True)
    if not grid:  # (one compiled run, for the suite's time: the grid's fill is bound alike, below)
        jitted = {**options, "batched": True, "driver": "compiled"}
        compiled_run = fastrms.minimize(F_jit, dF_jit, X0, args=(A, y), method="adam", options=jitted)
        assert compiled_run.x.tobytes() == serial.x.tobytes() and np.array_equal(compiled_run.nit, serial.nit)
    bound = []
    monkeypatch.setattr(compiled_batched, "jit", lambda fn, **kw: bound.append(fn.__globals__) or fn)
    sigs = compiled_batched.compiled.signature_for(F_jit, dF_jit, X0, (A, y), None, problems=True)
    for parallel in (False, True, cpu.RACE):
        for fill_parallel in (False, True):
            compiled_batched._build(state, sigs, False, parallel, None, fill_parallel)
            assert state._fill_par is not state._fill and bound[-1]["FILL"] is state._fill
            assert bound[-1]["FILL_PAR"] is (state._fill_par if fill_parallel else state._fill)


def test_bad_input_names_the_shapes(rng):
    A, y = _least_squares(rng)
    X0 = np.zeros((B, N))

    def run(f=F, df=dF, **o):
        return fastrms.minimize(f, df, X0, args=(A, y), options={"batched": True, "maxiter": 3, **o})

    with pytest.raises(ValueError, match=r"one loss per problem, shape \(12,\); it returned shape \(\)"):
        run(f=lambda X, A, y: float(np.sum(F(X, A, y))))
    with pytest.raises(ValueError, match=r"gradient has shape \(11, 4\), but x has shape \(12, 4\)"):
        run(df=lambda X, A, y: dF(X, A, y)[1:])
    with pytest.raises(ValueError, match=r"lr has shape \(5,\): .* shape \(12,\)"):
        run(lr=np.ones(5))
    with pytest.raises(TypeError, match=r"momentum: per-problem values go in a 1-D NumPy array of length 12"):
        run(momentum=[0.5] * B)
    with pytest.raises(ValueError, match="centered must be one value for the whole batch"):
        run(centered=np.ones(B, bool))
    with pytest.raises(ValueError, match="gamma must be in"):
        run(gamma=np.linspace(0.5, 1.5, B))
    with pytest.raises(ValueError, match="split the batch"):
        run(momentum=np.r_[0.9, np.zeros(B - 1)], eps=np.r_[1e-8, np.zeros(B - 1)])
    with pytest.raises(ValueError, match=r"batch_size with 12 batched problems needs data arrays"):
        fastrms.minimize(F, dF, X0, args=(A[0], y[0]), options={"batched": True, "batch_size": 4})


def F_capped(X, A, y):
    """F, but NaN where |x_0| has passed 0.5: a loss that fails before the update does."""
    return np.where(np.abs(X[..., 0]) > 0.5, np.nan, F(X, A, y))


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
def test_history_and_trajectory_equal_each_separate_runs(rng):
    """history=True: loss and gnorm of shape (steps, B), each column the problem's own run's history
    (recorded every history_every steps and at maxiter), NaN after the problem stopped; a problem
    whose recorded loss is not finite stops there (status 3), as its own run does.  trajectory=True:
    (steps, B, n), each problem's own trajectory, NaN after it stopped."""
    A, y = _least_squares(rng)
    A *= np.linspace(0.2, 3.0, B)[:, None, None]  # problems stop at different steps
    X0 = np.zeros((B, N))
    A[5] *= 1e155  # its loss overflows at once
    options = {"lr": np.geomspace(1e-3, 0.1, B), "momentum": 0.9, "maxiter": 61, "gtol": 3e-3,
               "history": True, "history_every": 4, "trajectory": True}
    res = fastrms.minimize(F_capped, dF, X0, args=(A, y), options={**options, "batched": True})
    h = res.history
    assert h["loss"].shape == h["gnorm"].shape == (len(h["step"]), B) and h["step"][-1] == 61
    assert set(res.status) >= {0, 1, 3}  # every kind of ending: converged, maxiter, diverged at once,
    capped = [k for k, m in zip(res.nit, res.message, strict=True) if "the loss became non-finite" in m]
    assert len(capped) == 2 and all(0 < k < 61 and k % 4 == 0 for k in capped)  # and capped mid-run
    _assert_same_as_separate(res, "rmsprop", X0, (A, y), options, (F_capped, dF))
    assert res.trajectory.shape == (62, B, N)
    for b in range(B):
        alone = _separate("rmsprop", X0, (A, y), options, b, (F_capped, dF))
        own = alone.history
        n = len(own["step"])
        np.testing.assert_array_equal(h["step"][:n], own["step"])
        np.testing.assert_array_equal(h["loss"][:n, b], own["loss"], err_msg=f"problem {b}")
        np.testing.assert_array_equal(h["gnorm"][:n, b], own["gnorm"])
        assert np.all(np.isnan(h["loss"][n:, b])) and np.all(np.isnan(h["gnorm"][n:, b]))
        n = len(alone.trajectory)  # x_0 ... x_nit
        np.testing.assert_array_equal(res.trajectory[:n, b], alone.trajectory, err_msg=f"problem {b}")
        assert n == res.nit[b] + 1 and np.all(np.isnan(res.trajectory[n:, b]))
    # jitted F and dF: the compiled loop records the same, bit for bit, and counts the same calls
    runs = [fastrms.minimize(F_jit_capped, dF_jit, X0, args=(A, y),
                             options={**options, "batched": True, "driver": driver})
            for driver in ("python", "compiled")]
    _assert_same_results(*runs)


def _assert_same_results(a, b):
    assert set(a) == set(b)
    for key in ("x", "jac", "fun", "nit", "status", "message", "trajectory"):
        if key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert (a.nfev, a.njev) == (b.nfev, b.njev)
    if "history" in a:
        for key in a.history:
            np.testing.assert_array_equal(a.history[key], b.history[key], err_msg=key)


@numba.njit(cache=True)
def F_jit_capped(X, A, y):
    f = F_jit(X, A, y)
    for b in range(X.shape[0]):
        if abs(X[b, 0]) > 0.5:
            f[b] = np.nan
    return f


@numba.njit(cache=True)
def FdF_jit(X, A, y):
    return F_jit(X, A, y), dF_jit(X, A, y)


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
@pytest.mark.parametrize("extra", [{"history_every": 3}, {"trajectory": True, "jac": True},
                                   {"batch_size": 5, "epochs": 3, "seed": 1, "history_every": 2},
                                   {"jac": True}])
def test_the_compiled_loop_records_as_the_python_loop(extra, rng):
    """History and trajectory through the compiled loop (a sweep's loss curves at its speed): equal to
    the Python loop's bit for bit, with the same counts of F and dF calls, F and dF apart or together,
    with mini-batches too."""
    A, y = _least_squares(rng)
    A *= np.linspace(0.2, 3.0, B)[:, None, None]  # problems stop at different steps
    A[5] *= 1e155  # its loss overflows at once
    extra = dict(extra)
    fns = (FdF_jit, True) if extra.pop("jac", False) else (F_jit_capped, dF_jit)
    options = {"lr": np.geomspace(1e-3, 0.3, B), "momentum": 0.9, "gtol": 3e-3, "history": True,
               **({} if "epochs" in extra else {"maxiter": 61}), **extra}
    runs = [fastrms.minimize(fns[0], np.zeros((B, N)), jac=fns[1], args=(A, y),
                             options={**options, "batched": True, "driver": driver})
            for driver in ("python", "compiled")]
    _assert_same_results(*runs)
    assert {0, 3} <= set(runs[1].status) and len(set(runs[1].nit)) >= 3  # endings of several kinds


def test_losses_of_the_wrong_length_are_the_python_loops_error(rng):
    A, y = _least_squares(rng)

    @numba.njit
    def short(X, A, y):
        return F_jit(X, A, y)[1:]

    said = r"one loss per problem, shape \(12,\); it returned shape \(11,\)"
    for driver in ("python", "compiled"):
        with pytest.raises(ValueError, match=said):
            fastrms.minimize(short, dF_jit, np.zeros((B, N)), args=(A, y),
                             options={"batched": True, "history": True, "maxiter": 3, "driver": driver})


def _stopping_after(calls: int, seen: list):
    def callback(intermediate_result):
        seen.append(intermediate_result)
        if len(seen) == calls:
            raise StopIteration
    return callback


def test_a_callback_sees_every_problem_and_stops_those_still_running(rng):
    """A callback gets all B problems after each step (x, fun, nit, active); StopIteration ends the
    running ones with status 99 there, each as its own run with the same callback would end."""
    A, y = _least_squares(rng)
    A *= np.linspace(0.2, 3.0, B)[:, None, None]
    X0 = np.zeros((B, N))
    options = {"lr": np.geomspace(1e-3, 0.1, B), "momentum": 0.9, "maxiter": 200, "gtol": 3e-3}
    seen = []
    res = fastrms.minimize(F, dF, X0, args=(A, y), callback=_stopping_after(45, seen),
                           options={**options, "batched": True})
    assert len(seen) == 45 and seen[-1].x.shape == (B, N) and seen[-1].fun.shape == (B,)
    assert set(res.status) == {0, 99} and np.all(res.nit[res.status == 99] == 45)
    done = ~seen[-1].active  # converged before: nit is theirs, and fun is F at their x
    assert done.any() and np.all(seen[-1].nit[done] == res.nit[done]) and np.all(seen[-1].nit[~done] == 45)
    np.testing.assert_array_equal(seen[-1].fun, F(res.x, A, y))
    for b in range(B):
        alone = fastrms.minimize(lambda x, a, v: F(x[None], a[None], v[None])[0],
                                 lambda x, a, v: dF(x[None], a[None], v[None])[0], X0[b], args=(A[b], y[b]),
                                 callback=_stopping_after(45, []),
                                 options={**options, "lr": options["lr"][b]})
        assert (alone.status, alone.nit) == (res.status[b], res.nit[b]), b
        np.testing.assert_array_equal(alone.x, res.x[b])
    with pytest.raises(ValueError, match="a callback runs in this process"):
        da = pytest.importorskip("dask.array")
        fastrms.minimize(F, dF, da.zeros((B, N), chunks=(4, N)), args=(A, y), callback=print,
                         options={"batched": True})


def test_a_problem_whose_loss_is_not_finite_at_the_end_fails_alone(rng):
    A, y = _least_squares(rng)

    def F_bad(X, A, y):
        f = F(X, A, y)
        f[2] = np.nan
        return f

    res = fastrms.minimize(F_bad, dF, np.zeros((B, N)), args=(A, y), options={"batched": True, "maxiter": 5})
    assert res.status[2] == 3 and "not finite at the final x" in res.message[2]
    assert np.all(res.status[np.arange(B) != 2] == 1)


@numba.njit(cache=True)
def dF_jit_raising(X, A, y):
    if X[0, 0] > 1.0:
        raise ValueError("boom: problem 0 passed 1")
    return dF_jit(X, A, y)


@pytest.mark.parametrize("driver", ["python", "compiled"])
def test_an_exception_in_a_jitted_gradient_reaches_the_user(driver, rng):
    A, y = _least_squares(rng)
    hook = sys.unraisablehook
    with pytest.raises(ValueError, match="boom: problem 0 passed 1"):
        fastrms.minimize(F_jit, dF_jit_raising, np.zeros((B, N)), args=(A, y + 5.0),
                         options={"batched": True, "driver": driver, "lr": 0.05, "momentum": 0.9,
                                  "maxiter": 500, "gtol": 0,
                                  "gamma": fastrms.schedules.exponential(0.9, 0.99, 10)})
    assert sys.unraisablehook is hook


def test_batched_runs_from_threads_agree_with_serial_runs(rng, threads_agree):
    Bt = 2000  # 16,000 float64 elements: the flat kernel runs in parallel
    A, y = rng.normal(size=(Bt, M, N)), rng.normal(size=(Bt, M))

    def solve(lr):
        return fastrms.minimize(F, dF, np.zeros((Bt, N)), args=(A, y),
                                options={"batched": True, "lr": lr, "maxiter": 30, "gtol": 0}).x

    threads_agree(solve, [0.01, 0.02, 0.03, 0.04])
