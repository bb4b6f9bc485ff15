"""Lesson 08 -- Cooperative and adversarial training, JEM, and forward vs reverse KL.

An energy model needs samples of itself to learn, and short Langevin chains from noise give poor ones.
This lesson pairs the energy with a second network: a generator whose proposals the energy revises
(cooperative training), an autoencoder whose reconstruction error is the energy (EBGAN), or a classifier
that already *is* an energy (JEM). It opens with the two directions of the KL, which decide whether a fit
covers every mode or seeks one, and with the Donsker-Varadhan critic that estimates a KL from samples.

You will learn
- why maximum likelihood (forward KL) covers modes and reverse KL seeks one, with the exact optima;
- how a critic network turns samples into a KL estimate (Donsker-Varadhan), and how close it gets;
- cooperative training (generator proposes, energy revises) against an energy alone, over steps and seeds;
- EBGAN's margin loss and the pulling-away term, graded by per-mode weights that a ring cannot pass;
- JEM: one classifier gives E(x, y) and E(x); what joint training costs, why it diverges, how to keep it alive.

Prerequisites: lessons 01 (energies, Langevin), 05 (why MLE needs samples), 07 (neural EBMs: the guarded
training loop, replay buffers, the Frechet distance in classifier features). Everything runs on the CPU by
design: the networks are small MLPs, where a GPU only adds launch latency.

Run:  python 08_cooperative_training.py              (default; measured runtimes: docs/results.md)
      python 08_cooperative_training.py --quick      (seconds; every code path runs)
      python 08_cooperative_training.py --section 5  (one section only: SECTIONS below)
      python 08_cooperative_training.py --help       (every hyperparameter, with advice)

Figures and metrics.json keys: FIGURES and METRICS below (outputs/08_cooperative_training/).
"""
LESSON = "08_cooperative_training"  # outputs go to outputs/08_cooperative_training/
FIGURES = {
    "fig01_forward_vs_reverse_kl": "one Gaussian fitted to two modes: forward fit, both reverse optima, the landscape",
    "fig02_dv_critic": "Donsker-Varadhan critics against log q/p at each fit; the KL estimates in the title",
    "fig03_coop_toy": "2-D toy: proposals, both energies and samples; NLL over a step sweep and seeds",
    "fig04_coop_digits": "digits: generator, revised and EBM-only samples; Frechet distances, references in the title",
    "fig05_ebgan": "EBGAN samples without and with pulling-away; mode weights during training",
    "fig06_jem_calibration": "reliability diagrams: plain classifier, JEM, JEM after temperature scaling",
    "fig07_jem_samples": "JEM's class-conditional samples, one column per label",
    "fig08_jem_divergence": "energies of data and samples: stable JEM vs an unstable run with restarts",
}
METRICS = {
    "kl_forward_fit": "KL(p || q) of the moment-matched Gaussian (the forward-KL optimum), by quadrature",
    "kl_forward_fit_numeric": "the same after minimising KL(p || q) by quadrature (checks the closed form)",
    "kl_reverse_fits": "both reverse-KL optima: mean, std, KL(q || p), KL(p || q)",
    "kl_reverse_basins": "distinct reverse optima found from two starts (2: one per mode)",
    "dv_fits": "the fits the DV critic was trained at", "dv_kl_exact": "KL(q || p) by quadrature at those fits",
    "dv_kl_estimate": "DV estimate of KL(q || p) on held-out samples, per fit", "dv_kl_se": "its standard error",
    "dv_kl_optimal_critic": "the DV estimate with the exact critic log q/p on the same samples",
    "dv_kl_max_rel_error": "max over fits of |estimate - exact| / exact (target < 0.10)",
    "toy_step_sweep": "per Langevin step h, CoopNets and EBM only over seeds: exact NLL, multi-scale MMD^2 of "
                      "the samples, and (CoopNets) MMD^2 of the generator's own samples",
    "toy_nll_floor": "the entropy H(p) of the toy target", "toy_mmd_floor": "RMS MMD^2(data, fresh data), same n",
    "coop_toy_seconds": "CPU time of the toy sweep (a timing)",
    "coop_digits_fd": "Frechet distance (classifier features) of CoopNets' revised digits",
    "generator_digits_fd": "the same for the generator's own samples", "ebm_only_digits_fd": "for EBM only",
    "digits_fd_floor": "test digits against training digits (the same n as the samples)",
    "digits_fd_baselines": "a fitted full-covariance Gaussian and uniform noise (the same n)",
    "feature_classifier_accuracy": "test accuracy of the classifier whose features the FD uses",
    "ebgan_mode_kl": "KL(uniform || mode weights within 1 std), over seeds, without and with pulling-away",
    "ebgan_in_mode_fraction": "fraction of samples within 1 std of a mode, over seeds, both settings",
    "ebgan_references": "the same two grades for fresh data and a uniform ring, and the 99.9 % KL line",
    "ebgan_kl_during_training": "the KL averaged over the checks during training (how soon), over seeds",
    "jem_accuracy": "JEM's test accuracy on the digits", "clf_accuracy": "the plain classifier's (same net and epochs)",
    "jem_ece": "JEM's expected calibration error (equal-width bins)", "clf_ece": "the plain classifier's",
    "ece_calibrated_95": "per model: the ECE 95 % of label sets drawn from its own probabilities stay under",
    "temperature": "per model: the temperature fitted on the validation split",
    "ece_temperature_scaled": "per model: test ECE with the logits divided by that temperature",
    "jem_seconds": "training time of both (a timing)",
    "jem_conditional_accuracy": "how often JEM and the feature classifier label JEM's class-conditional samples right",
    "jem_unstable_diverged": "whether section 6's unstable setting tripped the guard", "jem_unstable_step": "where",
    "jem_restarts": "restarts the guarded trainer used in the unstable setting",
    "jem_restarted_finished": "whether it finished within its restarts",
    "jem_alpha_back": "the same lr without warm-up but with alpha: restarts, finished, accuracy, ECE",
}
SECTIONS = {1: "forward vs reverse KL, the DV critic", 2: "cooperative training on a 2-D toy",
            3: "cooperative training on the digits", 4: "energy-based GANs", 5: "JEM", 6: "keeping JEM alive"}
EXERCISES = {4: (5,)}  # exercise with a stub: the sections it needs (--exercise 4 runs section 5, then the stub)


# %% [markdown]
# # Lesson 08 -- Cooperative and adversarial training, JEM, forward vs reverse KL
# ## Setup
# Every number a student may want to change is a field of `Config` (and a flag: `--dv-steps 1000`).

# %%
from dataclasses import dataclass

from common.config import between, choice, count, nonnegative, parse_flags, positive, probability


@dataclass
class Config:
    # -- section 1: one Gaussian fitted to a two-mode mixture p = w N(m1, s^2) + (1 - w) N(m2, s^2)
    mix_means: tuple[float, ...] = between((-2.0, 2.0), -10, 10)  # mode centres; at -1,1 the optima merge (ex. 1)
    mix_std: float = positive(0.6)  # std s of each mode; larger merges the modes (one reverse optimum)
    mix_weight: float = between(0.6, 0, 1, open_low=True, open_high=True)  # weight w of the first mode; the
        # reverse optimum on the other mode pays -log(1 - w), so moving w from 0.5 separates the two optima
    fit_tol: float = positive(1e-6)  # Nelder-Mead stops when (mu, log sd) moves less than this and the KL less than
        # 1e-4 x this; 1e-2 is plenty for the pictures but fails the 1e-4 closed-form check
    dv_hidden: int = count(32)  # hidden width of the DV critic T(x) (1 -> h -> h -> 1); 8 cannot bend enough
    dv_steps: int = count(400)  # Adam steps per critic; with fewer the estimate (a lower bound) comes out low
    dv_batch: int = count(1000, minimum=10)  # fresh samples of q and p per critic step; smaller = noisier ascent
    dv_lr: float = positive(1e-2)  # critic learning rate (cosine-decayed); at 3e-3 the forward-fit estimate is ~9 % low
    dv_eval: int = count(50000, minimum=100)  # held-out samples of each for the final estimate (its s.e. ~1/sqrt)
    # -- sections 2 and 3: cooperative training (generator proposes, energy revises) vs the energy alone
    toy: str = choice("8gaussians", ("8gaussians", "two_moons", "rings", "swiss_roll"))  # 2-D target
    demo_steps: int = count(30)  # iterations of the written-out loops (sections 2 and 5); they only show the update
    coop_steps: int = count(500)  # training iterations per toy run; 3x more only reaches 3.89 nats (floor 3.52)
    coop_batch: int = count(128, minimum=10)  # data points and proposals per toy iteration; smaller = noisier
    langevin_steps: int = count(15)  # K, the SAME for both methods; 60 lets CoopNets catch up (exercise 2), 4x cost
    toy_step_sizes: tuple[float, ...] = positive((0.02, 0.05, 0.1))  # Langevin steps h compared on the toy, at
        # T = 1 (noise sqrt(2h)); larger steps lower both methods' MMD^2. The pictures use the last one
    toy_seeds: int = count(3, minimum=2)  # seeds per (step, method): mean +- s.e. needs >= 2; more narrows the s.e.
    toy_hidden: int = count(64)  # hidden width of the toy energy and generator (two hidden layers each)
    z_dim: int = count(4)  # generator input dimension on the toy and in EBGAN; 1 can only draw a curve
    coop_lr: float = positive(1e-3)  # Adam learning rate for energy and generator; above ~3e-3 the energy oscillates
    coop_alpha: float = nonnegative(0.1)  # energy L2 penalty alpha (mean E^2): 0 lets E drift off while the
        # difference E(data) - E(samples) stays small
    n_eval: int = count(2000, minimum=100)  # samples for MMD (and data for the NLL); fewer raises the MMD floor
    mmd_repeats: int = count(5, minimum=2)  # data-vs-fresh-data pairs for the MMD noise floor (more: steadier)
    grid_n: int = count(300, minimum=50)  # grid points per axis for log Z (exact NLL); 300 is converged for 8gaussians
    img_iters: int = count(1000)  # training iterations on the 8x8 digits (most of section 3's time)
    img_batch: int = count(128, minimum=10)  # images per iteration
    img_hidden: int = count(256)  # hidden width of the digit energy and generator; 64 gives blurrier digits
    img_z_dim: int = count(16)  # generator input dimension on the digits
    img_sgld_step_size: float = positive(0.5)  # Langevin step h on the digits; with noise 0.01, T = 1e-4: noisy
        # descent. Larger moves the revisions further from the generator's proposals
    img_sgld_noise: float = positive(0.01)  # Langevin noise s on the digits (JEM's 0.01); s = sqrt(2h) would be T = 1
    fd_epochs: int = count(30)  # epochs of the feature classifier that defines the Frechet distance
    # -- section 4: EBGAN on 8 Gaussians
    margin: float = positive(1.0)  # EBGAN margin m: fakes are pushed up until E(G(z)) reaches m (paper ~1)
    pt_weight: float = nonnegative(0.1)  # pulling-away lambda_PT (paper 0.1), vs 0; larger spreads codes harder
    ebgan_steps: int = count(1000)  # simultaneous discriminator + generator steps per run
    ebgan_seeds: int = count(3, minimum=2)  # seeds per setting (mean +- s.e. needs >= 2)
    ebgan_batch: int = count(256, minimum=10)  # data points and fakes per EBGAN step
    ebgan_hidden: int = count(64)  # hidden width of the autoencoder and the generator
    ebgan_code: int = count(8)  # autoencoder code size (the PT term acts on these codes)
    ebgan_lr: float = positive(1e-3)  # Adam lr (betas 0.5, 0.999, as GANs use); 5e-3 makes the game oscillate
    ebgan_eval_every: int = count(100)  # grade the mode weights every this many steps (the curve in fig05)
    # -- sections 5 and 6: JEM on the digits
    jem_epochs: int = count(20)  # epochs for JEM and for the plain classifier (the same)
    jem_batch: int = count(64, minimum=2)  # images per step (JEM's 64)
    jem_hidden: int = count(256)  # hidden width of the classifier f (64 -> h -> h -> 10, SiLU)
    jem_lr: float = positive(1e-3)  # Adam lr after warm-up; JEM used 1e-4 on CIFAR; 3e-2 diverges (section 6)
    jem_warmup: int = count(100, minimum=0)  # linear lr warm-up steps: early energies are wild, small steps first
    jem_alpha: float = nonnegative(0.1)  # energy L2 alpha: keeps energies from drifting off; 0: see exercise 4
    sgld_steps: int = count(20)  # SGLD steps per JEM update (JEM: 20); fewer and the sampler falls behind
    sgld_step_size: float = positive(1.0)  # SGLD step h (JEM: 1)
    sgld_noise: float = positive(0.01)  # SGLD noise s (JEM: 0.01, so T = s^2/(2h) = 5e-5: noisy descent)
    buffer_size: int = count(10000)  # replay buffer of SGLD states (JEM: 10,000); small = samples too correlated
    reinit_fraction: float = probability(0.05)  # fraction of each draw restarted from noise (JEM: 5 %)
    energy_bound: float = positive(1e4)  # the guard stops (or restarts) a run once |E| or the loss exceeds this
    ece_bins: int = count(15, minimum=2)  # equal-width confidence bins of the ECE; more bins raise its noise floor
    ece_floor_draws: int = count(200, minimum=20)  # label draws for the ECE a calibrated model gets at this n
    val_fraction: float = between(0.2, 0, 1, open_low=True, open_high=True)  # training digits held out for
        # temperature scaling (neither model trains on them); more: a steadier tau, fewer training digits
    cond_steps: int = count(100)  # SGLD steps for the class-conditional samples; fewer leaves them noisy
    n_cond: int = count(8)  # class-conditional samples per class
    restart_lr_factor: float = between(0.2, 0, 1, open_low=True, open_high=True)  # lr multiplier at each restart
    unstable_lr: float = positive(3e-2)  # section 6's diverging lr (no warm-up, alpha 0); seed 0 survives 1e-2
    restarts: int = count(4, minimum=0)  # restarts allowed in section 6 (0: the guard just stops the run)


QUICK = {
    "fit_tol": 1e-2, "dv_steps": 10, "dv_batch": 100, "dv_eval": 500, "demo_steps": 2, "langevin_steps": 3,
    "coop_steps": 10, "toy_seeds": 2, "toy_step_sizes": (0.05, 0.1), "toy_hidden": 16, "ece_floor_draws": 20,
    "n_eval": 100, "mmd_repeats": 2, "grid_n": 50, "img_iters": 5, "img_hidden": 16, "fd_epochs": 1,
    "ebgan_steps": 20, "ebgan_seeds": 2, "ebgan_eval_every": 10, "ebgan_hidden": 16, "ebgan_batch": 64,
    "jem_epochs": 1, "jem_batch": 512, "jem_hidden": 16, "sgld_steps": 3, "buffer_size": 100, "cond_steps": 3,
    "n_cond": 1}


def check(cfg):
    if len(cfg.mix_means) != 2:
        raise ValueError("--mix-means needs two numbers (the two mode centres)")
    if cfg.ebgan_eval_every >= cfg.ebgan_steps:
        raise ValueError("--ebgan-eval-every must be below --ebgan-steps (the curve needs two points)")


cfg, flags = parse_flags(Config, LESSON, __doc__, quick=QUICK, check=check, exercises=EXERCISES, sections=SECTIONS)

import math  # noqa: E402  (heavy imports after the flags, so --help answers at once; each section imports its grades)
import re  # noqa: E402
import time  # noqa: E402
from functools import cache  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from scipy import optimize, special, stats  # noqa: E402

from common import plotting  # noqa: E402
from common.claims import SeedStats  # noqa: E402
from common.datasets import dequantize, load_signed_images, toy_dataset, uniform_box  # noqa: E402
from common.divergences import donsker_varadhan_bound, donsker_varadhan_se, kl_by_quadrature  # noqa: E402
from common.lesson import TrainingDiverged, start_lesson  # noqa: E402
from common.nets import ClassifierEnergy, MLPClassifier, MLPEnergy, mlp  # noqa: E402
from common.samplers import ReplayBuffer, effective_temperature, langevin  # noqa: E402
from common.training import Trainer, contrastive_divergence_loss, draw_negatives  # noqa: E402

run = start_lesson(cfg, flags, figures=FIGURES, metrics=METRICS,
                   cpu_only="MLPs of at most 256 units on 1-D/2-D targets and 8x8 digits, SciPy quadrature")
EIGHT_RADIUS, EIGHT_STD = 4.0, 0.5  # common.datasets.eight_gaussians: modes on a circle of radius 4, std 0.5
device = run.device


# %% [markdown]
# ## 1. Forward vs reverse KL, and a critic that estimates a KL from samples
#
# Fit one Gaussian $q = \mathcal N(\mu, \sigma^2)$ to a mixture $p$ of two Gaussians. The two directions of
# the KL ask different things ([derivation](docs/derivations/donsker_varadhan.md), first part):
#
# $$\mathrm{KL}(p \,\|\, q) = \mathbb E_p[\log p - \log q] \quad\text{(forward: large where $p$ has mass and
# $q$ does not, so $q$ must cover $p$)},$$
# $$\mathrm{KL}(q \,\|\, p) = \mathbb E_q[\log q - \log p] \quad\text{(reverse: large where $q$ has mass and
# $p$ does not, so $q$ must stay inside $p$)}.$$
# Maximum likelihood minimises the forward KL ($\mathbb E_p \log p$ is a constant), and for a Gaussian $q$
# that has a closed form: match the mean and the variance of $p$ (moment matching). The reverse KL has no
# closed form; we minimise it by scipy quadrature from two starts and find two local optima, one per mode.

# %%
if run.section(1):
    mix_means = np.array(cfg.mix_means, dtype=np.float64)
    mix_weights = np.array([cfg.mix_weight, 1 - cfg.mix_weight])
    FIT_OPTIONS = {"xatol": cfg.fit_tol, "fatol": 1e-4 * cfg.fit_tol}  # Nelder-Mead's stopping rule
    LOW, HIGH = mix_means.min() - 12 * cfg.mix_std - 10, mix_means.max() + 12 * cfg.mix_std + 10  # quadrature limits
    LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)

    def mixture_log_pdf(x):
        # log p(x) = logsumexp_k [log w_k + log N(x; m_k, s^2)]   (vectorised, for plots and samples)
        x = np.asarray(x, dtype=np.float64)[..., None]
        return special.logsumexp(np.log(mix_weights) + stats.norm.logpdf(x, mix_means, cfg.mix_std), axis=-1)

    def gaussian_log_pdf(mu, sd):
        # log N(x; mu, sd^2) for one float x: scipy's quad calls it ~10^5 times, so plain math, not scipy.stats
        return lambda x: -0.5 * ((x - mu) / sd) ** 2 - math.log(sd) - LOG_SQRT_2PI

    component_log_pdfs = [gaussian_log_pdf(m, cfg.mix_std) for m in mix_means]

    def mixture_log_pdf_scalar(x):
        a, b = (math.log(w) + f(x) for w, f in zip(mix_weights, component_log_pdfs))
        return max(a, b) + math.log1p(math.exp(-abs(a - b)))  # log(e^a + e^b) without overflow

    def forward_kl(mu, sd):  # KL(p || q), the maximum-likelihood objective up to the constant -H(p)
        return kl_by_quadrature(mixture_log_pdf_scalar, gaussian_log_pdf(mu, sd), LOW, HIGH, points=mix_means)

    def reverse_kl(mu, sd):  # KL(q || p): q's own entropy against how much p it sits on
        return kl_by_quadrature(gaussian_log_pdf(mu, sd), mixture_log_pdf_scalar, LOW, HIGH, points=(mu, *mix_means))

    def minimise(kl, start):
        """Nelder-Mead over (mu, log sd), so sd stays positive; returns (mu, sd, the minimum)."""
        res = optimize.minimize(lambda th: kl(th[0], math.exp(th[1])), x0=start, method="Nelder-Mead",
                                options=FIT_OPTIONS)
        return float(res.x[0]), math.exp(float(res.x[1])), float(res.fun)

    # forward KL: the closed form is moment matching, mu = sum w m,  sd^2 = sum w (s^2 + m^2) - mu^2
    mu_fwd = float(mix_weights @ mix_means)
    sd_fwd = math.sqrt(float(mix_weights @ (cfg.mix_std**2 + mix_means**2)) - mu_fwd**2)
    numeric = minimise(forward_kl, [0.5, 0.0])  # ... and, as a check, the same minimum found numerically
    reverse_fits = []
    for start in mix_means:  # one start at each mode: the optimiser stays in the basin it starts in
        mu_r, sd_r, kl_r = minimise(reverse_kl, [start + 0.3, math.log(cfg.mix_std)])
        reverse_fits.append({"mean": mu_r, "std": sd_r, "kl_reverse": kl_r, "kl_forward": forward_kl(mu_r, sd_r)})

    kl_fwd, kl_fwd_rev = forward_kl(mu_fwd, sd_fwd), reverse_kl(mu_fwd, sd_fwd)
    print(f"\n1. One Gaussian fitted to p = {mix_weights[0]:g} N({mix_means[0]:g}, {cfg.mix_std:g}^2) + "
          f"{mix_weights[1]:g} N({mix_means[1]:g}, {cfg.mix_std:g}^2)")
    rows = {"forward (moment matching)": (mu_fwd, sd_fwd, kl_fwd, kl_fwd_rev),
            "forward (numeric minimum)": (*numeric, reverse_kl(*numeric[:2]))}
    rows.update({f"reverse, optimum {k + 1}": (f["mean"], f["std"], f["kl_forward"], f["kl_reverse"])
                 for k, f in enumerate(reverse_fits)})
    print(f"   {'fit':<28}{'mean':>8}{'std':>8}{'KL(p||q)':>11}{'KL(q||p)':>11}")
    for name, (mu, sd, kl_pq, kl_qp) in rows.items():
        print(f"   {name:<28}{mu:8.3f}{sd:8.3f}{kl_pq:11.4f}{kl_qp:11.4f}")
    print(f"   -log w of each mode: {-math.log(mix_weights[0]):.4f}, {-math.log(mix_weights[1]):.4f} "
          "(the reverse KL of a q that sits exactly on one mode and ignores the other)")
    # two starts, one per mode: they found two basins if they ended at different means (else the modes merged)
    n_basins = 1 + int(abs(reverse_fits[0]["mean"] - reverse_fits[1]["mean"]) > cfg.mix_std)
    run.metrics.update({"kl_forward_fit": kl_fwd, "kl_forward_fit_numeric": numeric[2],
                        "kl_reverse_fits": reverse_fits, "kl_reverse_basins": n_basins})
    run.claim("forward_closed_form", "moment matching is the forward-KL optimum", kl_fwd, "within", numeric[2],
              1e-4, reference_label="(numeric minimum)")
    run.claim("forward_covers", "forward fit covers p: lower KL(p||q) than any reverse optimum", kl_fwd, "<",
              min(f["kl_forward"] for f in reverse_fits), reference_label="(best reverse fit)")
    run.claim("reverse_seeks", "every reverse optimum has lower KL(q||p) than the forward fit",
              max(f["kl_reverse"] for f in reverse_fits), "<", kl_fwd_rev, reference_label="(forward fit)")
    run.claim("reverse_basins", "the reverse KL has one local optimum per mode", n_basins, "within", 2, 0,
              reference_label="modes")
    if n_basins == 2:  # a q on one mode pays -log w_k for the other's mass (the KL of a q exactly on mode k)
        run.claim("reverse_cost", "a reverse optimum pays about -log w of its mode", max(
            abs(f["kl_reverse"] + math.log(w)) for f, w in zip(reverse_fits, mix_weights)), "<", 0.01,
            reference_label="nats (largest gap)")

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
    axes[1].set(yscale="log", xlabel="mean $\\mu$ of $q$", ylabel="std $\\sigma$ of $q$", yticks=[0.25, 0.5, 1, 2, 4],
                yticklabels=["0.25", "0.5", "1", "2", "4"],
                title=f"reverse KL over $(\\mu, \\sigma)$: {'two basins' if n_basins == 2 else 'one basin'}")
    axes[1].yaxis.set_minor_locator(plt.NullLocator())
    plotting.legend_below(axes[1])
    run.savefig(fig, "fig01_forward_vs_reverse_kl")

# %% [markdown]
# **What to notice.** The maximum-likelihood Gaussian sits between the modes, where p has almost no mass,
# because missing either mode would make log q very negative on data. The reverse-KL fits each hug one
# mode (std close to s): q pays nothing for ignoring the other mode except -log w of the mode it sits on,
# so the lighter mode's optimum is only a local one. A GAN-like sampler trained on a reverse-type
# divergence has the same incentive: this is mode collapse, before any neural network is involved.
#
# Now the reverse KL *from samples only*. Donsker and Varadhan's representation
#
# $$\mathrm{KL}(q \,\|\, p) = \sup_T\; \mathbb E_q[T(x)] - \log \mathbb E_p\big[e^{T(x)}\big],
# \qquad \text{attained at } T^* = \log \tfrac{q}{p} + \text{const},$$
#
# turns the divergence into a fit of a critic network $T$, trained by maximising the right-hand side on
# samples of $q$ and $p$, exactly like a GAN's discriminator. One critic per Gaussian above, graded on
# held-out samples against the quadrature KL and against the exact critic $\log q/p$ on the same samples.

# %%
if run.section(1):
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

    def exact_critic(x, mu, sd):  # T* = log q(x) / p(x), what a perfect network would learn (up to a constant)
        x = x.cpu().numpy()[:, 0]
        return torch.as_tensor(stats.norm.logpdf(x, mu, sd) - mixture_log_pdf(x))

    dv_fits = {"forward fit": (mu_fwd, sd_fwd)}
    dv_fits.update({f"reverse optimum {k + 1}": (f["mean"], f["std"]) for k, f in enumerate(reverse_fits)})
    dv_rows, critics = [], {}
    for name, (mu, sd) in dv_fits.items():
        critic = critics[name] = fit_dv_critic(mu, sd, name)
        x_q, x_p = sample_gaussian(cfg.dv_eval, mu, sd), sample_mixture(cfg.dv_eval)  # held out: never trained on
        with torch.no_grad():
            t_q, t_p = critic(x_q)[:, 0], critic(x_p)[:, 0]
        best_q, best_p = exact_critic(x_q, mu, sd), exact_critic(x_p, mu, sd)  # sampling noise only
        dv_rows.append({"fit": name, "estimate": float(donsker_varadhan_bound(t_q, t_p)),
                        "se": donsker_varadhan_se(t_q, t_p), "exact": reverse_kl(mu, sd),
                        "optimal": float(donsker_varadhan_bound(best_q, best_p)),
                        "optimal_se": donsker_varadhan_se(best_q, best_p)})

    print(f"\n   Donsker-Varadhan estimate of KL(q || p) from samples ({cfg.dv_steps} critic steps, batch "
          f"{cfg.dv_batch}; {cfg.dv_eval} held-out samples of each)")
    print(f"   {'fit':<20}{'DV estimate':>14}{'exact (quad)':>14}{'rel. error':>12}{'exact critic':>16}")
    for r in dv_rows:
        print(f"   {r['fit']:<20}{r['estimate']:9.4f} ±{r['se']:.3f}{r['exact']:14.4f}"
              f"{(r['estimate'] - r['exact']) / r['exact']:+12.3f}{r['optimal']:10.4f} ±{r['optimal_se']:.3f}")
    dv_rel = max(abs(r["estimate"] - r["exact"]) / r["exact"] for r in dv_rows)
    run.claim("dv_within_10pct", "the DV critic estimates KL(q||p) from samples within 10 %", dv_rel, "<", 0.10,
              reference_label="(max relative error over the fits)")
    run.metrics.update({key: [r[field] for r in dv_rows] for key, field in (
        ("dv_fits", "fit"), ("dv_kl_estimate", "estimate"), ("dv_kl_se", "se"), ("dv_kl_exact", "exact"),
        ("dv_kl_optimal_critic", "optimal"))})
    run.metrics["dv_kl_max_rel_error"] = dv_rel

    fig, ax = plotting.figure(title=f"Donsker-Varadhan critics: {cfg.dv_steps} steps, width {cfg.dv_hidden}, "
                                    f"batch {cfg.dv_batch}", panel_size=(9, 5))
    xs = np.linspace(mix_means.min() - 3, mix_means.max() + 3, 400)
    for (name, (mu, sd)), r, color in zip(dv_fits.items(), dv_rows, plt.rcParams["axes.prop_cycle"].by_key()["color"]):
        with torch.no_grad():
            learned = critics[name](torch.tensor(xs, dtype=torch.float32, device=device)[:, None])[:, 0].cpu().numpy()
        exact = stats.norm.logpdf(xs, mu, sd) - mixture_log_pdf(xs)
        weights = stats.norm.pdf(xs, mu, sd)  # T is defined up to a constant: shift it to log q/p on average under q
        ax.plot(xs, learned + np.sum(weights * (exact - learned)) / weights.sum(), color=color, lw=2,
                label=f"{name}: DV {r['estimate']:.3f} ± {2 * r['se']:.3f} (2 s.e.), exact KL {r['exact']:.3f}")
        ax.plot(xs, exact, color=color, lw=1.8, ls=":")
    ax.plot([], [], "k:", lw=1.8, label="dotted: the exact critic $\\log q(x)/p(x)$")
    ax.set(xlabel="$x$", ylabel="$T(x)$ (shifted by a constant)", ylim=(-8, 8),
           title=f"learned critics vs the optimal ones; KL estimates within {100 * dv_rel:.1f} % (target 10 %)")
    plotting.legend_below(ax)
    run.savefig(fig, "fig02_dv_critic")

# %% [markdown]
# **What to notice.** Where q has mass, the learned critic follows log q/p; where q has none it is free
# (the bound does not care), which is why the curves part ways in the tails. The estimate is a LOWER
# bound in expectation: an under-trained critic under-estimates the KL (exercise 3). Its spread is set not
# by the KL but by $\chi^2(q \,\|\, p)$, which is infinite for the wide forward fit: the known weakness of DV
# and MINE-type estimators (McAllester and Stratos 2020; [derivation](docs/derivations/donsker_varadhan.md)).

# %% [markdown]
# ## 2. Cooperative training: the generator proposes, the energy revises
#
# Short Langevin chains from noise are the weak point of an energy model: $K$ = 15 steps cannot carry
# noise to the data, so the energy learns to be a *transport map* for those 15 steps rather than a
# density (lesson 07). CoopNets (Xie et al. 2018) start the chains at the samples of a generator
# $x = G(z)$. Each iteration (bars: batch means)
#
# $$\text{propose}\quad x_0 = G(z),\ z \sim \mathcal N(0, I), \qquad
# \text{revise}\quad x_{k+1} = x_k - h \nabla_x E(x_k) + \sqrt{2Th}\,\xi_k,\ k < K,$$
# $$\mathcal L_E = \overline{E(x_\text{data})} - \overline{E(x_K)} + \alpha\big(\overline{E(x_\text{data})^2}
# + \overline{E(x_K)^2}\big), \qquad \mathcal L_G = \overline{\lVert G(z) - x_K \rVert^2}.$$
#
# The energy learns by maximum likelihood with the revised samples as negatives; the generator learns to
# jump to where the revision went, so next time the chains start closer to the model. $x_K$ is a constant
# (detached) in both losses, so one optimiser steps both networks. The baseline: the same energy and $K$,
# chains from uniform noise. On the toy the sampler runs at $T = 1$ (noise $\sqrt{2h}$); which method wins
# may depend on $h$, so both run at three steps and three seeds, graded by the exact NLL (grid $\log Z$)
# against the entropy floor and by the multi-scale MMD$^2$ against its noise floor (both reject a ring, a
# missing mode, 2:1 weights and too-wide modes at $n$ = 2000: tests/test_lesson08_metrics.py).
#
# Helpers that sections 2-6 share: the generator, the guarded training of an energy (with or without a
# generator), the sampler at evaluation, the digits and the classifier that grades them.

# %%
IMAGE_SHAPE = (1, 8, 8)  # the digits: one channel, 8x8 pixels in [-1, 1]


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
        if generator is not None:  # loss_G = mean |G(z) - x_K|^2: proposals move to where the energy sent them
            loss_g = ((x_start - x_neg) ** 2).flatten(1).sum(1).mean()
            loss, logs = loss + loss_g, {**logs, "generator_mse": loss_g.detach()}
        return loss, logs

    return trainer.fit(loss_fn, n_steps, desc=name)


def revise(energy, x0, step_size, noise_scale, clamp=None):
    """The model's sampler at evaluation: the same K Langevin steps as in training."""
    return langevin(energy, x0, cfg.langevin_steps, step_size, noise_scale=noise_scale, clamp=clamp,
                    generator=gen)[0].detach()


def gap_in_se(a, b):
    """|mean(a) - mean(b)| in standard errors of the difference (two SeedStats)."""
    gap, se = abs(a.mean - b.mean), math.hypot(a.se, b.se)
    return gap / se if se > 0 else (0.0 if gap == 0 else math.inf)


def uniform_images(n):
    return 2 * torch.rand(n, *IMAGE_SHAPE, generator=gen, device=device) - 1  # (n, 1, 8, 8) uniform in [-1, 1]


@cache
def digits_data():
    """The 8x8 digits in [-1, 1], and the classifier whose features define the Frechet distance (trained once,
    from its own seed, whichever section asks first)."""
    from common.evaluation import train_feature_classifier

    digits = load_signed_images("digits")
    with torch.random.fork_rng():
        torch.manual_seed(run.seed)
        feature_clf, feature_acc = train_feature_classifier(digits.x_train, digits.y_train, digits.x_test,
                                                            digits.y_test, epochs=cfg.fd_epochs,
                                                            generator=torch.Generator().manual_seed(0))
    return digits, feature_clf, feature_acc

# %% [markdown]
# ### The update, written out
# A few dozen iterations as a plain loop on the toy, printing both losses (far too few to learn the
# density: the point is the update).

# %%
def coop_loop(n_iter, step_size, generator):
    """CoopNets written out: propose with G, revise by K Langevin steps on E, one Adam step on both networks."""
    torch.manual_seed(run.seed)
    energy, proposer = MLPEnergy(2, (cfg.toy_hidden,) * 2), Generator(cfg.z_dim, (2,), cfg.toy_hidden)
    optimizer = torch.optim.Adam([*energy.parameters(), *proposer.parameters()], lr=cfg.coop_lr)
    for it in range(n_iter):
        x_data = toy.sample(cfg.coop_batch, generator)  # (B, 2)
        x_0 = proposer.sample(cfg.coop_batch, generator)  # propose x_0 = G(z), (B, 2); keeps its graph for loss_G
        # revise: x_{k+1} = x_k - h grad E(x_k) + sqrt(2h) xi_k, K times, from x_0 (a constant for the energy)
        x_k = langevin(energy, x_0.detach(), cfg.langevin_steps, step_size, generator=generator)[0].detach()
        e_data, e_k = energy(x_data), energy(x_k)  # (B,), (B,)
        # loss_E = mean E(data) - mean E(x_K) + alpha (mean E(data)^2 + mean E(x_K)^2)
        loss_e = e_data.mean() - e_k.mean() + cfg.coop_alpha * ((e_data**2).mean() + (e_k**2).mean())
        loss_g = ((x_0 - x_k) ** 2).sum(1).mean()  # loss_G = mean |G(z) - x_K|^2
        optimizer.zero_grad()
        (loss_e + loss_g).backward()  # no gradient crosses between the two: x_K is detached
        optimizer.step()
        if it % 10 == 0 or it == n_iter - 1:
            print(f"   iteration {it:3d}   loss_E {loss_e.item():+.4f}   loss_G {loss_g.item():.4f}   "
                  f"mean E(data) {e_data.mean().item():+.3f}   mean E(x_K) {e_k.mean().item():+.3f}")


if run.section(2):
    toy = toy_dataset(cfg.toy)
    print(f"\n2. Cooperative training written out: {cfg.demo_steps} iterations on {cfg.toy}, "
          f"h = {cfg.toy_step_sizes[-1]:g}")
    coop_loop(cfg.demo_steps, cfg.toy_step_sizes[-1], run.generator("coop-loop"))

# %% [markdown]
# The same update, with the divergence guard and the logged history, is `common.training.Trainer`:
# `train_energy` (above) hands it this loss, `draw_negatives` running the $K$ Langevin steps. The sweep:
# both methods at every step $h$, the same seeds, mean ± s.e. over seeds.

# %%
if run.section(2):
    from common.evaluation import grid_nll, mmd_bandwidths, mmd_multiscale, mmd_noise_floor, nll_floor

    gen = run.generator("coop-toy")

    def draw_toy(n):
        return toy.sample(n, gen).to(device)

    x_eval = draw_toy(cfg.n_eval)  # one held-out set grades every run: NLL on it, MMD^2 against it
    bandwidths = mmd_bandwidths(x_eval)  # 1/16, 1/4 and 1 x the median distance: the small ones see the modes
    mmd_floor = mmd_noise_floor(draw_toy, cfg.n_eval, cfg.mmd_repeats, bandwidths)
    floor, floor_se = nll_floor(toy, generator=gen)

    def toy_run(seed, step_size, cooperative):
        """Train one energy (with a generator if ``cooperative``) at Langevin step h; grade it on x_eval."""
        torch.manual_seed(seed)  # the same initial energy for both methods at a seed
        energy = MLPEnergy(2, (cfg.toy_hidden,) * 2).to(device)
        generator = Generator(cfg.z_dim, (2,), cfg.toy_hidden).to(device) if cooperative else None
        propose = (lambda n: generator.sample(n, gen)) if cooperative else (lambda n: uniform_box(n, toy.bounds, gen))
        noise = math.sqrt(2 * step_size)  # T = 1
        name = f"{'CoopNets' if cooperative else 'EBM only'} (toy, h {step_size:g}, seed {seed})"
        train_energy(energy, cfg.coop_steps, cfg.coop_batch, draw_toy, propose, step_size, noise, None, name,
                     generator=generator)
        with torch.no_grad():
            start = propose(cfg.n_eval)
            nll = grid_nll(energy, x_eval, toy.bounds, cfg.grid_n)
        samples = revise(energy, start, step_size, noise)
        grades = {"nll": nll, "mmd": mmd_multiscale(samples, x_eval, bandwidths)}
        if cooperative:  # what the revision does: the generator's own samples graded the same way
            grades["mmd_generator"] = mmd_multiscale(start, x_eval, bandwidths)
        return grades, {"energy": energy, "samples": samples, "start": start}

    t0 = time.process_time()
    sweep, shown = {}, {}
    for h in cfg.toy_step_sizes:
        for cooperative in (True, False):
            runs = [toy_run(run.seed + k, h, cooperative) for k in range(cfg.toy_seeds)]
            sweep[h, cooperative] = {m: SeedStats(tuple(g[m] for g, _ in runs)) for m in runs[0][0]}
            shown[h, cooperative] = runs[0][1]  # the first seed's model, for the picture
    toy_seconds = time.process_time() - t0

    print(f"\n2. Cooperative training vs the energy alone on {cfg.toy}: {cfg.coop_steps} iterations of batch "
          f"{cfg.coop_batch}, K = {cfg.langevin_steps} Langevin steps at T = 1 for both, {cfg.toy_seeds} seeds each")
    print(f"   floors: NLL H(p) = {floor:.3f} ± {floor_se:.3f} nats; MMD^2 (data vs fresh data, {cfg.n_eval} points, "
          f"3 bandwidths) {mmd_floor:.4f}; CPU time of the sweep {toy_seconds:.0f} s")
    print(f"   {'h':>6}{'NLL CoopNets':>18}{'NLL EBM only':>18}{'MMD^2 generator':>20}{'MMD^2 revised':>18}"
          f"{'MMD^2 EBM only':>18}")
    for h in cfg.toy_step_sizes:
        c, e = sweep[h, True], sweep[h, False]
        print(f"   {h:6g}{str(c['nll']):>18}{str(e['nll']):>18}{str(c['mmd_generator']):>20}{str(c['mmd']):>18}"
              f"{str(e['mmd']):>18}")
    for h in cfg.toy_step_sizes:  # the comparison at every step: one claim per statement per h
        c, e = sweep[h, True], sweep[h, False]
        run.claim(f"toy_nll_ebm_only_h{h:g}", f"h = {h:g}: the energy trained from noise has the lower exact NLL",
                  e["nll"], "<", c["nll"], reference_label="(CoopNets)")
        run.claim(f"toy_revision_h{h:g}", f"h = {h:g}: K revision steps lower the generator's MMD^2", c["mmd"], "<",
                  c["mmd_generator"], reference_label="(generator alone)")
    gaps = [gap_in_se(sweep[h, True]["mmd"], sweep[h, False]["mmd"]) for h in cfg.toy_step_sizes]
    run.claim("toy_mmd_no_winner", "on MMD^2 neither method wins by 2 s.e. at any step", max(gaps), "<", 2.0,
              reference_label="s.e. (largest gap over h)")
    h_small, h_large = min(cfg.toy_step_sizes), max(cfg.toy_step_sizes)
    for cooperative, name in ((True, "CoopNets"), (False, "EBM only")) if h_large > h_small else ():
        run.claim(f"toy_mmd_step_{'coop' if cooperative else 'ebm_only'}", f"{name}: a larger step lowers MMD^2",
                  sweep[h_large, cooperative]["mmd"], "<", sweep[h_small, cooperative]["mmd"],
                  reference_label=f"(h = {h_small:g})")
    best = min(min(sweep[h, m]["nll"].mean for m in (True, False)) for h in cfg.toy_step_sizes)
    run.claim("toy_nll_off_floor", "no toy model gets within 0.2 nats of the entropy floor", best - floor, ">", 0.2,
              reference_label="nats (best mean NLL - floor)")
    sweep_json = {f"{h:g}": {("coop" if c else "ebm_only"): {m: v.to_json() for m, v in st.items()}
                             for (hh, c), st in sweep.items() if hh == h} for h in cfg.toy_step_sizes}
    run.metrics.update({"toy_step_sweep": sweep_json, "toy_nll_floor": floor, "toy_mmd_floor": mmd_floor,
                        "coop_toy_seconds": toy_seconds})

    h_shown = cfg.toy_step_sizes[-1]  # the pictures: the largest step of the sweep, first seed
    fig, axes = plotting.figure(2, 2, title=f"{cfg.toy}: CoopNets vs EBM only, {cfg.coop_steps} iterations, "
                                            f"$K$ = {cfg.langevin_steps} Langevin steps, $T$ = 1; "
                                            f"maps at $h$ = {h_shown:g}, seed {run.seed}")
    panels = ((toy.log_density, shown[h_shown, True]["start"], "data $p(x)$ and the generator's proposals $G(z)$"),
              (lambda x: -shown[h_shown, True]["energy"](x), shown[h_shown, True]["samples"],
               "CoopNets: $e^{-E(x)}$, revised samples"),
              (lambda x: -shown[h_shown, False]["energy"](x), shown[h_shown, False]["samples"],
               "EBM only: $e^{-E(x)}$, samples from noise"))
    for ax, (log_density, points, title) in zip(axes, panels):
        first = ax is axes[0]  # the data and the proposals; then the two models and their samples
        plotting.colorbar(ax, plotting.density_image(ax, log_density, toy.bounds),
                          "data density $p(x)$ (relative)" if first else "model $e^{-E(x)}$ (relative)")
        plotting.scatter_samples(ax, points[:600], color="#ff7f0e" if first else "white", size=8)
        ax.set(title=title, xlim=toy.bounds[:2], ylim=toy.bounds[2:])
    for cooperative, color, offset in ((True, "#1f77b4", -0.06), (False, "#d62728", 0.06)):
        for i, h in enumerate(cfg.toy_step_sizes):
            st = sweep[h, cooperative]["nll"]
            axes[3].plot(np.full(st.n, i + offset), np.array(st.values) - floor, "o", color=color, alpha=0.45)
            axes[3].errorbar(i + offset, st.mean - floor, yerr=2 * st.se, fmt="_", color=color, ms=22, mew=3, capsize=5,
                             label=("CoopNets" if cooperative else "EBM only") + " (mean ± 2 s.e.)" if i == 0 else None)
    axes[3].set(xticks=range(len(cfg.toy_step_sizes)), xticklabels=[f"{h:g}" for h in cfg.toy_step_sizes],
                xlabel="Langevin step $h$", ylabel="NLL $-$ entropy floor (nats)", ylim=(0, None),
                title=f"exact NLL above the floor, {cfg.toy_seeds} seeds (dots)")
    axes[3].legend(loc="upper right")
    run.savefig(fig, "fig03_coop_toy", key=True)

# %% [markdown]
# **What to notice.** First, the failure. At this budget (500 iterations per run) neither energy is a good
# density: the best mean NLL is 0.46 nats above the entropy floor (claim toy_nll_off_floor), both maps are
# rings without the eight modes, and every MMD^2 is 40-100x its floor. Between the two methods, at every
# step the energy trained from noise has the lower exact NLL (claims toy_nll_ebm_only_h*; default run:
# 3.99 vs 4.19 nats at h = 0.02, 3.97 vs 4.02 at 0.1), and the gap shrinks as h grows. On the samples the
# MMD^2 names no winner (toy_mmd_no_winner). The revision's 15 steps halve the generator's MMD^2 at every h
# (toy_revision_h*), and a larger step lowers both methods' MMD^2 (toy_mmd_step_*). The proposals (top
# left) cover the ring and its inside rather than the eight modes.

# %% [markdown]
# ## 3. Cooperative training on the digits
#
# The same comparison on the 8x8 digits (64 dimensions, pixels in [-1, 1]). Here the sampler uses the usual
# image-EBM settings, step h = 0.5 and noise s = 0.01, so T = s^2 / (2h) = 1e-4: noisy gradient descent on
# E, not sampling at T = 1 (lesson 07). Quality is the Frechet distance (FD) in the features of a small
# classifier trained here, next to its floor (test images against training images) and two baselines.

# %%
if run.section(3):
    from common.evaluation import FrechetScorer

    gen = run.generator("coop-digits")
    digits, feature_clf, feature_acc = digits_data()
    x_train, x_test = digits.x_train.to(device), digits.x_test.to(device)
    scorer = FrechetScorer(feature_clf, digits.x_train, digits.x_test)
    img_temperature = effective_temperature(cfg.img_sgld_step_size, cfg.img_sgld_noise)

    def draw_digits(n):
        # dequantised: each grey level spread over its bin, so the energy cannot put infinite density on the grid
        batch = x_train[torch.randint(len(x_train), (n,), generator=gen, device=device)]
        return dequantize(batch, digits.n_levels, gen)

    torch.manual_seed(run.seed)
    coop_energy_img = MLPEnergy(64, (cfg.img_hidden,) * 2).to(device)
    coop_gen_img = Generator(cfg.img_z_dim, IMAGE_SHAPE, cfg.img_hidden, squash=True).to(device)
    torch.manual_seed(run.seed)
    solo_energy_img = MLPEnergy(64, (cfg.img_hidden,) * 2).to(device)
    img_args = (cfg.img_sgld_step_size, cfg.img_sgld_noise, (-1.0, 1.0))
    train_energy(coop_energy_img, cfg.img_iters, cfg.img_batch, draw_digits,
                 lambda n: coop_gen_img.sample(n, gen), *img_args, "CoopNets (digits)", generator=coop_gen_img)
    train_energy(solo_energy_img, cfg.img_iters, cfg.img_batch, draw_digits, uniform_images, *img_args,
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
    print(f"\n3. Cooperative training on the digits: {cfg.img_iters} iterations, K = {cfg.langevin_steps}, h = "
          f"{cfg.img_sgld_step_size:g}, s = {cfg.img_sgld_noise:g} (T = {img_temperature:.1e}); feature classifier "
          f"test accuracy {feature_acc:.3f}")
    print(f"   Frechet distance ({n_img} samples)  CoopNets (revised) {fd['coop']:.2f}   generator alone "
          f"{fd['generator']:.2f}   EBM only {fd['ebm_only']:.2f}")
    print(f"   references                        floor (test vs train) {fd['floor']:.2f}   fitted Gaussian "
          f"{fd['gaussian']:.2f}   uniform noise {fd['noise']:.2f}")
    run.claim("digits_ebm_only_wins", "digits: the energy trained from noise has the lower FD (one run each)",
              fd["ebm_only"], "<", fd["coop"], reference_label="(CoopNets, revised)")
    run.claim("digits_ebm_only_vs_gaussian", "digits: EBM-only samples beat a fitted Gaussian", fd["ebm_only"], "<",
              fd["gaussian"], reference_label="(fitted Gaussian)")
    run.claim("digits_coop_vs_gaussian", "digits: CoopNets' samples score worse than a fitted Gaussian", fd["coop"],
              ">", fd["gaussian"], reference_label="(fitted Gaussian)")
    run.claim("digits_revision_small", "digits: at T = 1e-4 the revision changes the generator's FD by < 20 %",
              abs(fd["coop"] / fd["generator"] - 1), "<", 0.2, reference_label="(relative change)")
    run.metrics.update({"coop_digits_fd": fd["coop"], "generator_digits_fd": fd["generator"],
                        "ebm_only_digits_fd": fd["ebm_only"], "digits_fd_floor": fd["floor"],
                        "digits_fd_baselines": {"gaussian": fd["gaussian"], "noise": fd["noise"]},
                        "feature_classifier_accuracy": feature_acc})

    fig, axes = plotting.figure(3, title=f"8x8 digits: CoopNets vs EBM only, {cfg.img_iters} iterations, "
                                         f"$K$ = {cfg.langevin_steps}, $h$ = {cfg.img_sgld_step_size:g}, $T$ = "
                                         f"{img_temperature:.0e}; Fréchet distance (lower is better): floor "
                                         f"{fd['floor']:.1f}, fitted Gaussian {fd['gaussian']:.1f}, "
                                         f"noise {fd['noise']:.1f}")
    for ax, images, label in ((axes[0], gen_images, f"generator $G(z)$: FD {fd['generator']:.1f}"),
                              (axes[1], coop_images, f"CoopNets, revised: FD {fd['coop']:.1f}"),
                              (axes[2], solo_images, f"EBM only, from noise: FD {fd['ebm_only']:.1f}")):
        plotting.image_grid(ax, (images[:64].cpu() + 1) / 2, nrow=8, title=label)
    run.savefig(fig, "fig04_coop_digits")

# %% [markdown]
# **What to notice.** Read the FD against its floor and baselines (all at n = 359; the FD rejects digits from
# half the classes and blurred digits at that n, tests/test_lesson08_metrics.py). Cooperative training does
# NOT beat the energy alone at equal Langevin budget (claim digits_ebm_only_wins); it even scores worse than a
# fitted Gaussian (digits_coop_vs_gaussian), which the energy from noise beats. At T = 1e-4 fifteen steps of
# descent barely change the generator's samples (digits_revision_small). The energy trained from noise has
# learned to turn noise into digits in exactly K steps (short-run EBMs, Nijkamp et al. 2019), which the FD
# rewards; the generator's blur may come from regressing onto the revisions (exercise 6, not measured).
# CoopNets' published gains use convolutional generators, longer revisions and a z-revision step; this MLP
# version shows the mechanism, not the gain. One run each: the budget holds seeds for the toy only.

# %% [markdown]
# ## 4. Energy-based GANs: an autoencoder as the energy
#
# EBGAN (Zhao et al. 2016) keeps the GAN game but makes the discriminator an energy: the reconstruction
# error of an autoencoder, $E(x) = \lVert \mathrm{Dec}(\mathrm{Enc}(x)) - x \rVert^2$, low on data. With a margin $m$,
#
# $$\mathcal L_D = E(x_\text{data}) + \big[m - E(G(z))\big]^+, \qquad
# \mathcal L_G = E(G(z)) + \lambda_\text{PT}\, \mathrm{PT}\big(\mathrm{Enc}(G(z))\big).$$
#
# The hinge pushes fakes up only until they reach $m$, so their energy cannot grow without bound (the EBM's
# divergence problem in GAN form). The pulling-away term $\mathrm{PT} = \frac{1}{N(N-1)}\sum_{i \ne j}
# \cos^2(s_i, s_j)$ over the codes $s = \mathrm{Enc}(G(z))$ of a batch penalises a generator whose samples
# all look alike to the encoder: a direct push against mode collapse. The generator's loss is taken with the
# discriminator's weights held fixed (torch.func.functional_call with detached weights), so one optimiser
# steps both players simultaneously. Samples come straight from G: EBGAN never runs Langevin.

# %%
if run.section(4):
    from common.evaluation import kl_weights, mode_kl_threshold, mode_weights

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

    def mode_grade(samples):
        """Per-mode weights within 1 std of the nearest centre (common.evaluation.mode_weights): their KL from
        uniform, KL(1/8 || w), and the in-mode fraction (data: 1 - e^{-1/2} = 0.39; a ring: far less)."""
        weights, inside = mode_weights(samples.cpu(), mode_centres.cpu(), radius=EIGHT_STD)
        return {"kl": kl_weights(np.full(8, 1 / 8), weights), "inside": inside}

    def ring_8(n):
        """No modes at all: uniform in angle on the circle through the centres, with the modes' radial spread."""
        angle = 2 * math.pi * torch.rand(n, generator=gen, device=device)
        radius = EIGHT_RADIUS + EIGHT_STD * torch.randn(n, generator=gen, device=device)
        return torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], 1)

    def draw_toy_8(n):
        return target8.sample(n, gen).to(device)

    def train_ebgan(seed, pt_weight):
        torch.manual_seed(seed)
        disc = AutoencoderEnergy(2, cfg.ebgan_hidden, cfg.ebgan_code).to(device)
        generator = Generator(cfg.z_dim, (2,), cfg.ebgan_hidden).to(device)
        model = torch.nn.ModuleDict({"discriminator": disc, "generator": generator})
        trainer = Trainer(model, run, lr=cfg.ebgan_lr, betas=(0.5, 0.999), blame="ebgan_lr",
                          name=f"EBGAN (PT {pt_weight:g}, seed {seed})")
        curve = []  # KL of the mode weights every ebgan_eval_every steps, from the first check after step 0

        def loss_fn(step):
            if step % cfg.ebgan_eval_every == 0 and step:  # at step 0 no sample is in a mode: the weights mean nothing
                with torch.no_grad():
                    curve.append(mode_grade(generator.sample(cfg.n_eval, gen))["kl"])
            fake = generator.sample(cfg.ebgan_batch, gen)
            # L_D = E(x) + [m - E(G(z))]^+   (fakes detached: this part trains the discriminator only)
            loss_d = disc(draw_toy_8(cfg.ebgan_batch)).mean() + torch.relu(cfg.margin - disc(fake.detach())).mean()
            # L_G = E(G(z)) + lambda PT, through a copy of the discriminator whose weights are constants
            frozen = {k: v.detach() for k, v in disc.named_parameters()}
            e_fake, codes = torch.func.functional_call(disc, frozen, (fake,), {"with_code": True})
            pt = pulling_away(codes)
            return loss_d + e_fake.mean() + pt_weight * pt, {"e_fake": e_fake.mean().detach(), "pt": pt.detach()}

        trainer.fit(loss_fn, cfg.ebgan_steps, desc=f"EBGAN PT={pt_weight:g} seed {seed}")
        with torch.no_grad():
            samples = generator.sample(cfg.n_eval, gen)
        return {**mode_grade(samples), "samples": samples, "curve": curve}

    seeds = [run.seed + k for k in range(cfg.ebgan_seeds)]  # --seed moves every run
    ebgan = {pt: [train_ebgan(s, pt) for s in seeds] for pt in (0.0, cfg.pt_weight)}
    stats_of = {pt: {m: SeedStats(tuple(r[m] for r in rs)) for m in ("kl", "inside")} for pt, rs in ebgan.items()}
    during = {pt: SeedStats(tuple(float(np.mean(r["curve"])) for r in rs)) for pt, rs in ebgan.items()}
    reference = {"data": mode_grade(draw_toy_8(cfg.n_eval)), "ring": mode_grade(ring_8(cfg.n_eval))}
    kl_line = mode_kl_threshold(round(reference["data"]["inside"] * cfg.n_eval), 8)  # fresh data stays under it

    print(f"\n4. EBGAN on 8 Gaussians: margin {cfg.margin:g}, {cfg.ebgan_steps} steps, {cfg.ebgan_seeds} seeds "
          f"(mean ± s.e.), {cfg.n_eval} samples; mode weights from the points within 1 std of their nearest centre")
    print(f"   {'':<26}{'KL(uniform || weights)':>24}{'in-mode fraction':>20}{'KL over training':>20}")
    for label, g in (("fresh data", reference["data"]), ("uniform ring (no modes)", reference["ring"])):
        print(f"   {label:<26}{g['kl']:24.4f}{g['inside']:20.3f}")
    for pt, st in stats_of.items():
        print(f"   {f'EBGAN, lambda_PT = {pt:g}':<26}{str(st['kl']):>24}{str(st['inside']):>20}{str(during[pt]):>20}")
    print(f"   the weights are right (99.9 % of fresh data sets) below KL {kl_line:.4f}; KL over training: averaged "
          "over the checks (how soon the weights even out)")
    without, with_pt = stats_of[0.0], stats_of[cfg.pt_weight]
    run.claim("ebgan_metric_sees_ring", "a ring scores far below data on the in-mode fraction",
              reference["ring"]["inside"], "ratio<", reference["data"]["inside"], 0.8, reference_label="(data)")
    run.claim("ebgan_pt_sooner", "the pulling-away term evens the weights out sooner (KL over training)",
              during[cfg.pt_weight], "<", during[0.0], reference_label="(lambda_PT = 0)")
    run.claim("ebgan_final_same", "at the end the two settings' mode weights do not differ by 2 s.e.",
              gap_in_se(with_pt["kl"], without["kl"]), "<", 2.0, reference_label="s.e. (gap of the final KLs)")
    run.claim("ebgan_weights_wrong", "neither setting ends with the right mode weights",
              min(without["kl"].mean, with_pt["kl"].mean), ">", kl_line, reference_label="(99.9 % line for data)")
    run.claim("ebgan_too_wide", "both settings' samples are wider than the modes",
              max(without["inside"].mean, with_pt["inside"].mean), "<", 0.8 * reference["data"]["inside"],
              reference_label="(0.8 x the data's in-mode fraction)")
    both = {"without_pt": 0.0, "with_pt": cfg.pt_weight}
    run.metrics.update({"ebgan_mode_kl": {k: stats_of[pt]["kl"].to_json() for k, pt in both.items()},
                        "ebgan_in_mode_fraction": {k: stats_of[pt]["inside"].to_json() for k, pt in both.items()},
                        "ebgan_references": {**reference, "kl_line": kl_line},
                        "ebgan_kl_during_training": {k: during[pt].to_json() for k, pt in both.items()}})

    fig, axes = plotting.figure(3, title=f"EBGAN on 8 Gaussians: margin {cfg.margin:g}, {cfg.ebgan_steps} steps, "
                                         f"{cfg.ebgan_seeds} seeds, graded on {cfg.n_eval} samples")
    colors = {0.0: "#d62728", cfg.pt_weight: "#2ca02c"}
    for ax, (pt, rs) in zip(axes, ebgan.items()):
        plotting.colorbar(ax, plotting.density_image(ax, target8.log_density, target8.bounds),
                          "data density $p(x)$ (relative)")
        plotting.scatter_samples(ax, rs[0]["samples"][:800], size=6)
        ax.set(title=f"$\\lambda_{{PT}}$ = {pt:g}, seed {seeds[0]}: generator samples\n"
                     f"KL {rs[0]['kl']:.3f}, {rs[0]['inside']:.0%} within 1 std of a mode (data "
                     f"{reference['data']['inside']:.0%})", xlim=target8.bounds[:2], ylim=target8.bounds[2:])
        curve = np.array([r["curve"] for r in rs])  # (seeds, evaluations)
        steps = np.arange(1, curve.shape[1] + 1) * cfg.ebgan_eval_every
        axes[2].plot(steps, curve.T, color=colors[pt], lw=0.8, alpha=0.5)
        axes[2].plot(steps, curve.mean(0), color=colors[pt], lw=2.5, label=f"$\\lambda_{{PT}}$ = {pt:g}: seeds, mean")
    axes[2].axhline(kl_line, color="k", ls="--", lw=1.2, label="weights right below this line (99.9 % of data)")
    axes[2].set(yscale="log", xlabel="training step", ylabel="KL(uniform $\\|$ mode weights)",
                title=f"mode weights during training ({cfg.ebgan_seeds} seeds)")
    plotting.legend_below(axes[2])
    run.savefig(fig, "fig05_ebgan", key=True)

# %% [markdown]
# **What to notice.** The grade first: fresh data puts 1 - e^{-1/2} = 39 % of its points within 1 std of a
# mode, with equal weights; a uniform ring (no modes) only 18 % (claim ebgan_metric_sees_ring). On this grade
# EBGAN fails at this budget: both generators trace a thin curve through the modes, too few samples in a mode
# (ebgan_too_wide), weights far from equal (ebgan_weights_wrong; KL 0.21 ± 0.16 without and 0.13 ± 0.09 with
# the pulling-away term in the default run), and by the end the two settings do not differ
# (ebgan_final_same). What the pulling-away term does measurably is even out the weights SOONER
# (ebgan_pt_sooner). A GAN is a game: the weights keep moving between checks, so look at the single seeds.

# %% [markdown]
# ## 5. JEM: the classifier is secretly an energy model
#
# Any classifier with logits $f(x)$ defines a joint energy model (Grathwohl et al. 2020):
#
# $$p(x, y) = \frac{e^{f(x)[y]}}{Z},\quad E(x, y) = -f(x)[y],\quad E(x) = -\log\sum_y e^{f(x)[y]},\quad
# p(y \mid x) = \frac{p(x, y)}{p(x)} = \mathrm{softmax}(f(x))[y]$$
#
# ($Z$ cancels: the ordinary classifier), so $\log p(x, y) = \log p(y \mid x) + \log p(x)$
# ([derivation](docs/derivations/jem_decomposition.md)). JEM trains both terms: cross-entropy for
# $\log p(y \mid x)$, and the maximum-likelihood gradient of $\log p(x)$,
#
# $$\nabla_\theta \big[-\log p_\theta(x)\big] = \nabla_\theta E_\theta(x_\text{data})
# - \mathbb E_{p_\theta}\big[\nabla_\theta E_\theta(x)\big],$$
#
# whose model expectation comes from SGLD on E(x) with a replay buffer: JEM's 20 steps of step 1 and noise
# 0.01 (T = 5e-5: noisy descent), a 10,000-sample buffer, 5 % of it re-initialised from uniform noise per
# draw. Against it: the same network, same initial weights and epochs, trained on cross-entropy only. (On
# CIFAR-10 Grathwohl et al. report 92.9 % for JEM against 95.8 % for the plain classifier; their calibration
# result is on CIFAR-100.) A fifth of the training digits is held out as a validation split that neither
# model trains on: the temperature that calibrates each model is fitted there, never on the test images.

# %%
if run.section(5) or run.section(6):
    from common.evaluation import calibrated_ece_quantile, expected_calibration_error, reliability_bins

    gen = run.generator("jem")
    digits, feature_clf, _ = digits_data()
    x_train, x_test = digits.x_train.to(device), digits.x_test.to(device)
    n_classes = int(digits.y_train.max()) + 1
    # a validation split of the training digits, used by neither model's training: temperature scaling is fitted there
    split = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(run.seed))
    n_val = round(cfg.val_fraction * len(x_train))
    x_fit, y_fit = x_train[split[n_val:]], digits.y_train.to(device)[split[n_val:]]
    x_val, y_val = x_train[split[:n_val]], digits.y_train[split[:n_val]]
    steps_per_epoch = math.ceil(len(x_fit) / cfg.jem_batch)


def batches(step):
    """Minibatch ``step`` of a fresh permutation every epoch (the epoch's seed: its number)."""
    epoch, i = divmod(step, steps_per_epoch)
    order = torch.randperm(len(x_fit), generator=torch.Generator().manual_seed(run.seed * 7919 + epoch))
    index = order[i * cfg.jem_batch:(i + 1) * cfg.jem_batch].to(device)
    return x_fit[index], y_fit[index]


def train_classifier(joint, lr, alpha, warmup, name, restarts=0, keep_going=False):
    """Cross-entropy, plus (joint=True) the SGLD maximum-likelihood term on p(x). Returns (model, trainer).

    ``keep_going``: a run that diverges after its last restart returns (model, trainer) with
    ``trainer.failed`` set to the guard's message instead of stopping the lesson."""
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

    trainer.failed = None
    try:
        trainer.fit(loss_fn, cfg.jem_epochs * steps_per_epoch, desc=name)
    except TrainingDiverged as err:
        if not keep_going:
            raise
        run.metrics.pop("diverged", None)  # caught on purpose: section 6 reports it
        trainer.failed = str(err)
    return model.eval(), trainer


@torch.no_grad()
def fit_temperature(model):
    """Temperature scaling: the tau > 0 that minimises the validation cross-entropy of softmax(f(x) / tau)."""
    logits = model.logits(x_val).cpu().double()
    nll = lambda log_tau: float(torch.nn.functional.cross_entropy(logits / math.exp(log_tau), y_val))  # noqa: E731
    return math.exp(optimize.minimize_scalar(nll, bounds=(-4, 4), method="bounded").x)


@torch.no_grad()
def test_report(model, tau=1.0):
    probs = torch.softmax(model.logits(x_test) / tau, 1).cpu()
    # the ECE line: what a perfectly calibrated model with these confidences scores at this n (labels drawn
    # from its own probabilities), 95 % quantile
    floor = calibrated_ece_quantile(probs, cfg.ece_bins, cfg.ece_floor_draws, 0.95, torch.Generator().manual_seed(0))
    return {"accuracy": float((probs.argmax(1) == digits.y_test).float().mean()), "ece_floor_95": floor,
            "ece": expected_calibration_error(probs, digits.y_test, cfg.ece_bins),
            "bins": reliability_bins(probs, digits.y_test, cfg.ece_bins)}


# %% [markdown]
# ### The JEM update, written out
# A few dozen steps as a plain loop, the replay buffer a plain tensor, printing the loss and both energies
# (no warm-up here; the real runs below have it).

# %%
def jem_loop(n_steps, generator):
    """JEM written out: cross-entropy + the SGLD maximum-likelihood term, negatives from a replay buffer."""
    torch.manual_seed(run.seed)
    model = ClassifierEnergy(MLPClassifier(64, n_classes, (cfg.jem_hidden,) * 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.jem_lr)
    buffer = 2 * torch.rand(cfg.buffer_size, *IMAGE_SHAPE, generator=generator) - 1  # (N, 1, 8, 8) noise
    for step in range(n_steps):
        x, y = batches(step)  # (B, 1, 8, 8), (B,)
        index = torch.randint(len(buffer), (len(x),), generator=generator)
        x_0 = buffer[index]  # (B, 1, 8, 8), a copy
        fresh = torch.rand(len(x), generator=generator) < cfg.reinit_fraction  # a few chains restart from noise
        x_0[fresh] = 2 * torch.rand(int(fresh.sum()), *IMAGE_SHAPE, generator=generator) - 1
        # SGLD on E(x) = -logsumexp_y f(x)[y]:  x <- clamp(x - h grad E(x) + s xi),  sgld_steps times
        x_neg = langevin(model, x_0, cfg.sgld_steps, cfg.sgld_step_size, noise_scale=cfg.sgld_noise,
                         clamp=(-1.0, 1.0), generator=generator)[0].detach()
        buffer[index] = x_neg  # the chains go on from here at the next update (persistent)
        e_data, e_neg = model(dequantize(x, digits.n_levels, generator)), model(x_neg)  # (B,), (B,)
        # loss = -log p(y | x) + mean E(data) - mean E(x_neg) + alpha (mean E(data)^2 + mean E(x_neg)^2)
        cross_entropy = torch.nn.functional.cross_entropy(model.logits(x), y)
        loss = cross_entropy + e_data.mean() - e_neg.mean() + cfg.jem_alpha * ((e_data**2).mean() + (e_neg**2).mean())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 10 == 0 or step == n_steps - 1:
            print(f"   step {step:3d}   loss {loss.item():+.4f}   cross-entropy {cross_entropy.item():.4f}   "
                  f"mean E(data) {e_data.mean().item():+.3f}   mean E(samples) {e_neg.mean().item():+.3f}")


if run.section(5):
    print(f"\n5. JEM written out: {cfg.demo_steps} steps, SGLD {cfg.sgld_steps} steps of h = {cfg.sgld_step_size:g}")
    jem_loop(cfg.demo_steps, run.generator("jem-loop"))

# %% [markdown]
# The same update, with the divergence guard, the warm-up and restarts, is `common.training.Trainer`:
# `train_classifier` (above) hands it this loss, `draw_negatives` running SGLD from a `ReplayBuffer`.

# %%
if run.section(5):
    t0 = time.perf_counter()
    clf_model, _ = train_classifier(False, cfg.jem_lr, cfg.jem_alpha, cfg.jem_warmup, "plain classifier")
    clf_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    jem_model, jem_trainer = train_classifier(True, cfg.jem_lr, cfg.jem_alpha, cfg.jem_warmup, "JEM")
    jem_seconds = time.perf_counter() - t0
    models = {"plain classifier": clf_model, "JEM": jem_model}
    reports = {name: test_report(m) for name, m in models.items()}
    taus = {name: fit_temperature(m) for name, m in models.items()}
    scaled = {name: test_report(m, taus[name]) for name, m in models.items()}
    print(f"\n5. JEM vs the plain classifier on the digits: {cfg.jem_epochs} epochs on {len(x_fit)} images "
          f"({n_val} held out for validation), MLP 64-{cfg.jem_hidden}-{cfg.jem_hidden}-10, SGLD {cfg.sgld_steps} "
          f"steps, h = {cfg.sgld_step_size:g}, s = {cfg.sgld_noise:g} (T = "
          f"{effective_temperature(cfg.sgld_step_size, cfg.sgld_noise):.0e}); ECE with {cfg.ece_bins} bins on "
          f"{len(x_test)} test images; training time: classifier {clf_seconds:.1f} s, JEM {jem_seconds:.1f} s "
          f"({jem_seconds / clf_seconds:.0f}x)")
    print(f"   {'':<18}{'accuracy':>10}{'ECE':>8}{'tau (val.)':>12}{'ECE at tau':>12}{'calibrated 95 %':>17}")
    for name, r in reports.items():
        print(f"   {name:<18}{r['accuracy']:10.4f}{r['ece']:8.4f}{taus[name]:12.3f}{scaled[name]['ece']:12.4f}"
              f"{r['ece_floor_95']:17.4f}")
    print("   calibrated 95 %: the ECE that 95 % of label sets drawn from the model's own probabilities stay under")
    jem, clf = reports["JEM"], reports["plain classifier"]
    run.claim("jem_accuracy", "JEM's test accuracy is within 2 points of the plain classifier's", jem["accuracy"],
              "within", clf["accuracy"], 0.02, reference_label="(plain classifier, one run each)")
    run.claim("jem_miscalibrated", "JEM's ECE is beyond what a calibrated model scores here", jem["ece"], ">",
              jem["ece_floor_95"], reference_label="(95 % of calibrated draws)")
    run.claim("clf_calibrated", "the plain classifier's ECE is within calibrated noise", clf["ece"], "<",
              clf["ece_floor_95"], reference_label="(95 % of calibrated draws)")
    run.claim("jem_underconfident", "JEM is under-confident: its validation temperature is below 1", taus["JEM"], "<",
              1.0)
    run.claim("jem_temperature_fix", "temperature scaling (fitted on validation) makes JEM calibrated",
              scaled["JEM"]["ece"], "<", scaled["JEM"]["ece_floor_95"], reference_label="(95 % of calibrated draws)")
    run.metrics.update({"jem_accuracy": jem["accuracy"], "clf_accuracy": clf["accuracy"], "jem_ece": jem["ece"],
                        "clf_ece": clf["ece"], "temperature": taus,
                        "ece_calibrated_95": {name: r["ece_floor_95"] for name, r in reports.items()},
                        "ece_temperature_scaled": {name: r["ece"] for name, r in scaled.items()},
                        "jem_seconds": {"clf": clf_seconds, "jem": jem_seconds}})

    fig, axes = plotting.figure(3, 2, title=f"Calibration on the digits test set ({len(x_test)} images, "
                                            f"{cfg.jem_epochs} epochs, {cfg.ece_bins} equal-width bins)",
                                 sharex="col", gridspec_kw={"height_ratios": (3, 1.3)})
    panels = ((clf, "plain classifier"), (jem, "JEM"), (scaled["JEM"], f"JEM, logits / {taus['JEM']:.2f} (val.)"))
    for j, (r, label) in enumerate(panels):
        plotting.reliability_diagram(axes[j], axes[3 + j], *r["bins"])
        axes[j].set(title=f"{label}\naccuracy {r['accuracy']:.3f}, ECE {r['ece']:.3f} "
                          f"(calibrated: < {r['ece_floor_95']:.3f})")
        axes[3 + j].set(xlabel="confidence $\\mathrm{max}_y\\, p(y \\mid x)$")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=2)
    run.savefig(fig, "fig06_jem_calibration", key=True)

# %% [markdown]
# **What to notice.** JEM's accuracy is within a point of the classifier's (claim jem_accuracy, one run each),
# but its bars sit above the diagonal: it is UNDER-confident, right more often than it claims, and its ECE is
# far beyond what a calibrated model with its confidences scores on 359 images (jem_miscalibrated; ECE is
# biased upwards at small n, so the line comes from labels sampled from the model's own probabilities). The
# plain classifier sits just above its line in the default run (0.027 against 0.026: clf_calibrated FAILS, by
# a hair; fitted temperature 1.13, slightly over-confident). One temperature fitted on the validation digits
# (tau = 0.36 in the default run: JEM's logits are about 3x too small) brings JEM under the line
# (jem_temperature_fix, right panel). Why the logits shrink is open: the alpha E(x)^2 term is not it
# (exercise 4). Bins with fewer than 10 images are hatched: read every bar against the count under it.

# %%
if run.section(5):
    # JEM's generative half: class-conditional samples by SGLD on E(x, y) = -f(x)[y] from uniform noise (the
    # training sampler, run longer), labelled by JEM itself and by the independent feature classifier
    y_cond = torch.arange(n_classes, device=device).repeat_interleave(cfg.n_cond)
    x_cond, _ = langevin(lambda x: jem_model.joint_energy(x, y_cond), uniform_images(len(y_cond)), cfg.cond_steps,
                         cfg.sgld_step_size, noise_scale=cfg.sgld_noise, clamp=(-1.0, 1.0), generator=gen)
    with torch.no_grad():
        cond_acc = float((jem_model.logits(x_cond).argmax(1) == y_cond).float().mean())
        cond_feature_acc = float((feature_clf(x_cond.cpu()).argmax(1) == y_cond.cpu()).float().mean())
    print(f"   class-conditional SGLD ({cfg.cond_steps} steps): JEM labels its own samples right {cond_acc:.2f}, "
          f"the independent feature classifier agrees {cond_feature_acc:.2f}")
    run.metrics["jem_conditional_accuracy"] = {"self": cond_acc, "feature_classifier": cond_feature_acc}

    fig, ax = plotting.figure(title=f"JEM's generative half: SGLD on $E(x, y)$, {cfg.cond_steps} steps, "
                                    f"$h$ = {cfg.sgld_step_size:g}, $s$ = {cfg.sgld_noise:g} "
                                    f"($T$ = {effective_temperature(cfg.sgld_step_size, cfg.sgld_noise):.0e})",
                              panel_size=(9, 7))
    grid = x_cond.cpu().reshape(n_classes, cfg.n_cond, *IMAGE_SHAPE).transpose(0, 1).reshape(-1, *IMAGE_SHAPE)
    plotting.image_grid(ax, (grid + 1) / 2, nrow=n_classes, title=f"samples of $p(x \\mid y)$, one column per "
                        f"$y$ = 0..9; the feature classifier agrees {cond_feature_acc:.0%}")
    run.savefig(fig, "fig07_jem_samples")

# %% [markdown]
# **What to notice.** These are the digits the classifier "imagines" per label, drawn at T ~ 5e-5 from
# noise, so they are sharp modes, not a fair sample; the independent feature classifier labels all of them
# as intended in the default run. Whether JEM's trained density $-E(x)$ also tells digits from non-digits
# better than a plain classifier's logsumexp is the subject of lesson 09 (out-of-distribution detection).

# %% [markdown]
# ## 6. Keeping joint training alive
#
# What diverges: the maximum-likelihood term lowers E on data and raises it on the SGLD samples. When the
# sampler falls behind the model, raising E on the samples costs nothing and lowering it on data is
# unbounded: the energies run off, the logits with them, and cross-entropy is dragged along
# ([derivation](docs/derivations/jem_decomposition.md), "Why it diverges"). The stabilisers, one line each:
# - replay buffer: chains continue across updates, so negatives stay close to the current model;
# - energy L2 (alpha E^2): energies cannot drift to huge values while their difference stays small;
# - small learning rate with warm-up: the first updates, while the buffer is still noise, move the weights little;
# - spectral norm (MLPClassifier(spectral_norm=True)): bounds the input gradients; it helps the sampler but
#   costs accuracy, so use it when the others are not enough;
# - the divergence guard: `Trainer(bound=...)` checks the loss and every logged energy and stops with a
#   message that names the flag to change, or restarts from the last good weights with a lower lr.
# Below, JEM without warm-up and energy L2 and with a 30x learning rate (--unstable-lr): first with
# the guard alone, then with restarts, then with only the energy L2 put back (which stabiliser mattered).

# %%
if run.section(6):
    if not run.section(5):  # run alone: train the stable JEM for the left panel (without the plain classifier
        # before it, its SGLD draws differ a little from those of a full run)
        jem_model, jem_trainer = train_classifier(True, cfg.jem_lr, cfg.jem_alpha, cfg.jem_warmup, "JEM")
    print(f"\n6. JEM without its stabilisers: lr {cfg.unstable_lr:g}, no warm-up, alpha = 0, {cfg.jem_epochs} epochs")
    try:
        train_classifier(True, cfg.unstable_lr, 0.0, 0, "JEM unstable")
        print("   this run did not diverge (try a larger --unstable-lr)")
        unstable_diverged, unstable_step = False, None
    except TrainingDiverged as err:  # caught here on purpose, to show what the guard says
        run.metrics.pop("diverged", None)
        print(f"   the guard stopped it: {err}")
        unstable_diverged = True
        unstable_step = int(re.search(r"diverged at step (\d+)", str(err)).group(1))
    _, restarted_trainer = train_classifier(True, cfg.unstable_lr, 0.0, 0, "JEM with restarts",
                                            restarts=cfg.restarts, keep_going=True)
    print(f"   with restarts (up to {cfg.restarts}, lr x {cfg.restart_lr_factor:g} each): "
          f"{restarted_trainer.restarts_used} used, last lr {restarted_trainer.base_lr:.2g}: "
          + ("ran out of restarts" if restarted_trainer.failed else "finished"))
    # the mechanism: the same lr and no warm-up, with only the energy L2 back
    alpha_model, alpha_trainer = train_classifier(True, cfg.unstable_lr, cfg.jem_alpha, 0, "JEM, alpha back",
                                                  restarts=cfg.restarts, keep_going=True)
    alpha_report = None if alpha_trainer.failed else test_report(alpha_model)
    print(f"   the same lr without warm-up, alpha = {cfg.jem_alpha:g}: {alpha_trainer.restarts_used} restarts, "
          + ("diverged" if alpha_trainer.failed else f"finished: test accuracy {alpha_report['accuracy']:.4f}, "
                                                     f"ECE {alpha_report['ece']:.4f}"))
    run.claim("unstable_diverges", "without warm-up and alpha, at 30x the lr, JEM diverges", float(unstable_diverged),
              ">", 0.5, reference_label="(1: the guard stopped it)")
    run.claim("restarts_not_enough", "without alpha, restarts at a lower lr blow up again",
              restarted_trainer.restarts_used + bool(restarted_trainer.failed), ">", 1,
              reference_label="blow-ups (restarts used, +1 if it stopped)")
    run.claim("alpha_rescues", "with the energy L2 back, the same lr finishes without restarts",
              alpha_trainer.restarts_used + 10 * bool(alpha_trainer.failed), "<", 0.5,
              reference_label="(restarts used; 10 if it diverged)")
    run.metrics.update({"jem_unstable_diverged": unstable_diverged, "jem_unstable_step": unstable_step,
                        "jem_restarts": restarted_trainer.restarts_used,
                        "jem_restarted_finished": restarted_trainer.failed is None,
                        "jem_alpha_back": {"restarts": alpha_trainer.restarts_used,
                                           "finished": not alpha_trainer.failed,
                                           **{k: alpha_report[k] for k in ("accuracy", "ece") if alpha_report}}})

    fig, axes = plotting.figure(3, title=f"JEM energies during training: stable (lr {cfg.jem_lr:g}, warm-up, "
                                         f"$\\alpha$ = {cfg.jem_alpha:g}), and at lr {cfg.unstable_lr:g} "
                                         "without warm-up")
    for ax, trainer, label in ((axes[0], jem_trainer, "stable JEM"), (axes[1], restarted_trainer, "$\\alpha$ = 0"),
                               (axes[2], alpha_trainer, f"$\\alpha$ = {cfg.jem_alpha:g}")):
        ax.plot(trainer.history["e_pos"], lw=1, label="mean $E$(data)")
        ax.plot(trainer.history["e_neg"], lw=1, label="mean $E$(SGLD samples)")
        wild = bool(max(np.abs(trainer.history[k]).max() for k in ("e_pos", "e_neg")) > 10)
        if wild:  # linear in [-1, 1], logarithmic beyond: the blow-ups fit on the same axis
            ax.set_yscale("symlog", linthresh=1)
        ax.set(xlabel="update (the steps of a restart follow on)",
               ylabel="mean energy (symlog)" if wild else "mean energy",
               title=f"{label}: {trainer.restarts_used} restart(s)" + (", then stopped" if trainer.failed else ""))
        plotting.legend_below(ax, ncol=2)
    run.savefig(fig, "fig08_jem_divergence")

# %% [markdown]
# **What to notice.** In the stable run E(data) and E(samples) track each other (the sampler keeps up). At
# lr 3e-2 without warm-up and alpha the energies run off within a few updates (claim unstable_diverges; in
# the default run the guard stops it at update 75 and names the flag; at 1e-2 this seed survives all 20
# epochs). Restarting from the last good weights at a lower lr does NOT rescue it: the samples' energies climb
# away again after each restart, and only the fourth, at lr 5e-5, finishes (middle panel, symlog axis;
# restarts_not_enough). Putting back only the energy L2 (alpha = 0.1) at the same lr and without warm-up
# tames the run but does not always keep it inside the bound: in the default run it blows up once (update
# 75) and finishes after one restart at lr 6e-3, test accuracy 0.95 (right panel; claim alpha_rescues, "no
# restart at all", FAILS). Alpha makes the blow-ups rare; whether one slips through at 30x the lr depends on
# the draws, and the guard's restart catches it.

# %% [markdown]
# ## Summary
#
# 1. Forward KL (maximum likelihood) covers every mode; reverse KL picks one (a local optimum per mode,
#    paying about -log w). A Donsker-Varadhan critic estimates a KL from samples alone, from below.
# 2. Cooperative training starts the energy's short chains at a generator's proposals, and the generator
#    learns from the revisions, which halve its MMD^2. At an equal budget of 15 Langevin steps, over three
#    steps h and three seeds, the energy trained from noise is the better density at every h, the samples
#    tie, and on the digits (one run) the energy from noise gives the better digits. At this budget no toy
#    energy separates the eight modes: a failure the exact NLL shows.
# 3. EBGAN makes the discriminator an energy (reconstruction error) with a margin. Graded by mode weights
#    within 1 std (which a ring cannot pass), it misses here: samples too wide, weights unequal; the
#    pulling-away term evens the weights out sooner, not by the end.
# 4. Any classifier is an energy model: E(x, y) = -f(x)[y], E(x) = -logsumexp f(x). JEM trains the
#    p(x) half with SGLD and a replay buffer, at about 10x the cost; on the digits it keeps the accuracy,
#    is under-confident, and one validation-fitted temperature calibrates it.
# 5. Joint training can diverge when the sampler falls behind; the energy L2 makes blow-ups rare (restarts
#    at a lower lr alone do not help), warm-up and a small lr keep the run inside the bound, and the
#    guarded trainer stops or restarts a run that escapes anyway.

# %% [markdown]
# ## Exercises
# Hints and answers: docs/solutions/08_cooperative_training.md.
#
# **Exercise 1 (predict-then-tweak, easy): when do the two reverse-KL optima merge?**
# Predict how many reverse-KL optima section 1 finds for `--mix-means -1,1` and for `--mix-means -0.5,0.5`
# (std 0.6). Where does the forward fit sit in each case? Run both with `--section 1` and compare the table
# with fig01.
#
# **Exercise 2 (predict-then-tweak, easy): a bigger Langevin budget**
# Predict the toy NLLs (`toy_step_sweep` in metrics.json) for `--langevin-steps 60 --toy-step-sizes 0.1`.
# Does cooperative training catch up with the energy trained from noise when every revision is four times
# longer? Run it with `--section 2` (the toy sweep alone).
#
# **Exercise 3 (think + extend, medium): the critic's error, and what sets its spread**
# The DV estimate with the learned critic is below the exact KL at every fit, while the estimate with the
# exact critic log q/p scatters on both sides. Explain both, and why the forward fit has the largest s.e.
# Extend: with the exact critic, Var[DV estimate] = (Var_q[log q/p] + chi^2(q || p)) / M to first order.
# Compute chi^2(q || p) = int q^2/p - 1 by `scipy.integrate.quad` at each fit of section 1 (when is it
# infinite?) and compare the predicted s.e. with the exact critic's printed one.
#
# **Exercise 4 (predict-then-tweak + extend, medium): what shrinks JEM's logits?**
# Section 5 finds JEM under-confident and fits tau < 1 on validation data. Predict `temperature` and
# `jem_ece` for `--jem-alpha 0` (no E(x)^2 term), then run it; `--exercise 4` also prints each model's
# logit scale. Extend: fit tau by minimising the validation ECE instead of the NLL, and compare.
#
# **Exercise 5 (predict-then-tweak, medium): which stabiliser matters?**
# Predict which of `--jem-alpha 0`, `--jem-warmup 0`, `--jem-lr 5e-3` makes section 5's JEM diverge, then
# run each with `--section 5`. Which one does the guard catch first, and at what step?
#
# **Exercise 6 (think, hard): what the generator learns**
# Show that loss_G = mean |G(z) - x_K|^2 is maximum likelihood for a generator with Gaussian output noise,
# given the pairs (z, x_K). The full CoopNets also revises z by Langevin on the generator's posterior;
# what does skipping that step cost when the revision moves a sample to a different mode?

# %%
if run.stub(4):
    # Stub for exercise 4: the scale of each model's logits on the test digits (what temperature scaling rescales)
    with torch.no_grad():
        for name, m in models.items():
            logits = m.logits(x_test)
            print(f"\nExercise 4 stub: {name:<17} mean max logit {logits.max(1).values.mean():7.2f}   mean gap "
                  f"top-1 minus top-2 {logits.topk(2).values.diff(dim=1).abs().mean():6.2f}   "
                  f"mean -E(x) {(-m(x_test)).mean():7.2f}   fitted tau {taus[name]:.3f}")

run.finish()
