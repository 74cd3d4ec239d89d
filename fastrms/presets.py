"""Presets: the defaults, semantics and hyperparameter names of the libraries people come from.

``preset='torch'`` makes ``fastrms.RMSProp(x, preset='torch', alpha=0.9)`` behave like
``torch.optim.RMSprop([x], alpha=0.9)``: the preset sets the semantic flags
(where ε sits, initial s, where η sits in the momentum buffer, coupled or
decoupled weight decay) and the library's default hyperparameters; the user's
own options still win.  The table in the README lists the differences; each
entry below was read from the library's source code.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from . import _checks as ck
from . import methods
from .methods.adam import nadam_mu_product

_TORCH = {
    "rmsprop": dict(lr=0.01, gamma=0.99, eps=1e-8, eps_in_sqrt=False),
    "adagrad": dict(lr=0.01, eps=1e-10, eps_in_sqrt=False),
    "adam": dict(lr=0.001, eps=1e-8),
    "adamw": dict(lr=0.001, eps=1e-8, weight_decay=0.01),
    "nadam": dict(lr=0.002, eps=1e-8, momentum_decay=0.004),
    "radam": dict(lr=0.001, eps=1e-8),
    "adamax": dict(lr=0.002, eps=1e-8),
    "adadelta": dict(lr=1.0, gamma=0.9, eps=1e-6),
    "momentum": dict(lr=0.001, momentum=0.0),
    "gd": dict(lr=0.001),
}
_KERAS = {
    "rmsprop": dict(lr=0.001, gamma=0.9, eps=1e-7, eps_in_sqrt=True, lr_in_momentum=True,
                    decoupled_weight_decay=True),
    "adagrad": dict(lr=0.001, eps=1e-7, eps_in_sqrt=True, initial_scale=0.1, decoupled_weight_decay=True),
    "adam": dict(lr=0.001, eps=1e-7, epsilon_hat=True, decoupled_weight_decay=True),
    "adamw": dict(lr=0.001, eps=1e-7, epsilon_hat=True, weight_decay=0.004),
    "adamax": dict(lr=0.001, eps=1e-7, eps_in_max=False, decoupled_weight_decay=True),
    "nadam": dict(lr=0.001, eps=1e-7, momentum_decay=1.0, decoupled_weight_decay=True),  # μ_t: 0.96^t
    "adadelta": dict(lr=0.001, gamma=0.95, eps=1e-7, decoupled_weight_decay=True),
    "momentum": dict(lr=0.01, momentum=0.0, lr_in_momentum=True, decoupled_weight_decay=True),
    "gd": dict(lr=0.01, decoupled_weight_decay=True),
    "lion": dict(lr=0.001),
}
PRESETS: dict[str, dict] = {
    "d2l": {"rmsprop": dict(lr=0.01, gamma=0.9, eps=1e-6, eps_in_sqrt=True),
            "adagrad": dict(lr=0.01, eps=1e-6, eps_in_sqrt=True),
            "adam": dict(lr=0.01, eps=1e-6)},
    "torch": _TORCH,
    "keras": _KERAS,
    "tf1": {"rmsprop": dict(gamma=0.9, eps=1e-10, eps_in_sqrt=True, initial_scale=1.0, lr_in_momentum=True),
            "momentum": dict(momentum=0.9),
            "adagrad": dict(initial_scale=0.1, eps=0.0),
            "adam": dict(lr=0.001, eps=1e-8, epsilon_hat=True),
            "adadelta": dict(lr=0.001, gamma=0.95, eps=1e-8),
            "gd": {}},
    # Optax's bias-corrected form throughout Adam (v̂ = v/(1 − β2ᵗ) under the root, the AMSGrad
    # maximum over v̂); sgd is trace then scale, so η sits outside its buffer, while rmsprop
    # scales by η before its trace (inside).  sgd, rmsprop: momentum=None is no momentum.
    "optax": {"rmsprop": dict(gamma=0.9, eps=1e-8, eps_in_sqrt=True, lr_in_momentum=True),
              "adam": dict(eps=1e-8, v_hat=True),
              "adamw": dict(eps=1e-8, weight_decay=1e-4, v_hat=True),
              "nadam": dict(eps=1e-8, v_hat=True, momentum_decay=None),  # (adam with nesterov)
              "adabelief": dict(eps=1e-16, eps_root=1e-16, v_hat=True),
              "radam": dict(eps=1e-8, v_hat=True, epsilon_hat=False),  # (ρ_t ≥ threshold: see adam.py)
              "adamax": dict(eps=1e-8),
              "adagrad": dict(initial_scale=0.1, eps=1e-7, eps_in_sqrt=True),  # rsqrt(Σg² + ε)
              "adadelta": dict(gamma=0.9, eps=1e-6),
              "momentum": dict(momentum=0.0),
              "gd": {},
              "yogi": {},
              "lion": dict(weight_decay=1e-3)},
    # mxnet.optimizer 1.9: Adam's ε is not bias-corrected (η·√(1 − β2ᵗ)/(1 − β1ᵗ) · m/(√v + ε));
    # RMSProp, Adam, Adamax and Nadam clip g + λx (SGD clips g, then adds λx); AdaGrad's dense update is
    # x ← x − η (g/√(h + ε) + λ x), weight decay outside the history
    "mxnet": {"rmsprop": dict(lr=0.001, gamma=0.9, eps=1e-8, eps_in_sqrt=True, lr_in_momentum=True,
                              decay_before_clip=True),
              "adam": dict(lr=0.001, eps=1e-8, epsilon_hat=True, decay_before_clip=True),
              "adamax": dict(lr=0.002, eps=0.0, decay_before_clip=True),  # (no ε: x ← x − η m̂/u)
              "nadam": dict(lr=0.001, eps=1e-8, momentum_decay=0.004, decay_before_clip=True),
              "adagrad": dict(lr=0.01, eps=1e-7, eps_in_sqrt=True, decoupled_weight_decay=True),
              "momentum": dict(lr=0.01, momentum=0.0, lr_in_momentum=True)},
    # timm's RMSpropTF, TensorFlow's RMSProp in PyTorch: s₀ = 1, ε inside the root, η inside the
    # momentum buffer unless lr_in_momentum=False; decoupled_decay is x ← (1 − ηλ) x
    "timm": {"rmsprop": dict(lr=0.01, gamma=0.9, eps=1e-10, eps_in_sqrt=True, initial_scale=1.0,
                             lr_in_momentum=True),
             # the paper's AdaBelief: rectified as RAdam, one ε both in s and after its root (see _configure)
             "adabelief": dict(lr=0.001, eps=1e-16, eps_root=1e-16, decoupled_weight_decay=True, rectify=True,
                               epsilon_hat=True)},
    # autograd.misc.optimizers: sgd's velocity ← mass·velocity − (1 − mass)·g is b ← μ b + (1 − τ) g
    # from b₀ = 0 with μ = τ = mass (see _configure)
    "autograd": {"rmsprop": dict(lr=0.1, gamma=0.9, eps=1e-8, eps_in_sqrt=False, initial_scale=1.0),
                 "adam": dict(lr=0.001, eps=1e-8),
                 "momentum": dict(lr=0.1, momentum=0.9, dampening=0.9, dampen_first_step=True)},
}
# torch.optim's per-parameter state entries -> fastrms's state rows, per method (a stepper's
# load_state_dict takes a torch optimizer's state_dict); torch's SGD keeps no step count.
TORCH_STATE = {
    "rmsprop": {"square_avg": "s", "grad_avg": "m", "momentum_buffer": "b"},
    "adam": {"exp_avg": "m", "exp_avg_sq": "v", "max_exp_avg_sq": "vmax"},
    "adamw": {"exp_avg": "m", "exp_avg_sq": "v", "max_exp_avg_sq": "vmax"},
    "radam": {"exp_avg": "m", "exp_avg_sq": "v"},
    "nadam": {"exp_avg": "m", "exp_avg_sq": "v"},  # (and mu_product, Π_t: see from_torch_state)
    "adamax": {"exp_avg": "m", "exp_inf": "u"},
    "adagrad": {"sum": "s"},
    "adadelta": {"square_avg": "s", "acc_delta": "delta"},
    "momentum": {"momentum_buffer": "b"},
    "gd": {"momentum_buffer": None},  # (None there: SGD without momentum)
}


# fastrms's hyperparameters -> torch.optim's names, per method; every other hyperparameter must keep
# the torch preset's value for a state to continue the same way in torch (to_torch_state)
TORCH_NAMES = {
    "rmsprop": {"lr": "lr", "gamma": "alpha", "eps": "eps", "weight_decay": "weight_decay",
                "momentum": "momentum", "centered": "centered", "maximize": "maximize"},
    "adam": {"lr": "lr", "beta1": "betas", "beta2": "betas", "eps": "eps", "weight_decay": "weight_decay",
             "amsgrad": "amsgrad", "maximize": "maximize",
             "decoupled_weight_decay": "decoupled_weight_decay"},
    "adagrad": {"lr": "lr", "lr_decay": "lr_decay", "weight_decay": "weight_decay",
                "initial_scale": "initial_accumulator_value", "eps": "eps", "maximize": "maximize"},
    "adadelta": {"lr": "lr", "gamma": "rho", "eps": "eps", "weight_decay": "weight_decay",
                 "maximize": "maximize"},
    "momentum": {"lr": "lr", "momentum": "momentum", "dampening": "dampening", "weight_decay": "weight_decay",
                 "nesterov": "nesterov", "maximize": "maximize"},
    "gd": {"lr": "lr", "weight_decay": "weight_decay", "maximize": "maximize"},
    "adamax": {"lr": "lr", "beta1": "betas", "beta2": "betas", "eps": "eps", "weight_decay": "weight_decay",
               "maximize": "maximize"},
}
TORCH_NAMES["adamw"] = TORCH_NAMES["adam"]
TORCH_NAMES["radam"] = {k: v for k, v in TORCH_NAMES["adam"].items() if k != "amsgrad"}
TORCH_NAMES["nadam"] = {**TORCH_NAMES["radam"], "momentum_decay": "momentum_decay"}
TORCH_CLASSES = {"rmsprop": "RMSprop", "adam": "Adam", "adamw": "AdamW", "nadam": "NAdam", "radam": "RAdam",
                 "adamax": "Adamax", "adagrad": "Adagrad", "adadelta": "Adadelta", "momentum": "SGD",
                 "gd": "SGD"}


def to_torch_state(method: str, values: dict, t: int, rows: dict, n: int, describe: str) -> dict:
    """The state_dict that torch.optim's optimizer of ``method`` keeps for this state (``rows``: row
    name -> one array per parameter, n of them, each in its shape) and these validated
    hyperparameters, or a ValueError naming a hyperparameter torch's optimizer does not have."""
    import torch

    names, torch_class = TORCH_NAMES[method], TORCH_CLASSES[method]
    base = configure(method, {}, "torch").values
    for k, v in values.items():
        if k in names and callable(v):
            raise ValueError(f"this {describe} has a scheduled {k}, and torch's state_dict holds a number: "
                             f"set {k} to the value to continue with first")
        if k not in names and v != base[k]:
            raise ValueError(f"this {describe} has {k}={v!r}, which torch.optim.{torch_class} does not "
                             f"have (it runs as {k}={base[k]!r}): torch would continue differently")
    group = {name: values[k] for k, name in names.items() if name != "betas"}
    if "beta1" in names:
        group["betas"] = (values["beta1"], values["beta2"])
    if method == "gd":
        group.update(momentum=0.0, dampening=0.0, nesterov=False)
    to_entry = {r: k for k, r in TORCH_STATE[method].items() if r is not None}
    state = {}
    for j in range(n):
        entries = {} if torch_class == "SGD" else {"step": torch.tensor(float(t))}
        if method == "nadam":
            entries["mu_product"] = torch.tensor(_nadam_product(values["beta1"], values["momentum_decay"], t),
                                                 dtype=torch.float64)
        for r, arrays in rows.items():
            if r == "b" and torch_class == "SGD" and (t == 0 or values["momentum"] == 0):
                continue  # (torch's SGD makes its buffer at the first step, and none without momentum)
            entries[to_entry[r]] = torch.from_numpy(np.array(arrays[j], copy=True))
        if entries:
            state[j] = entries
    return {"state": state, "param_groups": [{**group, "params": list(range(n))}]}


def from_torch_state(saved: dict, method: str, rows: tuple, shapes: list,
                     describe: str) -> tuple[int, dict, dict]:
    """A torch optimizer's ``state_dict()`` as (t, {row: one array per parameter}, its hyperparameters)
    for a stepper of ``method`` with state ``rows`` over arrays of ``shapes``, or a ValueError saying
    why it does not fit (``describe`` names the stepper).  The rows are None where torch has taken
    no step yet (it keeps no state before the first): the state is then the initial one."""
    groups = saved["param_groups"]
    if len(groups) != 1:
        raise ValueError(f"the torch state has {len(groups)} parameter groups; a fastrms stepper has one "
                         "set of hyperparameters: load each group into its own stepper")
    to_row, params = TORCH_STATE[method], groups[0]["params"]
    if len(params) != len(shapes):
        raise ValueError(f"the torch state is for {len(params)} parameters; this {describe} steps "
                         f"{len(shapes)} arrays")
    per_param = [saved["state"].get(i, {}) for i in params]
    if not any(per_param):
        return 0, None, groups[0]
    steps = {round(float(st["step"])) for st in per_param if "step" in st}
    if len(steps) > 1:
        raise ValueError(f"the torch state's parameters have taken different numbers of steps "
                         f"({sorted(steps)}); fastrms steps every array together")
    # torch's SGD without momentum keeps no buffer, where fastrms's Momentum with μ = 0 keeps one
    # that each step overwrites: zeros stand for it
    unkept = {"b"} if method == "momentum" and groups[0].get("momentum") == 0 else set()
    values = {r: [np.zeros(shape) for shape in shapes] for r in unkept}
    for j, st in enumerate(per_param):
        if method == "nadam" and steps:
            _check_nadam_product(st, groups[0], steps, j)
        entries = {k: v for k, v in st.items() if k not in ("step", "mu_product") and v is not None}
        found = sorted(str(to_row.get(k)) for k in entries)
        if found != sorted(set(rows) - unkept):
            want = sorted(k for k, r in to_row.items() if r in rows)
            raise ValueError(f"parameter {j} of the torch state has {sorted(entries) or 'no state'}, but "
                             f"this {describe} keeps {want or 'none'}: load a state saved by the same "
                             "torch optimizer with the same options, after a step")
        for k, v in entries.items():
            if tuple(v.shape) != tuple(shapes[j]):  # (torch matches parameters by position, as here)
                raise ValueError(f"parameter {j}'s {k} in the torch state has shape {tuple(v.shape)}, but "
                                 f"array {j} of x has shape {tuple(shapes[j])}: are x's arrays in the order "
                                 "of the parameters torch's optimizer was given?")
            values.setdefault(to_row[k], []).append(v.detach().cpu().numpy())
    t = steps.pop() if steps else int(any(per_param))  # (torch's SGD counts no steps: a buffer means t ≥ 1)
    return t, values, groups[0]


def _nadam_product(beta1: float, psi: float, t: int) -> float:
    """NAdam's Π_t = μ_1 ⋯ μ_t (methods/adam.py), which torch's state keeps as mu_product."""
    return nadam_mu_product(float(beta1), float(psi), int(t)) if t > 0 else 1.0


def _check_nadam_product(st: dict, group: dict, steps: set, j: int) -> None:
    """fastrms computes Π_t from t, β1 and ψ: a torch run whose β1 or ψ changed on the way carries
    another one, and would continue differently.  (torch keeps Π in float32 unless its default
    dtype is float64, hence the tolerance.)"""
    if "mu_product" not in st:
        return
    (t,) = steps
    expected = _nadam_product(group["betas"][0], group["momentum_decay"], t)
    if abs(float(st["mu_product"]) - expected) > 1e-6:
        raise ValueError(f"parameter {j}'s mu_product in the torch state is {float(st['mu_product']):.6g}, "
                         f"where β1 = {group['betas'][0]} and momentum_decay = {group['momentum_decay']} "
                         f"give {expected:.6g} after {t} steps: the run changed them on the way, and "
                         "fastrms, which computes it from t, would continue differently")


# Keyword arguments of a library's optimizers that change nothing in fastrms's update: accepted and
# dropped under its preset, so that the arguments given to the library work unchanged.  ANY: any
# value; otherwise only that value (another would change what the library computes, and fastrms does
# not offer it).
ANY = object()
INERT = {
    "torch": {"foreach": ANY, "fused": ANY, "capturable": False, "differentiable": False},
    "keras": {"name": ANY, "use_ema": False, "ema_momentum": ANY, "ema_overwrite_frequency": ANY,
              "loss_scale_factor": None, "gradient_accumulation_steps": None},
    "tf1": {"use_locking": ANY, "name": ANY},
    "optax": {"mu_dtype": None},
    "mxnet": {"lazy_update": ANY, "multi_precision": ANY, "param_idx2name": ANY, "sym": ANY,
              "rescale_grad": 1.0, "clip_weights": None, "lr_scheduler": None, "begin_num_update": 0},
    "timm": {"foreach": ANY, "caution": False, "corrected_weight_decay": False, "degenerated_to_sgd": True,
             "fixed_decay": False, "max_lr_snapshot": ANY},  # (the last: used only by corrected_weight_decay)
    "autograd": {},
    "d2l": {},
}


# A library's names whose None means "off" there (Keras's get_config() holds clipnorm=None ...)
NONE_IS_OFF = {"keras": {"clipnorm", "clipvalue", "global_clipnorm", "weight_decay"},
               "mxnet": {"clip_gradient"}}


def _drop_inert(preset: str, options: dict) -> dict:
    kept = {}
    for k, v in options.items():
        if v is None and k in NONE_IS_OFF.get(preset, ()):
            continue
        if k not in INERT[preset]:
            kept[k] = v
            continue
        accepted = INERT[preset][k]
        if accepted is not ANY and not (v is accepted or (accepted is not None and v == accepted)):
            raise ValueError(f"{k}={v!r} is not offered by fastrms (preset {preset!r} takes {k} only as "
                             f"{k}={accepted!r}, which changes nothing in the update)")
    return kept


# Names a library uses that are not fastrms aliases everywhere.
PRESET_ALIASES = {
    "torch": {"alpha": "gamma", "initial_accumulator_value": "initial_scale"},
    # one flat x: global_clipnorm (over all variables) and clipnorm (per variable) coincide
    "keras": {"rho": "gamma", "clipnorm": "clip_norm", "global_clipnorm": "clip_norm",
              "clipvalue": "clip_value", "initial_accumulator_value": "initial_scale"},
    "tf1": {"decay": "gamma", "initial_accumulator_value": "initial_scale", "use_nesterov": "nesterov"},
    "optax": {"decay": "gamma", "b1": "beta1", "b2": "beta2"},
    "mxnet": {"gamma1": "gamma", "gamma2": "momentum", "wd": "weight_decay",
              "clip_gradient": "clip_value", "schedule_decay": "momentum_decay"},
    "timm": {"alpha": "gamma", "decoupled_decay": "decoupled_weight_decay"},
    "autograd": {"step_size": "lr", "b1": "beta1", "b2": "beta2", "mass": "momentum"},
    "d2l": {},
}


def configure(method: str, options: dict, preset: str | None = None) -> methods.Config:
    """Validate ``options`` for ``method`` under ``preset`` (None: fastrms's own defaults).

    Validated configs are remembered (they are never mutated), so a script that
    calls minimize in a loop pays for validation once.
    """
    try:
        return _configure_cached(method, ck.typed_items(options), preset)
    except TypeError as e:  # an unhashable value: validate it afresh (and report it)
        if "unhashable" not in str(e):
            raise
        return _configure(method, options, preset)


@lru_cache(maxsize=256)
def _configure_cached(method, items, preset):
    return _configure(method, {k: v for k, _, v in items}, preset)


def _configure(method: str, options: dict, preset: str | None) -> methods.Config:
    m = methods.get(method)
    if preset is None:
        return m.configure(options)
    preset = ck.choice("preset", preset.lower() if isinstance(preset, str) else preset, tuple(PRESETS))
    table = PRESETS[preset]
    if m.name not in table:
        raise ValueError(f"preset {preset!r} has no {m.name!r}; it covers {sorted(table)}")
    defaults = dict(table[m.name])
    options = _drop_inert(preset, options)
    if preset == "mxnet" and m.name == "rmsprop":
        # MXNet's RMSProp has momentum (gamma2, η inside the buffer) only in its
        # centered (Graves) form; the plain form ignores gamma2.
        if options.get("centered", False):
            defaults["momentum"] = 0.9
        else:
            options.pop("gamma2", None)
    names = {**methods.ALIASES, **PRESET_ALIASES[preset]}
    given = {names.get(k, k): v for k, v in options.items()}  # (under fastrms's names)
    if preset == "autograd" and m.name == "momentum":
        # one number, mass, is both μ and τ there; an explicit dampening still wins
        if "momentum" in given and "dampening" not in given:
            defaults["dampening"] = given["momentum"]
    if preset == "timm" and m.name == "adabelief":
        # timm's (the paper's) eps is added to s and after its root alike; its rectified steps divide by
        # √s + ε (ε̂), its plain ones by √s/√(1 − β2ᵗ) + ε
        if "eps" in given and "eps_root" not in given:
            defaults["eps_root"] = given["eps"]
        if "epsilon_hat" not in given:
            defaults["epsilon_hat"] = bool(given.get("rectify", True))
    if preset in ("keras", "optax") and "momentum" in m.hypers:
        options = _momentum_as_in(preset, options, defaults, PRESET_ALIASES[preset])
    return m.configure(options, defaults=defaults, aliases=PRESET_ALIASES[preset])


def _momentum_as_in(preset: str, options: dict, defaults: dict, aliases: dict) -> dict:
    """Keras builds a momentum buffer only for momentum ≠ 0, Optax only for momentum not None, and
    both then ignore ``nesterov``; fastrms itself refuses nesterov without momentum."""
    names = {**methods.ALIASES, **aliases}
    key = next((k for k in options if names.get(k, k) == "momentum"), None)
    mu = options[key] if key is not None else defaults.get("momentum", 0.0)
    if mu is None and preset == "optax":
        mu = options[key] = 0.0
    if not callable(mu) and not isinstance(mu, dict) and mu == 0:
        for k in [k for k in options if names.get(k, k) == "nesterov"]:
            ck.boolean(k, options.pop(k))  # still a bool, as there
    return options


def _first_problem(values: np.ndarray, row) -> int:
    """The first problem whose per-problem values (one per problem, or a row of columns each) equal
    row, NaN matching NaN only (the error names it)."""
    values = values.reshape(len(values), -1)
    row = np.reshape(row, -1)
    same = (values == row) | (np.isnan(values) & np.isnan(row))
    return int(np.flatnonzero(same.all(axis=1))[0])


def _combo_config(m, scalars: dict, keys: list, row, preset, columns) -> methods.Config:
    """The config of one problem's combination ``row`` of per-problem values (under their ``keys``),
    validated as one problem's options are; an error names the first problem with these values."""
    values = {k: float(v) for k, v in zip(keys, row, strict=True)}
    try:
        c = configure(m.name, {**scalars, **values}, preset)
        c.packed()  # the method's cross-checks (pack_fn), which the chosen config alone would get
    except (TypeError, ValueError) as e:
        if columns is None:
            raise
        raise type(e)(f"problem {_first_problem(columns, row)} "
                      f"({', '.join(f'{k}={v:g}' for k, v in values.items())}): {e}") from None
    return c


def _quick_configs(m, scalars: dict, keys: list, names: list, combos: np.ndarray) -> list | None:
    """The configs of many combinations at once, or None where this cannot tell (then each is
    validated on its own, for its error): each column is tested against its check's interval at
    once, and each combination's config is the first one's with its values put in, through the
    method's cross-checks, flags and packing.  (Validating every combination from its options took
    55 µs each: 0.55 s a call for a random search of 10,000 γ.)  Without a preset only, whose
    defaults may follow the values given (autograd's dampening is its momentum)."""
    for j, name in enumerate(names):
        interval = _interval(m.hypers[name].check)
        if interval is None or interval.outside(combos[:, j]).any():
            return None
    try:
        first = _combo_config(m, scalars, keys, combos[0], None, None)
        configs = [first]
        for row in combos[1:]:
            values = {**first.values, **{name: float(v) for name, v in zip(names, row, strict=True)}}
            methods.base.check_decay_order(values)
            c = methods.Config(m, values)
            c.packed()
            configs.append(c)
    except (TypeError, ValueError):
        return None
    return configs


def _interval(check) -> ck.Range | None:
    """The interval a float passes ``check`` in, where it is one (a Range, or a check that names its
    interval: lr_check, gamma_check)."""
    return check if isinstance(check, ck.Range) else getattr(check, "interval", None)


def configure_batch(method: str, options: dict, preset: str | None,
                    B: int) -> tuple[methods.Config, dict, bool]:
    """``configure`` for B problems at once: a hyperparameter may also be a 1-D NumPy array of
    length B, one value per problem (lr, gamma, and every packed numeric one: momentum, eps,
    β1, weight decay ...).  Returns (the config the kernels are built from, {name: array},
    whether any problem's coefficients change from step to step).

    Every problem's combination of values is validated as one problem's constants would be,
    cross-checks included (Adam's eps_root needs v_hat, nesterov needs μ > 0 ...).  Values that
    change the kernel's compile-time structure (μ > 0 gives a momentum buffer, ε = 0 a guarded
    division) are combined: the batch runs the kernel that every problem's values need, which
    computes the same numbers for the others (μ = 0 in a momentum kernel is the plain step, bit
    for bit).  So is "varies": one problem's Adagrad lr_decay > 0 makes every step recompute H.
    """
    m = methods.get(method)
    names = {**methods.ALIASES, **(PRESET_ALIASES.get(preset.lower(), {}) if isinstance(preset, str) else {})}
    allowed = {"lr", "gamma", *m.schedulable} & set(m.hypers)
    arrays: dict[str, tuple[str, np.ndarray]] = {}
    scalars = {}
    for key, v in options.items():
        name = names.get(key, key)
        if isinstance(v, (list, tuple)) and name in allowed:
            raise TypeError(f"{key}: per-problem values go in a 1-D NumPy array of length {B} "
                            f"(np.asarray(...)), got a {type(v).__name__}")
        if not isinstance(v, np.ndarray) or v.ndim == 0:
            scalars[key] = v
            continue
        if name not in allowed:
            raise ValueError(f"{key} must be one value for the whole batch; per-problem arrays are accepted "
                             f"for {', '.join(sorted(allowed))}")
        if v.dtype.kind not in "fiu":
            raise TypeError(f"{key} must hold real numbers, got dtype {v.dtype}")
        if v.shape != (B,):
            raise ValueError(f"{key} has shape {v.shape}: a per-problem hyperparameter needs one value per "
                             f"problem, shape ({B},)")
        arrays[name] = (key, v.astype(np.float64))
    lr = arrays.pop("lr", None)
    if lr is not None:
        check = m.hypers["lr"].check
        # where the check is an interval, only the values outside it can fail: a sweep of 10,000 η
        # checked one by one cost 30 ms a call
        interval = _interval(check)
        suspects = lr[1] if interval is None else lr[1][interval.outside(lr[1])]
        for value in np.unique(suspects):  # (the smallest failing value is named, NaN last)
            try:
                check(lr[0], float(value))
            except ValueError as e:  # name the problem, as for the other per-problem values below
                raise ValueError(f"problem {_first_problem(lr[1], value)} ({lr[0]}={value:g}): {e}") from None
        scalars[lr[0]] = float(lr[1][0])
    keys = [key for key, _ in arrays.values()]
    columns = np.stack([a for _, a in arrays.values()], axis=1) if arrays else None
    combos, combo_of = np.unique(columns, axis=0, return_inverse=True) if arrays else ([()], None)
    configs = None
    if preset is None and len(combos) > 1:
        configs = _quick_configs(m, scalars, keys, list(arrays), combos)
    if configs is None:
        configs = [_combo_config(m, scalars, keys, row, preset, columns) for row in combos]
    flags = tuple(any(col) for col in zip(*(c.flags for c in configs), strict=True))
    chosen = next((c for c in configs if c.flags == flags), None)
    if chosen is None:
        raise ValueError("these per-problem values need kernels of different structure for different "
                         "problems (no one problem has them all, e.g. momentum > 0 together with eps = 0); "
                         "split the batch")
    per_problem = {name: a for name, (_, a) in arrays.items()}
    for name in m.schedulable.keys() - per_problem.keys():
        # a value the preset derives from per-problem ones (autograd's dampening is its mass)
        values = [c[name] for c in configs]
        if len(configs) > 1 and not any(map(callable, values)) and len(set(values)) > 1:
            per_problem[name] = np.asarray(values, dtype=np.float64)[combo_of.reshape(-1)]
    if lr is not None:
        per_problem["lr"] = lr[1]
    return chosen, per_problem, any(c.varies for c in configs)
