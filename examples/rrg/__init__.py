"""Radiology report generation (RRG) with Flax NNX and camegrad_jax: data, models, metrics, demo."""
