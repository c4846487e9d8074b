"""Metrics used by benchmarks and bundles."""
