from __future__ import annotations

import unittest

from monai_diffusion.networks.schedulers import EulerKarrasScheduler, HeunKarrasScheduler
from tests.networks.schedulers.contract import SchedulerContract


class TestEulerKarrasContract(SchedulerContract, unittest.TestCase):
    scheduler_class = EulerKarrasScheduler
    bundle_args = {"rho": 7.0, "prediction_type": "sample"}

    def make_scheduler(self, **kw):
        return EulerKarrasScheduler(**kw)


class TestHeunKarrasContract(SchedulerContract, unittest.TestCase):
    scheduler_class = HeunKarrasScheduler
    bundle_args = {"schedule": "cosine"}
    num_inference_steps = 4

    def make_scheduler(self, **kw):
        return HeunKarrasScheduler(**kw)


if __name__ == "__main__":
    unittest.main()
