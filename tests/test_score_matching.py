"""common/score_matching.py against answers known independently of it.

Closed forms used: the divergence of a linear field (tr A) and of x |x|^2 ((D + 2) |x|^2); the
variance of a Gaussian quadratic form; Gaussian moments; the MLE of a Gaussian (sample mean,
inverse biased covariance); the score of N(m, C) convolved with N(0, s^2 I); Gaussian conditioning.
"""

import math

import torch

from common.score_matching import (
    denoising_score_matching_loss,
    explicit_score_matching_loss,
    gaussian_score,
    gaussian_sm_fit,
    implicit_score_matching_loss,
    jacobian_trace,
    score_from_energy,
    sliced_score_matching_loss,
    sliced_trace,
    tweedie_denoise,
)

DTYPE = torch.float64


def random_spd(dim, generator, jitter=0.5):
    a = torch.randn(dim, dim, generator=generator, dtype=DTYPE)
    return a @ a.T / dim + jitter * torch.eye(dim, dtype=DTYPE)


def test_exact_trace_of_linear_score_is_trace_of_matrix():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(5, 5, generator=g, dtype=DTYPE)
    b = torch.randn(5, generator=g, dtype=DTYPE)
    x = torch.randn(7, 5, generator=g, dtype=DTYPE)
    # s(x) = A x + b has Jacobian A everywhere, so div s = tr A
    trace = jacobian_trace(lambda z: z @ A.T + b, x)
    torch.testing.assert_close(trace, A.trace().expand(7), rtol=0, atol=1e-12)


def test_exact_trace_of_nonlinear_scores():
    g = torch.Generator().manual_seed(1)
    dim = 4
    x = torch.randn(9, dim, generator=g, dtype=DTYPE)
    # s(x) = -x |x|^2:  d s_i / d x_i = -|x|^2 - 2 x_i^2,  so div s = -(D + 2) |x|^2
    trace = jacobian_trace(lambda z: -z * (z**2).sum(-1, keepdim=True), x)
    torch.testing.assert_close(trace, -(dim + 2) * (x**2).sum(-1), rtol=1e-12, atol=1e-12)
    # s(x) = tanh(W x):  div s = sum_i W_ii (1 - tanh^2((W x)_i))
    W = torch.randn(dim, dim, generator=g, dtype=DTYPE)
    expected = ((1 - torch.tanh(x @ W.T) ** 2) * W.diagonal()).sum(-1)
    torch.testing.assert_close(jacobian_trace(lambda z: torch.tanh(z @ W.T), x), expected, rtol=1e-12, atol=1e-12)


def test_score_from_energy_matches_gaussian_score_and_laplacian():
    g = torch.Generator().manual_seed(2)
    P = random_spd(3, g)
    m = torch.randn(3, generator=g, dtype=DTYPE)
    x = torch.randn(6, 3, generator=g, dtype=DTYPE)
    score = score_from_energy(lambda z: 0.5 * (((z - m) @ P) * (z - m)).sum(-1))
    torch.testing.assert_close(score(x), -(x - m) @ P, rtol=1e-12, atol=1e-12)
    # div of -P (x - m) is -tr P
    torch.testing.assert_close(jacobian_trace(score, x), -P.trace().expand(6), rtol=1e-12, atol=1e-12)


def test_sliced_trace_is_unbiased_within_standard_error():
    g = torch.Generator().manual_seed(3)
    dim, n_proj = 6, 4000
    A = torch.randn(dim, dim, generator=g, dtype=DTYPE)
    x = torch.randn(1, dim, generator=g, dtype=DTYPE)
    estimates, _ = sliced_trace(lambda z: z @ A.T, x, n_projections=n_proj, generator=g)  # (M, 1)
    # For v ~ N(0, I): E[v^T A v] = tr A and Var[v^T A v] = 2 tr(S^2) with S = (A + A^T)/2,
    # so the mean of M projections has standard error sqrt(2 tr(S^2) / M) (known, not estimated).
    S = 0.5 * (A + A.T)
    se = math.sqrt(2 * float((S @ S).trace()) / n_proj)
    assert abs(float(estimates.mean()) - float(A.trace())) < 4 * se
    # The empirical variance agrees with 2 tr(S^2) too. With eigenvalues l_i of S, v^T S v = sum l_i z_i^2 has
    # cumulants k_n = 2^(n-1) (n-1)! sum l_i^n, so its kurtosis is 3 + 12 sum l^4 / (sum l^2)^2 and the sample
    # variance has relative standard error sqrt((kurtosis - 1) / M).
    lam = torch.linalg.eigvalsh(S)
    kurtosis = 3 + 12 * float((lam**4).sum() / (lam**2).sum() ** 2)
    rel_se = math.sqrt((kurtosis - 1) / n_proj)
    assert abs(float(estimates.var()) / (2 * float((S @ S).trace())) - 1) < 4 * rel_se
    # Rademacher projections are unbiased as well; Var = 2 (tr(S^2) - sum_i S_ii^2)
    estimates, _ = sliced_trace(lambda z: z @ A.T, x, n_projections=n_proj, generator=g, distribution="rademacher")
    se_r = math.sqrt(2 * (float((S @ S).trace()) - float((S.diagonal() ** 2).sum())) / n_proj)
    assert abs(float(estimates.mean()) - float(A.trace())) < 4 * se_r


def test_sliced_loss_averages_to_implicit_loss():
    g = torch.Generator().manual_seed(4)
    dim, n_proj = 4, 4000
    A = torch.randn(dim, dim, generator=g, dtype=DTYPE)
    x = torch.randn(1, dim, generator=g, dtype=DTYPE)

    def score(z):
        return z @ A.T

    exact = float(implicit_score_matching_loss(score, x))
    # with variance reduction the per-projection loss is 1/2|s|^2 + v^T A v: same SE as the trace
    S = 0.5 * (A + A.T)
    se = math.sqrt(2 * float((S @ S).trace()) / n_proj)
    ssm = sliced_score_matching_loss(score, x, n_projections=n_proj, generator=g).item()
    assert abs(ssm - exact) < 4 * se


def test_implicit_minus_explicit_is_constant_across_theta():
    """ESM(theta) - ISM(theta) = 1/2 E|s_data|^2 = 1/2 tr(C^-1) for data N(m, C), at every theta."""
    g = torch.Generator().manual_seed(5)
    dim, n = 3, 200_000
    C = random_spd(dim, g)
    m = torch.randn(dim, generator=g, dtype=DTYPE)
    x = m + torch.randn(n, dim, generator=g, dtype=DTYPE) @ torch.linalg.cholesky(C).T
    P_data = torch.linalg.inv(C)

    def true_score(z):
        return gaussian_score(z, m, P_data)

    constant = 0.5 * float(P_data.trace())  # E|P (x - m)|^2 = tr(P C P) = tr P
    for _ in range(4):
        P = random_spd(dim, g, jitter=0.2)
        mu = torch.randn(dim, generator=g, dtype=DTYPE)

        def model_score(z, P=P, mu=mu):
            return gaussian_score(z, mu, P)

        esm = explicit_score_matching_loss(model_score, true_score, x, reduce=False)
        ism = implicit_score_matching_loss(model_score, x, reduce=False)
        diff = esm - ism  # (n,)
        # Each difference is a sample mean: its standard error is std / sqrt(n)
        se = float(diff.std()) / math.sqrt(n)
        assert abs(float(diff.mean()) - constant) < 4 * se
        # and ESM itself matches its Gaussian closed form:
        # E 1/2|P(x-mu) - P_d(x-m)|^2 = 1/2 tr(D C D^T) + 1/2 |P (m - mu)|^2,  D = P - P_d
        D = P - P_data
        esm_exact = 0.5 * float((D @ C @ D.T).trace()) + 0.5 * float(((m - mu) @ P.T).pow(2).sum())
        assert abs(float(esm.mean()) - esm_exact) < 4 * float(esm.std()) / math.sqrt(n)


def test_gaussian_sm_fit_equals_mle():
    g = torch.Generator().manual_seed(6)
    dim, n = 4, 300
    C = random_spd(dim, g)
    x = 2.0 + torch.randn(n, dim, generator=g, dtype=DTYPE) @ torch.linalg.cholesky(C).T
    mean, precision = gaussian_sm_fit(x)
    # MLE of a Gaussian: the sample mean and the inverse of the 1/n (biased) sample covariance
    centred = x - x.mean(0)
    mle_precision = torch.linalg.inv(centred.T @ centred / n)
    torch.testing.assert_close(mean, x.mean(0), rtol=0, atol=1e-9)
    torch.testing.assert_close(precision, mle_precision, rtol=0, atol=1e-9)


def test_dsm_minimiser_is_the_noised_gaussian_score():
    """For data N(m, C) the DSM optimum is the score of N(m, C + s^2 I): -(C + s^2 I)^-1 (x - m)."""
    g = torch.Generator().manual_seed(7)
    dim, n, sigma = 2, 400_000, 0.7
    C = random_spd(dim, g)
    m = torch.tensor([1.0, -0.5], dtype=DTYPE)
    x = m + torch.randn(n, dim, generator=g, dtype=DTYPE) @ torch.linalg.cholesky(C).T
    eps = torch.randn(n, dim, generator=g, dtype=DTYPE)

    def loss(theta):  # linear score model s(z) = W z + b, theta = (W, b) flattened
        W, b = theta[: dim * dim].reshape(dim, dim), theta[dim * dim :]
        return denoising_score_matching_loss(lambda z: z @ W.T + b, x, sigma, noise=eps)

    theta0 = torch.zeros(dim * dim + dim, dtype=DTYPE)
    # the loss is quadratic in theta: one Newton step is its exact minimiser
    theta = theta0 - torch.linalg.solve(torch.func.jacrev(torch.func.grad(loss))(theta0), torch.func.grad(loss)(theta0))
    W, b = theta[: dim * dim].reshape(dim, dim), theta[dim * dim :]
    W_exact = -torch.linalg.inv(C + sigma**2 * torch.eye(dim, dtype=DTYPE))
    # Least-squares coefficients: SE of W_ij ~ sqrt(residual variance / (n var(x_noisy_j))).
    # The residual -eps/s - W x_noisy has variance <= 1/s^2 per coordinate and var(x_noisy) >= s^2,
    # so SE <= 1 / (s^2 sqrt(n)); we allow 5 of those.
    tol = 5 / (sigma**2 * math.sqrt(n))
    assert float((W - W_exact).abs().max()) < tol
    assert float((b - (-W_exact @ m)).abs().max()) < tol * (1 + float(m.abs().max()))


def test_dsm_options_agree_with_their_formulas():
    g = torch.Generator().manual_seed(8)
    x = torch.randn(5, 3, generator=g, dtype=DTYPE)
    eps = torch.randn(5, 3, generator=g, dtype=DTYPE)
    sigma = torch.tensor([0.1, 0.2, 0.5, 1.0, 2.0], dtype=DTYPE)

    def cond_score(z, s):
        return -z / (1 + s[:, None] ** 2)

    got = denoising_score_matching_loss(cond_score, x, sigma, noise=eps, conditional=True, sigma2_weighting=True,
                                        reduce=False)
    x_noisy = x + sigma[:, None] * eps
    # lambda(s) * 1/2 |s_theta + eps/s|^2 with lambda = s^2 equals 1/2 |s s_theta + eps|^2
    expected = 0.5 * ((sigma[:, None] * cond_score(x_noisy, sigma) + eps) ** 2).sum(-1)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_tweedie_is_the_gaussian_posterior_mean():
    g = torch.Generator().manual_seed(9)
    dim, sigma, n = 3, 0.8, 200_000
    C = random_spd(dim, g)
    m = torch.randn(dim, generator=g, dtype=DTYPE)
    eye = torch.eye(dim, dtype=DTYPE)
    noised_precision = torch.linalg.inv(C + sigma**2 * eye)
    x = m + torch.randn(n, dim, generator=g, dtype=DTYPE) @ torch.linalg.cholesky(C).T
    x_noisy = x + sigma * torch.randn(n, dim, generator=g, dtype=DTYPE)
    denoised = tweedie_denoise(lambda z: gaussian_score(z, m, noised_precision), x_noisy, sigma)
    # Gaussian conditioning: E[x | y] = m + C (C + s^2 I)^-1 (y - m), Cov[x | y] = C - C (C + s^2 I)^-1 C
    posterior_mean = m + (x_noisy - m) @ (C @ noised_precision).T
    torch.testing.assert_close(denoised, posterior_mean, rtol=1e-10, atol=1e-10)
    # and its mean squared error is the posterior variance trace (within the SE of a sample mean)
    sq_err = ((denoised - x) ** 2).sum(-1)
    post_var = float((C - C @ noised_precision @ C).trace())
    assert abs(float(sq_err.mean()) - post_var) < 4 * float(sq_err.std()) / math.sqrt(n)


def test_implicit_loss_gradients_reach_network_parameters():
    """Exact trace through torch.func still back-propagates to parameters (compare with a loop)."""
    torch.manual_seed(10)
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()
    x = torch.randn(5, 3, dtype=DTYPE)
    implicit_score_matching_loss(net, x).backward()
    grad_func = net[0].weight.grad.clone()
    net.zero_grad()
    # reference: the trace as a loop of D autograd calls, kept in the graph
    xr = x.clone().requires_grad_(True)
    s = net(xr)
    trace = sum(torch.autograd.grad(s[:, i].sum(), xr, create_graph=True)[0][:, i] for i in range(3))
    (0.5 * (s**2).sum(-1) + trace).mean().backward()
    torch.testing.assert_close(grad_func, net[0].weight.grad, rtol=1e-10, atol=1e-12)
