"""The contract every sampler in ``monai_diffusion.networks.schedulers`` must pass.

Use it as a mixin next to ``unittest.TestCase`` and provide ``make_scheduler(**kw)``::

    class TestDDIMContract(SchedulerContract, unittest.TestCase):
        scheduler_class = DDIMScheduler
        bundle_args = {"eta": 0.5}

        def make_scheduler(self, **kw):
            return DDIMScheduler(**{"eta": 0.5, **kw})

Checks: no-argument construction, 2D/3D shapes, generator determinism, state reset by ``set_timesteps`` (two runs
in a row identical), buffers in ``state_dict`` and moved by ``.to()``, float16/bfloat16 in -> same dtype out,
``add_noise`` not mutating the scheduler and accepting every t in ``timesteps``, building from a MONAI bundle
config, NFE == len(timesteps) with a finite result, and starting mid-grid from a noised image (partial noising)
with the package's ``DiffusionInferer``.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from monai.bundle import ConfigParser
from monai.networks.schedulers import Scheduler

from monai_diffusion.exact import ExactModel, GaussianMixture
from tests.test_utils import SPATIAL_2D, SPATIAL_3D, make_input

__all__ = ["SchedulerContract", "sample_loop", "contract_mixture"]


def contract_mixture() -> GaussianMixture:
    """A small bimodal 1D mixture used to drive samplers in the contract."""
    return GaussianMixture(torch.tensor([0.4, 0.6]), torch.tensor([-0.8, 0.6]), torch.tensor([0.2, 0.3]))


def sample_loop(
    scheduler: Any, model: Any, noise: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """MONAI's sampling loop: ``x = noise * init_noise_sigma; x, x0 = step(model(x, t), t, x)`` for t in timesteps."""
    x = noise * float(getattr(scheduler, "init_noise_sigma", 1.0))
    x0 = x
    for t in scheduler.timesteps:
        x, x0 = scheduler.step(model(x, t), t, x, generator=generator)
    return x, x0


class SchedulerContract:
    """Mixin of contract tests. Subclasses set ``scheduler_class`` and implement ``make_scheduler(**kw)``.

    Attributes:
        scheduler_class: the class under test (for no-argument and bundle construction).
        bundle_args: JSON-serialisable constructor arguments used in the bundle-config test.
        num_inference_steps: steps used by the contract's sampling runs (kept small for CI).
        stochastic: whether the sampler draws noise (then different seeds must give different results).
    """

    scheduler_class: type | None = None
    bundle_args: dict[str, Any] = {}
    num_inference_steps: int = 6
    stochastic: bool = False

    # ------------------------------------------------------------------ hook
    def make_scheduler(self, **kw: Any) -> Any:
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers
    def _ready(self, **kw: Any) -> Any:
        s = self.make_scheduler(**kw)
        s.set_timesteps(self.num_inference_steps)
        return s

    def _run(self, s: Any, shape: tuple[int, ...], seed: int = 0, dtype: torch.dtype = torch.float32):
        model = ExactModel(contract_mixture(), s)
        noise = make_input(shape, seed=123, dtype=dtype)
        gen = torch.Generator().manual_seed(seed)
        out = sample_loop(s, model, noise, gen)
        return out, model.calls

    # ------------------------------------------------------------------ tests
    def test_contract_subclasses_monai_scheduler(self) -> None:
        s = self.make_scheduler()
        self.assertIsInstance(s, Scheduler)
        self.assertIsInstance(s, torch.nn.Module)
        self.assertIn(s.prediction_type, ("epsilon", "sample", "v_prediction"))
        self.assertGreater(float(s.init_noise_sigma), 0.0)

    def test_contract_no_argument_construction(self) -> None:
        s = self.scheduler_class()
        self.assertEqual(s.num_train_timesteps, 1000)
        self.assertEqual(s.timesteps.ndim, 1)
        self.assertGreater(len(s.timesteps), 0)

    def test_contract_shapes_2d_3d(self) -> None:
        for spatial in (SPATIAL_2D, SPATIAL_3D):
            shape = (2, 1, *spatial)
            s = self._ready()
            (x, x0), _ = self._run(s, shape)
            self.assertEqual(tuple(x.shape), shape)
            self.assertEqual(tuple(x0.shape), shape)
            self.assertTrue(bool(torch.isfinite(x).all()), f"non-finite output for {spatial}")

    def test_contract_integer_input_rejected(self) -> None:
        s = self._ready()
        t = s.timesteps[0]
        x = torch.ones(1, 1, *SPATIAL_2D)
        with self.assertRaisesRegex(TypeError, "sample must be a floating-point tensor"):
            s.step(x, t, x.long())
        with self.assertRaisesRegex(TypeError, "model_output must be a floating-point tensor"):
            s.step(x.int(), t, x)

    def test_contract_generator_determinism(self) -> None:
        shape = (2, 1, *SPATIAL_2D)
        (a, _), _ = self._run(self._ready(), shape, seed=7)
        (b, _), _ = self._run(self._ready(), shape, seed=7)
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        if self.stochastic:
            (c, _), _ = self._run(self._ready(), shape, seed=8)
            self.assertFalse(torch.equal(a, c), "different generator seeds gave identical stochastic samples")

    def test_contract_set_timesteps_resets_state(self) -> None:
        shape = (2, 1, *SPATIAL_2D)
        s = self._ready()
        (a, _), _ = self._run(s, shape, seed=3)
        s.set_timesteps(self.num_inference_steps)
        (b, _), _ = self._run(s, shape, seed=3)
        torch.testing.assert_close(a, b, rtol=0, atol=0)

    def test_contract_buffers(self) -> None:
        s = self.make_scheduler()
        state = s.state_dict()
        self.assertGreater(len(state), 0, "state_dict is empty: tables must be registered buffers")
        for name, value in vars(s).items():
            if isinstance(value, torch.Tensor) and name != "timesteps":
                self.fail(f"tensor attribute {name!r} is not a registered buffer")
        clone = self.make_scheduler()
        clone.load_state_dict(copy.deepcopy(state))
        for k, v in state.items():
            torch.testing.assert_close(clone.state_dict()[k], v)
        moved = self.make_scheduler().to(torch.float64)
        for k, v in moved.state_dict().items():
            if v.is_floating_point():
                self.assertEqual(v.dtype, torch.float64, f"buffer {k} was not moved by .to()")

    def test_contract_low_precision(self) -> None:
        for dtype in (torch.float16, torch.bfloat16):
            s = self._ready()
            (x, x0), _ = self._run(s, (2, 1, *SPATIAL_2D), dtype=dtype)
            self.assertEqual(x.dtype, dtype)
            self.assertEqual(x0.dtype, dtype)
            self.assertTrue(bool(torch.isfinite(x.float()).all()))

    def test_contract_add_noise(self) -> None:
        s = self._ready()
        before = {k: v.clone() for k, v in s.state_dict().items()}
        x0 = make_input((3, 1, *SPATIAL_2D), seed=1)
        noise = make_input((3, 1, *SPATIAL_2D), seed=2)
        for t in s.timesteps:
            xt = s.add_noise(x0, noise, t)
            self.assertEqual(xt.shape, x0.shape)
            self.assertTrue(bool(torch.isfinite(xt).all()))
        per_sample = s.timesteps[:3] if len(s.timesteps) >= 3 else s.timesteps[:1].repeat(3)
        xt = s.add_noise(x0.half(), noise.half(), per_sample)
        self.assertEqual(xt.dtype, torch.float16)
        alpha, sigma = s.marginal_coefficients(per_sample)
        expected = alpha.float().reshape(-1, 1, 1, 1) * x0 + sigma.float().reshape(-1, 1, 1, 1) * noise
        torch.testing.assert_close(xt.float(), expected, rtol=1e-2, atol=1e-2)
        after = s.state_dict()
        self.assertEqual(before.keys(), after.keys())
        for k in before:
            self.assertEqual(before[k].dtype, after[k].dtype, f"add_noise changed the dtype of {k}")
            torch.testing.assert_close(before[k], after[k], rtol=0, atol=0)

    def test_contract_bundle_config(self) -> None:
        name = self.scheduler_class.__name__
        config = {"sched": {"_target_": f"monai_diffusion.networks.schedulers.{name}", **self.bundle_args}}
        s = ConfigParser(config).get_parsed_content("sched")
        self.assertIsInstance(s, self.scheduler_class)
        s.set_timesteps(self.num_inference_steps)
        self.assertGreater(len(s.timesteps), 0)

    def test_contract_monai_inferer(self) -> None:
        from monai.inferers import DiffusionInferer

        s = self._ready()
        noise = make_input((2, 1, *SPATIAL_2D), seed=5)
        scale = float(s.init_noise_sigma)
        if scale > 2:  # MONAI's inferer does not scale the noise: a VE process refuses unscaled noise
            with self.assertRaisesRegex(ValueError, "init_noise_sigma"):
                DiffusionInferer(s).sample(noise, ExactModel(contract_mixture(), s), scheduler=s)
            s = self._ready()
        model = ExactModel(contract_mixture(), s)
        out = DiffusionInferer(s).sample(noise * scale, model, scheduler=s)
        self.assertEqual(model.calls, len(s.timesteps))
        self.assertEqual(tuple(out.shape), tuple(noise.shape))
        self.assertTrue(bool(torch.isfinite(out).all()))
        if not self.stochastic:  # same result as the plain loop, given noise * init_noise_sigma
            s.set_timesteps(self.num_inference_steps)
            ref, _ = sample_loop(s, ExactModel(contract_mixture(), s), noise)
            torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)

    def test_contract_nfe_equals_len_timesteps(self) -> None:
        s = self._ready()
        (x, x0), calls = self._run(s, (2, 1, *SPATIAL_2D))
        self.assertEqual(calls, len(s.timesteps))
        self.assertTrue(bool(torch.isfinite(x0).all()))
        self.assertTrue(bool(torch.isfinite(x).all()))

    def test_contract_partial_start(self) -> None:
        """``DiffusionInferer.sample(start_image=..., strength=0.5)`` runs the second half of the grid, twice alike."""
        from monai_diffusion.inferers import DiffusionInferer, start_index

        s = self._ready()
        image = contract_mixture().sample((2, 1, *SPATIAL_2D), generator=torch.Generator().manual_seed(0)).float()
        noise = make_input(image.shape, seed=9)
        outs = []
        for _ in range(2):
            s.set_timesteps(self.num_inference_steps)
            model = ExactModel(contract_mixture(), s)
            out = DiffusionInferer(s).sample(
                noise, model, start_image=image, strength=0.5, generator=torch.Generator().manual_seed(4)
            )
            first = start_index(torch.as_tensor(s.timesteps), strength=0.5)
            if hasattr(s, "set_begin_index"):  # stateful: it may have moved to a later entry at the same time
                first = s.begin_index
            self.assertGreater(first, 0)
            self.assertEqual(model.calls, len(s.timesteps) - first)
            self.assertTrue(bool(torch.isfinite(out).all()))
            outs.append(out)
        torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
