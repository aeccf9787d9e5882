"""Benchmarks: scripts that print figures and write them as JSON (see docs/benchmarks.md)."""
