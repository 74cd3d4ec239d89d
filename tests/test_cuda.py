"""The CUDA backend, under Numba's CUDA simulator (conftest.py turns it on; CI has no GPU).

The simulator runs one Python thread per GPU thread and computes in NumPy, so
these tests use tiny arrays on one block of 32 threads, compare with the CPU
kernels, and read float32 purity from PTX compiled (without a GPU) in a
subprocess that has the simulator off.
"""

import copy
import functools
import gc
import os
import re
import subprocess
import sys
import textwrap
import weakref

import numpy as np
import pytest

# numba 0.68 still ships a deprecated built-in numba.cuda; fastrms needs NVIDIA's numba-cuda
pytest.importorskip("numba_cuda", reason="needs numba-cuda: pip install 'fastrms[cuda13]'")
cuda = pytest.importorskip("numba.cuda")

import fastrms  # noqa: E402
from fastrms.kernels import cuda as fcuda  # noqa: E402

SIM = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
pytestmark = pytest.mark.skipif(not fastrms.cuda_available(), reason="no CUDA device and no simulator")

CASES = [("rmsprop", {}), ("rmsprop", {"momentum": 0.9, "centered": True}),
         ("rmsprop", {"eps_in_sqrt": False, "clip_norm": 0.5, "weight_decay": 0.1}),
         ("adam", {"amsgrad": True, "weight_decay": 0.5, "clip_value": 0.3, "decay_before_clip": True}),
         ("momentum", {"nesterov": True}), ("adadelta", {}),
         ("yogi", {}), ("lion", {"weight_decay": 0.1}), ("adamax", {"eps_in_max": False})]
STEPPERS = fastrms.steppers.STEPPERS


@pytest.mark.parametrize("method,opts", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_device_stepper_matches_cpu(method, opts, dtype, rng):
    x0 = rng.normal(size=(7, 9)).astype(dtype)
    grads = [rng.normal(size=(7, 9)).astype(dtype) for _ in range(3)]
    x_cpu = x0.copy()
    cpu_opt = STEPPERS[method](x_cpu, **opts)
    x_dev = cuda.to_device(x0)
    dev_opt = STEPPERS[method](x_dev, **opts)
    for g in grads:
        cpu_opt.step(g)
        dev_opt.step(cuda.to_device(g))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(x_dev.copy_to_host(), x_cpu, rtol=tol, atol=tol)
    assert dev_opt.t == 3 and set(dev_opt.state) == set(cpu_opt.state)
    saved = dev_opt.state_dict()
    np.testing.assert_allclose(saved[cpu_opt._mstate.names[0]],
                               cpu_opt.state_dict()[cpu_opt._mstate.names[0]], rtol=tol, atol=tol)
    dev_opt.load_state_dict(cpu_opt.state_dict())  # and the next steps agree from that state
    x_dev.copy_to_device(x_cpu)
    for g in grads[:2]:
        cpu_opt.step(g)
        dev_opt.step(cuda.to_device(g))
    np.testing.assert_allclose(x_dev.copy_to_host(), x_cpu, rtol=tol, atol=tol)
    assert dev_opt.t == cpu_opt.t == 5


def _host(x):
    """x on the host, whichever device array the user's function was given (CuPy's when it is
    installed, else Numba's)."""
    if hasattr(x, "copy_to_host"):
        return x.copy_to_host()
    return x.get() if hasattr(x, "get") else np.asarray(x)


def _F(x):
    return float(np.sum((_host(x) - 3.0) ** 2))


def _dF(x):
    return cuda.to_device(2.0 * (_host(x) - 3.0))


def test_minimize_on_the_device_matches_the_cpu():
    opts = {"lr": 0.05, "maxiter": 40, "momentum": 0.9, "history": True, "gtol": 0}
    host = fastrms.minimize(_F, lambda x: 2.0 * (x - 3.0), np.zeros((3, 4)), options=opts)
    dev = fastrms.minimize(_F, _dF, np.zeros((3, 4)), options={**opts, "backend": "cuda"})
    assert isinstance(dev.x, np.ndarray) and dev.x.shape == (3, 4)  # host in, host out
    np.testing.assert_allclose(dev.x, host.x, rtol=1e-12)
    np.testing.assert_allclose(dev.history["loss"], host.history["loss"], rtol=1e-12)
    np.testing.assert_allclose(dev.history["gnorm"], host.history["gnorm"], rtol=1e-12)
    assert dev.nit == host.nit == 40 and dev.status == host.status


def test_a_minimizer_on_the_device_plans_once_and_equals_minimize():
    opts = {"lr": 0.05, "maxiter": 8, "gamma": 0.9, "gtol": 0, "backend": "cuda"}
    solve = fastrms.Minimizer(_F, _dF, options=opts)
    for start in (0.0, 1.0, 2.0):
        x0 = np.full((2, 3), start)
        a, b = solve(x0), fastrms.minimize(_F, _dF, x0, options=opts)
        assert isinstance(a.x, np.ndarray) and a.x.tobytes() == b.x.tobytes()
        assert (a.nit, a.status, a.fun) == (b.nit, b.status, b.fun)
    assert len(solve._plans) == 1  # the three calls shared the first one's plan


def test_device_x0_gives_a_device_result_and_is_not_mutated():
    x0 = cuda.to_device(np.zeros(5))
    res = fastrms.minimize(_F, _dF, x0, method="gd", options={"lr": 0.1, "gtol": 1e-8})
    assert res.success and fcuda.array_kind(res.x) == "numba"
    np.testing.assert_allclose(res.x.copy_to_host(), 3.0, atol=1e-8)
    assert not x0.copy_to_host().any()


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
def test_device_stopping_tests_and_check_every():  # the simulator computes in NumPy: a divergence warns
    res = fastrms.minimize(_F, _dF, np.zeros(4), method="rmsprop",
                           options={"lr": 0.4, "gamma": 1.0, "maxiter": 10000, "backend": "cuda"})
    assert res.status == 3 and np.all(np.isfinite(res.x))  # diverged, last finite x
    every = fastrms.minimize(_F, _dF, np.zeros(4), method="gd",
                             options={"lr": 0.1, "gtol": 1e-6, "check_every": 5, "backend": "cuda"})
    assert every.success and every.nit % 5 == 0 and np.max(np.abs(every.jac)) <= 1e-6


def test_device_errors():
    opt = fastrms.RMSProp(cuda.to_device(np.zeros(4, np.float32)))
    with pytest.raises(TypeError, match="dtype"):
        opt.step(cuda.to_device(np.zeros(4)))
    with pytest.raises(ValueError, match="shape"):
        opt.step(cuda.to_device(np.zeros(5, np.float32)))
    one, x_cpu = fastrms.RMSProp(cuda.to_device(np.ones(1)), lr=0.1), np.ones(1)
    cpu_one = fastrms.RMSProp(x_cpu, lr=0.1)
    # one element for one, as on the CPU
    for g in (2.0, np.full((1, 1), -1.0), cuda.to_device(np.full((1, 1), 3.0))):
        one.step(g)
        cpu_one.step(g if not hasattr(g, "copy_to_host") else g.copy_to_host())
    np.testing.assert_allclose(one.x.copy_to_host(), x_cpu, rtol=1e-15)
    with pytest.raises(ValueError, match="NaN or inf"):
        fastrms.minimize(_F, _dF, cuda.to_device(np.array([1.0, np.nan])))
    with pytest.raises(ValueError, match="backend='cuda'"):
        fastrms.minimize(_F, _dF, cuda.to_device(np.zeros(2)), options={"backend": "cpu"})
    with pytest.raises(TypeError, match="float32 or float64"):
        fastrms.RMSProp(cuda.to_device(np.zeros(3, np.int64)))
    with pytest.raises(ValueError, match="in_place=True runs on the CPU backend"):
        fastrms.minimize(_F, _dF, cuda.to_device(np.zeros(2)), options={"in_place": True})
    for batched in (False, True):
        with pytest.raises(ValueError, match=r"finite differences \(jac='2-point'\) run on the CPU backend"):
            fastrms.minimize(_F, cuda.to_device(np.zeros((2, 2))), jac="2-point",
                             options={"batched": batched})


def test_a_gradient_seen_before_is_checked_against_each_stepper():
    """The flat view of a gradient's memory is reused step after step; each use is still checked."""
    g = cuda.to_device(np.ones(4))
    fastrms.RMSProp(cuda.to_device(np.zeros(4))).step(g)
    with pytest.raises(ValueError, match="shape"):
        fastrms.RMSProp(cuda.to_device(np.zeros((2, 2)))).step(g)
    with pytest.raises(TypeError, match="dtype"):
        fastrms.RMSProp(cuda.to_device(np.zeros(4, np.float32))).step(g)


def test_gradients_are_not_kept_alive():
    """Views and launch arguments reused across steps hold no reference to the user's arrays."""
    opt = fastrms.RMSProp(cuda.to_device(np.zeros(64)), lr=0.1)
    refs = []
    for _ in range(3):
        g = cuda.to_device(np.ones(64))
        opt.step(g)
        refs.append(weakref.ref(g))
        del g
    gc.collect()
    assert [r() for r in refs] == [None] * 3


def test_a_parameter_that_requires_grad_is_a_device_array():
    """torch raises RuntimeError, not AttributeError, for the interface of a tensor that requires
    grad: recognizing one must not ask for it."""
    class Parameter:
        __module__ = "torch"
        is_cuda = True

        @property
        def __cuda_array_interface__(self):
            raise RuntimeError("Can't get __cuda_array_interface__ on Variable that requires grad")

    assert fcuda.owns(Parameter())


class _LazyTensor:
    """What fastrms asks of a CUDA tensor, for one whose memory does not hold its values."""
    __module__ = "torch"
    is_cuda = True

    def __init__(self, neg=False, zero=False):
        self.neg, self.zero = neg, zero

    def is_contiguous(self):
        return True

    def is_neg(self):
        return self.neg

    def _is_zerotensor(self):
        return self.zero

    def detach(self):
        return self

    @property
    def __cuda_array_interface__(self):
        raise AssertionError("its memory was read")


@pytest.mark.parametrize("lazy,match", [({"neg": True}, "negative bit"), ({"zero": True}, "ZeroTensor")])
def test_lazy_cuda_tensors_are_refused_before_their_memory_is_read(lazy, match, monkeypatch):
    """torch's CUDA Array Interface does not refuse a lazily negated view (its memory holds −g: a
    silent step the wrong way) or a ZeroTensor (a null pointer); fastrms does, as x or as g."""
    t = _LazyTensor(**lazy)
    for read in (fcuda.as_device, fcuda._interface, fastrms.RMSProp):
        with pytest.raises(TypeError, match=match):
            read(t)
    x = cuda.to_device(np.zeros(3))
    opt = fastrms.RMSProp(x, lr=0.1)
    with pytest.raises(TypeError, match=match):
        opt.step(t)
    assert opt.t == 0 and (x.copy_to_host() == 0).all()
    monkeypatch.setattr(fcuda, "_simulator", lambda: False)  # (the check is not a blanket refusal)
    with pytest.raises(AssertionError, match="memory was read"):
        fcuda._interface(_LazyTensor())


@pytest.mark.skipif(SIM, reason="a CUDA tensor needs a real GPU")
def test_lazy_cuda_tensors_from_torch_are_refused():
    torch = pytest.importorskip("torch")
    x = torch.zeros(3, dtype=torch.float64, device="cuda")
    opt = fastrms.RMSProp(x, lr=0.1)
    with pytest.raises(TypeError, match="negative bit"):
        opt.step(torch._neg_view(torch.ones(3, dtype=torch.float64, device="cuda")))
    with pytest.raises(TypeError, match="ZeroTensor"):
        opt.step(torch._efficientzerotensor(3, dtype=torch.float64, device="cuda"))
    with pytest.raises(TypeError, match="negative bit"):
        fastrms.RMSProp(torch._neg_view(torch.ones(3, device="cuda")))
    assert opt.t == 0 and (x.cpu().numpy() == 0).all()
    opt.step(torch._neg_view(torch.ones(3, dtype=torch.float64, device="cuda")).resolve_neg())
    assert (x.cpu().numpy() > 0).all()  # −1 resolved: the step goes up


@pytest.mark.skipif(SIM, reason="the simulator launches through numba-cuda")
def test_steps_take_the_lean_launch_on_a_gpu():
    """After the first launch, steps go to the driver directly (fcuda.Launch); were its argument
    layout wrong, the results would be, and test_device_stepper_matches_cpu would fail."""
    launches = set()
    for dtype in (np.float32, np.float64):  # the same launch shape: one Launch each
        opt = fastrms.RMSProp(cuda.to_device(np.zeros(1000, dtype)), lr=0.1)
        for _ in range(3):
            opt.step(cuda.to_device(np.ones(1000, dtype)))
        # this stepper's own launch (the cache also holds other tests' launches, some never called)
        shape = fcuda.launch_config(1000, np.dtype(dtype).itemsize)
        launches.add(opt._mstate.kernels.launch(fcuda._step, *shape, dtype))
    assert len(launches) == 2
    assert all(k._lean and k.fallbacks == 0 for k in launches), [(k._lean, k.fallbacks) for k in launches]


@pytest.mark.skipif(SIM, reason="a CUDA tensor needs a real GPU")
def test_a_stepper_over_a_cuda_nn_parameter_matches_the_cpu():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    x0, grads = rng.normal(size=(3, 5)), [rng.normal(size=(3, 5)) for _ in range(4)]
    p = torch.nn.Parameter(torch.as_tensor(x0, device="cuda"))
    opt, ref = fastrms.RMSProp(p, lr=0.1, momentum=0.5), fastrms.RMSProp(x0.copy(), lr=0.1, momentum=0.5)
    for g in grads:
        p.grad = torch.as_tensor(g, device="cuda")
        opt.step(p.grad)
        ref.step(g)
    np.testing.assert_allclose(p.detach().cpu().numpy(), ref.x, rtol=1e-12)


def test_pack_of_device_arrays_is_one_device_buffer_of_views(rng):
    """fastrms.pack of CUDA arrays: one device buffer (one launch a step for a model's arrays),
    views of it, a dtype change made on the way (by the host: Numba does not cast on the device)."""
    W, b = rng.normal(size=(3, 2)), rng.normal(size=2).astype(np.float32)
    flat, (vW, vb) = fastrms.pack([cuda.to_device(W), cuda.to_device(b)])
    assert fcuda.owns(flat) and flat.shape == (8,) and flat.dtype == np.float64 and vW.shape == (3, 2)
    np.testing.assert_array_equal(flat.copy_to_host(), np.concatenate([W.ravel(), b.astype(np.float64)]))
    fastrms.RMSProp(flat, lr=0.1).step(cuda.to_device(np.ones(8)))
    after = flat.copy_to_host()
    assert (after != np.concatenate([W.ravel(), b])).all()  # the views see the step
    np.testing.assert_array_equal(np.concatenate([vW.copy_to_host().ravel(), vb.copy_to_host()]), after)
    with pytest.raises(TypeError, match="one kind, got CUDA arrays and NumPy arrays"):
        fastrms.pack([cuda.to_device(W), W])
    for x in ([cuda.to_device(W), cuda.to_device(b)], [W, cuda.to_device(b)]):  # (a stepper over them)
        with pytest.raises(TypeError, match=r"(parameters|CPU); on a GPU, fastrms\.pack them"):
            fastrms.RMSProp(x)


@pytest.mark.skipif(SIM, reason="a CUDA tensor needs a real GPU")
def test_pack_moves_a_cuda_torch_model_into_one_buffer():
    """tests/test_torch_parity.py's packed model, on the GPU: the buffer and views are CUDA
    tensors, and the steps are the CPU stepper's over the list (to the GPU's matmul rounding)."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(3)
    cpu_model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)).double()
    model = copy.deepcopy(cpu_model).cuda()
    params = list(model.parameters())
    flat, views = fastrms.pack(params)
    gflat, gviews = fastrms.pack([torch.zeros_like(p) for p in params])
    assert flat.is_cuda and gflat.is_cuda and views[0].data_ptr() == flat.data_ptr()
    for p, v, g in zip(params, views, gviews, strict=True):
        p.data, p.grad = v, g
    X, y = torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 1, dtype=torch.float64)
    opt, ref = fastrms.RMSProp(flat, lr=0.01), fastrms.RMSProp(list(cpu_model.parameters()), lr=0.01)
    for _ in range(3):
        gflat.zero_()
        ((model(X.cuda()) - y.cuda()) ** 2).mean().backward()
        opt.step(gflat)
        ref.zero_grad()
        ((cpu_model(X) - y) ** 2).mean().backward()
        ref.step()
    for a, b in zip(model.parameters(), cpu_model.parameters(), strict=True):
        np.testing.assert_allclose(a.detach().cpu().numpy(), b.detach().numpy(), rtol=1e-9, atol=1e-12)


def test_launch_config():
    if SIM:
        assert fcuda.launch_config(10_000) == fcuda.SIMULATOR_GRID
    t = fcuda.THREADS_PER_BLOCK
    assert fcuda.grid(1, 132) == (1, t)  # an H100 has 132 multiprocessors
    assert fcuda.grid(1000, 132) == (-(-1000 // t), t)
    assert fcuda.grid(10**9, 132) == (fcuda.BLOCKS_PER_SM * 132, t)  # float32: grid-stride beyond this
    assert fcuda.grid(10**9, 132, itemsize=8) == (-(-10**9 // t), t)  # float64: one thread per element
    blocks, threads = fcuda.grid(10**6, 132)
    assert blocks * threads >= 10**6 // 4 and threads <= 1024


def _needs_a_numba_cuda_that_compiles():
    try:
        fcuda.check_numpy_support()
    except fcuda.CudaUnavailable as e:  # (the simulator compiles nothing: only PTX needs it)
        pytest.skip(str(e))


def _no_sim(code):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env={**env, "PYTHONPATH": os.pathsep.join(sys.path)}, timeout=300)


PTX_CASES = [("rmsprop", {"momentum": 0.9, "centered": True}), ("adam", {"amsgrad": True}), ("adadelta", {}),
             ("rmsprop", {"eps": 0.0, "centered": True}), ("yogi", {}), ("lion", {"weight_decay": 0.1})]


def test_float32_ptx_has_no_float64_instruction():
    """All cases in one subprocess (each start of numba-cuda costs seconds).  Every method's rule in
    the plain step, and every template (the batched rows kernels too, which the simulator runs but
    never compiles for a device) with the first case: the templates do not depend on the method,
    and each PTX compile costs the suite half a second.  The norms' reduction is float64 inside."""
    _needs_a_numba_cuda_that_compiles()
    out = _no_sim(rf"""
        import re
        import numpy as np
        from fastrms import presets
        from fastrms.kernels import cuda
        for i, (method, opts) in enumerate({PTX_CASES!r}):
            c = presets.configure(method, opts)
            for t in ("step", "step_checked", "step_rows", "step_rows_checked")[:4 if i == 0 else 1]:
                ptx = cuda.ptx(t, c.method.rule, c.flags, c.method.nh, np.float32)
                body = [l for l in ptx.splitlines() if not l.strip().startswith(("//", "."))]
                f64 = [l for l in body if re.search(r"\.f64\b", l)]  # an f64 instruction, not register %f64
                assert not f64, (method, opts, t, f64[:5])
                assert method == "lion" or any("sqrt.rn.f32" in l for l in body), (method, opts, t)
                # the rule is inlined
                assert not any(re.match(r"\s*call", l) for l in body), (method, opts, t)
            if i == 0:
                ptx64 = cuda.ptx("step", c.method.rule, c.flags, c.method.nh, np.float64)
                assert re.search(r"\.f64", ptx64)  # and the test can tell the difference
                # the norms' reduction squares a float32 g in float64, where the simulator's
                # float() would hide a float32 square (it overflows from |g_i| ≈ 1.8e19)
                ptx = cuda.ptx("reduce", None, (), 0, np.float32)
                assert re.search(r"cvt\.f64\.f32", ptx) and re.search(r"(mul|fma\.rn)\.f64", ptx)
                ptx = cuda.ptx("broadcast", None, (), 0, np.float32)  # (a batch's h, copied to its rows)
                assert re.search(r"st\.global\.[bf]32", ptx) and not re.search(r"\.f64\b", ptx), ptx
                # a sweep of η fills its rows on the device: every method's finish compiles for it,
                # computes in float64 as the host does and stores x's dtype
                from fastrms.methods import METHODS
                finishes = {{}}  # (Adam's variants share Adam's parts)
                for m, meth in METHODS.items():
                    if meth.parts:
                        finishes.setdefault(meth.parts[1], m)
                assert len(finishes) >= 3, finishes
                for m in finishes.values():  # (and a grid's fill, its powers unpacked a group)
                    cm = presets.configure(m, {{}})
                    for groups in (False, True):
                        ptx = cuda.fill_ptx(cm.method.parts, cm.packed(), np.float32, groups=groups)
                        assert re.search(r"cvt\.rn\.f32\.f64", ptx) and re.search(r"st\.global\.f32", ptx), m
                        assert not re.search(r"^\s*call", ptx, re.M), m
            print("PTX-OK", method)
    """)
    if "PTX-OK" not in out.stdout and ("NVVM" in out.stderr or "libnvvm" in out.stderr.lower()):
        pytest.skip("no NVVM here to compile PTX")
    assert out.stdout.count("PTX-OK") == len(PTX_CASES), out.stderr[-2000:]


def test_backend_cuda_without_a_gpu_is_a_clear_error():
    out = _no_sim("""
        import numpy as np, fastrms
        if fastrms.cuda_available():
            print("HAS-GPU")
        else:
            try:
                fastrms.minimize(lambda x: 0.0, lambda x: x, np.ones(2), options={"backend": "cuda"})
            except RuntimeError as e:
                print("ERR:", e)
    """)
    if "HAS-GPU" in out.stdout:
        pytest.skip("a real GPU is present")
    assert "ERR:" in out.stdout and "backend='cpu'" in out.stdout, out.stdout + out.stderr[-2000:]


def test_concurrent_device_runs_do_not_stop_each_other(monkeypatch):
    """The stop flags and step stamps belong to each run, not to the process."""
    import threading
    import time

    if SIM:  # the simulator cannot run two launches at once: take turns launch by launch
        from numba.cuda.simulator import kernel

        lock, launch = threading.Lock(), kernel.FakeCUDAKernel.__call__

        def one_at_a_time(self, *args):
            with lock:
                return launch(self, *args)

        monkeypatch.setattr(kernel.FakeCUDAKernel, "__call__", one_at_a_time)
        # a busy host: other threads run between a launch and the read-back of its flags
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

        read = FakeCUDAArray.copy_to_host

        def slow_read(self, *args, **kwargs):
            time.sleep(0.002)
            return read(self, *args, **kwargs)

        monkeypatch.setattr(FakeCUDAArray, "copy_to_host", slow_read)

    def solve(lr, out, i):
        out[i] = fastrms.minimize(_F, _dF, np.zeros(4), method="gd",
                                  options={"lr": lr, "gtol": 1e-6, "backend": "cuda"})

    lrs = [0.05, 0.2, 0.1]
    alone = [None] * 3
    for i, lr in enumerate(lrs):
        solve(lr, alone, i)
    together = [None] * 3
    threads = [threading.Thread(target=solve, args=(lr, together, i)) for i, lr in enumerate(lrs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, b in zip(together, alone, strict=True):
        assert a.nit == b.nit and a.status == b.status == 0
        np.testing.assert_array_equal(a.x, b.x)


# -- batched problems on the device: a 2-D launch of the same rules ---------------------------------

def _rows_F(X):
    return 0.5 * np.sum((_host(X) - 3.0) ** 2, axis=1)


def _rows_dF(X):
    host = _host(X)
    return cuda.to_device(2.0 * (host - 3.0) * np.arange(1, host.shape[0] + 1)[:, None])


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
def test_batched_minimize_on_the_device_matches_the_cpu():
    B = 5
    lr = np.array([0.01, 0.05, 0.1, 0.2, 1e3])  # the last diverges under gd
    opts = {"lr": lr, "maxiter": 60, "gtol": 1e-3, "batched": True}
    host = fastrms.minimize(lambda X: _rows_F(X), lambda X: _rows_dF(X).copy_to_host(), np.zeros((B, 3)),
                            method="gd", options=opts)
    dev = fastrms.minimize(_rows_F, _rows_dF, np.zeros((B, 3)), method="gd",
                           options={**opts, "backend": "cuda"})
    assert set(host.status) >= {0, 1, 3}
    np.testing.assert_array_equal(dev.status, host.status)
    np.testing.assert_array_equal(dev.nit, host.nit)
    np.testing.assert_allclose(dev.x, host.x, rtol=1e-12)
    # the history of batched problems on the device: (steps, B), as on the host
    opts = {**opts, "maxiter": 12, "history": True, "history_every": 5, "trajectory": True}
    host = fastrms.minimize(lambda X: _rows_F(X), lambda X: _rows_dF(X).copy_to_host(), np.zeros((B, 3)),
                            method="gd", options=opts)
    dev = fastrms.minimize(_rows_F, _rows_dF, np.zeros((B, 3)), method="gd",
                           options={**opts, "backend": "cuda"})
    np.testing.assert_array_equal(dev.history["step"], [0, 5, 10, 12])
    for key in ("loss", "gnorm"):
        assert dev.history[key].shape == (4, B)
        np.testing.assert_allclose(dev.history[key], host.history[key], rtol=1e-12)
    assert dev.trajectory.shape == (13, B, 3)
    np.testing.assert_allclose(dev.trajectory, host.trajectory, rtol=1e-12)
    # stopping tests every 4th step (each a copy of B counts to the host): as on the host
    opts = {"lr": np.array([0.01, 0.05, 0.1, 0.2, 1e7]), "maxiter": 60, "gtol": 1e-3, "batched": True,
            "check_every": 4}  # the last overflows between two tests
    host = fastrms.minimize(lambda X: _rows_F(X), lambda X: _rows_dF(X).copy_to_host(), np.zeros((B, 3)),
                            method="gd", options=opts)
    dev = fastrms.minimize(_rows_F, _rows_dF, np.zeros((B, 3)), method="gd",
                           options={**opts, "backend": "cuda"})
    assert set(host.status) >= {0, 1} and all(host.nit[host.status == 0] % 4 == 0)
    assert "between two stopping tests" in host.message[-1] and host.nit[-1] % 4 == 1
    np.testing.assert_array_equal(dev.status, host.status)
    np.testing.assert_array_equal(dev.nit, host.nit)
    np.testing.assert_array_equal(dev.message, host.message)
    np.testing.assert_allclose(dev.x, host.x, rtol=1e-12)


def test_batched_stepper_on_the_device_matches_the_cpu(rng):
    X = rng.normal(size=(3, 4)).astype(np.float32)
    grads = [rng.normal(size=(3, 4)).astype(np.float32) for _ in range(4)]
    beta1 = np.array([0.5, 0.8, 0.9])
    host = X.copy()
    cpu_opt = fastrms.Adam(host, beta1=beta1, lr=0.1)
    dev = cuda.to_device(X)
    dev_opt = fastrms.Adam(dev, beta1=beta1, lr=0.1)
    _step_both(cpu_opt, dev_opt, grads)
    np.testing.assert_allclose(dev.copy_to_host(), host, rtol=2e-6)


def _step_both(cpu_opt, dev_opt, grads):
    for g in grads:
        cpu_opt.step(g)
        dev_opt.step(cuda.to_device(g))


def test_a_batchs_coefficients_cross_to_the_device_once_or_as_one_row(rng):
    """H travels to the device when the host computed it: once where h is constant (a sweep of η
    with RMSProp; a new η mid-run travels too), and for a batch that shares its hyperparameters as
    H[0] alone, copied to the other rows on the device (the host never fills them)."""
    X = rng.normal(size=(3, 4))
    grads = [rng.normal(size=(3, 4)) for _ in range(3)]
    host, dev, lr = X.copy(), cuda.to_device(X), np.array([0.1, 0.2, 0.3])
    ref, opt = fastrms.RMSProp(host, lr=lr), fastrms.RMSProp(dev, lr=lr)
    _step_both(ref, opt, grads)
    assert opt._mstate.h_count == 1
    ref.lr = opt.lr = np.array([0.3, 0.2, 0.01])
    _step_both(ref, opt, grads)
    np.testing.assert_allclose(dev.copy_to_host(), host, rtol=1e-12)
    for dtype, tol in ((np.float32, 2e-6), (np.float64, 1e-12)):
        host, dev = X.astype(dtype), cuda.to_device(X.astype(dtype))
        ref, opt = fastrms.Adam(host, batched=True, lr=0.1), fastrms.Adam(dev, batched=True, lr=0.1)
        _step_both(ref, opt, [g.astype(dtype) for g in grads])
        np.testing.assert_allclose(dev.copy_to_host(), host, rtol=tol)
    H = opt._mstate.H
    assert opt._mstate.h_count == 3 and (H[1:] == 0).all() and (H[0] != 0).any()
    np.testing.assert_array_equal(fcuda._DEVICE_ROWS[opt._mstate].H.copy_to_host(), np.tile(H[0], (3, 1)))
    gone = weakref.ref(opt._mstate)  # (and the device copies go with their batch)
    del opt, H
    gc.collect()
    assert gone() is None


def test_a_shared_adam_batch_on_the_device_matches_the_cpu_as_problems_stop():
    opts = {"lr": 0.3, "beta1": 0.0, "maxiter": 80, "gtol": 1e-2, "batched": True}
    host = fastrms.minimize(lambda X: _rows_F(X), lambda X: _rows_dF(X).copy_to_host(), np.zeros((4, 3)),
                            method="adam", options=opts)
    dev = fastrms.minimize(_rows_F, _rows_dF, np.zeros((4, 3)), method="adam",
                           options={**opts, "backend": "cuda"})
    assert len(set(host.nit)) > 1  # the problems stop at different steps
    np.testing.assert_array_equal(dev.status, host.status)
    np.testing.assert_array_equal(dev.nit, host.nit)
    np.testing.assert_allclose(dev.x, host.x, rtol=1e-12)


TWO = np.array([0.9, 0.5, 0.9, 0.5, 0.9])  # (two groups of problems with the same p: a grid)


@pytest.mark.parametrize("method,opts,dtype,start", [
    ("NAdam", {}, np.float64, 60),  # (from t = 60: its product of momenta changes form after t = 64)
    # (rectified from t = 5; a clip factor a problem and a scheduled η: new columns every step)
    ("RAdam", {"clip_norm": 0.5, "lr": lambda t: 0.1 / (t + 1)}, np.float32, 0),
    ("Yogi", {"beta1": lambda t: 0.9 - 0.01 * t}, np.float64, 0),  # (p itself changes every step)
    # a grid: groups of equal p, their powers sent a group
    ("NAdam", {"beta1": TWO}, np.float64, 60),
    ("RAdam", {"beta2": np.array([0.999, 0.9, 0.999, 0.9, 0.999])}, np.float32, 0),  # (rectified apart)
    ("Yogi", {"beta1": lambda t: 0.9 - 0.01 * t, "beta2": TWO}, np.float64, 0),  # (P sent every step)
    ("Adam", {"beta1": np.linspace(0.5, 0.9, 5), "amsgrad": True}, np.float32, 0)])  # (a group a problem)
def test_a_sweep_or_a_grid_fills_its_rows_on_the_device(method, opts, dtype, start, rng):
    """A batch whose problems share p (they differ in η or in their clip factors alone), with a
    method whose coefficients have parts: the host computes the powers of t, the device finishes
    each row; the host's H is never filled and B rows never cross.  H and x equal the CPU's (bit
    for bit under the simulator, which computes as the host does), with a new η mid-run too.  (The
    per-problem η may be a device array itself: read once, as its values.)  A batch in groups of
    equal p (a grid of η × β1) likewise, with each group's powers computed on the host."""
    X = rng.normal(size=(5, 3)).astype(dtype)
    host, dev, lr = X.copy(), cuda.to_device(X), np.linspace(0.01, 0.1, 5)
    opts = {"lr": lr, **opts, "batched": True}
    on_device = {k: cuda.to_device(v) if isinstance(v, np.ndarray) else v for k, v in opts.items()}
    ref, opt = getattr(fastrms, method)(host, **opts), getattr(fastrms, method)(dev, **on_device)
    state = {**ref.state_dict(), "t": start}  # (the simulator runs a step's kernels in Python threads)
    ref.load_state_dict(state)
    opt.load_state_dict(state)
    grads = [rng.normal(size=(5, 3)).astype(dtype) for _ in range(8)]
    _step_both(ref, opt, grads[:-2])
    ref.lr = opt.lr = lr[::-1].copy()
    _step_both(ref, opt, grads[-2:])
    rows = fcuda._DEVICE_ROWS[opt._mstate]
    grid = any(isinstance(v, np.ndarray) for k, v in opts.items() if k != "lr")
    fill = fcuda._DeviceGroupFill if grid else fcuda._DeviceFill
    assert type(opt._mstate._device_fill) is fill and rows.filled_here
    assert (opt._mstate.H == 0).all()
    same = np.testing.assert_array_equal if SIM else functools.partial(
        np.testing.assert_allclose, rtol=1e-6 if dtype == np.float32 else 1e-13)
    same(rows.H.copy_to_host(), ref._mstate.H)
    same(dev.copy_to_host(), host)


@pytest.mark.skipif(__import__("numba").config.NUMBA_NUM_THREADS < 2, reason="one thread: no parallel code")
def test_a_random_search_computes_its_powers_in_parallel_on_the_host(monkeypatch, rng):
    """A random search on the device (every problem its own β1: groups of one) computes its powers
    of t in parallel over the problems where they are many (here, with the threshold lowered, 5):
    the serial powers' rows, H and x bit for bit, and the CPU's."""
    from fastrms import method_state
    from fastrms.kernels import cpu

    X = rng.normal(size=(5, 3))
    grads = [rng.normal(size=(5, 3)) for _ in range(4)]
    opts = {"lr": np.geomspace(1e-3, 0.3, 5), "beta1": np.linspace(0.5, 0.95, 5)}
    host = X.copy()
    ref = fastrms.Adam(host, **opts)
    runs = []
    for threshold in (10**9, 5):
        monkeypatch.setattr(method_state, "PARALLEL_FILL_MIN_ROWS", threshold)
        dev = cuda.to_device(X)
        opt = fastrms.Adam(dev, **opts)
        for g in grads:
            opt.step(cuda.to_device(g))
        fill = opt._mstate._device_fill
        runs.append((fill, fcuda._DEVICE_ROWS[opt._mstate].H.copy_to_host(), dev.copy_to_host()))
    for g in grads:
        ref.step(g)
    (serial, H_serial, x_serial), (par, H_par, x_par) = runs
    assert not isinstance(serial.powers, cpu.Chosen) and isinstance(par.powers, cpu.Chosen)
    assert "_par_" in par.powers.kernel.py_func.__name__
    assert H_par.tobytes() == H_serial.tobytes() and x_par.tobytes() == x_serial.tobytes()
    if SIM:
        assert H_par.tobytes() == ref._mstate.H.tobytes() and x_par.tobytes() == host.tobytes()


def test_rows_launch_config():
    if SIM:
        assert fcuda.rows_launch_config(8, 10_000) == fcuda.SIMULATOR_ROWS_GRID
    (bx, by), (tx, ty) = fcuda.rows_grid(8, 10_000, 132)  # tiny problems: many per block
    assert tx == 32 and tx * ty == fcuda.THREADS_PER_BLOCK and bx == 1 and by * ty >= 10_000
    (bx, by), (tx, ty) = fcuda.rows_grid(10**6, 4, 132)  # few large ones: each fills the GPU in turn
    assert tx == fcuda.THREADS_PER_BLOCK and ty == 1 and by == 1 and bx == -(-10**6 // tx)
    (bx, by), _ = fcuda.rows_grid(1000, 10**6, 132)
    assert by <= 65535 and bx * by <= fcuda.BLOCKS_PER_SM * 132 * 4


def test_a_numpy_numba_cuda_cannot_compile_under_is_a_clear_error(monkeypatch):
    """numba-cuda 0.30 under NumPy 2.5 fails its first compile on np.row_stack, whoever compiles:
    fastrms says so before, with the fix (an environment where it works passes the same check)."""
    import importlib

    fix = r"cannot compile kernels under NumPy .*row_stack.*pip install 'numpy<2\.5'.*backend='cpu'"
    try:
        fcuda.check_numpy_support()  # numba-cuda and this NumPy work together, or
    except fcuda.CudaUnavailable as e:  # (numba-cuda installed without the extra's NumPy pin)
        assert re.search(fix, str(e)), e  # they do not, and the real failure is the clear error
    real = importlib.import_module

    def numpy_2_5(name, *args):
        if name == "numba.cuda.np.arrayobj":
            raise AttributeError("module 'numpy' has no attribute 'row_stack'")
        return real(name, *args)

    monkeypatch.setattr(fcuda.importlib, "import_module", numpy_2_5)
    with pytest.raises(fcuda.CudaUnavailable, match=fix):
        fcuda.check_numpy_support()
    monkeypatch.setattr(fcuda, "_simulator", lambda: False)  # as on a GPU (the simulator compiles nothing)
    assert not fastrms.cuda_available()
    with pytest.raises(RuntimeError, match=fix):
        fcuda.CudaBackend()


def test_device_norms_of_infinite_and_huge_gradients(rng):
    """The device reduction as the CPU's: a first element ±inf gives max|g| = inf (a zero made as
    g[0]·0 was NaN, which atomic.max ignores: max|g| read 0), and a huge float32 g has a finite
    norm (the sum of squares is float64, as cpu.norm2's)."""
    backend = fcuda.backend()
    for dtype in (np.float32, np.float64):
        for first in (-np.inf, np.inf):
            g = rng.normal(size=40).astype(dtype)
            g[0] = first
            assert backend.norms(cuda.to_device(g)) == (np.inf, np.inf)
        g[5] = np.nan
        assert all(np.isnan(backend.norms(cuda.to_device(g))))
        g = np.full(40, 1e30, dtype)
        np.testing.assert_allclose(backend.norms(cuda.to_device(g)), fastrms.kernels.CPU.norms(g), rtol=1e-6)


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_device_run_ends_as_the_cpu_one_on_infinite_and_huge_gradients(dtype):
    """A run whose last gradient is inf in its first element has diverged, on the device as on the
    CPU (on the device it had converged: max|g| read 0 ≤ gtol); with clip_norm too, where the
    inf makes the rescaled gradient NaN at once."""
    def dF(x, scale):
        g = np.full(_host(x).shape, scale, dtype)
        g[0, 0] = np.inf
        return g

    runs = {}
    for backend in ("cpu", "cuda"):
        for c in (np.inf, 0.5):
            runs[backend, c] = fastrms.minimize(lambda x, s: 0.0, dF, np.zeros((3, 4), dtype),
                                                args=(dtype(1e30),), method="gd",
                                                options={"backend": backend, "maxiter": 2, "gtol": 10.0,
                                                         "clip_value": 1.0, "clip_norm": c, "lr": 0.1})
    for c in (np.inf, 0.5):
        cpu_res, dev_res = runs["cpu", c], runs["cuda", c]
        assert cpu_res.status == dev_res.status == 3 and cpu_res.nit == dev_res.nit
        np.testing.assert_allclose(np.asarray(dev_res.x), cpu_res.x, rtol=1e-6)


def test_device_stepper_hyperparameters_change_between_steps(rng):
    x0, grads = rng.normal(size=8), rng.normal(size=(4, 8))
    x_cpu, x_dev = x0.copy(), cuda.to_device(x0)
    on_cpu, on_dev = fastrms.RMSProp(x_cpu, lr=0.1), fastrms.RMSProp(x_dev, lr=0.1)
    for k, g in enumerate(grads):
        if k == 2:
            on_cpu.lr = on_dev.lr = 0.01
        on_cpu.step(g)
        on_dev.step(cuda.to_device(g))
    assert on_dev.x is x_dev and on_dev.t == 4
    np.testing.assert_allclose(x_dev.copy_to_host(), x_cpu, rtol=1e-14)
