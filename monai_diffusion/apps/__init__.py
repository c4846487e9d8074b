"""Task-level pipelines per survey category (reconstruction, anomaly, segmentation, ...)."""
