"""Step-by-step parity with Optax under preset='optax' (skipped without optax).

Each case passes the same keyword arguments to the Optax alias and to the fastrms stepper: the
preset's names and defaults must make them the same optimizer.  float64 throughout (jax x64).
"""

import itertools

import numpy as np
import pytest

import fastrms

optax = jax = jnp = None


@pytest.fixture(scope="module", autouse=True)
def _optax():
    # imported when this file's first test runs, not at collection: every xdist worker collects every file,
    # and these imports cost seconds each
    global optax, jax, jnp
    optax = pytest.importorskip("optax", reason="optax parity tests need optax (pip install optax)")
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy


def _grid(**axes):
    keys = list(axes)
    return [{k: v for k, v in zip(keys, vals, strict=True) if v is not _OMIT}
            for vals in itertools.product(*axes.values())]


_OMIT = object()  # leave the argument out: both libraries' defaults apply


def _lr_decay(t):  # a float64 schedule (Optax's built-in schedules compute in float32)
    return 0.05 / (1.0 + 0.3 * t)


# (optax alias, fastrms stepper, {optax keyword: value})
CASES = (
    [("sgd", "Momentum", h) for h in _grid(momentum=(_OMIT, None, 0.0, 0.9), nesterov=(_OMIT, True))]
    + [("sgd", "GradientDescent", {})]
    # every combination of rmsprop's switches with the default numbers, and other numbers with every
    # combination of the switches they meet in the update (momentum's and Nesterov's terms take the
    # preconditioned step whatever made it: the suite's time on 2 cores is kept for the rest)
    + [("rmsprop", "RMSProp", {**h, **numbers}) for h in _grid(
        eps_in_sqrt=(True, False), centered=(False, True), momentum=(None, 0.9), nesterov=(False, True),
        bias_correction=(False, True))
       for numbers in ({}, {"decay": 0.5, "eps": 1e-3}, {"initial_scale": 0.1, "eps": 1e-3})
       if not numbers or (h["momentum"] is None and not h["nesterov"])
       # centered and bias-corrected from s₀ = 0, the first variance s − m² is 0 in exact arithmetic and
       # both libraries divide by their rounding noise (see test_centered_bias_corrected_first_step)
       if not (h["centered"] and h["bias_correction"] and "initial_scale" not in numbers)]
    + [("adam", "Adam", h) for h in _grid(b1=(_OMIT, 0.5), b2=(_OMIT, 0.9), eps=(_OMIT, 1e-3),
                                          eps_root=(_OMIT, 1e-6), nesterov=(_OMIT, True))]
    + [("adamw", "AdamW", h) for h in _grid(weight_decay=(_OMIT, 0.1), eps_root=(_OMIT, 1e-6),
                                            nesterov=(_OMIT, True))]
    + [("amsgrad", "Adam", h) for h in _grid(b2=(_OMIT, 0.9), eps_root=(_OMIT, 1e-6),
                                             bias_correction_mu=(_OMIT, False),
                                             bias_correction_nu=(_OMIT, False))]
    + [("adagrad", "Adagrad", h) for h in _grid(initial_accumulator_value=(_OMIT, 0.5), eps=(_OMIT, 1e-3))]
    + [("adadelta", "Adadelta", h) for h in _grid(rho=(_OMIT, 0.5), eps=(_OMIT, 1e-3),
                                                  weight_decay=(_OMIT, 0.1))]
    + [("yogi", "Yogi", h) for h in _grid(b1=(_OMIT, 0.5), b2=(_OMIT, 0.9), eps=(_OMIT, 1e-6))]
    + [("lion", "Lion", h) for h in _grid(b1=(_OMIT, 0.5), b2=(_OMIT, 0.9), weight_decay=(_OMIT, 0.0, 0.1))]
    # ρ_t passes the threshold within the run: at t = 6 (5 with threshold 4.5)
    + [("radam", "RAdam", h) for h in _grid(b1=(_OMIT, 0.5), b2=(_OMIT, 0.9), eps=(_OMIT, 1e-3),
                                            eps_root=(_OMIT, 1e-6), threshold=(_OMIT, 4.5),
                                            nesterov=(_OMIT, True))]
    + [("adamax", "Adamax", h) for h in _grid(b1=(_OMIT, 0.5), b2=(_OMIT, 0.9), eps=(_OMIT, 1e-3))]
    + [("nadam", "NAdam", h) for h in _grid(b1=(_OMIT, 0.5), b2=(_OMIT, 0.9), eps=(_OMIT, 1e-3),
                                            eps_root=(_OMIT, 1e-6))]
    + [("adabelief", "AdaBelief", h) for h in _grid(b1=(_OMIT, 0.5), b2=(_OMIT, 0.9), eps=(_OMIT, 1e-3),
                                                    eps_root=(_OMIT, 0.0, 1e-6), nesterov=(_OMIT, True))]
)


def _id(case):
    alias, cls, h = case
    return f"{alias}-{cls}-" + ("-".join(f"{k}{v}" for k, v in h.items()) or "defaults")


def _run_both(alias, cls, hyper, lr, rng, steps=15, n=6):
    W = rng.normal(size=(n, n))
    x0 = rng.normal(size=n)
    opt = getattr(optax, alias)(learning_rate=lr, **hyper)
    params = jnp.asarray(x0)
    state = opt.init(params)
    ours = dict(hyper)
    if alias == "amsgrad":
        ours["amsgrad"] = True
    x = x0.copy()
    mine = getattr(fastrms, cls)(x, preset="optax", learning_rate=lr, **ours)
    for k in range(steps):
        updates, state = opt.update(jnp.tanh(W @ params), state, params)
        params = optax.apply_updates(params, updates)
        mine.step(np.tanh(W @ x))
        np.testing.assert_allclose(x, np.asarray(params), rtol=1e-12, atol=1e-13, err_msg=f"step {k + 1}")


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_matches_optax_step_by_step(case, rng):
    alias, cls, hyper = case
    _run_both(alias, cls, hyper, 1.0 if alias == "adadelta" else 0.05, rng)


SCHEDULED = [("sgd", "Momentum", {"momentum": 0.9}), ("sgd", "Momentum", {"momentum": 0.9, "nesterov": True}),
             ("rmsprop", "RMSProp", {"momentum": 0.9, "centered": True}),
             ("adam", "Adam", {"nesterov": True}),
             ("adamw", "AdamW", {}), ("amsgrad", "Adam", {}), ("adagrad", "Adagrad", {}),
             ("adadelta", "Adadelta", {}), ("yogi", "Yogi", {}), ("lion", "Lion", {}),
             ("radam", "RAdam", {}), ("adamax", "Adamax", {}), ("nadam", "NAdam", {}),
             ("adabelief", "AdaBelief", {})]


@pytest.mark.parametrize("case", SCHEDULED, ids=_id)
def test_matches_optax_under_a_learning_rate_schedule(case, rng):
    # where η sits (inside or outside a buffer) shows only when η changes
    alias, cls, hyper = case
    _run_both(alias, cls, hyper, _lr_decay, rng)


def test_centered_bias_corrected_first_step(rng):
    # From s₀ = 0 the first bias-corrected variance ŝ − m̂² = g² − g² is 0 in exact arithmetic: each
    # library divides by √(its rounding noise + ε).  With ε inside the root the noise (~1e-16 g²) is
    # far below ε, so the first steps still agree to ~1e-16/ε; the step-by-step grid leaves these out.
    W, x0 = rng.normal(size=(6, 6)), rng.normal(size=6)
    opt = optax.rmsprop(0.05, centered=True, bias_correction=True)
    params = jnp.asarray(x0)
    updates, _ = opt.update(jnp.tanh(W @ params), opt.init(params), params)
    x = x0.copy()
    fastrms.RMSProp(x, preset="optax", lr=0.05, centered=True, bias_correction=True).step(np.tanh(W @ x0))
    np.testing.assert_allclose(x, np.asarray(optax.apply_updates(params, updates)), rtol=1e-7)


def test_schedules_match_optax_schedules():
    """fastrms.schedules give optax's schedule values step for step (optax evaluated at a float64
    count: its optimizers' int32 count divides in float32, a 1e-8 difference of its own)."""
    from fastrms import schedules

    pairs = [(schedules.exponential(0.1, 0.9, 7), optax.exponential_decay(0.1, 7, 0.9)),
             (schedules.exponential(0.1, 0.5, 3, staircase=True),
              optax.exponential_decay(0.1, 3, 0.5, staircase=True)),
             (schedules.cosine(0.1, 20), optax.cosine_decay_schedule(0.1, 20)),
             (schedules.cosine(0.1, 20, final=0.01), optax.cosine_decay_schedule(0.1, 20, alpha=0.1)),
             (schedules.step(0.1, 0.5, 5),
              optax.piecewise_constant_schedule(0.1, {5 * k: 0.5 for k in range(1, 9)})),
             # a warmup from a given value (warmup_from): Optax's linear ramps
             (schedules.cosine(0.1, 20, final=0.01, warmup=4, warmup_from=0.0),
              optax.warmup_cosine_decay_schedule(0.0, 0.1, 4, 24, end_value=0.01)),
             (schedules.constant(0.1, warmup=5, warmup_from=0.01), optax.linear_schedule(0.01, 0.1, 5)),
             (schedules.exponential(0.1, 0.9, 7, warmup=3, warmup_from=0.02),
              optax.warmup_exponential_decay_schedule(0.02, 0.1, 3, 7, 0.9))]
    for ours, theirs in pairs:
        t = np.arange(45)
        np.testing.assert_allclose([ours(k) for k in t], [float(theirs(np.float64(k))) for k in t],
                                   rtol=1e-13, atol=1e-16, err_msg=str(ours))
