"""Step-by-step parity with Keras 3 under preset='keras' (skipped without keras and jax).

Keras runs on its jax backend with float64 enabled: its numpy backend computes in float32 whatever
the variable's dtype.  Each case passes the same keyword arguments to the Keras optimizer and to the
fastrms stepper.  The last tests replay the golden-value tests that ship inside the keras package.
"""

import ast
import itertools
import pathlib

import numpy as np
import pytest

import fastrms

jax = keras = None


@pytest.fixture(scope="module", autouse=True)
def _keras():
    # imported when this file's first test runs, not at collection: every xdist worker collects every file,
    # and these imports cost seconds each
    global jax, keras
    jax = pytest.importorskip("jax", reason="keras parity tests run Keras on its jax backend")
    jax.config.update("jax_enable_x64", True)
    keras = pytest.importorskip("keras", reason="keras parity tests need keras (pip install keras jax)")
    if keras.backend.backend() != "jax":
        pytest.skip(f"keras was imported with the {keras.backend.backend()} backend")

CLASSES = {"SGD": "Momentum", "RMSprop": "RMSProp", "Adam": "Adam", "AdamW": "AdamW", "Adagrad": "Adagrad",
           "Adadelta": "Adadelta", "Lion": "Lion", "Adamax": "Adamax", "Nadam": "NAdam"}
_OMIT = object()


def _grid(**axes):
    keys = list(axes)
    return [{k: v for k, v in zip(keys, vals, strict=True) if v is not _OMIT}
            for vals in itertools.product(*axes.values())]


CLIPS = ({}, {"clipnorm": 0.5}, {"global_clipnorm": 0.5}, {"clipvalue": 0.2})
CASES = (
    [("SGD", h) for h in _grid(momentum=(_OMIT, 0.9), nesterov=(_OMIT, True), weight_decay=(_OMIT, 0.1))]
    + [("SGD", {"momentum": 0.9, **c}) for c in CLIPS[1:]]
    + [("RMSprop", h) for h in _grid(rho=(_OMIT, 0.5), momentum=(_OMIT, 0.9), epsilon=(_OMIT, 1e-3),
                                     centered=(_OMIT, True), weight_decay=(_OMIT, 0.1))]
    + [("RMSprop", {"centered": True, **c}) for c in CLIPS[1:]]
    + [(name, {**h, **numbers}) for name in ("Adam", "AdamW")
       for h in _grid(amsgrad=(_OMIT, True), weight_decay=(_OMIT, 0.1))
       for numbers in ({}, {"beta_1": 0.5}, {"beta_2": 0.9}, {"epsilon": 1e-3},
                       {"beta_1": 0.5, "beta_2": 0.9})]
    + [("Adam", c) for c in CLIPS[1:]]
    + [("Adagrad", h) for h in _grid(initial_accumulator_value=(_OMIT, 0.5), epsilon=(_OMIT, 1e-3),
                                     weight_decay=(_OMIT, 0.1))]
    + [("Adadelta", h) for h in _grid(rho=(_OMIT, 0.5), epsilon=(_OMIT, 1e-3), weight_decay=(_OMIT, 0.1))]
    + [("Lion", h) for h in _grid(beta_1=(_OMIT, 0.5), beta_2=(_OMIT, 0.9), weight_decay=(_OMIT, 0.1))]
    + [("Adamax", h) for h in _grid(beta_1=(_OMIT, 0.5), beta_2=(_OMIT, 0.9), epsilon=(_OMIT, 1e-3),
                                    weight_decay=(_OMIT, 0.1))]
    + [("Adamax", c) for c in CLIPS[1:]]
    + [("Nadam", h) for h in _grid(beta_1=(_OMIT, 0.5), beta_2=(_OMIT, 0.9), epsilon=(_OMIT, 1e-3),
                                   weight_decay=(_OMIT, 0.1))]
    + [("Nadam", c) for c in CLIPS[1:]]
)


def _id(case):
    name, h = case
    return name + "-" + ("-".join(f"{k}{v}" for k, v in h.items()) or "defaults")


def inverse_time():
    """A float64 schedule of Keras's step counter (Keras's built-in ones compute in float32)."""

    class InverseTime(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            return 0.05 / (1.0 + 0.3 * step)

    return InverseTime()


def _run_both(name, hyper, lr, rng, steps=12, n=6):
    keras.config.set_floatx("float64")
    W = rng.normal(size=(n, n))
    x0 = rng.normal(size=n)
    var = keras.Variable(x0, dtype="float64")
    opt = getattr(keras.optimizers, name)(learning_rate=lr, **hyper)
    x = x0.copy()
    mine = getattr(fastrms, CLASSES[name])(x, preset="keras", learning_rate=lr, **hyper)
    for k in range(steps):
        opt.apply_gradients([(jax.numpy.tanh(W @ var.value), var)])
        mine.step(np.tanh(W @ x))
        np.testing.assert_allclose(x, np.asarray(var.value), rtol=1e-12, atol=1e-13, err_msg=f"step {k + 1}")


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_matches_keras_step_by_step(case, rng):
    name, hyper = case
    _run_both(name, hyper, 1.0 if name == "Adadelta" else 0.05, rng)


@pytest.mark.parametrize("name", list(CLASSES))
def test_matches_keras_with_learning_rate_callables(name, rng):
    # Keras calls a plain callable with no arguments and a LearningRateSchedule with its step counter
    hyper = {"SGD": {"momentum": 0.9}, "RMSprop": {"momentum": 0.9}}.get(name, {})
    _run_both(name, hyper, inverse_time(), rng)
    state = {"lr": 0.02}
    _run_both(name, hyper, lambda: state["lr"], rng)


def test_cosine_decay_with_warmup_matches_keras():
    """Keras's CosineDecay(warmup_target=...) ramps from initial_learning_rate to warmup_target, then
    decays: cosine(warmup_target, decay_steps, final=alpha·target, warmup=..., warmup_from=initial).
    Keras's schedules compute in float32."""
    from fastrms import schedules

    theirs = keras.optimizers.schedules.CosineDecay(0.01, 20, alpha=0.1, warmup_target=0.1, warmup_steps=6)
    ours = schedules.cosine(0.1, 20, final=0.01, warmup=6, warmup_from=0.01)
    t = (0, 1, 3, 5, 6, 7, 15, 25, 26, 39)  # the ramp, its end, the decay, past decay_steps (~0.1 s a call)
    np.testing.assert_allclose([ours(k) for k in t], [float(theirs(k)) for k in t], rtol=2e-7, atol=1e-9)


def test_global_clipnorm_and_clipnorm_are_exclusive_as_in_keras():
    with pytest.raises(ValueError, match="clip_norm given twice"):
        fastrms.RMSProp(np.zeros(3), preset="keras", clipnorm=1.0, global_clipnorm=1.0)


# -- Keras's own golden-value tests, replayed through the keras preset -------------------------------



class _Replay(ast.NodeVisitor):
    """Runs the few statements a golden test is made of (assignments, apply_gradients, a for loop
    over range, assertAllClose) against a fastrms stepper instead of the Keras optimizer."""

    def __init__(self):
        self.env = {"np": np, "ops": _Shim(arange=np.arange, full=np.full),
                    "backend": _Shim(Variable=lambda v, **kw: np.array(v, dtype=np.asarray(v).dtype)),
                    **{c: (lambda c: lambda **kw: (c, kw))(c) for c in CLASSES}}
        self.stepper = None
        self.checked = 0

    def run(self, body):
        for stmt in body:
            self.visit(stmt)

    def visit_Assign(self, node):
        value = eval(compile(ast.Expression(node.value), "<golden>", "eval"), self.env)
        self.env[node.targets[0].id] = value

    def visit_For(self, node):
        for v in eval(compile(ast.Expression(node.iter), "<golden>", "eval"), self.env):
            self.env[node.target.id] = v
            self.run(node.body)

    def visit_Expr(self, node):
        call = node.value
        name = call.func.attr
        if name == "apply_gradients":  # optimizer.apply_gradients(zip([g], [x]))
            g = eval(compile(ast.Expression(call.args[0].args[0].elts[0]), "<golden>", "eval"), self.env)
            if self.stepper is None:
                cls, kw = self.env["optimizer"]
                self.stepper = getattr(fastrms, CLASSES[cls])(self.env["x"], preset="keras", **kw)
            self.stepper.step(np.asarray(g, dtype=self.env["x"].dtype))
        elif name == "assertAllClose":
            args = [eval(compile(ast.Expression(a), "<golden>", "eval"), self.env) for a in call.args]
            kw = {k.arg: eval(compile(ast.Expression(k.value), "<golden>", "eval"), self.env)
                  for k in call.keywords}
            np.testing.assert_allclose(args[0], args[1], **kw)
            self.checked += 1
        else:
            raise NotImplementedError(f"golden test statement {ast.unparse(node)!r}")


class _Shim:
    def __init__(self, **fns):
        self.__dict__.update(fns)


def _golden_body(cls):
    path = pathlib.Path(keras.__file__).parent / "src" / "optimizers" / f"{cls.lower()}_test.py"
    if not path.exists():
        pytest.skip(f"this keras wheel does not ship {path.name}")
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef) and node.name == "test_correctness_with_golden":
            return node.body
    pytest.skip(f"{path.name} has no test_correctness_with_golden")


@pytest.mark.parametrize("cls", list(CLASSES))
def test_replays_keras_golden_values(cls):
    replay = _Replay()
    replay.run(_golden_body(cls))
    assert replay.env["optimizer"][0] == cls
    assert replay.checked == 5  # every golden row was compared


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # (Keras's get_config)
@pytest.mark.parametrize(("name", "hyper"), [
    ("RMSprop", {"rho": 0.8, "momentum": 0.5, "centered": True, "clipnorm": 0.5, "weight_decay": 0.01}),
    ("SGD", {"momentum": 0.9, "nesterov": True}),
    ("Adam", {"amsgrad": True, "global_clipnorm": 0.5}),
    ("AdamW", {}), ("Adagrad", {"clipvalue": 0.2}), ("Adadelta", {}), ("Lion", {"weight_decay": 0.1}),
    ("Adamax", {"weight_decay": 0.1}), ("Nadam", {"clipnorm": 0.5})])
def test_a_keras_optimizers_config_makes_the_same_stepper(name, hyper, rng):
    """fastrms.X(x, preset='keras', **keras_opt.get_config()): the config holds every argument, its
    name, EMA settings and None for the clips it leaves off included; the steps agree."""
    keras.config.set_floatx("float64")
    W, x0 = rng.normal(size=(6, 6)), rng.normal(size=6)
    var = keras.Variable(x0, dtype="float64")
    opt = getattr(keras.optimizers, name)(learning_rate=0.05, **hyper)
    x = x0.copy()
    mine = getattr(fastrms, CLASSES[name])(x, preset="keras", **opt.get_config())
    for k in range(12):
        opt.apply_gradients([(jax.numpy.tanh(W @ var.value), var)])
        mine.step(np.tanh(W @ x))
        np.testing.assert_allclose(x, np.asarray(var.value), rtol=1e-12, atol=1e-13, err_msg=f"step {k + 1}")
