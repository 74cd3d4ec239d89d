"""Command line: ``fastrms demo`` (also ``python -m fastrms demo``) reproduces the seeds' experiments."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


class Progress:
    """A one-line progress bar on a terminal; silent when output is not a terminal or --quiet."""

    def __init__(self, label: str, total: int, enabled: bool):
        self.label, self.total, self.done, self.enabled = label, total, 0, enabled
        self._draw()

    def __call__(self) -> None:
        self.done += 1
        self._draw()
        if self.done == self.total and self.enabled:
            sys.stderr.write("\n")

    def _draw(self) -> None:
        if self.enabled:
            bar = "#" * int(30 * self.done / self.total)
            sys.stderr.write(f"\r{self.label:<24} [{bar:.<30}] {self.done}/{self.total}")
            sys.stderr.flush()


def _table(rows) -> str:
    head = "| experiment | quantity | fastrms | seeds |\n|---|---|---:|---:|\n"
    return head + "\n".join(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows)


def demo(args) -> int:
    import numpy as np

    from . import experiments as ex
    from . import plots

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    show_progress = not args.quiet and sys.stderr.isatty()
    draw = plots.available()
    figures, rows = [], []

    # 4 first: the AX=I comparison is the main job, timed with compilation included.
    ax_runs = ex.ax_identity()
    seeds_ax = {"gd": "0.5469", "rmsprop": "0.3239", "rmsprop+momentum": "0.000623"}
    print("AX = I (the notebook seed's 5x5 matrix), X0 = 0, 300 steps, lr = 1e-3")
    print(f"| {'method':<18} | {'final loss':>12} | {'seconds':>8} |\n|{'-' * 20}|{'-' * 14}|{'-' * 10}|")
    for name, r in ax_runs.items():
        print(f"| {name:<18} | {r['final']:>12.6g} | {r['seconds']:>8.3f} |")
        rows.append(("4. AX=I, 300 steps", f"final loss, {name}", f"{r['final']:.6g}", seeds_ax[name]))
    print("(seconds include Numba compilation on a first run; later runs load it from the disk cache)\n")

    weights = ex.decay_weights()
    for g, w in weights.items():
        rows.append(("1. decay weights", f"Σ (1−γ)γᵗ, t < 40, γ = {g}", f"{w.sum():.4f}", "—"))
    trace = ex.trace_2d()
    ada = ex.trace_2d("adagrad")
    x1, x2 = trace["x"]
    rows.append(("2. 2-D trace, rmsprop", "x1, x2 after 20 steps", f"{x1:.6f}, {abs(x2):.6f}",
                 "-0.010599, 0.000000"))
    rows.append(("2. 2-D trace, adagrad", "x1, x2 after 20 steps",
                 f"{ada['x'][0]:.6f}, {ada['x'][1]:.6f}", "(slower: η/√Σg² shrinks)"))
    air = ex.airfoil_runs()
    for name, r in air.items():
        rows.append(("3. airfoil, batch 10, 2 epochs", f"final loss, {name}", f"{r['final']:.4f}",
                     "0.243–0.248"))
    extreme = ex.extreme_gamma()
    rows.append(("5a. γ = 1", "outcome", f"diverged at step {extreme[1.0]['nit']}: success="
                 f"{extreme[1.0]['success']}", "diverges"))
    rows.append(("5a. γ = 0", "final loss after 200 steps", f"{extreme[0.0]['loss'][-1]:.4f}",
                 "sign descent, stalls"))
    rot = ex.rotated()
    rows.append(("5b. rotated quadratic", "f after 20 steps, aligned / rotated",
                 f"{rot['f_aligned']:.2e} / {rot['f_rotated']:.3f}", "slower when rotated"))
    grid = (5, 5)
    # the 25 runs are one batched call
    sens = ex.sensitivity(progress=Progress(f"5c. sensitivity sweep ({grid[0]} × {grid[1]}, one batched "
                                            "call)", 1, show_progress))
    i, j = np.unravel_index(np.argmin(sens["loss"]), sens["loss"].shape)
    rows.append(("5c. η × γ sweep, airfoil", "best final loss (η, γ)",
                 f"{sens['loss'][i, j]:.4f} ({sens['lrs'][j]:g}, {sens['gammas'][i]:g})", "—"))
    try:
        dig = ex.digits(progress=Progress("5d. digits", 3, show_progress))
    except ImportError:
        dig = None
        print("5d. digits skipped: it needs scikit-learn (pip install 'fastrms[digits]')")
    if dig is not None:
        for lr, r in dig.items():
            rows.append(("5d. digits, softmax regression", f"η = {lr:g}: loss, test accuracy",
                         f"{r['final']:.3f}, {r['accuracy']:.3f}", "—"))

    if draw:
        figures.append(plots.decay_weights(weights, out))
        figures.append(plots.traces([("rmsprop (lr 0.4, γ 0.9)", ex.f_2d, trace["trajectory"]),
                                     ("adagrad (lr 0.4)", ex.f_2d, ada["trajectory"])],
                                    out, "2-trace-2d.png"))
        figures.append(plots.curves({k: (r["epoch"], r["loss"]) for k, r in air.items()}, out,
                                    "3-airfoil.png", "epoch", title="airfoil, RMSProp"))
        figures.append(plots.curves({k: (np.arange(1, len(r["loss"]) + 1), r["loss"])
                                     for k, r in ax_runs.items()}, out, "4-ax-identity.png", "step",
                                    logy=True, title="AX = I"))
        figures.append(plots.curves({"γ = 1 (diverges)": (np.arange(len(extreme[1.0]["loss"])),
                                                         extreme[1.0]["loss"]),
                                     "γ = 0": (np.arange(len(extreme[0.0]["loss"])), extreme[0.0]["loss"])},
                                    out, "5a-extreme-gamma.png", "step", logy=True))
        figures.append(plots.traces([("axis-aligned", ex.f_2d, rot["aligned"]["trajectory"]),
                                     ("rotated 45°", ex.f_rotated, rot["rotated"]["trajectory"])],
                                    out, "5b-rotated.png"))
        figures.append(plots.heatmap(sens, out))
        if dig is not None:
            figures.append(plots.curves({f"η = {lr:g}": (r["epoch"], r["loss"]) for lr, r in dig.items()},
                                        out, "5d-digits.png", "epoch", logy=True, title="digits"))

    table = _table(rows)
    print(table)
    summary = (f"# fastrms demo, {time.strftime('%Y-%m-%d %H:%M')}\n\n{table}\n\n"
               + "".join(f"![{p.stem}]({p.name})\n" for p in figures))
    (out / "summary.md").write_text(summary, encoding="utf-8")
    if draw:
        print(f"\nfigures and summary.md written to {out}/")
    else:
        print(f"\nsummary.md written to {out}/; for the figures: pip install 'fastrms[plot]'")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fastrms", description=__doc__)
    parser.add_argument("--version", action="version", version=_version(),
                        help="fastrms's version and those of its compiler stack (for bug reports)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="reproduce the seeds' experiments (tables, and figures with matplotlib)")
    p.add_argument("--out", default="fastrms-demo",
                   help="folder for figures and summary.md (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=demo)
    b = sub.add_parser("bench", add_help=False,
                       help="the benchmark harness (python -m bench; it runs from a source checkout)")
    b.set_defaults(func=bench)
    args, rest = parser.parse_known_args(argv)
    if args.command == "bench":
        return bench(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return args.func(args)


def _version() -> str:
    import platform

    import numba
    import numpy
    import scipy

    from . import __version__

    return (f"fastrms {__version__} (numba {numba.__version__}, numpy {numpy.__version__}, "
            f"scipy {scipy.__version__}, Python {platform.python_version()})")


def bench(argv) -> int:
    """``fastrms bench ...`` runs ``python -m bench ...`` where the harness is importable (a source
    checkout), and says where to find it otherwise: it is not part of the installed package (it
    compares against torch, CuPy, jax and a STREAM kernel, and writes results next to itself)."""
    checkout = Path.cwd()
    if (checkout / "bench" / "run.py").is_file() and str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))  # a console script's path starts at its own folder
    try:
        from bench.run import main as bench_main
    except ImportError:
        sys.stderr.write("fastrms bench: the benchmark harness is the bench/ folder of fastrms's source "
                         "checkout, not part of the installed package.\nFrom a checkout: "
                         "pip install -e '.[test]' && python -m bench --help\n")
        return 2
    bench_main(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
