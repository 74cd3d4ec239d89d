"""minimize races the serial and parallel kernels in a long run's first steps (kernels/cpu.py, Race).

The race may change which kernel runs, never the iterates: serial and parallel kernels agree bit
for bit (test_kernels.py), so a raced run equals an unraced one exactly.  Who wins is decided
by time, which these tests control (a slowed kernel, or block times handed to Race), never by
a threshold on this machine's clock.
"""

import time

import numba
import numpy as np
import pytest

import fastrms
from fastrms.drivers import compiled, compiled_batched
from fastrms.kernels import cpu

# x's bytes in the race band: above the parallel threshold of every layer, far below RACE_MAX_BYTES
N = 2 * max(cpu.PARALLEL_MIN_BYTES.values()) // 8 + 3
SIDE = (N, 1)
OPTS = {"lr": 1e-3, "gamma": 0.9, "maxiter": 80, "gtol": 0}

needs_threads = pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2,
                                   reason="one thread: no parallel kernels")


def _problem(seed=0):
    rng = np.random.default_rng(seed)
    target = rng.normal(size=SIDE)
    return target, (lambda x: float(np.sum((x - target) ** 2))), (lambda x: 2 * (x - target))


@numba.njit(cache=True)
def _jit_F(x, target):
    return np.sum((x - target) ** 2)


@numba.njit(cache=True)
def _jit_dF(x, target):
    return 2.0 * (x - target)


def test_race_times_the_second_block_of_each_kernel_and_keeps_the_faster():
    for serial_s, parallel_s, winner in ((1.0, 2.0, False), (2.0, 1.0, True)):
        race = cpu.Race()
        ran = []
        # the warm-up blocks (first calls, the pool starting) take long and must not count
        for seconds in (50.0, 80.0, serial_s, parallel_s):
            assert not race.decided
            ran.append(race.parallel)
            race.block_done(seconds)
        assert ran == [False, True, False, True]
        assert race.decided and race.parallel is winner
        assert race.seconds == {False: serial_s, True: parallel_s}


def _slow(kernel, seconds):
    def slowed(*args):
        time.sleep(seconds)
        return kernel(*args)
    return slowed


def test_racing_stepper_calls_each_kernel_in_its_blocks_then_only_the_winner():
    calls = []

    def kernel(name, delay):
        def run(*args):
            calls.append(name)
            time.sleep(delay)
            return 1, 0
        return run

    for slow, fast in (("serial", "parallel"), ("parallel", "serial")):
        calls.clear()
        delays = {slow: 0.004, fast: 0.0}
        step = cpu.racing_stepper(kernel("serial", delays["serial"]), kernel("parallel", delays["parallel"]))
        for _ in range(cpu.Race.STEPS + 10):
            assert step(None, None, None, None, 0.0, None) == (1, 0)
        b = cpu.Race.BLOCK
        assert calls[:cpu.Race.STEPS] == ["serial"] * b + ["parallel"] * b + ["serial"] * b + ["parallel"] * b
        assert calls[cpu.Race.STEPS:] == [fast] * 10
        assert step.race.decided and step.race.parallel is (fast == "parallel")


@needs_threads
def test_races_only_in_the_band_and_for_long_runs():
    assert cpu.races(N, 8, cpu.RACE_MIN_STEPS)
    assert not cpu.races(N, 8, cpu.RACE_MIN_STEPS - 1)  # a short run keeps the size rule
    assert not cpu.races(1000, 8, 10_000)  # serial by the rule: too small to gain from threads
    assert not cpu.races(cpu.RACE_MAX_BYTES // 8 + 1, 8, 10_000)  # parallel by the rule: large


def _spy_races(monkeypatch):
    """The races decided during the test (block times and winners)."""
    decided = []
    block_done = cpu.Race.block_done

    def spy(self, seconds):
        block_done(self, seconds)
        if self.decided:
            decided.append((dict(self.seconds), self.parallel))

    monkeypatch.setattr(cpu.Race, "block_done", spy)
    return decided


@needs_threads
# (the compiled loop in place races the same way, with the in-place kernels: not repeated here,
# where each case compiles a driver of its own)
@pytest.mark.parametrize("driver,in_place", [("python", False), ("python", True), ("compiled", False)])
def test_a_raced_run_equals_an_unraced_one_bit_for_bit(driver, in_place, monkeypatch):
    target, F, dF = _problem()
    f, g, args = (F, dF, ()) if driver == "python" else (_jit_F, _jit_dF, (target,))
    opts = {**OPTS, "driver": driver, "in_place": in_place}
    decided = _spy_races(monkeypatch)
    raced = fastrms.minimize(f, g, np.zeros(SIDE), args=args, options=opts)
    assert len(decided) == 1  # the race ran, once
    monkeypatch.setattr(cpu, "RACE_MIN_STEPS", 10**9)  # the size rule alone: the parallel kernel
    # (the Python loop, which the compiled one equals bit for bit, rather than a second driver to compile)
    plain = fastrms.minimize(f, g, np.zeros(SIDE), args=args, options={**opts, "driver": "python"})
    assert len(decided) == 1
    assert raced.x.tobytes() == plain.x.tobytes() and raced.jac.tobytes() == plain.jac.tobytes()
    assert (raced.fun, raced.nit, raced.nfev, raced.njev, raced.status) == \
           (plain.fun, plain.nit, plain.nfev, plain.njev, plain.status)


@needs_threads
@pytest.mark.parametrize("slow", [False, True])
def test_python_loop_keeps_the_kernel_that_won(slow, monkeypatch):
    """A slowed kernel (as a parallel one is on a crowded machine) loses, and the run keeps the other."""
    used = []
    guarded = cpu.CpuKernels._guarded

    def spied(self, template, parallel):
        kernel = guarded(self, template, parallel)
        if parallel == slow:
            kernel = _slow(kernel, 0.003)

        def run(*args):
            used.append(parallel)
            return kernel(*args)
        return run

    monkeypatch.setattr(cpu.CpuKernels, "_guarded", spied)
    decided = _spy_races(monkeypatch)
    _, F, dF = _problem()
    res = fastrms.minimize(F, dF, np.zeros(SIDE), options={**OPTS, "driver": "python"})
    assert res.nit == OPTS["maxiter"]
    assert [won for _, won in decided] == [not slow]
    assert used[cpu.Race.STEPS:] == [not slow] * (OPTS["maxiter"] - cpu.Race.STEPS)


@needs_threads
@pytest.mark.parametrize("slow", [False, True])
def test_compiled_loop_keeps_the_kernel_that_won(slow, monkeypatch):
    """The compiled loop races in timed chunks; its later chunks run the winner."""
    pars, drives = [], []
    driver = compiled._driver

    def spied(*args, **kwargs):
        drive = driver(*args, **kwargs)
        drives.append(drive)

        def run(*a):
            pars.append(a[-1])
            return drive(*a)
        return run

    monkeypatch.setattr(compiled, "_driver", spied)
    monkeypatch.setattr(compiled, "_prepared", compiled._LRU(64))  # (an earlier test's call would answer)
    block_done = cpu.Race.block_done

    def skewed(self, seconds):  # the slow kernel's blocks take a second longer
        block_done(self, seconds + (1.0 if self.parallel == slow else 0.0))

    monkeypatch.setattr(cpu.Race, "block_done", skewed)
    target = _problem()[0]
    res = fastrms.minimize(_jit_F, _jit_dF, np.zeros(SIDE), args=(target,),
                           options={**OPTS, "driver": "compiled"})
    assert res.nit == OPTS["maxiter"]
    # a racing driver holds both kernels: STEP serial, STEP_PAR parallel (par picks one per call)
    kernels = drives[0].py_func.__globals__
    assert "_ser_" in kernels["STEP"].py_func.__name__ and "_par_" in kernels["STEP_PAR"].py_func.__name__
    assert pars[:4] == [False, True, False, True]  # the race's blocks
    assert len(pars) > 4 and set(pars[4:]) == {not slow}


# -- batched solves: a uniform batch steps all B·n elements with the one-problem kernel while every
# problem runs, and races it as one problem's run does

BATCH = (4, N // 4 + 1)  # B·n in the race band


@numba.njit(cache=True)
def _batch_F(X, T):
    return 0.5 * np.sum((X - T) ** 2, axis=1)


@numba.njit(cache=True)
def _batch_dF(X, T):
    return X - T


def _batch_problem():
    """Problems that converge one after another (they start 0.5, 0.8, 1.1 and 3 from the target),
    the last at maxiter: the race runs while all four do, the rows kernel after the first stops."""
    T = np.random.default_rng(3).normal(size=BATCH)
    X0 = T + np.array([0.5, 0.8, 1.1, 3.0])[:, None]
    return T, X0, {"lr": 0.01, "gamma": 0.9, "maxiter": 150, "gtol": 0.05, "batched": True}


@needs_threads
@pytest.mark.parametrize("driver", ["python", "compiled"])
@pytest.mark.parametrize("slow", [False, True])
def test_a_batched_run_races_keeps_the_winner_and_equals_an_unraced_one(driver, slow, monkeypatch):
    T, X0, opts = _batch_problem()
    opts["driver"] = driver
    block_done = cpu.Race.block_done
    decided = []

    def skewed(self, seconds):  # the slow kernel's blocks take a second longer
        block_done(self, seconds + (1.0 if self.parallel == slow else 0.0))
        if self.decided:
            decided.append(self.parallel)

    monkeypatch.setattr(cpu.Race, "block_done", skewed)
    pars = []
    if driver == "compiled":  # the kernel flag of each call of the driver
        prepare = compiled_batched.prepare

        def spied(*args):
            drive, *rest = prepare(*args)

            def run(*a):
                pars.append(a[-1])
                return drive(*a)
            return run, *rest

        monkeypatch.setattr(compiled_batched, "prepare", spied)
    else:  # which kernels ran, flat or rows, serial or parallel
        checked = cpu.CpuKernels.checked

        def spied(self, parallel, in_place=False, batched=False):
            kernel = checked(self, parallel, in_place, batched)

            def run(*a):
                pars.append((batched, parallel))
                return kernel(*a)
            return run

        monkeypatch.setattr(cpu.CpuKernels, "checked", spied)
    raced = fastrms.minimize(_batch_F, _batch_dF, X0, args=(T,), options=opts)
    assert decided == [not slow]  # the race ran, once, and the fast kernel won
    # three converged one after another (the rows kernel ran too), the last ran to maxiter
    assert cpu.Race.STEPS < raced.nit[0] < raced.nit[1] < raced.nit[2] < raced.nit[3] == opts["maxiter"]
    assert list(raced.status) == [0, 0, 0, 1]
    if driver == "compiled":
        assert pars[:4] == [False, True, False, True] and set(pars[4:]) == {not slow}
    else:  # the rows kernel, once the first problem stopped, is the race's winner too
        b = cpu.Race.BLOCK
        assert pars[:cpu.Race.STEPS] == [(False, False)] * b + [(False, True)] * b + [(False, False)] * b \
            + [(False, True)] * b
        assert set(pars[cpu.Race.STEPS:]) == {(False, not slow), (True, not slow)}
    monkeypatch.setattr(cpu, "RACE_MIN_STEPS", 10**9)  # the size rule alone: the parallel kernels
    plain = fastrms.minimize(_batch_F, _batch_dF, X0, args=(T,), options={**opts, "driver": "python"})
    assert len(decided) == 1
    for key in ("x", "jac", "nit", "status", "fun"):
        np.testing.assert_array_equal(raced[key], plain[key], err_msg=key)
