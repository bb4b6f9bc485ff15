"""Lesson 02 - Hopfield networks: classical energy-based associative memory.

A Hopfield network stores patterns as the minima of a quadratic energy E(x) = -1/2 x^T W x - b^T x
over +-1 units and recalls a memory by flipping units, one at a time, downhill in energy. We store
digits, measure capacity (the famous 0.138 N), meet spurious minima, heat the network up (the bridge to
Boltzmann machines) and end with the modern Hopfield network, whose one-step update is attention.

You will learn
- why asynchronous updates can only lower E(x), and why synchronous ones can get stuck in 2-cycles;
- how the Hebbian, Storkey and pseudo-inverse rules store patterns, and how to measure capacity
  (mean overlap after recall versus exact fixed points, and why they disagree);
- that reversed patterns and mixtures of three memories are minima too;
- how Glauber updates at temperature T sample exp(-E/T) and when memories melt (T = 1);
- why the log-sum-exp energy of a modern Hopfield network stores far more than 0.138 N patterns,
  also correlated ones, and what its inverse temperature beta does.

Prerequisites: lesson 01 (energies, Boltzmann distributions). Linear algebra; no training loops.

How to run
    python 02_hopfield_networks.py              # full run (measured runtimes: docs/results.md)
    python 02_hopfield_networks.py --quick      # every section on tiny sizes, seconds
    python 02_hopfield_networks.py --section 3  # one section only (SECTIONS below)
    python 02_hopfield_networks.py --help       # every hyperparameter with advice
    python 02_hopfield_networks.py --show       # also open the figure windows

Figures and metrics.json keys: FIGURES and METRICS below.
"""
LESSON = "02_hopfield_networks"  # outputs go to outputs/02_hopfield_networks/

FIGURES = {
    "fig01_energy_descent": "async energy along real recalls; sync energy in 2-cycles",
    "fig02_digit_recall": "digits recalled from noisy and occluded cues, with energy along recall",
    "fig03_capacity": "overlap after recall and fraction of fixed points versus load P/N",
    "fig04_spurious_states": "energies of patterns, reversed patterns, 3-mixtures and other attractors",
    "fig05_temperature": "overlap versus temperature (Glauber) against mean-field theory",
    "fig06_modern_capacity": "modern versus classical retrieval versus load, and the role of beta",
    "fig07_modern_digits": "retrieval of 200 correlated digits by the modern network",
}
METRICS = {
    "async_energy_increases": "energy increases seen over all checked async updates (must be 0)",
    "async_updates_checked": "how many single-unit updates the check covered",
    "sync_two_cycle_fraction": "fraction of synchronous runs from random states that end in a 2-cycle",
    "digit_recall_exact": "{rule: {cue: fraction of digits recalled exactly}}",
    "digit_recall_exact_over_seeds": "{rule_cue: mean, SE and values over --digit-seeds fresh cue sets and orders}",
    "alphas": "the loads P/N of the capacity sweep",
    "mean_overlap_by_alpha": "{rule: {alpha: mean overlap after recall started at the stored pattern}}",
    "noisy_overlap_by_alpha": "{rule: {alpha: same, from a cue with --capacity-cue-noise flipped bits}}",
    "stable_fraction_by_alpha": "{rule: {alpha: fraction of stored patterns that are exact fixed points}}",
    "alpha_c_hebbian": "load where the mean overlap from the stored pattern first drops below --overlap-threshold "
                       "(linear interpolation); theory 0.138 (N -> infinity)",
    "alpha_c_hebbian_se": "standard error of that estimate over the --n-trials independent sweeps",
    "alpha_c_storkey": "the same estimator for the Storkey rule",
    "alpha_c_storkey_se": "its standard error",
    "alpha_c_pseudo_inverse": "the same for the pseudo-inverse rule (null if never crossed on the grid)",
    "alpha_c_pseudo_inverse_noisy_cue": "the same crossing for recall from --capacity-cue-noise cues (its basins)",
    "alpha_half_stable_hebbian": "load where half of the stored patterns are exact fixed points (measured)",
    "spurious_energy_per_unit": "{state kind: mean E/N}",
    "spurious_energy_theory": "the expected values of E/N",
    "random_start_attractors": "{kind: fraction of random starts ending in a pattern, reversed, 3-mixture, other}",
    "glauber_overlap_by_T": "{P: {T: time-averaged |m|}}",
    "mean_field_overlap_by_T": "{T: m from m = tanh(m/T)}",
    "paramagnet_overlap_by_T": "{T: the finite-N <|m|> above T = 1 (the mean-field value below)}",
    "modern_retrieval_accuracy": "exact retrieval of random patterns by one modern update, at the largest load",
    "modern_retrieval_P_over_N": "that load P/N",
    "classical_retrieval_accuracy_same_load": "the classical Hebbian network at the same load",
    "modern_accuracy_by_beta_random": "exact retrieval of random patterns at the largest load, per beta",
    "modern_digit_accuracy_by_beta": "exact retrieval of stored digits from noisy cues, per beta",
    "digit_nearest_pattern_ceiling": "the beta -> infinity limit of that retrieval",
    "digit_classical_accuracy": "the Hebbian / pseudo-inverse networks on the same digits",
}
SECTIONS = {1: "energy descent and 2-cycles", 2: "storing digits", 3: "capacity", 4: "spurious states",
            5: "temperature (Glauber)", 6: "modern Hopfield networks"}
EXERCISES = {1: (3,), 2: (3,), 3: (3,), 4: (1,), 5: (4,), 6: (6,), 7: (6,)}  # exercise: the sections it needs


# %%
import math
from dataclasses import dataclass

from common.config import between, count, parse_flags, positive, probability

# loads P/N: 0.02-0.19 in steps of 0.01 (fine near alpha_c ~ 0.14), then 0.2-0.6 in steps of 0.05
ALPHA_GRID = tuple(round(0.02 + 0.01 * i, 2) for i in range(18)) + tuple(round(0.2 + 0.05 * i, 2) for i in range(9))


@dataclass
class Config:
    # -- section 1: energy descent on random patterns
    demo_units: int = count(100, minimum=8)  # N for the descent demo; larger: longer staircases, same 0 increases
    demo_patterns: int = count(14)  # P; 14/100 sits at the capacity limit (sync 2-cycles common); fewer: rarer
    demo_cue_noise: float = probability(0.3)  # fraction of bits flipped in the demo cues; more: fewer exact recalls
    random_starts: int = count(200)  # random initial states for the sync census and section 4; more: finer fractions
    max_sweeps: int = count(30)  # cap on async sweeps / sync steps; retrieval needs < 5, random starts ~20
    # -- section 2: digits
    digit_classes: tuple[int, ...] = between((0, 1, 2, 3, 4, 5), 0, 9)  # class prototypes stored; more: more crosstalk
    digit_noise: float = probability(0.1)  # fraction of the 64 pixels flipped in the noisy cues; more: harder recall
    occluded_rows: int = between(3, 1, 7)  # bottom rows of the 8x8 image blanked in the occluded cues; more: harder
    digit_seeds: int = count(10, minimum=3)  # fresh cue sets / update orders for the recall claims; more: smaller SE
    # -- section 3: capacity
    n_units: int = count(500, minimum=20)  # N for sections 3-5; 1000 makes the drop at alpha_c sharper, 4x slower
    n_trials: int = count(6)  # independent pattern sets per load; the SE of alpha_c shrinks like 1/sqrt(trials)
    alphas: tuple[float, ...] = positive(ALPHA_GRID)  # loads P/N to sweep; a coarser grid near 0.14 blurs alpha_c
    overlap_threshold: float = between(0.9, 0, 1)  # alpha_c: mean overlap drops below this; lower: later
    capacity_cue_noise: float = probability(0.1)  # bits flipped in the basin cue; more: basins look smaller
    stop_overlap: float = between(0.5, 0, 1)  # a rule's sweep stops once its mean overlap is below this; lower: slower
    # -- section 4: spurious states
    spurious_patterns: int = count(10, minimum=3)  # P for the census; 3-mixtures stop being minima above ~0.03 N
    # -- section 5: temperature
    temperatures: tuple[float, ...] = positive((0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 1.0, 1.1, 1.3))  # Glauber T grid
    glauber_patterns: tuple[int, ...] = count((1, 25))  # P values: 1 obeys m = tanh(m/T); more patterns melt earlier
    glauber_chains: int = count(4)  # chains per temperature, all started at pattern 1; more: smoother curves
    glauber_sweeps: int = count(60)  # sweeps per chain; near T = 1 relaxation slows (critical): fewer bias m there
    glauber_burn_in: int = count(20, minimum=0)  # sweeps dropped before averaging the overlap; too few bias m upwards
    # -- section 6: modern Hopfield networks
    modern_units: int = count(100, minimum=8)  # N for random-pattern retrieval; random overlaps shrink like 1/sqrt(N)
    modern_loads: tuple[float, ...] = positive((0.05, 0.1, 0.14, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0))  # P/N grid
    modern_cue_noise: float = probability(0.2)  # bits flipped in the cues of section 6; more: cues nearer to others
    beta: float = positive(1.0)  # inverse temperature of the modern update; smaller averages patterns (a blur)
    betas: tuple[float, ...] = positive((0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0))  # beta sweep
    digit_memories: int = count(200, minimum=10)  # digit images stored by the modern network; more: a higher load P/64


QUICK = {
    "demo_units": 40, "demo_patterns": 6, "random_starts": 30, "n_units": 120, "n_trials": 1,
    "alphas": (0.05, 0.1, 0.14, 0.18, 0.25, 0.4), "spurious_patterns": 4,
    "temperatures": (0.5, 1.3), "glauber_patterns": (1, 6), "digit_seeds": 3,
    "glauber_sweeps": 6, "glauber_burn_in": 2, "glauber_chains": 2, "modern_units": 40,
    "modern_loads": (0.14, 1.0, 5.0), "betas": (0.01, 0.1, 1.0), "digit_memories": 40,
}


def check(cfg):
    """Rules across fields and tuple elements."""
    if len(cfg.digit_classes) < 2 or len(set(cfg.digit_classes)) != len(cfg.digit_classes):
        raise ValueError("--digit-classes needs at least two different classes (0-9)")


cfg, flags = parse_flags(Config, LESSON, __doc__, quick=QUICK, check=check, exercises=EXERCISES, sections=SECTIONS)

# heavy imports only now, so that --help and a mistyped flag answer at once
import numpy as np
import torch

from common import plotting
from common.boltzmann import boltzmann_energy
from common.claims import SeedStats, over_seeds
from common.datasets import load_images
from common.hopfield import (
    STORAGE_RULES,
    async_recall,
    flip_bits,
    glauber_sweep,
    hebbian_weights,
    is_fixed_point,
    modern_energy,
    modern_update,
    overlaps,
    pseudo_inverse_weights,
    sync_recall,
)
from common.lesson import start_lesson

run = start_lesson(cfg, flags, figures=FIGURES, metrics=METRICS,
                   cpu_only="thousands of tiny sequential single-unit updates, where a GPU only adds launch latency")
# one thread by default (--threads): per-update hand-offs would dominate. Every section below rebinds `gen`
# to its own `run.generator("section")` stream, so changing one section's flags (a pattern count, a noise
# level) never changes another section's draws, and `--section N` draws what the full run draws.
DTYPE = torch.float64  # exact-enough arithmetic for the energy check; Hebbian weights are multiples of 1/N
n = cfg.n_units  # N of sections 3-5
checked = {"updates": 0, "increases": 0}  # running tally for async_energy_increases (sections 1 and 2)


def random_patterns(n_patterns: int, n_units: int, batch: tuple[int, ...] = (), dtype=DTYPE) -> torch.Tensor:
    """Unbiased random +-1 patterns, ``(*batch, P, N)``, from the current section's generator ``gen``."""
    return torch.randint(0, 2, (*batch, n_patterns, n_units), generator=gen).to(dtype) * 2 - 1


def count_energy_increases(energies: torch.Tensor, tolerance: float = 1e-9) -> tuple[int, int]:
    """(single-unit updates, those that raised E by more than round-off) in a (T+1, B) trace; adds to `checked`."""
    steps = energies.diff(dim=0)  # (T, B)
    checked["updates"] += steps.numel()
    checked["increases"] += int((steps > tolerance).sum())
    return steps.numel(), int((steps > tolerance).sum())


def label_rows(ax, names, row_height=9):
    """Row names to the left of an image grid of 8x8 pictures (one row per name)."""
    for k, name in enumerate(names):
        ax.text(-2, 4.5 + row_height * k, name, ha="right", va="center", fontsize=8)


# %% [markdown]
# ## 1. Energy, asynchronous descent and synchronous 2-cycles
#
# Units are spins $x_i \in \{-1, +1\}$. Patterns $\xi^1, \dots, \xi^P$ are stored with the Hebbian rule
#
# $$W_{ij} = \frac{1}{N} \sum_\mu \xi_i^\mu \xi_j^\mu \quad (i \ne j), \qquad W_{ii} = 0,$$
#
# and the energy is $E(x) = -\frac12 x^\top W x - b^\top x$ ($b = 0$ here). Updating ONE unit to the sign of
# its field $h_i = \sum_j W_{ij} x_j + b_i$ changes the energy by
#
# $$\Delta E = -(x_i' - x_i)\, h_i \le 0,$$
#
# because $x_i'$ has the sign of $h_i$ (with $W$ symmetric and $W_{ii} = 0$): every asynchronous run ends in
# a fixed point. Updating ALL units at once breaks the argument, and the state can flip back and forth
# forever in a 2-cycle. The few lines below are the whole algorithm; from here on we use
# `common.hopfield.async_recall`, which does the same for a batch of cues and many networks at once.

# %%


def energy_inline(W: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    # E(x) = -1/2 x^T W x      for a batch (B, N)
    return -0.5 * ((x @ W) * x).sum(1)


def async_sweep_inline(W: torch.Tensor, x: torch.Tensor, order) -> torch.Tensor:
    x = x.clone()
    for i in order:
        # x_i <- sign(h_i),  h_i = sum_j W_ij x_j  (a zero field keeps x_i)
        field = x @ W[i]  # (B,)
        x[:, i] = torch.where(field == 0, x[:, i], torch.sign(field))
    return x


if run.section(1):
    gen = run.generator("energy-descent")  # this section's own stream: other sections' flags leave it alone
    demo_patterns = random_patterns(cfg.demo_patterns, cfg.demo_units)  # (P, N)
    W_demo = hebbian_weights(demo_patterns)  # (N, N), the same as the formula above
    cues = flip_bits(demo_patterns.repeat(4, 1), cfg.demo_cue_noise, gen)  # 4 noisy cues per pattern, (4P, N)
    one_sweep = async_sweep_inline(W_demo, cues, range(cfg.demo_units))
    e_cue, e_sweep = energy_inline(W_demo, cues), energy_inline(W_demo, one_sweep)
    print(f"\nOne inline sweep (units in order 0..N-1): mean E/N {float(e_cue.mean()) / cfg.demo_units:+.3f} -> "
          f"{float(e_sweep.mean()) / cfg.demo_units:+.3f}; cues whose energy rose: "
          f"{int((e_sweep > e_cue + 1e-9).sum())}")

    recall = async_recall(W_demo, cues, generator=gen, max_sweeps=cfg.max_sweeps, track_energy=True)
    n_updates, n_up = count_energy_increases(recall.energies)
    final_overlap = overlaps(recall.states, demo_patterns)  # (4P, P)
    target = torch.arange(cfg.demo_patterns).repeat(4)  # (4P,) the pattern each cue came from
    retrieved = final_overlap[torch.arange(len(target)), target]  # (4P,)
    print(f"\nAsync recall, N={cfg.demo_units}, P={cfg.demo_patterns}, {len(cues)} cues with "
          f"{cfg.demo_cue_noise:.0%} flipped bits: {n_up} energy increases in {n_updates} single-unit updates "
          f"(a real one would be >= 2/N = {2 / cfg.demo_units:.3f})\n  sweeps to a fixed point: mean "
          f"{recall.steps.double().mean():.1f}, max {int(recall.steps.max())}; exact recall "
          f"{(retrieved == 1).double().mean():.1%}, mean overlap {retrieved.mean():.3f}")

    # A hand-made 2-unit example: W_12 = +1. Synchronous updates from (+1, -1) swap the two units forever.
    W_two = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=DTYPE)
    two = sync_recall(W_two, torch.tensor([[1.0, -1.0]], dtype=DTYPE), max_steps=4)
    two_async = async_recall(W_two, torch.tensor([[1.0, -1.0]], dtype=DTYPE), generator=gen)
    print(f"\nTwo units, W_12 = 1, start (+1, -1): synchronous: period {int(two.period[0])}, energies "
          f"{two.energies[:, 0].tolist()}; asynchronous: ends at {two_async.states[0].tolist()} with E = "
          f"{float(boltzmann_energy(W_two, None, two_async.states)[0]):+.0f}")

    starts = random_patterns(cfg.random_starts, cfg.demo_units)  # (B, N)
    sync = sync_recall(W_demo, starts, max_steps=cfg.max_sweeps)
    n_cycle = int((sync.period == 2).sum())
    n_fixed = int((sync.period == 1).sum())
    print(f"\nSynchronous updates from {cfg.random_starts} random states (same network): fixed points {n_fixed}, "
          f"2-cycles {n_cycle}, undecided after {cfg.max_sweeps} steps {cfg.random_starts - n_fixed - n_cycle}")
    run.metrics["sync_two_cycle_fraction"] = n_cycle / cfg.random_starts
    run.claim("sync_two_cycles_occur", "some synchronous runs end in a 2-cycle (fraction of random starts)",
              n_cycle / cfg.random_starts, ">", 0.0)
    run.claim("sync_only_fixed_or_two_cycle", f"synchronous runs end in fixed points or 2-cycles only (undecided "
              f"after {cfg.max_sweeps} steps)", cfg.random_starts - n_fixed - n_cycle, "within", 0, 0)

    fig, axes = plotting.figure(2, title=f"Energy along recall (Hebbian, N={cfg.demo_units}, P={cfg.demo_patterns})")
    shown = min(12, recall.energies.shape[1])
    steps_axis = np.arange(recall.energies.shape[0]) / cfg.demo_units
    for j in range(shown):
        axes[0].plot(steps_axis, recall.energies[:, j] / cfg.demo_units, lw=0.9)
    axes[0].set(xlabel="sweeps (one tick = N single-unit updates)", ylabel="E(x) / N",
                title=f"asynchronous: {n_up} increases in {n_updates} updates")
    cycling = torch.nonzero(sync.period == 2).flatten()
    ends = sync.steps[cycling]
    swing = (sync.energies[ends, cycling] - sync.energies[ends - 1, cycling]).abs()  # E(x_a) - E(x_b) on the cycle
    cycling = cycling[swing.argsort(descending=True)][:4].tolist()  # show the cycles whose energy alternates most
    fixed = torch.nonzero(sync.period == 1).flatten()[:2].tolist()
    for j in cycling + fixed:
        axes[1].plot(sync.energies[: int(sync.steps[j]) + 3, j] / cfg.demo_units, "-o" if j in cycling else "--s",
                     ms=3, lw=0.9, color=None if j in cycling else "gray",
                     label=f"start {j}: " + ("2-cycle" if j in cycling else "fixed point"))
    axes[1].set(xlabel="synchronous step", ylabel="E(x) / N",
                title=f"synchronous: {n_cycle}/{cfg.random_starts} random starts end in a 2-cycle")
    axes[1].legend()
    run.savefig(fig, "fig01_energy_descent", key=True)

# %% [markdown]
# **What to notice.**
# - Every asynchronous curve is a staircase that only goes down (flat steps: units that did not flip);
#   the count of increases is exactly 0, checked on every single update.
# - Some synchronous runs end in a 2-cycle: two states swap forever and $E$ alternates between their
#   values. With symmetric $W$ the only limits are fixed points and 2-cycles (Goles 1985; claims).

# %% [markdown]
# ## 2. Storing and recalling pictures
#
# Binarised 8x8 digits give $N = 64$ units. We store one prototype per class (the pixel-wise majority
# of the class) and recall them from cues with a fraction of pixels flipped, or with the bottom rows
# blanked. Digits are strongly correlated (overlap $m = \xi^\mu \cdot \xi^\nu / N \approx 0.5$ instead of
# $\approx 1/\sqrt{N} = 0.125$), so the Hebbian crosstalk $\sum_{\nu \ne \mu} \xi^\nu m_{\mu\nu}$ swamps the
# signal. The pseudo-inverse rule $W = X^+ X$ projects onto the span of the patterns and makes every
# linearly independent pattern an exact fixed point, correlated or not.

# %%
if run.section(2) or run.section(6):  # the digits of sections 2 and 6
    digits = load_images("digits")  # 8x8, thresholded at 0.5
    spins = digits.x_train.to(DTYPE) * 2 - 1  # (n_images, 64), {0,1} -> {-1,+1}


def digit_recall_rates(seed: int) -> dict:
    """Exact recall of the prototypes from fresh noisy and occluded cues, in a fresh random update order."""
    gen_seed = torch.Generator().manual_seed(seed)
    rates = {}
    for rule in ("hebbian", "pseudo_inverse"):
        W = STORAGE_RULES[rule](prototypes)
        for cue_name, cue in (("noisy", flip_bits(prototypes, cfg.digit_noise, gen_seed)), ("occluded", occluded_cue)):
            states = async_recall(W, cue, generator=gen_seed, max_sweeps=cfg.max_sweeps).states
            rates[f"{rule}_{cue_name}"] = float((states == prototypes).all(1).double().mean())
    return rates


if run.section(2):
    gen = run.generator("digits")  # this section's own stream: other sections' flags leave it alone
    prototypes = torch.stack([torch.sign(spins[digits.y_train == k].mean(0) + 1e-9)
                              for k in cfg.digit_classes])  # (P, 64)
    m_proto = overlaps(prototypes, prototypes)
    off_diagonal = m_proto[~torch.eye(len(prototypes), dtype=torch.bool)]
    print(f"\nDigit prototypes {cfg.digit_classes}: pairwise overlaps mean {off_diagonal.mean():.2f}, "
          f"max {off_diagonal.max():.2f} (random patterns: ~{1 / math.sqrt(64):.2f})")

    noisy_cue = flip_bits(prototypes, cfg.digit_noise, gen)  # (P, 64)
    occluded_cue = prototypes.clone().reshape(-1, 8, 8)
    occluded_cue[:, 8 - cfg.occluded_rows :, :] = -1.0  # blank (background) rows
    occluded_cue = occluded_cue.reshape(-1, 64)  # (P, 64)
    digit_results, digit_exact = {}, {}
    print(f"{'rule':<16}{'cue':<10}{'fixed points':>14}{'exact recall':>14}{'mean overlap':>14}{'E increases':>13}")
    for rule in ("hebbian", "pseudo_inverse"):
        W = STORAGE_RULES[rule](prototypes)
        digit_exact[rule] = {}
        for cue_name, cue in (("noisy", noisy_cue), ("occluded", occluded_cue)):
            rec = async_recall(W, cue, generator=gen, max_sweeps=cfg.max_sweeps, track_energy=True)
            n_up = count_energy_increases(rec.energies)[1]
            exact = (rec.states == prototypes).all(1).double().mean().item()
            m = (rec.states * prototypes).mean(1)
            digit_results[rule, cue_name] = rec
            digit_exact[rule][cue_name] = exact
            n_fixed = int(is_fixed_point(W, prototypes).sum())
            print(f"{rule:<16}{cue_name:<10}{n_fixed:>9d}/{len(prototypes):<4d}{exact:>14.0%}{m.mean():>14.3f}"
                  f"{n_up:>13d}")
    run.metrics["digit_recall_exact"] = digit_exact
    pinv_fixed = int(is_fixed_point(STORAGE_RULES["pseudo_inverse"](prototypes), prototypes).sum())
    run.claim("pinv_prototypes_fixed", "pseudo-inverse: every correlated prototype is a fixed point (count)",
              pinv_fixed, "within", len(prototypes), 0)

    # one set of 6 cues says little: repeat with fresh cues and update orders, seeds run.seed + i
    recall_seeds = over_seeds(digit_recall_rates, range(run.seed, run.seed + cfg.digit_seeds))
    print(f"  exact recall over {cfg.digit_seeds} seeds of cues and update orders (mean +- SE): "
          + ", ".join(f"{k} {v}" for k, v in recall_seeds.items()))
    run.metrics["digit_recall_exact_over_seeds"] = {k: v.to_json() for k, v in recall_seeds.items()}
    for cue_name in ("noisy", "occluded"):
        run.claim(f"pinv_beats_hebbian_{cue_name}", f"{cue_name} digit cues: pseudo-inverse recalls more than "
                  f"Hebbian ({cfg.digit_seeds} seeds)", recall_seeds[f"pseudo_inverse_{cue_name}"], ">",
                  recall_seeds[f"hebbian_{cue_name}"], reference_label="(Hebbian)")
    # E(end of recall) - E(stored digit) under the Hebbian weights: below 0 means the blend is the deeper valley
    w_hebbian = STORAGE_RULES["hebbian"](prototypes)
    blend_gap = max(float((boltzmann_energy(w_hebbian, None, digit_results["hebbian", cue_name].states)
                           - boltzmann_energy(w_hebbian, None, prototypes)).max())
                    for cue_name in ("noisy", "occluded"))
    run.claim("hebbian_blend_deeper", "Hebbian recall ends BELOW the stored digits' energy (largest E_end - E_digit)",
              blend_gap, "<", 0.0)

    fig = plotting.figure(1)[0]
    fig.clf()
    fig.set_size_inches(10, 5.4)
    grid = fig.add_gridspec(2, 2, width_ratios=[1.25, 1])
    rows = [("stored", prototypes)]
    for cue_name, cue in (("noisy", noisy_cue), ("occluded", occluded_cue)):
        rows += [(f"{cue_name} cue", cue), ("Hebbian recall", digit_results["hebbian", cue_name].states),
                 ("pseudo-inverse recall", digit_results["pseudo_inverse", cue_name].states)]
    ax = fig.add_subplot(grid[:, 0])
    plotting.image_grid(ax, (torch.cat([r[1] for r in rows]) + 1) / 2, shape=(8, 8), nrow=len(prototypes))
    label_rows(ax, [name for name, _ in rows])
    ax.set_title(f"{len(prototypes)} digit prototypes; cues: {cfg.digit_noise:.0%} flipped / "
                 f"{cfg.occluded_rows} rows blanked", fontsize=9)
    for r, cue_name in enumerate(("noisy", "occluded")):
        ax = fig.add_subplot(grid[r, 1])
        for rule, style in (("hebbian", ":"), ("pseudo_inverse", "-")):
            W = STORAGE_RULES[rule](prototypes)
            # E(x) - E(stored digit), both under the same weights: 0 means "at the memory's energy"
            E = digit_results[rule, cue_name].energies - boltzmann_energy(W, None, prototypes)  # (steps + 1, P)
            for j in range(E.shape[1]):
                ax.plot(np.arange(E.shape[0]) / 64, E[:, j], style, lw=1, color=f"C{j}",
                        label=("Hebbian" if rule == "hebbian" else "pseudo-inverse") if j == 0 else None)
        ax.axhline(0, color="k", lw=0.6)
        ax.set_title(f"energy along recall, {cue_name} cues (one colour per digit)", fontsize=11)
        ax.set(xlabel="sweeps", ylabel="E(x) - E(stored digit)")
        ax.legend(fontsize=10)
    run.savefig(fig, "fig02_digit_recall")

# %% [markdown]
# **What to notice.**
# - Hebbian recall of correlated digits converges to a blend, the "average digit", and its energy
#   curves end BELOW 0 (a claim): the blend is a deeper valley than the digits themselves.
# - With the pseudo-inverse every prototype is a fixed point and the cues are recalled better than
#   with Hebbian over 10 fresh sets of cues and update orders (claims); its energy curves fall to the
#   stored picture's energy, 0 here. A blanked bottom is corrected too: the top rows match one digit.

# %% [markdown]
# ## 3. Capacity: how many random patterns fit in N units?
#
# For $P$ random patterns (load $\alpha = P/N$) the field on a unit of a stored pattern is a signal of
# about 1 plus a Gaussian crosstalk of variance $\approx \alpha$, so each bit is unstable with probability
#
# $$p = \Phi\!\left(-\sqrt{(N-1)/(P-1)}\right) \approx \Phi(-1/\sqrt{\alpha}),$$
#
# and a pattern is an EXACT fixed point with probability $\approx (1 - p)^N$, which vanishes already at
# $P \approx N/(2 \ln N)$. A stable state NEAR the pattern ($m \approx 0.97$) survives up to
# $\alpha_c \approx 0.138$ (Amit, Gutfreund & Sompolinsky, AGS 1985). We call $\alpha_c$ the first load where
# the mean overlap after recall from the stored patterns falls below `--overlap-threshold` (0.9),
# interpolated, with a standard error over `--n-trials` sweeps; recall from 10%-noisy cues shows the
# basins. Derivations: docs/derivations/hopfield_capacity_and_temperature.md. Three rules: Hebbian;
# Storkey (1997), which subtracts the local fields of the patterns already stored; the pseudo-inverse.

# %%
AGS_ALPHA_C = 0.138  # Amit, Gutfreund & Sompolinsky (1985), N -> infinity
RULE_NAMES = {"hebbian": "Hebbian", "storkey": "Storkey", "pseudo_inverse": "pseudo-inverse"}


def crossing(alphas, values, threshold):
    """First load where ``values`` drop below ``threshold``, linearly interpolated; None if never."""
    for j in range(1, len(alphas)):
        if values[j - 1] >= threshold > values[j]:
            a0, a1, v0, v1 = alphas[j - 1], alphas[j], values[j - 1], values[j]
            return a0 + (v0 - threshold) * (a1 - a0) / (v0 - v1)
    return None


def capacity_point(rule: str, alpha: float) -> dict:
    """Store P = alpha N random patterns in n_trials networks; recall from the patterns and from noisy cues."""
    n_patterns = max(2, round(alpha * n))
    X = random_patterns(n_patterns, n, batch=(cfg.n_trials,), dtype=torch.float32)  # (K, P, N)
    W = torch.stack([STORAGE_RULES[rule](x) for x in X])  # (K, N, N)
    stable = torch.stack([is_fixed_point(w, x) for w, x in zip(W, X)])  # (K, P)
    # fraction of unstable bits: xi_i h_i < 0 (the one-step error rate)
    bit_errors = ((X * torch.bmm(X, W)) < 0).float().mean()
    clean = async_recall(W, X, generator=gen, max_sweeps=cfg.max_sweeps)
    cue = flip_bits(X.reshape(-1, n), cfg.capacity_cue_noise, gen).reshape(X.shape)
    noisy = async_recall(W, cue, generator=gen, max_sweeps=cfg.max_sweeps)
    return {
        "P": n_patterns,
        "overlap": (clean.states * X).mean(2),  # (K, P) final overlap with the pattern it started at
        "noisy_overlap": (noisy.states * X).mean(2),
        "stable": stable.float(),
        "bit_errors": float(bit_errors),
        "unconverged": float((~clean.converged).float().mean() + (~noisy.converged).float().mean()) / 2,
    }


def curve(points: dict, field: str, trial=None) -> list[float]:
    """{alpha: point} -> the mean of ``field`` at each load (over all trials, or over one trial's patterns)."""
    return [float((p[field] if trial is None else p[field][trial]).mean()) for p in points.values()]


def fmt(value, se=None):
    if value is None:
        return f"not reached below alpha = {max(cfg.alphas):.2f}"
    return f"{value:.3f}" + (f" +- {se:.3f}" if se is not None else "")


if run.section(3):
    from scipy.stats import norm  # only this section needs it

    gen = run.generator("capacity")  # this section's own stream: other sections' flags leave it alone
    alphas = sorted(cfg.alphas)
    capacity = {}
    print(f"\nCapacity sweep: N={n}, {cfg.n_trials} trials per load, recall from the stored pattern and from "
          f"{cfg.capacity_cue_noise:.0%}-noisy cues")
    for rule in ("hebbian", "storkey", "pseudo_inverse"):
        print(f"\n  {rule}\n  {'P/N':>6}{'P':>5}{'m(pattern)':>12}{'m(noisy)':>10}{'fixed pts':>11}"
              + (f"{'theory':>8}{'bit err':>9}{'theory':>8}" if rule == "hebbian" else "") + f"{'unconv.':>9}")
        capacity[rule] = {}
        for alpha in alphas:
            point = capacity_point(rule, alpha)
            capacity[rule][alpha] = point
            line = (f"  {alpha:6.2f}{point['P']:5d}{point['overlap'].mean():12.3f}"
                    f"{point['noisy_overlap'].mean():10.3f}{point['stable'].mean():11.3f}")
            if rule == "hebbian":
                # p = Phi(-sqrt((N-1)/(P-1))), fraction of exact fixed points ~ (1 - p)^N
                p_bit = norm.cdf(-math.sqrt((n - 1) / (point["P"] - 1)))
                line += f"{(1 - p_bit) ** n:8.3f}{point['bit_errors']:9.4f}{p_bit:8.4f}"
            print(line + f"{point['unconverged']:9.1%}", flush=True)
            if point["overlap"].mean() < cfg.stop_overlap and point["noisy_overlap"].mean() < cfg.stop_overlap:
                break  # this rule has clearly failed; larger loads add cost, not information

    # alpha_c per rule (pooled curve) and its spread over the independent trials
    alpha_c, alpha_c_se, alpha_c_trials = {}, {}, {}
    for rule, points in capacity.items():
        alpha_c[rule] = crossing(list(points), curve(points, "overlap"), cfg.overlap_threshold)
        per_trial = [crossing(list(points), curve(points, "overlap", k), cfg.overlap_threshold)
                     for k in range(cfg.n_trials)]
        alpha_c_trials[rule] = per_trial = [v for v in per_trial if v is not None]
        alpha_c_se[rule] = float(np.std(per_trial, ddof=1) / math.sqrt(len(per_trial))) if len(per_trial) > 1 else None
    hebb = capacity["hebbian"]
    alpha_half = crossing(list(hebb), curve(hebb, "stable"), 0.5)
    p_values = np.arange(2, int(0.3 * n))
    theory_stable = (1 - norm.cdf(-np.sqrt((n - 1) / (p_values - 1)))) ** n
    alpha_half_theory = float(p_values[np.argmax(theory_stable < 0.5)] / n)

    print(f"\nalpha_c (mean overlap from the stored pattern < {cfg.overlap_threshold}, interpolated), N = {n}:\n"
          f"  Hebbian {fmt(alpha_c['hebbian'], alpha_c_se['hebbian'])} (AGS, N -> inf: 0.138); Storkey "
          f"{fmt(alpha_c['storkey'], alpha_c_se['storkey'])}; pseudo-inverse {fmt(alpha_c['pseudo_inverse'])}\n"
          f"Half of the Hebbian patterns are exact fixed points at {fmt(alpha_half)} (measured), "
          f"{alpha_half_theory:.3f} ((1-p)^N curve), {1 / (2 * math.log(n)):.3f} (leading order 1/(2 ln N))")

    run.metrics["alphas"] = alphas
    for key, field in (("mean_overlap_by_alpha", "overlap"), ("noisy_overlap_by_alpha", "noisy_overlap"),
                       ("stable_fraction_by_alpha", "stable")):
        run.metrics[key] = {r: dict(zip((f"{a:g}" for a in pts), curve(pts, field))) for r, pts in capacity.items()}
    pinv = capacity["pseudo_inverse"]
    pinv_noisy = crossing(list(pinv), curve(pinv, "noisy_overlap"), cfg.overlap_threshold)
    run.metrics.update({f"alpha_c_{rule}": alpha_c[rule] for rule in capacity})
    run.metrics.update({"alpha_c_hebbian_se": alpha_c_se["hebbian"], "alpha_c_storkey_se": alpha_c_se["storkey"],
                        "alpha_half_stable_hebbian": alpha_half, "alpha_c_pseudo_inverse_noisy_cue": pinv_noisy})
    if alpha_c["hebbian"] is not None:
        run.claim("alpha_c_near_ags", f"Hebbian alpha_c at N = {n} is near 0.138 (within 0.02)", alpha_c["hebbian"],
                  "within", AGS_ALPHA_C, 0.02, reference_label="(AGS, N -> inf)")
    if len(alpha_c_trials["hebbian"]) > 1:
        hebbian_trials = SeedStats(tuple(alpha_c_trials["hebbian"]))
        run.claim("alpha_c_above_ags_finite_n", f"at N = {n} the Hebbian alpha_c sits above 0.138 "
                  f"({cfg.n_trials} trials)", hebbian_trials, ">", AGS_ALPHA_C, reference_label="(AGS, N -> inf)")
        if len(alpha_c_trials["storkey"]) > 1:
            storkey_trials = SeedStats(tuple(alpha_c_trials["storkey"]))
            run.claim("storkey_above_hebbian", "Storkey stores more than Hebbian: alpha_c (per trial)", storkey_trials,
                      ">", hebbian_trials, reference_label="(Hebbian)")
            run.claim("storkey_about_triple", "Storkey roughly triples the Hebbian alpha_c (ratio within 20 % of 3)",
                      storkey_trials.mean / hebbian_trials.mean, "within_rel", 3.0, 0.2)
    run.claim("pinv_patterns_fixed", f"pseudo-inverse: every pattern is a fixed point up to alpha = {max(alphas):g}",
              min(curve(pinv, "stable")), "within", 1.0, 0)
    if pinv_noisy is not None:
        run.claim("pinv_basins_shrink", f"pseudo-inverse from {cfg.capacity_cue_noise:.0%}-noisy cues fails near "
                  "alpha 0.5", pinv_noisy, "within", 0.5, 0.05)
    if alpha_half is not None and alpha_c["hebbian"] is not None:
        run.claim("fixed_points_vanish_first", "Hebbian: half the patterns stop being fixed points before alpha_c",
                  alpha_half, "<", alpha_c["hebbian"], reference_label="(alpha_c)")
        run.claim("stable_fraction_theory", "the fixed-point fraction follows (1-p)^N: load of 1/2, within 0.01",
                  alpha_half, "within", alpha_half_theory, 0.01, reference_label="(theory)")
        m_at_half = float(np.interp(alpha_half, list(hebb), curve(hebb, "overlap")))
        run.claim("recall_repairs_unstable_bits", "where half the patterns are no fixed points, recall ends at "
                  "m > 0.98", m_at_half, ">", 0.98)

    fig, axes = plotting.figure(3, title=f"Capacity of N={n} units ({cfg.n_trials} trials per load)")
    for c, (rule, points) in enumerate(capacity.items()):
        axes[0].plot(list(points), curve(points, "overlap"), "-o", ms=3, color=f"C{c}", label=RULE_NAMES[rule])
        axes[0].plot(list(points), curve(points, "noisy_overlap"), "--", color=f"C{c}")
        axes[1].plot(list(points), curve(points, "stable"), "-o", ms=3, color=f"C{c}", label=RULE_NAMES[rule])
        if alpha_c[rule] is not None:
            axes[0].axvline(alpha_c[rule], color=f"C{c}", lw=0.8, alpha=0.6)
    axes[0].axvline(0.138, color="k", lw=1.2, ls=":", label=r"AGS $\alpha_c$ = 0.138")
    axes[0].axhline(cfg.overlap_threshold, color="gray", lw=0.8)
    axes[0].plot([], [], "k-", label="solid: recall from the pattern")
    axes[0].plot([], [], "k--", label=f"dashed: from a {cfg.capacity_cue_noise:.0%}-noisy cue")
    axes[0].set(xlabel=r"load $\alpha = P/N$", ylabel="mean overlap after recall", ylim=(0, 1.03),
                title=r"retrieval (vertical lines: estimated $\alpha_c$)")
    axes[0].legend(fontsize=10, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=2)  # below the axes
    axes[1].plot(p_values / n, theory_stable, "k:", label=r"Hebbian theory $(1-p)^N$")
    axes[1].axvline(1 / (2 * math.log(n)), color="gray", lw=0.8, ls="--", label=r"$1/(2 \ln N)$")
    axes[1].set(xlabel=r"load $\alpha = P/N$", ylabel="fraction that are fixed points",
                title="exact fixed points")
    axes[1].legend(fontsize=10, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=2)
    near = [a for a in hebb if 0.1 <= a <= 0.22][::2] or list(hebb)
    bins = np.linspace(-0.2, 1.0, 49)
    for c, a in enumerate(near):
        axes[2].hist(hebb[a]["overlap"].flatten().numpy(), bins=bins, histtype="step", lw=1.2, color=f"C{c}",
                     label=rf"$\alpha$ = {a:.2f}", density=True)
    axes[2].set(yscale="log", xlabel="final overlap m of one pattern", ylabel="density (log)",
                title="Hebbian: each pattern is kept or lost")
    axes[2].legend(fontsize=10, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=3)
    run.savefig(fig, "fig03_capacity", key=True)

# %% [markdown]
# **What to notice.**
# - Exact fixed points disappear before retrieval fails (a claim), as the $(1-p)^N$ curve predicts (a
#   claim): one bad bit in $N$ is enough. The dynamics flips those few bits and stops less than one
#   percent away (a claim: $m > 0.98$ where half the patterns are no fixed points).
# - The histogram is bimodal: each pattern is either retrieved ($m$ near 0.97-1) or lost ($m$ ~ 0.3-0.5);
#   the 0.9 threshold on the mean marks the load where about one pattern in ten is lost.
# - At $N = 500$ the estimate is within 0.02 of 0.138 but above it (claims): at finite $N$ the drop is
#   smoothed and some patterns survive past $\alpha_c$ (exercise 1 varies $N$).
# - Storkey roughly triples the Hebbian capacity (claims) with a rule that is still local; the
#   pseudo-inverse keeps every pattern a fixed point (a claim), but its basins (dashed) shrink: from a
#   10%-noisy cue it fails near $\alpha = 0.5$ (a claim).

# %% [markdown]
# ## 4. Spurious states: minima nobody stored
#
# $E(x)$ is even when $b = 0$: $E(-x) = E(x)$, so every reversed pattern $-\xi^\mu$ is a minimum too. So is
# the majority vote of three patterns, $x = \mathrm{sign}(\xi^1 + \xi^2 + \xi^3)$, whose overlap with each of
# the three is 1/2. With $m_\mu$ the overlaps, the Hebbian energy is $E/N = -\frac12 \sum_\mu m_\mu^2 + P/(2N)$, so
#
# $$\text{pattern: } \frac{E}{N} = -\frac12 + \frac{1}{2N}, \qquad
#   \text{3-mixture: } \frac{E}{N} = -\frac38 + \frac{3}{8N}$$
#
# (expected values for random patterns; derivation: docs/derivations/hopfield_capacity_and_temperature.md).
# The mixture is a higher, shallower valley: stable at $T = 0$ for $\alpha$ below ~0.03, and the first to
# melt at $T > 0$. Starting from random states shows which valleys the dynamics actually finds.

# %%
ATTRACTOR_KINDS = ("pattern", "reversed pattern", "3-mixture", "other")


def classify_attractors(m_final: torch.Tensor) -> np.ndarray:
    """The kind of each end state from its overlaps ``(B, P)`` with the stored patterns."""
    top = m_final.abs().sort(dim=1, descending=True).values
    kind = np.full(len(m_final), "other", dtype=object)
    kind[(top[:, 0] > 0.9) & (m_final.max(1).values > 0.9)] = "pattern"
    kind[(top[:, 0] > 0.9) & (m_final.min(1).values < -0.9)] = "reversed pattern"
    three = (top[:, :3] > 0.35).all(1) & (top[:, :3] < 0.65).all(1) & (top[:, 3] < 0.25)
    kind[three.numpy()] = "3-mixture"
    return kind


if run.section(4):
    gen = run.generator("spurious")  # this section's own stream: other sections' flags leave it alone
    n_sp = cfg.spurious_patterns
    X_sp = random_patterns(n_sp, n)  # (P, N)
    W_sp = hebbian_weights(X_sp)
    triples = torch.tensor([[a, (a + 1) % n_sp, (a + 2) % n_sp] for a in range(n_sp)])  # (n_sp, 3)
    mixtures = torch.sign(X_sp[triples].sum(1))  # (n_sp, N); a sum of three +-1 values is never 0
    candidates = {"pattern": X_sp, "reversed pattern": -X_sp, "3-mixture": mixtures}
    theory = {"pattern": -0.5 + 1 / (2 * n), "reversed pattern": -0.5 + 1 / (2 * n), "3-mixture": -3 / 8 + 3 / (8 * n)}
    print(f"\nSpurious states, Hebbian N={n}, P={n_sp} (alpha = {n_sp / n:.3f}):\n"
          f"  {'state':<18}{'E/N before':>11}{'theory':>9}{'fixed pt':>10}{'E/N after recall':>18}"
          f"{'overlaps after':>22}")
    spurious_energy, spurious_se, fixed_fraction = {}, {}, {}
    for name, states in candidates.items():
        rec = async_recall(W_sp, states, generator=gen, max_sweeps=cfg.max_sweeps)
        e_before = boltzmann_energy(W_sp, None, states) / n  # (P,)
        e_after = boltzmann_energy(W_sp, None, rec.states) / n
        top3 = overlaps(rec.states, X_sp).abs().topk(3, dim=1).values.mean(0)  # mean of the 3 largest |m|
        spurious_energy[name] = float(e_before.mean())
        spurious_se[name] = float(e_before.std() / math.sqrt(len(e_before)))
        fixed_fraction[name] = float(is_fixed_point(W_sp, states).double().mean())
        print(f"  {name:<18}{e_before.mean():11.4f}{theory[name]:9.4f}{fixed_fraction[name]:10.0%}"
              f"{e_after.mean():18.4f}   |m| top-3 {top3[0]:.2f} {top3[1]:.2f} {top3[2]:.2f}")

    # Which valleys do random starts fall into?
    rand_rec = async_recall(W_sp, random_patterns(cfg.random_starts, n), generator=gen, max_sweeps=cfg.max_sweeps)
    m_final = overlaps(rand_rec.states, X_sp)  # (B, P)
    kind = classify_attractors(m_final)
    e_rand = (boltzmann_energy(W_sp, None, rand_rec.states) / n).numpy()  # (B,)
    print(f"  attractors reached from {cfg.random_starts} random states:")
    for name in ATTRACTOR_KINDS:
        sel = kind == name
        mean_e = f"{e_rand[sel].mean():+.4f}" if sel.any() else "   --"
        print(f"    {name:<18}{sel.mean():7.1%}   mean E/N {mean_e}")
    run.metrics["spurious_energy_per_unit"] = spurious_energy
    run.metrics["spurious_energy_theory"] = theory
    run.claim("reversed_same_energy", "E(-x) = E(x): reversed patterns have exactly the patterns' energy (max diff)",
              float((boltzmann_energy(W_sp, None, -X_sp) - boltzmann_energy(W_sp, None, X_sp)).abs().max()),
              "<", 1e-12)
    for name, key in (("pattern", "pattern_energy_theory"), ("3-mixture", "mixture_energy_theory")):
        run.claim(key, f"{name}s sit at the expected E/N (within 3 SE over the {n_sp} states)",
                  spurious_energy[name], "within", theory[name], 3 * spurious_se[name], reference_label="(theory)")
    run.claim("mixtures_fixed_at_low_load", f"at alpha = {n_sp / n:.3f} every 3-mixture is a fixed point (fraction)",
              fixed_fraction["3-mixture"], "within", 1.0, 0)
    if (kind == "other").any() and (kind == "pattern").any():
        run.claim("other_attractors_higher", "random starts' 'other' attractors lie higher than the patterns "
                  "(mean E/N)", float(e_rand[kind == "other"].mean()), ">", float(e_rand[kind == "pattern"].mean()),
                  reference_label="(patterns)")
    run.metrics["random_start_attractors"] = {k: float((kind == k).mean()) for k in ATTRACTOR_KINDS}

    fig, axes = plotting.figure(2, title=f"Spurious minima (Hebbian, N={n}, P={n_sp})")
    bins = np.linspace(e_rand.min() - 0.01, max(e_rand.max(), -0.3) + 0.01, 50)
    kinds = [k for k in ATTRACTOR_KINDS if (kind == k).any()]
    axes[0].hist([e_rand[kind == k] for k in kinds], bins=bins, stacked=True, alpha=0.85,
                 color=[f"C{ATTRACTOR_KINDS.index(k)}" for k in kinds],
                 label=[f"{k} ({(kind == k).mean():.0%})" for k in kinds])
    for name, value in theory.items():
        if name != "reversed pattern":
            axes[0].axvline(value, color="k", ls=":", lw=1)
            axes[0].text(value, axes[0].get_ylim()[1] * 0.95, f" {name}\n theory", fontsize=10, va="top")
    axes[0].set(xlabel="E/N of the attractor reached", ylabel="random starts",
                title=f"where {cfg.random_starts} random starts end")
    axes[0].legend(fontsize=10, loc="upper right")
    example = torch.nonzero(torch.from_numpy(kind == "3-mixture")).flatten()
    j = int(example[0]) if len(example) else 0
    axes[1].bar(np.arange(1, n_sp + 1), m_final[j].numpy(), color="C2")
    axes[1].hlines([-0.5, 0.5], 0.5, n_sp + 0.5, color="k", ls=":", lw=1)
    axes[1].set(xlabel=r"stored pattern $\mu$", ylabel=r"overlap $m_\mu$",
                title=f"one attractor ({kind[j]}): overlaps with the patterns")
    run.savefig(fig, "fig04_spurious_states")

# %% [markdown]
# **What to notice.**
# - Reversed patterns have exactly the patterns' energy (a claim): the network cannot tell $\xi$ from $-\xi$.
# - 3-mixtures sit at $-3/8$ instead of $-1/2$ per unit and are all fixed points at this small load
#   (claims); their overlaps with the three parents are close to $\pm 1/2$ (printed).
# - Random starts land in all of these valleys, and in "other" states (mixtures of more patterns,
#   spin-glass states) that lie above the patterns (a claim): a memory is retrieved only from its basin.

# %% [markdown]
# ## 5. Temperature: Glauber dynamics, the bridge to Boltzmann machines
#
# Replace $x_i \leftarrow \mathrm{sign}(h_i)$ by a coin flip:
#
# $$p(x_i = +1 \mid \text{rest}) = \sigma(2 h_i / T).$$
#
# This heat-bath (Glauber) update leaves $p(x) = e^{-E(x)/T} / Z$ invariant, so the Hopfield network at
# $T > 0$ IS a Boltzmann machine with Hebbian weights (lesson 03 learns $W$ instead). With one pattern the
# overlap obeys $m = \tanh(m / T)$ as $N \to \infty$: retrieval survives up to $T = 1$; above it a finite
# network keeps $\langle |m| \rangle = \sqrt{2/\pi} \sqrt{T / (N (T - 1))}$. With $P$ patterns memories melt
# earlier, at $T_M(\alpha) \approx 1 - 1.95 \sqrt{\alpha}$ (AGS 1985; derivations in the same document). Each
# chain starts at pattern 1; we average $|m|$ after a burn-in. `glauber_sweep` is
# `common.boltzmann.gibbs_sweep(spins=True)` with one temperature per chain: all $T$ run as one batch.

# %%


def mean_field_overlap(T: float) -> float:
    """The largest root of m = tanh(m/T); 0 for T >= 1."""
    from scipy.optimize import brentq

    if T >= 1:
        return 0.0
    # m - tanh(m/T) < 0 just above 0 and > 0 at m = 1, so brentq brackets the non-zero root
    return brentq(lambda m: m - math.tanh(m / T), 1e-6, 1.0)


def paramagnet_overlap(T: float, n_units: int) -> float:
    """<|m|> = sqrt(2/pi) sqrt(T / (N (T - 1))) above T = 1 (Gaussian m); the mean-field value below."""
    if T <= 1:
        return mean_field_overlap(T)
    return math.sqrt(2 / math.pi) * math.sqrt(T / (n_units * (T - 1)))


def melting_temperature(n_patterns: int) -> float:
    # T_M(alpha) ~ 1 - 1.95 sqrt(alpha)   (AGS 1985, small alpha)
    return 1 - 1.95 * math.sqrt(n_patterns / n)


def glauber_overlap(n_patterns: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Time-averaged overlap per temperature ``(len(T),)`` and the traces ``(sweeps, chains)``."""
    X = random_patterns(n_patterns, n)
    W = hebbian_weights(X)
    temps = torch.tensor(cfg.temperatures, dtype=DTYPE).repeat_interleave(cfg.glauber_chains)  # (B,)
    state = X[:1].repeat(len(temps), 1)  # (B, N): every chain starts at pattern 1
    trace = []
    for _ in range(cfg.glauber_sweeps):
        state = glauber_sweep(W, state, temps, generator=gen)
        trace.append(overlaps(state, X[:1])[:, 0])  # (B,)
    trace = torch.stack(trace)  # (sweeps, B)
    m_chain = trace[cfg.glauber_burn_in :].abs().mean(0)  # (B,) time average of |m|
    return m_chain.reshape(len(cfg.temperatures), cfg.glauber_chains).mean(1), trace


if run.section(5):
    gen = run.generator("glauber")  # this section's own stream: other sections' flags leave it alone
    glauber = {P: glauber_overlap(P) for P in cfg.glauber_patterns}
    print(f"\nGlauber dynamics, N={n}, {cfg.glauber_chains} chains x {cfg.glauber_sweeps} sweeps "
          f"(burn-in {cfg.glauber_burn_in}), time-averaged overlap with the starting pattern:")
    print(f"  {'T':>5}{'m = tanh(m/T)':>15}{'finite-N <|m|>':>16}" + "".join(f"{f'P={P}':>10}" for P in glauber))
    for t, T in enumerate(cfg.temperatures):
        print(f"  {T:5.2f}{mean_field_overlap(T):15.3f}{paramagnet_overlap(T, n):16.3f}"
              + "".join(f"{float(glauber[P][0][t]):10.3f}" for P in glauber))
    print("  melting temperature 1 - 1.95 sqrt(alpha): "
          + ", ".join(f"P={P} (alpha={P / n:.3f}) {melting_temperature(P):.2f}" for P in cfg.glauber_patterns))
    run.metrics.update({"paramagnet_overlap_by_T": {f"{T:g}": paramagnet_overlap(T, n) for T in cfg.temperatures},
                        "mean_field_overlap_by_T": {f"{T:g}": mean_field_overlap(T) for T in cfg.temperatures},
                        "glauber_overlap_by_T": {f"P={P}": {f"{T:g}": float(m) for T, m in
                                                            zip(cfg.temperatures, glauber[P][0])} for P in glauber}})
    away = [t for t, T in enumerate(cfg.temperatures) if abs(T - 1) > 0.05]  # T = 1 is critical: N rounds it off
    if 1 in glauber and away:
        run.claim("glauber_follows_theory", "one pattern: Glauber <|m|> = theory (max |difference| over T != 1)",
                  max(abs(float(glauber[1][0][t]) - paramagnet_overlap(cfg.temperatures[t], n)) for t in away),
                  "<", 0.03)
    most = max(cfg.glauber_patterns)
    between_melts = [t for t, T in enumerate(cfg.temperatures) if melting_temperature(most) < T < 0.9]
    if 1 in glauber and most > 1 and between_melts:
        run.claim("crosstalk_melts_earlier", f"P = {most} melts earlier: between the melting T's, "
                  f"m(P={most}) / m(P=1)", max(float(glauber[most][0][t] / glauber[1][0][t]) for t in between_melts),
                  "<", 0.5)

    fig, axes = plotting.figure(2, title=f"Glauber dynamics at temperature T (Hebbian, N={n})")
    T_fine = np.linspace(0.05, max(cfg.temperatures) + 0.1, 200)
    axes[0].plot(T_fine, [mean_field_overlap(t) for t in T_fine], "k-", lw=1,
                 label=r"$m = \tanh(m/T)$ (one pattern)")
    T_para = T_fine[T_fine > 1.03]
    axes[0].plot(T_para, [paramagnet_overlap(t, n) for t in T_para], "k--", lw=1,
                 label=r"$T > 1$: finite-N $\langle |m| \rangle$")
    for c, P in enumerate(glauber):
        axes[0].plot(cfg.temperatures, glauber[P][0], "o", color=f"C{c}", label=f"simulation, P = {P}")
        if P > 1:
            axes[0].axvline(melting_temperature(P), color=f"C{c}", ls=":", lw=1,
                            label=rf"$T_M \approx 1 - 1.95\sqrt{{{P / n:.2f}}}$")
    axes[0].set(xlabel="temperature T", ylabel=r"time-averaged $|m|$", title="memories melt")
    plotting.legend_outside(axes[0], fontsize=10)
    first = cfg.glauber_patterns[0]
    picked = sorted({min(cfg.temperatures), max(cfg.temperatures)} | ({0.9} & set(cfg.temperatures)))
    for c, T in enumerate(picked):
        col = cfg.temperatures.index(T) * cfg.glauber_chains
        axes[1].plot(np.arange(1, cfg.glauber_sweeps + 1), glauber[first][1][:, col], color=f"C{c + 2}", lw=1,
                     label=f"T = {T:g}")
    axes[1].axvline(cfg.glauber_burn_in, color="gray", ls=":", lw=1, label="end of burn-in")
    axes[1].set(xlabel="sweep", ylabel="overlap m(t)", title=f"one chain per temperature, P = {first}")
    plotting.legend_outside(axes[1], fontsize=10)
    run.savefig(fig, "fig05_temperature")

# %% [markdown]
# **What to notice.**
# - With one pattern the simulation follows $m = \tanh(m/T)$ below $T = 1$ and the finite-$N$ value above
#   (a claim: within 0.03 away from $T = 1$). Near $T = 1$ the overlap fluctuates widely and relaxes
#   slowly (critical slowing down), and finite $N$ rounds the transition off.
# - With more patterns the crosstalk adds to the thermal noise and the memory melts earlier (a claim:
#   between the two melting temperatures the $P = 25$ overlap is below half the $P = 1$ overlap).

# %% [markdown]
# ## 6. Modern (dense) Hopfield networks
#
# Krotov & Hopfield (2016) replaced the quadratic energy, whose crosstalk grows linearly in $P$, by a
# sharply peaked function of the overlaps; Ramsauer et al. (2020) took it to the exponential:
#
# $$E(\xi) = -\frac{1}{\beta} \log \sum_\mu e^{\beta\, x_\mu \cdot \xi} + \frac12\, \xi \cdot \xi + \text{const}$$
#
# for a continuous state $\xi$, with the one-step update (a concave-convex step that never raises $E$)
#
# $$\xi \leftarrow X^\top \mathrm{softmax}(\beta X \xi).$$
#
# This is attention: query = state, keys = values = stored patterns, scale = $\beta$. Large $\beta$ picks the
# most similar pattern; small $\beta$ averages many. Capacity grows exponentially in $N$. We retrieve
# with one update and compare $\mathrm{sign}(\xi)$ to the pattern.

# %%


def modern_retrieval(X: torch.Tensor, cue: torch.Tensor, beta: float) -> torch.Tensor:
    """Exact-retrieval indicator per cue after ONE update xi <- X^T softmax(beta X xi); ``X`` (P, N)."""
    new = modern_update(X, cue, beta)  # (P, N)
    return (torch.sign(new) == X).all(1)


def exact_rate(states: torch.Tensor, targets: torch.Tensor) -> float:
    """Fraction of rows of ``states`` equal to their row of ``targets``."""
    return float((states == targets).all(1).double().mean())


if run.section(6):
    gen = run.generator("modern")  # this section's own stream: other sections' flags leave it alone
    X_check = random_patterns(7, 16)  # (7, 16): 7 keys = values
    q = random_patterns(3, 16)  # (3, 16): 3 queries
    sdpa = torch.nn.functional.scaled_dot_product_attention(q[None], X_check[None], X_check[None], scale=0.3)[0]
    attention_gap = float((modern_update(X_check, q, 0.3) - sdpa).abs().max())
    run.claim("modern_is_attention", "one modern update = scaled_dot_product_attention(q, K=X, V=X)", attention_gap,
              "<", 1e-12)

    N_m = cfg.modern_units
    rows = []
    for load in cfg.modern_loads:
        P = max(2, round(load * N_m))
        X = random_patterns(P, N_m)
        cue = flip_bits(X, cfg.modern_cue_noise, gen)
        classical = async_recall(hebbian_weights(X), cue, generator=gen, max_sweeps=cfg.max_sweeps)
        acc_modern = float(modern_retrieval(X, cue, cfg.beta).double().mean())
        rows.append((load, P, exact_rate(classical.states, X), acc_modern))
    print(f"Random patterns, N={N_m}, cues with {cfg.modern_cue_noise:.0%} flipped bits, beta={cfg.beta:g}:")
    print(f"  {'P/N':>6}{'P':>6}{'classical (Hebbian, async)':>28}{'modern (one step)':>20}")
    for load, P, a_c, a_m in rows:
        print(f"  {load:6.2f}{P:6d}{a_c:28.1%}{a_m:20.1%}")
    top_load, _, acc_classical_top, acc_modern_top = rows[-1]
    run.metrics.update({"modern_retrieval_accuracy": acc_modern_top, "modern_retrieval_P_over_N": top_load,
                        "classical_retrieval_accuracy_same_load": acc_classical_top})
    run.claim("modern_retrieves_at_top_load", f"one modern update retrieves random patterns at P/N = {top_load:g}",
              acc_modern_top, ">", 0.99)
    run.claim("classical_fails_at_top_load", f"the classical Hebbian network retrieves none at P/N = {top_load:g}",
              acc_classical_top, "<", 0.01)

    # beta sweep at the largest load
    X_big = random_patterns(max(2, round(top_load * N_m)), N_m)
    cue_big = flip_bits(X_big, cfg.modern_cue_noise, gen)
    acc_beta_random = [float(modern_retrieval(X_big, cue_big, b).double().mean()) for b in cfg.betas]

    # correlated patterns: individual digit images, many per class
    memories = torch.unique(spins[: cfg.digit_memories], dim=0)  # (P, 64): duplicates dropped (ambiguous)
    dig_cue = flip_bits(memories, cfg.digit_noise, gen)  # (P, 64)
    nearest = (dig_cue @ memories.T).argmax(1)  # (P,): what beta -> infinity would return
    ceiling = float((nearest == torch.arange(len(memories))).double().mean())
    acc_beta_digits = [float(modern_retrieval(memories, dig_cue, b).double().mean()) for b in cfg.betas]
    pinv_digits = async_recall(pseudo_inverse_weights(memories), dig_cue, generator=gen, max_sweeps=cfg.max_sweeps)
    hebb_digits = async_recall(hebbian_weights(memories), dig_cue, generator=gen, max_sweeps=cfg.max_sweeps)
    acc_pinv, acc_hebb = exact_rate(pinv_digits.states, memories), exact_rate(hebb_digits.states, memories)
    m_dig = overlaps(memories, memories)
    print(f"\n{len(memories)} distinct digit images (N=64, P/N={len(memories) / 64:.1f}; pairwise overlap mean "
          f"{m_dig[~torch.eye(len(memories), dtype=torch.bool)].mean():.2f}), {cfg.digit_noise:.0%} flipped pixels:\n"
          f"  classical Hebbian {acc_hebb:6.1%}   classical pseudo-inverse {acc_pinv:6.1%}   "
          f"nearest stored pattern (beta -> inf, exact ceiling) {ceiling:6.1%}")
    print(f"  {'beta':>7}{'random P/N=' + f'{top_load:g}':>18}{'digits':>10}")
    for b, a_r, a_d in zip(cfg.betas, acc_beta_random, acc_beta_digits):
        print(f"  {b:7.3f}{a_r:18.1%}{a_d:10.1%}")
    run.metrics.update({"modern_accuracy_by_beta_random": dict(zip((f"{b:g}" for b in cfg.betas), acc_beta_random)),
                        "modern_digit_accuracy_by_beta": dict(zip((f"{b:g}" for b in cfg.betas), acc_beta_digits)),
                        "digit_nearest_pattern_ceiling": ceiling,
                        "digit_classical_accuracy": {"hebbian": acc_hebb, "pseudo_inverse": acc_pinv}})
    run.claim("beta_reaches_ceiling", f"digits: at beta = {max(cfg.betas):g} retrieval reaches the nearest-pattern "
              "ceiling", acc_beta_digits[cfg.betas.index(max(cfg.betas))], "within", ceiling, 0.01,
              reference_label="(ceiling)")
    run.claim("digit_classical_fail", "no classical rule recalls its own digit among the stored images (best rule)",
              max(acc_hebb, acc_pinv), "<", 0.01)

    fig, axes = plotting.figure(2, title=f"Modern Hopfield retrieval, one update (N={N_m}, "
                                         f"{cfg.modern_cue_noise:.0%} noise)")
    loads = [r[0] for r in rows]
    axes[0].semilogx(loads, [r[2] for r in rows], "-o", ms=4, label="classical Hebbian (async to convergence)")
    axes[0].semilogx(loads, [r[3] for r in rows], "-s", ms=4, label=rf"modern, $\beta$ = {cfg.beta:g}")
    axes[0].axvline(0.138, color="k", ls=":", lw=1, label=r"classical $\alpha_c$ = 0.138")
    axes[0].set(xlabel="load P/N", ylabel="exact retrieval",
                title=f"retrieval against load ({cfg.modern_cue_noise:.0%}-noisy cues)")
    axes[0].legend(fontsize=10, loc="upper center", bbox_to_anchor=(0.5, -0.3))
    axes[1].semilogx(cfg.betas, acc_beta_random, "-o", ms=4, label=f"random patterns, P/N = {top_load:g}")
    axes[1].semilogx(cfg.betas, acc_beta_digits, "-s", ms=4,
                     label=f"{len(memories)} digits, P/N = {len(memories) / 64:.1f}")
    axes[1].axhline(ceiling, color="C1", ls=":", lw=1, label="digits: nearest-pattern ceiling")
    axes[1].set(xlabel=r"inverse temperature $\beta$", ylabel="exact retrieval", title=r"the role of $\beta$")
    axes[1].legend(fontsize=10, loc="upper center", bbox_to_anchor=(0.5, -0.3))
    run.savefig(fig, "fig06_modern_capacity", key=True)

# %% [markdown]
# **What to notice.**
# - The classical network retrieves none at the largest load; one modern update retrieves every random
#   pattern at $P/N = 10$ (claims): the separation $e^{\beta (m_\text{true} - m_\text{other}) N}$ beats the
#   number of competitors.
# - Small $\beta$ returns a blur (the average digit); as $\beta$ grows, retrieval climbs to the
#   nearest-pattern ceiling (a claim), below 100% for digits: a noisy "3" may be closer to another "3".

# %%
if run.section(6):
    # energy along a few modern updates, and the pictures
    show = torch.arange(min(8, len(memories)))
    betas_shown = (min(cfg.betas), cfg.beta)
    state_seq = {b: [dig_cue[show]] for b in betas_shown}
    for b in betas_shown:
        for _ in range(3):
            state_seq[b].append(modern_update(memories, state_seq[b][-1], b))
    e_seq = {b: torch.stack([modern_energy(memories, s, b) for s in seq]) for b, seq in state_seq.items()}
    energy_rise = max(float((e[1:] - e[:-1]).max()) for e in e_seq.values())
    run.claim("modern_energy_never_rises", "the modern energy never rises along updates (largest step up)",
              energy_rise, "<", 1e-9)
    print("  modern energy along 3 updates (mean over the shown cues):")
    for b in betas_shown:
        print(f"    beta = {b:<6g} " + "  ".join(f"{float(e.mean()):9.3f}" for e in e_seq[b]))
    fig, (ax, ax_energy) = plotting.figure(2, panel_size=(5.5, 4.2), gridspec_kw={"width_ratios": [1.6, 1]})
    images = [memories[show], dig_cue[show], torch.sign(hebb_digits.states[show]),
              state_seq[betas_shown[0]][1], torch.sign(state_seq[betas_shown[1]][1])]
    plotting.image_grid(ax, (torch.cat(images) + 1) / 2, shape=(8, 8), nrow=len(show))
    label_rows(ax, ["stored", "cue", "Hebbian", f"modern b={betas_shown[0]:g}", f"modern b={betas_shown[1]:g}"])
    ax.set_title(f"{len(memories)} stored digits, {cfg.digit_noise:.0%} flipped pixels")
    for c, b in enumerate(betas_shown):
        for j in range(len(show)):
            ax_energy.plot(e_seq[b][:, j], "-o", ms=3, lw=0.8, color=f"C{c}",
                           label=rf"$\beta$ = {b:g}" if j == 0 else None)
    ax_energy.set(xlabel="modern update", ylabel=r"$E(\xi)$", title="energy never rises (CCCP step)")
    ax_energy.legend(fontsize=10)
    run.savefig(fig, "fig07_modern_digits")

# %% [markdown]
# **What to notice.**
# - The classical rules have no answer for 197 digits in 64 units (a claim: neither recalls a single
#   one): Hebbian crosstalk is huge, and the pseudo-inverse projects onto the span of the digits, where
#   it holds no pull towards one digit rather than another (exercise 7).
# - The modern energy never rises along its updates (a claim), and one update is exactly one attention
#   head with the stored patterns as keys and values (a claim against `scaled_dot_product_attention`).

# %%
if checked["updates"]:  # sections 1 and 2 checked every single async update they made
    run.metrics.update({"async_energy_increases": checked["increases"], "async_updates_checked": checked["updates"]})
    run.claim("async_energy_never_increases", f"asynchronous updates never raise E ({checked['updates']} updates "
              "checked)", checked["increases"], "within", 0, 0)

# %% [markdown]
# ## Summary
#
# - A Hopfield network is an energy model: asynchronous sign updates are exact coordinate descent on
#   $E(x) = -\frac12 x^\top W x - b^\top x$, so recall always ends in a minimum; synchronous updates may 2-cycle.
# - Hebbian storage holds about $0.14 N$ random patterns (retrieval with a few wrong bits); exact fixed
#   points vanish earlier, as $(1 - p)^N$ predicts. Correlated patterns need better rules or a better energy.
# - The energy landscape has minima nobody stored: reversed patterns, 3-mixtures, spin-glass states.
# - At temperature $T$ the Glauber dynamics samples $e^{-E/T}$: a Boltzmann machine with fixed weights;
#   memories melt at $T = 1$ (for $P \ll N$).
# - The modern Hopfield energy $-\mathrm{lse}(\beta X \xi) + \frac12 |\xi|^2$ stores exponentially many
#   patterns and its update is attention; $\beta$ trades retrieval of one memory for averaging over many.
#
# ## Exercises
# Worked answers: docs/solutions/02_hopfield_networks.md. `--exercise N` runs only the sections exercise N
# needs (EXERCISES above) and then its stub; add the flags the exercise names.
#
# **Exercise 1 (predict-then-tweak, easy): finite-size effects on alpha_c**
# With `--n-units 1000 --n-trials 2 --section 3`, does alpha_c_hebbian move towards 0.138 or away, and is
# the drop of m(alpha) sharper or softer? Predict, run, then try `--n-units 200`.
#
# **Exercise 2 (predict-then-tweak, medium): the estimator**
# Predict how alpha_c_hebbian changes with `--overlap-threshold 0.7` and `--overlap-threshold 0.95` (add
# `--section 3`). Which threshold is closest to the N -> infinity theory at N = 500, and why is no single
# threshold "right" at finite N?
#
# **Exercise 3 (think, medium): fixed points versus retrieval**
# With p = Phi(-1/sqrt(alpha)): how many wrong bits has a Hebbian pattern at alpha = 0.1 with N = 10^4, how
# likely is it a fixed point, and why is it still retrieved? (`--exercise 3`: the measured rate at N = 500.)
#
# **Exercise 4 (extend, medium): biased patterns**
# `--exercise 4` stores patterns with 80% of the units at -1: they collapse onto one "background"
# attractor. Fix it (store xi - a, a = the mean activity, and add a bias b); measure capacity before and after.
#
# **Exercise 5 (predict-then-tweak, easy): when do 3-mixtures stop being minima?**
# Theory: 3-mixtures are stable at T = 0 only for alpha below ~0.03. Predict the 3-mixture "fixed pt" column
# for `--spurious-patterns 25 --section 4` (alpha = 0.05), and whether random starts still end in them.
#
# **Exercise 6 (think, hard): the modern energy and attention**
# Show that the modern update is the unit gradient step xi <- xi - grad E(xi) and one softmax attention
# step (`--exercise 6` checks the first with autograd). What plays the role of 1/sqrt(d_k)?
#
# **Exercise 7 (think, medium): why the pseudo-inverse fails on 197 digits**
# With P > N one might expect W = X^+ X = I. Predict the rank of the stored digits' pattern matrix, then run
# `--exercise 7` (rank, max |X^+X - I|, cues returned unchanged). Why does W hold no pull towards any digit?

# %%
if run.stub(1):
    print(f"\nExercise 1: alpha_c_hebbian = {fmt(alpha_c['hebbian'], alpha_c_se['hebbian'])} at N = {n}; "
          "predict it for --n-units 1000 and --n-units 200, then run them with --section 3.")

if run.stub(2):
    print(f"\nExercise 2: alpha_c_hebbian = {fmt(alpha_c['hebbian'], alpha_c_se['hebbian'])} at "
          f"--overlap-threshold {cfg.overlap_threshold:g}; predict it for 0.7 and 0.95, then run --section 3.")

if run.stub(3):
    near_01 = min(capacity["hebbian"], key=lambda a: abs(a - 0.1))
    print(f"\nExercise 3: at alpha = {near_01:g}, N = {n}: measured unstable-bit rate "
          f"{capacity['hebbian'][near_01]['bit_errors']:.2e}, Phi(-1/sqrt(alpha)) = "
          f"{norm.cdf(-1 / math.sqrt(near_01)):.2e}; now do it for N = 10^4 by hand.")

if run.stub(4):
    gen = run.generator("exercise-4")
    # Stub: biased patterns with activity 0.2; students replace hebbian_weights by a centred rule.
    activity = 0.2
    X_bias = torch.where(torch.rand(20, n, generator=gen) < activity, 1.0, -1.0).to(DTYPE)  # (20, N)
    rec = async_recall(hebbian_weights(X_bias), flip_bits(X_bias, 0.1, gen), generator=gen)
    print(f"\nExercise 4: biased patterns (activity {activity}), Hebbian exact recall "
          f"{(rec.states == X_bias).all(1).double().mean():.1%}; now centre the patterns and add a bias")

if run.stub(5):
    print(f"\nExercise 5: at P = {cfg.spurious_patterns} (alpha = {cfg.spurious_patterns / n:.3f}) "
          f"{fixed_fraction['3-mixture']:.0%} of the 3-mixtures are fixed points; predict it for 25 patterns.")

if run.stub(6):
    # E(xi) = -1/beta lse(beta X xi) + 1/2 |xi|^2: one unit gradient step xi - grad E(xi) against the update
    xi = dig_cue[:4].clone().requires_grad_(True)  # (4, 64)
    (grad_e,) = torch.autograd.grad(modern_energy(memories, xi, cfg.beta).sum(), xi)
    step_gap = float((xi.detach() - grad_e - modern_update(memories, dig_cue[:4], cfg.beta)).abs().max())
    print(f"\nExercise 6: max |(xi - grad E(xi)) - modern_update(xi)| = {step_gap:.1e} at beta = {cfg.beta:g}")

if run.stub(7):
    # X^+ X projects onto the row space of X (P x 64): the identity only if that space is all of R^64
    pattern_rank = int(torch.linalg.matrix_rank(memories))
    projector_dev = float((torch.linalg.pinv(memories) @ memories - torch.eye(64, dtype=DTYPE)).abs().max())
    print(f"\nExercise 7: {len(memories)} x 64 digit patterns, rank {pattern_rank}; max |X^+X - I| = "
          f"{projector_dev:.2f}; {exact_rate(pinv_digits.states, dig_cue):.1%} of cues come back unchanged")

run.finish()
