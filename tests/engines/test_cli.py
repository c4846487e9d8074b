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
        self.assertFalse(os.path.exists(f"{self.root}/never_built"), "arguments are checked before building data")


if __name__ == "__main__":
    unittest.main()
