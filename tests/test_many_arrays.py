"""Steppers over several arrays (a list, tuple or dict: a model's weights and biases) and
fastrms.pack: one fused kernel over all the arrays, the same steps as over their concatenation."""

import copy
import pickle
import re

import numpy as np
import pytest

import fastrms
from fastrms import _structure
from fastrms.kernels import cpu

SHAPES = [(6, 5), (5,), (5, 3), (3,)]


def _flat(arrays):
    return np.concatenate([np.ravel(a) for a in arrays])


def _model(rng, dtype=np.float64, shapes=SHAPES):
    return [rng.normal(size=s).astype(dtype) for s in shapes]


@pytest.mark.parametrize("method,opts,dtype", [
    ("RMSProp", {"lr": 0.01, "momentum": 0.9, "centered": True, "clip_norm": 0.5}, np.float64),
    ("Adam", {"lr": 0.01, "amsgrad": True, "weight_decay": 0.1}, np.float32),
])
def test_steps_over_a_list_equal_steps_over_the_concatenation(method, opts, dtype, rng, monkeypatch):
    """Bit for bit, clip_norm included (the global norm over all the arrays); chunks of 7 elements
    make pieces that start and end inside arrays and span several of them."""
    monkeypatch.setattr(cpu, "ARRAY_CHUNK", 7)
    xs = _model(rng, dtype)
    grads = [_model(rng, dtype) for _ in range(4)]
    before = [g.copy() for g in grads[0]]
    many = getattr(fastrms, method)([a.copy() for a in xs], **opts)
    kept = list(many.x)
    flat = getattr(fastrms, method)(_flat(xs), **opts)
    for gs in grads:
        many.step(gs)
        flat.step(_flat(gs))
    np.testing.assert_array_equal(_flat(many.x), flat.x)
    assert all(a is b for a, b in zip(many.x, kept, strict=True))  # updated in place, not replaced
    np.testing.assert_array_equal(_flat(grads[0]), _flat(before))  # gradients untouched
    assert many.t == 4


def test_a_large_structure_takes_the_parallel_kernel_and_agrees(rng):
    shapes = [(40_000,), (7,), (30, 700), (2,)]
    xs, gs = _model(rng, shapes=shapes), _model(rng, shapes=shapes)
    many = fastrms.RMSProp([a.copy() for a in xs], lr=0.01)
    flat = fastrms.RMSProp(_flat(xs), lr=0.01)
    assert cpu.use_parallel(many._leaves.n) or not cpu.use_parallel(10**7)  # parallel where allowed
    for _ in range(3):
        many.step(gs)
        flat.step(_flat(gs))
    np.testing.assert_array_equal(_flat(many.x), flat.x)


def test_steppers_over_lists_from_threads_agree_with_serial_runs(threads_agree, rng):
    """Each thread its own structure and stepper (parallel kernel, gradients gathered per call)."""
    shapes = [(30_000,), (100, 200)]
    xs, gs = _model(rng, shapes=shapes), _model(rng, shapes=shapes)

    def solve(lr):
        opt = fastrms.RMSProp([a.copy() for a in xs], lr=lr, momentum=0.9)
        for _ in range(5):
            opt.step(gs)
        return _flat(opt.x)

    threads_agree(solve, [0.01, 0.02, 0.03, 0.04])


def test_a_dict_keeps_its_keys_in_state_and_state_dict(rng):
    x = {"W": rng.normal(size=(4, 3)), "b": rng.normal(size=3)}
    g = {"b": rng.normal(size=3), "W": rng.normal(size=(4, 3))}  # key order need not match
    opt = fastrms.RMSProp(x, lr=0.1, momentum=0.5)
    opt.step(g)
    state = opt.state
    assert set(state) == {"t", "s", "b"} and set(state["s"]) == {"W", "b"}
    assert state["s"]["W"].shape == (4, 3)
    np.testing.assert_allclose(state["s"]["b"], 0.1 * g["b"] ** 2)  # (1 − γ)·g² after one step
    saved = opt.state_dict()
    assert saved["b"]["W"].shape == (4, 3) and saved["t"] == 1
    twin = fastrms.RMSProp({k: v.copy() for k, v in x.items()}, lr=0.1, momentum=0.5)
    twin.load_state_dict(saved)
    for _ in range(2):
        opt.step(g)
        twin.step(g)
    np.testing.assert_array_equal(twin.x["W"], x["W"])
    np.testing.assert_array_equal(twin.x["b"], x["b"])


def test_copies_and_pickles_continue_bit_for_bit(rng):
    xs, gs = _model(rng), _model(rng)
    opt = fastrms.RMSProp(tuple(a.copy() for a in xs), lr=0.05)
    opt.step(gs)
    twin, thawed = copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))
    for o in (opt, twin, thawed):
        o.step(gs)
    assert isinstance(twin.x, tuple)
    np.testing.assert_array_equal(_flat(twin.x), _flat(opt.x))
    np.testing.assert_array_equal(_flat(thawed.x), _flat(opt.x))
    assert not np.shares_memory(twin.x[0], opt.x[0])


def test_a_new_learning_rate_mid_run_reaches_the_step(rng):
    """opt.lr = ... between steps over several arrays, as over their concatenation: the step
    bound to the stepper (one closure over the kernel) is rebuilt with the new setup."""
    xs, gs = _model(rng), _model(rng)
    many = fastrms.RMSProp([a.copy() for a in xs], lr=0.05, momentum=0.5)
    flat = fastrms.RMSProp(_flat(xs), lr=0.05, momentum=0.5)
    for k in range(4):
        if k == 2:
            many.lr = flat.lr = 0.5
        many.step(gs)
        flat.step(_flat(gs))
    assert many.lr == 0.5 and many.t == 4
    np.testing.assert_array_equal(_flat(many.x), flat.x)


def test_unusual_gradients_take_the_checked_path(rng):
    """Lists, a transposed (non-contiguous) array, float32 for float64 x: converted, same answer."""
    xs, gs = _model(rng), _model(rng)
    gs[3] = gs[3].astype(np.float32).astype(np.float64)  # exact in float32
    a = fastrms.RMSProp([x.copy() for x in xs], lr=0.1)
    b = fastrms.RMSProp([x.copy() for x in xs], lr=0.1)
    a.step(gs)
    odd = [np.asfortranarray(gs[0]), gs[1].tolist(), gs[2], gs[3].astype(np.float32)]
    assert not odd[0].flags.c_contiguous
    b.step(odd)
    np.testing.assert_array_equal(_flat(a.x), _flat(b.x))
    b.step([g.astype(np.float32) for g in gs])  # converted to x's dtype
    assert np.all(np.isfinite(_flat(b.x)))


def test_bad_structures_and_gradients_are_clear_errors(rng):
    xs = _model(rng)
    opt = fastrms.RMSProp([a.copy() for a in xs])
    with pytest.raises(ValueError, match="has 3 arrays, but x has 4"):
        opt.step(_model(rng)[:3])
    with pytest.raises(ValueError, match=r"gradient\[1\].*shape"):
        opt.step([xs[0], np.ones(6), xs[2], xs[3]])
    with pytest.raises(TypeError, match="list or tuple like x"):
        opt.step({"a": xs[0]})
    d = fastrms.RMSProp({"W": xs[0].copy(), "b": xs[1].copy()})
    with pytest.raises(ValueError, match="keys"):
        d.step({"W": xs[0], "c": xs[1]})
    with pytest.raises(ValueError, match="empty"):
        fastrms.RMSProp([])
    with pytest.raises(TypeError, match="share one dtype"):
        fastrms.RMSProp([xs[0].copy(), xs[1].astype(np.float32)])
    with pytest.raises(TypeError, match=r"x\[1\].*NumPy array"):
        fastrms.RMSProp([xs[0].copy(), [1.0, 2.0]])
    w = xs[0].copy()
    with pytest.raises(ValueError, match="overlap"):
        fastrms.RMSProp([w, w[1]])
    with pytest.raises(ValueError, match=r"x\['b'\].*read-only"):
        ro = xs[1].copy()
        ro.flags.writeable = False
        fastrms.RMSProp({"W": xs[0].copy(), "b": ro})
    with pytest.raises(ValueError, match="global_clipnorm"):
        fastrms.RMSProp([a.copy() for a in xs], preset="keras", clipnorm=1.0)
    with pytest.raises(ValueError, match="batched"):
        fastrms.RMSProp([a.copy() for a in xs], batched=True)
    with pytest.raises(ValueError, match=r"state\['s'\]\[1\] has 2 elements"):
        opt.load_state_dict({"t": 0, "s": [np.zeros(30), np.zeros(2), np.zeros(15), np.zeros(3)]})


@pytest.mark.parametrize("wrong", ["transposed", "flat", "one of two"])
def test_a_gradient_of_the_right_size_but_wrong_shape_is_refused(wrong, rng):
    """As over one array: a (5, 6) gradient for a (6, 5) array, or a flat one, has the right number
    of elements in the wrong layout; it was once stepped with as if it were x's (a silent wrong
    answer). Refused before anything moves, also after usual steps compiled the fast path."""
    xs, gs = _model(rng), _model(rng)
    opt = fastrms.RMSProp([a.copy() for a in xs], lr=0.1)
    opt.step(gs)
    before = _flat(opt.x).copy()
    bad = list(gs)
    if wrong == "transposed":
        bad[0] = np.ascontiguousarray(gs[0].T)
    elif wrong == "flat":
        bad[0] = gs[0].ravel()
    else:  # arrays of one ndim are gathered together: the second of the 2-D pair
        bad[2] = np.ascontiguousarray(gs[2].T)
    j = 2 if wrong == "one of two" else 0
    said = f"gradient[{j}]: the gradient has shape {bad[j].shape}, but x has shape {xs[j].shape}"
    with pytest.raises(ValueError, match=re.escape(said)):
        opt.step(bad)
    np.testing.assert_array_equal(_flat(opt.x), before)
    assert opt.t == 1


def test_chunks_cover_every_element_once_in_equal_chunks():
    sizes = np.array([5, 1, 12, 3, 30])
    pieces, chunks = _structure._chunks(sizes, 8)
    covered = [np.zeros(m, int) for m in sizes]
    for j, start, stop in pieces:
        covered[j][start:stop] += 1
    assert all((c == 1).all() for c in covered)
    work = [sum(p[2] - p[1] for p in pieces[chunks[c]:chunks[c + 1]]) for c in range(len(chunks) - 1)]
    assert work == [8] * 6 + [sizes.sum() - 48]


def test_pack_gives_a_flat_buffer_and_views_of_it(rng):
    W, b = rng.normal(size=(3, 2)), rng.normal(size=2)
    flat, (vW, vb) = fastrms.pack((W, b))
    assert flat.shape == (8,) and vW.shape == (3, 2) and np.shares_memory(flat, vb)
    np.testing.assert_array_equal(flat, _flat([W, b]))
    opt = fastrms.RMSProp(flat, lr=0.1)
    opt.step(np.ones(8))
    np.testing.assert_array_equal(vW.ravel(), flat[:6])  # the views see the steps
    assert not np.shares_memory(flat, W)  # the originals are copied, never touched
    flat32, views = fastrms.pack({"W": W, "n": np.arange(3)}, dtype=np.float32)
    assert flat32.dtype == np.float32 and list(views) == ["W", "n"] and views["n"].tolist() == [0, 1, 2]
    with pytest.raises(TypeError, match="list, tuple or dict"):
        fastrms.pack(W)
    with pytest.raises(TypeError, match="real numbers"):
        fastrms.pack(["a", "b"])
    assert fastrms.pack([np.arange(2), np.ones(2, np.float16)])[0].dtype == np.float64  # as x0's
    assert fastrms.pack([np.ones(2, np.float16)])[0].dtype == np.float64  # (was float32, unlike x0's)
    with pytest.raises(TypeError, match=r"x\[1\] must be a NumPy array of float32 or float64 \(a stepper "
                                        r"over several arrays runs on the CPU\), got list"):
        fastrms.RMSProp([W, [1.0, 2.0]])
    assert fastrms.pack([np.ones(2, np.float32)] * 2)[0].dtype == np.float32
    for asked in (np.float16, np.int32, "complex64"):  # asked for, so never silently float64
        with pytest.raises(ValueError, match="dtype must be float32 or float64"):
            fastrms.pack([W, b], dtype=asked)
