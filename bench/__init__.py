"""Benchmarks, run by hand; results go to docs/benchmarks.md (see its header)."""
