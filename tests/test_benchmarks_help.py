"""Every ``benchmarks/*.py --help`` answers at once: the arguments are parsed before torch or MONAI is imported
(it took 8-16 s on the loaded 2-core machine when the scripts imported them first)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py"))

# run the script as __main__, then report which heavy packages the --help path imported
CODE = """
import runpy, sys
path = sys.argv[1]
sys.argv = [path, "--help"]
try:
    runpy.run_path(path, run_name="__main__")
finally:
    print("heavy imports:", [m for m in ("torch", "monai", "monai_diffusion") if m in sys.modules])
"""


def test_benchmarks_found():
    assert len(BENCHMARKS) >= 10, [p.name for p in BENCHMARKS]


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.name)
def test_help_is_fast_and_imports_nothing_heavy(script: Path):
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", CODE, str(script)], capture_output=True, text=True, timeout=60, cwd=script.parents[1]
    )
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("usage:"), proc.stdout[:500]
    assert proc.stdout.strip().splitlines()[-1] == "heavy imports: []", proc.stdout[-500:]
    assert seconds < 5.0, f"{script.name} --help took {seconds:.1f} s"
