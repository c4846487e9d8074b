"""Training recipes built on MONAI engines (ignite)."""
