"""Matplotlib figures of a run (Agg backend, PNG files): samples over the data with the
critic's contours (2-D data), generated digits beside real ones, and loss/metric curves
(the exact W1 and the critic's dual estimate on one panel; the high-quality share in
percent, as in the summary line)."""
import os
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import nn

LABELS = {"w1": "exact W1", "dual_estimate": "critic's dual estimate E_p f - E_q f"}
REAL_COLOR = "tab:blue"
FAKE_COLOR = "tab:red"
# Panels of curves.png: (title, keys drawn on it, scale of the values).
CURVE_PANELS = (("d_loss", ("d_loss",), 1.0), ("g_loss", ("g_loss",), 1.0), ("gradient penalty", ("gp",), 1.0),
                ("critic's W estimate (batch)", ("w_estimate",), 1.0),
                ("W1 and its dual estimate", ("w1", "dual_estimate"), 1.0),
                ("modes covered", ("modes",), 1.0), ("high-quality samples (%)", ("high_quality",), 100.0),
                ("digit classes covered", ("classes",), 1.0), ("class histogram KL to uniform", ("class_kl",), 1.0),
                ("Frechet distance (classifier features)", ("fd",), 1.0),
                ("classifier confidence", ("confidence",), 1.0))
# The VAE recipes' panels of curves.png (fastgan.train.vae), then the sample metrics above.
VAE_PANELS = (("negative ELBO", ("loss",), 1.0), ("reconstruction -ln p(x|z)", ("recon",), 1.0),
              ("KL(q(z|x) || p(z))", ("kl",), 1.0), ("feature reconstruction L_llike", ("llike",), 1.0),
              ("GAN losses", ("d_loss", "g_loss"), 1.0), ("reconstruction MSE", ("recon_mse",), 1.0),
              ("exact W1", ("w1",), 1.0)) + CURVE_PANELS[5:]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@torch.no_grad()
def plot_toy(path: str, real: torch.Tensor, fake: torch.Tensor, critic: Optional[nn.Module], title: str = "",
             resolution: int = 200) -> None:
    """Scatter of real (N, 2) and generated (M, 2) samples over filled grey contours of
    the critic's output f(x) on a grid covering both (light = high f; no contours when
    `critic` is None)."""
    plt = _pyplot()
    real, fake = real.detach().float().cpu(), fake.detach().float().cpu()
    both = torch.cat([real, fake[torch.isfinite(fake).all(1)]])
    lo = torch.quantile(both, 0.001, dim=0).minimum(real.min(0).values) - 0.5
    hi = torch.quantile(both, 0.999, dim=0).maximum(real.max(0).values) + 0.5
    xs = torch.linspace(float(lo[0]), float(hi[0]), resolution)
    ys = torch.linspace(float(lo[1]), float(hi[1]), resolution)
    gx, gy = torch.meshgrid(xs, ys, indexing="xy")
    grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
    fig, ax = plt.subplots(figsize=(6.4, 6))
    if critic is not None:
        param = next(critic.parameters())
        values = torch.cat([critic(chunk.to(param.device, param.dtype)).float().cpu().reshape(-1)
                            for chunk in grid.split(8192)]).reshape(resolution, resolution)
        contour = ax.contourf(gx.numpy(), gy.numpy(), values.numpy(), levels=30, cmap="Greys_r", alpha=0.55)
        fig.colorbar(contour, ax=ax, fraction=0.046, pad=0.04, label="critic f(x)")
    ax.scatter(real[:, 0], real[:, 1], s=3, c=REAL_COLOR, edgecolors="none", alpha=0.5, label="data")
    ax.scatter(fake[:, 0], fake[:, 1], s=3, c=FAKE_COLOR, edgecolors="none", alpha=0.6, label="generated")
    ax.set_xlim(float(lo[0]), float(hi[0]))
    ax.set_ylim(float(lo[1]), float(hi[1]))
    ax.set_aspect("equal")
    legend = ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.06), ncol=2, markerscale=5, frameon=False)
    for handle in legend.legend_handles:
        handle.set_alpha(1.0)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_digits(path: str, images: torch.Tensor, real: torch.Tensor, title: str = "", rows: int = 8,
                cols: int = 8) -> None:
    """A row of `cols` real digits above a rows × cols grid of generated ones; both are
    (N, 1, 8, 8) images in [-1, 1]."""
    plt = _pyplot()
    images = images.detach().float().cpu()[: rows * cols].clamp(-1, 1)
    real = real.detach().float().cpu()[:cols].clamp(-1, 1)
    fig, axes = plt.subplots(rows + 2, cols, figsize=(cols, rows + 1.6),
                             gridspec_kw={"height_ratios": [1, 0.35] + [1] * rows})
    for ax, image in zip(axes[0], real):
        ax.imshow(image[0].numpy(), cmap="gray_r", vmin=-1, vmax=1)
    for ax, image in zip(axes[2:].flat, images):
        ax.imshow(image[0].numpy(), cmap="gray_r", vmin=-1, vmax=1)
    for ax in axes.flat:
        ax.axis("off")
    axes[0, 0].set_title("real", loc="left", fontsize=10)
    axes[2, 0].set_title("generated", loc="left", fontsize=10)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_curves(path: str, records: List[Dict[str, Any]], title: str = "",
                panels: Sequence = CURVE_PANELS) -> None:
    """One panel per entry of `panels` (title, keys, scale) that `records` hold, against the step."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    panels = [p for p in panels if any(k in r for r in records for k in p[1])]
    steps = [r["step"] for r in records]
    cols = min(4, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.8 * rows + 0.4), squeeze=False)
    for ax, (name, keys, scale) in zip(axes.flat, panels):
        for key in keys:
            ax.plot(steps, [scale * r.get(key, float("nan")) for r in records], label=LABELS.get(key, key),
                    marker="." if len(steps) < 30 else None)
        if len(keys) > 1:
            ax.legend(fontsize=8)
        if keys == ("modes",):
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_run(out: str, recipe: str, data: str, real: torch.Tensor, fake: torch.Tensor, critic: nn.Module,
             records: List[Dict[str, Any]]) -> List[str]:
    """``samples.png`` (toy data: samples over the critic's contours; digits: real and
    generated digits) and ``curves.png`` under `out`, titled with the recipe, data and
    last step; returns their paths."""
    step = records[-1]["step"] if records else 0
    title = f"{recipe} on {data}, step {step}"
    samples = os.path.join(out, "samples.png")
    if data == "digits":
        plot_digits(samples, fake, real, title=title)
    else:
        plot_toy(samples, real, fake, critic, title=title)
    curves = os.path.join(out, "curves.png")
    plot_curves(curves, records, title=title)
    return [samples, curves]


def plot_reconstructions(path: str, inputs: torch.Tensor, recons: torch.Tensor, title: str = "",
                         pairs: int = 32, cols: int = 8) -> None:
    """Digits (N, 1, 8, 8) in [-1, 1]: rows of `cols` inputs, each above its reconstruction;
    2-D points (N, 2): inputs and reconstructions joined by a segment each."""
    plt = _pyplot()
    inputs, recons = inputs.detach().float().cpu()[:pairs], recons.detach().float().cpu()[:pairs]
    if inputs.dim() == 2:
        fig, ax = plt.subplots(figsize=(6, 6))
        for a, b in zip(inputs, recons):
            ax.plot([a[0], b[0]], [a[1], b[1]], color="0.6", lw=0.6)
        ax.scatter(inputs[:, 0], inputs[:, 1], s=8, c=REAL_COLOR, label="input")
        ax.scatter(recons[:, 0], recons[:, 1], s=8, c=FAKE_COLOR, label="reconstruction")
        ax.set_aspect("equal")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.06), ncol=2, frameon=False)
    else:
        rows = (len(inputs) + cols - 1) // cols
        fig, axes = plt.subplots(2 * rows, cols, figsize=(cols, 2 * rows + 0.6), squeeze=False)
        for i, (a, b) in enumerate(zip(inputs, recons)):
            r, c = divmod(i, cols)
            axes[2 * r, c].imshow(a[0].clamp(-1, 1).numpy(), cmap="gray_r", vmin=-1, vmax=1)
            axes[2 * r + 1, c].imshow(b[0].clamp(-1, 1).numpy(), cmap="gray_r", vmin=-1, vmax=1)
        for ax in axes.flat:
            ax.axis("off")
        axes[0, 0].set_title("input / reconstruction", loc="left", fontsize=9)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_vae_run(out: str, recipe: str, data: str, real: torch.Tensor, samples: torch.Tensor, inputs: torch.Tensor,
                 recons: torch.Tensor, records: List[Dict[str, Any]]) -> List[str]:
    """A VAE run's ``samples.png`` (prior samples Dec(z), z ~ N(0, I), beside real data),
    ``reconstructions.png`` (inputs next to Dec(μ(x))) and ``curves.png`` under `out`;
    returns their paths."""
    step = records[-1]["step"] if records else 0
    title = f"{recipe} on {data}, step {step}"
    paths = [os.path.join(out, name) for name in ("samples.png", "reconstructions.png", "curves.png")]
    if data == "digits":
        plot_digits(paths[0], samples, real, title=title + " (prior samples)")
    else:
        plot_toy(paths[0], real, samples, None, title=title + " (prior samples)")
    plot_reconstructions(paths[1], inputs, recons, title=title)
    plot_curves(paths[2], records, title=title, panels=VAE_PANELS)
    return paths
