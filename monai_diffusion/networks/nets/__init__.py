"""Networks MONAI lacks, and presets/re-exports of MONAI's diffusion networks."""
