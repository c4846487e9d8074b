"""Training handlers (CSV log, progress bar), bfloat16 autocast training and DDP unwrapping."""

from __future__ import annotations

import csv

import pytest
import torch
from ignite.engine import Engine

from monai_diffusion.engines import AutocastInferer, ProgressBar, TrainingLog, diffusion_trainer
from monai_diffusion.engines.recipes import _unwrap
from monai_diffusion.inferers import DiffusionInferer
from monai_diffusion.networks.schedulers import DDPMScheduler
from tests.test_utils import tiny_unet


def _engine(losses):
    engine = Engine(lambda e, b: {"loss": torch.tensor(losses[e.state.iteration - 1])})
    return engine


def test_training_log_rows_and_resume(tmp_path):
    path = tmp_path / "log.csv"
    engine = _engine([1.0, 3.0, 5.0, 7.0])
    TrainingLog(path, every=2).attach(engine)
    engine.run([0] * 4, max_epochs=1)
    rows = list(csv.DictReader(open(path)))
    assert [int(r["iteration"]) for r in rows] == [2, 4]
    assert [float(r["loss"]) for r in rows] == [2.0, 6.0]  # mean over the rows' iterations
    engine2 = _engine([1.0, 1.0])
    TrainingLog(path, every=2).attach(engine2)
    engine2.run([0] * 2, max_epochs=1)
    rows = list(csv.DictReader(open(path)))
    assert len(rows) == 3 and float(rows[2]["total_s"]) >= float(rows[1]["total_s"])


def test_training_log_stops_on_nan(tmp_path):
    engine = _engine([1.0, float("nan"), 1.0])
    TrainingLog(tmp_path / "log.csv", every=1).attach(engine)
    with pytest.raises(FloatingPointError, match="iteration 2"):
        engine.run([0] * 3, max_epochs=1)


def test_progress_bar_runs_and_reraises():
    engine = _engine([1.0, 2.0])
    ProgressBar(disable=True).attach(engine)
    engine.run([0] * 2, max_epochs=1)

    def boom(e, b):
        raise RuntimeError("boom")

    failing = Engine(boom)
    ProgressBar(disable=True).attach(failing)
    with pytest.raises(RuntimeError, match="boom"):
        failing.run([0], max_epochs=1)


def test_autocast_inferer_bfloat16_close_to_float32():
    net, scheduler = tiny_unet(2), DDPMScheduler(1000)
    with torch.no_grad():  # MONAI zero-initialises the output layer; give it weights so the outputs differ
        for p in net.out.parameters():
            p.normal_(0, 0.1)
    x, n = torch.randn(2, 1, 16, 16), torch.randn(2, 1, 16, 16)
    t = torch.tensor([10, 500])
    ref = DiffusionInferer(scheduler)(x, net, n, t)
    out = AutocastInferer(DiffusionInferer(scheduler), "cpu", "bfloat16")(x, net, n, t)
    assert out.dtype == torch.float32
    assert not torch.equal(out, ref), "bfloat16 autocast changes the arithmetic"
    assert float((out - ref).abs().max()) < 0.1 * float(ref.abs().max())
    with pytest.raises(ValueError, match="bfloat16 or float16"):
        AutocastInferer(DiffusionInferer(scheduler), "cpu", "float64")
    with pytest.raises(ValueError, match="CUDA"):
        AutocastInferer(DiffusionInferer(scheduler), "cpu", "float16")


def test_diffusion_trainer_bfloat16_runs():
    data = [{"image": torch.randn(4, 1, 16, 16)} for _ in range(3)]
    trainer, ema = diffusion_trainer(tiny_unet(2), DDPMScheduler(1000), data, max_epochs=1, amp_dtype="bfloat16")
    trainer.run()
    assert trainer.state.iteration == 3 and torch.isfinite(torch.as_tensor(trainer.state.output["loss"]))
    assert all(torch.isfinite(p).all() for p in ema.averaged.parameters())


def test_unwrap():
    net = torch.nn.Linear(2, 2)
    assert _unwrap(torch.nn.DataParallel(net)) is net
    assert _unwrap(net) is net


def test_grad_clipping_bounds_the_update():
    """With clipping at 1e-6 and plain SGD the weights move by at most lr * 1e-6 per iteration."""
    from monai.engines import SupervisedTrainer

    from monai_diffusion.engines.recipes import attach_grad_clipping

    net = torch.nn.Linear(4, 1).double()
    before = [p.detach().clone() for p in net.parameters()]
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    data = [{"image": torch.randn(8, 4, dtype=torch.float64) * 100, "label": torch.randn(8, 1, dtype=torch.float64)}]
    trainer = SupervisedTrainer("cpu", 1, data, net, opt, torch.nn.MSELoss(), decollate=False)
    attach_grad_clipping(trainer, list(net.parameters()), 1e-6)
    trainer.run()
    moved = torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(net.parameters(), before)))
    assert 0 < float(moved) <= 1e-6 * 1.0001
    with pytest.raises(ValueError, match="positive"):
        attach_grad_clipping(trainer, list(net.parameters()), 0.0)


def test_latest_checkpoint_skips_a_truncated_newest_file(tmp_path):
    from monai_diffusion.engines import latest_checkpoint

    torch.save({"network": {"w": torch.ones(3)}}, tmp_path / "checkpoint_iteration=2.pt")
    torch.save({"network": {"w": torch.ones(3)}}, tmp_path / "checkpoint_iteration=4.pt")
    data = (tmp_path / "checkpoint_iteration=4.pt").read_bytes()
    (tmp_path / "checkpoint_iteration=4.pt").write_bytes(data[: len(data) // 2])
    with pytest.warns(UserWarning, match="checkpoint_iteration=4.pt cannot be read"):
        assert latest_checkpoint(tmp_path).name == "checkpoint_iteration=2.pt"
    assert latest_checkpoint(tmp_path, verify=False).name == "checkpoint_iteration=4.pt"
    (tmp_path / "checkpoint_iteration=2.pt").write_bytes(b"")
    with pytest.warns(UserWarning):
        assert latest_checkpoint(tmp_path) is None
