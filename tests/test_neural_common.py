"""The pieces of common/ for the neural lessons (nets, training, evaluation, the new sampler and data helpers),
each checked against an answer known independently: a closed form, a hand computation, or Monte Carlo with a
tolerance from its standard error."""

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from common.config import parse_flags, positive
from common.datasets import dequantize, gaussian_mixture, load_signed_images, toy_dataset
from common.evaluation import (
    FrechetScorer,
    expected_calibration_error,
    fpr_at_tpr,
    frechet_distance,
    frechet_distance_from_moments,
    gaussian_samples_like,
    grid_log_partition,
    grid_nll,
    nll_floor,
    psnr,
    reliability_bins,
    train_feature_classifier,
)
from common.lesson import TrainingDiverged, start_lesson
from common.nets import ClassifierEnergy, CNNEnergy, MLPClassifier, MLPEnergy, NoiseConditionalScore
from common.samplers import ReplayBuffer, effective_temperature, langevin
from common.training import Trainer, contrastive_divergence_loss, draw_negatives

# ------------------------------------------------------------------------------------------------
# samplers and data
# ------------------------------------------------------------------------------------------------


def test_effective_temperature_of_the_image_ebm_settings():
    # T = s^2 / (2 h) = 0.005^2 / 20
    assert effective_temperature(10.0, 0.005) == pytest.approx(1.25e-6)


def test_langevin_with_a_separate_noise_scale_has_the_closed_form_variance():
    # x' = (1 - a h) x + s xi  =>  var = s^2 / (1 - (1 - a h)^2) = s^2 / (a h (2 - a h))
    a, h, s, n = 2.0, 0.3, 0.4, 20000
    x, _ = langevin(lambda x: a * (x**2).sum(1) / 2, torch.zeros(n, 1, dtype=torch.float64), 60, h, noise_scale=s,
                    generator=torch.Generator().manual_seed(0))
    exact = s**2 / (a * h * (2 - a * h))
    se = exact * math.sqrt(2 / (n - 1))  # standard error of a Gaussian sample variance
    assert abs(float(x.var()) - exact) < 4 * se


def test_langevin_clamp_and_energy_trace():
    trace = []
    x, _ = langevin(lambda x: -(x.sum(1)), torch.zeros(50, 3), 20, 0.5, clamp=(-1.0, 1.0), energy_trace=trace,
                    generator=torch.Generator().manual_seed(1))
    assert float(x.max()) <= 1.0 and float(x.min()) >= -1.0
    assert len(trace) == 20 and trace[0].dim() == 0 and float(trace[0]) == 0.0  # E(0) = 0 at the start


def test_replay_buffer_reinitialises_the_stated_fraction():
    n, fraction = 20000, 0.05
    buffer = ReplayBuffer(lambda k: torch.ones(k, 2), 100, fraction, torch.Generator().manual_seed(0))
    buffer.states.zero_()  # stored states are 0, fresh ones are 1
    states, index = buffer.sample(n)
    fresh = float((states[:, 0] == 1).double().mean())
    assert abs(fresh - fraction) < 4 * math.sqrt(fraction * (1 - fraction) / n)
    buffer.push(torch.full((n, 2), 7.0), index)
    assert float(buffer.states[index[0], 0]) == 7.0


@pytest.mark.parametrize("name", ["two_moons", "checkerboard", "8gaussians"])
def test_noised_density_matches_a_monte_carlo_convolution(name):
    # q(x) = E_{y ~ p} N(x; y, sigma^2 I), estimated with many draws y and compared within 4 standard errors
    dataset, sigma, n = toy_dataset(name), 0.3, 400000
    y = dataset.sample(n, torch.Generator().manual_seed(0)).double()
    points = torch.tensor([[0.0, 0.0], [1.0, 0.5], [-1.2, -1.9]], dtype=torch.float64)
    kernel = torch.exp(-((points[:, None] - y[None]) ** 2).sum(-1) / (2 * sigma**2)) / (2 * math.pi * sigma**2)
    estimate, se = kernel.mean(1), kernel.std(1) / math.sqrt(n)
    exact = dataset.noised(sigma).log_density(points.float()).double().exp()
    assert torch.all((exact - estimate).abs() < 4 * se + 1e-6), (exact, estimate, se)


def test_exact_score_matches_finite_differences():
    dataset = toy_dataset("rings").noised(0.2)
    x = torch.tensor([[0.7, -1.1], [2.0, 1.0]], dtype=torch.float64)
    eps = 1e-5
    fd = torch.stack([(dataset.log_density(x + eps * e) - dataset.log_density(x - eps * e)) / (2 * eps)
                      for e in torch.eye(2, dtype=torch.float64)], dim=1)
    assert torch.allclose(dataset.score(x), fd, atol=1e-6)


def test_signed_images_and_dequantisation():
    data = load_signed_images("digits")
    assert data.x_train.shape[1:] == (1, 8, 8) and data.n_levels == 17
    assert float(data.x_train.min()) == -1.0 and float(data.x_train.max()) == 1.0
    # level k (x = 2k/16 - 1) goes to (k + u)/17 mapped to [-1, 1]: inside [2k/17 - 1, 2(k+1)/17 - 1)
    x = torch.tensor([-1.0, 0.0, 1.0]).repeat(1000)
    level = torch.tensor([0.0, 8.0, 16.0]).repeat(1000)
    y = dequantize(x, 17, torch.Generator().manual_seed(0))
    assert torch.all(y >= 2 * level / 17 - 1) and torch.all(y < 2 * (level + 1) / 17 - 1)


# ------------------------------------------------------------------------------------------------
# nets
# ------------------------------------------------------------------------------------------------


def test_classifier_energy_is_minus_logsumexp_of_the_logits():
    linear = torch.nn.Linear(2, 3)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, 1.0]]))
        linear.bias.zero_()
    model = ClassifierEnergy(linear)
    x = torch.tensor([[1.0, 1.0]])  # logits (1, 2, 0)
    with torch.no_grad():  # restored on leaving, even when an assertion fails
        assert float(model(x)) == pytest.approx(-math.log(math.e + math.e**2 + 1.0))
        assert float(model.joint_energy(x, torch.tensor([1]))) == pytest.approx(-2.0)
        # log p(y|x) = -E(x, y) + E(x)
        assert float(model.log_p_y_given_x(x)[0, 1]) == pytest.approx(2.0 - math.log(math.e + math.e**2 + 1.0))


def test_spectral_norm_makes_every_layer_one_lipschitz():
    torch.manual_seed(0)
    energy = MLPEnergy(4, (32, 32), spectral_norm=True)
    for _ in range(30):  # each training-mode forward pass runs one power iteration
        energy(torch.randn(8, 4))
    energy.eval()
    for layer in energy.net:
        if isinstance(layer, torch.nn.Linear):
            assert float(torch.linalg.matrix_norm(layer.weight, ord=2)) == pytest.approx(1.0, abs=1e-3)


def test_network_shapes():
    assert MLPEnergy(64)(torch.randn(5, 1, 8, 8)).shape == (5,)
    assert CNNEnergy(8)(torch.randn(5, 1, 8, 8)).shape == (5,)
    assert CNNEnergy(28)(torch.randn(2, 1, 28, 28)).shape == (2,)
    assert NoiseConditionalScore(2)(torch.randn(5, 2), 0.5).shape == (5, 2)
    assert NoiseConditionalScore(2)(torch.randn(5, 2), torch.rand(5) + 0.1).shape == (5, 2)
    clf = MLPClassifier(64, 10, (32, 16))
    assert clf(torch.randn(3, 64)).shape == (3, 10) and clf.features(torch.randn(3, 64)).shape == (3, 16)


# ------------------------------------------------------------------------------------------------
# training
# ------------------------------------------------------------------------------------------------


@dataclass
class TinyConfig:
    lr: float = positive(0.1)  # learning rate


def tiny_run(tmp_path):
    cfg, flags = parse_flags(TinyConfig, "test_lesson", argv=["--outdir", str(tmp_path)])
    return start_lesson(cfg, flags)


def test_trainer_minimises_a_quadratic_and_its_ema_follows_the_recursion(tmp_path):
    run = tiny_run(tmp_path)
    w = torch.nn.Linear(1, 1, bias=False)
    decay = 0.9
    trainer = Trainer(w, run, lr=0.05, ema_decay=decay, check_every=10)
    seen = []

    def loss_fn(step):
        seen.append(float(w.weight))
        return ((w.weight - 3.0) ** 2).sum(), {}

    trainer.fit(loss_fn, 400, progress=False)
    assert float(w.weight) == pytest.approx(3.0, abs=1e-3)
    # theta_ema <- d theta_ema + (1 - d) theta, started at the first updated weights
    weights = seen[1:] + [float(w.weight)]
    ema = weights[0]
    for value in weights[1:]:
        ema = decay * ema + (1 - decay) * value
    assert float(trainer.ema.module.weight) == pytest.approx(ema, abs=1e-6)
    assert len(trainer.history["loss"]) == 400


def test_cosine_schedule_with_warmup():
    trainer = Trainer(torch.nn.Linear(1, 1), None, lr=1.0, n_steps=100, schedule="cosine", warmup=10)
    assert trainer.lr_at(0) == pytest.approx(0.1 * 0.5 * (1 + math.cos(0.0)))
    assert trainer.lr_at(50) == pytest.approx(0.5)
    assert trainer.lr_at(100) == pytest.approx(0.0)


def test_trainer_guard_names_the_flag_and_restarts_with_a_lower_lr(tmp_path):
    run = tiny_run(tmp_path)

    def make(restarts):
        model = torch.nn.Linear(1, 1)
        trainer = Trainer(model, run, lr=0.08, check_every=5, restarts=restarts)

        def unstable(step):  # finite only once the learning rate is at most 0.05
            loss = (model.weight**2).sum()
            return (loss * float("nan") if trainer.base_lr > 0.05 else loss), {}

        return model, trainer, unstable

    _, trainer, unstable = make(restarts=0)
    with pytest.raises(TrainingDiverged, match="lower --lr"):
        trainer.fit(unstable, 20, progress=False)
    model, trainer, unstable = make(restarts=2)
    trainer.fit(unstable, 20, progress=False)
    assert trainer.restarts_used == 1 and trainer.base_lr == pytest.approx(0.04)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_contrastive_divergence_loss_by_hand():
    loss, logs = contrastive_divergence_loss(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 5.0]), alpha=0.1)
    # (1.5 - 4) + 0.1 ((1 + 4)/2 + (9 + 25)/2) = -2.5 + 1.95
    assert float(loss) == pytest.approx(-0.55)
    assert float(logs["e_pos"]) == 1.5 and float(logs["e_neg"]) == 4.0


def test_draw_negatives_moves_and_stores_buffer_states():
    buffer = ReplayBuffer(lambda n: torch.zeros(n, 2), 10, 0.0, torch.Generator().manual_seed(0))
    # E(x) = -x_1 - x_2 has gradient (-1, -1): one noiseless step of size 0.5 moves every coordinate by +0.5
    x = draw_negatives(lambda x: -x.sum(1), buffer, 4, n_steps=1, step_size=0.5, noise_scale=0.0)
    assert torch.allclose(x, torch.full((4, 2), 0.5))
    assert int((buffer.states == 0.5).all(1).sum()) >= 1


# ------------------------------------------------------------------------------------------------
# evaluation
# ------------------------------------------------------------------------------------------------


def test_grid_log_partition_and_nll_of_a_gaussian():
    # E(x) = |x - m|^2 / (2 s^2): Z = 2 pi s^2; NLL(x) = E(x) + log Z
    m, s = torch.tensor([0.5, -0.3]), 0.7
    energy = lambda x: ((x - m.to(x)) ** 2).sum(1) / (2 * s**2)  # noqa: E731
    bounds = (-6.0, 6.0, -6.0, 6.0)
    assert grid_log_partition(energy, bounds, 400) == pytest.approx(math.log(2 * math.pi * s**2), abs=1e-6)
    x = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    exact = float(energy(x).mean()) + math.log(2 * math.pi * s**2)
    assert grid_nll(energy, x, bounds, 400) == pytest.approx(exact, abs=1e-6)


def test_nll_floor_is_the_gaussian_entropy():
    s = 0.5
    dataset = gaussian_mixture([[0.0, 0.0]], [s])
    mean, se = nll_floor(dataset, 20000, torch.Generator().manual_seed(0))
    assert abs(mean - (1 + math.log(2 * math.pi * s**2))) < 4 * se  # H = 1 + log(2 pi s^2) in 2-D


def test_frechet_distance_of_two_gaussians_closed_form():
    # commuting (diagonal) covariances: d^2 = |m1 - m2|^2 + sum (s1 - s2)^2
    m1, m2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    s1, s2 = np.array([1.0, 2.0, 0.5]), np.array([2.0, 1.0, 0.5])
    exact = ((m1 - m2) ** 2).sum() + ((s1 - s2) ** 2).sum()
    assert frechet_distance_from_moments(m1, np.diag(s1**2), m2, np.diag(s2**2)) == pytest.approx(exact)
    # general covariances: tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2), computed here by eigendecompositions
    rng = np.random.default_rng(0)
    A, B = rng.normal(size=(3, 3)), rng.normal(size=(3, 3))
    S1, S2 = A @ A.T + np.eye(3), B @ B.T + np.eye(3)

    def sqrt_psd(M):
        w, V = np.linalg.eigh(M)
        return V @ np.diag(np.sqrt(np.clip(w, 0, None))) @ V.T

    root = sqrt_psd(S1)
    exact = np.trace(S1 + S2 - 2 * sqrt_psd(root @ S2 @ root))
    assert frechet_distance_from_moments(np.zeros(3), S1, np.zeros(3), S2) == pytest.approx(exact, rel=1e-8)


def test_frechet_distance_from_samples_approaches_the_closed_form():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(200000, 2, generator=gen, dtype=torch.float64)
    b = 1.0 + 2.0 * torch.randn(200000, 2, generator=gen, dtype=torch.float64)
    # |(1,1)|^2 + 2 (2 - 1)^2 = 4; the plug-in estimate's error is O(1/sqrt(N)) ~ 0.02 here
    assert frechet_distance(a, b) == pytest.approx(4.0, abs=0.05)


def test_gaussian_baseline_has_the_data_moments():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5000, 3, generator=gen) @ torch.tensor([[1.0, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.2]])
    y = gaussian_samples_like(x, 50000, gen)
    assert torch.allclose(torch.cov(y.T), torch.cov(x.T), atol=0.05)


def test_frechet_scorer_on_digits_orders_the_references():
    data = load_signed_images("digits")
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    clf, accuracy = train_feature_classifier(data.x_train, data.y_train, data.x_test, data.y_test, epochs=15,
                                             generator=gen)
    assert accuracy > 0.9
    scorer = FrechetScorer(clf, data.x_train, data.x_test)
    assert scorer.floor < scorer.gaussian_baseline(gen) < scorer.noise_baseline(gen)
    assert scorer.label_entropy(data.x_test) == pytest.approx(math.log(10), abs=0.02)  # digits are balanced


def test_expected_calibration_error_by_hand():
    # two bins of width 0.5, three classes
    probs = torch.tensor([[0.9, 0.05, 0.05], [0.8, 0.1, 0.1], [0.3, 0.3, 0.4], [0.45, 0.1, 0.45]])
    labels = torch.tensor([0, 1, 2, 0])
    # bin [0.5, 1): samples 0, 1: confidence 0.85, accuracy 0.5; bin [0, 0.5): samples 2, 3: confidence 0.425,
    # accuracy 1.0 (argmax of sample 3 is class 0, the first of the tie). ECE = 0.5*0.35 + 0.5*0.575
    assert expected_calibration_error(probs, labels, n_bins=2) == pytest.approx(0.5 * 0.35 + 0.5 * 0.575)
    conf, acc, count = reliability_bins(probs, labels, n_bins=2)
    assert count.tolist() == [2, 2] and acc.tolist() == [1.0, 0.5]


def test_fpr_at_95_tpr_by_hand():
    scores_in = np.arange(100.0)  # keeping 95 % of them sets the threshold at 5
    assert fpr_at_tpr(scores_in, [4.0, 5.0, 6.0, 100.0]) == pytest.approx(0.75)


def test_psnr_by_hand():
    reference = torch.zeros(4, 8, 8)
    # MSE = 0.01, range 2: 10 log10(4 / 0.01)
    assert psnr(reference + 0.1, reference) == pytest.approx(10 * math.log10(400.0))


def test_trainer_fits_a_plain_list_of_tensors(tmp_path):
    # no dummy nn.Module: the tensors themselves; least squares for y = 2x + 1 lands on (2, 1)
    x = torch.linspace(-1, 1, 50)
    y = 2 * x + 1
    w, b = torch.zeros((), requires_grad=True), torch.zeros((), requires_grad=True)
    trainer = Trainer([w, b], tiny_run(tmp_path), lr=0.1)
    trainer.fit(lambda step: (((w * x + b - y) ** 2).mean(), {}), 400, progress=False)
    assert float(w) == pytest.approx(2.0, abs=1e-3) and float(b) == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(ValueError, match="nn.Module"):
        Trainer([w], None, lr=0.1, ema_decay=0.9)
