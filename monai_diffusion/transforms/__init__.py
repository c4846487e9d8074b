"""MONAI array/dictionary transform pairs (k-space simulation, data consistency, noise)."""
