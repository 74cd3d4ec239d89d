"""Every method and option against the float64 NumPy reference; serial == parallel bit for bit."""

import platform
import re

import numba
import numpy as np
import pytest
from reference import REFERENCE_METHODS, reference_run

import fastrms
from fastrms.kernels import cpu
from fastrms.method_state import MethodState

PARALLEL_N = max(cpu.PARALLEL_MIN_BYTES.values()) // 8 + 17  # float64 elements that run in parallel

CASES = [
    ("gd", {}),
    ("gd", {"weight_decay": 0.1}),
    ("gd", {"maximize": True, "clip_value": 0.5}),
    ("momentum", {}),
    ("momentum", {"nesterov": True, "momentum": 0.8}),
    ("momentum", {"dampening": 0.3, "weight_decay": 0.1}),
    ("momentum", {"dampening": 0.6, "dampen_first_step": True, "momentum": 0.6}),
    ("rmsprop", {}),
    ("rmsprop", {"eps_in_sqrt": False, "eps": 1e-8}),
    ("rmsprop", {"momentum": 0.9}),
    ("rmsprop", {"centered": True}),
    ("rmsprop", {"centered": True, "momentum": 0.5, "nesterov": True}),
    ("rmsprop", {"momentum": 0.9, "lr_in_momentum": True}),
    ("rmsprop", {"initial_scale": 1.0, "bias_correction": True, "gamma": 0.8}),
    ("rmsprop", {"initial_scale": 0.1, "bias_correction": True, "centered": True}),
    ("rmsprop", {"weight_decay": 0.05, "decoupled_weight_decay": True, "clip_norm": 1.0}),
    ("rmsprop", {"gamma": 0.0}),
    ("rmsprop", {"weight_decay": 0.5, "clip_value": 0.3, "decay_before_clip": True}),  # MXNet's order
    ("adagrad", {}),
    ("adagrad", {"lr_decay": 0.1, "initial_scale": 0.1, "eps_in_sqrt": False}),
    ("adam", {}),
    ("adam", {"amsgrad": True, "weight_decay": 0.01}),
    ("adam", {"weight_decay": 0.5, "clip_value": 0.3, "decay_before_clip": True}),
    ("adamw", {}),
    ("adam", {"epsilon_hat": True, "eps": 1e-3, "amsgrad": True}),
    ("adam", {"v_hat": True, "amsgrad": True, "eps_root": 1e-8, "beta2": 0.9}),  # Optax's AMSGrad
    ("adamw", {"nesterov": True, "v_hat": True, "amsgrad": True, "bias_correction_nu": False}),
    ("adam", {"nesterov": True, "beta1": 0.8, "bias_correction_mu": False}),
    ("nadam", {}),
    ("nadam", {"momentum_decay": 1.0, "beta1": 0.8, "weight_decay": 0.1}),
    ("adabelief", {}),
    ("adabelief", {"amsgrad": True, "v_hat": True, "eps_root": 1e-8, "beta1": 0.5}),
    ("radam", {}),  # (six steps: ρ_t passes 5 at the sixth)
    ("radam", {"epsilon_hat": False, "v_hat": True, "eps_root": 1e-8, "beta2": 0.9, "threshold": 4.5}),
    ("adamax", {}),
    ("adamax", {"eps_in_max": False, "eps": 1e-3, "beta1": 0.5}),
    ("adamax", {"eps": 0.0, "weight_decay": 0.1}),
    ("adadelta", {"lr": 1.0}),
    ("yogi", {}),
    ("yogi", {"eps": 1e-6, "eps_root": 1e-8, "beta2": 0.9, "initial_scale": 0.0}),
    ("lion", {"lr": 0.01}),
    ("lion", {"weight_decay": 0.1, "beta1": 0.8}),
]
STEPPER = fastrms.steppers.STEPPERS


def test_every_registered_method_has_a_reference_and_cases():
    assert set(REFERENCE_METHODS) == set(fastrms.methods.METHODS)
    assert {m for m, _ in CASES} == set(fastrms.methods.METHODS)
    assert set(STEPPER) == set(fastrms.methods.METHODS)


def _run(method, opts, x0, grads, dtype):
    x = x0.astype(dtype)
    opt = STEPPER[method](x, **opts)
    for g in grads:
        opt.step(g.astype(dtype))
    return x


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_yogis_second_moment_moves_by_the_sign_of_its_gap_as_optax_writes_it(dtype):
    """v ← v − ((1 − β2)·sign(v − g²))·g² bit for bit, in x's dtype: a gap above, below and at 0
    (v unchanged), and a NaN g (v NaN, as Optax's sign(NaN) makes it)."""
    g = np.array([0.5, -2.0, 3.0, 1.5, np.nan], dtype)
    v0 = np.array([1.0, 1.0, 9.0, 0.0, 1.0], dtype)
    opt = fastrms.Yogi(np.zeros(5, dtype), beta2=0.9)
    opt.load_state_dict({**opt.state_dict(), "v": v0})
    with np.errstate(invalid="ignore"):
        opt.step(g)
        expected = v0 - (dtype(1 - 0.9) * np.sign(v0 - g * g)) * (g * g)
    assert expected.dtype == dtype and opt.state["v"][2] == 9.0 and np.isnan(opt.state["v"][4])
    np.testing.assert_array_equal(opt.state["v"], expected)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_varying_h_is_computed_compiled_and_equals_the_python_function_bit_for_bit(dtype):
    """Where h changes every step (bias corrections, schedules, clip by norm), MethodState computes it
    with the method's coefficient function compiled: the same h as that function run by Python, bit
    for bit, past NAdam's t = 64 (its series) and RAdam's switch, and at a large t."""
    cases = CASES + [("rmsprop", {"lr": fastrms.schedules.cosine(0.1, 50), "clip_norm": 1.0}),
                     ("momentum", {"momentum": lambda t: 0.5 + 0.0004 * min(t, 1000), "nesterov": True}),
                     ("nadam", {"momentum_decay": 1.0, "beta1": 0.999}),
                     ("momentum", {"dampening": 0.9, "lr_in_momentum": True, "lr": 0.1, "weight_decay": 0.1})]
    g = np.array([0.5, -2.0, 3.0], dtype)
    compiled = 0
    for method, opts in cases:
        config = fastrms.presets.configure(method, opts)
        fast, python = MethodState(config, 3, dtype), MethodState(config, 3, dtype)
        python._coefficients = config.method.coefficients
        for t in [*range(80), 1000, 10**6]:
            fast.t = python.t = t
            assert fast.coefficients(g).tobytes() == python.coefficients(g).tobytes(), (method, opts, t)
        compiled += fast._coefficients is not config.method.coefficients
        assert (fast._coefficients is not config.method.coefficients) == config.varies, (method, opts)
    assert compiled >= 25  # (every Adam relative, Yogi, Adagrad's decay, the schedules ...)


# Every case on the serial kernels.  The prange kernels are the same templates compiled with prange, and
# each parallel compile costs the suite seconds: test_serial_and_parallel_are_bitwise_identical runs each
# method's case with the most options on them, which with this test covers them against the reference.
REFERENCE_RUNS = [(m, o, n) for m, o in CASES for n in (7, 1000)]


@pytest.mark.parametrize("method,opts,n", REFERENCE_RUNS,
                         ids=[f"{m}-{'-'.join(o) or 'default'}-{n}" for m, o, n in REFERENCE_RUNS])
def test_matches_reference(method, opts, n, rng):
    x0 = rng.normal(size=n)
    grads = [rng.normal(size=n) * 3 for _ in range(6)]
    ref = reference_run(method, x0, grads, **opts)
    np.testing.assert_allclose(_run(method, opts, x0, grads, np.float64), ref, rtol=1e-12, atol=1e-13)
    x32 = _run(method, opts, x0, grads, np.float32)
    assert x32.dtype == np.float32
    np.testing.assert_allclose(x32, ref, rtol=2e-5, atol=2e-5)


# Each method's case with the most options, in one dtype (the dtypes take turns: the prange template is
# the same code in both), and the checked kernel (its counts are prange reductions) for two of them.
_RICHEST = {m: max((o for m_, o in CASES if m_ == m), key=len) for m, _ in CASES}
BITWISE = [(m, o, (np.float32, np.float64)[i % 2], m in ("rmsprop", "adamw"))
           for i, (m, o) in enumerate(_RICHEST.items())]


@pytest.mark.parametrize("method,opts,dtype,checked", BITWISE,
                         ids=[f"{m}-{'-'.join(o) or 'default'}-{d.__name__}" for m, o, d, _ in BITWISE])
def test_serial_and_parallel_are_bitwise_identical(method, opts, dtype, checked, rng):
    n = 4099
    config = fastrms.presets.configure(method, opts)
    x0 = rng.normal(size=n).astype(dtype)
    grads = [rng.normal(size=n).astype(dtype) for _ in range(4)]
    finals = []
    for parallel in (False, True):
        e = MethodState(config, n, dtype)
        x = x0.copy()
        k = e.kernels.variant(checked=False, parallel=parallel)
        for g in grads:
            k(x, g, e.S, e.coefficients(g))
            e.t += 1
        out, counts = np.zeros_like(x), None
        if checked:
            kc = e.kernels.variant(checked=True, parallel=parallel)
            counts = kc(x, grads[0], e.S, e.coefficients(grads[0]), dtype(0.5), out)
            assert counts == (int(np.sum(np.abs(grads[0]) > dtype(0.5))), 0)
        finals.append((x, out, e.S.copy(), counts))
    (x1, o1, s1, c1), (x2, o2, s2, c2) = finals
    assert not np.array_equal(x1, x0)  # the steps moved x
    assert x1.tobytes() == x2.tobytes() and o1.tobytes() == o2.tobytes() and s1.tobytes() == s2.tobytes()
    assert c1 == c2


@pytest.mark.parametrize("method,template", [("rmsprop", cpu._step_rows_checked), ("adam", cpu._step_rows)])
def test_the_rows_kernels_serial_and_parallel_are_bitwise_identical_and_vectorized(method, template, rng):
    """A batch's kernels, over problems of their own coefficients, some of which have stopped; and
    each row's loop is SIMD in the parallel variant too (it was scalar there: 2.5x the serial
    kernel's time on 2 cores, where it should be about half)."""
    B, n = 37, 33
    config = fastrms.presets.configure(method, {})
    m = config.method
    x0 = rng.normal(size=B * n)
    grads = [rng.normal(size=B * n) for _ in range(3)]
    H = np.stack([MethodState(fastrms.presets.configure(method, {"lr": 0.01 * (1 + b)}), n, np.float64)
                  .coefficients(grads[0][:n]) for b in range(B)])
    active = rng.random(B) < 0.7
    checked = template is cpu._step_rows_checked
    finals = []
    for parallel in (False, True):
        kern = cpu._compile(template, m.rule, config.flags, m.nh, parallel, cache=False)
        e = MethodState(config, B * n, np.float64)
        x = x0.copy()
        big, bad = np.zeros(B, np.intp), np.zeros(B, np.intp)
        for g in grads:
            if checked:  # (out is the next x)
                out = x.copy()
                kern(x, g, e.S, H, active, 0.5, out, big, bad)
                x = out
            else:
                kern(x, g, e.S, H, active)
        finals.append((x, e.S.copy(), big, bad))
    (x1, s1, big1, bad1), (x2, s2, big2, bad2) = finals
    rows = x1.reshape(B, n)
    assert not np.array_equal(rows[active], x0.reshape(B, n)[active])  # the active rows moved
    assert np.array_equal(rows[~active], x0.reshape(B, n)[~active])  # the others did not
    assert x1.tobytes() == x2.tobytes() and s1.tobytes() == s2.tobytes()
    assert np.array_equal(big1, big2) and np.array_equal(bad1, bad2)
    if checked:
        assert np.array_equal(big1[active], np.sum(np.abs(grads[-1].reshape(B, n)[active]) > 0.5, axis=1))
    _assert_packed(method, "\n".join(kern.inspect_asm().values()))


def test_large_batches_use_the_parallel_rows_kernels():
    if numba.get_num_threads() < 2:
        pytest.skip("one thread: no parallel kernels")
    kernels = MethodState(fastrms.presets.configure("rmsprop", {}), 8, np.float64).kernels
    for lookup in (kernels.rows, kernels.rows_checked):
        assert "_par_" in _name(lookup(PARALLEL_N, 8)) and "_ser_" in _name(lookup(1000, 8))


def _name(kernel):
    return (kernel.py_func or kernel).__name__


def test_large_arrays_use_the_parallel_kernel_and_agree(rng):
    n = PARALLEL_N
    if numba.get_num_threads() < 2:
        pytest.skip("one thread: no parallel kernels")
    config = fastrms.presets.configure("rmsprop", {"momentum": 0.9, "centered": True})
    assert "_par_" in MethodState(config, n, np.float64).kernels.step(n, 8).py_func.__name__
    assert "_ser_" in MethodState(config, 1000, np.float64).kernels.step(1000, 8).py_func.__name__
    x0 = rng.normal(size=n)
    grads = [rng.normal(size=n) for _ in range(3)]
    ref = reference_run("rmsprop", x0, grads, momentum=0.9, centered=True)
    np.testing.assert_allclose(_run("rmsprop", {"momentum": 0.9, "centered": True}, x0, grads, np.float64),
                               ref, rtol=1e-12)


@pytest.mark.parametrize("arrays", [False, True], ids=["one array", "several arrays"])
def test_a_stepper_chooses_its_kernel_once_and_again_when_the_threads_change(monkeypatch, arrays):
    from fastrms.kernels import _threads

    if numba.get_num_threads() < 2:
        pytest.skip("one thread: no parallel kernels")
    x = np.zeros(PARALLEL_N)
    opt = fastrms.RMSProp([x[:100], x[100:]] if arrays else x, lr=0.1)
    kernels, looked, ran = opt._mstate.kernels, [], []
    which = "arrays" if arrays else "step"
    real = getattr(kernels, which)

    def spy(n, itemsize):  # each lookup, and which kernel each step runs
        k = real(n, itemsize)
        looked.append(k.py_func.__name__)
        return lambda *args: ran.append(k.py_func.__name__) or k(*args)

    monkeypatch.setattr(kernels, which, spy)
    g = [np.ones(100), np.ones(x.size - 100)] if arrays else np.ones_like(x)
    for _ in range(3):
        opt.step(g)
    assert len(looked) == 1 and len(ran) == 3 and "_par_" in ran[0]  # looked up once, not every step
    # a fork under GNU OpenMP: the child must switch to the serial kernel
    monkeypatch.setattr(_threads, "_forked_under_omp", True)
    monkeypatch.setattr(_threads, "epoch", _threads.epoch + 1)
    opt.step(g)
    assert len(looked) == 2 and "_ser_" in ran[3]
    ref = np.zeros_like(x)  # and the steps are the same as without the switch
    plain = fastrms.RMSProp(ref, lr=0.1)
    for _ in range(4):
        plain.step(np.ones_like(x))
    assert x.tobytes() == ref.tobytes()


def test_checked_kernel_counts_nonfinite_and_leaves_x_alone():
    e = MethodState(fastrms.presets.configure("gd", {"lr": 1.0}), 4, np.float64)
    x = np.array([1.0, 2.0, 3.0, 4.0])
    g = np.array([0.0, np.nan, np.inf, 1e-9])
    out = np.empty_like(x)
    n_big, n_bad = e.kernels.step_checked(4)(x, g, e.S, e.coefficients(g), 1e-6, out)
    assert (n_big, n_bad) == (1, 2)  # inf is big, NaN is not; NaN and -inf are non-finite
    assert x.tolist() == [1.0, 2.0, 3.0, 4.0]


@pytest.mark.parametrize("method,opts", [("rmsprop", {"momentum": 0.9, "centered": True}),
                                         ("adam", {"amsgrad": True}), ("adadelta", {}),
                                         ("rmsprop", {"eps": 0.0, "centered": True}), ("adam", {"eps": 0.0})])
def test_float32_kernel_does_not_promote_to_float64(method, opts):
    """A float64 literal in a float32 kernel would show up as fpext / double in the LLVM IR."""
    config = fastrms.presets.configure(method, opts)
    m = config.method
    kern = cpu._compile(cpu._step, m.rule, config.flags, m.nh, parallel=False, cache=False)
    x = np.ones(8, np.float32)
    S = np.zeros((len(config.rows), 8), np.float32)
    kern(x, x.copy(), S, np.ones(m.nh, np.float32))
    ir = kern.inspect_llvm(kern.signatures[0])
    assert "sqrt.f32" in ir or "sqrtf" in ir
    assert "fpext" not in ir and "llvm.sqrt.f64" not in ir


# Numba 0.59's LLVM 14 leaves these two scalar (the same results, slower); .ci/minimums runs the
# suite on the oldest versions pyproject.toml accepts
_OLD_LLVM = pytest.mark.xfail(tuple(int(v) for v in numba.__version__.split(".")[:2]) < (0, 60),
                              reason="Numba 0.59 (LLVM 14) does not vectorize this kernel", strict=True)


@pytest.mark.parametrize("method,opts", [
    ("rmsprop", {}), pytest.param("rmsprop", {"momentum": 0.9, "centered": True}, marks=_OLD_LLVM),
    pytest.param("adam", {"amsgrad": True}, marks=_OLD_LLVM), ("adadelta", {}), ("momentum", {}),
    ("rmsprop", {"eps": 0.0}), ("adam", {"eps": 0.0}), ("adamax", {}), ("adamax", {"eps": 0.0})])
def test_serial_kernels_are_simd_vectorized(method, opts):
    """Packed square roots / multiplies in the serial kernel: dead flag branches must be pruned."""
    config = fastrms.presets.configure(method, opts)
    m = config.method
    kern = cpu._compile(cpu._step, m.rule, config.flags, m.nh, parallel=False, cache=False)
    x = np.ones(64)
    kern(x, x.copy(), np.zeros((len(config.rows), 64)), np.ones(m.nh))
    _assert_packed(method, kern.inspect_asm(kern.signatures[0]))


def _assert_packed(method, asm):
    machine = platform.machine().lower()
    op = {"momentum": "mul", "adamax": "div"}.get(method, "sqrt")
    if machine in ("x86_64", "amd64"):
        packed = rf"\b(v)?{op}pd\b"  # SSE2 / AVX packed doubles
    elif machine in ("aarch64", "arm64"):
        packed = rf"\bf{op}\s+v\d+\.2d"  # NEON, two doubles a register
    else:
        pytest.skip(f"no packed-instruction names known for {machine}")
    assert re.search(packed, asm)


def test_cached_functions_that_compile_in_other_files_code_carry_the_source_tag():
    """Numba's disk cache checks only the file that defines a function.  A cached function that
    compiles in code from another fastrms file (a register_jitable helper, another dispatcher)
    would keep that code stale after the other file is edited, as scheduled_values once kept
    schedule_value's.  Such functions must be bound with the source tag (kernels._jit.bind)."""
    import importlib
    import pkgutil
    import types

    from numba.core.dispatcher import Dispatcher

    from fastrms.kernels._jit import source_tag

    def names(code):
        yield from code.co_names
        for c in code.co_consts:
            if isinstance(c, types.CodeType):
                yield from names(c)

    checked, offenders = 0, []
    for info in pkgutil.walk_packages(fastrms.__path__, "fastrms."):
        if info.name.endswith("__main__"):  # (it runs the command line)
            continue
        try:
            mod = importlib.import_module(info.name)
        except ImportError:  # an optional backend's dependencies
            continue
        for obj in vars(mod).values():
            if not isinstance(obj, Dispatcher) or type(obj._cache).__name__ == "NullCache":
                continue
            fn = obj.py_func
            if source_tag() in fn.__name__:
                continue
            checked += 1
            for name in set(names(fn.__code__)):
                ref = fn.__globals__.get(name)
                where = getattr(getattr(ref, "py_func", ref), "__module__", "") or ""
                if (isinstance(ref, (types.FunctionType, Dispatcher)) and where.startswith("fastrms")
                        and where != fn.__module__):
                    offenders.append(f"{fn.__module__}.{fn.__name__} uses {where}.{name}")
    assert checked >= 5 and not offenders, offenders


def test_the_source_tag_covers_every_source_file_and_nothing_in_caches(tmp_path):
    """An edit to any .py file of the package changes the tag (the kernels' cache names carry it);
    Numba's cache files, which pile up in __pycache__, neither change it nor are walked."""
    from fastrms.kernels._jit import sources_hash

    (tmp_path / "methods").mkdir()
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "a.py").write_text("A = 1\n")
    rule = tmp_path / "methods" / "rule.py"
    rule.write_text("def rule(): return 1\n")
    tag = sources_hash(tmp_path)
    (tmp_path / "__pycache__" / "rule.py").write_text("anything\n")
    (tmp_path / "__pycache__" / "rule.rule-1.py311.nbi").write_bytes(b"\0")
    (tmp_path / "notes.txt").write_text("not source\n")
    assert sources_hash(tmp_path) == tag
    rule.write_text("def rule(): return 2\n")
    assert sources_hash(tmp_path) != tag


from hypothesis import assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=40, deadline=None)
@given(gamma=st.floats(0.0, 0.999), eps=st.floats(1e-12, 1e-2), lr=st.floats(1e-4, 1.0),
       momentum=st.sampled_from([0.0, 0.5, 0.9]), centered=st.booleans(), eps_in_sqrt=st.booleans(),
       weight_decay=st.sampled_from([0.0, 0.01]), n=st.integers(1, 40), seed=st.integers(0, 2 ** 16))
def test_rmsprop_matches_reference_for_any_hyperparameters(gamma, eps, lr, momentum, centered, eps_in_sqrt,
                                                          weight_decay, n, seed):
    # centered with γ near 0 estimates a variance from one sample: s − m² is rounding noise,
    # and no implementation has a meaningful answer there (PyTorch does not clamp it either)
    assume(not centered or gamma >= 0.1)
    rng = np.random.default_rng(seed)
    opts = dict(gamma=gamma, eps=eps, lr=lr, momentum=momentum, centered=centered, eps_in_sqrt=eps_in_sqrt,
                weight_decay=weight_decay)
    x0 = rng.normal(size=n)
    grads = [rng.normal(size=n) for _ in range(4)]
    ref = reference_run("rmsprop", x0, grads, **opts)
    # s − m² cancels partly: an ulp of difference in association order grows to ~1e-10 relative
    tol = 1e-8 if centered else 1e-12
    np.testing.assert_allclose(_run("rmsprop", opts, x0, grads, np.float64), ref, rtol=tol, atol=tol)


def test_nadams_momentum_product_from_t_alone_equals_the_running_product():
    """Π_t = μ_1 ⋯ μ_t, which torch and Keras carry from step to step, computed from t (multiplied out
    up to t = 64, a series after, 0 once 1 − Π rounds to 1), over β1 and ψ of both libraries' ranges."""
    from fastrms.methods.adam import nadam_mu, nadam_mu_product

    for b1 in (0.5, 0.9, 0.999):
        for psi in (0.0, 0.004, 1.0):
            running = 1.0
            for t in range(1, 2500):
                running *= nadam_mu(b1, psi, t)
                mine = nadam_mu_product(b1, psi, t)
                if running > 1e-19:
                    assert abs(mine - running) <= 1e-13 * running, (b1, psi, t)
                else:
                    assert 1.0 - mine == 1.0 and mine <= 1e-19, (b1, psi, t)
