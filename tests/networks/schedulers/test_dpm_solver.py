from __future__ import annotations

import unittest

from monai_diffusion.networks.schedulers import DPMSolverMultistepScheduler
from tests.networks.schedulers.contract import SchedulerContract


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


if __name__ == "__main__":
    unittest.main()
