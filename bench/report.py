"""Helpers shared by the benchmarks: timing candidates in turns, and Markdown tables."""

from __future__ import annotations

import time


def serial_and_parallel(fn, **options) -> dict:
    """{False: fn compiled serial, True: fn compiled with parallel=True} (prange is range in the
    first), each a renamed copy: Numba's disk cache keys on the function, not on parallel=."""
    from numba import njit

    from fastrms.kernels._jit import bind

    return {par: njit(parallel=par, cache=True, **options)(bind(fn, f"{fn.__name__}_{'par' if par else 'ser'}"))
            for par in (False, True)}


def in_turns(candidates: dict, rounds: int, inner: int = 1, warm: bool = True, sync=None,
             settle: int = 0, settle_s: float = 0.0) -> dict:
    """{name: [seconds per call, one per round]}: the candidates timed in turn, round by round, so
    that the shared machine's slow and fast moments fall on all of them alike.  Each timing is
    ``inner`` calls; ``warm`` calls each once first (compilation); ``sync`` (a GPU's) brackets it.
    ``settle`` untimed calls precede each timing: in turns, a candidate otherwise finds its arrays
    evicted by the one before it, and in-cache sizes would time the order, not the candidates.
    ``settle_s``: and for at least that many seconds.  A thread pool left idle while another
    candidate ran (torch's, NumPy's, one thread of Python) starts slow for a millisecond or more:
    measured on the 2-core machine, the parallel update after torch's step took 1.2–2x its time
    after 20 untimed calls (~1 ms) and its usual time after 10 ms."""
    sync = sync or (lambda: None)
    if warm:
        for fn in candidates.values():
            fn()
    times: dict = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            for _ in range(settle):
                fn()
            began = time.perf_counter()
            while time.perf_counter() - began < settle_s:
                fn()
            sync()
            t = time.perf_counter()
            for _ in range(inner):
                fn()
            sync()
            times[name].append((time.perf_counter() - t) / inner)
    return times


def table(header: str, align: str, rows) -> list[str]:
    """A Markdown table: header cells split on '|', align one 'l' or 'r' per column."""
    sep = "|" + "|".join("---" if a == "l" else "---:" for a in align) + "|"
    return [f"| {header} |", sep] + [f"| {' | '.join(row)} |" for row in rows]


def ratio(r: dict, key: str, base: str, digits: int = 1) -> str:
    """r[key] / r[base] as 'N.Nx', or '-' when the run has no r[key] (an optional competitor)."""
    return f"{r[key] / r[base]:.{digits}f}x" if key in r else "-"
