"""Field hardening: the situations real scripts create (raising jitted objectives, fork and
threads, read-only installs and broken caches, Ctrl-C, long runs, bad input, hard numerics)."""

import copy
import gc
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from numba import njit

import fastrms
from fastrms import schedules
from fastrms.drivers import compiled

ROOT = Path(fastrms.__file__).resolve().parent.parent
DRIVERS = ["python", "compiled"]


def run_python(code: str, timeout: float = 180, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path]), **kw.pop("env", {})}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, env=env, **kw)


@njit(cache=True)
def quad(x, c):
    return float(np.sum((x - c) ** 2))


@njit(cache=True)
def dquad(x, c):
    return 2.0 * (x - c)


@njit(cache=True)
def dquad_raising(x, c):
    if x[0] > 0.5:
        raise ValueError("boom: x[0] passed 0.5")
    return 2.0 * (x - c)


@njit(cache=True)
def quad_raising(x, c):
    if x[0] > 0.5:
        raise ZeroDivisionError("F gave up")
    return float(np.sum((x - c) ** 2))


# -- exceptions inside jitted F and dF ------------------------------------------------

@pytest.mark.parametrize("driver", DRIVERS)
def test_an_exception_in_a_jitted_gradient_reaches_the_user(driver):
    hook = sys.unraisablehook
    c = np.ones(3)
    refs = sys.getrefcount(c)
    for _ in range(3):
        with pytest.raises(ValueError, match="boom: x\\[0\\] passed 0.5"):
            fastrms.minimize(quad, dquad_raising, np.zeros(3), args=(c,), method="gd",
                             options={"lr": 0.05, "driver": driver, "maxiter": 1000})
    assert sys.unraisablehook is hook  # put back as it was
    # nothing the loop held is leaked (an exception propagated through compiled code would leak a
    # reference to every array in it, c included)
    gc.collect()  # (the exceptions and their tracebacks are cycles)
    assert sys.getrefcount(c) == refs


@pytest.mark.parametrize("driver", DRIVERS)
def test_an_exception_in_a_jitted_objective_reaches_the_user(driver):
    with pytest.raises(ZeroDivisionError, match="F gave up"):
        fastrms.minimize(quad_raising, dquad, np.zeros(3), args=(np.ones(3),), method="gd",
                         options={"lr": 0.05, "driver": driver, "history": True, "maxiter": 1000})
    # and the next run is not disturbed by the last one's error
    res = fastrms.minimize(quad, dquad, np.zeros(3), args=(np.ones(3),), method="gd",
                           options={"lr": 0.1, "driver": driver, "gtol": 1e-9})
    assert res.success


@njit
def _mixed_F(x, A, y):  # x @ A needs one dtype: float32 x with float64 A does not compile
    r = A @ x - y
    return 0.5 * np.sum(r * r)


@njit
def _mixed_dF(x, A, y):
    return A.T @ (A @ x - y)


@pytest.mark.parametrize("driver", ["auto", *DRIVERS])
def test_a_jitted_function_that_cannot_compile_for_x_is_a_clear_type_error(driver):
    """dtype='float32' with float64 data: Numba cannot compile A @ x.  Every driver names the
    function, the types, Numba's reason and the line, in one TypeError; 'auto' does not fall
    back to the Python loop, which would call the same function and fail with Numba's traceback."""
    A, y = np.eye(3), np.ones(3)
    with pytest.raises(TypeError, match=r"d?F cannot be compiled for arguments of types \(.*float32.*\): "
                                         r"'@' arguments must all have the same dtype \(File .*test_field.py"
                                         r"\", line \d+\)$") as info:
        fastrms.minimize(_mixed_F, _mixed_dF, np.zeros(3), args=(A, y),
                         options={"dtype": "float32", "driver": driver})
    assert type(info.value).__module__.startswith("fastrms")  # not numba.core.errors.TypingError
    assert fastrms.minimize(_mixed_F, _mixed_dF, np.zeros(3), args=(A, y), options={"driver": driver}).nit


def test_a_python_gradient_calling_jitted_code_that_cannot_compile_says_so():
    with pytest.raises(TypeError, match=r"^dF calls jitted code that cannot be compiled: '@' arguments"):
        fastrms.minimize(lambda x, A, y: 0.0, lambda x, A, y: _mixed_dF(x, A, y), np.zeros(3),
                         args=(np.eye(3), np.ones(3)), options={"dtype": "float32"})


# -- threads and processes ------------------------------------------------------------

FORK_SCRIPT = """
    import sys, multiprocessing as mp, numpy as np, numba, fastrms
    from fastrms.kernels import cpu

    KEPT = {}  # a stepper the parent made and stepped: a fork's children step it too

    def work(v):
        if "opt" in KEPT:  # (its kernels were chosen in the parent: parallel, which OpenMP forbids here)
            KEPT["opt"].step(np.full(100_000, v))
            KEPT["rows"].step(np.full((1100, 16), v))
        # a random search of 1,100 problems: its rows filled and stepped by parallel code
        X = np.zeros((1100, 16))
        rows = fastrms.Adam(X, lr=0.01, beta1=np.linspace(0.5, 0.9, 1100))
        y = np.zeros(100_000)
        opt = fastrms.RMSProp(y, lr=0.01)
        many = [np.zeros(60_000), np.zeros((300, 200))]  # the many-arrays kernel, parallel too
        both = fastrms.RMSProp(many, lr=0.01)
        for _ in range(3):
            opt.step(np.full_like(y, v))
            both.step([np.full_like(a, v) for a in many])
            rows.step(np.full_like(X, v))
        # minimize's in-place checked kernel, parallel at this size
        z = fastrms.minimize(lambda x: float(np.sum((x - v) ** 2)), lambda x: 2 * (x - v), y, method="gd",
                             options={"in_place": True, "lr": 0.1, "maxiter": 3, "gtol": 0}).x
        return float(y.sum()) + sum(float(a.sum()) for a in many) + float(z.sum()) + float(X.sum())

    if __name__ == "__main__":
        assert numba.get_num_threads() < 2 or cpu.use_parallel(100_000)
        print("parent", work(1.0), flush=True)   # the parent has run a parallel kernel
        KEPT["opt"] = fastrms.RMSProp(np.zeros(100_000), lr=0.01)
        KEPT["opt"].step(np.ones(100_000))
        KEPT["rows"] = fastrms.Adam(np.zeros((1100, 16)), lr=0.01, beta1=np.linspace(0.5, 0.9, 1100))
        KEPT["rows"].step(np.ones((1100, 16)))
        with mp.get_context(sys.argv[1]).Pool(2) as pool:
            print("children", pool.map(work, [1.0, 2.0]), flush=True)
        print("layer", numba.threading_layer())
"""


@pytest.mark.parametrize("layer,start", [(None, "fork"), ("omp", "fork"), (None, "spawn")])
def test_workers_after_the_parallel_kernels(layer, start, tmp_path):
    script = tmp_path / "forks.py"
    script.write_text(textwrap.dedent(FORK_SCRIPT))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    if layer:
        env["NUMBA_THREADING_LAYER"] = layer
    out = subprocess.run([sys.executable, str(script), start], capture_output=True, text=True, timeout=180,
                         env=env)
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines())
    parent = float(lines["parent"])
    assert eval(lines["children"])[0] == parent  # the same update in the children
    assert lines["layer"] == (layer or "tbb")  # fastrms's own choice is TBB


def test_concurrent_runs_from_threads_agree_with_serial_runs(threads_agree):
    c = np.linspace(-1, 1, 20_000)  # parallel kernels

    def solve(lr):
        return fastrms.minimize(lambda x: float(np.sum((x - c) ** 2)), lambda x: 2 * (x - c),
                                np.zeros_like(c), options={"lr": lr, "maxiter": 60, "momentum": 0.9}).x

    threads_agree(solve, [0.01, 0.02, 0.03, 0.04])


def test_workqueue_layer_serializes_threads_and_says_so():
    out = run_python("""
        import threading, warnings, numpy as np, fastrms
        warnings.simplefilter("always")
        def run():
            y = np.zeros(50_000)
            opt = fastrms.Adam(y)
            for _ in range(200):
                opt.step(np.ones_like(y))
        ts = [threading.Thread(target=run) for _ in range(4)]
        [t.start() for t in ts]; [t.join() for t in ts]
        print("ok")
    """, env={"NUMBA_THREADING_LAYER": "workqueue"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
    assert out.stderr.count("workqueue") == 1


# -- caches ----------------------------------------------------------------------------

CACHE_SCRIPT = """
    import sys, warnings, numpy as np, fastrms
    from numba import njit
    warnings.simplefilter("always")
    driver = sys.argv[1] if len(sys.argv) > 1 else "compiled"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 20_000  # 20,000: the parallel kernel as well

    def f(x, c):
        return np.sum((x - c) ** 2)

    def df(x, c):
        return 2.0 * (x - c)

    if driver == "compiled":  # (jitting them for the Python loop would only add compile time)
        f, df = njit(f), njit(df)

    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        res = fastrms.minimize(f, df, np.zeros(4), args=(np.arange(4.0),),
                               options={"driver": driver, "maxiter": 30})
        x = np.zeros(n)
        fastrms.RMSProp(x).step(np.ones_like(x))
    print(fastrms.__file__)
    print(sum("fastrms:" in str(m.message) for m in w))
    print(res.x.tolist())
"""


DISABLE_JIT_SCRIPT = """
    import json
    import numba, numpy as np
    import fastrms

    @JIT
    def F(x):
        return float(np.sum((x - 1.0) ** 2))

    @JIT
    def dF(x):
        return 2.0 * (x - 1.0)

    x = np.linspace(-1, 1, 6)
    one = x.copy()
    fastrms.RMSProp(one, lr=0.1, momentum=0.5).step(dF(one))
    several = [x[:4].reshape(2, 2).copy(), x[4:].copy()]
    fastrms.Adam(several, lr=0.1).step([np.ones((2, 2)), np.ones(2)])
    res = fastrms.minimize(F, dF, x, options={"maxiter": 40, "driver": DRIVER})
    try:
        fastrms.minimize(F, dF, x, options={"driver": "compiled", "maxiter": 1})
        said = ""
    except ValueError as e:
        said = str(e)
    out = {"jit_off": numba.config.DISABLE_JIT, "python_F": not hasattr(F, "py_func"),
           "one": one.tolist(), "several": [a.ravel().tolist() for a in several],
           "x": res.x.tolist(), "nit": res.nit, "status": res.status, "said": said}
"""


def test_numba_disable_jit_leaves_fastrms_working():
    """NUMBA_DISABLE_JIT=1 (Numba's way to debug one's own njit code in Python) turns every njit
    function into plain Python; fastrms's kernels, made of intrinsics and overloads with no Python
    form, once failed there with NotImplementedError. They stay compiled: the same steps as with the
    JIT on (here, in this process), the user's F and dF run as Python in the Python loop that
    'auto' picks, and driver='compiled' says why it cannot run them."""
    script = textwrap.dedent(DISABLE_JIT_SCRIPT)
    out = run_python("import numba\nJIT, DRIVER = numba.njit, 'auto'\n" + script + "print(json.dumps(out))",
                     env={"NUMBA_DISABLE_JIT": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    off = json.loads(out.stdout.splitlines()[-1])
    assert off["jit_off"] and off["python_F"]
    here = {"JIT": lambda f: f, "DRIVER": "python"}
    exec(script, here)  # (the JIT on; plain F and dF, as NUMBA_DISABLE_JIT makes them)
    on = here["out"]
    assert not on["jit_off"] and on["said"].endswith("must be numba.njit functions")
    for key in ("one", "several", "x", "nit", "status"):
        assert off[key] == on[key], key
    assert "NUMBA_DISABLE_JIT=1 makes them plain Python" in off["said"]


def test_read_only_install_compiles_without_a_cache(tmp_path):
    # No writable cache location, even for root (CI runs as root): every __pycache__ Numba could
    # use beside the package is a plain file, and the cache directory, HOME and XDG_CACHE_HOME
    # lie under a plain file, so no directory can be made there.
    shutil.copytree(ROOT / "fastrms", tmp_path / "site" / "fastrms",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for package in (tmp_path / "site").rglob("__init__.py"):
        (package.parent / "__pycache__").write_text("not a directory")
    (tmp_path / "blocked").write_text("a file, not a directory")
    nowhere = str(tmp_path / "blocked" / "cache")
    for p in (tmp_path / "site").rglob("*"):
        p.chmod(0o555 if p.is_dir() else 0o444)
    env = {"HOME": nowhere, "XDG_CACHE_HOME": nowhere, "NUMBA_CACHE_DIR": nowhere,
           "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), *sys.path])}
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(CACHE_SCRIPT), "python"], capture_output=True,
                         text=True, timeout=300, env={**os.environ, **env}, cwd=tmp_path)
    for p in (tmp_path / "site").rglob("*"):
        p.chmod(0o755)
    assert out.returncode == 0, out.stderr
    where, warnings_, _ = out.stdout.splitlines()[-3:]
    assert where.startswith(str(tmp_path / "site"))  # the read-only copy ran
    assert int(warnings_) == 1  # one warning, not one per kernel


def test_no_cache_location_still_compiles_an_explicit_signature():
    """The compiled loop's path (jit with a signature) where Numba has nowhere to cache: a function
    defined by exec has no source file, so Numba has no cache locator for it."""
    from numba import types

    from fastrms.kernels import _jit

    namespace = {}
    exec("def twice(x):\n    return 2.0 * x\n", namespace)  # noqa: S102
    _jit._warned.discard("locator")
    with pytest.warns(_jit.CacheWarning, match="no writable location"):
        f = _jit.jit(namespace["twice"], signature=types.float64(types.float64))
    assert f(1.5) == 3.0 and len(f.signatures) == 1
    with pytest.raises(TypeError):
        f("not a float")  # compiled for its signature and nothing else


def run_cache_script(env):
    # the Python loop (the compiled loop's cache is guarded the same way) and serial kernels only:
    # the parallel kernels go through the same cache layer and would double the compile time
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path]), **env}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(CACHE_SCRIPT), "python", "4"],
                          capture_output=True, text=True, timeout=180, env=env)


def test_corrupt_cache_files_are_recompiled(tmp_path):
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    first = run_cache_script(env)
    assert first.returncode == 0, first.stderr
    files = list((tmp_path / "cache").rglob("*.nb[ic]"))
    assert files
    for i, f in enumerate(files):  # truncated files and garbage
        f.write_bytes(f.read_bytes()[:20] if i % 2 else b"garbage")
    second = run_cache_script(env)
    assert second.returncode == 0, second.stderr
    assert int(second.stdout.splitlines()[-2]) == 1
    third = run_cache_script(env)  # repaired: silent again
    assert third.returncode == 0 and int(third.stdout.splitlines()[-2]) == 0
    assert first.stdout.splitlines()[-1] == second.stdout.splitlines()[-1] == third.stdout.splitlines()[-1]


# -- long runs ----------------------------------------------------------------------------

def test_ctrl_c_stops_a_long_compiled_loop():
    code = textwrap.dedent("""
        import signal
        # Python's Ctrl-C handler, as in a terminal: a job started in the background by a
        # non-interactive shell inherits SIGINT ignored (POSIX), and so would this child
        signal.signal(signal.SIGINT, signal.default_int_handler)
        import numpy as np, fastrms
        from numba import njit
        # the types of this file's quad and dquad: the compiled loop comes from the disk cache
        @njit
        def f(x, c):
            return float(np.sum((x - c) ** 2))
        @njit
        def df(x, c):
            return 2.0 * (x - c)
        opts = {"driver": "compiled", "gtol": 0.0, "lr": 1e-12}
        c = np.full(3, 2.0)
        fastrms.minimize(f, df, np.ones(3), args=(c,), method="gd", options={**opts, "maxiter": 10})
        print("ready", flush=True)
        import faulthandler
        faulthandler.dump_traceback_later(45)  # where it is, should Ctrl-C not stop it
        fastrms.minimize(f, df, np.ones(3), args=(c,), method="gd", options={**opts, "maxiter": 10**15})
        print("finished", flush=True)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)  # 1e15 steps would take years
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("Ctrl-C did not stop the compiled loop within 60 s; the child's stderr:\n"
                    + proc.communicate()[1][-6000:])
    finally:
        proc.kill()
    assert "KeyboardInterrupt" in err and "finished" not in out


def test_compiled_history_grows_with_the_run_not_with_maxiter():
    res = fastrms.minimize(quad, dquad, np.zeros(3), args=(np.ones(3),), method="gd",
                           options={"driver": "compiled", "maxiter": 10**12, "gtol": 1e-9, "lr": 0.1,
                                    "history": True, "trajectory": True})
    assert res.success and len(res.history["loss"]) == res.nit + 1 == len(res.trajectory)


def test_compiled_runs_in_chunks_equal_one_run(monkeypatch):
    whole = fastrms.minimize(quad, dquad, np.zeros(3), args=(np.ones(3),), method="rmsprop",
                             options={"driver": "compiled", "maxiter": 500, "history": True,
                                      "trajectory": True, "history_every": 7})
    monkeypatch.setattr(compiled, "MAX_FIRST_CHUNK", 3)
    monkeypatch.setattr(compiled, "CHUNK_SECONDS", 1e-9)  # chunks of one step after the first
    chunked = fastrms.minimize(quad, dquad, np.zeros(3), args=(np.ones(3),), method="rmsprop",
                               options={"driver": "compiled", "maxiter": 500, "history": True,
                                        "trajectory": True, "history_every": 7})
    assert chunked.x.tobytes() == whole.x.tobytes() and chunked.nit == whole.nit
    # F at the final x (evaluated after the loop when nit is no multiple of 7) and every count agree
    k = whole.nit
    assert k % 7 and (chunked.fun, chunked.nfev, chunked.njev) == (whole.fun, whole.nfev, whole.njev) == (
        quad(whole.x, np.ones(3)), k // 7 + 2, k + 1)
    for k in ("loss", "gnorm", "step"):
        np.testing.assert_array_equal(chunked.history[k], whole.history[k])
    np.testing.assert_array_equal(chunked.trajectory, whole.trajectory)


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
def test_check_every_returns_the_last_checked_finite_iterate():
    c = np.ones(4)
    res = fastrms.minimize(lambda x: float(np.sum((x - c) ** 2)), lambda x: 2 * (x - c), np.zeros(4),
                           method="gd", options={"lr": 1.5, "maxiter": 100_000, "check_every": 1000,
                                                 "driver": "python"})
    assert res.status == 3 and not res.success
    assert np.all(np.isfinite(res.x)) and res.nit % 1000 == 1  # the output of the check at k = 1000j
    assert "last checked finite iterate" in res.message
    np.testing.assert_array_equal(res.jac, 2 * (res.x - c))  # jac belongs to x


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_a_non_finite_objective_is_never_a_success(driver, value):
    @njit
    def f(x, c):
        return value + 0.0 * x[0]

    res = fastrms.minimize(f, dquad, np.zeros(3), args=(np.ones(3),), method="gd",
                           options={"lr": 0.1, "gtol": 1e-6, "driver": driver})
    assert not res.success and res.status == 3 and "objective is not finite" in res.message
    assert np.all(np.isfinite(res.x))


# -- schedules ------------------------------------------------------------------------------

@pytest.mark.parametrize("driver", DRIVERS)
def test_a_gamma_schedule_leaving_its_range_is_a_clear_error(driver):
    with pytest.raises(ValueError, match=r"gamma schedule gives 1\.0[0-9]* at step t=10; gamma must be in"):
        fastrms.minimize(quad, dquad, np.zeros(3), args=(np.ones(3),),
                         options={"gamma": schedules.step(0.96, 1.05, 10), "maxiter": 100, "driver": driver})


def test_a_python_lr_callable_going_negative_is_a_clear_error():
    with pytest.raises(ValueError, match=r"lr schedule gives -1\.0 at step t=3; lr must be in \[0, inf\)"):
        fastrms.minimize(quad, dquad, np.zeros(3), args=(np.ones(3),),
                         options={"lr": lambda t: 2.0 - t, "maxiter": 10})
    with pytest.raises(TypeError, match="lr schedule must return a real number"):
        fastrms.RMSProp(np.zeros(2), lr=lambda t: "fast").step(np.ones(2))
    x = np.zeros(2)
    fastrms.RMSProp(x, lr=schedules.cosine(0.1, 3)).step(np.ones(2))  # a schedule ending at 0 is fine



def test_an_integer_beyond_float64_is_a_value_error_with_a_short_message():
    huge = 10 ** 400
    for options, match in [({"lr": huge}, "lr is too large to be a float"),
                           ({"clip_value": -huge}, "clip_value is too large to be a float"),
                           ({"maxiter": huge}, "maxiter must be <= "),
                           ({"lr": lambda t: huge}, "the lr schedule gives .* at step t=0, too large")]:
        with pytest.raises(ValueError, match=match) as info:
            fastrms.minimize(quad, dquad, np.zeros(3), args=(np.ones(3),), options=options)
        assert len(str(info.value)) < 200  # the 401 digits are cut
    with pytest.raises(ValueError, match="lr is too large to be a float"):
        fastrms.Lion(np.zeros(3), lr=huge)


@pytest.mark.parametrize("options, match", [
    ({"driver": np.array(["python", "compiled"])}, "driver must be a string, one of 'auto', 'python'"),
    ({"backend": None}, "backend must be a string, one of 'auto', 'cpu'"),
    ({"preset": True}, "preset must be a string, one of 'd2l'"),
    ({"lr": lambda t, u: 0.1}, "lr: a callable schedule is called as f\\(t\\) .* <lambda> takes neither")])
def test_a_name_or_a_callable_of_the_wrong_kind_is_a_type_error(options, match):
    # before: an array as driver raised NumPy's "truth value of an array is ambiguous", True as preset
    # was an unknown preset 'True', and a schedule of two arguments failed at its first step
    with pytest.raises(TypeError, match=match):
        fastrms.minimize(quad, dquad, np.zeros(3), args=(np.ones(3),), options=options)


def test_per_problem_values_of_the_wrong_kind_are_named_before_their_shape():
    with pytest.raises(TypeError, match="lr must hold real numbers, got dtype <U1"):
        fastrms.RMSProp(np.zeros((4, 2)), lr=np.array(["a"]))


@pytest.mark.parametrize("make, err, match", [
    (lambda: schedules.constant("0.1"), TypeError, "constant schedule: the initial value must be a real"),
    (lambda: schedules.exponential(0.1, None, 10), TypeError, "exponential schedule: rate must be a real"),
    (lambda: schedules.exponential(0.1, 0.5, 10, staircase=1), TypeError, "staircase must be True or False"),
    (lambda: schedules.step(0.1, 0.5, 0), ValueError, "step schedule: every must be > 0"),
    (lambda: schedules.cosine(0.1, float("inf")), ValueError, "cosine schedule: steps must be finite"),
    (lambda: schedules.cosine(0.1, 5, periodic="yes"), TypeError, "periodic must be True or False"),
    (lambda: schedules.inverse_time(0.1, 0.5, warmup=float("nan")), ValueError, "warmup must not be NaN"),
    (lambda: schedules.constant(10 ** 400), ValueError, "initial value is too large to be a float"),
    (lambda: schedules.cosine(0.1, 5, warmup=2, warmup_from=-0.1), ValueError, "warmup_from must be >= 0"),
    (lambda: schedules.step(0.1, 0.5, 2, warmup=2, warmup_from=float("nan")), ValueError,
     "warmup_from must not be NaN")])
def test_a_schedules_parameters_are_checked_where_it_is_made(make, err, match):
    with pytest.raises(err, match=match):
        make()

# -- numerics -----------------------------------------------------------------------------------

def test_centered_rmsprop_never_takes_the_root_of_a_negative_variance():
    # g constant: s − m² = γᵗ(1 − γᵗ)g² → 0, below float32 rounding after ~150 steps, where it dips
    # to about −1e-6 g²: below −ε, so √(s − m² + ε) would be NaN without the clamp.  (With ε = 0 the
    # clamped variance 0 divides g: ±inf, reported as divergence, as the frameworks' NaN is.)
    x = np.zeros(1000, np.float32)
    g = np.linspace(0.1, 3.0, 1000).astype(np.float32)
    opt = fastrms.RMSProp(x, lr=1e-3, centered=True, eps=1e-8, gamma=0.9)
    for _ in range(200):
        opt.step(g)
    s, m = opt.state["s"], opt.state["m"]
    assert np.any(s - m * m < 0)  # the case is really exercised
    assert np.all(np.isfinite(x))


def test_eps_zero_and_a_zero_gradient_component_stay_finite():
    for cls, kw in [(fastrms.RMSProp, {}), (fastrms.Adagrad, {}), (fastrms.Adam, {}),
                    (fastrms.RMSProp, {"eps_in_sqrt": False, "centered": True})]:
        x = np.array([1.0, 1.0])
        opt = cls(x, eps=0.0, **kw)
        opt.step(np.array([0.0, 0.5]))
        assert np.all(np.isfinite(x)) and x[0] == 1.0 and x[1] < 1.0, cls
    # Adadelta with ε = 0 would never move (its step is √δ/√s·g with δ₀ = 0): refused, not a silent no-op
    with pytest.raises(ValueError, match="Adadelta with eps=0 never moves"):
        fastrms.Adadelta(np.ones(2), eps=0.0)
    with pytest.raises(ValueError, match=r"problem 0 \(eps=0\): Adadelta with eps=0"):
        fastrms.Adadelta(np.ones((2, 3)), eps=np.array([0.0, 1e-6]))



@njit(cache=True)
def _half_zero_F(x, target):
    return np.sum((x[1:] - target) ** 2)


@njit(cache=True)
def _half_zero_dF(x, target):
    g = 2.0 * (x - target)
    g[0] = 0.0  # an element whose gradient is always 0 (an unused weight): s stays 0
    return g


@pytest.mark.parametrize("method,names,opts", [("rmsprop", ("eps",), {}), ("adagrad", ("eps",), {}),
                                               ("adam", ("eps",), {}), ("adadelta", ("eps",), {}),
                                               ("yogi", ("eps", "eps_root"), {"initial_scale": 0.0})])
def test_a_scheduled_eps_reaching_zero_is_eps_zero_there(method, names, opts):
    """A schedule may pass 0 (a cosine to 0): the rule is compiled for both ends, so an element
    whose gradient is always 0 stays put there, as with ε = 0, instead of 0/0 = NaN ending the run."""
    sched = {**opts, **{n: schedules.cosine(1e-8, 3) for n in names}}  # 0 from step 3 on
    for driver in ("python", "compiled"):
        res = fastrms.minimize(_half_zero_F, _half_zero_dF, np.ones(3), args=(0.5,), method=method,
                               options={**sched, "lr": 0.01, "maxiter": 8, "gtol": 0, "driver": driver})
        # x[0] stays put, the rest moved
        assert res.status == 1 and res.x[0] == 1.0 and np.all(res.x[1:] < 1.0), (driver, res)
    x = np.ones(3)
    opt = fastrms.steppers.STEPPERS[method](x, lr=0.01, **sched)
    for _ in range(8):
        opt.step(_half_zero_dF(x, 0.5))
    assert x[0] == 1.0 and np.all(np.isfinite(x))

@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")
def test_eps_zero_and_a_nonzero_gradient_over_zero_is_reported_not_frozen():
    # g² underflows to 0, so d = √s = 0 while g is not 0: g/d is -inf, as in torch, not 0 (before,
    # the element froze silently); only 0/0 stays put
    x = np.array([1.0, 1.0])
    fastrms.RMSProp(x, eps=0.0).step(np.array([0.0, 1e-200]))
    assert x[0] == 1.0 and x[1] == -np.inf
    res = fastrms.minimize(lambda x: float(x @ x), lambda x: 1e-200 * x, np.ones(2), options={"eps": 0.0})
    assert res.status == 3 and res.x.tolist() == [1.0, 1.0]
    # where it would happen at every step, the configuration is refused
    with pytest.raises(ValueError, match="gamma=1 keeps s at initial_scale=0, and with eps=0"):
        fastrms.RMSProp(x, eps=0.0, gamma=1.0)

@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")
@pytest.mark.parametrize("dtype,big", [(np.float64, 1e200), (np.float32, 1e25)])
def test_an_overflowing_running_mean_is_reported_not_frozen(dtype, big):
    for cls in (fastrms.RMSProp, fastrms.Adam, fastrms.Adadelta):
        x = np.ones(3, dtype)
        cls(x).step(np.array([0.1, big, 0.1], dtype))
        assert np.isnan(x[1]) and np.all(np.isfinite(x[[0, 2]])), cls  # frozen would be x[1] == 1
    res = fastrms.minimize(lambda x: float(np.sum(x ** 2)), lambda x: np.where(x > 0.5, big, x),
                           np.ones(3, dtype))
    assert res.status == 3 and np.all(np.isfinite(res.x))



@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")
@pytest.mark.parametrize("dtype,big", [(np.float64, 1e155), (np.float32, 1e20)])
@pytest.mark.parametrize("kw", [{}, {"eps_in_sqrt": False}, {"eps": 0.0}])
def test_centered_rmsprop_reports_a_running_mean_that_alone_overflowed(dtype, big, kw):
    # g² overflows s while (1 − γ)·g, and its square m², stay finite: s − m² = inf and √ of it
    # would freeze the element; the clamp's zero s − s is NaN there (rmsprop.py)
    x = np.ones(3, dtype)
    opt = fastrms.RMSProp(x, centered=True, **kw)
    opt.step(np.array([0.1, big, 0.1], dtype))
    assert np.isinf(opt.state["s"][1]) and np.isfinite(opt.state["m"][1] ** 2)  # the case is exercised
    assert np.isnan(x[1]) and np.all(np.isfinite(x[[0, 2]]))

# -- steppers --------------------------------------------------------------------------------

def test_deepcopy_gives_an_independent_working_stepper(rng):
    x = rng.normal(size=(4, 5))
    opt = fastrms.Adam(x, lr=0.1, amsgrad=True)
    opt.step(np.ones_like(x))
    twin = copy.deepcopy(opt)
    assert twin.x is not x and twin.t == 1
    g = rng.normal(size=x.shape)
    opt.step(g)
    twin.step(g)
    np.testing.assert_array_equal(twin.x, x)  # the copy moves its own x, the same way
    twin.step(g)
    assert not np.array_equal(twin.x, x) and opt.t == 2 and twin.t == 3


def test_pickle_round_trip_continues_bit_for_bit(rng):
    x = rng.normal(size=10)
    opt = fastrms.RMSProp(x, lr=0.01, momentum=0.9, centered=True, preset="torch")
    opt.step(np.ones(10))
    back = pickle.loads(pickle.dumps(opt))
    assert back.t == 1 and back.hyperparameters == opt.hyperparameters
    g = rng.normal(size=10)
    opt.step(g)
    back.step(g)
    assert back.x.tobytes() == x.tobytes()


def test_load_state_dict_validates():
    opt = fastrms.RMSProp(np.zeros(3))
    good = opt.state_dict()
    for bad, err, match in [({**good, "t": -1}, ValueError, "t"), ({**good, "t": 1.5}, TypeError, "t"),
                            ({**good, "t": "3"}, TypeError, "t"),
                            ({**good, "s": np.ones(3, complex)}, TypeError, "real numbers"),
                            ({**good, "s": np.array([1.0, np.nan, 0.0])}, ValueError, "NaN or inf"),
                            ({**good, "s": np.array(["a", "b", "c"])}, TypeError, "real numbers")]:
        with pytest.raises(err, match=match):
            opt.load_state_dict(bad)
    opt.load_state_dict({**good, "t": np.int64(4), "s": [1, 2, 3]})
    assert opt.t == 4 and opt.state["s"].tolist() == [1.0, 2.0, 3.0]


# -- what F and dF see --------------------------------------------------------------------------

@pytest.mark.parametrize("keep", ["array", "view"])
def test_an_objective_that_keeps_x_never_sees_it_change(keep):
    seen = []

    def dF(x):
        seen.append(x if keep == "array" else x[1:])
        return 2.0 * (x - 3.0)

    res = fastrms.minimize(lambda x: float(np.sum((x - 3.0) ** 2)), dF, np.zeros(3),
                           options={"maxiter": 20, "trajectory": True, "driver": "python"})
    kept = np.array([s.copy() for s in seen])
    expected = res.trajectory if keep == "array" else res.trajectory[:, 1:]
    np.testing.assert_array_equal(np.array(seen), expected)
    np.testing.assert_array_equal(kept, expected)
    with pytest.raises(ValueError, match="read-only"):
        fastrms.minimize(lambda x: 0.0, lambda x: x.__setitem__(0, 1.0) or x, np.zeros(3))


# -- options and returns -----------------------------------------------------------------------

def test_options_and_returns_are_checked():
    base = dict(args=(np.ones(3),))
    for opts, err, match in [({"history": "False"}, TypeError, "history must be True or False"),
                             ({"disp": 1}, TypeError, "disp must be True or False"),
                             ({"maxiter": 2 ** 70}, ValueError, "maxiter must be <="),
                             ({"batch_size": 1, "seed": "abc"}, TypeError, "seed must be"),
                             ({"batch_size": 1, "seed": -3}, ValueError, "seed must be >= 0")]:
        with pytest.raises(err, match=match):
            fastrms.minimize(quad, dquad, np.zeros(3), options=opts, **base)
    with pytest.raises(TypeError, match="dF returned None"):
        fastrms.minimize(lambda x: 0.0, lambda x: None, np.zeros(3))
    with pytest.raises(TypeError, match="dF returned the string"):
        fastrms.minimize(lambda x: 0.0, lambda x: "grad", np.zeros(3))
    with pytest.raises(TypeError, match="dF returned None"):
        fastrms.minimize(lambda x: (0.0, None), np.zeros(3), jac=True)


def test_new_hyperparameters_and_schedules_are_checked():
    x = np.zeros(3)
    for cls, kw, err, match in [
            (fastrms.Yogi, {"beta1": 1.0}, ValueError, r"beta1 must be in \[0, 1\)"),
            (fastrms.Yogi, {"eps_root": -1e-8}, ValueError, "eps_root must be in"),
            (fastrms.Yogi, {"initial_scale": "1e-6"}, TypeError, "initial_scale must be a real number"),
            (fastrms.Lion, {"beta2": -0.1}, ValueError, r"beta2 must be in \[0, 1\]"),
            (fastrms.Lion, {"decoupled_weight_decay": False}, ValueError, "Lion is defined with decoupled"),
            (fastrms.Adam, {"beta1": {"schedule": "linear", "value": 0.9}}, ValueError,
             "beta1: a schedule dict"),
            (fastrms.Adam, {"beta2": {"schedule": "step", "value": 0.99, "every": 5}}, TypeError,
             "beta2: bad arguments for the step schedule"),
            (fastrms.RMSProp, {"nesterov": True, "momentum": 0.0}, ValueError,
             "nesterov=True needs momentum")]:
        with pytest.raises(err, match=match):
            cls(x, **kw)
    opt = fastrms.Momentum(x, momentum=lambda t: "high")
    with pytest.raises(TypeError, match="momentum schedule must return a real number"):
        opt.step(np.ones(3))
    assert x.tolist() == [0.0, 0.0, 0.0]  # nothing was written
    opt = fastrms.Adam(x, weight_decay=lambda t: -0.1 * t)
    opt.step(np.ones(3))  # t = 0: weight decay 0 is fine
    with pytest.raises(ValueError, match=r"weight_decay schedule gives -0\.1 at step t=1"):
        opt.step(np.ones(3))


def test_compiled_caches_are_bounded(monkeypatch):
    monkeypatch.setattr(compiled._signatures, "maxsize", 2)
    monkeypatch.setattr(compiled._prepared, "maxsize", 2)  # it holds signatures, and so F and dF
    for k in range(3):  # (one more than the caches hold)
        f = njit(lambda x, c: float(np.sum((x - c) ** 2)) + k)
        df = njit(lambda x, c: 2.0 * (x - c))
        fastrms.minimize(f, df, np.zeros(2), args=(np.ones(2),), options={"maxiter": 3, "driver": "compiled"})
        assert len(compiled._signatures) <= 2 and len(compiled._prepared) <= 2
    assert len(compiled._drivers) <= compiled._drivers.maxsize


@njit(cache=True)
def _huge_F(x, scale):
    return np.sum(x) * scale


@njit(cache=True)
def _huge_dF(x, scale):
    return np.full_like(x, scale)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clip_norm_rescales_a_huge_float32_gradient_rather_than_zeroing_it(dtype):
    """‖g‖₂ is accumulated in float64, each square too: a float32 g with |g_i| ≥ 1.8e19 has a
    finite norm, and clip_norm rescales it (a float32 norm is inf, and the step would be 0)."""
    c, scale = 1e-3, dtype(1e30)
    step = np.full(4, -c / 2, dtype)  # lr = 1, g rescaled to norm c: each of 4 elements c/2
    x = np.zeros(4, dtype)
    fastrms.GradientDescent(x, lr=1.0, clip_norm=c).step(np.full(4, scale, dtype))
    np.testing.assert_allclose(x, step, rtol=1e-6)
    xs = [np.zeros(2, dtype), np.zeros(2, dtype)]  # many arrays: their global norm
    fastrms.GradientDescent(xs, lr=1.0, clip_norm=c).step([np.full(2, scale, dtype)] * 2)
    np.testing.assert_allclose(np.concatenate(xs), step, rtol=1e-6)
    for driver in ("python", "compiled"):
        res = fastrms.minimize(_huge_F, _huge_dF, np.zeros(4, dtype), args=(scale,), method="gd",
                               options={"lr": 1.0, "clip_norm": c, "maxiter": 1, "driver": driver})
        np.testing.assert_allclose(res.x, step, rtol=1e-6, err_msg=driver)
    res = fastrms.minimize(lambda X: X.sum(axis=1) * scale, lambda X: np.full_like(X, scale),
                           np.zeros((2, 4), dtype), method="gd",
                           options={"lr": 1.0, "clip_norm": c, "maxiter": 1, "batched": True})
    np.testing.assert_allclose(res.x, [step, step], rtol=1e-6)  # each problem by its own norm
