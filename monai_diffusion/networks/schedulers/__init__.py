"""Samplers for the survey's three frameworks (DDPM, NCSN, score SDEs) and fast solvers.

One file per sampler family; every sampler subclasses ``monai.networks.schedulers.Scheduler``."""
