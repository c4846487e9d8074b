"""``monai-diffusion --help`` builds its parser without importing torch or MONAI (it took 12 s when it did)."""

from __future__ import annotations

import subprocess
import sys


def test_top_level_help_imports_no_torch():
    code = (
        "import sys\n"
        "from monai_diffusion.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules, 'monai' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False False"
    assert "bundle" in out and "report" in out and "sample" in out


def test_sample_help_lists_its_options(capsys):
    from monai_diffusion.cli import main

    try:
        main(["sample", "--help"])
    except SystemExit:
        pass
    out = capsys.readouterr().out
    for option in ("--checkpoint", "--out", "--num", "--steps", "--sampler", "--seed", "--device", "--no-ema"):
        assert option in out
    assert "dpm_solver" in out
