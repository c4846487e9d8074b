"""The variational bound on the negative log-likelihood of a DDPM, in bits per dimension.

For a DDPM whose reverse steps are ``p(x_s | x_t) = N(mu_theta(x_t), sigma_t^2 I)`` along a chain of training times
``t_0 > t_1 > ... > t_{N-1}`` (every training time by default), the negative log-likelihood of an image ``x``
whose values were discretised to bins is bounded by (Sohl-Dickstein et al. 2015; Ho et al. 2020, Eq. 5)

    -log p(x) <= L_prior + sum_{i < N-1} L_i + L_dec,
    L_prior = KL(q(x_{t_0} | x) || N(0, I)),
    L_i     = E_q KL(q(x_{t_{i+1}} | x_{t_i}, x) || p(x_{t_{i+1}} | x_{t_i})),
    L_dec   = -E_q log p(x | x_{t_{N-1}}),

where ``q(x_s | x_t, x)`` is the Gaussian posterior of the forward process (Ho et al. 2020, Eqs. 6-7; between two
times of a respaced chain with ``beta' = 1 - abar_t / abar_s``, Nichol & Dhariwal 2021, Sec. 4), both KLs are
between Gaussians in closed form, and the decoder is the discretised Gaussian of Ho et al. (2020), Eq. 13: the mass
of ``N(x0_hat, sigma^2)`` on the bin of width ``(scaled_max - scaled_min) / (original_max - original_min)`` around
each value, with open-ended bins at the two ends of ``scaled_input_range``. Each ``L_i`` is a one-sample estimate
(one draw of ``x_{t_i} ~ q(x_{t_i} | x)`` per step, independent across steps unless a fixed ``noise`` is given).
The sum, divided by the number of dimensions ``C * prod(spatial)`` and by ``ln 2``, is the bound in bits per
dimension, the unit of Ho et al. (2020), Table 2 and Nichol & Dhariwal (2021).

Comparison with MONAI 1.6.1's ``DiffusionInferer.get_likelihood`` (checked in ``tests/inferers/test_likelihood.py``):

* Units: MONAI returns nats per dimension (the mean over ``C * prod(spatial)`` of each term, summed over the
  timesteps, without dividing by ``ln 2``); ours is bits per dimension, i.e. MONAI's value / ``ln 2``.
* MONAI omits the prior term ``L_prior``; we include it. It is small for a schedule that ends near pure noise
  (``abar = 4.0e-5`` at the end of the linear 1000-step schedule: ``2.9e-5`` bits/dim for data of unit second
  moment, ``7.3e-6`` for data at 0.5), and sizeable for short ones (0.37-0.39 bits/dim for data in ``[0, 1]`` on a
  50-step linear schedule).
* MONAI draws one noise tensor and reuses it at every timestep; pass ``noise`` to do the same.
* The decoder variance of ``fixed_small``: the posterior variance of the step onto clean data is zero, and MONAI
  clamps it to ``1e-20`` (std ``1e-10``), so its decoder is nearly a point mass and every value whose predicted x0
  misses its bin costs ``-log 1e-12 = 27.6`` nats (MONAI, like Nichol & Dhariwal's code, floors the bin probability
  at ``1e-12``; so do we). Ours uses, by default (``decoder_variance="clipped"``), the posterior variance of the step
  before, as Nichol & Dhariwal's code does; ``decoder_variance="scheduler"`` reproduces MONAI. (``fixed_large``
  decodes with ``beta_0`` in both, Ho et al.'s ``sigma_1^2 = beta_1``, exact for data of unit variance; Nichol &
  Dhariwal's code uses the clipped value there too.)
* ``fixed_large``: MONAI takes ``beta_t`` as the variance of ``q`` as well as of ``p``, which drops the term
  ``(log(beta_t / beta_tilde_t) + beta_tilde_t / beta_t - 1) / 2`` of every KL; its value then lies below the bound
  (by 1.28 nats/dim on a 20-step linear schedule).
* MONAI's edge bins are hard-coded at ``+-0.999`` (data in ``[-1, 1]``); ours follow ``scaled_input_range``. MONAI
  uses a tanh approximation of the normal CDF; ours is exact. The values agree for data away from the range's ends:
  to 5e-8 with float64 tables (tests). In float32 MONAI's ``t = 0`` coefficient ``beta_0 / (1 - abar_0)`` is
  ``1 - 1.7e-4`` instead of 1, which moves its near point-mass decoder across bin edges for a few values.
* MONAI adds noise with the inferer's scheduler, not the ``scheduler`` argument; fails on learned variances (it tests
  a tensor's truth value); and after ``set_timesteps(N < T)`` sums one-training-step terms at those N times only,
  which bounds nothing. Here ``timesteps`` gives the bound of the respaced chain.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from monai_diffusion.inferers.guidance import call_model
from monai_diffusion.networks.schedulers.ddpm import (
    VARIANCE_FLOOR,
    VARIANCE_TYPES,
    DDPMScheduler,
    posterior_coefficients,
    reverse_variance,
)
from monai_diffusion.networks.schedulers.process import (
    marginal_coefficients,
    num_train_timesteps_of,
    prediction_type_of,
)

__all__ = [
    "DECODER_VARIANCES",
    "MIN_BIN_PROBABILITY",
    "variational_bound",
    "normal_kl",
    "discretized_gaussian_log_likelihood",
]

#: how the decoder variance replaces the zero posterior variance of the step onto clean data (see ``variational_bound``)
DECODER_VARIANCES: tuple[str, ...] = ("clipped", "scheduler")

#: floor of a bin's probability in the decoder (Nichol & Dhariwal's code and MONAI): at most 27.6 nats per value
MIN_BIN_PROBABILITY = 1e-12


def normal_kl(mean1: torch.Tensor, log_var1: torch.Tensor, mean2: torch.Tensor, log_var2: torch.Tensor) -> torch.Tensor:
    """Elementwise ``KL(N(mean1, exp(log_var1)) || N(mean2, exp(log_var2)))`` in nats (arguments broadcast)."""
    return 0.5 * (
        log_var2 - log_var1 + torch.exp(log_var1 - log_var2) + (mean1 - mean2) ** 2 * torch.exp(-log_var2) - 1
    )


def _log_normal_mass(lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """``log(Phi(upper) - Phi(lower))`` for standardised bounds ``lower < upper`` (infinite ends allowed), accurate
    in both tails: the interval is mirrored to the left half-line and ``log Phi`` is used throughout."""
    mirror = (lower + upper) > 0
    a = torch.where(mirror, -upper, lower)
    b = torch.where(mirror, -lower, upper)
    log_b = torch.special.log_ndtr(b)
    return log_b + torch.log1p(-torch.exp(torch.special.log_ndtr(a) - log_b))


def discretized_gaussian_log_likelihood(
    x: torch.Tensor,
    mean: torch.Tensor,
    log_var: torch.Tensor,
    bin_width: float,
    value_range: tuple[float, float],
) -> torch.Tensor:
    """Elementwise ``log P(bin of x)`` under ``N(mean, exp(log_var))`` (Ho et al. 2020, Eq. 13), in nats.

    The bin is ``[x - bin_width/2, x + bin_width/2]``, open-ended below for values within half a bin of the range's
    minimum and above for values within half a bin of its maximum. The probability is floored at
    :data:`MIN_BIN_PROBABILITY`.

    Args:
        x: the discretised values.
        mean, log_var: the decoder's mean and log-variance (broadcast against ``x``).
        bin_width: width of one intensity level in the units of ``x``.
        value_range: ``(min, max)`` of the values.
    """
    lo, hi = value_range
    inv_std = torch.exp(-0.5 * log_var)
    half = 0.5 * bin_width
    lower = torch.where(x < lo + half, torch.full_like(x, -math.inf), (x - half - mean) * inv_std)
    upper = torch.where(x > hi - half, torch.full_like(x, math.inf), (x + half - mean) * inv_std)
    return _log_normal_mass(lower, upper).clamp_min(math.log(MIN_BIN_PROBABILITY))


# ---------------------------------------------------------------------------------------------- checks
def _check_range(name: str, value: Any) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (min, max) of numbers, got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
        raise ValueError(f"{name} must be finite with max > min, got {value!r}")
    return lo, hi


def _check_inputs(inputs: Any, value_range: tuple[float, float]) -> None:
    if not isinstance(inputs, torch.Tensor) or not inputs.is_floating_point():
        kind = inputs.dtype if isinstance(inputs, torch.Tensor) else type(inputs).__name__
        raise TypeError(
            f"inputs must be a floating-point tensor scaled to scaled_input_range, got {kind} "
            "(scale integer images first, e.g. x.float() / 255 for the default ranges)"
        )
    if inputs.ndim < 3 or inputs.shape[0] == 0:
        raise ValueError(f"inputs must be a non-empty batch (B, C, *spatial), got shape {tuple(inputs.shape)}")
    if not bool(torch.isfinite(inputs).all()):
        raise ValueError("inputs hold NaN or infinite values")
    lo, hi = value_range
    tol = 1e-6 * (hi - lo)
    low, high = float(inputs.min()), float(inputs.max())
    if low < lo - tol or high > hi + tol:
        raise ValueError(
            f"inputs must lie in scaled_input_range [{lo:g}, {hi:g}], got values in [{low:g}, {high:g}] "
            "(the decoder's bins are defined on that range)"
        )


def _table(scheduler: Any) -> torch.Tensor:
    """The scheduler's ``alphas_cumprod`` (float64, CPU), or a ``TypeError`` for a scheduler without one."""
    table = getattr(scheduler, "alphas_cumprod", None)
    if table is None:
        raise TypeError(
            f"the variational bound needs a discrete DDPM forward process (an `alphas_cumprod` table), but "
            f"{type(scheduler).__name__} has none; use a DDPM scheduler (this package's or MONAI's)"
        )
    t = torch.as_tensor(table).detach().to("cpu", torch.float64).reshape(-1)
    n = num_train_timesteps_of(scheduler)
    if t.numel() != n:
        raise ValueError(f"{type(scheduler).__name__}.alphas_cumprod has {t.numel()} entries for {n} training steps")
    return t


def _chain(timesteps: Sequence[int] | torch.Tensor | None, n: int) -> list[int]:
    if timesteps is None:
        return list(range(n - 1, -1, -1))
    t = torch.as_tensor(timesteps).reshape(-1)
    if t.numel() == 0 or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"timesteps must be a non-empty sequence of training times, got {timesteps!r}")
    t = t.to(torch.float64)
    if bool((t != t.round()).any()):
        raise ValueError(
            f"timesteps must be integer training times (the bound uses the discrete table), got {t.tolist()}"
        )
    if bool((t[1:] >= t[:-1]).any()) or float(t[0]) > n - 1 or float(t[-1]) < 0:
        raise ValueError(f"timesteps must be strictly decreasing in [0, {n - 1}], got {t.long().tolist()}")
    return [int(v) for v in t.long().tolist()]


def _variance_type(scheduler: Any) -> str:
    variance_type = str(getattr(scheduler, "variance_type", "fixed_small"))
    if variance_type not in VARIANCE_TYPES:
        raise ValueError(
            f"{type(scheduler).__name__}.variance_type must be one of {VARIANCE_TYPES}, got {variance_type!r}"
        )
    if variance_type in ("learned", "learned_range") and not isinstance(scheduler, DDPMScheduler):
        raise ValueError(
            f"learned variances are read as monai_diffusion's DDPMScheduler reads them (log-variance, Nichol & "
            f"Dhariwal's interpolation); {type(scheduler).__name__} reads them differently, so pass "
            "monai_diffusion.networks.schedulers.DDPMScheduler"
        )
    return variance_type


def _predict_x0(
    scheduler: Any, output: torch.Tensor, x_t: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor
) -> torch.Tensor:
    """The model's x0 with the scheduler's own post-processing (clipping, thresholding), as its sampler uses it."""
    predict = getattr(scheduler, "predict_x0_eps", None)
    if callable(predict):  # this package's schedulers
        return predict(output, x_t, alpha, sigma)[0]
    x0 = prediction_type_of(scheduler).to_x0_eps(output, x_t, alpha, sigma)[0]
    if getattr(scheduler, "clip_sample", False):  # MONAI's DDPM/DDIM
        lo, hi = getattr(scheduler, "clip_sample_values", (-1.0, 1.0))
        x0 = x0.clamp(float(lo), float(hi))
    return x0


def _split_output(output: torch.Tensor, inputs: torch.Tensor, learned: bool) -> tuple[torch.Tensor, Any]:
    channels = inputs.shape[1]
    want = 2 * channels if learned else channels
    if output.shape[0] != inputs.shape[0] or output.shape[1] != want or output.shape[2:] != inputs.shape[2:]:
        what = f"{want} channels (prediction, then variance values)" if learned else f"{want} channels"
        raise ValueError(
            f"the model must return {what} with the inputs' batch and spatial shape {tuple(inputs.shape)}, "
            f"got {tuple(output.shape)}"
        )
    if learned:
        return output[:, :channels], output[:, channels:]
    return output, None


# ---------------------------------------------------------------------------------------------- the bound
def variational_bound(
    inputs: torch.Tensor,
    diffusion_model: Callable,
    scheduler: Any,
    conditioning: Mapping[str, torch.Tensor] | None = None,
    original_input_range: tuple[float, float] = (0, 255),
    scaled_input_range: tuple[float, float] = (0, 1),
    save_intermediates: bool = False,
    progress: bool = False,
    timesteps: Sequence[int] | torch.Tensor | None = None,
    *,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    decoder_variance: str = "clipped",
    enable_grad: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
    """The DDPM variational bound on ``-log2 p(x)`` per dimension (see the module docs), per sample.

    The model is the scheduler's reverse process: the network's x0 (from its ``prediction_type``: ``epsilon``,
    ``sample`` or ``v_prediction``, with the scheduler's clipping or thresholding) in the posterior mean, and the
    variance of the scheduler's ``variance_type`` (a scheduler without one, e.g. a DDIM or a VP-SDE sampler with
    its table, is read as ``fixed_small``). The decoder's variance at the last time ``t_{N-1}``: ``fixed_large``:
    ``beta'`` of that step (``beta_0`` on the full chain, Ho et al.'s ``sigma_1^2 = beta_1``); ``fixed_small`` and
    the lower end of ``learned_range``: with ``decoder_variance="clipped"`` the posterior variance of the step before
    (as in Nichol & Dhariwal's code; ``beta'`` for a one-step chain), with ``"scheduler"`` the scheduler's own
    floored zero, ``1e-20`` (MONAI's); ``learned``: the network's.

    Args:
        inputs: images (B, C, *spatial), float, with values in ``scaled_input_range``.
        diffusion_model: the network (or a guidance wrapper), called as ``call_model(model, x_t, t, conditioning)``.
        scheduler: a DDPM scheduler with an ``alphas_cumprod`` table: this package's ``DDPMScheduler`` or MONAI's
            (others with a table, such as DDIM, work too and are read as ``fixed_small``).
        conditioning: a validated conditioning mapping (see :mod:`~monai_diffusion.inferers.conditioning`).
        original_input_range: ``(min, max)`` intensities before scaling; one level is one bin.
        scaled_input_range: ``(min, max)`` of ``inputs`` after scaling.
        save_intermediates: also return the per-element terms in bits (float32, on the CPU as MONAI's): the prior
            term, then one map per entry of the chain (the last is the decoder). Their sum over the list, averaged
            over ``C * prod(spatial)``, is the returned bound.
        progress: show a tqdm progress bar.
        timesteps: the chain, strictly decreasing integer training times; default every training time
            ``T-1, ..., 0``. A subset gives the bound of that respaced chain (Nichol & Dhariwal 2021, Sec. 4).
        noise: optional fixed noise of the shape of ``inputs`` used at every step (MONAI's estimator); by default
            the steps draw independent noise from ``generator``.
        generator: random generator for the noise draws.
        decoder_variance: one of :data:`DECODER_VARIANCES` (above).
        enable_grad: keep the autograd graph (e.g. to train on the bound); off by default.

    Returns:
        the bound in bits per dimension, shape (B,), in the dtype of ``inputs``; with ``save_intermediates`` also
        the list of ``1 + N`` per-element maps.

    Raises:
        TypeError: non-float ``inputs``; a scheduler without a discrete table; conditioning that is not a mapping.
        ValueError: ``inputs`` outside ``scaled_input_range`` or not finite; bad ranges, timesteps, noise, model
            output or ``decoder_variance``; learned variances with a scheduler other than this package's DDPM.
    """
    value_range = _check_range("scaled_input_range", scaled_input_range)
    original = _check_range("original_input_range", original_input_range)
    _check_inputs(inputs, value_range)
    if decoder_variance not in DECODER_VARIANCES:
        raise ValueError(f"decoder_variance must be one of {DECODER_VARIANCES}, got {decoder_variance!r}")
    if conditioning is not None and not isinstance(conditioning, Mapping):
        raise TypeError(
            f"conditioning must be a validated mapping (see inferers.conditioning), got {type(conditioning).__name__}"
        )
    if noise is not None and (not isinstance(noise, torch.Tensor) or noise.shape != inputs.shape):
        shape = tuple(noise.shape) if isinstance(noise, torch.Tensor) else type(noise).__name__
        raise ValueError(f"noise must be a tensor of the inputs' shape {tuple(inputs.shape)}, got {shape}")
    abar = _table(scheduler)
    chain = _chain(timesteps, abar.numel())
    variance_type = _variance_type(scheduler)
    learned = variance_type in ("learned", "learned_range")
    bin_width = (value_range[1] - value_range[0]) / (original[1] - original[0])

    device, dtype = inputs.device, inputs.dtype
    x = inputs.detach().to(torch.float64) if not enable_grad else inputs.to(torch.float64)
    dims = x[0].numel()
    terms: list[torch.Tensor] = []
    total = torch.zeros(x.shape[0], dtype=torch.float64, device=device)

    def add(term_nats: torch.Tensor) -> None:
        nonlocal total
        bits = term_nats / math.log(2.0)
        total = total + bits.reshape(bits.shape[0], -1).sum(1) / dims
        if save_intermediates:
            terms.append(bits.detach().to("cpu", torch.float32))

    alphas, sigmas = (c.to(device) for c in marginal_coefficients(scheduler, torch.tensor(chain, dtype=torch.float64)))
    # L_prior = KL(N(alpha x, sigma^2) || N(0, 1)) at the first time of the chain
    add(0.5 * (alphas[0] ** 2 * x**2 + sigmas[0] ** 2 - 1.0 - 2.0 * torch.log(sigmas[0])).expand_as(x))

    steps: Any = range(len(chain))
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="variational bound", total=len(chain))
    with torch.set_grad_enabled(enable_grad):
        for i in steps:
            t = chain[i]
            eps = noise if noise is not None else _randn(x, generator)
            x_t = (alphas[i] * x + sigmas[i] * eps.to(torch.float64)).to(dtype)
            t_batch = torch.full((x.shape[0],), t, dtype=torch.long, device=device)
            output, values = _split_output(call_model(diffusion_model, x_t, t_batch, conditioning), inputs, learned)
            x0_hat = _predict_x0(scheduler, output.to(torch.float64), x_t.to(torch.float64), alphas[i], sigmas[i])
            if i < len(chain) - 1:
                coef_x0, _, beta, beta_tilde = (
                    c.to(device) for c in posterior_coefficients(abar[t], abar[chain[i + 1]])
                )
                log_var = torch.log(reverse_variance(variance_type, beta, beta_tilde, values))
                # the means of q and p share their x_t part and differ by coef_x0 (x - x0_hat)
                add(normal_kl(coef_x0 * x, torch.log(beta_tilde), coef_x0 * x0_hat, log_var))
            else:
                # the step onto clean data: mean x0_hat, beta' = 1 - abar_t, posterior variance zero (replaced)
                beta = (1.0 - abar[t]).to(device)
                if decoder_variance == "scheduler":
                    floor = torch.full((), VARIANCE_FLOOR, dtype=torch.float64, device=device)
                elif i > 0:
                    floor = posterior_coefficients(abar[chain[i - 1]], abar[t])[3].to(device)
                else:
                    floor = beta
                log_var = torch.log(reverse_variance(variance_type, beta, floor, values))
                add(-discretized_gaussian_log_likelihood(x, x0_hat, log_var, bin_width, value_range))
    bpd = total.to(dtype)
    return (bpd, terms) if save_intermediates else bpd


def _randn(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    if generator is None:
        return torch.randn(x.shape, dtype=x.dtype, device=x.device)
    return torch.randn(x.shape, dtype=x.dtype, device=generator.device, generator=generator).to(x.device)
