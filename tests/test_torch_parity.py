"""Step-by-step parity with PyTorch's optimizers under preset='torch' (skipped without torch)."""

import contextlib
import copy

import numpy as np
import pytest

import fastrms

torch = None


@pytest.fixture(scope="module", autouse=True)
def _torch():
    # imported when this file's first test runs, not at collection: every xdist worker collects every file,
    # and these imports cost seconds each
    global torch
    torch = pytest.importorskip("torch", reason="torch parity tests need torch (pip install torch==2.13.0)")


@pytest.fixture(autouse=True)
def _nadam_scalars_in_float64(request):
    """torch keeps NAdam's running product of momenta in float32 unless its default dtype is float64
    (an artifact of its own, not copied: README, and test_torch_nadam_rounds_its_product_in_float32);
    NAdam's parity runs use float64."""
    params = getattr(getattr(request.node, "callspec", None), "params", {})
    if "NAdam" not in (params.get("theirs"), params.get("torch_name")):
        yield
        return
    with _torch_default_float64():
        yield


@contextlib.contextmanager
def _torch_default_float64():
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(before)

TORCH_CASES = [
    ("RMSprop", "rmsprop", {}),
    ("RMSprop", "rmsprop", {"alpha": 0.9, "eps": 1e-6}),
    ("RMSprop", "rmsprop", {"momentum": 0.9}),
    ("RMSprop", "rmsprop", {"centered": True}),
    ("RMSprop", "rmsprop", {"centered": True, "momentum": 0.5, "weight_decay": 0.1}),
    ("RMSprop", "rmsprop", {"maximize": True, "weight_decay": 0.01}),
    ("Adam", "adam", {}),
    ("Adam", "adam", {"amsgrad": True, "weight_decay": 0.05, "betas": (0.8, 0.99)}),
    ("Adam", "adam", {"maximize": True}),
    ("AdamW", "adamw", {}),
    ("AdamW", "adamw", {"weight_decay": 0.1, "amsgrad": True}),
    ("Adagrad", "adagrad", {}),
    ("Adagrad", "adagrad", {"lr_decay": 0.05, "initial_accumulator_value": 0.1, "weight_decay": 0.01}),
    ("Adadelta", "adadelta", {}),
    ("Adadelta", "adadelta", {"rho": 0.8, "weight_decay": 0.1}),
    ("SGD", "momentum", {"momentum": 0.9}),
    ("SGD", "momentum", {"momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    ("SGD", "momentum", {"momentum": 0.9, "dampening": 0.3}),
    ("SGD", "momentum", {"momentum": 0.5, "dampening": 0.0, "nesterov": True, "maximize": True}),
    ("SGD", "momentum", {"momentum": 0.0, "dampening": 0.3}),  # (no momentum: torch ignores τ)
    ("SGD", "gd", {}),
    ("NAdam", "nadam", {}),
    ("NAdam", "nadam", {"momentum_decay": 1.0, "weight_decay": 0.1, "decoupled_weight_decay": True}),
    ("NAdam", "nadam", {"betas": (0.0, 0.999)}),  # (μ_t = 0: no product to take)
    ("RAdam", "radam", {}),
    ("RAdam", "radam", {"weight_decay": 0.1, "decoupled_weight_decay": True, "betas": (0.5, 0.9)}),
    ("Adamax", "adamax", {}),
    ("Adamax", "adamax", {"weight_decay": 0.1, "eps": 1e-3, "maximize": True}),
]


@pytest.mark.parametrize("torch_name,method,hyper", TORCH_CASES,
                         ids=[f"{t}-{'-'.join(h) or 'default'}" for t, _, h in TORCH_CASES])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matches_torch_step_by_step(torch_name, method, hyper, dtype, rng):
    lr = {"Adadelta": 1.0}.get(torch_name, 0.01)
    W = rng.normal(size=(7, 7)).astype(dtype)
    x0 = rng.normal(size=7).astype(dtype)
    p = torch.nn.Parameter(torch.from_numpy(x0.copy()))
    topt = getattr(torch.optim, torch_name)([p], lr=lr, **hyper)
    x = x0.copy()
    cls = fastrms.steppers.STEPPERS[method]
    opt = cls(x, preset="torch", lr=lr, **hyper)
    for _ in range(25):
        g = np.tanh(W @ x).astype(dtype)  # the gradient depends on x: trajectories must agree
        p.grad = torch.from_numpy(np.tanh(W @ p.detach().numpy()).astype(dtype))
        topt.step()
        opt.step(g)
        tol = 1e-12 if dtype == np.float64 else 2e-5
        np.testing.assert_allclose(x, p.detach().numpy(), rtol=tol, atol=tol)


RMSPROP_GRID = [dict(alpha=a, eps=e, weight_decay=w, momentum=m, centered=c, maximize=mx)
                for a in (0.99, 0.9) for e in (1e-8, 1e-3) for w in (0.0, 0.1) for m in (0.0, 0.9)
                for c in (False, True) for mx in (False, True)]
ADAM_GRID = [(name, dict(amsgrad=a, weight_decay=w, maximize=mx, betas=b))
             for name in ("Adam", "AdamW") for a in (False, True) for w in (0.0, 0.05)
             for mx in (False, True) for b in ((0.9, 0.999), (0.5, 0.9))]


def _parity(torch_name, cls, hyper, rng, lr=0.01, steps=12):
    W = rng.normal(size=(5, 5))
    x = rng.normal(size=5)
    p = torch.nn.Parameter(torch.from_numpy(x.copy()))
    topt = getattr(torch.optim, torch_name)([p], lr=lr, **hyper)
    opt = cls(x, preset="torch", lr=lr, **hyper)
    for _ in range(steps):
        p.grad = torch.from_numpy(np.tanh(W @ p.detach().numpy()))
        topt.step()
        opt.step(np.tanh(W @ x))
    np.testing.assert_allclose(x, p.detach().numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("hyper", RMSPROP_GRID, ids=lambda h: "-".join(f"{k}{v}" for k, v in h.items()))
def test_every_torch_rmsprop_option_combination(hyper, rng):
    _parity("RMSprop", fastrms.RMSProp, hyper, rng)


@pytest.mark.parametrize("torch_name,hyper", ADAM_GRID, ids=lambda v: v if isinstance(v, str) else
                         "-".join(f"{k}{x}" for k, x in v.items()))
def test_every_torch_adam_option_combination(torch_name, hyper, rng):
    _parity(torch_name, {"Adam": fastrms.Adam, "AdamW": fastrms.AdamW}[torch_name], hyper, rng)


ADAGRAD_GRID = [dict(lr_decay=d, initial_accumulator_value=a, weight_decay=w, maximize=mx, eps=e)
                for d in (0.0, 0.05) for a in (0.0, 0.1) for w in (0.0, 0.01) for mx in (False, True)
                for e in (1e-10, 1e-3)]


@pytest.mark.parametrize("hyper", ADAGRAD_GRID, ids=lambda h: "-".join(f"{k}{v}" for k, v in h.items()))
def test_every_torch_adagrad_option_combination(hyper, rng):
    _parity("Adagrad", fastrms.Adagrad, hyper, rng)


# ρ_t passes 5 at step 6 with β2 = 0.999 and 0.9, so 12 steps see both of RAdam's phases
RADAM_ADAMAX_GRID = (
    [("NAdam", dict(weight_decay=w, decoupled_weight_decay=d, maximize=mx, betas=b, momentum_decay=psi))
     for w in (0.0, 0.05) for d in (False, True) for mx in (False, True)
     for b in ((0.9, 0.999), (0.5, 0.9)) for psi in (0.004, 0.0, 1.0) if w or not d]
    +
    [("RAdam", dict(weight_decay=w, decoupled_weight_decay=d, maximize=mx, betas=b, eps=e))
     for w in (0.0, 0.05) for d in (False, True) for mx in (False, True)
     for b in ((0.9, 0.999), (0.5, 0.9)) for e in (1e-8, 1e-3) if w or not d]
    + [("Adamax", dict(weight_decay=w, maximize=mx, betas=b, eps=e))
       for w in (0.0, 0.05) for mx in (False, True) for b in ((0.9, 0.999), (0.5, 0.9))
       for e in (1e-8, 1e-3)])


@pytest.mark.parametrize("torch_name,hyper", RADAM_ADAMAX_GRID, ids=lambda v: v if isinstance(v, str) else
                         "-".join(f"{k}{x}" for k, x in v.items()))
def test_every_torch_nadam_radam_and_adamax_option_combination(torch_name, hyper, rng):
    _parity(torch_name, getattr(fastrms, torch_name), hyper, rng)


def test_nadam_past_its_first_64_steps(rng):
    """Π_t from t: multiplied out to t = 64, then a series, then 0 (where 1 − Π rounds to 1)."""
    with _torch_default_float64():
        for hyper in ({"betas": (0.99, 0.999), "momentum_decay": 1.0}, {}):
            _parity("NAdam", fastrms.NAdam, hyper, rng, steps=300)


def test_a_nadam_state_whose_momenta_changed_on_the_way_is_refused():
    """fastrms computes NAdam's Π_t from t, β1 and ψ; a torch run that changed β1 midway carries
    another Π, and would continue differently: refused, not continued with the wrong one."""
    with _torch_default_float64():
        p = torch.nn.Parameter(torch.ones(3))
        topt = torch.optim.NAdam([p], lr=0.01)
        for k in range(4):
            if k == 2:
                topt.param_groups[0]["betas"] = (0.5, 0.999)
            p.grad = torch.ones(3)
            topt.step()
    x = np.ones(3)
    opt = fastrms.NAdam(x, preset="torch")
    with pytest.raises(ValueError, match="mu_product in the torch state is .* the run changed them"):
        opt.load_state_dict(topt.state_dict())
    assert opt.t == 0


def test_torch_nadam_rounds_its_product_in_float32(rng):
    """Under torch's default dtype (float32) NAdam keeps its running product of momenta in float32:
    an artifact of torch, not copied (README).  It moves the float64 run by ~1e-9, not more."""
    W, x0 = rng.normal(size=(5, 5)), rng.normal(size=5)
    p = torch.nn.Parameter(torch.from_numpy(x0.copy()))
    topt = torch.optim.NAdam([p], lr=0.01)
    x = x0.copy()
    opt = fastrms.NAdam(x, preset="torch", lr=0.01)
    for _ in range(12):
        p.grad = torch.from_numpy(np.tanh(W @ p.detach().numpy()))
        topt.step()
        opt.step(np.tanh(W @ x))
    assert topt.state[p]["mu_product"].dtype == torch.float32
    gap = np.max(np.abs(x - p.detach().numpy()))
    assert 1e-13 < gap < 1e-6


def test_schedules_match_torch_lr_schedulers(rng):
    """fastrms.schedules through RMSprop against torch's schedulers, stepped after each optimizer
    step as torch's documentation says: ExponentialLR, StepLR, and CosineAnnealingLR past T_max,
    whose cosine goes back up (periodic=True)."""
    from fastrms import schedules

    sched = torch.optim.lr_scheduler
    cases = [(lambda o: sched.ExponentialLR(o, 0.9), schedules.exponential(0.05, 0.9, 1)),
             (lambda o: sched.LinearLR(o, start_factor=0.25, total_iters=5),
              schedules.constant(0.05, warmup=5, warmup_from=0.0125)),
             (lambda o: sched.StepLR(o, 4, 0.5), schedules.step(0.05, 0.5, 4)),
             (lambda o: sched.CosineAnnealingLR(o, 6, eta_min=0.005),
              schedules.cosine(0.05, 6, final=0.005, periodic=True))]
    for make, ours in cases:
        x0 = rng.normal(size=6)
        p = torch.nn.Parameter(torch.tensor(x0))
        opt = torch.optim.RMSprop([p], lr=0.05, alpha=0.9)
        scheduler = make(opt)
        x = x0.copy()
        mine = fastrms.RMSProp(x, preset="torch", lr=ours, alpha=0.9)
        for k in range(20):  # past 3·T_max for the cosine
            g = np.tanh(3 * x0 + k)
            p.grad = torch.tensor(g)
            opt.step()
            scheduler.step()
            mine.step(g)
            np.testing.assert_allclose(x, p.detach().numpy(), rtol=1e-12, atol=1e-13,
                                       err_msg=f"{ours} step {k + 1}")


def test_changing_hyperparameters_mid_run_as_torchs_param_groups(rng):
    """opt.lr = ... and opt.alpha = ... between steps, as param_groups[0][...] = ... in torch (and
    ReduceLROnPlateau): the state carries on in both."""
    W, x0 = rng.normal(size=(6, 6)), rng.normal(size=6)
    p = torch.nn.Parameter(torch.tensor(x0))
    theirs = torch.optim.RMSprop([p], lr=0.01, momentum=0.9, centered=True)
    x = x0.copy()
    mine = fastrms.RMSProp(x, preset="torch", lr=0.01, momentum=0.9, centered=True)
    changes = {10: ("lr", 0.05), 20: ("alpha", 0.9), 25: ("weight_decay", 0.1)}
    for k in range(30):
        if k in changes:
            name, value = changes[k]
            theirs.param_groups[0][name] = value
            setattr(mine, name, value)
        p.grad = torch.from_numpy(np.tanh(W @ p.detach().numpy()))
        theirs.step()
        mine.step(np.tanh(W @ x))
        np.testing.assert_allclose(x, p.detach().numpy(), rtol=1e-12, atol=1e-12)


def test_steppers_update_a_torch_models_cpu_parameters_in_place():
    """A list (or dict) of a CPU model's parameters, stepped with their .grad: one fused kernel over
    the tensors' own memory, and torch's own RMSprop on a copy of the model agrees."""
    torch.manual_seed(0)

    def net():
        return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).double()

    mine, theirs = net(), net()
    theirs.load_state_dict(mine.state_dict())
    X, y = torch.randn(32, 4, dtype=torch.float64), torch.randn(32, 1, dtype=torch.float64)
    params = dict(mine.named_parameters())
    opt = fastrms.RMSProp(params, preset="torch", lr=0.01, momentum=0.9, centered=True)
    topt = torch.optim.RMSprop(theirs.parameters(), lr=0.01, momentum=0.9, centered=True)
    for _ in range(30):
        for model in (mine, theirs):
            model.zero_grad()
            ((model(X) - y) ** 2).mean().backward()
        opt.step({name: p.grad for name, p in params.items()})
        topt.step()
    for a, b in zip(mine.parameters(), theirs.parameters(), strict=True):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-12, atol=1e-12)
    assert opt.x is params and set(opt.state_dict()["s"]) == set(params)
    w = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))  # one tensor, a gradient that requires grad
    single = fastrms.Adam(w, lr=0.1)
    single.step(torch.ones(3, dtype=torch.float64, requires_grad=True))
    ref = np.ones(3)
    fastrms.Adam(ref, lr=0.1).step(np.ones(3))
    assert single.x is w and w.detach().numpy().tobytes() == ref.tobytes()
    with pytest.raises(TypeError, match=r"no NumPy view .*; convert it, e\.g\. with \.to\(torch\.float32\)"):
        fastrms.RMSProp(torch.ones(3, dtype=torch.bfloat16))
    with pytest.raises(TypeError, match=r"float64 tensor has no NumPy .*; pass a dense, strided CPU tensor$"):
        fastrms.RMSProp(torch.ones(3, dtype=torch.float64).to_sparse())
    with pytest.raises(TypeError, match=r"negative bit .*; pass t\.resolve_neg\(\)$"):
        fastrms.RMSProp(torch._neg_view(torch.ones(3, dtype=torch.float64)))
    with pytest.raises(TypeError, match=r"ZeroTensor .*; pass torch\.zeros_like\(t\)$"):
        fastrms.Adam(w, lr=0.1).step(torch._efficientzerotensor(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="C-contiguous"):
        fastrms.RMSProp(torch.ones(3, 2).t())
    with pytest.raises(TypeError, match=r"x\['b'\]: x must hold real numbers"):
        fastrms.RMSProp({"a": torch.ones(2), "b": torch.ones(2, dtype=torch.int64)})


@pytest.mark.parametrize("opts", [{"lr": 0.05, "momentum": 0.5}, {"lr": 0.05, "clip_norm": 0.5}])
def test_a_models_grad_tensors_are_read_in_place_and_odd_ones_are_converted(opts, monkeypatch, rng):
    """The usual .grad (x's dtype and shapes, contiguous, on the CPU) is read through its data
    pointer, with no NumPy view made (but for the global norm, when clipping needs it); any other
    tensor takes the views and the checks. Both give the steps of NumPy gradients, bit for bit."""
    shapes = [(4, 3), (3,), (3, 2), (2,)]
    x0 = [rng.normal(size=s) for s in shapes]
    grads = [[rng.normal(size=s).astype(np.float32).astype(np.float64) for s in shapes] for _ in range(3)]
    ref = [a.copy() for a in x0]  # (gradients exact in float32: one is handed over as float32)
    fast = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in x0]
    odd = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in x0]
    r, f, o = fastrms.RMSProp(ref, **opts), fastrms.RMSProp(fast, **opts), fastrms.RMSProp(odd, **opts)
    from fastrms import _arrays

    viewed = []
    view = _arrays.cpu_tensor_view
    monkeypatch.setattr(_arrays, "cpu_tensor_view", lambda t: viewed.append(t) or view(t))
    for gs in grads:
        r.step(gs)
        f.step([torch.from_numpy(g.copy()) for g in gs])
        assert bool(viewed) == ("clip_norm" in opts)  # (x's were made when the stepper was built)
        viewed.clear()
        o.step([torch.from_numpy(np.asfortranarray(gs[0])), torch.from_numpy(gs[1].astype(np.float32)),
                torch.from_numpy(gs[2].copy()), torch.from_numpy(gs[3].copy())])
        assert viewed  # the non-contiguous and float32 tensors took the views
        viewed.clear()
    for a, b, c in zip(ref, fast, odd, strict=True):
        assert a.tobytes() == b.detach().numpy().tobytes() == c.detach().numpy().tobytes()
    before = [p.detach().numpy().copy() for p in fast]
    with pytest.raises(TypeError, match="negative bit"):  # a lazily negated view: its memory holds -g
        f.step([torch._neg_view(torch.from_numpy(g.copy())) for g in grads[0]])
    with pytest.raises(TypeError, match="ZeroTensor"):  # autograd's zeros with no memory (a null pointer)
        f.step([torch._efficientzerotensor(s, dtype=torch.float64) for s in shapes])
    assert all((a == p.detach().numpy()).all() for a, p in zip(before, fast, strict=True))
    with pytest.raises(ValueError, match=r"gradient\[0\]: the gradient has shape \(3, 4\), but x has shape"):
        f.step([torch.from_numpy(np.ascontiguousarray(grads[0][0].T))] + [torch.zeros(s, dtype=torch.float64)
                                                                           for s in shapes[1:]])


def test_pack_moves_a_torch_model_into_one_buffer_and_its_gradients_into_another():
    """fastrms.pack of tensors gives a tensor on their device and tensor views (the GPU's form of
    a one-launch step for a model); the model moved into the views, backward() accumulates into
    the packed gradient buffer, and a stepper over the one buffer steps as one over the list."""
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)).double()
    ref = copy.deepcopy(model)
    params = list(model.parameters())
    before = [p.detach().clone() for p in params]
    flat, views = fastrms.pack(params)
    gflat, gviews = fastrms.pack([torch.zeros_like(p) for p in params])
    assert type(flat) is torch.Tensor and flat.dtype == torch.float64 and flat.shape == (21,)
    assert [tuple(v.shape) for v in views] == [tuple(p.shape) for p in params]
    assert all(torch.equal(v, p.detach()) for v, p in zip(views, params, strict=True))
    for p, v, g in zip(params, views, gviews, strict=True):
        p.data, p.grad = v, g
    assert params[0].data_ptr() == flat.data_ptr() and params[-1].grad.data_ptr() > gflat.data_ptr()
    X, y = torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 1, dtype=torch.float64)
    opt, ref_opt = fastrms.RMSProp(flat, lr=0.01), fastrms.RMSProp(list(ref.parameters()), lr=0.01)
    for _ in range(3):
        gflat.zero_()
        ((model(X) - y) ** 2).mean().backward()
        opt.step(gflat)
        ref_opt.zero_grad()
        ((ref(X) - y) ** 2).mean().backward()
        ref_opt.step()
        assert torch.equal(gflat, torch.cat([p.grad.reshape(-1) for p in ref.parameters()]))
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), ref.parameters(), strict=True))
    assert not any(torch.equal(p, p0) for p, p0 in zip(params, before, strict=True))  # (it moved)
    # a model's parameters as the steppers (and torch's optimizers) take them
    flat2, named = fastrms.pack(model.named_parameters())
    assert torch.equal(flat2, flat) and list(named) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert torch.equal(fastrms.pack(model.parameters())[0], flat)
    assert torch.equal(fastrms.pack(torch.nn.ParameterList(model.parameters()))[0], flat)
    with pytest.raises(TypeError, match=r"module \(Sequential\).*fastrms\.pack\(model\.parameters\(\)\)"):
        fastrms.pack(model)
    # the tensors' own kind and dtype rules, as for NumPy arrays
    assert fastrms.pack([torch.ones(2, dtype=torch.float32)] * 2)[0].dtype == torch.float32
    assert fastrms.pack([torch.ones(2, dtype=torch.bfloat16), torch.arange(2)])[0].dtype == torch.float64
    with pytest.raises(TypeError, match="one kind, got NumPy arrays and torch tensors"):
        fastrms.pack([np.ones(2), torch.ones(2)])
    with pytest.raises(ValueError, match="one device, got cpu and meta"):
        fastrms.pack([torch.ones(2), torch.ones(2, device="meta")])
    with pytest.raises(TypeError, match="real numbers"):
        fastrms.pack([torch.ones(2, dtype=torch.complex64)])


def test_torch_containers_of_parameters():
    """An nn.ParameterList, an nn.ParameterDict and model.named_parameters() are taken as torch's
    optimizers take them (a list; a dict keyed by name, which the state dict keeps); a module
    itself and parameter groups are TypeErrors that say what to pass."""
    torch.manual_seed(2)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)).double()
    X = torch.randn(8, 3, dtype=torch.float64)
    copies = [copy.deepcopy(model) for _ in range(4)]
    plist = torch.nn.ParameterList(copies[1].parameters())
    pdict = torch.nn.ParameterDict({k.replace(".", "_"): p for k, p in copies[2].named_parameters()})
    opts = [torch.optim.RMSprop(copies[0].parameters(), lr=0.01, centered=True),
            fastrms.RMSProp(plist, preset="torch", lr=0.01, centered=True),
            fastrms.RMSProp(pdict, preset="torch", lr=0.01, centered=True),
            fastrms.RMSProp(copies[3].named_parameters(), preset="torch", lr=0.01, centered=True)]
    assert isinstance(opts[1].x, list) and len(opts[1].x) == 4
    assert list(opts[2].x) == list(pdict.keys()) and len(pdict) == 4  # (its own order: it sorts a dict)
    assert list(opts[3].x) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    for _ in range(6):
        for m, o in zip(copies, opts, strict=True):
            o.zero_grad()
            (m(X) ** 2).mean().backward()
            o.step()
    for m in copies[1:]:
        for a, b in zip(m.parameters(), copies[0].parameters(), strict=True):
            np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-12, atol=1e-12)
    assert list(opts[3].state_dict()["s"]) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    with pytest.raises(TypeError, match=r"x is a torch module \(Sequential\): pass its parameters.*"
                                        r"fastrms\.RMSProp\(model\.parameters\(\), \.\.\.\)"):
        fastrms.RMSProp(model, lr=0.01)
    with pytest.raises(TypeError, match="parameter groups .* one stepper per group"):
        fastrms.Adam([{"params": [model[0].weight]}, {"params": [model[2].weight], "lr": 1e-3}])
    with pytest.raises(ValueError, match="names a parameter twice"):
        fastrms.RMSProp(iter([("w", np.zeros(2)), ("w", np.zeros(3))]))


RESUMED = [("RMSprop", "RMSProp", {"momentum": 0.5, "centered": True, "weight_decay": 0.01}),
           ("RMSprop", "RMSProp", {}),
           ("Adam", "Adam", {"amsgrad": True, "betas": (0.8, 0.95)}),
           ("AdamW", "AdamW", {}),
           ("SGD", "Momentum", {"momentum": 0.9, "dampening": 0.3}),
           ("SGD", "Momentum", {"momentum": 0.9, "nesterov": True}),
           ("SGD", "GradientDescent", {}),
           ("SGD", "Momentum", {"momentum": 0.0, "dampening": 0.3}),  # (torch keeps no buffer there)
           ("Adagrad", "Adagrad", {"initial_accumulator_value": 0.1}),
           ("Adadelta", "Adadelta", {"rho": 0.8}),
           ("RAdam", "RAdam", {"weight_decay": 0.01, "decoupled_weight_decay": True}),
           ("NAdam", "NAdam", {"momentum_decay": 0.5, "betas": (0.8, 0.95)}),
           ("Adamax", "Adamax", {"betas": (0.8, 0.95)})]


@pytest.mark.parametrize(("theirs", "mine", "kwargs"), RESUMED, ids=[f"{t}-{kw}" for t, _, kw in RESUMED])
def test_a_run_torch_began_resumes_from_its_state_dict(theirs, mine, kwargs):
    """opt.load_state_dict(torch_opt.state_dict()): the state, the step count and the hyperparameters
    (torch's state wins over the stepper's lr, as torch's own load_state_dict does), then the
    same steps as torch's optimizer taking them."""
    torch.manual_seed(3)
    X = torch.randn(16, 3, dtype=torch.float64)
    model = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 1)).double()
    topt = getattr(torch.optim, theirs)(model.parameters(), lr=0.01, **kwargs)

    def steps(m, o, k):
        for _ in range(k):
            o.zero_grad()
            (m(X) ** 2).mean().backward()
            o.step()

    steps(model, topt, 4)
    resumed, saved = copy.deepcopy(model), copy.deepcopy(topt.state_dict())
    steps(model, topt, 6)
    opt = getattr(fastrms, mine)(resumed.parameters(), preset="torch", lr=0.5, **kwargs)
    opt.load_state_dict(saved)
    assert opt.lr == 0.01
    steps(resumed, opt, 6)
    for a, b in zip(resumed.parameters(), model.parameters(), strict=True):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_a_torch_state_that_does_not_fit_is_refused():
    w = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    v = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    topt = torch.optim.RMSprop([w, v], lr=0.01, centered=True)
    before = topt.state_dict()
    w.grad, v.grad = torch.ones(3, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    topt.step()
    saved = topt.state_dict()
    x = [np.ones(3), np.ones(2)]
    fits = fastrms.RMSProp(x, preset="torch", centered=True)
    with pytest.raises(ValueError, match=r"parameter 0 of the torch state has \['grad_avg', 'square_avg'\], "
                                         r"but this RMSProp\(preset='torch'\) keeps \['square_avg'\]"):
        fastrms.RMSProp(x, preset="torch").load_state_dict(saved)
    one_only = {**saved, "state": {0: saved["state"][0]}}  # (parameter 1 never stepped)
    with pytest.raises(ValueError, match=r"parameter 1 .* no state, but .* keeps \[.grad_avg., .square_avg"):
        fits.load_state_dict(one_only)
    with pytest.raises(ValueError, match=r"parameter 0's square_avg in the torch state has shape \(3,\), but "
                                         r"array 0 of x has shape \(1, 3\): are x's arrays in the order"):
        fastrms.RMSProp([np.ones((1, 3)), np.ones(2)], preset="torch", centered=True).load_state_dict(saved)
    with pytest.raises(ValueError, match="made with preset='torch'"):
        fastrms.RMSProp(x, centered=True).load_state_dict(saved)
    with pytest.raises(ValueError, match=r"is for 2 parameters; this RMSProp\(.*centered=True\) steps 1"):
        fastrms.RMSProp(np.ones(3), preset="torch", centered=True).load_state_dict(saved)
    two_groups = {**saved, "param_groups": [{**saved["param_groups"][0], "params": [0]},
                                            {**saved["param_groups"][0], "params": [1]}]}
    with pytest.raises(ValueError, match="2 parameter groups"):
        fits.load_state_dict(two_groups)
    uneven = copy.deepcopy(saved)
    uneven["state"][1]["step"] = torch.tensor(7.0)
    with pytest.raises(ValueError, match=r"different numbers of steps \(\[1, 7\]\)"):
        fits.load_state_dict(uneven)
    assert fits.t == 0 and all((a == 1).all() for a in x)
    fits.load_state_dict(saved)
    assert fits.t == 1
    np.testing.assert_array_equal(fits.state["m"][0], saved["state"][0]["grad_avg"].numpy())
    fits.load_state_dict(before)  # (torch before its first step keeps no state: the initial one)
    assert fits.t == 0 and not any(a.any() for r in ("s", "m") for a in fits.state[r])


@pytest.mark.parametrize(("theirs", "mine", "kwargs"), RESUMED, ids=[f"{t}-{kw}" for t, _, kw in RESUMED])
def test_a_run_fastrms_began_continues_in_torch(theirs, mine, kwargs):
    """torch_opt.load_state_dict(opt.torch_state_dict()), after 0 and after 4 steps: torch's next
    6 steps equal fastrms's; and loaded back into fastrms, the same state (SGD keeps no step count)."""
    torch.manual_seed(4)
    X = torch.randn(16, 3, dtype=torch.float64)

    def steps(m, o, k):
        for _ in range(k):
            o.zero_grad()
            (m(X) ** 2).mean().backward()
            o.step()

    for first in (0, 4):
        model = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 1)).double()
        opt = getattr(fastrms, mine)(model.parameters(), preset="torch", lr=0.01, **kwargs)
        steps(model, opt, first)
        theirs_model, exported = copy.deepcopy(model), opt.torch_state_dict()
        topt = getattr(torch.optim, theirs)(theirs_model.parameters(), lr=0.5)
        topt.load_state_dict(exported)
        if theirs != "SGD":
            back = getattr(fastrms, mine)([np.zeros(p.shape) for p in model.parameters()], preset="torch",
                                          **kwargs)
            back.load_state_dict(exported)
            mine_state, back_state = opt.state_dict(), back.state_dict()
            assert back_state["t"] == mine_state["t"] == first and back.lr == 0.01
            for r in set(mine_state) - {"t"}:
                assert all(np.array_equal(a, b) for a, b in zip(mine_state[r], back_state[r], strict=True))
        steps(model, opt, 6)
        steps(theirs_model, topt, 6)
        for a, b in zip(model.parameters(), theirs_model.parameters(), strict=True):
            np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_a_state_torch_cannot_continue_is_refused():
    x = np.ones(3)
    with pytest.raises(ValueError, match=r"has eps_in_sqrt=True, which torch.optim.RMSprop does not have "
                                         r"\(it runs as eps_in_sqrt=False\)"):
        fastrms.RMSProp(x, preset="torch", eps_in_sqrt=True).torch_state_dict()
    with pytest.raises(ValueError, match="has a scheduled lr, and torch's state_dict holds a number"):
        fastrms.RMSProp(x, preset="torch", lr=fastrms.schedules.exponential(0.1, 0.9, 10)).torch_state_dict()
    with pytest.raises(ValueError, match="made with preset='torch'"):
        fastrms.RMSProp(x).torch_state_dict()
    with pytest.raises(ValueError, match="made with preset='torch'"):
        fastrms.Yogi(x).torch_state_dict()


def test_a_tensor_learning_rate_as_torch_takes_it():
    """lr=torch.tensor(...) (torch.optim takes a Tensor lr) is read as its number when given: the same
    steps as torch's; and a tensor changed in place is read again by the next call, not remembered."""
    lr = torch.tensor(0.01, dtype=torch.float64)
    theirs = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64))
    topt = torch.optim.RMSprop([theirs], lr=lr, momentum=0.5)
    x = np.array([1.0, -2.0, 3.0])
    opt = fastrms.RMSProp(x, preset="torch", lr=lr, momentum=0.5)
    for _ in range(5):
        theirs.grad = theirs.detach() ** 3
        topt.step()
        opt.step(x ** 3)
    np.testing.assert_allclose(x, theirs.detach().numpy(), rtol=1e-12)
    rate = torch.tensor(0.5, dtype=torch.float64)
    solve = [fastrms.minimize(lambda v: float(v @ v), lambda v: 2 * v, np.ones(2), method="gd",
                              options={"lr": rate, "maxiter": 1, "gtol": 0})]
    rate.fill_(0.25)
    solve.append(fastrms.minimize(lambda v: float(v @ v), lambda v: 2 * v, np.ones(2), method="gd",
                                  options={"lr": rate, "maxiter": 1, "gtol": 0}))
    assert solve[0].x.tolist() == [0.0, 0.0] and solve[1].x.tolist() == [0.5, 0.5]
    beta1 = torch.tensor(0.5, dtype=torch.float64)  # (inside a tuple too)
    assert fastrms.Adam(np.ones(2), betas=(beta1, 0.9)).hyperparameters["beta1"] == 0.5
    beta1.fill_(0.7)
    assert fastrms.Adam(np.ones(2), betas=(beta1, 0.9)).hyperparameters["beta1"] == 0.7
    with pytest.raises(TypeError, match=r"lr must be a real number, got Tensor tensor\(True\)"):
        fastrms.RMSProp(x, lr=torch.tensor(True))


@pytest.mark.parametrize(("theirs", "mine", "kwargs"), RESUMED, ids=[f"{t}-{kw}" for t, _, kw in RESUMED])
def test_a_torch_optimizers_defaults_make_the_same_stepper(theirs, mine, kwargs):
    """fastrms.X(params, preset='torch', **torch_opt.defaults): every argument torch's optimizer
    holds (its implementation switches, foreach, fused ..., included) is taken, and the steps agree."""
    torch.manual_seed(5)
    X = torch.randn(16, 3, dtype=torch.float64)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)).double()
    twin = copy.deepcopy(model)
    topt = getattr(torch.optim, theirs)(model.parameters(), lr=0.01, **kwargs)
    opt = getattr(fastrms, mine)(twin.parameters(), preset="torch", **topt.defaults)
    for _ in range(5):
        for m, o in ((model, topt), (twin, opt)):
            o.zero_grad()
            (m(X) ** 2).mean().backward()
            o.step()
    for a, b in zip(twin.parameters(), model.parameters(), strict=True):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-12, atol=1e-14)
    if mine == "AdamW":
        with pytest.raises(ValueError, match="AdamW is defined with decoupled_weight_decay=True, got "):
            fastrms.AdamW(twin.parameters(), preset="torch", decoupled_weight_decay=False)


def test_a_torch_loop_as_written_for_torch_optim():
    """fastrms.RMSProp(model.parameters(), ...) and opt.zero_grad(); loss.backward(); opt.step():
    the parameters as torch's optimizers take them (a generator), their .grad read by step()."""
    torch.manual_seed(1)
    mine = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 1)).double()
    theirs = copy.deepcopy(mine)
    X = torch.randn(16, 3, dtype=torch.float64)
    opt = fastrms.RMSProp(mine.parameters(), preset="torch", lr=0.01, momentum=0.5)
    topt = torch.optim.RMSprop(theirs.parameters(), lr=0.01, momentum=0.5)
    assert isinstance(opt.x, list) and len(opt.x) == 4
    for k in range(10):
        for model, o in ((mine, opt), (theirs, topt)):
            o.zero_grad(set_to_none=k % 2 == 0)
            (model(X) ** 2).mean().backward()
            o.step()
    for a, b in zip(mine.parameters(), theirs.parameters(), strict=True):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-12, atol=1e-12)
    opt.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in mine.parameters())
    opt.zero_grad()
    assert all(p.grad is None for p in mine.parameters())
    with pytest.raises(TypeError, match=r"x\[0\]\.grad is None: step\(\) reads the tensors' \.grad"):
        opt.step()
    w = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    (w ** 2).sum().backward()
    one = fastrms.GradientDescent(w, lr=0.5)
    one.step()
    assert w.detach().numpy().tolist() == [0.0, 0.0]
    with pytest.raises(TypeError, match=r"RMSProp\.step\(\) missing 1 required positional argument: 'g'"):
        fastrms.RMSProp(np.ones(2)).step()  # NumPy arrays carry no gradient
    with pytest.raises(TypeError, match=r"RMSProp\.zero_grad\(\) clears torch tensors' \.grad"):
        fastrms.RMSProp([np.ones(2)]).zero_grad()


def test_step_with_a_closure_as_torch_optim_takes_it():
    """opt.step(closure), torch's form (and Lightning's): the closure zeroes the gradients, computes
    the loss and calls backward(); step calls it with autograd on (even under no_grad, as torch
    does), steps from the .grad it filled and returns its loss.  One tensor, a model's list, and a
    batched stepper over a tensor's rows; a function passed as the gradient of NumPy arrays is a
    TypeError that names the closure form."""
    torch.manual_seed(2)
    mine = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)).double()
    theirs = copy.deepcopy(mine)
    X = torch.randn(8, 3, dtype=torch.float64)
    opt = fastrms.Adam(mine.parameters(), preset="torch", lr=0.01)
    topt = torch.optim.Adam(theirs.parameters(), lr=0.01)
    for k in range(6):
        losses = []
        for model, o in ((mine, opt), (theirs, topt)):
            def closure(model=model, o=o):
                o.zero_grad()
                loss = (model(X) ** 2).mean()
                loss.backward()
                return loss
            if k % 2:
                with torch.no_grad():
                    losses.append(o.step(closure))
            else:
                losses.append(o.step(closure))
        assert torch.is_tensor(losses[0]) and losses[0].item() == losses[1].item()
    for a, b in zip(mine.parameters(), theirs.parameters(), strict=True):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-12, atol=1e-12)
    assert opt.step([p.grad for p in mine.parameters()]) is None and opt.step() is None
    W = torch.nn.Parameter(torch.ones(3, 2, dtype=torch.float64))
    rows = fastrms.RMSProp(W, lr=np.array([0.1, 0.2, 0.3]))

    def rows_closure():
        rows.zero_grad()
        loss = (W ** 2).sum()
        loss.backward()
        return loss
    assert rows.step(rows_closure).item() == 6.0
    ref = np.ones((3, 2))
    fastrms.RMSProp(ref, lr=np.array([0.1, 0.2, 0.3])).step(2 * np.ones((3, 2)))
    np.testing.assert_array_equal(W.detach().numpy(), ref)
    for x in (np.ones(2), [np.ones(2)], {"w": np.ones(2)}, np.ones((2, 2))):
        opts = {"lr": np.array([0.1, 0.2])} if x.__class__ is np.ndarray and x.ndim == 2 else {}
        with pytest.raises(TypeError, match=r"the gradient is a function: .*step\(closure\)"):
            fastrms.RMSProp(x, **opts).step(lambda: 1.0)


def test_a_parameter_whose_storage_was_replaced_is_refused_not_silently_left_behind():
    """p.data = ..., model.to(), .double() give a tensor new memory. The stepper updated the old
    memory, a silent no-op for the model (torch's optimizers follow the tensor); it now refuses,
    and the advice it gives (a new stepper, the state carried over) continues the run exactly."""
    g = torch.full((3,), 0.5, dtype=torch.float64)
    p = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    ref = np.zeros(3)
    one, mirror = fastrms.RMSProp(p, lr=0.1), fastrms.RMSProp(ref, lr=0.1)
    one.step(g)
    mirror.step(g.numpy())
    p.data = p.data.clone()  # the same values in new memory
    with pytest.raises(ValueError, match="x no longer holds the memory this stepper updates"):
        one.step(g)
    again = fastrms.RMSProp(p, lr=0.1)
    again.load_state_dict(one.state_dict())
    again.step(g)
    mirror.step(g.numpy())
    assert p.detach().numpy().tobytes() == ref.tobytes()

    model = torch.nn.Linear(3, 2)
    many = fastrms.RMSProp(dict(model.named_parameters()), lr=0.1)
    many.step({k: torch.ones_like(v) for k, v in model.named_parameters()})
    model.double()
    before = {k: v.detach().numpy().copy() for k, v in model.named_parameters()}
    with pytest.raises(ValueError, match=r"x\['weight'\] no longer holds the memory"):
        many.step({k: torch.ones_like(v) for k, v in model.named_parameters()})
    assert all((before[k] == v.detach().numpy()).all() for k, v in model.named_parameters())


def test_minimize_takes_a_cpu_parameter_as_x0_and_leaves_it_alone():
    p = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))  # (np.asarray refuses it: it requires grad)
    res = fastrms.minimize(lambda x: float(np.sum(x ** 2)), lambda x: 2 * x, p, options={"lr": 0.1})
    ref = fastrms.minimize(lambda x: float(np.sum(x ** 2)), lambda x: 2 * x, np.ones(3), options={"lr": 0.1})
    assert res.x.tobytes() == ref.x.tobytes() and torch.equal(p.detach(), torch.ones(3, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"x0: this torch.bfloat16 tensor has no NumPy view"):
        fastrms.minimize(lambda x: 0.0, lambda x: x, torch.ones(3, dtype=torch.bfloat16))
