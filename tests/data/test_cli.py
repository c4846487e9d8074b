from __future__ import annotations

import configparser
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

from parameterized import parameterized

from monai_diffusion.cli import main

REPO = Path(__file__).resolve().parents[2]


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


class TestDataCli(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.tmp = Path(self._tmp.name)

    def tearDown(self):
        self._tmp.cleanup()

    def test_prepare(self):
        out = self.tmp / "set"
        args = ["data", "prepare", "--out", str(out), "--dim", "3", "--size", "16", "--subjects", "3", "--no-progress"]
        code, stdout, _ = _run(args + ["--seed", "4", "--contrasts", "t1w", "t2w"])
        self.assertEqual(code, 0)
        self.assertIn("datalist.json", stdout)
        datalist = json.loads((out / "datalist.json").read_text())
        self.assertEqual(datalist["config"]["contrasts"], ["t1w", "t2w"])
        self.assertEqual(datalist["config"]["seed"], 4)
        item = datalist["training"][0]
        self.assertNotIn("pd", item)
        self.assertTrue((out / item["t2w"]).is_file())

    def test_preview(self):
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            self.skipTest("matplotlib is not installed")
        out = self.tmp / "set"
        code, stdout, _ = _run(
            ["data", "prepare", "--out", str(out), "--size", "16", "--subjects", "3", "--preview", "--no-progress"]
        )
        self.assertEqual(code, 0)
        png = out / "preview.png"
        self.assertEqual(png.read_bytes()[:8], b"\x89PNG\r\n\x1a\n")

    @parameterized.expand(
        [
            ("zero_size", ["--size", "0"], "size"),
            ("negative_size", ["--size", "-3"], "size"),
            ("unknown_contrast", ["--contrasts", "t1w", "dwi"], "dwi"),
        ]
    )
    def test_bad_arguments(self, _, extra, pattern):
        code, _, err = _run(["data", "prepare", "--out", str(self.tmp / "x"), "--subjects", "3", *extra])
        self.assertEqual(code, 2)
        self.assertIn("monai-diffusion data: error:", err)
        self.assertIn(pattern, err)

    def test_unwritable_folder(self):
        blocker = self.tmp / "file"
        blocker.write_text("")
        code, _, err = _run(["data", "prepare", "--out", str(blocker / "out"), "--size", "16", "--subjects", "3"])
        self.assertEqual(code, 2)
        self.assertIn("cannot write to the output folder", err)

    def test_overwrite(self):
        out = self.tmp / "set"
        out.mkdir()
        own = json.dumps({"training": [{"t1w": "mine.nii.gz"}]})
        (out / "datalist.json").write_text(own)
        args = ["data", "prepare", "--out", str(out), "--dim", "3", "--size", "16", "--subjects", "3", "--no-progress"]
        code, _, err = _run(args)
        self.assertEqual(code, 2)
        self.assertIn("monai-diffusion data: error:", err)
        self.assertIn("datalist.json", err)
        self.assertIn("--overwrite", err)
        self.assertEqual((out / "datalist.json").read_text(), own)
        code, _, _ = _run(args + ["--overwrite"])
        self.assertEqual(code, 0)
        self.assertEqual(json.loads((out / "datalist.json").read_text())["name"], "BrainSim")

    def test_verify(self):
        out = self.tmp / "set"
        args = ["data", "prepare", "--out", str(out), "--dim", "3", "--size", "16", "--subjects", "3", "--no-progress"]
        self.assertEqual(_run(args)[0], 0)
        item = json.loads((out / "datalist.json").read_text())["test"][0]
        path = out / item["t1w"]
        good = path.read_bytes()
        bad = bytearray(good)
        bad[len(bad) // 2] ^= 0x55
        path.write_bytes(bytes(bad))  # same size: only a content check finds it
        self.assertEqual(_run(args)[0], 0)
        self.assertEqual(path.read_bytes(), bytes(bad))
        code, _, err = _run(args + ["--verify"])
        self.assertEqual(code, 0)
        self.assertEqual(path.read_bytes(), good)
        self.assertIn(item["subject"], err)  # the repair is reported

    def test_contrast_names_match_the_simulator(self):
        from monai_diffusion.data import cli
        from monai_diffusion.data.mri_physics import CONTRASTS

        self.assertEqual(cli._CONTRASTS, CONTRASTS)

    def test_separate_process_gives_identical_files(self):
        """``python -m monai_diffusion`` (what the console script runs) in a fresh process writes the same bytes as
        an in-process build: determinism does not depend on process state such as the cached template."""
        from monai_diffusion.data import prepare_dataset

        a, b = self.tmp / "cli", self.tmp / "api"
        argv = ["data", "prepare", "--out", str(a), "--size", "16", "--subjects", "3", "--seed", "3", "--no-progress"]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        proc = subprocess.run(
            [sys.executable, "-m", "monai_diffusion", *argv], cwd=REPO, env=env, capture_output=True, text=True
        )
        self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
        prepare_dataset(b, dim=2, size=16, subjects=3, seed=3)
        files = {p.relative_to(a) for p in a.rglob("*") if p.is_file()}
        self.assertGreater(len(files), 20)
        self.assertEqual(files, {p.relative_to(b) for p in b.rglob("*") if p.is_file()})
        for rel in sorted(files):
            self.assertEqual((a / rel).read_bytes(), (b / rel).read_bytes(), str(rel))

    def test_console_script_declared(self):
        cfg = configparser.ConfigParser()
        cfg.read(REPO / "setup.cfg")
        scripts = dict(
            line.replace(" ", "").split("=", 1)
            for line in cfg["options.entry_points"]["console_scripts"].strip().splitlines()
        )
        self.assertEqual(scripts.get("monai-diffusion"), "monai_diffusion.cli:main")

    def test_no_action(self):
        code, _, err = _run(["data"])
        self.assertEqual(code, 2)
        self.assertIn("prepare", err)


if __name__ == "__main__":
    unittest.main()
