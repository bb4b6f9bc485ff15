"""Lesson 05 -- Contrastive divergence: CD-k, persistent CD, their bias, and chain health.

Maximum likelihood for an RBM needs samples from the model, and contrastive divergence replaces
them with a Gibbs chain of only k steps started at the data (CD-k) or carried over between
updates (persistent CD, Tieleman 2008). On models small enough to enumerate we measure what this
costs: the bias of the gradient against the exact one, the exact test log-likelihood during
training, the spurious modes a short chain never visits, and the diagnostics that flag a stuck chain.

You will learn:
- how a CD-k / PCD update is computed, in a dozen lines (then from ``common/rbm.py``);
- that the CD-k gradient is biased, how the bias shrinks with k, and what PCD changes;
- to compare methods at an equal Gibbs budget with the *exact* likelihood, and why PCD wants a decaying rate;
- that short-run chains are an implicit generator that can hide spurious modes, which CD-k removes slowly;
- to read autocorrelation, ESS, split R-hat and the self-transition rate, and to fix a stuck chain by tempering.

Prerequisites: lesson 03 (Gibbs sampling, Boltzmann machines) and lesson 04 (RBMs, free energy).

How to run:
    python 05_contrastive_divergence.py              # full lesson (CPU time: docs/results.md)
    python 05_contrastive_divergence.py --quick      # every code path in seconds (CI)
    python 05_contrastive_divergence.py --section 2  # one section only (SECTIONS below)
    python 05_contrastive_divergence.py --section 4 --spurious-seeds 2 --unvisited-seeds 2 --probe-ks 1,10,100,1000
        # section 4 at lecture size: ~45 s CPU instead of ~110, the same claim verdicts as the default run
    python 05_contrastive_divergence.py --help       # every hyperparameter, with advice
    python 05_contrastive_divergence.py --show       # also open the figures in windows
On 28x28 data the default trains over 20 models on all 60,000 images: several hours. For a lecture,
--dataset mnist --lecture sets 1,000 training and 300 test images and shorter budgets (the LECTURE dict
below; a flag you set wins). Show fig09 on the digits: on 28x28 CD-1 removed the inverted mode within 50 epochs.

Figures and metrics.json keys: FIGURES and METRICS below.
"""
LESSON = "05_contrastive_divergence"  # outputs go to outputs/05_contrastive_divergence/

FIGURES = {
    "fig01_gibbs_chains": "CD-k chains started at the data, and the persistent chains of PCD",
    "fig02_cd_bias": "cosine and relative error of CD-k and PCD gradients vs the exact gradient",
    "fig03_exact_loglik": "exact test log-likelihood of CD-1, CD-10 and PCD at equal Gibbs budget",
    "fig04_short_vs_long": "samples after k Gibbs steps from the data vs exact samples of the model",
    "fig05_spurious_modes": "fraction of samples far from every training image, against k",
    "fig06_chain_health": "traces and autocorrelations of healthy, cooled (stuck) and tempered chains",
    "fig07_spurious_over_seeds": "far fractions of exact vs 1-step samples over several initial seeds",
    "fig08_pcd_chains_in_training": "PCD chains in training, constant vs decaying lr: mode switches, autocorrelation",
    "fig09_unvisited_mode": "a far mode (inverted digits): exact mass and test LL over epochs, CD-1 vs PCD-1",
}
METRICS = {
    "dataset": "which images sections 3-5 used (digits or mnist)",
    "n_train": "training images used", "n_test": "test images scored",
    "grad_cosine_by_k": "{k: cosine(mean CD-k gradient, exact gradient)} on bars-and-stripes",
    "grad_relerr_by_k": "{k: |mean CD-k gradient - exact| / |exact|}",
    "grad_noise_floor_by_k": "{k: |standard error of the mean gradient| / |exact|} (Monte-Carlo noise)",
    "grad_cosine_pcd": "the cosine for PCD-1 with the training chains",
    "grad_relerr_pcd": "the relative error for PCD-1", "grad_noise_floor_pcd": "the noise floor for PCD-1",
    "bas_train_loglik": "exact mean log-likelihood of the bars-and-stripes patterns after training",
    "pcd_chains_on_patterns": "fraction of the persistent chains that are bars-and-stripes patterns",
    "bas_pattern_mass": "the model's exact probability mass on those patterns",
    "initial_test_loglik": "exact test log-likelihood of the initial model (independent pixels)",
    "final_test_loglik_by_method": "{method: exact mean test log-likelihood (nats/image) at the end}",
    "test_loglik_curves": "{method: [exact test log-likelihood at each evaluation]}",
    "spurious_fraction_by_k": "{model: {k: fraction of k-step samples far from all training images}}",
    "spurious_fraction_exact": "{model: the same fraction for exact samples of the model}",
    "sharp_test_loglik": "{model: exact test log-likelihood of the sharp CD-1 and PCD models}",
    "spurious_fraction_over_seeds": "{model: mean and SE over seeds of the far fraction, exact and 1-step, gap}",
    "unvisited_mode": "{start / CD-1 / PCD-1: per start, exact inverted mass, inverted and far fractions, test LL}",
    "unvisited_mass_curves": "{CD-1, PCD-1: per start, epochs, exact inverted mass and test LL at checkpoints}",
    "unvisited_epochs_to_remove": "{CD-1, PCD-1: per start, first checkpoint epoch with inverted mass < 0.01}",
    "pcd_training_chain_stats": "{schedule: per seed, per tenth: class switches, ink autocorrelation, self-trans.}",
    "rhat_max": "{chains: largest split R-hat over the monitored summaries}",
    "ess_per_chain": "{chains: effective sample size of the free energy, per chain}",
    "self_transition_rate": "{chains: fraction of Gibbs steps that leave the whole image unchanged}",
    "repeat_rate_iid": "{chains: the same for independent exact draws of the model (baseline)}",
}
SECTIONS = {1: "CD-k and PCD step by step", 2: "the bias of CD-k", 3: "equal budget, exact likelihood",
            4: "short-run chains and spurious modes", 5: "chain health", 6: "chains slowing in training"}
EXERCISES = {3: (), 8: (4,)}  # exercise: the sections its stub needs (the exact CD-k fixed point needs none)


# %%
import math
from dataclasses import dataclass

from common.config import between, choice, count, nonnegative, parse_flags, positive, probability


@dataclass
class Config:
    dataset: str = choice("auto", ("auto", "digits", "mnist"))  # images for sections 3-6; auto = MNIST if present
    data_dir: str = ""  # folder that holds MNIST/raw (default: $EBM_DATA_DIR or data/)
    download: bool = False  # --download: fetch MNIST (5 s timeout) when it is not in the data folder
    lecture: bool = False  # --lecture (needs --dataset mnist): 1,000/300 images, 50-sweep budget, 2 seeds
    max_train: int = count(0, minimum=0)  # training images kept (0 = all: digits 1,438, MNIST 60,000)
    max_test: int = count(0, minimum=0)  # test images scored (0 = all: digits 359, MNIST 10,000)
    # -- sections 1-2: a bars-and-stripes RBM small enough for the exact gradient
    bas_side: int = between(4, 2, 4)  # side of the bars-and-stripes images; visible units = side^2 <= 20
    bas_hidden: int = count(16)  # hidden units of the toy RBM; more = sharper models, larger CD bias
    bas_lr: float = positive(0.05)  # learning rate of the partial PCD training; larger = sharper model, more CD bias
    bas_train_steps: int = count(2000)  # full-batch PCD updates before we measure the bias ("partially trained")
    bas_chains: int = count(4000)  # persistent chains of that PCD run (they give the PCD gradient estimate)
    ks: tuple[int, ...] = count((1, 2, 5, 10, 25))  # CD-k chain lengths; beyond ~25 the bias is below the noise
    bias_copies: int = count(200)  # chains per pattern in one gradient estimate; more = lower noise floor
    bias_repeats: int = count(20, minimum=2)  # independent estimates averaged (their spread gives the noise floor)
    # -- section 3: CD-1 vs CD-10 vs PCD on images at an equal Gibbs budget, exact likelihood
    n_hidden: int = between(16, 1, 20)  # hidden units; <= 20 keeps the exact log Z (2^n_hidden terms) cheap
    lr: float = positive(0.1)  # learning rate of every method; PCD with a constant 0.1 already oscillates
    batch_size: int = count(20)  # images per update (PCD: one persistent chain each); larger = fewer updates
    momentum: float = probability(0.5)  # SGD momentum; 0.9 speeds CD up but makes PCD wilder
    weight_decay: float = nonnegative(1e-4)  # L2 pull on W (Hinton's guide); 0 lets weights grow
    budget_sweeps: int = count(150)  # Gibbs sweeps per training image for every method (= epochs of CD-1)
    long_k: int = count(10)  # the "long" CD-k compared with CD-1 (it gets long_k times fewer updates)
    n_evals: int = count(25, minimum=2)  # exact test log-lik evaluations per run; more = finer curves, more CPU
    # -- section 4: short-run chains as an implicit generator
    sharp_lr: float = positive(0.3)  # learning rate of the sharper models (CD-1 constant, PCD decayed as in sec. 3)
    sharp_epochs: int = count(200)  # epochs of those models; long training with no weight decay sharpens them
    probe_ks: tuple[int, ...] = count((1, 10, 100, 1000, 10000))  # Gibbs steps from the test images; cost ~ max
    probe_copies: int = count(4)  # chains started from each test image (more = smaller error bars)
    n_exact_samples: int = count(4000)  # exact model samples (hidden layer enumerated); more = smaller SE
    far_quantile: float = between(0.99, 0.5, 1.0)  # "far" = beyond this quantile of test-to-train distances
    spurious_seeds: int = count(5, minimum=2)  # initial weights per method for the mean +- SE (each ~5 s CPU)
    unvisited_pretrain_epochs: int = count(30)  # CD-1 epochs on digits + their negatives that plant the far mode
    unvisited_pretrain_lr: float = positive(0.05)  # rate of that pre-training; the split is set in epoch 1
    unvisited_epochs: int = count(50)  # epochs on the digits alone from that start for PCD-1 (lr decays to 0 over them)
    unvisited_cd_epochs: int = count(400)  # epochs for CD-1 from the same start (constant lr); ~27 ms CPU each
    removed_below: float = between(0.01, 0.0, 1.0)  # exact inverted mass below which the far mode counts as removed
    unvisited_seeds: int = count(3, minimum=2)  # starts (pre-trainings); epochs-to-removal is a mean +- SE over them
    # -- section 5: chain health
    health_chains: int = count(16, minimum=2)  # chains for R-hat / ESS from random images; more = surer R-hat
    health_steps: int = count(2000, minimum=8)  # Gibbs steps per chain (the first burn_in are dropped)
    burn_in: int = nonnegative(500)  # discarded steps per chain; too few inflates R-hat of healthy chains
    stuck_beta: float = positive(3.0)  # the peaked model = params x beta; larger = stucker chains
    pt_temperatures: int = count(6, minimum=2)  # tempering replicas (geometric betas); 3 leaves too few swaps
    pt_beta_min: float = positive(0.5)  # hottest replica; it must mix freely at this beta
    wide_hidden: int = count(200)  # hidden units of the two PCD runs whose chains are recorded (no exact Z needed)
    wide_lr: float = positive(0.05)  # their learning rate: constant in one run, decaying to 0 in the other
    wide_epochs: int = count(100)  # their epochs (no weight decay); fig08 splits them into tenths
    wide_momentum: float = probability(0.9)  # their momentum; high momentum sharpens the model faster
    slowing_seeds: int = count(3, minimum=2)  # seeds of those two runs; more = smaller SE, cost ~ linear
    switch_window: int = count(200, minimum=2)  # updates per tenth whose class switches are counted (cost ~ this)


QUICK = {
    "dataset": "digits", "bas_side": 3, "bas_train_steps": 200, "bas_chains": 500, "ks": (1, 5, 25), "bias_copies": 50,
    "bias_repeats": 3, "budget_sweeps": 10, "long_k": 5, "n_evals": 3, "sharp_epochs": 4,
    "n_hidden": 10, "probe_ks": (1, 10, 50), "n_exact_samples": 300, "health_steps": 120, "burn_in": 20,
    "spurious_seeds": 2, "unvisited_pretrain_epochs": 3, "unvisited_epochs": 3, "unvisited_cd_epochs": 5,
    "unvisited_seeds": 2, "wide_hidden": 32, "wide_epochs": 15, "slowing_seeds": 2, "switch_window": 20,
    "max_train": 300, "max_test": 100,
}


# --lecture: 28x28 at lecture size (~3 min CPU): 1,000 training images, shorter budgets, fewer seeds and probes;
# a flag you set to a non-default value wins over these
LECTURE = {"max_train": 1000, "max_test": 300, "budget_sweeps": 50, "sharp_epochs": 60, "spurious_seeds": 2,
           "unvisited_seeds": 2, "wide_epochs": 30, "probe_ks": (1, 10, 100, 1000), "unvisited_cd_epochs": 100,
           "slowing_seeds": 2}


def check(cfg):
    """Rules across fields."""
    if cfg.burn_in > cfg.health_steps - 4:  # split R-hat needs 4 draws per chain
        raise ValueError("--burn-in must be at least 4 below --health-steps")
    if cfg.unvisited_cd_epochs <= cfg.unvisited_epochs:  # fig09 shows CD-1 at both lengths
        raise ValueError("--unvisited-cd-epochs must be larger than --unvisited-epochs")
    if cfg.lecture and cfg.dataset != "mnist":
        raise ValueError("--lecture sizes a 28x28 run: add --dataset mnist")


cfg, flags = parse_flags(Config, LESSON, __doc__, quick=QUICK, check=check, exercises=EXERCISES,
                         sections=SECTIONS)
if cfg.lecture and not flags.quick:
    for field_name, value in LECTURE.items():
        if field_name not in flags.changed:
            setattr(cfg, field_name, value)

# heavy imports only now, so that --help and a mistyped flag answer at once
import numpy as np
import torch
import torch.nn.functional as F

from common import evaluation, plotting
from common.boltzmann import all_binary_states, bars_and_stripes
from common.claims import over_seeds
from common.datasets import load_images
from common.diagnostics import autocorrelation, effective_sample_size, self_transition_rate, split_rhat
from common.evaluation import nearest_hamming
from common.lesson import start_lesson
from common.progress import progress
from common.rbm import RBM, data_visible_bias, exact_count_tail, train_epoch

run = start_lesson(cfg, flags, figures=FIGURES, metrics=METRICS)
device = run.device


def flat(grads: dict) -> torch.Tensor:
    """Concatenate the W, b, c parts of a gradient into one vector."""
    return torch.cat([grads[name].flatten() for name in "Wbc"])


def coin_flips(*shape: int, generator) -> torch.Tensor:
    """Random binary images, every pixel on with probability 1/2: where persistent and test chains start."""
    return torch.bernoulli(torch.full(shape, 0.5, device=device), generator=generator)


# %% [markdown]
# ## 1. CD-k and persistent CD, step by step
#
# The log-likelihood gradient of an RBM is a difference of two correlations,
#
# $$\partial_W \log p(v) = \langle v h^\top \rangle_{\rm data} - \langle v h^\top \rangle_{\rm model},$$
#
# the *positive phase* (clamped to the data, exact because $p(h \mid v)$ factorises) and the *negative
# phase* (an expectation under the model, intractable). CD-k (Hinton 2002) estimates the negative
# phase with $k$ steps of block Gibbs sampling $v \to h \to v$ started **at the data**; PCD (Tieleman
# 2008) starts each update's chain where the previous update left it, so the chains keep mixing
# while the parameters move slowly. Our toy data is bars-and-stripes: every image is all-rows or
# all-columns, $2 \cdot 2^{\rm side} - 2$ distinct patterns, so the visible layer ($\le 16$ units) can be
# enumerated and every gradient computed exactly.

# %%
if run.section(1) or run.section(2):
    gen = run.generator("1-bars-and-stripes")  # each section draws from its own stream (common.lesson)
    def cd_k_inline(rbm: RBM, v_data: torch.Tensor, k: int, generator) -> tuple[dict, torch.Tensor]:
        """The CD-k gradient written out: positive phase, k Gibbs steps, negative phase."""
        # positive phase: p(h = 1 | v_data) = sigmoid(c + v W), exact
        h_data = torch.sigmoid(v_data @ rbm.W + rbm.c)  # (B, n_h)
        v = v_data  # CD: the chain starts AT THE DATA
        for _ in range(k):
            h = torch.bernoulli(torch.sigmoid(v @ rbm.W + rbm.c), generator=generator)  # h ~ p(h | v)
            v = torch.bernoulli(torch.sigmoid(h @ rbm.W.T + rbm.b), generator=generator)  # v ~ p(v | h)
        # negative phase at the chain's end v_k, with p(h | v_k) instead of a sample (same mean)
        h_model = torch.sigmoid(v @ rbm.W + rbm.c)  # (B, n_h)
        # grad_W = <v h^T>_data - <v h^T>_model,  grad_b = <v>_data - <v>_model,  grad_c = <h>_data - <h>_model
        grads = {"W": v_data.T @ h_data / len(v_data) - v.T @ h_model / len(v),
                 "b": v_data.mean(0) - v.mean(0), "c": h_data.mean(0) - h_model.mean(0)}
        return grads, v

    bas = bars_and_stripes(cfg.bas_side).to(device)  # (2 * 2^side - 2, side^2), counting order
    n_vis = bas.shape[1]
    rbm_bas = RBM(n_vis, cfg.bas_hidden, weight_scale=0.1, generator=gen, device=device)

    # The inline version and common/rbm.py draw the same random numbers in the same order, so with the
    # same seed they must agree to the last bit (a fixed seed on purpose: both see the SAME random numbers).
    # From here on we use RBM.cd_gradient.
    ours, _ = cd_k_inline(rbm_bas, bas, 3, torch.Generator(device=device).manual_seed(1))
    theirs, _ = rbm_bas.cd_gradient(bas, 3, generator=torch.Generator(device=device).manual_seed(1))
    print(f"{len(bas)} bars-and-stripes patterns of {cfg.bas_side}x{cfg.bas_side} pixels, "
          f"RBM {n_vis} x {cfg.bas_hidden}")
    inline_diff = float((flat(ours) - flat(theirs)).abs().max())
    print(f"inline CD-3 vs common.rbm.RBM.cd_gradient: max |difference| = {inline_diff:.1e}")
    run.claim("inline_cd_matches", "the inline CD step and common/rbm.py agree", inline_diff, "<", 1e-6)

    # PCD, the same few lines with persistent chains: passing `chains=` to cd_gradient starts the
    # negative phase there, and we keep the chain states it returns for the next update.
    chains = coin_flips(cfg.bas_chains, n_vis, generator=gen)  # (bas_chains, n_v)
    print(f"\nPartial training: {cfg.bas_train_steps} full-batch PCD-1 updates, lr={cfg.bas_lr}, "
          f"{cfg.bas_chains} chains")
    for step in progress(range(cfg.bas_train_steps), desc="PCD on bars-and-stripes", leave=False):
        grads, chains = rbm_bas.cd_gradient(bas, k=1, chains=chains, generator=gen)
        for name, param in zip("Wbc", rbm_bas.parameters()):
            param += cfg.bas_lr * grads[name]  # gradient ASCENT on log-likelihood
        run.check_finite(rbm_bas.W, step=step, what="RBM weights", field="bas_lr", bound=1e3)
    ll_bas = float(rbm_bas.log_likelihood(bas).mean())
    print(f"exact mean log-likelihood of the patterns: {ll_bas:8.3f}   (perfect model: log(1/{len(bas)}) = "
          f"{-math.log(len(bas)):.3f};  uniform over 2^{n_vis} images: {-n_vis * math.log(2):.3f})")
    run.metrics["bas_train_loglik"] = ll_bas
    # how many persistent chains sit on a pattern, against the model's own exact mass on the patterns
    on_pattern = float((chains[:, None, :] == bas[None]).all(-1).any(1).double().mean())
    pattern_mass = float(rbm_bas.log_likelihood(bas).exp().sum())
    print(f"PCD chains that are bars or stripes: {on_pattern:.3f};  the model's exact mass on the {len(bas)} patterns: "
          f"{pattern_mass:.3f}")
    run.metrics["pcd_chains_on_patterns"], run.metrics["bas_pattern_mass"] = on_pattern, pattern_mass
    # n chains drawn from the model would put a fraction m +- sqrt(m (1 - m) / n) on the patterns (binomial SE)
    se_chains = math.sqrt(pattern_mass * (1 - pattern_mass) / len(chains))
    run.claim("pcd_chains_mostly_not_patterns", "most persistent chains are not bars or stripes", 1 - on_pattern, ">",
              0.5)
    run.claim("pcd_chains_match_model_mass", "as many chains sit on the patterns as the model's exact mass says",
              on_pattern, "within", pattern_mass, 3 * se_chains, reference_label="exact mass (3 binomial SE)")

    if run.section(1):
        # A picture of both kinds of chain: CD's chains leave a data point and wander for k steps;
        # PCD's chains are wherever the previous updates left them.
        show_steps = [0, 1, 2, 5, 25]
        starts = bas[torch.randperm(len(bas), generator=gen, device=device)[:6]]
        snapshots, v = [starts], starts
        for step in range(1, max(show_steps) + 1):
            v, _ = rbm_bas.gibbs(v, 1, gen)
            if step in show_steps:
                snapshots.append(v)
        title = (f"Gibbs chains of the {cfg.bas_side}x{cfg.bas_side} bars-and-stripes RBM ({cfg.bas_hidden} hidden, "
                 f"{cfg.bas_train_steps} PCD updates, lr={cfg.bas_lr})")
        fig, axes = plotting.figure(2, 1, title=title, panel_size=(5.4, 3.6))
        grid = torch.stack(snapshots, dim=1).reshape(-1, n_vis)  # row = one chain, column = step
        plotting.image_grid(axes[0], grid, (cfg.bas_side, cfg.bas_side), nrow=len(show_steps),
                            title="CD: rows start at data, columns = step " + ", ".join(map(str, show_steps)))
        plotting.image_grid(axes[1], chains[:30], (cfg.bas_side, cfg.bas_side), nrow=6,
                            title=f"PCD: 30 persistent chains now ({on_pattern:.3f} of all {len(chains)} are patterns)")
        run.savefig(fig, "fig01_gibbs_chains")

# %% [markdown]
# **What to notice.**
# - The inline CD step and common/rbm.py agree exactly: it really is just these lines.
# - After one step a CD chain still looks like its start: CD-1 pushes up the energy only right next to the data.
# - Most persistent chains are NOT bars or stripes, and the model agrees: the chains' fraction matches its exact
#   mass on the patterns within the binomial error. The chains do their job; the model is still far off.

# %% [markdown]
# ## 2. The bias of CD-k, measured against the exact gradient
#
# CD-k's negative phase averages over $p_k = p_{\rm data} T^k$, the data pushed $k$ steps through the Gibbs
# kernel $T$, instead of over the model $p(v)$; as $k \to \infty$, $p_k \to p$ and the bias vanishes (with the
# term CD drops: docs/derivations/contrastive_divergence.md). Averaging `bias_repeats` estimates of `bias_copies`
# chains per pattern keeps the noise floor $|{\rm SE}| / |{\rm exact}|$ well below the bias; an unbiased estimator
# with relative noise $r$ has an expected cosine of about $1/\sqrt{1 + r^2}$.

# %%
if run.section(2):
    gen = run.generator("2-cd-bias")
    def gradient_vs_exact(estimates: torch.Tensor, exact: torch.Tensor) -> dict[str, float]:
        """Compare the mean of ``(R, P)`` gradient estimates with the exact ``(P,)`` gradient."""
        mean = estimates.double().mean(0)
        # standard error of the mean per component; |SE| / |exact| is the relative noise floor
        se = estimates.double().std(0, unbiased=True) / math.sqrt(len(estimates))
        scale = float(exact.double().norm())
        return {"cosine": float(F.cosine_similarity(mean, exact.double(), dim=0)),
                "relerr": float((mean - exact.double()).norm()) / scale, "noise": float(se.norm()) / scale}

    exact_grad = flat(rbm_bas.exact_gradient(bas))
    replicated = bas.repeat(cfg.bias_copies, 1)  # (copies * patterns, n_v): the data, many chains each
    bias = {}
    for k in progress(cfg.ks, desc="CD-k gradients", leave=False):
        estimates = torch.stack([flat(rbm_bas.cd_gradient(replicated, k, generator=gen)[0])
                                 for _ in range(cfg.bias_repeats)])  # (repeats, n_params)
        bias[k] = gradient_vs_exact(estimates, exact_grad)
    # PCD-1 with the chains left by training: split them into groups for the standard error.
    groups = chains.chunk(cfg.bias_repeats)
    pcd_estimates = torch.stack([flat(rbm_bas.cd_gradient(bas, 1, chains=g, generator=gen)[0]) for g in groups])
    bias_pcd = gradient_vs_exact(pcd_estimates, exact_grad)

    print(f"\nGradient estimates vs the exact gradient (|exact| = {float(exact_grad.norm()):.4f}); "
          f"CD: {cfg.bias_repeats} x {len(replicated)} chains, PCD: {len(chains)} chains")
    print(f"{'method':>8} {'cosine':>8} {'rel.err':>8} {'noise':>8} {'noise-only cos':>15}  bias visible?")
    for name, row in [*[(f"CD-{k}", bias[k]) for k in cfg.ks], ("PCD-1", bias_pcd)]:
        ceiling = 1 / math.sqrt(1 + row["noise"] ** 2)
        visible = "yes" if row["relerr"] > 3 * row["noise"] else "no (within noise)"
        print(f"{name:>8} {row['cosine']:8.4f} {row['relerr']:8.4f} {row['noise']:8.4f} {ceiling:15.4f}  {visible}")
    for key, name in (("cosine", "grad_cosine"), ("relerr", "grad_relerr"), ("noise", "grad_noise_floor")):
        run.metrics[f"{name}_by_k"] = {str(k): bias[k][key] for k in cfg.ks}
        run.metrics[f"{name}_pcd"] = bias_pcd[key]
    k_first, k_last = cfg.ks[0], cfg.ks[-1]
    run.claim("cd1_bias_visible", f"CD-{k_first}'s error is bias, not noise", bias[k_first]["relerr"], ">",
              3 * bias[k_first]["noise"], reference_label="3 x its noise floor")
    run.claim("cd_cosine_rises_with_k", f"the cosine climbs with k (CD-{k_last} vs CD-{k_first})",
              bias[k_last]["cosine"], ">", bias[k_first]["cosine"], reference_label=f"CD-{k_first}")
    run.claim("cd_cosine_near_ceiling", f"at k = {k_last} the cosine is near the noise-only ceiling",
              bias[k_last]["cosine"], "within", 1 / math.sqrt(1 + bias[k_last]["noise"] ** 2), 0.01,
              reference_label="noise-only cosine")
    run.claim("pcd_bias_within_noise", "within PCD-1's noise we cannot see a bias", bias_pcd["relerr"], "<",
              3 * bias_pcd["noise"], reference_label="3 x its noise floor")

    fig, axes = plotting.figure(2, 1, title=f"CD-k bias on {cfg.bas_side}×{cfg.bas_side} bars-and-stripes "
                                f"({cfg.bas_hidden} hidden, after {cfg.bas_train_steps} PCD updates, "
                                f"{cfg.bias_repeats} × {len(replicated)} CD chains)")
    ks = np.array(cfg.ks)
    panels = [(axes[0], "cosine", "cosine(estimate, exact)"), (axes[1], "relerr", "|estimate − exact| / |exact|")]
    for ax, key, label in panels:
        ax.plot(ks, [bias[k][key] for k in cfg.ks], "o-", label="CD-k (mean of all chains)")
        ax.axhline(bias_pcd[key], color="C1", ls="--", label=f"PCD-1, {len(chains)} training chains")
        ax.set(xscale="log", xlabel="Gibbs steps $k$", ylabel=label)
        ax.set_xticks(ks, [str(k) for k in ks])  # the k values run, not powers of ten
    axes[1].plot(ks, [bias[k]["noise"] for k in cfg.ks], "k:", label="Monte-Carlo noise floor (CD)")
    axes[0].plot(ks, [1 / math.sqrt(1 + bias[k]["noise"] ** 2) for k in cfg.ks], "k:",
                 label="best cosine given the noise")
    axes[1].set_yscale("log")
    for ax in axes:
        ax.legend()
    run.savefig(fig, "fig02_cd_bias", key=True)

# %% [markdown]
# **What to notice.**
# - CD-1 points in a noticeably different direction from the true gradient even with tens of thousands
#   of chains: bias, not noise, since it sits far above the noise floor. As $k$ grows the cosine climbs
#   toward the noise ceiling. The bias grows as the model sharpens (exercise 1).
# - PCD-1 uses far fewer chains (one set, carried along by training), so its estimate is much noisier;
#   within that noise we cannot see a bias. PCD is not exact either: its chains lag behind the
#   parameters they were sampled for, which matters when the learning rate is large (exercise 1).

# %% [markdown]
# ## 3. CD-1, CD-10 and PCD at an equal budget, judged by the exact likelihood
#
# A fair comparison counts Gibbs sweeps (one v -> h -> v step of one chain): CD-10 pays ten per
# image per update, so within the same budget it makes ten times fewer updates. With at most 20
# hidden units the exact $\log Z$ is a sum over $2^{n_h}$ hidden states (`RBM.log_partition`), so we
# can plot the exact test log-likelihood $\log p(v) = -F(v) - \log Z$ instead of a proxy. PCD gets
# two learning-rate schedules: constant, and decaying linearly to 0 (Tieleman 2008 used a decay:
# with a constant rate the persistent chains and the parameters chase each other and the
# likelihood oscillates).

# %%
if run.section(3) or run.section(4) or run.section(5) or run.section(6):
    data = load_images(cfg.dataset, root=cfg.data_dir or None, max_train=cfg.max_train or None,
                       max_test=cfg.max_test or None, download=cfg.download)  # a flag value of 0 means "all"
    run.metrics["dataset"], run.metrics["n_train"] = data.name, len(data.x_train)
    run.metrics["n_test"] = len(data.x_test)
    x_train, x_test = data.x_train.to(device), data.x_test.to(device)
    print(f"\n{data.name}: {len(x_train)} train / {len(x_test)} test binary images of {data.shape[0]}x{data.shape[1]}")

    def fresh_rbm(n_hidden: int, name: str) -> RBM:
        """Small random weights from run.generator(name) (same name, same model), visible biases at the data
        log-odds (Hinton's practical guide)."""
        g = run.generator(name)
        return RBM(x_train.shape[1], n_hidden, 0.01, visible_bias=data_visible_bias(x_train), generator=g,
                   device=device)

    def train_on_budget(rbm: RBM, k: int, persistent: bool, decay: bool, lr: float, sweeps: int, n_evals: int,
                        weight_decay: float, label: str, evaluate=True) -> dict:
        """Train with CD-k or PCD-k for ``sweeps`` Gibbs sweeps per image; exact test log-lik n_evals times."""
        g = run.generator("budget-data-order")  # a fresh copy of one stream: the same data order for every method
        n_updates = max(n_evals, sweeps * len(x_train) // (k * cfg.batch_size))
        per_eval = n_updates // n_evals  # updates between two evaluations
        n_epochs = math.ceil(n_updates * cfg.batch_size / len(x_train)) + 1
        order = torch.cat([torch.randperm(len(x_train), generator=g) for _ in range(n_epochs)]).to(device)
        chains = coin_flips(cfg.batch_size, x_train.shape[1], generator=g) if persistent else None  # (B, n_v)
        velocity, history = None, {"sweeps": [], "updates": [], "loglik": [], "lr": []}
        for e in progress(range(n_evals), desc=label, leave=False):
            # linear decay to zero over the run, or a constant rate
            lr_now = lr * (1 - e / n_evals) if decay else lr
            block = order[e * per_eval * cfg.batch_size:(e + 1) * per_eval * cfg.batch_size]
            velocity, chains, _ = train_epoch(rbm, x_train[block], lr=lr_now, k=k, batch_size=cfg.batch_size,
                                              momentum=cfg.momentum, weight_decay=weight_decay, velocity=velocity,
                                              chains=chains, generator=g)
            run.check_finite(rbm.W, step=e, what=f"{label} weights", field="lr", bound=1e3)
            history["updates"].append((e + 1) * per_eval)
            history["sweeps"].append((e + 1) * per_eval * cfg.batch_size * k / len(x_train))
            history["lr"].append(lr_now)
            if evaluate:  # log p(v) = -F(v) - log Z, with log Z exact by enumerating the hidden layer
                history["loglik"].append(float(rbm.log_likelihood(x_test).mean()))
        history["chains"] = chains
        return history

    def hamming_to_train(v: torch.Tensor) -> torch.Tensor:
        """Hamming distances (B, N_train) from binary images to every training image, as one matrix product."""
        # |v - x|_1 = sum v + sum x - 2 v.x for 0/1 vectors (cdist with p=1 has no fast path: 20x slower on 28x28)
        return v.sum(1, keepdim=True) + x_train.sum(1) - 2 * v @ x_train.T


# %%
if run.section(3):
    methods = {  # name: (k, persistent, decaying learning rate)
        "CD-1": (1, False, False),
        f"CD-{cfg.long_k}": (cfg.long_k, False, False),
        "PCD-1 const lr": (1, True, False),
        "PCD-1 decay lr": (1, True, True),
    }
    runs, models = {}, {}
    for name, (k, persistent, decay) in methods.items():
        models[name] = fresh_rbm(cfg.n_hidden, "3-initial-rbm")  # the same initial model for every method
        runs[name] = train_on_budget(models[name], k, persistent, decay, cfg.lr, cfg.budget_sweeps, cfg.n_evals,
                                     cfg.weight_decay, name)
    baseline_ll = float(fresh_rbm(cfg.n_hidden, "3-initial-rbm").log_likelihood(x_test).mean())

    print(f"\nExact mean test log-likelihood (nats/image), {cfg.budget_sweeps} Gibbs sweeps per image for every method")
    print(f"{'method':>16} {'updates':>8} {'final':>9} {'best':>9} {'mean last 5':>12} {'std last 5':>11}")
    for name, hist in runs.items():
        tail = np.array(hist["loglik"][-5:])
        print(f"{name:>16} {hist['updates'][-1]:8d} {hist['loglik'][-1]:9.3f} {max(hist['loglik']):9.3f} "
              f"{tail.mean():12.3f} {tail.std():11.3f}")
    print(f"{'initial model':>16} {0:8d} {baseline_ll:9.3f}   (independent pixels at the data frequencies)")
    run.metrics["final_test_loglik_by_method"] = {name: hist["loglik"][-1] for name, hist in runs.items()}
    run.metrics["test_loglik_curves"] = {name: hist["loglik"] for name, hist in runs.items()}
    run.metrics["initial_test_loglik"] = baseline_ll
    tail5 = {name: np.array(hist["loglik"][-5:]) for name, hist in runs.items()}
    run.claim("pcd_const_wobbles", "PCD at a constant rate wobbles more than with a decaying one (std, last 5)",
              float(tail5["PCD-1 const lr"].std()), ">", float(tail5["PCD-1 decay lr"].std()),
              reference_label="decaying lr")
    run.claim("pcd_decay_level_with_cd1", "decaying PCD ends level with CD-1 (mean of the last 5, nats)",
              float(tail5["PCD-1 decay lr"].mean()), "within", float(tail5["CD-1"].mean()), 1.0, reference_label="CD-1")
    run.claim("cd1_beats_initial", "CD-1 learns: its final test LL is above the initial model's",
              runs["CD-1"]["loglik"][-1], ">", baseline_ll, reference_label="initial model (independent pixels)")

    fig, axes = plotting.figure(3, 1, title=f"Exact test log-likelihood, {data.name}, RBM "
                                f"{x_train.shape[1]}×{cfg.n_hidden}, lr={cfg.lr}, batch={cfg.batch_size}, "
                                f"momentum={cfg.momentum}")
    colours = {name: f"C{i}" for i, name in enumerate(runs)}  # one colour per method in every panel
    for name, hist in runs.items():
        style = dict(ls="--" if "const" in name else "-", marker=".", color=colours[name], label=name)
        axes[0].plot(hist["sweeps"], hist["loglik"], **style)
        axes[1].plot(hist["updates"], hist["loglik"], **style)
        if name.startswith("PCD"):
            axes[2].plot(hist["sweeps"], hist["loglik"], **style)
    axes[0].set(xlabel="Gibbs sweeps per training image (equal budget)")
    axes[1].set(xlabel="parameter updates", xscale="log")
    axes[2].set(xlabel="Gibbs sweeps per training image", title="PCD needs a decaying learning rate")
    low = min(min(h["loglik"][len(h["loglik"]) // 4:]) for h in runs.values())
    high = max(max(h["loglik"]) for h in runs.values())
    for ax in axes:
        # the first evaluations of slow methods fall below the y range: see the table
        ax.set(ylabel=r"mean $\log p(v_{\rm test})$ [nats]", ylim=(low - 0.5, high + 0.3))
    axes[1].legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=4)  # one legend for all panels, off the data
    lr_axis = axes[2].twinx()
    lr_axis.plot(runs["PCD-1 decay lr"]["sweeps"], runs["PCD-1 decay lr"]["lr"], color="0.6", lw=0.8)
    lr_axis.set_ylabel("decaying lr (grey)", color="0.4")
    lr_axis.grid(False)
    run.savefig(fig, "fig03_exact_loglik", key=True)

# %% [markdown]
# **What to notice.**
# - Per Gibbs sweep, CD-1 is hard to beat early on: it makes long_k times more updates than CD-10.
#   Per update (middle panel) CD-10 is the better estimator; the budget decides which one wins.
# - PCD with a constant learning rate jumps around by a nat or more between evaluations: its chains mix
#   *because* the parameters keep moving, and each large step throws them off.
# - Decaying the rate calms PCD only late; it ends level with CD-1 (within a nat; which is ahead differs between
#   the last evaluation and the last five). With 16 hidden units the model mixes fast: CD-1's bias costs little
#   here (exercise 2).

# %% [markdown]
# ## 4. Short-run chains are an implicit generator; exact samples look for spurious modes
#
# CD-k trains the k-step chain $q_k = p_{\rm data} T^k$ to look like the data; nothing forces the *model*
# $p = p_{\rm data} T^\infty$ to. Regions the short chains never reach never have their energy pushed up.
# We sample the model exactly ($h \sim p(h)$ over all $2^{n_h}$ hidden states, then $v \sim p(v \mid h)$) and
# count samples farther (Hamming) from every training image than `far_quantile` of the test images are,
# for a sharp CD-1 model (constant rate) and a PCD model (decaying rate, section 3) from the same start,
# then over `spurious_seeds` initial weights (mean +- SE): one model is one draw.

# %%
if run.section(4):
    gen = run.generator("4-spurious-modes")
    def exact_model_samples(rbm: RBM, n: int, generator) -> torch.Tensor:
        """Exact samples: h ~ p(h) over all 2^n_h hidden states, then v ~ p(v | h)."""
        hidden = all_binary_states(rbm.n_hidden, dtype=rbm.W.dtype).to(device)  # (2^n_h, n_h)
        # log p*(h) = -F(h) = c.h + sum_i softplus(b_i + (W h)_i)   (the visible layer summed out)
        log_p_h = -rbm.hidden_free_energy(hidden)
        index = torch.multinomial(torch.softmax(log_p_h.double(), 0), n, replacement=True, generator=generator)
        return torch.bernoulli(rbm.visible_probs(hidden[index]), generator=generator)

    # Hamming distance to the nearest training image (common.evaluation), and the fraction beyond `far` pixels
    # (its test shows it flags 5 % of noise images among digits at this sample size)
    far = float(torch.quantile(nearest_hamming(x_test, x_train), cfg.far_quantile))

    def far_fraction(v: torch.Tensor) -> float:
        return evaluation.far_fraction(v, x_train, far)

    print(f"\nA sample is 'far' when its nearest training image is more than {far:.0f} pixels away "
          f"({cfg.far_quantile:.0%} of test digits are closer)")
    sharp = {}
    for name, persistent in (("CD-1", False), ("PCD-1", True)):
        sharp[name] = fresh_rbm(cfg.n_hidden, "4-sharp-initial-rbm")  # the same initial model for both methods
        # each method with the schedule that suits it (section 3): CD-1 constant, PCD decaying
        train_on_budget(sharp[name], 1, persistent, persistent, cfg.sharp_lr, cfg.sharp_epochs, cfg.n_evals, 0.0,
                        f"sharp {name}", evaluate=False)

    probe, spurious, spurious_exact, grids = {}, {}, {}, {}
    for name, rbm in sharp.items():
        v, fractions, snaps = x_test.repeat(cfg.probe_copies, 1), {}, {}
        for step in progress(range(1, max(cfg.probe_ks) + 1), desc=f"chains of sharp {name}", leave=False):
            v, _ = rbm.gibbs(v, 1, gen)
            if step in cfg.probe_ks:
                fractions[step] = far_fraction(v)
                snaps[step] = v[:10]
        exact = exact_model_samples(rbm, cfg.n_exact_samples, gen)
        spurious[name] = fractions
        spurious_exact[name] = far_fraction(exact)
        grids[name] = (snaps, exact)
        probe[name] = float(rbm.log_likelihood(x_test).mean())
    print(f"{'model':>6} {'test loglik':>12} " + " ".join(f"{'k=' + str(k):>8}" for k in cfg.probe_ks)
          + f" {'exact':>8}")
    for name in sharp:
        print(f"{name:>6} {probe[name]:12.3f} " + " ".join(f"{spurious[name][k]:8.3f}" for k in cfg.probe_ks)
              + f" {spurious_exact[name]:8.3f}")
    print(f"(fraction of samples far from every training image; test images themselves: {1 - cfg.far_quantile:.3f}; "
          f"binomial SE about {math.sqrt(0.05 * 0.95 / (cfg.probe_copies * len(x_test))):.3f} for the k columns, "
          f"{math.sqrt(0.05 * 0.95 / cfg.n_exact_samples):.3f} for exact, at a fraction of 0.05)")
    run.metrics["spurious_fraction_by_k"] = {name: {str(k): f for k, f in fr.items()} for name, fr in spurious.items()}
    run.metrics["spurious_fraction_exact"] = spurious_exact
    run.metrics["sharp_test_loglik"] = probe
    k_long = cfg.probe_ks[-1]
    run.claim("long_chains_no_drift", f"CD-1's chains do not drift to far images as k grows (k = {k_long} vs 1)",
              spurious["CD-1"][k_long], "<", spurious["CD-1"][cfg.probe_ks[0]],
              reference_label=f"k = {cfg.probe_ks[0]}")

    snaps, exact = grids["CD-1"]
    columns = [x_test[:10]] + [snaps[k] for k in cfg.probe_ks] + [exact[:10]]
    fig, ax = plotting.figure(1, 1, title=f"Sharp CD-1 model ({cfg.sharp_epochs} epochs, lr={cfg.sharp_lr}, "
                              "no weight decay)", panel_size=(1.0 + 0.9 * len(columns), 7.2))
    plotting.image_grid(ax, torch.stack(columns, 1).reshape(-1, x_train.shape[1]), data.shape, nrow=len(columns))
    ax.set_title("columns: test image, after k = " + ", ".join(map(str, cfg.probe_ks))
                 + " Gibbs steps, exact model sample", fontsize=9)
    run.savefig(fig, "fig04_short_vs_long")

    fig, ax = plotting.figure(1, 1, title=f"Samples far from all training digits (> {far:.0f} pixels), "
                              f"{data.name}, {cfg.n_hidden} hidden", panel_size=(8.0, 4.2))
    for i, name in enumerate(sharp):
        ax.plot(list(spurious[name]), list(spurious[name].values()), "o-", color=f"C{i}",
                label=f"{name}: k steps from test data")
        ax.axhline(spurious_exact[name], color=f"C{i}", ls="--", label=f"{name}: exact samples of the model")
    ax.axhline(1 - cfg.far_quantile, color="k", ls=":", label="real test images")
    ax.set(xscale="log", xlabel="Gibbs steps $k$ from the test images", ylabel="fraction of samples that are far")
    ax.set_ylim(bottom=0)  # fractions: an honest axis starts at 0
    plotting.legend_outside(ax)
    run.savefig(fig, "fig05_spurious_modes")

# %%
if run.section(4):
    def far_fractions(rbm: RBM) -> tuple[float, float]:
        """Fraction of 'far' samples: exact model samples, and one Gibbs step from every test image."""
        one_step, _ = rbm.gibbs(x_test.repeat(cfg.probe_copies, 1), 1, gen)
        exact = exact_model_samples(rbm, cfg.n_exact_samples, gen)
        return far_fraction(exact), far_fraction(one_step)

    seed_fractions = {"CD-1": [], "PCD-1": []}  # name: [(exact, one step) per initial seed]
    for i in range(cfg.spurious_seeds):
        for name, persistent in (("CD-1", False), ("PCD-1", True)):
            rbm = fresh_rbm(cfg.n_hidden, f"4-initial-rbm-{i + 1}")  # a new initial model; the data order stays
            train_on_budget(rbm, 1, persistent, persistent, cfg.sharp_lr, cfg.sharp_epochs, cfg.n_evals, 0.0,
                            f"sharp {name}, init {i + 1}/{cfg.spurious_seeds}", evaluate=False)
            seed_fractions[name].append(far_fractions(rbm))
    print(f"\nOver {cfg.spurious_seeds} initial seeds (mean +- standard error over seeds), fraction of far samples:")
    print(f"{'model':>6} {'exact samples':>18} {'1 step from data':>18} {'exact - 1 step':>18}")
    spurious_summary, gaps = {}, {}
    for name, rows in seed_fractions.items():
        rows = np.array(rows)  # (seeds, 2): exact, one step
        stats = over_seeds(lambda s, r=rows: {"exact": r[s, 0], "one_step": r[s, 1], "gap": r[s, 0] - r[s, 1]},
                           range(len(rows)))  # SE of a mean over S seeds: std(ddof=1) / sqrt(S)
        print(f"{name:>6} " + " ".join(f"{str(stats[key]):>18}" for key in stats))
        spurious_summary[name] = {f"{key}_{part}": getattr(stat, part) for key, stat in stats.items()
                                  for part in ("mean", "se")}
        spurious_summary[name].update(per_seed_exact=rows[:, 0], per_seed_one_step=rows[:, 1])
        gaps[name] = stats["gap"]
    run.metrics["spurious_fraction_over_seeds"] = spurious_summary
    run.claim("spurious_cd1_gap", "CD-1's exact samples are far more often than its 1-step samples",
              gaps["CD-1"], ">", 0.0, reference_label="no gap")

    fig, ax = plotting.figure(1, 1, title=f"Spurious modes over {cfg.spurious_seeds} initial seeds "
                              f"({cfg.sharp_epochs} epochs, lr={cfg.sharp_lr}, no weight decay)")
    for i, rows in enumerate(seed_fractions.values()):
        rows = np.array(rows)
        for j in range(2):  # column 0: exact samples, column 1: one step from the data
            xs = np.full(len(rows), 2 * i + j) + np.linspace(-0.15, 0.15, len(rows))
            ax.plot(xs, rows[:, j], "o", color=f"C{i}", alpha=0.5 if j else 1.0)
            ax.errorbar(2 * i + j + 0.3, rows[:, j].mean(), rows[:, j].std(ddof=1) / math.sqrt(len(rows)),
                        fmt="s", color="k", capsize=4)
    ax.errorbar([], [], [], fmt="s", color="k", capsize=4, label="mean ± SE over seeds")
    ax.axhline(1 - cfg.far_quantile, color="k", ls=":", label="real test images")
    ax.set_xticks(range(4), ["CD-1\nexact", "CD-1\n1 step", "PCD-1\nexact", "PCD-1\n1 step"])
    ax.set(ylabel="fraction far from every training digit", xlim=(-0.6, 3.6))
    ax.legend(loc="upper right")
    run.savefig(fig, "fig07_spurious_over_seeds")

# %% [markdown]
# **What to notice.**
# - One Gibbs step from the data gives digit-like images: the k-step chain CD-1 trained does its job.
# - Long chains from the test digits do NOT drift to far images here: in fig05 CD-1's far fraction falls as
#   $k$ grows (claim above) and settles on the model's own exact fraction (dashed).
# - One model is one draw (fig07 shows every seed). Over the seeds the CD-1 models' exact samples are far only
#   slightly more often than their one-step samples, and that claim FAILS at the defaults: the effect is NOT
#   established this way. PCD shows no gap. (The schedules differ too; exercise 7 gives both the same.)

# %% [markdown]
# ### A mode that the short chains never visit
#
# To see the mechanism without the seed-to-seed noise, give training a far mode to remove: CD-1 on the
# digits *and their negatives* gives a start with nearly all its mass on inverted digits. From it we train
# on the digits alone with CD-1 and PCD-1 (each with its schedule) and follow the *exact* mass on inverted
# images (more than half of the pixels on): $\sum_h p(h)\, P(\text{more than } n_v/2 \text{ on} \mid h)$, a
# Poisson-binomial tail (`common.rbm.exact_count_tail`). CD-1's negative phase is one Gibbs step from a digit
# and never comes near an inverted image; PCD's persistent chains go wherever the model puts mass.

# %%
if run.section(4):
    gen = run.generator("4-unvisited-mode")
    CHECKPOINTS = (0, 1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100, 150, 200, 300, 400, 600, 1000, 2000)

    def inverted_fraction(v: torch.Tensor) -> float:
        """Fraction of images with more than half of their pixels on (inverted digits)."""
        return float((v.mean(1) > 0.5).double().mean())

    def inverted_mass(rbm: RBM) -> float:
        """The model's exact probability of an image with more than half of its pixels on."""
        return exact_count_tail(rbm, rbm.n_visible // 2)

    def inverted_start(index: int, persistent: bool = False) -> RBM:
        """An RBM trained by CD-1 (or PCD-1) on the digits and their negatives."""
        g = run.generator(f"4-unvisited-start-{index}" + ("-pcd" if persistent else ""))
        both = torch.cat([x_train, 1 - x_train])
        # as fresh_rbm, but biased to the mixture and drawn from g, which then also drives the pre-training
        rbm = RBM(both.shape[1], cfg.n_hidden, 0.01, visible_bias=data_visible_bias(both), generator=g, device=device)
        velocity, chains = None, coin_flips(cfg.batch_size, both.shape[1], generator=g) if persistent else None
        for epoch in range(cfg.unvisited_pretrain_epochs):
            velocity, chains, _ = train_epoch(rbm, both, lr=cfg.unvisited_pretrain_lr, k=1, batch_size=cfg.batch_size,
                                              momentum=cfg.momentum, weight_decay=cfg.weight_decay, velocity=velocity,
                                              chains=chains, generator=g)
            if epoch == 0 and not persistent:  # when is the split between digits and negatives decided?
                first_epoch_mass.append(inverted_mass(rbm))
        return rbm

    def removal_run(start: RBM, persistent: bool, epochs: int, index: int, label: str) -> tuple[dict, RBM]:
        """Train a copy of ``start`` on the digits (CD-1 at --lr, PCD-1 decaying to 0, as in section 3);
        exact inverted mass and test LL at CHECKPOINTS."""
        g = run.generator(f"4-unvisited-train-{index}")  # the same data order for both methods
        rbm = RBM.from_tensors(start.W, start.b, start.c)
        chains = coin_flips(cfg.batch_size, rbm.n_visible, generator=g) if persistent else None
        velocity, curve = None, {"epoch": [0], "mass": [inverted_mass(rbm)],
                                 "test_loglik": [float(rbm.log_likelihood(x_test).mean())]}
        for epoch in progress(range(1, epochs + 1), desc=label, leave=False):
            lr_now = cfg.lr * (1 - (epoch - 1) / epochs) if persistent else cfg.lr
            velocity, chains, _ = train_epoch(rbm, x_train, lr=lr_now, k=1, batch_size=cfg.batch_size,
                                              momentum=cfg.momentum, weight_decay=cfg.weight_decay, velocity=velocity,
                                              chains=chains, generator=g, monitor=False)
            run.check_finite(rbm.W, step=epoch, what=f"{label} weights", field="lr", bound=1e3)
            if epoch in CHECKPOINTS or epoch == epochs:
                curve["epoch"].append(epoch)
                curve["mass"].append(inverted_mass(rbm))
                curve["test_loglik"].append(float(rbm.log_likelihood(x_test).mean()))
        return curve, rbm

    def epochs_to_remove(curve: dict) -> float:
        """First checkpoint epoch at which the exact inverted mass is below --removed-below (inf if never)."""
        return next((e for e, m in zip(curve["epoch"], curve["mass"]) if m < cfg.removed_below), math.inf)

    def unvisited_row(rbm: RBM) -> dict:
        """Exact and one-step samples of a model: inverted and far fractions, and the exact test log-lik."""
        exact = exact_model_samples(rbm, cfg.n_exact_samples, gen)
        one_step, _ = rbm.gibbs(x_test.repeat(cfg.probe_copies, 1), 1, gen)
        return {"exact_mass": inverted_mass(rbm), "one_step_inverted": inverted_fraction(one_step),
                "exact_far": far_fraction(exact), "one_step_far": far_fraction(one_step),
                "test_loglik": float(rbm.log_likelihood(x_test).mean()), "samples": (exact[:10], one_step[:10])}

    print(f"\nInverted digits are {float(nearest_hamming(1 - x_test, x_train).mean()):.0f} pixels from the nearest "
          f"training digit on average ('far' = more than {far:.0f})")
    first_epoch_mass = []  # per start: inverted mass after the first epoch of CD-1 pre-training
    unvisited = {name: [] for name in ("start", f"CD-1, {cfg.unvisited_epochs} ep",
                                        f"CD-1, {cfg.unvisited_cd_epochs} ep",
                                        f"PCD-1, {cfg.unvisited_epochs} ep")}  # name: [row per start]
    curves = {"CD-1": [], "PCD-1": []}  # method: [mass and test-LL curve per start]
    starts = []  # the pre-trained starts (exercise 8 asks why they sit on the negatives)
    for i in range(cfg.unvisited_seeds):
        start = inverted_start(i)
        starts.append(start)
        unvisited["start"].append(unvisited_row(start))
        for method, epochs in (("CD-1", cfg.unvisited_cd_epochs), ("PCD-1", cfg.unvisited_epochs)):
            curve, rbm = removal_run(start, method == "PCD-1", epochs, i, f"{method} from inverted start {i + 1}")
            curves[method].append(curve)
            unvisited[f"{method}, {epochs} ep"].append(unvisited_row(rbm))
            if method == "CD-1":  # CD-1 after --unvisited-epochs, the length PCD-1 gets (a checkpoint of the same run)
                at = curve["epoch"].index(min(cfg.unvisited_epochs, epochs))
                unvisited[f"CD-1, {cfg.unvisited_epochs} ep"].append({"exact_mass": curve["mass"][at],
                                                                      "test_loglik": curve["test_loglik"][at]})
    columns = ("exact_mass", "one_step_inverted", "exact_far", "one_step_far", "test_loglik")
    print(f"Mean over {cfg.unvisited_seeds} starts; exact_mass = the model's exact inverted mass (per-start values "
          "in metrics.json)")
    print(f"{'model':>16} " + " ".join(f"{c:>17}" for c in columns))
    for name, rows in unvisited.items():
        print(f"{name:>16} " + " ".join(f"{np.mean([r[c] for r in rows]):17.3f}" if c in rows[0] else f"{'':>17}"
                                        for c in columns))
    removal = {method: over_seeds(lambda i, m=method: epochs_to_remove(curves[m][i]), range(cfg.unvisited_seeds))
               for method in curves}
    print(f"Epochs until the exact inverted mass is below {cfg.removed_below:g} (first checkpoint), per start: "
          + "; ".join(f"{m} {list(s.values)}" for m, s in removal.items()))
    run.metrics["unvisited_mode"] = {name: {c: [r[c] for r in rows] for c in columns if c in rows[0]}
                                     for name, rows in unvisited.items()}
    run.metrics["unvisited_mass_curves"] = curves
    run.metrics["unvisited_epochs_to_remove"] = {m: list(s.values) for m, s in removal.items()}
    cd_long = unvisited[f"CD-1, {cfg.unvisited_cd_epochs} ep"]
    pcd_short = unvisited[f"PCD-1, {cfg.unvisited_epochs} ep"]
    run.claim("unvisited_start_holds_mode", "the pre-trained start puts nearly all its mass on inverted digits",
              min(r["exact_mass"] for r in unvisited["start"]), ">", 0.9, reference_label="(every start)")
    run.claim("unvisited_cd_slower", "CD-1 removes a mode its chains never visit far more slowly than PCD",
              removal["CD-1"], ">", removal["PCD-1"], reference_label="epochs of PCD-1")
    run.claim("unvisited_cd_removes",
              f"CD-1 drives the inverted mass to about 0 within {cfg.unvisited_cd_epochs} epochs",
              max(r["exact_mass"] for r in cd_long), "<", cfg.removed_below, reference_label="(every start)")
    run.claim("unvisited_cd_reaches_pcd_ll", "and then reaches PCD-1's test log-likelihood (nats)",
              float(np.mean([r["test_loglik"] for r in cd_long])), "within",
              float(np.mean([r["test_loglik"] for r in pcd_short])), 0.5, reference_label="PCD-1")
    run.claim("unvisited_cd_still_climbing", f"at {cfg.unvisited_epochs} epochs CD-1's test LL is still climbing",
              float(np.mean([r["test_loglik"] for r in cd_long])), ">",
              float(np.mean([r["test_loglik"] for r in unvisited[f"CD-1, {cfg.unvisited_epochs} ep"]])), 1.0,
              reference_label=f"its LL at {cfg.unvisited_epochs} epochs (+1 nat)")

    title = (f"A far mode CD-1 never visits: start = CD-1 RBM of digits + their negatives ({cfg.unvisited_seeds} "
             f"starts), then digits only, lr {cfg.lr:g}")
    fig, axes = plotting.figure(3, 1, title=title, panel_size=(4.6, 4.0))
    for method, colour in (("CD-1", "C0"), ("PCD-1", "C1")):
        for i, curve in enumerate(curves[method]):
            epochs = np.array(curve["epoch"]) + 1  # +1: epoch 0 (the start) on a log axis
            axes[0].plot(epochs, curve["mass"], "o-", ms=3, color=colour, alpha=0.8,
                         label=None if i else f"{method}" + (" (lr decays to 0)" if method == "PCD-1" else ""))
            axes[1].plot(epochs, curve["test_loglik"], "o-", ms=3, color=colour, alpha=0.8, label=None if i else method)
    axes[0].axhline(cfg.removed_below, color="k", ls=":", label=f"mass {cfg.removed_below:g}")
    axes[0].set(ylabel="exact mass on inverted images", title="the far mode's exact mass (each start)",
                ylim=(-0.02, 1.02))
    axes[1].set(ylabel="exact test log-likelihood [nats]", title="exact test log-likelihood",
                ylim=(max(min(min(c["test_loglik"]) for c in curves["CD-1"]), -150) - 3, None))
    for ax, where in zip(axes[:2], ("center left", "lower right")):
        ax.set(xscale="log", xlabel="epoch + 1 on the digits")
        ax.legend(loc=where)
    rows = {"start, exact": unvisited["start"][0]["samples"][0],
            f"CD-1 {cfg.unvisited_cd_epochs} ep, 1 step": cd_long[0]["samples"][1],
            f"CD-1 {cfg.unvisited_cd_epochs} ep, exact": cd_long[0]["samples"][0],
            f"PCD-1 {cfg.unvisited_epochs} ep, exact": pcd_short[0]["samples"][0]}
    plotting.image_grid(axes[2], torch.cat(list(rows.values())), data.shape, nrow=10, row_labels=list(rows),
                        title="samples of the first start's models (ink is white)")
    run.savefig(fig, "fig09_unvisited_mode", key=True)

# %% [markdown]
# **What to notice** (the printed table and claims above carry the numbers):
# - PCD-1 removes the inverted mode within the first epoch on every start: its persistent chains fall
#   into the mode and their negative phase pushes its energy up.
# - CD-1 removes it too, but after hundreds of epochs. Its one-step samples are never inverted: the mode
#   goes only as a side effect of the updates made for the digits (we did not measure which part).
# - Why the start sits on the negatives at all is exercise 8 (its stub measures it).
# - This is the seed's claim in a measured form: the negative phase raises the energy only where the
#   sampler goes, so CD-k removes a mode its chains never visit far more slowly than PCD, indirectly.

# %% [markdown]
# ## 5. Chain health: autocorrelation, ESS, split R-hat and the self-transition rate
#
# A PCD gradient is only as good as its persistent chains. Four numbers say whether they mix: the
# autocorrelation $\rho_t$ of a summary (the free energy $F(v)$); ${\rm ESS} = m n / (1 + 2 \sum_t \rho_t)$;
# split $\hat R$ (about 1.00 when chains and chain halves agree); and the self-transition rate (steps that
# leave the whole image unchanged). We check the PCD model of section 3, the same model cooled by hand
# (parameters times beta = `stuck_beta`: where unchecked weight growth leads; section 6 looks at training
# itself), and the cooled one under parallel tempering (hotter replicas hand states down by Metropolis swaps).

# %%
if run.section(5):
    gen = run.generator("5-chain-health")
    def scaled(rbm: RBM, beta: float) -> RBM:
        """The RBM at inverse temperature beta: p_beta(v, h) ~ exp(-beta E(v, h))."""
        return RBM.from_tensors(beta * rbm.W, beta * rbm.b, beta * rbm.c)

    def tempered_gibbs(replicas: list[RBM], v: torch.Tensor, step: int, generator) -> torch.Tensor:
        """One Gibbs step in every replica ``(R, B, n_v)``, then swaps between neighbouring betas."""
        v = torch.stack([rbm.gibbs(v[r], 1, generator)[0] for r, rbm in enumerate(replicas)])
        for r in range(step % 2, len(replicas) - 1, 2):  # even pairs, then odd pairs
            a, b = replicas[r], replicas[r + 1]
            # accept the swap with min(1, p_a(v_b) p_b(v_a) / (p_a(v_a) p_b(v_b)))
            log_ratio = a.free_energy(v[r]) + b.free_energy(v[r + 1]) - a.free_energy(v[r + 1]) - b.free_energy(v[r])
            swap = (torch.rand(v.shape[1], generator=generator, device=device).log() < log_ratio)[:, None]
            v[r], v[r + 1] = torch.where(swap, v[r + 1], v[r]), torch.where(swap, v[r], v[r + 1])
        return v

    def run_chains(target: RBM, replicas: list[RBM] | None = None) -> torch.Tensor:
        """``health_chains`` chains from random images; returns the target's states ``(T, B, n_v)``."""
        replicas = replicas or [target]
        v = coin_flips(len(replicas), cfg.health_chains, target.n_visible, generator=gen)  # (R, B, n_v)
        states = []
        for step in range(cfg.health_steps):
            v = tempered_gibbs(replicas, v, step, gen)
            states.append(v[0].clone())
        return torch.stack(states[cfg.burn_in:])

    def iid_repeat_rate(rbm: RBM, n_pairs: int = 20000) -> float:
        """P(two independent exact draws are the same image) = sum_v p(v)^2, by Monte Carlo over h.

        sum_v p(v)^2 = E_{h, h' ~ p(h)} prod_i [p_i(h) p_i(h') + (1 - p_i(h)) (1 - p_i(h'))]
        """
        hidden = all_binary_states(rbm.n_hidden, dtype=torch.float64).to(device)
        W, b = rbm.W.double(), rbm.b.double()
        p_h = torch.softmax(-rbm.hidden_free_energy(hidden), 0)
        pairs = torch.multinomial(p_h, 2 * n_pairs, replacement=True, generator=gen).reshape(2, n_pairs)
        p, q = torch.sigmoid(hidden[pairs[0]] @ W.T + b), torch.sigmoid(hidden[pairs[1]] @ W.T + b)
        return float((p * q + (1 - p) * (1 - q)).prod(1).mean())

    def health(target: RBM, states: torch.Tensor) -> dict:
        free = torch.stack([target.free_energy(s) for s in states]).T  # (chains, draws)
        ink = states.mean(2).T  # fraction of pixels on, a second summary
        return {"rhat": max(split_rhat(free), split_rhat(ink)), "ess": effective_sample_size(free) / len(free),
                "self": self_transition_rate(states), "iid": iid_repeat_rate(target),
                "acf": autocorrelation(free).mean(0)[:50], "trace": free[:4]}

    if run.section(3):
        base = models["PCD-1 decay lr"]
    else:  # --section 5 alone: the same PCD-1 model as section 3 (same streams), trained here
        base = fresh_rbm(cfg.n_hidden, "3-initial-rbm")
        train_on_budget(base, 1, True, True, cfg.lr, cfg.budget_sweeps, cfg.n_evals, cfg.weight_decay, "PCD-1 decay lr",
                        evaluate=False)
    peaked = scaled(base, cfg.stuck_beta)
    ladder = [cfg.stuck_beta * (cfg.pt_beta_min / cfg.stuck_beta) ** (i / (cfg.pt_temperatures - 1))
              for i in range(cfg.pt_temperatures)]  # geometric, from the target down to pt_beta_min
    checks = {"healthy": (base, None), "cooled": (peaked, None),
              "tempered": (peaked, [scaled(base, b) for b in ladder])}
    report = {}
    for name, (target, replicas) in progress(checks.items(), desc="chain health", leave=False):
        report[name] = health(target, run_chains(target, replicas))
    print(f"\nChains of the section-3 PCD model: {cfg.health_chains} chains x {cfg.health_steps - cfg.burn_in} draws "
          f"after {cfg.burn_in} burn-in; 'cooled' = parameters x {cfg.stuck_beta}; 'tempered' = the same, with "
          f"{cfg.pt_temperatures} replicas down to beta={cfg.pt_beta_min}")
    print(f"{'chains':>9} {'R-hat max':>10} {'ESS/chain':>10} {'self-trans.':>12} {'iid repeat':>11}   verdict")
    for name, r in report.items():
        verdict = "OK" if r["rhat"] < 1.05 and r["ess"] > 10 else "NOT MIXING"
        print(f"{name:>9} {r['rhat']:10.3f} {r['ess']:10.1f} {r['self']:12.3f} {r['iid']:11.3f}   {verdict}")
    for key, metric in (("rhat", "rhat_max"), ("ess", "ess_per_chain"), ("self", "self_transition_rate"),
                        ("iid", "repeat_rate_iid")):
        run.metrics[metric] = {name: r[key] for name, r in report.items()}
    run.claim("healthy_rhat", "healthy chains: R-hat about 1.00", report["healthy"]["rhat"], "<", 1.05)
    run.claim("cooled_rhat", "the cooled model's chains do not mix: R-hat far above 1.05", report["cooled"]["rhat"],
              ">", 1.05)
    run.claim("tempering_ess", "tempering raises the ESS by an order of magnitude", report["tempered"]["ess"], ">",
              10 * report["cooled"]["ess"], reference_label="10 x cooled ESS")
    run.claim("tempering_rhat", "tempering brings R-hat to about 1", report["tempered"]["rhat"], "within", 1.0, 0.1)

    fig, axes = plotting.figure(2, 2, title=f"Chain health, {data.name} PCD model ({cfg.n_hidden} hidden); "
                                f"cooled = parameters × {cfg.stuck_beta}, tempered = {cfg.pt_temperatures} replicas")
    for ax, name in zip(axes[:3], report):
        plotting.chain_traces(ax, report[name]["trace"], xlabel="draw after burn-in", ylabel="free energy F(v)")
        ax.set_title(f"{name}: R-hat {report[name]['rhat']:.2f}, ESS/chain {report[name]['ess']:.1f}")
    for name, r in report.items():
        axes[3].plot(r["acf"], label=name)
    axes[3].set(xlabel="lag t (Gibbs steps)", ylabel="autocorrelation of F(v)")
    axes[3].legend()
    run.savefig(fig, "fig06_chain_health")

# %% [markdown]
# **What to notice.**
# - Healthy chains: $\hat R \approx 1.00$, hundreds of effective draws per chain, autocorrelation gone within
#   a few steps, and the image changes at almost every step.
# - The cooled model: each chain sits in its own mode (flat, offset traces), so $\hat R$ is far above 1.05 and
#   the ESS is a draw or two per chain. The self-transition rate rises, but so does the iid repeat rate (in a
#   peaked model even independent draws repeat images): $\hat R$ and ESS are the verdict.
# - Tempering brings $\hat R$ to about 1 and the ESS up tenfold, though the verdict may sit just past 1.05
#   (exercise 5). The cheaper fix during training is not to let the model get that peaked.

# %% [markdown]
# ## 6. Chains that slow down during training itself
#
# Does PCD training itself slow its chains? The lever is section 3's learning-rate schedule. We train a wider
# model (`wide_hidden` units, momentum `wide_momentum`, no weight decay) at a constant `wide_lr` and with the
# rate decaying to 0, over `slowing_seeds` seeds, record the persistent chains after every update, and measure
# per tenth of training: mode switches (the class of a chain's nearest training digit changes, over the first
# `switch_window` updates), the autocorrelation of its ink (fraction of pixels on) at lags 1 and 10, and the
# self-transition rate.

# %%
if run.section(6):
    def pcd_chain_record(decay: bool, seed_index: int):
        """PCD-1 with the persistent chains recorded after every update: (T, B, n_v), and the model. Both
        schedules of one seed start from the same streams (initial weights, chains, data order)."""
        suffix = "" if seed_index == 0 else f"-seed-{seed_index}"  # seed 0 keeps the streams of a single run
        g = run.generator("5-chain-record" + suffix)
        rbm = fresh_rbm(cfg.wide_hidden, "5-chain-record-initial-rbm" + suffix)
        chains = coin_flips(cfg.batch_size, x_train.shape[1], generator=g)  # (B, n_v)
        velocity, record = None, []
        for epoch in progress(range(cfg.wide_epochs), desc=f"PCD chain record, seed {seed_index}, decay={decay}"):
            lr_now = cfg.wide_lr * (1 - epoch / cfg.wide_epochs) if decay else cfg.wide_lr
            order = torch.randperm(len(x_train), generator=g, device=device)
            for start in range(0, len(x_train) - cfg.batch_size + 1, cfg.batch_size):
                velocity, chains, _ = train_epoch(rbm, x_train[order[start:start + cfg.batch_size]], lr=lr_now, k=1,
                                                  batch_size=cfg.batch_size, momentum=cfg.wide_momentum,
                                                  weight_decay=0.0, velocity=velocity, chains=chains, generator=g,
                                                  monitor=False)
                record.append(chains.clone())
            run.check_finite(rbm.W, step=epoch, what="PCD chain-record weights", field="wide_lr", bound=1e3)
        return torch.stack(record), rbm

    def nearest_class(states: torch.Tensor) -> torch.Tensor:
        """Class of the nearest training digit (Hamming distance) for every state in (T, B, n_v)."""
        flat_states = states.reshape(-1, states.shape[-1])
        index = torch.cat([hamming_to_train(part).argmin(1) for part in flat_states.split(4096)])
        return data.y_train.to(device)[index].reshape(states.shape[:2])

    def tenth_stats(states: torch.Tensor) -> dict[str, list[float]]:
        """Per tenth of training: class switches, ink autocorrelation at lags 1 and 10, self-transition rate."""
        rows, tenth = {"switch": [], "acf1": [], "acf10": [], "self": []}, len(states) // 10
        for part in states[:10 * tenth].split(tenth):
            acf = autocorrelation(part.mean(2).T).mean(0)  # ink (fraction of pixels on) of each chain
            classes = nearest_class(part[:cfg.switch_window])  # (switch_window, B)
            # class switches: the fraction of consecutive records at which a chain's nearest class changes
            for key, value in (("switch", (classes[1:] != classes[:-1]).double().mean()), ("acf1", acf[1]),
                               ("acf10", acf[10]), ("self", self_transition_rate(part))):
                rows[key].append(float(value))
        return rows

    chain_stats = {"constant lr": [], "decaying lr": []}  # schedule: [per-tenth stats and |W| per seed]
    for i in range(cfg.slowing_seeds):
        for name, decay in (("constant lr", False), ("decaying lr", True)):
            states, rbm = pcd_chain_record(decay, i)
            chain_stats[name].append({**tenth_stats(states), "weight_norm": float(rbm.W.norm())})
            del states
    print(f"\nPersistent chains during PCD-1 training ({cfg.wide_hidden} hidden, lr {cfg.wide_lr:g}, momentum "
          f"{cfg.wide_momentum:g}, {cfg.batch_size} chains), by tenth of training; mean +- SE over "
          f"{cfg.slowing_seeds} seeds")
    print(f"{'schedule':>12} {'measure':>26} {'first tenth':>15} {'middle':>15} {'last tenth':>15}")
    measures = {"switch": "class switches per update", "acf1": "ink autocorrelation lag 1", "acf10": "lag 10",
                "self": "self-transition rate"}
    stat = {name: {key: [over_seeds(lambda s, k=key, t=t, n=name: chain_stats[n][s][k][t], range(cfg.slowing_seeds))
                         for t in range(10)] for key in measures} for name in chain_stats}
    for name in chain_stats:
        for j, (key, label) in enumerate(measures.items()):
            print(f"{name if j == 0 else '':>12} {label:>26} " + " ".join(f"{str(stat[name][key][t]):>15}"
                                                                          for t in (0, 5, 9)))
    weight_norm = {name: over_seeds(lambda s, n=name: chain_stats[n][s]["weight_norm"], range(cfg.slowing_seeds))
                   for name in chain_stats}
    print(f"{'':>12} {'final |W|':>26} " + "   ".join(f"{n}: {w}" for n, w in weight_norm.items()))
    run.metrics["pcd_training_chain_stats"] = chain_stats
    decaying, constant = stat["decaying lr"]["switch"], stat["constant lr"]["switch"]
    run.claim("slowing_decay_falls", "under a decaying rate the class switches fall during training",
              decaying[9], "<", decaying[0], reference_label="first tenth")
    run.claim("slowing_decay_below_constant", "and end below those at a constant rate",
              decaying[9], "<", constant[9], reference_label="constant rate, last tenth")
    run.claim("slowing_smaller_weights", "the decaying rate ends with smaller weights (no sharper optimum)",
              weight_norm["decaying lr"], "<", weight_norm["constant lr"], reference_label="|W| at a constant rate")
    self_max = max(v for rows in chain_stats.values() for r in rows for v in r["self"])
    run.claim("slowing_self_transition_silent", "the self-transition rate never fires (every tenth, seed, schedule)",
              self_max, "<", 0.01)

    title = (f"PCD-1 chains during training, {cfg.wide_hidden} hidden units: constant lr {cfg.wide_lr:g} vs "
             f"decaying to 0 ({cfg.slowing_seeds} seeds)")
    fig, axes = plotting.figure(2, 1, title=title, panel_size=(5.0, 3.8))
    tenths = np.arange(1, 11)
    for i, name in enumerate(chain_stats):
        for rows in chain_stats[name]:  # thin lines: each seed
            axes[0].plot(tenths, rows["switch"], color=f"C{i}", lw=0.6, alpha=0.5)
        for ax, key, style, label in ((axes[0], "switch", "o-", f"{name}: mean ± SE (thin: each seed)"),
                                      (axes[1], "acf1", "o-", f"{name}, lag 1"),
                                      (axes[1], "acf10", "s--", f"{name}, lag 10")):
            ax.errorbar(tenths, [s.mean for s in stat[name][key]], [s.se for s in stat[name][key]], fmt=style,
                        color=f"C{i}", capsize=3, label=label)
    axes[0].set(ylabel="class switches per update", title="moves between modes", ylim=(0, 1))
    axes[1].set(ylabel="autocorrelation of the chains' ink", title="autocorrelation (mean ± SE)")
    for ax in axes:
        ax.set(xlabel="tenth of training", xticks=tenths)
    axes[0].legend(fontsize=9, loc="lower left")
    axes[1].legend(fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)  # below the axes, off the data
    run.savefig(fig, "fig08_pcd_chains_in_training")

# %% [markdown]
# **What to notice** (claims above):
# - At a constant rate the persistent chains keep moving between modes to the end; with the rate decaying to 0
#   their class switches fall, on every seed. Not because the model gets sharper: its final weights are
#   *smaller* than at a constant rate (we claim no mechanism). It is slowing, not freezing.
# - The self-transition rate never fires (with 64 pixels some pixel almost always flips): class switches and
#   autocorrelation are the earlier warning.

# %% [markdown]
# ## Summary
#
# - CD-k is a dozen lines: a positive phase at the data, a negative phase k Gibbs steps away; PCD only
#   changes where the negative chain starts.
# - The CD-k gradient is biased, most for small k and sharp models; its cosine with the exact gradient
#   rises toward 1 with k. PCD's bias is the lag of its chains behind the parameters.
# - Compare methods at an equal sampling budget with an honest metric: with the exact likelihood, PCD at a
#   constant rate oscillates; with a decaying one it ends level with CD-1.
# - A short-run chain can look fine while the model hides spurious modes; exact sampling looks for them.
#   From random weights the effect is small and not significant; from a start with a far mode (inverted
#   digits), CD-1 removes it far more slowly than PCD: hundreds of epochs against one.
# - Check chains with R-hat and ESS; tempering unsticks a cooled, peaked model. In training, a rate decaying
#   to 0 slows PCD's chains (fewer class switches), while the self-transition rate never fires.

# %% [markdown]
# ## Exercises
#
# **Exercise 1 (predict-then-tweak, easy): sharper model, larger bias** Predict how the CD-1 cosine of
# section 2 changes with `--bas-train-steps 5000`, and PCD's with `--bas-lr 0.2`. Run and compare.
#
# **Exercise 2 (predict-then-tweak, medium): does CD-1 still win with more hidden units?** Predict the order
# of the final exact test log-likelihoods of CD-1, CD-10 and PCD-decay with `--n-hidden 20 --budget-sweeps 300`.
#
# **Exercise 3 (extend, medium): the exact CD-k fixed point**
# For a 3x3 bars-and-stripes RBM, build the 512 x 512 Gibbs transition matrix T(v, v') =
# sum_h p(h|v) p(v'|h) and compute the exact expected CD-k gradient (data distribution times T^k).
# Plot its cosine with the exact gradient against k, and check it matches section 2's Monte-Carlo
# curve. A stub runs with `--exercise 3`.
#
# **Exercise 4 (think, medium): why does PCD need a decaying learning rate?** Explain, in terms of the two
# things PCD's chains track, why a constant rate makes the exact likelihood oscillate and why it does not average
# out.
#
# **Exercise 5 (predict-then-tweak, easy): how much tempering is enough?**
# Predict R-hat and the ESS of the 'tempered' chains with `--pt-temperatures 3` and with
# `--pt-beta-min 1.5` (`--section 5` runs only this section). Which one fails worse, and why? (Hint: a swap
# needs neighbouring replicas that overlap, and the hottest replica must mix.)
#
# **Exercise 6 (think, hard): can a spurious mode raise the likelihood?** The sharp CD-1 model puts mass far
# from the data. Can that ever *increase* the test log-likelihood? Use section 4's numbers.
#
# **Exercise 7 (extend, easy): same schedule for both sharp models** In section 4 CD-1 keeps a constant rate
# and PCD decays it. Give both the same schedule (one argument of `train_on_budget`): does the gap between their
# exact-sample 'far' fractions survive?
#
# **Exercise 8 (think, medium): why does the start sit on the negatives?**
# The pre-trained start of section 4 saw digits and negatives equally often, yet puts nearly all its mass
# on the negatives. Predict, then run `--exercise 8` (it runs section 4, then prints F(digit) - F(negative)
# per start, the inverted mass after the first pre-training epoch, and the mass of the same pre-training
# with PCD-1). When is the split decided, and why does CD-1 never revisit it?

# %%
if run.stub(3):
    gen = run.generator("exercise-3")
    small = bars_and_stripes(3)
    toy = RBM(9, 8, 0.5, generator=gen, device=device)
    states = all_binary_states(9).to(device)  # (512, 9)
    # TODO: T = p(h | states) p(states' | h) summed over h (enumerate the 2^8 hidden states too),
    # then the data distribution (uniform over `small`) times T^k gives p_k(v) for every k.
    print("Exercise 3 stub: build T (512 x 512) from", tuple(states.shape), "states and", len(small), "patterns")

if run.stub(8):
    # F(digit) - F(its negative) per start (p(negative) / p(digit) = e^(that)); the inverted mass after the first
    # pre-training epoch; the same pre-training with PCD-1, whose chains cross between a digit and its negative
    gaps = [float((s.free_energy(x_train) - s.free_energy(1 - x_train)).mean()) for s in starts]
    pcd_start = inverted_start(0, persistent=True)
    print(f"Exercise 8 stub: F(digit) - F(negative) per start {', '.join(f'{g:.1f}' for g in gaps)} nats; inverted "
          f"mass after pre-training epoch 1: {', '.join(f'{m:.3f}' for m in first_epoch_mass[:len(starts)])}; "
          f"pre-trained with PCD-1: {inverted_mass(pcd_start):.3f} (CD-1: {inverted_mass(starts[0]):.3f})")

run.finish()
