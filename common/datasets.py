"""Data for the lessons: 2-D toy targets with exact log-densities, and binary image data.

Toy targets
    Each ``ToyDataset`` has a sampler *and* its exact normalised log-density (closed form, or a
    1-D quadrature along the curve the data lives on), so a lesson can compare a learned energy
    with the truth: ``energy(x) = -log_density(x)`` up to the constant it drops.

Images
    ``load_images("digits")`` is scikit-learn's 8x8 digits (ships with scikit-learn, works offline);
    ``load_images("mnist")`` is MNIST through torchvision, from a local copy in the data folder
    (``--data-dir``, or ``$EBM_DATA_DIR``, or ``data/`` at the repository root). ``"auto"`` uses
    MNIST only when its files are already there, and otherwise says so in one line and uses the
    digits. Nothing is downloaded unless asked for (``download=True``, a lesson's ``--download``).
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from common.config import UserError

REPO_ROOT = Path(__file__).resolve().parents[1]
LOG_2PI = math.log(2 * math.pi)


# ---------------------------------------------------------------------------------------------
# 2-D toy targets
# ---------------------------------------------------------------------------------------------


@dataclass
class ToyDataset:
    """A 2-D target: ``sample(n, generator)`` and the exact ``log_density(x)`` of shape (B,)."""

    name: str
    sample: Callable[[int, torch.Generator | None], torch.Tensor]
    log_density: Callable[[torch.Tensor], torch.Tensor]
    bounds: tuple[float, float, float, float]  # x0, x1, y0, y1 for plots
    noised_fn: Callable[[float], ToyDataset] | None = None  # sigma -> the target convolved with N(0, sigma^2 I)

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """E(x) = -log p(x): the normalised energy of the target (so log Z = 0)."""
        return -self.log_density(x)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """The exact score grad_x log p(x), shape (B, 2), by autograd through the exact log-density."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.log_density(x).sum(), x)
        return grad.detach()

    def noised(self, sigma: float) -> ToyDataset:
        """The exact law of x + sigma eps, eps ~ N(0, I): q_sigma = p * N(0, sigma^2 I), for DSM and diffusion.

        Every Gaussian blob or curve with noise s becomes one with noise sqrt(s^2 + sigma^2).
        """
        if self.noised_fn is None:
            raise NotImplementedError(f"{self.name} has no closed-form noised density")
        if sigma == 0:
            return self
        return self.noised_fn(float(sigma))


def gaussian_mixture(means, stds, weights=None, name="gaussian_mixture", bounds=None) -> ToyDataset:
    """Isotropic Gaussian mixture sum_k w_k N(mu_k, s_k^2 I) in 2-D."""
    means = torch.as_tensor(means, dtype=torch.float32)  # (K, 2)
    stds = torch.as_tensor(stds, dtype=torch.float32).expand(len(means))  # (K,)
    weights = torch.ones(len(means)) if weights is None else torch.as_tensor(weights, dtype=torch.float32)
    weights = weights / weights.sum()  # (K,), normalised

    def sample(n, generator=None):
        component = torch.multinomial(weights, n, replacement=True, generator=generator)
        noise = torch.randn(n, 2, generator=generator)
        return means[component] + stds[component, None] * noise

    def log_density(x):
        # log p(x) = logsumexp_k [ log w_k - |x - mu_k|^2 / (2 s_k^2) - log(2 pi s_k^2) ]
        sq = ((x[:, None, :] - means.to(x)) ** 2).sum(-1)  # (B, K)
        s2 = stds.to(x) ** 2
        log_terms = weights.to(x).log() - sq / (2 * s2) - (LOG_2PI + s2.log())
        return torch.logsumexp(log_terms, dim=1)

    if bounds is None:
        reach = float((means.abs().max() + 4 * stds.max()).ceil())
        bounds = (-reach, reach, -reach, reach)

    def noised(sigma):  # N(mu, s^2 I) * N(0, sigma^2 I) = N(mu, (s^2 + sigma^2) I)
        return gaussian_mixture(means, (stds**2 + sigma**2).sqrt(), weights, name, bounds)

    return ToyDataset(name, sample, log_density, bounds, noised)


def eight_gaussians(radius: float = 4.0, std: float = 0.5) -> ToyDataset:
    """Eight equal Gaussians on a ring: the standard multimodal test target."""
    angles = torch.arange(8) * (2 * math.pi / 8)
    means = radius * torch.stack([angles.cos(), angles.sin()], dim=1)
    return gaussian_mixture(means, std, name="8gaussians")


def _curve_dataset(name, curve, t_low, t_high, noise, bounds, n_nodes=400) -> ToyDataset:
    """Points on a curve c(t), t ~ U(t_low, t_high), plus N(0, noise^2 I).

    log p(x) = log (1/(t_high - t_low)) int N(x; c(t), noise^2 I) dt, by Gauss-Legendre quadrature
    with ``n_nodes`` nodes (the integrand is smooth, so this is exact to float precision when the
    nodes are denser than the noise scale along the curve).
    """
    nodes, node_weights = np.polynomial.legendre.leggauss(n_nodes)
    t_nodes = torch.tensor(0.5 * (nodes + 1) * (t_high - t_low) + t_low, dtype=torch.float64)
    # the 1/(t_high - t_low) of the uniform and the (t_high - t_low)/2 of the change of variable
    log_w = torch.tensor(np.log(node_weights / 2), dtype=torch.float64)
    centres = curve(t_nodes)  # (n_nodes, 2)

    def sample(n, generator=None):
        t = t_low + (t_high - t_low) * torch.rand(n, generator=generator, dtype=torch.float64)
        return (curve(t) + noise * torch.randn(n, 2, generator=generator, dtype=torch.float64)).float()

    def log_density(x):
        sq = ((x.double()[:, None, :] - centres.to(x.device)) ** 2).sum(-1)  # (B, n_nodes)
        log_gauss = -sq / (2 * noise**2) - (LOG_2PI + 2 * math.log(noise))
        return torch.logsumexp(log_gauss + log_w.to(x.device), dim=1).to(x.dtype)

    def noised(sigma):  # the curve's Gaussian noise s grows to sqrt(s^2 + sigma^2)
        return _curve_dataset(name, curve, t_low, t_high, math.hypot(noise, sigma), bounds, n_nodes)

    return ToyDataset(name, sample, log_density, bounds, noised)


def two_moons(noise: float = 0.1) -> ToyDataset:
    """scikit-learn's two moons (same arcs, centred), as a continuous density."""

    def curve(t):  # t in [0, 2 pi): first half the upper moon, second half the lower moon
        upper = t < math.pi
        s = torch.where(upper, t, t - math.pi)
        x = torch.where(upper, torch.cos(s), 1 - torch.cos(s))
        y = torch.where(upper, torch.sin(s), 0.5 - torch.sin(s))
        return torch.stack([x - 0.5, y - 0.25], dim=-1) * 2.0

    # The kink at t = pi would slow the quadrature; the node count covers it to float32 accuracy.
    return _curve_dataset("two_moons", curve, 0.0, 2 * math.pi, 2.0 * noise, (-3.5, 3.5, -3.0, 3.0), n_nodes=400)


def swiss_roll(noise: float = 0.25) -> ToyDataset:
    """A 2-D swiss roll: t (cos t, sin t) / 3 for t in [1.5 pi, 4.5 pi], plus noise."""

    def curve(t):
        return torch.stack([t * torch.cos(t), t * torch.sin(t)], dim=-1) / 3.0

    return _curve_dataset("swiss_roll", curve, 1.5 * math.pi, 4.5 * math.pi, noise, (-5.5, 5.5, -5.5, 5.5), 500)


def concentric_rings(radii=(1.0, 2.5, 4.0), noise: float = 0.15) -> ToyDataset:
    """Uniform angle on circles of the given radii (equal weights) plus Gaussian noise.

    The angle integral has a closed form with the modified Bessel function I0:
    p(x | r) = exp(-(|x|^2 + r^2) / (2 s^2)) I0(r |x| / s^2) / (2 pi s^2).
    """
    radii_t = torch.as_tensor(radii, dtype=torch.float64)

    def sample(n, generator=None):
        ring = torch.randint(len(radii), (n,), generator=generator)
        angle = 2 * math.pi * torch.rand(n, generator=generator, dtype=torch.float64)
        points = radii_t[ring, None] * torch.stack([angle.cos(), angle.sin()], dim=1)
        return (points + noise * torch.randn(n, 2, generator=generator, dtype=torch.float64)).float()

    def log_density(x):
        r = x.double().norm(dim=1, keepdim=True)  # (B, 1)
        z = r * radii_t.to(x.device) / noise**2
        # log I0(z) = log i0e(z) + z  (i0e is the exponentially scaled Bessel function, stable)
        log_i0 = torch.log(torch.special.i0e(z)) + z
        log_ring = -(r**2 + radii_t.to(x.device) ** 2) / (2 * noise**2) + log_i0 - (LOG_2PI + 2 * math.log(noise))
        return (torch.logsumexp(log_ring, dim=1) - math.log(len(radii))).to(x.dtype)

    reach = max(radii) + 1.0

    def noised(sigma):
        return concentric_rings(radii, math.hypot(noise, sigma))

    return ToyDataset("rings", sample, log_density, (-reach, reach, -reach, reach), noised)


def checkerboard(size: float = 4.0) -> ToyDataset:
    """Uniform on the 8 dark squares of a 4x4 board of side ``size``: log p = -log(area) or -inf."""
    cell = size / 4

    def on_dark_square(x):
        ij = torch.floor((x + size / 2) / cell)
        inside = ((x > -size / 2) & (x < size / 2)).all(dim=1)
        return inside & ((ij[:, 0] + ij[:, 1]) % 2 == 0)

    def sample(n, generator=None):
        points = torch.empty(0, 2)
        while len(points) < n:  # rejection from the bounding square keeps half the draws
            proposal = (torch.rand(2 * n, 2, generator=generator) - 0.5) * size
            points = torch.cat([points, proposal[on_dark_square(proposal)]])
        return points[:n]

    def log_density(x):
        inside = torch.full((len(x),), -math.log(size * size / 2), dtype=x.dtype, device=x.device)
        return torch.where(on_dark_square(x), inside, torch.full_like(inside, -math.inf))

    half = size / 2 + 0.5
    bounds = (-half, half, -half, half)

    def noised(sigma):
        # q(x) = (1/area) sum_{dark squares} prod_d [Phi((b_d - x_d)/sigma) - Phi((a_d - x_d)/sigma)]
        corners = torch.tensor([(i, j) for i in range(4) for j in range(4) if (i + j) % 2 == 0], dtype=torch.float64)
        low = corners * cell - size / 2  # (8, 2) lower-left corners of the dark squares
        normal = torch.distributions.Normal(0.0, 1.0)

        def log_density_noised(x):
            xd = x.double()[:, None, :]  # (B, 1, 2)
            mass = normal.cdf((low + cell - xd) / sigma) - normal.cdf((low - xd) / sigma)  # (B, 8, 2)
            return (mass.prod(-1).sum(-1).clamp_min(1e-300).log() - math.log(size * size / 2)).to(x.dtype)

        def sample_noised(n, generator=None):
            return sample(n, generator) + sigma * torch.randn(n, 2, generator=generator)

        return ToyDataset(f"checkerboard+N(0,{sigma:g}^2)", sample_noised, log_density_noised, bounds)

    return ToyDataset("checkerboard", sample, log_density, bounds, noised)


TOY_DATASETS = {
    "8gaussians": eight_gaussians,
    "two_moons": two_moons,
    "rings": concentric_rings,
    "swiss_roll": swiss_roll,
    "checkerboard": checkerboard,
}


def toy_dataset(name: str, **kwargs) -> ToyDataset:
    """Look a toy target up by name: one of ``TOY_DATASETS``."""
    if name not in TOY_DATASETS:
        raise ValueError(f"unknown toy dataset {name!r}; choose from {', '.join(TOY_DATASETS)}")
    return TOY_DATASETS[name](**kwargs)


# ---------------------------------------------------------------------------------------------
# Images: 8x8 digits (offline) and MNIST (torchvision)
# ---------------------------------------------------------------------------------------------


@dataclass
class ImageData:
    """Flattened images in [0, 1] (or {0, 1} when binarised) with labels and a train/test split."""

    name: str  # "digits" or "mnist"
    shape: tuple[int, int]  # (H, W) of one image
    x_train: torch.Tensor  # (N_train, H*W) float32
    y_train: torch.Tensor  # (N_train,) int64
    x_test: torch.Tensor  # (N_test, H*W) float32
    y_test: torch.Tensor  # (N_test,) int64

    @property
    def n_pixels(self) -> int:
        return self.shape[0] * self.shape[1]


def uniform_box(n: int, bounds, generator: torch.Generator) -> torch.Tensor:
    """``n`` points (n, 2) uniform in the rectangle ``bounds = (x0, x1, y0, y1)``, on the generator's device:
    where fresh chains start on a 2-D toy."""
    x0, x1, y0, y1 = bounds
    u = torch.rand(n, 2, generator=generator, device=generator.device)  # (n, 2) in [0, 1)^2
    # x = x0 + (x1 - x0) u_1,  y = y0 + (y1 - y0) u_2
    return torch.stack([x0 + (x1 - x0) * u[:, 0], y0 + (y1 - y0) * u[:, 1]], dim=1)


def data_dir(override: str | os.PathLike | None = None) -> Path:
    """Where image data lives: ``override``, else ``$EBM_DATA_DIR``, else ``data/`` in the repo."""
    return Path(override or os.environ.get("EBM_DATA_DIR") or REPO_ROOT / "data")


def binarize(x: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Deterministic binarisation: 1 where the intensity exceeds ``threshold``, else 0."""
    return (x > threshold).float()


def train_test_split(x, y, test_fraction: float, seed: int):
    """A reproducible shuffled split (the permutation depends only on ``seed``)."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(x), generator=generator)
    n_test = int(round(test_fraction * len(x)))
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


def load_digits(test_fraction: float = 0.2, split_seed: int = 0) -> ImageData:
    """scikit-learn's 1,797 handwritten 8x8 digits, intensities scaled from 0..16 to [0, 1]."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    x = torch.tensor(bunch.data / 16.0, dtype=torch.float32)
    y = torch.tensor(bunch.target, dtype=torch.int64)
    return ImageData("digits", (8, 8), *train_test_split(x, y, test_fraction, split_seed))


def mnist_available(root: Path) -> bool:
    """True when the four raw MNIST IDX files are in ``root/MNIST/raw``."""
    raw = root / "MNIST" / "raw"
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    return all((raw / name).exists() for name in names)


def load_mnist(root: Path, download: bool = False, timeout: float = 5.0, max_train=None, max_test=None) -> ImageData:
    """MNIST through ``torchvision.datasets.MNIST`` (28x28, intensities scaled to [0, 1])."""
    from torchvision.datasets import MNIST

    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        train = MNIST(str(root), train=True, download=download)
        test = MNIST(str(root), train=False, download=download)
    finally:
        socket.setdefaulttimeout(old_timeout)
    x_train = train.data[:max_train].reshape(-1, 784).float() / 255.0
    x_test = test.data[:max_test].reshape(-1, 784).float() / 255.0
    return ImageData("mnist", (28, 28), x_train, train.targets[:max_train], x_test, test.targets[:max_test])


class DataNotFoundError(UserError, FileNotFoundError):
    """Image data that was asked for is not on disk (and was not, or could not be, downloaded)."""


def load_images(
    dataset: str = "auto",
    root: str | os.PathLike | None = None,
    binary: bool = True,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    max_train: int | None = None,
    max_test: int | None = None,
    download: bool = False,
) -> ImageData:
    """Load ``"digits"``, ``"mnist"`` or ``"auto"`` (MNIST if its files are in the data folder, else digits).

    ``binary=True`` thresholds intensities at 0.5. Nothing is downloaded unless ``download=True``; then a
    missing MNIST is fetched (5 s network timeout). An explicit ``"mnist"`` that is not there (or could
    not be downloaded) raises ``DataNotFoundError`` with a one-line message saying where to put the files;
    a lesson ends with that line and exit status 2.
    """
    folder = data_dir(root)
    if dataset not in ("auto", "digits", "mnist"):
        raise ValueError(f"dataset must be auto, digits or mnist (got {dataset!r})")
    data = None
    if dataset in ("auto", "mnist"):
        if mnist_available(folder):
            data = load_mnist(folder, max_train=max_train, max_test=max_test)
        elif download:
            try:
                data = load_mnist(folder, download=True, max_train=max_train, max_test=max_test)
            except Exception as err:  # no network, a proxy, a half-written file ...
                reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:120]
                if dataset == "mnist":
                    raise DataNotFoundError(
                        f"MNIST is not in {folder}/MNIST/raw and could not be downloaded ({reason}); "
                        "copy the four IDX files there or use --dataset digits"
                    ) from None
                print(f"[data] MNIST not found in {folder} and not downloadable ({reason}); using 8x8 digits")
        elif dataset == "mnist":
            raise DataNotFoundError(f"MNIST is not in {folder}/MNIST/raw: copy the four IDX files there, "
                               "pass --download to fetch them, or use --dataset digits")
        else:
            print(f"[data] MNIST not found in {folder} (--download fetches it); using the 8x8 digits")
    if data is None:
        data = load_digits(test_fraction, split_seed)
        if max_train is not None:
            data.x_train, data.y_train = data.x_train[:max_train], data.y_train[:max_train]
        if max_test is not None:
            data.x_test, data.y_test = data.x_test[:max_test], data.y_test[:max_test]
    if binary:
        data.x_train, data.x_test = binarize(data.x_train), binarize(data.x_test)
    return data


# ---------------------------------------------------------------------------------------------
# Images for neural energies: (N, 1, H, W) floats in [-1, 1]
# ---------------------------------------------------------------------------------------------


@dataclass
class SignedImages:
    """Images as neural EBMs use them: (N, 1, H, W) float32 in [-1, 1], on a grid of ``n_levels`` grey values."""

    name: str
    shape: tuple[int, int]
    n_levels: int  # 17 for the 8x8 digits (0..16), 256 for MNIST
    x_train: torch.Tensor  # (N_train, 1, H, W)
    y_train: torch.Tensor
    x_test: torch.Tensor  # (N_test, 1, H, W)
    y_test: torch.Tensor


def load_signed_images(dataset: str = "digits", root=None, max_train: int | None = None, max_test: int | None = None,
                       test_fraction: float = 0.2, split_seed: int = 0) -> SignedImages:
    """The digits (or MNIST, when ``dataset="mnist"`` and its files are present) mapped from [0, 1] to [-1, 1].

    x_signed = 2 x - 1. Nothing is downloaded; ``auto`` means what it means in ``load_images``.
    """
    data = load_images(dataset, root=root, binary=False,
                       test_fraction=test_fraction, split_seed=split_seed, max_train=max_train, max_test=max_test)
    n_levels = 17 if data.name == "digits" else 256
    h, w = data.shape

    def signed(x):
        return (2 * x - 1).reshape(-1, 1, h, w)

    return SignedImages(data.name, data.shape, n_levels, signed(data.x_train), data.y_train, signed(data.x_test),
                        data.y_test)


def dequantize(x: torch.Tensor, n_levels: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Spread each grey level over its bin: k -> (k + u) / n_levels, u ~ U(0, 1), mapped back to [-1, 1].

    x in [-1, 1] holds levels k / (n_levels - 1); without this, a continuous density can put infinite mass on
    the grid points (the likelihood grows without bound).
    """
    level = torch.round((x + 1) / 2 * (n_levels - 1))  # k in {0, ..., n_levels - 1}
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return 2 * (level + u) / n_levels - 1
