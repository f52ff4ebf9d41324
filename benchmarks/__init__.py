"""Benchmarks: every figure is measured beside a reference in the same process, and reported as a ratio."""
