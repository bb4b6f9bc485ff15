"""Toy targets and image loaders.

Each toy target's log-density is checked against independent answers: it integrates to 1 on a
fine grid, the Bessel closed form of the rings equals a direct angle integral (scipy.quad), and
samples land in grid cells with the probabilities the density gives them (a binned comparison
whose tolerance is the multinomial noise floor).
"""

import math

import numpy as np
import pytest
import torch
from scipy import integrate

from common.datasets import (
    TOY_DATASETS,
    binarize,
    concentric_rings,
    gaussian_mixture,
    load_digits,
    load_images,
    toy_dataset,
)


def midpoint_integral(dataset, step=0.05, pad=2.0):
    """Midpoint rule on [-L, L]^2, L a whole number, so every checkerboard edge is a cell edge."""
    reach = math.ceil(max(abs(b) for b in dataset.bounds) + pad)
    centres = torch.arange(-reach + step / 2, reach, step, dtype=torch.float64)
    X, Y = torch.meshgrid(centres, centres, indexing="xy")
    density = dataset.log_density(torch.stack([X.ravel(), Y.ravel()], 1)).exp()
    return float(density.sum() * step**2)


@pytest.mark.parametrize("name", list(TOY_DATASETS))
def test_toy_density_integrates_to_one(name):
    # The midpoint rule is exact for the piecewise-constant checkerboard (edges on cell edges) and,
    # for the smooth targets, accurate to far below 1e-4 at a step of 1/5 of the narrowest noise
    # scale; the mass beyond the padded box is below e^{-8}.
    step = 0.08 if name == "swiss_roll" else 0.05  # narrowest noise scales: 0.25 and 0.15
    assert midpoint_integral(toy_dataset(name), step) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("name", list(TOY_DATASETS))
def test_toy_samples_follow_the_density(name):
    dataset = toy_dataset(name)
    n_samples, n_bins = 40000, 12
    samples = dataset.sample(n_samples, torch.Generator().manual_seed(0)).double()
    x0, x1, y0, y1 = dataset.bounds
    edges_x, edges_y = np.linspace(x0, x1, n_bins + 1), np.linspace(y0, y1, n_bins + 1)
    counts, _, _ = np.histogram2d(samples[:, 0].numpy(), samples[:, 1].numpy(), bins=[edges_x, edges_y])
    # probability of each cell: integrate the density on a fine sub-grid of the cell
    fine = 10
    cx = (edges_x[:-1, None] + (np.arange(fine) + 0.5) / fine * np.diff(edges_x)[:, None]).ravel()
    cy = (edges_y[:-1, None] + (np.arange(fine) + 0.5) / fine * np.diff(edges_y)[:, None]).ravel()
    X, Y = np.meshgrid(cx, cy, indexing="ij")
    points = torch.tensor(np.stack([X.ravel(), Y.ravel()], 1))
    density = dataset.log_density(points).exp().numpy().reshape(len(cx), len(cy))
    cell_area = np.diff(edges_x)[0] * np.diff(edges_y)[0] / fine**2
    probs = density.reshape(n_bins, fine, n_bins, fine).sum(axis=(1, 3)) * cell_area
    tv = 0.5 * np.abs(counts / n_samples - probs).sum()
    # multinomial noise floor of the TV over k cells: ~ sqrt(k / (2 pi n)) = 0.023; allow 2x
    assert tv < 2 * math.sqrt(n_bins**2 / (2 * math.pi * n_samples))


def test_rings_bessel_closed_form_equals_the_angle_integral():
    radii, noise = (1.0, 2.5), 0.3
    rings = concentric_rings(radii, noise)
    point = np.array([1.7, -0.4])

    def density_given_angle(theta, r):
        centre = r * np.array([np.cos(theta), np.sin(theta)])
        return np.exp(-np.sum((point - centre) ** 2) / (2 * noise**2)) / (2 * np.pi * noise**2) / (2 * np.pi)

    expected = np.mean([integrate.quad(density_given_angle, 0, 2 * np.pi, args=(r,))[0] for r in radii])
    got = rings.log_density(torch.tensor(point[None, :])).exp().item()
    assert got == pytest.approx(expected, rel=1e-5)


def test_gaussian_mixture_log_density_matches_scipy():
    from scipy.stats import multivariate_normal

    means, stds, weights = [[0.0, 0.0], [3.0, -1.0]], [1.0, 0.5], [0.3, 0.7]
    mixture = gaussian_mixture(means, stds, weights)
    point = np.array([1.0, 0.5])
    expected = sum(w * multivariate_normal(m, s**2 * np.eye(2)).pdf(point) for m, s, w in zip(means, stds, weights))
    assert mixture.log_density(torch.tensor(point[None, :])).exp().item() == pytest.approx(expected, rel=1e-5)


def test_unknown_toy_dataset_is_refused():
    with pytest.raises(ValueError):
        toy_dataset("spiral galaxy")


def test_digits_split_is_reproducible_disjoint_and_scaled():
    a, b = load_digits(0.2, split_seed=0), load_digits(0.2, split_seed=0)
    assert torch.equal(a.x_train, b.x_train) and a.shape == (8, 8)
    assert len(a.x_train) + len(a.x_test) == 1797 and len(a.x_test) == round(0.2 * 1797)
    assert 0.0 <= float(a.x_train.min()) and float(a.x_train.max()) == 1.0
    train_rows = {tuple(r) for r in a.x_train.tolist()}
    assert sum(tuple(r) in train_rows for r in a.x_test.tolist()) < 10  # only genuine duplicate images


def test_binary_images_and_auto_falls_back_to_digits_offline(tmp_path, capsys):
    data = load_images("auto", root=tmp_path)
    assert data.name == "digits" and "using the 8x8 digits" in capsys.readouterr().out
    assert set(torch.unique(data.x_train).tolist()) <= {0.0, 1.0}
    assert torch.equal(binarize(torch.tensor([0.2, 0.5, 0.51])), torch.tensor([0.0, 0.0, 1.0]))
    with pytest.raises(FileNotFoundError):
        load_images("mnist", root=tmp_path)


def test_nothing_downloads_unless_asked(tmp_path, monkeypatch):
    import common.datasets as datasets

    calls = []

    def fake_load_mnist(root, download=False, **kwargs):
        calls.append(download)
        raise OSError("no network in this test")

    monkeypatch.setattr(datasets, "load_mnist", fake_load_mnist)
    assert load_images("auto", root=tmp_path).name == "digits" and calls == []  # auto: only files already there
    with pytest.raises(datasets.DataNotFoundError, match="--download"):
        load_images("mnist", root=tmp_path)
    assert calls == []
    assert load_images("auto", root=tmp_path, download=True).name == "digits" and calls == [True]
    with pytest.raises(datasets.DataNotFoundError, match="could not be downloaded"):
        load_images("mnist", root=tmp_path, download=True)
