from __future__ import annotations

import unittest

from monai_diffusion.networks.schedulers import DDIMScheduler
from tests.networks.schedulers.contract import SchedulerContract


class TestDDIMContract(SchedulerContract, unittest.TestCase):
    scheduler_class = DDIMScheduler
    bundle_args = {"eta": 0.0, "schedule": "cosine", "timestep_spacing": "trailing"}

    def make_scheduler(self, **kw):
        return DDIMScheduler(**kw)


class TestDDIMStochasticContract(SchedulerContract, unittest.TestCase):
    scheduler_class = DDIMScheduler
    bundle_args = {"eta": 1.0}
    stochastic = True

    def make_scheduler(self, **kw):
        return DDIMScheduler(**{"eta": 1.0, **kw})


if __name__ == "__main__":
    unittest.main()
