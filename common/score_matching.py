"""Score matching: learn the score s_theta(x) ~ grad_x log p(x) without ever touching log Z.

A *score function* here maps a batch ``(B, D)`` to a batch of vectors ``(B, D)``; it must treat the
rows independently (no batch norm), so that its Jacobian is block diagonal. Losses return the
batch mean, or the per-sample values ``(B,)`` with ``reduce=False`` (for standard errors).

- ``explicit_score_matching_loss``  1/2 |s_theta(x) - s_data(x)|^2        (Fisher divergence; needs s_data)
- ``implicit_score_matching_loss``  1/2 |s_theta(x)|^2 + tr grad_x s_theta (Hyvarinen 2005; exact trace)
- ``sliced_score_matching_loss``    tr replaced by v^T (grad_x s) v, v ~ N(0, I)   (Song et al. 2019)
- ``denoising_score_matching_loss`` 1/2 |s_theta(x + sigma eps) + eps / sigma|^2    (Vincent 2011)
- ``tweedie_denoise``               E[x | x_noisy] = x_noisy + sigma^2 grad log p_sigma(x_noisy)
- ``jacobian_trace`` / ``sliced_trace``  the exact trace (torch.func) and its random-projection estimate
- ``score_from_energy``             s(x) = -grad_x E(x), written with torch.func so it composes with the above
- ``gaussian_score`` / ``gaussian_sm_fit``  the Gaussian case, where score matching has a closed form

Importing this module has no side effects.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

ScoreFn = Callable[[torch.Tensor], torch.Tensor]


def _reduce(values: torch.Tensor, reduce: bool) -> torch.Tensor:
    return values.mean() if reduce else values


# ---------------------------------------------------------------------------------------------
# Scores from energies, and the trace of their Jacobian
# ---------------------------------------------------------------------------------------------


def score_from_energy(energy_fn: Callable[[torch.Tensor], torch.Tensor]) -> ScoreFn:
    """s(x) = -grad_x E(x) for an energy ``(B, D) -> (B,)``, built with ``torch.func.grad``.

    Unlike ``torch.autograd.grad`` this composes with ``torch.func`` (``jacobian_trace`` below),
    and ordinary ``loss.backward()`` still reaches the parameters of ``energy_fn``.
    """

    def single(x: torch.Tensor) -> torch.Tensor:  # (D,) -> (D,)
        return -torch.func.grad(lambda z: energy_fn(z[None]).sum())(x)

    return torch.func.vmap(single)


def jacobian_and_score(score_fn: ScoreFn, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(J, s)``: the Jacobians ``(B, D, D)`` with J[b, i, j] = d s_i / d x_j at x_b, and s(x) ``(B, D)``.

    torch.func.jacrev of one sample, vmapped over the batch: D reverse passes, done as one batch.
    """

    def single(z: torch.Tensor):  # (D,) -> ((D,), aux (D,))
        s = score_fn(z[None])[0]
        return s, s

    return torch.func.vmap(torch.func.jacrev(single, has_aux=True))(x)


def jacobian_trace(score_fn: ScoreFn, x: torch.Tensor) -> torch.Tensor:
    """tr grad_x s(x) (the divergence of s) for every sample, exactly: ``(B,)``."""
    jac, _ = jacobian_and_score(score_fn, x)
    return jac.diagonal(dim1=-2, dim2=-1).sum(-1)


def sliced_trace(
    score_fn: ScoreFn,
    x: torch.Tensor,
    n_projections: int = 1,
    generator: torch.Generator | None = None,
    distribution: str = "gaussian",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random-projection (Hutchinson) estimates of tr grad_x s(x): ``(estimates (M, B), s(x) (B, D))``.

    tr J = E_v[v^T J v] for any v with E[v v^T] = I (Gaussian or Rademacher). Each projection costs
    one backward pass, v^T J = grad_x (v . s(x)), whatever the dimension D. The graph is kept
    (``create_graph=True``), so the estimates can be used in a training loss.
    """
    if distribution not in ("gaussian", "rademacher"):
        raise ValueError(f"distribution must be gaussian or rademacher (got {distribution!r})")
    s, _, quadratic_forms = _random_projections(score_fn, x, n_projections, generator, distribution)
    return quadratic_forms, s


def _random_projections(score_fn, x, n_projections, generator, distribution="gaussian"):
    """``(s(x) (B, D), v (M, B, D), v^T J v (M, B))`` for M random directions v, graph kept."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        s = score_fn(x)  # (B, D)
        directions, quadratic_forms = [], []
        for _ in range(n_projections):
            v = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)  # (B, D)
            if distribution == "rademacher":
                v = v.sign()
            # v^T J v = v . grad_x (v . s(x))   (one backward pass, whatever D is)
            (vjp,) = torch.autograd.grad((s * v).sum(), x, create_graph=True)  # (B, D)
            directions.append(v)
            quadratic_forms.append((vjp * v).sum(-1))
    return s, torch.stack(directions), torch.stack(quadratic_forms)


# ---------------------------------------------------------------------------------------------
# Objectives
# ---------------------------------------------------------------------------------------------


def explicit_score_matching_loss(
    score_fn: ScoreFn, true_score_fn: ScoreFn, x: torch.Tensor, reduce: bool = True
) -> torch.Tensor:
    """The Fisher divergence, when the data score is known: 1/2 |s_theta(x) - grad log p_data(x)|^2."""
    # J_ESM(theta) = E_{p_data} 1/2 |s_theta(x) - s_data(x)|^2
    diff = score_fn(x) - true_score_fn(x)  # (B, D)
    return _reduce(0.5 * (diff**2).sum(-1), reduce)


def implicit_score_matching_loss(score_fn: ScoreFn, x: torch.Tensor, reduce: bool = True) -> torch.Tensor:
    """Hyvarinen's objective with the exact trace: 1/2 |s_theta(x)|^2 + tr grad_x s_theta(x).

    Equals the explicit objective minus 1/2 E|s_data|^2, a constant that does not depend on theta
    (integration by parts; docs/derivations/score_matching_objective.md).
    """
    jac, s = jacobian_and_score(score_fn, x)  # (B, D, D), (B, D)
    # J_ISM(theta) = E_{p_data} [ 1/2 |s_theta(x)|^2 + tr grad_x s_theta(x) ]
    return _reduce(0.5 * (s**2).sum(-1) + jac.diagonal(dim1=-2, dim2=-1).sum(-1), reduce)


def sliced_score_matching_loss(
    score_fn: ScoreFn,
    x: torch.Tensor,
    n_projections: int = 1,
    generator: torch.Generator | None = None,
    variance_reduction: bool = True,
    reduce: bool = True,
) -> torch.Tensor:
    """Sliced score matching (Song et al. 2019): the trace replaced by v^T (grad_x s) v.

    ``variance_reduction=True`` keeps 1/2 |s|^2 exact (SSM-VR); ``False`` uses 1/2 (v . s)^2 too.
    Unbiased for the implicit objective either way; the cost does not grow with D.
    """
    s, v, quadratic_forms = _random_projections(score_fn, x, n_projections, generator)  # (B,D), (M,B,D), (M,B)
    norm_term = 0.5 * (s**2).sum(-1) if variance_reduction else 0.5 * (s * v).sum(-1) ** 2
    # J_SSM = E_v [ v^T grad_x s v + 1/2 (v . s)^2 ]   (VR: the second term's mean, 1/2 |s|^2, exactly)
    return _reduce((norm_term + quadratic_forms).mean(0), reduce)


def denoising_score_matching_loss(
    score_fn: Callable,
    x: torch.Tensor,
    sigma: float | torch.Tensor,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
    conditional: bool = False,
    sigma2_weighting: bool = False,
    reduce: bool = True,
) -> torch.Tensor:
    """Denoising score matching (Vincent 2011): regress s(x + sigma eps) onto -eps / sigma.

    Its minimiser is the score of the *noised* density p_sigma = p_data * N(0, sigma^2 I), not of
    p_data. ``sigma`` is a float or a per-sample tensor ``(B,)``; ``conditional=True`` calls
    ``score_fn(x_noisy, sigma)`` (a noise-conditional network, lesson 10); ``sigma2_weighting=True``
    multiplies by lambda(sigma) = sigma^2 (Song & Ermon 2019), i.e. 1/2 |sigma s + eps|^2.
    ``noise`` fixes eps (tests); otherwise it is drawn from ``generator``.
    """
    eps = noise if noise is not None else torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    sigma_t = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    sigma_b = sigma_t.reshape(-1, *([1] * (x.dim() - 1))) if sigma_t.dim() > 0 else sigma_t  # broadcast to (B, D)
    x_noisy = x + sigma_b * eps  # (B, D)
    s = score_fn(x_noisy, sigma_t) if conditional else score_fn(x_noisy)  # (B, D)
    # J_DSM = E 1/2 | s(x + sigma eps) - (-eps / sigma) |^2
    per_sample = 0.5 * ((s + eps / sigma_b) ** 2).flatten(1).sum(-1)  # (B,)
    if sigma2_weighting:
        per_sample = per_sample * sigma_t**2
    return _reduce(per_sample, reduce)


def tweedie_denoise(score_fn: ScoreFn, x_noisy: torch.Tensor, sigma: float) -> torch.Tensor:
    """Tweedie's formula: E[x | x_noisy] = x_noisy + sigma^2 grad log p_sigma(x_noisy).

    Exact when ``score_fn`` is the score of the noised density; with a DSM-trained score it is the
    model's best denoiser.
    """
    return x_noisy + sigma**2 * score_fn(x_noisy)


# ---------------------------------------------------------------------------------------------
# The Gaussian case
# ---------------------------------------------------------------------------------------------


def gaussian_score(x: torch.Tensor, mean: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """grad_x log N(x; mean, precision^-1) = -P (x - mean), for a batch ``(B, D)``."""
    return -(x - mean) @ precision.T


def _symmetric_from_params(params: torch.Tensor, dim: int) -> torch.Tensor:
    rows, cols = torch.triu_indices(dim, dim)
    upper = torch.zeros(dim, dim, dtype=params.dtype, device=params.device).index_put((rows, cols), params)
    return upper + upper.T - torch.diag(upper.diagonal())


def gaussian_sm_fit(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Score-matching estimate ``(mean, precision)`` of a Gaussian energy E(x) = 1/2 x^T P x - h^T x.

    The model score s(x) = -P x + h is linear in theta = (upper triangle of P, h), so the implicit
    objective is *quadratic* in theta and one Newton step (exact Hessian, torch.func) lands on its
    minimiser. Nothing Gaussian-specific is used beyond the model: the objective is the generic
    ``implicit_score_matching_loss`` with the exact trace. Work in float64 for a clean comparison.
    """
    dim = x.shape[1]
    n_tri = dim * (dim + 1) // 2

    def objective(theta: torch.Tensor) -> torch.Tensor:
        precision, h = _symmetric_from_params(theta[:n_tri], dim), theta[n_tri:]
        return implicit_score_matching_loss(lambda z: -z @ precision.T + h, x)

    theta0 = torch.zeros(n_tri + dim, dtype=x.dtype, device=x.device)
    grad = torch.func.grad(objective)(theta0)
    hessian = torch.func.jacrev(torch.func.grad(objective))(theta0)  # reverse-over-reverse: no forward-mode AD
    # a quadratic J(theta) is minimised by theta* = theta0 - H^{-1} grad J(theta0)
    theta = theta0 - torch.linalg.solve(hessian, grad)
    precision, h = _symmetric_from_params(theta[:n_tri], dim), theta[n_tri:]
    return torch.linalg.solve(precision, h), precision
