"""``python -m monai_diffusion`` runs the command line."""

import sys

from monai_diffusion.cli import main

sys.exit(main())
