"""The README's quick start runs as written."""

import re
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def _run_block(marker: str, title: str) -> dict:
    """Execute the README's first Python block that contains ``marker``; its namespace."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    block = next(b for b in blocks if marker in b)
    namespace: dict = {}
    exec(compile(block, title, "exec"), namespace)  # noqa: S102
    return namespace


@pytest.mark.skipif(not README.exists(), reason="tests run outside the source tree")
def test_quick_start_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    namespace: dict = {}
    exec(compile(blocks[0], "README quick start", "exec"), namespace)  # noqa: S102
    from reference import SEED_AX_FINAL

    value, tol = SEED_AX_FINAL["rmsprop+momentum"]
    assert abs(namespace["res"].fun - value) < tol and namespace["res"].x.shape == (5, 5)
    assert namespace["opt"].t == 300


@pytest.mark.skipif(not README.exists(), reason="tests run outside the source tree")
def test_minibatch_example_runs():
    res = _run_block("batch_size", "README mini-batch example")["res"]
    assert res.success and 0.24 < res.fun < 0.25 and res.history["epoch"][-1] == 2.0


@pytest.mark.skipif(not README.exists(), reason="tests run outside the source tree")
def test_minimizer_example_runs():
    import fastrms

    ns = _run_block("fastrms.Minimizer(F, dF", "README Minimizer example")
    for A, X in zip(ns["matrices"], ns["inverses"], strict=True):
        np.testing.assert_allclose(X, np.linalg.inv(A), atol=0.02)  # RMSProp hovers within ~lr of it
    A = ns["matrices"][-1]
    direct = fastrms.minimize(ns["F"], ns["dF"], np.zeros((5, 5)), args=(A,),
                              options={"lr": 1e-2, "maxiter": 3000})
    assert direct.x.tobytes() == ns["inverses"][-1].tobytes()


@pytest.mark.skipif(not README.exists(), reason="tests run outside the source tree")
def test_many_arrays_example_runs():
    ns = _run_block("fastrms.Adam(params", "README many-arrays example")
    assert ns["opt"].t == 1 and ns["first_moment"]["W1"].shape == (64, 32)
    np.testing.assert_allclose(ns["params"]["b1"], -1e-3)  # Adam's first step: −η·sign(g)


@pytest.mark.skipif(not README.exists(), reason="tests run outside the source tree")
def test_torch_model_example_runs():
    torch = pytest.importorskip("torch", reason="the example needs torch")
    ns = _run_block("opt.lr = 1e-3", "README torch example")
    torch.manual_seed(0)  # the example's model before training
    start = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)).double()
    loss = torch.nn.functional.mse_loss
    with torch.no_grad():
        before, after = (float(loss(m(ns["X"]), ns["y"])) for m in (start, ns["model"]))
    assert ns["opt"].t == 20 and ns["opt"].lr == 1e-3
    assert all(a is b for a, b in zip(ns["opt"].x, ns["model"].parameters(), strict=True))  # in place
    assert after < 0.95 * before


@pytest.mark.skipif(not README.exists(), reason="tests run outside the source tree")
def test_readme_names_every_registered_method():
    import fastrms

    text = README.read_text(encoding="utf-8")
    methods_section = text.split("## Methods", 1)[1].split("\n## ", 1)[0]
    for name, method in fastrms.methods.METHODS.items():
        table = [line for line in methods_section.splitlines() if line.startswith("| `")]
        assert any(f"`{name}`" in line.split("|")[1] for line in table), f"the methods table lacks {name}"
        assert f"`{method.class_name}`" in methods_section, f"the stepper list lacks {method.class_name}"
        functions = methods_section.split("scipy method functions:", 1)[1].split("\n", 1)[0]
        assert re.search(rf"`(fastrms\.)?{name}`", functions), f"the scipy function list lacks {name}"
        assert getattr(fastrms, name).__name__ == name and getattr(fastrms, method.class_name).method == name


@pytest.mark.skipif(not README.exists(), reason="tests run outside the source tree")
def test_batched_example_runs():
    namespace = _run_block("'batched': True", "README batched example")
    res = namespace["res"]
    assert res.x.shape == (9, 5) and res.status.shape == (9,)
    # the same problem 9 times: the best η, γ reach its least-squares minimum
    A, y = namespace["A"], namespace["y"]
    w = np.linalg.lstsq(A, y, rcond=None)[0]
    assert abs(res.fun.min() - 0.5 * np.mean((A @ w - y) ** 2)) < 1e-4
    assert np.ptp(res.fun) > 1e-3  # and the grid is a real sweep


@pytest.mark.skipif(not README.exists(), reason="tests run outside the source tree")
def test_dask_example_runs():
    pytest.importorskip("dask.array")
    namespace = _run_block("'reduction': 'mean'", "README Dask example")
    import fastrms
    from fastrms import experiments as ex

    X, y = namespace["X"], namespace["y"]
    ref = fastrms.minimize(ex.linreg_loss, ex.linreg_grad, np.zeros(6), args=(X, y),
                           options={"lr": 0.01, "maxiter": 100, "gtol": 0})
    np.testing.assert_allclose(namespace["res"].x, ref.x, rtol=1e-12, atol=1e-12)
