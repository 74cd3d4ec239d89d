"""The seeds' experiments (numbers, not pictures), mini-batch mode, the data, and the demo."""

import hashlib
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

import fastrms
from fastrms import datasets
from fastrms import experiments as ex

ROOT = Path(__file__).resolve().parent.parent


def test_airfoil_data_is_shipped_intact_and_standardized():
    raw = resources.files("fastrms.datasets").joinpath("airfoil_self_noise.dat").read_bytes()
    assert hashlib.sha256(raw).hexdigest() == datasets.AIRFOIL_SHA256
    X, y = datasets.airfoil()
    assert X.shape == (1500, 5) and y.shape == (1500,) and X.dtype == np.float32
    full = np.genfromtxt(resources.files("fastrms.datasets").joinpath("airfoil_self_noise.dat").open("rb"),
                         dtype=np.float32, delimiter="\t")
    assert full.shape == (1503, 6)
    np.testing.assert_allclose(X[:, 0], ((full[:, 0] - full[:, 0].mean()) / full[:, 0].std())[:1500],
                               rtol=1e-5)


def test_decay_weights():
    w = ex.decay_weights()
    assert set(w) == {0.95, 0.9, 0.8, 0.7} and all(len(v) == 40 for v in w.values())
    assert w[0.9][0] == pytest.approx(0.1) and w[0.9][1] == pytest.approx(0.09)
    assert w[0.9].sum() == pytest.approx(1 - 0.9 ** 40)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_airfoil_rmsprop_reaches_the_seeds_loss(seed):
    r = ex.airfoil(seed=seed)
    assert 0.240 <= r["final"] <= 0.250  # the seeds: 0.243 to 0.248, depending on the shuffle
    assert r["loss"][0] > 0.45 and len(r["loss"]) == 16  # every 200 examples over 2 epochs, plus x0
    np.testing.assert_allclose(r["epoch"][[0, -1]], [0.0, 2.0])
    assert r["x"].dtype == np.float32


def test_airfoil_concise_versions_agree():
    runs = ex.airfoil_runs(seed=0)
    finals = [r["final"] for r in runs.values()]
    assert max(finals) - min(finals) < 1e-3 and 0.240 <= finals[0] <= 0.250


def test_minibatches_are_reproducible_and_cover_the_data():
    X = np.arange(10.0)[:, None] * np.ones((10, 2))
    seen = []

    def grad(x, X, tag):
        seen.append(X[:, 0].copy())
        assert tag == "whole"  # non-data args pass through whole
        return np.zeros_like(x)

    def run(seed):
        seen.clear()
        fastrms.minimize(lambda x, X, tag: 0.0, grad, np.zeros(2), args=(X, "whole"),
                         options={"batch_size": 4, "epochs": 2, "seed": seed})
        return [s.tolist() for s in seen]

    a, b, c = run(1), run(1), run(2)
    assert a == b and a != c
    assert [len(s) for s in a] == [4, 4, 2, 4, 4, 2, 4]  # 3 batches an epoch, plus the final gradient
    assert sorted(sum(a[:3], [])) == list(range(10)) and sorted(sum(a[3:6], [])) == list(range(10))


def test_minibatch_run_reports_epochs_done():
    X, y = datasets.airfoil()
    res = fastrms.minimize(ex.linreg_loss, ex.linreg_grad, np.zeros(6, np.float32), args=(X, y),
                           options={"batch_size": 100, "epochs": 3, "drop_last": True, "seed": 0})
    assert res.success and res.nit == 45 and res.message == "Completed the requested epochs."
    with pytest.raises(ValueError, match="epochs or maxiter"):
        fastrms.minimize(ex.linreg_loss, ex.linreg_grad, np.zeros(6), args=(X, y),
                         options={"batch_size": 10, "epochs": 1, "maxiter": 5})
    with pytest.raises(ValueError, match="larger than the data"):
        fastrms.minimize(ex.linreg_loss, ex.linreg_grad, np.zeros(6), args=(X, y),
                         options={"batch_size": 5000})


def test_extreme_gamma_and_rotation():
    out = ex.extreme_gamma()
    assert not out[1.0]["success"] and out[1.0]["result"].status == 3 and out[1.0]["nit"] < 200
    assert np.all(np.isfinite(out[1.0]["x"]))
    assert out[0.0]["result"].status == 1 and np.isfinite(out[0.0]["loss"][-1])
    rot = ex.rotated()
    assert rot["f_aligned"] < 1e-4 < 0.1 < rot["f_rotated"]


def test_sensitivity_grid_is_a_real_sweep():
    s = ex.sensitivity(lrs=(0.001, 0.01), gammas=(0.5, 0.9), epochs=1)
    assert s["loss"].shape == (2, 2) and np.all(np.isfinite(s["loss"]))
    assert s["loss"][:, 1].max() < s["loss"][:, 0].min()  # after one epoch, η = 0.01 beats 0.001
    # the one batched call is the grid of separate d2l runs (up to float32 rounding in F and dF)
    separate = ex.airfoil(hyper={"gamma": 0.5}, lr=0.01, epochs=1)
    assert s["loss"][0, 1] == pytest.approx(separate["final"], rel=1e-4)
    assert np.all(s["result"].nit == 150)


def test_digits_softmax_regression():
    pytest.importorskip("sklearn", reason="the digits experiment needs scikit-learn")
    out = ex.digits(lrs=(0.01,), epochs=2)
    assert out[0.01]["accuracy"] > 0.8 and out[0.01]["final"] < out[0.01]["loss"][0]


def _demo(tmp_path, hide_matplotlib):
    code = ("import sys\n"
            + ("sys.modules['matplotlib'] = None\n" if hide_matplotlib else "")
            + "from fastrms.cli import main\nsys.exit(main(['demo', '--out', sys.argv[1], '--quiet']))\n")
    return subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, timeout=600)


def test_demo_runs_with_matplotlib(tmp_path):
    pytest.importorskip("matplotlib")
    with_plots = _demo(tmp_path / "a", hide_matplotlib=False)
    assert with_plots.returncode == 0, with_plots.stderr
    assert "0.54692" in with_plots.stdout and "-0.010599, 0.000000" in with_plots.stdout
    pngs = sorted(p.name for p in (tmp_path / "a").glob("*.png"))
    assert {"2-trace-2d.png", "3-airfoil.png", "4-ax-identity.png", "5c-sensitivity.png"} <= set(pngs)
    assert "| 4. AX=I" in (tmp_path / "a" / "summary.md").read_text(encoding="utf-8")


def test_demo_runs_without_matplotlib(tmp_path):
    without = _demo(tmp_path / "b", hide_matplotlib=True)
    assert without.returncode == 0, without.stderr
    assert "pip install 'fastrms[plot]'" in without.stdout and not list((tmp_path / "b").glob("*.png"))
    assert (tmp_path / "b" / "summary.md").exists()


def test_progress_bar_draws_only_when_enabled(capsys):
    from fastrms.cli import Progress

    quiet = Progress("sweep", 3, enabled=False)
    for _ in range(3):
        quiet()
    assert capsys.readouterr().err == ""
    bar = Progress("sweep", 2, enabled=True)
    bar()
    bar()
    err = capsys.readouterr().err
    assert "sweep" in err and "2/2" in err and err.endswith("\n")


def test_python_dash_m_fastrms():
    out = subprocess.run([sys.executable, "-m", "fastrms", "demo", "--help"], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, timeout=120)
    assert out.returncode == 0 and "--out" in out.stdout and "--quiet" in out.stdout


@pytest.mark.skipif(not (ROOT / "bench" / "run.py").is_file(), reason="tests run outside the source tree")
def test_fastrms_bench_runs_the_harness_from_a_checkout_and_says_where_it_is_elsewhere(tmp_path, monkeypatch,
                                                                                      capsys):
    from fastrms.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if Path(p or ".").resolve() != ROOT])
    for name in [m for m in sys.modules if m == "bench" or m.startswith("bench.")]:
        monkeypatch.delitem(sys.modules, name)
    assert main(["bench", "--quick"]) == 2
    assert "source checkout" in capsys.readouterr().err
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as e:
        main(["bench", "--help"])
    assert e.value.code == 0 and "python -m bench" in capsys.readouterr().out


def test_airfoil_rows_are_checked():
    X, y = datasets.airfoil(1503)
    assert X.shape == (1503, 5) and y.shape == (1503,)
    bad_values = ((0, ValueError), (-1, ValueError), (1504, ValueError), (10.5, TypeError), ("5", TypeError))
    for bad, exc in bad_values:
        with pytest.raises(exc, match="n must be"):
            datasets.airfoil(bad)


def test_cli_version(capsys):
    import importlib.metadata

    import numba

    from fastrms.cli import main

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"fastrms {fastrms.__version__} (") and f"numba {numba.__version__}" in out
    # the installed metadata reads the same one place (pyproject's dynamic version)
    assert importlib.metadata.version("fastrms") == fastrms.__version__
