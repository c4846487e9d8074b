from __future__ import annotations

import unittest

import torch

from monai_diffusion.exact import ExactModel, stratified_normal
from monai_diffusion.networks.schedulers import DPMSolverMultistepScheduler
from tests.networks.schedulers.contract import SchedulerContract, contract_mixture, sample_loop


class TestDPMSolverContract(SchedulerContract, unittest.TestCase):
    scheduler_class = DPMSolverMultistepScheduler
    bundle_args = {"solver_order": 2, "timestep_spacing": "karras", "prediction_type": "v_prediction"}

    def make_scheduler(self, **kw):
        return DPMSolverMultistepScheduler(**kw)


class TestDPMSolver3Contract(SchedulerContract, unittest.TestCase):
    scheduler_class = DPMSolverMultistepScheduler
    bundle_args = {"solver_order": 3}

    def make_scheduler(self, **kw):
        return DPMSolverMultistepScheduler(**{"solver_order": 3, **kw})


class TestLowerOrderFinal(unittest.TestCase):
    def test_order_schedule(self):
        # warm-up from order 1, order 3 in the middle, lower orders over the last steps; the last entry jumps to x0
        s = DPMSolverMultistepScheduler(solver_order=3)
        s.set_timesteps(10)
        self.assertEqual([s._order_at(i) for i in range(10)], [1, 2, 3, 3, 3, 3, 3, 3, 2, 1])
        full = DPMSolverMultistepScheduler(solver_order=3, lower_order_final=False)
        full.set_timesteps(10)
        self.assertEqual([full._order_at(i) for i in range(10)], [1, 2] + [3] * 8)
        # DPM-Solver++ lowers the order only for schedules shorter than 15 steps (Lu et al. 2022b)
        s.set_timesteps(20)
        self.assertEqual([s._order_at(i) for i in range(20)], [1, 2] + [3] * 18)

    def test_lower_order_final_changes_the_result(self):
        outs = []
        for flag in (True, False):
            s = DPMSolverMultistepScheduler(solver_order=3, lower_order_final=flag)
            s.set_timesteps(6)
            x, _ = sample_loop(s, ExactModel(contract_mixture(), s), stratified_normal((1, 1, 16, 16)))
            self.assertTrue(bool(torch.isfinite(x).all()))
            outs.append(x)
        self.assertGreater(float((outs[0] - outs[1]).abs().max()), 1e-4)


if __name__ == "__main__":
    unittest.main()


class TestLambdaMin(unittest.TestCase):
    def test_cosine_schedule_clipped_log_snr(self):
        """Cosine betas put t = 999 at log-SNR -19.8; clipping the grid at lambda_min = -3 after the first point
        fixes the 10-NFE solvers (measured on this mixture: DPM-Solver++ 3M W1 0.176 -> 0.0068, DDIM 0.048)."""
        from monai_diffusion.exact import GaussianMixture, wasserstein1
        from monai_diffusion.inferers import DiffusionInferer
        from monai_diffusion.networks.schedulers import DDIMScheduler

        mixture = GaussianMixture(torch.tensor([0.4, 0.6]), torch.tensor([-0.8, 0.6]), torch.tensor([0.2, 0.3]))
        noise = stratified_normal((2, 1, 32, 32))

        def run(sched):
            sched.set_timesteps(10)
            return wasserstein1(DiffusionInferer(sched).sample(noise.clone(), ExactModel(mixture, sched)), mixture)

        plain = run(DPMSolverMultistepScheduler(schedule="cosine", solver_order=3))
        clipped = run(DPMSolverMultistepScheduler(schedule="cosine", solver_order=3, lambda_min=-3.0))
        ddim = run(DDIMScheduler(schedule="cosine", timestep_spacing="leading"))
        self.assertLess(clipped, 0.015)
        self.assertLess(clipped, ddim / 3)
        self.assertGreater(plain, ddim)  # the unclipped default grid is worse than DDIM here
        with self.assertRaisesRegex(ValueError, "lambda_min applies"):
            DPMSolverMultistepScheduler(timestep_spacing="karras", lambda_min=-3.0)
