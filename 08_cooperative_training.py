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

Run:  python 08_cooperative_training.py            (default, ~4 minutes of CPU time on a 2-core laptop)
      python 08_cooperative_training.py --quick    (about 20 s; every code path runs)
      python 08_cooperative_training.py --help     (every hyperparameter, with advice)
      python 08_cooperative_training.py --show     (also open the figure windows)

Figures (outputs/08_cooperative_training/):
  fig01_forward_vs_reverse_kl.png   one Gaussian fitted to two modes: forward fit, both reverse optima, the landscape
  fig02_dv_critic.png               Donsker-Varadhan critics against log q/p, and their KL estimates against quadrature

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
"""

# %% [markdown]
# # Lesson 08 -- Cooperative and adversarial training, JEM, forward vs reverse KL
#
# ## Setup
# Every number a student may want to change is a field of `Config` (and a flag: `--dv-steps 1000`).

# %%
from dataclasses import dataclass

from common.config import between, count, parse_flags, positive


@dataclass
class Config:
    # -- section 1: one Gaussian fitted to a two-mode mixture p = w N(m1, s^2) + (1 - w) N(m2, s^2)
    mix_means: tuple[float, ...] = between((-2.0, 2.0), -10, 10)  # the two mode centres; farther = two sharper
        # reverse-KL optima, closer (|m1 - m2| < ~2.5 s) = one optimum in the middle
    mix_std: float = positive(0.6)  # std s of each mode
    mix_weight: float = between(0.6, 0, 1, open_low=True, open_high=True)  # weight w of the first mode
    dv_hidden: int = count(32)  # hidden width of the DV critic T(x) (1 -> h -> h -> 1, SiLU)
    dv_steps: int = count(400)  # Adam steps per critic; with fewer the estimate (a lower bound) comes out low
    dv_batch: int = count(1000, minimum=10)  # fresh samples of q and of p per critic step
    dv_lr: float = positive(1e-2)  # critic learning rate (cosine-decayed); at 3e-3 the forward-fit estimate is ~9 % low
    dv_eval: int = count(50000, minimum=100)  # held-out samples of each for the final estimate (its s.e. ~1/sqrt)


QUICK = {"dv_steps": 150, "dv_batch": 500, "dv_eval": 5000}


def check(cfg):
    if len(cfg.mix_means) != 2:
        raise ValueError("--mix-means needs two numbers (the two mode centres)")


cfg, flags = parse_flags(Config, "08_cooperative_training", __doc__, quick=QUICK, check=check, exercises=())

import math  # noqa: E402  (heavy imports after the flags, so --help answers at once)

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from scipy import optimize, special, stats  # noqa: E402

from common import plotting  # noqa: E402
from common.divergences import donsker_varadhan_bound, donsker_varadhan_se, kl_by_quadrature  # noqa: E402
from common.lesson import start_lesson  # noqa: E402
from common.nets import mlp  # noqa: E402
from common.training import Trainer  # noqa: E402

run = start_lesson(cfg, flags)
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
mus, sds = np.linspace(mix_means.min() - 1.5, mix_means.max() + 1.5, 90), np.geomspace(0.2, 4.0, 70)
log_q = stats.norm.logpdf(x_grid[None, None], mus[None, :, None], sds[:, None, None])  # (S, M, X)
landscape = np.trapezoid(np.exp(log_q) * (log_q - mixture_log_pdf(x_grid)), x_grid, axis=-1)  # (S, M)

fig, axes = plotting.figure(2, title=f"One Gaussian fitted to two modes (w = {mix_weights[0]:g}, "
                                     f"means {mix_means[0]:g}, {mix_means[1]:g}, std {cfg.mix_std:g})")
xs = np.linspace(mix_means.min() - 4, mix_means.max() + 4, 600)
axes[0].fill_between(xs, np.exp(mixture_log_pdf(xs)), color="gray", alpha=0.35, label="p (data)")
axes[0].plot(xs, stats.norm.pdf(xs, mu_fwd, sd_fwd), lw=2, label=f"forward KL (ML): KL(p‖q) = {kl_fwd:.2f}")
for k, fit in enumerate(reverse_fits):
    axes[0].plot(xs, stats.norm.pdf(xs, fit["mean"], fit["std"]), lw=2, ls="--",
                 label=f"reverse KL optimum {k + 1}: KL(q‖p) = {fit['kl_reverse']:.2f}")
axes[0].set(xlabel="x", ylabel="density", title="forward covers, reverse seeks a mode", ylim=(0, None))
axes[0].legend(loc="upper left")
levels = np.geomspace(landscape.min(), np.quantile(landscape, 0.9), 22)  # log-spaced: both basins show
contour = axes[1].contourf(mus, sds, landscape, levels=levels, norm=LogNorm(), extend="max")
fig.colorbar(contour, ax=axes[1], label="KL(q‖p) (nats, log scale)", format="%.2g")
axes[1].plot([f["mean"] for f in reverse_fits], [f["std"] for f in reverse_fits], "r*", ms=14, mec="w",
             label="reverse optima (scipy)")
axes[1].plot(mu_fwd, sd_fwd, "wo", ms=9, mec="k", label="forward (moment matching)")
axes[1].set(yscale="log", xlabel="mean μ of q", ylabel="std σ of q", title="reverse KL over (μ, σ): two basins")
axes[1].set_yticks([0.25, 0.5, 1, 2, 4], labels=["0.25", "0.5", "1", "2", "4"], minor=False)
axes[1].yaxis.set_minor_locator(plt.NullLocator())
axes[1].legend(loc="upper right")
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
    axes[0].plot(xs_t.cpu()[:, 0], exact, color=color, lw=1, ls=":")
axes[0].set(xlabel="x", ylabel="critic T(x) (shifted)", title="learned T (solid) vs log q/p (dotted)", ylim=(-8, 8))
axes[0].legend(loc="lower left")
pos = np.arange(len(dv_rows))
axes[1].bar(pos - 0.2, [r["exact"] for r in dv_rows], 0.4, label="exact KL(q‖p), quadrature")
axes[1].bar(pos + 0.2, [r["estimate"] for r in dv_rows], 0.4, yerr=[2 * r["se"] for r in dv_rows], capsize=4,
            label="DV estimate ± 2 s.e.")
axes[1].set(xticks=pos, ylabel="KL(q‖p) (nats)", title=f"max relative error {dv_rel:.1%} (target 10 %)")
axes[1].set_xticklabels([r["fit"].replace(" optimum", "\noptimum") for r in dv_rows], fontsize=8)
axes[1].legend(loc="upper right")
run.savefig(fig, "fig02_dv_critic")

# What to notice: where q has mass, the learned critic follows log q/p; where q has none it is free
# (the bound does not care), which is why the curves part ways in the tails. The estimate is a LOWER
# bound: an under-trained critic under-estimates the KL. The largest KL (the forward fit) is the hardest,
# because log E_p[e^T] is carried by the few p-samples between the modes where q/p is large: the s.e.
# grows like e^KL, the known weakness of DV and MINE-type estimators (McAllester and Stratos 2020).

run.finish()
