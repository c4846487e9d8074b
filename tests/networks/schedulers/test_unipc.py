from __future__ import annotations

import unittest

import torch

from monai_diffusion.exact import ExactModel, stratified_normal
from monai_diffusion.networks.schedulers import UniPCMultistepScheduler
from tests.networks.schedulers.contract import SchedulerContract, contract_mixture, sample_loop


class TestUniPCContract(SchedulerContract, unittest.TestCase):
    scheduler_class = UniPCMultistepScheduler
    bundle_args = {"solver_order": 3, "variant": "bh1", "timestep_spacing": "karras"}

    def make_scheduler(self, **kw):
        return UniPCMultistepScheduler(**kw)


class TestLowerOrderFinal(unittest.TestCase):
    def test_order_schedule(self):
        # warm-up from order 1, order 3 in the middle, lower orders over the last steps; the last entry jumps to x0
        s = UniPCMultistepScheduler(solver_order=3)
        s.set_timesteps(10)
        self.assertEqual([s._order_at(i) for i in range(10)], [1, 2, 3, 3, 3, 3, 3, 3, 2, 1])
        full = UniPCMultistepScheduler(solver_order=3, lower_order_final=False)
        full.set_timesteps(10)
        self.assertEqual([full._order_at(i) for i in range(10)], [1, 2] + [3] * 8)
        # UniPC lowers the order at the end of every schedule
        s.set_timesteps(20)
        self.assertEqual([s._order_at(i) for i in range(20)], [1, 2] + [3] * 16 + [2, 1])

    def test_lower_order_final_changes_the_result(self):
        outs = []
        for flag in (True, False):
            s = UniPCMultistepScheduler(solver_order=3, lower_order_final=flag)
            s.set_timesteps(6)
            x, _ = sample_loop(s, ExactModel(contract_mixture(), s), stratified_normal((1, 1, 16, 16)))
            self.assertTrue(bool(torch.isfinite(x).all()))
            outs.append(x)
        self.assertGreater(float((outs[0] - outs[1]).abs().max()), 1e-4)


if __name__ == "__main__":
    unittest.main()
