"""Stepper objects for people who write their own loops.

    opt = fastrms.RMSProp(x, lr=0.01, gamma=0.9)
    for _ in range(100):
        opt.step(dF(x))        # x updated in place by one fused kernel; g untouched

The state is visible (``opt.state``, views of the live arrays) and can be saved
and restored exactly (``opt.state_dict()`` / ``opt.load_state_dict(d)``); hyperparameters
can change between steps (``opt.lr = 1e-4``).  x may be a NumPy array, a CUDA array, a CPU
torch tensor, or a list or dict of NumPy arrays or CPU tensors (a model's parameters).
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from . import _arrays, _structure, kernels, methods, presets
from . import _checks as ck
from .method_state import BatchedState, MethodState


class Optimizer:
    """Base class: a method's state over the array x, which ``step`` updates in place."""

    method: ClassVar[str]

    def __init__(self, x: Any, *, preset: str | None = None, batched: bool = False,
                 **hyperparameters: Any) -> None:
        x = _structure.parameters(x, f"fastrms.{type(self).__name__}(model.parameters(), ...)")
        self.x = x
        self._leaves = self._fast_step = None
        if _structure.is_structure(x):  # several arrays (a model's weights and biases): one kernel
            self._init_arrays(x, preset, batched, hyperparameters)
            return
        self._backend = kernels.get(kernels.owner(x))
        self._shaped = self._backend.param_array(x)  # x itself, or its Numba device view
        self._moved = _moved_storage_check(_named(x))
        hyperparameters = {k: _arrays.host_values(v) for k, v in hyperparameters.items()}  # (torch, JAX ...)
        # what a copy or an unpickled stepper rebuilds from
        self._options = (preset, dict(hyperparameters, **({"batched": True} if batched else {})))
        # batched: each row x[b] is its own problem (per-row hyperparameters: 1-D arrays of length B)
        self._batched = batched or any(isinstance(v, np.ndarray) and v.ndim for v in hyperparameters.values())
        n, dtype = self._shaped.size, self._shaped.dtype
        self._flat = self._shaped.reshape(n)
        self._gradient = None  # (a batched step's g check; one array's step checks g itself)
        if self._batched:
            self._gradient = self._backend.gradient_for(self._shaped)
            if len(self._shaped.shape) < 1:
                raise ValueError("a batched stepper needs x of shape (B, ...): one row per problem")
            B = self._shaped.shape[0]
            config, per_problem, varies = presets.configure_batch(self.method, hyperparameters, preset, B)
            self._mstate = BatchedState(config, per_problem, B, n // B, dtype, self._backend, varies)
            self._active = np.ones(B, dtype=np.bool_)
            self._rows_step = self._backend.rows_stepper(self._mstate, n)
        else:
            config = presets.configure(self.method, hyperparameters, preset)
            self._mstate = MethodState(config, n, dtype, self._backend)
            self._fast_step = self._backend.single_step(self._mstate, self._shaped, self._flat)
            self._bind_step()
        self._kind = self._backend.array_kind(x)

    def _init_arrays(self, x, preset, batched, hyperparameters) -> None:
        if batched:
            raise ValueError("batched=True takes one array of shape (B, ...), not several arrays")
        if preset == "keras" and hyperparameters.get("clipnorm") is not None:
            raise ValueError("Keras's clipnorm clips each variable on its own; over several arrays "
                             "fastrms clips their global norm: use global_clipnorm (or clip_norm)")
        self._leaves = leaves = _structure.Leaves(x)
        self._moved = _moved_storage_check(_named(x))
        self._backend = kernels.get("cpu")
        self._options = (preset, dict(hyperparameters))
        self._batched = False
        config = presets.configure(self.method, hyperparameters, preset)
        self._mstate = MethodState(config, leaves.n, leaves.dtype, self._backend)
        self._fast_step = self._backend.arrays_step(self._mstate, leaves)
        self._bind_step()
        self._shaped = self._flat = self._gradient = None
        self._kind = "numpy"

    def _bind_step(self) -> None:
        if self._moved is not None:  # torch tensors: their storage checked, step() takes their .grad
            moved, fast, grads = self._moved, self._fast_step, _grads_of(self.x)

            def step(g=None) -> Any:
                loss, g = _torch_gradient(g, moved, grads)
                fast(g)
                return loss

            self._fast_step = step
        if type(self).step is Optimizer.step:  # (a subclass's own step must still be called)
            self._fast_step.__qualname__ = f"{type(self).__name__}.step"  # (as Python's errors name it)
            self._fast_step.__doc__ = Optimizer.step.__doc__
            object.__setattr__(self, "step", self._fast_step)  # opt.step(g): one frame around the kernel

    def step(self, g: Any = None) -> Any:
        """One update of x in place with gradient g (x's shape or structure; not modified).  Over
        torch tensors, ``step()`` takes their ``.grad``, as torch's optimizers do, and
        ``step(closure)`` calls the closure (which computes the loss and calls ``backward()``)
        first and returns its loss."""
        if self._fast_step is not None:  # (not batched: a small step costs little more than its kernel)
            return self._fast_step(g)
        loss = None
        if self._moved is not None:
            loss, g = _torch_gradient(g, self._moved, _grads_of(self.x))
        e = self._mstate
        gf = self._gradient(g)
        self._rows_step(self._flat, gf, e.row_coefficients(gf, self._active), self._active)
        e.t += 1
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Over torch tensors, as torch's optimizers: each tensor's ``.grad`` set to None, or zeroed
        in place with ``set_to_none=False``."""
        tensors = [t for _, t in _named(self.x)]
        if not all(map(_arrays.is_torch, tensors)):
            raise TypeError(f"{type(self).__name__}.zero_grad() clears torch tensors' .grad; this stepper's "
                            "x is not torch tensors (NumPy arrays carry no gradient: step(g) takes it)")
        for t in tensors:
            g = t.grad
            if g is None:
                continue
            if set_to_none:
                t.grad = None
            else:  # (torch's own order: out of any graph, then zeroed)
                if g.grad_fn is not None:
                    g.detach_()
                else:
                    g.requires_grad_(False)
                g.zero_()

    @property
    def t(self) -> int:
        """The number of steps taken."""
        return self._mstate.t

    @property
    def hyperparameters(self) -> dict:
        """The validated hyperparameters (a batched stepper's per-row ones as arrays)."""
        return {**self._mstate.config.values, **getattr(self._mstate, "per_problem", {})}

    @property
    def state(self) -> dict:
        """Live views of the state arrays (in x's shape, or its structure) and the step count t."""
        e = self._mstate
        if self._leaves is not None:
            return {"t": e.t, **{name: self._leaves.unflatten(e.S[j]) for j, name in enumerate(e.names)}}
        shape = tuple(self._shaped.shape)
        return {"t": e.t, **{name: self._backend.view(e.S[j], shape, self._kind)
                             for j, name in enumerate(e.names)}}

    def state_dict(self) -> dict:
        """A copy of the state: restore it with ``load_state_dict`` to continue bit for bit.
        Over several arrays each state entry has x's structure."""
        flat = self._mstate.state_dict()
        if self._leaves is None:
            return flat
        return {"t": flat["t"], **{name: self._leaves.unflatten(flat[name]) for name in self._mstate.names}}

    def load_state_dict(self, state: dict) -> None:
        """Restore a state from ``state_dict()``; or, for a stepper made with ``preset='torch'``,
        from a torch optimizer's ``state_dict()`` (its state, step count and hyperparameters, as
        torch's ``load_state_dict`` restores them), to resume a run that torch.optim began."""
        if isinstance(state, dict) and {"state", "param_groups"} <= state.keys():
            return self._load_torch_state(state)
        lv, names = self._leaves, self._mstate.names
        if lv is not None and isinstance(state, dict):  # x's structure per state entry: flatten it
            state = {k: lv.flatten(v, f"state[{k!r}]") if k in names and _structure.is_structure(v) else v
                     for k, v in state.items()}
        self._mstate.load_state_dict(state)

    def _load_torch_state(self, saved: dict) -> None:
        self._torch_only()
        lv = self._leaves
        shapes = lv.shapes if lv is not None else [tuple(self._shaped.shape)]
        t, values, group = presets.from_torch_state(saved, self.method, self._mstate.names, shapes,
                                                    self._describe())
        if values is None:  # (a torch optimizer before its first step: the initial state)
            e = self._mstate
            values = {r: [np.full(shape, init) for shape in shapes]
                      for r, init in zip(e.names, e.config.row_inits, strict=True)}
        self.load_state_dict({"t": t, **{r: lv.structure(a) if lv is not None else a[0]
                                         for r, a in values.items()}})
        known = self._names()  # (torch's implementation switches, foreach ..., are not hyperparameters here)
        self.set_hyperparameters(**{k: v.item() if _arrays.is_torch(v) else v
                                    for k, v in group.items() if k in known})

    def torch_state_dict(self) -> dict:
        """The state as torch.optim's optimizer of this method keeps it, for a stepper made with
        ``preset='torch'``: ``torch_opt.load_state_dict(opt.torch_state_dict())`` continues in
        torch a run that fastrms began (the other way: ``load_state_dict``, above)."""
        self._torch_only()
        lv, flat = self._leaves, self._mstate.state_dict()
        shapes = lv.shapes if lv is not None else [tuple(self._shaped.shape)]

        def per_array(row):
            return _structure.items(lv.unflatten(row)) if lv is not None else [row.reshape(shapes[0])]

        rows = {r: per_array(flat[r]) for r in self._mstate.names}
        return presets.to_torch_state(self.method, self._mstate.config.values, flat["t"], rows, len(shapes),
                                      self._describe())

    def _torch_only(self) -> None:
        if self._options[0] != "torch" or self.method not in presets.TORCH_STATE or self._batched:
            raise ValueError(f"torch's state_dict form is for a stepper made with preset='torch' (over one "
                             f"array or a model's parameters): this is {self._describe()}")

    def _describe(self) -> str:
        preset, hyper = self._options
        return f"{type(self).__name__}(preset={preset!r}{''.join(f', {k}={v!r}' for k, v in hyper.items())})"

    # -- changing hyperparameters between steps ---------------------------------------
    def set_hyperparameters(self, **hyperparameters: Any) -> None:
        """Change hyperparameters between steps, keeping x, the state and t, as torch's
        ``param_groups[0]['lr'] = ...`` or Keras's ``opt.learning_rate = ...`` do;
        ``opt.lr = 1e-4`` calls this.  Values are validated as at construction (a batched
        stepper takes per-row arrays).  A change that would alter the state's rows (momentum from
        0, centered) is refused: build a new stepper for that.  For a value that changes every
        step, a schedule (``fastrms.schedules``) costs nothing per step; this rebuilds the setup.
        """
        preset, old = self._options
        for fixed in {"preset", "batched"} & set(hyperparameters):
            raise ValueError(f"{fixed} is fixed when a stepper is built; build a new stepper to change it")
        names = self._names()
        for key in set(hyperparameters) - set(names):
            raise ck.unknown(f"hyperparameter of {type(self).__name__}:", key, names)

        def canonical(key) -> set:
            return {"beta1", "beta2"} if key == "betas" else {names.get(key, key)}

        changed = set().union(*map(canonical, hyperparameters))
        if "betas" in old:  # (validated at construction) as its two names, so that one can change alone
            b1, b2 = old["betas"]
            old = {**{k: v for k, v in old.items() if k != "betas"}, "beta1": b1, "beta2": b2}
        kept = {k: v for k, v in old.items() if not canonical(k) & changed}
        new = type(self)(self.x, preset=preset, **kept, **hyperparameters)  # (batched travels in kept)
        if new._mstate.names != self._mstate.names:
            raise ValueError(f"this change would turn the state rows {list(self._mstate.names)} into "
                             f"{list(new._mstate.names)}; build a new stepper for it (and load_state_dict "
                             "what carries over)")
        new.load_state_dict(self.state_dict())
        self.__dict__.pop("step", None)  # (the old setup's bound step, if new has none)
        self.__dict__.update(new.__dict__)

    def _names(self) -> dict:
        """Every name a hyperparameter of this stepper answers to -> its canonical name."""
        preset = self._options[0]
        aliases = presets.PRESET_ALIASES.get(preset.lower(), {}) if isinstance(preset, str) else {}
        hypers = methods.get(self.method).hypers
        return {**{k: c for k, c in {**methods.ALIASES, **aliases}.items() if c in hypers},
                **{n: n for n in hypers}, **({"betas": "betas"} if "beta1" in hypers else {})}

    def __setattr__(self, name: str, value: Any) -> None:
        built = "_options" in self.__dict__
        if built and name == "x":  # the kernels hold x's memory: a new x would silently not be stepped
            raise AttributeError("a stepper updates the array it was built over; for another x build a new "
                                 "stepper (load_state_dict(opt.state_dict()) carries the state over)")
        if built and not name.startswith("_") and name in self._names():
            self.set_hyperparameters(**{name: value})  # opt.lr = ... must not be a silent no-op
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:  # (only for names that are not attributes)
        if not name.startswith("_") and "_options" in self.__dict__:
            canonical = self._names().get(name)
            if canonical == "betas":
                return self.hyperparameters["beta1"], self.hyperparameters["beta2"]
            if canonical is not None:
                return self.hyperparameters[canonical]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # A stepper is x plus its state; a copy gets its own x (deepcopy) and state.
    def __deepcopy__(self, memo):
        x = copy.deepcopy(self.x, memo)
        preset, hyper = self._options
        new = type(self)(x, preset=preset, **copy.deepcopy(hyper, memo))  # (batched travels in hyper)
        new.load_state_dict(self.state_dict())
        memo[id(self)] = new
        return new

    def __reduce__(self):
        if not self._backend.host_memory:
            raise TypeError(f"a {type(self).__name__} over a GPU array cannot be pickled; save "
                            "opt.state_dict() and x (copied to the host) instead")
        preset, hyper = self._options
        return _restore, (type(self), self.x, preset, hyper, self.state_dict())

    def __repr__(self) -> str:
        hp = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters.items())
        if self._leaves is not None:
            what = f"<{len(self._leaves.shapes)} {self._leaves.dtype} arrays, {self._leaves.n} elements>"
        else:
            what = f"<{self._shaped.dtype} array {tuple(self._shaped.shape)}>"
        return f"{type(self).__name__}({what}, t={self.t}, {hp})"


def _named(x) -> list:
    """(name, array) for each array of x, named as the errors name them: x, or x[key] / x[index]."""
    if not _structure.is_structure(x):
        return [("x", x)]
    keys = list(x) if isinstance(x, dict) else range(len(x))
    return [(f"x[{k!r}]", a) for k, a in zip(keys, _structure.items(x), strict=True)]


def _moved_storage_check(named: list) -> Callable[[], None] | None:
    """For the torch tensors among the (name, x) pairs, a check run before each step that each still
    holds the memory the stepper updates.  model.to(), .double() or p.data = ... give a tensor new
    storage; the stepper would go on updating the old memory, a silent no-op for the model (torch's
    own optimizers hold the tensor and follow it), so it is refused, saying what to do instead."""
    held = [(name, t, t.data_ptr()) for name, t in named if _arrays.is_torch(t)]
    if not held:
        return None

    def check() -> None:
        for name, t, address in held:
            if t.data_ptr() != address:
                raise ValueError(f"{name} no longer holds the memory this stepper updates: its storage "
                                 "was replaced (model.to(), .double(), p.data = ...), so its steps would be "
                                 "lost. Build a new stepper over it; new.load_state_dict(opt.state_dict()) "
                                 "carries the state over")

    return check


def _torch_gradient(g, moved: Callable[[], None], grads: Callable[[], Any]) -> tuple[Any, Any]:
    """(loss, gradient) for a step over torch tensors: torch's ``step(closure)`` runs the closure
    first, with autograd on (torch wraps it in ``enable_grad`` too: a step may run under
    ``no_grad``), for its loss and the ``.grad`` it fills; then the tensors' storage is checked,
    and their ``.grad`` taken where no gradient was given."""
    loss = None
    if callable(g):
        import torch

        with torch.enable_grad():
            loss = g()
        g = None
    moved()
    return loss, grads() if g is None else g


def _grads_of(x) -> Callable[[], Any]:
    """The ``.grad`` of torch tensors x (one, or a structure of them), in x's structure."""
    def grad(name: str, t) -> Any:
        g = getattr(t, "grad", None)
        if g is None:
            raise TypeError(f"{name}.grad is None: step() reads the tensors' .grad, so call loss.backward() "
                            "first (torch's optimizers skip a parameter without one; fastrms steps every "
                            "array together), or pass the gradient as step(g)")
        return g

    if isinstance(x, dict):
        return lambda: {k: grad(f"x[{k!r}]", t) for k, t in x.items()}
    if isinstance(x, (list, tuple)):
        return lambda: type(x)(grad(f"x[{j}]", t) for j, t in enumerate(x))
    return lambda: grad("x", x)


def _restore(cls, x, preset, hyperparameters, state):
    opt = cls(x, preset=preset, **hyperparameters)
    opt.load_state_dict(state)
    return opt


def _stepper_class(method: methods.Method) -> type:
    doc = sys.modules[method.rule.__module__].__doc__  # the math, from the method's module
    return type(method.class_name, (Optimizer,), {
        "method": method.name, "__module__": __name__, "__qualname__": method.class_name,
        "__doc__": f"{method.doc}\n\n``{method.class_name}(x, *, preset=None, **hyperparameters)``; "
                   f"hyperparameters: {', '.join(sorted(method.hypers))}.\n\n{doc or ''}"})


# one stepper class per registered method: RMSProp, Adam, ... (named by Method.class_name)
STEPPERS = {name: _stepper_class(m) for name, m in methods.METHODS.items()}
globals().update({cls.__name__: cls for cls in STEPPERS.values()})
