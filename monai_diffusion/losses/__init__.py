"""Losses used by the training recipes."""
