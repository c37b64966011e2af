"""Flax modules of the talking-face model."""
