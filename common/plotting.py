"""One look for every figure in the course.

Lessons build figures with these helpers and save them with ``run.savefig(fig, "figNN_what")``.
Every helper draws on an ``ax`` it is given, so a lesson can arrange panels as it likes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import matplotlib
import numpy as np
import torch

FIGSIZE = (6.4, 4.8)  # one panel; wider figures use figure(ncols=...)
DPI = 150  # projector-sharp: a 4.8 x 3.6 in panel is 720 x 540 px

# Made for a lecture hall: text readable from the back row (labels >= 11 pt, legends and ticks >= 10 pt),
# maths as mathtext ("$\\theta_1$", "$T \\to \\infty$"), never ASCII ("theta_1", "T -> inf").
COURSE_STYLE = {
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "savefig.bbox": "tight",
    "figure.constrained_layout.use": True,
    "axes.grid": True,
    "grid.alpha": 0.25,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "figure.titlesize": 13,
    "legend.fontsize": 10,
    "legend.title_fontsize": 10,
    "legend.framealpha": 0.85,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "mathtext.fontset": "dejavusans",
    "axes.formatter.use_mathtext": True,
    "image.cmap": "viridis",
    "axes.prop_cycle": matplotlib.cycler(
        color=["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
    ),
}


# A --quick figure only proves that the code draws: one pass, no layout engine, plain tick labels, few pixels.
# Layout passes and mathtext tick labels were about half of a quick run's CPU time.
QUICK_STYLE = {
    "figure.dpi": 60,
    "savefig.dpi": 60,
    "savefig.bbox": "standard",
    "figure.constrained_layout.use": False,
    "axes.formatter.use_mathtext": False,
}


def use_course_style(quick: bool = False) -> None:
    """Apply the course's matplotlib settings (called by ``start_lesson``); ``quick`` adds ``QUICK_STYLE``."""
    matplotlib.rcParams.update(COURSE_STYLE)
    if quick:
        matplotlib.rcParams.update(QUICK_STYLE)


def legend_outside(ax, **kwargs):
    """A legend to the right of the axes, off the data (the course default for crowded panels)."""
    return ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, **kwargs)


def colorbar(ax, mappable, label: str, **kwargs):
    """A labelled colour bar next to ``ax``: wherever colour encodes a number, say which and in what units."""
    return ax.figure.colorbar(mappable, ax=ax, label=label, shrink=kwargs.pop("shrink", 0.85), **kwargs)


def figure(ncols: int = 1, nrows: int = 1, title: str | None = None, panel_size=None, **kwargs):
    """A figure of ``nrows x ncols`` panels of the default size; returns ``(fig, axes)``."""
    import matplotlib.pyplot as plt

    width, height = panel_size or (FIGSIZE[0] * 0.75, FIGSIZE[1] * 0.75)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False, **kwargs)
    if title:
        fig.suptitle(title)
    axes = axes.ravel()
    return fig, (axes[0] if len(axes) == 1 else axes)


# ---------------------------------------------------------------------------------------------
# 2-D landscapes
# ---------------------------------------------------------------------------------------------


def grid_2d(bounds: Sequence[float], n: int = 150) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """``(X, Y, points)`` on ``[x0, x1] x [y0, y1]``; ``points`` is ``(n*n, 2)`` float32."""
    x0, x1, y0, y1 = bounds
    xs, ys = np.linspace(x0, x1, n), np.linspace(y0, y1, n)
    X, Y = np.meshgrid(xs, ys)
    points = torch.tensor(np.stack([X.ravel(), Y.ravel()], axis=1), dtype=torch.float32)
    return X, Y, points


def evaluate_on_grid(fn: Callable, bounds, n: int = 150, device=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Evaluate a batch function ``(B, 2) -> (B,)`` on a grid; returns ``(X, Y, values)``."""
    X, Y, points = grid_2d(bounds, n)
    if device is not None:
        points = points.to(device)
    with torch.no_grad():
        values = fn(points).detach().cpu().numpy().reshape(X.shape)
    return X, Y, values


def energy_contours(ax, energy_fn: Callable, bounds, n: int = 150, levels: int = 25, clip_quantile=0.98,
                    device=None, colorbar=True, label="energy E(x)"):
    """Filled contours of ``E(x)``; values above the ``clip_quantile`` are clipped so wells show."""
    X, Y, E = evaluate_on_grid(energy_fn, bounds, n, device)
    finite = E[np.isfinite(E)]
    top = np.quantile(finite, clip_quantile)
    E = np.clip(np.where(np.isfinite(E), E, top), None, top)
    contour = ax.contourf(X, Y, E, levels=levels, cmap="viridis")
    ax.contour(X, Y, E, levels=levels, colors="k", linewidths=0.3, alpha=0.4)
    if colorbar:
        ax.figure.colorbar(contour, ax=ax, label=label, shrink=0.85)
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    return contour


def density_image(ax, log_density_fn: Callable, bounds, n: int = 150, device=None, colorbar=False):
    """``p(x)`` as an image, normalised on the grid so different models share a colour scale."""
    X, Y, logp = evaluate_on_grid(log_density_fn, bounds, n, device)
    logp = np.where(np.isfinite(logp), logp, -np.inf)
    p = np.exp(logp - logp.max())
    image = ax.imshow(p, origin="lower", extent=tuple(bounds), cmap="magma", aspect="equal")
    if colorbar:
        ax.figure.colorbar(image, ax=ax, label="p(x) (relative)", shrink=0.85)
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.grid(False)
    return image


def energy_surface(ax3d, energy_fn: Callable, bounds, n: int = 80, clip_quantile=0.98, device=None):
    """A 3-D surface of ``E(x)``; ``ax3d`` comes from ``fig.add_subplot(projection="3d")``."""
    X, Y, E = evaluate_on_grid(energy_fn, bounds, n, device)
    E = np.clip(E, None, np.quantile(E[np.isfinite(E)], clip_quantile))
    ax3d.plot_surface(X, Y, E, cmap="viridis", linewidth=0, antialiased=True, alpha=0.95)
    ax3d.set_xlabel("$x_1$")
    ax3d.set_ylabel("$x_2$")
    ax3d.set_zlabel("E(x)")
    return ax3d


def scatter_samples(ax, samples, label=None, color="white", size=4, alpha=0.6, edge="k", **kwargs):
    """Samples ``(N, 2)`` as dots, readable on top of a contour plot."""
    points = _numpy(samples)
    ax.scatter(points[:, 0], points[:, 1], s=size, c=color, alpha=alpha, label=label,
               edgecolors=edge, linewidths=0.2, **kwargs)
    return ax


def score_field(ax, score_fn: Callable, bounds, n: int = 20, device=None, color="k", normalise=True, **kwargs):
    """Arrows of a vector field ``(B, 2) -> (B, 2)`` such as the score ``-grad E``.

    With ``normalise=True`` every arrow has the same length and the colour shows the magnitude,
    so both the flat regions and the steep walls stay readable.
    """
    X, Y, points = grid_2d(bounds, n)
    if device is not None:
        points = points.to(device)
    vectors = _numpy(score_fn(points)).reshape(n, n, 2)
    U, V = vectors[..., 0], vectors[..., 1]
    magnitude = np.hypot(U, V)
    if normalise:
        arrow = 0.8 * (bounds[1] - bounds[0]) / (n - 1)  # each arrow spans 80% of a grid cell
        U, V = arrow * U / (magnitude + 1e-12), arrow * V / (magnitude + 1e-12)
        return ax.quiver(X, Y, U, V, np.log10(magnitude + 1e-12), cmap="coolwarm", angles="xy",
                         scale_units="xy", scale=1, width=0.004, **kwargs)
    return ax.quiver(X, Y, U, V, color=color, angles="xy", **kwargs)


def trajectories(ax, paths, max_paths: int = 10, color=None, start_marker="o", end_marker="*"):
    """Chain paths ``(T, N, 2)`` as lines with a start dot and an end star."""
    paths = _numpy(paths)[:, :max_paths]
    for i in range(paths.shape[1]):
        line = ax.plot(paths[:, i, 0], paths[:, i, 1], lw=0.8, alpha=0.9, color=color)[0]
        ax.plot(*paths[0, i], start_marker, color=line.get_color(), ms=4)
        ax.plot(*paths[-1, i], end_marker, color=line.get_color(), ms=8, mec="k", mew=0.5)
    return ax


# ---------------------------------------------------------------------------------------------
# Chains, curves and images
# ---------------------------------------------------------------------------------------------


def chain_traces(ax, chains, labels=None, max_chains: int = 4, xlabel="step", ylabel="value"):
    """Traces of several scalar chains ``(n_chains, n_steps)``."""
    chains = np.atleast_2d(_numpy(chains))[:max_chains]
    for i, chain in enumerate(chains):
        ax.plot(chain, lw=0.7, alpha=0.85, label=None if labels is None else labels[i])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if labels is not None:
        ax.legend()
    return ax


def training_curves(ax, history: dict[str, Sequence[float]], xlabel="step", ylabel=None, logy=False, x=None):
    """One line per entry of ``history`` (name -> values)."""
    for name, values in history.items():
        values = _numpy(values)
        ax.plot(x if x is not None else np.arange(len(values)), values, label=name, lw=1.2)
    ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    ax.legend()
    return ax


def make_grid(batch: torch.Tensor, nrow: int, padding: int, pad_value: float) -> torch.Tensor:
    """torchvision's ``make_grid``; where torchvision cannot be imported (missing, or built for another torch)
    the same layout by hand, and one line says that only ``--dataset mnist`` needs torchvision."""
    try:
        from torchvision.utils import make_grid as torchvision_grid
    except Exception as err:  # ImportError, or RuntimeError "operator torchvision::nms does not exist"
        _say_once(f"[torchvision] cannot be imported ({type(err).__name__}); image grids use a plain fallback "
                  "(only --dataset mnist needs torchvision)")
    else:
        return torchvision_grid(batch, nrow=nrow, padding=padding, pad_value=pad_value)
    count, channels, height, width = batch.shape
    cols, rows = min(nrow, count), -(-count // min(nrow, count))
    grid = torch.full((channels, rows * (height + padding) + padding, cols * (width + padding) + padding), pad_value)
    for i, image in enumerate(batch):
        top, left = padding + (i // cols) * (height + padding), padding + (i % cols) * (width + padding)
        grid[:, top:top + height, left:left + width] = image
    return grid


_SAID: set[str] = set()


def _say_once(message: str) -> None:
    if message not in _SAID:
        _SAID.add(message)
        print(message)


def image_grid(ax, images, shape: tuple[int, int] | None = None, nrow: int = 10, title=None, padding=1,
               row_labels=None):
    """Show a batch of images ``(B, H*W)`` or ``(B, H, W)`` or ``(B, C, H, W)`` as one grid.

    Uses torchvision's ``make_grid`` (a plain fallback where torchvision is missing or broken); pixel values
    are shown on a fixed [0, 1] scale. ``row_labels`` names the rows of the grid on the left.
    """
    batch = torch.as_tensor(_numpy(images), dtype=torch.float32)
    if shape is not None:
        batch = batch.reshape(-1, 1, *shape)
    elif batch.dim() == 3:
        batch = batch.unsqueeze(1)
    grid = make_grid(batch.clamp(0, 1), nrow=nrow, padding=padding, pad_value=0.5)  # (C, H', W')
    ax.imshow(grid[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    if row_labels:
        height = batch.shape[-2] + padding  # each row of the grid: one image and one padding strip
        ax.set_axis_on()
        ax.set_xticks([])
        ax.set_yticks([padding + height * i + batch.shape[-2] / 2 - 0.5 for i in range(len(row_labels))], row_labels)
        ax.tick_params(left=False)
        ax.grid(False)
        for spine in ax.spines.values():
            spine.set_visible(False)
    if title:
        ax.set_title(title)
    return ax


def _numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


# ---------------------------------------------------------------------------------------------
# Added with the lecture review of lessons 08-09: legends under a panel, reliability diagrams
# ---------------------------------------------------------------------------------------------


def legend_below(ax, ncol: int = 1, gap: float = 40, **kwargs):
    """A legend under the axes, off the data: for panels side by side, where right of the axes has no room.

    ``gap`` (points) leaves room for the tick labels and the x label; raise it for two-line tick labels.
    """
    from matplotlib.transforms import offset_copy

    below = offset_copy(ax.transAxes, fig=ax.figure, y=-gap, units="points")
    return ax.legend(loc="upper center", bbox_to_anchor=(0.5, 0.0), bbox_transform=below, borderaxespad=0.0,
                     ncol=ncol, **kwargs)


def reliability_diagram(ax, ax_count, mean_conf, accuracy, count, few: int = 10, color="#1f77b4"):
    """Reliability diagram on equal-width confidence bins, with each bin's sample count under it.

    ``ax``: accuracy per bin as bars, the diagonal of perfect calibration, each bin's mean confidence as a dot;
    bins holding fewer than ``few`` samples are drawn pale and hatched, so an accuracy from 2 images does not
    look like one from 200. ``ax_count``: the count per bin on a log scale, to read every bar against.
    """
    count = np.asarray(count)
    n_bins, used = len(count), count > 0
    edges, width = np.linspace(0, 1, n_bins + 1)[:-1], 1 / n_bins
    solid = used & (count >= few)
    sparse = used & (count < few)
    ax.bar(edges[solid], accuracy[solid], width, align="edge", color=color, edgecolor="k", label="accuracy in bin")
    ax.bar(edges[sparse], accuracy[sparse], width, align="edge", color=color, alpha=0.3, hatch="//",
           edgecolor="k", label=f"bin with < {few} samples")
    ax.plot([0, 1], [0, 1], "k--", lw=1.2, label="perfect calibration")
    ax.plot(mean_conf[used], accuracy[used], "o", color="#d62728", ms=5, mec="k", mew=0.5,
            label="(mean confidence, accuracy)")
    ax.set(ylabel="accuracy in bin", xlim=(0, 1), ylim=(0, 1.02))
    ax_count.bar(edges[used], count[used], width, align="edge", color="gray", edgecolor="k")
    for left, n in zip(edges[used], count[used]):
        ax_count.text(left + width / 2, n, f"{int(n)}", ha="center", va="bottom", fontsize=10)
    ax_count.set(yscale="log", ylim=(0.7, count.max() * 4), ylabel="samples", xlim=(0, 1))
    return ax, ax_count


def animate_chains_on_axes(path, energy_fn: Callable, paths, bounds, keep_every: int, step_size: float,
                           fps: int = 12, max_frames: int = 40, title=None, device=None, dpi: int = 100,
                           label: str = "energy $E(x)$", clip_quantile: float = 0.98, temperature=None) -> str:
    """A GIF of chains ``(T, N, 2)`` moving over the energy landscape, for projection: axes with ticks, a
    labelled colour bar of ``E(x)``, and on every frame the Langevin step number and the step size ``h``.

    ``paths`` is ``(T, N, 2)`` with ``paths[i]`` the state after ``i * keep_every`` steps (as returned by
    ``samplers.langevin(..., keep_every=...)``). The figure is drawn once; each frame only redraws the dots
    and the step counter on top of that picture (blitting), so a 40-frame GIF takes about a second.
    """
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    paths = _numpy(paths)
    frames = np.unique(np.linspace(0, len(paths) - 1, min(max_frames, len(paths))).astype(int))
    X, Y, E = evaluate_on_grid(energy_fn, bounds, 120, device)
    E = np.clip(E, None, np.quantile(E[np.isfinite(E)], clip_quantile))  # clip the corners so the wells show
    with matplotlib.rc_context({"figure.constrained_layout.use": False, "figure.dpi": dpi}):
        fig, ax = plt.subplots(figsize=(5.8, 5.0))  # fixed layout, drawn once
    canvas = FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.11, right=0.86, bottom=0.11, top=0.91)
    image = ax.imshow(E, origin="lower", extent=tuple(bounds), cmap="viridis", aspect="equal")
    ax.grid(False)
    ax.set(xlim=bounds[:2], ylim=bounds[2:], xlabel="$x_1$", ylabel="$x_2$")
    fig.colorbar(image, ax=ax, fraction=0.05, pad=0.03, label=label)
    if title:
        ax.set_title(title, fontsize=11)
    canvas.draw()
    background = canvas.copy_from_bbox(fig.bbox)  # everything that does not move
    dots = ax.scatter(paths[0, :, 0], paths[0, :, 1], s=10, c="white", edgecolors="k", linewidths=0.3)
    counter = ax.text(0.02, 0.97, "", transform=ax.transAxes, color="white", va="top", fontsize=11,
                      bbox=dict(facecolor="black", alpha=0.5, edgecolor="none"))
    temp = f",  $T$ = {temperature:g}" if temperature is not None else ""
    pictures = []
    for row in frames:
        canvas.restore_region(background)
        dots.set_offsets(paths[row])
        counter.set_text(f"step {row * keep_every} / {(len(paths) - 1) * keep_every},  $h$ = {step_size:g}{temp}")
        ax.draw_artist(dots)
        ax.draw_artist(counter)
        pictures.append(Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3].copy()))
    pictures[0].save(str(path), save_all=True, append_images=pictures[1:], duration=round(1000 / fps), loop=0)
    plt.close(fig)
    return str(path)
