"""Flax Linen, Equinox and shared-trunk/task-head training steps, each a runnable example."""
