"""The benchmark's baselines compute what fastrms computes (a faster wrong baseline proves nothing)."""

import sys
import time
from pathlib import Path

import numba
import numpy as np
import pytest

import fastrms

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(not (ROOT / "bench" / "run.py").is_file(), reason="no bench/ here")
sys.path.insert(0, str(ROOT))


@pytest.mark.parametrize("variant", ["rmsprop", "rmsprop+momentum", "centered"])
def test_the_numpy_and_hand_written_baselines_are_the_same_update(variant, rng):
    from bench.run import HAND, VARIANTS, NumpyUpdate, hand_constants

    x, g = rng.normal(size=1000), rng.normal(size=1000)
    mine, theirs = x.copy(), x.copy()
    opt = fastrms.RMSProp(mine, lr=1e-6, gamma=0.9, eps=1e-6, **VARIANTS[variant][1])
    npu = NumpyUpdate(x.size, np.float64, variant)
    hand, by_hand, s, b = HAND[(variant, False)], x.copy(), np.zeros_like(x), np.zeros_like(x)
    for _ in range(3):
        opt.step(g)
        npu(theirs, g)
        hand(by_hand, g, s, b, *hand_constants(np.float64))
    np.testing.assert_allclose(theirs, mine, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(by_hand, mine, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_adam_baselines_are_fastrms_adam(dtype, rng):
    """NumPy's and the hand-written Adam (bias corrections computed each step) step as fastrms.Adam,
    in x's dtype (a float64 constant would run the float32 loop in float64)."""
    from bench.run import ADAM, VARIANTS, HandAdam, NumpyUpdate

    stepper, opts = VARIANTS["adam"]
    x, g = rng.normal(size=1000).astype(dtype), rng.normal(size=1000).astype(dtype)
    mine, theirs, by_hand, by_hand_par = x.copy(), x.copy(), x.copy(), x.copy()
    opt = stepper(mine, **ADAM, **opts)
    npu = NumpyUpdate(x.size, dtype, "adam")
    hand, hand_par = HandAdam(x.size, dtype, False), HandAdam(x.size, dtype, True)
    for _ in range(5):
        opt.step(g)
        npu(theirs, g)
        hand(by_hand, g)
        hand_par(by_hand_par, g)
    assert not np.array_equal(mine, x)
    scalars = {sig[4:] for sig in hand.kernel.signatures}  # (lr_t, β1, 1 − β1, β2, 1 − β2, c2, ε)
    assert (numba.from_dtype(np.dtype(dtype)),) * 7 in scalars
    tol = 1e-13 if dtype == np.float64 else 1e-6
    for other in (theirs, by_hand, by_hand_par):
        np.testing.assert_allclose(other, mine, rtol=tol, atol=tol * 1e-5)
    assert by_hand.tobytes() == by_hand_par.tobytes()


def test_the_hand_written_loop_stays_in_float32(rng):
    """Bit for bit the same loop in float32 NumPy: a float64 literal would promote it (and slow it)."""
    from bench.run import HAND, hand_constants

    x, g = rng.normal(size=1000).astype(np.float32), rng.normal(size=1000).astype(np.float32)
    lr, gamma, omg, _, eps = hand_constants(np.float32)
    s, ref_x, ref_s = np.zeros_like(x), x.copy(), np.zeros_like(x)
    for _ in range(3):
        HAND[("rmsprop", False)](x, g, s, s, *hand_constants(np.float32))
        ref_s = gamma * ref_s + omg * g * g
        ref_x -= lr * g / np.sqrt(ref_s + eps)
    assert ref_x.dtype == np.float32 and x.tobytes() == ref_x.tobytes() and s.tobytes() == ref_s.tobytes()


def test_the_hand_written_loop_solves_the_same_problem():
    """The same steps as fastrms (its Python loop here: the compiled loop's driver would cost the suite
    a compilation, and both loops run the same kernel): equal after 20 steps; after the benchmark's
    300 the loss agrees (AX = I amplifies rounding: RMSProp's g/√s flips sign near zero)."""
    from bench import solves
    from bench.ax import jit_dF, jit_F

    A = solves.problem(5)
    opts = {"lr": solves.LR, "gamma": solves.GAMMA, "eps": solves.EPS, "eps_in_sqrt": False, "gtol": 0}
    for steps, check in ((20, "x"), (solves.STEPS[5], "loss")):
        X = solves.hand_loop(np.zeros((5, 5)), A, steps, solves.LR, solves.GAMMA, solves.EPS)
        res = fastrms.minimize(lambda X: jit_F(X, A), lambda X: jit_dF(X, A), np.zeros((5, 5)),
                               options={**opts, "maxiter": steps})
        if check == "x":
            np.testing.assert_allclose(X, res.x, rtol=1e-10, atol=1e-13)
        else:
            assert jit_F(X, A) == pytest.approx(res.fun, rel=1e-4)


def test_the_batched_candidate_solves_copies_of_the_same_problem():
    """Its row functions are the single problem's F and dF row by row, and its time is divided by the
    number of copies it solves."""
    from bench import solves
    from bench.ax import jit_dF, jit_dF_rows, jit_F, jit_F_rows

    A = solves.problem(5)
    X = np.random.default_rng(0).standard_normal((3, 5, 5))
    As = np.ascontiguousarray(np.broadcast_to(A, (3, 5, 5)))
    assert [jit_F(x, A) for x in X] == list(jit_F_rows(X, As))
    G = jit_dF_rows(X, As)
    assert all(G[b].tobytes() == jit_dF(X[b], A).tobytes() for b in range(3))
    name = "fastrms batched, 100 copies at once (per problem)"
    assert solves.candidate(name, 5).per == solves.BATCH and solves.ONLY_AT[name] == (5,)


def test_the_adam_sweeps_hand_written_loop_is_fastrms_adam(rng):
    """The hand-written Adam loops of ``--batched``'s sweep of η and grid of η × β1 (bench/batched.py)
    step as fastrms's batched Adam does, bit for bit; their tables render."""
    from bench import batched as bb

    B = 6
    A, y = rng.normal(size=(B, bb.M, bb.N)), rng.normal(size=(B, bb.M))
    lr = np.geomspace(1e-3, 0.1, B)
    res = fastrms.minimize(bb.F_jit, bb.dF_jit, np.zeros((B, bb.N)), args=(A, y), method="adam",
                           options={"lr": lr, "eps": bb.EPS, "maxiter": 40, "gtol": 0, "batched": True})
    ref = bb.hand_adam_loop(np.zeros((B, bb.N)), A, y, 40, lr)
    np.testing.assert_array_equal(res.x, ref)
    beta1 = np.repeat([0.5, 0.9], B // 2)  # (and the grid's loop, β1 per problem: two groups of three)
    res = fastrms.minimize(bb.F_jit, bb.dF_jit, np.zeros((B, bb.N)), args=(A, y), method="adam",
                           options={"lr": lr, "beta1": beta1, "eps": bb.EPS, "maxiter": 40, "gtol": 0,
                                    "batched": True})
    np.testing.assert_array_equal(res.x, bb.hand_adam_grid_loop(np.zeros((B, bb.N)), A, y, 40, lr, beta1))
    assert bb.GRID_LR.shape == bb.GRID_BETA1.shape == (bb.B,) and len(set(bb.GRID_BETA1)) == 100
    timing = {"fastrms batched, compiled loop (@njit F, dF)": (1.0, 0.9, 1.1),
              "hand-written @njit loop, same dF": (0.5, 0.4, 0.6), "_max_abs_difference_vs_hand_loop": 0.0}
    assert len(set(bb.SEARCH_BETA1)) == bb.B  # (a random search: every problem its own β1)
    sweep = {"one batched call (B = 25)": (1.0, 1.0, 1.0), "25 separate calls": (2.0, 2.0, 2.0)}
    text = bb.markdown({"least_squares": timing, "adam_sweep": timing, "adam_grid": timing,
                        "adam_search": timing, "sweep": sweep})
    assert "A sweep of η with Adam" in text and "A grid of η × β1 with Adam" in text
    assert "A random search with Adam" in text
    assert "| hand-written @njit loop, same dF | 0.500 (0.400–0.600) | 0.50 |" in text


def test_the_many_arrays_hand_written_loop_is_fastrms_update():
    """The flat loop the list stepper is compared with takes fastrms's step (its time per step is
    a fair limit only if so); serial, as at the small model's size (the parallel one is the same
    function)."""
    from bench import many_arrays as ma

    xs, gs = ma.small_model()
    flat_x, flat_g = np.concatenate([a.ravel() for a in xs]), np.concatenate([g.ravel() for g in gs])
    assert flat_x.size == 449
    opt = fastrms.RMSProp(flat_x.copy(), lr=ma.LR, gamma=ma.GAMMA, eps=ma.EPS, eps_in_sqrt=False)
    opt.step(flat_g)
    y, s = flat_x.copy(), np.zeros_like(flat_x)
    ma.FLAT_RMSPROP[False](y, flat_g, s, ma.LR, ma.GAMMA, ma.EPS)
    np.testing.assert_allclose(opt.x, y, rtol=1e-14)


def test_in_turns_settles_each_candidate_for_the_time_asked():
    """A parallel candidate after another one's turn starts slow for a millisecond or more, so
    each timing may be preceded by settle_s seconds of untimed calls of the same candidate."""
    from bench.report import in_turns

    stamps = {"a": [], "b": []}
    cands = {name: (lambda name=name: stamps[name].append(time.perf_counter())) for name in stamps}
    times = in_turns(cands, rounds=1, inner=3, warm=False, settle=1, settle_s=0.02)
    assert {k: len(v) for k, v in times.items()} == {"a": 1, "b": 1}
    for calls in stamps.values():  # untimed calls, then the 3 timed ones at least 0.02 s later
        assert len(calls) >= 2 + 3 and calls[-3] - calls[0] >= 0.02


def test_a_run_cut_short_keeps_what_it_measured_and_the_gpu_goes_first(tmp_path, monkeypatch):
    """On a lent GPU machine the device time runs out first: `--gpu` measures the GPU before the
    CPU tables, and bench.json is written after each part, so a run stopped later keeps them."""
    import json
    import types

    import bench
    from bench import run as bench_run

    ran = []

    def part(name, value):
        def measure(*args, **kwargs):
            ran.append(name)
            return value
        return measure

    def stopped(*args, **kwargs):
        ran.append("solves")
        raise KeyboardInterrupt  # (a time limit or Ctrl-C)

    gpu = types.SimpleNamespace(run=part("gpu", {"rows": ["gpu row"]}))
    monkeypatch.setattr(bench, "gpu", gpu, raising=False)
    monkeypatch.setitem(sys.modules, "bench.gpu", gpu)
    solves = types.SimpleNamespace(run=stopped)
    monkeypatch.setattr(bench, "solves", solves, raising=False)
    monkeypatch.setitem(sys.modules, "bench.solves", solves)
    monkeypatch.setattr(bench_run, "bench_kernels", part("kernels", [{"kernel row": 1}]))
    monkeypatch.setattr(bench_run, "bench_threshold", part("threshold", [{"threshold row": 2}]))
    monkeypatch.setattr(bench_run, "bench_rows_threshold", part("rows", [{"rows row": 3}]))
    with pytest.raises(KeyboardInterrupt):
        bench_run.main(["--gpu", "--out", str(tmp_path)])
    assert ran == ["gpu", "kernels", "threshold", "rows", "solves"]
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["gpu"] == {"rows": ["gpu row"]} and saved["kernels"] == [{"kernel row": 1}]
    assert saved["threshold"] == [{"threshold row": 2}] and saved["threshold_rows"] == [{"rows row": 3}]
    assert "solves" not in saved


def test_the_rows_threshold_table_times_both_kernels_and_says_which_fastrms_picks(monkeypatch, capsys):
    from bench import run as bench_run
    from fastrms.kernels import cpu

    shapes = ((40, 8), (4, 2 * max(cpu.PARALLEL_MIN_BYTES.values()) // 8 // 4))
    monkeypatch.setattr(bench_run, "ROWS_SHAPES", shapes)
    monkeypatch.setattr(bench_run, "bench_threshold", lambda reps: [])
    bench_run.main(["--threshold", "--quick"])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 4")]
    assert len(lines) == 2
    for (B, n), line in zip(shapes, lines, strict=True):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[:3] == [f"{B:,}", f"{n:,}", f"{B * n:,}"]
        assert float(cells[3]) > 0 and float(cells[4]) > 0
        assert cells[6] == ("parallel" if cpu.use_parallel(B * n, 8) else "serial")


def test_the_startup_table_times_each_script_in_turns_against_numbas_own_start(monkeypatch):
    """`python -m bench --startup`: every candidate's script is Python that times itself; rounds
    take turns after an uncounted one, a candidate whose library is missing is left out, and the
    last column is each median above the floor's (here with fake timings, no processes)."""
    from bench import startup

    for name, script in startup.SCRIPTS.items():
        compile(startup.timed(script), name, "exec")
    seconds = {name: 0.5 + 0.1 * i for i, name in enumerate(startup.SCRIPTS)}
    calls = []

    def fake(name):
        calls.append(name)
        return seconds[name] + 0.01 * (len(calls) % 3)

    monkeypatch.setattr(startup, "first_call", fake)
    monkeypatch.setattr(startup, "NEEDS", {**startup.NEEDS, "torch: import, one RMSprop step (foreach), "
                                                           "1,000 elements": "no_such_module_here"})
    res = startup.run(rounds=2)
    names = [name for name in startup.SCRIPTS if not name.startswith("torch")]
    assert calls == names * 3 and [r["candidate"] for r in res["rows"]] == names
    floor = res["rows"][0]
    assert res["rows"][0]["candidate"] == startup.FLOOR and floor["above_floor_s"] == 0
    for r in res["rows"]:
        assert r["min_s"] <= r["median_s"] <= r["max_s"]
        assert r["above_floor_s"] == r["median_s"] - floor["median_s"]
    text = startup.markdown(res)
    stepper = res["rows"][1]
    assert (f"| {stepper['candidate']} | {stepper['median_s'] * 1e3:.0f} | {stepper['min_s'] * 1e3:.0f}–"
            f"{stepper['max_s'] * 1e3:.0f} | +{stepper['above_floor_s'] * 1e3:.0f} |") in text
