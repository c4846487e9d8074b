"""The tutorials in ``tutorials/`` run top to bottom, offline, in a fresh ``python3`` kernel.

Each notebook is executed with ``nbclient`` in a temporary working directory (so the data it builds never land in
the repository); ``nbclient`` raises ``CellExecutionError`` on the first failing cell. The kernel gets
``OMP_NUM_THREADS=1``: on a shared 2-core machine two torch threads per process made the small UNet of tutorial 2
several times slower, not faster. The committed notebooks must have their outputs cleared.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import unittest
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from parameterized import parameterized

REPO = Path(__file__).resolve().parents[2]
TUTORIALS = REPO / "tutorials"
CELL_TIMEOUT_S = 240

#: (notebook, least number of figures it must draw, text its outputs must contain)
NOTEBOOKS = [
    ("01_embedded_data.ipynb", 4, ("datalist.json", "training slices", "NIfTI: (1,")),
    (
        "02_samplers_and_guidance.ipynb",
        7,
        ("exact draws from the mixture", "NCSN annealed Langevin", "iterations in", "event classifier, scale 1"),
    ),
    (
        "03_reconstruction.ipynb",
        7,
        ("adjoint test", "Gaussian MMSE (exact)", "largest pixel difference between", "steps run from the zero-filled"),
    ),
    (
        "04_latent_diffusion.ipynb",
        6,
        ("resumed from the checkpoint at iteration", "latent std before scaling", "CFG scale 3"),
    ),
    ("05_generation_bundle.ipynb", 3, ("NIfTI samples", "guidance scale 3.0", "Gaussian latent prior")),
    ("06_anomaly_detection_bundle.ipynb", 3, ("refused:", "lesion pixels", "AnoDDPM (Gaussian)", "autoencoder")),
    ("07_denoising_bundle.ipynb", 3, ("matched start times", "PSNR dB (brain)", "supervised UNet (baseline)")),
]


def _read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(TUTORIALS / name, as_version=4)


def _kernel_env() -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


class TestNotebookFiles(unittest.TestCase):
    def test_every_notebook_is_listed(self):
        self.assertEqual(sorted(p.name for p in TUTORIALS.glob("*.ipynb")), sorted(n for n, _, _ in NOTEBOOKS))

    @parameterized.expand([(n,) for n, _, _ in NOTEBOOKS])
    def test_committed_clean(self, name):
        nb = _read(name)
        nbformat.validate(nb)
        self.assertEqual(nb.metadata["kernelspec"]["name"], "python3")
        code = [c for c in nb.cells if c.cell_type == "code"]
        self.assertGreater(len(code), 3)
        self.assertTrue(code[0].source.startswith("%matplotlib inline"), "first code cell must set matplotlib inline")
        for cell in code:
            self.assertEqual(cell.outputs, [], f"outputs left in {name}: {cell.source[:60]!r}")
            self.assertIsNone(cell.execution_count)
        markdown = [c for c in nb.cells if c.cell_type == "markdown"]
        self.assertGreaterEqual(len(markdown), len(code) // 2, "explain the steps in markdown")


class TestNotebooksRun(unittest.TestCase):
    def setUp(self):
        self.workdir = tempfile.mkdtemp(prefix="tutorial_")

    def tearDown(self):
        shutil.rmtree(self.workdir, ignore_errors=True)

    @parameterized.expand(NOTEBOOKS)
    def test_runs_without_error(self, name, min_figures, expected_text):
        nb = _read(name)
        client = NotebookClient(
            nb,
            timeout=CELL_TIMEOUT_S,
            kernel_name="python3",
            resources={"metadata": {"path": self.workdir}},
        )
        client.execute(env=_kernel_env())  # raises CellExecutionError on a failing cell

        code = [c for c in nb.cells if c.cell_type == "code"]
        self.assertTrue(all(c.execution_count is not None for c in code), "every code cell must have run")
        outputs = [o for c in code for o in c.outputs]
        self.assertFalse([o for o in outputs if o.output_type == "error"])
        figures = sum("image/png" in o.get("data", {}) for o in outputs)
        self.assertGreaterEqual(figures, min_figures, "inline figures missing")
        text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
        for snippet in expected_text:
            self.assertIn(snippet, text)
        # the data were written to the temporary working directory
        self.assertTrue((Path(self.workdir) / "tutorial_data").is_dir())


if __name__ == "__main__":
    unittest.main()
