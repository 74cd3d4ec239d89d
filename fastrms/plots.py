"""Figures of the seeds' experiments (matplotlib, the optional ``fastrms[plot]`` extra)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: Path, name: str) -> Path:
    path = out / name
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def decay_weights(weights: dict, out: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for gamma, w in weights.items():
        ax.plot(np.arange(len(w)), w, label=f"gamma = {gamma:.2f}")
    ax.set_xlabel("time")
    ax.set_ylabel("(1 − γ) γᵗ")
    ax.legend()
    return _save(fig, out, "1-decay-weights.png")


def _contour(ax, f, lim=(-5.5, 1.0, -3.0, 1.0)):
    x1, x2 = np.meshgrid(np.linspace(lim[0], lim[1], 200), np.linspace(lim[2], lim[3], 200))
    ax.contour(x1, x2, f(np.stack([x1, x2])), colors="#1f77b4", levels=20, linewidths=0.6)


def traces(panels: list, out: Path, name: str) -> Path:
    """panels: (title, f, trajectory) triples, each drawn over f's contours."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.5))
    for ax, (title, f, traj) in zip(np.atleast_1d(axes), panels, strict=True):
        _contour(ax, f)
        ax.plot(traj[:, 0], traj[:, 1], "-o", color="#ff7f0e", markersize=3)
        ax.set_title(title)
        ax.set_xlabel("x1")
        ax.set_ylabel("x2")
    return _save(fig, out, name)


def curves(series: dict, out: Path, name: str, xlabel: str, logy=False, title=None) -> Path:
    """series: label -> (x, y)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for label, (x, y) in series.items():
        y = np.asarray(y, float)
        keep = np.isfinite(y) & (np.abs(y) < 1e200)  # a diverging run: draw up to its last finite loss
        ax.plot(np.asarray(x)[keep], y[keep], label=label)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("loss")
    if title:
        ax.set_title(title)
    ax.legend()
    return _save(fig, out, name)


def heatmap(sens: dict, out: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    im = ax.imshow(sens["loss"], origin="lower", cmap="viridis")
    ax.set_xticks(range(len(sens["lrs"])), [f"{v:g}" for v in sens["lrs"]])
    ax.set_yticks(range(len(sens["gammas"])), [f"{v:g}" for v in sens["gammas"]])
    for (i, j), v in np.ndenumerate(sens["loss"]):
        ax.text(j, i, f"{v:.3f}", ha="center", va="center", color="w", fontsize=7)
    ax.set_xlabel("learning rate η")
    ax.set_ylabel("γ")
    ax.set_title("airfoil: final loss after 2 epochs")
    fig.colorbar(im, ax=ax)
    return _save(fig, out, "5c-sensitivity.png")
