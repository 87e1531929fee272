"""Matplotlib figures of a run (Agg backend, PNG files): samples over the data with the
critic's contours (2-D data), a sample grid (digits), and loss/metric curves."""
import os
from typing import Any, Dict, List, Sequence

import torch
from torch import nn


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@torch.no_grad()
def plot_toy(path: str, real: torch.Tensor, fake: torch.Tensor, critic: nn.Module, title: str = "",
             resolution: int = 200) -> None:
    """Scatter of real (N, 2) and generated (M, 2) samples over filled contours of the
    critic's output f(x) on a grid covering both."""
    plt = _pyplot()
    real, fake = real.detach().float().cpu(), fake.detach().float().cpu()
    both = torch.cat([real, fake[torch.isfinite(fake).all(1)]])
    lo = torch.quantile(both, 0.001, dim=0).minimum(real.min(0).values) - 0.5
    hi = torch.quantile(both, 0.999, dim=0).maximum(real.max(0).values) + 0.5
    xs = torch.linspace(float(lo[0]), float(hi[0]), resolution)
    ys = torch.linspace(float(lo[1]), float(hi[1]), resolution)
    gx, gy = torch.meshgrid(xs, ys, indexing="xy")
    grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
    param = next(critic.parameters())
    values = torch.cat([critic(chunk.to(param.device, param.dtype)).float().cpu().reshape(-1)
                        for chunk in grid.split(8192)]).reshape(resolution, resolution)
    fig, ax = plt.subplots(figsize=(6, 6))
    contour = ax.contourf(gx.numpy(), gy.numpy(), values.numpy(), levels=30, cmap="viridis", alpha=0.8)
    fig.colorbar(contour, ax=ax, fraction=0.046, pad=0.04, label="critic f(x)")
    ax.scatter(real[:, 0], real[:, 1], s=2, c="orange", alpha=0.5, label="data")
    ax.scatter(fake[:, 0], fake[:, 1], s=2, c="white", edgecolors="none", alpha=0.7, label="generated")
    ax.set_xlim(float(lo[0]), float(hi[0]))
    ax.set_ylim(float(lo[1]), float(hi[1]))
    ax.set_aspect("equal")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.05), ncol=2, markerscale=4, frameon=False)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_digits(path: str, images: torch.Tensor, title: str = "", rows: int = 8, cols: int = 8) -> None:
    """A rows × cols grid of (N, 1, 8, 8) images in [-1, 1]."""
    plt = _pyplot()
    images = images.detach().float().cpu()[: rows * cols].clamp(-1, 1)
    fig, axes = plt.subplots(rows, cols, figsize=(cols, rows))
    for ax, image in zip(axes.flat, images):
        ax.imshow(image[0].numpy(), cmap="gray_r", vmin=-1, vmax=1)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_curves(path: str, records: List[Dict[str, Any]],
                keys: Sequence[str] = ("d_loss", "g_loss", "gp", "w_estimate", "w1", "dual_estimate", "modes",
                                       "high_quality")) -> None:
    """One panel per logged quantity against the step."""
    plt = _pyplot()
    keys = [k for k in keys if any(k in r for r in records)]
    steps = [r["step"] for r in records]
    cols = min(4, len(keys))
    rows = (len(keys) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        ax.plot(steps, [r.get(key, float("nan")) for r in records], marker="." if len(steps) < 30 else None)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_run(out: str, data: str, real: torch.Tensor, fake: torch.Tensor, critic: nn.Module,
             records: List[Dict[str, Any]]) -> List[str]:
    """``samples.png`` (toy data: samples over the critic's contours; digits: a grid) and
    ``curves.png`` under `out`; returns their paths."""
    step = records[-1]["step"] if records else 0
    samples = os.path.join(out, "samples.png")
    if data == "digits":
        plot_digits(samples, fake, title=f"generated digits, step {step}")
    else:
        plot_toy(samples, real, fake, critic, title=f"{data}, step {step}")
    curves = os.path.join(out, "curves.png")
    plot_curves(curves, records)
    return [samples, curves]
