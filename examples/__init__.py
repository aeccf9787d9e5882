"""Runnable examples for camegrad_jax (not part of the installed package)."""
