"""fastrms on Dask: data too large for one machine, and batches of problems across a cluster.

Two ways in, both through ``minimize`` (install with ``pip install 'fastrms[dask]'``):

* **Data-parallel.** ``args`` holds dask arrays chunked along rows.  F and dF are written for
  NumPy blocks, as for in-memory data; each step sends x with one task per block to where the
  block lives and brings back one x-sized result per block, which the client sums as a tree in
  block order, so a run is reproducible bit for bit (a worker lost mid-run is recomputed, not
  skipped).  x stays on the client.  ``options['reduction']`` says how blocks combine:
  ``'mean'`` (F and dF are means over rows, as d2l's squared loss: blocks are weighted by
  their rows) or ``'sum'``.  An F returning (f, g) (``jac=True``) gives both in one task a block.
* **Batched problems.** A dask array x0 of shape (B, ...) with ``batched=True``: each chunk of
  problems is solved by the batched solver where it runs, and the per-problem results are
  gathered into one result.

With a ``dask.distributed.Client`` active, its cluster runs the work; without one, dask's own
default scheduler runs it in this process.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import OptimizeResult

from . import _checks as ck
from .drivers.problem import as_pair, as_scalar


def is_dask(a) -> bool:
    """Whether a is a dask array (cheap: dask is not imported for anything else)."""
    return type(a).__module__.split(".")[0] == "dask" and hasattr(a, "chunks") and hasattr(a, "dask")


def any_dask(*values) -> bool:
    for v in values:  # (every call of minimize asks: a plain loop, NumPy arrays skipped, ~0.3 µs)
        if type(v) is not np.ndarray and is_dask(v):
            return True
    return False


def _client():
    """The active dask.distributed Client, or None (dask's default scheduler then)."""
    try:
        from distributed import get_client
    except ImportError:
        return None
    try:
        return get_client()
    except ValueError:  # no client
        return None


def _need_dask():
    try:
        import dask  # noqa: F401
        import dask.array  # noqa: F401
    except ImportError:
        raise ImportError("dask arrays need dask: pip install 'fastrms[dask]'") from None


# -- the block functions (run on the workers) -------------------------------------------------

class _Task:
    """fn(x, *block) for one block: a picklable callable that knows which arguments are data.
    ``pair``: fn returns (f, g) (jac=True), sent back as one vector [f, g...], so that the
    blocks' results add up as one array does."""

    def __init__(self, fn, data_index, weight_by_rows, pair: bool = False):
        self.fn, self.data_index, self.weight_by_rows = fn, tuple(data_index), weight_by_rows
        self.pair = pair

    def __call__(self, x, rows, *block):
        if rows is not None:
            block = tuple(b[rows] if i in self.data_index else b for i, b in enumerate(block))
            n = len(rows)
        else:
            n = len(block[self.data_index[0]])
        out = self.fn(x, *block)
        if self.pair:
            out = _packed_pair(out)
        out = np.asarray(out, dtype=np.float64)
        return out * n if self.weight_by_rows else out


def _packed_pair(out) -> np.ndarray:
    """(f, g) as one vector [f, g.ravel()...], f and the pair checked as in memory."""
    f, g = as_pair(out)
    return np.concatenate(([as_scalar(f)], np.asarray(g, dtype=np.float64).reshape(-1)))


def _gradient_part(fg, x) -> np.ndarray:
    """g from a reduced [f, g...], in x's shape and dtype (of another size it stays flat, and the
    driver's shape check names it)."""
    g = fg[1:]
    if g.size == np.size(x):
        g = g.reshape(np.shape(x))
    return g.astype(x.dtype, copy=False)


class DaskData:
    """The user's F and dF over row-chunked dask arrays in ``args``: evaluates them block by block
    where the blocks live and reduces the results, as F(x) and dF(x) on all the rows would."""

    def __init__(self, fun, jac, args: tuple, reduction, batch_size=None, shuffle=True, seed=None,
                 drop_last=False):
        _need_dask()
        if reduction not in ("mean", "sum"):
            raise ValueError("args hold dask arrays: say how the blocks' results combine with "
                             "options={'reduction': 'mean'} (F and dF are means over rows, weighted by "
                             "each block's rows) or 'sum' (sums over rows)")
        self.combined = jac is True  # fun returns (f, g): one task a block gives both
        self.mean = reduction == "mean"
        data = [i for i, a in enumerate(args) if is_dask(a)]
        arrays = [args[i] for i in data]
        N = arrays[0].shape[0]
        for i, a in zip(data, arrays, strict=True):
            if a.shape[0] != N:
                raise ValueError(f"the dask arrays in args have different row counts: argument {data[0]} has "
                                 f"{N} rows, argument {i} has {a.shape[0]}")
            if a.chunks[0] != arrays[0].chunks[0]:
                raise ValueError(f"the dask arrays in args are chunked differently along rows: argument "
                                 f"{data[0]} has row chunks {arrays[0].chunks[0]}, argument {i} has "
                                 f"{a.chunks[0]}; rechunk them alike (a.rechunk({{0: ...}}))")
        for i, a in enumerate(args):
            if isinstance(a, np.ndarray) and a.ndim >= 1 and len(a) == N:
                raise ValueError(f"argument {i} is a NumPy array with the dask arrays' {N} rows: make it a "
                                 f"dask array with the same row chunks ({arrays[0].chunks[0][:3]}...), or "
                                 "it would be passed whole to every block")
        if any(c == 0 for c in arrays[0].chunks[0]) and self.mean:
            raise ValueError("a block has no rows: a mean over it is undefined; drop empty chunks "
                             "(rechunk) or use reduction='sum'")
        self.N, self.data = N, data
        self.row_chunks = arrays[0].chunks[0]
        self.starts = np.concatenate([[0], np.cumsum(self.row_chunks)])
        self.client = _client()
        # one chunk along every axis but the rows: each block is whole rows
        arrays = [a.rechunk({k: -1 for k in range(1, a.ndim)}) if a.ndim > 1 else a for a in arrays]
        if self.client is not None:
            arrays = self.client.persist(arrays)
        else:
            import dask

            arrays = dask.persist(*arrays)
        per_arg = [list(a.to_delayed().ravel()) for a in arrays]
        if self.client is not None:  # futures of the blocks, in block order (they are persisted)
            per_arg = [self.client.compute(blocks) for blocks in per_arg]
        self.blocks = []
        for b in range(len(self.row_chunks)):
            it = iter(per_arg)
            self.blocks.append(tuple(next(it)[b] if i in data else a for i, a in enumerate(args)))
        data_index = tuple(data)
        if self.combined:
            self.tasks = {"fg": _Task(fun, data_index, self.mean, pair=True)}
        else:
            self.tasks = {"f": _Task(fun, data_index, self.mean), "g": _Task(jac, data_index, self.mean)}
        self.batches = None
        if batch_size is not None:
            from .drivers.batches import Batches

            self.batches = Batches((np.empty(N, dtype=np.int8),), batch_size, shuffle, seed, drop_last)

    # F and dF as the drivers call them: F(x) on all rows, dF(x, k) on step k's mini-batch (or all);
    # with jac=True, FG(x) gives both from one round of tasks
    def F(self, x):
        if self.combined:
            return float(self._reduce("fg", x, None)[0])
        return float(self._reduce("f", x, None))

    def dF(self, x, k=None):
        rows = None
        if self.batches is not None and k is not None:
            epoch, j = divmod(k, self.batches.per_epoch)
            rows = self.batches.order(epoch)[j * self.batches.size:(j + 1) * self.batches.size]
        if self.combined:
            return _gradient_part(self._reduce("fg", x, rows), x)
        return self._reduce("g", x, rows).astype(x.dtype, copy=False)

    def FG(self, x):
        fg = self._reduce("fg", x, None)
        return float(fg[0]), _gradient_part(fg, x)

    def _reduce(self, which, x, rows):
        x = np.array(x, copy=True)  # the workers get their own copy of this step's x
        task = self.tasks[which]
        parts = []
        for b, block in enumerate(self.blocks):
            sel = None
            if rows is not None:
                lo, hi = self.starts[b], self.starts[b + 1]
                sel = rows[(rows >= lo) & (rows < hi)] - lo
                if sel.size == 0:
                    continue
            parts.append((task, sel, block))
        total = len(rows) if rows is not None else self.N
        if self.client is not None:
            # x travels inside each block's task (it is small), so a lost task can be recomputed
            futures = [self.client.submit(t, x, sel, *block, pure=False) for t, sel, block in parts]
            values = self.client.gather(futures)
        else:
            import dask

            values = dask.compute(*[dask.delayed(t)(x, sel, *block) for t, sel, block in parts])
        # the blocks' results (x-sized) are summed here as a tree in block order: the same bits
        # whichever worker computed which block, and in what order they finished
        while len(values) > 1:
            values = [values[i] + values[i + 1] if i + 1 < len(values) else values[i]
                      for i in range(0, len(values), 2)]
        return values[0] / total if self.mean else values[0]


def minimize_on_blocks(minimize, fun, jac, x0, args, method, options, callback):
    """minimize with dask arrays in args: the same drivers, with F and dF evaluated on the blocks."""
    options = dict(options or {})
    reduction = options.pop("reduction", None)
    batch = {k: options.pop(k) for k in ("batch_size", "shuffle", "seed", "drop_last") if k in options}
    if options.get("driver") == "compiled":
        raise ValueError("driver='compiled' runs on one machine; with dask arrays the Python loop drives "
                         "the workers (F and dF still run compiled there when they are jitted)")
    data = DaskData(fun, jac, args, reduction, batch.get("batch_size"), batch.get("shuffle", True),
                    batch.get("seed"), batch.get("drop_last", False))
    if data.batches is None and data.combined:
        res = minimize(data.FG, x0, jac=True, method=method, callback=callback, options=options)
    elif data.batches is None:
        res = minimize(data.F, data.dF, x0, method=method, callback=callback, options=options)
    else:
        # the drivers' mini-batch mode, with the step index standing in for the batch
        if "epochs" in options:
            if "maxiter" in options:
                raise ValueError("give epochs or maxiter, not both")
            options["maxiter"] = ck.count("epochs", options.pop("epochs"), lo=1) * data.batches.per_epoch
            end_epochs = True
        else:
            end_epochs = False
        if "gtol" not in options:
            options["gtol"] = 0.0
        step = iter(range(2 ** 62))
        res = minimize(data.F, lambda x: data.dF(x, next(step)), x0, method=method, callback=callback,
                       options=options)
        if end_epochs and res.status == 1:
            res.status, res.success, res.message = 0, True, "Completed the requested epochs."
    return res


def minimize_batched(minimize, fun, jac, x0, args, method, options):
    """Batched problems as a dask array x0 (B, ...) chunked along problems: each chunk is solved by
    the batched solver where it runs; the per-problem results come back as one result."""
    _need_dask()
    import dask

    options = dict(options)
    chunks = x0.chunks[0]
    starts = np.concatenate([[0], np.cumsum(chunks)])
    B = x0.shape[0]
    x_blocks = x0.rechunk({k: -1 for k in range(1, x0.ndim)}).to_delayed().ravel()
    per_problem = {k: v for k, v in options.items()
                   if isinstance(v, np.ndarray) and v.ndim == 1 and len(v) == B}
    tasks = []
    for c, xb in enumerate(x_blocks):
        lo, hi = starts[c], starts[c + 1]
        opts = {**options, **{k: v[lo:hi] for k, v in per_problem.items()}}
        chunk_args = tuple(a[lo:hi] if (is_dask(a) or isinstance(a, np.ndarray)) and a.ndim >= 1 and
                           a.shape[0] == B else a for a in args)
        tasks.append(dask.delayed(_solve_chunk)(minimize, fun, jac, xb, chunk_args, method, opts))
    client = _client()
    if client is not None:
        futures = client.compute(tasks)
        if options.get("disp"):
            from distributed import progress

            progress(futures)
        parts = client.gather(futures)
    else:
        if options.get("disp"):
            from dask.diagnostics import ProgressBar

            with ProgressBar():
                parts = dask.compute(*tasks)
        else:
            parts = dask.compute(*tasks)
    res = OptimizeResult()
    for key in ("x", "jac", "fun", "nit", "status", "success", "message"):
        res[key] = np.concatenate([p[key] for p in parts])
    res.nfev = sum(p["nfev"] for p in parts)
    res.njev = sum(p["njev"] for p in parts)
    if "history" in parts[0]:
        longest = max((p["history"] for p in parts), key=lambda h: len(h["step"]))  # its steps (epochs)
        res.history = {**longest, "loss": _joined([p["history"]["loss"] for p in parts]),
                       "gnorm": _joined([p["history"]["gnorm"] for p in parts])}
    if "trajectory" in parts[0]:
        res.trajectory = _joined([p["trajectory"] for p in parts])
    return res


def _joined(per_chunk: list) -> np.ndarray:
    """The chunks' (steps, problems, ...) records as one batch's: each chunk records the same steps
    until its last problem stops, so a shorter chunk's problems are NaN after theirs, as stopped
    problems are within a chunk."""
    R = max(len(a) for a in per_chunk)
    padded = [np.concatenate([a, np.full((R - len(a), *a.shape[1:]), np.nan)]) for a in per_chunk]
    return np.concatenate(padded, axis=1)


def _solve_chunk(minimize, fun, jac, x0, args, method, options):
    args = tuple(np.asarray(a) if is_dask(a) else a for a in args)
    return dict(minimize(fun, np.asarray(x0), jac=jac, args=args, method=method, options=options))
