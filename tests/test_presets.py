"""Presets: other libraries' semantics, checked by one-step values and, with torch, step by step."""

import numpy as np
import pytest

import fastrms
from fastrms import presets, schedules


def one_step(method="rmsprop", preset=None, **hyper):
    x = np.array([10.0])
    cls = {"rmsprop": fastrms.RMSProp, "adam": fastrms.Adam, "adagrad": fastrms.Adagrad}[method]
    opt = cls(x, preset=preset, lr=0.1, **hyper)
    opt.step(x.copy())  # f = x²/2, g = x = 10
    return float(x[0])


# theta = 10, f = theta²/2, lr = 0.1: one step of each library, computed with the library itself
# (the Keras value is also in its docstring)
@pytest.mark.parametrize("preset,hyper,expected", [
    ("keras", {}, 9.683772),
    ("torch", {}, 9.0),
    ("torch", {"alpha": 0.9}, 9.683772),
    ("tf1", {}, 9.697109),
    ("optax", {}, 9.683772),
    ("optax", {"bias_correction": True}, 9.9),
    ("autograd", {}, 9.697109),
    ("d2l", {}, 9.683772),
    ("mxnet", {"gamma1": 0.9}, 9.683772),
])
def test_one_step_check_values(preset, hyper, expected):
    assert one_step(preset=preset, **hyper) == pytest.approx(expected, abs=5e-7)


def test_adagrad_presets_one_step():
    # Optax: s = 0.1 + g², x − η g / √(s + ε) with ε = 1e-7 (optax scale_by_rss: rsqrt(t + eps));
    # TF1: no ε at all; PyTorch: √s + ε with ε = 1e-10
    s = 0.1 + 100.0
    assert one_step("adagrad", "optax") == pytest.approx(10 - 0.1 * 10 / np.sqrt(s + 1e-7), abs=1e-12)
    assert one_step("adagrad", "tf1") == pytest.approx(10 - 0.1 * 10 / np.sqrt(s), abs=1e-12)
    assert one_step("adagrad", "torch") == pytest.approx(10 - 0.1 * 10 / (np.sqrt(100.0) + 1e-10), abs=1e-12)


def test_preset_names_and_errors():
    with pytest.raises(ValueError, match="unknown preset 'pytorch'.*did you mean 'torch'"):
        fastrms.RMSProp(np.zeros(2), preset="pytorch")
    with pytest.raises(ValueError, match="unknown option"):
        fastrms.RMSProp(np.zeros(2), preset="torch", gamma1=0.9)  # an MXNet name under torch
    with pytest.raises(ValueError, match=r"preset 'mxnet' has no 'adadelta'; it covers \['adagrad', 'adam'"):
        fastrms.Adadelta(np.zeros(2), preset="mxnet")
    opt = fastrms.RMSProp(np.zeros(2), preset="keras")
    hp = opt.hyperparameters
    assert hp["lr"] == 0.001 and hp["eps"] == 1e-7 and hp["eps_in_sqrt"] and hp["lr_in_momentum"]
    assert hp["decoupled_weight_decay"]
    assert fastrms.RMSProp(np.zeros(2), preset="tf1").state["s"].tolist() == [1.0, 1.0]


def test_mxnet_centered_has_momentum_inside_and_plain_has_none():
    plain = fastrms.RMSProp(np.zeros(2), preset="mxnet", gamma1=0.95, gamma2=0.5)
    assert plain.hyperparameters["momentum"] == 0.0 and plain.hyperparameters["gamma"] == 0.95
    centered = fastrms.RMSProp(np.zeros(2), preset="mxnet", centered=True, gamma2=0.8)
    assert centered.hyperparameters["momentum"] == 0.8 and centered.hyperparameters["lr_in_momentum"]
    assert set(centered.state) == {"t", "s", "m", "b"}


def test_lr_inside_and_outside_the_buffer_differ_only_when_lr_changes(rng):
    grads = [rng.normal(size=6) for _ in range(8)]
    finals = {}
    for inside in (False, True):
        for lr in (0.1, schedules.step(0.1, 0.5, 3)):
            x = np.ones(6)
            opt = fastrms.RMSProp(x, lr=lr, momentum=0.9, lr_in_momentum=inside)
            for g in grads:
                opt.step(g)
            finals[inside, isinstance(lr, float)] = x
    np.testing.assert_allclose(finals[False, True], finals[True, True], rtol=1e-12)
    assert np.max(np.abs(finals[False, False] - finals[True, False])) > 1e-3


def test_schedules_values():
    assert schedules.constant(0.1)(7) == 0.1
    assert schedules.exponential(1.0, 0.5, 10)(20) == pytest.approx(0.25)
    assert schedules.exponential(1.0, 0.5, 10, staircase=True)(19) == pytest.approx(0.5)
    assert schedules.step(1.0, 0.1, 5)(10) == pytest.approx(0.01)
    assert schedules.inverse_time(1.0, 1.0, 2)(4) == pytest.approx(1 / 3)
    c = schedules.cosine(1.0, 100, final=0.1)
    assert c(0) == 1.0 and c(100) == pytest.approx(0.1) and c(50) == pytest.approx(0.55) and c(500) == c(100)
    w = schedules.cosine(1.0, 10, warmup=4)
    assert [w(t) for t in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0]) and w(4) == 1.0
    with pytest.raises(ValueError, match="must be > 0"):
        schedules.step(-1.0, 0.5, 3)
    # a schedule given as a dict, and a decay that follows a schedule
    res = fastrms.minimize(lambda x: float(x @ x), lambda x: 2 * x, np.ones(3),
                           options={"lr": {"schedule": "exponential", "value": 0.1, "rate": 0.5,
                                           "steps": 100},
                                    "gamma": schedules.step(0.5, 1.2, 10), "maxiter": 30, "gtol": 0})
    assert res.nit == 30
    with pytest.raises(ValueError, match="schedule"):
        fastrms.minimize(lambda x: 0.0, lambda x: x, np.ones(2), options={"lr": {"schedule": "linear"}})


@pytest.mark.parametrize("preset", ["keras", "tf1"])
def test_adam_under_keras_and_tf1_uses_epsilon_hat(preset, rng):
    from reference import reference_run

    x0 = rng.normal(size=6)
    grads = [rng.normal(size=6) for _ in range(5)]
    x = x0.copy()
    opt = fastrms.Adam(x, preset=preset, learning_rate=0.01)
    assert opt.hyperparameters["epsilon_hat"]
    for g in grads:
        opt.step(g)
    eps = {"keras": 1e-7, "tf1": 1e-8}[preset]
    np.testing.assert_allclose(x, reference_run("adam", x0, grads, lr=0.01, eps=eps, epsilon_hat=True),
                               rtol=1e-13)
    plain = reference_run("adam", x0, grads, lr=0.01, eps=eps)
    assert not np.allclose(x, plain, rtol=1e-13, atol=0)  # the test can tell the two forms apart


def _steps(cls, grads, x0, **options):
    x = x0.copy()
    opt = cls(x, **options)
    for g in grads:
        opt.step(g)
    return x


def test_optax_sgd_keeps_lr_outside_its_buffer(rng):
    # optax.sgd is trace then scale: b ← μb + g; x ← x − η_t b, PyTorch's form, unlike Keras's
    grads, x0 = [rng.normal(size=6) for _ in range(8)], rng.normal(size=6)
    lr = schedules.step(0.1, 0.5, 3)
    ours = {p: _steps(fastrms.Momentum, grads, x0, preset=p, lr=lr, momentum=0.9) for p in ("optax", "torch",
                                                                                          "keras")}
    np.testing.assert_array_equal(ours["optax"], ours["torch"])
    assert np.max(np.abs(ours["optax"] - ours["keras"])) > 1e-3
    # and, like optax.sgd, no momentum unless asked for (momentum=None is Optax's "none")
    assert fastrms.Momentum(np.zeros(2), preset="optax").hyperparameters["momentum"] == 0.0
    np.testing.assert_array_equal(_steps(fastrms.Momentum, grads, x0, preset="optax", lr=0.1, momentum=None),
                                  _steps(fastrms.GradientDescent, grads, x0, preset="optax", lr=0.1))


@pytest.mark.parametrize("preset", ["keras", "optax"])
def test_nesterov_without_momentum_is_ignored_where_the_library_ignores_it(preset, rng):
    grads, x0 = [rng.normal(size=5) for _ in range(4)], rng.normal(size=5)
    x = _steps(fastrms.Momentum, grads, x0, preset=preset, lr=0.1, nesterov=True)
    np.testing.assert_array_equal(x, _steps(fastrms.GradientDescent, grads, x0, preset=preset, lr=0.1))
    with pytest.raises(TypeError, match="nesterov"):
        fastrms.Momentum(np.zeros(2), preset=preset, nesterov="yes")
    # with momentum it is Nesterov's step
    y = _steps(fastrms.Momentum, grads, x0, preset=preset, lr=0.1, momentum=0.9, nesterov=True)
    assert not np.allclose(y, _steps(fastrms.Momentum, grads, x0, preset=preset, lr=0.1, momentum=0.9))


def test_nesterov_without_momentum_is_still_refused_elsewhere():
    for preset in (None, "torch"):
        with pytest.raises(ValueError, match="nesterov=True needs momentum > 0"):
            fastrms.Momentum(np.zeros(2), preset=preset, momentum=0.0, nesterov=True)
    with pytest.raises(TypeError):
        fastrms.Momentum(np.zeros(2), preset="torch", momentum=None)


def test_keras_global_clipnorm_is_clipnorm_on_one_array(rng):
    grads, x0 = [5 * rng.normal(size=5) for _ in range(4)], rng.normal(size=5)
    a = _steps(fastrms.RMSProp, grads, x0, preset="keras", global_clipnorm=0.5)
    np.testing.assert_array_equal(a, _steps(fastrms.RMSProp, grads, x0, preset="keras", clipnorm=0.5))
    assert not np.allclose(a, _steps(fastrms.RMSProp, grads, x0, preset="keras"))


def test_learning_rate_callables_of_no_arguments(rng):
    # Keras calls a plain learning_rate callable with no arguments, once per step
    grads, x0 = [rng.normal(size=5) for _ in range(6)], rng.normal(size=5)
    calls = []

    def lr():
        calls.append(1)
        return 0.1 if len(calls) <= 3 else 0.01

    x = _steps(fastrms.RMSProp, grads, x0, lr=lr)
    assert len(calls) == 6
    np.testing.assert_array_equal(x, _steps(fastrms.RMSProp, grads, x0, lr=lambda t: 0.1 if t < 3 else 0.01))
    res = fastrms.minimize(lambda x: float(x @ x), lambda x: 2 * x, np.ones(3), options={"lr": lambda: 0.05,
                                                                                          "maxiter": 5})
    assert res.nit == 5 and np.all(res.x < 1)
    with pytest.raises(ValueError, match="0.1 .*lr"):  # checked like a constant at every step
        _steps(fastrms.RMSProp, grads, x0, lr=lambda: -0.1)


def test_optax_adam_forms_and_their_errors(rng):
    from reference import reference_run

    grads, x0 = [rng.normal(size=6) * s for s in (1, 5, 0.1, 0.1, 3, 0.2)], rng.normal(size=6)
    opts = {"lr": 0.01, "eps": 1e-8, "amsgrad": True, "beta2": 0.9}
    x = _steps(fastrms.Adam, grads, x0, preset="optax", **{k: v for k, v in opts.items()})
    np.testing.assert_allclose(x, reference_run("adam", x0, grads, v_hat=True, **opts), rtol=1e-13)
    # the maximum over v̂ (Optax) and over v (PyTorch, Keras) are different methods
    assert not np.allclose(x, reference_run("adam", x0, grads, **opts), rtol=1e-6, atol=0)
    with pytest.raises(ValueError, match="eps_root .* needs v_hat=True"):
        fastrms.Adam(np.zeros(2), eps_root=1e-8)
    with pytest.raises(ValueError, match="choose one"):
        fastrms.Adam(np.zeros(2), preset="keras", v_hat=True)


INERT_VALUES = {  # a value each preset's inert arguments take in the library (ANY ones: anything)
    "torch": {"foreach": True, "fused": None, "capturable": False, "differentiable": False},
    "keras": {"name": "rmsprop", "use_ema": False, "ema_momentum": 0.99, "ema_overwrite_frequency": None,
              "loss_scale_factor": None, "gradient_accumulation_steps": None},
    "tf1": {"use_locking": True, "name": "RMSProp"},
    "optax": {"mu_dtype": None},
    "mxnet": {"lazy_update": True, "multi_precision": False, "param_idx2name": {0: "w"}, "sym": None,
              "rescale_grad": 1.0, "clip_weights": None, "lr_scheduler": None, "begin_num_update": 0},
    "timm": {"foreach": False, "caution": False, "corrected_weight_decay": False, "max_lr_snapshot": 0.01,
             "degenerated_to_sgd": True, "fixed_decay": False},
}


@pytest.mark.parametrize("preset", sorted(INERT_VALUES))
def test_a_librarys_implementation_switches_are_taken_and_change_nothing(preset):
    """The library's keyword arguments work unchanged under its preset (the preset's promise):
    those that change nothing in the update are dropped; given a value that would change the
    library's result, they are a ValueError."""
    assert set(INERT_VALUES[preset]) == set(presets.INERT[preset])
    plain = fastrms.RMSProp(np.zeros(3), preset=preset, lr=0.01).hyperparameters
    given = fastrms.RMSProp(np.zeros(3), preset=preset, lr=0.01, **INERT_VALUES[preset])
    assert given.hyperparameters == plain
    res = fastrms.minimize(lambda x: float(x @ x), lambda x: 2 * x, np.ones(3),
                           options={"preset": preset, "lr": 0.01, "maxiter": 3, **INERT_VALUES[preset]})
    assert res.nit == 3
    for key, accepted in presets.INERT[preset].items():
        if accepted is presets.ANY:
            continue
        other = 2.0 if accepted is None else True if accepted is False else 5 if accepted == 0 else 0.5
        with pytest.raises(ValueError, match=f"{key}={other!r} is not offered by fastrms .preset '{preset}' "
                                             f"takes {key} only as {key}={accepted!r}"):
            fastrms.RMSProp(np.zeros(3), preset=preset, **{key: other})
    with pytest.raises(ValueError, match="unknown option"):
        fastrms.RMSProp(np.zeros(3), **INERT_VALUES[preset])  # (without the preset they mean nothing)
