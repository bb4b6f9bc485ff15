"""Lesson 04 - Restricted Boltzmann machines: CD-k training, honest likelihoods, features, a small DBN.

A restricted Boltzmann machine (RBM) is a Boltzmann machine whose units form two layers, visible v
and hidden h, with no connections inside a layer, so every conditional factorises and the hidden
layer can be summed out in closed form: the free energy F(v). We train RBMs on binarised digits
with contrastive divergence and the recipe of Hinton's practical guide, then measure what we
learned honestly: exact log-likelihoods by enumerating a small hidden layer, annealed importance
sampling (AIS) for a bigger one, baselines, pictures, features for a classifier, a two-layer deep
belief network, and a side-by-side run of scikit-learn's BernoulliRBM.

You will learn
- why the bipartite graph gives p(h|v) and p(v|h) as products of sigmoids, and
  F(v) = -b.v - sum_j softplus(c_j + W_j.v), checked against brute force on a tiny RBM;
- how CD-k approximates the likelihood gradient and the practical guide's defaults (small Gaussian
  weights, visible biases log(p/(1-p)), momentum 0.5 -> 0.9, weight decay, mini-batches);
- which training monitors to trust: reconstruction error, pseudo-log-likelihood, the free-energy
  gap between training and held-out data, and the exact log-likelihood when it can be had;
- how to compute log Z exactly (2^20 hidden states is seconds) and estimate it with AIS, and to
  report test log-likelihood in nats per image next to trivial baselines;
- what RBM features buy a linear classifier, and how greedy stacking of a second RBM (started at
  W1^T) raises an exact variational bound on log p(v): a deep belief network.

Prerequisites: lesson 01 (energies, partition functions), lesson 03 (Boltzmann machines, Gibbs
sampling). Lesson 05 studies CD, PCD and their bias in depth.

How to run
    python 04_restricted_boltzmann_machines.py                   # 1-2 min CPU on 2 cores (digits): docs/results.md
    python 04_restricted_boltzmann_machines.py --quick           # every section on tiny sizes, < 10 s CPU
    python 04_restricted_boltzmann_machines.py --help            # every hyperparameter with advice
    python 04_restricted_boltzmann_machines.py --show            # also open the figure windows
    python 04_restricted_boltzmann_machines.py --section 7       # one section (3-6 retrain section 2's models)
    python 04_restricted_boltzmann_machines.py --dataset mnist --data-dir ~/data   # MNIST (MNIST/raw/ inside)
    python 04_restricted_boltzmann_machines.py --dataset mnist --lecture   # 28x28 at lecture size (README)
  With --dataset auto (default) MNIST is used when its four IDX files are in the data folder
  (--download fetches them), otherwise scikit-learn's 8x8 digits, which ship offline. The 28x28 default
  run takes well over 10 min: run it before class; --lecture (5,000 images, 16 hidden, 20 epochs) took
  119 s of CPU.

Recompute the small model's likelihood outside the lesson
    saved = torch.load("outputs/04_restricted_boltzmann_machines/rbm_small.pt")
    rbm = RBM.from_tensors(saved["W"], saved["b"], saved["c"])          # from common.rbm
    rbm.log_likelihood(saved["x_test"]).mean()                          # = metrics["test_loglik_exact"]

Figures and metrics.json keys: FIGURES and METRICS below (log-likelihoods in nats per test image, higher
is better); the run also saves rbm_small.pt, the small RBM and the binarised test set it was scored on.
"""
LESSON = "04_restricted_boltzmann_machines"  # outputs go to outputs/04_restricted_boltzmann_machines/

FIGURES = {
    "fig01_bipartite_free_energy": "the tiny RBM's graph; p(v) from brute force vs exp(-F(v))/Z; p(h_j|v)",
    "fig02_training_monitors": "reconstruction error, pseudo-log-likelihood, free-energy gap, exact LL",
    "fig03_likelihood": "AIS estimate vs number of temperatures against the exact log Z; test LL",
    "fig04_filters": "the learned weights of every hidden unit, as images",
    "fig05_reconstructions": "test images and their one-step reconstructions",
    "fig06_gibbs_samples": "samples after long Gibbs chains, and how chains evolve",
    "fig08_features": "logistic regression accuracy on pixels vs hidden probabilities",
    "fig09_dbn_samples": "the DBN's exact variational bound while its top RBM trains; data, RBM and DBN samples",
    "fig10_sklearn_comparison": "the recipe ladder vs scikit-learn's BernoulliRBM: filters; exact test LL over seeds",
}
METRICS = {
    "dataset": '"digits" or "mnist"', "n_train": "training images used", "n_test": "test images scored",
    "n_visible": "pixels per image",
    "tiny_free_energy_max_error": "max |F(v) - brute-force -log sum_h exp(-E(v,h))| on the tiny RBM",
    "tiny_conditional_max_error": "max |sigmoid(c + W^T v) - brute-force p(h_j = 1 | v)| on the tiny RBM",
    "tiny_log_z_error": "|log_partition() - brute-force log Z| on the tiny RBM",
    "cd_inline_max_diff": "max |inline CD-1 gradient - common.rbm cd_gradient| (same random numbers)",
    "recon_error_final": "reconstruction error of the small RBM after the last epoch",
    "pll_test_final": "its pseudo-log-likelihood on the test images after the last epoch",
    "free_energy_gap_final": "its mean F(test) - mean F(train) after the last epoch",
    "free_energy_gap_final_large": "the free-energy gap of the large RBM after the last epoch",
    "test_loglik_exact": "small RBM (--n-hidden-small units), exact log Z by enumeration",
    "train_loglik_exact": "the same model on its training images (the gap measures overfitting)",
    "log_z_exact_small": "its exact log Z", "log_z_ais_small": "AIS estimate of the same log Z",
    "ais_half_width_small": "its +-3 SE half-width",
    "ais_abs_error_small": "|AIS - exact| for the small model (target <= 0.1 nats)",
    "test_loglik_ais": "large RBM (--n-hidden-large units), log Z from AIS", "log_z_ais_large": "its AIS estimate",
    "ais_half_width_large": "its +-3 SE half-width",
    "baseline_loglik_uniform": "every pixel a fair coin: -n_visible log 2",
    "baseline_loglik_independent": "independent Bernoulli pixels with the training frequencies",
    "pixel_accuracy": "logistic regression on the binary pixels (test accuracy)",
    "feature_accuracy": "logistic regression on the large RBM's hidden probabilities",
    "feature_accuracy_small": "the same on the small RBM's hidden probabilities",
    "dbn_bound_train_init": "exact variational bound B(v) of the DBN at W2 = W1^T (= log p1(v)), training images",
    "dbn_bound_test_init": "the same on the test images",
    "dbn_bound_train_final": "B(v) after training the top RBM (greedy learning raises it), training images",
    "dbn_bound_test_final": "the same on the test images",
    "dbn_bound_init_max_abs_diff": "max over images |B(v) - log p1(v)| at W2 = W1^T (float32 rounding only)",
    "dbn_rbm1_test_loglik_exact": "exact test log p1(v) of the first layer (the small RBM), next to the bound",
    "dbn_max_gain_kl": "KL(aggregated posterior of h1 || p1(h1)), exact: the largest rise of the mean training bound",
    "sklearn_test_loglik": "BernoulliRBM, same data/split/hidden size/epochs, exact test LL (mean over seeds)",
    "cpu_seconds_per_epoch": "process CPU s per epoch of our CD updates alone (timing: varies)",
    "sklearn_cpu_seconds_per_epoch": "the same for BernoulliRBM (timing: varies)",
    "ladder_test_loglik": "the recipe ladder {cd, pcd, centred}: exact test LL, mean over --sklearn-seeds seeds",
    "ladder_test_loglik_se": "its SE over seeds",
    "sklearn_equal_time_best_test_loglik": "BernoulliRBM given the centred rung's CPU time, exact test LL (mean)",
    "sklearn_comparison_by_seed": "every section-7 number per seed (test LLs, epochs, CPU seconds)",
}
SECTIONS = {1: "the tiny RBM by brute force", 2: "CD-k training and monitors", 3: "exact log Z, AIS, baselines",
            4: "pictures", 5: "features", 6: "a deep belief network", 7: "recipe ladder vs scikit-learn"}
EXERCISES = {1: (2, 3), 2: (2, 3), 3: (3,), 5: (3,), 7: (6,)}  # exercise: the sections it needs


# %%
import math
from dataclasses import dataclass

from common.config import between, choice, count, nonnegative, parse_flags, positive, probability


@dataclass
class Config:
    # -- data
    dataset: str = choice("auto", ("auto", "digits", "mnist"))  # auto: MNIST if found, else the 8x8 digits
    data_dir: str = ""  # folder that holds MNIST/raw/; "" means $EBM_DATA_DIR or data/ in the repository
    download: bool = False  # --download: fetch MNIST (5 s timeout) when it is not in the data folder
    lecture: bool = False  # --lecture (needs --dataset mnist): 5,000/2,000 images, 16-unit small model, 20 epochs
    max_train: int = count(20000, minimum=0)  # training images kept (0 = all)
        # more: better LL, slower epochs; MNIST has 60,000, the digits 1,438
    max_test: int = count(0, minimum=0)  # test images scored (0 = all); MNIST has 10,000, digits 359
    # -- section 1: the tiny RBM checked by brute force
    tiny_visible: int = count(4)  # visible units of the tiny RBM (2^(n_v + n_h) joint states are enumerated)
    tiny_hidden: int = count(3)  # hidden units of the tiny RBM (the check is exact at any size; > 10 slows it)
    tiny_weight_scale: float = positive(1.0)  # its weights ~ N(0, s^2); large enough that p(v) is far from flat
    # -- section 2: training (defaults from Hinton's practical guide)
    n_hidden_small: int = between(20, 1, 22)  # hidden units of the small RBM; exact log Z enumerates 2^n
    n_hidden_large: int = count(100)  # hidden units of the large RBM, scored by AIS; on MNIST try 500
    epochs: int = count(50)  # passes over the training set; LL on digits is flat after ~30, noisy by +-0.3
    lr: float = positive(0.05)  # learning rate on the mean gradient; 0.2 already ends ~2 nats worse (noise)
    k: int = count(1)  # Gibbs steps in CD-k; k = 10 is closer to the true gradient, ~2.5x slower per epoch
    batch_size: int = count(32)  # mini-batch size; the guide suggests 10-100 (one example per class or so)
    momentum_start: float = probability(0.5)  # momentum while the gradient is large; higher can overshoot early
    momentum_end: float = probability(0.9)  # momentum afterwards; 0.5 throughout learns more slowly
    momentum_switch: int = count(5, minimum=0)  # epochs at --momentum-start (0: --momentum-end from the start)
    weight_decay: float = nonnegative(1e-4)  # L2 penalty on W (not the biases); the guide's 1e-4 (0 = none)
    weight_scale: float = positive(0.01)  # initial W ~ N(0, s^2); the guide's 0.01; large values saturate h
    eval_every: int = count(5)  # epochs between exact-LL checkpoints (2^n each); smaller: finer fig02, slower
    monitor_size: int = count(1000)  # training images for the monitors (fixed); more: smoother curves, slower
    # -- section 3: likelihood
    ais_chains: int = count(100)  # AIS runs; the +-3 SE half-width shrinks like 1/sqrt(chains)
    ais_betas: int = count(3000)  # AIS intermediate temperatures; too few give a noisy, on average low log Z
    ais_sweep: tuple[int, ...] = count((10, 30, 100, 300, 1000, 3000))  # fig03's sweep; one AIS run each
    # -- section 4: pictures
    n_chains: int = count(100)  # Gibbs chains for the sample grid (fig06 shows up to 100)
    gibbs_steps: int = count(1000)  # length of the sampling chains; they look like digits after ~10 steps
    # -- section 5: features
    logreg_c: float = positive(1.0)  # inverse L2 strength of the logistic regression; smaller regularises more
    logreg_max_iter: int = count(2000)  # lbfgs iterations; enough to converge (never use tol=1, see text)
    # -- section 6: deep belief network
    dbn_hidden: int = count(50)  # exercise 7: units of h2 in the wider stack on the large RBM
    dbn_lr: float = positive(0.01)  # rate of the DBN's top RBM (from W1^T); larger: faster, noisier bound
    # -- section 7: scikit-learn
    sklearn_seeds: int = count(3, minimum=2)  # seeds of the timed comparison (each trains 3 rungs + 3 sklearn RBMs)
    pcd_lr: float = positive(0.05)  # PCD rungs' first rate, decayed to 0 over --epochs; not tuned (try 0.02-0.1)


QUICK = {"max_train": 300, "max_test": 100, "dataset": "digits", "n_hidden_small": 8, "n_hidden_large": 16,
         "epochs": 3, "momentum_switch": 1, "eval_every": 1, "monitor_size": 100, "ais_chains": 20,
         "ais_betas": 100, "ais_sweep": (10, 100), "n_chains": 20, "gibbs_steps": 30, "logreg_max_iter": 200,
         "dbn_hidden": 8, "sklearn_seeds": 2}

# --lecture: 28x28 at lecture size: 5,000 training images, 2,000 test images, 16 + 100 hidden units (2^16
# states per exact log Z), 20 epochs; a flag you set to a non-default value wins over these
LECTURE = {"max_train": 5000, "max_test": 2000, "n_hidden_small": 16, "epochs": 20, "eval_every": 10,
           "ais_betas": 1000, "ais_sweep": (10, 100, 1000), "gibbs_steps": 300}


def check(cfg):
    """Rules across fields."""
    if cfg.lecture and cfg.dataset != "mnist":
        raise ValueError("--lecture sizes a 28x28 run: add --dataset mnist")


cfg, flags = parse_flags(Config, LESSON, __doc__, quick=QUICK, check=check, exercises=EXERCISES,
                         sections=SECTIONS)
if cfg.lecture and not flags.quick:
    for field_name, value in LECTURE.items():
        if field_name not in flags.changed:
            setattr(cfg, field_name, value)

# heavy imports only now, so that --help and a mistyped flag answer at once

import itertools
import time

import numpy as np
import torch

from common import plotting
from common.boltzmann import all_binary_states
from common.claims import over_seeds
from common.datasets import load_images
from common.lesson import start_lesson
from common.progress import progress
from common.rbm import RBM, centring_offsets, data_visible_bias, pseudo_log_likelihood, train_epoch

run = start_lesson(cfg, flags, figures=FIGURES, metrics=METRICS)
device = run.device
# Every section draws from its own generator, run.generator("section-name"), on the run's device and
# seeded from (--seed, name): changing one section's settings never changes another section's draws.

# %% [markdown]
# ## 1. The bipartite graph, factorised conditionals and the free energy
#
# An RBM has binary visible units v (n_v pixels) and hidden units h (n_h features), and energy
#
# $$E(v, h) = -b^\top v - c^\top h - v^\top W h, \qquad p(v, h) = \frac{e^{-E(v, h)}}{Z}.$$
#
# There are no v-v and no h-h edges, so given v the energy is a sum of one term per hidden unit:
# $p(h_j = 1 \mid v) = \sigma(c_j + W_{:j}^\top v)$ independently, and likewise
# $p(v_i = 1 \mid h) = \sigma(b_i + W_{i:} h)$. Summing $h$ out unit by unit gives
#
# $$p(v) = \frac{e^{-F(v)}}{Z}, \qquad F(v) = -b^\top v - \sum_j \log\big(1 + e^{c_j + W_{:j}^\top v}\big)
# = -b^\top v - \sum_j \mathrm{softplus}(c_j + W_{:j}^\top v).$$
#
# We check both facts on a tiny RBM by brute force over every (v, h) pair.

# %%
gen = run.generator("1-tiny-rbm")  # each section draws from its own stream (common.lesson)
def brute_force_joint(rbm: RBM) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every (v, h) pair of a tiny RBM: returns (visible states, hidden states, -E table)."""
    v_states = all_binary_states(rbm.n_visible, dtype=torch.float64)  # (2^nv, nv), counting order
    h_states = all_binary_states(rbm.n_hidden, dtype=torch.float64)  # (2^nh, nh)
    W, b, c = (t.double().cpu() for t in rbm.parameters())
    # -E(v, h) = b.v + c.h + v^T W h for all pairs
    neg_energy = (v_states @ b)[:, None] + (h_states @ c)[None, :] + v_states @ W @ h_states.T  # (2^nv, 2^nh)
    return v_states, h_states, neg_energy


tiny = RBM(cfg.tiny_visible, cfg.tiny_hidden, cfg.tiny_weight_scale, generator=gen, dtype=torch.float64)
# biases ~ N(0, 0.5^2), so that no state is special by construction
tiny.b = 0.5 * torch.randn(cfg.tiny_visible, generator=gen, dtype=torch.float64)
tiny.c = 0.5 * torch.randn(cfg.tiny_hidden, generator=gen, dtype=torch.float64)
v_all, h_all, neg_energy = brute_force_joint(tiny)
# F(v) = -log sum_h exp(-E(v, h)),  log Z = log sum_{v,h} exp(-E(v, h))
free_energy_brute = -torch.logsumexp(neg_energy, dim=1)  # (2^nv,)
log_z_brute = float(torch.logsumexp(neg_energy.flatten(), dim=0))
# p(h_j = 1 | v) = sum_{h: h_j = 1} p(h | v), with p(h | v) = softmax_h(-E(v, h))
cond_brute = torch.softmax(neg_energy, dim=1) @ h_all  # (2^nv, nh)

free_energy_formula = tiny.free_energy(v_all)
cond_formula = tiny.hidden_probs(v_all)
tiny_f_err = float((free_energy_formula - free_energy_brute).abs().max())
tiny_cond_err = float((cond_formula - cond_brute).abs().max())
tiny_z_err = abs(tiny.log_partition() - log_z_brute)
p_v_brute = torch.exp(-free_energy_brute - log_z_brute)  # p(v) = sum_h exp(-E(v, h)) / Z
p_v_formula = torch.exp(-free_energy_formula - tiny.log_partition())  # (2^nv,)

print(f"\nTiny RBM: {cfg.tiny_visible} visible x {cfg.tiny_hidden} hidden, "
      f"{2 ** (cfg.tiny_visible + cfg.tiny_hidden)} joint states enumerated (first {min(len(v_all), 8)} "
      f"of {len(v_all)} visible states shown)")
print(f"  {'v':<{cfg.tiny_visible + 2}}  {'F(v) brute force':>17}  {'F(v) formula':>13}  {'p(v)':>8}")
for row in range(min(len(v_all), 8)):
    bits = "".join(str(int(x)) for x in v_all[row])
    print(f"  {bits:<{cfg.tiny_visible + 2}}  {float(free_energy_brute[row]):17.6f}  "
          f"{float(free_energy_formula[row]):13.6f}  {float(p_v_brute[row]):8.4f}")
print(f"  max |F formula - brute force|               = {tiny_f_err:.2e}")
print(f"  max |sigmoid(c + W^T v) - brute p(h_j=1|v)| = {tiny_cond_err:.2e}")
print(f"  log Z: brute force {log_z_brute:.6f}   log_partition() {tiny.log_partition():.6f}")
run.metrics["tiny_free_energy_max_error"] = tiny_f_err
run.metrics["tiny_conditional_max_error"] = tiny_cond_err
run.metrics["tiny_log_z_error"] = tiny_z_err
run.claim("tiny_free_energy", "F(v) from the softplus formula equals the brute-force sum", tiny_f_err, "<", 1e-10)
run.claim("tiny_conditionals", "p(h | v) is a product of sigmoids", tiny_cond_err, "<", 1e-10)
run.claim("tiny_log_z", "log_partition() equals the brute-force log Z", tiny_z_err, "<", 1e-10)


# %%
def draw_bipartite(ax, W: torch.Tensor) -> None:
    """Visible units in a bottom row, hidden units in a top row, one edge per weight W_ij."""
    n_v, n_h = W.shape
    xv, xh = np.linspace(0, 1, n_v), np.linspace(0.15, 0.85, n_h) if n_h > 1 else np.array([0.5])
    scale = float(W.abs().max())
    for i, j in itertools.product(range(n_v), range(n_h)):
        w = float(W[i, j])
        ax.plot([xv[i], xh[j]], [0, 1], color="#d62728" if w > 0 else "#1f77b4", lw=0.5 + 3 * abs(w) / scale,
                alpha=0.8, zorder=1)
    ax.scatter(xv, np.zeros(n_v), s=500, c="white", edgecolors="k", zorder=2)
    ax.scatter(xh, np.ones(n_h), s=500, c="#cccccc", edgecolors="k", zorder=2)
    for i in range(n_v):
        ax.text(xv[i], 0, f"$v_{i + 1}$", ha="center", va="center", fontsize=12, zorder=3)
    for j in range(n_h):
        ax.text(xh[j], 1, f"$h_{j + 1}$", ha="center", va="center", fontsize=12, zorder=3)
    ax.text(0.5, -0.3, "red: $W > 0$, blue: $W < 0$, width $\\propto |W|$\nno v–v and no h–h edges", ha="center",
            fontsize=11)
    ax.set(xlim=(-0.15, 1.15), ylim=(-0.45, 1.25))
    ax.set_axis_off()


fig, axes = plotting.figure(3, 1, title=f"Tiny RBM ({cfg.tiny_visible} visible, {cfg.tiny_hidden} hidden, "
                                        f"$W \\sim \\mathcal{{N}}(0, {cfg.tiny_weight_scale:g}^2)$): "
                                        "formulas vs brute force")
draw_bipartite(axes[0], tiny.W)
axes[0].set_title("bipartite graph")
states = np.arange(len(v_all))
axes[1].bar(states, p_v_brute.numpy(), color="#cccccc", edgecolor="k", lw=0.5, label="brute force sum over (v, h)")
axes[1].plot(states, p_v_formula.numpy(), "o", color="#d62728", ms=4, label="$e^{-F(v)} / Z$")
axes[1].set(xlabel="visible state v (binary counting order)", ylabel="$p(v)$",
            title=f"marginal $p(v)$; max $|\\Delta F|$ = {tiny_f_err:.1e}")
axes[1].set_ylim(0, 1.35 * float(p_v_brute.max()))  # head room: the legend sits above the bars
axes[1].legend(loc="upper center", ncol=2, fontsize=10)
axes[2].plot([0, 1], [0, 1], color="k", lw=0.7)
axes[2].scatter(cond_brute.numpy().ravel(), cond_formula.numpy().ravel(), s=14, color="#2ca02c")
axes[2].set(xlabel=r"brute force $p(h_j = 1 \mid v)$", ylabel=r"$\sigma(c_j + W_{:j} \cdot v)$",
            title="factorised conditionals")
run.savefig(fig, "fig01_bipartite_free_energy")

# %% [markdown]
# **What to notice**
# - F(v) from the softplus formula equals the brute-force -log sum_h exp(-E) to ~1e-15: the sum over
#   2^n_h hidden states collapses into n_h softplus terms because the hidden units are independent
#   given v. That is the whole computational trick of the RBM.
# - Every point of the right panel lies on the diagonal: p(h | v) is a product of sigmoids.
# - Z still needs a sum over 2^min(n_v, n_h) states: cheap here, impossible for 784 x 500.

# %% [markdown]
# ## 2. Training with CD-k and the practical guide's recipe
#
# The gradient of the mean log-likelihood is a difference of two expectations:
#
# $$\frac{\partial}{\partial W} \log p(v) = \langle v h^\top \rangle_\text{data} - \langle v h^\top \rangle_\text{model}
# \qquad (b: \langle v \rangle,\ c: \langle h \rangle \text{ likewise})$$
#
# The model term needs samples from p(v, h). Contrastive divergence (CD-k) starts a Gibbs chain
# at the data and stops after k steps. Here is CD-1 written out; afterwards we use
# `RBM.cd_gradient` / `train_epoch` from `common/rbm.py`, which do exactly this (and more).
# Why CD-k approximates this gradient, and what it drops: docs/derivations/contrastive_divergence.md.
#
# Hinton's practical guide (2010) supplies the defaults: W ~ N(0, 0.01^2), visible biases
# b_i = log(p_i / (1 - p_i)) from the pixel frequencies p_i, hidden biases 0, mini-batches of
# ~10-100, momentum 0.5 for the first epochs then 0.9, weight decay 1e-4 on W. Its monitors: the
# reconstruction error (cheap, but NOT the objective), and, better, the free-energy gap between
# training and held-out images (overfitting shows as held-out images getting higher F).

# %%
gen = run.generator("2-training")
data = load_images(cfg.dataset, root=cfg.data_dir or None, binary=True, max_train=cfg.max_train or None,
                   max_test=cfg.max_test or None, download=cfg.download)  # a flag value of 0 means "all"
x_train, x_test = data.x_train.to(device), data.x_test.to(device)  # (N_train, n_v), (N_test, n_v) in {0, 1}
y_train, y_test = data.y_train.numpy(), data.y_test.numpy()
n_visible = data.n_pixels
print(f"\nData: {data.name}, {len(x_train)} training and {len(x_test)} test images of {data.shape[0]}x{data.shape[1]}"
      f" binary pixels (mean pixel on: {float(x_train.mean()):.3f})")
run.metrics["dataset"] = data.name
run.metrics["n_train"], run.metrics["n_test"], run.metrics["n_visible"] = len(x_train), len(x_test), n_visible


def cd1_gradient_inline(rbm: RBM, v0: torch.Tensor, generator) -> dict[str, torch.Tensor]:
    """CD-1 written out: data term at v0, model term at one Gibbs step v1."""
    # positive phase: h0 ~ p(h | v0) = sigmoid(c + v0 W)
    ph0 = torch.sigmoid(v0 @ rbm.W + rbm.c)  # (B, n_h)
    h0 = torch.bernoulli(ph0, generator=generator)  # (B, n_h)
    # negative phase: v1 ~ p(v | h0) = sigmoid(b + h0 W^T), then p(h | v1)
    v1 = torch.bernoulli(torch.sigmoid(h0 @ rbm.W.T + rbm.b), generator=generator)  # (B, n_v)
    ph1 = torch.sigmoid(v1 @ rbm.W + rbm.c)  # (B, n_h)
    # grad W = <v0 p(h|v0)^T> - <v1 p(h|v1)^T>  (probabilities instead of h samples: less noise)
    return {"W": (v0.T @ ph0 - v1.T @ ph1) / len(v0), "b": (v0 - v1).mean(0), "c": (ph0 - ph1).mean(0)}


demo = RBM(n_visible, cfg.n_hidden_small, cfg.weight_scale, data_visible_bias(x_train), generator=gen,
           device=device)
if run.section(2):
    # a fixed seed on purpose: the two implementations must see the SAME random numbers to be compared
    seed_state = torch.Generator(device=device).manual_seed(run.seed)
    inline = cd1_gradient_inline(demo, x_train[: cfg.batch_size], seed_state)
    seed_state.manual_seed(run.seed)  # replay the same random numbers
    library, _ = demo.cd_gradient(x_train[: cfg.batch_size], k=1, generator=seed_state)
    cd_diff = max(float((inline[name] - library[name]).abs().max()) for name in "Wbc")
    print(f"CD-1 inline vs common.rbm.cd_gradient (same random numbers): max |difference| = {cd_diff:.1e}")
    run.metrics["cd_inline_max_diff"] = cd_diff
    run.claim("cd_inline_matches", "CD-1 written out equals common.rbm's cd_gradient", cd_diff, "<", 1e-6)


# %%
def exact_log_z(rbm: RBM, chunk: int = 4096) -> float:
    """log Z = logsumexp_h -F(h),  F(h) = -c.h - sum_i softplus(b_i + (W h)_i)  (sum over v in closed form).

    The 2^n_h hidden states are built a chunk at a time (never the whole table: GBs at 28x28 otherwise).
    """
    terms = [torch.logsumexp(-rbm.hidden_free_energy(all_binary_states(
        rbm.n_hidden, dtype=torch.float64, start=start, stop=min(start + chunk, 2 ** rbm.n_hidden), device=device)), 0)
        for start in range(0, 2 ** rbm.n_hidden, chunk)]
    return float(torch.logsumexp(torch.stack(terms), 0))


def monitors(rbm: RBM, x_seen: torch.Tensor, x_held: torch.Tensor) -> dict[str, float]:
    """The practical guide's cheap monitors on a fixed training subset and on held-out data."""
    f_train, f_test = rbm.free_energy(x_seen).mean(), rbm.free_energy(x_held).mean()
    return {
        # PLL(v) ~ n_v log p(v_i | v_-i) for a random bit i: needs no Z
        "pll_train": float(pseudo_log_likelihood(rbm, x_seen, gen).mean()),
        "pll_test": float(pseudo_log_likelihood(rbm, x_held, gen).mean()),
        # mean F(test) - mean F(train): grows when the model starts to memorise its training set
        "free_energy_gap": float(f_test - f_train),
    }


def train_rbm(rbm: RBM, x: torch.Tensor, x_held: torch.Tensor, name: str, exact: bool = False) -> dict[str, list]:
    """CD-k with momentum and weight decay (common.rbm.train_epoch) for --epochs, monitored every epoch.

    Monitors use the first --monitor-size rows of ``x`` and the held-out ``x_held``; with ``exact``
    (every hidden configuration) the exact log-likelihood is added every --eval-every epochs.
    """
    x_seen, epochs = x[: cfg.monitor_size], cfg.epochs
    history = {"recon_error": [], "pll_train": [], "pll_test": [], "free_energy_gap": [], "ll_epochs": [],
               "ll_train": [], "ll_test": [], "wall": 0.0, "cpu": 0.0}
    velocity = None

    def exact_checkpoint(epoch):
        log_z = rbm.log_partition()  # exact: the 2^n_h hidden states enumerated
        history["ll_epochs"].append(epoch)
        history["ll_train"].append(float(-rbm.free_energy(x_seen).mean()) - log_z)
        history["ll_test"].append(float(-rbm.free_energy(x_held).mean()) - log_z)

    if exact:
        exact_checkpoint(0)
    bar = progress(range(1, epochs + 1), desc=name, leave=False)
    for epoch in bar:
        momentum = cfg.momentum_start if epoch <= cfg.momentum_switch else cfg.momentum_end
        wall, cpu = time.perf_counter(), time.process_time()
        velocity, _, recon = train_epoch(rbm, x, lr=cfg.lr, k=cfg.k, batch_size=cfg.batch_size, momentum=momentum,
                                         weight_decay=cfg.weight_decay, velocity=velocity, generator=gen)
        history["wall"] += time.perf_counter() - wall
        history["cpu"] += time.process_time() - cpu
        run.check_finite(recon, step=epoch, what=f"{name} reconstruction error", field="lr")
        run.check_finite(rbm.W, step=epoch, what=f"{name} weights", field="lr", bound=1e3)
        history["recon_error"].append(recon)
        for key, value in monitors(rbm, x_seen, x_held).items():
            history[key].append(value)
        if exact and (epoch % cfg.eval_every == 0 or epoch == epochs):
            exact_checkpoint(epoch)
        bar.set_postfix(recon=f"{recon:.4f}", pll=f"{history['pll_test'][-1]:.1f}")
    return history


visible_bias = data_visible_bias(x_train)
# sections 3-6 study the two models trained here, so they train them too (section 7 trains its own)
models_needed = any(run.section(n) for n in (2, 3, 4, 5, 6))
if models_needed:
    rbm_small = RBM(n_visible, cfg.n_hidden_small, cfg.weight_scale, visible_bias, generator=gen, device=device)
    rbm_large = RBM(n_visible, cfg.n_hidden_large, cfg.weight_scale, visible_bias, generator=gen, device=device)
    hist_small = train_rbm(rbm_small, x_train, x_test, f"RBM {cfg.n_hidden_small} hidden", exact=True)
    hist_large = train_rbm(rbm_large, x_train, x_test, f"RBM {cfg.n_hidden_large} hidden")

if run.section(2):
    print(f"\nMonitors after each {max(1, cfg.epochs // 5)} epochs, small RBM ({cfg.n_hidden_small} hidden units; "
          f"CD-{cfg.k}, lr {cfg.lr:g}, batch {cfg.batch_size})")
    print(f"  {'epoch':>5}  {'recon err':>9}  {'PLL train':>9}  {'PLL test':>9}  {'F gap':>7}  {'exact LL test':>13}")
    exact_at = dict(zip(hist_small["ll_epochs"], hist_small["ll_test"]))
    for epoch in sorted({*range(max(1, cfg.epochs // 5), cfg.epochs + 1, max(1, cfg.epochs // 5)), cfg.epochs}):
        i = epoch - 1
        ll = f"{exact_at[epoch]:13.3f}" if epoch in exact_at else f"{'':13}"
        print(f"  {epoch:5d}  {hist_small['recon_error'][i]:9.4f}  {hist_small['pll_train'][i]:9.2f}  "
              f"{hist_small['pll_test'][i]:9.2f}  {hist_small['free_energy_gap'][i]:7.3f}  {ll}")
    print(f"  large RBM ({cfg.n_hidden_large} hidden) after {cfg.epochs} epochs: recon err "
          f"{hist_large['recon_error'][-1]:.4f}, PLL test {hist_large['pll_test'][-1]:.2f}, "
          f"F gap {hist_large['free_energy_gap'][-1]:.3f}")
    run.metrics["recon_error_final"] = hist_small["recon_error"][-1]
    run.metrics["pll_test_final"] = hist_small["pll_test"][-1]
    run.metrics["free_energy_gap_final"] = hist_small["free_energy_gap"][-1]
    run.metrics["free_energy_gap_final_large"] = hist_large["free_energy_gap"][-1]
    run.claim("bigger_overfits_faster", f"the {cfg.n_hidden_large}-unit model overfits faster (final F gap, nats)",
              hist_large["free_energy_gap"][-1], ">", hist_small["free_energy_gap"][-1], reference_label="small model")
    run.claim("bigger_reconstructs_better", "the bigger model reconstructs better (final reconstruction error)",
              hist_large["recon_error"][-1], "<", hist_small["recon_error"][-1], reference_label="small model")

# independent Bernoulli pixels: p_i = (count_i + 1) / (N + 2)  (Laplace's rule, so no log 0)
p_pixel = (x_train.sum(0) + 1) / (len(x_train) + 2)  # (n_v,)
baseline_independent = float((x_test @ p_pixel.log() + (1 - x_test) @ (1 - p_pixel).log()).mean())
baseline_uniform = -n_visible * math.log(2)

# %%
if run.section(2):
    epochs_axis = np.arange(1, cfg.epochs + 1)
    fig, axes = plotting.figure(2, 2, title=f"{data.name}: CD-{cfg.k}, lr {cfg.lr:g}, batch {cfg.batch_size}, momentum "
                                f"{cfg.momentum_start:g}→{cfg.momentum_end:g}, weight decay {cfg.weight_decay:g}")
    for hist, label in ((hist_small, f"{cfg.n_hidden_small} hidden"), (hist_large, f"{cfg.n_hidden_large} hidden")):
        axes[0].plot(epochs_axis, hist["recon_error"], label=label)
        line = axes[1].plot(epochs_axis, hist["pll_test"], label=f"{label}, test")[0]
        axes[1].plot(epochs_axis, hist["pll_train"], "--", color=line.get_color(), lw=0.8, label=f"{label}, train")
        axes[2].plot(epochs_axis, hist["free_energy_gap"], label=label)
    axes[0].set(xlabel="epoch", ylabel="mean squared error", title="reconstruction error")
    axes[1].set(xlabel="epoch", ylabel="nats per image", title="pseudo-log-likelihood")
    axes[2].axhline(0, color="k", lw=0.6)
    axes[2].set(xlabel="epoch", ylabel="mean F(test) - mean F(train)", title="free-energy gap")
    axes[3].plot(hist_small["ll_epochs"], hist_small["ll_test"], "o-", ms=3, label="test (exact)")
    axes[3].plot(hist_small["ll_epochs"], hist_small["ll_train"], "s--", ms=3, lw=0.8, label="train (exact)")
    axes[3].axhline(baseline_independent, color="#2ca02c", ls=":", label="independent pixels, test")
    axes[3].set_ylim(baseline_independent - 3, max(hist_small["ll_train"]) + 1)
    axes[3].set(xlabel="epoch", ylabel="nats per image", title=f"exact log-likelihood, {cfg.n_hidden_small} hidden")
    for ax in axes:
        ax.legend()
    run.savefig(fig, "fig02_training_monitors")

# %% [markdown]
# **What to notice**
# - The reconstruction error falls fast and keeps falling, and the bigger model always reconstructs
#   better; it is what CD-1 nearly optimises, not the likelihood, so it cannot tell you when to stop.
# - The exact test log-likelihood (right) climbs in the first epochs and then wobbles by a few
#   tenths of a nat: with momentum 0.9 and a fixed learning rate CD keeps moving around the optimum.
# - The pseudo-log-likelihood follows the same trend without needing Z, but is noisy (one random
#   pixel per image).
# - The free-energy gap starts at 0 and creeps up: held-out images become slightly less probable
#   than training images. On 1,438 digits the 100-unit model overfits faster than the 20-unit one.

# %% [markdown]
# ## 3. Likelihood, honestly: exact log Z, AIS, and baselines
#
# For the small model we can sum the 2^n_h hidden configurations out explicitly (the visible sum is
# the softplus, as in section 1 with v and h swapped):
#
# $$\log Z = \operatorname{logsumexp}_h \Big[ c^\top h + \sum_i \mathrm{softplus}(b_i + W_{i:} h) \Big]$$
#
# `exact_log_z` above does that by enumerating the hidden states (`RBM.hidden_free_energy` is F(h));
# `RBM.log_partition` in common/rbm.py is the library version (it enumerates whichever layer is
# smaller). For the large model 2^100 terms are out of reach, so we use annealed importance
# sampling (Neal, 2001; for RBMs Salakhutdinov & Murray, 2008): start at a model with W = 0 whose
# Z is known, walk through K intermediate models p_beta with beta: 0 -> 1, one Gibbs step each,
# and average the importance weights
# prod_k p*_{beta_k}(v) / p*_{beta_{k-1}}(v).
# Too few temperatures UNDERestimate log Z on average (Jensen), which OVERstates the likelihood:
# so we check AIS against the exact answer on the small model, at the settings we use for the big one.

# %%
gen = run.generator("3-likelihood")
if run.section(3) or run.section(6):  # section 6 compares its bound with these
    log_z_small = rbm_small.log_partition()
    log_z_inline = exact_log_z(rbm_small)
    ll_test_small = rbm_small.log_likelihood(x_test, log_z_small)  # (N_test,) float64
    ll_train_small = rbm_small.log_likelihood(x_train, log_z_small)
    test_loglik_exact = float(ll_test_small.mean())
    test_loglik_se = float(ll_test_small.std() / math.sqrt(len(ll_test_small)))
if run.section(3):
    print(f"\nExact log Z of the small RBM: log_partition() = {log_z_small:.6f}, "
          f"inline enumeration = {log_z_inline:.6f}")

    ais_rows = []
    for n_betas in cfg.ais_sweep:
        estimate, half_width = rbm_small.ais_log_partition(cfg.ais_chains, n_betas, visible_bias, generator=gen)
        ais_rows.append((n_betas, estimate, half_width))
    log_z_ais_small, half_small = rbm_small.ais_log_partition(cfg.ais_chains, cfg.ais_betas, visible_bias,
                                                              generator=gen)
    log_z_ais_large, half_large = rbm_large.ais_log_partition(cfg.ais_chains, cfg.ais_betas, visible_bias,
                                                              generator=gen)
    ais_error_small = abs(log_z_ais_small - log_z_small)
    test_loglik_ais = float(-rbm_large.free_energy(x_test).double().mean()) - log_z_ais_large
    train_loglik_ais = float(-rbm_large.free_energy(x_train).double().mean()) - log_z_ais_large

    print(f"AIS on the small RBM ({cfg.ais_chains} chains), exact log Z = {log_z_small:.3f}")
    print(f"  {'temperatures':>12}  {'AIS log Z':>10}  {'+-3 SE':>7}  {'AIS - exact':>11}")
    for n_betas, estimate, half_width in ais_rows:
        print(f"  {n_betas:12d}  {estimate:10.3f}  {half_width:7.3f}  {estimate - log_z_small:+11.3f}")

    print(f"\nTest log-likelihood, nats per {data.shape[0]}x{data.shape[1]} image (higher is better; "
          f"{len(x_test)} test images, SE of a mean ~{test_loglik_se:.2f})")
    print(f"  {'model':<40} {'log Z':>18}  {'test LL':>8}  {'train LL':>8}")
    print(f"  {'uniform pixels (every pixel a coin)':<40} {'':>18}  {baseline_uniform:8.2f}")
    print(f"  {'independent Bernoulli pixels':<40} {'':>18}  {baseline_independent:8.2f}")
    print(f"  {f'RBM {cfg.n_hidden_small} hidden, exact log Z':<40} {log_z_small:18.3f}  {test_loglik_exact:8.2f}  "
          f"{float(ll_train_small.mean()):8.2f}")
    print(f"  {f'RBM {cfg.n_hidden_small} hidden, AIS log Z':<40} {f'{log_z_ais_small:.3f} +- {half_small:.3f}':>18}  "
          f"{test_loglik_exact + log_z_small - log_z_ais_small:8.2f}")
    print(f"  {f'RBM {cfg.n_hidden_large} hidden, AIS log Z':<40} {f'{log_z_ais_large:.3f} +- {half_large:.3f}':>18}  "
          f"{test_loglik_ais:8.2f}  {train_loglik_ais:8.2f}")
    print(f"  |AIS - exact| on the small RBM at the large model's settings: {ais_error_small:.3f} nats (target <= 0.1)")
    if not math.isfinite(half_large):  # the weights' relative SE is above 1/3: log(1 - 3 SE) does not exist
        print(f"  The large model's AIS weights are too uneven for a +-3 SE interval: its log Z (and test LL) is not "
              f"reliable at --ais-betas {cfg.ais_betas}; raise --ais-betas (and --ais-chains)")
    # RBM against independent pixels image by image: SE of the mean paired difference
    paired = ll_test_small - (x_test @ p_pixel.log() + (1 - x_test) @ (1 - p_pixel).log()).double()
    paired_se = float(paired.std() / math.sqrt(len(paired)))
    run.claim("ais_matches_exact", "AIS at the large model's settings matches the exact log Z (nats)", log_z_ais_small,
              "within", log_z_small, 0.1, reference_label="exact log Z")
    run.claim("rbm_beats_independent", f"the {cfg.n_hidden_small}-unit RBM beats independent pixels (test LL, nats)",
              test_loglik_exact, ">", baseline_independent, 3 * paired_se,
              reference_label="independent pixels (+3 paired SE)")
    run.claim("rbm_beats_uniform", "and far above every pixel a coin", test_loglik_exact, ">", baseline_uniform)
    run.metrics.update({
        "test_loglik_exact": test_loglik_exact, "train_loglik_exact": float(ll_train_small.mean()),
        "log_z_exact_small": log_z_small, "log_z_ais_small": log_z_ais_small, "ais_half_width_small": half_small,
        "ais_abs_error_small": ais_error_small, "test_loglik_ais": test_loglik_ais, "log_z_ais_large": log_z_ais_large,
        "ais_half_width_large": half_large, "baseline_loglik_uniform": baseline_uniform,
        "baseline_loglik_independent": baseline_independent,
    })

    # the small model and the exact test set it was scored on, so anyone can recompute the number
    torch.save({**rbm_small.state_dict(), "x_test": x_test.cpu(), "log_z": log_z_small,
                "test_loglik_exact": test_loglik_exact, "dataset": data.name}, run.outdir / "rbm_small.pt")
    print(f"  saved W, b, c and the binarised test set to {run.outdir / 'rbm_small.pt'}")

# %%
def loglik_dots(ax, values: dict[str, float]) -> None:
    """Log-likelihoods as labelled dots on one axis (bars from 0 would hide nat-sized differences)."""
    names = list(values)
    ax.hlines(range(len(names)), min(values.values()) - 2, list(values.values()), color="#cccccc", lw=1)
    ax.plot(list(values.values()), range(len(names)), "o", color="#1f77b4", ms=7)
    for row, value in enumerate(values.values()):
        ax.annotate(f"{value:.2f}", (value, row), xytext=(0, 7), textcoords="offset points", ha="center", fontsize=9)
    ax.set_yticks(range(len(names)), names)
    ax.set(ylim=(-0.6, len(names) - 0.3), xlim=(min(values.values()) - 2, max(values.values()) + 2),
           xlabel="log-likelihood, nats per image (higher is better)")


if run.section(3):
    fig, axes = plotting.figure(2, 1, title=f"{data.name}: AIS ({cfg.ais_chains} chains) against exact enumeration")
    sweep = np.array(ais_rows)
    axes[0].errorbar(sweep[:, 0], sweep[:, 1], yerr=sweep[:, 2], fmt="o-", capsize=3, label="AIS estimate ± 3 SE")
    axes[0].axhline(log_z_small, color="k", ls="--", lw=1, label=f"exact $\\log Z$ = {log_z_small:.2f}")
    axes[0].set(xscale="log", xlabel="number of intermediate temperatures", ylabel=r"$\log Z$",
                title=f"small RBM ({cfg.n_hidden_small} hidden)")
    axes[0].legend()
    loglik_dots(axes[1], {"uniform pixels": baseline_uniform, "independent pixels": baseline_independent,
                          f"RBM {cfg.n_hidden_small} (exact log Z)": test_loglik_exact,
                          f"RBM {cfg.n_hidden_large} (AIS log Z)": test_loglik_ais})
    axes[1].set_title(f"test log-likelihood ({len(x_test)} images)")
    run.savefig(fig, "fig03_likelihood", key=True)

# %% [markdown]
# **What to notice**
# - With 10-30 temperatures the AIS estimate is off by a few tenths of a nat, and its +-3 SE bar is
#   itself unreliable (100 chains cannot estimate the spread of such skewed weights). Its error is
#   negative on average (Jensen: E log w <= log E w = log Z/Z_A), though any single run can be on
#   either side. From ~1,000 temperatures on it agrees with the exact value to a few hundredths.
# - An RBM with 20 hidden units already beats independent pixels by several nats per image: the
#   hidden units capture which strokes go together (the claims above check it against both baselines).
#   Five times more hidden units gain little or nothing on 1,438 images trained with CD-1 (one seed,
#   and the large model's number carries AIS's error, so we claim no ranking); the large model fits
#   the training set better (the train column and the free-energy gap).
# - Too low an AIS log Z makes a test LL look too good: the check on the small model at the same
#   settings is what makes the large model's number believable.

# %% [markdown]
# ## 4. Pictures: filters, reconstructions, samples, hidden activations
#
# Each hidden unit j has a "receptive field" W_:j over the pixels: its input is c_j + W_:j . v.
# Reconstructions go v -> h ~ p(h|v) -> p(v|h). Samples come from long block-Gibbs chains
# v -> h -> v (`RBM.gibbs`) started from random pixels; we show p(v | h) at the last step, the
# usual way to display RBM samples. The histogram of hidden probabilities tells whether units are
# used as binary features (mass near 0 and 1) or sit in the middle (the guide's sign of too little
# training or too much weight decay), and whether some units are dead (always off or always on).

# %%
gen = run.generator("4-pictures")
def show_filters(ax, W: torch.Tensor, nrow: int, title: str) -> None:
    """Receptive fields W_:j / max|W_:j| as images: red W > 0, blue W < 0, white gaps between units."""
    import matplotlib

    filters = W.T.cpu() / W.T.cpu().abs().amax(1, keepdim=True).clamp_min(1e-12)  # (n_h, n_v) in [-1, 1]
    # torchvision's make_grid where it imports, a plain layout otherwise (the digits need no torchvision)
    grid = plotting.make_grid(filters.reshape(-1, 1, *data.shape), nrow=nrow, padding=1, pad_value=float("nan"))[0]
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="white")
    image = ax.imshow(grid.numpy(), cmap=cmap, vmin=-1, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    ax.set(title=title)
    plotting.colorbar(ax, image, r"$W_{ij} / \max_i |W_{ij}|$", shrink=0.7)


if run.section(4):
    fig, axes = plotting.figure(2, 1, title=f"{data.name}: receptive fields $W_{{:j}}$ after {cfg.epochs} epochs "
                                "(red: ink here excites the unit, blue: inhibits)", panel_size=(5.5, 5.0))
    show_filters(axes[0], rbm_small.W, 5, f"{cfg.n_hidden_small} hidden units")
    show_filters(axes[1], rbm_large.W, 10, f"{cfg.n_hidden_large} hidden units")
    run.savefig(fig, "fig04_filters")
    weights_norm = rbm_large.W.norm(dim=0)
    print(f"\nFilter norms |W_:j| of the large RBM: min {float(weights_norm.min()):.2f}, "
          f"median {float(weights_norm.median()):.2f}, max {float(weights_norm.max()):.2f}")


# %%
def reconstruct(rbm: RBM, v: torch.Tensor) -> torch.Tensor:
    """p(v | h) with h ~ p(h | v): one step of the chain CD-1 uses."""
    h, _ = rbm.sample_hidden(v, gen)
    return rbm.visible_probs(h)


if run.section(4):
    shown = x_test[:10]
    recon_small, recon_large = reconstruct(rbm_small, x_test), reconstruct(rbm_large, x_test)
    print(f"Test reconstruction error (mean squared): {cfg.n_hidden_small} hidden "
          f"{float(((x_test - recon_small) ** 2).mean()):.4f}, {cfg.n_hidden_large} hidden "
          f"{float(((x_test - recon_large) ** 2).mean()):.4f}")
    fig, ax = plotting.figure(1, 1, title="rows: test images, reconstruction with "
                              f"{cfg.n_hidden_small} and {cfg.n_hidden_large} hidden units", panel_size=(6.0, 2.4))
    plotting.image_grid(ax, torch.cat([shown, recon_small[:10], recon_large[:10]]), data.shape, nrow=10)
    run.savefig(fig, "fig05_reconstructions")

# %%
SNAPSHOTS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
snap_steps = [s for s in SNAPSHOTS if s < cfg.gibbs_steps] + [cfg.gibbs_steps]


def run_chains(rbm: RBM, v: torch.Tensor, steps: int, record=()) -> tuple[torch.Tensor, dict]:
    """Block Gibbs v -> h -> v for ``steps`` steps; returns p(v | h) at the end and at ``record`` steps."""
    probs, snaps = v, {0: v} if 0 in record else {}
    for step in range(1, steps + 1):
        v, probs = rbm.gibbs(v, k=1, generator=gen)
        if step in record:
            snaps[step] = probs
    return probs, snaps


if run.section(4):
    v_start = torch.bernoulli(torch.full((cfg.n_chains, n_visible), 0.5, device=device), generator=gen)  # (C, n_v)
    samples_large, snaps = run_chains(rbm_large, v_start, cfg.gibbs_steps, snap_steps)
    f_data = float(rbm_large.free_energy(x_test).mean())
    print(f"\nGibbs chains of the large RBM from random pixels: mean free energy of the chain states "
          f"(test images: {f_data:.1f})")
    print("  " + "  ".join(f"{s:>6d}" for s in snap_steps))
    print("  " + "  ".join(f"{float(rbm_large.free_energy((snaps[s] > 0.5).float()).mean()):6.1f}" for s in snap_steps))
    n_show = min(8, cfg.n_chains)
    evolution = torch.stack([snaps[s][:n_show] for s in snap_steps], dim=1).reshape(-1, n_visible)  # chain-major
    fig, axes = plotting.figure(2, 1, title=f"{data.name}: RBM with {cfg.n_hidden_large} hidden units, block Gibbs "
                                f"from random pixels", panel_size=(5.5, 5.0))
    plotting.image_grid(axes[0], samples_large, data.shape, nrow=10,
                        title=f"{cfg.n_chains} chains after {cfg.gibbs_steps} steps ($p(v \\mid h)$)")
    plotting.image_grid(axes[1], evolution, data.shape, nrow=len(snap_steps),
                        title="one chain per row at steps " + ",".join(map(str, snap_steps)))
    run.savefig(fig, "fig06_gibbs_samples")

# %%
if run.section(4):
    hidden_test = rbm_large.hidden_probs(x_test).cpu()  # (N_test, n_h)
    unit_means = hidden_test.mean(0)
    saturated = float(((hidden_test < 0.1) | (hidden_test > 0.9)).float().mean())
    dead = int(((unit_means < 0.01) | (unit_means > 0.99)).sum())
    print(f"\nHidden probabilities of the large RBM on the test set: {100 * saturated:.0f}% below 0.1 or above 0.9; "
          f"{dead} of {cfg.n_hidden_large} units (almost) never change (mean < 0.01 or > 0.99)")

# %% [markdown]
# **What to notice**
# - Filters (fig04) are signed pixel patterns: red where ink turns the unit on, blue where ink turns it
#   off. On 8x8 digits each is a coarse piece of one or two digit shapes; the small model's units must
#   cover more and are broader. (On MNIST they become pen strokes; try --dataset mnist.)
# - Reconstructions (fig05) are sharp even when the model is poor: one Gibbs step from the data
#   never leaves the data, which is why reconstruction error flatters.
# - Chains from random pixels (fig06) become digit-like within a few steps; their free energy drops
#   to (even below) that of real test images. Each chain then wanders from digit to digit: on these
#   small images block Gibbs still moves between classes within tens to hundreds of steps. Lesson 05
#   measures mixing properly.
# - Most hidden probabilities are near 0 or 1 (printed): the units act as binary feature detectors.

# %% [markdown]
# ## 5. Features: logistic regression on hidden probabilities
#
# p(h | v) is a nonlinear feature map learned without labels. We fit the same logistic regression
# (scikit-learn, lbfgs, C = --logreg-c) on raw binary pixels and on hidden probabilities.
# A caution: scikit-learn's RBM gallery example uses `LogisticRegression(tol=1)`; since
# scikit-learn 1.4 that stops at iteration 0 and scores at chance, so we keep the default
# tolerance and give lbfgs enough iterations to converge.

# %%
def logreg_accuracy(train_features: torch.Tensor, test_features: torch.Tensor):
    """Test accuracy, test predictions and the fitted classifier of an L2 logistic regression on the given features."""
    from sklearn.linear_model import LogisticRegression  # imported here: only sections 5-6 need scikit-learn
    from sklearn.metrics import accuracy_score

    clf = LogisticRegression(C=cfg.logreg_c, max_iter=cfg.logreg_max_iter)
    clf.fit(train_features.cpu().numpy(), y_train)
    predictions = clf.predict(test_features.cpu().numpy())
    return float(accuracy_score(y_test, predictions)), predictions, clf


if run.section(5):
    pixel_acc, _, _ = logreg_accuracy(x_train, x_test)
    small_acc, _, _ = logreg_accuracy(rbm_small.hidden_probs(x_train), rbm_small.hidden_probs(x_test))
    large_acc, _, _ = logreg_accuracy(rbm_large.hidden_probs(x_train), rbm_large.hidden_probs(x_test))
    print(f"\nLogistic regression (C = {cfg.logreg_c:g}), test accuracy on {len(x_test)} images")
    print(f"  {'features':<32} {'dimension':>9}  {'accuracy':>8}")
    for name, dim, acc in (("binary pixels", n_visible, pixel_acc),
                           (f"p(h|v), {cfg.n_hidden_small}-unit RBM", cfg.n_hidden_small, small_acc),
                           (f"p(h|v), {cfg.n_hidden_large}-unit RBM", cfg.n_hidden_large, large_acc)):
        print(f"  {name:<32} {dim:9d}  {acc:8.3f}")
    run.metrics["pixel_accuracy"] = pixel_acc
    run.metrics["feature_accuracy"] = large_acc
    run.metrics["feature_accuracy_small"] = small_acc
    acc_se = math.sqrt(pixel_acc * (1 - pixel_acc) / len(x_test))  # binomial SE of a test accuracy
    run.claim("features_match_pixels", f"{cfg.n_hidden_large} RBM features match or beat raw pixels (accuracy)",
              large_acc, ">", pixel_acc, -2 * acc_se, reference_label="pixels (-2 SE)")

    fig, ax = plotting.figure(1, 1, title=f"{data.name}: logistic regression (C = {cfg.logreg_c:g})",
                              panel_size=(6.5, 4.2))
    bars = ax.bar(["pixels", f"RBM {cfg.n_hidden_small}", f"RBM {cfg.n_hidden_large}"],
                  [pixel_acc, small_acc, large_acc], color=["#999999", "#1f77b4", "#d62728"])
    ax.bar_label(bars, fmt="%.3f")
    ax.set(ylim=(0, 1.05), ylabel="test accuracy", title=f"raw pixels vs RBM features ({len(x_test)} test images)")
    run.savefig(fig, "fig08_features")

# %% [markdown]
# **What to notice**
# - A 20-unit RBM compresses 64 pixels into 20 numbers and loses some class information; 100 units
#   (an overcomplete code) match or beat the raw pixels, although the RBM never saw a label.

# %% [markdown]
# ## 6. A deep belief network: two RBMs stacked greedily
#
# Hinton, Osindero & Teh (2006) read a trained RBM as a directed layer p(v | h1) under a prior p1(h1)
# (its own marginal). Greedy learning keeps p(v | h1) and the recognition distribution
# Q(h1 | v) = p1(h1 | v) of the first RBM, and replaces the prior by a second RBM p_top(h1) over h1
# and a new layer h2. For every v (their section 4, eq. 8)
#
# $$\log p(v) \ge B(v) = \mathbb{E}_Q\big[\log p_\text{top}(h_1) + \log p(v \mid h_1)\big] + H\big(Q(h_1 \mid v)\big),$$
#
# with equality when Q is the exact posterior. Started from the transposed weights ($W_2 = W_1^\top$),
# $p_\text{top}(h_1) = p_1(h_1)$: the DBN *is* the first RBM and $B(v) = \log p_1(v)$ exactly. Training the
# top RBM on $h_1 \sim Q(h_1 \mid v_\text{data})$ raises the mean training bound, by at most
# $\mathrm{KL}(q \,\|\, p_1)$ for the aggregated posterior $q(h_1) = \mathrm{mean}_n\, Q(h_1 \mid v_n)$ (the arguments:
# [docs/derivations/dbn_variational_bound.md](docs/derivations/dbn_variational_bound.md)). CD-1 only
# approximates that gradient, so we measure the rise. With $n_{h_1} \le 20$, B(v) is an exact sum over all
# $2^{n_{h_1}}$ states. To generate: Gibbs $h_1 \leftrightarrow h_2$ in the top RBM, then one pass down.

# %%
gen = run.generator("6-dbn")
from common.rbm import aggregated_posterior_kl, dbn_sample, dbn_variational_bound, rbm_on_top

if run.section(6):
    rbm_top = rbm_on_top(rbm_small)  # (n_h1 visible, n_v hidden), W2 = W1^T: the DBN equals rbm_small
    x_both = torch.cat([x_train, x_test])  # (N_train + N_test, n_v)

    def split_means(bound: torch.Tensor) -> tuple[float, float]:
        """Mean B(v) over the training images and over the test images."""
        return float(bound[: len(x_train)].mean()), float(bound[len(x_train):].mean())

    bound_init = dbn_variational_bound(rbm_small, rbm_top, x_both)  # (N_train + N_test,), exact: all h1 enumerated
    init_gap = float((bound_init - torch.cat([ll_train_small, ll_test_small])).abs().max())
    dbn_history = {0: split_means(bound_init)}
    q_train = rbm_small.hidden_probs(x_train)  # Q(h1 | v) for the training images, (N, n_h1)
    velocity_top = None
    for epoch in progress(range(1, cfg.epochs + 1), desc="top RBM of the DBN", leave=False):
        h1_train = torch.bernoulli(q_train, generator=gen)  # fresh h1 ~ Q(h1 | v) every epoch
        velocity_top, _, _ = train_epoch(rbm_top, h1_train, lr=cfg.dbn_lr, k=cfg.k, batch_size=cfg.batch_size,
                                         momentum=cfg.momentum_start, weight_decay=cfg.weight_decay,
                                         velocity=velocity_top, generator=gen)
        run.check_finite(rbm_top.W, step=epoch, what="top RBM weights", field="dbn_lr", bound=1e3)
        if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
            dbn_history[epoch] = split_means(dbn_variational_bound(rbm_small, rbm_top, x_both))
    (bound_train_0, bound_test_0), (bound_train_1, bound_test_1) = dbn_history[0], dbn_history[cfg.epochs]
    # the most any top RBM can add to the mean training bound: KL(aggregated posterior q(h1) || p1(h1)), exact
    dbn_max_gain = aggregated_posterior_kl(rbm_small, x_train)
    print(f"\nDBN {n_visible}-{cfg.n_hidden_small}-{n_visible}: exact bound B(v), nats per image, train / test "
          f"(top RBM: CD-{cfg.k}, lr {cfg.dbn_lr:g}, {cfg.epochs} epochs)")
    for label, train_value, test_value in (("log p1(v), first RBM (exact)", ll_train_small.mean(), test_loglik_exact),
                                           ("B(v) at W2 = W1^T", bound_train_0, bound_test_0),
                                           ("B(v) after training the top RBM", bound_train_1, bound_test_1)):
        print(f"  {label:<34} {float(train_value):8.3f}  {float(test_value):8.3f}")
    print(f"  max |B - log p1| over images at W2 = W1^T: {init_gap:.1e}; gain of the mean training bound "
          f"{bound_train_1 - bound_train_0:+.3f} of at most KL(q(h1) || p1(h1)) = {dbn_max_gain:.3f} nats "
          f"(q = mean over training images of Q(h1 | v), all 2^{cfg.n_hidden_small} states of h1 enumerated)")
    run.metrics.update({"dbn_bound_train_init": bound_train_0, "dbn_bound_test_init": bound_test_0,
                        "dbn_bound_train_final": bound_train_1, "dbn_bound_test_final": bound_test_1,
                        "dbn_bound_init_max_abs_diff": init_gap, "dbn_rbm1_test_loglik_exact": test_loglik_exact,
                        "dbn_max_gain_kl": dbn_max_gain})
    run.claim("dbn_init_equals_rbm", "at W2 = W1^T the bound equals log p1(v) on every image", init_gap, "<", 1e-3,
              reference_label="nats (float32 rounding)")
    run.claim("dbn_bound_rises", "training the top RBM raises the mean training bound", bound_train_1, ">",
              bound_train_0, reference_label="bound at W2 = W1^T")
    run.claim("dbn_gain_below_kl", "the gain is at most KL(aggregated posterior || p1(h1))",
              bound_train_1 - bound_train_0, "<", dbn_max_gain, reference_label="KL, nats")

    # (C, n_h1) random starts; Gibbs h1 <-> h2 in the top RBM, then one pass down
    h1_start = torch.bernoulli(torch.full((cfg.n_chains, cfg.n_hidden_small), 0.5, device=device), generator=gen)
    samples_dbn = dbn_sample(rbm_small, rbm_top, h1_start, cfg.gibbs_steps, generator=gen)
    samples_small, _ = run_chains(rbm_small, torch.bernoulli(torch.full((cfg.n_chains, n_visible), 0.5, device=device),
                                                              generator=gen), cfg.gibbs_steps)

    fig, axes = plotting.figure(4, 1, title=f"{data.name}: DBN {n_visible}-{cfg.n_hidden_small}-{n_visible}, top RBM "
                                f"from $W_1^T$, CD-{cfg.k}, lr {cfg.dbn_lr:g}; samples after {cfg.gibbs_steps} "
                                "Gibbs steps", panel_size=(4.2, 4.2))
    epochs_dbn = sorted(dbn_history)
    axes[0].plot(epochs_dbn, [dbn_history[e][0] for e in epochs_dbn], "s--", ms=3, label="bound $B(v)$, train")
    axes[0].plot(epochs_dbn, [dbn_history[e][1] for e in epochs_dbn], "o-", ms=3, label="bound $B(v)$, test")
    axes[0].axhline(float(ll_train_small.mean()), color="#7f7f7f", ls="--", lw=0.8, label=r"$\log p_1(v)$, train")
    axes[0].axhline(test_loglik_exact, color="k", ls=":", label=r"$\log p_1(v)$, test (first RBM)")
    axes[0].set(xlabel="epoch of the top RBM", ylabel="nats per image", title="exact variational bound")
    axes[0].legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize=10)  # below the axes, off the data
    plotting.image_grid(axes[1], x_test[: min(100, cfg.n_chains)], data.shape, nrow=10, title="test images")
    plotting.image_grid(axes[2], samples_small[:100], data.shape, nrow=10,
                        title=f"RBM ({cfg.n_hidden_small} hidden) samples")
    plotting.image_grid(axes[3], samples_dbn[:100], data.shape, nrow=10, title="DBN samples (top Gibbs, one pass down)")
    run.savefig(fig, "fig09_dbn_samples", key=True)

# %% [markdown]
# **What to notice**
# - At W2 = W1^T the bound equals the first RBM's exact log p1(v) on every image (the printed max
#   difference is float32 rounding in log p1): the untrained second layer changes nothing. Training
#   it raises the bound (printed above, a few tenths of a nat per image at the defaults), so
#   log p_DBN(v) >= B(v) ends above where the first RBM started; the true log p_DBN(v) can be higher
#   still, since the bound is no longer tight.
# - The gain is small because it is capped by KL(q || p1), enumerated exactly (0.91 nats at the defaults,
#   printed): on the 8x8 digits the first RBM's own p1(h1) is already close to the aggregated posterior.
#   The wider stack of exercise 7 starts from random weights and has no such guarantee.
# - The samples are no likelihood; the bound is a guaranteed lower bound on one.

# %% [markdown]
# ## 7. Side by side with scikit-learn's BernoulliRBM
#
# scikit-learn ships an RBM too: `sklearn.neural_network.BernoulliRBM` trains with PCD-1 (persistent
# chains), plain SGD (no momentum, no weight decay) and zero initial biases. We give it the same
# training images, hidden size, learning rate, batch size and number of epochs, then score both
# models exactly by building an `RBM.from_tensors` from its `components_`, `intercept_visible_` and
# `intercept_hidden_`. To compare at equal cost we time both trainers in process CPU seconds, on the same
# number of threads (--threads: `torch.set_num_threads` for us, `threadpoolctl` for NumPy's BLAS), both
# in float32, and our timed region holds the updates only (`train_epoch(monitor=False)`). BernoulliRBM
# then gets as many epochs as fit in the CPU time of our best rung. Timings vary from run to run, so
# every number here is a mean +- SE over --sklearn-seeds seeds (a fresh model of each kind per seed).

# %%
RECIPES = {"cd": f"CD-{cfg.k}, momentum, decay", "pcd": "PCD-1, rate decayed to 0",
           "centred": "PCD-1, decayed, centred"}  # the ladder: each rung adds one change to the one above


def fit_ours(seed_index: int, recipe: str = "cd") -> tuple[RBM, float]:
    """One rung of the recipe ladder for --epochs; returns the model and CPU s per epoch (updates only).

    cd:      section 2's recipe (CD-k, momentum 0.5 -> 0.9, weight decay, data-based visible biases);
    pcd:     the same with PCD-1 (--batch-size persistent chains, started at training images) and the rate
             decayed linearly to 0 over the epochs (Tieleman 2008: persistent chains need a shrinking rate);
    centred: the same, centred (Melchior, Fischer & Wiskott 2016): offsets = running means of v and p(h|v).
    """
    g = run.generator(f"7-{recipe}-{seed_index}")
    rbm = RBM(n_visible, cfg.n_hidden_small, cfg.weight_scale, visible_bias, generator=g, device=device)
    persistent = recipe != "cd"
    chains = x_train[torch.randperm(len(x_train), generator=g, device=g.device)[:cfg.batch_size].to(device)] \
        if persistent else None
    offsets = centring_offsets(rbm, x_train) if recipe == "centred" else None
    velocity, cpu = None, 0.0
    for epoch in range(1, cfg.epochs + 1):
        momentum = cfg.momentum_start if epoch <= cfg.momentum_switch else cfg.momentum_end
        lr = cfg.pcd_lr * (1 - (epoch - 1) / cfg.epochs) if persistent else cfg.lr
        start = time.process_time()  # the updates only: monitor=False skips the reconstruction error
        velocity, chains, _ = train_epoch(rbm, x_train, lr=lr, k=1 if persistent else cfg.k,
                                          batch_size=cfg.batch_size, momentum=momentum,
                                          weight_decay=cfg.weight_decay, velocity=velocity, chains=chains,
                                          generator=g, monitor=False, offsets=offsets)
        cpu += time.process_time() - start
    run.check_finite(rbm.W, step=cfg.epochs, what=f"section-7 weights ({recipe})", field="pcd_lr", bound=1e3)
    return rbm, cpu / cfg.epochs


def fit_sklearn(epochs: int, seed_index: int) -> tuple[RBM, float]:
    """BernoulliRBM on the same float32 training images for ``epochs``; returns it as an RBM and CPU s per epoch."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import BernoulliRBM
    from threadpoolctl import threadpool_limits

    sk_rbm = BernoulliRBM(n_components=cfg.n_hidden_small, learning_rate=cfg.lr, batch_size=cfg.batch_size,
                          n_iter=epochs, random_state=run.seed + seed_index)
    x32 = x_train.cpu().numpy().astype(np.float32)  # the dtype our trainer uses; BernoulliRBM keeps float32
    with warnings.catch_warnings(), threadpool_limits(flags.threads):
        warnings.simplefilter("ignore", ConvergenceWarning)
        start = time.process_time()
        sk_rbm.fit(x32)
        cpu = (time.process_time() - start) / epochs
    as_rbm = RBM.from_tensors(*(torch.tensor(t, dtype=torch.float64) for t in
                                (sk_rbm.components_.T, sk_rbm.intercept_visible_, sk_rbm.intercept_hidden_)))
    return as_rbm, cpu


def exact_test_ll(rbm: RBM) -> float:
    return float(rbm.log_likelihood(x_test.cpu().double() if rbm.W.dtype == torch.float64 else x_test).mean())


def sklearn_round(seed_index: int) -> dict:
    """One seed: the three rungs; BernoulliRBM for the same epochs and for the best (centred) rung's CPU time."""
    out, models = {}, {}
    for recipe in RECIPES:
        models[recipe], out[f"{recipe}_cpu_seconds"] = fit_ours(seed_index, recipe)
        out[recipe] = exact_test_ll(models[recipe])
    same, sk_cpu = fit_sklearn(cfg.epochs, seed_index)
    best_epochs = max(1, round(cfg.epochs * out["centred_cpu_seconds"] / sk_cpu))  # as many as fit in our time
    best_equal, _ = fit_sklearn(best_epochs, seed_index)
    models_by_seed.append((models["centred"], same))
    return {**out, "same_epochs": exact_test_ll(same), "sklearn_cpu_seconds": sk_cpu,
            "best_equal_time": exact_test_ll(best_equal), "best_equal_time_epochs": best_epochs}


if run.section(7):
    models_by_seed = []  # (ours centred, sklearn) per seed, for the filter pictures
    sk = over_seeds(sklearn_round, range(cfg.sklearn_seeds))
    print(f"\n{data.name}, {cfg.n_hidden_small} hidden units, {cfg.epochs} epochs, batch {cfg.batch_size}, "
          f"{flags.threads} thread(s), float32; exact test LL, mean +- SE over {cfg.sklearn_seeds} seeds")
    print(f"  {'recipe':<44} {'test LL':>16}  {'CPU s / epoch':>16}")
    for recipe, label in RECIPES.items():
        rate = f"lr {cfg.lr:g}" if recipe == "cd" else f"lr {cfg.pcd_lr:g} -> 0"
        print(f"  {f'this lesson: {label}, {rate}':<44} {str(sk[recipe]):>16}  {str(sk[recipe + '_cpu_seconds']):>16}")
    print(f"  {f'sklearn BernoulliRBM (PCD-1, SGD), {cfg.epochs} epochs':<44} {str(sk['same_epochs']):>16}  "
          f"{str(sk['sklearn_cpu_seconds']):>16}")
    print(f"  {'sklearn at centred rung CPU time':<44} {str(sk['best_equal_time']):>16}  "
          f"({', '.join(str(int(e)) for e in sk['best_equal_time_epochs'].values)} epochs)")
    if models_needed:
        print(f"  (section 2's timing of our epochs, which includes the reconstruction-error monitor: "
              f"{hist_small['cpu'] / cfg.epochs:.4f} CPU s per epoch)")
    run.claim("sklearn_same_epochs", "per epoch, this lesson's CD trainer beats BernoulliRBM (test LL, nats)",
              sk["cd"], ">", sk["same_epochs"], reference_label="BernoulliRBM")
    run.claim("ladder_pcd_beats_cd", "PCD-1 with a decaying rate beats CD (test LL, nats)", sk["pcd"], ">", sk["cd"],
              reference_label=f"CD-{cfg.k}")
    run.claim("ladder_centred_beats_pcd", "centring adds to PCD (test LL, nats)", sk["centred"], ">", sk["pcd"],
              reference_label="PCD, decayed")
    run.claim("ladder_beats_sklearn_equal_time",
              "the ladder's top recipe beats BernoulliRBM at equal CPU time (test LL)",
              sk["centred"], ">", sk["best_equal_time"], reference_label="BernoulliRBM")
    run.metrics.update({"sklearn_test_loglik": sk["same_epochs"].mean,
                        "cpu_seconds_per_epoch": sk["cd_cpu_seconds"].mean,
                        "sklearn_cpu_seconds_per_epoch": sk["sklearn_cpu_seconds"].mean,
                        "ladder_test_loglik": {recipe: sk[recipe].mean for recipe in RECIPES},
                        "ladder_test_loglik_se": {recipe: sk[recipe].se for recipe in RECIPES},
                        "sklearn_equal_time_best_test_loglik": sk["best_equal_time"].mean,
                        "sklearn_comparison_by_seed": {key: list(stats.values) for key, stats in sk.items()}})

    fig, axes = plotting.figure(3, 1, title=f"{data.name}: {cfg.n_hidden_small} hidden units, lr {cfg.lr:g}, batch "
                                f"{cfg.batch_size}, {flags.threads} thread(s); equal CPU time = our centred rung's "
                                f"{cfg.epochs} epochs", panel_size=(4.4, 3.8))
    show_filters(axes[0], models_by_seed[0][0].W, 5, "this lesson, PCD-1 centred (first seed)")
    show_filters(axes[1], models_by_seed[0][1].W.float(), 5, "sklearn BernoulliRBM, PCD-1 (first seed)")
    rows = {"independent pixels": None, f"sklearn, {cfg.epochs} epochs": sk["same_epochs"],
            f"sklearn, centred rung's CPU\ntime ({sk['best_equal_time_epochs'].mean:.0f} epochs)":
                sk["best_equal_time"],
            **{f"ours: {label}": sk[recipe] for recipe, label in RECIPES.items()}}
    for row, (label, stats) in enumerate(rows.items()):
        if stats is None:
            axes[2].plot(baseline_independent, row, "o", color="#2ca02c", ms=7)
            continue
        colour = "#d62728" if label.startswith("ours") else "#1f77b4"
        axes[2].plot(stats.values, [row] * stats.n, "o", color=colour, alpha=0.5, ms=5)
        axes[2].errorbar(stats.mean, row + 0.2, xerr=stats.se, fmt="s", color="k", capsize=4)
    axes[2].errorbar([], [], xerr=[], fmt="s", color="k", capsize=4, label="mean ± SE over seeds")
    axes[2].set_yticks(range(len(rows)), list(rows))
    axes[2].set(xlabel="exact test log-likelihood, nats per image", title=f"{cfg.sklearn_seeds} seeds: dots each, "
                f"CPU s/epoch CD rung {sk['cd_cpu_seconds'].mean:.3f}, sklearn {sk['sklearn_cpu_seconds'].mean:.3f}",
                ylim=(-0.6, len(rows) - 0.3))
    axes[2].legend(loc="lower right", fontsize=9)
    run.savefig(fig, "fig10_sklearn_comparison", key=True)

# %% [markdown]
# **What to notice**
# - The recipe ladder on the 8x8 digits (default run, 3 seeds, exact test LL): CD-1 with momentum and
#   decay -18.19 +- 0.08; PCD-1 with the rate decayed to 0 -18.90 +- 0.10 (worse here: that claim FAILS at
#   the defaults; why is not measured here, and the rate was not tuned on test data); centred PCD-1
#   (Melchior, Fischer & Wiskott 2016) -17.78 +- 0.04, the best rung, ahead of BernoulliRBM given the same
#   CPU time (-18.1 to -18.7 over runs). Epoch for epoch, the CD rung beats BernoulliRBM (a claim).
#   BernoulliRBM is ~1.9x cheaper per epoch on 64 pixels; at 28x28, 500 hidden units, one thread,
#   scripts/bench_rbm.py measured ours at 0.88-0.97x its time.
# - On 28x28 images (--dataset mnist --lecture) the course guide gives the measured ladder; there
#   centring is the rung that puts the lesson ahead of BernoulliRBM.
# - On the digits the data-based visible biases do real work: BernoulliRBM's filters are framed in blue,
#   because its visible biases start at 0 and the weights must learn that the border pixels are always
#   empty. Those weights are not spent on the digits.
# - The exact log Z is what makes this comparison fair: reconstruction errors or pseudo-likelihoods
#   of two differently trained models are not comparable. And one seed is not a comparison.

# %% [markdown]
# ## Summary
#
# - No connections inside a layer: p(h|v) and p(v|h) factorise into sigmoids and the free energy
#   F(v) = -b.v - sum_j softplus(c_j + W_:j . v) sums the hidden layer out exactly.
# - CD-k replaces the model expectation by a k-step chain from the data; with the practical guide's
#   defaults (small init, data-based visible biases, momentum, weight decay) it trains in seconds.
# - Reconstruction error is not the objective. Report log-likelihood: exact by enumerating a small
#   layer, AIS otherwise, with the AIS settings validated against an exact answer, next to baselines.
# - Hidden probabilities are useful unsupervised features. A second RBM started at W1^T leaves the
#   variational bound equal to log p1(v); training it raises the bound: a deep belief network.
#
# ## Exercises
#
# **Exercise 1 (predict-then-tweak, easy): longer negative chains**
# Predict first: with `--k 10`, does the exact test log-likelihood of the small model go up, down,
# or stay within its epoch-to-epoch wobble? And the time per epoch? Then run
# `python 04_restricted_boltzmann_machines.py --exercise 1 --k 10` (sections 2-3 only, about half a
# minute): it prints `test_loglik_exact` and section 2's CPU seconds per epoch.
#
# **Exercise 2 (predict-then-tweak, easy): no momentum, no weight decay**
# Predict how `--momentum-end 0.5` (no switch to 0.9) and, separately, `--weight-decay 0` change
# the exact LL after 50 epochs and the free-energy gap curve in fig02. Then run both, e.g.
# `python 04_restricted_boltzmann_machines.py --exercise 2 --weight-decay 0` (sections 2-3 only).
#
# **Exercise 3 (extend, medium): persistent contrastive divergence**
# `train_epoch` accepts `chains=`: persistent fantasy particles that are not reset to the data.
# Complete the stub that runs with `--exercise 3` (section 3, then the stub): train a small RBM with
# PCD-1 (chains started from random pixels) and compare its exact test LL and its Gibbs samples with CD-1's.
#
# **Exercise 4 (think, medium): why does AIS underestimate log Z?**
# The AIS weights w satisfy E[w] = Z / Z_A exactly. Explain why log mean(w) is nevertheless biased
# low, why the bias grows when there are fewer temperatures (fig03), and what that means for a
# paper that reports a test log-likelihood from AIS without any check.
#
# **Exercise 5 (predict-then-tweak, medium): how many hidden units?**
# Predict the exact test LL for `--n-hidden-small 5`, `10` and `16` (the exact log Z still takes
# seconds), and whether the train-test LL gap grows with the size. Then run them
# (`--exercise 5 --n-hidden-small 10` prints the test LL, the train LL and their gap).
#
# **Exercise 6 (think, hard): the reconstruction error trap**
# Reconstruction error keeps falling while the exact LL is flat (fig02). Construct an RBM with a
# very low reconstruction error and a poor likelihood (hint: what do large positive weights between
# pixel i and a unit that copies it do?), and explain why CD-1 is prone to drift towards it.
#
# **Exercise 7 (extend, hard): the wider stack**
# Stack a top RBM with `--dbn-hidden` units on the large RBM's hidden samples (random init, as
# many DBN tutorials do), under `--exercise 7`. Its bound can no longer be enumerated (2^100 states
# of h1): which term of B(v) could you still estimate by sampling h1 ~ Q(h1 | v), and which needs
# AIS? Compare its samples with section 6's, and explain why Hinton et al.'s guarantee does not
# apply to this stack (what is B(v) at initialisation?).

# %%
def training_report(exercise: int) -> None:
    """What exercises 1 and 2 ask about: the small model's exact test LL, free-energy gap and cost per epoch."""
    print(f"\nExercise {exercise}: test_loglik_exact {test_loglik_exact:.3f} nats, free-energy gap "
          f"{hist_small['free_energy_gap'][-1]:.3f}, {hist_small['cpu'] / cfg.epochs:.4f} CPU s per epoch (section 2; "
          f"CD-{cfg.k}, momentum_end {cfg.momentum_end:g}, weight_decay {cfg.weight_decay:g})")


if run.stub(1):  # --exercise 1 --k 10: sections 2-3 only, then this line
    training_report(1)

if run.stub(2):  # --exercise 2 --weight-decay 0
    training_report(2)

if run.stub(5):  # --exercise 5 --n-hidden-small 10: section 3 only
    print(f"\nExercise 5: {cfg.n_hidden_small} hidden units: test LL {test_loglik_exact:.3f}, train LL "
          f"{float(ll_train_small.mean()):.3f}, gap {float(ll_train_small.mean()) - test_loglik_exact:.3f} nats")

if run.stub(3):
    gen = run.generator("exercise-3")
    # Exercise 3 stub: fill in the two TODOs, then run with --exercise 3.
    pcd = RBM(n_visible, cfg.n_hidden_small, cfg.weight_scale, visible_bias, generator=gen, device=device)
    chains = None  # TODO: persistent chains, e.g. torch.bernoulli(0.5 * torch.ones(cfg.batch_size, n_visible))
    velocity = None
    for epoch in range(1, cfg.epochs + 1):
        momentum = cfg.momentum_start if epoch <= cfg.momentum_switch else cfg.momentum_end
        velocity, chains, _ = train_epoch(pcd, x_train, lr=cfg.lr, k=1, batch_size=cfg.batch_size,
                                          momentum=momentum, weight_decay=cfg.weight_decay, velocity=velocity,
                                          chains=chains, generator=gen)  # TODO: a smaller lr suits PCD
    print(f"\nExercise 3: exact test LL with {'PCD' if chains is not None else 'CD (stub unchanged)'}: "
          f"{float(pcd.log_likelihood(x_test).mean()):.2f}  (CD-{cfg.k}: {test_loglik_exact:.2f})")

if run.stub(7):
    # Exercise 7 stub: a randomly initialised top RBM on the large RBM's hidden samples.
    gen = run.generator("exercise-7")
    h1_large = torch.bernoulli(rbm_large.hidden_probs(x_train), generator=gen)  # (N, n_hidden_large)
    wide_top = RBM(cfg.n_hidden_large, cfg.dbn_hidden, cfg.weight_scale, data_visible_bias(h1_large),
                   generator=gen, device=device)
    velocity_wide = None
    for _ in range(cfg.epochs):
        velocity_wide, _, recon_wide = train_epoch(wide_top, h1_large, lr=cfg.lr, k=cfg.k, batch_size=cfg.batch_size,
                                                   momentum=cfg.momentum_start, velocity=velocity_wide, generator=gen)
    start_wide = torch.bernoulli(torch.full((cfg.n_chains, cfg.n_hidden_large), 0.5, device=device), generator=gen)
    samples_wide = dbn_sample(rbm_large, wide_top, start_wide, cfg.gibbs_steps, generator=gen)
    _, _, pixel_clf = logreg_accuracy(x_train, x_test)  # labels the samples: a crude check of coverage
    classes = np.bincount(pixel_clf.predict((samples_wide > 0.5).float().cpu().numpy()), minlength=10)
    print(f"\nExercise 7: top RBM {cfg.n_hidden_large} -> {cfg.dbn_hidden}, recon err {recon_wide:.4f}; classes of "
          f"its samples: {classes.tolist()}  TODO: estimate E_Q[log p(v | h1)] + H(Q) here")

run.finish()
