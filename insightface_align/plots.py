"""Plots: training curves from the JSON-lines log and CED curves."""
from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .fileio import atomic_path  # noqa: E402


def _save(fig, path):
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)


def plot_training_curves(log_path, png_path) -> None:
    """Loss per step (left) and validation NME per step and set (right)."""
    steps, loss, val = [], [], {}
    with open(log_path) as f:
        for line in f:
            entry = json.loads(line)
            if "loss" in entry:
                steps.append(entry["step"])
                loss.append(entry["loss"])
            for name, m in entry.get("val", {}).items():
                val.setdefault(name, []).append((entry["step"], 100 * m["nme"]))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    axes[0].plot(steps, loss, lw=1.2)
    axes[0].set(xlabel="step", ylabel="training loss (sum over stacks)", title="loss")
    axes[0].set_yscale("log")
    for name, pts in val.items():
        axes[1].plot(*zip(*pts), marker="o", label=name)
    axes[1].set(xlabel="step", ylabel="NME (%)", title="validation NME")
    if val:
        axes[1].legend()
    for ax in axes:
        ax.grid(alpha=0.3)
    _save(fig, png_path)


def plot_ced(curves: dict, threshold: float, png_path, title: str = "CED") -> None:
    """curves: name -> (x, fraction) from metrics.ced."""
    fig, ax = plt.subplots(figsize=(5, 4))
    for name, (x, y) in curves.items():
        ax.plot(100 * x, 100 * y, label=name)
    ax.set(xlim=(0, 100 * threshold), ylim=(0, 100), xlabel="NME (%)", ylabel="images (%)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    _save(fig, png_path)
