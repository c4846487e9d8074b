from __future__ import annotations

import unittest

import torch
from monai.engines import SupervisedTrainer
from monai.networks.nets import DiffusionModelUNet
from parameterized import parameterized

from monai_diffusion.engines import DiffusionPrepareBatch, ExponentialMovingAverage
from monai_diffusion.inferers import DiffusionInferer, NullCondition, marginal_coefficients
from monai_diffusion.losses import MinSNRWeighting
from monai_diffusion.networks.schedulers import DDPMScheduler
from tests.test_utils import assert_allclose, dims_cases, make_input


class TestPrepareBatch(unittest.TestCase):
    @parameterized.expand([("epsilon",), ("sample",), ("v_prediction",)])
    def test_targets(self, prediction_type):
        sched = DDPMScheduler(100, prediction_type=prediction_type)
        x0 = make_input((4, 1, 8, 8))
        prep = DiffusionPrepareBatch(sched, generator=torch.Generator().manual_seed(0))
        images, target, args, kwargs = prep({"image": x0})
        self.assertEqual(args, ())
        noise, t = kwargs["noise"], kwargs["timesteps"]
        a, s = (v.float().reshape(-1, 1, 1, 1) for v in marginal_coefficients(sched, t))
        expected = {"epsilon": noise, "sample": x0, "v_prediction": a * noise - s * x0}[prediction_type]
        assert_allclose(target, expected, atol=1e-6)
        again = DiffusionPrepareBatch(sched, generator=torch.Generator().manual_seed(0))({"image": x0})
        assert_allclose(again[3]["noise"], noise)

    def test_conditions_weighting_encoder(self):
        sched = DDPMScheduler(100)
        batch = {
            "t1w": make_input((3, 1, 8, 8)),
            "t2w": make_input((3, 1, 8, 8), 1),
            "healthy": torch.tensor([True, False, True]),
        }
        prep = DiffusionPrepareBatch(
            sched,
            image_key="t1w",
            condition={"concat": "t2w", "class_label": "healthy"},
            loss_weighting=MinSNRWeighting(5.0),
            encoder=lambda x: x[:, :, ::2, ::2],
        )
        images, target, _, kwargs = prep(batch)
        self.assertEqual(images.shape, (3, 1, 4, 4))
        self.assertEqual(kwargs["condition"]["class_label"].tolist(), [1, 0, 1])
        a, s = marginal_coefficients(sched, kwargs["timesteps"])
        w = MinSNRWeighting(5.0)(a, s).sqrt().float()
        assert_allclose(kwargs["output_scale"], w, rtol=1e-6)
        assert_allclose(target, kwargs["noise"] * w.reshape(-1, 1, 1, 1), rtol=1e-6)
        with self.assertRaisesRegex(ValueError, "no key"):
            prep({"image": batch["t1w"]})

    @parameterized.expand(dims_cases())
    def test_supervised_trainer(self, _, dims):
        """Two iterations of MONAI's SupervisedTrainer with our prepare_batch, inferer (CFG dropout) and EMA."""
        torch.manual_seed(0)
        net = DiffusionModelUNet(
            spatial_dims=dims,
            in_channels=1,
            out_channels=1,
            channels=(8, 8),
            attention_levels=(False, False),
            num_res_blocks=1,
            norm_num_groups=8,
            num_class_embeds=3,
        )
        sched = DDPMScheduler(100)
        data = [{"image": make_input((2, 1, *([8] * dims)), i), "label": torch.tensor([0, 1])} for i in range(2)]
        inferer = DiffusionInferer(sched, "class_label", NullCondition(class_label=2), condition_dropout=0.5)
        trainer = SupervisedTrainer(
            device=torch.device("cpu"),
            max_epochs=1,
            train_data_loader=data,
            network=net,
            optimizer=torch.optim.Adam(net.parameters(), 1e-3),
            loss_function=torch.nn.MSELoss(),
            inferer=inferer,
            prepare_batch=DiffusionPrepareBatch(sched, condition="label"),
            decollate=False,
        )
        ema = ExponentialMovingAverage(net, decay=0.9)
        ema.attach(trainer)
        before = [p.detach().clone() for p in net.parameters()]
        trainer.run()
        self.assertEqual(trainer.state.iteration, 2)
        self.assertTrue(torch.isfinite(trainer.state.output["loss"]))
        self.assertTrue(any((p - b).abs().max() > 0 for p, b in zip(net.parameters(), before)))
        self.assertEqual(int(ema.num_updates), 2)


class TestEMA(unittest.TestCase):
    def test_update_rule_and_state(self):
        net = torch.nn.Linear(2, 1)
        ema = ExponentialMovingAverage(net, decay=0.5, warmup=False)
        start = net.weight.detach().clone()
        with torch.no_grad():
            net.weight.add_(1.0)
        ema.update(net)
        assert_allclose(ema.averaged.weight, start + 0.5)
        self.assertIn("averaged.weight", ema.state_dict())
        self.assertIn("num_updates", ema.state_dict())
        self.assertFalse(any(p.requires_grad for p in ema.parameters()))
        warm = ExponentialMovingAverage(net, decay=0.999)
        self.assertAlmostEqual(warm.current_decay(), 0.1)
        with self.assertRaisesRegex(ValueError, "decay"):
            ExponentialMovingAverage(net, decay=1.0)


if __name__ == "__main__":
    unittest.main()
