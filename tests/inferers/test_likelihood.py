"""The DDPM variational bound: equality with MONAI's ``get_likelihood``, exactness on Gaussian data, errors.

MONAI 1.6.1's ``DiffusionInferer.get_likelihood`` reports nats per dimension (each term's mean over C x spatial,
summed over timesteps), without the prior term, with one noise draw for all timesteps; ``variational_bound`` reports
bits per dimension with the prior term. The comparisons convert: ``(ours - prior) * ln 2 == MONAI``.
"""

from __future__ import annotations

import math
import unittest

import torch
from monai.inferers import DiffusionInferer as MonaiInferer
from monai.networks.schedulers import DDIMScheduler as MonaiDDIM
from monai.networks.schedulers import DDPMScheduler as MonaiDDPM
from parameterized import parameterized

from monai_diffusion.exact import GaussianPriorDenoiser, StationaryGaussianPrior
from monai_diffusion.inferers.likelihood import discretized_gaussian_log_likelihood, variational_bound
from monai_diffusion.networks.schedulers import DDPMScheduler, NCSNScheduler
from monai_diffusion.operators.mri import fft_centered
from tests.test_utils import assert_allclose, skip_if_no_cuda, tiny_unet

LN2 = math.log(2.0)
#: a fine discretisation for the exactness tests: 65535 levels on [-8, 8] (bin width 2.4e-4, decoder std >= 0.0074)
FINE = {"original_input_range": (0, 65535), "scaled_input_range": (-8.0, 8.0)}
BIN = 16.0 / 65535


def images(dims: int, seed: int = 0, batch: int = 2, dtype=torch.float32) -> torch.Tensor:
    """8-bit images scaled to [0, 1], avoiding 0 and 255 (MONAI's edge bins are hard-coded for [-1, 1] data)."""
    levels = torch.randint(1, 255, (batch, 1, *([8] * dims)), generator=torch.Generator().manual_seed(seed))
    return levels.to(dtype) / 255


def monai_likelihood(inputs, model, scheduler, seed: int):
    """MONAI's get_likelihood and the noise it draws (``torch.randn_like`` right after seeding)."""
    torch.manual_seed(seed)
    noise = torch.randn_like(inputs)
    torch.manual_seed(seed)
    total, maps = MonaiInferer(scheduler).get_likelihood(
        inputs, model, scheduler, save_intermediates=True, verbose=False
    )
    return total.double(), torch.stack([m.flatten(1).mean(1) for m in maps], 1).double(), noise


def monai_float64(scheduler: MonaiDDPM) -> MonaiDDPM:
    """MONAI's scheduler with float64 tables: removes its float32 rounding (e.g. its t = 0 posterior coefficient
    ``beta_0 / (1 - abar_0)``, 1 - 1.7e-4 in float32, which moves the near point-mass decoder across bin edges)."""
    scheduler.betas = scheduler.betas.double()
    scheduler.alphas = 1.0 - scheduler.betas
    scheduler.alphas_cumprod = torch.cumprod(scheduler.alphas, 0)
    scheduler.one = scheduler.one.double()
    return scheduler


def step_means(terms: list[torch.Tensor]) -> torch.Tensor:
    """(B, N) per-step terms in nats from our per-element maps in bits, without the prior."""
    return torch.stack([m.flatten(1).mean(1) for m in terms[1:]], 1).double() * LN2


class TestMonaiParity(unittest.TestCase):
    @parameterized.expand(
        [
            ("2d_epsilon", 2, "epsilon"),
            ("2d_v", 2, "v_prediction"),
            ("2d_sample", 2, "sample"),
            ("3d_epsilon", 3, "epsilon"),
            ("3d_v", 3, "v_prediction"),
        ]
    )
    def test_equals_monai_get_likelihood(self, _, dims, prediction_type):
        net = tiny_unet(dims).double()
        x = images(dims, dtype=torch.float64)
        sched = monai_float64(MonaiDDPM(20, prediction_type=prediction_type))  # clip_sample=True, MONAI's default
        ref, ref_steps, noise = monai_likelihood(x, net, sched, seed=3)
        ours, terms = variational_bound(
            x, net, sched, noise=noise, decoder_variance="scheduler", save_intermediates=True
        )
        prior = terms[0].flatten(1).mean(1).double()
        # MONAI = (ours - prior term) in nats, per sample and per step
        assert_allclose((ours.double() - prior) * LN2, ref, rtol=1e-4, atol=0)
        assert_allclose(step_means(terms), ref_steps, rtol=1e-4, atol=1e-6)
        # the prior term is KL(N(sqrt(abar_T) x, 1 - abar_T) || N(0, 1)) in bits
        a = float(sched.alphas_cumprod[-1])
        expected_prior = 0.5 * (a * x**2 - a - math.log(1 - a)).flatten(1).mean(1) / LN2
        assert_allclose(prior, expected_prior, rtol=1e-5, atol=0)
        self.assertGreater(float(prior.min()), 0.05)  # a 20-step schedule does not reach pure noise

    def test_float32_kl_terms_equal_monai(self):
        # MONAI in its default float32: the KL terms agree; only the near point-mass decoder may differ (docstring of
        # monai_float64)
        net = tiny_unet(2)
        x = images(2)
        sched = MonaiDDPM(20)
        _, ref_steps, noise = monai_likelihood(x, net, sched, seed=5)
        _, terms = variational_bound(x, net, sched, noise=noise, decoder_variance="scheduler", save_intermediates=True)
        assert_allclose(step_means(terms)[:, :-1], ref_steps[:, :-1], rtol=1e-4, atol=1e-5)

    def test_clipped_decoder_changes_only_the_decoder(self):
        net = tiny_unet(2)
        x = images(2)
        sched = MonaiDDPM(20)
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
        mon, t_mon = variational_bound(
            x, net, sched, noise=noise, decoder_variance="scheduler", save_intermediates=True
        )
        clip, t_clip = variational_bound(x, net, sched, noise=noise, save_intermediates=True)
        for a, b in zip(t_mon[:-1], t_clip[:-1]):
            assert_allclose(a, b)
        # MONAI's std 1e-10 decoder charges 27.6 nats for each value whose x0 estimate misses its bin
        self.assertGreater(float(t_mon[-1].mean()), float(t_clip[-1].mean()) + 5.0)
        self.assertGreater(float((mon - clip).min()), 0.0)


class TestMonaiOnOurScheduler(unittest.TestCase):
    @parameterized.expand([("2d", 2), ("3d", 3)])
    def test_unet(self, _, dims):
        net = tiny_unet(dims)
        x = images(dims)
        ref, ref_steps, _ = monai_likelihood(x, net, MonaiDDPM(20), seed=1)
        got, got_steps, _ = monai_likelihood(x, net, DDPMScheduler(20, clip_sample=True), seed=1)
        assert_allclose(got, ref, rtol=1e-4, atol=0)
        assert_allclose(got_steps, ref_steps, rtol=1e-4, atol=1e-5)

    @parameterized.expand([("fixed_small",), ("fixed_large",)])
    def test_full_1000_step_table(self, variance_type):
        # a linear "network" (cheap, so all 1000 steps run); rtol 5e-4: the float32 tables differ (MONAI's cumulative
        # product is float32, ours float64 then rounded: up to 3e-4 in 1 - abar at small t; MONAI's get_likelihood
        # reads beta_t where our posterior uses beta' = 1 - abar_t / abar_{t-1}); measured 2.6e-4 (fixed_large)

        def linear(x, timesteps, context=None):
            return 0.5 * x

        x = images(2, batch=2)
        ref = monai_likelihood(x, linear, MonaiDDPM(1000, variance_type=variance_type), seed=4)[0]
        got = monai_likelihood(x, linear, DDPMScheduler(1000, variance_type=variance_type, clip_sample=True), seed=4)[0]
        assert_allclose(got, ref, rtol=5e-4, atol=0)


# ---------------------------------------------------------------------------------------------- exactness
def fine_samples(prior: StationaryGaussianPrior, batch: int, seed: int = 0) -> torch.Tensor:
    x = prior.sample(batch, torch.Generator().manual_seed(seed))
    return ((x + 8.0) / BIN).round().mul(BIN).sub(8.0).clamp(-8.0, 8.0).float()


def density_bpd(prior: StationaryGaussianPrior, x: torch.Tensor) -> torch.Tensor:
    """``-log2 p(x) / D - log2(bin width)``: the discretised NLL for a fine discretisation (bits/dim)."""
    k = fft_centered((x.double() - prior.mean).to(torch.complex128), prior.spatial_dims)
    nll = 0.5 * (k.abs() ** 2 / prior.power).flatten(1).sum(1) + 0.5 * torch.log(2 * math.pi * prior.power).sum()
    return nll / x[0].numel() / LN2 - math.log2(BIN)


def white(shape: tuple[int, ...], mean: float = 0.0) -> StationaryGaussianPrior:
    return StationaryGaussianPrior(torch.full(shape, mean, dtype=torch.float64), torch.ones(shape, dtype=torch.float64))


def kl_variances(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``KL(N(0, p) || N(0, q))`` in bits."""
    return 0.5 * (torch.log(q / p) + p / q - 1) / LN2


def fixed_small_excess(sched: DDPMScheduler, chain: list[int]) -> torch.Tensor:
    """Expected excess, per step of ``chain`` (bits/dim), of the fixed_small bound over the exact NLL for white
    unit-variance data: the true reverse variance is beta' (the process is stationary), the model's beta_tilde'
    (the decoder's: that of the step before, "clipped")."""
    abar = sched.alphas_cumprod.double()
    a = torch.cat([abar[torch.tensor(chain)], torch.ones(1, dtype=torch.float64)])
    beta = 1 - a[1:] / a[:-1]
    beta_tilde = (1 - a[1:]) / (1 - a[:-1]) * beta
    return torch.cat([kl_variances(beta[:-1], beta_tilde[:-1]), kl_variances(beta[-1:], beta_tilde[-2:-1])])


class TestExactness(unittest.TestCase):
    """White N(0, I) data: fixed_large is the exact reverse kernel (q(x_s | x_t) = N(sqrt(abar_t / abar_s) x_t,
    beta') for this stationary process, on the full chain and on any respaced one), the exact denoiser gives the
    exact mean and N(0, I) is the exact prior, so the bound's expectation is the exact discretised NLL. The
    one-sample estimate has a standard deviation of about 2 bits per dimension (the small-t KL terms are scaled
    chi-squares); the mean over 8 x 1024 dimensions has about 0.012 bits/dim of Monte-Carlo noise (full chain,
    three seeds: gaps 0.012, 0.001, -0.007), hence a slack of 0.05."""

    SLACK = 0.05
    #: a respaced chain for the cheaper checks: 40 steps down to t = 40, then every step (so it ends 2, 1, 0)
    CHAIN = torch.cat([torch.linspace(999, 41, 40).round(), torch.arange(40.0, -1, -1)]).long()

    @classmethod
    def setUpClass(cls):
        cls.prior = white((1, 32, 32))
        cls.x = fine_samples(cls.prior, 8)
        xd = cls.x.double()
        bins = torch.special.ndtr(xd + BIN / 2) - torch.special.ndtr(xd - BIN / 2)
        cls.exact = -torch.log2(bins).flatten(1).mean(1)  # the exact -log2 P(bin) per dimension
        cls.sched = {v: DDPMScheduler(1000, variance_type=v) for v in ("fixed_large", "fixed_small")}

    def bound(self, variance_type: str, prior=None, timesteps=None, seed: int = 1, save: bool = False):
        sched = self.sched[variance_type]
        model = GaussianPriorDenoiser(prior or self.prior, sched)
        generator = torch.Generator().manual_seed(seed)
        out = variational_bound(
            self.x, model, sched, timesteps=timesteps, generator=generator, save_intermediates=save, **FINE
        )
        return (out[0].double(), out[1]) if save else out.double()

    def test_exact_model_is_tight(self):
        assert_allclose(self.exact, density_bpd(self.prior, self.x), rtol=0, atol=1e-6)  # fine bins: P ~ p * width
        gap = float((self.bound("fixed_large") - self.exact).mean())
        self.assertLess(abs(gap), self.SLACK, f"gap {gap:.4f} bits/dim")
        # the full-chain fixed_small excess in closed form (measured 0.82-0.85 over three seeds, docs/inferers.md)
        total = float(fixed_small_excess(self.sched["fixed_small"], list(range(999, -1, -1))).sum())
        self.assertAlmostEqual(total, 0.834, delta=1e-3)

    def test_respaced_chain_and_fixed_small_gap(self):
        # on a respaced chain fixed_large stays exact; fixed_small exceeds it by the closed-form excess, in total and
        # in the decoder term (same noise draws, so the Monte-Carlo error largely cancels in the differences)
        large, large_terms = self.bound("fixed_large", timesteps=self.CHAIN, save=True)
        small, small_terms = self.bound("fixed_small", timesteps=self.CHAIN, save=True)
        self.assertLess(abs(float((large - self.exact).mean())), self.SLACK)
        expected = fixed_small_excess(self.sched["fixed_small"], self.CHAIN.tolist())
        gap = float((small - large).mean())
        self.assertLess(
            abs(gap - float(expected.sum())), self.SLACK, f"gap {gap:.4f}, closed form {expected.sum():.4f}"
        )
        decoder = float((small_terms[-1] - large_terms[-1]).double().mean())
        self.assertAlmostEqual(float(expected[-1]), 0.164, delta=1e-3)  # clipped: beta_tilde_1 = 0.55 beta_0
        self.assertLess(abs(decoder - float(expected[-1])), 0.03, f"decoder excess {decoder:.4f}")
        self.assertGreater(float((small - self.exact).min()), 0.5)
        # a uniform 50-step chain: the step 20 -> 0 has beta' / beta_tilde' ~ 60, and fixed_small loses 43 bits/dim
        uniform = torch.linspace(999, 0, 50).round().long().tolist()
        self.assertGreater(float(fixed_small_excess(self.sched["fixed_small"], uniform).sum()), 40.0)

    def test_wrong_model_gives_a_larger_bound(self):
        # the exact denoiser of N(0.5, I): its fixed_large chain is exact for that law, so the bound becomes that
        # law's NLL; with the same noise draws the excess equals the NLL difference
        wrong = white((1, 32, 32), mean=0.5)
        excess = self.bound("fixed_large", wrong, self.CHAIN) - self.bound("fixed_large", None, self.CHAIN)
        expected = density_bpd(wrong, self.x) - density_bpd(self.prior, self.x)
        self.assertGreater(float(excess.min()), 0.1)
        assert_allclose(excess, expected, rtol=0, atol=0.02)

    def test_correlated_3d_data(self):
        # a coloured spectrum with a mean: the Gaussian reverse kernel is no longer exact; the bound stays above
        grid = torch.meshgrid(*[torch.arange(8.0) - 4] * 3, indexing="ij")
        power = torch.exp(-0.3 * sum(g**2 for g in grid))
        prior = StationaryGaussianPrior(torch.full((1, 8, 8, 8), 0.3), (power / power.mean() + 0.05).unsqueeze(0))
        x = fine_samples(prior, 8)
        sched = self.sched["fixed_large"]
        chain = torch.linspace(999, 0, 100).round().long()
        generator = torch.Generator().manual_seed(1)
        bound = variational_bound(
            x, GaussianPriorDenoiser(prior, sched), sched, timesteps=chain, generator=generator, **FINE
        )
        gap = float((bound.double() - density_bpd(prior, x)).mean())
        self.assertGreater(gap, -self.SLACK)
        self.assertLess(gap, 0.2)


class TestVariances(unittest.TestCase):
    def _bound(self, variance_type: str, value: float | None, decoder: str = "clipped") -> torch.Tensor:
        prior = white((1, 8, 8))
        x = fine_samples(prior, 2)
        sched = DDPMScheduler(50, variance_type=variance_type)
        model = GaussianPriorDenoiser(prior, sched)
        if value is not None:

            def model_with_variance(x, timesteps):
                out = GaussianPriorDenoiser(prior, sched)(x, timesteps)
                return torch.cat([out, torch.full_like(out, value)], 1)

            model = model_with_variance  # type: ignore[assignment]
        return variational_bound(
            x, model, sched, generator=torch.Generator().manual_seed(0), decoder_variance=decoder, **FINE
        )

    def test_learned_range_ends_are_the_fixed_types(self):
        assert_allclose(self._bound("learned_range", 1.0), self._bound("fixed_large", None), rtol=1e-6)
        assert_allclose(self._bound("learned_range", -1.0), self._bound("fixed_small", None), rtol=1e-6)
        assert_allclose(
            self._bound("learned_range", -1.0, "scheduler"), self._bound("fixed_small", None, "scheduler"), rtol=1e-6
        )

    def test_learned_log_variance(self):
        # a constant learned log-variance differs from the fixed types
        self.assertFalse(torch.allclose(self._bound("learned", -5.0), self._bound("fixed_large", None)))
        self.assertTrue(bool(torch.isfinite(self._bound("learned", -5.0)).all()))


class TestDecoder(unittest.TestCase):
    def test_bins_and_edges(self):
        x = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
        mean, log_var = torch.tensor(0.5, dtype=torch.float64), torch.tensor(math.log(0.04), dtype=torch.float64)
        got = discretized_gaussian_log_likelihood(x, mean, log_var, 0.1, (0.0, 1.0)).exp()
        cdf = torch.distributions.Normal(torch.tensor(0.5, dtype=torch.float64), 0.2).cdf
        edges = torch.tensor([0.05, 0.45, 0.55, 0.95], dtype=torch.float64)
        c = cdf(edges)
        expected = torch.stack([c[0], c[2] - c[1], 1 - c[3]])
        assert_allclose(got, expected, rtol=1e-9)
        # a right-tail bin is computed on the mirrored left tail (no cancellation of two CDFs near 1)
        d64 = dict(dtype=torch.float64)
        right = discretized_gaussian_log_likelihood(
            torch.tensor([0.6], **d64), torch.tensor(0.0, **d64), torch.tensor(math.log(0.01), **d64), 0.01, (-1.0, 1.0)
        )
        left = torch.special.ndtr(torch.tensor(-5.95, **d64)) - torch.special.ndtr(torch.tensor(-6.05, **d64))
        assert_allclose(right.exp(), left, rtol=1e-9)
        # below the floor of 1e-12 (Nichol & Dhariwal's and MONAI's)
        far = discretized_gaussian_log_likelihood(
            torch.tensor([0.9]), torch.tensor(0.0), torch.tensor(math.log(0.01)), 0.01, (-1.0, 1.0)
        )
        self.assertAlmostEqual(float(far), math.log(1e-12), places=5)


class TestErrorsAndOptions(unittest.TestCase):
    def setUp(self):
        self.sched = DDPMScheduler(10)
        self.prior = white((1, 4, 4), mean=0.5)
        self.model = GaussianPriorDenoiser(self.prior, self.sched)
        self.x = images(2)[:, :, :4, :4]

    def test_errors(self):
        cases = [
            (TypeError, "floating-point", dict(inputs=(self.x * 255).to(torch.uint8))),
            (ValueError, "scaled_input_range", dict(inputs=self.x * 2)),
            (ValueError, "scaled_input_range must be finite", dict(scaled_input_range=(1, 0))),
            (ValueError, "original_input_range must be a pair", dict(original_input_range=5)),
            (ValueError, "NaN", dict(inputs=self.x.clone().fill_(float("nan")))),
            (ValueError, r"\(B, C, \*spatial\)", dict(inputs=self.x[0, 0])),
            (TypeError, "alphas_cumprod", dict(scheduler=NCSNScheduler())),
            (ValueError, "strictly decreasing", dict(timesteps=[3, 5])),
            (ValueError, "integer training times", dict(timesteps=[5.5, 2])),
            (ValueError, "decoder_variance", dict(decoder_variance="small")),
            (ValueError, "noise must be", dict(noise=torch.zeros(1, 1, 4, 4))),
            (TypeError, "mapping", dict(conditioning=torch.zeros(2, 1, 4))),
            (ValueError, "learned variances", dict(scheduler=MonaiDDPM(10, variance_type="learned_range"))),
        ]
        for error, message, kwargs in cases:
            args = dict(inputs=self.x, diffusion_model=self.model, scheduler=self.sched) | kwargs
            with self.subTest(message=message), self.assertRaisesRegex(error, message):
                variational_bound(**args)

    def test_model_output_channels(self):
        sched = DDPMScheduler(10, variance_type="learned")
        with self.assertRaisesRegex(ValueError, "2 channels"):
            variational_bound(self.x, GaussianPriorDenoiser(self.prior, sched), sched)

    def test_options(self):
        bpd, terms = variational_bound(
            self.x, self.model, self.sched, save_intermediates=True, progress=True, timesteps=[9, 4, 0]
        )
        self.assertEqual(bpd.shape, (2,))
        self.assertEqual(len(terms), 4)  # prior + 3 steps
        assert_allclose(sum(t.flatten(1).mean(1) for t in terms), bpd, rtol=1e-5)
        again = variational_bound(
            self.x, self.model, self.sched, timesteps=[9, 4, 0], generator=torch.Generator().manual_seed(0)
        )
        same = variational_bound(
            self.x, self.model, self.sched, timesteps=[9, 4, 0], generator=torch.Generator().manual_seed(0)
        )
        assert_allclose(again, same)
        # a scheduler with a table but no variance_type (MONAI's DDIM) is read as fixed_small
        ddim, ddpm = MonaiDDIM(10, clip_sample=False), MonaiDDPM(10, clip_sample=False)
        noise = torch.randn(self.x.shape, generator=torch.Generator().manual_seed(0))
        assert_allclose(
            variational_bound(self.x, self.model, ddim, noise=noise),
            variational_bound(self.x, self.model, ddpm, noise=noise),
        )


class TestCuda(unittest.TestCase):
    @skip_if_no_cuda
    def test_cuda_equals_cpu(self):
        # the tables stay on the CPU, the terms are computed on the inputs' device; MONAI's scheduler and ours
        net = tiny_unet(2)
        x = images(2)
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
        for sched in (DDPMScheduler(20, clip_sample=True), MonaiDDPM(20)):
            cpu = variational_bound(x, net, sched, noise=noise)
            gpu = variational_bound(x.cuda(), net.cuda(), sched.to("cuda"), noise=noise.cuda())
            net.cpu()
            self.assertEqual(gpu.device.type, "cuda")
            assert_allclose(gpu, cpu, rtol=1e-4, atol=0)


if __name__ == "__main__":
    unittest.main()
