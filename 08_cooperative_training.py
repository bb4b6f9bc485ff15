"""Lesson 08 -- Cooperative and adversarial training, JEM, and forward vs reverse KL.

An energy model needs samples of itself to learn, and short Langevin chains from noise give poor ones.
This lesson pairs the energy with a second network: a generator that proposes samples the energy revises
(cooperative training), an autoencoder whose reconstruction error is the energy (energy-based GANs), or a
classifier that already *is* an energy (JEM). It starts with the two directions of the KL divergence, which
decide whether a fit covers every mode or seeks one, and with the Donsker-Varadhan critic that estimates a
KL from samples alone, the route a GAN's discriminator takes.

You will learn
- why maximum likelihood (forward KL) covers modes and reverse KL seeks one, with the exact optima;
- how a critic network turns samples into a KL estimate (Donsker-Varadhan), and how close it gets;
- cooperative training: generator proposes, energy revises, both learn; against an energy alone;
- EBGAN's margin loss and the pulling-away term, counted in modes covered;
- JEM: one classifier gives E(x, y) and E(x), and what joint training costs in accuracy and calibration;
- what makes joint training diverge, the stabilisers, and restarting from the last good weights.

Prerequisites: lesson 01 (energies, Langevin), lesson 05 (why MLE needs samples), lesson 07 (neural
EBMs: the guarded training loop, replay buffers, the Frechet distance in classifier features).

Everything runs on the CPU by design: the networks are small MLPs, where a GPU only adds launch latency.

Run:  python 08_cooperative_training.py            (default, ~2.5 minutes of CPU time on a 2-core laptop)
      python 08_cooperative_training.py --quick    (about 20 s of CPU time; every code path runs)
      python 08_cooperative_training.py --help     (every hyperparameter, with advice)
      python 08_cooperative_training.py --show     (also open the figure windows)

Figures (outputs/08_cooperative_training/):
  fig01_forward_vs_reverse_kl.png   one Gaussian fitted to two modes: forward fit, both reverse optima, the landscape
  fig02_dv_critic.png               Donsker-Varadhan critics against log q/p, and their KL estimates against quadrature
  fig03_coop_toy.png                2-D toy: generator samples, CoopNets and EBM-only densities and samples
  fig04_coop_digits.png             digits: generator, revised and EBM-only samples, Frechet distances with references
  fig05_ebgan.png                   EBGAN samples without and with the pulling-away term, modes covered over seeds
  fig06_jem_calibration.png         reliability diagrams of JEM and of the plain classifier
  fig07_jem_samples_log_px.png      JEM's class-conditional samples; -E(x) on test digits and on noise, both models
  fig08_jem_divergence.png          energies of data and samples: stable JEM vs an unstable run with restarts

metrics.json:
  kl_forward_fit                KL(p || q) of the moment-matched Gaussian (the forward-KL optimum), by quadrature
  kl_forward_fit_numeric        the same after minimising KL(p || q) by quadrature (checks the closed form)
  kl_reverse_fits               both reverse-KL optima: mean, std, KL(q || p) and KL(p || q)
  dv_fits                       names of the fits the DV critic was trained at
  dv_kl_estimate                DV estimate of KL(q || p) from samples, one per fit (held-out samples)
  dv_kl_se                      its delta-method standard error
  dv_kl_exact                   KL(q || p) by quadrature at the same fits
  dv_kl_optimal_critic          the DV estimate with the exact critic log q/p on the same samples
  dv_kl_max_rel_error           max over fits of |estimate - exact| / exact (target < 0.10)
  coop_toy_nll                  exact (grid) NLL of the CoopNets energy on held-out toy data, nats per point
  ebm_only_toy_nll              the same for the energy trained from noise with the same Langevin budget
  toy_nll_floor                 the entropy H(p) of the toy target: no model can go below it
  coop_toy_mmd                  MMD^2 of CoopNets' revised samples to fresh data
  generator_toy_mmd             MMD^2 of the generator's own samples
  ebm_only_toy_mmd              MMD^2 of the EBM-only short-run samples
  toy_mmd_floor                 RMS of MMD^2(data, fresh data): what a perfect sampler scores
  coop_toy_seconds              training time of both toy runs (a timing)
  coop_digits_fd                Frechet distance (classifier features) of CoopNets' revised digit samples
  generator_digits_fd           the same for the generator's own samples
  ebm_only_digits_fd            the same for the EBM-only short-run samples
  digits_fd_floor               test digits against training digits
  digits_fd_baselines           a fitted full-covariance Gaussian and uniform noise
  feature_classifier_accuracy   test accuracy of the classifier whose features the FD uses
  ebgan_modes_covered           modes covered of 8, mean and s.e. over seeds, without and with pulling-away
  ebgan_quality_fraction        fraction of samples within 3 std of a mode, mean and s.e., both settings
  ebgan_per_seed_covered        modes covered per seed, both settings
  ebgan_modes_covered_during_training   modes covered averaged over the training curve (how fast), mean and s.e.
  jem_accuracy                  JEM's test accuracy on the digits
  clf_accuracy                  the plain classifier's (same network, same initial weights and epochs)
  jem_ece                       JEM's expected calibration error (equal-width bins)
  clf_ece                       the plain classifier's
  jem_seconds                   training time of both (a timing)
  jem_conditional_accuracy      how often JEM and the feature classifier label JEM's class-conditional samples right
  log_px_auroc_digits_vs_noise  AUROC of -E(x) for test digits against uniform noise, both models
  jem_unstable_diverged         whether the unstable setting of section 5 tripped the guard
  jem_restarts                  restarts the guarded trainer needed to finish the unstable setting
  jem_restarted_accuracy        test accuracy of that restarted run
"""
LESSON = "08_cooperative_training"  # outputs go to outputs/08_cooperative_training/


# %% [markdown]
# # Lesson 08 -- Cooperative and adversarial training, JEM, forward vs reverse KL
#
# ## Setup
# Every number a student may want to change is a field of `Config` (and a flag: `--dv-steps 1000`).

# %%
from dataclasses import dataclass

from common.config import between, choice, count, nonnegative, parse_flags, positive, probability


@dataclass
class Config:
    # -- section 1: one Gaussian fitted to a two-mode mixture p = w N(m1, s^2) + (1 - w) N(m2, s^2)
    mix_means: tuple[float, ...] = between((-2.0, 2.0), -10, 10)  # the two mode centres; far apart = one
        # reverse-KL optimum per mode; at -1,1 (3.3 std apart) they have merged into one in the middle
    mix_std: float = positive(0.6)  # std s of each mode
    mix_weight: float = between(0.6, 0, 1, open_low=True, open_high=True)  # weight w of the first mode
    dv_hidden: int = count(32)  # hidden width of the DV critic T(x) (1 -> h -> h -> 1, SiLU)
    dv_steps: int = count(400)  # Adam steps per critic; with fewer the estimate (a lower bound) comes out low
    dv_batch: int = count(1000, minimum=10)  # fresh samples of q and of p per critic step
    dv_lr: float = positive(1e-2)  # critic learning rate (cosine-decayed); at 3e-3 the forward-fit estimate is ~9 % low
    dv_eval: int = count(50000, minimum=100)  # held-out samples of each for the final estimate (its s.e. ~1/sqrt)
    # -- section 2: cooperative training (generator proposes, energy revises) vs the energy alone
    toy: str = choice("8gaussians", ("8gaussians", "two_moons", "rings", "swiss_roll"))  # 2-D target
    coop_steps: int = count(1500)  # training iterations on the toy (each: K Langevin steps + one Adam step)
    coop_batch: int = count(256, minimum=10)  # data points and proposals per iteration
    langevin_steps: int = count(15)  # K: Langevin steps per iteration, the SAME for both methods (CoopNets ~15)
    toy_step_size: float = positive(0.02)  # Langevin step h on the toy, at T = 1 (noise sqrt(2h))
    toy_hidden: int = count(64)  # hidden width of the toy energy and generator (two hidden layers each)
    z_dim: int = count(4)  # generator input dimension on the toy
    coop_lr: float = positive(1e-3)  # Adam learning rate for energy and generator; above ~3e-3 the energy oscillates
    coop_alpha: float = nonnegative(0.1)  # energy L2 penalty alpha (mean E^2): keeps E near 0 so it cannot drift
    n_eval: int = count(2000, minimum=100)  # samples for MMD (and data for the NLL)
    mmd_repeats: int = count(5, minimum=2)  # data-vs-fresh-data pairs for the MMD noise floor
    grid_n: int = count(300, minimum=50)  # grid points per axis for log Z (exact NLL); 300 is converged for 8gaussians
    digits_steps: int = count(1000)  # training iterations on the 8x8 digits (most of section 2's time)
    digits_batch: int = count(128, minimum=10)  # images per iteration
    digits_hidden: int = count(256)  # hidden width of the digit energy and generator
    digits_z_dim: int = count(16)  # generator input dimension on the digits
    img_step_size: float = positive(0.5)  # Langevin step h on images; with noise 0.01, T = 1e-4: noisy descent
    img_noise: float = positive(0.01)  # Langevin noise s on images (JEM's 0.01)
    fd_epochs: int = count(30)  # epochs of the feature classifier that defines the Frechet distance
    # -- section 3: EBGAN on 8 Gaussians
    margin: float = positive(1.0)  # EBGAN margin m: fakes are pushed up until E(G(z)) reaches m (paper ~1)
    pt_weight: float = nonnegative(0.1)  # pulling-away weight lambda_PT (paper 0.1); compared with 0
    ebgan_steps: int = count(1000)  # simultaneous discriminator + generator steps per run
    ebgan_seeds: int = count(3, minimum=2)  # seeds per setting (mean +- s.e. needs >= 2)
    ebgan_hidden: int = count(64)  # hidden width of the autoencoder and the generator
    ebgan_code: int = count(8)  # autoencoder code size (the PT term acts on these codes)
    ebgan_lr: float = positive(1e-3)  # Adam lr (betas 0.5, 0.999, as GANs use); 5e-3 makes the game oscillate
    ebgan_cover: float = between(0.2, 0, 1)  # a mode is covered with >= this fraction of its fair share N/8
    ebgan_eval_every: int = count(50)  # count the modes every this many steps (the curve in fig05)
    # -- sections 4 and 5: JEM on the digits
    jem_epochs: int = count(20)  # epochs for JEM and for the plain classifier (the same)
    jem_batch: int = count(64, minimum=2)  # images per step (JEM's 64)
    jem_hidden: int = count(256)  # hidden width of the classifier f (64 -> h -> h -> 10, SiLU)
    jem_lr: float = positive(1e-3)  # Adam lr after warm-up; JEM used 1e-4 on CIFAR; see section 5 for 1e-2
    jem_warmup: int = count(100, minimum=0)  # linear lr warm-up steps: early energies are wild, small steps first
    jem_alpha: float = nonnegative(0.1)  # energy L2 alpha (E(x)^2 terms): keeps energies from drifting off
    sgld_steps: int = count(20)  # SGLD steps per update (JEM: 20)
    sgld_step_size: float = positive(1.0)  # SGLD step h (JEM: 1)
    sgld_noise: float = positive(0.01)  # SGLD noise s (JEM: 0.01, so T = s^2/(2h) = 5e-5)
    buffer_size: int = count(10000)  # replay buffer of SGLD states (JEM: 10,000)
    reinit_fraction: float = probability(0.05)  # fraction of each draw restarted from noise (JEM: 5 %)
    energy_bound: float = positive(1e4)  # the guard stops (or restarts) a run once |E| or the loss exceeds this
    ece_bins: int = count(15, minimum=2)  # equal-width confidence bins of the ECE and the reliability diagram
    cond_steps: int = count(100)  # SGLD steps for the class-conditional samples
    n_cond: int = count(8)  # class-conditional samples per class
    restart_lr_factor: float = between(0.2, 0, 1, open_low=True, open_high=True)  # lr multiplier at each restart
    unstable_lr: float = positive(1e-2)  # section 5's diverging setting: 10x jem_lr, no warm-up, alpha = 0
    restarts: int = count(4, minimum=0)  # restarts allowed in section 5 (0: the guard just stops the run)


QUICK = {
    "dv_steps": 100, "dv_batch": 500, "dv_eval": 2000,
    "coop_steps": 100, "coop_batch": 128, "n_eval": 500, "mmd_repeats": 2, "grid_n": 120, "digits_steps": 60,
    "digits_hidden": 64, "fd_epochs": 5, "ebgan_steps": 100, "ebgan_seeds": 2, "ebgan_eval_every": 20,
    "jem_epochs": 2, "jem_hidden": 64, "buffer_size": 500, "cond_steps": 20, "n_cond": 2,
}


def check(cfg):
    if len(cfg.mix_means) != 2:
        raise ValueError("--mix-means needs two numbers (the two mode centres)")
    if cfg.ebgan_eval_every >= cfg.ebgan_steps:
        raise ValueError("--ebgan-eval-every must be below --ebgan-steps (the curve needs two points)")


cfg, flags = parse_flags(Config, LESSON, __doc__, quick=QUICK, check=check, exercises=(4,))

import math  # noqa: E402  (heavy imports after the flags, so --help answers at once)
import time  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from scipy import optimize, special, stats  # noqa: E402

from common import plotting  # noqa: E402
from common.datasets import dequantize, load_signed_images, toy_dataset  # noqa: E402
from common.diagnostics import auroc, median_bandwidth, mmd_rbf  # noqa: E402
from common.divergences import donsker_varadhan_bound, donsker_varadhan_se, kl_by_quadrature  # noqa: E402
from common.evaluation import (  # noqa: E402
    FrechetScorer,
    expected_calibration_error,
    grid_nll,
    mmd_noise_floor,
    nll_floor,
    reliability_bins,
    train_feature_classifier,
)
from common.lesson import TrainingDiverged, start_lesson  # noqa: E402
from common.nets import ClassifierEnergy, MLPClassifier, MLPEnergy, mlp  # noqa: E402
from common.samplers import ReplayBuffer, effective_temperature, langevin  # noqa: E402
from common.training import Trainer, contrastive_divergence_loss, draw_negatives  # noqa: E402

run = start_lesson(cfg, flags, cpu_only="MLPs of at most 256 units on 1-D/2-D targets and 8x8 digits, SciPy quadrature")
EIGHT_RADIUS, EIGHT_STD = 4.0, 0.5  # common.datasets.eight_gaussians: modes on a circle of radius 4, std 0.5
device = run.device

# %% [markdown]
# ## 1. Forward vs reverse KL, and a critic that estimates a KL from samples
#
# Fit one Gaussian q = N(mu, sd^2) to a mixture p of two Gaussians. The two directions of the KL ask
# different things (docs/derivations/donsker_varadhan.md, first part):
#
#     forward  KL(p || q) = E_p[log p - log q]   -- large where p has mass and q does not: q must COVER p
#     reverse  KL(q || p) = E_q[log q - log p]   -- large where q has mass and p does not: q must stay INSIDE p
#
# Maximum likelihood minimises the forward KL (E_p log p is a constant), and for a Gaussian q that has a
# closed form: match the mean and the variance of p (moment matching). The reverse KL has no closed
# form; we minimise it by scipy quadrature from two starts and find two local optima, one per mode.
#
# Then the reverse KL *from samples only*. Donsker and Varadhan's representation
#
#     KL(q || p) = sup_T  E_q[T(x)] - log E_p[e^T(x)],     attained at T* = log q/p + const,
#
# turns the divergence into a fit of a critic network T, trained by maximising the right-hand side on
# samples of q and p, exactly like a GAN's discriminator (docs/derivations/donsker_varadhan.md).

# %%
mix_means = np.array(cfg.mix_means, dtype=np.float64)
mix_weights = np.array([cfg.mix_weight, 1 - cfg.mix_weight])
LOW, HIGH = mix_means.min() - 12 * cfg.mix_std - 10, mix_means.max() + 12 * cfg.mix_std + 10  # quadrature limits


def mixture_log_pdf(x):
    # log p(x) = logsumexp_k [log w_k + log N(x; m_k, s^2)]   (vectorised, for plots and samples)
    x = np.asarray(x, dtype=np.float64)[..., None]
    return special.logsumexp(np.log(mix_weights) + stats.norm.logpdf(x, mix_means, cfg.mix_std), axis=-1)


LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def gaussian_log_pdf(mu, sd):
    # log N(x; mu, sd^2) for one float x: scipy's quad calls it ~10^5 times, so plain math, not scipy.stats
    return lambda x: -0.5 * ((x - mu) / sd) ** 2 - math.log(sd) - LOG_SQRT_2PI


component_log_pdfs = [gaussian_log_pdf(m, cfg.mix_std) for m in mix_means]


def mixture_log_pdf_scalar(x):
    a, b = (math.log(w) + f(x) for w, f in zip(mix_weights, component_log_pdfs))
    return max(a, b) + math.log1p(math.exp(-abs(a - b)))  # log(e^a + e^b) without overflow


def forward_kl(mu, sd):
    # KL(p || q), the maximum-likelihood objective up to the constant -H(p)
    return kl_by_quadrature(mixture_log_pdf_scalar, gaussian_log_pdf(mu, sd), LOW, HIGH, points=mix_means)


def reverse_kl(mu, sd):
    # KL(q || p): q's own entropy against how much p it sits on
    return kl_by_quadrature(gaussian_log_pdf(mu, sd), mixture_log_pdf_scalar, LOW, HIGH, points=(mu, *mix_means))


# forward KL: the closed form is moment matching, mu = sum w m,  sd^2 = sum w (s^2 + m^2) - mu^2
mu_fwd = float(mix_weights @ mix_means)
sd_fwd = math.sqrt(float(mix_weights @ (cfg.mix_std**2 + mix_means**2)) - mu_fwd**2)
# ... and, as a check, the same minimum found numerically (over mu and log sd, so sd stays positive)
numeric = optimize.minimize(lambda th: forward_kl(th[0], math.exp(th[1])), x0=[0.5, 0.0], method="Nelder-Mead",
                            options={"xatol": 1e-6, "fatol": 1e-10})
reverse_fits = []
for start in mix_means:  # one start at each mode: the optimiser stays in the basin it starts in
    res = optimize.minimize(lambda th: reverse_kl(th[0], math.exp(th[1])), x0=[start + 0.3, math.log(cfg.mix_std)],
                            method="Nelder-Mead", options={"xatol": 1e-6, "fatol": 1e-10})
    mu_r, sd_r = float(res.x[0]), math.exp(float(res.x[1]))
    reverse_fits.append({"mean": mu_r, "std": sd_r, "kl_reverse": float(res.fun), "kl_forward": forward_kl(mu_r, sd_r)})

kl_fwd, kl_fwd_rev = forward_kl(mu_fwd, sd_fwd), reverse_kl(mu_fwd, sd_fwd)
print(f"\n1. One Gaussian fitted to p = {mix_weights[0]:g} N({mix_means[0]:g}, {cfg.mix_std:g}^2) + "
      f"{mix_weights[1]:g} N({mix_means[1]:g}, {cfg.mix_std:g}^2)")
print(f"   {'fit':<28}{'mean':>8}{'std':>8}{'KL(p||q)':>11}{'KL(q||p)':>11}")
print(f"   {'forward (moment matching)':<28}{mu_fwd:8.3f}{sd_fwd:8.3f}{kl_fwd:11.4f}{kl_fwd_rev:11.4f}")
print(f"   {'forward (numeric minimum)':<28}{numeric.x[0]:8.3f}{math.exp(numeric.x[1]):8.3f}{numeric.fun:11.4f}")
for k, fit in enumerate(reverse_fits):
    print(f"   {f'reverse, optimum {k + 1}':<28}{fit['mean']:8.3f}{fit['std']:8.3f}{fit['kl_forward']:11.4f}"
          f"{fit['kl_reverse']:11.4f}")
print(f"   -log w of each mode: {-math.log(mix_weights[0]):.4f}, {-math.log(mix_weights[1]):.4f} "
      "(the reverse KL of a q that sits exactly on one mode and ignores the other)")
run.metrics["kl_forward_fit"] = kl_fwd
run.metrics["kl_forward_fit_numeric"] = float(numeric.fun)
run.metrics["kl_reverse_fits"] = reverse_fits

# the reverse-KL landscape over (mu, sd) on a fixed grid (vectorised trapezoid rule, for the picture only)
x_grid = np.linspace(LOW, HIGH, 6000)
log_p_grid = mixture_log_pdf(x_grid)
mus, sds = np.linspace(mix_means.min() - 1.5, mix_means.max() + 1.5, 90), np.geomspace(0.2, 4.0, 70)
landscape = np.empty((len(sds), len(mus)))  # (S, M), one row of sigma at a time (keeps memory small)
for i, sd in enumerate(sds):
    log_q = stats.norm.logpdf(x_grid[None], mus[:, None], sd)  # (M, X)
    landscape[i] = np.trapezoid(np.exp(log_q) * (log_q - log_p_grid), x_grid, axis=-1)

fig, axes = plotting.figure(2, title=f"One Gaussian $q$ fitted to two modes $p$ (weight $w$ = {mix_weights[0]:g}, "
                                     f"means {mix_means[0]:g}, {mix_means[1]:g}, std {cfg.mix_std:g})")
xs = np.linspace(mix_means.min() - 4, mix_means.max() + 4, 600)
axes[0].fill_between(xs, np.exp(mixture_log_pdf(xs)), color="gray", alpha=0.35, label="$p$ (data)")
axes[0].plot(xs, stats.norm.pdf(xs, mu_fwd, sd_fwd), lw=2,
             label=f"forward KL (ML): $\\mathrm{{KL}}(p\\,\\|\\,q)$ = {kl_fwd:.2f}")
for k, fit in enumerate(reverse_fits):
    axes[0].plot(xs, stats.norm.pdf(xs, fit["mean"], fit["std"]), lw=2, ls="--",
                 label=f"reverse KL optimum {k + 1}: $\\mathrm{{KL}}(q\\,\\|\\,p)$ = {fit['kl_reverse']:.2f}")
axes[0].set(xlabel="$x$", ylabel="density", title="forward covers, reverse seeks a mode", ylim=(0, None))
plotting.legend_below(axes[0])
levels = np.geomspace(landscape.min(), np.quantile(landscape, 0.9), 22)  # log-spaced: both basins show
contour = axes[1].contourf(mus, sds, landscape, levels=levels, norm=LogNorm(), extend="max")
fig.colorbar(contour, ax=axes[1], label="$\\mathrm{KL}(q\\,\\|\\,p)$ (nats, log scale)", format="%.2g")
axes[1].plot([f["mean"] for f in reverse_fits], [f["std"] for f in reverse_fits], "r*", ms=14, mec="w",
             label="reverse optima (scipy)")
axes[1].plot(mu_fwd, sd_fwd, "wo", ms=9, mec="k", label="forward (moment matching)")
axes[1].set(yscale="log", xlabel="mean $\\mu$ of $q$", ylabel="std $\\sigma$ of $q$",
            title="reverse KL over $(\\mu, \\sigma)$: two basins")
axes[1].set_yticks([0.25, 0.5, 1, 2, 4], labels=["0.25", "0.5", "1", "2", "4"], minor=False)
axes[1].yaxis.set_minor_locator(plt.NullLocator())
plotting.legend_below(axes[1])
run.savefig(fig, "fig01_forward_vs_reverse_kl")

# What to notice: the maximum-likelihood Gaussian sits between the modes, where p has almost no mass,
# because missing either mode would make log q very negative on data. The reverse-KL fits each hug one
# mode (std close to s): q pays nothing for ignoring the other mode except -log w of the mode it sits on,
# so the lighter mode's optimum is only a local one. A GAN-like sampler trained on a reverse-type
# divergence has the same incentive: this is mode collapse, before any neural network is involved.

# %%
gen = run.generator("dv-critic")


def sample_gaussian(n, mu, sd):
    return mu + sd * torch.randn(n, 1, generator=gen, device=device)


def sample_mixture(n):
    first = torch.rand(n, 1, generator=gen, device=device) < mix_weights[0]
    centre = torch.where(first, mix_means[0], mix_means[1])
    return centre + cfg.mix_std * torch.randn(n, 1, generator=gen, device=device)


def fit_dv_critic(mu, sd, name):
    """Train T by maximising E_q[T] - log E_p[e^T] on fresh samples; returns the critic (evaluation mode)."""
    torch.manual_seed(run.seed)  # the same initial critic at every fit
    critic = mlp((1, cfg.dv_hidden, cfg.dv_hidden, 1)).to(device)
    trainer = Trainer(critic, run, lr=cfg.dv_lr, blame="dv_lr", schedule="cosine", name=f"DV critic ({name})")

    def loss_fn(step):
        dv = donsker_varadhan_bound(critic(sample_gaussian(cfg.dv_batch, mu, sd))[:, 0],
                                    critic(sample_mixture(cfg.dv_batch))[:, 0])
        return -dv, {"dv": dv.detach()}  # maximise the bound

    trainer.fit(loss_fn, cfg.dv_steps, desc=f"DV critic, {name}")
    return critic.eval()


dv_fits = {"forward fit": (mu_fwd, sd_fwd)}
dv_fits.update({f"reverse optimum {k + 1}": (f["mean"], f["std"]) for k, f in enumerate(reverse_fits)})
dv_rows = []
critics = {}
for name, (mu, sd) in dv_fits.items():
    critic = critics[name] = fit_dv_critic(mu, sd, name)
    x_q, x_p = sample_gaussian(cfg.dv_eval, mu, sd), sample_mixture(cfg.dv_eval)  # held out: never trained on
    with torch.no_grad():
        t_q, t_p = critic(x_q)[:, 0], critic(x_p)[:, 0]
    # the exact critic log q/p on the same samples: what a perfect network would give (sampling noise only)
    def best(x, mu=mu, sd=sd):
        x = x.cpu().numpy()[:, 0]
        return torch.as_tensor(stats.norm.logpdf(x, mu, sd) - mixture_log_pdf(x))

    dv_rows.append({"fit": name, "estimate": float(donsker_varadhan_bound(t_q, t_p)),
                    "se": donsker_varadhan_se(t_q, t_p), "exact": reverse_kl(mu, sd),
                    "optimal": float(donsker_varadhan_bound(best(x_q), best(x_p)))})

print(f"\n   Donsker-Varadhan estimate of KL(q || p) from samples ({cfg.dv_steps} critic steps, batch "
      f"{cfg.dv_batch}; {cfg.dv_eval} held-out samples of each)")
print(f"   {'fit':<20}{'DV estimate':>14}{'exact (quad)':>14}{'rel. error':>12}{'exact critic':>14}")
for r in dv_rows:
    print(f"   {r['fit']:<20}{r['estimate']:9.4f} ±{r['se']:.3f}{r['exact']:14.4f}"
          f"{(r['estimate'] - r['exact']) / r['exact']:+12.3f}{r['optimal']:14.4f}")
dv_rel = max(abs(r["estimate"] - r["exact"]) / r["exact"] for r in dv_rows)
print(f"   max relative error {dv_rel:.3f}  (target < 0.10)")
run.metrics["dv_fits"] = [r["fit"] for r in dv_rows]
run.metrics["dv_kl_estimate"] = [r["estimate"] for r in dv_rows]
run.metrics["dv_kl_se"] = [r["se"] for r in dv_rows]
run.metrics["dv_kl_exact"] = [r["exact"] for r in dv_rows]
run.metrics["dv_kl_optimal_critic"] = [r["optimal"] for r in dv_rows]
run.metrics["dv_kl_max_rel_error"] = dv_rel

fig, axes = plotting.figure(2, title=f"Donsker-Varadhan critics, {cfg.dv_steps} steps, width {cfg.dv_hidden}, "
                                     f"batch {cfg.dv_batch}")
xs_t = torch.linspace(mix_means.min() - 3, mix_means.max() + 3, 400, device=device)[:, None]
for (name, (mu, sd)), color in zip(dv_fits.items(), plotting.COURSE_STYLE["axes.prop_cycle"].by_key()["color"]):
    with torch.no_grad():
        learned = critics[name](xs_t)[:, 0].cpu().numpy()
    exact = stats.norm.logpdf(xs_t.cpu().numpy()[:, 0], mu, sd) - mixture_log_pdf(xs_t.cpu().numpy()[:, 0])
    # T is defined up to a constant: shift the learned critic to agree with log q/p on average under q
    weights = stats.norm.pdf(xs_t.cpu().numpy()[:, 0], mu, sd)
    shift = np.sum(weights * (exact - learned)) / weights.sum()
    axes[0].plot(xs_t.cpu()[:, 0], learned + shift, color=color, lw=2, label=name)
    axes[0].plot(xs_t.cpu()[:, 0], exact, color=color, lw=1.8, ls=":")
axes[0].plot([], [], "k-", lw=2, label="learned critic $T(x)$")  # legend entries for the two line styles
axes[0].plot([], [], "k:", lw=1.8, label="exact $\\log q(x)/p(x)$")
axes[0].set(xlabel="$x$", ylabel="$T(x)$ (shifted by a constant)", title="learned critic vs the optimal one",
            ylim=(-8, 8))
plotting.legend_below(axes[0], ncol=2)
pos = np.arange(len(dv_rows))
axes[1].bar(pos - 0.2, [r["exact"] for r in dv_rows], 0.4, label="exact $\\mathrm{KL}(q\\,\\|\\,p)$, quadrature")
axes[1].bar(pos + 0.2, [r["estimate"] for r in dv_rows], 0.4, yerr=[2 * r["se"] for r in dv_rows], capsize=4,
            label="DV estimate ± 2 s.e.")
axes[1].set(xticks=pos, ylabel="$\\mathrm{KL}(q\\,\\|\\,p)$ (nats)",
            title=f"max relative error {100 * dv_rel:.1f} % (target 10 %)")
axes[1].set_xticklabels([r["fit"].replace(" optimum", "\noptimum") for r in dv_rows])
plotting.legend_below(axes[1], ncol=2, gap=48)
run.savefig(fig, "fig02_dv_critic")

# What to notice: where q has mass, the learned critic follows log q/p; where q has none it is free
# (the bound does not care), which is why the curves part ways in the tails. The estimate is a LOWER
# bound: an under-trained critic under-estimates the KL. The largest KL (the forward fit) is the hardest,
# because log E_p[e^T] is carried by the few p-samples between the modes where q/p is large: the s.e.
# grows like e^KL, the known weakness of DV and MINE-type estimators (McAllester and Stratos 2020).

# %% [markdown]
# ## 2. Cooperative training: the generator proposes, the energy revises
#
# Short Langevin chains from noise are the weak point of an energy model: K = 15 steps cannot carry
# noise to the data, so the energy learns to be a *transport map* for those 15 steps rather than a
# density (lesson 07). CoopNets (Xie et al. 2018) start the chains somewhere better: at the samples of a
# generator x = G(z). Each iteration
#
#     propose   x_0 = G(z),  z ~ N(0, I)
#     revise    x_{k+1} = x_k - h grad E(x_k) + sqrt(2 T h) xi_k,   k < K     (Langevin on the energy, with noise)
#     energy    loss_E = mean E(x_data) - mean E(x_K) + alpha (mean E(x_data)^2 + mean E(x_K)^2)
#     generator loss_G = mean |G(z) - x_K|^2                       (learn to jump to where the revision went)
#
# The energy is trained by maximum likelihood with the revised samples as negatives; the generator
# chases the revisions, so next time the chains start closer to the model. Nothing flows between the
# two losses: x_K is a constant for both (detached), so one optimiser can step both networks.
# The baseline is the same energy, same K, chains from uniform noise over the plotting box.
# On the toy the sampler runs at T = 1 (noise sqrt(2h)): it samples exp(-E) in the limit of many steps.

# %%
gen = run.generator("coop-toy")
toy = toy_dataset(cfg.toy)
x_lo, x_hi, y_lo, y_hi = toy.bounds


def uniform_box(n):
    u = torch.rand(n, 2, generator=gen, device=device)
    return torch.stack([x_lo + (x_hi - x_lo) * u[:, 0], y_lo + (y_hi - y_lo) * u[:, 1]], dim=1)


def draw_toy(n):
    return toy.sample(n, gen).to(device)


class Generator(torch.nn.Module):
    """x = G(z), z ~ N(0, I_z); ``squash`` bounds the output to [-1, 1] (images)."""

    def __init__(self, z_dim, out_shape, hidden, squash=False):
        super().__init__()
        self.z_dim, self.out_shape, self.squash = z_dim, tuple(out_shape), squash
        self.net = mlp((z_dim, hidden, hidden, math.prod(out_shape)))

    def forward(self, z):
        x = self.net(z)
        return (torch.tanh(x) if self.squash else x).reshape(len(z), *self.out_shape)

    def sample(self, n, generator):
        return self(torch.randn(n, self.z_dim, generator=generator, device=device))


def train_energy(energy, n_steps, batch, draw_data, propose, step_size, noise_scale, clamp, name, generator=None):
    """Maximum-likelihood training of ``energy``; negatives = K Langevin steps from ``propose(n)``.

    With a ``generator`` (cooperative training) the proposals are its samples and it learns from the revisions.
    """
    model = torch.nn.ModuleDict({"energy": energy, **({"generator": generator} if generator is not None else {})})
    trainer = Trainer(model, run, lr=cfg.coop_lr, blame="coop_lr", name=name)

    def loss_fn(step):
        x_pos = draw_data(batch)
        x_start = propose(batch)  # G(z) (with grad, for loss_G) or noise
        x_neg = draw_negatives(energy, lambda n: x_start.detach(), batch, n_steps=cfg.langevin_steps,
                               step_size=step_size, noise_scale=noise_scale, clamp=clamp, generator=gen)
        loss, logs = contrastive_divergence_loss(energy(x_pos), energy(x_neg), alpha=cfg.coop_alpha)
        if generator is not None:
            # loss_G = mean |G(z) - x_K|^2: the generator moves its proposals to where the energy sent them
            loss_g = ((x_start - x_neg) ** 2).flatten(1).sum(1).mean()
            loss, logs = loss + loss_g, {**logs, "generator_mse": loss_g.detach()}
        return loss, logs

    return trainer.fit(loss_fn, n_steps, desc=name)


def revise(energy, x0, step_size, noise_scale, clamp=None):
    """The model's sampler at evaluation: the same K Langevin steps as in training."""
    return langevin(energy, x0, cfg.langevin_steps, step_size, noise_scale=noise_scale, clamp=clamp,
                    generator=gen)[0].detach()


toy_noise = math.sqrt(2 * cfg.toy_step_size)  # T = 1
torch.manual_seed(run.seed)
coop_energy, coop_gen = MLPEnergy(2, (cfg.toy_hidden,) * 2).to(device), Generator(cfg.z_dim, (2,), cfg.toy_hidden)
coop_gen = coop_gen.to(device)
torch.manual_seed(run.seed)
solo_energy = MLPEnergy(2, (cfg.toy_hidden,) * 2).to(device)  # the same initial weights as coop_energy
t0 = time.perf_counter()
coop_hist = train_energy(coop_energy, cfg.coop_steps, cfg.coop_batch, draw_toy, lambda n: coop_gen.sample(n, gen),
                         cfg.toy_step_size, toy_noise, None, "CoopNets (toy)", generator=coop_gen)
coop_seconds = time.perf_counter() - t0
t0 = time.perf_counter()
solo_hist = train_energy(solo_energy, cfg.coop_steps, cfg.coop_batch, draw_toy, uniform_box,
                         cfg.toy_step_size, toy_noise, None, "EBM only (toy)")
solo_seconds = time.perf_counter() - t0

x_eval = draw_toy(cfg.n_eval)
with torch.no_grad():
    gen_samples = coop_gen.sample(cfg.n_eval, gen)
coop_samples = revise(coop_energy, gen_samples, cfg.toy_step_size, toy_noise)
solo_samples = revise(solo_energy, uniform_box(cfg.n_eval), cfg.toy_step_size, toy_noise)
bandwidth = median_bandwidth(x_eval, draw_toy(cfg.n_eval))
mmd_floor = mmd_noise_floor(draw_toy, cfg.n_eval, cfg.mmd_repeats, bandwidth)
floor, floor_se = nll_floor(toy, generator=gen)
with torch.no_grad():
    toy_nll = {name: grid_nll(e, x_eval, toy.bounds, cfg.grid_n) for name, e in
               (("coop", coop_energy), ("ebm_only", solo_energy))}
toy_mmd = {name: mmd_rbf(x, x_eval, bandwidth) for name, x in
           (("coop", coop_samples), ("generator", gen_samples), ("ebm_only", solo_samples))}

print(f"\n2. Cooperative training vs the energy alone on {cfg.toy}: {cfg.coop_steps} iterations, "
      f"K = {cfg.langevin_steps} Langevin steps (h = {cfg.toy_step_size:g}, T = 1) for both")
print(f"   exact NLL (grid, {cfg.grid_n}^2)   CoopNets {toy_nll['coop']:.3f}   EBM only {toy_nll['ebm_only']:.3f}   "
      f"floor H(p) = {floor:.3f} ± {floor_se:.3f} nats")
print(f"   MMD^2 to fresh data            CoopNets (revised) {toy_mmd['coop']:.4f}   generator alone "
      f"{toy_mmd['generator']:.4f}   EBM only {toy_mmd['ebm_only']:.4f}   noise floor {mmd_floor:.4f}")
print(f"   training time                  CoopNets {coop_seconds:.1f} s   EBM only {solo_seconds:.1f} s")
run.metrics["coop_toy_nll"] = toy_nll["coop"]
run.metrics["ebm_only_toy_nll"] = toy_nll["ebm_only"]
run.metrics["toy_nll_floor"] = floor
run.metrics["coop_toy_mmd"] = toy_mmd["coop"]
run.metrics["generator_toy_mmd"] = toy_mmd["generator"]
run.metrics["ebm_only_toy_mmd"] = toy_mmd["ebm_only"]
run.metrics["toy_mmd_floor"] = mmd_floor
run.metrics["coop_toy_seconds"] = {"coop": coop_seconds, "ebm_only": solo_seconds}

fig, axes = plotting.figure(2, 2, title=f"{cfg.toy}: CoopNets vs EBM only, {cfg.coop_steps} iterations, "
                                        f"$K$ = {cfg.langevin_steps} Langevin steps, $h$ = {cfg.toy_step_size:g}, "
                                        f"$T$ = 1\nfloors: $\\mathrm{{MMD}}^2$ {mmd_floor:.4f} (data vs fresh data), "
                                        f"NLL {floor:.2f} nats (the entropy $H(p)$)")
image = plotting.density_image(axes[0], toy.log_density, toy.bounds)
plotting.colorbar(axes[0], image, "data density $p(x)$ (relative)")
plotting.scatter_samples(axes[0], gen_samples[:600], color="#ff7f0e", size=8)
axes[0].set(title=f"data $p(x)$, generator samples $G(z)$\n$\\mathrm{{MMD}}^2$ {toy_mmd['generator']:.4f}",
            xlim=toy.bounds[:2], ylim=toy.bounds[2:])
for ax, energy, samples, key, label in ((axes[1], coop_energy, coop_samples, "coop", "CoopNets, revised samples"),
                                        (axes[2], solo_energy, solo_samples, "ebm_only", "EBM only, samples")):
    image = plotting.density_image(ax, lambda x, e=energy: -e(x), toy.bounds)
    plotting.colorbar(ax, image, "model $e^{-E(x)}$ (relative)")
    plotting.scatter_samples(ax, samples[:600], size=8)
    ax.set(title=f"{label}\nNLL {toy_nll[key]:.2f} nats, $\\mathrm{{MMD}}^2$ {toy_mmd[key]:.4f}",
           xlim=toy.bounds[:2], ylim=toy.bounds[2:])
plotting.training_curves(axes[3], {"CoopNets: revised samples": np.array(coop_hist["e_pos"]) -
                                   np.array(coop_hist["e_neg"]),
                                   "EBM only: Langevin from noise": np.array(solo_hist["e_pos"]) -
                                   np.array(solo_hist["e_neg"])}, xlabel="iteration")
axes[3].set(ylabel="$\\bar E$(data) $-$ $\\bar E$(negatives)", title="the contrast each energy sees")
plotting.legend_below(axes[3])
run.savefig(fig, "fig03_coop_toy")

# What to notice: the K revision steps improve the generator's samples (compare the two MMD^2 values),
# and the cooperative samples have the lower MMD^2 of the two methods. The exact NLL says the opposite: in
# the default run the energy trained from noise is the better density (3.85 against 3.98 nats, floor 3.53).
# Its chains must cross the whole box in K steps, so its negatives cover the space between the modes,
# while the cooperative negatives sit where the generator already is and leave the energy unconstrained
# elsewhere (the blurry ring). The energy gap near 0 is what converged maximum-likelihood training looks
# like; a gap that grows without bound is the start of divergence (section 5).

# %% [markdown]
# The same comparison on the 8x8 digits (64 dimensions, pixels in [-1, 1]). Here the sampler uses the usual
# image-EBM settings, step h = 0.5 and noise s = 0.01, so T = s^2 / (2h) = 1e-4: noisy gradient descent on
# E, not sampling at T = 1 (lesson 07). Quality is the Frechet distance (FD) in the features of a small
# classifier trained here, next to its floor (test images against training images) and two baselines.

# %%
gen = run.generator("coop-digits")
digits = load_signed_images("digits")
x_train, x_test = digits.x_train.to(device), digits.x_test.to(device)
feature_clf, feature_acc = train_feature_classifier(digits.x_train, digits.y_train, digits.x_test, digits.y_test,
                                                    epochs=cfg.fd_epochs, generator=torch.Generator().manual_seed(0))
scorer = FrechetScorer(feature_clf, digits.x_train, digits.x_test)
img_temperature = effective_temperature(cfg.img_step_size, cfg.img_noise)


def draw_digits(n):
    # dequantised: each grey level spread over its bin, so the energy cannot put infinite density on the grid
    batch = x_train[torch.randint(len(x_train), (n,), generator=gen, device=device)]
    return dequantize(batch, digits.n_levels, gen)


def uniform_images(n):
    return 2 * torch.rand(n, 1, *digits.shape, generator=gen, device=device) - 1


torch.manual_seed(run.seed)
coop_energy_img = MLPEnergy(64, (cfg.digits_hidden,) * 2).to(device)
coop_gen_img = Generator(cfg.digits_z_dim, (1, *digits.shape), cfg.digits_hidden, squash=True).to(device)
torch.manual_seed(run.seed)
solo_energy_img = MLPEnergy(64, (cfg.digits_hidden,) * 2).to(device)
img_args = (cfg.img_step_size, cfg.img_noise, (-1.0, 1.0))
train_energy(coop_energy_img, cfg.digits_steps, cfg.digits_batch, draw_digits,
             lambda n: coop_gen_img.sample(n, gen), *img_args, "CoopNets (digits)", generator=coop_gen_img)
train_energy(solo_energy_img, cfg.digits_steps, cfg.digits_batch, draw_digits, uniform_images, *img_args,
             "EBM only (digits)")

n_img = len(x_test)
with torch.no_grad():
    gen_images = coop_gen_img.sample(n_img, gen)
coop_images = revise(coop_energy_img, gen_images, *img_args)
solo_images = revise(solo_energy_img, uniform_images(n_img), *img_args)
fd = {"coop": scorer.score(coop_images.cpu()), "generator": scorer.score(gen_images.cpu()),
      "ebm_only": scorer.score(solo_images.cpu()), "floor": scorer.floor,
      "gaussian": scorer.gaussian_baseline(torch.Generator().manual_seed(1)),
      "noise": scorer.noise_baseline(torch.Generator().manual_seed(2))}
print(f"\n   digits: {cfg.digits_steps} iterations, K = {cfg.langevin_steps}, h = {cfg.img_step_size:g}, "
      f"s = {cfg.img_noise:g} (T = {img_temperature:.1e}); feature classifier test accuracy {feature_acc:.3f}")
print(f"   Frechet distance ({n_img} samples)  CoopNets (revised) {fd['coop']:.2f}   generator alone "
      f"{fd['generator']:.2f}   EBM only {fd['ebm_only']:.2f}")
print(f"   references                        floor (test vs train) {fd['floor']:.2f}   fitted Gaussian "
      f"{fd['gaussian']:.2f}   uniform noise {fd['noise']:.2f}")
run.metrics["coop_digits_fd"] = fd["coop"]
run.metrics["generator_digits_fd"] = fd["generator"]
run.metrics["ebm_only_digits_fd"] = fd["ebm_only"]
run.metrics["digits_fd_floor"] = fd["floor"]
run.metrics["digits_fd_baselines"] = {"gaussian": fd["gaussian"], "noise": fd["noise"]}
run.metrics["feature_classifier_accuracy"] = feature_acc

fig, axes = plotting.figure(2, 2, title=f"8x8 digits: CoopNets vs EBM only, {cfg.digits_steps} iterations, "
                                        f"$K$ = {cfg.langevin_steps}, $h$ = {cfg.img_step_size:g}, "
                                        f"$T$ = {img_temperature:.0e}; FD = Fréchet distance, lower is better")
for ax, images, label in ((axes[0], gen_images, f"generator $G(z)$: FD {fd['generator']:.1f}"),
                          (axes[1], coop_images, f"CoopNets, revised: FD {fd['coop']:.1f}"),
                          (axes[2], solo_images, f"EBM only, from noise: FD {fd['ebm_only']:.1f}")):
    plotting.image_grid(ax, (images[:64].cpu() + 1) / 2, nrow=8, title=label)
names = ["generator", "CoopNets", "EBM only", "fitted\nGaussian", "uniform\nnoise"]
values = [fd["generator"], fd["coop"], fd["ebm_only"], fd["gaussian"], fd["noise"]]
bars = axes[3].bar(names, values, color=["#ff7f0e", "#1f77b4", "#d62728", "#9467bd", "#8c564b"])
axes[3].bar_label(bars, fmt="%.1f", fontsize=10)
axes[3].axhline(fd["floor"], color="k", ls="--", lw=1.2, label=f"floor: test vs train digits ({fd['floor']:.1f})")
axes[3].set(yscale="log", ylim=(fd["floor"] / 2, max(values) * 3), ylabel="FD (log scale)",
            title="FD in the features of the lesson's classifier")
axes[3].legend(loc="upper left")
run.savefig(fig, "fig04_coop_digits")

# What to notice: read the FD against its floor and baselines, not on its own. Here cooperative training
# does NOT beat the energy alone at equal Langevin budget (default run: FD 32 against 16, the fitted
# Gaussian scores 23). Two reasons, both visible: the generator regresses onto the revisions with a squared
# error, so it learns their average for each z, a blur; and at T = 1e-4 fifteen steps of descent barely
# change its samples (generator 34, revised 32). The energy trained from noise has instead learned to turn
# noise into digits in exactly K steps (short-run EBMs, Nijkamp et al. 2019), which is what the FD rewards.
# CoopNets' published gains use convolutional generators, more steps per revision and a z-revision step
# (exercise 6); this MLP, 15-step version shows the mechanism, not the gain.

# %% [markdown]
# ## 3. Energy-based GANs: an autoencoder as the energy
#
# EBGAN (Zhao et al. 2016) keeps the GAN game but makes the discriminator an energy: the reconstruction
# error of an autoencoder, E(x) = |Dec(Enc(x)) - x|^2, low on data. With a margin m,
#
#     discriminator   L_D = E(x_data) + [m - E(G(z))]^+      (push fakes up, but only until they reach m)
#     generator       L_G = E(G(z)) + lambda_PT * PT(Enc(G(z)))
#
# The hinge stops the energy of fakes from growing without bound (the EBM's divergence problem in GAN
# form). The pulling-away term PT = mean_{i != j} cos^2(s_i, s_j) over the codes s = Enc(G(z)) of a batch
# penalises a generator whose samples all look alike to the encoder: a direct push against mode collapse.
# The generator's loss is taken with the discriminator's weights held fixed (torch.func.functional_call
# with detached weights), so one optimiser steps both players simultaneously.
# Samples here come straight from G: EBGAN never runs Langevin.

# %%
gen = run.generator("ebgan")
target8 = toy_dataset("8gaussians")
mode_centres = EIGHT_RADIUS * torch.stack([torch.cos(torch.arange(8) * math.pi / 4),
                                           torch.sin(torch.arange(8) * math.pi / 4)], 1).to(device)  # (8, 2)


class AutoencoderEnergy(torch.nn.Module):
    """E(x) = |Dec(Enc(x)) - x|^2, shape (B,); ``with_code=True`` also returns the code Enc(x)."""

    def __init__(self, dim, hidden, code_dim):
        super().__init__()
        self.encoder, self.decoder = mlp((dim, hidden, hidden, code_dim)), mlp((code_dim, hidden, hidden, dim))

    def forward(self, x, with_code=False):
        code = self.encoder(x)
        energy = ((self.decoder(code) - x) ** 2).sum(-1)
        return (energy, code) if with_code else energy


def pulling_away(codes):
    # PT = 1 / (N (N - 1)) sum_{i != j} (s_i . s_j / (|s_i| |s_j|))^2
    unit = torch.nn.functional.normalize(codes, dim=1)
    n = len(unit)
    return (((unit @ unit.T) ** 2).sum() - n) / (n * (n - 1))  # the diagonal (cos = 1) removed


def mode_quality(samples):
    """Modes covered (>= ebgan_cover of a fair share within 3 std) and the fraction within 3 std of any mode."""
    dist = torch.cdist(samples, mode_centres)  # (N, 8)
    nearest, which = dist.min(1)
    good = nearest < 3 * EIGHT_STD
    counts = torch.bincount(which[good], minlength=8)
    covered = int((counts >= cfg.ebgan_cover * len(samples) / 8).sum())
    return covered, float(good.float().mean())


def train_ebgan(seed, pt_weight):
    torch.manual_seed(seed)
    disc = AutoencoderEnergy(2, cfg.ebgan_hidden, cfg.ebgan_code).to(device)
    generator = Generator(cfg.z_dim, (2,), cfg.ebgan_hidden).to(device)
    model = torch.nn.ModuleDict({"discriminator": disc, "generator": generator})
    trainer = Trainer(model, run, lr=cfg.ebgan_lr, betas=(0.5, 0.999), blame="ebgan_lr",
                      name=f"EBGAN (PT {pt_weight:g}, seed {seed})")

    curve = []  # (step, modes covered) every ebgan_eval_every steps: how fast the modes are found

    def loss_fn(step):
        if step % cfg.ebgan_eval_every == 0:
            with torch.no_grad():
                curve.append(mode_quality(generator.sample(cfg.n_eval, gen))[0])
        fake = generator.sample(cfg.coop_batch, gen)
        # L_D = E(x) + [m - E(G(z))]^+   (fakes detached: this part trains the discriminator only)
        loss_d = disc(draw_toy_8(cfg.coop_batch)).mean() + torch.relu(cfg.margin - disc(fake.detach())).mean()
        # L_G = E(G(z)) + lambda PT, through a copy of the discriminator whose weights are constants
        frozen = {k: v.detach() for k, v in disc.named_parameters()}
        e_fake, codes = torch.func.functional_call(disc, frozen, (fake,), {"with_code": True})
        pt = pulling_away(codes)
        return loss_d + e_fake.mean() + pt_weight * pt, {"e_fake": e_fake.mean().detach(), "pt": pt.detach()}

    trainer.fit(loss_fn, cfg.ebgan_steps, desc=f"EBGAN PT={pt_weight:g} seed {seed}")
    with torch.no_grad():
        return generator.sample(cfg.n_eval, gen), curve


def draw_toy_8(n):
    return target8.sample(n, gen).to(device)


ebgan = {}
for pt_weight in (0.0, cfg.pt_weight):
    runs = [train_ebgan(run.seed * 100 + k, pt_weight) for k in range(cfg.ebgan_seeds)]
    quality = [mode_quality(x) for x, _ in runs]
    ebgan[pt_weight] = {"samples": runs[0][0], "covered": [q[0] for q in quality], "fraction": [q[1] for q in quality],
                        "curve": np.array([c for _, c in runs], dtype=np.float64)}  # (seeds, evaluations)


def mean_se(values):
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values)))


print(f"\n3. EBGAN on 8 Gaussians: margin {cfg.margin:g}, {cfg.ebgan_steps} steps, {cfg.ebgan_seeds} seeds "
      f"(mean ± s.e.); a mode counts as covered with >= {cfg.ebgan_cover:g} of its fair share within 3 std")
summary = {}
for pt_weight, r in ebgan.items():
    key = "with_pt" if pt_weight else "without_pt"
    summary[key] = {"pt_weight": pt_weight, "modes_covered": mean_se(r["covered"]),
                    "quality_fraction": mean_se(r["fraction"]), "per_seed_covered": r["covered"]}
    (mc, mc_se), (qf, qf_se) = summary[key]["modes_covered"], summary[key]["quality_fraction"]
    summary[key]["modes_covered_during_training"] = mean_se(r["curve"].mean(1))  # area under the curve / steps
    print(f"   PT weight {pt_weight:4g}:  modes covered {mc:.2f} ± {mc_se:.2f} of 8 (per seed {r['covered']})   "
          f"within 3 std {qf:.3f} ± {qf_se:.3f}   averaged over training "
          f"{summary[key]['modes_covered_during_training'][0]:.2f} ± "
          f"{summary[key]['modes_covered_during_training'][1]:.2f}")
run.metrics["ebgan_modes_covered"] = {k: v["modes_covered"] for k, v in summary.items()}
run.metrics["ebgan_quality_fraction"] = {k: v["quality_fraction"] for k, v in summary.items()}
run.metrics["ebgan_per_seed_covered"] = {k: v["per_seed_covered"] for k, v in summary.items()}
run.metrics["ebgan_modes_covered_during_training"] = {k: v["modes_covered_during_training"]
                                                      for k, v in summary.items()}

fig, axes = plotting.figure(3, title=f"EBGAN on 8 Gaussians: margin {cfg.margin:g}, {cfg.ebgan_steps} steps, "
                                     f"{cfg.ebgan_seeds} seeds")
for ax, pt_weight in zip(axes[:2], ebgan):
    image = plotting.density_image(ax, target8.log_density, target8.bounds)
    plotting.colorbar(ax, image, "data density $p(x)$ (relative)")
    plotting.scatter_samples(ax, ebgan[pt_weight]["samples"][:800], size=6)
    covered, fraction = mode_quality(ebgan[pt_weight]["samples"])
    ax.set(title=f"$\\lambda_{{PT}}$ = {pt_weight:g}, seed {run.seed * 100}: generator samples\n"
                 f"{covered}/8 modes, {fraction:.0%} within $3\\sigma$ of a mode",
           xlim=target8.bounds[:2], ylim=target8.bounds[2:])
for pt_weight, color in zip(ebgan, ("#d62728", "#2ca02c")):
    curve = ebgan[pt_weight]["curve"]
    steps = np.arange(curve.shape[1]) * cfg.ebgan_eval_every
    se = curve.std(0, ddof=1) / math.sqrt(len(curve))
    axes[2].plot(steps, curve.mean(0), color=color, lw=2, label=f"$\\lambda_{{PT}}$ = {pt_weight:g}")
    axes[2].fill_between(steps, curve.mean(0) - se, curve.mean(0) + se, color=color, alpha=0.25)
axes[2].set(ylim=(0, 8.5), xlabel="training step", ylabel="modes covered (of 8)",
            title=f"modes found during training\n(mean ± s.e. over {cfg.ebgan_seeds} seeds)")
plotting.legend_below(axes[2], ncol=2)
run.savefig(fig, "fig05_ebgan")

# What to notice: read the curve, not only its end. In the default run both settings end with all 8 modes
# on every seed, so the final count cannot tell them apart; the pulling-away term finds them sooner (modes
# covered averaged over training 6.7 ± 0.1 against 6.2 ± 0.1; about 6 against 2 after 100 steps). The price
# is on the other axis: spreading samples apart also puts more of them between modes (90 % within 3 std
# against 95 %). A GAN is a game, so look at the seeds, not only at the mean.

# %% [markdown]
# ## 4. JEM: the classifier is secretly an energy model
#
# Any classifier with logits f(x) defines a joint energy model (Grathwohl et al. 2020):
#
#     p(x, y) = exp(f(x)[y]) / Z,   E(x, y) = -f(x)[y],   E(x) = -logsumexp_y f(x)[y],
#     p(y | x) = p(x, y) / p(x) = softmax(f(x))[y]          (Z cancels: the ordinary classifier)
#
# so log p(x, y) = log p(y | x) + log p(x) (docs/derivations/jem_decomposition.md). JEM trains both terms:
# cross-entropy for log p(y|x), and the maximum-likelihood gradient of log p(x),
#
#     grad_theta [-log p(x)] = grad E(x_data) - E_{p_theta}[grad E(x)],
#
# whose model expectation comes from SGLD on E(x) with a replay buffer: JEM's 20 steps of step 1 and noise
# 0.01 (T = 5e-5: noisy descent), a 10,000-sample buffer, 5 % of it re-initialised from uniform noise per
# draw. Against it: the same network, same initial weights and epochs, trained on cross-entropy only.
# (On CIFAR-10, Grathwohl et al. report 92.9 % for JEM against 95.8 % for the same network as a plain
# classifier: joint training usually costs some accuracy.)

# %%
gen = run.generator("jem")
n_classes = int(digits.y_train.max()) + 1
steps_per_epoch = math.ceil(len(x_train) / cfg.jem_batch)
y_train, y_test = digits.y_train.to(device), digits.y_test.to(device)


def batches(step):
    """Minibatch ``step`` of a fresh permutation every epoch (the epoch's seed: its number)."""
    epoch, i = divmod(step, steps_per_epoch)
    order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(run.seed * 7919 + epoch))
    index = order[i * cfg.jem_batch:(i + 1) * cfg.jem_batch].to(device)
    return x_train[index], y_train[index]


def train_classifier(joint, lr, alpha, warmup, name, restarts=0):
    """Cross-entropy, plus (joint=True) the SGLD maximum-likelihood term on p(x). Returns (model, trainer)."""
    torch.manual_seed(run.seed)  # the same initial weights for every variant
    model = ClassifierEnergy(MLPClassifier(64, n_classes, (cfg.jem_hidden,) * 2)).to(device)
    buffer = ReplayBuffer(uniform_images, cfg.buffer_size, reinit_fraction=cfg.reinit_fraction, generator=gen)
    trainer = Trainer(model, run, lr=lr, blame="jem_lr", warmup=warmup, bound=cfg.energy_bound,
                      restarts=restarts, restart_lr_factor=cfg.restart_lr_factor, name=name)

    def loss_fn(step):
        x, y = batches(step)
        loss = torch.nn.functional.cross_entropy(model.logits(x), y)  # -log p(y | x)
        logs = {"cross_entropy": loss.detach()}
        if joint:
            x_neg = draw_negatives(model, buffer, len(x), n_steps=cfg.sgld_steps, step_size=cfg.sgld_step_size,
                                   noise_scale=cfg.sgld_noise, clamp=(-1.0, 1.0), generator=gen)
            # -log p(x) surrogate: E(x_data) - E(x_model) + alpha (E(x_data)^2 + E(x_model)^2)
            ml_loss, ml_logs = contrastive_divergence_loss(model(dequantize(x, digits.n_levels, gen)), model(x_neg),
                                                           alpha=alpha)
            loss, logs = loss + ml_loss, {**logs, **ml_logs}
        return loss, logs

    trainer.fit(loss_fn, cfg.jem_epochs * steps_per_epoch, desc=name)
    return model.eval(), trainer


@torch.no_grad()
def test_report(model):
    probs = torch.softmax(model.logits(x_test), 1).cpu()
    accuracy = float((probs.argmax(1) == digits.y_test).float().mean())
    return {"accuracy": accuracy, "ece": expected_calibration_error(probs, digits.y_test, cfg.ece_bins),
            "bins": reliability_bins(probs, digits.y_test, cfg.ece_bins)}


t0 = time.perf_counter()
clf_model, _ = train_classifier(False, cfg.jem_lr, cfg.jem_alpha, cfg.jem_warmup, "plain classifier")
clf_seconds = time.perf_counter() - t0
t0 = time.perf_counter()
jem_model, jem_trainer = train_classifier(True, cfg.jem_lr, cfg.jem_alpha, cfg.jem_warmup, "JEM")
jem_seconds = time.perf_counter() - t0
reports = {"plain classifier": test_report(clf_model), "JEM": test_report(jem_model)}
print(f"\n4. JEM vs the plain classifier on the digits: {cfg.jem_epochs} epochs, MLP 64-{cfg.jem_hidden}-"
      f"{cfg.jem_hidden}-10, SGLD {cfg.sgld_steps} steps, h = {cfg.sgld_step_size:g}, s = {cfg.sgld_noise:g} "
      f"(T = {effective_temperature(cfg.sgld_step_size, cfg.sgld_noise):.0e})")
for name, r in reports.items():
    print(f"   {name:<18} test accuracy {r['accuracy']:.4f}   ECE ({cfg.ece_bins} bins) {r['ece']:.4f}")
print(f"   accuracy gap {reports['plain classifier']['accuracy'] - reports['JEM']['accuracy']:+.4f} (target: "
      f"within 0.02)   training time: classifier {clf_seconds:.1f} s, JEM {jem_seconds:.1f} s "
      f"({jem_seconds / clf_seconds:.0f}x)")
run.metrics["jem_accuracy"] = reports["JEM"]["accuracy"]
run.metrics["clf_accuracy"] = reports["plain classifier"]["accuracy"]
run.metrics["jem_ece"] = reports["JEM"]["ece"]
run.metrics["clf_ece"] = reports["plain classifier"]["ece"]
run.metrics["jem_seconds"] = {"clf": clf_seconds, "jem": jem_seconds}

fig, axes = plotting.figure(2, 2, title=f"Calibration on the digits test set ({len(x_test)} images, "
                                        f"{cfg.jem_epochs} epochs, {cfg.ece_bins} equal-width bins)",
                             sharex="col", gridspec_kw={"height_ratios": (3, 1.3)})
for j, (name, r) in enumerate(reports.items()):
    plotting.reliability_diagram(axes[j], axes[2 + j], *r["bins"])
    axes[j].set(title=f"{name}: accuracy {r['accuracy']:.3f}, ECE {r['ece']:.3f}")
    axes[2 + j].set(xlabel="confidence $\\mathrm{max}_y\\, p(y \\mid x)$")
fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=2)
run.savefig(fig, "fig06_jem_calibration")

# What to notice: JEM's accuracy is within about a point of the classifier's (default run: 0.961 against
# 0.972), but its bars sit above the diagonal: it is UNDER-confident, right more often than it claims, and
# its ECE is the worse one (0.156 against 0.012). Grathwohl et al. report the opposite on CIFAR-10, where
# the plain classifier is over-confident; on the digits the MLP classifier is already calibrated, so JEM
# has nothing to fix here. Read every bar against the count under it: the plain classifier puts 333 of
# the 359 test images in its top bin (default run), so its other bars rest on 1-7 images each (hatched).

# %%
# Class-conditional samples: SGLD on E(x, y) = -f(x)[y] from uniform noise, the same sampler as training,
# run longer. And log p(x) + log Z = -E(x) on test images and on noise: the density half of JEM.
y_cond = torch.arange(n_classes, device=device).repeat_interleave(cfg.n_cond)
x_cond, _ = langevin(lambda x: jem_model.joint_energy(x, y_cond), uniform_images(len(y_cond)), cfg.cond_steps,
                     cfg.sgld_step_size, noise_scale=cfg.sgld_noise, clamp=(-1.0, 1.0), generator=gen)
with torch.no_grad():
    cond_acc = float((jem_model.logits(x_cond).argmax(1) == y_cond).float().mean())
    cond_feature_acc = float((feature_clf(x_cond.cpu()).argmax(1) == y_cond.cpu()).float().mean())
    noise_images = uniform_images(len(x_test))
    log_px = {name: {"test digits": -m(x_test).cpu().numpy(), "uniform noise": -m(noise_images).cpu().numpy()}
              for name, m in (("JEM", jem_model), ("plain classifier", clf_model))}
auroc_px = {name: auroc(torch.as_tensor(v["test digits"]), torch.as_tensor(v["uniform noise"]))
            for name, v in log_px.items()}
print(f"   class-conditional SGLD ({cfg.cond_steps} steps): JEM labels its own samples right {cond_acc:.2f}, "
      f"the independent feature classifier agrees {cond_feature_acc:.2f}")
print(f"   -E(x) separates test digits from uniform noise: AUROC JEM {auroc_px['JEM']:.3f}, "
      f"plain classifier {auroc_px['plain classifier']:.3f}  (lesson 09 does this properly)")
run.metrics["jem_conditional_accuracy"] = {"self": cond_acc, "feature_classifier": cond_feature_acc}
run.metrics["log_px_auroc_digits_vs_noise"] = auroc_px

fig, axes = plotting.figure(3, title=f"JEM's generative half: SGLD on $E(x, y)$, {cfg.cond_steps} steps, "
                                     f"$h$ = {cfg.sgld_step_size:g}, $s$ = {cfg.sgld_noise:g} "
                                     f"($T$ = {effective_temperature(cfg.sgld_step_size, cfg.sgld_noise):.0e})")
plotting.image_grid(axes[0], (x_cond.cpu().reshape(n_classes, cfg.n_cond, 1, 8, 8).transpose(0, 1).reshape(
    -1, 1, 8, 8) + 1) / 2, nrow=n_classes,
    title=f"samples of $p(x \\mid y)$, one column per $y$ = 0..9\nfeature classifier agrees {cond_feature_acc:.0%}")
for ax, name in zip(axes[1:], log_px):
    values = log_px[name]
    bins = np.linspace(min(v.min() for v in values.values()), max(v.max() for v in values.values()), 50)
    for label, v in values.items():
        ax.hist(v, bins=bins, alpha=0.6, label=label, density=True)
    ax.set(xlabel="$-E(x) = \\log p(x) + \\log Z$", ylabel="density",
           title=f"{name}: $-E(x)$ on test digits vs noise\nAUROC {auroc_px[name]:.2f}")
    ax.legend(loc="best")
run.savefig(fig, "fig07_jem_samples_log_px")

# What to notice: the samples are the digits the classifier "imagines" per label, drawn at T ~ 5e-5 from
# noise, so they are sharp modes, not a fair sample. Both models rank test digits above uniform noise by
# -E(x); the plain classifier does so by accident of its logits, JEM because it was trained to.

# %% [markdown]
# ## 5. Keeping joint training alive
#
# What diverges: the maximum-likelihood term lowers E on data and raises it on the SGLD samples. When the
# sampler falls behind the model (the negatives stop being where the model puts mass), raising E there
# costs nothing and lowering E on data is unbounded: the energies run off, the logits with them, and
# cross-entropy is dragged along. This is the instability JEM users report, and the 20 SGLD steps per
# update are why JEM costs several times a plain classifier (section 4's timing; ~2x is reported at scale).
# The stabilisers, one line each:
# - replay buffer: chains continue across updates, so negatives stay close to the current model;
# - energy L2 (alpha E^2): energies cannot drift to huge values while their difference stays small;
# - small learning rate with warm-up: the first updates, while the buffer is still noise, move the weights little;
# - spectral norm (MLPClassifier(spectral_norm=True)): bounds the network's Lipschitz constant and so its
#   input gradients; it helps the sampler but costs accuracy, so use it when the others are not enough;
# - the divergence guard: `Trainer(bound=...)` checks the loss and every logged energy and stops with a
#   message that names the flag to change, or restarts from the last good weights with a lower lr.
# Below, JEM without warm-up and energy L2 and with a 10x learning rate (--unstable-lr): first with
# the guard alone, then with restarts.

# %%
print(f"\n5. JEM without its stabilisers: lr {cfg.unstable_lr:g}, no warm-up, alpha = 0, {cfg.jem_epochs} epochs")
try:
    train_classifier(True, cfg.unstable_lr, 0.0, 0, "JEM unstable")
    print("   this run did not diverge (try a larger --unstable-lr)")
    unstable_diverged = False
except TrainingDiverged as err:  # caught here on purpose, to show what the guard says
    run.metrics.pop("diverged", None)
    print(f"   the guard stopped it: {err}")
    unstable_diverged = True
restarted_model, restarted_trainer = train_classifier(True, cfg.unstable_lr, 0.0, 0, "JEM with restarts",
                                                      restarts=cfg.restarts)
restarted = test_report(restarted_model)
print(f"   with restarts (up to {cfg.restarts}, lr x {cfg.restart_lr_factor:g} each): "
      f"{restarted_trainer.restarts_used} used, final lr {restarted_trainer.base_lr:.2g}, "
      f"test accuracy {restarted['accuracy']:.4f}, ECE {restarted['ece']:.4f}")
run.metrics["jem_unstable_diverged"] = unstable_diverged
run.metrics["jem_restarts"] = restarted_trainer.restarts_used
run.metrics["jem_restarted_accuracy"] = restarted["accuracy"]

fig, axes = plotting.figure(2, title=f"JEM energies during training: stable (lr {cfg.jem_lr:g}, warm-up, "
                                     f"$\\alpha$ = {cfg.jem_alpha:g}) vs unstable (lr {cfg.unstable_lr:g}, "
                                     f"$\\alpha$ = 0) with restarts")
for ax, trainer, label in ((axes[0], jem_trainer, "stable JEM"),
                           (axes[1], restarted_trainer, f"unstable JEM, {restarted_trainer.restarts_used} restart(s)")):
    for key, name in (("e_pos", "mean $E$(data)"), ("e_neg", "mean $E$(SGLD samples)")):
        ax.plot(trainer.history[key], lw=1, label=name)
    # a blow-up spans decades: then a symlog axis (linear for |E| < 1, logarithmic beyond), else a linear one
    symlog = max(np.abs(trainer.history["e_neg"]).max(), np.abs(trainer.history["e_pos"]).max()) > 50
    ax.set(xlabel="update (the steps of a restart follow on)", yscale="symlog" if symlog else "linear",
           ylabel="mean energy" + (" (symlog: linear in ±1)" if symlog else ""), title=label)
    if symlog:  # plain numbers at the decades instead of the default "-10^0"
        ticks = [t for t in (-1e3, -100, -10, -1, 0, 1, 10, 100, 1e3, 1e4) if ax.get_ylim()[0] <= t <= ax.get_ylim()[1]]
        ax.set_yticks(ticks, labels=[f"{t:g}" for t in ticks])
    plotting.legend_below(ax, ncol=2)
if restarted_trainer.restarts_used:  # point at the blow-up the guard caught
    spike = int(np.argmax(np.abs(restarted_trainer.history["e_neg"])))
    axes[1].annotate("diverged: the guard restarts\nfrom the last good weights,\n"
                     f"lr × {cfg.restart_lr_factor:g}", (spike, restarted_trainer.history["e_neg"][spike]),
                     xytext=(0.35, 0.75), textcoords="axes fraction", fontsize=10,
                     arrowprops={"arrowstyle": "->", "color": "k"})
run.savefig(fig, "fig08_jem_divergence")

# What to notice: in the stable run E(data) and E(samples) track each other (the sampler keeps up). In
# the unstable run they jump by orders of magnitude within a few updates, late in training (default run:
# step ~375 without restarts, ~450 with; the two runs' draws differ); the restart goes back to weights that
# passed the last check, continues at lr x 0.2, and finishes. In the default run that restarted model ends
# at test accuracy 0.975 and ECE 0.017, better calibrated than section 4's JEM: the stabilisers buy
# stability, and on this small problem they are not free.

# %% [markdown]
# ## Summary
#
# 1. Forward KL (maximum likelihood) covers every mode; reverse KL picks one, with a local optimum per
#    mode. A critic network trained on the Donsker-Varadhan bound estimates a KL from samples alone, from
#    below, with a variance that grows with the KL.
# 2. Cooperative training starts the energy's short chains at a generator's proposals, and the generator
#    learns from the revisions. At an equal budget of 15 Langevin steps it gave the better toy samples
#    (MMD) but the worse density (NLL) and the worse digits (FD) than an energy trained from noise.
# 3. EBGAN makes the discriminator an energy (reconstruction error) with a margin; the pulling-away term
#    penalises generators whose samples look alike to the encoder: here it finds the 8 modes sooner, and
#    both settings end with all 8.
# 4. Any classifier is an energy model: E(x, y) = -f(x)[y], E(x) = -logsumexp f(x). JEM trains the
#    p(x) half with SGLD and a replay buffer, at several times the cost of the classifier.
# 5. Joint training diverges when the sampler falls behind; buffer, energy L2, warm-up and a small lr keep
#    it alive, and the guarded trainer stops or restarts a run that escapes anyway.

# %% [markdown]
# ## Exercises
# Hints and answers: docs/solutions/08_cooperative_training.md.
#
# **Exercise 1 (predict-then-tweak, easy): when do the two reverse-KL optima merge?**
# Predict how many reverse-KL optima section 1 finds for `--mix-means -1,1` and for `--mix-means -0.5,0.5`
# (std 0.6). Where does the forward fit sit in each case? Run both and compare the table with fig01.
#
# **Exercise 2 (predict-then-tweak, easy): a bigger Langevin budget**
# Predict `ebm_only_toy_nll` and `coop_toy_nll` for `--langevin-steps 60`. Does the energy trained from
# noise catch up with cooperative training when its chains are four times longer? Run it.
#
# **Exercise 3 (think, medium): the critic's error**
# The DV estimate with the learned critic is below the exact KL at every fit, while the estimate with the
# exact critic log q/p scatters on both sides. Explain both, and why the forward fit has the largest s.e.
#
# **Exercise 4 (extend, medium): temperature scaling**
# Calibrate the plain classifier post hoc: divide its logits by a temperature tau fitted on half of the test
# set, and report the ECE on the other half. Does it beat JEM's ECE? `--exercise 4` runs a stub that
# prints the ECE at a few fixed tau.
#
# **Exercise 5 (predict-then-tweak, medium): which stabiliser matters?**
# Predict which of `--jem-alpha 0`, `--jem-warmup 0`, `--jem-lr 5e-3` makes JEM diverge, then run each.
# Which one does the guard catch first, and at what step?
#
# **Exercise 6 (think, hard): what the generator learns**
# Show that loss_G = mean |G(z) - x_K|^2 is maximum likelihood for a generator with Gaussian output noise,
# given the pairs (z, x_K). The full CoopNets also revises z by Langevin on the generator's posterior;
# what does skipping that step cost when the revision moves a sample to a different mode?

# %%
if run.exercise == 4:
    # Stub for exercise 4: the plain classifier's ECE with its logits divided by a few fixed temperatures.
    with torch.no_grad():
        logits = clf_model.logits(x_test).cpu()
    for tau in (0.5, 1.0, 1.5, 2.0, 3.0):
        ece = expected_calibration_error(torch.softmax(logits / tau, 1), digits.y_test, cfg.ece_bins)
        print(f"\nExercise 4 stub: tau = {tau:3.1f}   ECE {ece:.4f}   (JEM: {reports['JEM']['ece']:.4f})")

run.finish()
