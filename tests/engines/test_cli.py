from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import unittest

import torch

from monai_diffusion.engines import cli, latest_checkpoint


def parse(argv):
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(argv)


class TestTrainCLI(unittest.TestCase):
    def setUp(self):
        self.root = tempfile.mkdtemp()

    def tearDown(self):
        shutil.rmtree(self.root, ignore_errors=True)

    def test_autoencoder_run_and_resume(self):
        argv = [
            "autoencoder",
            "--data",
            self.root,
            "--out",
            f"{self.root}/ae",
            "--size",
            "16",
            "--subjects",
            "4",
            "--epochs",
            "1",
            "--epoch-length",
            "1",
            "--batch-size",
            "2",
            "--device",
            "cpu",
            "--kind",
            "vq",
        ]
        self.assertEqual(cli.run(parse(argv)), 0)
        self.assertIn("iteration=1", latest_checkpoint(f"{self.root}/ae").name)
        argv[argv.index("--epochs") + 1] = "2"
        self.assertEqual(cli.run(parse(argv)), 0)
        self.assertIn("iteration=2", latest_checkpoint(f"{self.root}/ae").name)
        from monai_diffusion.engines import sample_checkpoint

        with self.assertRaisesRegex(ValueError, "is an autoencoder checkpoint"):
            sample_checkpoint(f"{self.root}/ae")

    def test_class_conditional_diffusion_run_and_resume(self):
        argv = ["diffusion", "--data", self.root, "--out", f"{self.root}/ddpm", "--size", "16", "--subjects", "4"]
        argv += ["--epochs", "1", "--epoch-length", "1", "--batch-size", "2", "--device", "cpu", "--class-conditional"]
        self.assertEqual(cli.run(parse(argv)), 0)
        self.assertIn("iteration=1", latest_checkpoint(f"{self.root}/ddpm").name)
        argv[argv.index("--epochs") + 1] = "2"
        self.assertEqual(cli.run(parse(argv)), 0)
        self.assertIn("iteration=2", latest_checkpoint(f"{self.root}/ddpm").name)

    def test_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, "multiple of 4"):
            cli.run(parse(["diffusion", "--data", self.root, "--out", self.root, "--size", "18"]))
        base = ["diffusion", "--data", f"{self.root}/never_built", "--out", self.root]
        with self.assertRaisesRegex(ValueError, "--lr must be positive"):
            cli.run(parse([*base, "--lr", "-1"]))
        with self.assertRaisesRegex(ValueError, "not a device name"):
            cli.run(parse([*base, "--device", "foo"]))
        if not torch.cuda.is_available():
            with self.assertRaisesRegex(ValueError, "CUDA is not available"):
                cli.run(parse([*base, "--device", "cuda"]))
        with self.assertRaisesRegex(ValueError, "float32"):
            cli.run(
                parse(["autoencoder", "--data", f"{self.root}/never_built", "--out", self.root, "--precision", "bf16"])
            )
        self.assertFalse(os.path.exists(f"{self.root}/never_built"), "arguments are checked before building data")


def write_nifti_datalist(folder, shapes, key="image", extra=None) -> str:
    """A MONAI datalist of small random NIfTI files (paths relative to the datalist), one item per shape."""
    import json
    from pathlib import Path

    import nibabel as nib
    import numpy as np

    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    items = []
    for i, shape in enumerate(shapes):
        name = f"images/img_{i}.nii.gz"
        nib.save(nib.Nifti1Image(rng.random(shape).astype(np.float32) * 100, np.eye(4)), str(folder / name))
        items.append({key: name, **(extra or {})})
    path = folder / "datalist.json"
    path.write_text(json.dumps({"training": items}))
    return str(path)


def interrupt_unet_forward_at(call: int):
    """Patch MONAI's DiffusionModelUNet.forward to raise KeyboardInterrupt in its ``call``-th call (mid-step)."""
    from unittest import mock

    from monai.networks.nets import DiffusionModelUNet

    original, calls = DiffusionModelUNet.forward, []

    def forward(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    return mock.patch.object(DiffusionModelUNet, "forward", forward)


class TestTrainCLIInputsAndCheckpoints(unittest.TestCase):
    """Own data (--datalist), a prepared data folder, --out checks, interrupted and resumed runs (2D, 16 px)."""

    @classmethod
    def setUpClass(cls):
        from monai_diffusion.data import prepare_dataset

        cls.root = tempfile.mkdtemp()
        cls.prepared = f"{cls.root}/brainsim2d"
        prepare_dataset(cls.prepared, dim=2, size=16, subjects=4)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.root, ignore_errors=True)

    def setUp(self):
        self.tmp = tempfile.mkdtemp(dir=self.root)

    def argv(self, out, epochs=1, *extra):
        argv = ["diffusion", "--data", self.prepared, "--out", out, "--epochs", str(epochs), "--epoch-length", "2"]
        return [*argv, "--batch-size", "2", "--device", "cpu", "--save-interval", "1", *extra]

    def run_cli(self, argv):
        import contextlib
        import io

        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            code = cli.run(parse(argv))
        return code, buffer.getvalue()

    def test_prepared_folder_is_used_as_it_is_and_the_checkpoint_is_printed(self):
        from pathlib import Path

        out = f"{self.tmp}/ddpm"
        before = sorted(p.name for p in Path(self.prepared).iterdir())
        code, printed = self.run_cli(self.argv(out))
        self.assertEqual(code, 0)
        self.assertEqual(sorted(p.name for p in Path(self.prepared).iterdir()), before, "no nested data set")
        final = Path(out).resolve() / "checkpoint_final_iteration=2.pt"
        self.assertIn(f"newest checkpoint: {final}", printed)
        self.assertIn(f"monai-diffusion sample --checkpoint {final}", printed)
        from monai_diffusion.engines import checkpoint_config

        config = checkpoint_config(final)
        self.assertEqual(config["image"]["spatial_size"], [16, 16])  # the folder's own size
        self.assertEqual(config["data"]["source"], "prepared")
        with self.assertRaisesRegex(ValueError, "--size 32 differs from the prepared data"):
            cli.run(parse([*self.argv(out), "--size", "32"]))
        with self.assertRaisesRegex(ValueError, "--dim 3 differs"):
            cli.run(parse([*self.argv(out), "--dim", "3"]))
        with self.assertRaisesRegex(ValueError, "--contrast 'xyz' is not in the prepared data"):
            cli.run(parse([*self.argv(out), "--contrast", "xyz"]))
        foreign = Path(self.tmp) / "foreign"
        foreign.mkdir()
        (foreign / "datalist.json").write_text('{"training": []}')
        with self.assertRaisesRegex(ValueError, "did not write; pass it with --datalist"):
            cli.run(parse(["diffusion", "--data", str(foreign), "--out", out, "--device", "cpu"]))

    def test_datalist_of_own_nifti_images(self):
        from pathlib import Path

        from monai_diffusion.engines import checkpoint_config, datalist_loader, latest_checkpoint

        # 2D slices of another size, two of them stored as H x W x 1 volumes
        datalist = write_nifti_datalist(self.tmp, [(20, 24), (20, 24, 1), (24, 20), (20, 20, 1)], key="img")
        batch = next(iter(datalist_loader(datalist, keys=("img",), dim=2, size=16, batch_size=4, shuffle=False)))
        self.assertEqual(tuple(batch["img"].shape), (4, 1, 16, 16))
        self.assertAlmostEqual(float(batch["img"].min()), -1.0, places=5)
        self.assertAlmostEqual(float(batch["img"].max()), 1.0, places=5)
        out = f"{self.tmp}/own"
        argv = ["diffusion", "--datalist", datalist, "--image-key", "img", "--out", out, "--size", "16"]
        argv += ["--epochs", "1", "--epoch-length", "2", "--batch-size", "2", "--device", "cpu"]
        self.assertEqual(self.run_cli(argv)[0], 0)
        config = checkpoint_config(latest_checkpoint(out))
        self.assertEqual(config["data"], {"source": "datalist", "datalist": datalist})
        self.assertEqual(config["image"]["key"], "img")
        self.assertFalse(any(p.name.startswith("brainsim") for p in Path(self.tmp).iterdir()))
        # errors that name the problem
        with self.assertRaisesRegex(ValueError, r"needs the key\(s\) \['image'\]"):
            cli.run(parse(["diffusion", "--datalist", datalist, "--out", out, "--size", "16", "--device", "cpu"]))
        with self.assertRaisesRegex(ValueError, "expected a 3D image"):
            datalist_loader(datalist, keys=("img",), dim=3)
        with self.assertRaisesRegex(ValueError, "'healthy' entry"):
            cli.run(parse([*argv, "--class-conditional", "--out", f"{self.tmp}/conditional"]))
        with self.assertRaisesRegex(FileNotFoundError, "--datalist"):
            cli.run(parse(["diffusion", "--datalist", f"{self.tmp}/none.json", "--out", out, "--device", "cpu"]))
        with self.assertRaisesRegex(ValueError, "exactly one of --data"):
            cli.run(parse(["diffusion", "--out", out, "--device", "cpu"]))
        empty = Path(self.tmp) / "empty.json"
        empty.write_text('{"training": []}')
        with self.assertRaisesRegex(ValueError, "holds no items"):
            cli.run(parse(["diffusion", "--datalist", str(empty), "--out", out, "--device", "cpu"]))

    def test_unwritable_out_is_reported_before_the_data_are_built(self):
        from pathlib import Path

        blocker = Path(self.tmp) / "a_file"
        blocker.write_text("")
        never = f"{self.tmp}/never_built"
        with self.assertRaisesRegex(OSError, "--out .* cannot be written"):
            cli.run(parse(["diffusion", "--data", never, "--out", f"{blocker}/ckpt", "--device", "cpu"]))
        self.assertFalse(os.path.exists(never))
        if os.geteuid() != 0:  # root writes into read-only folders
            readonly = Path(self.tmp) / "readonly"
            readonly.mkdir(mode=0o500)
            with self.assertRaisesRegex(OSError, "cannot be written"):
                cli.run(parse(["diffusion", "--data", never, "--out", str(readonly), "--device", "cpu"]))
            self.assertFalse(os.path.exists(never))

    def test_interrupted_run_then_rerun(self):
        from pathlib import Path

        out = f"{self.tmp}/ddpm"
        with interrupt_unet_forward_at(3):  # one forward per step: mid-step of iteration 3
            code, printed = self.run_cli(self.argv(out, 2))
        self.assertEqual(code, 130)
        self.assertIn("interrupted at iteration 3", printed)
        self.assertEqual(sorted(p.name for p in Path(out).iterdir()), ["checkpoint_iteration=2.pt"])
        code, printed = self.run_cli(self.argv(out, 2))
        self.assertEqual(code, 0)
        self.assertIn("trained to iteration 4", printed)
        self.assertEqual(sorted(p.name for p in Path(out).iterdir()), ["checkpoint_final_iteration=4.pt"])

    def test_interrupted_first_step_writes_no_checkpoint(self):
        from pathlib import Path

        out = f"{self.tmp}/ddpm"
        with interrupt_unet_forward_at(1):
            code, printed = self.run_cli(self.argv(out))
        self.assertEqual(code, 130)
        self.assertIn("no checkpoint was written", printed)
        self.assertEqual(list(Path(out).iterdir()), [], "no final checkpoint of the untrained network")

    def test_checkpoints_do_not_pile_up_across_two_resumes(self):
        from pathlib import Path

        out = f"{self.tmp}/ddpm"
        for epochs in (1, 2, 3):
            self.assertEqual(self.run_cli(self.argv(out, epochs))[0], 0)
            files = sorted(p.name for p in Path(out).iterdir())
            self.assertEqual(files, [f"checkpoint_final_iteration={2 * epochs}.pt"])
        # resuming with another network is refused before any data work
        with self.assertRaisesRegex(ValueError, "another network .*num_class_embeds: checkpoint None, now 3"):
            cli.run(parse([*self.argv(out, 4), "--class-conditional"]))


if __name__ == "__main__":
    unittest.main()
