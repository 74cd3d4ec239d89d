"""Mini-batches of the data arrays in ``args``."""

from __future__ import annotations

import numpy as np


class Batches:
    """Mini-batches of the data arrays in ``args``, reshuffled every epoch.

    The data arrays are the ndarray arguments whose first axis has the length N
    of the first such argument; anything else (a matrix of another size,
    scalars) is passed whole.  Step k uses batch k mod (batches per epoch) of
    epoch k // (batches per epoch); shuffling comes from ``seed``.
    """

    def __init__(self, args: tuple, batch_size: int, shuffle: bool, seed, drop_last: bool,
                 problems: int | None = None):
        # B batched problems: each data array has a leading axis of length B, rows are axis 1,
        # and every problem takes the same rows at each step (as B separate runs with one seed)
        self.axis = 0 if problems is None else 1
        arrays = [i for i, a in enumerate(args) if isinstance(a, np.ndarray) and a.ndim > self.axis
                  and (problems is None or a.shape[0] == problems)]
        if not arrays:
            raise ValueError("batch_size needs data: pass the data arrays in args (split along axis 0)"
                             if problems is None else
                             f"batch_size with {problems} batched problems needs data arrays in args of "
                             f"shape ({problems}, rows, ...): each problem's own data, split along axis 1")
        self.N = args[arrays[0]].shape[self.axis]
        self.data = [i for i in arrays if args[i].shape[self.axis] == self.N]
        if batch_size > self.N:
            raise ValueError(f"batch_size {batch_size} is larger than the data ({self.N} rows)")
        self.args, self.size, self.shuffle = args, batch_size, shuffle
        self.per_epoch = self.N // batch_size if drop_last else -(-self.N // batch_size)
        self.rng = np.random.default_rng(seed)
        self._epoch, self._order = -1, np.arange(self.N)

    def order(self, epoch: int) -> np.ndarray:
        """The row order of an epoch; epochs are drawn in sequence from the seeded generator, so
        every driver sees the same batches (only the current epoch's order is kept)."""
        while self._epoch < epoch:
            self._epoch += 1
            if self.shuffle:
                self._order = self.rng.permutation(self.N)
        return self._order

    def orders(self, steps: int) -> np.ndarray:
        """The row orders of every epoch that steps 0 … steps touch (for the compiled loop)."""
        return np.stack([self.order(e).copy() for e in range(steps // self.per_epoch + 1)])

    @property
    def mask(self) -> tuple:
        """Which arguments are data (split into batches)."""
        return tuple(i in self.data for i in range(len(self.args)))

    def __call__(self, k: int) -> tuple:
        epoch, j = divmod(k, self.per_epoch)
        rows = self.order(epoch)[j * self.size:(j + 1) * self.size]
        if self.axis:  # (a[:, rows] is not C-contiguous: the compiled loop's batches are, and dF must
            # see the same layout in both loops to round the same)
            return tuple(np.take(a, rows, axis=1) if i in self.data else a for i, a in enumerate(self.args))
        return tuple(a[rows] if i in self.data else a for i, a in enumerate(self.args))
