"""Samplers (``schedulers``); the networks themselves are MONAI's (``monai.networks.nets``)."""
