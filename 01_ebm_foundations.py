"""Lesson 01 -- Energy-based models: foundations.

An energy-based model assigns every configuration x a scalar energy E(x) and turns it into a
probability with the Boltzmann (Gibbs) distribution p(x) = exp(-E(x)/T) / Z. This lesson builds
that idea from one dimension up: it computes Z exactly where it can, shows why it cannot in
general, and meets the two tools that avoid it -- the score and Markov chains.

You will learn
- how an energy becomes a normalised density, and how temperature T reshapes it (and can move
  probability mass from a deep, narrow well to a shallow, wide one);
- why the partition function Z is intractable (enumeration and grid quadrature cost);
- that the score grad_x log p = -grad_x E does not depend on Z;
- maximum likelihood as "push down the data, push up the model's samples";
- the conditional view E(x, y): inference as argmin over y, softmax as a Gibbs distribution;
- a first look at Langevin sampling.

Prerequisites: none (probability, calculus, a little PyTorch).

Run:  python 01_ebm_foundations.py              (default; measured runtimes are in docs/results.md)
      python 01_ebm_foundations.py --quick      (seconds; every code path runs)
      python 01_ebm_foundations.py --section 7  (one section only: SECTIONS below; each takes seconds)
      python 01_ebm_foundations.py --help       (every hyperparameter, with advice)
      python 01_ebm_foundations.py --show       (also open the figure windows)

Figures and metrics.json keys: FIGURES and METRICS below.
"""
LESSON = "01_ebm_foundations"  # outputs go to outputs/01_ebm_foundations/

FIGURES = {
    "fig01_boltzmann_1d": "energy, density and Z in 1-D, quadrature against the closed form",
    "fig02_landscape_2d": "a 2-D landscape as contours, surface and density",
    "fig03_temperature": "T -> 0 winner-take-all, T -> infinity flat; the mass of a deep narrow well against T",
    "fig04_two_wells": "temperature moves mass between a deep narrow and a shallow wide well (distorts), and keeps "
                       "the ratio s1/s2 of two equally deep wells (rescales)",
    "fig05_intractability": "cost of exact enumeration and of grid quadrature, extrapolated",
    "fig06_score_field": "the score as a vector field; autograd against the closed form",
    "fig07_mle_training": "maximum likelihood: landscape over training, positive/negative phase",
    "fig08_conditional_ebm": "E(x, y): argmin inference and the Gibbs distribution over labels",
    "fig09_langevin": "Langevin chains on a 2-D landscape; MMD^2 / noise floor per seed",
    "anim_langevin": "Langevin chains moving over the 2-D landscape (GIF)",
}
METRICS = {
    "z_rel_error": "worst relative error of Z by quadrature against the closed form (1-D and 2-D)",
    "density_integral": "integral of the normalised density (should be 1), the one furthest from 1",
    "mode_mass_by_temperature": "{T: mass of the deep narrow well} from quadrature",
    "crossover_temperature": "T at which the two wells hold equal mass (quadrature), and its Laplace estimate",
    "equal_depth_mass_ratio_by_temperature": "{T: narrow/wide mass ratio of two equally deep wells} (quadrature)",
    "equal_depth_mass_ratio_laplace": "its Laplace value s1/s2, the same at every T",
    "score_max_abs_error": "max |autograd score - closed-form score| on a grid",
    "enumeration_states_28x28_log10": "log10 of the number of states of a 28x28 binary image",
    "mle_param_error": "max |theta_hat - theta_true|, and the same in units of its standard error",
    "mle_mean_z_squared": "mean of z^2 = ((theta - true) / SE)^2 over --mle-seeds fresh data sets (1 if SE right)",
    "conditional_accuracy": "test accuracy of argmin_y E(x, y)",
    "conditional_bayes_accuracy": "test accuracy of the Bayes rule on the same points",
    "langevin_mmd": "mean over --langevin-seeds runs of the multi-bandwidth MMD^2 (common.evaluation) of K-step "
                    "Langevin samples against fresh exact samples, n = --n-chains each",
    "langevin_mmd_baseline": "its noise floor: RMS of MMD^2(exact, exact) at the same n and bandwidths",
    "langevin_by_seed": "per seed: MMD^2 and KL(wells' exact shares || chains' shares) after K and 2K steps",
    "langevin_well_kl_line": "the 99.9 % chi^2 line for that KL at n draws (common.evaluation.mode_kl_threshold)",
}
SECTIONS = {1: "from energy to probability", 2: "temperature", 3: "why Z is intractable", 4: "the score",
            5: "maximum likelihood", 6: "the conditional view E(x, y)", 7: "Langevin sampling"}
EXERCISES = {1: (2,), 2: (5,), 3: (7,), 4: (1,), 5: (6,), 6: (5,)}  # exercise: the sections it needs


# %% [markdown]
# # Lesson 01 -- Energy-based models: foundations
#
# ## Setup
# Every number a student may want to change is a field of `Config` (and a flag: `--temperature 2`).

# %%
import math
from dataclasses import dataclass

from common.config import between, count, parse_flags, positive


@dataclass
class Config:
    # -- section 1: energy -> density
    temperature: float = positive(1.0)  # T in p = exp(-E/T)/Z; above 1 flattens p, below 1 sharpens it
    gauss_std: float = positive(0.7)  # s of the 1-D Gaussian energy (x - mu)^2 / (2 s^2); larger: wider p, larger Z
    gauss_mean: float = between(0.5, -5.0, 5.0)  # mu of that energy: moves p sideways, Z unchanged; plots show [-3, 3]
    # -- section 2: temperature
    deep_depth: float = between(-2.0, -10.0, 0.0, open_high=True)  # depth d1 of the deep, narrow well; deeper: T* up
    deep_width: float = positive(0.2)  # width s1 of the deep well; narrower: less entropy, T* ~ -d1 / ln(s2/s1) down
    wide_width: float = positive(1.2)  # width s2 of the shallow well (depth 0); wider: T* down
    temperatures: tuple[float, ...] = positive((0.1, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 5.0, 20.0))  # T grid; keep one >= 5
    # -- section 3: intractability
    max_enum_units: int = count(20, minimum=4)  # largest n timed for 2^n states; each +2 quadruples it (22 ~ 10 s)
    grid_per_dim: int = count(20, minimum=2)  # grid points per axis G for the quadrature cost; cost grows like G^d
    max_grid_dim: int = count(5)  # largest dimension d timed (G^d points); each +1 multiplies the time by G (6 ~ 1 min)
    # -- section 5: maximum likelihood
    n_data: int = count(2000, minimum=10)  # data points from the true model; the SE of theta_hat shrinks like 1/sqrt(N)
    mle_steps: int = count(400)  # Adam steps; Adam needs ~300 here, fewer stop short of the exact MLE
    lr: float = positive(0.05)  # Adam learning rate for the MLE fit; larger is faster, above ~0.5 the fit diverges
    mle_seeds: int = count(100, minimum=3)  # fresh data sets for the SE check; z^2 is skewed, fewer than ~100 is noisy
    quad_points: int = count(4001, minimum=101)  # trapezoid grid for Z in training; more: more accurate, slower
    # -- section 6: conditional EBM
    n_per_class: int = count(200, minimum=5)  # training points per class (3 classes); fewer: argmin E overfits
    cond_steps: int = count(300)  # Adam steps for the conditional energy; too few leave the wells off the classes
    cond_lr: float = positive(0.1)  # its learning rate; larger converges faster until the loss oscillates
    # -- section 7: Langevin
    step_size: float = positive(0.01)  # Langevin step h; above ~0.1 the chains overshoot the narrow wells (bias)
    n_chains: int = count(500, minimum=2)  # independent chains; more lower the MMD noise floor (a sharper grade)
    n_langevin_steps: int = count(1000)  # steps per chain K; crossing between wells needs >= 1e3
    langevin_seeds: int = count(5, minimum=3)  # independent Langevin runs for the MMD claims; more: a smaller SE
    mmd_repeats: int = count(10, minimum=2)  # exact-vs-exact pairs for the MMD noise floor; more: a steadier floor
    gif_frames: int = count(40, minimum=2)  # frames of anim_langevin.gif; more: smoother, each costs a render


QUICK = {
    "max_enum_units": 10, "grid_per_dim": 8, "max_grid_dim": 3, "n_data": 300, "mle_steps": 40,
    "quad_points": 801, "n_per_class": 30, "cond_steps": 30, "n_chains": 100, "n_langevin_steps": 100,
    "mle_seeds": 5, "langevin_seeds": 3, "mmd_repeats": 4, "gif_frames": 4,
}


def check(cfg):
    """Rules across fields (one line and exit 2 instead of a crash in SciPy's root finder)."""
    # a watershed exists if the deep well's wall at the wide well's centre, d1 + 3^2 / (2 s1^2), is above 0
    if cfg.deep_depth + 3.0**2 / (2 * cfg.deep_width**2) <= 0:
        raise ValueError(f"--deep-width {cfg.deep_width:g} is too wide for --deep-depth {cfg.deep_depth:g}: "
                         "the deep well swallows the wide one (need 9 / (2 s1^2) > -d1)")
    if cfg.deep_width >= cfg.wide_width:
        raise ValueError("--deep-width must be below --wide-width (otherwise the deep well wins at every T)")
    # Laplace estimate of the crossover T* = (d2 - d1) / ln(s2 / s1); the exact root is searched in [0.05, 50]
    t_cross = -cfg.deep_depth / math.log(cfg.wide_width / cfg.deep_width)
    if not 0.1 <= t_cross <= 25.0:
        raise ValueError(f"--deep-depth, --deep-width and --wide-width put the crossover temperature near "
                         f"{t_cross:.3g}, outside [0.1, 25]")


cfg, flags = parse_flags(Config, LESSON, __doc__, quick=QUICK, check=check, exercises=EXERCISES, sections=SECTIONS)

# heavy imports only now, so that --help and a mistyped flag answer at once
import time

import numpy as np
import torch
from scipy import integrate, optimize

from common import plotting
from common.boltzmann import boltzmann_energy, exact_log_partition
from common.claims import over_seeds
from common.datasets import gaussian_mixture
from common.evaluation import (
    kl_weights,
    mmd_bandwidths,
    mmd_multiscale,
    mmd_noise_floor,
    mode_kl_threshold,
    mode_weights,
)
from common.lesson import start_lesson
from common.progress import progress
from common.samplers import langevin

run = start_lesson(cfg, flags, figures=FIGURES, metrics=METRICS,
                   cpu_only="1-D and 2-D quadrature with SciPy and small float64 tensors")
T = cfg.temperature

# %% [markdown]
# ## 1. From energy to probability
#
# An energy $E(x)$ becomes a probability density through the Boltzmann distribution
#
# $$p(x) = \frac{e^{-E(x)/T}}{Z}, \qquad Z = \int e^{-E(x)/T}\,dx .$$
#
# Low energy means high probability; $Z$ is just the number that makes $p$ integrate to one. For the
# Gaussian energy $E(x) = (x - \mu)^2 / (2 s^2)$, $Z = \sqrt{2 \pi T}\, s$ in closed form, so we can check
# numerical quadrature (SciPy's `quad`) against it; in 2-D, $E(x) = \frac12 x^\top A x$ has
# $Z = 2\pi T / \sqrt{\det A}$. Derivation: docs/derivations/energy_normalisation.md.

# %%


def gaussian_energy(x, mean=cfg.gauss_mean, std=cfg.gauss_std):
    # E(x) = (x - mu)^2 / (2 s^2)
    return (x - mean) ** 2 / (2 * std**2)


def double_well_energy(x):
    # E(x) = (x^2 - 1)^2 + 0.3 x : two wells near x = -1 and x = +1, the left one deeper
    return (x**2 - 1) ** 2 + 0.3 * x


def partition_function_1d(energy, temperature):
    # Z = int exp(-E(x)/T) dx over the real line (scipy quad handles the infinite limits)
    value, _ = integrate.quad(lambda x: math.exp(-energy(x) / temperature), -np.inf, np.inf)
    return value


A = np.array([[2.0, 0.8], [0.8, 1.0]])  # the 2-D quadratic energy's matrix


def quadratic_energy_2d(x1, x2):
    # E(x) = 1/2 x^T A x
    return 0.5 * (A[0, 0] * x1**2 + 2 * A[0, 1] * x1 * x2 + A[1, 1] * x2**2)


xs = np.linspace(-3, 3, 600)  # the x axis of the 1-D plots
if run.section(1):
    z_quad = partition_function_1d(gaussian_energy, T)
    # Z = sqrt(2 pi T) s   for the Gaussian energy
    z_exact = math.sqrt(2 * math.pi * T) * cfg.gauss_std
    z_rel_error_1d = abs(z_quad - z_exact) / z_exact
    density_integral_1d, _ = integrate.quad(lambda x: math.exp(-gaussian_energy(x) / T) / z_quad, -np.inf, np.inf)
    z_double_well = partition_function_1d(double_well_energy, T)
    # E(x) >= lambda_min |x|^2 / 2, so exp(-E/T) < e^-30 outside the box once box^2 > 60 T / lambda_min
    box = max(12.0, math.sqrt(60 * T / float(np.linalg.eigvalsh(A).min())))  # 12 for T <= 1, wider when hotter
    z2_quad, _ = integrate.dblquad(lambda y, x: math.exp(-quadratic_energy_2d(x, y) / T), -box, box, -box, box)
    # Z = 2 pi T / sqrt(det A)
    z2_exact = 2 * math.pi * T / math.sqrt(np.linalg.det(A))
    z_rel_error_2d = abs(z2_quad - z2_exact) / z2_exact
    density_integral_2d = z2_quad / z2_exact

    print("\n1. Partition functions: quadrature against closed form")
    print(f"   {'energy':<28}{'Z (quadrature)':>18}{'Z (closed form)':>18}{'relative error':>16}")
    print(f"   {'1-D Gaussian':<28}{z_quad:>18.10f}{z_exact:>18.10f}{z_rel_error_1d:>16.2e}")
    print(f"   {'2-D quadratic':<28}{z2_quad:>18.10f}{z2_exact:>18.10f}{z_rel_error_2d:>16.2e}")
    print(f"   {'1-D double well':<28}{z_double_well:>18.10f}{'(none)':>18}")
    print(f"   integral of the normalised 1-D density = {density_integral_1d:.12f}")
    worst_integral = max((density_integral_1d, density_integral_2d), key=lambda v: abs(v - 1))
    run.metrics.update({"z_rel_error": max(z_rel_error_1d, z_rel_error_2d), "density_integral": worst_integral})
    run.claim("z_normalises", "Z by quadrature equals the closed form (1-D and 2-D), relative error",
              run.metrics["z_rel_error"], "<", 1e-8)
    run.claim("density_integrates_to_one", "exp(-E/T)/Z integrates to 1: |integral - 1|", abs(worst_integral - 1),
              "<", 1e-8)

    fig, axes = plotting.figure(2, title=f"Energy to density in 1-D (T = {T:g})")
    axes[0].plot(xs, gaussian_energy(xs), label=f"Gaussian, mu={cfg.gauss_mean:g}, s={cfg.gauss_std:g}")
    axes[0].plot(xs, double_well_energy(xs), label="double well (x^2-1)^2 + 0.3x")
    axes[0].set(xlabel="x", ylabel="E(x)", ylim=(-1, 6), title="energies")
    axes[0].legend()
    axes[1].plot(xs, np.exp(-gaussian_energy(xs) / T) / z_quad, label=f"Gaussian, Z = {z_quad:.4f}")
    axes[1].plot(xs, np.exp(-double_well_energy(xs) / T) / z_double_well,
                 label=f"double well, Z = {z_double_well:.4f}")
    axes[1].set(xlabel="x", ylabel="p(x) = exp(-E/T) / Z", title="densities (each integrates to 1)")
    axes[1].legend()
    run.savefig(fig, "fig01_boltzmann_1d")

# %% [markdown]
# **What to notice.** The deeper left well of the double well holds more probability, and the two
# wells are *both* visible in $p(x)$: an EBM represents several modes with one function.

# %%
# The same in 2-D: a non-Gaussian landscape (sections 1, 4 and 7), seen as contours, a surface and a density.
LANDSCAPE_MEANS = [[-1.5, -1.0], [1.5, 1.0], [1.5, -1.5]]
LANDSCAPE_STDS = [0.6, 0.8, 0.5]
LANDSCAPE_WEIGHTS = [0.5, 0.3, 0.2]
landscape = gaussian_mixture(LANDSCAPE_MEANS, LANDSCAPE_STDS, LANDSCAPE_WEIGHTS, bounds=(-4, 4, -4, 4))
ENERGY_CLIP = 0.6  # colour range spent on the wells: energies above the 60% quantile share the top colour
if run.section(1):
    fig, axes = plotting.figure(3, title=r"One landscape, three views: $p(x) = e^{-E(x)}/Z$, a 3-Gaussian mixture")
    axes[1].remove()
    ax3d = fig.add_subplot(1, 3, 2, projection="3d")
    plotting.energy_contours(axes[0], landscape.energy, landscape.bounds, clip_quantile=ENERGY_CLIP,
                             label=f"E(x) (clipped at the {ENERGY_CLIP:.0%} quantile)")
    axes[0].set_title("contours of E")
    plotting.energy_surface(ax3d, landscape.energy, landscape.bounds, clip_quantile=ENERGY_CLIP)
    ax3d.set_title("surface of E (same clip)")
    plotting.density_image(axes[2], landscape.log_density, landscape.bounds, colorbar=True)
    axes[2].set_title(r"density $p(x) = e^{-E(x)}/Z$")
    run.savefig(fig, "fig02_landscape_2d")

# %% [markdown]
# ## 2. Temperature
#
# Dividing the energy by $T$ flattens ($T > 1$) or sharpens ($T < 1$) the landscape: $T \to 0$ puts all
# mass on the global minimum ("winner takes all"); $T \to \infty$ makes $p$ flat.
#
# Temperature does more than sharpen. Take a *deep, narrow* well (depth $d_1$, width $s_1$) and a
# *shallow, wide* one (depth $d_2 = 0$, width $s_2$). By Laplace's approximation each well holds mass
#
# $$m_k \approx e^{-d_k/T} \sqrt{2 \pi T}\, s_k ,$$
#
# so depth wins at low $T$, width (entropy) wins at high $T$, and they trade places at
# $T^* \approx (d_2 - d_1) / \ln(s_2 / s_1)$. Below we compute the masses exactly by quadrature.

# %%
DEEP_CENTRE, WIDE_CENTRE = -1.5, 1.5  # positions of the two wells (fixed; depths and widths are in Config)
SHOWN_TEMPERATURES = (0.05, 0.3, 1.0, 3.0, 30.0)  # the double-well densities drawn in fig03


def well_branches(x, deep_depth):
    # the two parabolas  d1 + (x - m1)^2 / (2 s1^2)  and  0 + (x - m2)^2 / (2 s2^2)
    deep = deep_depth + (x - DEEP_CENTRE) ** 2 / (2 * cfg.deep_width**2)
    return deep, (x - WIDE_CENTRE) ** 2 / (2 * cfg.wide_width**2)


def two_well_energy(x, deep_depth=cfg.deep_depth):
    # E(x) = min of the two branches (deep_depth = 0: two equally deep wells)
    return np.minimum(*well_branches(x, deep_depth))


def watershed(deep_depth=cfg.deep_depth):
    # the point between the wells where both branches are equal
    return optimize.brentq(lambda x: np.subtract(*well_branches(x, deep_depth)), DEEP_CENTRE, WIDE_CENTRE)


def well_masses(temperature, deep_depth=cfg.deep_depth):
    # (int_{x < watershed} exp(-E/T) dx,  int_{x > watershed} exp(-E/T) dx): the unnormalised mass of each well
    cut = watershed(deep_depth)
    return [integrate.quad(lambda x: math.exp(-two_well_energy(x, deep_depth) / temperature), low, high)[0]
            for low, high in ((-np.inf, cut), (cut, np.inf))]


def deep_well_mass(temperature):
    # m_deep = int_{x < watershed} exp(-E/T) dx / int exp(-E/T) dx
    left, right = well_masses(temperature)
    return left / (left + right)


if run.section(2):
    barrier = watershed()
    mass_by_t = {t: deep_well_mass(t) for t in cfg.temperatures}
    t_cross = optimize.brentq(lambda t: deep_well_mass(t) - 0.5, 0.05, 50.0)
    # T* ~ (d2 - d1) / ln(s2 / s1)   (Laplace: each well a full Gaussian)
    t_cross_laplace = (0.0 - cfg.deep_depth) / math.log(cfg.wide_width / cfg.deep_width)

    print("\n2. Mass of the deep, narrow well against temperature (quadrature)")
    print(f"   {'T':>8}{'deep well':>12}{'wide well':>12}")
    for t, m in mass_by_t.items():
        print(f"   {t:>8g}{m:>12.4f}{1 - m:>12.4f}")
    print(f"   crossover: T* = {t_cross:.4f} (quadrature), {t_cross_laplace:.4f} (Laplace approximation)")
    run.metrics.update({"mode_mass_by_temperature": {f"{t:g}": m for t, m in mass_by_t.items()},
                        "crossover_temperature": {"quadrature": t_cross, "laplace": t_cross_laplace}})
    t_curve = np.geomspace(min(cfg.temperatures), max(cfg.temperatures), 60)
    mass_curve = np.array([deep_well_mass(t) for t in t_curve])  # (60,)
    run.claim("crossover_laplace", "the Laplace T* is within a few % of the quadrature T*", t_cross_laplace,
              "within_rel", t_cross, 0.05, reference_label="(quadrature)")
    # depth wins below T*, width above: m - 1/2 changes sign exactly once on a fine T grid
    run.claim("single_crossover", "the deep well's mass crosses 1/2 once: deep wins below T*, wide above",
              int((np.diff(np.sign(mass_curve - 0.5)) != 0).sum()), "within", 1, 0)
    run.claim("high_t_drift", "at the hottest T the deep well's mass is back above its minimum",
              mass_by_t[max(cfg.temperatures)], ">", min(mass_by_t.values()), reference_label="(min over T)")

    fig, axes = plotting.figure(3, title=r"Temperature reshapes $p(x) = e^{-E(x)/T}/Z$")
    for t in SHOWN_TEMPERATURES:
        z_t = partition_function_1d(double_well_energy, t)
        axes[0].plot(xs, np.exp(-double_well_energy(xs) / t) / z_t, label=f"T = {t:g}")
    axes[0].set(xlabel="x", ylabel="p(x)", title=r"double well: $T \to 0$ one winner, $T \to \infty$ flat")
    plotting.legend_outside(axes[0])
    axes[1].semilogx(t_curve, mass_curve, label="deep, narrow well")
    axes[1].axhline(0.5, color="gray", lw=0.8, ls=":")
    axes[1].axvline(t_cross, color="C1", ls="--", label=f"$T^*$ = {t_cross:.2f} (quadrature)")
    # the Laplace estimate lands within a few % of the quadrature one: a marker, not a second line on top
    axes[1].plot([t_cross_laplace], [0.5], "D", color="C2", ms=8, mfc="none", mew=2,
                 label=f"$T^*$ = {t_cross_laplace:.2f} (Laplace)")
    axes[1].annotate("high T: the wide parabola is lower\nfar out on BOTH sides, so the watershed\n"
                     "cuts one broad bump: mass drifts to 1/2", xy=(10.0, deep_well_mass(10.0)),
                     xytext=(0.42, 0.72), textcoords="axes fraction", fontsize=10, arrowprops={"arrowstyle": "->"})
    axes[1].set(xlabel="temperature T", ylabel="mass left of the watershed", ylim=(0, 1),
                title="two wells: mass of the deep one")
    axes[1].legend(loc="lower left")
    xw = np.linspace(-3, 5, 600)
    for t in (0.3, t_cross, 5.0):
        weights = np.exp(-two_well_energy(xw) / t)
        axes[2].plot(xw, weights / np.trapezoid(weights, xw), label=f"T = {t:.2f}")
    axes[2].set(xlabel="x", ylabel="p(x)", title=f"deep ($d_1$={cfg.deep_depth:g}, $s_1$={cfg.deep_width:g}) "
                                                 f"vs wide ($s_2$={cfg.wide_width:g})")
    plotting.legend_outside(axes[2])
    run.savefig(fig, "fig03_temperature")

# %% [markdown]
# The rescaling case: the same two widths at *equal* depth ($d_1 = d_2 = 0$). The factor $e^{-d_k/T}$
# cancels and Laplace gives $m_1 / m_2 = s_1 / s_2$ at every $T$: temperature only rescales the modes.

# %%


if run.section(2):
    ratio_equal = {t: np.divide(*well_masses(t, deep_depth=0.0)) for t in cfg.temperatures}  # m1 / m2
    ratio_laplace = cfg.deep_width / cfg.wide_width
    ratio_unequal = {t: m / (1 - m) for t, m in mass_by_t.items()}
    print(f"   mass ratio narrow / wide: equal depths (Laplace s1/s2 = {ratio_laplace:.4f} at every T), unequal "
          f"(d1 = {cfg.deep_depth:g}):\n   {'T':>8}{'equal depths':>14}{'unequal':>12}")
    for t in cfg.temperatures:
        print(f"   {t:>8g}{ratio_equal[t]:>14.4f}{ratio_unequal[t]:>12.4g}")
    run.metrics.update({"equal_depth_mass_ratio_by_temperature": {f"{t:g}": r for t, r in ratio_equal.items()},
                        "equal_depth_mass_ratio_laplace": ratio_laplace})
    cool = [t for t in cfg.temperatures if t <= 1.0] or [min(cfg.temperatures)]
    run.claim("equal_depths_rescale", "equal depths: ratio stays at s1/s2 for T <= 1 (max relative deviation)",
              max(abs(ratio_equal[t] / ratio_laplace - 1) for t in cool), "<", 0.01)
    decades = math.log10(max(ratio_unequal.values()) / min(ratio_unequal.values()))
    run.claim("unequal_depths_distort", "unequal depths: the ratio spans more than 8 decades over the T grid",
              decades, ">", 8.0)
    run.claim("equal_depths_drift_hot", f"equal depths: at T = {max(cfg.temperatures):g} the ratio is above "
              "2 s1/s2", ratio_equal[max(cfg.temperatures)], ">", 2 * ratio_laplace, reference_label="(2 s1/s2)")

    fig, axes = plotting.figure(3, title="A deep narrow well against a shallow wide one; "
                                         "temperature rescales or distorts")
    axes[0].plot(xw, two_well_energy(xw), color="k", label="E(x) = min of two parabolas")
    axes[0].axvline(barrier, color="gray", ls=":", label=f"watershed x = {barrier:.2f}")
    axes[0].set(xlabel="x", ylabel="E(x)", ylim=(cfg.deep_depth - 0.5, 6),
                title="the energy (kinks: where the two branches meet)")
    axes[0].legend(loc="upper right", fontsize=10)
    positions, deep_mass = np.arange(len(mass_by_t)), np.array(list(mass_by_t.values()))  # (n_T,), (n_T,)
    axes[1].bar(positions, deep_mass, color="C0", label="deep, narrow well")
    axes[1].bar(positions, 1 - deep_mass, bottom=deep_mass, color="C3", label="shallow, wide well")
    axes[1].axhline(0.5, color="k", lw=0.8, ls=":")
    axes[1].set(xticks=positions, xticklabels=[f"{t:g}" for t in mass_by_t], xlabel="temperature T",
                ylabel="probability mass", title=f"mass per well; $T^*$ = {t_cross:.2f}")
    axes[1].legend(loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=2, fontsize=10)  # below the axes
    axes[2].loglog(list(ratio_unequal), list(ratio_unequal.values()), "o-", color="C0",
                   label=f"unequal depths ($d_1$ = {cfg.deep_depth:g}): distorts")
    axes[2].loglog(list(ratio_equal), list(ratio_equal.values()), "s-", color="C2", label="equal depths: rescales")
    axes[2].axhline(ratio_laplace, color="C2", ls=":", label=f"Laplace $s_1/s_2$ = {ratio_laplace:.3f}")
    axes[2].set(xlabel="temperature T", ylabel="mass ratio narrow / wide",
                title=f"$s_1$ = {cfg.deep_width:g}, $s_2$ = {cfg.wide_width:g}")
    axes[2].legend(loc="upper center", bbox_to_anchor=(0.5, -0.3), fontsize=10)
    run.savefig(fig, "fig04_two_wells", key=True)

# %% [markdown]
# **What to notice.** Below $T^*$ the deep narrow well holds most of the mass, above it the wide one
# (a claim: the mass crosses 1/2 once): its larger volume (entropy) beats the depth. At very high $T$ the
# mass drifts back towards 1/2 (a claim): the wide parabola is then lower on *both* sides, and the
# watershed cuts one broad bump. The Laplace $T^*$ is close but not exact (a claim: within 5 %).
# With equal depths the narrow/wide ratio stays at $s_1/s_2 = 1/6$ up to $T = 1$ (a claim: within 1 %)
# and drifts only once $\sqrt{T} s_2$ is not small against the gap (a claim: above $2 s_1/s_2$ at
# $T = 20$); with unequal depths it spans more than eight decades (a claim) and crosses 1: temperature
# distorts.


# %% [markdown]
# ## 3. Why Z is intractable
#
# For $n$ binary units, $Z = \sum_{s \in \{0,1\}^n} e^{-E(s)}$ has $2^n$ terms: each extra unit doubles
# the work. For a continuous $x$ in $d$ dimensions, a grid with $G$ points per axis needs $G^d$ energy
# evaluations. We time both for small sizes and extrapolate to a 28x28 binary image ($n = 784$,
# $2^{784}$ states).

# %%


def time_enumeration(n_units, generator):
    # log Z = log sum_s exp(-E(s)) over all 2^n states of a random Boltzmann machine
    weights = torch.randn(n_units, n_units, generator=generator, dtype=torch.float64) * 0.3
    weights = (weights + weights.T) / 2
    weights.fill_diagonal_(0)
    bias = torch.randn(n_units, generator=generator, dtype=torch.float64) * 0.1
    start = time.process_time()
    exact_log_partition(lambda s: boltzmann_energy(weights, bias, s), n_units)
    return time.process_time() - start


def time_grid_quadrature(dim, points_per_dim):
    # Z ~ sum over a G^d grid of exp(-|x|^2 / 2) * cell volume
    axis = torch.linspace(-5, 5, points_per_dim, dtype=torch.float64)
    start = time.process_time()
    grid = torch.cartesian_prod(*([axis] * dim)).reshape(-1, dim)  # (G^d, d)
    _ = torch.exp(-0.5 * (grid**2).sum(1)).sum() * (axis[1] - axis[0]) ** dim
    return time.process_time() - start


SECONDS_PER_YEAR = 3.15576e7
if run.section(3):
    generator = run.generator("intractability")  # each section draws from its own stream
    enum_units = list(range(4, cfg.max_enum_units + 1, 2))
    enum_seconds = [time_enumeration(n, generator) for n in progress(enum_units, desc="enumeration", leave=False)]
    grid_dims = list(range(1, cfg.max_grid_dim + 1))
    grid_seconds = [time_grid_quadrature(d, cfg.grid_per_dim) for d in grid_dims]

    # extrapolate at the measured cost per state of the largest enumeration: t(n) = t(n_max) 2^(n - n_max)
    log10_seconds_per_state = math.log10(enum_seconds[-1]) - enum_units[-1] * math.log10(2)
    log10_years_784 = log10_seconds_per_state + 784 * math.log10(2) - math.log10(SECONDS_PER_YEAR)
    # grid: G^784 points at the measured seconds per point of the largest grid
    seconds_per_point = grid_seconds[-1] / cfg.grid_per_dim ** grid_dims[-1]
    log10_years_grid = 784 * math.log10(cfg.grid_per_dim) + math.log10(seconds_per_point) - math.log10(SECONDS_PER_YEAR)
    # growth per unit over the last (up to) four units: t(n_max) / t(n_max - 4) = growth^4
    span = min(2, len(enum_units) - 1)
    growth = (enum_seconds[-1] / enum_seconds[-1 - span]) ** (1 / (enum_units[-1] - enum_units[-1 - span]))

    print("\n3. Cost of computing Z exactly")
    print(f"   {'n units':>8}{'states':>14}{'seconds':>12}")
    for n, s in zip(enum_units, enum_seconds):
        print(f"   {n:>8}{2**n:>14,}{s:>12.4f}")
    print(f"   n = {enum_units[-1 - span]} -> {enum_units[-1]}: each unit multiplied the CPU time by {growth:.2f}")
    print(f"   28x28 binary image: 2^784 = 10^{784 * math.log10(2):.0f} states -> about 10^{log10_years_784:.0f} years")
    print(f"   grid quadrature, {cfg.grid_per_dim} points per axis: d=784 needs "
          f"10^{784 * math.log10(cfg.grid_per_dim):.0f} points -> about 10^{log10_years_grid:.0f} years "
          "(the universe is ~10^10 years old)")
    run.metrics["enumeration_states_28x28_log10"] = 784 * math.log10(2)
    run.claim("enumeration_time_doubles", "each extra unit doubles the CPU time of exact log Z (within 30 %)",
              growth, "within_rel", 2.0, 0.3)

    fig, axes = plotting.figure(2, title="The cost of Z grows exponentially (measured on this machine)")
    axes[0].semilogy(enum_units, enum_seconds, "o-", label="measured")
    n_line = np.arange(enum_units[-1], enum_units[-1] + 7)  # extrapolate 6 units past the last measurement
    axes[0].semilogy(n_line, enum_seconds[-1] * 2.0 ** (n_line - enum_units[-1]), "--", color="gray", lw=2,
                     label=r"$\times 2$ per unit (extrapolated)")
    axes[0].set(xlabel="binary units n", ylabel="CPU seconds for exact log Z", title="enumerating $2^n$ states",
                xticks=range(enum_units[0], int(n_line[-1]) + 1, 2))  # whole units only
    axes[0].legend()
    axes[1].semilogy(grid_dims, grid_seconds, "s-", color="C1", label=f"G = {cfg.grid_per_dim} points per axis")
    axes[1].set(xlabel="dimension d", ylabel="CPU seconds for grid quadrature", title="grid of $G^d$ points",
                xticks=grid_dims)
    axes[1].legend()
    run.savefig(fig, "fig05_intractability")

# %% [markdown]
# **What to notice.** Both curves are straight lines on a log scale -- exponential cost (a claim: each
# extra unit doubles the CPU time of enumeration, within 30 %). A 28x28
# binary image has about $10^{236}$ states; no computer will ever sum them. Every later lesson is a way of
# *not* computing $Z$: scores (section 4, lesson 06), MCMC (section 7, lessons 03-05, 07), or models built
# so that $Z$ factorises (the RBM's hidden layer, lesson 04).

# %% [markdown]
# ## 4. The score does not need Z
#
# The score is the gradient of the log-density with respect to $x$:
#
# $$\nabla_x \log p(x) = -\frac{\nabla_x E(x)}{T} - \nabla_x \log Z = -\frac{\nabla_x E(x)}{T},$$
#
# because $Z$ does not depend on $x$. Autograd gives it from the energy alone. We check it against the
# closed-form score of a Gaussian mixture, $\sum_k r_k(x)\,(\mu_k - x)/s_k^2$, with $r_k(x)$ the posterior
# responsibility of component $k$. Derivation: docs/derivations/stein_vs_fisher_score.md.

# %%
# the landscape of section 1 stores its parameters in float32: use exactly those numbers
MEANS = torch.tensor(LANDSCAPE_MEANS).double()  # (K, 2)
STDS = torch.tensor(LANDSCAPE_STDS).double()
WEIGHTS = torch.tensor(LANDSCAPE_WEIGHTS).double()


def mixture_score_closed_form(x):
    # grad log p(x) = sum_k r_k(x) (mu_k - x) / s_k^2,  r_k = w_k N(x; mu_k, s_k^2) / p(x)
    log_terms = WEIGHTS.log() - ((x[:, None] - MEANS) ** 2).sum(-1) / (2 * STDS**2) - 2 * STDS.log()  # (B, K)
    responsibilities = torch.softmax(log_terms, dim=1)  # (B, K)
    return (responsibilities[..., None] * (MEANS - x[:, None]) / STDS[:, None] ** 2).sum(1)  # (B, 2)


def score_by_autograd(energy, x, offset=0.0):
    # s(x) = -grad_x (E(x) + offset): the constant offset (a different log Z) changes nothing
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad((energy(x) + offset).sum(), x)
    return -grad


if run.section(4):
    _, _, grid_points = plotting.grid_2d(landscape.bounds, 60)
    grid_points = grid_points.double()  # (3600, 2)
    score_auto = score_by_autograd(landscape.energy, grid_points)  # (3600, 2)
    score_auto_shifted = score_by_autograd(landscape.energy, grid_points, offset=123.0)
    score_exact = mixture_score_closed_form(grid_points)  # (3600, 2)
    score_error = float((score_auto - score_exact).abs().max())
    shift_error = float((score_auto - score_auto_shifted).abs().max())
    print("\n4. Score: autograd of -E against the closed form, on a 60x60 grid")
    print(f"   max |autograd - closed form|       = {score_error:.2e}")
    print(f"   max |score(E) - score(E + 123)|    = {shift_error:.2e}   (a different Z, the same score)")
    run.metrics["score_max_abs_error"] = score_error
    run.claim("score_closed_form", "autograd score = closed-form mixture score (max abs error)", score_error,
              "<", 1e-10)
    run.claim("score_z_free", "adding a constant to E (another Z) leaves the score unchanged", shift_error,
              "<", 1e-12)

    fig, axes = plotting.figure(2, title=r"The score $-\nabla_x E(x)$ points uphill in probability")
    plotting.energy_contours(axes[0], landscape.energy, landscape.bounds, clip_quantile=ENERGY_CLIP,
                             label=f"E(x) (clipped at the {ENERGY_CLIP:.0%} quantile)")
    arrows = plotting.score_field(axes[0], lambda x: score_by_autograd(landscape.energy, x.double()),
                                  landscape.bounds, n=22)
    axes[0].set_title("autograd score (unit arrows) over E(x)")
    magnitude = score_exact.norm(dim=1).reshape(60, 60).numpy()
    image = axes[1].imshow(np.log10(magnitude + 1e-12), origin="lower", extent=landscape.bounds, cmap="coolwarm",
                           interpolation="bilinear")  # the 60x60 grid of the check, smoothed for display
    arrows.set_clim(image.get_clim())  # the arrows' colour is the same number as the right panel's
    plotting.colorbar(axes[1], image, r"$\log_{10} |\nabla_x E(x)|$ (also the arrow colour)")
    axes[1].set(title=f"|score|, closed form (autograd error {score_error:.0e})", xlabel="$x_1$", ylabel="$x_2$")
    axes[1].grid(False)
    run.savefig(fig, "fig06_score_field")

# %% [markdown]
# **What to notice.** Arrows point towards the wells and vanish at the minima and on the ridges between
# them; the score is large far away. Lesson 06 learns an energy by matching exactly this field, never
# touching $Z$.

# %% [markdown]
# ## 5. Learning by maximum likelihood: push down the data, push up the samples
#
# For $p_\theta(x) = e^{-E_\theta(x)} / Z(\theta)$ the average log-likelihood $\ell(\theta)$ of data
# $x_1, \dots, x_N$ has gradient
#
# $$\nabla_\theta \ell = -\,\mathbb{E}_{\text{data}}\left[\nabla_\theta E_\theta(x)\right]
#   + \mathbb{E}_{p_\theta}\left[\nabla_\theta E_\theta(x)\right]$$
#
# The first term is the *positive phase* (lower $E$ at the data), the second the *negative phase* (raise
# $E$ where the model puts its mass)
# (derivation: docs/derivations/mle_gradient.md). We fit $E_\theta(x) = \theta_1 x^4 + \theta_2 x^2 + \theta_3 x$
# in 1-D, where the model expectation -- and $Z$ -- are exact by quadrature on a grid, so we can watch
# both phases. The data come from known parameters $\theta_\text{true}$, drawn exactly by inverting the CDF.

# %%
THETA_TRUE = torch.tensor([0.5, -2.0, 0.5], dtype=torch.float64)  # a tilted double well
X_RANGE = 4.0  # quadrature grid [-4, 4]; the true density is below e^-40 outside it


def sufficient_statistics(x):
    # grad_theta E_theta(x) = (x^4, x^2, x): the energy is linear in theta
    return torch.stack([x**4, x**2, x], dim=-1)  # (B, 3)


def poly_energy(theta, x):
    # E_theta(x) = theta_1 x^4 + theta_2 x^2 + theta_3 x
    return sufficient_statistics(x) @ theta


quad_x = torch.linspace(-X_RANGE, X_RANGE, cfg.quad_points, dtype=torch.float64)  # (G,)


def model_density(theta):
    # p_theta(x) = exp(-E_theta(x)) / Z on quad_x,  Z by the trapezoid rule (E shifted by its minimum first)
    log_unnormalised = -poly_energy(theta, quad_x)
    weights = torch.exp(log_unnormalised - log_unnormalised.max())
    return weights / torch.trapezoid(weights, quad_x)  # (G,)


def model_expectation(theta):
    # E_model[f] = int f(x) p_theta(x) dx
    return torch.trapezoid(model_density(theta)[:, None] * sufficient_statistics(quad_x), quad_x, dim=0)  # (3,)


def sample_exactly(theta, n, generator):
    # inverse-CDF sampling on the quadrature grid: x = F^{-1}(u), u ~ U(0, 1)
    cdf = torch.cumulative_trapezoid(torch.exp(-poly_energy(theta, quad_x)), quad_x)  # (G - 1,)
    cdf = torch.cat([torch.zeros(1, dtype=cdf.dtype), cdf / cdf[-1]])  # (G,) from 0 to 1
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    return torch.from_numpy(np.interp(u.numpy(), cdf.numpy(), quad_x.numpy()))  # (n,) linear between grid points


def nll_by_quadrature(theta, data):
    # -l(theta) = E_data[E_theta(x)] + log Z(theta),  Z by the same trapezoid rule as model_expectation
    log_unnormalised = -poly_energy(theta, quad_x)
    shift = log_unnormalised.max().detach()
    return poly_energy(theta, data).mean() + shift + torch.log(torch.trapezoid(torch.exp(log_unnormalised - shift),
                                                                               quad_x))


def exact_mle(theta_start, positive_phase, n_iterations=30):
    # the MLE solves E_model[grad E] = E_data[grad E] (moment matching): Newton's method with the
    # Hessian of log Z, which is the covariance of the sufficient statistics under the model
    theta_n = theta_start.clone()
    for _ in range(n_iterations):
        weights = model_density(theta_n)  # (G,)
        stats = sufficient_statistics(quad_x)  # (G, 3)
        mean = torch.trapezoid(weights[:, None] * stats, quad_x, dim=0)
        centred = stats - mean
        cov = torch.trapezoid(weights[:, None, None] * centred[:, :, None] * centred[:, None, :], quad_x, dim=0)
        # Newton: theta <- theta - H^-1 grad l,  grad l = E_model[S] - E_data[S],  H = -Cov_model[S]
        theta_n = theta_n + torch.linalg.solve(cov, mean - positive_phase)
    return theta_n, cov


def mean_squared_z(seed):
    # a fresh data set of the same size, its exact MLE, and z_k = (theta_k - true_k) / SE_k; mean of z_k^2
    data = sample_exactly(THETA_TRUE, cfg.n_data, torch.Generator().manual_seed(seed))
    theta_n, fisher = exact_mle(THETA_TRUE, sufficient_statistics(data).mean(0), n_iterations=8)  # converged by 5
    se = torch.sqrt(torch.diag(torch.linalg.inv(fisher)) / cfg.n_data)
    return float((((theta_n - THETA_TRUE) / se) ** 2).mean())


if run.section(5):
    data_1d = sample_exactly(THETA_TRUE, cfg.n_data, run.generator("mle-data"))  # (N,)
    positive_phase = sufficient_statistics(data_1d).mean(0)  # (3,) E_data[grad E]: fixed during training

    # check the identity before using it: autograd of -l equals positive minus negative phase
    gradient_gap = 0.0
    for theta_check in (torch.tensor([0.2, 0.0, 0.0], dtype=torch.float64), THETA_TRUE):
        theta_check = theta_check.clone().requires_grad_(True)
        (autograd_grad,) = torch.autograd.grad(nll_by_quadrature(theta_check, data_1d), theta_check)
        phases = positive_phase - model_expectation(theta_check.detach())
        gradient_gap = max(gradient_gap, float((autograd_grad - phases).abs().max()))
    theta = torch.tensor([0.2, 0.0, 0.0], dtype=torch.float64, requires_grad=True)  # a single broad well
    optimizer = torch.optim.Adam([theta], lr=cfg.lr)
    history = {"theta": [], "negative_phase": []}
    snapshot_steps = sorted({0, cfg.mle_steps // 10, cfg.mle_steps // 4, cfg.mle_steps - 1})
    snapshots = {}
    for step in progress(range(cfg.mle_steps), desc="MLE", leave=False):
        with torch.no_grad():
            negative_phase = model_expectation(theta)
        # d(-l)/d theta = E_data[grad E] - E_model[grad E]  (positive minus negative phase)
        theta.grad = positive_phase - negative_phase
        run.check_finite(theta.detach(), step=step, what="theta", field="lr")
        history["theta"].append(theta.detach().clone())
        history["negative_phase"].append(negative_phase)
        if step in snapshot_steps:
            snapshots[step] = theta.detach().clone()
        optimizer.step()
        with torch.no_grad():
            theta[0].clamp_(min=1e-3)  # theta_1 > 0 keeps exp(-E) integrable (E -> +inf as |x| -> inf)
    theta_hat = theta.detach()  # (3,)

    # log-likelihood is concave in theta (an exponential family), so Newton from theta_true finds the
    # unique maximiser for *this* data set; theta_true is only a starting point, not the answer.
    theta_newton, fisher_information = exact_mle(THETA_TRUE, positive_phase)
    # asymptotic standard error of the MLE: sqrt(diag(I(theta)^-1) / N),  I = Cov_model[grad E]
    standard_error = torch.sqrt(torch.diag(torch.linalg.inv(fisher_information)) / cfg.n_data)  # (3,)
    param_error = float((theta_hat - THETA_TRUE).abs().max())
    error_in_se = float(((theta_hat - THETA_TRUE).abs() / standard_error).max())
    optimisation_gap = float((theta_hat - theta_newton).abs().max())

    print("\n5. Maximum likelihood for E(x) = t1 x^4 + t2 x^2 + t3 x")
    print(f"   {'':<22}{'t1':>10}{'t2':>10}{'t3':>10}")
    for name, values in (("true", THETA_TRUE), ("gradient ascent", theta_hat), ("exact MLE (Newton)", theta_newton),
                         ("standard error", standard_error)):
        print(f"   {name:<22}" + "".join(f"{v:>10.4f}" for v in values.tolist()))
    print(f"   max |theta_hat - theta_true| = {param_error:.4f} = {error_in_se:.2f} standard errors "
          f"(finite data: N = {cfg.n_data}); optimisation gap to the exact MLE = {optimisation_gap:.1e}")
    run.claim("mle_gradient_is_two_phases", "autograd of -l = positive minus negative phase (max abs difference)",
              gradient_gap, "<", 1e-9)
    run.metrics["mle_param_error"] = {"max_abs": param_error, "max_in_standard_errors": error_in_se,
                                      "gap_to_exact_mle": optimisation_gap, "n_data": cfg.n_data}
    run.claim("mle_reaches_exact_mle", "gradient ascent lands on the exact MLE (max |theta - Newton|)",
              optimisation_gap, "<", 1e-3)
    run.claim("mle_error_within_3se", "theta_hat is within 3 standard errors of theta_true (worst of 3)",
              error_in_se, "<", 3.0)

    # if the standard errors are right, z^2 averages to 1 over data sets (a z-test: tolerance 3 SE of the mean)
    z_squared = over_seeds(mean_squared_z, range(run.seed, run.seed + cfg.mle_seeds))
    print(f"   over {cfg.mle_seeds} fresh data sets: mean z^2 = {z_squared} (1 if the standard errors are right)")
    run.metrics["mle_mean_z_squared"] = z_squared.to_json()
    run.claim("mle_standard_errors_right", f"the standard errors are right: mean z^2 over {cfg.mle_seeds} data "
              "sets", z_squared, "within", 1.0, 3 * z_squared.se, reference_label="(within 3 SE)")

    fig, axes = plotting.figure(3, title=f"Maximum likelihood, N = {cfg.n_data}, Adam lr = {cfg.lr:g}")
    xq = quad_x.numpy()
    axes[0].hist(data_1d.numpy(), bins=60, density=True, color="lightgray", label="data")
    for step, snapshot in snapshots.items():
        axes[0].plot(xq, model_density(snapshot).numpy(), label=f"model, step {step}")

    axes[0].set(xlabel="x", ylabel="density", title="the model density moves onto the data", xlim=(-3, 3))
    axes[0].legend(fontsize=10)
    negative = torch.stack(history["negative_phase"]).numpy()  # (steps, 3)
    for i, name in enumerate(("x^4", "x^2", "x")):  # mathtext
        axes[1].plot(negative[:, i], color=f"C{i}", label=rf"$\langle {name} \rangle_\mathrm{{model}}$")
        axes[1].axhline(float(positive_phase[i]), color=f"C{i}", ls="--", lw=0.8)
    axes[1].set(xlabel="step", ylabel="expected statistic (symlog: linear in [-1, 1])", yscale="symlog",
                title=r"solid: $\langle\cdot\rangle_\mathrm{model}$, dashed: $\langle\cdot\rangle_\mathrm{data}$")
    plotting.legend_outside(axes[1])
    thetas = torch.stack(history["theta"]).numpy()  # (steps, 3)
    for i in range(3):
        axes[2].plot(thetas[:, i], color=f"C{i}", label=rf"$\theta_{i + 1}$")
        axes[2].axhline(float(THETA_TRUE[i]), color=f"C{i}", ls=":", lw=0.8)
    axes[2].set(xlabel="step", ylabel="parameter", title="parameters (dotted: truth)")
    plotting.legend_outside(axes[2])
    run.savefig(fig, "fig07_mle_training", key=True)

# %% [markdown]
# **What to notice.** The gradient is positive minus negative phase (a claim: autograd agrees to
# round-off), and training stops when the negative phase (solid) meets the positive phase (dashed):
# maximum likelihood *matches moments*. The optimiser lands on the exact MLE (a claim: within 1e-3 of
# Newton's), which misses the truth by less than 3 standard errors (a claim): the finite sample. Over 100
# fresh data sets the mean squared z-score is 1 (a claim), so the printed standard errors are right. The
# negative phase was exact here by 1-D quadrature; in high dimensions it must come from samples (section 7).

# %% [markdown]
# ## 6. The conditional view: E(x, y)
#
# LeCun's energy-based learning scores a *pair*: $E(x, y)$ is low when label $y$ fits input $x$.
# Inference is an optimisation, $y^* = \arg\min_y E(x, y)$. When $y$ takes a few values, the Gibbs
# distribution over labels is tractable -- it is the softmax
#
# $$p(y \mid x) = \frac{e^{-E(x, y)/T}}{\sum_{y'} e^{-E(x, y')/T}},$$
#
# and its $Z$ is a sum of three terms. Training with cross-entropy is maximum likelihood for it.

# %%
CLASS_MEANS = torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.0, -2.5]])  # (3, 2) the blobs' centres
CLASS_STD = 1.0
LABEL_TEMPERATURES = (0.3, 1.0, 5.0)  # the T of the softmax panels


def make_blobs(n_per_class, generator):
    labels = torch.arange(3).repeat_interleave(n_per_class)
    points = CLASS_MEANS[labels] + CLASS_STD * torch.randn(len(labels), 2, generator=generator)  # (3n, 2)
    return points, labels


class QuadraticLabelEnergy(torch.nn.Module):
    """E(x, y) = 1/2 |x - m_y|^2 / s_y^2 + b_y : one learnable well per label."""

    def __init__(self, n_labels=3):
        super().__init__()
        self.centres = torch.nn.Parameter(torch.zeros(n_labels, 2))
        self.log_scale = torch.nn.Parameter(torch.zeros(n_labels))
        self.offset = torch.nn.Parameter(torch.zeros(n_labels))

    def forward(self, x):  # (B, 2) -> (B, n_labels): the energy of every label
        sq = ((x[:, None, :] - self.centres) ** 2).sum(-1)
        return 0.5 * sq * torch.exp(-2 * self.log_scale) + self.offset


if run.section(6):
    generator_cond = run.generator("conditional")
    x_train, y_train = make_blobs(cfg.n_per_class, generator_cond)  # (3n, 2), (3n,)
    x_test, y_test = make_blobs(cfg.n_per_class, generator_cond)
    label_energy = QuadraticLabelEnergy()
    optimizer = torch.optim.Adam(label_energy.parameters(), lr=cfg.cond_lr)
    for step in range(cfg.cond_steps):
        # -log p(y | x) = E(x, y) + log sum_y' exp(-E(x, y')) : cross-entropy on the logits -E
        loss = torch.nn.functional.cross_entropy(-label_energy(x_train), y_train)
        run.check_finite(loss, step=step, what="conditional loss", field="cond_lr")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    with torch.no_grad():
        test_energies = label_energy(x_test)  # (B, 3)
    accuracy = float((test_energies.argmin(1) == y_test).float().mean())
    # the Bayes rule for these blobs (known means, equal spreads and priors): the nearest class mean
    bayes_accuracy = float((torch.cdist(x_test, CLASS_MEANS).argmin(1) == y_test).float().mean())
    example = x_test[:1]
    with torch.no_grad():
        example_energy = label_energy(example)[0]  # (3,)
    print("\n6. Conditional EBM E(x, y), 3 labels")
    print(f"   test accuracy of y* = argmin_y E(x, y): {accuracy:.3f}   "
          f"(Bayes rule on the same points: {bayes_accuracy:.3f})")
    print(f"   one test point x = ({example[0, 0]:.2f}, {example[0, 1]:.2f}): E(x, y) = "
          + ", ".join(f"{v:.3f}" for v in example_energy.tolist()))
    for t in LABEL_TEMPERATURES:
        print(f"   p(y | x) at T = {t:<4g}: " + ", ".join(f"{v:.3f}" for v in torch.softmax(-example_energy / t, 0)))
    run.metrics.update({"conditional_accuracy": accuracy, "conditional_bayes_accuracy": bayes_accuracy})
    run.claim("conditional_matches_bayes", "argmin_y E(x, y) is as accurate as the Bayes rule (within 0.03)",
              accuracy, "within", bayes_accuracy, 0.03, reference_label="(Bayes rule)")

    fig, axes = plotting.figure(3, title="E(x, y): inference is argmin over y; "
                                         "softmax is the Gibbs distribution over y")
    X, Y, points = plotting.grid_2d((-6, 6, -6, 5), 150)
    with torch.no_grad():
        grid_energy = label_energy(points)  # (G, 3)
    axes[0].contourf(X, Y, grid_energy.argmin(1).reshape(X.shape).numpy(), levels=[-0.5, 0.5, 1.5, 2.5],
                     colors=["#aec7e8", "#ff9896", "#98df8a"], alpha=0.8)
    for label in range(3):
        chosen = x_test[y_test == label]
        axes[0].scatter(chosen[:, 0], chosen[:, 1], s=5, color=f"C{label}", edgecolors="k", linewidths=0.2,
                        label=f"y = {label}")
    axes[0].plot(example[0, 0], example[0, 1], "*", ms=15, color="gold", mec="k", label="the x of the\nnext two panels")
    axes[0].set(title=f"$\\mathrm{{argmin}}_y\\,E(x, y)$; test accuracy {accuracy:.2f}", xlabel="$x_1$",
                ylabel="$x_2$")
    plotting.legend_outside(axes[0])
    axes[1].bar(["y=0", "y=1", "y=2"], example_energy.numpy(), color=["C0", "C1", "C2"])
    axes[1].set(title=f"E(x, y) at the star x = ({example[0, 0]:.1f}, {example[0, 1]:.1f})", ylabel="energy")
    width = 0.25
    for i, t in enumerate(LABEL_TEMPERATURES):
        axes[2].bar(np.arange(3) + (i - 1) * width, torch.softmax(-example_energy / t, 0).numpy(), width,
                    label=f"T = {t:g}")
    axes[2].set(xticks=range(3), xticklabels=["y=0", "y=1", "y=2"], ylabel="probability",
                title=r"$p(y \mid x) = \mathrm{softmax}_y(-E(x, y)/T)$")
    axes[2].legend()
    run.savefig(fig, "fig08_conditional_ebm")

# %% [markdown]
# **What to notice.** The label with the lowest energy wins (left), and $\arg\min_y E(x, y)$ is as
# accurate as the Bayes rule on the same test points (a claim: within 0.03): the learned wells sit where
# they should. The softmax is the Boltzmann distribution of section 2 over three labels, sharper at low
# $T$; its $Z$ is a 3-term sum, which is why classifiers never worry about it. For images ($x$ instead of
# $y$) it is the sum of section 3.

# %% [markdown]
# ## 7. A first look at sampling: Langevin dynamics
#
# When $Z$ is out of reach we can still *sample* from $p$, using only the score. The (unadjusted)
# Langevin algorithm takes a gradient step downhill and adds noise:
#
# $$x_{k+1} = x_k - h\, \nabla_x E(x_k) + \sqrt{2 T h}\; \xi_k, \qquad \xi_k \sim \mathcal{N}(0, I).$$
#
# For small $h$ and many steps, $x_k$ is distributed (nearly) as $e^{-E/T}/Z$. Here are the few lines,
# written out; after them we call `common.samplers.langevin`, which does the same thing. Lesson 07 studies
# samplers (step-size bias, MALA, mixing); the bias of a finite step: docs/derivations/langevin_discretisation.md.

# %%


def langevin_run(seed, bandwidths, well_weights):
    """MMD^2 against fresh exact samples and KL of the well shares, after K and after 2K steps of one run."""
    gen_seed = torch.Generator().manual_seed(seed)
    x = 6 * torch.rand(cfg.n_chains, 2, generator=gen_seed, dtype=torch.float64) - 3  # (n, 2)
    result = {}
    for label in ("K", "2K"):
        x, _ = langevin(landscape.energy, x, cfg.n_langevin_steps, cfg.step_size, T, generator=gen_seed)
        shares, _ = mode_weights(x, MEANS, math.inf)
        result[f"mmd_{label}"] = mmd_multiscale(x, landscape.sample(cfg.n_chains, gen_seed).double(), bandwidths)
        result[f"well_kl_{label}"] = kl_weights(well_weights, shares)
    return result


if run.section(7):
    generator = run.generator("langevin")  # its own stream: --max-enum-units or --n-data leave these draws alone
    chains = 6 * torch.rand(cfg.n_chains, 2, generator=generator, dtype=torch.float64) - 3  # (n, 2) uniform in a box
    path = [chains.clone()]
    keep_every = max(1, cfg.n_langevin_steps // 100)
    for step in progress(range(cfg.n_langevin_steps), desc="Langevin", leave=False):
        chains.requires_grad_(True)
        (grad,) = torch.autograd.grad(landscape.energy(chains).sum(), chains)
        # x <- x - h grad E(x) + sqrt(2 T h) xi
        noise = torch.randn(chains.shape, generator=generator, dtype=chains.dtype)
        chains = (chains - cfg.step_size * grad + math.sqrt(2 * T * cfg.step_size) * noise).detach()
        run.check_finite(chains, step=step, what="a Langevin sample", field="step_size", bound=1e4)
        if (step + 1) % keep_every == 0:
            path.append(chains.clone())
    path = torch.stack(path)  # (n_kept, n_chains, 2)

    # the same sampler from common/ (a single call), on --langevin-seeds independent seeds: one MMD^2 is noisy,
    # so the claim uses the mean over seeds. Every run then continues for K more steps: what does doubling K buy?
    exact_samples = landscape.sample(cfg.n_chains, generator).double()  # (n, 2): possible because we know p
    # RBF bandwidths 1/16, 1/4 and 1 x the median distance: a mode's width, the weights, the layout
    bandwidths = mmd_bandwidths(exact_samples)
    mmd_floor = mmd_noise_floor(lambda n: landscape.sample(n, generator).double(), cfg.n_chains, cfg.mmd_repeats,
                                bandwidth=bandwidths)  # RMS of MMD^2(exact, exact) at the same n: a perfect sampler
    mmd_langevin = mmd_multiscale(chains, exact_samples, bandwidths)
    # the mass nearest each well's centre, from 100 x n exact draws: what the chains' shares should be
    well_weights, _ = mode_weights(landscape.sample(100 * cfg.n_chains, generator).double(), MEANS, math.inf)
    seeds = range(run.seed, run.seed + cfg.langevin_seeds)
    by_seed = over_seeds(lambda seed: langevin_run(seed, bandwidths, well_weights),
                         progress(seeds, desc="Langevin seeds", leave=False))
    kl_line = mode_kl_threshold(cfg.n_chains, len(MEANS))  # the 99.9 % line of correct shares at n draws
    print(f"\n7. Langevin, {cfg.n_chains} chains x K = {cfg.n_langevin_steps} steps, h = {cfg.step_size:g}, T = {T:g}")
    print(f"   MMD^2 (bandwidths {', '.join(f'{b:.2f}' for b in bandwidths)}) noise floor at n = {cfg.n_chains}: "
          f"{mmd_floor:.2e}")
    print(f"   inline chains: MMD^2 = {mmd_langevin:+.2e} = {mmd_langevin / mmd_floor:+.1f} x floor")
    print("   per seed, MMD^2 / floor after K, 2K: " + "; ".join(f"{a / mmd_floor:.2f}, {b / mmd_floor:.2f}" for a, b
                                                             in zip(by_seed["mmd_K"].values, by_seed["mmd_2K"].values)))
    if T != 1.0:
        print("   (with --temperature != 1 the chains target exp(-E/T), so they should NOT match the T = 1 samples)")
    run.metrics.update({"langevin_mmd": by_seed["mmd_K"].mean, "langevin_mmd_baseline": mmd_floor,
                        "langevin_by_seed": {key: stats.to_json() for key, stats in by_seed.items()},
                        "langevin_well_kl_line": kl_line})
    n_seeds = cfg.langevin_seeds
    run.claim("langevin_mmd", f"Langevin, K steps: mean MMD^2 over {n_seeds} seeds below 2x the noise floor",
              by_seed["mmd_K"], "ratio<", mmd_floor, 2.0, reference_label="(floor)")
    run.claim("langevin_mmd_2k", f"Langevin, 2K steps: mean MMD^2 over {n_seeds} seeds below 2x the noise floor",
              by_seed["mmd_2K"], "ratio<", mmd_floor, 2.0, reference_label="(floor)")
    run.claim("langevin_well_shares", "Langevin, K steps: the wells' shares are right (mean KL < 99.9 % line)",
              by_seed["well_kl_K"], "<", kl_line, reference_label="(chi^2 line)")

    fig, axes = plotting.figure(3, title=f"Langevin chains, h = {cfg.step_size:g}, K = {cfg.n_langevin_steps} "
                                         f"steps, T = {T:g}, {cfg.n_chains} chains")
    for ax in axes[:2]:
        plotting.energy_contours(ax, landscape.energy, landscape.bounds, colorbar=False, clip_quantile=ENERGY_CLIP)
    plotting.trajectories(axes[0], path, max_paths=6)
    axes[0].set_title("six chains: start (dot) to end (star)")
    plotting.scatter_samples(axes[1], chains, label="Langevin end points", color="white", size=10, alpha=0.9)
    axes[1].scatter(*exact_samples.T.numpy(), s=14, marker="x", color="C3", linewidths=1.0, label="exact samples")
    axes[1].set(title=f"inline run: MMD$^2$ = {mmd_langevin / mmd_floor:+.1f} x floor")
    plotting.legend_outside(axes[1], markerscale=2)
    for j, label in enumerate(("K", "2K")):
        ratios = np.array(by_seed[f"mmd_{label}"].values) / mmd_floor  # (n_seeds,)
        axes[2].plot(j + np.linspace(-0.08, 0.08, len(ratios)), ratios, "o", color="C0", alpha=0.7,
                     label="one seed" if j == 0 else None)
        axes[2].errorbar(j + 0.2, ratios.mean(), yerr=ratios.std(ddof=1) / math.sqrt(len(ratios)), fmt="s",
                         color="k", capsize=4, label="mean $\\pm$ SE" if j == 0 else None)
    axes[2].axhline(2.0, color="C3", ls="--", label="claim: 2 x floor")
    axes[2].axhline(0.0, color="gray", lw=0.8)
    axes[2].set(xticks=[0, 1], xticklabels=[f"K = {cfg.n_langevin_steps}", f"2K = {2 * cfg.n_langevin_steps}"],
                xlim=(-0.5, 1.5), ylabel="MMD$^2$ / noise floor", title=f"{n_seeds} seeds, multi-bandwidth MMD$^2$")
    plotting.legend_outside(axes[2], fontsize=10)
    run.savefig(fig, "fig09_langevin", key=True)
    gif = plotting.animate_chains_on_axes(
        run.outdir / "anim_langevin.gif", landscape.energy, path, landscape.bounds, keep_every=keep_every,
        step_size=cfg.step_size, temperature=T, clip_quantile=ENERGY_CLIP, max_frames=cfg.gif_frames,
        dpi=run.dpi if run.quick else 100, title="Langevin chains on the 2-D landscape")  # quick: fewer pixels
    run.saved_animation(gif)

# %% [markdown]
# **What to notice.** Chains slide into the nearest well and jitter around it; the noise lets them
# occasionally cross a ridge. The grade is a multi-bandwidth MMD² against its noise floor at the same
# $n$: one run's MMD² scatters by about a floor either way (right panel), so the claims use the mean over
# 5 seeds. The chains pass after $K = 1000$ steps and after $2K$ (claims: below 2x the floor), and the
# wells' shares are right (a claim: KL below the 99.9 % $\chi^2$ line): doubling $K$ buys nothing visible.
# tests/test_mmd_three_wells.py shows that this grade rejects a missing well, wrong weights, wells 1.5x too
# wide and chains left at their start, but NOT wells only 1.2x too wide: a small step-size bias (lesson 07)
# can hide below it. A large `--step-size` overshoots and the guard stops the run.

# %% [markdown]
# ## Summary
#
# 1. An energy defines a density through $p = e^{-E/T}/Z$; $Z$ normalises it, and is exact by
#    quadrature in 1-2 dimensions (here to better than 1e-8 relative error).
# 2. Temperature sharpens or flattens $p$ -- and can move mass from a deep, narrow well to a wide,
#    shallow one, because width (entropy) counts as much as depth.
# 3. $Z$ costs $2^n$ terms for $n$ binary units and $G^d$ grid points in $d$ dimensions: hopeless for images.
# 4. The score $-\nabla_x E$ is free of $Z$; maximum likelihood needs $Z$'s gradient, which is an
#    expectation under the model (the negative phase) -- the reason EBMs need sampling.
# 5. Conditional energies $E(x, y)$ over few labels are tractable (softmax); Langevin dynamics
#    samples from $e^{-E}$ using gradients alone.

# %% [markdown]
# ## Exercises
# Hints and answers: docs/solutions/01_ebm_foundations.md. `--exercise N` runs only the sections exercise N
# needs (EXERCISES above) and then its stub; add the flags the exercise names.
#
# **Exercise 1 (predict-then-tweak, easy): hotter and colder**
# Predict the deep well's mass at T = 1 if it is twice as narrow, then run `--deep-width 0.1 --section 2`.
# Where does the crossover temperature move, and does the Laplace formula still predict it?
#
# **Exercise 2 (predict-then-tweak, easy): how many data points buy one decimal?**
# `mle_param_error` is within three standard errors. Predict it for `--n-data 20000`, then run it
# (`--n-data 20000 --section 5`). Which parameter is hardest to pin down, and why (look at the standard errors)?
#
# **Exercise 3 (predict-then-tweak, medium): a step too far**
# Predict what happens to the Langevin samples at `--step-size 0.2` and at `--step-size 2` (add `--section 7`).
# Which of them trips the divergence guard, and which one just gives wrong samples (compare
# `langevin_mmd` with `langevin_mmd_baseline`)?
#
# **Exercise 4 (extend, medium): Z of a 2-D double well**
# Compute Z of E(x1, x2) = (x1^2 - 1)^2 + x2^2 / 2 by `scipy.integrate.dblquad` and check it against the
# product of two 1-D integrals (why may you factorise?). `--exercise 4` prints the 1-D factor.
#
# **Exercise 5 (think, medium): what a softmax classifier does not model**
# Section 6 never computes the Z of section 3. What question about x can p(y | x) not answer, and what would
# you need? `--exercise 5` shows p(y | x) far from every blob (lesson 09: out-of-distribution detection).
#
# **Exercise 6 (think, hard): why moment matching?**
# Show that at the maximum likelihood of section 5, E_model[x^k] = E_data[x^k] for k = 1, 2, 4 (`--exercise 6`
# prints both sides). Which moments would theta_1 x + theta_2 x^2 match, and what family is that?

# %%
if run.stub(1):
    print(f"\nExercise 1: with --deep-width {cfg.deep_width:g} the deep well holds {deep_well_mass(1.0):.3f} "
          f"of the mass at T = 1 and T* = {t_cross:.3f}; predict both for --deep-width 0.1, then run --section 2.")

if run.stub(2):
    print(f"\nExercise 2: N = {cfg.n_data}: max |theta_hat - theta_true| = {param_error:.4f}, standard errors "
          + ", ".join(f"{v:.4f}" for v in standard_error.tolist()) + "; predict them for --n-data 20000.")

if run.stub(3):
    print(f"\nExercise 3: h = {cfg.step_size:g}: langevin_mmd = {by_seed['mmd_K'].mean:.2e} against the floor "
          f"{mmd_floor:.2e}; predict it for --step-size 0.2 and --step-size 2, then run --section 7.")

if run.stub(4):
    # Stub for exercise 4: the x2 factor of Z is sqrt(2 pi); the x1 factor is a 1-D quadrature.
    x1_factor, _ = integrate.quad(lambda x: math.exp(-((x**2 - 1) ** 2)), -np.inf, np.inf)
    print(f"\nExercise 4 stub: int exp(-(x^2-1)^2) dx = {x1_factor:.6f}; now compute Z with dblquad and compare.")

if run.stub(5):
    far = torch.tensor([[30.0, 30.0]])  # (1, 2): nowhere near the blobs
    with torch.no_grad():
        far_probabilities = torch.softmax(-label_energy(far)[0], 0)
    print("\nExercise 5: p(y | x) at x = (30, 30), far from every blob: "
          + ", ".join(f"{v:.3f}" for v in far_probabilities) + " -- what does p(y | x) not tell you?")

if run.stub(6):
    print("\nExercise 6: <x^4>, <x^2>, <x> under the fitted model: "
          + ", ".join(f"{v:.4f}" for v in model_expectation(theta_hat).tolist())
          + "; in the data: " + ", ".join(f"{v:.4f}" for v in positive_phase.tolist()))

run.finish()
