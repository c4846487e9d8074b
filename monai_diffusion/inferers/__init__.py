"""Inferers: training forward, sampling, guidance and posterior sampling, one file per family."""
