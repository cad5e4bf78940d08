"""Deterministic retail traffic for the demo, tests and benchmarks."""
