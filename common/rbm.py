"""The restricted Boltzmann machine (binary visible v, binary hidden h), shared by lessons 04 and 05.

E(v, h) = -b^T v - c^T h - v^T W h
F(v)    = -log sum_h exp(-E(v, h)) = -b^T v - sum_j softplus(c_j + v^T W_:j)
p(h_j = 1 | v) = sigmoid(c_j + v^T W_:j),   p(v_i = 1 | h) = sigmoid(b_i + W_i: h)

Exact log Z enumerates the smaller layer (2^min(n_v, n_h) terms), which is seconds for 20 hidden
units even with 784 visible ones; AIS (Salakhutdinov & Murray 2008) estimates it for bigger models.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from common.boltzmann import all_binary_states


def bernoulli(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw 0/1 with the given probabilities; a CPU generator also works for tensors on a GPU."""
    if generator is None or generator.device == probs.device:
        return torch.bernoulli(probs, generator=generator)
    uniform = torch.rand(probs.shape, generator=generator, dtype=probs.dtype, device=generator.device)
    return (uniform.to(probs.device) < probs).to(probs.dtype)


def _draw_device(generator: torch.Generator | None, like: torch.Tensor) -> torch.device:
    """Random numbers are drawn where their generator lives (``like``'s device without one)."""
    return generator.device if generator is not None else like.device


class RBM:
    """Parameters ``W (n_v, n_h)``, ``b (n_v,)``, ``c (n_h,)`` as plain tensors (no autograd needed)."""

    def __init__(self, n_visible: int, n_hidden: int, weight_scale: float = 0.01, visible_bias=None,
                 generator: torch.Generator | None = None, device=None, dtype=torch.float32):
        # drawn on the generator's device (a CUDA generator cannot draw on the CPU), then moved
        draw_on = generator.device if generator is not None else device
        self.W = (weight_scale * torch.randn(n_visible, n_hidden, generator=generator, dtype=dtype,
                                             device=draw_on)).to(device)
        self.b = torch.zeros(n_visible, dtype=dtype, device=device) if visible_bias is None else \
            torch.as_tensor(visible_bias, dtype=dtype, device=device).clone()
        self.c = torch.zeros(n_hidden, dtype=dtype, device=device)

    @classmethod
    def from_tensors(cls, W, b, c) -> RBM:
        rbm = cls.__new__(cls)
        rbm.W, rbm.b, rbm.c = W.clone(), b.clone(), c.clone()
        return rbm

    @property
    def n_visible(self) -> int:
        return self.W.shape[0]

    @property
    def n_hidden(self) -> int:
        return self.W.shape[1]

    def parameters(self) -> list[torch.Tensor]:
        return [self.W, self.b, self.c]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"W": self.W.cpu(), "b": self.b.cpu(), "c": self.c.cpu()}

    # -- energies -------------------------------------------------------------------------
    def energy(self, v: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """E(v, h) = -b.v - c.h - v^T W h for batches ``(B, n_v)``, ``(B, n_h)``; returns ``(B,)``."""
        return -(v @ self.b) - (h @ self.c) - ((v @ self.W) * h).sum(1)

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        """F(v) = -b.v - sum_j softplus(c_j + (v W)_j); p(v) = exp(-F(v)) / Z (in the dtype of ``v``)."""
        W, b, c = (t.to(v.dtype) for t in self.parameters())
        return -(v @ b) - F.softplus(v @ W + c).sum(1)

    def hidden_free_energy(self, h: torch.Tensor) -> torch.Tensor:
        """F(h) = -c.h - sum_i softplus(b_i + (W h)_i): the visible layer summed out, p(h) = exp(-F(h)) / Z.

        Computed in the dtype of ``h`` (pass float64 states for exact log Z); returns ``(B,)``.
        """
        W, b, c = (t.to(h.dtype) for t in self.parameters())
        return -(h @ c) - F.softplus(h @ W.T + b).sum(1)

    # -- conditionals ---------------------------------------------------------------------
    def hidden_probs(self, v: torch.Tensor) -> torch.Tensor:
        """p(h_j = 1 | v) = sigmoid(c_j + (v W)_j), shape ``(B, n_h)``."""
        return torch.sigmoid(v @ self.W + self.c)

    def visible_probs(self, h: torch.Tensor) -> torch.Tensor:
        """p(v_i = 1 | h) = sigmoid(b_i + (W h)_i), shape ``(B, n_v)``."""
        return torch.sigmoid(h @ self.W.T + self.b)

    def sample_hidden(self, v, generator=None):
        probs = self.hidden_probs(v)
        return bernoulli(probs, generator), probs

    def sample_visible(self, h, generator=None):
        probs = self.visible_probs(h)
        return bernoulli(probs, generator), probs

    def gibbs(self, v: torch.Tensor, k: int = 1, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        """k steps of block Gibbs v -> h -> v; returns ``(v_k, p(v | h_{k-1}))``."""
        probs = v
        for _ in range(k):
            h, _ = self.sample_hidden(v, generator)
            v, probs = self.sample_visible(h, generator)
        return v, probs

    # -- learning -------------------------------------------------------------------------
    def cd_gradient(self, v_data: torch.Tensor, k: int = 1, chains: torch.Tensor | None = None, generator=None):
        """Gradient of the average log-likelihood, with the model term from a k-step Gibbs chain.

        grad_W = <v h^T>_data - <v h^T>_model   (and likewise b with <v>, c with <h>)
        CD-k starts the chain at the data; PCD passes ``chains`` (the persistent states) instead.
        Hidden *probabilities* replace hidden samples in both terms (lower variance, same mean).
        Returns ``({"W", "b", "c"}, v_model)``.
        """
        h_data, v_model, h_model, _ = self.phases(v_data, k, chains, generator)
        grads = {
            "W": v_data.T @ h_data / len(v_data) - v_model.T @ h_model / len(v_model),
            "b": v_data.mean(0) - v_model.mean(0),
            "c": h_data.mean(0) - h_model.mean(0),
        }
        return grads, v_model

    def phases(self, v_data: torch.Tensor, k: int = 1, chains: torch.Tensor | None = None, generator=None):
        """The two phases of CD-k / PCD-k: ``(p(h | v_data), v_model, p(h | v_model), reconstruction)``.

        For CD (``chains=None``) the chain's first hidden sample is drawn from p(h | v_data), the positive
        phase's own probabilities, so they are computed once; the first step's p(v | h_0) is the practical
        guide's reconstruction, returned for free (None for PCD, whose chains do not start at the data).
        The random draws are those of ``gibbs(start, k)``: the same seed gives the same chain.
        """
        h_data = self.hidden_probs(v_data)
        recon = None
        if chains is None and k >= 1:
            v_model, recon = self.sample_visible(bernoulli(h_data, generator), generator)
            if k > 1:
                v_model, _ = self.gibbs(v_model, k - 1, generator)
        else:
            v_model, _ = self.gibbs(v_data if chains is None else chains, k, generator)
        return h_data, v_model, self.hidden_probs(v_model), recon

    def exact_gradient(self, v_data: torch.Tensor) -> dict[str, torch.Tensor]:
        """The same gradient with the model term computed exactly by enumeration (small models only)."""
        states, weights = self._enumerated_visible_marginal()
        h_data, h_model = self.hidden_probs(v_data), self.hidden_probs(states)
        return {
            "W": v_data.T @ h_data / len(v_data) - (states * weights[:, None]).T @ h_model,
            "b": v_data.mean(0) - weights @ states,
            "c": h_data.mean(0) - weights @ h_model,
        }

    def _enumerated_visible_marginal(self):
        if self.n_visible > 20:
            raise ValueError("exact_gradient enumerates the visible layer: use at most 20 visible units")
        states = all_binary_states(self.n_visible, dtype=self.W.dtype).to(self.W.device)
        return states, torch.softmax(-self.free_energy(states), dim=0)

    # -- likelihood -----------------------------------------------------------------------
    def log_partition(self, chunk: int = 4096) -> float:
        """Exact log Z by enumerating the smaller layer (2^min(n_v, n_h) terms), in float64.

        Over hidden states: log Z = logsumexp_h [ c.h + sum_i softplus(b_i + (W h)_i) ].
        The states are built chunk by chunk and every chunk reuses the same buffers, so memory stays at
        a few chunks (~100 MB for 784 pixels) however many states there are: the whole (2^20, 20) table
        and a fresh temporary per chunk used to take GBs at 28x28, mostly heap fragmentation.
        """
        hidden = self.n_hidden <= self.n_visible
        n_enum = self.n_hidden if hidden else self.n_visible
        W, b, c = (t.to(torch.float64) for t in self.parameters())
        # enumerate s (hidden or visible), sum the other layer out: a = bias_other + s @ M, linear = s @ bias_s
        M, bias_s, bias_other = (W.T, c, b) if hidden else (W, b, c)
        total, chunk = 2 ** n_enum, min(chunk, 2 ** n_enum)
        pre = torch.empty(chunk, len(bias_other), dtype=torch.float64, device=W.device)
        tmp = torch.empty_like(pre)
        neg_free = torch.empty(total, dtype=torch.float64, device=W.device)
        for start in range(0, total, chunk):
            stop = min(start + chunk, total)
            states = all_binary_states(n_enum, dtype=torch.float64, start=start, stop=stop, device=W.device)
            a, t = pre[: stop - start], tmp[: stop - start]
            torch.addmm(bias_other, states, M, out=a)  # a = bias_other + s M
            # softplus(a) = max(a, 0) + log1p(exp(-|a|)), in place
            torch.abs(a, out=t)
            t.neg_().exp_().log1p_()
            a.clamp_(min=0).add_(t)
            torch.sum(a, 1, out=neg_free[start:stop])
            neg_free[start:stop].addmv_(states, bias_s)  # -F(s) = s.bias_s + sum softplus(a)
        return float(torch.logsumexp(neg_free, dim=0))

    def log_likelihood(self, v: torch.Tensor, log_z: float | None = None) -> torch.Tensor:
        """log p(v) = -F(v) - log Z for each row of ``v`` (exact log Z unless one is given)."""
        log_z = self.log_partition() if log_z is None else log_z
        return -self.free_energy(v.double() if self.W.dtype == torch.float64 else v).double() - log_z

    def ais_log_partition(self, n_chains: int = 100, n_betas: int = 1000, base_visible_bias=None,
                          generator=None) -> tuple[float, float]:
        """Annealed importance sampling estimate of log Z, with a +-3 standard-error half-width.

        Base model A: no hidden units, visible biases b_A (data log-odds are a good choice), so
        log Z_A = sum_i softplus(b_A,i) + n_h log 2 when its hidden units are kept independent.
        Intermediate models: log p*_beta(v) = (1-beta) b_A.v + beta b.v + sum_j softplus(beta (c_j + (v W)_j))
        log Z_B ~ log Z_A + log mean_chains prod_k p*_{beta_k}(v_{k-1}) / p*_{beta_{k-1}}(v_{k-1}).
        """
        W, b, c = self.W.double(), self.b.double(), self.c.double()
        b_a = torch.zeros_like(b) if base_visible_bias is None else torch.as_tensor(base_visible_bias).to(b)
        betas = torch.linspace(0.0, 1.0, n_betas + 1, dtype=torch.float64)

        def log_unnormalised(v, beta):
            return (1 - beta) * (v @ b_a) + beta * (v @ b) + F.softplus(beta * (v @ W + c)).sum(1)

        v = bernoulli(torch.sigmoid(b_a).expand(n_chains, -1).contiguous(), generator)
        log_w = torch.zeros(n_chains, dtype=torch.float64, device=W.device)
        for beta_prev, beta in zip(betas[:-1], betas[1:]):
            log_w += log_unnormalised(v, beta) - log_unnormalised(v, beta_prev)
            # one Gibbs step that leaves p_beta invariant: h ~ p(h | v, beta), v ~ p(v | h, beta)
            h = bernoulli(torch.sigmoid(beta * (v @ W + c)), generator)
            v = bernoulli(torch.sigmoid((1 - beta) * b_a + beta * (h @ W.T + b)), generator)
        # log Z_A counts the n_h hidden units of the beta = 0 model: each is a free coin, a factor 2
        log_z_a = float(F.softplus(b_a).sum()) + self.n_hidden * math.log(2.0)
        log_mean_w = float(torch.logsumexp(log_w, 0) - math.log(n_chains))
        weights = torch.exp(log_w - log_w.max()).cpu().numpy()
        rel_se = np.std(weights, ddof=1) / (np.mean(weights) * math.sqrt(n_chains))
        half_width = float(np.log1p(3 * rel_se)) if rel_se < 1 / 3 else math.inf
        return log_z_a + log_mean_w, half_width


def exact_count_tail(rbm: RBM, more_than: int, drop: float = 1e-12, chunk: int = 4096) -> float:
    """p(sum_i v_i > more_than) under the RBM, exactly: sum_h p(h) P(sum_i v_i > more_than | h).

    Given h the pixels are independent Bernoullis, so the number of pixels on is Poisson-binomial; its
    distribution is built by adding the pixels one at a time, with every count above ``more_than`` kept in one
    absorbing column. Hidden states with p(h) < drop / 2^n_h are skipped: the answer is off by at most
    ``drop``. Lesson 05 uses more_than = n_v / 2 (the mass on inverted digits). float64 throughout.
    """
    W, b, c = (t.double() for t in rbm.parameters())
    hidden = all_binary_states(rbm.n_hidden, dtype=torch.float64, device=W.device)  # (2^n_h, n_h)
    log_p_h = torch.log_softmax(-RBM.from_tensors(W, b, c).hidden_free_energy(hidden), 0)
    keep = log_p_h > (math.log(drop) - rbm.n_hidden * math.log(2.0) if drop > 0 else -math.inf)
    total = 0.0
    for hs, log_p in zip(hidden[keep].split(chunk), log_p_h[keep].split(chunk)):
        p_on = torch.sigmoid(hs @ W.T + b)  # (B, n_v) p(v_i = 1 | h)
        counts = torch.zeros(len(hs), more_than + 2, dtype=torch.float64, device=W.device)
        counts[:, 0] = 1.0  # P(count = 0) before any pixel; the last column is P(count > more_than)
        for i in range(rbm.n_visible):
            q = p_on[:, i:i + 1]
            tail = counts[:, -1:] + counts[:, -2:-1] * q  # once above more_than, always above
            counts[:, 1:-1] = counts[:, 1:-1] * (1 - q) + counts[:, :-2] * q  # off keeps c, on moves c -> c + 1
            counts[:, :1] *= 1 - q
            counts[:, -1:] = tail
        total += float(log_p.exp() @ counts[:, -1])
    return total


def pseudo_log_likelihood(rbm: RBM, v: torch.Tensor, generator=None) -> torch.Tensor:
    """Stochastic pseudo-log-likelihood per image (as in scikit-learn's ``BernoulliRBM.score_samples``).

    PLL(v) ~ n_v log sigmoid(F(v~) - F(v)), where v~ is v with one random bit i flipped:
    n_v times the log of p(v_i | v_-i). Cheap, needs no Z, and tracks the likelihood's trend.
    """
    flip = torch.randint(rbm.n_visible, (len(v),), generator=generator, device=_draw_device(generator, v)).to(v.device)
    flipped = v.clone()
    rows = torch.arange(len(v), device=v.device)
    flipped[rows, flip] = 1 - flipped[rows, flip]
    return rbm.n_visible * F.logsigmoid(rbm.free_energy(flipped) - rbm.free_energy(v))


def data_visible_bias(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Hinton's practical-guide initialisation of visible biases: b_i = log(p_i / (1 - p_i))."""
    p = x.float().mean(0).clamp(eps, 1 - eps)
    return torch.log(p / (1 - p))


def train_epoch(rbm: RBM, x_train: torch.Tensor, *, lr: float, k: int = 1, batch_size: int = 64,
                momentum: float = 0.0, weight_decay: float = 0.0, velocity: dict | None = None,
                chains: torch.Tensor | None = None, generator=None, monitor: bool = True,
                offsets: dict | None = None, offset_rate: float = 0.01) -> tuple[dict, torch.Tensor | None, float]:
    """One epoch of CD-k (``chains=None``) or PCD-k (``chains`` = persistent states) with momentum.

    velocity <- momentum * velocity + lr * (grad - weight_decay * W)   (decay on weights only)
    theta    <- theta + velocity
    Returns ``(velocity, chains, mean reconstruction error)``; reconstruction error is the mean
    squared difference between a batch and p(v | h ~ p(h | batch)), the practical guide's monitor, drawn
    after the update (``phases`` also returns CD's first-step reconstruction, which would cost nothing, but
    using it would change every lesson's random stream).
    ``monitor=False`` skips that monitor and returns nan for it: for timing the update alone.

    Centring (Melchior, Fischer & Wiskott 2016, "How to center deep Boltzmann machines", JMLR 17): with
    ``offsets = {"v": mu, "h": lam}`` the energy is written E = -b'.(v - mu) - c'.(h - lam) - (v - mu)^T W (h - lam)
    and the gradient is taken in (W, b', c'):
        grad_W = <(v - mu)(h - lam)^T>_data - <(v - mu)(h - lam)^T>_model
        grad_b' = <v>_data - <v>_model,   grad_c' = <h>_data - <h>_model
    The model is stored uncentred (b = b' - W lam, c = c' - W^T mu, same p(v, h)), so a step moves
    b by vel_b' - vel_W lam and c by vel_c' - vel_W^T mu. After each batch the offsets slide towards the
    batch means of v and p(h | v) at ``offset_rate`` (updated in place); the model is unchanged by that.
    The update is done in place into two reused buffers, with no new tensors of W's size per batch.
    """
    W, b, c = rbm.parameters()
    velocity = velocity or {name: torch.zeros_like(t) for name, t in zip("Wbc", rbm.parameters())}
    vel_w, vel_b, vel_c = velocity["W"], velocity["b"], velocity["c"]
    grad_w, buffer = torch.empty_like(W), torch.empty_like(W)  # reused by every batch
    order = torch.randperm(len(x_train), generator=generator, device=_draw_device(generator, x_train))
    errors = []
    for start in range(0, len(x_train), batch_size):
        batch = x_train[order[start:start + batch_size]]
        n = len(batch)
        batch_chains = None if chains is None else chains[:n]
        h_data, v_model, h_model, recon = rbm.phases(batch, k, batch_chains, generator)
        if chains is not None:
            chains = v_model if len(chains) == n else torch.cat([v_model, chains[n:]]).roll(-n, 0)
        d_v = batch.mean(0) - v_model.mean(0)  # <v>_data - <v>_model
        d_h = h_data.mean(0) - h_model.mean(0)  # <h>_data - <h>_model
        # grad_W = <v h^T>_data - <v h^T>_model - weight_decay W, into reused buffers, in the same order of
        # operations as the plain expression (bit-identical results, so the lessons' random streams agree)
        torch.mm(batch.T, h_data, out=grad_w).div_(n)
        grad_w.sub_(torch.mm(v_model.T, h_model, out=buffer).div_(len(v_model)))
        grad_w.sub_(torch.mul(W, weight_decay, out=buffer))
        if offsets is not None:  # the centred gradient: <(v - mu)(h - lam)^T> differences
            grad_w.addr_(offsets["v"], d_h, alpha=-1.0).addr_(d_v, offsets["h"], alpha=-1.0)
        vel_w.mul_(momentum).add_(grad_w.mul_(lr))  # velocity <- momentum velocity + lr grad
        vel_b.mul_(momentum).add_(d_v * lr)
        vel_c.mul_(momentum).add_(d_h * lr)
        W.add_(vel_w)
        b.add_(vel_b)
        c.add_(vel_c)
        if offsets is not None:  # back to the uncentred parameters: b = b' - W lam, c = c' - W^T mu
            b.addmv_(vel_w, offsets["h"], alpha=-1.0)
            c.addmv_(vel_w.T, offsets["v"], alpha=-1.0)
            offsets["v"].lerp_(batch.mean(0), offset_rate)
            offsets["h"].lerp_(h_data.mean(0), offset_rate)
        if monitor:  # one step from the batch, after the update (its own draws: the course's random streams)
            h, _ = rbm.sample_hidden(batch, generator)
            errors.append(float(((batch - rbm.visible_probs(h)) ** 2).mean()))
    return velocity, chains, float(np.mean(errors)) if monitor else math.nan


def centring_offsets(rbm: RBM, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Starting offsets for centred training (Melchior et al. 2016): mu = the data mean, lam = <p(h | v)>_data."""
    return {"v": x.mean(0).to(rbm.W.dtype).clone(), "h": rbm.hidden_probs(x).mean(0)}


# -- deep belief network: two RBMs stacked greedily (Hinton, Osindero & Teh 2006) ----------------
def rbm_on_top(bottom: RBM) -> RBM:
    """The second RBM of a greedy DBN, started from the first one's transposed weights.

    Its visible layer is the bottom RBM's hidden layer h1 and its hidden layer h2 has the bottom's
    visible size: W2 = W1^T, visible bias b2 = c1, hidden bias c2 = b1. Then p2(h1) equals the bottom
    RBM's own marginal p1(h1), and the DBN's variational bound equals log p1(v) (Hinton et al. 2006, §4).
    """
    return RBM.from_tensors(bottom.W.T.contiguous(), bottom.c, bottom.b)


def dbn_variational_bound(bottom: RBM, top: RBM, v: torch.Tensor, rows: int = 2048) -> torch.Tensor:
    """Exact variational bound on log p(v) of the DBN  p(v, h1) = p_top(h1) p_bottom(v | h1), per row of v.

    With the factorial posterior Q(h1 | v) = prod_j sigmoid(c1_j + (v W1)_j)  (the bottom RBM's p(h1 | v)),
        log p(v) >= E_Q[ log p_top(h1) + log p(v | h1) ] + H(Q)
    log p(v | h1) = v.a - sum_i softplus(a_i),  a = b1 + W1 h1,  whose first term is linear in h1, so
    E_Q[v.a] = v.b1 + (v W1).mu with mu = Q's means. The rest, g(h1) = -F_top(h1) - sum_i softplus(a_i),
    is summed exactly over all 2^n_h1 states (at most 20 hidden units in the bottom RBM): splitting
    h1 = (h_A, h_B) into two halves, Q = Q_A Q_B factorises and E_Q[g] = Q_A^T G Q_B with G[a, b] = g(a, b),
    one matrix product instead of 2^n_h1 exponentials per image. float64 throughout.
    """
    if bottom.n_hidden > 20:
        raise ValueError("the exact bound enumerates h1: use at most 20 hidden units in the bottom RBM")
    W1, b1, c1 = (t.double() for t in bottom.parameters())
    v = v.to(W1)
    mu = torch.sigmoid(v @ W1 + c1).clamp(1e-12, 1 - 1e-12)  # (B, n_h1) Q's means
    log_mu, log_1m = mu.log(), torch.log1p(-mu)
    entropy = -(mu * log_mu + (1 - mu) * log_1m).sum(1)  # H(Q), factorial
    linear = v @ b1 + ((v @ W1) * mu).sum(1)  # E_Q[v.a]
    top64 = RBM.from_tensors(*(t.double() for t in top.parameters()))
    n_a = bottom.n_hidden // 2
    h_a = all_binary_states(n_a, dtype=torch.float64).to(W1.device)  # (2^n_a, n_a)
    h_b = all_binary_states(bottom.n_hidden - n_a, dtype=torch.float64).to(W1.device)  # (2^n_b, n_b)
    # filled in place: appending small rows between the large temporaries fragments the heap (6 GB at
    # 784 pixels, 20 hidden units, where the results themselves take 16 MB)
    neg_free = torch.empty(len(h_a), len(h_b), dtype=torch.float64, device=W1.device)
    g = torch.empty_like(neg_free)  # (2^n_a, 2^n_b)
    for i, a in enumerate(h_a):
        h1 = torch.cat([a.expand(len(h_b), -1), h_b], 1)  # (2^n_b, n_h1): every h1 that starts with a
        neg_free[i] = -top64.free_energy(h1)
        g[i] = neg_free[i] - F.softplus(h1 @ W1.T + b1).sum(1)
    log_z_top = torch.logsumexp(neg_free.flatten(), 0)  # log Z_top = logsumexp_h1 -F_top(h1), same states
    # Q_A(a | v) = prod_{j <= n_a} mu_j^a_j (1 - mu_j)^(1 - a_j), likewise Q_B: (B, 2^n_a), (B, 2^n_b)
    # ``rows`` images at a time: the (B, 2^n_a) tables of 30,000 images would take GBs at once
    expected_g = torch.empty(len(v), dtype=torch.float64, device=W1.device)
    for start in range(0, len(v), rows):
        lm, l1 = log_mu[start:start + rows], log_1m[start:start + rows]
        q_a = torch.exp(lm[:, :n_a] @ h_a.T + l1[:, :n_a] @ (1 - h_a).T)
        q_b = torch.exp(lm[:, n_a:] @ h_b.T + l1[:, n_a:] @ (1 - h_b).T)
        expected_g[start:start + rows] = ((q_a @ g) * q_b).sum(1)
    return expected_g - log_z_top + linear + entropy


def dbn_sample(bottom: RBM, top: RBM, h1: torch.Tensor, steps: int, generator=None) -> torch.Tensor:
    """Generate from the DBN: ``steps`` block-Gibbs steps h1 -> h2 -> h1 in the top RBM, then one down pass.

    Returns p(v | h1) of the bottom RBM's directed layer, shape ``(B, n_v)``.
    """
    h1, _ = top.gibbs(h1, steps, generator)
    return bottom.visible_probs(h1)


def aggregated_posterior_kl(rbm: RBM, v: torch.Tensor) -> float:
    """KL(q || p) in nats between the aggregated posterior q(h) = mean_n p(h | v_n) and the RBM's p(h).

    For a greedy DBN whose bottom layer is ``rbm``, this is the largest rise of the variational bound
    (averaged over ``v``) that any top RBM can give: the bound's only top-dependent term is E_q[log p_top(h)],
    which is largest at p_top = q. Exact: all 2^n_h hidden states (n_h <= 20). As in
    ``dbn_variational_bound``, h = (h_A, h_B) splits into halves and p(h | v_n) = Q_A(h_A | v_n) Q_B(h_B | v_n),
    so q = Q_A^T Q_B / N is one matrix product; log p(h) = -F(h) - log Z. float64 throughout.
    """
    if rbm.n_hidden > 20:
        raise ValueError("aggregated_posterior_kl enumerates h: use at most 20 hidden units")
    W, b, c = (t.double() for t in rbm.parameters())
    exact = RBM.from_tensors(W, b, c)
    pre = v.to(W) @ W + c  # (N, n_h) hidden pre-activations a_n
    log_on, log_off = -F.softplus(-pre), -F.softplus(pre)  # log sigmoid(a), log (1 - sigmoid(a))
    n_a = rbm.n_hidden // 2
    h_a = all_binary_states(n_a, dtype=torch.float64, device=W.device)  # (2^n_a, n_a)
    h_b = all_binary_states(rbm.n_hidden - n_a, dtype=torch.float64, device=W.device)  # (2^n_b, n_b)
    q = torch.zeros(len(h_a), len(h_b), dtype=torch.float64, device=W.device)  # (2^n_a, 2^n_b): q(h_A, h_B)
    for start in range(0, len(pre), 2048):  # 2,048 images at a time: the (N, 2^n_a) tables take GBs at once
        on, off = log_on[start:start + 2048], log_off[start:start + 2048]
        q_a = torch.exp(on[:, :n_a] @ h_a.T + off[:, :n_a] @ (1 - h_a).T)  # (rows, 2^n_a)
        q_b = torch.exp(on[:, n_a:] @ h_b.T + off[:, n_a:] @ (1 - h_b).T)  # (rows, 2^n_b)
        q.addmm_(q_a.T, q_b)
    q /= len(pre)
    log_z = exact.log_partition()
    kl = 0.0
    for i, a in enumerate(h_a):  # row by row: p(h) for every h that starts with a
        h = torch.cat([a.expand(len(h_b), -1), h_b], 1)
        log_p = -exact.hidden_free_energy(h) - log_z
        row = q[i]
        used = row > 0  # q log q -> 0 where q underflows
        kl += float((row[used] * (row[used].log() - log_p[used])).sum())
    return kl
