"""Checkpoints of the recipes across interrupted and resumed runs: no final checkpoint of an iteration cut off mid-step
or of a run that trained nothing, at most ``n_saved`` files across resumes, the recorded configuration, and clear
errors for empty data. Tiny in-memory data (lists of batches) and a 2-level UNet, a few iterations each."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Events

from monai_diffusion.engines import (
    RecordedConfig,
    ResumableCheckpointSaver,
    build_component,
    checkpoint_config,
    diffusion_trainer,
    latest_checkpoint,
    regression_trainer,
)
from monai_diffusion.engines.checkpoints import checkpoint_iteration
from monai_diffusion.networks.schedulers import DDPMScheduler
from tests.test_utils import tiny_unet

BATCHES = 4


def data(n: int = BATCHES):
    g = torch.Generator().manual_seed(0)
    return [{"image": torch.randn(2, 1, 8, 8, generator=g)} for _ in range(n)]


def names(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def trainer_for(folder, max_epochs=1, save_interval=1, n_saved=1, config=None, network=None, loader=None):
    trainer, _ = diffusion_trainer(
        network if network is not None else tiny_unet(2),
        DDPMScheduler(100),
        data() if loader is None else loader,
        max_epochs=max_epochs,
        checkpoint_dir=folder,
        save_interval=save_interval,
        n_saved=n_saved,
        config=config,
    )
    return trainer


def interrupt_forward(network: torch.nn.Module, at: int) -> None:
    """Make ``network`` raise ``KeyboardInterrupt`` in its ``at``-th forward (mid-step, before the optimiser step)."""
    forward, calls = network.forward, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == at:
            raise KeyboardInterrupt
        return forward(*args, **kwargs)

    network.forward = interrupted


def test_interrupt_mid_step_leaves_no_final_checkpoint_and_rerun_resumes(tmp_path):
    trainer = trainer_for(tmp_path)
    interrupt_forward(trainer.network, at=3)
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    assert trainer.state.iteration == 3
    assert names(tmp_path) == ["checkpoint_iteration=2.pt"], "no final checkpoint of the cut-off iteration 3"
    resumed = trainer_for(tmp_path)
    started = []
    resumed.add_event_handler(Events.ITERATION_STARTED, lambda e: started.append(e.state.iteration))
    resumed.run()
    assert started == [3, 4]
    assert names(tmp_path) == ["checkpoint_final_iteration=4.pt"]


def test_terminate_at_iteration_started_writes_no_final_for_the_unrun_iteration(tmp_path):
    trainer = trainer_for(tmp_path, save_interval=10)
    trainer.add_event_handler(Events.ITERATION_STARTED(once=3), lambda e: e.terminate())
    trainer.run()
    assert trainer.state.iteration == 3  # ignite counted iteration 3 but never ran it
    assert names(tmp_path) == []
    # a terminate after a completed iteration does save that iteration
    trainer = trainer_for(tmp_path, save_interval=10)
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=2), lambda e: e.terminate())
    trainer.run()
    assert names(tmp_path) == ["checkpoint_final_iteration=2.pt"]


def test_exception_between_iterations_saves_the_completed_one(tmp_path):
    trainer = trainer_for(tmp_path, save_interval=10)

    def fail(engine):
        raise RuntimeError("data source failed")

    trainer.add_event_handler(Events.GET_BATCH_STARTED(once=3), fail)  # fetching the batch after iteration 3
    with pytest.raises(RuntimeError, match="data source failed"):
        trainer.run()
    assert trainer.state.iteration == 3
    assert names(tmp_path) == ["checkpoint_final_iteration=3.pt"]


def test_no_final_checkpoint_of_an_untrained_network(tmp_path):
    trainer = trainer_for(tmp_path, loader=[{"image": torch.zeros(0, 1, 8, 8)}])
    with pytest.raises(ValueError, match="empty batch"):
        trainer.run()
    assert names(tmp_path) == [], "an exception at iteration 1 must not checkpoint the untrained network"
    # a resumed run with nothing left to do writes nothing new
    trainer_for(tmp_path).run()
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    again = trainer_for(tmp_path)
    again.run()
    assert again.state.iteration == BATCHES
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before


@pytest.mark.parametrize("n_saved", [1, 2])
def test_n_saved_holds_across_two_resumes(tmp_path, n_saved):
    for epochs in (1, 2, 3):  # the first run, then two resumed ones
        trainer_for(tmp_path, max_epochs=epochs, save_interval=1, n_saved=n_saved).run()
        files = names(tmp_path)
        assert len(files) == n_saved, files
        assert latest_checkpoint(tmp_path).name == f"checkpoint_final_iteration={epochs * BATCHES}.pt"
    assert sorted(checkpoint_iteration(f) for f in files) == [3 * BATCHES - i for i in range(n_saved)][::-1]


def test_prune_removes_an_unreadable_newer_file_but_keeps_foreign_files(tmp_path):
    (tmp_path / "checkpoint_iteration=99.pt").write_bytes(b"truncated")
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "model.pt").write_bytes(b"not ours")
    with pytest.warns(UserWarning, match="cannot be read"):
        trainer_for(tmp_path, save_interval=2).run()
    assert names(tmp_path) == ["checkpoint_final_iteration=4.pt", "model.pt", "notes.txt"]


def test_regression_trainer_prunes_too(tmp_path):
    loader = [{"image": torch.randn(2, 3), "target": torch.randn(2, 1)} for _ in range(3)]
    for epochs in (1, 2):
        regression_trainer(torch.nn.Linear(3, 1), loader, epochs, checkpoint_dir=tmp_path, save_interval=1).run()
    assert names(tmp_path) == ["checkpoint_final_iteration=6.pt"]


def test_empty_loader_and_empty_batch_are_named():
    with pytest.raises(ValueError, match="yields 0 batches"):
        diffusion_trainer(tiny_unet(2), DDPMScheduler(100), [], max_epochs=1)
    from monai.data import DataLoader, Dataset

    with pytest.raises(ValueError, match=r"0 batches \(its data set holds 1 item"):
        regression_trainer(torch.nn.Linear(2, 1), DataLoader(Dataset([{}]), batch_size=2, drop_last=True), 1)
    trainer, _ = diffusion_trainer(tiny_unet(2), DDPMScheduler(100), [{"image": torch.zeros(0, 1, 8, 8)}], 1)
    with pytest.raises(ValueError, match=r"empty batch: 'image' has shape \(0, 1, 8, 8\)"):
        trainer.run()


def test_config_is_recorded_rebuilt_and_guards_resume(tmp_path):
    network_config = {
        "_target_": "monai.networks.nets.DiffusionModelUNet",
        "spatial_dims": 2,
        "in_channels": 1,
        "out_channels": 1,
        "channels": (8, 8),
        "attention_levels": (False, False),
        "num_res_blocks": 1,
        "norm_num_groups": 8,
        "num_head_channels": 8,
    }
    config = {"kind": "diffusion", "network": network_config, "scheduler": {"_target_": "x.Y"}}
    torch.manual_seed(0)
    trainer_for(tmp_path, config=config, network=build_component(network_config)).run()
    recorded = checkpoint_config(latest_checkpoint(tmp_path))
    assert recorded["network"]["channels"] == [8, 8]  # tuples recorded as lists (JSON-like)
    rebuilt = build_component(recorded["network"])
    rebuilt.load_state_dict(torch.load(latest_checkpoint(tmp_path), weights_only=True)["network"])
    # MONAI's ConfigParser builds the same entry
    from monai.bundle import ConfigParser

    parsed = ConfigParser({"net": recorded["network"]}).get_parsed_content("net")
    assert parsed.state_dict().keys() == rebuilt.state_dict().keys()
    other = dict(config, network=dict(network_config, channels=(8, 16), norm_num_groups=8))
    with pytest.raises(ValueError, match="cannot resume from .* another network"):
        trainer_for(tmp_path, max_epochs=2, config=other)


def test_build_component_refuses_what_a_checkpoint_may_not_choose():
    with pytest.raises(ValueError, match="refusing to build 'os.system'"):
        build_component({"_target_": "os.system", "command": "true"})
    with pytest.raises(ValueError, match="bundle expressions"):
        build_component({"_target_": "torch.nn.Identity", "x": "$print(1)"}, allowed=("torch",))
    with pytest.raises(ValueError, match="cannot import"):
        build_component({"_target_": "monai.networks.nets.NoSuchNet"})
    with pytest.raises(ValueError, match="_target_"):
        build_component({"spatial_dims": 2})
    with pytest.raises(TypeError, match="JSON-like"):
        RecordedConfig({"network": {"w": torch.ones(1)}})


def test_saver_argument_checks(tmp_path):
    with pytest.raises(ValueError, match="n_saved"):
        ResumableCheckpointSaver(tmp_path, {"network": torch.nn.Linear(1, 1)}, n_saved=0)
