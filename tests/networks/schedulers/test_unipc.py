from __future__ import annotations

import unittest

from monai_diffusion.networks.schedulers import UniPCMultistepScheduler
from tests.networks.schedulers.contract import SchedulerContract


class TestUniPCContract(SchedulerContract, unittest.TestCase):
    scheduler_class = UniPCMultistepScheduler
    bundle_args = {"solver_order": 3, "variant": "bh1", "timestep_spacing": "karras"}

    def make_scheduler(self, **kw):
        return UniPCMultistepScheduler(**kw)


if __name__ == "__main__":
    unittest.main()
