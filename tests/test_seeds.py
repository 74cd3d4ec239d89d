"""The seeds' experiments, reproduced by computation."""

import numpy as np
import pytest
from reference import SEED_AX_FINAL

import fastrms
from fastrms import experiments as ex


def test_ax_identity_final_losses():
    out = ex.ax_identity()
    for name, (value, tol) in SEED_AX_FINAL.items():
        assert out[name]["final"] == pytest.approx(value, abs=tol), name
    for r in out.values():
        assert len(r["loss"]) == 300 and r["loss"][-1] == r["final"]
        assert r["x"].shape == (5, 5)
    # rmsprop+momentum actually inverts A
    np.testing.assert_allclose(ex.A_SEED @ out["rmsprop+momentum"]["x"], np.eye(5), atol=0.02)


@pytest.mark.parametrize("mu", [None, 0.9])
def test_ax_identity_matches_the_seed_loop_step_by_step(mu):
    A = ex.A_SEED
    F = lambda x: ex.ax_loss(x, A)  # noqa: E731
    dF = lambda x: ex.ax_grad(x, A)  # noqa: E731
    _, seed_loss = ex.seed_loop(F, dF, np.zeros((5, 5)), 40, mu=mu)
    opts = {"lr": 1e-3, "gamma": 0.9, "eps": 1e-8, "eps_in_sqrt": False, "maxiter": 40, "gtol": 0,
            "history": True, "momentum": mu or 0.0}
    res = fastrms.minimize(F, dF, np.zeros((5, 5)), options=opts)
    np.testing.assert_allclose(res.history["loss"][1:], seed_loss, rtol=1e-9)


def test_d2l_trace_2d():
    out = ex.trace_2d()
    x1, x2 = out["x"]
    assert f"{x1:.6f}" == "-0.010599" and f"{x2:.6f}" in ("0.000000", "-0.000000")
    assert out["trajectory"].shape == (21, 2)
    np.testing.assert_array_equal(out["trajectory"][0], [-5.0, -2.0])


def test_d2l_trace_2d_matches_the_seed_scalar_code():
    import math

    eta, gamma = 0.4, 0.9
    x1, x2, s1, s2 = -5.0, -2.0, 0.0, 0.0
    for _ in range(20):
        g1, g2, eps = 0.2 * x1, 4 * x2, 1e-6
        s1 = gamma * s1 + (1 - gamma) * g1 ** 2
        s2 = gamma * s2 + (1 - gamma) * g2 ** 2
        x1 -= eta / math.sqrt(s1 + eps) * g1
        x2 -= eta / math.sqrt(s2 + eps) * g2
    np.testing.assert_allclose(ex.trace_2d()["x"], [x1, x2], rtol=1e-12, atol=1e-15)
