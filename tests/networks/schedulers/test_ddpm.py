from __future__ import annotations

import unittest

from monai_diffusion.networks.schedulers import DDPMScheduler
from tests.networks.schedulers.contract import SchedulerContract


class TestDDPMContract(SchedulerContract, unittest.TestCase):
    scheduler_class = DDPMScheduler
    bundle_args = {"num_train_timesteps": 1000, "schedule": "scaled_linear_beta", "variance_type": "fixed_large"}
    stochastic = True

    def make_scheduler(self, **kw):
        return DDPMScheduler(**kw)


if __name__ == "__main__":
    unittest.main()
